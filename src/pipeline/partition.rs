//! Partitions of a model's units into pipeline stages.
//!
//! Problem: N units in order, S stages; stage `s` runs units
//! `[cut[s-1], cut[s])` on processing element `s`. A partition is the S-1
//! strictly increasing cut points, so every stage holds at least one unit
//! and the last stage always ends at N.
//!
//! ```text
//!   units:  0   1   2 | 3   4 | 5   6   7   8
//!   cuts:             3       5
//!   stage:  0---------  1-----  2-------------
//! ```
//!
//! Approach for the optimal partition ([`Partition::optimal`]): stage `s`
//! on a PE of speed `v[s]` takes `sum(cost[i] for i in stage) / v[s]`.
//! A first dynamic programme over prefixes finds the smallest achievable
//! bottleneck B* (the slowest stage: what limits throughput); a second
//! minimises the total of the stage times (latency) among partitions whose
//! every stage is within B*. Both are O(S N^2). Doing it in two passes is
//! what makes the tie-break exact: one lexicographic (max, sum) pass is not,
//! because a prefix with a smaller maximum can carry a larger sum.
//!
//! This module is pure: no OS calls.

use std::fmt;
use std::ops::Range;

/// Why a partition is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    /// There is nothing to partition.
    #[error("a model with no units cannot be partitioned")]
    NoUnits,
    /// More stages than units: some stage would be empty.
    #[error("{stages} stages need at least {stages} units, the model has {units}")]
    TooManyStages {
        /// Stages asked for.
        stages: usize,
        /// Units available.
        units: usize,
    },
    /// A cut point outside `1..units`.
    #[error("cut {cut} is out of range: cuts must lie in 1..{units}")]
    OutOfRange {
        /// The cut.
        cut: usize,
        /// Units in the model.
        units: usize,
    },
    /// Cut points not strictly increasing (an empty stage).
    #[error("cuts {cuts:?} are not strictly increasing: stage {stage} would be empty")]
    Unsorted {
        /// The cuts given.
        cuts: Vec<usize>,
        /// The first empty stage.
        stage: usize,
    },
    /// Per-unit costs or per-stage speeds that cannot be used.
    #[error("{0}")]
    BadInput(String),
}

/// S stages over N units, as S-1 strictly increasing cut points.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Partition {
    units: usize,
    cuts: Vec<usize>,
}

impl Partition {
    /// A partition of `units` units at `cuts`.
    pub fn new(units: usize, cuts: Vec<usize>) -> Result<Self, PartitionError> {
        if units == 0 {
            return Err(PartitionError::NoUnits);
        }
        if cuts.len() + 1 > units {
            return Err(PartitionError::TooManyStages {
                stages: cuts.len() + 1,
                units,
            });
        }
        if let Some(&cut) = cuts.iter().find(|&&c| c == 0 || c >= units) {
            return Err(PartitionError::OutOfRange { cut, units });
        }
        if let Some(i) = cuts.windows(2).position(|w| w[0] >= w[1]) {
            return Err(PartitionError::Unsorted { cuts, stage: i + 1 });
        }
        Ok(Self { units, cuts })
    }

    /// A partition whose cut points may repeat, leaving a stage empty (its
    /// PE then runs nothing and forwards frames as they come). Cuts must
    /// still be non-decreasing and within `0..=units`.
    pub fn relaxed(units: usize, cuts: Vec<usize>) -> Result<Self, PartitionError> {
        if units == 0 {
            return Err(PartitionError::NoUnits);
        }
        if let Some(&cut) = cuts.iter().find(|&&c| c > units) {
            return Err(PartitionError::OutOfRange { cut, units });
        }
        if let Some(i) = cuts.windows(2).position(|w| w[0] > w[1]) {
            return Err(PartitionError::Unsorted { cuts, stage: i + 1 });
        }
        Ok(Self { units, cuts })
    }

    /// One stage with every unit.
    pub fn single(units: usize) -> Result<Self, PartitionError> {
        Self::new(units, Vec::new())
    }

    /// `stages` stages with as equal unit counts as possible.
    pub fn even(units: usize, stages: usize) -> Result<Self, PartitionError> {
        if stages == 0 {
            return Err(PartitionError::BadInput("at least one stage".into()));
        }
        Self::new(units, (1..stages).map(|s| s * units / stages).collect())
    }

    /// Units in the model.
    pub fn units(&self) -> usize {
        self.units
    }

    /// Number of stages.
    pub fn stages(&self) -> usize {
        self.cuts.len() + 1
    }

    /// The cut points.
    pub fn cuts(&self) -> &[usize] {
        &self.cuts
    }

    /// Units of stage `s`.
    pub fn range(&self, s: usize) -> Range<usize> {
        assert!(s < self.stages(), "stage {s} of {}", self.stages());
        let start = if s == 0 { 0 } else { self.cuts[s - 1] };
        let end = self.cuts.get(s).copied().unwrap_or(self.units);
        start..end
    }

    /// Units of every stage, in order.
    pub fn ranges(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        (0..self.stages()).map(|s| self.range(s))
    }

    /// The stage that runs `unit`.
    pub fn stage_of(&self, unit: usize) -> usize {
        assert!(unit < self.units, "unit {unit} of {}", self.units);
        self.cuts.partition_point(|&c| c <= unit)
    }

    /// Time of each stage: the sum of its unit costs divided by its PE's speed.
    pub fn stage_times(&self, costs: &[f64], speeds: &[f64]) -> Vec<f64> {
        assert_eq!(costs.len(), self.units, "one cost per unit");
        assert_eq!(speeds.len(), self.stages(), "one speed per stage");
        self.ranges()
            .zip(speeds)
            .map(|(r, v)| costs[r].iter().sum::<f64>() / v)
            .collect()
    }

    /// The partition of `costs.len()` units over `speeds.len()` stages
    /// (stage `s` on a PE of speed `speeds[s]`) that minimises the slowest
    /// stage, then the sum of stage times. Exact; see the module docs.
    pub fn optimal(costs: &[f64], speeds: &[f64]) -> Result<Self, PartitionError> {
        let (n, s) = (costs.len(), speeds.len());
        if n == 0 {
            return Err(PartitionError::NoUnits);
        }
        if s == 0 || s > n {
            return Err(PartitionError::TooManyStages {
                stages: s,
                units: n,
            });
        }
        if let Some(c) = costs.iter().find(|c| !c.is_finite() || **c < 0.0) {
            return Err(PartitionError::BadInput(format!(
                "unit cost {c} is not a finite non-negative number"
            )));
        }
        if let Some(v) = speeds.iter().find(|v| !v.is_finite() || **v <= 0.0) {
            return Err(PartitionError::BadInput(format!(
                "PE speed {v} is not a finite positive number"
            )));
        }
        let mut prefix = vec![0.0; n + 1];
        for (i, c) in costs.iter().enumerate() {
            prefix[i + 1] = prefix[i] + c;
        }
        let time = |st: usize, a: usize, b: usize| (prefix[b] - prefix[a]) / speeds[st];
        let cuts = two_pass(n, s, 1, time, Tie::Earliest);
        Self::new(n, cuts)
    }
}

/// Which cut the latency pass of [`two_pass`] keeps among cuts that give
/// the same least latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tie {
    /// The earliest such cut (the earlier stage takes fewer units).
    Earliest,
    /// The latest such cut.
    Latest,
}

/// The two-pass interval DP (see the module docs): `units` units in order
/// cut into `stages` contiguous ranges, each of at least `min_len` units
/// (0 allows empty stages), stage `k` on units `j..i` taking `time(k, j,
/// i)`, which must not fall as `j` falls (more units never take less).
/// Returns the `stages - 1` cuts with the least bottleneck and, among
/// those, the least sum of stage times, ties broken by `tie`. Pass 1 finds
/// the least bottleneck B*; pass 2 the least sum with every stage within
/// B*. O(S N^2).
///
/// # Panics
/// If `stages` is 0 or `units < stages * min_len`.
pub fn two_pass(
    units: usize,
    stages: usize,
    min_len: usize,
    time: impl Fn(usize, usize, usize) -> f64,
    tie: Tie,
) -> Vec<usize> {
    assert!(stages > 0 && units >= stages * min_len, "no feasible cut");
    let (n, m) = (units, min_len);
    let inf = f64::INFINITY;
    // Pass 1: least bottleneck of units 0..i on stages 0..=k, rolling rows.
    let mut prev: Vec<f64> = (0..=n)
        .map(|i| if i >= m { time(0, 0, i) } else { inf })
        .collect();
    let mut cur = vec![inf; n + 1];
    for k in 1..stages {
        for (i, c) in cur.iter_mut().enumerate() {
            let mut b = inf;
            if i >= (k + 1) * m {
                // Stage times only grow as the stage starts earlier: stop
                // once the stage alone is no better than the best so far.
                for j in (k * m..=i - m).rev() {
                    let t = time(k, j, i);
                    if t >= b {
                        break;
                    }
                    b = b.min(prev[j].max(t));
                }
            }
            *c = b;
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    // Stage times are recomputed the same way, so only rounding in the
    // comparison itself needs slack.
    let limit = prev[n] * (1.0 + 1e-12) + f64::MIN_POSITIVE;
    // Pass 2: least sum of stage times with every stage within the bound.
    let mut sum = vec![vec![inf; n + 1]; stages];
    let mut from = vec![vec![0usize; n + 1]; stages];
    for (i, total) in sum[0].iter_mut().enumerate().skip(m) {
        let t = time(0, 0, i);
        if t <= limit {
            *total = t;
        }
    }
    for k in 1..stages {
        for i in (k + 1) * m..=n {
            for j in (k * m..=i - m).rev() {
                let t = time(k, j, i);
                if t > limit {
                    break;
                }
                let v = sum[k - 1][j] + t;
                let cur = sum[k][i];
                if v < cur || (tie == Tie::Earliest && v == cur && v.is_finite()) {
                    sum[k][i] = v;
                    from[k][i] = j;
                }
            }
        }
    }
    debug_assert!(
        sum[stages - 1][n].is_finite(),
        "pass 1's optimum is feasible in pass 2"
    );
    let mut cuts = vec![0; stages - 1];
    let mut i = n;
    for k in (1..stages).rev() {
        i = from[k][i];
        cuts[k - 1] = i;
    }
    cuts
}

impl fmt::Display for Partition {
    /// `[0..3)[3..5)[5..9)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in self.ranges() {
            write!(f, "[{}..{})", r.start, r.end)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn constructor_validates_with_clear_errors() {
        assert_eq!(Partition::new(0, vec![]), Err(PartitionError::NoUnits));
        assert_eq!(
            Partition::new(3, vec![0]),
            Err(PartitionError::OutOfRange { cut: 0, units: 3 })
        );
        assert_eq!(
            Partition::new(3, vec![3]),
            Err(PartitionError::OutOfRange { cut: 3, units: 3 })
        );
        assert_eq!(
            Partition::new(5, vec![2, 2]),
            Err(PartitionError::Unsorted {
                cuts: vec![2, 2],
                stage: 1
            })
        );
        assert_eq!(
            Partition::new(5, vec![3, 1]),
            Err(PartitionError::Unsorted {
                cuts: vec![3, 1],
                stage: 1
            })
        );
        assert_eq!(
            Partition::new(2, vec![1, 1, 1]),
            Err(PartitionError::TooManyStages {
                stages: 4,
                units: 2
            })
        );
        let msg = Partition::new(5, vec![2, 2]).unwrap_err().to_string();
        assert!(msg.contains("stage 1 would be empty"), "{msg}");
    }

    #[test]
    fn relaxed_partitions_allow_empty_stages_only() {
        let p = Partition::relaxed(5, vec![0, 2, 2]).unwrap();
        assert_eq!(p.ranges().collect::<Vec<_>>(), vec![0..0, 0..2, 2..2, 2..5]);
        assert_eq!(
            (0..5).map(|u| p.stage_of(u)).collect::<Vec<_>>(),
            vec![1, 1, 3, 3, 3]
        );
        assert_eq!(
            Partition::relaxed(5, vec![3, 1]),
            Err(PartitionError::Unsorted {
                cuts: vec![3, 1],
                stage: 1
            })
        );
        assert_eq!(
            Partition::relaxed(5, vec![6]),
            Err(PartitionError::OutOfRange { cut: 6, units: 5 })
        );
        assert_eq!(Partition::relaxed(0, vec![]), Err(PartitionError::NoUnits));
    }

    #[test]
    fn ranges_cover_every_unit_once() {
        let p = Partition::new(9, vec![3, 5]).unwrap();
        assert_eq!(p.ranges().collect::<Vec<_>>(), vec![0..3, 3..5, 5..9]);
        assert_eq!(
            (0..9).map(|u| p.stage_of(u)).collect::<Vec<_>>(),
            vec![0, 0, 0, 1, 1, 2, 2, 2, 2]
        );
        assert_eq!(p.to_string(), "[0..3)[3..5)[5..9)");
        assert_eq!(Partition::even(10, 3).unwrap().cuts(), &[3, 6]);
        assert_eq!(
            Partition::single(4).unwrap().ranges().collect::<Vec<_>>(),
            vec![0..4]
        );
    }

    #[test]
    fn optimal_rejects_bad_input() {
        assert!(Partition::optimal(&[1.0, 2.0], &[1.0, 1.0, 1.0]).is_err());
        assert!(Partition::optimal(&[1.0, f64::NAN], &[1.0]).is_err());
        assert!(Partition::optimal(&[1.0, 2.0], &[0.0, 1.0]).is_err());
        assert!(Partition::optimal(&[], &[1.0]).is_err());
    }

    #[test]
    fn optimal_moves_work_off_a_slow_pe() {
        // Four equal units on two PEs: balanced when equal, 3:1 when PE 1 is a third as fast.
        let c = [1.0; 4];
        assert_eq!(Partition::optimal(&c, &[1.0, 1.0]).unwrap().cuts(), &[2]);
        assert_eq!(
            Partition::optimal(&c, &[1.0, 1.0 / 3.0]).unwrap().cuts(),
            &[3]
        );
        assert_eq!(
            Partition::optimal(&c, &[1.0 / 3.0, 1.0]).unwrap().cuts(),
            &[1]
        );
    }

    /// Every partition of `n` units into `s` stages.
    fn all_partitions(n: usize, s: usize) -> Vec<Partition> {
        fn rec(
            n: usize,
            left: usize,
            start: usize,
            cur: &mut Vec<usize>,
            out: &mut Vec<Partition>,
        ) {
            if left == 0 {
                out.push(Partition::new(n, cur.clone()).unwrap());
                return;
            }
            for c in start..n {
                cur.push(c);
                rec(n, left - 1, c + 1, cur, out);
                cur.pop();
            }
        }
        let mut out = Vec::new();
        rec(n, s - 1, 1, &mut Vec::new(), &mut out);
        out
    }

    proptest! {
        #[test]
        fn optimal_matches_brute_force(
            costs in proptest::collection::vec(0.0f64..10.0, 1..=10),
            speeds in proptest::collection::vec(0.2f64..3.0, 1..=4),
        ) {
            prop_assume!(speeds.len() <= costs.len());
            let got = Partition::optimal(&costs, &speeds).unwrap();
            let key = |p: &Partition| {
                let t = p.stage_times(&costs, &speeds);
                (t.iter().copied().fold(0.0, f64::max), t.iter().sum::<f64>())
            };
            let (gmax, gsum) = key(&got);
            let all = all_partitions(costs.len(), speeds.len());
            prop_assert_eq!(all.len(), binomial(costs.len() - 1, speeds.len() - 1));
            let bmax = all.iter().map(|p| key(p).0).fold(f64::INFINITY, f64::min);
            prop_assert!((gmax - bmax).abs() <= 1e-9 * bmax.max(1.0), "bottleneck {} vs best {}", gmax, bmax);
            let bsum = all
                .iter()
                .map(key)
                .filter(|k| k.0 <= bmax * (1.0 + 1e-9))
                .map(|k| k.1)
                .fold(f64::INFINITY, f64::min);
            prop_assert!(gsum <= bsum + 1e-9 * bsum.max(1.0), "latency {} vs best {}", gsum, bsum);
        }
    }

    fn binomial(n: usize, k: usize) -> usize {
        (0..k).fold(1, |acc, i| acc * (n - i) / (i + 1))
    }
}
