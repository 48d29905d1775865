//! The load harness behind `syncline-bench`: a server under test (spawned or external),
//! measurements read from `/proc`, and the workloads users run; the crash loop
//! (`crash`); peers to compare against: bare quinn (`--peer quinn`, always built) and,
//! with the `etcd` and `redis` features, `--peer etcd` and `--peer redis`.

pub mod crash;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod http;
pub mod measure;
pub mod quinn;
#[cfg(feature = "redis")]
pub mod redis;
pub mod server;
pub mod soak;
pub mod workloads;

/// Harness errors are reported to the user as text.
pub type Error = String;

pub fn err(e: impl std::fmt::Display) -> Error {
    e.to_string()
}
