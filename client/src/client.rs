//! The app's handle: [`Client`] connects (or starts offline), says where its connection
//! stands, and sends requests, waiting for a link within its deadlines. It ties the
//! layers below together: the connection core, its supervisor (`reconnect.rs`) and the
//! offline write queue (`offline.rs`). The object handles and subscriptions build on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use syncline_proto::{Credential, NodeInfo, Request, Response, Welcome};
use tokio::sync::watch;

use crate::config::ClientConfig;
use crate::connection::{ConnectionState, Core, StateChanges, TokenState};
use crate::link::Link;
use crate::offline::{self, Admitted, Queue};
use crate::reconnect;
use crate::{unavailable, unexpected, Error, Result};

/// Receive buffer asked for on the client's UDP socket.
const CLIENT_UDP_RECV_BUFFER: usize = 4 * 1024 * 1024;

/// A client of a Syncline server. Cheap to clone; closes when the last clone drops.
///
/// It reconnects by itself after a lost connection (see [`ReconnectPolicy`]) and resumes
/// its subscriptions; [`Client::state`] and [`Client::state_changes`] say where it
/// stands. Operations issued while it is disconnected wait for the connection up to
/// [`ClientConfig::offline_wait`] (or [`Client::with_deadline`]) and then fail with
/// `Unavailable`, unless [`ClientConfig::with_offline_writes`] queues writes. A request
/// in flight when the connection is lost fails (it may or may not have been applied);
/// it is not sent again.
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
///
/// [`ReconnectPolicy`]: crate::ReconnectPolicy
#[derive(Clone)]
pub struct Client {
    inner: Arc<Handle>,
    /// Overall deadline for each operation through this handle (`with_deadline`).
    deadline: Option<Duration>,
}

/// Held by every `Client` clone; the last one dropped stops the supervisor.
struct Handle {
    core: Arc<Core>,
    /// Writes waiting for the connection (with `offline_writes` only).
    offline: Option<Arc<Queue>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.core.close(b"client dropped");
    }
}

impl Client {
    /// Connects and authenticates; fails if this first attempt fails (a wrong address,
    /// credential or CA is reported at once rather than retried). Later losses are
    /// reconnected by the client itself, to another node of the installation when its
    /// own does not come back (see [`Client::node`]). With
    /// [`ClientConfig::with_nodes`], the first attempt is one round over the configured
    /// server and those nodes, and fails only if none of them welcomes the client.
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
    ///
    /// [`ReconnectPolicy`]: crate::ReconnectPolicy
    pub fn start(config: ClientConfig) -> Result<Client> {
        let endpoint = Self::endpoint_for(&config)?;
        let credential = config.credential.clone();
        let core = Core::new(config, endpoint, credential);
        tokio::spawn(reconnect::supervise(core.clone(), None));
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
        let core = Core::new(config, endpoint, credential);
        let link = match reconnect::connect_round(&core, false).await {
            Ok(link) => link,
            // An expired token from the config: the provider is asked once, now.
            Err(e) if reconnect::wants_fresh_token(&core, &e) => {
                reconnect::refresh_credential(&core).await?;
                reconnect::connect_round(&core, false).await?
            }
            Err(e) => return Err(e),
        };
        let link = Arc::new(link);
        core.adopt(&link);
        core.publish(ConnectionState::Connected, Some(link.clone()));
        tokio::spawn(reconnect::supervise(core.clone(), Some(link)));
        Ok(Self::around(core))
    }

    /// A client handle owning `core`, with its offline queue and the queue's sender if
    /// the config asks for offline writes.
    fn around(core: Arc<Core>) -> Client {
        let offline = core
            .config
            .offline_writes
            .map(|capacity| Arc::new(Queue::new(capacity)));
        if let Some(queue) = &offline {
            tokio::spawn(offline::drain(core.clone(), queue.clone()));
        }
        Client {
            inner: Arc::new(Handle { core, offline }),
            deadline: None,
        }
    }

    pub(crate) fn core(&self) -> &Core {
        &self.inner.core
    }

    /// The offline write queue, when the config turned it on.
    pub(crate) fn offline(&self) -> Option<&Queue> {
        self.inner.offline.as_deref()
    }

    /// Whether writes through this handle join the offline queue when disconnected.
    pub(crate) fn queues_writes(&self) -> bool {
        self.offline().is_some() && self.deadline.is_none()
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

    /// The node of the installation the client is connected to, or was last: as the
    /// node listed itself (`id`, `https`) once it answered `Nodes`, with `quic` the
    /// address this client reached it at; before that answer (or from a server that
    /// does not answer `Nodes`) its address alone, `id` empty. `None` before the first
    /// connection.
    ///
    /// After each `Welcome` the client asks its node for the installation's live nodes.
    /// When the connection is lost, each reconnect round tries the current node first
    /// (last in the first round when the node closed the connection as going away),
    /// then the others it was told of, then the configured server and
    /// [`ClientConfig::with_nodes`], the next node joining when the others have failed
    /// or gone [`ReconnectPolicy::failover_after`] unanswered; subscriptions resume from
    /// their replicas' revisions on whichever node welcomes it, and queued offline
    /// writes go out there.
    ///
    /// [`ReconnectPolicy::failover_after`]: crate::ReconnectPolicy::failover_after
    pub fn node(&self) -> Option<NodeInfo> {
        match self.core().nodes.lock() {
            Ok(nodes) => nodes.current(),
            Err(p) => p.into_inner().current(),
        }
    }

    /// Asks the connected node for the installation's live nodes (itself first; one
    /// node, id `local`, for a single server) and keeps the answer for failing over,
    /// as the client does by itself after each `Welcome`. `InvalidArgument` from a
    /// server older than the request.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        self.within_deadline(async {
            let link = self.link().await?;
            match self.call_on(&link, Request::Nodes).await? {
                Response::Nodes(nodes) => {
                    self.core().learn_nodes(&link.target, nodes.clone());
                    Ok(nodes)
                }
                other => Err(unexpected(other)),
            }
        })
        .await
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
        self.within_deadline(async {
            let link = self.link().await?;
            self.call_on(&link, request).await
        })
        .await
    }

    /// `attempt`, failing with `Unavailable` past this handle's deadline if it has one.
    async fn within_deadline<T>(
        &self,
        attempt: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
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
        let queue = match (self.offline(), self.deadline) {
            (Some(queue), None) => queue,
            _ => return self.call(request).await,
        };
        match queue.admit(self.core(), request)? {
            Admitted::Direct(request) => self.call(request).await,
            Admitted::Queued(answer) => answer.await.unwrap_or_else(|_| {
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
            .map(|l| l.stats())
    }

    /// Swaps in a fresh token for the same identity; subscriptions carry on, and later
    /// reconnects use it. A client with a token provider does this by itself.
    pub async fn update_token(&self, token: &str) -> Result<u64> {
        let link = self.link().await?;
        let expires_at = reconnect::update_token(self.core(), &link, token).await?;
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

    /// `close`, then waits (at most a second) until the server has been told: a process
    /// about to exit calls this, or the server keeps the connection, and an identity's
    /// presence, until its idle timeout (30 s).
    pub async fn shutdown(&self) {
        self.close();
        self.core()
            .wait_closed(std::time::Duration::from_secs(1))
            .await;
    }
}
