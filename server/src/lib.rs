//! Syncline server: a QUIC endpoint in front of durable, revisioned Documents (and, as
//! they land, Lists, Maps and Streams), with JWT access, per-identity ACLs and streamed
//! deltas. The map of the code is in ARCHITECTURE.md; in one line, a write enters in
//! `net`, is checked in `session` (`auth`, `acl`), applied by `objects` through `commit`
//! to `store`, and its event leaves through `fanout`.

pub mod acl;
pub mod admin;
pub mod auth;
pub mod batch;
pub mod command;
pub mod commit;
pub mod config;
pub mod engine;
pub mod fanout;
pub mod http;
pub mod metrics;
pub mod net;
pub mod objects;
pub mod presence;
pub mod reaper;
pub mod server;
pub mod session;
pub mod state;
pub mod store;
pub mod webhooks;

pub use server::{Server, ServerError, ServerOptions};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seconds since the Unix epoch.
pub fn now_s() -> u64 {
    now_ms() / 1000
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub(crate) async fn shutdown_requested(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
