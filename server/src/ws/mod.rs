//! The WebSocket edge, for browsers: `/v1/ws` on the HTTPS listener, subprotocol
//! `syncline.v1`. It is framing around the same request loop as QUIC
//! (`crate::protocol`) and the same session watch: a text message carries one request,
//! answer or event as JSON (`syncline_proto::ws`). Events are rendered as JSON once
//! per event, whatever the number of WebSocket subscribers (`Published::rendered`).
//! The server pings every third of its idle timeout and drops a peer it has not heard
//! from (a message, a ping or a pong) for the whole timeout.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hyper::StatusCode;
use syncline_core::fanout::Published;
use syncline_core::metrics::Edge;
use syncline_core::watch::WatchSink;
use syncline_core::{Core, Ending};
use syncline_proto::{frame, ErrorCode, Event, RequestFrame, ResponseFrame, WireError};
use tokio::sync::{oneshot, watch, Mutex, Notify};
use tracing::{debug, error, info_span, Instrument};

use crate::protocol::{AnswerWriter, Close, Connection, Incoming, RequestReader};

pub use syncline_proto::ws::{PATH, SUBPROTOCOL};

/// Largest message the WebSocket layer reads at all; past it the connection is closed
/// (1009). Messages between the protocol's frame limit and this are answered with
/// `TooLarge` and the connection goes on, as on QUIC.
const MAX_READ_MESSAGE: usize = 4 * 1024 * 1024;
/// The socket's read buffer, allocated per connection up front (tungstenite's default,
/// 128 KiB, would be most of an idle connection's memory); it grows for larger messages.
const READ_BUFFER: usize = 4 * 1024;
/// Frames written are gathered up to this before they go to TLS; every flush writes
/// them anyway, so a batch of events goes out in one write.
const WRITE_BUFFER: usize = 64 * 1024;
/// RFC 6455's close code for a message too big to process.
const MESSAGE_TOO_BIG: u16 = 1009;
/// Time the close frame gets to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the edge needs from the server.
#[derive(Clone)]
pub struct WsEdge {
    pub core: Core,
    pub shutdown: watch::Receiver<bool>,
    /// A peer silent this long is dropped (the QUIC idle timeout).
    pub idle_timeout: Duration,
}

/// Answers an upgrade request: switches to WebSocket if the client offers the
/// `syncline.v1` subprotocol, else 400 with a JSON error.
pub fn upgrade(edge: WsEdge, upgrade: WebSocketUpgrade) -> Response {
    let offered = upgrade
        .requested_protocols()
        .any(|p| p.as_bytes() == SUBPROTOCOL.as_bytes());
    if !offered {
        let body = serde_json::json!({
            "code": ErrorCode::InvalidArgument.as_str(),
            "message": format!("ask for the WebSocket subprotocol `{SUBPROTOCOL}`"),
            "status": 400,
        });
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    upgrade
        .protocols([SUBPROTOCOL])
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(usize::MAX)
        .max_message_size(MAX_READ_MESSAGE)
        .max_frame_size(MAX_READ_MESSAGE)
        .on_failed_upgrade(|e| debug!(error = %e, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| serve(socket, edge))
}

type Writer = Arc<Mutex<SplitSink<WebSocket, Message>>>;

/// Serves one WebSocket until it ends.
async fn serve(socket: WebSocket, edge: WsEdge) {
    let WsEdge {
        core,
        shutdown,
        idle_timeout,
    } = edge;
    let killed = Arc::new(Notify::new());
    let forced: Arc<SyncMutex<Option<Ending>>> = Arc::default();
    let session = core.open_session(Edge::WebSocket, {
        let killed = killed.clone();
        let forced = forced.clone();
        Arc::new(move |ending: Ending| {
            if let Ok(mut f) = forced.lock() {
                *f = Some(ending);
            }
            killed.notify_one();
        })
    });
    let span = info_span!("ws", id = session.id());
    async move {
        debug!("connected");
        let (tx, rx) = socket.split();
        let tx: Writer = Arc::new(Mutex::new(tx));
        let (ended, ended_rx) = oneshot::channel();
        let watch = tokio::spawn(
            {
                let session = session.clone();
                let mut sink = WsSink {
                    tx: tx.clone(),
                    pending: Vec::new(),
                    ended: Some(ended),
                    ping_every: idle_timeout / 3,
                };
                async move { syncline_core::watch::run(session, &mut sink).await }
            }
            .in_current_span(),
        );
        let mut reader = WsReader {
            rx,
            idle_timeout,
            heard: tokio::time::Instant::now(),
            killed,
            max_message: core.limits().max_frame_bytes as usize,
            too_large: false,
        };
        let connection = Connection {
            session: &session,
            core: &core,
            encode: encode_answer,
            ended: ended_rx,
            shutdown,
        };
        let mut close = connection
            .run(&mut reader, AnswerSink { tx: tx.clone() })
            .await;
        if let Some(ending) = forced.lock().ok().and_then(|mut f| f.take()) {
            close = Close::of(ending);
        }
        session.close();
        watch.abort();
        let frame = if reader.too_large {
            CloseFrame {
                code: MESSAGE_TOO_BIG,
                reason: Utf8Bytes::from_static("message too big"),
            }
        } else {
            CloseFrame {
                code: syncline_proto::ws::close_code(close.code),
                reason: Utf8Bytes::from(close.reason),
            }
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            let mut tx = tx.lock().await;
            let _ = tx.send(Message::Close(Some(frame))).await;
            let _ = tx.close().await;
        })
        .await;
        debug!(code = close.code, reason = close.reason, "closed");
    }
    .instrument(span)
    .await
}

fn encode_answer(frame: &ResponseFrame) -> Bytes {
    match serde_json::to_vec(frame) {
        Ok(v) => Bytes::from(v),
        // Unreachable for these types (no maps with non-string keys, no floats); say
        // so rather than send nothing.
        Err(e) => {
            error!(error = %e, "encoding an answer as JSON failed");
            Bytes::from(format!(
                r#"{{"id":{},"result":{{"Err":{{"code":"Internal","message":"answer not encodable","current_revision":null}}}}}}"#,
                frame.id
            ))
        }
    }
}

/// The JSON of an event, from the bytes the hub shares (the wire's bincode). Empty if
/// they do not decode, which the server's own encoder never produces.
fn event_json(body: &Bytes) -> Bytes {
    let event: Event = match frame::decode(body, u32::MAX) {
        Ok(e) => e,
        Err(e) => {
            error!(error = %e, "an event did not decode; not sent");
            return Bytes::new();
        }
    };
    serde_json::to_vec(&event)
        .map(Bytes::from)
        .unwrap_or_else(|e| {
            error!(error = %e, "encoding an event as JSON failed; not sent");
            Bytes::new()
        })
}

/// `{"sub_id":N,"event":…}`, the serde form of `ws::EventFrame`, around an event's
/// JSON rendered once for every subscriber.
fn event_message(sub_id: u64, event: &[u8]) -> Option<Message> {
    if event.is_empty() {
        return None;
    }
    let mut text = BytesMut::with_capacity(event.len() + 32);
    // Per delivery: written in place, no string of its own for the number.
    let _ = write!(text, "{{\"sub_id\":{sub_id},\"event\":");
    text.put_slice(event);
    text.put_u8(b'}');
    Utf8Bytes::try_from(text.freeze()).ok().map(Message::Text)
}

/// The session watch's sink: events as text messages, pings while idle.
struct WsSink {
    tx: Writer,
    pending: Vec<Message>,
    ended: Option<oneshot::Sender<Ending>>,
    ping_every: Duration,
}

#[async_trait::async_trait]
impl WatchSink for WsSink {
    fn push(&mut self, sub_id: u64, event: Bytes) {
        self.pending
            .extend(event_message(sub_id, &event_json(&event)));
    }

    fn push_live(&mut self, sub_id: u64, event: &Published) {
        self.pending
            .extend(event_message(sub_id, event.rendered(event_json)));
    }

    async fn flush(&mut self) -> Result<(), ()> {
        let mut tx = self.tx.lock().await;
        for message in self.pending.drain(..) {
            if let Err(e) = tx.feed(message).await {
                debug!(error = %e, "event write failed");
                return Err(());
            }
        }
        syncline_core::batch::trim(&mut self.pending);
        tx.flush()
            .await
            .map_err(|e| debug!(error = %e, "event write failed"))
    }

    /// Everything pushed was flushed to the socket, which delivers in order: the
    /// request loop closes it after its last answers.
    async fn close(&mut self, ending: Ending) {
        if let Some(ended) = self.ended.take() {
            let _ = ended.send(ending);
        }
    }

    fn idle_every(&self) -> Option<Duration> {
        Some(self.ping_every)
    }

    async fn idle(&mut self) -> Result<(), ()> {
        let mut tx = self.tx.lock().await;
        tx.send(Message::Ping(Bytes::new()))
            .await
            .map_err(|e| debug!(error = %e, "ping failed"))
    }
}

/// Requests as text messages.
struct WsReader {
    rx: SplitStream<WebSocket>,
    idle_timeout: Duration,
    /// When the peer was last heard from.
    heard: tokio::time::Instant,
    /// The core cut the session (`force_close`).
    killed: Arc<Notify>,
    max_message: usize,
    /// The peer sent a message past `MAX_READ_MESSAGE`: the socket is closed with 1009.
    too_large: bool,
}

#[derive(serde::Deserialize)]
struct IdOnly {
    id: u64,
}

/// A text message as the request loop takes it.
fn incoming(text: &str, max: usize) -> Incoming {
    let peek_id = || serde_json::from_str::<IdOnly>(text).ok().map(|m| m.id);
    if text.len() > max {
        return Incoming::Refused {
            id: peek_id(),
            error: WireError::new(
                ErrorCode::TooLarge,
                format!(
                    "message of {} bytes exceeds the limit of {max} bytes",
                    text.len()
                ),
            ),
        };
    }
    match serde_json::from_str::<RequestFrame>(text) {
        Ok(frame) => Incoming::Request(frame),
        Err(e) => Incoming::Refused {
            id: peek_id(),
            error: WireError::invalid(format!("malformed request: {e}")),
        },
    }
}

#[async_trait::async_trait]
impl RequestReader for WsReader {
    async fn read(&mut self, into: &mut Vec<Incoming>) -> bool {
        loop {
            let silent_until = self.heard + self.idle_timeout;
            let message = tokio::select! {
                m = self.rx.next() => m,
                _ = tokio::time::sleep_until(silent_until) => {
                    debug!("peer silent past the idle timeout");
                    return false;
                }
                _ = self.killed.notified() => return false,
            };
            let message = match message {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    let e = e.into_inner();
                    self.too_large = matches!(
                        e.downcast_ref::<tokio_tungstenite::tungstenite::Error>(),
                        Some(tokio_tungstenite::tungstenite::Error::Capacity(_))
                    );
                    debug!(error = %e, "WebSocket read failed");
                    return false;
                }
                None => return false,
            };
            self.heard = tokio::time::Instant::now();
            match message {
                Message::Text(text) => {
                    into.push(incoming(text.as_str(), self.max_message));
                    return true;
                }
                Message::Binary(_) => {
                    into.push(Incoming::Refused {
                        id: None,
                        error: WireError::invalid(
                            "binary message: requests are JSON text messages",
                        ),
                    });
                    return true;
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                Message::Close(_) => return false,
            }
        }
    }
}

/// Answers as text messages.
struct AnswerSink {
    tx: Writer,
}

#[async_trait::async_trait]
impl AnswerWriter for AnswerSink {
    async fn write(&mut self, answers: &mut Vec<Bytes>) -> Result<(), String> {
        let mut tx = self.tx.lock().await;
        for answer in answers.drain(..) {
            let text = Utf8Bytes::try_from(answer).map_err(|e| e.to_string())?;
            tx.feed(Message::Text(text))
                .await
                .map_err(|e| e.to_string())?;
        }
        tx.flush().await.map_err(|e| e.to_string())
    }

    /// The close frame follows the last answer on the same socket (`serve`).
    async fn finish(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncline_proto::ws::{EventFrame, ServerMessage};
    use syncline_proto::{EventKind, Reason, Request};

    #[test]
    fn an_event_message_is_the_serde_form_of_an_event_frame() {
        let event = Event {
            object_sid: "ET0".into(),
            revision: 4,
            origin: 9,
            actor: "alice".into(),
            kind: EventKind::ItemRemoved {
                key: syncline_proto::ItemKey::Key("k\"é".into()),
                previous: "{\"a\":1}".into(),
                reason: Reason::Disconnected,
            },
        };
        let json = event_json(&frame::encode_event(&event));
        let Some(Message::Text(text)) = event_message(12, &json) else {
            panic!("a text message");
        };
        let parsed: ServerMessage = serde_json::from_str(text.as_str()).expect("parses");
        assert_eq!(
            parsed,
            ServerMessage::Event(EventFrame { sub_id: 12, event })
        );
    }

    #[test]
    fn a_malformed_request_keeps_its_id_when_it_can_be_read() {
        match incoming(r#"{"id":5,"request":{"DocSet":{"document":"d"}}}"#, 1024) {
            Incoming::Refused { id, error } => {
                assert_eq!(id, Some(5));
                assert_eq!(error.code, ErrorCode::InvalidArgument);
                assert!(error.message.contains("data"), "{}", error.message);
            }
            Incoming::Request(_) => panic!("refused"),
        }
        match incoming("not json", 1024) {
            Incoming::Refused { id, .. } => assert_eq!(id, None),
            Incoming::Request(_) => panic!("refused"),
        }
        match incoming(r#"{"id":6,"request":"Ping"}"#, 10) {
            Incoming::Refused { id, error } => {
                assert_eq!((id, error.code), (Some(6), ErrorCode::TooLarge));
            }
            Incoming::Request(_) => panic!("refused"),
        }
        match incoming(r#"{"id":7,"request":"Ping"}"#, 1024) {
            Incoming::Request(f) => assert_eq!((f.id, f.request), (7, Request::Ping)),
            Incoming::Refused { error, .. } => panic!("{error:?}"),
        }
    }
}
