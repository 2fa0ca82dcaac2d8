//! The oracle: the optimal interval mapping of a model's units onto PEs.
//!
//! Problem: N units in order with costs `c[i]` (ms on the reference PE),
//! P PEs with effective speeds `v[p]`. Cut the units into contiguous
//! ranges, one range per PE, each PE used at most once and possibly not at
//! all; a range on PE `p` takes `sum(c) / v[p]`. Minimise the slowest stage
//! (the bottleneck, 1/throughput), then the sum of the stage times
//! (latency), over every such mapping.
//!
//! ```text
//!   units   0 1 2 | 3 4 | 5 6 7 8      (contiguous ranges, in order)
//!   PEs     p2      p0    p3           p1 unused (an empty stage)
//! ```
//!
//! Approach: two passes of dynamic programming, the
//! [`two_pass`] of [`Partition::optimal`](crate::pipeline::Partition::optimal): the first
//! finds the least bottleneck B*, the second the least latency among
//! mappings whose every stage is within B* (one lexicographic pass is not
//! exact: a prefix with a smaller maximum can carry a larger sum).
//!
//! - Order-fixed: the PEs in their configured order, each taking a
//!   possibly empty range: `best[k][i] = min_{j<=i} max(best[k-1][j],
//!   t(k, j, i))`, O(P N^2). Exact for that order; exact overall when all
//!   usable PEs have the same speed.
//! - Every order: which PEs come first matters when speeds differ, and
//!   choosing the order is NP-hard in general. Orders are enumerated
//!   implicitly, Held-Karp style, over the *multiset* of speed classes used
//!   so far: state = how many PEs of each distinct speed are already used
//!   (PEs of equal speed are interchangeable, which prunes the P! orders
//!   to `prod(m_c + 1)` states), `best[state][i] = min over classes c used
//!   in state, j < i, of max(best[state - c][j], t(c, j, i))`. That is
//!   O(states x classes x N^2); it runs when `states x classes <=`
//!   [`ORDER_BUDGET`], which holds for any 8 PEs (256 x 8) and for many more
//!   PEs when speeds repeat (64 PEs of which 4 are slowed alike: 305
//!   states x 2 classes). Otherwise the result is order-fixed and says so
//!   ([`OracleResult::order_exact`] is false).
//!
//! Invariants: the placement has one stage per PE (a permutation of the
//! PEs, unused PEs as empty stages at the end in the enumerated case, in
//! place in the order-fixed case), is valid, and its modelled
//! `(bottleneck, latency)` is what the result reports. PEs whose speed is
//! not a positive finite number are never given a unit (unless no PE is
//! usable: then everything sits on PE 0 and the bottleneck is infinite).
//!
//! Pure: no OS calls.

use super::cost::CostModel;
use super::{Action, Observation, Placement, Policy};
use crate::pipeline::partition::{Tie, two_pass};

/// Largest `states x classes` for which [`optimal`] enumerates PE orders.
pub const ORDER_BUDGET: usize = 2048;

/// An optimal mapping and its modelled figures.
#[derive(Clone, Debug, PartialEq)]
pub struct OracleResult {
    /// One stage per PE; unused PEs hold empty stages.
    pub placement: Placement,
    /// Time of the slowest stage, milliseconds.
    pub bottleneck_ms: f64,
    /// Sum of the stage times, milliseconds.
    pub latency_ms: f64,
    /// Whether the optimum is over every PE order (true) or only over the
    /// configured order (false: the order search was skipped or too big).
    pub order_exact: bool,
}

/// The optimal interval mapping of units costing `unit_ms` onto PEs of
/// effective speeds `speed`; over every PE order when `enumerate_orders`
/// and the search fits [`ORDER_BUDGET`]. See the module docs.
///
/// # Panics
/// If `speed` is empty.
pub fn optimal(unit_ms: &[f64], speed: &[f64], enumerate_orders: bool) -> OracleResult {
    assert!(!speed.is_empty(), "at least one PE");
    debug_assert!(
        unit_ms.iter().all(|c| c.is_finite() && *c >= 0.0),
        "unit costs must be finite and non-negative: {unit_ms:?}"
    );
    let n = unit_ms.len();
    let pes = speed.len();
    let usable = |v: f64| v.is_finite() && v > 0.0;
    let model = CostModel::new(unit_ms);
    let finish = |placement: Placement, order_exact: bool| {
        let (bottleneck_ms, latency_ms) = if n > 0 && !speed.iter().any(|&v| usable(v)) {
            (f64::INFINITY, f64::INFINITY)
        } else {
            model.score(&placement, speed)
        };
        OracleResult {
            placement,
            bottleneck_ms,
            latency_ms,
            order_exact,
        }
    };
    let classes = classes(speed);
    if n == 0 || classes.is_empty() {
        // Nothing to place, or nowhere to place it: all on PE 0.
        let p = Placement {
            units: n,
            cuts: vec![n; pes - 1],
            mapping: (0..pes).collect(),
        };
        return finish(p, true);
    }
    let states: usize = classes.iter().map(|c| c.1.len() + 1).product();
    if enumerate_orders && states.saturating_mul(classes.len()) <= ORDER_BUDGET {
        return finish(every_order(&model, pes, &classes, states), true);
    }
    let all_alike = classes.len() == 1;
    finish(order_fixed(&model, speed), all_alike)
}

/// Usable PEs grouped by exactly equal speed: `(speed, PEs in index order)`.
fn classes(speed: &[f64]) -> Vec<(f64, Vec<usize>)> {
    let mut out: Vec<(f64, Vec<usize>)> = Vec::new();
    for (p, &v) in speed.iter().enumerate() {
        if !(v.is_finite() && v > 0.0) {
            continue;
        }
        match out.iter_mut().find(|c| c.0 == v) {
            Some(c) => c.1.push(p),
            None => out.push((v, vec![p])),
        }
    }
    out
}

/// Slack for comparing stage times against the least bottleneck: the times
/// are recomputed from the same prefix sums, so only rounding matters.
fn limit(bound: f64) -> f64 {
    bound * (1.0 + 1e-12) + f64::MIN_POSITIVE
}

/// The PEs in their configured order, each with a possibly empty range.
fn order_fixed(model: &CostModel, speed: &[f64]) -> Placement {
    let (n, pes) = (model.units(), speed.len());
    let inf = f64::INFINITY;
    let time = |k: usize, j: usize, i: usize| {
        if j == i {
            0.0
        } else if speed[k].is_finite() && speed[k] > 0.0 {
            model.range_ms(j..i) / speed[k]
        } else {
            inf
        }
    };
    let cuts = two_pass(n, pes, 0, time, Tie::Latest);
    Placement {
        units: n,
        cuts,
        mapping: (0..pes).collect(),
    }
}

/// Every order of the usable PEs, over multisets of speed classes.
fn every_order(
    model: &CostModel,
    pes: usize,
    classes: &[(f64, Vec<usize>)],
    states: usize,
) -> Placement {
    let n = model.units();
    let inf = f64::INFINITY;
    let mut stride = Vec::with_capacity(classes.len());
    let mut s = 1;
    for c in classes {
        stride.push(s);
        s *= c.1.len() + 1;
    }
    // Classes with at least one PE used in `state`, and their speeds.
    let used = |state: usize| -> Vec<(usize, f64)> {
        classes
            .iter()
            .enumerate()
            .filter(|(c, cl)| !(state / stride[*c]).is_multiple_of(cl.1.len() + 1))
            .map(|(c, cl)| (c, cl.0))
            .collect()
    };
    let at = |state: usize, i: usize| state * (n + 1) + i;

    // Pass 1: best[state][i], every used PE holding at least one unit.
    let mut best = vec![inf; states * (n + 1)];
    best[0] = 0.0;
    for state in 1..states {
        for (c, v) in used(state) {
            let prev = state - stride[c];
            for i in 1..=n {
                let mut b = best[at(state, i)];
                for j in (0..i).rev() {
                    let t = model.range_ms(j..i) / v;
                    if t >= b {
                        break;
                    }
                    b = b.min(best[at(prev, j)].max(t));
                }
                best[at(state, i)] = b;
            }
        }
    }
    let bound = (1..states).map(|s| best[at(s, n)]).fold(inf, f64::min);
    let lim = limit(bound);

    // Pass 2: least latency within the bound; `from` = (class, j).
    let mut sum = vec![inf; states * (n + 1)];
    let mut from = vec![(0usize, 0usize); states * (n + 1)];
    sum[0] = 0.0;
    for state in 1..states {
        for (c, v) in used(state) {
            let prev = state - stride[c];
            for i in 1..=n {
                for j in (0..i).rev() {
                    let t = model.range_ms(j..i) / v;
                    if t > lim {
                        break;
                    }
                    let p = sum[at(prev, j)];
                    if p + t < sum[at(state, i)] {
                        sum[at(state, i)] = p + t;
                        from[at(state, i)] = (c, j);
                    }
                }
            }
        }
    }
    let mut state = (1..states)
        .min_by(|&a, &b| sum[at(a, n)].total_cmp(&sum[at(b, n)]))
        .expect("at least one usable PE");
    debug_assert!(
        sum[at(state, n)].is_finite(),
        "pass 1's optimum is feasible"
    );
    // Walk back: (class, end) of each used stage, last first.
    let mut stages = Vec::new();
    let mut i = n;
    while state != 0 {
        let (c, j) = from[at(state, i)];
        stages.push((c, i));
        state -= stride[c];
        i = j;
    }
    stages.reverse();
    let mut next = vec![0usize; classes.len()];
    let mut taken = vec![false; pes];
    let mut mapping = Vec::with_capacity(pes);
    let mut ends = Vec::with_capacity(pes);
    for (c, end) in stages {
        let pe = classes[c].1[next[c]];
        next[c] += 1;
        taken[pe] = true;
        mapping.push(pe);
        ends.push(end);
    }
    for (pe, _) in taken.iter().enumerate().filter(|(_, t)| !**t) {
        mapping.push(pe);
        ends.push(n);
    }
    ends.pop();
    Placement {
        units: n,
        cuts: ends,
        mapping,
    }
}

/// The oracle policy: knows the true effective speeds (simulator only) and
/// applies the optimum whenever the placement in force is not optimal for
/// them. Without true speeds it uses the nominal ones.
#[derive(Clone, Debug)]
pub struct Oracle {
    enumerate_orders: bool,
    last: Option<(Vec<f64>, Vec<f64>, OracleResult)>,
}

impl Oracle {
    /// An oracle that enumerates PE orders when `enumerate_orders` (and the
    /// search is small enough).
    pub fn new(enumerate_orders: bool) -> Self {
        Self {
            enumerate_orders,
            last: None,
        }
    }
}

/// Whether `(b, l)` is better than `(cb, cl)` by more than rounding.
pub(crate) fn better(b: f64, l: f64, cb: f64, cl: f64) -> bool {
    let eps = |x: f64| 1e-9 * x.abs().max(1e-9);
    if !cb.is_finite() {
        return b.is_finite() || (b == cb && l < cl);
    }
    b < cb - eps(cb) || (b <= cb + eps(cb) && l < cl - eps(cl))
}

impl Policy for Oracle {
    fn name(&self) -> &'static str {
        "oracle"
    }

    fn decide(&mut self, obs: &Observation) -> Action {
        let speed = obs.true_speed.as_ref().unwrap_or(&obs.pe_speed);
        let fresh = !matches!(&self.last, Some((u, v, _)) if u == &obs.unit_ms && v == speed);
        if fresh {
            let r = optimal(&obs.unit_ms, speed, self.enumerate_orders);
            self.last = Some((obs.unit_ms.clone(), speed.clone(), r));
        }
        let Some((_, _, best)) = &self.last else {
            return Action::Keep;
        };
        let cur = &obs.placement;
        if cur == &best.placement {
            return Action::Keep;
        }
        if cur.units == obs.unit_ms.len() && cur.is_valid(speed.len()) {
            let (cb, cl) = CostModel::new(&obs.unit_ms).score(cur, speed);
            if !better(best.bottleneck_ms, best.latency_ms, cb, cl) {
                return Action::Keep;
            }
        }
        Action::Apply(best.placement.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testutil;
    use proptest::prelude::*;

    /// Every interval mapping of `n` units on the PEs: every order of the
    /// PEs, every non-decreasing cut vector (empty stages allowed).
    fn all_mappings(n: usize, pes: usize, orders: bool) -> Vec<Placement> {
        fn perms(k: usize) -> Vec<Vec<usize>> {
            if k == 0 {
                return vec![vec![]];
            }
            let mut out = Vec::new();
            for p in perms(k - 1) {
                for pos in 0..=p.len() {
                    let mut q = p.clone();
                    q.insert(pos, k - 1);
                    out.push(q);
                }
            }
            out
        }
        fn cuts(
            n: usize,
            left: usize,
            from: usize,
            cur: &mut Vec<usize>,
            out: &mut Vec<Vec<usize>>,
        ) {
            if left == 0 {
                out.push(cur.clone());
                return;
            }
            for c in from..=n {
                cur.push(c);
                cuts(n, left - 1, c, cur, out);
                cur.pop();
            }
        }
        let mut all_cuts = Vec::new();
        cuts(n, pes - 1, 0, &mut Vec::new(), &mut all_cuts);
        let orders = if orders {
            perms(pes)
        } else {
            vec![(0..pes).collect()]
        };
        let mut out = Vec::new();
        for m in &orders {
            for c in &all_cuts {
                out.push(Placement {
                    units: n,
                    cuts: c.clone(),
                    mapping: m.clone(),
                });
            }
        }
        out
    }

    fn check_against_brute_force(
        costs: &[f64],
        speeds: &[f64],
        orders: bool,
    ) -> Result<(), TestCaseError> {
        let got = optimal(costs, speeds, orders);
        prop_assert!(got.placement.is_valid(speeds.len()));
        let mut seen = got.placement.mapping.clone();
        seen.sort_unstable();
        prop_assert_eq!(
            seen,
            (0..speeds.len()).collect::<Vec<_>>(),
            "a permutation of the PEs"
        );
        let m = CostModel::new(costs);
        let (gb, gl) = m.score(&got.placement, speeds);
        prop_assert!((gb - got.bottleneck_ms).abs() <= 1e-12 * gb.max(1.0));
        prop_assert!((gl - got.latency_ms).abs() <= 1e-12 * gl.max(1.0));
        let all = all_mappings(costs.len(), speeds.len(), orders);
        let (n, k) = (costs.len(), speeds.len());
        let perms: usize = if orders { (1..=k).product() } else { 1 };
        let multichoose = (0..k - 1).fold(1, |acc, i| acc * (n + 1 + i) / (i + 1));
        prop_assert_eq!(all.len(), perms * multichoose, "every order and every cut");
        let scores: Vec<(f64, f64)> = all.iter().map(|p| m.score(p, speeds)).collect();
        let bb = scores.iter().map(|s| s.0).fold(f64::INFINITY, f64::min);
        prop_assert!(
            (gb - bb).abs() <= 1e-9 * bb.max(1e-9),
            "bottleneck {} vs best {}",
            gb,
            bb
        );
        let bl = scores
            .iter()
            .filter(|s| s.0 <= bb * (1.0 + 1e-9))
            .map(|s| s.1)
            .fold(f64::INFINITY, f64::min);
        prop_assert!(
            (gl - bl).abs() <= 1e-9 * bl.max(1e-9),
            "latency {} vs best {}",
            gl,
            bl
        );
        if orders {
            prop_assert!(got.order_exact);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn every_order_matches_brute_force(
            costs in proptest::collection::vec(0.0f64..10.0, 1..=10),
            speeds in proptest::collection::vec(0.1f64..3.0, 1..=4),
        ) {
            check_against_brute_force(&costs, &speeds, true)?;
        }

        #[test]
        fn equal_speeds_are_pruned_but_still_exact(
            costs in proptest::collection::vec(0.0f64..10.0, 1..=10),
            picks in proptest::collection::vec(0usize..2, 1..=4),
        ) {
            let speeds: Vec<f64> = picks.iter().map(|&k| [1.0, 0.25][k]).collect();
            check_against_brute_force(&costs, &speeds, true)?;
        }

        #[test]
        fn order_fixed_matches_brute_force_in_the_configured_order(
            costs in proptest::collection::vec(0.0f64..10.0, 1..=10),
            speeds in proptest::collection::vec(0.1f64..3.0, 1..=4),
        ) {
            check_against_brute_force(&costs, &speeds, false)?;
            prop_assert_eq!(optimal(&costs, &speeds, false).placement.mapping, (0..speeds.len()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_pe_slowed_tenfold_is_left_unused() {
        let costs = [1.0; 4];
        for orders in [true, false] {
            let r = optimal(&costs, &[1.0, 0.1, 1.0], orders);
            let p = &r.placement;
            let s = p.mapping.iter().position(|&pe| pe == 1).unwrap();
            assert!(p.range(s).is_empty(), "{orders}: {p:?}");
            assert_eq!((r.bottleneck_ms, r.latency_ms), (2.0, 4.0));
        }
    }

    #[test]
    fn order_matters_and_the_flag_says_so() {
        // A slow PE first in the configured order: order-fixed must give
        // it the big first unit or nothing; any order puts it in the middle.
        let costs = [3.0, 1.0, 3.0];
        let speeds = [0.5, 1.0, 1.0];
        let fixed = optimal(&costs, &speeds, false);
        let any = optimal(&costs, &speeds, true);
        assert!(!fixed.order_exact);
        assert!(any.order_exact);
        assert_eq!((fixed.bottleneck_ms, any.bottleneck_ms), (4.0, 3.0));
        assert_eq!(
            any.placement.mapping[1], 0,
            "the slow PE takes the middle unit"
        );
        // Nine distinct speeds overflow the budget; nine of two kinds do not.
        let costs = [1.0; 20];
        let distinct: Vec<f64> = (0..9).map(|i| 1.0 + i as f64 / 10.0).collect();
        assert!(!optimal(&costs, &distinct, true).order_exact);
        let two: Vec<f64> = (0..9).map(|i| if i % 3 == 0 { 0.5 } else { 1.0 }).collect();
        assert!(optimal(&costs, &two, true).order_exact);
        let same = [1.0; 9];
        assert!(
            optimal(&costs, &same, false).order_exact,
            "all alike: any order is the same"
        );
    }

    #[test]
    fn degenerate_inputs() {
        let r = optimal(&[], &[1.0, 1.0], true);
        assert_eq!((r.placement.cuts.clone(), r.bottleneck_ms), (vec![0], 0.0));
        let r = optimal(&[1.0, 2.0], &[0.0, f64::NAN], true);
        assert!(r.bottleneck_ms.is_infinite());
        assert!(r.placement.is_valid(2));
        // A dead PE among live ones gets nothing.
        let r = optimal(&[1.0, 2.0], &[1.0, 0.0, 1.0], false);
        assert!(r.placement.range(1).is_empty());
        assert_eq!(r.bottleneck_ms, 2.0);
        // More PEs than units.
        let r = optimal(&[3.0, 1.0], &[1.0; 5], true);
        assert_eq!(r.bottleneck_ms, 3.0);
        assert!(r.placement.is_valid(5));
    }

    #[test]
    fn the_policy_applies_the_true_optimum_once() {
        let unit_ms = [1.0; 6];
        let p = testutil::placement(6, &[2, 4]);
        let mut o = Oracle::new(true);
        // Quiet: the balanced placement is already optimal.
        let obs = testutil::obs(&unit_ms, &[1.0; 3], p.clone(), &[1.0; 3], 0);
        assert_eq!(o.decide(&obs), Action::Keep);
        // PE 1 slowed 10x: move away from it.
        let obs = testutil::obs(&unit_ms, &[1.0; 3], p, &[1.0, 10.0, 1.0], 0);
        let Action::Apply(q) = o.decide(&obs) else {
            panic!("expected a move")
        };
        let want = optimal(&unit_ms, obs.true_speed.as_ref().unwrap(), true);
        assert_eq!(q, want.placement);
        let obs = testutil::obs(&unit_ms, &[1.0; 3], q, &[1.0, 10.0, 1.0], 0);
        assert_eq!(o.decide(&obs), Action::Keep);
    }
}
