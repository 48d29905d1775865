//! Server-sent events for backends that watch over plain HTTP:
//! `GET /v1/Services/{S}/{Documents|Lists|Maps}/{O}/Events?since=REV` streams an
//! object's changes as `text/event-stream`. Each stream is a core session with one
//! subscription, rendered here: the core's watch decides what is sent (what was missed
//! since `since`, or `Last-Event-ID`, from the change log, else a snapshot; live events;
//! a resync when it falls behind), and the core ends it as it ends any session (key
//! revoked, token expired, service deleted; the subscription on losing `read`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use bytes::Bytes;
use serde_json::{json, Value};
use syncline_core::session::Session;
use syncline_core::watch::WatchSink;
use syncline_core::Ending;
use syncline_proto::{Event, EventKind, ItemInfo, ItemKey, ObjectState};
use tokio::sync::{mpsc, watch};

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

/// Renders a session's watch as server-sent events into the response body.
struct SseSink {
    body: mpsc::Sender<Bytes>,
    /// Rendered messages waiting for `flush`.
    messages: Vec<Bytes>,
    /// The stream's one subscription ended (its object removed, or read access lost):
    /// the stream ends once that last message is out.
    ended: bool,
}

#[async_trait::async_trait]
impl WatchSink for SseSink {
    fn push(&mut self, _sub_id: u64, event: Bytes) {
        // Encoded by this server's own encoder: a failure would be a bug, not input.
        if let Ok(event) = syncline_proto::frame::decode::<Event>(&event, u32::MAX) {
            self.ended |= matches!(
                event.kind,
                EventKind::ObjectRemoved { .. } | EventKind::SubscriptionEnded { .. }
            );
            self.messages.push(sse_message(&event));
        }
    }

    async fn flush(&mut self) -> Result<(), ()> {
        for message in self.messages.drain(..) {
            self.body.send(message).await.map_err(|_| ())?;
        }
        // Nothing more can come: stop the watch, which ends the response.
        if self.ended {
            return Err(());
        }
        Ok(())
    }

    /// The stream's last message says why it ends (`event: end`, with the code).
    async fn close(&mut self, ending: Ending) {
        let body = json!({"code": ending.code.as_str(), "message": ending.reason});
        let _ = self
            .body
            .send(Bytes::from(format!("event: end\ndata: {body}\n\n")))
            .await;
    }

    /// A comment line this often keeps proxies from closing a quiet stream and lets a
    /// dead client be noticed.
    fn idle_every(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(15))
    }

    async fn idle(&mut self) -> Result<(), ()> {
        self.body
            .send(Bytes::from_static(b": keep-alive\n\n"))
            .await
            .map_err(|_| ())
    }
}

/// Streams the session's events until its watch ends, the client leaves, the server
/// shuts down, or the core cuts the session off (`ended`).
pub fn stream(
    session: Arc<Session>,
    mut ended: watch::Receiver<Option<Ending>>,
    mut shutdown: watch::Receiver<bool>,
) -> HttpResponse {
    let (tx, body_rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let mut sink = SseSink {
            body: tx,
            messages: Vec::new(),
            ended: false,
        };
        tokio::select! {
            _ = syncline_core::watch::run(session.clone(), &mut sink) => {}
            _ = ended.wait_for(Option::is_some) => {}
            _ = syncline_core::shutdown_requested(&mut shutdown) => {}
        }
        session.close();
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
