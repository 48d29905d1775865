//! The load harness behind `syncline-bench`: the systems under test behind one `Peer`
//! trait (Syncline, spawned or external, with QUIC or, `--ws`, WebSocket subscribers; bare quinn, `--peer quinn`, always built; with
//! the `etcd` and `redis` features, `--peer etcd` and `--peer redis`), one driver per
//! workload over any of them (W1..W3), the Syncline-only workloads (`chat`, `write
//! --http`, `presence`, the soak and the crash loop), and measurements read from `/proc`.

pub mod chat;
pub mod crash;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod follow;
pub mod http;
pub mod measure;
pub mod peer;
pub mod presence;
pub mod quinn;
#[cfg(feature = "redis")]
pub mod redis;
pub mod server;
pub mod soak;
pub mod syncline;
pub mod syncline_ws;
pub mod workloads;

/// Harness errors are reported to the user as text.
pub type Error = String;

pub fn err(e: impl std::fmt::Display) -> Error {
    e.to_string()
}
