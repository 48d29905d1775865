//! A session: the state of one client connection on any transport (a QUIC connection,
//! an SSE stream, a WebSocket). Who it is once authenticated, its token's expiry, its
//! subscriptions, its presence and its rate limit. It is entered in the core's table of
//! live sessions from the moment it opens, and in its expiries once a token
//! authenticates it, so key revocation, service deletion and token expiry end it
//! whatever its edge; its watch (`watch::run`) delivers its events.
//! Nothing here touches a socket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use syncline_proto::{ErrorCode, WireError};

use crate::acl::{self, Principal};
use crate::auth::Login;
use crate::command::{Command, Outcome, PageSize};
use crate::departures::Present;
use crate::engine::{self, Caller, Revoked};
use crate::fanout::Ending;
use crate::fanout::{Control, Outbox, StartSubscription, Subscriber};
use crate::metrics::Edge;
use crate::presence::Owner;
use crate::shared::{Connection, LiveSession, RateBucket, Shared};

/// Subscriptions one session may hold at once.
pub const MAX_SUBSCRIPTIONS: usize = 1024;

/// What a session learns when it authenticates.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    /// Unique per server run; events this session causes carry it as their origin.
    pub connection_id: u64,
    /// `None` for the backend (an API key).
    pub identity: Option<String>,
    pub service_sid: String,
    pub account_sid: String,
    /// The token's `exp` (`None` for API keys).
    pub token_expires_at: Option<u64>,
}

pub struct Session {
    shared: Arc<Shared>,
    connection_id: u64,
    edge: Edge,
    caller: Mutex<Option<Caller>>,
    pub(crate) outbox: Arc<Outbox>,
    subs: Mutex<HashMap<u64, String>>,
    bucket: RateBucket,
    /// A token holder's session counts toward its identity's presence until it ends.
    present: Mutex<Option<Present>>,
    /// The last Unix second its token is accepted (`auth::valid_until`: `exp` + clock
    /// skew), as entered in the core's expiries; `None` for API keys.
    valid_until: Mutex<Option<u64>>,
}

impl Connection for Session {
    fn service_sid(&self) -> Option<String> {
        self.caller().map(|c| c.service.sid)
    }

    fn key_sid(&self) -> Option<String> {
        self.caller().map(|c| c.principal.key_sid().to_owned())
    }

    fn close_after_queued(&self, ending: Ending) {
        self.outbox.control(Control::Close(ending));
    }

    fn queued_events(&self) -> usize {
        self.outbox.queued()
    }
}

impl Session {
    /// Opens a session and enters it in the table of live sessions. `force_close` ends
    /// its transport at once; the core calls it when a session told to end does not
    /// take its last events within `CLOSE_GRACE`.
    pub(crate) fn open(
        shared: &Arc<Shared>,
        edge: Edge,
        force_close: Arc<dyn Fn(Ending) + Send + Sync>,
    ) -> Arc<Session> {
        let session = Arc::new(Session {
            connection_id: shared.new_connection_id(),
            edge,
            bucket: RateBucket::new(shared.rate),
            shared: shared.clone(),
            caller: Mutex::new(None),
            outbox: Outbox::new(),
            subs: Mutex::new(HashMap::new()),
            present: Mutex::new(None),
            valid_until: Mutex::new(None),
        });
        shared.register(
            session.connection_id,
            LiveSession {
                session: Arc::downgrade(&session) as std::sync::Weak<dyn Connection>,
                force_close,
            },
        );
        session
    }

    pub fn id(&self) -> u64 {
        self.connection_id
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
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

    /// Takes one request from the session's rate budget, or refuses with `RateLimited`.
    pub fn admit(&self) -> Result<(), WireError> {
        self.bucket.take(self.shared.rate)
    }

    /// Counts a request the edge answered itself (refused before it became a command).
    pub fn count<T>(&self, kind: &str, result: &Result<T, WireError>) {
        self.shared.metrics.request(self.edge, kind, result);
    }

    /// Authenticates the session. An error means it must end: the edge closes it
    /// (with `TokenExpired` when that is the code, `Unauthorized` otherwise).
    pub async fn hello(&self, login: Login, service: Option<String>) -> Result<Hello, WireError> {
        let result = self.hello_counted(login, service).await;
        self.count("hello", &result);
        result
    }

    async fn hello_counted(
        &self,
        login: Login,
        service: Option<String>,
    ) -> Result<Hello, WireError> {
        if self.is_authenticated() {
            return Err(WireError::invalid("already authenticated"));
        }
        let (caller, token) =
            engine::authenticate(&self.shared, login, service, self.connection_id).await?;
        let hello = Hello {
            connection_id: self.connection_id,
            identity: caller.identity().map(str::to_owned),
            service_sid: caller.service.sid.clone(),
            account_sid: self.shared.installation.account_sid.clone(),
            token_expires_at: token.as_ref().map(|t| t.expires_at),
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
        self.set_valid_until(token.map(|t| t.valid_until));
        Ok(hello)
    }

    /// Runs one command for the authenticated session, counted under `kind` for the
    /// metrics. Each command acts on the caller as it stands now (its service's flags,
    /// its key not revoked).
    pub async fn execute(&self, kind: &str, command: Command) -> Result<Outcome, WireError> {
        let result = self.execute_uncounted(command).await;
        self.count(kind, &result);
        result
    }

    async fn execute_uncounted(&self, command: Command) -> Result<Outcome, WireError> {
        let Some(caller) = self.caller() else {
            return Err(WireError::new(
                ErrorCode::Unauthorized,
                "the first request must be Hello",
            ));
        };
        // Between its token's expiry and the session's end (what was queued is still
        // being delivered) nothing more is done for it.
        let valid_until = *self.valid_until.lock().unwrap_or_else(|e| e.into_inner());
        if valid_until.is_some_and(|v| crate::auth::is_expired(v, crate::now_s())) {
            return Err(WireError::new(ErrorCode::TokenExpired, "token has expired"));
        }
        let caller = match engine::refresh(&self.shared, &caller).await {
            Ok(caller) => caller,
            Err(Revoked::Ended(e) | Revoked::CheckFailed(e)) => return Err(e),
        };
        match command {
            Command::Subscribe {
                sub_id,
                object,
                since,
                window,
            } => {
                self.subscribe(&caller, sub_id, &object, since, window)
                    .await
            }
            Command::Unsubscribe { sub_id } => {
                let object = self
                    .subs
                    .lock()
                    .ok()
                    .and_then(|mut s| s.remove(&sub_id))
                    .ok_or_else(|| WireError::not_found("subscription"))?;
                self.shared.hub.unsubscribe(&object, sub_id, &self.outbox);
                self.outbox.control(Control::Stop { sub_id });
                Ok(Outcome::Unsubscribed { sub_id })
            }
            Command::UpdateToken { token } => self.update_token(&caller, &token).await,
            other => engine::execute(&self.shared, &caller, other).await,
        }
    }

    /// The one way to start watching an object, for every edge: check access, register
    /// with the hub, check again, then let the session's watch catch up from `since`
    /// (or from a snapshot) and go live.
    async fn subscribe(
        &self,
        caller: &Caller,
        sub_id: u64,
        object: &str,
        since: Option<u64>,
        window: PageSize,
    ) -> Result<Outcome, WireError> {
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
        // Register with the hub before the watch reads the state it catches up from,
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
                window: window.get(),
            })));
        Ok(Outcome::Subscribed {
            sub_id,
            object_sid: record.sid,
            kind: record.kind,
        })
    }

    async fn update_token(&self, caller: &Caller, token: &str) -> Result<Outcome, WireError> {
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
        self.set_valid_until(Some(verified.valid_until));
        Ok(Outcome::TokenUpdated {
            expires_at: verified.expires_at,
        })
    }

    /// Enters the session in the core's expiries under its token's last second (or
    /// takes it out): the core ends it with `TokenExpired` when the clock passes it.
    fn set_valid_until(&self, new: Option<u64>) {
        let mut slot = self.valid_until.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.expiries.set(self.connection_id, *slot, new);
        *slot = new;
    }

    /// Asks the session's watch to deliver what is queued and then end it.
    pub fn end(&self, ending: Ending) {
        self.outbox.control(Control::Close(ending));
    }

    /// Drops every subscription of this session, and its presence. Idempotent; also
    /// done when the session is dropped.
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
    pub(crate) fn forget_subscription(&self, sub_id: u64) {
        if let Ok(mut s) = self.subs.lock() {
            if let Some(object) = s.remove(&sub_id) {
                self.shared.hub.unsubscribe(&object, sub_id, &self.outbox);
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
        self.set_valid_until(None);
        self.shared.unregister(self.connection_id);
    }
}
