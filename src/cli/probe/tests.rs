//! The checks on fake `/proc` and `/sys` trees.

use std::cell::RefCell;

use super::*;
use odin::cpulist::CpuSet;
use odin::monitor::perf::{FakeCounters, GroupKind, OpenClass};
use odin::pipeline::affinity::AffinityError;

const NAMES: &[&str] = &[
    "cpus",
    "hw_counters",
    "sw_counters",
    "perf_permissions",
    "schedstat",
    "psi",
    "cgroup",
    "affinity",
    "other_daemons",
];

/// A fake root with everything odin wants: 2 CPUs sharing an LLC, PSI,
/// schedstat for the calling thread, cgroup v2 with cpu and cpuset,
/// paranoid 2 and every capability.
struct Tree(tempfile::TempDir);

impl Tree {
    fn healthy() -> Self {
        let t = Tree(tempfile::tempdir().unwrap());
        t.write("sys/devices/system/cpu/online", "0-1\n");
        for cpu in 0..2 {
            let dir = format!("sys/devices/system/cpu/cpu{cpu}");
            t.write(&format!("{dir}/topology/physical_package_id"), "0\n");
            t.write(&format!("{dir}/topology/core_id"), &format!("{cpu}\n"));
            t.write(&format!("{dir}/cache/index0/level"), "1\n");
            t.write(
                &format!("{dir}/cache/index0/shared_cpu_list"),
                &format!("{cpu}\n"),
            );
            t.write(&format!("{dir}/cache/index3/level"), "3\n");
            t.write(&format!("{dir}/cache/index3/shared_cpu_list"), "0-1\n");
        }
        t.write("proc/sys/kernel/perf_event_paranoid", "2\n");
        t.status("000001ffffffffff");
        t.write(&Self::schedstat_rel(), "5000 200 3\n");
        t.write(
            "proc/pressure/cpu",
            "some avg10=1.50 avg60=0.50 avg300=0.10 total=12345\n\
             full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        );
        t.write(
            "proc/self/mountinfo",
            "25 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        );
        t.write("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory\n");
        t.write("proc/1/comm", "systemd\n");
        t
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.0.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn remove(&self, rel: &str) {
        std::fs::remove_file(self.0.path().join(rel)).unwrap();
    }

    fn status(&self, capeff: &str) {
        self.write(
            "proc/self/status",
            &format!("Name:\todin\nCapEff:\t{capeff}\n"),
        );
    }

    fn schedstat_rel() -> String {
        format!("proc/{}/task/{}/schedstat", std::process::id(), gettid())
    }
}

thread_local! {
    static PINNED: RefCell<Option<CpuSet>> = const { RefCell::new(None) };
}

/// Pins (per thread) unless the CPU is refused.
struct FakeAffinity {
    refuse: CpuSet,
}

impl Affinity for FakeAffinity {
    fn set(&self, tid: i32, cpus: &CpuSet) -> Result<(), AffinityError> {
        if !cpus.difference(&self.refuse).eq(cpus) {
            return Err(AffinityError::Sys {
                op: "set",
                tid,
                cpus: cpus.to_string(),
                source: nix::Error::EINVAL,
            });
        }
        PINNED.with(|p| *p.borrow_mut() = Some(cpus.clone()));
        Ok(())
    }

    fn get(&self, _tid: i32) -> Result<CpuSet, AffinityError> {
        Ok(PINNED
            .with(|p| p.borrow().clone())
            .unwrap_or_else(|| "0-1".parse().unwrap()))
    }
}

fn run(tree: &Tree, counters: &FakeCounters, refuse: &str) -> Vec<Check> {
    let refuse = if refuse.is_empty() {
        CpuSet::default()
    } else {
        refuse.parse().unwrap()
    };
    checks_with(tree.path(), &mut counters.clone(), &FakeAffinity { refuse })
}

fn get<'a>(checks: &'a [Check], name: &str) -> &'a Check {
    checks.iter().find(|c| c.name == name).unwrap()
}

/// Every name once; reason and fix present exactly when not ok.
fn well_formed(checks: &[Check]) {
    let names: Vec<&str> = checks.iter().map(|c| c.name).collect();
    assert_eq!(names, NAMES);
    for c in checks {
        let ok = c.status == Status::Ok;
        assert_eq!(c.reason.is_none(), ok, "{c:?}");
        assert_eq!(c.fix.is_none(), ok, "{c:?}");
        assert!(!c.detail.is_empty(), "{c:?}");
        if !ok {
            assert!(!c.reason.as_ref().unwrap().is_empty(), "{c:?}");
            assert!(!c.fix.as_ref().unwrap().is_empty(), "{c:?}");
        }
        assert!(!c.line().contains('\n'), "{}", c.line());
    }
}

#[test]
fn healthy_machine_is_all_ok() {
    let t = Tree::healthy();
    let checks = run(&t, &FakeCounters::new(), "");
    well_formed(&checks);
    for c in &checks {
        assert_eq!(c.status, Status::Ok, "{c:?}");
    }
    assert_eq!(
        get(&checks, "cpus").detail,
        "2 CPUs: 0-1, 1 package, 2 cores, LLC shared by 0-1"
    );
    let cg = &get(&checks, "cgroup").detail;
    assert!(
        cg.starts_with("v2, v2 at /sys/fs/cgroup;")
            && cg.contains("cpu: v2 at /sys/fs/cgroup, writable")
            && cg.contains("cpuset: v2 at /sys/fs/cgroup, writable"),
        "{cg}"
    );
    assert!(get(&checks, "psi").detail.contains("avg10=1.50%"));
    assert!(get(&checks, "affinity").detail.contains("CPU 0-1"));

    let json = serde_json::to_value(Report { checks: &checks }).unwrap();
    let first = &json["checks"][0];
    assert_eq!(first["name"], "cpus");
    assert_eq!(first["status"], "ok");
    assert!(first["reason"].is_null() && first["fix"].is_null());
}

#[test]
fn no_pmu_degrades_hw_counters_only() {
    let t = Tree::healthy();
    let checks = run(&t, &FakeCounters::without_hardware(), "");
    well_formed(&checks);
    let hw = get(&checks, "hw_counters");
    assert_eq!(hw.status, Status::Degraded);
    let reason = hw.reason.as_deref().unwrap();
    assert!(
        reason.contains("virtual machine") && reason.contains("other signals"),
        "{reason}"
    );
    assert!(hw.fix.as_deref().unwrap().contains("pmu=on"), "{hw:?}");
    for c in checks.iter().filter(|c| c.name != "hw_counters") {
        assert_eq!(c.status, Status::Ok, "{c:?}");
    }
}

#[test]
fn refused_counters_name_paranoid_and_cap_perfmon() {
    let t = Tree::healthy();
    t.status("0000000000000000");
    let fake = FakeCounters::without_hardware();
    fake.fail(GroupKind::Software, OpenClass::NotPermitted);
    let checks = run(&t, &fake, "");
    well_formed(&checks);
    let sw = get(&checks, "sw_counters");
    assert_eq!(sw.status, Status::Degraded);
    assert!(
        sw.reason
            .as_deref()
            .unwrap()
            .contains("perf_event_paranoid is 2"),
        "{sw:?}"
    );
    let perms = get(&checks, "perf_permissions");
    assert_eq!(perms.status, Status::Degraded);
    assert!(perms.detail.contains("no CAP_PERFMON"), "{perms:?}");
    assert!(perms.fix.as_deref().unwrap().contains("CAP_PERFMON"));
    // Without CAP_SYS_NICE too.
    assert_eq!(get(&checks, "affinity").status, Status::Degraded);
    // Every open was closed again.
    assert!(fake.open_groups().is_empty());
}

#[test]
fn no_psi_file_is_missing_with_a_kernel_fix() {
    let t = Tree::healthy();
    t.remove("proc/pressure/cpu");
    let checks = run(&t, &FakeCounters::new(), "");
    well_formed(&checks);
    let psi = get(&checks, "psi");
    assert_eq!(psi.status, Status::Missing);
    let fix = psi.fix.as_deref().unwrap();
    assert!(
        fix.contains("4.20") && fix.contains("CONFIG_PSI") && fix.contains("psi=1"),
        "{fix}"
    );
}

#[test]
fn missing_or_zero_schedstat_is_degraded() {
    let t = Tree::healthy();
    t.write(&Tree::schedstat_rel(), "0 0 0\n");
    let checks = run(&t, &FakeCounters::new(), "");
    let s = get(&checks, "schedstat");
    assert_eq!(s.status, Status::Degraded, "{s:?}");
    assert!(s.reason.as_deref().unwrap().contains("compiled out"));

    t.remove(&Tree::schedstat_rel());
    let checks = run(&t, &FakeCounters::new(), "");
    well_formed(&checks);
    let s = get(&checks, "schedstat");
    assert_eq!(s.status, Status::Degraded, "{s:?}");
    assert!(s.fix.as_deref().unwrap().contains("CONFIG_SCHED_INFO"));
}

#[test]
fn sched_ext_and_irqbalance_are_listed() {
    let t = Tree::healthy();
    t.write("sys/kernel/sched_ext/state", "enabled\n");
    t.write("sys/kernel/sched_ext/root/ops", "rusty_1.0.4\n");
    t.write("proc/812/comm", "irqbalance\n");
    t.write("proc/900/comm", "irqbalancer\n"); // not the same name
    let checks = run(&t, &FakeCounters::new(), "");
    well_formed(&checks);
    let d = get(&checks, "other_daemons");
    assert_eq!(d.status, Status::Degraded);
    assert_eq!(
        d.detail,
        "sched_ext scheduler rusty_1.0.4, irqbalance (pid 812)"
    );
    let fix = d.fix.as_deref().unwrap();
    assert!(fix.contains("IRQBALANCE_BANNED_CPULIST") && fix.contains("scx"));

    // A loaded but disabled sched_ext is not listed.
    t.write("sys/kernel/sched_ext/state", "disabled\n");
    t.remove("proc/812/comm");
    let checks = run(&t, &FakeCounters::new(), "");
    assert_eq!(get(&checks, "other_daemons").status, Status::Ok);
}

#[test]
fn affinity_refused_everywhere_is_missing() {
    let t = Tree::healthy();
    let checks = run(&t, &FakeCounters::new(), "0-1");
    well_formed(&checks);
    let a = get(&checks, "affinity");
    assert_eq!(a.status, Status::Missing, "{a:?}");
    assert!(a.reason.as_deref().unwrap().contains("CPU 0-1"), "{a:?}");

    let checks = run(&t, &FakeCounters::new(), "1");
    let a = get(&checks, "affinity");
    assert_eq!(a.status, Status::Degraded, "{a:?}");
    assert!(a.detail.contains("CPU 0 and read it back"), "{a:?}");
}

#[test]
fn cgroup_gaps_are_reported() {
    let t = Tree::healthy();
    t.write("sys/fs/cgroup/cgroup.controllers", "cpu memory\n");
    let checks = run(&t, &FakeCounters::new(), "");
    well_formed(&checks);
    let c = get(&checks, "cgroup");
    assert_eq!(c.status, Status::Degraded);
    assert!(c.detail.contains("cpuset: absent"), "{c:?}");
    assert!(c.fix.as_deref().unwrap().contains("+cpuset"), "{c:?}");

    t.write(
        "proc/self/mountinfo",
        "22 1 8:1 / / rw - ext4 /dev/vda rw\n",
    );
    let checks = run(&t, &FakeCounters::new(), "");
    assert_eq!(get(&checks, "cgroup").status, Status::Missing);
}

#[test]
fn missing_cache_topology_degrades_cpus() {
    let t = Tree::healthy();
    std::fs::remove_dir_all(t.path().join("sys/devices/system/cpu/cpu1/cache")).unwrap();
    let checks = run(&t, &FakeCounters::new(), "");
    let c = get(&checks, "cpus");
    assert_eq!(c.status, Status::Degraded, "{c:?}");
    assert!(c.reason.as_deref().unwrap().contains("CPU 1"), "{c:?}");

    t.remove("sys/devices/system/cpu/online");
    let checks = run(&t, &FakeCounters::new(), "");
    well_formed(&checks);
    assert_eq!(get(&checks, "cpus").status, Status::Missing);
    assert_eq!(get(&checks, "affinity").status, Status::Missing);
}
