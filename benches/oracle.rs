//! Placeholder replaced by the oracle bench.
fn main() {}
