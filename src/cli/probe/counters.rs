//! `hw_counters` and `sw_counters`: a hardware and a software counter
//! group opened on the calling thread.

use odin::monitor::perf::{
    CounterSource, CounterSupport, GroupKind, OpenClass, Opened, Permissions, Target, summarize,
};

use super::{Check, Status, gettid};

/// Opens (then closes) `kind` on the calling thread.
pub fn try_open(
    counters: &mut dyn CounterSource,
    target: Target,
    kind: GroupKind,
) -> Result<Opened, OpenClass> {
    match counters.open(target, kind) {
        Ok(opened) => {
            counters.close(opened.handle);
            Ok(opened)
        }
        Err(e) => Err(e.class().unwrap_or(OpenClass::Other(0))),
    }
}

/// What an opened group counts, and what it could not.
fn counting(opened: &Opened) -> String {
    let names: Vec<&str> = opened.counting.iter().map(|k| k.name()).collect();
    let mut s = names.join(", ");
    if !opened.missing.is_empty() {
        let missing: Vec<String> = opened
            .missing
            .iter()
            .map(|(k, class)| format!("{} ({class})", k.name()))
            .collect();
        s.push_str(&format!("; not counting {}", missing.join(", ")));
    }
    if opened.user_only {
        s.push_str("; user space only");
    }
    s
}

const GRANT: &str = "sysctl kernel.perf_event_paranoid=1 (or lower), or grant CAP_PERFMON \
                     (systemd: AmbientCapabilities=CAP_PERFMON)";

/// `hw_counters` and `sw_counters`: open each group on this thread.
pub fn check(counters: &mut dyn CounterSource, perms: &Permissions) -> (Check, Check) {
    let me = Target::Thread(gettid());
    let hw = match try_open(counters, me, GroupKind::Hardware) {
        Ok(opened) if opened.missing.is_empty() => {
            Check::ok("hw_counters", format!("per thread: {}", counting(&opened)))
        }
        Ok(opened) => Check::not_ok(
            "hw_counters",
            Status::Degraded,
            format!("per thread: {}", counting(&opened)),
            "the PMU cannot count some of odin's events; the others count",
            "none needed: odin derives what it can from the events that count",
        ),
        Err(class) => {
            let (reason, fix) = explain(GroupKind::Hardware, class, perms);
            Check::not_ok(
                "hw_counters",
                Status::Degraded,
                "no instructions, cycles or LLC misses, so no IPC or MPKI",
                format!(
                    "{reason}; odin runs on the other signals \
                     (software counters, schedstat, PSI, stage times)"
                ),
                fix,
            )
        }
    };
    let sw = match try_open(counters, me, GroupKind::Software) {
        Ok(opened) if opened.user_only => Check::not_ok(
            "sw_counters",
            Status::Degraded,
            format!("per thread: {}", counting(&opened)),
            format!(
                "{}: counting user space only, so context switches read 0",
                paranoid_text(perms)
            ),
            GRANT,
        ),
        Ok(opened) if opened.missing.is_empty() => {
            Check::ok("sw_counters", format!("per thread: {}", counting(&opened)))
        }
        Ok(opened) => Check::not_ok(
            "sw_counters",
            Status::Degraded,
            format!("per thread: {}", counting(&opened)),
            "the kernel cannot count some software events",
            "use a kernel built with CONFIG_PERF_EVENTS=y",
        ),
        Err(class) => {
            let (reason, fix) = explain(GroupKind::Software, class, perms);
            Check::not_ok(
                "sw_counters",
                Status::Degraded,
                "no task-clock, context switches or migrations",
                format!("{reason}; odin runs on schedstat, PSI and stage times"),
                fix,
            )
        }
    };
    (hw, sw)
}

/// Reason and fix for a failed open of a `kind` group, as
/// [`summarize`] words them.
pub fn explain(kind: GroupKind, class: OpenClass, perms: &Permissions) -> (String, String) {
    let other = match kind {
        GroupKind::Hardware => Ok(()),
        GroupKind::Software => Err(class),
    };
    match (kind, class, summarize(Err(class), other, perms)) {
        // summarize words an unsupported pair as the hardware PMU's absence.
        (GroupKind::Software, OpenClass::Unsupported, _) => (
            "the kernel has no software perf events".into(),
            "use a kernel built with CONFIG_PERF_EVENTS=y".into(),
        ),
        (
            _,
            _,
            CounterSupport::SoftwareOnly { reason, fix } | CounterSupport::None { reason, fix },
        ) => (reason, fix),
        (_, _, CounterSupport::Hardware) => (
            format!("perf_event_open failed ({class})"),
            "see the kernel log (dmesg)".into(),
        ),
    }
}

/// `perf_event_paranoid is N` or that it could not be read.
fn paranoid_text(perms: &Permissions) -> String {
    match perms.paranoid {
        Some(p) => format!("perf_event_paranoid is {p}"),
        None => "perf_event_paranoid is unreadable".into(),
    }
}
