//! The load harness behind `syncline-bench`: a server under test (spawned or external),
//! measurements read from `/proc`, and the workloads users run.

pub mod measure;
pub mod server;
pub mod workloads;
