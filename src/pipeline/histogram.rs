//! A log-bucketed latency histogram of fixed size (HDR-style).
//!
//! Problem: percentiles over every frame of a run that lasts hours, with
//! memory that does not grow with the frame count and without sorting
//! anything at the end.
//!
//! Approach: values are whole nanoseconds (a `Duration` is exact in them).
//! Values below `2^SUB_BITS` get a bucket each. Above, every power of two
//! `[2^e, 2^(e+1))` is split into `2^SUB_BITS` equal buckets of width
//! `2^(e - SUB_BITS)`: the index is the position of the top bit and the
//! `SUB_BITS` bits below it.
//!
//! ```text
//!   value  0 1 2 .. 127 | 128 .. 255 | 256 258 .. 510 | 512 516 .. 1020 | ...
//!   width  1 1 1 ..  1  |  1  ..  1  |  2   2  ..  2  |  4   4  ..   4  | ...
//!   index  0 1 2 .. 127 | 128 .. 255 | 256 257 .. 383 | 384 385 .. 511  | ...
//! ```
//!
//! Invariants:
//! * At most [`BUCKETS`] counters (58 x 128 = 7424, 59 KiB) whatever is
//!   recorded; the counter vector grows only up to the highest bucket used.
//! * A quantile is the nearest-rank one (as [`crate::stats::percentile`]
//!   computes over a sorted vector): the bucket holding that rank is found
//!   exactly, and its midpoint (clamped to the smallest and largest value
//!   recorded) is reported. The reported value is therefore within half a
//!   bucket of the exact one: a relative error of at most
//!   `2^-(SUB_BITS + 1)` = 1/256 (0.39 %), and none below 256 ns. The
//!   first and last ranks (the minimum and maximum) are exact.
//! * Count, sum (hence the mean), minimum and maximum are exact.

use std::time::Duration;

/// Bits of each power of two kept below its top bit.
pub const SUB_BITS: u32 = 7;

/// Buckets per power of two.
const SUB: u64 = 1 << SUB_BITS;

/// The number of buckets that covers every `u64` nanosecond value.
pub const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) << SUB_BITS;

/// Counts of nanosecond values in log-spaced buckets; see the module doc.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    min: u64,
    max: u64,
}

/// The bucket of `v`.
#[allow(clippy::cast_possible_truncation, reason = "below SUB")]
fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let shift = (63 - v.leading_zeros()) - SUB_BITS;
    ((shift as usize) << SUB_BITS) + (v >> shift) as usize
}

/// The smallest value of bucket `i` and its width.
#[allow(
    clippy::cast_possible_truncation,
    reason = "a bucket index over SUB_BITS is below 64"
)]
fn bounds(i: usize) -> (u64, u64) {
    let shift = ((i >> SUB_BITS) as u32).saturating_sub(1);
    let top = i as u64 - (u64::from(shift) << SUB_BITS);
    (top << shift, 1 << shift)
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one value of `ns` nanoseconds.
    pub fn record_ns(&mut self, ns: u64) {
        let i = index(ns);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        if self.total == 0 {
            (self.min, self.max) = (ns, ns);
        } else {
            self.min = self.min.min(ns);
            self.max = self.max.max(ns);
        }
        self.total += 1;
        self.sum += u128::from(ns);
    }

    /// Adds one duration (saturating at `u64::MAX` nanoseconds, 584 years).
    pub fn record(&mut self, d: Duration) {
        self.record_ns(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Forgets every value, keeping the allocation.
    pub fn clear(&mut self) {
        self.counts.clear();
        (self.total, self.sum, self.min, self.max) = (0, 0, 0, 0);
    }

    /// The `q` quantile (0..=1) by nearest rank, in nanoseconds, within
    /// half a bucket of the exact one; `None` when empty.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "saturating, then clamped to 1..=total"
    )]
    pub fn quantile_ns(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        // The float-to-int cast saturates; the clamp keeps 1..=total.
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        if rank == 1 {
            return Some(self.min);
        }
        if rank == self.total {
            return Some(self.max);
        }
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, width) = bounds(i);
                return Some((low + (width - 1) / 2).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// The `q` quantile in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.quantile_ns(q).map_or(0.0, |ns| ns as f64 / 1e6)
    }

    /// The exact mean in milliseconds; 0 when empty.
    pub fn mean_ms(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        self.sum as f64 / self.total as f64 / 1e6
    }

    /// The largest value recorded, milliseconds; 0 when empty.
    pub fn max_ms(&self) -> f64 {
        self.max as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::percentile;
    use proptest::prelude::*;

    #[test]
    fn buckets_tile_the_range() {
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        let mut next = 0u64;
        for i in 0..BUCKETS {
            let (low, width) = bounds(i);
            assert_eq!(low, next, "bucket {i} starts where {} ends", i.max(1) - 1);
            assert_eq!(index(low), i);
            assert_eq!(index(low + (width - 1)), i);
            next = low.wrapping_add(width);
        }
        assert_eq!(next, 0, "the last bucket ends at u64::MAX");
    }

    #[test]
    fn small_values_are_exact_and_empty_is_none() {
        let mut h = Histogram::new();
        assert_eq!(h.quantile_ns(0.5), None);
        assert_eq!((h.quantile_ms(0.99), h.mean_ms()), (0.0, 0.0));
        for v in 1..=100 {
            h.record_ns(v);
        }
        assert_eq!(h.quantile_ns(0.5), Some(50));
        assert_eq!(h.quantile_ns(0.99), Some(99));
        assert_eq!(h.quantile_ns(1.0), Some(100));
        assert_eq!(h.quantile_ns(0.0), Some(1));
        assert_eq!(h.count(), 100);
        h.clear();
        assert_eq!((h.count(), h.quantile_ns(0.5)), (0, None));
    }

    #[test]
    fn memory_is_bounded_by_the_largest_bucket() {
        let mut h = Histogram::new();
        for v in 0..100_000u64 {
            h.record_ns(v * 1_000);
        }
        assert!(h.counts.len() <= index(100_000 * 1_000) + 1);
        h.record(Duration::MAX);
        assert_eq!(h.counts.len(), BUCKETS);
        assert_eq!(h.quantile_ns(1.0), Some(u64::MAX));
    }

    /// Values spread over many powers of two: a mantissa shifted by a
    /// random exponent, as latencies from microseconds to seconds are.
    fn values() -> impl Strategy<Value = Vec<u64>> {
        prop::collection::vec((0u64..1 << 20, 0u32..24).prop_map(|(m, e)| m << e), 1..2000)
    }

    proptest! {
        #[test]
        fn quantiles_within_half_a_bucket_of_the_sorted_reference(
            v in values(),
            q in 0.0f64..=1.0,
        ) {
            let mut h = Histogram::new();
            for &x in &v {
                h.record_ns(x);
            }
            let mut sorted = v.clone();
            sorted.sort_unstable();
            let as_f64: Vec<f64> = sorted.iter().map(|&x| x as f64).collect();
            for q in [q, 0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
                let exact = percentile(&as_f64, q) as u64;
                let got = h.quantile_ns(q).unwrap();
                // |got - exact| <= exact / 2^(SUB_BITS + 1), in integers.
                prop_assert!(
                    got.abs_diff(exact) << (SUB_BITS + 1) <= exact,
                    "q {} exact {} got {}", q, exact, got
                );
                prop_assert_eq!(index(got), index(exact));
            }
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64 / 1e6;
            prop_assert!((h.mean_ms() - mean).abs() <= mean * 1e-12);
            prop_assert_eq!(h.max_ms(), sorted[sorted.len() - 1] as f64 / 1e6);
        }
    }
}
