//! Tidewater's tools that are not the server: for now the log workload and checker
//! used by `tidewater log` and by the crash test. (The load generator and the backlog
//! test join here.) Nothing here runs inside the server.

pub mod loadgen;
pub mod logtool;
