//! The Syncline protocol over any message transport (a QUIC request stream, a
//! WebSocket): the request loop both edges share. It authenticates the core session
//! (`Hello` first, one at a time), runs requests concurrently after it, answers each
//! under its id, answers what could not be read with a typed error, and ends when the
//! peer goes, the session ends (token expired, key revoked, service deleted) or the
//! server shuts down. The transports only frame: they turn bytes into `Incoming` and
//! write the answers this loop encodes with their encoder.

pub mod request;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use syncline_core::auth::Login;
use syncline_core::batch::{Batch, BatchQueue};
use syncline_core::session::Session;
use syncline_core::{Core, Ending};
use syncline_proto::{
    close_code, Credential, ErrorCode, Request, RequestFrame, Response, ResponseFrame, Welcome,
    WireError,
};
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinSet;
use tracing::{debug, info, info_span, Instrument};

/// Time a new connection has to authenticate. Generous: during a reconnect storm the
/// client may take seconds just to get scheduled.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests of one connection handled at once; past this the connection is not read.
const MAX_IN_FLIGHT: usize = 256;
/// Time accepted requests get to finish and be answered when a connection closes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the peer sent, as the request loop takes it.
pub enum Incoming {
    Request(RequestFrame),
    /// A message that did not become a request (oversized, undecodable): answered to
    /// its request id if that could be read, else as a notice (id 0).
    Refused {
        id: Option<u64>,
        error: WireError,
    },
}

/// How a transport encodes an answer (bincode in a frame, JSON text).
pub type AnswerEncoder = fn(&ResponseFrame) -> Bytes;

/// The reading side of a transport.
#[async_trait::async_trait]
pub trait RequestReader: Send {
    /// Waits for the peer's next message(s) and appends them to `into`; `false`: the
    /// peer is gone (closed, or silent past the transport's idle timeout). Must be
    /// cancel-safe: the loop drops it when something else happens first.
    async fn read(&mut self, into: &mut Vec<Incoming>) -> bool;
}

/// The writing side of a transport, for answers.
#[async_trait::async_trait]
pub trait AnswerWriter: Send + 'static {
    /// Writes `answers` (encoded by the transport's encoder) in order; `Err`: the peer
    /// is gone.
    async fn write(&mut self, answers: &mut Vec<Bytes>) -> Result<(), String>;
    /// No more answers: end the answer stream, giving the last ones a moment to arrive
    /// (closing a connection discards what the peer has not acknowledged).
    async fn finish(&mut self);
}

/// Why a connection ends, as a QUIC close code (WebSocket maps it, `ws::close_code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    pub code: u32,
    pub reason: &'static str,
}

impl Close {
    const NORMAL: Close = Close {
        code: close_code::NORMAL,
        reason: "closed",
    };

    /// The close for the core's reason to end a session.
    pub fn of(ending: Ending) -> Close {
        let code = match ending.code {
            ErrorCode::TokenExpired => close_code::TOKEN_EXPIRED,
            ErrorCode::Unauthorized | ErrorCode::Forbidden => close_code::UNAUTHORIZED,
            _ => close_code::GOING_AWAY,
        };
        Close {
            code,
            reason: ending.reason,
        }
    }
}

/// A running connection's protocol state: the session, and how its transport encodes.
pub struct Connection<'a> {
    pub session: &'a Arc<Session>,
    pub core: &'a Core,
    pub encode: AnswerEncoder,
    /// Where the session's watch says the core ended the session.
    pub ended: oneshot::Receiver<Ending>,
    pub shutdown: watch::Receiver<bool>,
}

/// Authenticates the session: the connection ends if it fails.
async fn hello(
    session: &Session,
    core: &Core,
    credential: Credential,
    service: Option<String>,
) -> Result<Response, WireError> {
    session.admit()?;
    let login = match credential {
        Credential::ApiKey { sid, secret } => Login::ApiKey { sid, secret },
        Credential::Token(token) => Login::Token(token),
    };
    let hello = session.hello(login, service).await?;
    Ok(Response::Welcome(Welcome {
        connection_id: hello.connection_id,
        identity: hello.identity,
        service_sid: hello.service_sid,
        account_sid: hello.account_sid,
        token_expires_at: hello.token_expires_at,
        max_frame_bytes: core.limits().max_frame_bytes,
    }))
}

/// Runs one request of an authenticated session.
async fn handle(session: &Session, core: &Core, request: Request) -> Result<Response, WireError> {
    let kind = request::kind(&request);
    let command = session
        .admit()
        .and_then(|()| request::command(request, core.limits()));
    match command {
        Ok(command) => session.execute(kind, command).await.map(request::response),
        Err(e) => {
            session.count::<()>(kind, &Err(e.clone()));
            Err(e)
        }
    }
}

impl Connection<'_> {
    fn respond(&self, id: u64, result: Result<Response, WireError>) -> Bytes {
        (self.encode)(&ResponseFrame { id, result })
    }

    /// Serves requests from `reader` until the connection ends; answers go to `writer`.
    /// Returns how to close the connection.
    pub async fn run(mut self, reader: &mut dyn RequestReader, writer: impl AnswerWriter) -> Close {
        let session = self.session;
        let core = self.core;
        let responses = Arc::new(Responses::default());
        let writer = tokio::spawn(write_responses(writer, responses.clone()).in_current_span());
        let mut in_flight = JoinSet::new();
        let mut close: Option<Close> = None;
        let mut watching = true;
        let hello_deadline = tokio::time::Instant::now() + OPEN_TIMEOUT;
        let mut incoming = Vec::new();

        'read: while close.is_none() {
            let hello_due = async {
                if session.is_authenticated() {
                    std::future::pending::<()>().await
                }
                tokio::time::sleep_until(hello_deadline).await
            };
            tokio::select! {
                // At the in-flight limit the connection is not read until requests
                // finish; expiry and shutdown are still heard.
                open = reader.read(&mut incoming), if in_flight.len() < MAX_IN_FLIGHT => {
                    if !open {
                        break 'read;
                    }
                    for message in incoming.drain(..) {
                        let RequestFrame { id, request } = match message {
                            Incoming::Request(frame) => frame,
                            Incoming::Refused { id, error } => {
                                info!(?id, code = %error.code, "refused a message: {}", error.message);
                                self.answer_error(&mut in_flight, &responses, id, error);
                                continue;
                            }
                        };
                        // Id 0 is the notices' (answers tied to no request): a request
                        // numbered 0 would get an answer the client cannot tell from one.
                        if id == 0 {
                            self.notice(&responses, WireError::invalid(
                                "request id 0 is reserved for notices; number requests from 1",
                            ));
                            continue;
                        }
                        // Until authenticated, requests run one at a time so that nothing
                        // overtakes Hello.
                        if !session.is_authenticated() {
                            let Request::Hello { credential, service } = request else {
                                let e = WireError::new(ErrorCode::Unauthorized, "the first request must be Hello");
                                session.count::<()>(request::kind(&request), &Err(e.clone()));
                                responses.send(self.respond(id, Err(e))).await;
                                close = Some(Close { code: close_code::UNAUTHORIZED, reason: "authentication failed" });
                                break;
                            };
                            // Boxed: awaited here, inline, its state would be part of this
                            // future for the connection's whole life.
                            let result = Box::pin(hello(session, core, credential, service)).await;
                            let refused = result.as_ref().err().map(|e| e.code);
                            if let Err(e) = &result {
                                info!(code = %e.code, "hello refused: {}", e.message);
                            }
                            responses.send(self.respond(id, result)).await;
                            match refused {
                                Some(ErrorCode::RateLimited) | None => {}
                                Some(code) => {
                                    let code = if code == ErrorCode::TokenExpired {
                                        close_code::TOKEN_EXPIRED
                                    } else {
                                        close_code::UNAUTHORIZED
                                    };
                                    close = Some(Close { code, reason: "authentication failed" });
                                    break;
                                }
                            }
                            continue;
                        }
                        let session = session.clone();
                        let core = core.clone();
                        let responses = responses.clone();
                        let encode = self.encode;
                        in_flight.spawn(
                            async move {
                                let result = handle(&session, &core, request).await;
                                if let Err(e) = &result {
                                    debug!(id, code = %e.code, "request failed: {}", e.message);
                                }
                                responses.send(encode(&ResponseFrame { id, result })).await;
                            }
                            .instrument(info_span!("request", id)),
                        );
                    }
                }
                ending = &mut self.ended, if watching => {
                    watching = false;
                    // An error: the watch stopped without ending the session (its event
                    // stream failed); requests go on as before.
                    if let Ok(ending) = ending {
                        if ending.code == ErrorCode::TokenExpired {
                            self.notice(&responses, WireError::new(ErrorCode::TokenExpired, "token has expired"));
                        }
                        close = Some(Close::of(ending));
                    }
                }
                _ = hello_due => {
                    close = Some(Close { code: close_code::UNAUTHORIZED, reason: "no Hello in time" });
                }
                _ = syncline_core::shutdown_requested(&mut self.shutdown) => {
                    close = Some(Close { code: close_code::GOING_AWAY, reason: "server shutting down" });
                }
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            }
        }
        // Let accepted requests finish and their answers go out before closing, but not
        // for longer than a client that stopped reading deserves.
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while in_flight.join_next().await.is_some() {}
            responses.close();
            writer.await
        })
        .await;
        match drained {
            Ok(Ok(Err(e))) => debug!(error = %e, "writing responses failed"),
            Err(_) => debug!("answers not drained in time; closing anyway"),
            _ => {}
        }
        close.unwrap_or(Close::NORMAL)
    }

    /// An error not tied to a request (id 0): token expiry, a message whose request id
    /// cannot be read. Clients fail every pending request with it. Best effort: dropped
    /// if the client is not reading its answers.
    fn notice(&self, responses: &Responses, err: WireError) {
        let _ = responses.try_send(self.respond(0, Err(err)));
    }

    /// The answer to a message that was refused before it became a request: to the
    /// request whose id could be read from it, as an answer like any other (counted in
    /// flight, never dropped), else as a notice with id 0.
    fn answer_error(
        &self,
        in_flight: &mut JoinSet<()>,
        responses: &Arc<Responses>,
        id: Option<u64>,
        err: WireError,
    ) {
        match id {
            Some(id) if id != 0 => {
                let responses = responses.clone();
                let answer = self.respond(id, Err(err));
                in_flight.spawn(
                    async move {
                        responses.send(answer).await;
                    }
                    .in_current_span(),
                );
            }
            _ => self.notice(responses, err),
        }
    }
}

/// Answers on their way to the transport. Bounded like the requests that produce them:
/// with `MAX_IN_FLIGHT` answers queued (the client is not reading them), an answer
/// waits for room, which keeps its request in flight, which stops the connection from
/// being read.
#[derive(Default)]
struct Responses {
    queue: BatchQueue<Answers>,
    /// Answers waiting for room wait on this.
    room: Notify,
}

#[derive(Default)]
struct Answers {
    answers: Vec<Bytes>,
    /// No more answers will come: the writer writes this batch and finishes.
    closed: bool,
}

impl Batch for Answers {
    fn is_empty(&self) -> bool {
        self.answers.is_empty() && !self.closed
    }

    fn trim(&mut self) {
        syncline_core::batch::trim(&mut self.answers);
    }
}

impl Responses {
    /// Queues `answer` if there is room; gives it back if not.
    fn try_send(&self, answer: Bytes) -> Result<(), Bytes> {
        self.queue.add(|q| {
            if q.answers.len() >= MAX_IN_FLIGHT {
                return Err(answer);
            }
            q.answers.push(answer);
            Ok(())
        })
    }

    /// Queues `answer`, waiting for room first if the queue is full.
    async fn send(&self, mut answer: Bytes) {
        loop {
            // Registered before looking, so room made in between is not missed.
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_send(answer) {
                Ok(()) => return,
                Err(back) => answer = back,
            }
            room.await;
        }
    }

    fn close(&self) {
        self.queue.add(|q| q.closed = true);
    }

    /// Moves the queued answers into `batch` (empty) and makes room for waiting ones.
    fn take(&self, batch: &mut Answers) {
        self.queue.take(batch);
        if !batch.answers.is_empty() {
            self.room.notify_waiters();
        }
    }
}

/// Writes answers as they come, all that is pending in one go, until the batch that
/// carries the close.
async fn write_responses(
    mut writer: impl AnswerWriter,
    responses: Arc<Responses>,
) -> Result<(), String> {
    let mut batch = Answers::default();
    loop {
        responses.queue.ready().await;
        responses.take(&mut batch);
        writer.write(&mut batch.answers).await?;
        batch.answers.clear();
        if batch.closed {
            break;
        }
    }
    writer.finish().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_answer_queue_holds_the_next_answer_until_the_writer_takes_a_batch() {
        let responses = Arc::new(Responses::default());
        for i in 0..MAX_IN_FLIGHT {
            assert!(responses.try_send(Bytes::from(i.to_string())).is_ok());
        }
        assert!(
            responses.try_send(Bytes::from_static(b"notice")).is_err(),
            "full"
        );
        let waiting = tokio::spawn({
            let responses = responses.clone();
            async move { responses.send(Bytes::from_static(b"last")).await }
        });
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "an answer waits for room, it is not dropped"
        );

        let mut batch = Answers::default();
        responses.take(&mut batch);
        assert!(!batch.closed);
        assert_eq!(batch.answers.len(), MAX_IN_FLIGHT);
        assert_eq!(batch.answers[0], Bytes::from("0"), "in the order given");
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("room made by the writer wakes the waiting answer")
            .expect("the waiting task did not panic");

        batch.answers.clear();
        responses.close();
        responses.take(&mut batch);
        assert!(batch.closed, "the close comes with the last batch");
        assert_eq!(batch.answers, vec![Bytes::from_static(b"last")]);
    }
}
