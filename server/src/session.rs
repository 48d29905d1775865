//! One QUIC connection's protocol state: who it is (after `Hello`), its subscriptions,
//! its rate limit and its token's expiry. This is the QUIC edge: each request becomes a
//! typed `Command` here, once; the engine runs it, except for what belongs to the
//! connection itself (authentication, subscriptions, token updates). The network layer
//! feeds it decoded requests and writes back what it returns; nothing here touches a
//! socket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use syncline_proto::{close_code, Credential, ErrorCode, Request, Response, Welcome, WireError};
use tokio::sync::watch;

use crate::acl::{self, Principal};
use crate::command::Command;
use crate::engine::{self, Caller, Revoked};
use crate::fanout::{Control, Outbox, StartSubscription, Subscriber};
use crate::metrics::Edge;
use crate::presence::{Owner, Present};
use crate::state::{Connection, RateBucket, Shared};

/// Subscriptions one connection may hold at once.
pub const MAX_SUBSCRIPTIONS: usize = 1024;

/// What the network layer must do after answering a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Continue,
    /// Close the connection with this application code once the answer is written.
    Close(u32),
}

pub struct Session {
    shared: Arc<Shared>,
    pub connection_id: u64,
    caller: Mutex<Option<Caller>>,
    outbox: Arc<Outbox>,
    subs: Mutex<HashMap<u64, String>>,
    bucket: RateBucket,
    /// The last Unix second the current token is accepted (`auth::valid_until`, i.e.
    /// `exp` + clock skew); the network layer closes the connection with `TokenExpired`
    /// when the clock passes it. `None` for API keys.
    expiry: watch::Sender<Option<u64>>,
    /// A token holder's connection counts toward its identity's presence until it
    /// ends (dropped in `close`, or with the session however the connection ended).
    present: Mutex<Option<Present>>,
}

impl Connection for Session {
    fn service_sid(&self) -> Option<String> {
        self.caller().map(|c| c.service.sid)
    }

    fn key_sid(&self) -> Option<String> {
        self.caller().map(|c| c.principal.key_sid().to_owned())
    }

    fn close_after_queued(&self, code: u32, reason: &'static str) {
        self.outbox.control(Control::Close { code, reason });
    }

    fn queued_events(&self) -> usize {
        self.outbox.queued()
    }
}

impl Session {
    pub fn new(shared: Arc<Shared>, outbox: Arc<Outbox>) -> Self {
        Session {
            connection_id: shared.new_connection_id(),
            bucket: RateBucket::new(shared.rate),
            shared,
            caller: Mutex::new(None),
            outbox,
            subs: Mutex::new(HashMap::new()),
            expiry: watch::channel(None).0,
            present: Mutex::new(None),
        }
    }

    /// The last Unix second the connection's token is accepted (`None`: no token);
    /// the connection closes with `TokenExpired` when the clock passes it.
    pub fn token_expiry(&self) -> watch::Receiver<Option<u64>> {
        self.expiry.subscribe()
    }

    pub fn is_authenticated(&self) -> bool {
        self.caller().is_some()
    }

    fn caller(&self) -> Option<Caller> {
        self.caller.lock().ok().and_then(|c| c.clone())
    }

    fn set_caller(&self, caller: Caller) {
        match self.caller.lock() {
            Ok(mut c) => *c = Some(caller),
            Err(poisoned) => *poisoned.into_inner() = Some(caller),
        }
    }

    /// Handles one request. `Hello` must come first and alone; the network layer
    /// serializes it, and runs later requests concurrently.
    pub async fn handle(&self, request: Request) -> (Result<Response, WireError>, After) {
        let kind = request_kind(&request);
        let (result, after) = self.handle_counted(request).await;
        self.shared.metrics.request(Edge::Quic, kind, &result);
        (result, after)
    }

    async fn handle_counted(&self, request: Request) -> (Result<Response, WireError>, After) {
        if let Err(e) = self.bucket.take(self.shared.rate) {
            return (Err(e), After::Continue);
        }
        if let Request::Hello {
            credential,
            service,
        } = request
        {
            if self.is_authenticated() {
                return (
                    Err(WireError::invalid("already authenticated")),
                    After::Continue,
                );
            }
            return match self.hello(credential, service).await {
                Ok(r) => (Ok(r), After::Continue),
                Err(e) => {
                    let code = if e.code == ErrorCode::TokenExpired {
                        close_code::TOKEN_EXPIRED
                    } else {
                        close_code::UNAUTHORIZED
                    };
                    (Err(e), After::Close(code))
                }
            };
        }
        let Some(caller) = self.caller() else {
            return (
                Err(WireError::new(
                    ErrorCode::Unauthorized,
                    "the first request must be Hello",
                )),
                After::Close(close_code::UNAUTHORIZED),
            );
        };
        let caller = match engine::refresh(&self.shared, &caller).await {
            Ok(caller) => caller,
            Err(Revoked::Ended(e)) => return (Err(e), After::Close(close_code::UNAUTHORIZED)),
            Err(Revoked::CheckFailed(e)) => return (Err(e), After::Continue),
        };
        // The edge: from here down the request is a typed, checked command.
        let result = match Command::from_request(request, &self.shared.limits) {
            Ok(command) => self.run(&caller, command).await,
            Err(e) => Err(e),
        };
        (result, After::Continue)
    }

    async fn run(&self, caller: &Caller, command: Command) -> Result<Response, WireError> {
        match command {
            Command::Subscribe {
                sub_id,
                object,
                since,
                window,
            } => self.subscribe(caller, sub_id, &object, since, window).await,
            Command::Unsubscribe { sub_id } => {
                let object = self
                    .subs
                    .lock()
                    .ok()
                    .and_then(|mut s| s.remove(&sub_id))
                    .ok_or_else(|| WireError::not_found("subscription"))?;
                self.shared.hub.unsubscribe(&object, sub_id, &self.outbox);
                self.outbox.control(Control::Stop { sub_id });
                Ok(Response::Unsubscribed { sub_id })
            }
            Command::UpdateToken { token } => self.update_token(caller, &token).await,
            other => engine::execute(&self.shared, caller, other).await,
        }
    }

    async fn hello(
        &self,
        credential: Credential,
        service: Option<String>,
    ) -> Result<Response, WireError> {
        let (caller, token) =
            engine::authenticate(&self.shared, credential, service, self.connection_id).await?;
        let welcome = Welcome {
            connection_id: self.connection_id,
            identity: caller.identity().map(str::to_owned),
            service_sid: caller.service.sid.clone(),
            account_sid: self.shared.installation.account_sid.clone(),
            token_expires_at: token.as_ref().map(|t| t.expires_at),
            max_frame_bytes: self.shared.limits.max_frame_bytes,
        };
        if let Some(identity) = caller.identity() {
            let owner = Owner {
                service_sid: caller.service.sid.clone(),
                identity: identity.to_owned(),
            };
            let present = Present::new(&self.shared, owner).await;
            if let Ok(mut slot) = self.present.lock() {
                *slot = Some(present);
            }
        }
        self.set_caller(caller);
        self.expiry.send_replace(token.map(|t| t.valid_until));
        Ok(Response::Welcome(welcome))
    }

    async fn subscribe(
        &self,
        caller: &Caller,
        sub_id: u64,
        object: &str,
        since: Option<u64>,
        window: u32,
    ) -> Result<Response, WireError> {
        let shared = &*self.shared;
        let record = engine::lookup(shared, caller, object).await?;
        engine::check_read(shared, caller, record.as_ref()).await?;
        let record = record.ok_or_else(|| WireError::not_found("object"))?;
        {
            let Ok(mut subs) = self.subs.lock() else {
                return Err(WireError::internal("subscription table poisoned"));
            };
            if subs.contains_key(&sub_id) {
                return Err(WireError::invalid(format!(
                    "sub_id {sub_id} is already in use"
                )));
            }
            if subs.len() >= MAX_SUBSCRIPTIONS {
                return Err(WireError::new(
                    ErrorCode::RateLimited,
                    format!("at most {MAX_SUBSCRIPTIONS} subscriptions per connection"),
                ));
            }
            subs.insert(sub_id, record.sid.clone());
        }
        // Register with the hub before the writer reads the state it catches up from,
        // so that no change can fall between the two.
        let subscriber =
            Subscriber::new(sub_id, &caller.service.sid, caller.identity(), &self.outbox);
        let token = subscriber.token;
        shared.hub.subscribe(&record.sid, subscriber.clone());
        // A revoke or an ACL toggle that landed after the check above did not see this
        // subscription in the hub: check again now that it is there.
        let still_allowed = match engine::refresh(shared, caller).await {
            Ok(now) => engine::check_read(shared, &now, Some(&record))
                .await
                .is_ok(),
            Err(_) => false,
        };
        if !still_allowed {
            shared.hub.unsubscribe(&record.sid, sub_id, &self.outbox);
            if let Ok(mut subs) = self.subs.lock() {
                subs.remove(&sub_id);
            }
            return Err(acl::forbidden());
        }
        self.outbox
            .control(Control::Start(Box::new(StartSubscription {
                sub_id,
                token,
                service_sid: caller.service.sid.clone(),
                object_sid: record.sid.clone(),
                since,
                window,
            })));
        Ok(Response::Subscribed {
            sub_id,
            object_sid: record.sid,
            kind: record.kind,
        })
    }

    async fn update_token(&self, caller: &Caller, token: &str) -> Result<Response, WireError> {
        let Principal::Identity { identity, .. } = &caller.principal else {
            return Err(WireError::invalid(
                "an API-key connection has no token to update",
            ));
        };
        let verified = engine::verify_token(&self.shared, token).await?;
        if verified.identity != *identity || verified.service_sid != caller.service.sid {
            return Err(WireError::new(
                ErrorCode::Unauthorized,
                "a new token must be for the same identity and service",
            ));
        }
        self.set_caller(Caller {
            principal: Principal::Identity {
                identity: verified.identity,
                key_sid: verified.key_sid,
            },
            ..caller.clone()
        });
        self.expiry.send_replace(Some(verified.valid_until));
        Ok(Response::TokenUpdated {
            expires_at: verified.expires_at,
        })
    }

    /// Drops every subscription of this connection, and its presence (on close).
    pub fn close(&self) {
        let present = self.present.lock().ok().and_then(|mut p| p.take());
        drop(present);
        let subs = self
            .subs
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        for (sub_id, object) in subs {
            self.shared.hub.unsubscribe(&object, sub_id, &self.outbox);
        }
    }

    /// Forgets a subscription the server ended (object removed or gone).
    pub fn forget_subscription(&self, sub_id: u64) {
        if let Ok(mut s) = self.subs.lock() {
            if let Some(object) = s.remove(&sub_id) {
                self.shared.hub.unsubscribe(&object, sub_id, &self.outbox);
            }
        }
    }
}

/// What a request asks for, as the metrics count it (`metrics::KINDS`).
fn request_kind(request: &Request) -> &'static str {
    match request {
        Request::Hello { .. } => "hello",
        Request::Ping => "ping",
        Request::UpdateToken { .. } => "update_token",
        Request::DocGet { .. }
        | Request::Fetch { .. }
        | Request::ItemGet { .. }
        | Request::Items { .. } => "read",
        Request::DocSet { .. }
        | Request::DocUpdate { .. }
        | Request::Create { .. }
        | Request::Delete { .. }
        | Request::ListPush { .. }
        | Request::ItemSet { .. }
        | Request::ItemUpdate { .. }
        | Request::ItemRemove { .. } => "write",
        Request::Publish { .. } => "publish",
        Request::Subscribe { .. } => "subscribe",
        Request::Unsubscribe { .. } => "unsubscribe",
        _ => "admin",
    }
}
