//! Admission of inference requests into the pipeline: a bounded queue with
//! deadlines, a feeder that turns requests into frames, and a router that
//! joins the frames' outputs back into one answer per request.
//!
//! ```text
//! transport --submit--> Admission (bounded; full -> QueueFull at once)
//!   Feeder thread: next request; deadline passed -> DeadlineExceeded, no
//!     frame runs; else one frame per batch row through the Admitter,
//!     each registered with the Router before it can complete
//!   daemon: Completed frame --> Router::complete --> when the request's
//!     last row is done: Outcome::Done(outputs in row order) --> Ticket
//! ```
//!
//! Invariants: every accepted request gets exactly one outcome (the feeder
//! answers the ones it refuses, the router the ones it admitted, and
//! [`Admission::close`] plus draining answers the rest); a request whose
//! client has gone still runs its frames but its answer is dropped; frames
//! the router does not know (the synthetic source's) pass through.
//!
//! A pipeline rebuild stops the feeder before draining: queued requests
//! wait in the queue and a feeder on the new pipeline serves them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, select};

use crate::engine::Tensor;
use crate::pipeline::Completed;
use crate::pipeline::runtime::{Admitter, Rejected};

/// Why a request got no output.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The queue was full when it arrived.
    #[error("Exceeds maximum queue size")]
    QueueFull,
    /// Its deadline passed while it waited; none of its frames ran.
    #[error("Request timeout expired")]
    DeadlineExceeded,
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// The answer to one request.
#[derive(Debug)]
pub enum Outcome {
    /// Every row ran: the outputs in row order.
    Done {
        /// One output per batch row.
        outputs: Vec<Tensor>,
        /// Arrival to the first frame's admission.
        queue: Duration,
        /// First admission to the last row's completion.
        compute: Duration,
    },
    /// It was refused.
    Refused(Refusal),
}

/// Where a request's outcome arrives.
#[derive(Debug)]
pub struct Ticket(Receiver<Outcome>);

impl Ticket {
    /// Waits for the outcome.
    pub fn wait(self) -> Outcome {
        self.0
            .recv()
            .unwrap_or(Outcome::Refused(Refusal::ShuttingDown))
    }

    /// The channel, for `select!`.
    pub fn receiver(&self) -> &Receiver<Outcome> {
        &self.0
    }
}

/// A request waiting for the pipeline.
struct Queued {
    rows: Vec<Tensor>,
    arrived: Instant,
    deadline: Option<Instant>,
    reply: Sender<Outcome>,
}

/// The bounded queue between transports and the pipeline.
pub struct Admission {
    tx: Sender<Queued>,
    rx: Receiver<Queued>,
    closed: AtomicBool,
}

impl Admission {
    /// A queue of at most `max_queue` requests.
    pub fn new(max_queue: usize) -> Arc<Self> {
        let (tx, rx) = bounded(max_queue.max(1));
        Arc::new(Self {
            tx,
            rx,
            closed: AtomicBool::new(false),
        })
    }

    /// Queues a request of `rows` (one frame each), to start before
    /// `deadline`; refused at once when the queue is full or closed.
    pub fn submit(&self, rows: Vec<Tensor>, deadline: Option<Instant>) -> Result<Ticket, Refusal> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Refusal::ShuttingDown);
        }
        let (reply, rx) = bounded(1);
        let q = Queued {
            rows,
            arrived: Instant::now(),
            deadline,
            reply,
        };
        match self.tx.try_send(q) {
            Ok(()) => Ok(Ticket(rx)),
            Err(crossbeam_channel::TrySendError::Full(_)) => Err(Refusal::QueueFull),
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => Err(Refusal::ShuttingDown),
        }
    }

    /// Requests waiting.
    pub fn pending(&self) -> usize {
        self.rx.len()
    }

    /// Refuses new requests from now on; queued ones are still served.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Answers every queued request with `why` (the pipeline is gone).
    pub fn refuse_queued(&self, why: Refusal) -> usize {
        let mut n = 0;
        while let Ok(q) = self.rx.try_recv() {
            let _ = q.reply.send(Outcome::Refused(why.clone()));
            n += 1;
        }
        n
    }
}

/// A request whose rows are in the pipeline.
struct InFlight {
    outputs: Mutex<Vec<Option<Tensor>>>,
    remaining: AtomicUsize,
    arrived: Instant,
    admitted: Instant,
    reply: Sender<Outcome>,
}

/// Frame ids of admitted rows, to their request.
#[derive(Default)]
pub struct Router {
    frames: Mutex<HashMap<u64, (Arc<InFlight>, usize)>>,
}

impl Router {
    /// An empty router.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Takes a completed frame: true if it belonged to a request.
    pub fn complete(&self, c: &Completed) -> bool {
        let Some((req, row)) = self.frames.lock().expect("router lock").remove(&c.id) else {
            return false;
        };
        req.outputs.lock().expect("request lock")[row] = Some(c.output.clone());
        if req.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let outputs = std::mem::take(&mut *req.outputs.lock().expect("request lock"))
                .into_iter()
                .map(|o| o.expect("every row completed"))
                .collect();
            // A client that has gone costs nothing more.
            let _ = req.reply.send(Outcome::Done {
                outputs,
                queue: req.admitted - req.arrived,
                compute: c.at.saturating_duration_since(req.admitted),
            });
        }
        true
    }

    /// Requests with rows in the pipeline (rows, not requests).
    pub fn in_flight(&self) -> usize {
        self.frames.lock().expect("router lock").len()
    }
}

/// The thread that moves queued requests into one pipeline.
pub struct Feeder {
    stop: Sender<()>,
    handle: Option<JoinHandle<()>>,
}

impl Feeder {
    /// Feeds `admission`'s requests through `admitter`, registering every
    /// frame with `router`.
    pub fn spawn(
        admission: Arc<Admission>,
        admitter: Admitter,
        router: Arc<Router>,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = bounded::<()>(1);
        let handle = std::thread::Builder::new()
            .name("odin-feeder".into())
            .spawn(move || feed(&admission, &admitter, &router, &stopped))?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops taking requests (one being admitted is finished first).
    pub fn stop(mut self) {
        let _ = self.stop.send(());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        let _ = self.stop.try_send(());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn feed(admission: &Admission, admitter: &Admitter, router: &Router, stopped: &Receiver<()>) {
    loop {
        if stopped.try_recv().is_ok() {
            return;
        }
        let q = select! {
            recv(stopped) -> _ => return,
            recv(admission.rx) -> q => match q {
                Ok(q) => q,
                Err(_) => return,
            },
        };
        if q.deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = q.reply.send(Outcome::Refused(Refusal::DeadlineExceeded));
            continue;
        }
        let rows = q.rows.len();
        let req = Arc::new(InFlight {
            outputs: Mutex::new(vec![None; rows]),
            remaining: AtomicUsize::new(rows),
            arrived: q.arrived,
            admitted: Instant::now(),
            reply: q.reply,
        });
        for (row, tensor) in q.rows.into_iter().enumerate() {
            // Registered before the frame exists, so it cannot complete first.
            let admitted = admitter.admit(|id| {
                router
                    .frames
                    .lock()
                    .expect("router lock")
                    .insert(id, (req.clone(), row));
                tensor
            });
            if let Err(Rejected::Closing | Rejected::Full) = admitted {
                // The pipeline closed under a request: rows admitted before
                // still complete; the rest will not, so answer now.
                router
                    .frames
                    .lock()
                    .expect("router lock")
                    .retain(|_, (r, _)| !Arc::ptr_eq(r, &req));
                let _ = req.reply.send(Outcome::Refused(Refusal::ShuttingDown));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpulist::CpuSet;
    use crate::engine::ops::{Act, Activation};
    use crate::engine::{Model, Shape, Workspace};
    use crate::pipeline::affinity::SchedAffinity;
    use crate::pipeline::partition::Partition;
    use crate::pipeline::runtime::{Pipeline, PipelineConfig};

    fn model() -> Arc<Model> {
        let mut m = Model::new("t", Shape::new(1, 2, 3, 3));
        m.push("relu", Act(Activation::Relu)).unwrap();
        m.push("relu6", Act(Activation::Relu6)).unwrap();
        Arc::new(m)
    }

    fn pipeline(m: &Arc<Model>) -> Pipeline {
        let pes = vec![CpuSet::single(0), CpuSet::single(0)];
        let cfg = PipelineConfig::new(pes, Partition::new(2, vec![1]).unwrap());
        Pipeline::start(m.clone(), cfg, Arc::new(SchedAffinity)).unwrap()
    }

    /// Routes completions until `n` frames came back.
    fn route(p: &Pipeline, router: &Router, n: usize) {
        for _ in 0..n {
            let c = p.completed().recv_timeout(Duration::from_secs(20)).unwrap();
            assert!(router.complete(&c), "frame {} belongs to a request", c.id);
        }
    }

    fn rows(k: u64) -> Vec<Tensor> {
        (0..k)
            .map(|i| Tensor::random(Shape::new(1, 2, 3, 3), i))
            .map(|t| {
                let mut t = t;
                t.as_mut_slice().iter_mut().for_each(|v| *v *= 10.0);
                t
            })
            .collect()
    }

    #[test]
    fn a_batch_comes_back_joined_in_row_order() {
        let m = model();
        let p = pipeline(&m);
        let adm = Admission::new(4);
        let router = Router::new();
        let feeder = Feeder::spawn(adm.clone(), p.admitter(), router.clone()).unwrap();
        let input = rows(3);
        let want: Vec<Tensor> = input
            .iter()
            .map(|x| m.forward(x, &mut Workspace::new()))
            .collect();
        let ticket = adm.submit(input, None).unwrap();
        route(&p, &router, 3);
        match ticket.wait() {
            Outcome::Done { outputs, .. } => assert_eq!(outputs, want),
            other => panic!("{other:?}"),
        }
        assert_eq!(router.in_flight(), 0);
        feeder.stop();
        assert_eq!(p.admitted(), 3);
        p.shutdown();
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_an_expired_request_never_runs() {
        let m = model();
        let p = pipeline(&m);
        let adm = Admission::new(2);
        let router = Router::new();
        // No feeder yet: the queue fills.
        let late = adm.submit(rows(2), Some(Instant::now())).unwrap();
        let ok = adm.submit(rows(1), None).unwrap();
        assert_eq!(adm.submit(rows(1), None).unwrap_err(), Refusal::QueueFull);
        assert_eq!(adm.pending(), 2);
        let feeder = Feeder::spawn(adm.clone(), p.admitter(), router.clone()).unwrap();
        assert!(matches!(
            late.wait(),
            Outcome::Refused(Refusal::DeadlineExceeded)
        ));
        route(&p, &router, 1);
        assert!(matches!(ok.wait(), Outcome::Done { ref outputs, .. } if outputs.len() == 1));
        feeder.stop();
        // The expired request's two rows were never admitted.
        assert_eq!(p.admitted(), 1);
        p.shutdown();
    }

    #[test]
    fn closing_refuses_new_requests_and_a_rebuild_keeps_the_queue() {
        let m = model();
        let old = pipeline(&m);
        let adm = Admission::new(8);
        let router = Router::new();
        // Queued while no pipeline is being fed (as during a rebuild)...
        let waiting = adm.submit(rows(2), None).unwrap();
        old.shutdown();
        // ...then served by the new one.
        let new = pipeline(&m);
        let feeder = Feeder::spawn(adm.clone(), new.admitter(), router.clone()).unwrap();
        route(&new, &router, 2);
        assert!(matches!(waiting.wait(), Outcome::Done { ref outputs, .. } if outputs.len() == 2));
        adm.close();
        assert_eq!(
            adm.submit(rows(1), None).unwrap_err(),
            Refusal::ShuttingDown
        );
        // A client that went away: its frames run, nobody is answered, nothing breaks.
        feeder.stop();
        let adm2 = Admission::new(2);
        let gone = adm2.submit(rows(1), None).unwrap();
        drop(gone);
        let feeder = Feeder::spawn(adm2.clone(), new.admitter(), router.clone()).unwrap();
        route(&new, &router, 1);
        feeder.stop();
        assert_eq!(adm2.refuse_queued(Refusal::ShuttingDown), 0);
        new.shutdown();
    }
}
