//! The stage thread: pinned to its PE, it takes frames from its input
//! queue, runs units from each frame's cursor to the stage's current end
//! cut, and forwards the frame.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, select};

use super::frame::{Completed, Frame};
use super::shared::{Shared, StageControl};
use crate::cpulist::CpuSet;
use crate::engine::Workspace;

/// Where a stage sends its frames.
pub(crate) enum Downstream {
    /// The next stage's input queue.
    Stage(Sender<Frame>),
    /// Out of the pipeline.
    Done(Sender<Completed>),
}

pub(crate) struct Stage {
    pub index: usize,
    pub shared: Arc<Shared>,
    pub input: Receiver<Frame>,
    pub control: Receiver<StageControl>,
    pub output: Downstream,
}

impl Stage {
    /// Runs until the input queue is closed and empty.
    pub fn run(self) {
        let me = &self.shared.stages[self.index];
        me.tid.store(crate::thread::gettid(), Ordering::Release);
        let initial = me.pe.lock().expect("pe lock").clone();
        let pinned = self.shared.affinity.set(0, &initial);
        if let Err(e) = &pinned {
            tracing::warn!(stage = self.index, pe = %initial, "cannot pin stage thread: {e}");
        }
        *me.pin_error.lock().expect("pin error lock") = pinned.err().map(|e| e.to_string());
        let mut ws = self.workspace(&initial);
        let _ = self.shared.ready.send(self.index);
        loop {
            let frame = select! {
                recv(self.control) -> msg => {
                    if let Ok(c) = msg {
                        self.apply(c, &mut ws);
                    }
                    continue;
                }
                recv(self.input) -> msg => match msg {
                    Ok(f) => f,
                    Err(_) => break,
                },
            };
            // Controls sent while the frame waited take effect before it runs.
            while let Ok(c) = self.control.try_recv() {
                self.apply(c, &mut ws);
            }
            let id = frame.id;
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.process(frame, &mut ws)
            })) {
                Ok(true) => {}
                Ok(false) => break,
                Err(payload) => {
                    // A bug in a layer: stop this stage (its queues close, the
                    // pipeline winds down) and say what happened.
                    let what = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    let msg = format!("stage {} panicked on frame {id}: {what}", self.index);
                    tracing::error!("{msg}");
                    self.shared
                        .failure
                        .lock()
                        .expect("failure lock")
                        .get_or_insert(msg);
                    break;
                }
            }
        }
    }

    fn apply(&self, control: StageControl, ws: &mut Workspace) {
        match control {
            StageControl::Pin(cpus, ack) => {
                let me = &self.shared.stages[self.index];
                let result = self.shared.affinity.set(0, &cpus);
                match &result {
                    Ok(()) => {
                        *ws = self.workspace(&cpus);
                        *me.pe.lock().expect("pe lock") = cpus;
                        *me.pin_error.lock().expect("pin error lock") = None;
                    }
                    Err(e) => {
                        tracing::warn!(stage = self.index, pe = %cpus, "cannot re-pin stage thread: {e}");
                    }
                }
                let _ = ack.send(result);
            }
        }
    }

    /// A workspace for a PE: on more than one CPU, with a pool of one
    /// worker per CPU, each pinned to its CPU, for intra-op parallelism.
    fn workspace(&self, pe: &CpuSet) -> Workspace {
        if pe.len() < 2 {
            return Workspace::new();
        }
        let cpus: Vec<usize> = pe.iter().collect();
        let stage = self.index;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cpus.len())
            .thread_name(move |i| format!("odin-stage-{stage}-w{i}"))
            .build();
        let pool = match pool {
            Ok(pool) => pool,
            Err(e) => {
                tracing::warn!(stage, pe = %pe, "no worker threads, running on one CPU: {e}");
                return Workspace::new();
            }
        };
        // Pin every worker before the first frame: broadcast returns once
        // each worker has run it.
        let affinity = &self.shared.affinity;
        pool.broadcast(|ctx| {
            let cpu = CpuSet::single(cpus[ctx.index() % cpus.len()]);
            if let Err(e) = affinity.set(0, &cpu) {
                tracing::warn!(stage, worker = ctx.index(), "cannot pin worker thread: {e}");
            }
        });
        Workspace::with_pool(Arc::new(pool))
    }

    /// Runs the frame's units up to this stage's end cut and forwards it.
    /// False when downstream has gone away.
    fn process(&self, mut f: Frame, ws: &mut Workspace) -> bool {
        let me = &self.shared.stages[self.index];
        let started = Instant::now();
        f.wait[self.index] += started - f.enqueued;
        let mut ran = 0;
        loop {
            let end = self.shared.stage_end(self.index);
            if f.cursor >= end {
                break;
            }
            f.tensor = self
                .shared
                .model
                .forward_range(f.cursor..f.cursor + 1, &f.tensor, ws);
            f.cursor += 1;
            ran += 1;
        }
        let service = started.elapsed();
        f.service[self.index] += service;
        if ran > 0 {
            me.record(service, self.shared.ewma_alpha);
        }
        let now = Instant::now();
        f.enqueued = now;
        match &self.output {
            Downstream::Stage(tx) => tx.send(f).is_ok(),
            Downstream::Done(tx) => {
                debug_assert_eq!(
                    f.cursor,
                    self.shared.model.len(),
                    "the last stage ends at N"
                );
                tx.send(Completed {
                    id: f.id,
                    output: f.tensor,
                    latency: now - f.admitted,
                    at: now,
                    service: f.service,
                    wait: f.wait,
                })
                .is_ok()
            }
        }
    }
}
