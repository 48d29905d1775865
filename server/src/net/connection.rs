//! One QUIC connection: accept its request stream, authenticate its core session, run
//! requests (concurrently after `Hello`), write answers in batches, run the session's
//! watch on the event stream, and close with the right code when the session ends (its
//! token expired, its key was revoked, its service deleted), the client misbehaves or
//! the server shuts down.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use syncline_core::auth::Login;
use syncline_core::batch::{Batch, BatchQueue};
use syncline_core::metrics::Edge;
use syncline_core::session::Session;
use syncline_core::{Core, Ending};
use syncline_proto::frame::{self, FrameDecoder, FrameError};
use syncline_proto::{
    close_code, Credential, ErrorCode, Request, RequestFrame, Response, ResponseFrame, Welcome,
    WireError,
};
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinSet;
use tracing::{debug, info, info_span, Instrument};

use super::events::{close_code_of, QuicSink};
use super::request;

/// Time a new connection has to open its request stream and authenticate. Generous:
/// during a reconnect storm the client may take seconds just to get scheduled.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests of one connection handled at once; past this the connection is not read.
const MAX_IN_FLIGHT: usize = 256;
/// Time accepted requests get to finish and be answered when a connection closes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one incoming connection until it ends.
pub async fn serve(incoming: quinn::Incoming, core: Core, shutdown: watch::Receiver<bool>) {
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
        std::sync::Arc::new(move |ending: Ending| {
            conn.close(close_code_of(ending.code).into(), ending.reason.as_bytes())
        })
    });
    let span = info_span!("conn", id = session.id(), %remote);
    async move {
        debug!("connected");
        let (ended, mut ended_rx) = oneshot::channel();
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
        let (code, reason) = run_requests(&conn, &session, &core, &mut ended_rx, shutdown).await;
        session.close();
        conn.close(code.into(), reason.as_bytes());
        debug!(code, reason, "closed");
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

fn respond(id: u64, result: Result<Response, WireError>) -> Bytes {
    frame::encode(&ResponseFrame { id, result })
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

async fn run_requests(
    conn: &quinn::Connection,
    session: &Arc<Session>,
    core: &Core,
    ended: &mut oneshot::Receiver<Ending>,
    mut shutdown: watch::Receiver<bool>,
) -> (u32, &'static str) {
    let (send, mut recv) = tokio::select! {
        s = conn.accept_bi() => match s {
            Ok(s) => s,
            Err(_) => return (close_code::NORMAL, "closed"),
        },
        _ = tokio::time::sleep(OPEN_TIMEOUT) => {
            return (close_code::PROTOCOL_ERROR, "no request stream opened");
        }
        _ = syncline_core::shutdown_requested(&mut shutdown) => return (close_code::GOING_AWAY, "server shutting down"),
    };
    let responses = Arc::new(Responses::default());
    let writer = tokio::spawn(write_responses(send, responses.clone()).in_current_span());
    let mut decoder = FrameDecoder::new(core.limits().max_frame_bytes);
    let mut in_flight = JoinSet::new();
    let mut close: Option<(u32, &'static str)> = None;
    let mut watching = true;
    let hello_deadline = tokio::time::Instant::now() + OPEN_TIMEOUT;

    'read: while close.is_none() {
        let hello_due = async {
            if session.is_authenticated() {
                std::future::pending::<()>().await
            }
            tokio::time::sleep_until(hello_deadline).await
        };
        tokio::select! {
            // At the in-flight limit the connection is not read until requests finish;
            // expiry and shutdown are still heard.
            chunk = recv.read_chunk(64 * 1024, true), if in_flight.len() < MAX_IN_FLIGHT => {
                let chunk = match chunk {
                    Ok(Some(c)) => c,
                    Ok(None) | Err(_) => break 'read,
                };
                decoder.extend(&chunk.bytes);
                loop {
                    let body = match decoder.next_frame() {
                        Ok(Some(b)) => b,
                        Ok(None) => break,
                        Err(FrameError::TooLarge { len, max, head }) => {
                            // Answered to the request it carries, if its id is readable.
                            let id = frame::peek_request_id(&head);
                            info!(len, max, ?id, "refused oversized frame");
                            let err = WireError::new(
                                ErrorCode::TooLarge,
                                format!("frame of {len} bytes exceeds the limit of {max} bytes"),
                            );
                            answer_error(&mut in_flight, &responses, id, err);
                            continue;
                        }
                        Err(e) => {
                            notice(&responses, WireError::invalid(e.to_string()));
                            continue;
                        }
                    };
                    let RequestFrame { id, request } = match frame::decode(&body, decoder.max()) {
                        Ok(f) => f,
                        Err(e) => {
                            let id = frame::peek_request_id(&body);
                            info!(error = %e, ?id, "malformed request frame");
                            let err = WireError::invalid(format!("malformed request frame: {e}"));
                            answer_error(&mut in_flight, &responses, id, err);
                            continue;
                        }
                    };
                    // Id 0 is the notices' (answers tied to no request): a request
                    // numbered 0 would get an answer the client cannot tell from one.
                    if id == 0 {
                        notice(&responses, WireError::invalid(
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
                            responses.send(respond(id, Err(e))).await;
                            close = Some((close_code::UNAUTHORIZED, "authentication failed"));
                            break;
                        };
                        // Boxed: awaited here, inline, its state would be part of this
                        // future for the connection's whole life.
                        let result = Box::pin(hello(session, core, credential, service)).await;
                        let refused = result.as_ref().err().map(|e| e.code);
                        if let Err(e) = &result {
                            info!(code = %e.code, "hello refused: {}", e.message);
                        }
                        responses.send(respond(id, result)).await;
                        match refused {
                            Some(ErrorCode::RateLimited) | None => {}
                            Some(code) => {
                                let code = if code == ErrorCode::TokenExpired {
                                    close_code::TOKEN_EXPIRED
                                } else {
                                    close_code::UNAUTHORIZED
                                };
                                close = Some((code, "authentication failed"));
                                break;
                            }
                        }
                        continue;
                    }
                    let session = session.clone();
                    let core = core.clone();
                    let responses = responses.clone();
                    in_flight.spawn(
                        async move {
                            let result = handle(&session, &core, request).await;
                            if let Err(e) = &result {
                                debug!(id, code = %e.code, "request failed: {}", e.message);
                            }
                            responses.send(respond(id, result)).await;
                        }
                        .instrument(info_span!("request", id)),
                    );
                }
            }
            ending = &mut *ended, if watching => {
                watching = false;
                // An error: the watch stopped without ending the session (its event
                // stream failed); requests go on as before.
                if let Ok(ending) = ending {
                    if ending.code == ErrorCode::TokenExpired {
                        notice(&responses, WireError::new(ErrorCode::TokenExpired, "token has expired"));
                    }
                    close = Some((close_code_of(ending.code), ending.reason));
                }
            }
            _ = hello_due => {
                close = Some((close_code::UNAUTHORIZED, "no Hello in time"));
            }
            _ = syncline_core::shutdown_requested(&mut shutdown) => {
                close = Some((close_code::GOING_AWAY, "server shutting down"));
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
    close.unwrap_or((close_code::NORMAL, "closed"))
}

/// An error not tied to a request (id 0): token expiry, a frame whose request id cannot
/// be read. Clients fail every pending request with it. Best effort: dropped if the
/// client is not reading its answers.
fn notice(responses: &Responses, err: WireError) {
    let _ = responses.try_send(respond(0, Err(err)));
}

/// The answer to a frame that was refused before it became a request (oversized, or
/// undecodable): to the request whose id could be read from it, as an answer like any
/// other (counted in flight, never dropped), else as a notice with id 0.
fn answer_error(
    in_flight: &mut JoinSet<()>,
    responses: &Arc<Responses>,
    id: Option<u64>,
    err: WireError,
) {
    match id {
        Some(id) if id != 0 => {
            let responses = responses.clone();
            in_flight.spawn(
                async move {
                    responses.send(respond(id, Err(err))).await;
                }
                .in_current_span(),
            );
        }
        _ => notice(responses, err),
    }
}

/// Answers on their way to the request stream. Bounded like the requests that produce
/// them: with `MAX_IN_FLIGHT` answers queued (the client is not reading them), an answer
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
    mut send: quinn::SendStream,
    responses: Arc<Responses>,
) -> Result<(), quinn::WriteError> {
    let mut batch = Answers::default();
    loop {
        responses.queue.ready().await;
        responses.take(&mut batch);
        send.write_all_chunks(&mut batch.answers).await?;
        batch.answers.clear();
        if batch.closed {
            break;
        }
    }
    let _ = send.finish();
    // Closing the connection discards unsent data: give the last answers (an auth error,
    // say) a moment to be acknowledged first.
    let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
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
