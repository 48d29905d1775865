//! The core's private state, shared by every session: the store, the commit task, the
//! event hub, limits, the installation, and the table of live sessions on every edge
//! (so revoking a key, deleting a service or a token's expiry can end them). Also the
//! request rate limit, one rule for every edge.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use syncline_proto::{ErrorCode, Limits, WireError};

use crate::commit::Committer;
use crate::fanout::{Ending, Hub};
use crate::store::{Installation, Store};

/// The core's state, private to the crate: edges reach it only through `Core` and
/// `Session`.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) committer: Committer,
    pub(crate) hub: Arc<Hub>,
    /// Who is connected (ephemeral items, reachability).
    pub(crate) presence: Arc<crate::presence::Presence>,
    pub(crate) limits: Limits,
    pub(crate) installation: Installation,
    pub(crate) rate: RateLimit,
    pub(crate) metrics: crate::metrics::Metrics,
    /// Webhook delivery (Twilio's Sync webhooks), for reachability and stream messages.
    pub(crate) webhooks: crate::webhooks::Webhooks,
    /// Live sessions on every edge, so that revoking a key, deleting a service or a
    /// token's expiry can end them.
    sessions: Mutex<HashMap<u64, LiveSession>>,
    /// Sessions authenticated by a token, by when it stops being accepted.
    pub(crate) expiries: crate::expiry::Expiries,
    next_connection_id: AtomicU64,
}

/// A live session as the rest of the core reaches it: who it is, and how to end it.
pub(crate) struct LiveSession {
    pub(crate) session: std::sync::Weak<dyn Connection>,
    /// Ends it at once, whatever is still queued (its edge's doing).
    pub(crate) force_close: Arc<dyn Fn(Ending) + Send + Sync>,
}

/// What administration needs of a live session: whose it is, and a way to end it after
/// what was queued for it is delivered.
pub(crate) trait Connection: Send + Sync {
    /// The service it acts in, once authenticated.
    fn service_sid(&self) -> Option<String>;
    /// The API key behind it (directly, or as its token's signer), once authenticated.
    fn key_sid(&self) -> Option<String>;
    /// Asks its watch to deliver what is queued, then end with `ending`.
    fn close_after_queued(&self, ending: Ending);
    /// Events queued for it and not yet written.
    fn queued_events(&self) -> usize;
}

/// Asks `session` to end after what is queued for it, and cuts it off if it has not
/// within `CLOSE_GRACE`.
fn end(live: &LiveSession, session: &dyn Connection, ending: Ending) {
    session.close_after_queued(ending);
    let force_close = live.force_close.clone();
    tokio::spawn(async move {
        tokio::time::sleep(CLOSE_GRACE).await;
        force_close(ending);
    });
}

/// The longest a session being ended by the server waits for the events already
/// queued for it to be delivered.
pub const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

impl Shared {
    /// Ends every live session that matches `pred`, after the events already queued for
    /// it have been delivered: ending at once would discard them, and a deleted
    /// service's subscribers must hear `object_removed` first. A client that does not
    /// take them in `CLOSE_GRACE` is cut off anyway. Requests are refused meanwhile by
    /// the per-request service and key checks.
    pub(crate) fn end_sessions(&self, pred: impl Fn(&dyn Connection) -> bool, ending: Ending) {
        let sessions = match self.sessions.lock() {
            Ok(s) => s,
            // The table is only ever inserted into and removed from; what it holds is
            // whole even if a holder panicked, and these sessions must still end.
            Err(poisoned) => poisoned.into_inner(),
        };
        for live in sessions.values() {
            if let Some(session) = live.session.upgrade().filter(|c| pred(&**c)) {
                end(live, &*session, ending);
            }
        }
    }

    /// Ends the sessions whose tokens are no longer accepted, as the clock passes each
    /// one's last second (`expiry.rs`), until `shutdown`.
    pub(crate) async fn expire_sessions(
        self: std::sync::Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            // Registered before looking, so an earlier entry added meanwhile wakes it.
            let earlier = self.expiries.earlier.notified();
            tokio::pin!(earlier);
            earlier.as_mut().enable();
            let now = std::time::SystemTime::now();
            let (due, next) = self.expiries.take_due(now);
            if !due.is_empty() {
                let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
                for id in due {
                    let Some(live) = sessions.get(&id) else {
                        continue;
                    };
                    if let Some(session) = live.session.upgrade() {
                        tracing::info!(session = id, "token expired; ending the session");
                        let ending = Ending {
                            code: ErrorCode::TokenExpired,
                            reason: "TokenExpired",
                        };
                        end(live, &*session, ending);
                    }
                }
            }
            let wait = next.map_or(std::time::Duration::from_secs(3600), |v| {
                crate::auth::time_to_expiry(v, now)
            });
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = earlier => {}
                _ = crate::shutdown_requested(&mut shutdown) => return,
            }
        }
    }

    pub(crate) fn register(&self, id: u64, live: LiveSession) {
        if let Ok(mut all) = self.sessions.lock() {
            all.insert(id, live);
        }
    }

    pub(crate) fn unregister(&self, id: u64) {
        if let Ok(mut all) = self.sessions.lock() {
            all.remove(&id);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: Arc<dyn Store>,
        committer: Committer,
        hub: Arc<Hub>,
        limits: Limits,
        installation: Installation,
        rate: RateLimit,
        webhooks: crate::webhooks::Webhooks,
    ) -> Self {
        Shared {
            store,
            presence: committer.presence().clone(),
            committer,
            hub,
            limits,
            installation,
            rate,
            metrics: Default::default(),
            webhooks,
            sessions: Mutex::new(HashMap::new()),
            expiries: Default::default(),
            // Random per run: event origins outlive the run in the change log, and a
            // replayed event must not look local to an unrelated connection after a restart.
            // Below 2^52, so that ids stay exact as JavaScript numbers (JSON over the
            // WebSocket edge) for 2^52 connections of the run.
            next_connection_id: AtomicU64::new(rand::random::<u64>() >> 12 | 1),
        }
    }

    /// What the core has counted, with the gauges read now.
    pub(crate) fn metrics(&self) -> crate::metrics::Snapshot {
        let (connections, queued_events) = match self.sessions.lock() {
            Ok(c) => (
                c.len(),
                c.values()
                    .filter_map(|l| l.session.upgrade())
                    .map(|c| c.queued_events())
                    .sum(),
            ),
            Err(_) => (0, 0),
        };
        let gauges = crate::metrics::Gauges {
            connections,
            subscriptions: self.hub.subscription_count(),
            queued_events,
            present: self.presence.counts(),
        };
        self.metrics.snapshot(gauges, self.committer.commit_stats())
    }

    /// A fresh connection id: unique in this run, and not reused from an earlier one.
    pub(crate) fn new_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Upstream request rate per connection: a token bucket.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: 500.0,
            burst: 1000.0,
        }
    }
}

/// One client's token bucket (a connection's, on QUIC): `take` one token per request.
pub struct RateBucket {
    state: Mutex<(f64, Instant)>,
}

impl RateBucket {
    pub fn new(rate: RateLimit) -> Self {
        RateBucket {
            state: Mutex::new((rate.burst, Instant::now())),
        }
    }

    /// Takes one token, or refuses with `RateLimited`. Fails closed: a bucket whose lock
    /// was poisoned refuses rather than letting everything through.
    pub fn take(&self, rate: RateLimit) -> Result<(), WireError> {
        let limited = || {
            WireError::new(
                ErrorCode::RateLimited,
                "too many requests on this connection; slow down",
            )
        };
        let Ok(mut state) = self.state.lock() else {
            tracing::error!("rate-limit state poisoned; refusing requests");
            return Err(limited());
        };
        let (tokens, at) = &mut *state;
        let now = Instant::now();
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * rate.per_second).min(rate.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(limited())
        }
    }
}
