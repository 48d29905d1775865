//! What every HTTP request shares (`Http`: the core, the per-credential rate buckets,
//! the shutdown signal) and the limits on what a request may send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use syncline_core::{Core, RateBucket};
use tokio::sync::watch;

/// Largest request body read; a larger one is refused (413) before it is read whole.
/// Form encoding can triple a 16 KiB JSON payload.
pub const MAX_BODY_BYTES: usize = 128 * 1024;
/// A refused body is still read (and dropped, never kept) up to this many bytes, so that
/// a client that sends its whole body before reading the answer gets the 413 rather
/// than a reset connection; past it, the connection is closed.
pub const DISCARD_BODY_BYTES: usize = 4 * 1024 * 1024;
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Rate-limit buckets remembered (one per API key or token); past this they start over.
const MAX_BUCKETS: usize = 10_000;

/// What every HTTP request shares.
pub struct Http {
    pub core: Core,
    /// `https://host:port` of this listener, for URLs when a request names no Host.
    pub default_base: String,
    buckets: Mutex<HashMap<String, Arc<RateBucket>>>,
    /// Long-lived answers (server-sent events, WebSockets) end when this turns true.
    pub shutdown: watch::Receiver<bool>,
    /// A WebSocket peer silent this long is dropped (the QUIC idle timeout).
    pub idle_timeout: Duration,
}

impl Http {
    pub fn new(
        core: Core,
        default_base: String,
        shutdown: watch::Receiver<bool>,
        idle_timeout: Duration,
    ) -> Self {
        Http {
            core,
            default_base,
            buckets: Mutex::new(HashMap::new()),
            shutdown,
            idle_timeout,
        }
    }

    /// The request-rate bucket of one credential (an API key sid, or a token).
    pub fn bucket(&self, who: &str) -> Arc<RateBucket> {
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(who) {
            buckets.clear();
        }
        buckets
            .entry(who.to_owned())
            .or_insert_with(|| Arc::new(RateBucket::new(self.core.rate())))
            .clone()
    }
}
