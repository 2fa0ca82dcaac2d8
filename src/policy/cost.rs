//! The cost model: unit costs and per-PE effective speeds to stage times,
//! and per-PE slowdown estimates from what was measured.
//!
//! A stage on a PE of effective speed `v` takes `sum(unit_ms) / v`; `k`
//! non-empty stages sharing a PE each see speed `v / k` (the same model as
//! [`Placement::stage_times`]). The slowdown of a PE is how much slower our
//! stages run there than their expected (idle-PE) times say, with the
//! time-sharing among our own stages taken out, so `pe_speed / slowdown` is
//! the PE's effective speed for the oracle.

use std::ops::Range;

use super::{Observation, Placement};

/// Unit costs with prefix sums, for O(1) range costs.
#[derive(Clone, Debug, PartialEq)]
pub struct CostModel {
    prefix: Vec<f64>,
}

impl CostModel {
    /// A model over `unit_ms`, milliseconds of each unit on an idle
    /// reference PE.
    pub fn new(unit_ms: &[f64]) -> Self {
        let mut prefix = Vec::with_capacity(unit_ms.len() + 1);
        prefix.push(0.0);
        for c in unit_ms {
            prefix.push(prefix[prefix.len() - 1] + c);
        }
        Self { prefix }
    }

    /// Units in the model.
    pub fn units(&self) -> usize {
        self.prefix.len() - 1
    }

    /// Milliseconds of units `r` on the reference PE.
    pub fn range_ms(&self, r: Range<usize>) -> f64 {
        self.prefix[r.end] - self.prefix[r.start]
    }

    /// Milliseconds of the whole model on the reference PE.
    pub fn total_ms(&self) -> f64 {
        self.prefix[self.units()]
    }

    /// Time of each stage of `p` on PEs of effective speeds `speed` (empty
    /// stages take 0; stages sharing a PE share its speed).
    pub fn stage_times(&self, p: &Placement, speed: &[f64]) -> Vec<f64> {
        let sharing = sharing(p, speed.len());
        (0..p.stages())
            .map(|s| {
                let r = p.range(s);
                if r.is_empty() {
                    return 0.0;
                }
                let pe = p.mapping[s];
                self.range_ms(r) * sharing[pe] as f64 / speed[pe]
            })
            .collect()
    }

    /// `(bottleneck, latency)` of `p`: the slowest stage and the sum of the
    /// stage times, milliseconds.
    pub fn score(&self, p: &Placement, speed: &[f64]) -> (f64, f64) {
        let t = self.stage_times(p, speed);
        (bottleneck(&t), t.iter().sum())
    }
}

/// The largest of `times` (0 for none).
pub fn bottleneck(times: &[f64]) -> f64 {
    times.iter().copied().fold(0.0, f64::max)
}

/// How many non-empty stages of `p` run on each of `pes` PEs.
pub fn sharing(p: &Placement, pes: usize) -> Vec<usize> {
    let mut n = vec![0usize; pes];
    for s in 0..p.stages() {
        if !p.range(s).is_empty()
            && let Some(c) = n.get_mut(p.mapping[s])
        {
            *c += 1;
        }
    }
    n
}

/// The measured bottleneck of `obs`: the largest smoothed service time of
/// a non-empty stage, `None` if no non-empty stage has been measured.
pub fn measured_bottleneck(obs: &Observation) -> Option<f64> {
    measured_times(obs)
        .into_iter()
        .flatten()
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))))
}

/// Per stage of `obs.placement`: its smoothed service time, 0 for an empty
/// stage, `None` where not measured yet.
pub fn measured_times(obs: &Observation) -> Vec<Option<f64>> {
    (0..obs.placement.stages())
        .map(|s| {
            if obs.placement.range(s).is_empty() {
                return Some(0.0);
            }
            obs.stages
                .get(s)
                .and_then(|g| g.service_ms)
                .filter(|t| t.is_finite() && *t >= 0.0)
        })
        .collect()
}

/// The slowdown model. Per PE: the summed measured service time of our
/// stages on it over their summed idle-PE time, with our own time-sharing
/// (`k` non-empty stages of `p` on the PE) taken out; `None` where no
/// idle-PE time was summed. `samples` are `(pe, service_ms, idle_ms)`, one
/// per measured stage; PEs out of range are skipped.
pub fn pe_slowdown(
    p: &Placement,
    pes: usize,
    samples: impl IntoIterator<Item = (usize, f64, f64)>,
) -> Vec<Option<f64>> {
    let shared = sharing(p, pes);
    let mut service = vec![0.0; pes];
    let mut idle = vec![0.0; pes];
    for (pe, ms, idle_ms) in samples {
        if pe < pes {
            service[pe] += ms;
            idle[pe] += idle_ms;
        }
    }
    (0..pes)
        .map(|pe| (idle[pe] > 0.0).then(|| service[pe] / (idle[pe] * shared[pe].max(1) as f64)))
        .collect()
}

/// The slowdown model on a PE none of our stages runs on: `1 + foreign /
/// speed`, from the foreign CPU use seen there; `None` when that use or
/// the PE's speed is unknown or out of range.
pub fn foreign_slowdown(obs: &Observation, pe: usize) -> Option<f64> {
    let x = obs.pes.get(pe)?.foreign_cpu_share?;
    let v = *obs.pe_speed.get(pe)?;
    (v > 0.0 && x.is_finite() && x >= 0.0).then(|| 1.0 + x / v)
}

/// Per PE: [`pe_slowdown`] of the non-empty stages' smoothed service over
/// expected times; `None` where no stage on the PE has been measured.
pub fn measured_slowdown(obs: &Observation) -> Vec<Option<f64>> {
    let p = &obs.placement;
    let samples = obs.stages.iter().enumerate().filter_map(|(s, sig)| {
        if s >= p.stages() || p.range(s).is_empty() {
            return None;
        }
        sig.service_ms
            .filter(|ms| ms.is_finite() && sig.expected_ms > 0.0)
            .map(|ms| (sig.pe, ms, sig.expected_ms))
    });
    pe_slowdown(p, obs.pe_speed.len(), samples)
        .into_iter()
        .map(|s| s.map(|s| s.max(1e-6)))
        .collect()
}

/// Per PE: the slowdown estimate of [`measured_slowdown`], 1.0 where
/// unknown.
pub fn slowdown(obs: &Observation) -> Vec<f64> {
    measured_slowdown(obs)
        .into_iter()
        .map(|s| s.unwrap_or(1.0))
        .collect()
}

/// Per PE: nominal speed over the estimated slowdown.
pub fn estimated_speed(obs: &Observation) -> Vec<f64> {
    obs.pe_speed
        .iter()
        .zip(slowdown(obs))
        .map(|(v, s)| v / s)
        .collect()
}

/// Predicted stage times (ms) of `next` from the calibrated unit costs,
/// each PE's nominal speed divided by its current slowdown.
pub fn predict(obs: &Observation, next: &Placement) -> Vec<f64> {
    let slowdown = slowdown(obs);
    let speed: Vec<f64> = (0..obs.pe_speed.len())
        .map(|p| obs.pe_speed[p] / slowdown.get(p).copied().unwrap_or(1.0).max(1e-9))
        .collect();
    CostModel::new(&obs.unit_ms).stage_times(next, &speed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testutil;

    #[test]
    fn stage_times_share_pes_and_skip_empty_stages() {
        let m = CostModel::new(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!((m.units(), m.total_ms(), m.range_ms(1..3)), (4, 10.0, 5.0));
        // [0..1) on PE 0, [1..1) empty on PE 1, [1..4) on PE 0 as well.
        let p = Placement {
            units: 4,
            cuts: vec![1, 1],
            mapping: vec![0, 1, 0],
        };
        let t = m.stage_times(&p, &[2.0, 1.0]);
        assert_eq!(t, vec![1.0, 0.0, 9.0]);
        assert_eq!(t, p.stage_times(&[1.0, 2.0, 3.0, 4.0], &[2.0, 1.0]));
        assert_eq!(m.score(&p, &[2.0, 1.0]), (9.0, 10.0));
    }

    #[test]
    fn slowdown_is_measured_over_expected_without_our_sharing() {
        let unit_ms = [2.0, 2.0, 2.0, 2.0];
        // PE 1 runs at a third of its speed; PE 2 is unused.
        let p = Placement {
            units: 4,
            cuts: vec![2, 4],
            mapping: vec![0, 1, 2],
        };
        let o = testutil::obs(&unit_ms, &[1.0, 2.0, 1.0], p, &[1.0, 3.0, 5.0], 0);
        let s = measured_slowdown(&o);
        assert!((s[0].unwrap() - 1.0).abs() < 1e-12);
        assert!((s[1].unwrap() - 3.0).abs() < 1e-12);
        assert_eq!(s[2], None, "nothing runs on PE 2");
        assert_eq!(slowdown(&o)[2], 1.0);
        let v = estimated_speed(&o);
        assert!((v[1] - 2.0 / 3.0).abs() < 1e-12);
        // Two of our stages on PE 0: each takes twice as long, which is not interference.
        let p = Placement {
            units: 4,
            cuts: vec![2],
            mapping: vec![0, 0],
        };
        let o = testutil::obs(&unit_ms, &[1.0, 1.0], p, &[1.5, 1.0], 0);
        assert!((measured_slowdown(&o)[0].unwrap() - 1.5).abs() < 1e-12);
        assert_eq!(measured_bottleneck(&o), Some(12.0));
    }
}
