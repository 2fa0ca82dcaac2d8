//! Drivers and PE signals for odin's tests.

use crate::policy::detector::Event;
use crate::policy::{Action, Observation, Placement, Policy, testutil};

/// Drives `policy` like the controller and simulator would, with exact
/// settled service times for `slowdown`; returns every placement applied.
pub(super) fn drive(
    policy: &mut dyn Policy,
    unit_ms: &[f64],
    start: Placement,
    slowdown: &[f64],
    events: Vec<Event>,
    ticks: usize,
) -> (Placement, Vec<Placement>) {
    drive_with(policy, unit_ms, start, slowdown, events, ticks, |_| {})
}

/// [`drive`], with `edit` applied to every observation.
pub(super) fn drive_with(
    policy: &mut dyn Policy,
    unit_ms: &[f64],
    start: Placement,
    slowdown: &[f64],
    events: Vec<Event>,
    ticks: usize,
    edit: impl Fn(&mut Observation),
) -> (Placement, Vec<Placement>) {
    let speed = vec![1.0; slowdown.len()];
    let mut cur = start;
    let mut applied = Vec::new();
    let mut events = Some(events);
    for t in 0..ticks {
        let mut o = testutil::obs(unit_ms, &speed, cur.clone(), slowdown, t as u64 * 4);
        o.events = events.take().unwrap_or_default();
        edit(&mut o);
        if let Action::Apply(p) = policy.decide(&o) {
            assert!(p.is_valid(speed.len()));
            applied.push(p.clone());
            cur = p;
        }
    }
    (cur, applied)
}

/// Without unit costs the step cannot be predicted: one unit at a time.
pub(super) fn blind(o: &mut Observation) {
    o.unit_ms.clear();
}

/// PE signals of an interfered (`foreign` CPUs used by others) or
/// quiet (`foreign` 0) PE with our stage on it.
pub(super) fn signals(foreign: f64) -> crate::policy::PeSignals {
    crate::policy::PeSignals {
        ipc: Some(2.0),
        llc_mpki: Some(1.0),
        foreign_cpu_share: Some(foreign),
        ..Default::default()
    }
}
