//! The connection: QUIC + TLS setup, `Hello`, the request stream (id-tagged requests,
//! answers in any order) and the event stream (frames routed by subscription id).

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use syncline_proto::frame::{self, FrameDecoder, LEN_PREFIX};
use syncline_proto::{
    Credential, ErrorCode, Event, EventFrameHeader, Limits, Request, RequestFrame, Response,
    ResponseFrame, Welcome, WireError,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::{AdminConfig, Error, Result};

/// Receive buffer asked for on the client's UDP socket.
const CLIENT_UDP_RECV_BUFFER: usize = 4 * 1024 * 1024;

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

/// Where and how to connect.
#[derive(Clone)]
pub struct ClientConfig {
    pub server: SocketAddr,
    /// Name checked against the server certificate.
    pub server_name: String,
    /// PEM of the certificate(s) to trust as CA.
    pub ca_pem: Vec<u8>,
    pub credential: Credential,
    /// Service (sid or unique name) for an API-key connection; ignored for tokens,
    /// which always act in their own service.
    pub service: Option<String>,
    /// The longest a request waits for its answer before failing with `Unavailable`
    /// (default `DEFAULT_REQUEST_TIMEOUT`): a server that stopped answering must not
    /// hang the caller until the connection's idle timeout, or forever.
    pub request_timeout: Duration,
}

/// How long a request waits for its answer unless the config says otherwise. Generous:
/// under load (a reconnect storm, a flush stalled on a slow disk) answers take seconds.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl ClientConfig {
    pub fn new(server: &str, ca_file: impl AsRef<Path>, credential: Credential) -> Result<Self> {
        let ca_file = ca_file.as_ref();
        let ca_pem = std::fs::read(ca_file).map_err(|e| {
            Error::Config(format!("cannot read CA file {}: {e}", ca_file.display()))
        })?;
        let addr = server
            .to_socket_addrs()
            .map_err(|e| Error::Config(format!("server address {server:?}: {e}")))?
            .next()
            .ok_or_else(|| {
                Error::Config(format!("server address {server:?} resolves to nothing"))
            })?;
        let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(ClientConfig {
            server: addr,
            server_name: host.to_owned(),
            ca_pem,
            credential,
            service: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// Connects as an identity with an access token.
    pub fn with_token(server: &str, ca_file: impl AsRef<Path>, token: &str) -> Result<Self> {
        Self::new(server, ca_file, Credential::Token(token.to_owned()))
    }

    /// Connects as the backend with the admin key from `admin.json`.
    pub fn from_admin(admin: &AdminConfig) -> Result<Self> {
        Self::new(
            &admin.server,
            &admin.ca_file,
            Credential::ApiKey {
                sid: admin.api_key_sid.clone(),
                secret: admin.api_key_secret.clone(),
            },
        )
    }

    /// Sets how long each request waits for its answer (see `request_timeout`).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    /// The quinn client configuration (TLS 1.3, the CA, ALPN `syncline/1`).
    pub fn quinn_config(&self) -> Result<quinn::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca_pem) {
            let cert = cert.map_err(|e| Error::Config(format!("CA file: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| Error::Config(format!("CA certificate: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![syncline_proto::ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| Error::Config(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(Duration::from_secs(10)));
        config.transport_config(Arc::new(transport));
        Ok(config)
    }
}

type Pending = Mutex<HashMap<u64, oneshot::Sender<std::result::Result<Response, WireError>>>>;

pub(crate) struct Inner {
    conn: quinn::Connection,
    _endpoint: quinn::Endpoint,
    requests: mpsc::Sender<Bytes>,
    pending: Arc<Pending>,
    subs: Arc<Subs>,
    /// Request ids, from 1: the server uses id 0 for errors tied to no request.
    next_id: AtomicU64,
    welcome: Welcome,
    request_timeout: Duration,
    /// Unix seconds of the current token's expiry (0: no token).
    token_expiry: tokio::sync::watch::Sender<u64>,
    token_state: tokio::sync::watch::Receiver<TokenState>,
}

/// Where the connection's access token stands, for apps that refresh it in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    /// Valid for more than 3 minutes (or an API-key connection).
    Valid,
    /// `token_about_to_expire`: 3 minutes or less left; call `update_token`.
    AboutToExpire,
    /// `token_expired`: `exp` has passed; the server ends the connection once its clock
    /// skew allowance (`CLOCK_SKEW_S`, 60 s) has passed too, unless the token is updated.
    Expired,
}

/// How long before `exp` the client says the token is about to expire.
pub const TOKEN_WARNING_S: u64 = 180;

/// Follows the token's expiry and publishes its state as time passes.
async fn watch_token(
    mut expiry: tokio::sync::watch::Receiver<u64>,
    state: tokio::sync::watch::Sender<TokenState>,
) {
    loop {
        let exp = *expiry.borrow_and_update();
        if exp == 0 {
            return;
        }
        let now = crate::token::now_s();
        let (current, next_change) = if now >= exp {
            (TokenState::Expired, None)
        } else if now + TOKEN_WARNING_S >= exp {
            (TokenState::AboutToExpire, Some(exp - now))
        } else {
            (TokenState::Valid, Some(exp - TOKEN_WARNING_S - now))
        };
        state.send_if_modified(|s| std::mem::replace(s, current) != current);
        let wait = async {
            match next_change {
                Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = wait => {}
            changed = expiry.changed() => if changed.is_err() { return },
        }
    }
}

/// A connection to a Syncline server. Cheap to clone; closes when the last clone drops.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl Client {
    /// Connects and authenticates.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        let endpoint = Self::endpoint_for(&config)?;
        Self::connect_via(config, endpoint).await
    }

    /// A client UDP endpoint suitable for `config`'s server, to share between many
    /// connections with [`Client::connect_via`] (load tools open thousands).
    pub fn endpoint_for(config: &ClientConfig) -> Result<quinn::Endpoint> {
        let bind: SocketAddr = if config.server.is_ipv6() {
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
        } else {
            SocketAddr::from(([0, 0, 0, 0], 0))
        };
        let socket_err =
            |e: std::io::Error| Error::Connection(format!("cannot open a UDP socket: {e}"));
        // The OS default (~208 KiB) drops bursts of events when many subscriptions share
        // a socket.
        let socket = crate::udp::bind_udp(bind, CLIENT_UDP_RECV_BUFFER, CLIENT_UDP_RECV_BUFFER)
            .map_err(socket_err)?
            .socket;
        let mut endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(socket_err)?;
        // One TLS configuration per endpoint, so that reconnects resume TLS sessions.
        endpoint.set_default_client_config(config.quinn_config()?);
        Ok(endpoint)
    }

    /// Connects through an endpoint made by [`Client::endpoint_for`] (same server and CA;
    /// the credential may differ).
    pub async fn connect_via(config: ClientConfig, endpoint: quinn::Endpoint) -> Result<Client> {
        let conn = endpoint
            .connect(config.server, &config.server_name)
            .map_err(|e| Error::Connection(e.to_string()))?
            .await
            .map_err(|e| Error::from_connection(&e))?;
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| Error::from_connection(&e))?;
        let (requests, request_rx) = mpsc::channel(1024);
        tokio::spawn(write_requests(send, request_rx));

        let pending: Arc<Pending> = Arc::default();
        let next_id = AtomicU64::new(1);
        let hello_id = next_id.fetch_add(1, Ordering::Relaxed);
        // The Hello goes out before anything else can be sent. The server's frame limit
        // is not known before its Welcome: assume the default.
        let hello = frame::encode(&RequestFrame {
            id: hello_id,
            request: Request::Hello {
                credential: config.credential.clone(),
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
        let (token_expiry, expiry_rx) =
            tokio::sync::watch::channel(welcome.token_expires_at.unwrap_or(0));
        let (state_tx, token_state) = tokio::sync::watch::channel(TokenState::Valid);
        tokio::spawn(watch_token(expiry_rx, state_tx));
        debug!(connection_id = welcome.connection_id, "connected");
        Ok(Client {
            inner: Arc::new(Inner {
                conn,
                _endpoint: endpoint,
                requests,
                pending,
                subs,
                next_id,
                welcome,
                request_timeout: config.request_timeout,
                token_expiry,
                token_state,
            }),
        })
    }

    /// What the server said on `Hello`: connection id, identity, service, token expiry.
    pub fn welcome(&self) -> &Welcome {
        &self.inner.welcome
    }

    /// Sends one request and waits for its answer. A request over the server's frame
    /// limit is refused here (`TooLarge`), unsent: the server could only refuse it.
    pub(crate) async fn call(&self, request: Request) -> Result<Response> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = frame::encode(&RequestFrame { id, request });
        check_request_size(&frame, self.inner.welcome.max_frame_bytes)?;
        let (tx, rx) = oneshot::channel();
        self.inner
            .pending
            .lock()
            .map_err(|_| Error::Protocol("pending table poisoned".into()))?
            .insert(id, tx);
        if self.inner.requests.send(frame).await.is_err() {
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
            e = self.inner.conn.closed() => Err(Error::from_connection(&e)),
            _ = tokio::time::sleep(self.inner.request_timeout) => {
                self.forget_pending(id);
                Err(Error::Server(syncline_proto::WireError::new(
                    syncline_proto::ErrorCode::Unavailable,
                    format!("no answer from the server within {:?}", self.inner.request_timeout),
                )))
            }
        }
    }

    fn forget_pending(&self, id: u64) {
        if let Ok(mut p) = self.inner.pending.lock() {
            p.remove(&id);
        }
    }

    /// Why no answer can come now that the response stream has ended: the connection's
    /// close reason, waited for briefly (the server closes just after ending the stream).
    async fn ended_error(&self) -> Error {
        match tokio::time::timeout(CLOSE_REASON_WAIT, self.inner.conn.closed()).await {
            Ok(e) => Error::from_connection(&e),
            Err(_) => self.closed_error(),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.inner.conn.close_reason().is_some()
    }

    pub(crate) fn closed_or_lost(&self) -> Error {
        self.closed_error()
    }

    fn closed_error(&self) -> Error {
        self.inner
            .conn
            .close_reason()
            .map(|e| Error::from_connection(&e))
            .unwrap_or_else(|| Error::Connection("connection lost".into()))
    }

    /// Round trip to the server.
    pub async fn ping(&self) -> Result<()> {
        match self.call(Request::Ping).await? {
            Response::Pong => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Swaps in a fresh token for the same identity; subscriptions carry on.
    pub async fn update_token(&self, token: &str) -> Result<u64> {
        match self
            .call(Request::UpdateToken {
                token: token.to_owned(),
            })
            .await?
        {
            Response::TokenUpdated { expires_at } => {
                self.inner.token_expiry.send_replace(expires_at);
                Ok(expires_at)
            }
            other => Err(unexpected(other)),
        }
    }

    /// The token's state (`AboutToExpire` 3 minutes before `exp`, then `Expired`); await
    /// `changed()` on it to hear when to refresh with `update_token`.
    pub fn token_events(&self) -> tokio::sync::watch::Receiver<TokenState> {
        self.inner.token_state.clone()
    }

    /// Waits until the connection is closed, and says why.
    pub async fn closed(&self) -> Error {
        Error::from_connection(&self.inner.conn.closed().await)
    }

    pub(crate) async fn connection_closed(&self) {
        self.inner.conn.closed().await;
    }

    /// Closes the connection now.
    pub fn close(&self) {
        self.inner.conn.close(0u32.into(), b"client closed");
    }

    pub(crate) fn register_subscription(&self, sub_id: u64) -> Result<mpsc::Receiver<Event>> {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        self.inner
            .subs
            .lock()
            .map_err(|_| Error::Protocol("subscription table poisoned".into()))?
            .insert(sub_id, tx);
        Ok(rx)
    }

    pub(crate) fn next_sub_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn forget_subscription(&self, sub_id: u64) {
        if let Ok(mut subs) = self.inner.subs.lock() {
            subs.remove(&sub_id);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.conn.close(0u32.into(), b"client dropped");
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

pub(crate) fn unexpected(r: Response) -> Error {
    Error::Protocol(format!("unexpected response {r:?}"))
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
