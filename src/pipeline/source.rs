//! Synthetic frame sources: closed loop (keep the pipeline full) and open
//! loop (Poisson arrivals at a given rate, the inference-service case).

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, bounded};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::runtime::{Admitter, Rejected};
use crate::engine::Tensor;

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
