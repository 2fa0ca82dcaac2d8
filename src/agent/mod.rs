//! The agent as a service: configuration, the control loop, signals,
//! systemd notification, metrics.

pub mod config;
pub mod cpuset;
pub mod daemon;
pub mod http;
pub mod lock;
pub mod metrics;
pub mod notify;
pub mod signals;
