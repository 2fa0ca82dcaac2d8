//! The search clock: the frames done under a placement, and whether its
//! smoothed times have stopped drifting, so that a placement is judged on
//! times it produced.

use crate::policy::Observation;
use crate::policy::cost::measured_times;

/// Share of a stage's time its smoothed service time may still drift per
/// frame for the measurement to count as settled (the EWMA closes a share
/// 0.2 of the gap each frame, so 0.5% a frame means within about 2.5% of
/// the placement's real time).
const SETTLED_DRIFT: f64 = 0.005;

/// A candidate is judged after at most this many times `candidate_frames`
/// frames even if its times still drift.
const MAX_WAIT: u64 = 4;

/// Frames counted under a placement, and whether its smoothed times have
/// stopped drifting.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Clock {
    /// Frames done when the placement was first seen in force.
    since: Option<u64>,
    /// Frames done and stage times at the last look that saw a new frame.
    mark: Option<(u64, Vec<f64>)>,
    /// Whether the times drifted less than [`SETTLED_DRIFT`] a frame
    /// between the last two such looks.
    settled: bool,
}

impl Clock {
    /// Whether the placement has been seen in force yet.
    pub fn started(&self) -> bool {
        self.since.is_some()
    }

    /// Frames done under the placement at `obs`.
    fn waited(&self, obs: &Observation) -> u64 {
        self.since.map_or(0, |s| obs.frames_done.saturating_sub(s))
    }

    /// Looks at `obs` (taken under the placement); true once `frames`
    /// frames are done and the times have settled, or `MAX_WAIT` times
    /// that many are done.
    pub(super) fn ready(&mut self, obs: &Observation, frames: u32) -> bool {
        self.since.get_or_insert(obs.frames_done);
        let times: Option<Vec<f64>> = measured_times(obs).into_iter().collect();
        if let Some(t) = times {
            match &self.mark {
                Some((f, prev)) if obs.frames_done > *f && prev.len() == t.len() => {
                    let n = (obs.frames_done - f) as f64;
                    let drift = t
                        .iter()
                        .zip(prev)
                        .filter(|(a, _)| **a > 0.0)
                        .map(|(a, b)| (a - b).abs() / n / a)
                        .fold(0.0, f64::max);
                    self.settled = drift <= SETTLED_DRIFT;
                    self.mark = Some((obs.frames_done, t));
                }
                Some(_) => {}
                None => self.mark = Some((obs.frames_done, t)),
            }
        }
        let waited = self.waited(obs);
        let frames = u64::from(frames);
        waited >= frames && (self.settled || waited >= MAX_WAIT * frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::config::PolicyConfig;
    use crate::policy::odin::Odin;
    use crate::policy::testutil::{self, onset};
    use crate::policy::{Action, Policy};

    #[test]
    fn a_candidate_is_judged_only_once_its_times_have_settled() {
        let mut odin = Odin::new(&PolicyConfig::default());
        let unit_ms = [1.0; 9];
        let slow = [1.0, 2.0, 1.0];
        let mut o = testutil::obs(
            &unit_ms,
            &[1.0; 3],
            testutil::placement(9, &[3, 6]),
            &slow,
            0,
        );
        o.events = vec![onset(1)];
        let Action::Apply(c) = odin.decide(&o) else {
            panic!()
        };
        let under = |frames: u64, stage2: f64| {
            let mut o = testutil::obs(&unit_ms, &[1.0; 3], c.clone(), &slow, frames);
            o.stages[2].service_ms = Some(stage2);
            o
        };
        // Stage 2's smoothed time still climbs over 1% a frame after candidate_frames:
        // not judged until it stops drifting (at 4 ms, from frame 21).
        let mut judged = None;
        for f in (1..=41).step_by(2) {
            let a = odin.decide(&under(f, (3.0 + 0.05 * f as f64).min(4.0)));
            assert_eq!(a, Action::Keep, "{f}");
            if !odin.search().is_measuring() {
                judged = Some(f);
                break;
            }
        }
        assert_eq!(judged, Some(23), "kept, and no further move helps");
        assert!(!odin.search().is_active());
        // And never later than MAX_WAIT x candidate_frames.
        let mut odin = Odin::new(&PolicyConfig::default());
        let mut o = testutil::obs(
            &unit_ms,
            &[1.0; 3],
            testutil::placement(9, &[3, 6]),
            &slow,
            0,
        );
        o.events = vec![onset(1)];
        odin.decide(&o);
        let mut judged = None;
        for f in 1..=50u64 {
            odin.decide(&under(f, 3.0 + f as f64 * 0.1));
            if !odin.search().is_measuring() {
                judged = Some(f);
                break;
            }
        }
        assert_eq!(judged, Some(1 + MAX_WAIT * 10));
    }
}
