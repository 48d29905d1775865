//! One connection's protocol state: who it is (after `Hello`), its subscriptions, its
//! rate limit, and the handling of each request. The network layer feeds it decoded
//! requests and writes back what it returns; nothing here touches a socket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use syncline_proto::frame;
use syncline_proto::ids::is_sid;
use syncline_proto::limits::DEFAULT_LIST_WINDOW;
use syncline_proto::{
    close_code, Credential, ErrorCode, Event, EventKind, ItemKey, Limits, ObjectKind, Order,
    Request, Response, TokenCreate, Welcome, WireError,
};
use tokio::sync::watch;
use tracing::error;

use crate::acl::{self, Action, Principal};
use crate::auth;
use crate::command::WriteCommand;
use crate::commit::{Committer, WriteOp, WriteOutcome};
use crate::fanout::{Control, Hub, Outbox, StartSubscription, Subscriber};
use crate::objects::{self, document, items, WriteContext};
use crate::store::{Installation, ObjectRecord, ServiceRecord, Store, StoreError};
use crate::{now_ms, now_s};

/// Subscriptions one connection may hold at once.
pub const MAX_SUBSCRIPTIONS: usize = 1024;

/// Server-wide state every connection shares.
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub committer: Committer,
    pub hub: Arc<Hub>,
    pub limits: Limits,
    pub installation: Installation,
    pub rate: RateLimit,
    /// Live connections, so that revoking a key or deleting a service can end them.
    pub connections: Mutex<HashMap<u64, LiveConnection>>,
    next_connection_id: AtomicU64,
}

/// A live connection as the rest of the server can reach it: its session, and how to
/// close it (the network layer provides that; the session does no IO).
pub struct LiveConnection {
    pub session: std::sync::Weak<Session>,
    pub close: Arc<dyn Fn(u32, &'static str) + Send + Sync>,
}

/// The longest a connection being closed by the server waits for the events already
/// queued for it to be delivered.
pub const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

impl Shared {
    /// Closes every live connection whose session matches `pred`, after the events
    /// already queued for it have been delivered: closing at once would discard them,
    /// and a deleted service's subscribers must hear `object_removed` first. A client
    /// that does not take them in `CLOSE_GRACE` is closed anyway. Requests are refused
    /// meanwhile by the per-request service and key checks.
    pub fn close_connections(
        &self,
        pred: impl Fn(&Session) -> bool,
        code: u32,
        reason: &'static str,
    ) {
        let Ok(conns) = self.connections.lock() else {
            return;
        };
        for live in conns.values() {
            if let Some(session) = live.session.upgrade().filter(|s| pred(s)) {
                session.outbox.control(Control::Close { code, reason });
                let close = live.close.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(CLOSE_GRACE).await;
                    close(code, reason);
                });
            }
        }
    }

    pub fn new(
        store: Arc<dyn Store>,
        committer: Committer,
        hub: Arc<Hub>,
        limits: Limits,
        installation: Installation,
        rate: RateLimit,
    ) -> Self {
        Shared {
            store,
            committer,
            hub,
            limits,
            installation,
            rate,
            connections: Mutex::new(HashMap::new()),
            // Random per run: event origins outlive the run in the change log, and a
            // replayed event must not look local to an unrelated connection after a restart.
            next_connection_id: AtomicU64::new(rand::random::<u64>() >> 1 | 1),
        }
    }
}

/// Upstream request rate per connection: a token bucket.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: 500.0,
            burst: 1000.0,
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Clone)]
struct Authed {
    principal: Principal,
    service: ServiceRecord,
}

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
    auth: Mutex<Option<Authed>>,
    outbox: Arc<Outbox>,
    subs: Mutex<HashMap<u64, String>>,
    bucket: Mutex<Bucket>,
    /// The last Unix second the current token is accepted (`auth::valid_until`, i.e.
    /// `exp` + clock skew); the network layer closes the connection with `TokenExpired`
    /// when the clock passes it. `None` for API keys.
    expiry: watch::Sender<Option<u64>>,
}

fn store_err(e: StoreError) -> WireError {
    error!(error = %e, "storage read failed");
    WireError::internal("storage read failed")
}

fn forbidden() -> WireError {
    WireError::new(ErrorCode::Forbidden, "forbidden")
}

impl Session {
    pub fn new(shared: Arc<Shared>, outbox: Arc<Outbox>) -> Self {
        let connection_id = shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let burst = shared.rate.burst;
        Session {
            shared,
            connection_id,
            auth: Mutex::new(None),
            outbox,
            subs: Mutex::new(HashMap::new()),
            bucket: Mutex::new(Bucket {
                tokens: burst,
                at: Instant::now(),
            }),
            expiry: watch::channel(None).0,
        }
    }

    /// The last Unix second the connection's token is accepted (`None`: no token);
    /// the connection closes with `TokenExpired` when the clock passes it.
    pub fn token_expiry(&self) -> watch::Receiver<Option<u64>> {
        self.expiry.subscribe()
    }

    /// The API key behind this connection (directly, or as the signer of its token).
    pub fn key_sid(&self) -> Option<String> {
        self.authed().map(|a| a.principal.key_sid().to_owned())
    }

    /// The service this connection acts in.
    pub fn service_sid(&self) -> Option<String> {
        self.authed().map(|a| a.service.sid)
    }

    pub fn is_authenticated(&self) -> bool {
        self.authed().is_some()
    }

    fn authed(&self) -> Option<Authed> {
        self.auth.lock().ok().and_then(|a| a.clone())
    }

    fn take_token(&self) -> bool {
        let Ok(mut b) = self.bucket.lock() else {
            return true;
        };
        let now = Instant::now();
        let refill = now.duration_since(b.at).as_secs_f64() * self.shared.rate.per_second;
        b.tokens = (b.tokens + refill).min(self.shared.rate.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Handles one request. `Hello` must come first and alone; the network layer
    /// serializes it, and runs later requests concurrently.
    pub async fn handle(&self, request: Request) -> (Result<Response, WireError>, After) {
        if !self.take_token() {
            return (
                Err(WireError::new(
                    ErrorCode::RateLimited,
                    "too many requests on this connection; slow down",
                )),
                After::Continue,
            );
        }
        match request {
            Request::Hello {
                credential,
                service,
            } => {
                if self.is_authenticated() {
                    return (
                        Err(WireError::invalid("already authenticated")),
                        After::Continue,
                    );
                }
                match self.hello(credential, service).await {
                    Ok(r) => (Ok(r), After::Continue),
                    Err(e) => {
                        let code = if e.code == ErrorCode::TokenExpired {
                            close_code::TOKEN_EXPIRED
                        } else {
                            close_code::UNAUTHORIZED
                        };
                        (Err(e), After::Close(code))
                    }
                }
            }
            other => {
                let Some(authed) = self.authed() else {
                    return (
                        Err(WireError::new(
                            ErrorCode::Unauthorized,
                            "the first request must be Hello",
                        )),
                        After::Close(close_code::UNAUTHORIZED),
                    );
                };
                // Flags change (ACL on/off) and services go away: act on the current record.
                let service = match self.shared.store.service(&authed.service.sid).await {
                    Ok(Some(service)) => service,
                    Ok(None) => {
                        let e = WireError::new(ErrorCode::Unauthorized, "the service was deleted");
                        return (Err(e), After::Close(close_code::UNAUTHORIZED));
                    }
                    Err(e) => return (Err(store_err(e)), After::Continue),
                };
                // A key revoked while this connection was authenticating was not there
                // to be closed: check it on every request.
                match self.shared.store.api_key(authed.principal.key_sid()).await {
                    Ok(Some(key)) if !key.revoked => {}
                    Ok(_) => {
                        let e = WireError::new(ErrorCode::Unauthorized, "API key revoked");
                        return (Err(e), After::Close(close_code::UNAUTHORIZED));
                    }
                    Err(e) => return (Err(store_err(e)), After::Continue),
                }
                let authed = Authed { service, ..authed };
                (self.dispatch(&authed, other).await, After::Continue)
            }
        }
    }

    async fn hello(
        &self,
        credential: Credential,
        service: Option<String>,
    ) -> Result<Response, WireError> {
        let store = &*self.shared.store;
        let inst = &self.shared.installation;
        let (principal, service, expiry) = match credential {
            Credential::ApiKey { sid, secret } => {
                let key = store.api_key(&sid).await.map_err(store_err)?;
                let key_sid = auth::verify_api_key(&secret, key)?;
                let wanted = service.unwrap_or_else(|| inst.default_service_sid.clone());
                let service = crate::admin::find_service(&self.shared, &wanted).await?;
                (Principal::Backend { key_sid }, service, None)
            }
            Credential::Token(token) => {
                let verified = self.verify(&token).await?;
                let token_service = store
                    .service(&verified.service_sid)
                    .await
                    .map_err(store_err)?
                    .ok_or_else(|| {
                        WireError::new(ErrorCode::Unauthorized, "token's service does not exist")
                    })?;
                // A token reaches its own service only, whatever the client asks for.
                if let Some(asked) = service {
                    if asked != token_service.sid
                        && Some(&asked) != token_service.unique_name.as_ref()
                    {
                        return Err(forbidden());
                    }
                }
                (
                    Principal::Identity {
                        identity: verified.identity,
                        key_sid: verified.key_sid,
                    },
                    token_service,
                    Some((verified.expires_at, verified.valid_until)),
                )
            }
        };
        let identity = match &principal {
            Principal::Identity { identity, .. } => Some(identity.clone()),
            Principal::Backend { .. } => None,
        };
        let service_sid = service.sid.clone();
        if let Ok(mut a) = self.auth.lock() {
            *a = Some(Authed { principal, service });
        }
        self.expiry
            .send_replace(expiry.map(|(_, valid_until)| valid_until));
        Ok(Response::Welcome(Welcome {
            connection_id: self.connection_id,
            identity,
            service_sid,
            account_sid: inst.account_sid.clone(),
            token_expires_at: expiry.map(|(exp, _)| exp),
            max_frame_bytes: self.shared.limits.max_frame_bytes,
        }))
    }

    async fn verify(&self, token: &str) -> Result<auth::VerifiedToken, WireError> {
        // Find the signing key first (an async store read), then verify with it.
        let key = match auth::unverified_issuer(token) {
            Ok(iss) if is_sid(&iss) => self.shared.store.api_key(&iss).await.map_err(store_err)?,
            _ => None,
        };
        auth::verify_token(
            token,
            key,
            &self.shared.installation.account_sid,
            &self.shared.limits,
            now_s(),
        )
    }

    async fn lookup(
        &self,
        authed: &Authed,
        reference: &str,
    ) -> Result<Option<ObjectRecord>, WireError> {
        objects::lookup(
            &*self.shared.store,
            &authed.service.sid,
            reference,
            now_ms(),
        )
        .await
        .map_err(store_err)
    }

    /// Under an enabled ACL, a token holder needs `read` (a missing object is
    /// `Forbidden` too, so that refusals reveal nothing).
    async fn read_guard(
        &self,
        authed: &Authed,
        object: Option<&ObjectRecord>,
    ) -> Result<(), WireError> {
        match acl::guarded_identity(&authed.principal, &authed.service) {
            None => Ok(()),
            Some(identity) => acl::check(
                &*self.shared.store,
                identity,
                object,
                &[Action::Read],
                false,
            )
            .await
            .map(|_| ()),
        }
    }

    fn context(&self, authed: &Authed) -> WriteContext {
        WriteContext {
            service_sid: authed.service.sid.clone(),
            actor: authed.principal.actor().to_owned(),
            origin: self.connection_id,
            now_ms: now_ms(),
            guard: acl::guarded_identity(&authed.principal, &authed.service).map(str::to_owned),
            may_create: match authed.principal {
                Principal::Backend { .. } => true,
                Principal::Identity { .. } => authed.service.flags.token_create == TokenCreate::Own,
            },
        }
    }

    async fn write(&self, authed: &Authed, op: WriteOp) -> Result<Response, WireError> {
        match self
            .shared
            .committer
            .submit(self.context(authed), op)
            .await?
        {
            WriteOutcome::Written(w) => Ok(Response::Written(w)),
            WriteOutcome::Deleted { sid, revision } => Ok(Response::Deleted { sid, revision }),
            WriteOutcome::Object(o) => Ok(Response::Object(o)),
            WriteOutcome::ItemRemoved { key, revision } => {
                Ok(Response::ItemRemoved { key, revision })
            }
            WriteOutcome::Unchanged => Err(WireError::internal("unexpected no-op write")),
        }
    }

    async fn dispatch(&self, authed: &Authed, request: Request) -> Result<Response, WireError> {
        match request {
            Request::Hello { .. } => Err(WireError::invalid("already authenticated")),
            Request::Ping => Ok(Response::Pong),
            write @ (Request::DocSet { .. }
            | Request::DocUpdate { .. }
            | Request::Create { .. }
            | Request::Delete { .. }
            | Request::ListPush { .. }
            | Request::ItemSet { .. }
            | Request::ItemUpdate { .. }
            | Request::ItemRemove { .. }) => {
                // The edge: from here down the write is a typed, checked command.
                let command = WriteCommand::from_request(write, &self.shared.limits)?
                    .ok_or_else(|| WireError::internal("a write request was not a write"))?;
                self.write(authed, WriteOp::Client(command)).await
            }
            Request::UpdateToken { token } => self.update_token(authed, &token).await,
            Request::DocGet { document } => {
                let record = self.lookup(authed, &document).await?;
                self.read_guard(authed, record.as_ref()).await?;
                let record = record.ok_or_else(|| WireError::not_found("document"))?;
                objects::expect_kind(&record, ObjectKind::Document)?;
                Ok(Response::Document(document::info(&record)))
            }
            Request::Fetch { object } => {
                let record = self.lookup(authed, &object).await?;
                self.read_guard(authed, record.as_ref()).await?;
                let record = record.ok_or_else(|| WireError::not_found("object"))?;
                Ok(Response::Object(objects::object_info(&record)))
            }
            Request::ItemGet { kind, object, key } => {
                let record = self.lookup(authed, &object).await?;
                self.read_guard(authed, record.as_ref()).await?;
                let record = record.ok_or_else(|| WireError::not_found(kind.name()))?;
                objects::expect_kind(&record, kind)?;
                items::check_key(kind, &key, &self.shared.limits)?;
                let item = self
                    .shared
                    .store
                    .item(&record.sid, &key)
                    .await
                    .map_err(store_err)?
                    .filter(|i| !i.is_expired(now_ms()))
                    .ok_or_else(|| WireError::not_found("item"))?;
                Ok(Response::Item(items::item_info(&key, &item)))
            }
            Request::Items {
                kind,
                object,
                from,
                order,
                limit,
            } => self.items(authed, kind, &object, from, order, limit).await,
            Request::Publish { stream, data } => self.publish(authed, &stream, data).await,
            Request::Subscribe {
                sub_id,
                object,
                since,
                window,
            } => {
                let window = window
                    .unwrap_or(DEFAULT_LIST_WINDOW)
                    .clamp(1, self.shared.limits.max_page);
                self.subscribe(authed, sub_id, &object, since, window).await
            }
            Request::ServiceCreate { .. }
            | Request::ServiceList
            | Request::ServiceGet { .. }
            | Request::ServiceUpdate { .. }
            | Request::ServiceDelete { .. }
            | Request::KeyCreate { .. }
            | Request::KeyList
            | Request::KeyRevoke { .. }
            | Request::PermissionGrant { .. }
            | Request::PermissionRevoke { .. }
            | Request::PermissionList { .. } => match authed.principal {
                Principal::Backend { .. } => {
                    crate::admin::handle(
                        &self.shared,
                        &authed.service,
                        self.context(authed),
                        request,
                    )
                    .await
                }
                Principal::Identity { .. } => Err(forbidden()),
            },
            Request::Unsubscribe { sub_id } => {
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
        }
    }

    async fn subscribe(
        &self,
        authed: &Authed,
        sub_id: u64,
        object: &str,
        since: Option<u64>,
        window: u32,
    ) -> Result<Response, WireError> {
        let record = self.lookup(authed, object).await?;
        self.read_guard(authed, record.as_ref()).await?;
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
        let identity = match &authed.principal {
            Principal::Identity { identity, .. } => Some(identity.as_str()),
            Principal::Backend { .. } => None,
        };
        let subscriber = Subscriber::new(sub_id, &authed.service.sid, identity, &self.outbox);
        let token = subscriber.token;
        self.shared.hub.subscribe(&record.sid, subscriber.clone());
        // A revoke or an ACL toggle that landed after the check above did not see this
        // subscription in the hub: check again now that it is there.
        let still_allowed = match self.shared.store.service(&authed.service.sid).await {
            Ok(Some(service)) => {
                let now = Authed {
                    service,
                    ..authed.clone()
                };
                self.read_guard(&now, Some(&record)).await.is_ok()
            }
            _ => false,
        };
        if !still_allowed {
            self.shared
                .hub
                .unsubscribe(&record.sid, sub_id, &self.outbox);
            if let Ok(mut subs) = self.subs.lock() {
                subs.remove(&sub_id);
            }
            return Err(forbidden());
        }
        self.outbox
            .control(Control::Start(Box::new(StartSubscription {
                sub_id,
                token,
                service_sid: authed.service.sid.clone(),
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

    #[allow(clippy::too_many_arguments)]
    async fn items(
        &self,
        authed: &Authed,
        kind: ObjectKind,
        object: &str,
        from: Option<ItemKey>,
        order: Order,
        limit: u32,
    ) -> Result<Response, WireError> {
        let max = self.shared.limits.max_page;
        if limit == 0 || limit > max {
            return Err(WireError::invalid(format!("limit must be 1..={max}")));
        }
        let record = self.lookup(authed, object).await?;
        self.read_guard(authed, record.as_ref()).await?;
        let record = record.ok_or_else(|| WireError::not_found(kind.name()))?;
        objects::expect_kind(&record, kind)?;
        if let Some(k) = &from {
            items::check_key(kind, k, &self.shared.limits)?;
        }
        // One more than asked tells where the next page starts.
        let mut page = self
            .shared
            .store
            .items(&record.sid, from.as_ref(), order, limit as usize + 1)
            .await
            .map_err(store_err)?;
        let next = (page.len() > limit as usize)
            .then(|| page.pop().map(|(k, _)| k))
            .flatten();
        let now = now_ms();
        let items = page
            .iter()
            .filter(|(_, r)| !r.is_expired(now))
            .map(|(k, r)| items::item_info(k, r))
            .collect();
        Ok(Response::Items { items, next })
    }

    async fn publish(
        &self,
        authed: &Authed,
        stream: &str,
        data: String,
    ) -> Result<Response, WireError> {
        self.shared.limits.check_message(&data)?;
        let existing = self.lookup(authed, stream).await?;
        if let Some(identity) = acl::guarded_identity(&authed.principal, &authed.service) {
            let create = !is_sid(stream);
            acl::check(
                &*self.shared.store,
                identity,
                existing.as_ref(),
                &[Action::Write],
                create,
            )
            .await?;
        }
        let record = match existing {
            Some(r) => {
                objects::expect_kind(&r, ObjectKind::Stream)?;
                r
            }
            None if is_sid(stream) => return Err(WireError::not_found("stream")),
            None => {
                // Publishing to a new name creates the stream, as `doc set` does.
                let created = self
                    .shared
                    .committer
                    .submit(
                        self.context(authed),
                        WriteOp::EnsureStream {
                            name: stream.to_owned(),
                        },
                    )
                    .await?;
                let WriteOutcome::Object(info) = created else {
                    return Err(WireError::internal("stream creation returned no stream"));
                };
                self.lookup(authed, &info.sid)
                    .await?
                    .ok_or_else(|| WireError::not_found("stream"))?
            }
        };
        let actor = authed.principal.actor().to_owned();
        let origin = self.connection_id;
        let sequence = self.shared.hub.publish_message(&record.sid, |sequence| {
            frame::encode_event(&Event {
                object_sid: record.sid.clone(),
                revision: record.revision,
                origin,
                actor,
                kind: EventKind::MessagePublished { data, sequence },
            })
        });
        Ok(Response::Published { sequence })
    }

    async fn update_token(&self, authed: &Authed, token: &str) -> Result<Response, WireError> {
        let Principal::Identity { identity, .. } = &authed.principal else {
            return Err(WireError::invalid(
                "an API-key connection has no token to update",
            ));
        };
        let verified = self.verify(token).await?;
        if verified.identity != *identity || verified.service_sid != authed.service.sid {
            return Err(WireError::new(
                ErrorCode::Unauthorized,
                "a new token must be for the same identity and service",
            ));
        }
        if let Ok(mut a) = self.auth.lock() {
            *a = Some(Authed {
                principal: Principal::Identity {
                    identity: verified.identity,
                    key_sid: verified.key_sid,
                },
                service: authed.service.clone(),
            });
        }
        self.expiry.send_replace(Some(verified.valid_until));
        Ok(Response::TokenUpdated {
            expires_at: verified.expires_at,
        })
    }

    /// Drops every subscription of this connection (on close).
    pub fn close(&self) {
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
