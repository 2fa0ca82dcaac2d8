//! Frames: one image travelling through the pipeline.

use std::time::{Duration, Instant};

use crate::engine::Tensor;

/// One image in flight. `cursor` is the index of the next unit to run: a
/// stage runs units from the cursor up to its current end cut, so moving a
/// cut never loses or repeats a unit of a frame already in flight.
#[derive(Debug)]
pub struct Frame {
    /// Admission order, from 0.
    pub id: u64,
    /// Next unit to run.
    pub cursor: usize,
    /// The activation after unit `cursor - 1` (the input when 0).
    pub tensor: Tensor,
    /// When the frame was admitted.
    pub admitted: Instant,
    /// When the frame entered the queue it is in.
    pub enqueued: Instant,
    /// Time spent running units, per stage.
    pub service: Vec<Duration>,
    /// Time spent waiting in each stage's input queue.
    pub wait: Vec<Duration>,
}

impl Frame {
    /// A frame about to enter a pipeline of `stages` stages.
    pub fn new(id: u64, tensor: Tensor, stages: usize) -> Self {
        let now = Instant::now();
        Self {
            id,
            cursor: 0,
            tensor,
            admitted: now,
            enqueued: now,
            service: vec![Duration::ZERO; stages],
            wait: vec![Duration::ZERO; stages],
        }
    }
}

/// A frame that has run every unit.
#[derive(Debug)]
pub struct Completed {
    /// Admission order.
    pub id: u64,
    /// The model's output.
    pub output: Tensor,
    /// Admission to completion.
    pub latency: Duration,
    /// When it completed.
    pub at: Instant,
    /// Time spent running units, per stage.
    pub service: Vec<Duration>,
    /// Time spent waiting in each stage's input queue.
    pub wait: Vec<Duration>,
}
