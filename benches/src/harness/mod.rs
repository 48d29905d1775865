//! The load harness behind `syncline-bench`: a server under test (spawned or external),
//! measurements read from `/proc`, and the workloads users run; the crash loop
//! (`crash`); with the `etcd` feature, an etcd peer to compare against (`--peer etcd`).

pub mod crash;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod http;
pub mod measure;
pub mod server;
pub mod soak;
pub mod workloads;

/// Harness errors are reported to the user as text.
pub type Error = String;

pub fn err(e: impl std::fmt::Display) -> Error {
    e.to_string()
}
