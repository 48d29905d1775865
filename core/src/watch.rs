//! The one watch path, for every edge: a session's watch decides what each of its
//! subscriptions receives next. It starts subscriptions (catch-up from the change log or
//! a snapshot), drops events a subscription already has (by revision), resyncs
//! subscriptions that lagged, ends the session when the core says so (key revoked,
//! service deleted) or when its token expires, and hands everything pending to the
//! edge's sink in one go. Edges only render: QUIC writes the encoded events as frames on
//! its event stream, SSE turns them into `text/event-stream` messages.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use syncline_proto::{ErrorCode, WireError};
use tracing::{debug, error, info};

use crate::fanout::Ending;
use crate::fanout::{catch_up, ended_event, CatchUp, Control, Delivery, Queued, StartSubscription};
use crate::session::Session;

/// An event ready for the edge: the subscription it is for, and the event as the
/// server's encoder made it (once, shared with every other subscriber).
pub type Pending = (u64, Bytes);

/// Where a session's watch delivers: the edge's rendering of events.
#[async_trait::async_trait]
pub trait WatchSink: Send {
    /// Writes `events` in order. `Err`: the peer is gone, and the watch stops.
    async fn write(&mut self, events: &mut Vec<Pending>) -> Result<(), ()>;
    /// Ends the session's transport after what was written: the watch is over.
    async fn close(&mut self, ending: Ending);
    /// Called after `IDLE` with nothing to write (SSE's keep-alive); `Err`: gone.
    async fn idle(&mut self) -> Result<(), ()> {
        Ok(())
    }
}

/// How long a watch waits with nothing to deliver before calling `WatchSink::idle`.
pub const IDLE: Duration = Duration::from_secs(15);

struct Subscription {
    token: u64,
    service_sid: String,
    object_sid: String,
    window: u32,
    /// Revision the subscriber is known to have; later events only.
    delivered: u64,
}

struct Writer<'a> {
    session: &'a Session,
    subs: HashMap<u64, Subscription>,
    pending: Vec<Pending>,
}

impl Writer<'_> {
    /// Brings a subscription up to date from `since` (or from nothing).
    async fn start(&mut self, start: StartSubscription) {
        let StartSubscription {
            sub_id,
            token,
            service_sid,
            object_sid,
            since,
            window,
        } = start;
        let shared = self.session.shared();
        // Ended by an access change before it started (its end notice had nowhere to
        // go): say so instead of sending state the subscriber may no longer read.
        if !shared.hub.is_subscribed(token) {
            self.end(
                sub_id,
                &object_sid,
                WireError::new(ErrorCode::Forbidden, "forbidden"),
            );
            return;
        }
        // Boxed: inline, the store reads' state would be part of the watch's task for
        // its whole life (its size is paid by every connection).
        let caught = Box::pin(catch_up(
            &*shared.store,
            &shared.hub,
            &service_sid,
            &object_sid,
            since,
            window,
            crate::now_ms(),
        ))
        .await;
        let delivered = match caught {
            Ok(CatchUp::Replay { events, revision }) => {
                for e in events {
                    self.pending.push((sub_id, e.event));
                }
                revision
            }
            Ok(CatchUp::Snapshot { events, revision }) => {
                for event in &events {
                    self.pending.push((sub_id, shared.hub.encode(event)));
                }
                revision
            }
            Ok(CatchUp::Gone) => {
                self.end(sub_id, &object_sid, WireError::not_found("object"));
                return;
            }
            Err(e) => {
                error!(error = %e, sub_id, "catch-up read failed; ending subscription");
                self.end(sub_id, &object_sid, e.client_error("storage read failed"));
                return;
            }
        };
        self.subs.insert(
            sub_id,
            Subscription {
                token,
                service_sid,
                object_sid,
                window,
                delivered,
            },
        );
    }

    /// Queues a delivery from the hub, unless its subscription already has it (or has
    /// not started: it will start from a state that includes it).
    fn accept(&mut self, d: Delivery) {
        let Some(s) = self.subs.get_mut(&d.sub_id).filter(|s| s.token == d.token) else {
            return;
        };
        if let Some(revision) = d.event.revision {
            if revision <= s.delivered {
                return;
            }
            s.delivered = revision;
        }
        if d.event.ends {
            self.subs.remove(&d.sub_id);
            self.session.forget_subscription(d.sub_id);
        }
        self.pending.push((d.sub_id, d.event.body.clone()));
    }

    fn end(&mut self, sub_id: u64, object_sid: &str, error: WireError) {
        self.subs.remove(&sub_id);
        self.session.forget_subscription(sub_id);
        let event = ended_event(object_sid, 0, error);
        self.pending
            .push((sub_id, self.session.shared().hub.encode(&event)));
    }

    async fn resync(&mut self, sub_id: u64) {
        let Some(s) = self.subs.remove(&sub_id) else {
            return;
        };
        debug!(
            sub_id,
            from = s.delivered,
            "resyncing a lagged subscription"
        );
        self.session
            .shared()
            .metrics
            .resyncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.start(StartSubscription {
            sub_id,
            token: s.token,
            service_sid: s.service_sid,
            object_sid: s.object_sid,
            since: Some(s.delivered),
            window: s.window,
        })
        .await;
    }
}

/// Runs the session's watch until the session ends (told to by the core, or its token
/// expired: then `sink.close`) or the sink's peer is gone.
pub async fn run(session: Arc<Session>, sink: &mut dyn WatchSink) {
    let outbox = session.outbox.clone();
    let mut expiry = session.token_expiry();
    let mut writer = Writer {
        session: &session,
        subs: HashMap::new(),
        pending: Vec::new(),
    };
    let mut close: Option<Ending> = None;
    let mut queued = Queued::default();
    loop {
        // The last second the token is accepted; the session ends when the wall clock
        // passes it, the instant `auth::verify_token` starts refusing the token.
        let valid_until = *expiry.borrow_and_update();
        let expired = async move {
            let Some(valid_until) = valid_until else {
                return std::future::pending().await;
            };
            loop {
                let left = crate::auth::time_to_expiry(valid_until, std::time::SystemTime::now());
                if left.is_zero() {
                    return;
                }
                tokio::time::sleep(left).await;
            }
        };
        tokio::select! {
            _ = outbox.ready() => {}
            _ = expired => {
                info!("token expired; ending the session");
                sink.close(Ending { code: ErrorCode::TokenExpired, reason: "TokenExpired" }).await;
                return;
            }
            changed = expiry.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            _ = tokio::time::sleep(IDLE) => {
                if sink.idle().await.is_err() {
                    return;
                }
                continue;
            }
        }
        outbox.take(&mut queued);
        for control in queued.control.drain(..) {
            match control {
                Control::Start(start) => writer.start(*start).await,
                Control::Stop { sub_id } => {
                    writer.subs.remove(&sub_id);
                }
                // Goes after this batch: what the hub queued before the end was asked
                // for goes out first, and subscriptions that overflowed the queue are
                // brought up to date (or told they ended) rather than left short.
                Control::Close(ending) => close = Some(ending),
            }
        }
        for sub_id in queued.lagged.drain(..) {
            writer.resync(sub_id).await;
        }
        for d in queued.events.drain(..) {
            writer.accept(d);
        }
        if !writer.pending.is_empty() {
            if sink.write(&mut writer.pending).await.is_err() {
                debug!("watch sink closed");
                return;
            }
            writer.pending.clear();
        }
        if let Some(ending) = close {
            sink.close(ending).await;
            return;
        }
    }
}
