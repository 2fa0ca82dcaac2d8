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
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, select};
use tokio::sync::oneshot;

use crate::engine::{Shape, Tensor};
use crate::pipeline::Completed;
use crate::pipeline::runtime::{Admitter, Rejected};
use crate::pipeline::source::{Feed, FrameSource};

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
    /// The model was replaced by one with another input while the request
    /// waited.
    #[error(
        "the model was reloaded with a different input while the request waited; send it again"
    )]
    ModelChanged,
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

/// A queued request's state, shared by its ticket and the feeder: whoever
/// moves it out of `QUEUED` first decides its fate.
const QUEUED: u8 = 0;
/// The feeder took it: its frames run and the router answers.
const TAKEN: u8 = 1;
/// Its deadline passed in the queue: the ticket answered, no frame runs.
const EXPIRED: u8 = 2;

/// Where a request's outcome arrives.
#[derive(Debug)]
pub struct Ticket {
    rx: oneshot::Receiver<Outcome>,
    state: Arc<AtomicU8>,
    deadline: Option<Instant>,
}

impl Ticket {
    /// Waits for the outcome on a thread outside any async runtime. The
    /// deadline is enforced when the feeder reaches the request.
    pub fn wait(self) -> Outcome {
        self.rx
            .blocking_recv()
            .unwrap_or(Outcome::Refused(Refusal::ShuttingDown))
    }

    /// Waits for the outcome. A deadline that passes while the request is
    /// still queued answers [`Refusal::DeadlineExceeded`] at once, and its
    /// frames never run; once its frames run it is waited for.
    pub async fn outcome(mut self) -> Outcome {
        let gone = || Outcome::Refused(Refusal::ShuttingDown);
        let Some(deadline) = self.deadline else {
            return self.rx.await.unwrap_or_else(|_| gone());
        };
        match tokio::time::timeout_at(deadline.into(), &mut self.rx).await {
            Ok(r) => r.unwrap_or_else(|_| gone()),
            Err(_) => {
                if self
                    .state
                    .compare_exchange(QUEUED, EXPIRED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    Outcome::Refused(Refusal::DeadlineExceeded)
                } else {
                    self.rx.await.unwrap_or_else(|_| gone())
                }
            }
        }
    }
}

/// A request waiting for the pipeline.
struct Queued {
    rows: Vec<Tensor>,
    arrived: Instant,
    deadline: Option<Instant>,
    state: Arc<AtomicU8>,
    reply: oneshot::Sender<Outcome>,
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
        let (reply, rx) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(QUEUED));
        let q = Queued {
            rows,
            arrived: Instant::now(),
            deadline,
            state: state.clone(),
            reply,
        };
        match self.tx.try_send(q) {
            Ok(()) => Ok(Ticket {
                rx,
                state,
                deadline,
            }),
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
            if take(&q.state) {
                let _ = q.reply.send(Outcome::Refused(why.clone()));
                n += 1;
            }
        }
        n
    }
}

/// Moves a queued request to `TAKEN`; false when its ticket already
/// answered it (deadline passed).
fn take(state: &AtomicU8) -> bool {
    state
        .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

/// A request whose rows are in the pipeline.
struct InFlight {
    outputs: Mutex<Vec<Option<Tensor>>>,
    remaining: AtomicUsize,
    arrived: Instant,
    admitted: Instant,
    reply: Mutex<Option<oneshot::Sender<Outcome>>>,
}

impl InFlight {
    fn answer(&self, outcome: Outcome) {
        if let Some(tx) = self.reply.lock().expect("request lock").take() {
            // A client that has gone costs nothing more.
            let _ = tx.send(outcome);
        }
    }
}

/// Frame ids of admitted rows, to their request.
#[derive(Default)]
pub struct Router {
    frames: Mutex<HashMap<u64, (Arc<InFlight>, usize)>>,
    requests: AtomicUsize,
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
            self.requests.fetch_sub(1, Ordering::AcqRel);
            req.answer(Outcome::Done {
                outputs,
                queue: req.admitted - req.arrived,
                compute: c.at.saturating_duration_since(req.admitted),
            });
        }
        true
    }

    /// Rows in the pipeline.
    pub fn in_flight(&self) -> usize {
        self.frames.lock().expect("router lock").len()
    }

    /// Requests with rows in the pipeline.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Acquire)
    }
}

/// The inference server's requests as a pipeline's frames: a [`Feeder`]
/// moves them in and a [`Router`] answers each from its completed rows.
pub struct Requests {
    /// Where the server queues them.
    pub admission: Arc<Admission>,
}

impl FrameSource for Requests {
    fn start(&self, admitter: Admitter, input: Shape) -> std::io::Result<Box<dyn Feed>> {
        let router = Router::new();
        let feeder = Feeder::spawn(self.admission.clone(), admitter, input, router.clone())?;
        Ok(Box::new(RequestFeed {
            feeder: Some(feeder),
            router,
        }))
    }
}

/// [`Requests`] running.
struct RequestFeed {
    feeder: Option<Feeder>,
    router: Arc<Router>,
}

impl Feed for RequestFeed {
    fn complete(&self, c: &Completed) -> bool {
        self.router.complete(c)
    }

    fn owed(&self) -> usize {
        self.router.requests()
    }

    fn stop(&mut self) {
        // Requests still queued stay queued, for the next pipeline or the
        // stop's refusal.
        if let Some(f) = self.feeder.take() {
            f.stop();
        }
    }

    fn describe(&self) -> String {
        "requests as the load".to_string()
    }
}

/// The thread that moves queued requests into one pipeline.
pub struct Feeder {
    stop: Sender<()>,
    handle: Option<JoinHandle<()>>,
}

impl Feeder {
    /// Feeds `admission`'s requests through `admitter` into a pipeline
    /// whose model takes `input`, registering every frame with `router`.
    pub fn spawn(
        admission: Arc<Admission>,
        admitter: Admitter,
        input: Shape,
        router: Arc<Router>,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = bounded::<()>(1);
        let handle = std::thread::Builder::new()
            .name("odin-feeder".into())
            .spawn(move || feed(&admission, &admitter, input, &router, &stopped))?;
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

fn feed(
    admission: &Admission,
    admitter: &Admitter,
    input: Shape,
    router: &Router,
    stopped: &Receiver<()>,
) {
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
        if !take(&q.state) || q.reply.is_closed() {
            // Expired and answered by its ticket, or its client has gone:
            // none of its frames runs.
            continue;
        }
        if q.deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = q.reply.send(Outcome::Refused(Refusal::DeadlineExceeded));
            continue;
        }
        if q.rows.iter().any(|r| r.shape() != input) {
            let _ = q.reply.send(Outcome::Refused(Refusal::ModelChanged));
            continue;
        }
        let rows = q.rows.len();
        let req = Arc::new(InFlight {
            outputs: Mutex::new(vec![None; rows]),
            remaining: AtomicUsize::new(rows),
            arrived: q.arrived,
            admitted: Instant::now(),
            reply: Mutex::new(Some(q.reply)),
        });
        router.requests.fetch_add(1, Ordering::AcqRel);
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
                router.requests.fetch_sub(1, Ordering::AcqRel);
                req.answer(Outcome::Refused(Refusal::ShuttingDown));
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
        let feeder = Feeder::spawn(adm.clone(), p.admitter(), m.input(), router.clone()).unwrap();
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
        let feeder = Feeder::spawn(adm.clone(), p.admitter(), m.input(), router.clone()).unwrap();
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

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn a_deadline_passing_in_the_queue_answers_at_once_and_its_frames_never_run() {
        let m = model();
        let p = pipeline(&m);
        let adm = Admission::new(4);
        let router = Router::new();
        // No feeder: the request waits past its deadline.
        let t = adm
            .submit(rows(2), Some(Instant::now() + Duration::from_millis(20)))
            .unwrap();
        let outcome = runtime().block_on(t.outcome());
        assert!(matches!(
            outcome,
            Outcome::Refused(Refusal::DeadlineExceeded)
        ));
        // A feeder reaching it later skips it; the next one runs.
        let ok = adm.submit(rows(1), None).unwrap();
        let feeder = Feeder::spawn(adm.clone(), p.admitter(), m.input(), router.clone()).unwrap();
        route(&p, &router, 1);
        assert!(matches!(ok.wait(), Outcome::Done { .. }));
        feeder.stop();
        assert_eq!(p.admitted(), 1, "the expired request's rows never ran");
        assert_eq!(router.requests(), 0);
        p.shutdown();
    }

    #[test]
    fn a_request_for_another_input_shape_is_refused_not_run() {
        let m = model();
        let p = pipeline(&m);
        let adm = Admission::new(4);
        let router = Router::new();
        let other = vec![Tensor::random(Shape::new(1, 2, 4, 4), 1)];
        let t = adm.submit(other, None).unwrap();
        let feeder = Feeder::spawn(adm.clone(), p.admitter(), m.input(), router.clone()).unwrap();
        assert!(matches!(t.wait(), Outcome::Refused(Refusal::ModelChanged)));
        feeder.stop();
        assert_eq!(p.admitted(), 0);
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
        let feeder = Feeder::spawn(adm.clone(), new.admitter(), m.input(), router.clone()).unwrap();
        route(&new, &router, 2);
        assert!(matches!(waiting.wait(), Outcome::Done { ref outputs, .. } if outputs.len() == 2));
        adm.close();
        assert_eq!(
            adm.submit(rows(1), None).unwrap_err(),
            Refusal::ShuttingDown
        );
        // A client that went away before its request started: none of its
        // frames runs; the next request is served as usual.
        feeder.stop();
        let adm2 = Admission::new(2);
        let gone = adm2.submit(rows(1), None).unwrap();
        drop(gone);
        let kept = adm2.submit(rows(2), None).unwrap();
        let before = new.admitted();
        let feeder =
            Feeder::spawn(adm2.clone(), new.admitter(), m.input(), router.clone()).unwrap();
        route(&new, &router, 2);
        assert!(matches!(kept.wait(), Outcome::Done { ref outputs, .. } if outputs.len() == 2));
        assert_eq!(
            new.admitted() - before,
            2,
            "only the kept request's rows ran"
        );
        feeder.stop();
        assert_eq!(adm2.refuse_queued(Refusal::ShuttingDown), 0);
        new.shutdown();
    }
}
