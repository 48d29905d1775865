//! A QUIC connection's event stream: the sink of its session's watch
//! (`syncline_core::watch`). Events go out as frames, each behind its subscription's
//! header, on one long-lived server-initiated stream, everything pending in one write;
//! ending the session finishes the stream, waits for it to be taken, and hands the
//! ending to the connection's request loop, which answers what is in flight and closes
//! with the ending's code.

use bytes::Bytes;
use syncline_core::watch::WatchSink;
use syncline_core::{Ending, CLOSE_GRACE};
use syncline_proto::EventFrameHeader;
use tokio::sync::oneshot;
use tracing::debug;

pub struct QuicSink {
    conn: quinn::Connection,
    stream: Option<quinn::SendStream>,
    /// Where the request loop hears that the session ended (a oneshot: a watch channel
    /// carries eight notifiers, half a kilobyte on every connection).
    ended: Option<oneshot::Sender<Ending>>,
    chunks: Vec<Bytes>,
}

impl QuicSink {
    pub fn new(conn: quinn::Connection, ended: oneshot::Sender<Ending>) -> Self {
        QuicSink {
            conn,
            stream: None,
            ended: Some(ended),
            chunks: Vec::new(),
        }
    }
}

#[async_trait::async_trait]
impl WatchSink for QuicSink {
    fn push(&mut self, sub_id: u64, event: Bytes) {
        let header = EventFrameHeader { sub_id }.encode(event.len());
        self.chunks.push(Bytes::copy_from_slice(&header));
        self.chunks.push(event);
    }

    async fn flush(&mut self) -> Result<(), ()> {
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
        // A burst's buffer is not kept by a connection that goes quiet again.
        syncline_core::batch::trim(&mut self.chunks);
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
        if let Some(ended) = self.ended.take() {
            let _ = ended.send(ending);
        }
    }
}
