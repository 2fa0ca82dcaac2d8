//! What counters this machine allows, and why not if it does not: the
//! `perf_event_paranoid` level, the process's capabilities, and a summary
//! with a human reason and fix for `odin probe`, the log and the metrics.

use std::fmt;
use std::io;
use std::path::Path;

use super::{CounterSource, GroupKind, OpenClass, PerfError, Target};

/// Reads `<root>/proc/sys/kernel/perf_event_paranoid` (an integer, `-1` to
/// `4` in practice; see the module docs of [`super`] for the levels).
pub fn read_paranoid(root: &Path) -> Result<i32, PerfError> {
    let path = root.join("proc/sys/kernel/perf_event_paranoid");
    let text = std::fs::read_to_string(&path).map_err(|source| PerfError::Io {
        path: path.clone(),
        source,
    })?;
    text.trim().parse().map_err(|_| PerfError::Parse {
        detail: format!("not an integer: {:?}", text.trim()),
        path,
    })
}

/// The effective capabilities of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The `CapEff` bit mask.
    pub effective: u64,
}

impl Capabilities {
    /// `CAP_SYS_ADMIN`: everything perf, on any kernel.
    pub const SYS_ADMIN: u32 = 21;
    /// `CAP_PERFMON` (Linux 5.8+): perf without the rest of `CAP_SYS_ADMIN`.
    pub const PERFMON: u32 = 38;

    /// Whether capability number `bit` is effective.
    pub fn has(self, bit: u32) -> bool {
        bit < 64 && self.effective & (1 << bit) != 0
    }

    /// Whether `perf_event_paranoid` is bypassed (`CAP_PERFMON` or
    /// `CAP_SYS_ADMIN`).
    pub fn perfmon(self) -> bool {
        self.has(Self::PERFMON) || self.has(Self::SYS_ADMIN)
    }
}

/// Reads the `CapEff:` line of `<root>/proc/self/status`.
pub fn read_capabilities(root: &Path) -> Result<Capabilities, PerfError> {
    let path = root.join("proc/self/status");
    let text = std::fs::read_to_string(&path).map_err(|source| PerfError::Io {
        path: path.clone(),
        source,
    })?;
    let Some(hex) = text.lines().find_map(|l| l.strip_prefix("CapEff:")) else {
        return Err(PerfError::Parse {
            path,
            detail: "no CapEff line".into(),
        });
    };
    let effective = u64::from_str_radix(hex.trim(), 16).map_err(|_| PerfError::Parse {
        detail: format!("CapEff is not a hex mask: {:?}", hex.trim()),
        path,
    })?;
    Ok(Capabilities { effective })
}

/// What the permission settings say; `None` where they could not be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    /// `kernel.perf_event_paranoid`.
    pub paranoid: Option<i32>,
    /// This process's effective capabilities.
    pub capabilities: Option<Capabilities>,
}

impl Permissions {
    /// Reads both under `root`; unreadable files leave `None`.
    pub fn read(root: &Path) -> Self {
        Permissions {
            paranoid: read_paranoid(root).ok(),
            capabilities: read_capabilities(root).ok(),
        }
    }

    /// Whether CPU-wide counters (`pid = -1`) should open: `CAP_PERFMON` or
    /// paranoid `<= 0`. `None` if unknown.
    pub fn cpu_wide_allowed(&self) -> Option<bool> {
        if self.capabilities.is_some_and(Capabilities::perfmon) {
            return Some(true);
        }
        self.paranoid.map(|p| p <= 0)
    }

    fn privileged(&self) -> bool {
        self.capabilities.is_some_and(Capabilities::perfmon)
    }
}

/// Which counters odin can use, with a reason and fix when not all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CounterSupport {
    /// Hardware (and software) counters open.
    Hardware,
    /// Only software counters: no IPC or LLC misses.
    SoftwareOnly {
        /// Why hardware counters are missing.
        reason: String,
        /// What would bring them.
        fix: String,
    },
    /// No counters at all; odin runs on stage times and /proc.
    None {
        /// Why.
        reason: String,
        /// What would bring them.
        fix: String,
    },
}

impl CounterSupport {
    /// Whether the hardware group opens.
    pub fn has_hardware(&self) -> bool {
        matches!(self, CounterSupport::Hardware)
    }

    /// Whether the software group opens.
    pub fn has_software(&self) -> bool {
        !matches!(self, CounterSupport::None { .. })
    }
}

impl fmt::Display for CounterSupport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CounterSupport::Hardware => f.write_str("hardware and software counters"),
            CounterSupport::SoftwareOnly { reason, fix } => {
                write!(f, "software counters only: {reason}; fix: {fix}")
            }
            CounterSupport::None { reason, fix } => {
                write!(f, "no performance counters: {reason}; fix: {fix}")
            }
        }
    }
}

/// Reason and fix for a failed open of a `kind` group.
fn explain(kind: GroupKind, class: OpenClass, perms: &Permissions) -> (String, String) {
    const GRANT: &str = "set kernel.perf_event_paranoid<=1 or grant CAP_PERFMON";
    match class {
        OpenClass::Unsupported if kind == GroupKind::Hardware => (
            "no hardware PMU (virtual machine?)".into(),
            "run on bare metal or enable vPMU in the hypervisor \
             (QEMU/KVM: -cpu host,pmu=on; libvirt: <pmu state='on'/>)"
                .into(),
        ),
        OpenClass::Unsupported => (
            "the kernel has no software perf events".into(),
            "use a kernel built with CONFIG_PERF_EVENTS=y".into(),
        ),
        OpenClass::NotPermitted => match perms.paranoid {
            Some(p) if p >= 2 && !perms.privileged() => (
                format!("perf_event_paranoid is {p} and odin lacks CAP_PERFMON"),
                GRANT.into(),
            ),
            Some(p) => (
                format!(
                    "perf_event_open refused although perf_event_paranoid is {p}{}: \
                     a seccomp filter or security module blocks it",
                    if perms.privileged() {
                        " and CAP_PERFMON is held"
                    } else {
                        ""
                    }
                ),
                "allow perf_event_open in the container's seccomp profile or LSM policy".into(),
            ),
            None => (
                "perf_event_open refused (perf_event_paranoid unreadable)".into(),
                GRANT.into(),
            ),
        },
        OpenClass::Other(libc::ENOSYS) => (
            "the kernel has no perf_event_open".into(),
            "use a kernel built with CONFIG_PERF_EVENTS=y".into(),
        ),
        OpenClass::Other(e) => (
            format!(
                "perf_event_open failed: {}",
                io::Error::from_raw_os_error(e)
            ),
            "see the kernel log (dmesg); odin runs without these counters".into(),
        ),
    }
}

/// Sums up the outcome of opening each group.
pub fn summarize(
    hardware: Result<(), OpenClass>,
    software: Result<(), OpenClass>,
    perms: &Permissions,
) -> CounterSupport {
    let hw = match hardware {
        Ok(()) => return CounterSupport::Hardware,
        Err(class) => explain(GroupKind::Hardware, class, perms),
    };
    match software {
        Ok(()) => CounterSupport::SoftwareOnly {
            reason: hw.0,
            fix: hw.1,
        },
        Err(class) => {
            let (reason, fix) = explain(GroupKind::Software, class, perms);
            if reason == hw.0 {
                CounterSupport::None { reason, fix }
            } else {
                CounterSupport::None {
                    reason: format!("{reason} (hardware: {})", hw.0),
                    fix,
                }
            }
        }
    }
}

/// Opens (then closes) each group on the calling thread and sums up, with
/// the permission files read under `root`.
pub fn probe(source: &mut dyn CounterSource, root: &Path) -> CounterSupport {
    let tid = crate::thread::gettid();
    let mut try_open = |kind| match source.open(Target::Thread(tid), kind) {
        Ok(opened) => {
            source.close(opened.handle);
            Ok(())
        }
        Err(e) => Err(e.class().unwrap_or(OpenClass::Other(0))),
    };
    let hardware = try_open(GroupKind::Hardware);
    let software = try_open(GroupKind::Software);
    summarize(hardware, software, &Permissions::read(root))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::perf::{FakeCall, FakeCounters, PerfCounters};

    fn tree(paranoid: Option<&str>, status: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/sys/kernel")).unwrap();
        std::fs::create_dir_all(dir.path().join("proc/self")).unwrap();
        if let Some(p) = paranoid {
            std::fs::write(dir.path().join("proc/sys/kernel/perf_event_paranoid"), p).unwrap();
        }
        if let Some(s) = status {
            std::fs::write(dir.path().join("proc/self/status"), s).unwrap();
        }
        dir
    }

    fn status(capeff: &str) -> String {
        format!(
            "Name:\todin\nCapInh:\t0000000000000000\nCapEff:\t{capeff}\nCapBnd:\t000001ffffffffff\n"
        )
    }

    #[test]
    fn paranoid_levels_parse() {
        for (text, want) in [("2\n", 2), ("-1\n", -1), (" 3 \n", 3), ("0", 0)] {
            let d = tree(Some(text), None);
            assert_eq!(read_paranoid(d.path()).unwrap(), want, "{text:?}");
        }
    }

    #[test]
    fn malformed_or_missing_paranoid_is_a_clear_error() {
        for text in ["", "two\n", "2 3\n", "9999999999999\n"] {
            let d = tree(Some(text), None);
            let err = read_paranoid(d.path()).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, PerfError::Parse { .. }), "{msg}");
            assert!(msg.contains("perf_event_paranoid"), "{msg}");
        }
        let d = tree(None, None);
        let err = read_paranoid(d.path()).unwrap_err();
        assert!(matches!(err, PerfError::Io { .. }), "{err}");
        assert!(err.to_string().contains("perf_event_paranoid"), "{err}");
    }

    #[test]
    fn capabilities_parse() {
        let table = [
            ("000001ffffffffff", true, true),
            ("0000004000000000", true, false),  // bit 38 only
            ("0000000000200000", false, true),  // bit 21 only
            ("0000000000000000", false, false), // unprivileged
        ];
        for (hex, perfmon_bit, sys_admin_bit) in table {
            let d = tree(None, Some(&status(hex)));
            let caps = read_capabilities(d.path()).unwrap();
            assert_eq!(caps.has(Capabilities::PERFMON), perfmon_bit, "{hex}");
            assert_eq!(caps.has(Capabilities::SYS_ADMIN), sys_admin_bit, "{hex}");
            assert_eq!(caps.perfmon(), perfmon_bit || sys_admin_bit, "{hex}");
        }
        assert!(!Capabilities { effective: !0 }.has(64));
    }

    #[test]
    fn malformed_or_missing_status_is_a_clear_error() {
        for (text, want) in [
            (status("zz"), "not a hex mask"),
            (status("1ffffffffffffffff"), "not a hex mask"),
            (status(""), "not a hex mask"),
            ("Name:\todin\n".to_string(), "no CapEff line"),
            (String::new(), "no CapEff line"),
        ] {
            let d = tree(None, Some(&text));
            let msg = read_capabilities(d.path()).unwrap_err().to_string();
            assert!(
                msg.contains(want) && msg.contains("proc/self/status"),
                "{msg}"
            );
        }
        let d = tree(None, None);
        let err = read_capabilities(d.path()).unwrap_err();
        assert!(matches!(err, PerfError::Io { .. }), "{err}");
        // Unreadable files leave the permissions unknown, not a failure.
        assert_eq!(Permissions::read(d.path()), Permissions::default());
    }

    #[test]
    fn cpu_wide_permission_follows_paranoid_and_caps() {
        let caps = |effective| Some(Capabilities { effective });
        let table = [
            (Some(-1), None, Some(true)),
            (Some(0), caps(0), Some(true)),
            (Some(1), caps(0), Some(false)),
            (Some(2), caps(1 << 38), Some(true)),
            (Some(3), caps(1 << 21), Some(true)),
            (None, caps(0), None),
            (None, caps(1 << 38), Some(true)),
        ];
        for (paranoid, capabilities, want) in table {
            let p = Permissions {
                paranoid,
                capabilities,
            };
            assert_eq!(p.cpu_wide_allowed(), want, "{p:?}");
        }
    }

    #[test]
    fn summaries_give_reasons_and_fixes() {
        let unpriv = Permissions {
            paranoid: Some(3),
            capabilities: Some(Capabilities { effective: 0 }),
        };
        let root = Permissions {
            paranoid: Some(2),
            capabilities: Some(Capabilities { effective: !0 }),
        };
        assert_eq!(summarize(Ok(()), Ok(()), &unpriv), CounterSupport::Hardware);

        let vm = summarize(Err(OpenClass::Unsupported), Ok(()), &root);
        assert!(vm.has_software() && !vm.has_hardware());
        let text = vm.to_string();
        assert!(
            text.contains("no hardware PMU (virtual machine?)"),
            "{text}"
        );
        assert!(
            text.contains("bare metal") && text.contains("vPMU"),
            "{text}"
        );

        let locked = summarize(
            Err(OpenClass::NotPermitted),
            Err(OpenClass::NotPermitted),
            &unpriv,
        );
        let CounterSupport::None { reason, fix } = &locked else {
            panic!("{locked:?}");
        };
        assert_eq!(
            reason,
            "perf_event_paranoid is 3 and odin lacks CAP_PERFMON"
        );
        assert!(fix.contains("perf_event_paranoid<=1") && fix.contains("CAP_PERFMON"));

        // Refused while privileged: something other than paranoid blocks it.
        let seccomp = summarize(
            Err(OpenClass::NotPermitted),
            Err(OpenClass::NotPermitted),
            &root,
        );
        assert!(seccomp.to_string().contains("seccomp"), "{seccomp}");

        let mixed = summarize(
            Err(OpenClass::Unsupported),
            Err(OpenClass::Other(libc::ENOSYS)),
            &root,
        );
        let CounterSupport::None { reason, .. } = &mixed else {
            panic!("{mixed:?}");
        };
        assert!(reason.contains("no perf_event_open") && reason.contains("no hardware PMU"));

        let odd = summarize(Err(OpenClass::Other(libc::EINVAL)), Ok(()), &root);
        assert!(odd.to_string().contains("Invalid argument"), "{odd}");
    }

    #[test]
    fn probe_opens_closes_and_summarizes() {
        let fake = FakeCounters::without_hardware();
        let d = tree(Some("2\n"), Some(&status("0000000000000000")));
        let support = probe(&mut fake.clone(), d.path());
        assert!(
            matches!(support, CounterSupport::SoftwareOnly { .. }),
            "{support}"
        );
        let calls = fake.calls();
        assert_eq!(calls.len(), 3, "{calls:?}");
        assert!(matches!(calls[2], FakeCall::Close(_)), "{calls:?}");
        assert!(fake.open_groups().is_empty());

        fake.fail(GroupKind::Software, OpenClass::NotPermitted);
        fake.fail(GroupKind::Hardware, OpenClass::NotPermitted);
        let support = probe(&mut fake.clone(), d.path());
        assert!(
            support.to_string().contains("perf_event_paranoid is 2"),
            "{support}"
        );
    }

    #[test]
    fn probe_on_this_machine() {
        let _s = crate::monitor::perf::tests::serial();
        let root = Path::new("/");
        let support = probe(&mut PerfCounters::new(), root);
        println!("this machine: {support}; {:?}", Permissions::read(root));
        let hw =
            PerfCounters::new().open(Target::Thread(crate::thread::gettid()), GroupKind::Hardware);
        assert_eq!(support.has_hardware(), hw.is_ok(), "{support}");
        if let Err(e) = hw
            && e.class() == Some(OpenClass::Unsupported)
        {
            assert!(support.to_string().contains("no hardware PMU"), "{support}");
        }
    }
}
