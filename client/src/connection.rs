//! The connection: QUIC + TLS setup, `Hello`, the request stream (id-tagged requests,
//! answers in any order) and the event stream (frames routed by subscription id).
//!
//! A [`Client`] outlives its QUIC connections. Each connection is a `Link`; the
//! supervisor (`reconnect.rs`) replaces a lost one and publishes it, with the
//! connection's state, in `Core::status`, where requests wait for it.

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
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, warn};

use crate::reconnect::{ConnectionState, ReconnectPolicy, StateChanges, TokenProvider};
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

/// State changes kept for a `StateChanges` reader that is behind. Small: tokio's
/// broadcast channel allocates every slot up front, and load tools open thousands of
/// clients; a reader that far behind only needs the newest states anyway.
const STATE_CHANGES_BUFFER: usize = 16;

/// Where and how to connect, authenticate and reconnect.
///
/// ```no_run
/// # fn demo() -> Result<(), syncline_client::Error> {
/// use std::time::Duration;
/// use syncline_client::ClientConfig;
/// let config = ClientConfig::with_token("127.0.0.1:7400", "cert.pem", "")?
///     // Asked for a token now, before each expiry and after a TokenExpired close.
///     .with_token_provider(|| async { Ok(String::from("eyJ...")) })
///     .with_offline_wait(Duration::from_secs(2));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientConfig {
    /// The server's QUIC address.
    pub server: SocketAddr,
    /// Name checked against the server certificate.
    pub server_name: String,
    /// PEM of the certificate(s) to trust as CA.
    pub ca_pem: Vec<u8>,
    /// The API key or access token `Hello` sends first (an empty token with a token
    /// provider: the provider's).
    pub credential: Credential,
    /// Service (sid or unique name) for an API-key connection; ignored for tokens,
    /// which always act in their own service.
    pub service: Option<String>,
    /// The longest a request waits for its answer before failing with `Unavailable`
    /// (default `DEFAULT_REQUEST_TIMEOUT`): a server that stopped answering must not
    /// hang the caller until the connection's idle timeout, or forever.
    pub request_timeout: Duration,
    /// How long an operation issued while the client is disconnected waits for the
    /// connection before failing with `Unavailable` (default `DEFAULT_OFFLINE_WAIT`).
    pub offline_wait: Duration,
    /// Backoff and attempt limits for reconnecting.
    pub reconnect: ReconnectPolicy,
    /// Where fresh access tokens come from (`None`: the token in `credential` is all
    /// there is, and its expiry ends the client in `Denied`).
    pub token_provider: Option<TokenProvider>,
    /// How many writes may wait for the connection while disconnected (`None`, the
    /// default: none, writes fail after `offline_wait`); see
    /// [`ClientConfig::with_offline_writes`].
    pub offline_writes: Option<usize>,
}

/// How long an operation waits for a lost connection to come back, unless the config
/// says otherwise: long enough to ride out a server restart, short enough that an app
/// hears about an outage while its user still cares.
pub const DEFAULT_OFFLINE_WAIT: Duration = Duration::from_secs(5);

/// How long a request waits for its answer unless the config says otherwise. Generous:
/// under load (a reconnect storm, a flush stalled on a slow disk) answers take seconds.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl ClientConfig {
    /// A config for `server` (`host:port`), trusting the CA in `ca_file`.
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
            offline_wait: DEFAULT_OFFLINE_WAIT,
            reconnect: ReconnectPolicy::default(),
            token_provider: None,
            offline_writes: None,
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

    /// Sets how long operations wait for the connection while disconnected.
    pub fn with_offline_wait(mut self, wait: Duration) -> Self {
        self.offline_wait = wait;
        self
    }

    /// Queues up to `capacity` writes issued while the client is disconnected, instead
    /// of failing them after `offline_wait`, and sends them in order once it is
    /// connected again, before any write issued after that.
    ///
    /// Each queued write carries `if_match`: the write's own if given, else the revision
    /// of the newest replica this client holds for its target (a live [`Subscription`]'s:
    /// the document's or object's revision, an item's for list and map item writes, as
    /// the server compares them). If another writer changed that base meanwhile, the
    /// write comes back as [`Error::WriteConflict`] with what the app tried and what the
    /// server holds, and nothing is written. A write that would change existing data
    /// and has no known base (no subscription holds its target, no `if_match`) is not
    /// queued: it fails at once with `Unavailable`. List `push`, stream `publish` and
    /// `create` need no base and are queued as they are. A full queue fails the write
    /// at once with `Unavailable`.
    ///
    /// A queued write's future resolves once the write was sent and answered (spawn it
    /// to go on without waiting); dropping the future does not take the write back.
    /// Writes through a handle with [`Client::with_deadline`] are never queued: their
    /// deadline still applies. Reads still wait `offline_wait` and fail.
    ///
    /// [`Subscription`]: crate::Subscription
    pub fn with_offline_writes(mut self, capacity: usize) -> Self {
        self.offline_writes = Some(capacity);
        self
    }

    /// Sets how the client reconnects.
    pub fn with_reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Gets access tokens from `provider`: at connect when the config's token is
    /// empty, before each token expires (3 minutes before `exp`, or half-way through a
    /// shorter token) and before reconnecting after `TokenExpired` or `Unauthorized`.
    pub fn with_token_provider<F, Fut>(mut self, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<String>> + Send + 'static,
    {
        self.token_provider = Some(Arc::new(move || Box::pin(provider())));
        self
    }

    /// Acts on `service` (sid or unique name): API-key connections only.
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
        let provider = Arc::new(syncline_proto::tls::quic_crypto_provider());
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
        // Syncline's frames fit QUIC's 1,200-byte floor; probing for a larger MTU costs
        // each connection four padded probes and their ACKs (see ARCHITECTURE.md).
        transport.mtu_discovery_config(None);
        config.transport_config(Arc::new(transport));
        Ok(config)
    }
}

type Pending = Mutex<HashMap<u64, oneshot::Sender<std::result::Result<Response, WireError>>>>;

/// One QUIC connection, authenticated: its request stream, its pending requests and its
/// event routes. A [`Client`] replaces a lost link with a new one (see `reconnect.rs`);
/// subscriptions remember the link they were opened on, to tell a lost connection from
/// their own cut-off.
pub(crate) struct Link {
    conn: quinn::Connection,
    requests: mpsc::Sender<Bytes>,
    pending: Arc<Pending>,
    subs: Arc<Subs>,
    pub(crate) welcome: Welcome,
}

impl Link {
    /// Connects, sends `Hello` with `credential` and waits for `Welcome`.
    #[tracing::instrument(name = "link", skip_all, fields(server = %core.config.server))]
    async fn open(core: &Core, credential: Credential) -> Result<Link> {
        let config = &core.config;
        let conn = core
            .endpoint
            .connect(config.server, &config.server_name)
            .map_err(|e| Error::Connection(e.to_string()))?
            .await
            .map_err(|e| Error::from_connection(&e))?;
        let greeted = Self::greet(core, conn.clone(), credential).await;
        if greeted.is_err() {
            // The stream tasks keep a connection alive until its idle timeout; a link
            // that failed its Hello is of no use to anyone.
            conn.close(0u32.into(), b"hello failed");
        }
        greeted
    }

    /// Opens the request stream on `conn`, says `Hello` and waits for `Welcome`.
    async fn greet(core: &Core, conn: quinn::Connection, credential: Credential) -> Result<Link> {
        let config = &core.config;
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| Error::from_connection(&e))?;
        let (requests, request_rx) = mpsc::channel(1024);
        tokio::spawn(write_requests(send, request_rx));

        let pending: Arc<Pending> = Arc::default();
        let hello_id = core.next_id();
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

    fn close(&self, reason: &[u8]) {
        self.conn.close(0u32.into(), reason);
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

/// An `Unavailable` error with `message`.
pub(crate) fn unavailable(message: impl Into<String>) -> Error {
    Error::Server(WireError::new(ErrorCode::Unavailable, message))
}

/// What every handle of one client shares with its reconnecting supervisor.
pub(crate) struct Core {
    pub(crate) config: ClientConfig,
    endpoint: quinn::Endpoint,
    /// Request ids, from 1 (the server uses id 0 for errors tied to no request), unique
    /// across the client's connections.
    next_id: AtomicU64,
    /// The state and, when connected, the link; one watch so a waiter sees both change.
    pub(crate) status: watch::Sender<Status>,
    /// Every state change, for [`Client::state_changes`] (a watch would merge them).
    pub(crate) changes: broadcast::Sender<ConnectionState>,
    /// The credential the next `Hello` sends: the config's, or the latest token.
    pub(crate) credential: Mutex<Credential>,
    /// The last `Welcome` (kept across connections for [`Client::welcome`]).
    pub(crate) welcome: Mutex<Welcome>,
    /// Unix seconds of the current token's expiry (0: no token).
    pub(crate) token_expiry: watch::Sender<u64>,
    token_state: watch::Receiver<TokenState>,
    /// Set when the last client handle is dropped or [`Client::close`] is called.
    pub(crate) shutdown: watch::Sender<bool>,
    /// Writes waiting for the connection (with `offline_writes` only).
    pub(crate) offline: Option<crate::offline::Queue>,
    /// What live subscriptions know of revisions, for queued writes' bases.
    pub(crate) bases: crate::offline::Bases,
}

/// The connection's state and its link, as one value.
#[derive(Clone)]
pub(crate) struct Status {
    pub(crate) state: ConnectionState,
    pub(crate) link: Option<Arc<Link>>,
}

impl Core {
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Opens a link with the current credential, at most `connect_timeout`.
    pub(crate) async fn open_link(&self) -> Result<Link> {
        let credential = self
            .credential
            .lock()
            .map_err(|_| Error::Protocol("credential lock poisoned".into()))?
            .clone();
        let limit = self.config.reconnect.connect_timeout;
        let link = tokio::time::timeout(limit, Link::open(self, credential))
            .await
            .map_err(|_| Error::Connection(format!("no connection within {limit:?}")))??;
        if let Ok(mut w) = self.welcome.lock() {
            *w = link.welcome.clone();
        }
        self.token_expiry
            .send_replace(link.welcome.token_expires_at.unwrap_or(0));
        Ok(link)
    }

    /// Whether a live link is there now.
    pub(crate) fn connected(&self) -> bool {
        self.status
            .borrow()
            .link
            .as_ref()
            .is_some_and(|l| !l.is_closed())
    }

    /// Publishes a new state (and link).
    pub(crate) fn publish(&self, state: ConnectionState, link: Option<Arc<Link>>) {
        debug!(?state, "connection state");
        let _ = self.changes.send(state.clone());
        self.status.send_replace(Status { state, link });
    }

    /// The live link, waiting for one up to `limit` (forever with `None`) while the
    /// client reconnects. A terminal state fails at once with its reason.
    pub(crate) async fn wait_link(&self, limit: Option<Duration>) -> Result<Arc<Link>> {
        let mut rx = self.status.subscribe();
        let deadline = limit.map(|d| tokio::time::Instant::now() + d);
        loop {
            {
                let status = rx.borrow_and_update();
                if let Some(link) = status.link.as_ref().filter(|l| !l.is_closed()) {
                    return Ok(link.clone());
                }
                if let Some(e) = status.state.terminal_error() {
                    return Err(e);
                }
            }
            let changed = rx.changed();
            let changed = match deadline {
                Some(d) => match tokio::time::timeout_at(d, changed).await {
                    Ok(c) => c,
                    Err(_) => {
                        return Err(unavailable(format!(
                            "not connected to the server; waited {:?} for the connection",
                            limit.unwrap_or_default()
                        )))
                    }
                },
                None => changed.await,
            };
            if changed.is_err() {
                return Err(ConnectionState::Closed
                    .terminal_error()
                    .unwrap_or_else(|| Error::Connection("the client is gone".into())));
            }
        }
    }

    /// Stops for good: no more reconnects, the live connection closes.
    fn close(&self, reason: &[u8]) {
        self.shutdown.send_replace(true);
        let link = self.status.borrow().link.clone();
        if let Some(link) = link {
            link.close(reason);
        }
        self.publish(ConnectionState::Closed, None);
    }
}

/// Where the connection's access token stands, for apps that refresh it in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    /// Valid for more than 3 minutes (or an API-key connection).
    Valid,
    /// `token_about_to_expire`: 3 minutes or less left; call `update_token` (a client
    /// with a token provider does it by itself).
    AboutToExpire,
    /// `token_expired`: `exp` has passed; the server ends the connection once its clock
    /// skew allowance (`CLOCK_SKEW_S`, 60 s) has passed too, unless the token is updated.
    Expired,
}

/// How long before `exp` the client says the token is about to expire.
pub const TOKEN_WARNING_S: u64 = 180;

/// Follows the token's expiry and publishes its state as time passes.
async fn watch_token(mut expiry: watch::Receiver<u64>, state: watch::Sender<TokenState>) {
    loop {
        let exp = *expiry.borrow_and_update();
        let now = crate::token::now_s();
        let (current, next_change) = if exp == 0 {
            (TokenState::Valid, None)
        } else if now >= exp {
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

/// A client of a Syncline server. Cheap to clone; closes when the last clone drops.
///
/// It reconnects by itself after a lost connection (see [`ReconnectPolicy`]) and resumes
/// its subscriptions; [`Client::state`] and [`Client::state_changes`] say where it
/// stands. Operations issued while it is disconnected wait for the connection up to
/// [`ClientConfig::offline_wait`] (or [`Client::with_deadline`]) and then fail with
/// `Unavailable`, unless [`ClientConfig::with_offline_writes`] queues writes. A request in flight when the connection is lost fails (it may or may
/// not have been applied); it is not sent again.
///
/// ```no_run
/// # async fn demo() -> Result<(), syncline_client::Error> {
/// use std::time::Duration;
/// use syncline_client::{Client, ClientConfig, ConnectionState};
/// let config = ClientConfig::with_token("127.0.0.1:7400", "cert.pem", "eyJ...")?;
/// let client = Client::connect(config).await?;
/// assert_eq!(client.state(), ConnectionState::Connected);
/// // Fail fast, whatever the connection does: 2 s for this call, waiting included.
/// client.with_deadline(Duration::from_secs(2)).ping().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Handle>,
    /// Overall deadline for each operation through this handle (`with_deadline`).
    deadline: Option<Duration>,
}

/// Held by every `Client` clone; the last one dropped stops the supervisor.
pub(crate) struct Handle {
    pub(crate) core: Arc<Core>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.core.close(b"client dropped");
    }
}

impl Client {
    /// Connects and authenticates; fails if this first attempt fails (a wrong address,
    /// credential or CA is reported at once rather than retried). Later losses are
    /// reconnected by the client itself.
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

    /// A client that connects in the background: it returns at once, whether the server
    /// is reachable or not, and makes its first connection the way it reconnects (at
    /// once, then with backoff; see [`ReconnectPolicy`]). For an app that starts
    /// offline: with [`ClientConfig::with_offline_writes`] its writes queue and
    /// [`Client::resume`] hands back a subscription with the saved replica at once. A
    /// refused credential ends it in `Denied`, as after a reconnect
    /// ([`Client::state_changes`] says so); only an unusable config fails here.
    pub fn start(config: ClientConfig) -> Result<Client> {
        let endpoint = Self::endpoint_for(&config)?;
        let credential = config.credential.clone();
        let core = Self::core_for(config, endpoint, credential);
        tokio::spawn(crate::reconnect::supervise(core.clone(), None));
        Ok(Self::around(core))
    }

    /// Connects through an endpoint made by [`Client::endpoint_for`] (same server and CA;
    /// the credential may differ).
    pub async fn connect_via(config: ClientConfig, endpoint: quinn::Endpoint) -> Result<Client> {
        let mut credential = config.credential.clone();
        // A client built around a token provider may start without a token.
        if matches!(&credential, Credential::Token(t) if t.is_empty()) {
            if let Some(provider) = &config.token_provider {
                credential = Credential::Token(provider().await?);
            }
        }
        let core = Self::core_for(config, endpoint, credential);
        let link = match core.open_link().await {
            Ok(link) => link,
            // An expired token from the config: the provider is asked once, now.
            Err(e) if crate::reconnect::wants_fresh_token(&core, &e) => {
                crate::reconnect::refresh_credential(&core).await?;
                core.open_link().await?
            }
            Err(e) => return Err(e),
        };
        let link = Arc::new(link);
        core.publish(ConnectionState::Connected, Some(link.clone()));
        tokio::spawn(crate::reconnect::supervise(core.clone(), Some(link)));
        Ok(Self::around(core))
    }

    /// A client handle owning `core`, with its offline queue's sender if it has one.
    fn around(core: Arc<Core>) -> Client {
        if core.offline.is_some() {
            tokio::spawn(crate::offline::drain(core.clone()));
        }
        Client {
            inner: Arc::new(Handle { core }),
            deadline: None,
        }
    }

    fn core_for(
        config: ClientConfig,
        endpoint: quinn::Endpoint,
        credential: Credential,
    ) -> Arc<Core> {
        let placeholder = Welcome {
            connection_id: 0,
            identity: None,
            service_sid: String::new(),
            account_sid: String::new(),
            token_expires_at: None,
            max_frame_bytes: Limits::default().max_frame_bytes,
        };
        let (token_expiry, expiry_rx) = watch::channel(0);
        let (state_tx, token_state) = watch::channel(TokenState::Valid);
        tokio::spawn(watch_token(expiry_rx, state_tx));
        let (status, _) = watch::channel(Status {
            state: ConnectionState::Connecting,
            link: None,
        });
        Arc::new(Core {
            endpoint,
            next_id: AtomicU64::new(1),
            status,
            changes: broadcast::channel(STATE_CHANGES_BUFFER).0,
            credential: Mutex::new(credential),
            welcome: Mutex::new(placeholder),
            token_expiry,
            token_state,
            shutdown: watch::channel(false).0,
            offline: config.offline_writes.map(crate::offline::Queue::new),
            bases: crate::offline::Bases::default(),
            config,
        })
    }

    pub(crate) fn core(&self) -> &Core {
        &self.inner.core
    }

    /// Whether writes through this handle join the offline queue when disconnected.
    pub(crate) fn queues_writes(&self) -> bool {
        self.core().offline.is_some() && self.deadline.is_none()
    }

    /// A handle on the same client whose every operation (waiting for the connection
    /// included) fails with `Unavailable` after `deadline`.
    pub fn with_deadline(&self, deadline: Duration) -> Client {
        Client {
            inner: self.inner.clone(),
            deadline: Some(deadline),
        }
    }

    /// What the server said on the last `Hello`: connection id, identity, service, token
    /// expiry. A reconnect brings a new `Welcome` (another connection id).
    pub fn welcome(&self) -> Welcome {
        self.core()
            .welcome
            .lock()
            .map(|w| w.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The connection's state now.
    pub fn state(&self) -> ConnectionState {
        self.core().status.borrow().state.clone()
    }

    /// Every state change from now on, in order (see [`StateChanges`]).
    pub fn state_changes(&self) -> StateChanges {
        StateChanges::new(self.core().changes.subscribe())
    }

    /// The live link, waiting for the connection as this handle allows.
    pub(crate) async fn link(&self) -> Result<Arc<Link>> {
        let limit = self.deadline.unwrap_or(self.core().config.offline_wait);
        self.core().wait_link(Some(limit)).await
    }

    /// Sends one request and waits for its answer: first for the connection (while
    /// reconnecting), then for the answer (`request_timeout`), within this handle's
    /// deadline if it has one.
    pub(crate) async fn call(&self, request: Request) -> Result<Response> {
        let attempt = async {
            let link = self.link().await?;
            self.call_on(&link, request).await
        };
        match self.deadline {
            None => attempt.await,
            Some(d) => tokio::time::timeout(d, attempt).await.unwrap_or_else(|_| {
                Err(unavailable(format!(
                    "no answer within the deadline of {d:?}"
                )))
            }),
        }
    }

    /// Sends a write: as `call` does, unless offline writes are on and the client is
    /// disconnected (or still sending what it queued), when it joins the queue.
    pub(crate) async fn write(&self, request: Request) -> Result<Response> {
        let queue = match (&self.core().offline, self.deadline) {
            (Some(queue), None) => queue,
            _ => return self.call(request).await,
        };
        match queue.admit(self.core(), request)? {
            crate::offline::Admitted::Direct(request) => self.call(request).await,
            crate::offline::Admitted::Queued(answer) => answer.await.unwrap_or_else(|_| {
                Err(Error::Connection(
                    "the client stopped before sending the write".into(),
                ))
            }),
        }
    }

    /// Sends one request on a given link (a subscription's own).
    pub(crate) async fn call_on(&self, link: &Link, request: Request) -> Result<Response> {
        let core = self.core();
        link.call(core.next_id(), request, core.config.request_timeout)
            .await
    }

    /// Whether the client has stopped for good ([`Client::close`], or `Denied`).
    pub fn is_closed(&self) -> bool {
        self.state().terminal_error().is_some()
    }

    /// Round trip to the server.
    pub async fn ping(&self) -> Result<()> {
        match self.call(Request::Ping).await? {
            Response::Pong => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The live connection's transport counters (datagrams, frames, RTT, losses), or
    /// `None` while disconnected: for diagnostics, and for tests of what goes on the wire.
    pub fn transport_stats(&self) -> Option<quinn::ConnectionStats> {
        let status = self.core().status.borrow();
        status
            .link
            .as_ref()
            .filter(|l| !l.is_closed())
            .map(|l| l.conn.stats())
    }

    /// Swaps in a fresh token for the same identity; subscriptions carry on, and later
    /// reconnects use it. A client with a token provider does this by itself.
    pub async fn update_token(&self, token: &str) -> Result<u64> {
        let link = self.link().await?;
        let expires_at = crate::reconnect::update_token(self.core(), &link, token).await?;
        Ok(expires_at)
    }

    /// The token's state (`AboutToExpire` 3 minutes before `exp`, then `Expired`); await
    /// `changed()` on it to hear when to refresh with `update_token`.
    pub fn token_events(&self) -> watch::Receiver<TokenState> {
        self.core().token_state.clone()
    }

    /// Waits until the current connection closes, and says why (`TokenExpired`, the
    /// server going away, ...). The client then reconnects by itself unless that close
    /// was terminal; see [`Client::state_changes`] to follow it.
    pub async fn closed(&self) -> Error {
        let link = self.core().status.borrow().link.clone();
        match link {
            Some(link) => link.closed().await,
            None => self
                .state()
                .terminal_error()
                .unwrap_or_else(|| Error::Connection("not connected".into())),
        }
    }

    /// Closes the connection now and stops reconnecting; operations fail from then on.
    pub fn close(&self) {
        self.core().close(b"client closed");
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
