//! The agent as a service: configuration, the control loop, signals,
//! systemd notification, metrics.

pub mod config;
pub mod cpuset;
pub mod daemon;
mod engine;
pub mod http;
pub mod lock;
mod logging;
pub mod metrics;
pub mod notify;
mod options;
mod reload;
mod report;
mod serving;
pub mod signals;
mod tick;
