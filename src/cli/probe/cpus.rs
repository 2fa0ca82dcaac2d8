//! `cpus`: the CPU topology under `/sys`.

use odin::topology;

use super::{Check, Status};

/// `cpus`: online CPUs, packages, cores and last-level caches.
pub fn check(topo: &Result<topology::Topology, topology::TopologyError>) -> Check {
    let t = match topo {
        Ok(t) => t,
        Err(e) => {
            return Check::not_ok(
                "cpus",
                Status::Missing,
                "no CPU list",
                e.to_string(),
                "mount sysfs at /sys (mount -t sysfs sysfs /sys)",
            );
        }
    };
    let online = t.online();
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let mut detail = format!("{}: {online}", plural(online.len(), "CPU"));
    let packages = t.packages().len();
    if packages > 0 {
        detail.push_str(&format!(", {}", plural(packages, "package")));
    }
    let cores = t.cores();
    if cores > 0 {
        detail.push_str(&format!(", {}", plural(cores, "core")));
    }
    let llcs = t.llc_domains();
    let lists: Vec<String> = llcs.iter().map(ToString::to_string).collect();
    match llcs.len() {
        0 => {}
        1 => detail.push_str(&format!(", LLC shared by {}", lists[0])),
        n => detail.push_str(&format!(", {n} LLCs: {}", lists.join("; "))),
    }
    let blind = t.without_llc();
    if blind.is_empty() {
        Check::ok("cpus", detail)
    } else {
        Check::not_ok(
            "cpus",
            Status::Degraded,
            detail,
            format!(
                "no cache information for CPU {blind} under /sys/devices/system/cpu/cpuN/cache: \
                 odin cannot tell which CPUs share a last-level cache"
            ),
            "expose the cache topology to the guest (QEMU: -cpu host,host-cache-info=on \
             or -cpu ...,l3-cache=on)",
        )
    }
}
