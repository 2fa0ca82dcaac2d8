//! `guided` (ours, beyond the paper): jump to the model's optimum, then let
//! odin's local search refine it.
//!
//! On a detector event, each PE's slowdown is estimated from the
//! measurements ([`cost::measured_slowdown`]: service over expected, our
//! own time-sharing taken out). A PE none of our stages runs on cannot be
//! measured that way, so its last estimate is kept, except when its
//! foreign CPU use is known: then `1 + foreign / speed` (a quiet PE reads
//! 1, so an abandoned PE is taken back once its antagonist is gone). The
//! oracle's optimum for the estimated speeds (`pe_speed / slowdown`, never
//! the simulator's true speeds) is applied in one step; after
//! `candidate_frames` frames it is measured, reverted if the bottleneck
//! got worse by more than `improvement`, and otherwise handed to
//! [`LocalSearch`], which corrects what the estimates got wrong.
//!
//! Pure: no OS calls.

use super::config::PolicyConfig;
use super::cost::{self, CostModel};
use super::odin::LocalSearch;
use super::oracle::{self, better};
use super::{Action, Observation, Placement, Policy};

/// What guided is doing.
#[derive(Clone, Debug, PartialEq)]
enum Phase {
    Idle,
    /// The oracle's placement is in force and being measured.
    Jumped {
        before: Placement,
        before_ms: f64,
        target: Placement,
        since: Option<u64>,
    },
}

/// The guided policy.
#[derive(Clone, Debug)]
pub struct Guided {
    search: LocalSearch,
    candidate_frames: u32,
    improvement: f64,
    enumerate_orders: bool,
    phase: Phase,
    pending: bool,
    /// Last slowdown estimate of each PE.
    slowdown: Vec<Option<f64>>,
}

impl Guided {
    /// `guided` with the parameters of `cfg`.
    pub fn new(cfg: &PolicyConfig) -> Self {
        Self {
            search: LocalSearch::new(cfg.into()),
            candidate_frames: cfg.candidate_frames,
            improvement: cfg.improvement,
            enumerate_orders: cfg.enumerate_orders,
            phase: Phase::Idle,
            pending: false,
            slowdown: Vec::new(),
        }
    }

    /// The current slowdown estimate of each PE (1.0 where never measured).
    pub fn slowdown(&self) -> Vec<f64> {
        self.slowdown.iter().map(|s| s.unwrap_or(1.0)).collect()
    }

    /// The refining search.
    pub fn search(&self) -> &LocalSearch {
        &self.search
    }

    /// Whether a placement guided applied is being measured: the oracle
    /// jump, or a local-search candidate.
    pub fn is_measuring(&self) -> bool {
        matches!(self.phase, Phase::Jumped { .. }) || self.search.is_measuring()
    }

    fn learn(&mut self, obs: &Observation) {
        let pes = obs.pe_speed.len();
        self.slowdown.resize(pes, None);
        for (p, m) in cost::measured_slowdown(obs).into_iter().enumerate() {
            if let Some(s) = m.or_else(|| cost::foreign_slowdown(obs, p)) {
                self.slowdown[p] = Some(s);
            }
        }
    }

    /// Each PE's nominal speed over its estimated slowdown.
    fn speeds(&self, obs: &Observation) -> Vec<f64> {
        obs.pe_speed
            .iter()
            .zip(self.slowdown())
            .map(|(v, s)| v / s)
            .collect()
    }

    /// The oracle's placement for the estimated speeds, if it beats the
    /// placement in force under the same estimates.
    fn jump_target(&self, obs: &Observation) -> Option<Placement> {
        if obs.unit_ms.is_empty() || obs.pe_speed.is_empty() {
            return None;
        }
        let speed = self.speeds(obs);
        let best = oracle::optimal(&obs.unit_ms, &speed, self.enumerate_orders);
        let cur = &obs.placement;
        if cur.units == obs.unit_ms.len() && cur.is_valid(speed.len()) {
            let (cb, cl) = CostModel::new(&obs.unit_ms).score(cur, &speed);
            if !better(best.bottleneck_ms, best.latency_ms, cb, cl) {
                return None;
            }
        }
        Some(best.placement)
    }
}

impl Policy for Guided {
    fn name(&self) -> &'static str {
        "guided"
    }

    fn exploring(&self) -> bool {
        self.is_measuring()
    }

    fn decide(&mut self, obs: &Observation) -> Action {
        self.learn(obs);
        if !obs.events.is_empty() {
            self.pending = true;
        }
        if let Phase::Jumped {
            before,
            before_ms,
            target,
            since,
        } = std::mem::replace(&mut self.phase, Phase::Idle)
        {
            if obs.placement != target {
                if obs.placement == before && since.is_none() {
                    // Not in force yet: keep waiting.
                    self.phase = Phase::Jumped {
                        before,
                        before_ms,
                        target,
                        since,
                    };
                }
                return Action::Keep;
            }
            let since = since.unwrap_or(obs.frames_done);
            let done = obs.frames_done.saturating_sub(since) >= u64::from(self.candidate_frames);
            match cost::measured_bottleneck(obs) {
                Some(ms) if done => {
                    // What the old placement would take now: measured when
                    // the jump was made (interference may still have been
                    // ramping up then), or predicted from what has been
                    // learnt since, whichever is worse.
                    let (before_now, _) =
                        CostModel::new(&obs.unit_ms).score(&before, &self.speeds(obs));
                    let reference = if before_now.is_finite() {
                        before_ms.max(before_now)
                    } else {
                        before_ms
                    };
                    if ms > reference * (1.0 + self.improvement) {
                        // The estimates were wrong enough to hurt: go back.
                        return Action::Apply(before);
                    }
                    self.search.start();
                    return self.search.poll(obs);
                }
                _ => {
                    self.phase = Phase::Jumped {
                        before,
                        before_ms,
                        target,
                        since: Some(since),
                    };
                    return Action::Keep;
                }
            }
        }
        if self.search.is_active() || !self.pending {
            return self.search.poll(obs);
        }
        self.pending = false;
        let Some(before_ms) = cost::measured_bottleneck(obs) else {
            return Action::Keep;
        };
        match self.jump_target(obs) {
            Some(target) => {
                self.phase = Phase::Jumped {
                    before: obs.placement.clone(),
                    before_ms,
                    target: target.clone(),
                    since: None,
                };
                Action::Apply(target)
            }
            None => {
                self.search.start();
                self.search.poll(obs)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::detector::Event;
    use crate::policy::testutil;

    use testutil::onset;

    /// Runs guided with exact settled measurements; returns the final
    /// placement and the placements applied.
    fn drive(
        g: &mut Guided,
        unit_ms: &[f64],
        speed: &[f64],
        start: Placement,
        slowdown: &[f64],
        ticks: usize,
    ) -> (Placement, Vec<Placement>) {
        let mut cur = start;
        let mut applied = Vec::new();
        for t in 0..ticks {
            let mut o = testutil::obs(unit_ms, speed, cur.clone(), slowdown, t as u64 * 4);
            if t == 0 {
                o.events = vec![onset(1)];
            }
            if let Action::Apply(p) = g.decide(&o) {
                assert!(p.is_valid(speed.len()));
                applied.push(p.clone());
                cur = p;
            }
        }
        (cur, applied)
    }

    #[test]
    fn lands_on_the_oracle_placement_when_estimates_are_exact() {
        // (unit costs, nominal speeds, initial cuts, true slowdowns)
        type Case<'a> = (&'a [f64], &'a [f64], &'a [usize], &'a [f64]);
        let cases: [Case; 3] = [
            (&[1.0; 12], &[1.0; 4], &[3, 6, 9], &[1.0, 3.0, 1.0, 1.0]),
            (
                &[2.0, 1.0, 4.0, 3.0, 1.0, 1.0, 5.0, 2.0, 2.0, 1.0],
                &[1.0, 2.0, 1.0],
                &[3, 6],
                &[1.0, 1.5, 4.0],
            ),
            (&[1.0; 8], &[1.0; 3], &[3, 5], &[1.0, 10.0, 1.0]),
        ];
        for (unit_ms, speed, cuts, slowdown) in cases {
            let mut g = Guided::new(&PolicyConfig::default());
            let start = testutil::placement(unit_ms.len(), cuts);
            let truth: Vec<f64> = speed.iter().zip(slowdown).map(|(v, s)| v / s).collect();
            let want = oracle::optimal(unit_ms, &truth, true);
            let (end, applied) = drive(&mut g, unit_ms, speed, start, slowdown, 60);
            assert_eq!(
                applied[0], want.placement,
                "the jump is the oracle's placement"
            );
            let (b, l) = CostModel::new(unit_ms).score(&end, &truth);
            assert!(
                (b - want.bottleneck_ms).abs() < 1e-9 && (l - want.latency_ms).abs() < 1e-9,
                "{end:?} vs {want:?}"
            );
            assert!(!g.search().is_active());
        }
    }

    #[test]
    fn a_jump_measured_against_a_ramping_onset_is_kept_when_it_helps() {
        // At the onset PE 1 measures 1.5x slower; it settles at 2x. The
        // jump (6 of 10 units on PE 0) then measures 8 ms: worse than the
        // 7.5 ms measured before it, better than the 10 ms the old cut
        // takes now.
        let mut g = Guided::new(&PolicyConfig::default());
        let unit_ms = [1.0; 10];
        let speed = [1.0; 2];
        let start = testutil::placement(10, &[5]);
        let mut o = testutil::obs(&unit_ms, &speed, start.clone(), &[1.0, 1.5], 0);
        o.events = vec![onset(1)];
        let Action::Apply(jump) = g.decide(&o) else {
            panic!("guided jumps at the onset")
        };
        let cost = CostModel::new(&unit_ms);
        assert_eq!(cost.score(&jump, &[1.0, 1.0 / 1.5]).0, 6.0, "{jump:?}");
        assert_eq!(cost.score(&jump, &[1.0, 0.5]).0, 8.0, "{jump:?}");
        for t in 1..20 {
            let o = testutil::obs(&unit_ms, &speed, jump.clone(), &[1.0, 2.0], t * 4);
            if let Action::Apply(p) = g.decide(&o) {
                assert_ne!(p, start, "went back to the cut that now takes 10 ms");
                let b = cost.score(&p, &[1.0, 0.5]).0;
                assert!(b <= 8.0, "{p:?} takes {b} ms");
            }
        }
    }

    #[test]
    fn an_unused_slow_pe_keeps_its_estimate_until_it_is_seen_quiet() {
        let mut g = Guided::new(&PolicyConfig::default());
        let unit_ms = [1.0; 8];
        let speed = [1.0; 3];
        let (end, _) = drive(
            &mut g,
            &unit_ms,
            &speed,
            testutil::placement(8, &[3, 5]),
            &[1.0, 10.0, 1.0],
            40,
        );
        let s = end.mapping.iter().position(|&p| p == 1).unwrap();
        assert!(end.range(s).is_empty(), "PE 1 left unused: {end:?}");
        assert!((g.slowdown()[1] - 10.0).abs() < 1e-9);
        // The antagonist is gone: PE 1's foreign use reads 0, the estimate goes back to 1,
        // and the next event brings PE 1 back into use.
        let mut o = testutil::obs(&unit_ms, &speed, end.clone(), &[1.0; 3], 1000);
        o.pes[1].foreign_cpu_share = Some(0.0);
        o.events = vec![Event::Offset { pe: 1, stage: s }];
        let Action::Apply(q) = g.decide(&o) else {
            panic!()
        };
        assert_eq!(g.slowdown()[1], 1.0);
        assert_eq!(CostModel::new(&unit_ms).score(&q, &speed).0, 3.0);
    }

    #[test]
    fn a_jump_that_makes_things_worse_is_reverted() {
        let mut g = Guided::new(&PolicyConfig::default());
        let unit_ms = [1.0; 9];
        let speed = [1.0; 3];
        let start = testutil::placement(9, &[3, 6]);
        // Measured: PE 1 twice as slow.
        let mut o = testutil::obs(&unit_ms, &speed, start.clone(), &[1.0, 2.0, 1.0], 0);
        o.events = vec![onset(1)];
        let Action::Apply(target) = g.decide(&o) else {
            panic!()
        };
        assert!(g.is_measuring());
        // But under the target PE 0 turns out to be crippled instead.
        let o = testutil::obs(&unit_ms, &speed, target.clone(), &[5.0, 2.0, 1.0], 10);
        assert_eq!(g.decide(&o), Action::Keep);
        let o = testutil::obs(&unit_ms, &speed, target, &[5.0, 2.0, 1.0], 30);
        assert_eq!(g.decide(&o), Action::Apply(start));
    }
}
