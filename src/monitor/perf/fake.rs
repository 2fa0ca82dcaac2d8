//! A recording [`CounterSource`] for tests of the code that uses counters.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    CounterSample, CounterSource, GroupHandle, GroupKind, OpenClass, Opened, PerfError, Target,
};

/// A call made to a [`FakeCounters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FakeCall {
    /// `open(target, kind)`.
    Open(Target, GroupKind),
    /// `read(handle)`.
    Read(GroupHandle),
    /// `close(handle)`.
    Close(GroupHandle),
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<FakeCall>,
    failures: HashMap<GroupKind, OpenClass>,
    samples: HashMap<(Target, GroupKind), CounterSample>,
    open: HashMap<GroupHandle, (Target, GroupKind)>,
    next: usize,
}

/// Records every call and serves scripted samples. Clones share state, so a
/// test can keep one clone and hand the other to the code under test.
///
/// Opens succeed with every event of the group unless a failure is scripted
/// for the kind ([`fail`](Self::fail)). A read returns the sample last set
/// for the group's target and kind ([`set_sample`](Self::set_sample)), or an
/// all-`None` sample.
#[derive(Clone, Debug, Default)]
pub struct FakeCounters {
    state: Arc<Mutex<State>>,
}

impl FakeCounters {
    /// Every open succeeds.
    pub fn new() -> Self {
        Self::default()
    }

    /// Like a virtual machine: hardware groups fail as unsupported.
    pub fn without_hardware() -> Self {
        let fake = Self::new();
        fake.fail(GroupKind::Hardware, OpenClass::Unsupported);
        fake
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes later opens of `kind` fail with `class`.
    pub fn fail(&self, kind: GroupKind, class: OpenClass) {
        self.lock().failures.insert(kind, class);
    }

    /// What reads of the `kind` group on `target` return from now on.
    pub fn set_sample(&self, target: Target, kind: GroupKind, sample: CounterSample) {
        self.lock().samples.insert((target, kind), sample);
    }

    /// The calls so far, oldest first.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.clone()
    }

    /// The groups open now.
    pub fn open_groups(&self) -> Vec<(Target, GroupKind)> {
        let mut v: Vec<_> = self.lock().open.values().copied().collect();
        v.sort();
        v
    }
}

impl CounterSource for FakeCounters {
    fn open(&mut self, target: Target, kind: GroupKind) -> Result<Opened, PerfError> {
        let mut s = self.lock();
        s.calls.push(FakeCall::Open(target, kind));
        if let Some(&class) = s.failures.get(&kind) {
            return Err(PerfError::Open {
                event: kind.counters()[0],
                target,
                class,
                source: io::Error::from_raw_os_error(class.errno()),
            });
        }
        let handle = GroupHandle(s.next);
        s.next += 1;
        s.open.insert(handle, (target, kind));
        Ok(Opened {
            handle,
            counting: kind.counters().to_vec(),
            missing: Vec::new(),
            user_only: false,
        })
    }

    fn read(&mut self, group: GroupHandle) -> Result<CounterSample, PerfError> {
        let mut s = self.lock();
        s.calls.push(FakeCall::Read(group));
        let key = *s.open.get(&group).ok_or(PerfError::UnknownHandle(group))?;
        Ok(s.samples.get(&key).copied().unwrap_or_default())
    }

    fn close(&mut self, group: GroupHandle) {
        let mut s = self.lock();
        s.calls.push(FakeCall::Close(group));
        s.open.remove(&group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_calls_and_serves_scripted_samples() {
        let fake = FakeCounters::without_hardware();
        let mut source: Box<dyn CounterSource> = Box::new(fake.clone());
        let t = Target::Thread(7);
        let err = source.open(t, GroupKind::Hardware).unwrap_err();
        assert_eq!(err.class(), Some(OpenClass::Unsupported));
        let sw = source.open(t, GroupKind::Software).unwrap();
        assert_eq!(source.read(sw.handle).unwrap(), CounterSample::default());
        let want = CounterSample {
            time_enabled_ns: 10,
            time_running_ns: 10,
            task_clock_ns: Some(9),
            ..Default::default()
        };
        fake.set_sample(t, GroupKind::Software, want);
        assert_eq!(source.read(sw.handle).unwrap(), want);
        assert_eq!(fake.open_groups(), vec![(t, GroupKind::Software)]);
        source.close(sw.handle);
        assert!(matches!(
            source.read(sw.handle),
            Err(PerfError::UnknownHandle(_))
        ));
        assert_eq!(
            fake.calls(),
            vec![
                FakeCall::Open(t, GroupKind::Hardware),
                FakeCall::Open(t, GroupKind::Software),
                FakeCall::Read(sw.handle),
                FakeCall::Read(sw.handle),
                FakeCall::Close(sw.handle),
                FakeCall::Read(sw.handle),
            ]
        );
        assert!(fake.open_groups().is_empty());
    }
}
