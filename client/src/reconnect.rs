//! Keeping the client connected: the supervisor task that replaces a lost connection
//! (capped exponential backoff with full jitter), refreshes tokens through the token
//! provider before they expire, and publishes the connection's state.
//!
//! Subscriptions resume themselves on the new connection (see `subscription.rs`); this
//! module only provides it. Terminal refusals (a revoked key, a deleted service, a
//! token refused with no provider to replace it) end in [`ConnectionState::Denied`],
//! and nothing is retried after that.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use syncline_proto::{Credential, ErrorCode, Request, Response};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::connection::{ConnectionState, Core, TOKEN_WARNING_S};
use crate::link::Link;
use crate::{unexpected, Error, Result};

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

/// Whether a failed attempt is a refusal of the client (not of a connection): the
/// server's answer to `Hello`, or its close, with a code the same credential would get
/// again.
fn is_refused(e: &Error) -> bool {
    matches!(
        e,
        Error::Server(_) | Error::Closed { .. } | Error::Config(_)
    ) && is_refusal(e.code())
}

/// One round of attempts over the nodes the client knows (`NodeBook::round`: the
/// current node first, or last with `current_last`). The first is dialed at once; each
/// next one when the attempts under way have all failed, or when they have gone
/// `failover_after` without an answer, alongside them. The first node to welcome the client wins, and the attempts
/// still under way are dropped (their connections closed). When every node failed: a
/// refusal if one refused (a credential is the installation's, so the others would
/// say the same), else the first node's error. A node whose certificate the client
/// does not trust is a failed attempt like any other: the next node is tried.
pub(crate) async fn connect_round(core: &Core, current_last: bool) -> Result<Link> {
    let targets = core.round(current_last);
    let stagger = core.config.reconnect.failover_after;
    let start = |i: usize| {
        let target = targets[i].clone();
        async move {
            let result = core.dial(&target).await;
            (i, target, result)
        }
    };
    let mut attempts = FuturesUnordered::new();
    let mut started = 0;
    if !targets.is_empty() {
        attempts.push(start(0));
        started = 1;
    }
    let next_due = tokio::time::sleep(stagger);
    tokio::pin!(next_due);
    let mut errors: Vec<Option<Error>> = (0..targets.len()).map(|_| None).collect();
    while !attempts.is_empty() {
        tokio::select! {
            Some((i, target, result)) = attempts.next() => match result {
                Ok(link) => {
                    if i > 0 {
                        info!(node = %target.addr, "connected to another node of the installation");
                    }
                    return Ok(link);
                }
                Err(e) => {
                    debug!(node = %target.addr, error = %e, "connection attempt failed");
                    errors[i] = Some(e);
                    if attempts.is_empty() && started < targets.len() {
                        attempts.push(start(started));
                        started += 1;
                        next_due.as_mut().reset(tokio::time::Instant::now() + stagger);
                    }
                }
            },
            _ = &mut next_due, if started < targets.len() => {
                attempts.push(start(started));
                started += 1;
                next_due.as_mut().reset(tokio::time::Instant::now() + stagger);
            }
        }
    }
    let refusal = errors
        .iter()
        .position(|e| e.as_ref().is_some_and(is_refused));
    Err(errors
        .into_iter()
        .nth(refusal.unwrap_or(0))
        .flatten()
        .unwrap_or_else(|| Error::Connection("no node to connect to".into())))
}

/// Asks `link`'s node for the installation's live nodes, in the background, and keeps
/// the answer for the next reconnect. An error answer (a server from before `Nodes`)
/// changes nothing: the client then knows only the nodes it was configured with.
fn learn_nodes(core: &Arc<Core>, link: &Arc<Link>) {
    let (core, link) = (core.clone(), link.clone());
    tokio::spawn(async move {
        let asked = link
            .call(core.next_id(), Request::Nodes, core.config.request_timeout)
            .await;
        match asked {
            Ok(Response::Nodes(nodes)) => {
                debug!(nodes = nodes.len(), "the installation's nodes");
                core.learn_nodes(&link.target, nodes);
            }
            Ok(other) => debug!("unexpected answer to Nodes: {other:?}"),
            Err(e) => debug!(error = %e, "the node did not list the installation's nodes"),
        }
    });
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
    let margin = TOKEN_WARNING_S.min(lifetime / 2);
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
            learn_nodes(&core, &link);
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
    // A node that closed the connection as unavailable (going away: shutting down or
    // restarting) is tried last in the first round, after the other nodes.
    let mut current_last = matches!(
        why,
        Some(Error::Closed {
            code: ErrorCode::Unavailable,
            ..
        })
    );
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
        let round = tokio::select! {
            round = connect_round(core, std::mem::take(&mut current_last)) => round,
            _ = shutdown.changed() => return None,
        };
        let error = match round {
            Ok(link) => {
                info!(
                    connection_id = link.welcome.connection_id,
                    node = %link.target.addr,
                    attempts = attempt,
                    "reconnected"
                );
                let link = Arc::new(link);
                if *shutdown.borrow() {
                    return None;
                }
                core.adopt(&link);
                core.publish(ConnectionState::Connected, Some(link.clone()));
                return Some(link);
            }
            Err(e) => e,
        };
        debug!(error = %error, attempt, "reconnect round failed");
        if !is_refused(&error) {
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
