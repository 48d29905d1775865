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
    sessions: Sessions,
    /// Sessions authenticated by a token, by when it stops being accepted.
    pub(crate) expiries: crate::expiry::Expiries,
    next_connection_id: AtomicU64,
    /// The other nodes, when the store is shared by several (`None`: this node alone).
    pub(crate) cluster: Option<Arc<dyn crate::cluster::Cluster>>,
    /// Where clients reach this node (its answer to `Nodes` when alone).
    pub(crate) node: syncline_proto::NodeInfo,
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

/// The table of live sessions on every edge. Its lock is never held while a session
/// handle is dropped: dropping the last handle of a session unregisters it, which takes
/// the same lock (a session ending on its own while the server ends it, say by a key
/// revocation or its token's expiry, deadlocked every later login that way).
#[derive(Default)]
struct Sessions {
    table: Mutex<HashMap<u64, LiveSession>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, LiveSession>> {
        // The table is only ever inserted into and removed from; what it holds is whole
        // even if a holder panicked, and sessions must still end.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, id: u64, live: LiveSession) {
        self.lock().insert(id, live);
    }

    fn unregister(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// The live sessions for which `pred(id, session)` holds, with how to cut each
    /// off. The handles are taken under the lock and handed out after it is released.
    #[allow(clippy::type_complexity)]
    fn live(
        &self,
        pred: impl Fn(u64, &dyn Connection) -> bool,
    ) -> Vec<(Arc<dyn Connection>, Arc<dyn Fn(Ending) + Send + Sync>)> {
        let mut live = Vec::new();
        let mut rejected = Vec::new();
        {
            let table = self.lock();
            for (id, l) in table.iter() {
                let Some(session) = l.session.upgrade() else {
                    continue;
                };
                if pred(*id, &*session) {
                    live.push((session, l.force_close.clone()));
                } else {
                    rejected.push(session);
                }
            }
        }
        // Dropped here, unlocked: one may be its session's last handle.
        drop(rejected);
        live
    }
}

/// Asks `session` to end after what is queued for it, and cuts it off if it has not
/// within `CLOSE_GRACE`.
fn end(session: &dyn Connection, force_close: Arc<dyn Fn(Ending) + Send + Sync>, ending: Ending) {
    session.close_after_queued(ending);
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
        for (session, force_close) in self.sessions.live(|_, c| pred(c)) {
            end(&*session, force_close, ending);
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
                let ending = Ending {
                    code: ErrorCode::TokenExpired,
                    reason: "TokenExpired",
                };
                for (session, force_close) in self.sessions.live(|id, _| due.contains(&id)) {
                    tracing::info!("token expired; ending the session");
                    end(&*session, force_close, ending);
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
        self.sessions.register(id, live);
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.sessions.unregister(id);
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
        cluster: Option<Arc<dyn crate::cluster::Cluster>>,
        node: syncline_proto::NodeInfo,
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
            sessions: Sessions::default(),
            expiries: Default::default(),
            // Random per run: event origins outlive the run in the change log, and a
            // replayed event must not look local to an unrelated connection after a restart.
            // Below 2^52, so that ids stay exact as JavaScript numbers (JSON over the
            // WebSocket edge) for 2^52 connections of the run.
            next_connection_id: AtomicU64::new(rand::random::<u64>() >> 12 | 1),
            cluster,
            node,
        }
    }

    /// What the core has counted, with the gauges read now.
    pub(crate) fn metrics(&self) -> crate::metrics::Snapshot {
        let live = self.sessions.live(|_, _| true);
        let connections = live.len();
        let queued_events = live.iter().map(|(c, _)| c.queued_events()).sum();
        drop(live);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A session that, like `Session`, unregisters itself when its last handle drops.
    struct Unregistering {
        id: u64,
        table: Arc<Sessions>,
    }

    impl Connection for Unregistering {
        fn service_sid(&self) -> Option<String> {
            None
        }
        fn key_sid(&self) -> Option<String> {
            Some("SK1".into())
        }
        fn close_after_queued(&self, _: Ending) {}
        fn queued_events(&self) -> usize {
            0
        }
    }

    impl Drop for Unregistering {
        fn drop(&mut self) {
            self.table.unregister(self.id);
        }
    }

    #[test]
    fn a_session_whose_last_handle_drops_while_it_is_looked_up_unregisters_without_deadlock() {
        let table = Arc::new(Sessions::default());
        let session: Arc<dyn Connection> = Arc::new(Unregistering {
            id: 7,
            table: table.clone(),
        });
        table.register(
            7,
            LiveSession {
                session: Arc::downgrade(&session),
                force_close: Arc::new(|_| {}),
            },
        );
        let held = std::sync::Mutex::new(Some(session));
        let (done, finished) = std::sync::mpsc::channel();
        let looker = table.clone();
        std::thread::spawn(move || {
            // The session's own task lets go while the table looks at it, both when it
            // is picked and when it is passed over: the table's handle is the last.
            let picked = looker.live(|_, _| {
                held.lock().map(|mut h| h.take()).ok();
                true
            });
            drop(picked);
            let _ = done.send(looker.live(|_, _| true).len());
        });
        let after = finished
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("no deadlock: the lookup returned");
        assert_eq!(after, 0, "the session unregistered itself");
    }
}
