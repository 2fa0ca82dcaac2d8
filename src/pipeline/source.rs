//! Synthetic frame sources: closed loop (keep the pipeline full) and open
//! loop (Poisson arrivals at a given rate, the inference-service case).

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, bounded};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::Completed;
use super::runtime::{Admitter, Rejected};
use crate::engine::{Shape, Tensor};

/// How frames arrive.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Arrivals {
    /// A new frame as soon as there is room: maximum throughput.
    Closed,
    /// Poisson arrivals at `rate` frames per second; arrivals that find the
    /// admission queue full are rejected and counted.
    Open {
        /// Mean arrivals per second.
        rate: f64,
    },
}

/// The input of frame `id`: one of a few seeded random images, so a test
/// can recompute any frame's expected output.
#[allow(
    clippy::cast_possible_truncation,
    reason = "the remainder is below inputs.len()"
)]
pub fn synthetic_input(inputs: &[Tensor], id: u64) -> Tensor {
    inputs[(id % inputs.len() as u64) as usize].clone()
}

/// A running source thread.
pub struct Source {
    stop: Sender<()>,
    handle: JoinHandle<u64>,
}

impl Source {
    /// Starts feeding `admitter` with `inputs` (cycled by frame id).
    pub fn spawn(
        admitter: Admitter,
        load: Arrivals,
        inputs: Vec<Tensor>,
        seed: u64,
    ) -> std::io::Result<Self> {
        assert!(!inputs.is_empty(), "at least one input");
        let (stop, stopped) = bounded::<()>(1);
        let handle = std::thread::Builder::new()
            .name("odin-source".into())
            .spawn(move || {
                let mut offered = 0u64;
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let mut next = Instant::now();
                loop {
                    match load {
                        Arrivals::Closed => {
                            if stopped.try_recv().is_ok() || admitter.is_closing() {
                                break;
                            }
                            offered += 1;
                            if admitter.admit(|id| synthetic_input(&inputs, id))
                                == Err(Rejected::Closing)
                            {
                                break;
                            }
                        }
                        Arrivals::Open { rate } => {
                            // Exponential inter-arrival times; the stop channel doubles as the pacer.
                            let gap = -(1.0 - rng.random::<f64>()).ln() / rate;
                            next += Duration::from_secs_f64(gap);
                            if stopped.recv_deadline(next).is_ok() {
                                break;
                            }
                            offered += 1;
                            if admitter.try_admit(|id| synthetic_input(&inputs, id))
                                == Err(Rejected::Closing)
                            {
                                break;
                            }
                        }
                    }
                }
                offered
            })?;
        Ok(Self { stop, handle })
    }

    /// Stops the source and returns how many frames it offered.
    pub fn stop(self) -> u64 {
        let _ = self.stop.try_send(());
        self.handle.join().unwrap_or(0)
    }
}

/// What feeds a running pipeline its frames: the synthetic generator
/// ([`Synthetic`]) or the inference server's requests
/// (`server::admission::Requests`). The agent starts one per pipeline and
/// hands every completed frame back to it, never asking which it is.
pub trait FrameSource {
    /// Starts feeding frames of shape `input` through `admitter`.
    fn start(&self, admitter: Admitter, input: Shape) -> std::io::Result<Box<dyn Feed>>;
}

/// A running [`FrameSource`].
pub trait Feed: Send {
    /// Takes a completed frame back: true if someone was waiting for it (a
    /// request's row, now answered).
    fn complete(&self, c: &Completed) -> bool;
    /// Frames admitted that someone still waits for (requests with rows in
    /// the pipeline); synthetic frames are owed to no one.
    fn owed(&self) -> usize;
    /// Stops admitting frames; frames already admitted are not touched and
    /// can still be completed.
    fn stop(&mut self);
    /// The load, for the status lines.
    fn describe(&self) -> String;
}

/// Synthetic frames: a few seeded random inputs, arriving as `arrivals`.
#[derive(Clone, Copy, Debug)]
pub struct Synthetic {
    /// How they arrive.
    pub arrivals: Arrivals,
    /// Seeds the inputs and the arrival times.
    pub seed: u64,
}

impl Arrivals {
    /// How the status lines name it.
    pub fn describe(self) -> String {
        match self {
            Arrivals::Closed => "closed loop".to_string(),
            Arrivals::Open { rate } => format!("open loop at {rate} frames/s"),
        }
    }
}

impl FrameSource for Synthetic {
    fn start(&self, admitter: Admitter, input: Shape) -> std::io::Result<Box<dyn Feed>> {
        let inputs: Vec<Tensor> = (0..4).map(|i| Tensor::random(input, 100 + i)).collect();
        let source = Source::spawn(admitter, self.arrivals, inputs, self.seed)?;
        Ok(Box::new(SyntheticFeed {
            source: Some(source),
            arrivals: self.arrivals,
        }))
    }
}

/// [`Synthetic`] running.
struct SyntheticFeed {
    source: Option<Source>,
    arrivals: Arrivals,
}

impl Feed for SyntheticFeed {
    fn complete(&self, _: &Completed) -> bool {
        false
    }

    fn owed(&self) -> usize {
        0
    }

    fn stop(&mut self) {
        if let Some(s) = self.source.take() {
            s.stop();
        }
    }

    fn describe(&self) -> String {
        self.arrivals.describe()
    }
}

impl Drop for SyntheticFeed {
    fn drop(&mut self) {
        self.stop();
    }
}
