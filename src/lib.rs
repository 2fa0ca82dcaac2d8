//! odin keeps a CNN inference pipeline fast while other programs share its
//! machine.
//!
//! The network runs as a pipeline of stages (contiguous groups of
//! [`engine::Unit`]s), each stage a thread pinned to a processing element.

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::cast_possible_truncation))]
#![warn(clippy::tests_outside_test_module)]

pub mod agent;
pub mod cgroup;
pub mod cpulist;
pub mod engine;
pub mod monitor;
pub mod pipeline;
pub mod plot;
pub mod policy;
pub mod server;
pub mod sim;
pub mod stats;
pub mod thread;
pub mod topology;
pub mod trust;
