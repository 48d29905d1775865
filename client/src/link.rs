//! One authenticated QUIC connection (a [`Link`]): `Hello`, the request stream
//! (id-tagged requests, answers in any order) and the event stream (frames routed by
//! subscription id). A link knows nothing of reconnecting: a lost one is replaced whole
//! by the supervisor (`reconnect.rs`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use syncline_proto::frame::{self, FrameDecoder, LEN_PREFIX};
use syncline_proto::{
    Credential, ErrorCode, Event, EventFrameHeader, Limits, Request, RequestFrame, Response,
    ResponseFrame, Welcome, WireError,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::config::ClientConfig;
use crate::nodes::Target;
use crate::{unavailable, Error, Result};

/// Largest frame accepted from the server. Generous: the server's own limits are
/// configurable, and the server is trusted not to flood its clients.
const MAX_SERVER_FRAME: u32 = 16 * 1024 * 1024;

/// How long a request whose answer can no longer come (the response stream ended) waits
/// for the connection's close, to report the server's reason (`TokenExpired`, say)
/// rather than "connection lost". The server closes right after ending the stream.
const CLOSE_REASON_WAIT: Duration = Duration::from_secs(3);

/// Events buffered per subscription before the connection stops reading (and the server,
/// seeing the back-pressure, resyncs the subscription instead of queueing more).
const SUBSCRIPTION_BUFFER: usize = 4096;

type Pending = Mutex<HashMap<u64, oneshot::Sender<std::result::Result<Response, WireError>>>>;

/// One QUIC connection, authenticated: its request stream, its pending requests and its
/// event routes. The supervisor (`reconnect.rs`) replaces a lost link with a new one;
/// subscriptions remember the link they were opened on, to tell a lost connection from
/// their own cut-off.
pub(crate) struct Link {
    conn: quinn::Connection,
    requests: mpsc::Sender<Bytes>,
    pending: Arc<Pending>,
    subs: Arc<Subs>,
    pub(crate) welcome: Welcome,
    /// The node this connection is to.
    pub(crate) target: Target,
}

/// Closes a connection being set up when dropped, unless it was kept.
struct CloseUnlessKept(Option<quinn::Connection>);

impl CloseUnlessKept {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for CloseUnlessKept {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            conn.close(0u32.into(), b"hello failed");
        }
    }
}

impl Link {
    /// Connects through `endpoint` to `target` (at `addr`), sends `Hello` (request id
    /// `hello_id`) with `credential` and waits for `Welcome`. Dropping the future (an
    /// attempt that lost the race to another node, or timed out) closes the connection
    /// it had opened, so the node does not keep it, and the identity's presence, until
    /// its idle timeout.
    #[tracing::instrument(name = "link", skip_all, fields(server = %target.addr))]
    pub(crate) async fn open(
        endpoint: &quinn::Endpoint,
        config: &ClientConfig,
        target: &Target,
        addr: SocketAddr,
        credential: Credential,
        hello_id: u64,
    ) -> Result<Link> {
        let conn = endpoint
            .connect(addr, &target.name)
            .map_err(|e| Error::Connection(format!("{}: {e}", target.addr)))?
            .await
            .map_err(|e| Error::from_connection(&e))?;
        // The stream tasks keep a connection alive until its idle timeout; a link that
        // failed its Hello is of no use to anyone: the guard closes it.
        let guard = CloseUnlessKept(Some(conn.clone()));
        let link = Self::greet(config, conn, target, credential, hello_id).await?;
        guard.keep();
        Ok(link)
    }

    /// Opens the request stream on `conn`, says `Hello` and waits for `Welcome`.
    async fn greet(
        config: &ClientConfig,
        conn: quinn::Connection,
        target: &Target,
        credential: Credential,
        hello_id: u64,
    ) -> Result<Link> {
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| Error::from_connection(&e))?;
        let (requests, request_rx) = mpsc::channel(1024);
        tokio::spawn(write_requests(send, request_rx));

        let pending: Arc<Pending> = Arc::default();
        // The Hello goes out before anything else can be sent. The server's frame limit
        // is not known before its Welcome: assume the default.
        let hello = frame::encode(&RequestFrame {
            id: hello_id,
            request: Request::Hello {
                credential,
                service: config.service.clone(),
            },
        });
        check_request_size(&hello, Limits::default().max_frame_bytes)?;
        let (hello_tx, hello_rx) = oneshot::channel();
        pending
            .lock()
            .map_err(|_| Error::Protocol("lock".into()))?
            .insert(hello_id, hello_tx);
        requests
            .send(hello)
            .await
            .map_err(|_| Error::Connection("request stream closed".into()))?;
        tokio::spawn(read_responses(recv, pending.clone()));
        let hello = tokio::time::timeout(config.request_timeout, hello_rx)
            .await
            .map_err(|_| {
                Error::Connection(format!(
                    "no answer to Hello within {:?}",
                    config.request_timeout
                ))
            })?;
        let welcome = match hello {
            Ok(Ok(Response::Welcome(w))) => w,
            Ok(Ok(other)) => {
                return Err(Error::Protocol(format!(
                    "unexpected answer to Hello: {other:?}"
                )))
            }
            Ok(Err(e)) => return Err(Error::Server(e)),
            Err(_) => {
                return Err(conn
                    .close_reason()
                    .map(|e| Error::from_connection(&e))
                    .unwrap_or_else(|| Error::Connection("closed during Hello".into())))
            }
        };
        let subs: Arc<Subs> = Arc::default();
        tokio::spawn(read_events(conn.clone(), subs.clone()));
        debug!(connection_id = welcome.connection_id, "connected");
        Ok(Link {
            conn,
            requests,
            pending,
            subs,
            welcome,
            target: target.clone(),
        })
    }

    /// Sends one request and waits for its answer, at most `timeout`. A request over the
    /// server's frame limit is refused here (`TooLarge`), unsent: the server could only
    /// refuse it.
    pub(crate) async fn call(
        &self,
        id: u64,
        request: Request,
        timeout: Duration,
    ) -> Result<Response> {
        let frame = frame::encode(&RequestFrame { id, request });
        check_request_size(&frame, self.welcome.max_frame_bytes)?;
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| Error::Protocol("pending table poisoned".into()))?
            .insert(id, tx);
        if self.requests.send(frame).await.is_err() {
            self.forget_pending(id);
            return Err(self.ended_error().await);
        }
        // The response reader may already have stopped (connection closed), in which
        // case no answer will ever come: the connection's end answers instead.
        tokio::select! {
            biased;
            answer = rx => match answer {
                Ok(Ok(r)) => Ok(r),
                Ok(Err(e)) => Err(Error::Server(e)),
                Err(_) => Err(self.ended_error().await),
            },
            e = self.conn.closed() => Err(Error::from_connection(&e)),
            _ = tokio::time::sleep(timeout) => {
                self.forget_pending(id);
                Err(unavailable(format!("no answer from the server within {timeout:?}")))
            }
        }
    }

    fn forget_pending(&self, id: u64) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&id);
        }
    }

    /// Why no answer can come now that the response stream has ended: the connection's
    /// close reason, waited for briefly (the server closes just after ending the stream).
    async fn ended_error(&self) -> Error {
        match tokio::time::timeout(CLOSE_REASON_WAIT, self.conn.closed()).await {
            Ok(e) => Error::from_connection(&e),
            Err(_) => self.closed_error(),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }

    /// Resolves when this connection is closed, with the reason.
    pub(crate) async fn closed(&self) -> Error {
        Error::from_connection(&self.conn.closed().await)
    }

    fn closed_error(&self) -> Error {
        self.conn
            .close_reason()
            .map(|e| Error::from_connection(&e))
            .unwrap_or_else(|| Error::Connection("connection lost".into()))
    }

    pub(crate) fn close(&self, reason: &[u8]) {
        self.conn.close(0u32.into(), reason);
    }

    /// The connection's transport counters.
    pub(crate) fn stats(&self) -> quinn::ConnectionStats {
        self.conn.stats()
    }

    /// Routes events tagged `sub_id` to a new channel (registered before the subscribe
    /// request goes out, so no event can arrive unrouted).
    pub(crate) fn register_subscription(&self, sub_id: u64) -> Result<mpsc::Receiver<Event>> {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        self.subs
            .lock()
            .map_err(|_| Error::Protocol("subscription table poisoned".into()))?
            .insert(sub_id, tx);
        Ok(rx)
    }

    pub(crate) fn forget_subscription(&self, sub_id: u64) {
        if let Ok(mut subs) = self.subs.lock() {
            subs.remove(&sub_id);
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.close(b"client dropped");
    }
}

/// Refuses a request frame whose body is over the server's frame limit, as the server
/// would (`TooLarge`), so that it is never sent.
fn check_request_size(frame: &Bytes, max_frame_bytes: u32) -> Result<()> {
    let body = frame.len().saturating_sub(LEN_PREFIX);
    if body > max_frame_bytes as usize {
        return Err(Error::Server(WireError::new(
            ErrorCode::TooLarge,
            format!("request is {body} bytes, the server's frame limit is {max_frame_bytes}"),
        )));
    }
    Ok(())
}

type Subs = Mutex<HashMap<u64, mpsc::Sender<Event>>>;

async fn write_requests(mut send: quinn::SendStream, mut rx: mpsc::Receiver<Bytes>) {
    let mut batch = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, 64).await > 0 {
        if let Err(e) = send.write_all_chunks(&mut batch).await {
            debug!(error = %e, "request stream closed");
            return;
        }
        batch.clear();
    }
    let _ = send.finish();
}

/// Reads frame bodies off a server stream until it ends, handing each to `on_frame`
/// (which returns `false` to stop). Frames that fail to decode are logged and skipped.
async fn read_frames(
    mut recv: quinn::RecvStream,
    what: &str,
    mut on_frame: impl FnMut(bytes::Bytes, u32) -> bool,
) {
    let mut decoder = FrameDecoder::new(MAX_SERVER_FRAME);
    while let Ok(Some(chunk)) = recv.read_chunk(64 * 1024, true).await {
        decoder.extend(&chunk.bytes);
        loop {
            match decoder.next_frame() {
                Ok(Some(body)) => {
                    if !on_frame(body, decoder.max()) {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => warn!(error = %e, "bad {what} frame from server"),
            }
        }
    }
}

async fn read_responses(recv: quinn::RecvStream, pending: Arc<Pending>) {
    read_frames(recv, "response", |body, max| {
        let ResponseFrame { id, result } = match frame::decode(&body, max) {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "undecodable response from server");
                return true;
            }
        };
        if id == 0 {
            // An error tied to no request (token expiry, a frame whose id the server
            // could not read). No waiting request can be matched to it any better, and
            // leaving them waiting is the worst answer: every one of them gets it.
            match result {
                Err(e) => {
                    debug!(code = %e.code, "server notice: {}", e.message);
                    let waiters = pending
                        .lock()
                        .map(|mut p| std::mem::take(&mut *p))
                        .unwrap_or_default();
                    for w in waiters.into_values() {
                        let _ = w.send(Err(e.clone()));
                    }
                }
                Ok(r) => debug!("answer with id 0: {r:?}"),
            }
            return true;
        }
        let waiter = pending.lock().ok().and_then(|mut p| p.remove(&id));
        match (waiter, result) {
            (Some(w), result) => {
                let _ = w.send(result);
            }
            (None, r) => debug!(id, "answer to no pending request: {r:?}"),
        }
        true
    })
    .await;
    // Dropping the waiters tells every caller the connection is gone.
    if let Ok(mut p) = pending.lock() {
        p.clear();
    }
}

async fn read_events(conn: quinn::Connection, subs: Arc<Subs>) {
    let Ok(recv) = conn.accept_uni().await else {
        // Closed before any event: the subscriptions hear it from their channels.
        if let Ok(mut s) = subs.lock() {
            s.clear();
        }
        return;
    };
    read_frames(recv, "event", |body, max| {
        let (header, event) = match EventFrameHeader::decode(&body, max) {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "undecodable event from server");
                return true;
            }
        };
        let Ok(mut routes) = subs.lock() else {
            return false;
        };
        if let Some(tx) = routes.get(&header.sub_id) {
            // A subscription whose buffer is full is cut off rather than allowed to
            // stall the others on this connection; it then reports that it fell
            // behind, and resumes itself from its replica.
            if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(event) {
                warn!(
                    sub_id = header.sub_id,
                    "subscription fell behind its buffer; cutting it off"
                );
                routes.remove(&header.sub_id);
            }
        }
        true
    })
    .await;
    if let Ok(mut s) = subs.lock() {
        s.clear();
    }
}
