//! One QUIC connection: accept its request stream, frame requests and answers on it for
//! the protocol's request loop (`crate::protocol`), run the session's watch on the
//! event stream, and close with the code the loop decides.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use syncline_core::metrics::Edge;
use syncline_core::{Core, Ending};
use syncline_proto::frame::{self, FrameDecoder, FrameError};
use syncline_proto::{close_code, ErrorCode, ResponseFrame, WireError};
use tokio::sync::{oneshot, watch};
use tracing::{debug, info_span, Instrument};

use super::events::QuicSink;
use crate::protocol::{AnswerWriter, Close, Connection, Incoming, RequestReader, OPEN_TIMEOUT};

/// Serves one incoming connection until it ends.
pub async fn serve(incoming: quinn::Incoming, core: Core, mut shutdown: watch::Receiver<bool>) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            debug!(%remote, error = %e, "handshake failed");
            return;
        }
    };
    let session = core.open_session(Edge::Quic, {
        let conn = conn.clone();
        Arc::new(move |ending: Ending| {
            let close = Close::of(ending);
            conn.close(close.code.into(), close.reason.as_bytes())
        })
    });
    let span = info_span!("conn", id = session.id(), %remote);
    async move {
        debug!("connected");
        let (ended, ended_rx) = oneshot::channel();
        // Aborted on drop: also when this task is itself cancelled at shutdown, since
        // the watch holds the core.
        let _watch = AbortOnDrop(tokio::spawn(
            {
                let session = session.clone();
                let mut sink = QuicSink::new(conn.clone(), ended);
                async move { syncline_core::watch::run(session, &mut sink).await }
            }
            .in_current_span(),
        ));
        let close = tokio::select! {
            s = conn.accept_bi() => match s {
                Ok((send, recv)) => {
                    let mut reader = FrameReader {
                        recv,
                        decoder: FrameDecoder::new(core.limits().max_frame_bytes),
                    };
                    let connection = Connection {
                        session: &session,
                        core: &core,
                        encode: encode_answer,
                        ended: ended_rx,
                        shutdown,
                    };
                    connection.run(&mut reader, StreamWriter(send)).await
                }
                Err(_) => Close { code: close_code::NORMAL, reason: "closed" },
            },
            _ = tokio::time::sleep(OPEN_TIMEOUT) => {
                Close { code: close_code::PROTOCOL_ERROR, reason: "no request stream opened" }
            }
            _ = syncline_core::shutdown_requested(&mut shutdown) => {
                Close { code: close_code::GOING_AWAY, reason: "server shutting down" }
            }
        };
        session.close();
        conn.close(close.code.into(), close.reason.as_bytes());
        debug!(code = close.code, reason = close.reason, "closed");
    }
    .instrument(span)
    .await
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn encode_answer(frame: &ResponseFrame) -> Bytes {
    frame::encode(frame)
}

/// Requests as frames on the request stream.
struct FrameReader {
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
}

#[async_trait::async_trait]
impl RequestReader for FrameReader {
    async fn read(&mut self, into: &mut Vec<Incoming>) -> bool {
        let chunk = match self.recv.read_chunk(64 * 1024, true).await {
            Ok(Some(c)) => c,
            Ok(None) | Err(_) => return false,
        };
        self.decoder.extend(&chunk.bytes);
        loop {
            let body = match self.decoder.next_frame() {
                Ok(Some(b)) => b,
                Ok(None) => return true,
                Err(FrameError::TooLarge { len, max, head }) => {
                    into.push(Incoming::Refused {
                        id: frame::peek_request_id(&head),
                        error: WireError::new(
                            ErrorCode::TooLarge,
                            format!("frame of {len} bytes exceeds the limit of {max} bytes"),
                        ),
                    });
                    continue;
                }
                Err(e) => {
                    into.push(Incoming::Refused {
                        id: None,
                        error: WireError::invalid(e.to_string()),
                    });
                    continue;
                }
            };
            into.push(match frame::decode(&body, self.decoder.max()) {
                Ok(f) => Incoming::Request(f),
                Err(e) => Incoming::Refused {
                    id: frame::peek_request_id(&body),
                    error: WireError::invalid(format!("malformed request frame: {e}")),
                },
            });
        }
    }
}

/// Answers as frames on the request stream's sending side.
struct StreamWriter(quinn::SendStream);

#[async_trait::async_trait]
impl AnswerWriter for StreamWriter {
    async fn write(&mut self, answers: &mut Vec<Bytes>) -> Result<(), String> {
        self.0
            .write_all_chunks(answers)
            .await
            .map_err(|e| e.to_string())
    }

    async fn finish(&mut self) {
        let _ = self.0.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.0.stopped()).await;
    }
}
