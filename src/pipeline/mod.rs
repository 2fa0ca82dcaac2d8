//! The pipeline runtime: stages pinned to processing elements, bounded
//! queues, live repartition.

pub mod affinity;
pub mod frame;
pub mod histogram;
pub mod partition;
pub mod recorder;
pub mod runtime;
mod shared;
pub mod source;
mod stage;

pub use frame::{Completed, Frame};
pub use partition::{Partition, PartitionError};
pub use runtime::{Admitter, Pipeline, PipelineConfig, PipelineError, Rejected, StageStats};
