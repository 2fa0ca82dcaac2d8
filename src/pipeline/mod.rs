//! The pipeline runtime: stages pinned to processing elements.

pub mod affinity;
