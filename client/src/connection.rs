//! The connection core: what every handle of one client shares with its supervisor.
//! [`Core`] holds the config, the current [`Link`] and the [`ConnectionState`] in one
//! watch channel, where requests wait for a link while the client reconnects; and the
//! token's expiry, published as [`TokenState`].
//!
//! A [`Client`] outlives its QUIC connections: the supervisor (`reconnect.rs`) replaces
//! a lost link and publishes it here.
//!
//! [`Client`]: crate::Client

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use syncline_proto::{Credential, ErrorCode, Limits, NodeInfo, Welcome};
use tokio::sync::{broadcast, watch};
use tracing::debug;

use crate::config::ClientConfig;
use crate::link::Link;
use crate::nodes::{NodeBook, Target};
use crate::{unavailable, Error, Result};

/// State changes kept for a `StateChanges` reader that is behind. Small: tokio's
/// broadcast channel allocates every slot up front, and load tools open thousands of
/// clients; a reader that far behind only needs the newest states anyway.
const STATE_CHANGES_BUFFER: usize = 16;

/// What every handle of one client shares with its reconnecting supervisor.
pub(crate) struct Core {
    pub(crate) config: ClientConfig,
    endpoint: quinn::Endpoint,
    /// Request ids, from 1 (the server uses id 0 for errors tied to no request), unique
    /// across the client's connections.
    next_id: AtomicU64,
    /// The state and, when connected, the link; one watch so a waiter sees both change.
    pub(crate) status: watch::Sender<Status>,
    /// Every state change, for [`Client::state_changes`](crate::Client::state_changes)
    /// (a watch would merge them).
    pub(crate) changes: broadcast::Sender<ConnectionState>,
    /// The credential the next `Hello` sends: the config's, or the latest token.
    pub(crate) credential: Mutex<Credential>,
    /// The last `Welcome` (kept across connections for
    /// [`Client::welcome`](crate::Client::welcome)).
    pub(crate) welcome: Mutex<Welcome>,
    /// Unix seconds of the current token's expiry (0: no token).
    pub(crate) token_expiry: watch::Sender<u64>,
    /// Where the token stands, for [`Client::token_events`](crate::Client::token_events).
    pub(crate) token_state: watch::Receiver<TokenState>,
    /// Set when the last client handle is dropped or
    /// [`Client::close`](crate::Client::close) is called.
    pub(crate) shutdown: watch::Sender<bool>,
    /// The installation's nodes as far as the client knows them, and its current one.
    pub(crate) nodes: Mutex<NodeBook>,
}

/// The connection's state and its link, as one value.
#[derive(Clone)]
pub(crate) struct Status {
    pub(crate) state: ConnectionState,
    pub(crate) link: Option<Arc<Link>>,
}

impl Core {
    /// A core for `config`, not connected yet, whose first `Hello` sends `credential`.
    pub(crate) fn new(
        config: ClientConfig,
        endpoint: quinn::Endpoint,
        credential: Credential,
    ) -> Arc<Core> {
        let configured = Target {
            addr: config.server.to_string(),
            name: config.server_name.clone(),
        };
        // `with_nodes` checked them; one that is not usable is left out.
        let extra: Vec<Target> = config
            .nodes
            .iter()
            .filter_map(|n| Target::advertised(n))
            .collect();
        let nodes = Mutex::new(NodeBook::new(configured, &extra));
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
            nodes,
            config,
        })
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Opens a link to `target` with the current credential, at most `connect_timeout`
    /// (name resolution included). Changes nothing in the core: the caller adopts the
    /// link it keeps.
    pub(crate) async fn dial(&self, target: &Target) -> Result<Link> {
        let credential = self
            .credential
            .lock()
            .map_err(|_| Error::Protocol("credential lock poisoned".into()))?
            .clone();
        let limit = self.config.reconnect.connect_timeout;
        let attempt = async {
            let addr = self.resolve(target).await?;
            Link::open(
                &self.endpoint,
                &self.config,
                target,
                addr,
                credential,
                self.next_id(),
            )
            .await
        };
        tokio::time::timeout(limit, attempt).await.map_err(|_| {
            Error::Connection(format!("{}: no connection within {limit:?}", target.addr))
        })?
    }

    /// Where to send `target`'s packets: its address, or its name resolved now (an
    /// address of the endpoint's family first).
    async fn resolve(&self, target: &Target) -> Result<SocketAddr> {
        if let Ok(addr) = target.addr.parse::<SocketAddr>() {
            return Ok(addr);
        }
        let v6 = self.endpoint.local_addr().is_ok_and(|a| a.is_ipv6());
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&target.addr)
            .await
            .map_err(|e| Error::Connection(format!("{}: {e}", target.addr)))?
            .collect();
        addrs
            .iter()
            .find(|a| a.is_ipv6() == v6)
            .or(addrs.first())
            .copied()
            .ok_or_else(|| Error::Connection(format!("{} resolves to nothing", target.addr)))
    }

    /// Makes `link` the client's connection as far as the core's records go: its
    /// `Welcome`, its token's expiry, its node. (Publishing it is the caller's.)
    pub(crate) fn adopt(&self, link: &Link) {
        if let Ok(mut w) = self.welcome.lock() {
            *w = link.welcome.clone();
        }
        self.token_expiry
            .send_replace(link.welcome.token_expires_at.unwrap_or(0));
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.connected(&link.target);
        }
    }

    /// The targets of one round of attempts (see `NodeBook::round`).
    pub(crate) fn round(&self, current_last: bool) -> Vec<Target> {
        match self.nodes.lock() {
            Ok(nodes) => nodes.round(current_last),
            Err(p) => p.into_inner().round(current_last),
        }
    }

    /// Records a node's answer to `Nodes`.
    pub(crate) fn learn_nodes(&self, via: &Target, answer: Vec<NodeInfo>) {
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.learn(via, answer);
        }
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
    pub(crate) fn close(&self, reason: &[u8]) {
        self.shutdown.send_replace(true);
        let link = self.status.borrow().link.clone();
        if let Some(link) = link {
            link.close(reason);
        }
        self.publish(ConnectionState::Closed, None);
    }

    /// Waits (at most `within`) until the endpoint has sent what closing left to send.
    pub(crate) async fn wait_closed(&self, within: std::time::Duration) {
        let _ = tokio::time::timeout(within, self.endpoint.wait_idle()).await;
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

/// Where the client's connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// A connection attempt is under way.
    Connecting,
    /// Connected and authenticated.
    Connected,
    /// The connection was lost; the next attempt starts after `retry_in`.
    Disconnected {
        /// The wait before the next attempt (backoff with jitter).
        retry_in: Duration,
    },
    /// The server refused the client for good (key revoked, service deleted, token
    /// refused and no provider to get another): it does not retry.
    Denied {
        /// The refusal's code (`Unauthorized`, `TokenExpired`, `Forbidden`, ...).
        code: ErrorCode,
        /// The server's message.
        reason: String,
    },
    /// Closed by the app ([`Client::close`](crate::Client::close) or the last handle
    /// dropped).
    Closed,
}

impl ConnectionState {
    /// The error operations fail with in a terminal state (`Denied`, `Closed`).
    pub(crate) fn terminal_error(&self) -> Option<Error> {
        match self {
            ConnectionState::Denied { code, reason } => Some(Error::Closed {
                code: *code,
                reason: reason.clone(),
            }),
            ConnectionState::Closed => Some(Error::Closed {
                code: ErrorCode::Unavailable,
                reason: "the client was closed".into(),
            }),
            _ => None,
        }
    }
}

/// Every state change of a client, in order, from the moment it was asked for
/// ([`Client::state_changes`](crate::Client::state_changes)). A reader that falls more
/// than 16 changes behind skips to the newest ones. Implements `futures::Stream`.
///
/// ```no_run
/// # async fn demo(client: syncline_client::Client) {
/// let mut changes = client.state_changes();
/// while let Some(state) = changes.next().await {
///     println!("connection: {state:?}");
/// }
/// # }
/// ```
pub struct StateChanges {
    rx: Pin<Box<dyn futures_core::Stream<Item = ConnectionState> + Send>>,
}

impl StateChanges {
    pub(crate) fn new(rx: broadcast::Receiver<ConnectionState>) -> Self {
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(state) => return Some((state, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        StateChanges {
            rx: Box::pin(stream),
        }
    }

    /// The next state; `None` once the client is gone.
    pub async fn next(&mut self) -> Option<ConnectionState> {
        std::future::poll_fn(|cx| self.rx.as_mut().poll_next(cx)).await
    }
}

impl futures_core::Stream for StateChanges {
    type Item = ConnectionState;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.as_mut().poll_next(cx)
    }
}
