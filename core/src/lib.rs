//! Syncline's product without IO: checked values and typed commands, objects and their
//! revisions, the ACL, tokens and keys, the commit task, the hub and its one watch path,
//! presence, webhooks (their scheduling), administration, and sessions for any
//! transport; the `Store` trait. The edges (QUIC, HTTP, WebSocket) live in the server
//! crate and only translate into these commands and render their answers and watches;
//! the store plugs in below through the trait. The map is in ARCHITECTURE.md.

pub mod acl;
pub mod admin;
pub mod auth;
pub mod batch;
pub mod cluster;
pub mod command;
pub mod commit;
mod departures;
pub mod engine;
mod expiry;
pub mod fanout;
mod follower;
mod handle;
pub mod metrics;
pub mod objects;
pub mod presence;
pub mod reaper;
pub mod session;
mod shared;
pub mod store;
pub mod values;
pub mod watch;
pub mod webhooks;

pub use fanout::Ending;
pub use handle::{Core, CoreOptions, CoreTasks};
pub use shared::{RateBucket, RateLimit, CLOSE_GRACE};

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

/// Twilio's `YYYY-MM-DDTHH:MM:SSZ` as text (REST fields, webhook parameters), `None`
/// past year 9999.
pub fn date_text(ms: u64) -> Option<String> {
    const LAST_RFC3339_MS: u64 = 253_402_300_799_999;
    if ms > LAST_RFC3339_MS {
        return None;
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    Some(humantime::format_rfc3339_seconds(t).to_string())
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub async fn shutdown_requested(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
