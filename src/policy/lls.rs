//! `lls`: least-loaded scheduling, the paper's baseline.
//!
//! When the detector reports an onset on stage `s`'s PE, stage `s` moves,
//! whole, to the least-loaded other PE; the cuts never change. The load of
//! a PE is what competes for it: foreign CPU use (in CPUs, over the PE's
//! speed), plus each of our non-empty stages on it weighted by its
//! utilisation (its service time over the bottleneck's), plus 1 while the
//! PE is known to be interfered with. An idle PE scores 0, so it is chosen
//! when there is one; otherwise the stage time-shares the lightest PE.
//!
//! What we chose for the end of interference (the paper's LLS only reacts
//! to load): LLS does not move a stage back just because its new PE is
//! fine. A PE stops counting as interfered on an Offset event for it, or
//! when its foreign CPU use is measured below `lls.quiet_share` for
//! `lls.quiet_ticks` ticks while none of our stages runs there. A stage
//! that was moved and now *time-shares* a PE with another of our stages
//! returns to its home PE once that PE is quiet and less loaded: that is
//! least-loaded scheduling reacting to load, not a search.
//!
//! Pure: no OS calls.

use super::config::LlsConfig;
use super::detector::Event;
use super::{Action, Observation, Placement, Policy};

/// Least-loaded scheduling state.
#[derive(Clone, Debug, Default)]
pub struct Lls {
    cfg: LlsConfig,
    /// PEs known to be interfered with.
    hot: Vec<bool>,
    /// Consecutive quiet ticks of each hot PE.
    quiet: Vec<u32>,
    /// Where each moved stage came from.
    home: Vec<Option<usize>>,
}

impl Lls {
    /// LLS with `cfg`.
    pub fn new(cfg: LlsConfig) -> Self {
        Self {
            cfg,
            ..Self::default()
        }
    }

    /// Whether PE `pe` is known to be interfered with.
    pub fn is_hot(&self, pe: usize) -> bool {
        self.hot.get(pe).copied().unwrap_or(false)
    }

    /// The load of PE `pe` under `p`, not counting stage `skip`.
    fn load(&self, obs: &Observation, p: &Placement, pe: usize, skip: usize) -> f64 {
        let foreign = obs
            .pes
            .get(pe)
            .and_then(|s| s.foreign_cpu_share)
            .unwrap_or(0.0);
        let speed = obs
            .pe_speed
            .get(pe)
            .copied()
            .filter(|v| *v > 0.0)
            .unwrap_or(1.0);
        let slowest = obs
            .stages
            .iter()
            .filter_map(|s| s.service_ms)
            .fold(0.0, f64::max);
        let ours: f64 = (0..p.stages())
            .filter(|&s| s != skip && p.mapping[s] == pe && !p.range(s).is_empty())
            .map(|s| match obs.stages.get(s).and_then(|g| g.service_ms) {
                Some(ms) if slowest > 0.0 => (ms / slowest).clamp(0.0, 1.0),
                _ => 1.0,
            })
            .sum();
        foreign / speed + ours + if self.is_hot(pe) { 1.0 } else { 0.0 }
    }

    /// The least-loaded PE other than `not` for stage `stage` under `p`:
    /// least load, then fastest, then lowest index.
    fn least_loaded(
        &self,
        obs: &Observation,
        p: &Placement,
        stage: usize,
        not: usize,
    ) -> Option<usize> {
        (0..obs.pe_speed.len())
            .filter(|&pe| pe != not)
            .map(|pe| (pe, self.load(obs, p, pe, stage)))
            .min_by(|a, b| {
                a.1.total_cmp(&b.1)
                    .then(obs.pe_speed[b.0].total_cmp(&obs.pe_speed[a.0]))
                    .then(a.0.cmp(&b.0))
            })
            .map(|(pe, _)| pe)
    }
}

impl Policy for Lls {
    fn name(&self) -> &'static str {
        "lls"
    }

    fn decide(&mut self, obs: &Observation) -> Action {
        let pes = obs.pe_speed.len();
        self.hot.resize(pes, false);
        self.quiet.resize(pes, 0);
        self.home.resize(obs.placement.stages(), None);
        let mut p = obs.placement.clone();
        let occupied = |p: &Placement, pe: usize| {
            (0..p.stages()).any(|s| p.mapping[s] == pe && !p.range(s).is_empty())
        };

        // Which PEs are interfered with.
        for e in &obs.events {
            match *e {
                Event::Onset { pe, .. } if pe < pes => {
                    self.hot[pe] = true;
                    self.quiet[pe] = 0;
                }
                Event::Offset { pe, .. } if pe < pes => self.hot[pe] = false,
                _ => {}
            }
        }
        for pe in 0..pes {
            if !self.hot[pe] || occupied(&p, pe) {
                continue;
            }
            match obs.pes.get(pe).and_then(|s| s.foreign_cpu_share) {
                Some(x) if x < self.cfg.quiet_share => self.quiet[pe] += 1,
                _ => self.quiet[pe] = 0,
            }
            if self.quiet[pe] >= self.cfg.quiet_ticks {
                self.hot[pe] = false;
            }
        }

        // Onsets: move the stage off its PE.
        let mut moved = false;
        for e in &obs.events {
            let Event::Onset { pe, stage, .. } = *e else {
                continue;
            };
            if stage >= p.stages() || p.mapping[stage] != pe || p.range(stage).is_empty() {
                continue;
            }
            if let Some(to) = self.least_loaded(obs, &p, stage, pe) {
                self.home[stage].get_or_insert(pe);
                p.mapping[stage] = to;
                moved = true;
            }
        }

        // Displaced stages that time-share go home once home is quiet and lighter.
        if !moved {
            for s in 0..p.stages() {
                let Some(h) = self.home[s] else { continue };
                let cur = p.mapping[s];
                if cur == h {
                    self.home[s] = None;
                    continue;
                }
                let shared = (0..p.stages())
                    .any(|t| t != s && p.mapping[t] == cur && !p.range(t).is_empty());
                if shared
                    && !self.is_hot(h)
                    && self.load(obs, &p, h, s) < self.load(obs, &p, cur, s)
                {
                    p.mapping[s] = h;
                    self.home[s] = None;
                }
            }
        }

        if p == obs.placement {
            Action::Keep
        } else {
            Action::Apply(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::detector::Kind;
    use crate::policy::testutil;

    fn onset(pe: usize, stage: usize) -> Event {
        Event::Onset {
            pe,
            stage,
            kind: Kind::CpuTimeSharing,
            severity: 1.0,
            antagonists: vec![],
        }
    }

    #[test]
    fn moves_the_stage_to_an_idle_pe_and_keeps_the_cuts() {
        let mut lls = Lls::new(LlsConfig::default());
        // Three stages on PEs 0..3, PE 3 idle, PE 2 busy with a foreign task.
        let p = Placement {
            units: 6,
            cuts: vec![2, 4],
            mapping: vec![0, 1, 2],
        };
        let mut o = testutil::obs(&[1.0; 6], &[1.0; 4], p, &[1.0, 3.0, 1.0, 1.0], 0);
        assert_eq!(lls.decide(&o), Action::Keep, "no event, no move");
        o.events = vec![onset(1, 1)];
        let Action::Apply(q) = lls.decide(&o) else {
            panic!()
        };
        assert_eq!(q.cuts, vec![2, 4], "cuts unchanged");
        assert_eq!(q.mapping, vec![0, 3, 2]);
        assert!(lls.is_hot(1));
    }

    #[test]
    fn time_shares_the_least_loaded_pe_when_none_is_idle_then_goes_home() {
        let mut lls = Lls::new(LlsConfig::default());
        let p = testutil::placement(6, &[2, 4]);
        // Stage 0 is lighter than stage 2; PE 2 also runs a foreign task.
        let unit_ms = [1.0, 0.5, 1.0, 1.0, 1.0, 1.0];
        let mut o = testutil::obs(&unit_ms, &[1.0; 3], p, &[1.0, 3.0, 1.0], 0);
        o.pes[2].foreign_cpu_share = Some(0.3);
        o.pes[1].foreign_cpu_share = Some(1.0);
        o.events = vec![onset(1, 1)];
        let Action::Apply(q) = lls.decide(&o) else {
            panic!()
        };
        assert_eq!(q.mapping, vec![0, 0, 2], "shares PE 0, the lightest");
        assert_eq!(q.cuts, vec![2, 4]);
        // The antagonist keeps running on PE 1: the stage stays.
        let mut o = testutil::obs(&unit_ms, &[1.0; 3], q.clone(), &[1.0; 3], 0);
        o.pes[1].foreign_cpu_share = Some(1.0);
        for _ in 0..10 {
            assert_eq!(lls.decide(&o), Action::Keep);
        }
        // It stops: after quiet_ticks quiet ticks the stage goes home.
        o.pes[1].foreign_cpu_share = Some(0.0);
        assert_eq!(lls.decide(&o), Action::Keep);
        assert_eq!(lls.decide(&o), Action::Keep);
        let Action::Apply(back) = lls.decide(&o) else {
            panic!()
        };
        assert_eq!(back.mapping, vec![0, 1, 2]);
    }

    #[test]
    fn a_stage_alone_on_a_fine_pe_stays_after_the_offset() {
        let mut lls = Lls::new(LlsConfig::default());
        let p = testutil::placement(4, &[2]);
        let mut o = testutil::obs(&[1.0; 4], &[1.0; 3], p, &[3.0, 1.0, 1.0], 0);
        o.events = vec![onset(0, 0)];
        let Action::Apply(q) = lls.decide(&o) else {
            panic!()
        };
        assert_eq!(q.mapping, vec![2, 1]);
        let mut o = testutil::obs(&[1.0; 4], &[1.0; 3], q, &[1.0; 3], 0);
        o.events = vec![Event::Offset { pe: 2, stage: 0 }];
        o.pes[0].foreign_cpu_share = Some(0.0);
        for _ in 0..10 {
            assert_eq!(lls.decide(&o), Action::Keep);
            o.events.clear();
        }
    }
}
