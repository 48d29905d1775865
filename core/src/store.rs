//! The storage trait: everything the server keeps durably, in Syncline's terms.
//!
//! The core names no storage engine: the server wires one in (sled today). The trait is async and batch-shaped so that a
//! replicated store (etcd, say) can implement it: `apply` takes a batch of object writes,
//! each carrying the record it expects to replace (its expected revision), and makes the
//! whole batch durable at once; reads return one object or the change log from a revision.

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use syncline_proto::{ItemKey, ObjectKind, Order, Rights, ServiceFlags};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine error: {0}")]
    Engine(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// `apply` made the batch visible but could not make it durable.
    #[error("batch applied but not flushed: {0}")]
    NotDurable(String),
    /// The storage cannot be written or read now (an IO error: a full disk, say; or the
    /// store is being reopened after one). Clients get `Unavailable` and may retry.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Free space is under what the store keeps in reserve: writes are refused until
    /// space is freed; reads go on. Clients get `Unavailable`, saying the disk is full.
    #[error("storage is full: {0}")]
    Full(String),
    /// A shared store sent the batch but heard no answer in time (no quorum, a member
    /// lost with it): it may still be applied, later. Nothing is published from here;
    /// if it lands, the store's watch publishes it like any other change.
    #[error("the batch was sent, its outcome is unknown: {0}")]
    Uncertain(String),
    /// A store shared by several nodes: another node changed a record this batch read
    /// before it could commit. Nothing was applied; the batch is computed again.
    #[error("a record changed under the batch: {0}")]
    Conflict(String),
    /// `put_service`: another service holds the unique name (two creations raced).
    #[error("another service holds the unique name {0:?}")]
    NameTaken(String),
}

impl StoreError {
    /// The error a client gets: `Unavailable` when the storage is (a retry may work),
    /// `Internal` otherwise; the details stay in the server's log.
    pub fn client_error(&self, what: &str) -> syncline_proto::WireError {
        match self {
            StoreError::Unavailable(_) | StoreError::NotDurable(_) | StoreError::Conflict(_) => {
                syncline_proto::WireError::new(
                    syncline_proto::ErrorCode::Unavailable,
                    format!("{what}: storage is unavailable (see the server's log); retry later"),
                )
            }
            StoreError::Uncertain(_) => syncline_proto::WireError::new(
                syncline_proto::ErrorCode::Unavailable,
                format!("{what}: the storage did not confirm it in time (see the server's log); it may still be applied: read before retrying"),
            ),
            StoreError::Full(_) => syncline_proto::WireError::new(
                syncline_proto::ErrorCode::Unavailable,
                format!("{what}: the server's disk is full; writes resume once space is freed (reads go on)"),
            ),
            _ => syncline_proto::WireError::internal(what),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// One object as stored. Times are Unix milliseconds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ObjectRecord {
    /// The store's own version of the record as read (etcd's `mod_revision`; 0 for
    /// sled), which a shared store compares before it replaces the record. Not stored.
    #[serde(skip)]
    pub store_version: i64,
    pub service_sid: String,
    pub sid: String,
    pub kind: ObjectKind,
    pub unique_name: Option<String>,
    pub revision: u64,
    /// JSON text (validated before it gets here).
    pub data: String,
    pub created_by: String,
    pub date_created: u64,
    pub date_updated: u64,
    pub date_expires: Option<u64>,
    /// Lists: the index the next `push` gets (indices are never reused).
    pub next_index: u64,
}

impl ObjectRecord {
    /// Expired objects are gone for readers at once, before the reaper deletes them.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.date_expires.is_some_and(|t| t <= now_ms)
    }
}

/// One list or map item as stored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ItemRecord {
    /// The object revision at which the item last changed.
    pub revision: u64,
    pub data: String,
    pub created_by: String,
    pub date_created: u64,
    pub date_updated: u64,
    pub date_expires: Option<u64>,
    /// An ephemeral item's owner: the identity whose last live connection ending
    /// removes it. The store indexes owners (`Store::ephemeral_items`).
    pub ephemeral_owner: Option<String>,
}

impl ItemRecord {
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.date_expires.is_some_and(|t| t <= now_ms)
    }
}

/// A change to one item, inside an [`ObjectWrite`].
#[derive(Clone, Debug)]
pub struct ItemWrite {
    pub key: ItemKey,
    pub before: Option<ItemRecord>,
    pub after: Option<ItemRecord>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ServiceRecord {
    pub sid: String,
    pub unique_name: Option<String>,
    pub flags: ServiceFlags,
    pub date_created: u64,
    pub date_updated: u64,
}

impl ServiceRecord {
    pub fn acl_enabled(&self) -> bool {
        self.flags.acl_enabled
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ApiKeyRecord {
    pub sid: String,
    pub friendly_name: Option<String>,
    /// Needed in the clear to verify HMAC-signed tokens; the data directory is 0700.
    pub secret: String,
    pub date_created: u64,
    pub revoked: bool,
}

/// Installation-wide facts created on first start.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Installation {
    pub account_sid: String,
    pub default_service_sid: String,
    pub admin_key_sid: String,
}

/// A change-log entry: the encoded `Event` that was published for `revision`.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    pub revision: u64,
    pub event: Bytes,
}

/// One object write in a batch. `before` is what the writer read (its expected state);
/// `after` is the new record, `None` to delete. The store keeps its own indexes (names,
/// expiry, change log) in step with the records.
/// Deleting an object (`after: None`) deletes its items too, and its history: its `log`
/// (the removal event) is not kept for resuming, but a shared store passes it on to
/// every node's subscribers.
#[derive(Clone, Debug)]
pub struct ObjectWrite {
    pub before: Option<ObjectRecord>,
    pub after: Option<ObjectRecord>,
    pub log: Option<LogEntry>,
    pub items: Vec<ItemWrite>,
}

/// An identity's rights on an object, with the store's version of the grant as read
/// (etcd's `mod_revision`; 0 for sled), which a shared store compares when a commit's
/// access decision rests on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    pub rights: Rights,
    pub store_version: i64,
}

/// A grant that an access decision of a commit batch rested on, as it was read. A
/// shared store commits the batch only if the grant is still at that version (no
/// revoke or change through another node came in between, which this node's cached
/// copy may not show yet), and answers `Conflict` otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRead {
    pub service_sid: String,
    pub object_sid: String,
    pub identity: String,
    pub store_version: i64,
}

/// What a commit batch's decisions rested on besides the records it read. A shared
/// store commits the batch only if all of it still holds (another node may have
/// changed it, and this node's caches may not show that yet), and answers `Conflict`
/// otherwise. sled ignores it: its grants are read from the tree they are written to
/// (only a revoke landing while a batch is being computed, microseconds, is missed),
/// and presence is the one node's own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Grants the batch's access decisions rested on.
    pub grants: Vec<GrantRead>,
    /// (service sid, identity) whose ephemeral items the batch removes as departed:
    /// no node may hold the identity.
    pub departed: Vec<(String, String)>,
}

impl Conditions {
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty() && self.departed.is_empty()
    }
}

/// The one record a node-local cache of a shared store (services, keys, grants) did not
/// have, for [`Store::recheck`].
#[derive(Clone, Copy, Debug)]
pub enum CacheMiss<'a> {
    Service(&'a str),
    ServiceName(&'a str),
    ApiKey(&'a str),
    Grant {
        service_sid: &'a str,
        object_sid: &'a str,
        identity: &'a str,
    },
}

/// An expired item found by [`Store::expired_items`].
#[derive(Clone, Debug, PartialEq)]
pub struct ExpiredItem {
    pub service_sid: String,
    pub object_sid: String,
    pub key: ItemKey,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn installation(&self) -> StoreResult<Option<Installation>>;
    async fn put_installation(&self, inst: &Installation) -> StoreResult<()>;
    /// Creates the installation with its default service and admin key, unless there is
    /// one: `false` then (on a shared store, another node made it first: read it back).
    async fn create_installation(
        &self,
        inst: &Installation,
        service: &ServiceRecord,
        key: &ApiKeyRecord,
    ) -> StoreResult<bool> {
        if self.installation().await?.is_some() {
            return Ok(false);
        }
        self.put_service(service).await?;
        self.put_api_key(key).await?;
        // Written last: its presence means the rest is there.
        self.put_installation(inst).await?;
        Ok(true)
    }
    /// Stores `token` as the auth token unless there is one; returns the one in effect.
    async fn create_auth_token(&self, token: &str) -> StoreResult<String> {
        if let Some(existing) = self.auth_token().await? {
            return Ok(existing);
        }
        self.put_auth_token(token).await?;
        Ok(token.to_owned())
    }
    /// The installation's auth token (webhook signatures); `None` before it is made.
    async fn auth_token(&self) -> StoreResult<Option<String>>;
    async fn put_auth_token(&self, token: &str) -> StoreResult<()>;

    async fn service(&self, sid: &str) -> StoreResult<Option<ServiceRecord>>;
    async fn service_by_name(&self, unique_name: &str) -> StoreResult<Option<ServiceRecord>>;
    /// Stores the service and claims its unique name, atomically: a name another
    /// service holds is refused with `NameTaken`, whichever node or request got there
    /// first.
    async fn put_service(&self, service: &ServiceRecord) -> StoreResult<()>;

    async fn services(&self) -> StoreResult<Vec<ServiceRecord>>;
    /// Removes the service record, its name and its permissions. Its objects are deleted
    /// after, through `apply` (so that their events go out and writes that raced the
    /// deletion go with them).
    async fn delete_service(&self, service: &ServiceRecord) -> StoreResult<()>;
    /// Every object of a service (for deleting the service).
    async fn objects_of(&self, service_sid: &str) -> StoreResult<Vec<ObjectRecord>>;
    /// Up to `limit` objects of a service whose sid starts with `prefix` (a kind's sid
    /// prefix), in sid order, after the sid `after` if given: one page of a listing.
    async fn object_page(
        &self,
        service_sid: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<ObjectRecord>>;

    async fn api_key(&self, sid: &str) -> StoreResult<Option<ApiKeyRecord>>;
    async fn put_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()>;
    async fn api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>>;

    /// The rights `identity` holds on an object (not counting `*`).
    async fn permission(
        &self,
        service_sid: &str,
        object_sid: &str,
        identity: &str,
    ) -> StoreResult<Option<Permission>>;
    /// Sets (or with `None`, removes) an identity's rights on an object.
    async fn put_permission(
        &self,
        service_sid: &str,
        object_sid: &str,
        identity: &str,
        rights: Option<Rights>,
    ) -> StoreResult<()>;
    /// Every (identity, rights) on an object.
    async fn permissions(
        &self,
        service_sid: &str,
        object_sid: &str,
    ) -> StoreResult<Vec<(String, Rights)>>;

    async fn object(&self, service_sid: &str, sid: &str) -> StoreResult<Option<ObjectRecord>>;
    /// The sid of the object with this unique name in the service, if any.
    async fn object_sid_by_name(
        &self,
        service_sid: &str,
        name: &str,
    ) -> StoreResult<Option<String>>;

    /// Log entries with `after < revision <= up_to`, in order, or `None` if any of them is
    /// no longer kept (compacted away).
    async fn log_range(
        &self,
        object_sid: &str,
        after: u64,
        up_to: u64,
    ) -> StoreResult<Option<Vec<LogEntry>>>;

    /// What a commit batch is about to change, read together: for each object named
    /// by (service sid, sid or unique name), the sid a name resolved to and the record.
    /// A shared store reads them in a round trip or two instead of two per write, and
    /// may start from the copies it keeps of what this node last wrote. `afresh`: the
    /// batch is computed again because something it read may have changed under it
    /// (it lost a race, or refused a write on a revision another node may have moved);
    /// then every record is read from the store of record, and `services` too (its
    /// cache of them may lag another node's change).
    async fn read_for_batch(
        &self,
        services: &[String],
        references: &[(String, String)],
        afresh: bool,
    ) -> StoreResult<Vec<(Option<String>, Option<ObjectRecord>)>> {
        let _ = (services, afresh);
        let mut out = Vec::with_capacity(references.len());
        for (service, reference) in references {
            let sid = if syncline_proto::ids::is_sid(reference) {
                Some(reference.clone())
            } else {
                self.object_sid_by_name(service, reference).await?
            };
            let record = match &sid {
                Some(sid) => self.object(service, sid).await?,
                None => None,
            };
            out.push((sid, record));
        }
        Ok(out)
    }

    async fn item(&self, object_sid: &str, key: &ItemKey) -> StoreResult<Option<ItemRecord>>;

    /// Up to `limit` items from `from` (inclusive) in `order`, expired ones included (the
    /// caller filters them, so a page never needs a second look).
    async fn items(
        &self,
        object_sid: &str,
        from: Option<&ItemKey>,
        order: Order,
        limit: usize,
    ) -> StoreResult<Vec<(ItemKey, ItemRecord)>>;

    /// Items whose expiry is at or before `now_ms`, oldest first.
    async fn expired_items(&self, now_ms: u64, limit: usize) -> StoreResult<Vec<ExpiredItem>>;

    /// The ephemeral items `identity` owns in a service: (object sid, item key).
    async fn ephemeral_items(
        &self,
        service_sid: &str,
        identity: &str,
    ) -> StoreResult<Vec<(String, ItemKey)>>;

    /// Every (service sid, identity) that owns an ephemeral item: after a restart, the
    /// owners whose items go unless they come back.
    async fn ephemeral_owners(&self) -> StoreResult<Vec<(String, String)>>;

    /// Objects whose expiry is at or before `now_ms`: (service sid, object sid), oldest first.
    async fn expired(&self, now_ms: u64, limit: usize) -> StoreResult<Vec<(String, String)>>;

    /// Applies the batch atomically; when it returns Ok, the batch is durable (unless the
    /// store was opened in relaxed mode). `NotDurable` means it was applied (readers see
    /// it) but the flush failed; any other error means nothing was applied. Callers ask
    /// [`Store::writable`] first. A shared store commits the batch only if its
    /// `conditions` still hold.
    async fn apply(&self, batch: Vec<ObjectWrite>, conditions: &Conditions) -> StoreResult<()>;

    /// Whether the store can take writes now, called before a batch is computed. A
    /// store that hit a storage failure (a full disk) answers `Unavailable` until it
    /// has recovered (for sled: space is free again and the database was reopened), so
    /// no batch is computed over state that the recovery drops.
    async fn writable(&self) -> StoreResult<()> {
        Ok(())
    }

    /// Makes everything written so far durable (used at shutdown).
    async fn flush(&self) -> StoreResult<()>;

    /// Whether several nodes share this store. Its watch then hands every committed
    /// event to each node's hub (`cluster::ClusterChange::Event`), this node's own
    /// included, so the commit task does not publish them itself; and `apply` may
    /// answer `Conflict`.
    fn is_shared(&self) -> bool {
        false
    }

    /// Resolves once what this store has applied so far is on this node's hub (a
    /// shared store's watch has delivered its events); writers are answered then.
    fn visible(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(std::future::ready(()))
    }

    /// Most writes the commit task puts in one batch (a shared store's transactions
    /// are bounded in operations).
    fn max_batch_writes(&self) -> usize {
        usize::MAX
    }

    /// Resolves once this node's caches of services, keys and grants hold everything
    /// committed before the call (a shared store's watch has reached the store's
    /// current revision): for what needs the whole of a kind (a list of grants), or
    /// does not know which record changed (a conflicted batch). One record: `recheck`.
    async fn catch_up(&self) -> StoreResult<()> {
        Ok(())
    }

    /// Reads the one record `miss` names from the store of record and, if it exists,
    /// puts it in this node's cache at its own version (so it never replaces a newer
    /// one the watch brought), so that a cache read after the call answers as of the
    /// call. A read, never a write: bad credentials or refusals asked for again and
    /// again cost the shared store reads only. See `confirmed`.
    async fn recheck(&self, _miss: CacheMiss<'_>) -> StoreResult<()> {
        Ok(())
    }
}

/// Reads through a shared store's node-local caches (services, keys, grants), where a
/// miss may only mean this node has not yet seen another node's change (a service
/// created through node A and used at once through node B): `read` is asked again
/// after the store has rechecked `miss` at the source, so "absent" is never an answer
/// older than the request. Hits are answered from the cache: a change reaches it
/// within the watch's delay, and revocations end what they affect when it does.
pub async fn confirmed<T, F, Fut>(
    store: &dyn Store,
    miss: CacheMiss<'_>,
    read: F,
) -> StoreResult<Option<T>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = StoreResult<Option<T>>>,
{
    if let Some(found) = read().await? {
        return Ok(Some(found));
    }
    if !store.is_shared() {
        return Ok(None);
    }
    store.recheck(miss).await?;
    read().await
}
