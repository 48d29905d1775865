//! A connection's event writer: the one place that decides what each subscription of the
//! connection receives next. It starts subscriptions (catch-up or snapshot), drops events
//! a subscription already has (by revision), resyncs subscriptions that lagged, and writes
//! everything pending on the connection's event stream in one go.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use syncline_proto::frame::encode_event;
use syncline_proto::{EventFrameHeader, WireError};
use tracing::{debug, error};

use crate::fanout::{
    catch_up, ended_event, CatchUp, Control, Delivery, Outbox, Queued, StartSubscription,
};
use crate::session::Session;
use crate::state::{Shared, CLOSE_GRACE};

struct Subscription {
    token: u64,
    service_sid: String,
    object_sid: String,
    window: u32,
    /// Revision the subscriber is known to have; later events only.
    delivered: u64,
}

struct Writer<'a> {
    shared: &'a Shared,
    session: &'a Session,
    subs: HashMap<u64, Subscription>,
    pending: Vec<Bytes>,
}

impl Writer<'_> {
    fn push(&mut self, sub_id: u64, body: Bytes) {
        let header = EventFrameHeader { sub_id }.encode(body.len());
        self.pending.push(Bytes::copy_from_slice(&header));
        self.pending.push(body);
    }

    /// Brings a subscription up to date from `since` (or from nothing).
    async fn start(
        &mut self,
        sub_id: u64,
        token: u64,
        service_sid: String,
        object_sid: String,
        since: Option<u64>,
        window: u32,
    ) {
        // Ended by an access change before it started (its end notice had nowhere to
        // go): say so instead of sending state the subscriber may no longer read.
        if !self.shared.hub.is_subscribed(token) {
            self.end(
                sub_id,
                &object_sid,
                WireError::new(syncline_proto::ErrorCode::Forbidden, "forbidden"),
            );
            return;
        }
        // Boxed: inline, the store reads' state would be part of the connection's
        // writer task for its whole life (its size is paid by every connection).
        let caught = Box::pin(catch_up(
            &*self.shared.store,
            &self.shared.hub,
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
                    self.push(sub_id, e.event);
                }
                revision
            }
            Ok(CatchUp::Snapshot { events, revision }) => {
                for event in &events {
                    self.push(sub_id, encode_event(event));
                }
                revision
            }
            Ok(CatchUp::Gone) => {
                self.end(sub_id, &object_sid, WireError::not_found("object"));
                return;
            }
            Err(e) => {
                error!(error = %e, sub_id, "catch-up read failed; ending subscription");
                self.end(sub_id, &object_sid, e.to_wire("storage read failed"));
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
        self.push(d.sub_id, d.event.body.clone());
    }

    fn end(&mut self, sub_id: u64, object_sid: &str, error: WireError) {
        self.subs.remove(&sub_id);
        self.session.forget_subscription(sub_id);
        self.push(sub_id, encode_event(&ended_event(object_sid, 0, error)));
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
        self.shared
            .metrics
            .resyncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.start(
            sub_id,
            s.token,
            s.service_sid,
            s.object_sid,
            Some(s.delivered),
            s.window,
        )
        .await;
    }
}

pub async fn run(
    conn: quinn::Connection,
    outbox: Arc<Outbox>,
    shared: Arc<Shared>,
    session: Arc<Session>,
) {
    let mut writer = Writer {
        shared: &shared,
        session: &session,
        subs: HashMap::new(),
        pending: Vec::new(),
    };
    let mut stream: Option<quinn::SendStream> = None;
    let mut close: Option<(u32, &'static str)> = None;
    let mut queued = Queued::default();
    loop {
        outbox.ready().await;
        outbox.take(&mut queued);
        for control in queued.control.drain(..) {
            match control {
                Control::Start(start) => {
                    let StartSubscription {
                        sub_id,
                        token,
                        service_sid,
                        object_sid,
                        since,
                        window,
                    } = *start;
                    writer
                        .start(sub_id, token, service_sid, object_sid, since, window)
                        .await;
                }
                Control::Stop { sub_id } => {
                    writer.subs.remove(&sub_id);
                }
                // Goes after this batch: what the hub queued before the close was asked
                // for goes out first, and subscriptions that overflowed the queue are
                // brought up to date (or told they ended) rather than left short.
                Control::Close { code, reason } => close = Some((code, reason)),
            }
        }
        for sub_id in queued.lagged.drain(..) {
            writer.resync(sub_id).await;
        }
        for d in queued.events.drain(..) {
            writer.accept(d);
        }
        if writer.pending.is_empty() {
            if let Some((code, reason)) = close {
                finish_and_close(&conn, stream.take(), code, reason).await;
                break;
            }
            continue;
        }
        if stream.is_none() {
            match conn.open_uni().await {
                Ok(s) => stream = Some(s),
                Err(e) => {
                    debug!(error = %e, "cannot open the event stream");
                    break;
                }
            }
        }
        if let Some(s) = stream.as_mut() {
            if let Err(e) = s.write_all_chunks(&mut writer.pending).await {
                debug!(error = %e, "event stream closed");
                break;
            }
        }
        writer.pending.clear();
        if let Some((code, reason)) = close {
            finish_and_close(&conn, stream.take(), code, reason).await;
            break;
        }
    }
}

/// Ends the event stream, waits (at most `CLOSE_GRACE`) until the client has all of
/// it, then closes the connection: closing discards data not yet acknowledged.
async fn finish_and_close(
    conn: &quinn::Connection,
    stream: Option<quinn::SendStream>,
    code: u32,
    reason: &'static str,
) {
    if let Some(mut s) = stream {
        if s.finish().is_ok() {
            let _ = tokio::time::timeout(CLOSE_GRACE, s.stopped()).await;
        }
    }
    conn.close(code.into(), reason.as_bytes());
}
