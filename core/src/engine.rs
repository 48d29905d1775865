//! The engine every edge drives: authentication, the checks each request needs (its
//! service still there, its key not revoked, read access), and the execution of typed
//! commands (reads, writes, publishes, administration). QUIC sessions and HTTP requests
//! both come here with a `Caller` and a `Command`, so access, limits, revisions and
//! error codes are decided once; nothing here knows which transport a command came from.

use syncline_proto::ids::is_sid;
use syncline_proto::{ErrorCode, Event, EventKind, ObjectKind, Order, TokenCreate, WireError};
use tracing::{error, warn};

use crate::acl::{self, Action, Principal};
use crate::auth::{self, Login, VerifiedToken};
use crate::command::{Command, Json, Key, Outcome, ReadCommand};
use crate::commit::{WriteOp, WriteOutcome};
use crate::objects::{self, document, items, WriteContext};
use crate::shared::Shared;
use crate::store::{confirmed, CacheMiss, ObjectRecord, ServiceRecord, StoreError};
use crate::{now_ms, now_s};

/// Item bytes (data and keys) one page carries at most, whatever its `limit`: a page of
/// 1,000 items of 16 KiB would not fit the client's largest message. A page cut short by
/// it says where the next one starts, like any other.
pub const PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Who a command runs for: the authenticated principal, the service it acts in (as
/// read for this request), and the origin its events carry (a QUIC connection's id, so
/// its own events read as local; 0 for stateless edges).
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub service: ServiceRecord,
    pub origin: u64,
}

impl Caller {
    /// The token holder's identity (`None` for the backend).
    pub fn identity(&self) -> Option<&str> {
        match &self.principal {
            Principal::Identity { identity, .. } => Some(identity),
            Principal::Backend { .. } => None,
        }
    }

    /// What the commit task needs to know about the writer.
    pub fn context(&self) -> WriteContext {
        WriteContext {
            service_sid: self.service.sid.clone(),
            actor: self.principal.actor().to_owned(),
            origin: self.origin,
            now_ms: now_ms(),
            guard: acl::guarded_identity(&self.principal, &self.service).map(str::to_owned),
            may_create: match self.principal {
                Principal::Backend { .. } => true,
                Principal::Identity { .. } => self.service.flags.token_create == TokenCreate::Own,
            },
        }
    }
}

pub(crate) fn store_err(e: StoreError) -> WireError {
    error!(error = %e, "storage read failed");
    e.client_error("storage read failed")
}

/// Checks a credential and finds the service it acts in. An API key acts in the
/// service it names (sid or unique name; default: the installation's default service);
/// a token acts in its own, and naming another is `Forbidden`. The token, if any, comes
/// back verified, for its expiry.
pub(crate) async fn authenticate(
    shared: &Shared,
    login: Login,
    service: Option<String>,
    origin: u64,
) -> Result<(Caller, Option<VerifiedToken>), WireError> {
    let store = &*shared.store;
    match login {
        Login::ApiKey { sid, secret } => {
            let key = confirmed(store, CacheMiss::ApiKey(&sid), || store.api_key(&sid))
                .await
                .map_err(store_err)?;
            let key_sid = auth::verify_api_key(&secret, key)?;
            let wanted = service.unwrap_or_else(|| shared.installation.default_service_sid.clone());
            let service = crate::admin::find_service(shared, &wanted).await?;
            let principal = Principal::Backend { key_sid };
            Ok((
                Caller {
                    principal,
                    service,
                    origin,
                },
                None,
            ))
        }
        Login::Token(token) => {
            let verified = verify_token(shared, &token).await?;
            let sid = &verified.service_sid;
            let own = confirmed(store, CacheMiss::Service(sid), || store.service(sid))
                .await
                .map_err(store_err)?
                .ok_or_else(|| {
                    WireError::new(ErrorCode::Unauthorized, "token's service does not exist")
                })?;
            // A token reaches its own service only, whatever the client asks for.
            if let Some(asked) = service {
                if asked != own.sid && Some(&asked) != own.unique_name.as_ref() {
                    return Err(acl::forbidden());
                }
            }
            let principal = Principal::Identity {
                identity: verified.identity.clone(),
                key_sid: verified.key_sid.clone(),
            };
            Ok((
                Caller {
                    principal,
                    service: own,
                    origin,
                },
                Some(verified),
            ))
        }
    }
}

/// Verifies an access token against the key its `iss` names.
pub(crate) async fn verify_token(shared: &Shared, token: &str) -> Result<VerifiedToken, WireError> {
    // Find the signing key first (an async store read), then verify with it.
    let key = match auth::unverified_issuer(token) {
        Ok(iss) if is_sid(&iss) => {
            let store = &*shared.store;
            confirmed(store, CacheMiss::ApiKey(&iss), || store.api_key(&iss))
                .await
                .map_err(store_err)?
        }
        _ => None,
    };
    auth::verify_token(
        token,
        key,
        &shared.installation.account_sid,
        &shared.limits,
        now_s(),
    )
}

/// Why a caller can no longer act: its service was deleted or its key revoked (the
/// edge ends the caller's connection), or the check itself failed (try again).
#[derive(Debug)]
pub enum Revoked {
    Ended(WireError),
    CheckFailed(WireError),
}

/// The caller as it stands now: flags change (ACL on/off) and services go away, so each
/// request acts on the current service record; and a key revoked while a connection was
/// authenticating was not there to be closed, so it is checked on every request.
pub(crate) async fn refresh(shared: &Shared, caller: &Caller) -> Result<Caller, Revoked> {
    let store = &*shared.store;
    let service = match store.service(&caller.service.sid).await {
        Ok(Some(service)) => service,
        Ok(None) => {
            let e = WireError::new(ErrorCode::Unauthorized, "the service was deleted");
            return Err(Revoked::Ended(e));
        }
        Err(e) => return Err(Revoked::CheckFailed(store_err(e))),
    };
    match store.api_key(caller.principal.key_sid()).await {
        Ok(Some(key)) if !key.revoked => {}
        Ok(_) => {
            let e = WireError::new(ErrorCode::Unauthorized, "API key revoked");
            return Err(Revoked::Ended(e));
        }
        Err(e) => return Err(Revoked::CheckFailed(store_err(e))),
    }
    Ok(Caller {
        service,
        ..caller.clone()
    })
}

/// The live object `reference` (sid or unique name) names in the caller's service.
pub(crate) async fn lookup(
    shared: &Shared,
    caller: &Caller,
    reference: &str,
) -> Result<Option<ObjectRecord>, WireError> {
    objects::lookup(&*shared.store, &caller.service.sid, reference, now_ms())
        .await
        .map_err(store_err)
}

/// Under an enabled ACL, a token holder needs `read` (a missing object is `Forbidden`
/// too, so that refusals reveal nothing).
pub(crate) async fn check_read(
    shared: &Shared,
    caller: &Caller,
    object: Option<&ObjectRecord>,
) -> Result<(), WireError> {
    match acl::guarded_identity(&caller.principal, &caller.service) {
        None => Ok(()),
        Some(identity) => acl::check(&*shared.store, identity, object, &[Action::Read], false)
            .await
            .map(|_| ()),
    }
}

/// Runs one command for `caller`. Connection-bound commands (subscriptions, token
/// updates) belong to the edge that holds the connection and are refused here.
pub(crate) async fn execute(
    shared: &Shared,
    caller: &Caller,
    command: Command,
) -> Result<Outcome, WireError> {
    match command {
        Command::Ping => Ok(Outcome::Pong),
        Command::Nodes => Ok(Outcome::Nodes(match &shared.cluster {
            Some(cluster) => cluster.nodes(),
            None => vec![shared.node.clone()],
        })),
        Command::Read(read) => execute_read(shared, caller, read).await,
        Command::Write(write) => submit(shared, caller, WriteOp::Client(write)).await,
        Command::Publish { stream, data } => publish(shared, caller, &stream, data).await,
        Command::Admin(admin) => match caller.principal {
            Principal::Backend { .. } => {
                crate::admin::handle(shared, &caller.service, caller.context(), admin).await
            }
            Principal::Identity { .. } => Err(acl::forbidden()),
        },
        Command::UpdateToken { .. } | Command::Subscribe { .. } | Command::Unsubscribe { .. } => {
            Err(WireError::invalid(
                "this request needs a live connection (QUIC)",
            ))
        }
    }
}

/// Hands a write to the commit task and answers what it did.
pub(crate) async fn submit(
    shared: &Shared,
    caller: &Caller,
    op: WriteOp,
) -> Result<Outcome, WireError> {
    match shared.committer.submit(caller.context(), op).await? {
        WriteOutcome::Written(w) => Ok(Outcome::Written(w)),
        WriteOutcome::Deleted { sid, revision } => Ok(Outcome::Deleted { sid, revision }),
        WriteOutcome::Object(o) => Ok(Outcome::Object(o)),
        WriteOutcome::ItemRemoved { key, revision } => Ok(Outcome::ItemRemoved { key, revision }),
        WriteOutcome::Unchanged | WriteOutcome::Departed { .. } => {
            Err(WireError::internal("unexpected server-only write outcome"))
        }
    }
}

async fn execute_read(
    shared: &Shared,
    caller: &Caller,
    read: ReadCommand,
) -> Result<Outcome, WireError> {
    match read {
        ReadCommand::Document { document } => {
            let record = lookup(shared, caller, &document).await?;
            check_read(shared, caller, record.as_ref()).await?;
            let record = record.ok_or_else(|| WireError::not_found("document"))?;
            objects::expect_kind(&record, ObjectKind::Document)?;
            Ok(Outcome::Document(document::info(&record)))
        }
        ReadCommand::Object { object } => {
            let record = lookup(shared, caller, &object).await?;
            check_read(shared, caller, record.as_ref()).await?;
            let record = record.ok_or_else(|| WireError::not_found("object"))?;
            Ok(Outcome::Object(objects::object_info(&record)))
        }
        ReadCommand::Item { kind, object, key } => {
            let record = lookup(shared, caller, &object).await?;
            check_read(shared, caller, record.as_ref()).await?;
            let record = record.ok_or_else(|| WireError::not_found(kind.name()))?;
            objects::expect_kind(&record, kind)?;
            let item = shared
                .store
                .item(&record.sid, &key)
                .await
                .map_err(store_err)?
                .filter(|i| !i.is_expired(now_ms()))
                .ok_or_else(|| WireError::not_found("item"))?;
            Ok(Outcome::Item(items::item_info(&key, &item)))
        }
        ReadCommand::Items {
            kind,
            object,
            from,
            order,
            limit,
        } => page(shared, caller, kind, &object, from, order, limit.get()).await,
        ReadCommand::Objects { kind, after, limit } => {
            objects_page(shared, caller, kind, after, limit.get()).await
        }
    }
}

/// A page of the service's objects of `kind` that the caller may read, in sid order.
async fn objects_page(
    shared: &Shared,
    caller: &Caller,
    kind: ObjectKind,
    after: Option<String>,
    limit: u32,
) -> Result<Outcome, WireError> {
    let now = now_ms();
    let mut found = Vec::new();
    let mut after = after;
    let mut next = None;
    // Under ACL a token holder sees only what it may read: keep reading pages until
    // this one is full or the objects run out.
    'pages: loop {
        let batch = shared
            .store
            .object_page(
                &caller.service.sid,
                kind.prefix(),
                after.as_deref(),
                limit as usize,
            )
            .await
            .map_err(store_err)?;
        let exhausted = batch.len() < limit as usize;
        for record in batch {
            after = Some(record.sid.clone());
            if record.is_expired(now) || check_read(shared, caller, Some(&record)).await.is_err() {
                continue;
            }
            if found.len() == limit as usize {
                next = found.last().map(|r: &ObjectRecord| r.sid.clone());
                break 'pages;
            }
            found.push(record);
        }
        if exhausted {
            break;
        }
    }
    Ok(match kind {
        ObjectKind::Document => Outcome::Documents {
            documents: found.iter().map(document::info).collect(),
            next,
        },
        _ => Outcome::Objects {
            objects: found.iter().map(objects::object_info).collect(),
            next,
        },
    })
}

/// A page of at most `limit` items and `PAGE_BYTES` of item data, and where the next
/// page starts.
async fn page(
    shared: &Shared,
    caller: &Caller,
    kind: ObjectKind,
    object: &str,
    from: Option<Key>,
    order: Order,
    limit: u32,
) -> Result<Outcome, WireError> {
    let record = lookup(shared, caller, object).await?;
    check_read(shared, caller, record.as_ref()).await?;
    let record = record.ok_or_else(|| WireError::not_found(kind.name()))?;
    objects::expect_kind(&record, kind)?;
    // One more than asked tells where the next page starts.
    let mut page = shared
        .store
        .items(&record.sid, from.as_deref(), order, limit as usize + 1)
        .await
        .map_err(store_err)?;
    let mut next = (page.len() > limit as usize)
        .then(|| page.pop().map(|(k, _)| k))
        .flatten();
    let mut bytes = 0;
    if let Some(over) = page.iter().position(|(k, r)| {
        bytes += r.data.len() + r.created_by.len() + k.to_string().len();
        bytes > PAGE_BYTES
    }) {
        // Keep at least one item, so paging always moves on.
        let cut = over.max(1);
        if cut < page.len() {
            next = Some(page[cut].0.clone());
            page.truncate(cut);
        }
    }
    let now = now_ms();
    let items = page
        .iter()
        .filter(|(_, r)| !r.is_expired(now))
        .map(|(k, r)| items::item_info(k, r))
        .collect();
    Ok(Outcome::Items { items, next })
}

/// Sends a message to the stream's current subscribers, creating the stream (by name)
/// as `doc set` creates a document. Needs `write` under ACL.
async fn publish(
    shared: &Shared,
    caller: &Caller,
    stream: &str,
    data: Json,
) -> Result<Outcome, WireError> {
    let existing = lookup(shared, caller, stream).await?;
    if let Some(identity) = acl::guarded_identity(&caller.principal, &caller.service) {
        let create = !is_sid(stream);
        acl::check(
            &*shared.store,
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
            let op = WriteOp::EnsureStream {
                name: stream.to_owned(),
            };
            let WriteOutcome::Object(info) = shared.committer.submit(caller.context(), op).await?
            else {
                return Err(WireError::internal("stream creation returned no stream"));
            };
            lookup(shared, caller, &info.sid)
                .await?
                .ok_or_else(|| WireError::not_found("stream"))?
        }
    };
    let actor = caller.principal.actor().to_owned();
    let origin = caller.origin;
    let data = data.into_string();
    // Checked before anything is copied: a service without webhooks pays a branch.
    let hook = crate::webhooks::Target::of(&caller.service.flags)
        .filter(|t| t.wants(&actor))
        .map(|t| (t, actor.clone(), data.clone()));
    let sequence = match &shared.cluster {
        // Every node's subscribers get it through the cluster's feed, this node's too.
        Some(cluster) => {
            let message = crate::cluster::StreamMessage {
                stream_sid: record.sid.clone(),
                revision: record.revision,
                origin,
                actor,
                data,
            };
            cluster.publish_message(&message).await.map_err(|e| {
                warn!(error = %e, "publishing a stream message through the cluster failed");
                e.client_error("publishing failed")
            })?
        }
        None => shared.hub.publish_message(&record.sid, |sequence| {
            shared.hub.encode(&Event {
                object_sid: record.sid.clone(),
                revision: record.revision,
                origin,
                actor,
                kind: EventKind::MessagePublished { data, sequence },
            })
        }),
    };
    if let Some((target, actor, data)) = hook {
        let change = crate::webhooks::message(&record, &actor, &data, sequence);
        shared.webhooks.offer(&record.service_sid, &target, change);
    }
    Ok(Outcome::Published { sequence })
}
