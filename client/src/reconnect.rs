//! Keeping the client connected: the supervisor task that replaces a lost connection
//! (capped exponential backoff with full jitter), refreshes tokens through the token
//! provider before they expire, and publishes the connection's state.
//!
//! Subscriptions resume themselves on the new connection (see `subscription.rs`); this
//! module only provides it. Terminal refusals (a revoked key, a deleted service, a
//! token refused with no provider to replace it) end in [`ConnectionState::Denied`],
//! and nothing is retried after that.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use syncline_proto::{Credential, ErrorCode, Request, Response};
use tokio::sync::broadcast;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::connection::{unexpected, Core, Link};
use crate::{Error, Result};

/// The future a [`TokenProvider`] returns.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String>> + Send>>;

/// An async callback that returns a fresh access token (from the app's backend, say).
/// The client calls it before the current token expires (and swaps it in with
/// `update_token`), and before reconnecting after a `TokenExpired` or `Unauthorized`
/// close or refusal. Build one with [`ClientConfig::with_token_provider`].
///
/// [`ClientConfig::with_token_provider`]: crate::ClientConfig::with_token_provider
pub type TokenProvider = Arc<dyn Fn() -> TokenFuture + Send + Sync>;

/// How the client reconnects. The defaults suit an app on a flaky network: a first
/// retry within 250 ms, then waits doubling up to 30 s, each drawn at random between 0
/// and that bound ("full jitter", so that a restarted server is not hit by all its
/// clients at the same instant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// The bound of the first wait (default 250 ms).
    pub initial_backoff: Duration,
    /// The largest bound a wait grows to (default 30 s).
    pub max_backoff: Duration,
    /// How long one attempt (QUIC handshake and `Hello`) may take before it counts as
    /// failed (default 10 s). A server that is down does not refuse a QUIC handshake;
    /// it just never answers.
    pub connect_timeout: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl ReconnectPolicy {
    /// The wait before reconnect attempt `attempt` (0 for the first): uniform in
    /// `0..=min(max_backoff, initial_backoff * 2^attempt)`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let bound = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max_backoff);
        let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(random_u64() % nanos.saturating_add(1))
    }
}

/// A random number from the standard library's per-process hash keys (no dependency
/// for a jitter that needs no cryptographic quality).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
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

/// Codes of a refusal that the same credential would get again.
fn is_refusal(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Unauthorized
            | ErrorCode::TokenExpired
            | ErrorCode::Forbidden
            | ErrorCode::NotFound
            | ErrorCode::InvalidArgument
    )
}

/// Whether a failed connection (or a close) is one a new token may cure, and the
/// client has a provider to ask for one.
pub(crate) fn wants_fresh_token(core: &Core, e: &Error) -> bool {
    core.config.token_provider.is_some()
        && matches!(e.code(), ErrorCode::TokenExpired | ErrorCode::Unauthorized)
        && matches!(e, Error::Server(_) | Error::Closed { .. })
}

/// Asks the provider for a token and makes it the credential of the next `Hello`.
pub(crate) async fn refresh_credential(core: &Core) -> Result<String> {
    let Some(provider) = core.config.token_provider.clone() else {
        return Err(Error::Config("no token provider".into()));
    };
    let token = provider().await?;
    set_token(core, &token);
    Ok(token)
}

fn set_token(core: &Core, token: &str) {
    if let Ok(mut c) = core.credential.lock() {
        *c = Credential::Token(token.to_owned());
    }
}

/// `update_token` on `link`; on success the token is also the next `Hello`'s.
pub(crate) async fn update_token(core: &Core, link: &Link, token: &str) -> Result<u64> {
    let request = Request::UpdateToken {
        token: token.to_owned(),
    };
    match link
        .call(core.next_id(), request, core.config.request_timeout)
        .await?
    {
        Response::TokenUpdated { expires_at } => {
            set_token(core, token);
            core.token_expiry.send_replace(expires_at);
            if let Ok(mut w) = core.welcome.lock() {
                w.token_expires_at = Some(expires_at);
            }
            Ok(expires_at)
        }
        other => Err(unexpected(other)),
    }
}

/// The least time between two refreshes, so a provider that hands out tokens already
/// near their end cannot make the client spin.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// The wait after a provider or `update_token` failure before the next try.
const REFRESH_RETRY: Duration = Duration::from_secs(5);

/// When to refresh a token that expires at `exp` (Unix s), received at `received`:
/// 3 minutes before `exp` (when `AboutToExpire` starts), or half-way for shorter tokens.
fn refresh_in(exp: u64, received: u64, now: u64) -> Duration {
    let lifetime = exp.saturating_sub(received);
    let margin = crate::connection::TOKEN_WARNING_S.min(lifetime / 2);
    Duration::from_secs(exp.saturating_sub(margin).saturating_sub(now)).max(MIN_REFRESH_INTERVAL)
}

/// The supervisor: one per client, from its first connection until it is closed or
/// denied.
/// A client started without a connection (`Client::start`) makes its first one here.
pub(crate) async fn supervise(core: Arc<Core>, link: Option<Arc<Link>>) {
    let span = info_span!("syncline_client", server = %core.config.server);
    async move {
        let mut link = match link {
            Some(link) => link,
            None => match reconnect(&core, None, None).await {
                Some(link) => link,
                None => return,
            },
        };
        loop {
            let Some(why) = stay_connected(&core, &link).await else {
                return;
            };
            info!(error = %why, "connection lost; reconnecting");
            match reconnect(&core, Some(&link), Some(why)).await {
                Some(new) => link = new,
                None => return,
            }
        }
    }
    .instrument(span)
    .await
}

/// Serves `link` until it closes (its reason) or the client shuts down (`None`),
/// refreshing the token on the way when there is a provider.
async fn stay_connected(core: &Core, link: &Link) -> Option<Error> {
    let mut shutdown = core.shutdown.subscribe();
    let mut expiry = core.token_expiry.subscribe();
    let mut received = crate::token::now_s();
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        if *shutdown.borrow_and_update() {
            return None;
        }
        let exp = *expiry.borrow_and_update();
        let refresh = (exp != 0 && core.config.token_provider.is_some()).then(|| {
            retry_at.unwrap_or_else(|| {
                tokio::time::Instant::now() + refresh_in(exp, received, crate::token::now_s())
            })
        });
        let sleep = async {
            match refresh {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            why = link.closed() => {
                return (!*shutdown.borrow()).then_some(why);
            }
            _ = shutdown.changed() => return None,
            changed = expiry.changed() => {
                // A token swapped in by the app or by the refresh below.
                if changed.is_err() { return None }
                received = crate::token::now_s();
                retry_at = None;
            }
            _ = sleep => {
                let refreshed = async {
                    let token = refresh_credential(core).await?;
                    update_token(core, link, &token).await
                };
                match refreshed.await {
                    Ok(exp) => {
                        debug!(exp, "token refreshed");
                        received = crate::token::now_s();
                        retry_at = None;
                    }
                    Err(e) => {
                        warn!(error = %e, "token refresh failed; trying again in {REFRESH_RETRY:?}");
                        retry_at = Some(tokio::time::Instant::now() + REFRESH_RETRY);
                    }
                }
            }
        }
    }
}

/// Reconnects after `why` closed `old` (or, with neither, makes a started client's
/// first connection): waits, tries, backs off, until connected (the new link), denied
/// or shut down (`None`).
async fn reconnect(core: &Core, old: Option<&Arc<Link>>, why: Option<Error>) -> Option<Arc<Link>> {
    let mut shutdown = core.shutdown.subscribe();
    let policy = core.config.reconnect;
    // A new token is asked for once per refusal that a token may cure; a second
    // refusal with a fresh token is final.
    let mut need_token = match &why {
        Some(why) => wants_fresh_token(core, why),
        // A started client built around its provider has no token yet.
        None => {
            core.config.token_provider.is_some()
                && core
                    .credential
                    .lock()
                    .is_ok_and(|c| matches!(&*c, Credential::Token(t) if t.is_empty()))
        }
    };
    let mut fresh_token_refused = false;
    let mut attempt: u32 = 0;
    loop {
        // A first connection is tried at once; only a lost one waits first.
        if old.is_some() || attempt > 0 {
            let retry_in = policy.backoff(attempt);
            // The old link stays in the status (closed) so `Client::closed` can still
            // tell why it ended; `wait_link` skips closed links.
            core.publish(ConnectionState::Disconnected { retry_in }, old.cloned());
            tokio::select! {
                _ = tokio::time::sleep(retry_in) => {}
                _ = shutdown.changed() => return None,
            }
        }
        if *shutdown.borrow() {
            return None;
        }
        core.publish(ConnectionState::Connecting, old.cloned());
        attempt = attempt.saturating_add(1);
        if need_token {
            match refresh_credential(core).await {
                Ok(_) => need_token = false,
                Err(e) => {
                    warn!(error = %e, "the token provider failed; retrying");
                    continue;
                }
            }
        }
        let error = match core.open_link().await {
            Ok(link) => {
                info!(
                    connection_id = link.welcome.connection_id,
                    attempts = attempt,
                    "reconnected"
                );
                let link = Arc::new(link);
                if *shutdown.borrow() {
                    return None;
                }
                core.publish(ConnectionState::Connected, Some(link.clone()));
                return Some(link);
            }
            Err(e) => e,
        };
        debug!(error = %error, attempt, "reconnect attempt failed");
        let refused = matches!(
            error,
            Error::Server(_) | Error::Closed { .. } | Error::Config(_)
        ) && is_refusal(error.code());
        if !refused {
            continue;
        }
        if wants_fresh_token(core, &error) && !fresh_token_refused {
            fresh_token_refused = true;
            need_token = true;
            continue;
        }
        warn!(error = %error, "the server refused the client; not retrying");
        let (code, reason) = match error {
            Error::Server(w) => (w.code, w.message),
            Error::Closed { code, reason } => (code, reason),
            other => (other.code(), other.to_string()),
        };
        core.publish(ConnectionState::Denied { code, reason }, None);
        return None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_its_doubling_bound_and_the_cap() {
        let p = ReconnectPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
        };
        for attempt in 0..40 {
            let bound =
                Duration::from_millis(100 * (1u64 << attempt.min(20))).min(Duration::from_secs(1));
            for _ in 0..50 {
                assert!(p.backoff(attempt) <= bound, "attempt {attempt}");
            }
        }
        // Jitter: not every draw is the same.
        let draws: std::collections::HashSet<_> = (0..50).map(|_| p.backoff(5)).collect();
        assert!(draws.len() > 1);
    }

    #[test]
    fn tokens_are_refreshed_three_minutes_before_exp_or_half_way() {
        // An hour-long token: 180 s before exp.
        assert_eq!(
            refresh_in(10_000, 6_400, 6_400),
            Duration::from_secs(3_600 - 180)
        );
        // A 10 s token: half-way.
        assert_eq!(refresh_in(110, 100, 100), Duration::from_secs(5));
        // Already past: soon, but not in a loop.
        assert_eq!(refresh_in(100, 200, 200), MIN_REFRESH_INTERVAL);
    }
}
