//! The pure half of reading a counter group: the words the kernel returns
//! for one `read(2)` of a group leader, parsed, matched to the events by
//! id and scaled for multiplexing. No syscalls: [`super::PerfCounters`]
//! reads the bytes and hands them here.
//!
//! ```text
//! u64 nr; u64 time_enabled; u64 time_running; { u64 value; u64 id; } [nr]
//! ```

use super::{CounterKind, CounterSample};

/// `value * enabled / running`, the estimate of a multiplexed count; `None`
/// if the group was enabled but never ran. With `enabled == 0` the group has
/// had no time at all, nothing was missed, and `value` is returned as is.
pub fn scale(value: u64, enabled: u64, running: u64) -> Option<u64> {
    if running >= enabled {
        return Some(value);
    }
    if running == 0 {
        return None;
    }
    let scaled = u128::from(value) * u128::from(enabled) / u128::from(running);
    Some(u64::try_from(scaled).unwrap_or(u64::MAX))
}

/// A group read as the kernel lays it out for `READ_FORMAT`
/// (`PERF_FORMAT_GROUP | ID | TOTAL_TIME_ENABLED | TOTAL_TIME_RUNNING`).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct GroupRead {
    pub time_enabled: u64,
    pub time_running: u64,
    /// `(id, value)` pairs.
    pub values: Vec<(u64, u64)>,
}

/// Parses the `u64`s of a group read (layout in the module docs).
pub(super) fn parse_group_read(words: &[u64]) -> Result<GroupRead, String> {
    let [nr, time_enabled, time_running, rest @ ..] = words else {
        return Err(format!("{} words, want at least 3", words.len()));
    };
    let nr = usize::try_from(*nr).map_err(|_| format!("nr {nr} too large"))?;
    if rest.len() != nr.saturating_mul(2) {
        return Err(format!("nr {nr} but {} value/id words", rest.len()));
    }
    Ok(GroupRead {
        time_enabled: *time_enabled,
        time_running: *time_running,
        values: rest.chunks_exact(2).map(|c| (c[1], c[0])).collect(),
    })
}

/// Matches a group read to the events by id and scales the values.
pub(super) fn to_sample(
    read: &GroupRead,
    ids: &[(CounterKind, u64)],
) -> Result<CounterSample, String> {
    let mut sample = CounterSample {
        time_enabled_ns: read.time_enabled,
        time_running_ns: read.time_running,
        ..CounterSample::default()
    };
    for &(kind, id) in ids {
        let Some(&(_, value)) = read.values.iter().find(|(got, _)| *got == id) else {
            return Err(format!(
                "no value for {kind} (id {id}) in {:?}",
                read.values
            ));
        };
        sample.set(kind, scale(value, read.time_enabled, read.time_running));
    }
    Ok(sample)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_estimates_multiplexed_counts() {
        // (value, enabled, running) -> estimate
        let table = [
            ((1000, 100, 100), Some(1000)),
            ((1000, 200, 100), Some(2000)),
            ((999, 300, 100), Some(2997)),
            ((7, 3, 2), Some(10)), // 10.5 rounds down
            ((0, 500, 250), Some(0)),
            ((1000, 100, 0), None),
            ((0, 0, 0), Some(0)), // not enabled for any time yet: exact
            ((3, 0, 0), Some(3)),
            ((0, 10, 0), None),
            ((5, 0, 10), Some(5)), // running > enabled: kernel rounding, no scaling
            ((u64::MAX, u64::MAX, u64::MAX / 2), Some(u64::MAX)), // saturates
            ((u64::MAX / 4, 1 << 40, 1 << 39), Some(u64::MAX / 4 * 2)),
        ];
        for ((v, e, r), want) in table {
            assert_eq!(scale(v, e, r), want, "scale({v}, {e}, {r})");
        }
    }

    #[test]
    fn group_reads_are_parsed_and_matched_by_id() {
        // nr=3, enabled=200, running=100, then (value, id) in an order that
        // differs from the ids' order.
        let words = [3, 200, 100, 30, 12, 10, 10, 20, 11];
        let read = parse_group_read(&words).unwrap();
        assert_eq!(read.values, vec![(12, 30), (10, 10), (11, 20)]);
        let ids = [
            (CounterKind::Instructions, 10),
            (CounterKind::Cycles, 11),
            (CounterKind::LlcMisses, 12),
        ];
        let s = to_sample(&read, &ids).unwrap();
        assert_eq!(
            (s.instructions, s.cycles, s.llc_misses),
            (Some(20), Some(40), Some(60))
        );
        assert_eq!((s.time_enabled_ns, s.time_running_ns), (200, 100));
        assert_eq!(s.task_clock_ns, None);

        // Never ran: times kept, values None.
        let s = to_sample(&parse_group_read(&[1, 50, 0, 0, 10]).unwrap(), &ids[..1]).unwrap();
        assert_eq!((s.time_enabled_ns, s.instructions), (50, None));

        for bad in [&[][..], &[1, 2], &[2, 1, 1, 5, 10], &[1, 1, 1, 5, 10, 0]] {
            assert!(parse_group_read(bad).is_err(), "{bad:?}");
        }
        let err = to_sample(&read, &[(CounterKind::TaskClock, 99)]).unwrap_err();
        assert!(err.contains("task-clock") && err.contains("99"), "{err}");
    }
}
