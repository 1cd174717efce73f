//! Tidewater's tools that are not the server: the load generator, the log workload
//! and checker used by `tidewater log` and by the crash test, and the reference
//! job's config shared by the demo, the benchmark and the tests. Nothing here runs
//! inside the server.

pub mod loadgen;
pub mod logtool;
pub mod ports;
pub mod reference;
