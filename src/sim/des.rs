//! The discrete-event core: a virtual clock and a heap of timed events.
//!
//! Events at the same time pop in the order they were pushed (a sequence
//! number breaks ties), so a run is a pure function of its inputs.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

struct Entry<E> {
    at: f64,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<E> Eq for Entry<E> {}

impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Entry<E> {
    /// Reversed: the earliest (then first pushed) entry is the greatest,
    /// so it tops the max-heap.
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.total_cmp(&self.at).then(other.seq.cmp(&self.seq))
    }
}

/// A virtual clock with its pending events.
pub struct Des<E> {
    now: f64,
    seq: u64,
    heap: BinaryHeap<Entry<E>>,
}

impl<E> Default for Des<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> Des<E> {
    /// An empty schedule at time 0.
    pub fn new() -> Self {
        Self {
            now: 0.0,
            seq: 0,
            heap: BinaryHeap::new(),
        }
    }

    /// The current virtual time, seconds.
    pub fn now(&self) -> f64 {
        self.now
    }

    /// Schedules `event` at `at` (not before now).
    pub fn at(&mut self, at: f64, event: E) {
        debug_assert!(at.is_finite(), "event at {at}");
        let at = at.max(self.now);
        self.seq += 1;
        self.heap.push(Entry {
            at,
            seq: self.seq,
            event,
        });
    }

    /// Advances the clock to the next event and returns it.
    pub fn pop(&mut self) -> Option<E> {
        let e = self.heap.pop()?;
        self.now = e.at;
        Some(e.event)
    }

    /// Events still pending.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_time_order_then_push_order() {
        let mut d = Des::new();
        d.at(2.0, "c");
        d.at(1.0, "a");
        d.at(1.0, "b");
        d.at(0.5, "first");
        let order: Vec<_> = std::iter::from_fn(|| d.pop()).collect();
        assert_eq!(order, ["first", "a", "b", "c"]);
        assert_eq!(d.now(), 2.0);
    }

    #[test]
    fn never_goes_back_in_time() {
        let mut d = Des::new();
        d.at(1.0, 1);
        d.pop();
        d.at(0.5, 2);
        d.pop();
        assert_eq!(d.now(), 1.0);
    }
}
