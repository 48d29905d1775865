//! Server-sent events for backends that watch over plain HTTP:
//! `GET /v1/Services/{S}/{Documents|Lists|Maps}/{O}/Events?since=REV` streams an
//! object's changes as `text/event-stream`, with the same resume-or-snapshot rule as a
//! QUIC subscription (what was missed since `since`, or `Last-Event-ID`, replayed from
//! the change log; else a snapshot first) and the same hub: registered before catching
//! up so nothing falls between, a bounded queue, a resync when it overflows, and an end
//! when the object goes or read access is revoked.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use bytes::Bytes;
use serde_json::{json, Value};
use syncline_proto::{Event, EventKind, ItemInfo, ItemKey, ObjectState};
use tokio::sync::mpsc;
use tracing::debug;

use crate::fanout::{catch_up, CatchUp, Outbox, Queued, Subscriber};
use crate::state::Shared;

/// A comment line sent when nothing else was, so a dead client is noticed and proxies
/// keep the stream open.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Newest list items a snapshot carries (as a QUIC subscription's default window).
const WINDOW: u32 = syncline_proto::limits::DEFAULT_LIST_WINDOW;

fn item_json(i: &ItemInfo) -> Value {
    let mut v = json!({
        "revision": i.revision,
        "data": serde_json::from_str::<Value>(&i.data).unwrap_or(Value::Null),
        "created_by": i.created_by,
        "date_updated": super::twilio::date(i.date_updated),
        "date_expires": i.date_expires.map_or(Value::Null, super::twilio::date),
    });
    match &i.key {
        ItemKey::Index(index) => v["index"] = json!(index),
        ItemKey::Key(key) => v["key"] = json!(key),
    }
    v
}

fn data(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// One event as an SSE message: `id` is the object revision after it (so a client that
/// reconnects with `Last-Event-ID` resumes from there), `event` its kind, `data` JSON.
pub fn sse_message(e: &Event) -> Bytes {
    let mut body = json!({
        "object_sid": e.object_sid,
        "revision": e.revision,
        "actor": e.actor,
    });
    match &e.kind {
        EventKind::Snapshot { state } => {
            body["state"] = match state {
                ObjectState::Document(d) => json!({"kind": "document", "data": data(&d.data)}),
                ObjectState::List { window_start, .. } => {
                    json!({"kind": "list", "window_start": window_start})
                }
                ObjectState::Map { .. } => json!({"kind": "map"}),
                ObjectState::Stream { sequence, .. } => {
                    json!({"kind": "stream", "sequence": sequence})
                }
            }
        }
        EventKind::SnapshotItems { items, done } => {
            body["items"] = items.iter().map(item_json).collect();
            body["done"] = json!(done);
        }
        EventKind::DocumentUpdated {
            data: d, previous, ..
        } => {
            body["data"] = data(d);
            body["previous"] = previous.as_deref().map_or(Value::Null, data);
        }
        EventKind::ObjectRemoved { reason } => body["reason"] = json!(reason.as_str()),
        EventKind::ItemAdded { item } => body["item"] = item_json(item),
        EventKind::ItemUpdated { item, previous } => {
            body["item"] = item_json(item);
            body["previous"] = data(previous);
        }
        EventKind::ItemRemoved {
            key,
            previous,
            reason,
        } => {
            body["key"] = match key {
                ItemKey::Index(i) => json!(i),
                ItemKey::Key(k) => json!(k),
            };
            body["previous"] = data(previous);
            body["reason"] = json!(reason.as_str());
        }
        EventKind::MessagePublished { data: d, sequence } => {
            body["data"] = data(d);
            body["sequence"] = json!(sequence);
        }
        EventKind::SubscriptionEnded { error } => {
            body["code"] = json!(error.code.as_str());
            body["message"] = json!(error.message);
        }
    }
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {}\n\n",
        e.revision,
        e.kind.name(),
        body
    ))
}

/// Starts streaming the object's events (the caller checked that it may read it).
pub fn stream(
    shared: Arc<Shared>,
    service_sid: String,
    identity: Option<String>,
    object_sid: String,
    since: Option<u64>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> HttpResponse {
    let outbox = Outbox::new();
    // Registered before the state it catches up from is read: no change in between.
    let subscriber = Subscriber::new(1, &service_sid, identity.as_deref(), &outbox);
    shared.hub.subscribe(&object_sid, subscriber.clone());
    let (tx, body_rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let hub = shared.hub.clone();
        let _registered = Unsubscribe {
            hub: hub.clone(),
            object_sid: object_sid.clone(),
            outbox: outbox.clone(),
        };
        let mut delivered = since;
        loop {
            // Catch up (first, and after falling behind): replay or snapshot.
            match catch_up(
                &*shared.store,
                &shared.hub,
                &service_sid,
                &object_sid,
                delivered,
                WINDOW,
                crate::now_ms(),
            )
            .await
            {
                Ok(CatchUp::Replay { events, revision }) => {
                    for entry in events {
                        let Ok(event) =
                            syncline_proto::frame::decode::<Event>(&entry.event, u32::MAX)
                        else {
                            continue;
                        };
                        if tx.send(sse_message(&event)).await.is_err() {
                            return;
                        }
                    }
                    delivered = Some(revision);
                }
                Ok(CatchUp::Snapshot { events, revision }) => {
                    for event in &events {
                        if tx.send(sse_message(event)).await.is_err() {
                            return;
                        }
                    }
                    delivered = Some(revision);
                }
                Ok(CatchUp::Gone) | Err(_) => return,
            }
            // Live events until the client leaves, the object ends, or the queue
            // overflowed (then catch up again from what was delivered).
            let mut queued = Queued::default();
            loop {
                tokio::select! {
                    _ = outbox.ready() => {}
                    _ = crate::shutdown_requested(&mut shutdown) => return,
                    _ = tokio::time::sleep(KEEPALIVE) => {
                        if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                outbox.take(&mut queued);
                if !queued.lagged.is_empty() {
                    break;
                }
                for d in queued.events.drain(..) {
                    if let (Some(r), Some(have)) = (d.event.revision, delivered) {
                        if r <= have {
                            continue;
                        }
                    }
                    let Ok(event) = syncline_proto::frame::decode::<Event>(&d.event.body, u32::MAX)
                    else {
                        continue;
                    };
                    if d.event.revision.is_some() {
                        delivered = d.event.revision;
                    }
                    if tx.send(sse_message(&event)).await.is_err() || d.event.ends {
                        return;
                    }
                }
            }
            debug!(object = %object_sid, "SSE watcher fell behind; catching up");
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(body_rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    }));
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Takes the watcher's subscription out of the hub when its task ends, however it ends.
struct Unsubscribe {
    hub: Arc<crate::fanout::Hub>,
    object_sid: String,
    outbox: Arc<Outbox>,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.object_sid, 1, &self.outbox);
    }
}
