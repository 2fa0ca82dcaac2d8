//! The controller: the detector and one policy, stepped once per tick.
//! The simulator and the daemon call only this.
//!
//! ```text
//!   Observation --> Detector::tick --> obs.events --> Policy::decide --> Action
//!                                                          |
//!                        placement changes: Detector::rebase
//! ```

use super::config::PolicyConfig;
use super::detector::{Detector, DetectorConfig};
use super::{Action, Observation, Policy};

/// Owns the detector and the policy.
pub struct Controller {
    detector: Detector,
    policy: Box<dyn Policy>,
}

impl Controller {
    /// A controller running `policy` behind a detector with `detector`.
    pub fn new(policy: Box<dyn Policy>, detector: DetectorConfig) -> Self {
        Self {
            detector: Detector::new(detector),
            policy,
        }
    }

    /// The policy `name` built from `cfg`, behind `cfg.detector`.
    pub fn build(name: &str, cfg: &PolicyConfig) -> Result<Self, String> {
        Ok(Self::new(super::build(name, cfg)?, cfg.detector.clone()))
    }

    /// One tick: runs the detector on `obs.stages` and `obs.pes`, stores
    /// its events in `obs.events`, asks the policy, and re-bases the
    /// detector when the answer changes the placement. An `Apply` of the
    /// placement already in force comes back as `Keep`.
    pub fn step(&mut self, obs: &mut Observation) -> Action {
        obs.events = self.detector.tick(&obs.stages, &obs.pes);
        match self.policy.decide(obs) {
            Action::Apply(p) if p != obs.placement => {
                self.detector.rebase();
                Action::Apply(p)
            }
            _ => Action::Keep,
        }
    }

    /// The detector.
    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    /// Whether the policy is measuring a placement it applied (see
    /// [`Policy::exploring`]).
    pub fn exploring(&self) -> bool {
        self.policy.exploring()
    }

    /// The policy's name.
    pub fn policy_name(&self) -> &'static str {
        self.policy.name()
    }
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("policy", &self.policy.name())
            .field("detector", &self.detector)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::detector::Event;
    use crate::policy::{Placement, testutil};

    /// A policy that applies a fixed placement on every event.
    struct OnEvent(Placement);

    impl Policy for OnEvent {
        fn name(&self) -> &'static str {
            "on-event"
        }
        fn decide(&mut self, obs: &Observation) -> Action {
            if obs.events.is_empty() {
                Action::Keep
            } else {
                Action::Apply(self.0.clone())
            }
        }
    }

    #[test]
    fn fills_events_and_rebases_when_the_placement_changes() {
        let cfg = DetectorConfig::default();
        let p = testutil::placement(4, &[2]);
        let moved = Placement {
            mapping: vec![0, 2],
            ..p.clone()
        };
        let mut c = Controller::new(Box::new(OnEvent(moved.clone())), cfg.clone());
        assert_eq!(c.policy_name(), "on-event");
        let mut o = testutil::obs(&[1.0; 4], &[1.0; 3], p.clone(), &[1.0, 2.0, 1.0], 0);
        let mut fired = None;
        for t in 0..cfg.onset_ticks {
            let a = c.step(&mut o);
            if !o.events.is_empty() {
                fired = Some((t, a));
            }
        }
        let (t, a) = fired.expect("an onset within onset_ticks");
        assert_eq!(t, cfg.onset_ticks - 1);
        assert_eq!(a, Action::Apply(moved.clone()));
        assert!(c.detector().interfered(1).is_some());
        // Re-based: the next settle_ticks slow ticks are ignored, then the streak restarts.
        // Fresh streaks: a second onset cannot come before settle + onset ticks.
        // (The stage stays interfered, so watch the streak through an offset instead.)
        let mut quiet = testutil::obs(&[1.0; 4], &[1.0; 3], p.clone(), &[1.0; 3], 0);
        let mut n = 0;
        loop {
            n += 1;
            c.step(&mut quiet);
            if quiet
                .events
                .iter()
                .any(|e| matches!(e, Event::Offset { .. }))
            {
                break;
            }
            assert!(n < 20);
        }
        assert_eq!(
            n,
            cfg.settle_ticks + cfg.offset_ticks,
            "settle, then the offset streak"
        );
        // The same placement applied again is a Keep, and does not re-base.
        let mut c = Controller::new(Box::new(OnEvent(p.clone())), cfg.clone());
        for _ in 0..cfg.onset_ticks {
            assert_eq!(c.step(&mut o), Action::Keep);
        }
        let mut n = 0;
        loop {
            n += 1;
            c.step(&mut quiet);
            if !quiet.events.is_empty() {
                break;
            }
        }
        assert_eq!(n, cfg.offset_ticks, "no settling without a change");
    }

    /// Every policy behind the real detector, on a synthetic run: 12 equal
    /// units on 4 PEs (the fourth idle), PE 1 slowed 3x from tick 10.
    /// Returns the modelled bottleneck at the end under the true speeds.
    fn run(name: &str) -> (f64, Placement) {
        let cfg = PolicyConfig::default();
        let mut c = Controller::build(name, &cfg).unwrap();
        let unit_ms = [1.0; 12];
        let speed = [1.0; 4];
        let mut cur = testutil::placement(12, &[4, 8, 12]);
        for t in 0..200u64 {
            let slow = if t < 10 {
                [1.0; 4]
            } else {
                [1.0, 3.0, 1.0, 1.0]
            };
            let mut o = testutil::obs(&unit_ms, &speed, cur.clone(), &slow, t * 4);
            if let Action::Apply(p) = c.step(&mut o) {
                assert!(p.is_valid(4) && p.units == 12, "{name}: {p:?}");
                cur = p;
            }
        }
        let truth = [1.0, 1.0 / 3.0, 1.0, 1.0];
        let b = crate::policy::cost::CostModel::new(&unit_ms)
            .score(&cur, &truth)
            .0;
        (b, cur)
    }

    #[test]
    fn every_policy_copes_with_a_slowed_pe_end_to_end() {
        assert_eq!(run("static").0, 12.0, "static pays the full 3x");
        assert_eq!(run("oracle").0, 4.0);
        assert_eq!(run("guided").0, 4.0, "guided reaches the oracle");
        let (b, p) = run("lls");
        assert_eq!(b, 4.0, "lls moves the stage to the idle PE: {p:?}");
        assert_eq!(p.cuts, vec![4, 8, 12]);
        let (b, p) = run("odin");
        assert_eq!(
            b, 4.0,
            "odin's local search trades PE 1 for the idle one: {p:?}"
        );
        let s = p.mapping.iter().position(|&pe| pe == 1).unwrap();
        assert!(p.range(s).is_empty(), "PE 1 left unused: {p:?}");
    }

    #[test]
    fn builds_every_named_policy() {
        let cfg = PolicyConfig::default();
        for name in crate::policy::NAMES {
            let c = Controller::build(name, &cfg).unwrap();
            assert_eq!(c.policy_name(), *name);
        }
        assert!(
            Controller::build("nope", &cfg)
                .unwrap_err()
                .contains("static")
        );
        let bad = PolicyConfig {
            alpha: 0,
            ..Default::default()
        };
        assert!(
            Controller::build("odin", &bad)
                .unwrap_err()
                .starts_with("alpha")
        );
    }
}
