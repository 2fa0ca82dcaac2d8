//! Move generation: the slowdown each PE shows under the placement in
//! force, the stage times any placement would then take, and the
//! bottleneck stage's moves (re-cut a window around it, or trade PEs),
//! as the `odin` module docs describe.

use crate::policy::cost::{CostModel, foreign_slowdown, pe_slowdown, sharing};
use crate::policy::{Observation, Placement};

/// The local-search move without unit costs: the bottleneck stage (largest
/// of `times`, one per stage) gives its boundary unit to whichever
/// neighbour has the smaller time (ties go to the later stage). `None` when
/// the bottleneck holds a single unit or has no neighbour.
pub fn neighbour_move(p: &Placement, times: &[f64]) -> Option<Placement> {
    let b = bottleneck_stage(&times[..p.stages()])?;
    if p.range(b).len() < 2 {
        return None;
    }
    let left = b.checked_sub(1).map(|s| (s, times[s]));
    let right = (b + 1 < p.stages()).then(|| (b + 1, times[b + 1]));
    let to = match (left, right) {
        (Some(l), Some(r)) => {
            if l.1 < r.1 {
                l.0
            } else {
                r.0
            }
        }
        (Some(l), None) => l.0,
        (None, Some(r)) => r.0,
        (None, None) => return None,
    };
    let mut q = p.clone();
    if to < b {
        q.cuts[b - 1] += 1;
    } else {
        q.cuts[b] -= 1;
    }
    Some(q)
}

/// What the measurements say about each PE: how much slower our stages
/// run there than on an idle PE of its speed, so the stage times of any
/// placement can be predicted.
#[derive(Clone, Debug)]
pub(super) struct Slowdowns {
    cost: CostModel,
    /// Per PE: nominal speed.
    speed: Vec<f64>,
    /// Per PE: slowdown (1 = undisturbed).
    pub(super) slow: Vec<f64>,
    /// Per PE: whether `slow` was measured on it now.
    pub(super) measured: Vec<bool>,
}

impl Slowdowns {
    /// The slowdowns under `obs.placement` from the measured `times` (one
    /// per stage): per PE, its stages' time over their idle time, our own
    /// time-sharing taken out. A PE with no measurable stage keeps what
    /// `memory` says, or `1 + foreign CPU use / speed` when that is worse.
    /// `None` when the unit costs or speeds do not fit.
    pub(super) fn measure(
        obs: &Observation,
        times: &[f64],
        memory: &[Option<f64>],
    ) -> Option<Self> {
        let p = &obs.placement;
        let pes = obs.pe_speed.len();
        if obs.unit_ms.len() != p.units || times.len() != p.stages() || !p.is_valid(pes) {
            return None;
        }
        if obs.pe_speed.iter().any(|v| !(*v > 0.0 && v.is_finite())) {
            return None;
        }
        let cost = CostModel::new(&obs.unit_ms);
        let samples = times.iter().enumerate().map(|(s, &t)| {
            let pe = p.mapping[s];
            (pe, t, cost.range_ms(p.range(s)) / obs.pe_speed[pe])
        });
        let mut slow = Vec::with_capacity(pes);
        let mut measured = Vec::with_capacity(pes);
        for (pe, f) in pe_slowdown(p, pes, samples).into_iter().enumerate() {
            if let Some(f) = f {
                if !(f.is_finite() && f > 0.0) {
                    return None;
                }
                slow.push(f);
                measured.push(true);
            } else {
                let seen = foreign_slowdown(obs, pe).unwrap_or(1.0);
                slow.push(memory.get(pe).copied().flatten().unwrap_or(1.0).max(seen));
                measured.push(false);
            }
        }
        Some(Self {
            cost,
            speed: obs.pe_speed.clone(),
            slow,
            measured,
        })
    }

    /// Milliseconds per millisecond of idle-reference cost on PE `pe`
    /// shared by `k` of our stages.
    fn weight(&self, pe: usize, k: usize) -> f64 {
        self.slow[pe] * k.max(1) as f64 / self.speed[pe]
    }

    /// Predicted stage times of `q`.
    fn stage_times(&self, q: &Placement) -> Vec<f64> {
        let shared = sharing(q, self.speed.len());
        (0..q.stages())
            .map(|s| {
                let pe = q.mapping[s];
                self.cost.range_ms(q.range(s)) * self.weight(pe, shared[pe])
            })
            .collect()
    }

    /// Predicted bottleneck of `q` (`None` if it does not fit).
    pub(super) fn bottleneck_of(&self, q: &Placement) -> Option<f64> {
        if q.units != self.cost.units() || !q.is_valid(self.speed.len()) {
            return None;
        }
        Some(self.stage_times(q).into_iter().fold(0.0, f64::max))
    }

    /// The step: the bottleneck stage's best local move (see the `odin`
    /// module docs), `None` when none is predicted to cut the bottleneck by
    /// `improvement`. `saturated`: frames queue up ahead of the bottleneck
    /// (see [`latency`]).
    pub(super) fn best_move(
        &self,
        p: &Placement,
        times: &[f64],
        improvement: f64,
        saturated: bool,
        rejected: &[Placement],
    ) -> Option<Placement> {
        let b = bottleneck_stage(times)?;
        let now = times[b];
        let n = p.stages();
        // (predicted bottleneck, predicted latency, work moved, placement)
        let mut moves: Vec<(f64, f64, f64, Placement)> = Vec::new();
        let mut consider = |q: Placement, moved: f64| {
            if rejected.contains(&q) {
                return;
            }
            let t = self.stage_times(&q);
            let worst = t.iter().copied().fold(0.0, f64::max);
            moves.push((worst, latency(&t, saturated), moved, q));
        };
        // Shed work along the chain: re-cut each window i..=j around b.
        for i in 0..=b {
            for j in b.max(i + 1)..n {
                if let Some((q, moved)) = self.recut_window(p, i, j) {
                    consider(q, moved);
                }
            }
        }
        // Trade PEs with another stage (an idle PE when that stage is empty),
        // alone or with the stages between the two re-cut for their new PEs.
        for t in (0..n).filter(|&t| t != b && p.mapping[t] != p.mapping[b]) {
            let mut q = p.clone();
            q.mapping.swap(b, t);
            let moved = self.cost.range_ms(p.range(b)) + self.cost.range_ms(p.range(t));
            if let Some((r, more)) = self.recut_window(&q, b.min(t), b.max(t)) {
                consider(r, moved + more);
            }
            consider(q, moved);
        }
        let best = moves.iter().map(|m| m.0).fold(f64::INFINITY, f64::min);
        if best.is_nan() || best > now * (1.0 - improvement) {
            return None;
        }
        // Within half the improvement of the best bottleneck, the lowest
        // latency (within as much), then the least work moved.
        moves
            .into_iter()
            .filter(|m| m.0 <= best * (1.0 + improvement / 2.0))
            .min_by(|x, y| {
                x.2.total_cmp(&y.2)
                    .then(x.1.total_cmp(&y.1))
                    .then(x.0.total_cmp(&y.0))
            })
            .map(|m| m.3)
    }

    /// `p` with stages `i..=j` re-cut for the lowest predicted time (see
    /// [`recut`]), and the reference cost of the units that changed stage;
    /// `None` when the cuts stay.
    fn recut_window(&self, p: &Placement, i: usize, j: usize) -> Option<(Placement, f64)> {
        let shared = sharing(p, self.speed.len());
        let current = self.stage_times(p);
        let outside = (0..p.stages())
            .filter(|s| !(i..=j).contains(s))
            .map(|s| current[s])
            .fold(0.0, f64::max);
        let w: Vec<f64> = (i..=j)
            .map(|s| self.weight(p.mapping[s], shared[p.mapping[s]]))
            .collect();
        let (lo, hi) = (p.range(i).start, p.range(j).end);
        let cuts = recut(&self.cost, &w, lo, hi, &p.cuts[i..j], outside);
        if cuts[..] == p.cuts[i..j] {
            return None;
        }
        let moved = cuts
            .iter()
            .zip(&p.cuts[i..j])
            .map(|(&a, &o)| self.cost.range_ms(a.min(o)..a.max(o)))
            .sum();
        let mut q = p.clone();
        q.cuts[i..j].copy_from_slice(&cuts);
        Some((q, moved))
    }
}

/// Predicted latency of a pipeline with stage times `times`: their sum,
/// plus, when `saturated` (frames arrive as fast as the bottleneck takes
/// them), the frames waiting ahead of the bottleneck, two per stage before
/// it (one in service, blocked, and one in its queue), each a bottleneck
/// time: the earlier the bottleneck, the shorter the wait.
fn latency(times: &[f64], saturated: bool) -> f64 {
    let sum: f64 = times.iter().sum();
    if !saturated {
        return sum;
    }
    let worst = times.iter().copied().fold(0.0, f64::max);
    let k = times
        .iter()
        .rposition(|&t| t >= worst * (1.0 - 1e-6))
        .unwrap_or(0);
    sum + 2.0 * k as f64 * worst
}

/// Re-cuts units `lo..hi` over the stages of a window, whose times are
/// `w[s]` times their units' reference cost, for the lowest largest stage
/// time (but never below `floor`, the bottleneck outside the window),
/// choosing among the cuts that achieve it those closest to `old` (the
/// window's `w.len() - 1` cuts in force). Stages may end up empty.
fn recut(
    cost: &CostModel,
    w: &[f64],
    lo: usize,
    hi: usize,
    old: &[usize],
    floor: f64,
) -> Vec<usize> {
    // Furthest end `e` from `start` with units start..e within `limit` on weight `ws`.
    let reach = |start: usize, ws: f64, limit: f64| {
        let mut e = start;
        while e < hi && cost.range_ms(start..e + 1) * ws <= limit {
            e += 1;
        }
        e
    };
    let fits = |limit: f64| w.iter().fold(lo, |pos, &ws| reach(pos, ws, limit)) >= hi;
    let max_w = w.iter().copied().fold(0.0, f64::max);
    let (mut below, mut above) = (0.0, cost.range_ms(lo..hi) * max_w);
    for _ in 0..60 {
        let mid = 0.5 * (below + above);
        if fits(mid) {
            above = mid;
        } else {
            below = mid;
        }
    }
    let limit = above.max(floor) * (1.0 + 1e-9);
    // Earliest each cut may sit for the rest of the window to fit after it.
    let mut earliest = vec![lo; old.len()];
    let mut pos = hi;
    for k in (1..w.len()).rev() {
        let mut s = pos;
        while s > lo && cost.range_ms(s - 1..pos) * w[k] <= limit {
            s -= 1;
        }
        pos = s;
        earliest[k - 1] = pos;
    }
    let mut cuts = Vec::with_capacity(old.len());
    let mut prev = lo;
    for (k, &o) in old.iter().enumerate() {
        let latest = reach(prev, w[k], limit);
        let c = o.clamp(earliest[k].max(prev).min(latest), latest);
        cuts.push(c);
        prev = c;
    }
    cuts
}

/// The stage with the largest of `times` (ties go to the later stage).
fn bottleneck_stage(times: &[f64]) -> Option<usize> {
    (0..times.len()).max_by(|&x, &y| times[x].total_cmp(&times[y]).then(y.cmp(&x)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::config::PolicyConfig;
    use crate::policy::cost::measured_times;
    use crate::policy::odin::Odin;
    use crate::policy::odin::testkit::drive;
    use crate::policy::testutil::{self, onset};
    use crate::policy::{Action, Policy};

    #[test]
    fn the_move_goes_from_the_bottleneck_to_the_faster_neighbour() {
        let p = testutil::placement(9, &[3, 6]);
        // Middle stage slowest, right neighbour faster: its last unit goes right.
        assert_eq!(
            neighbour_move(&p, &[4.0, 9.0, 3.0]).unwrap().cuts,
            vec![3, 5]
        );
        // Left neighbour faster: its first unit goes left.
        assert_eq!(
            neighbour_move(&p, &[2.0, 9.0, 3.0]).unwrap().cuts,
            vec![4, 6]
        );
        // Ends have one neighbour.
        assert_eq!(
            neighbour_move(&p, &[9.0, 1.0, 3.0]).unwrap().cuts,
            vec![2, 6]
        );
        assert_eq!(
            neighbour_move(&p, &[1.0, 2.0, 9.0]).unwrap().cuts,
            vec![3, 7]
        );
        // A one-unit bottleneck cannot give anything.
        let p = testutil::placement(5, &[1, 3]);
        assert_eq!(neighbour_move(&p, &[9.0, 1.0, 1.0]), None);
        assert_eq!(neighbour_move(&testutil::placement(4, &[]), &[4.0]), None);
    }

    #[test]
    fn the_step_is_sized_and_directed_by_the_measured_slowdowns() {
        let cfg = PolicyConfig::default();
        // 30 equal units, PE 0 four times slower: 60 ms against 15 ms. Nine units
        // balance it (6 x 4 = 24 = 15 + 9), in one step.
        let unit_ms = [1.0; 30];
        let p = testutil::placement(30, &[15]);
        let mut o = testutil::obs(&unit_ms, &[1.0; 2], p.clone(), &[4.0, 1.0], 0);
        o.events = vec![onset(0)];
        let Action::Apply(c) = Odin::new(&cfg).decide(&o) else {
            panic!()
        };
        assert_eq!(c.cuts, vec![6]);
        // Stage 0 (2 units, PE 0 2.4x slower) measures 4.8 ms, less than stage 2 (3
        // units, PE 2 1.7x: 5.1 ms), so the unit-by-unit move gives stage 1's unit to
        // stage 0 (7.2 ms); the slowdowns say stage 2 takes it better (6.8 ms).
        let unit_ms = [1.0; 9];
        let p = testutil::placement(9, &[2, 6]);
        let slow = [2.4, 2.0, 1.7];
        let mut o = testutil::obs(&unit_ms, &[1.0; 3], p.clone(), &slow, 0);
        let times: Vec<f64> = measured_times(&o).into_iter().flatten().collect();
        assert_eq!(neighbour_move(&p, &times).unwrap().cuts, vec![3, 6]);
        o.events = vec![onset(1)];
        let Action::Apply(c) = Odin::new(&cfg).decide(&o) else {
            panic!()
        };
        assert_eq!(c.cuts, vec![2, 5]);
        // No move is predicted to help (stage 1 holds one unit, its neighbours would
        // be slower than it is): nothing is tried and the search ends.
        let p = testutil::placement(9, &[4, 5]);
        let mut o = testutil::obs(&unit_ms, &[1.0; 3], p, &[1.0, 3.0, 1.0], 0);
        o.events = vec![onset(1)];
        let mut odin = Odin::new(&cfg);
        assert_eq!(odin.decide(&o), Action::Keep);
        assert!(!odin.search().is_active());
    }

    #[test]
    fn work_ripples_along_the_chain_and_a_crippled_pe_is_left_unused() {
        // PE 2 four times slower: 2, 2, 8 ms. Stage 2 giving one unit to stage 1 gives
        // 4 ms; the chain shifting (stage 1 passing a unit on to stage 0) and stage 2
        // left empty gives 3 ms, in one step.
        let unit_ms = [1.0; 6];
        let p = testutil::placement(6, &[2, 4]);
        let mut o = testutil::obs(&unit_ms, &[1.0; 3], p, &[1.0, 1.0, 4.0], 0);
        o.events = vec![onset(2)];
        let mut odin = Odin::new(&PolicyConfig::default());
        let Action::Apply(c) = odin.decide(&o) else {
            panic!()
        };
        assert_eq!(c.cuts, vec![3, 6]);
        assert_eq!(c.mapping, vec![0, 1, 2]);
        assert!(c.range(2).is_empty(), "{c:?}");
        // Kept: 3 ms against 8. PE 2 runs nothing now; what was measured on it is
        // remembered, so nothing is moved back onto it.
        let (end, applied) = drive(&mut odin, &unit_ms, c.clone(), &[1.0, 1.0, 4.0], vec![], 40);
        assert!(applied.is_empty(), "{applied:?}");
        assert_eq!(end, c);
        assert_eq!(odin.search().remembered(2), Some(4.0));
    }

    #[test]
    fn a_slowed_stage_moves_whole_to_an_idle_pe() {
        // Three stages on PEs 0..3, PE 3 idle (an empty fourth stage); PE 1 slowed 3x.
        let unit_ms = [1.0; 12];
        let p = testutil::placement(12, &[4, 8, 12]);
        let mut o = testutil::obs(&unit_ms, &[1.0; 4], p, &[1.0, 3.0, 1.0, 1.0], 0);
        o.events = vec![onset(1)];
        let Action::Apply(c) = Odin::new(&PolicyConfig::default()).decide(&o) else {
            panic!()
        };
        assert_eq!(c.cuts, vec![4, 8, 12], "the cuts stay");
        assert_eq!(
            c.mapping,
            vec![0, 3, 2, 1],
            "stage 1 trades PEs with the idle stage"
        );
        // An idle PE that a CPU hog uses is no refuge: the chain sheds work instead.
        let p = testutil::placement(12, &[4, 8, 12]);
        let mut o = testutil::obs(&unit_ms, &[1.0; 4], p, &[1.0, 3.0, 1.0, 1.0], 0);
        o.pes[3].foreign_cpu_share = Some(4.0);
        o.events = vec![onset(1)];
        let Action::Apply(c) = Odin::new(&PolicyConfig::default()).decide(&o) else {
            panic!()
        };
        assert_eq!(c.mapping, vec![0, 1, 2, 3], "{c:?}");
        assert_ne!(c.cuts, vec![4, 8, 12]);
    }

    #[test]
    fn recut_balances_the_window_and_keeps_close_to_the_old_cuts() {
        let cost = CostModel::new(&[1.0; 8]);
        // Two stages, the first twice as slow: 3 units there (6), 5 on the second (5).
        assert_eq!(recut(&cost, &[2.0, 1.0], 0, 8, &[4], 0.0), vec![3]);
        // Never balanced below the bottleneck outside the window: with 7 ms elsewhere,
        // the old cut (4: 8 and 4 ms) moves only as far as it must (3: 6 and 5 ms).
        assert_eq!(recut(&cost, &[2.0, 1.0], 0, 8, &[4], 7.0), vec![3]);
        // Equal stages, floor 6: cuts anywhere in 2..=6 fit; the old one stays.
        assert_eq!(recut(&cost, &[1.0, 1.0], 0, 8, &[5], 6.0), vec![5]);
        // A stage too slow for even one unit is left empty.
        assert_eq!(
            recut(&cost, &[1.0, 9.0, 1.0], 0, 8, &[3, 5], 0.0),
            vec![4, 4]
        );
    }
}
