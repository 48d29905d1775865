//! The load harness behind `syncline-bench`: a server under test (spawned or external),
//! measurements read from `/proc`, and the workloads users run;
//! with the `etcd` feature, an etcd peer to compare against (`--peer etcd`).

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod measure;
pub mod server;
pub mod workloads;
