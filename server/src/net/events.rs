//! A QUIC connection's event stream: the sink of its session's watch
//! (`syncline_core::watch`). Events go out as frames, each behind its subscription's
//! header, on one long-lived server-initiated stream, everything pending in one write;
//! ending the session finishes the stream, waits for it to be taken, and hands the
//! ending to the connection's request loop, which answers what is in flight and closes
//! with the ending's code.

use std::sync::Arc;

use bytes::Bytes;
use syncline_core::watch::{Pending, WatchSink};
use syncline_core::{Ending, CLOSE_GRACE};
use syncline_proto::{close_code, ErrorCode, EventFrameHeader};
use tokio::sync::watch;
use tracing::debug;

/// The QUIC close code for the core's reason to end a session.
pub fn close_code_of(code: ErrorCode) -> u32 {
    match code {
        ErrorCode::TokenExpired => close_code::TOKEN_EXPIRED,
        ErrorCode::Unauthorized | ErrorCode::Forbidden => close_code::UNAUTHORIZED,
        _ => close_code::GOING_AWAY,
    }
}

pub struct QuicSink {
    conn: quinn::Connection,
    stream: Option<quinn::SendStream>,
    /// Where the request loop hears that the session ended.
    ended: Arc<watch::Sender<Option<Ending>>>,
    chunks: Vec<Bytes>,
}

impl QuicSink {
    pub fn new(conn: quinn::Connection, ended: Arc<watch::Sender<Option<Ending>>>) -> Self {
        QuicSink {
            conn,
            stream: None,
            ended,
            chunks: Vec::new(),
        }
    }
}

#[async_trait::async_trait]
impl WatchSink for QuicSink {
    async fn write(&mut self, events: &mut Vec<Pending>) -> Result<(), ()> {
        for (sub_id, body) in events.drain(..) {
            let header = EventFrameHeader { sub_id }.encode(body.len());
            self.chunks.push(Bytes::copy_from_slice(&header));
            self.chunks.push(body);
        }
        if self.stream.is_none() {
            match self.conn.open_uni().await {
                Ok(s) => self.stream = Some(s),
                Err(e) => {
                    debug!(error = %e, "cannot open the event stream");
                    return Err(());
                }
            }
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(());
        };
        let written = stream.write_all_chunks(&mut self.chunks).await;
        self.chunks.clear();
        written.map_err(|e| debug!(error = %e, "event stream closed"))
    }

    /// Ends the event stream and waits (at most `CLOSE_GRACE`) until the client has all
    /// of it, since closing the connection discards data not yet acknowledged; then the
    /// request loop closes it.
    async fn close(&mut self, ending: Ending) {
        if let Some(mut s) = self.stream.take() {
            if s.finish().is_ok() {
                let _ = tokio::time::timeout(CLOSE_GRACE, s.stopped()).await;
            }
        }
        self.ended.send_replace(Some(ending));
    }
}
