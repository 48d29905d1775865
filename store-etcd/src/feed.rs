//! A node's view of the cluster: one watch on the range every node must hear about,
//! the caches it keeps up to date (services, API keys, grants: read on every request,
//! so they are served from memory; the live nodes; who is present on which node), the
//! node's lease (its registration and its presence hang on it), and the core's
//! `Cluster` trait on top.
//!
//! Caches are written by the watch and by this node's own writes (so that a node reads
//! its own change at once); each entry keeps the etcd revision it is at, and an older
//! one never replaces a newer one, whichever arrives first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client::{Client, EventType, GetOptions, KeyValue, PutOptions, WatchOptions};
use syncline_core::cluster::{Cluster, ClusterChange, StreamMessage};
use syncline_core::presence::Owner;
use syncline_core::store::{
    ApiKeyRecord, ObjectRecord, Permission, ServiceRecord, StoreError, StoreResult,
};
use syncline_proto::{NodeInfo, Rights};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::etcd::{
    call, decode, encode, engine, log_value_revision, split_log_value, PUBLISH_WAIT,
};
use crate::keys::{FeedKey, Keys};

/// Changes waiting for the core's follower; past this the watch waits (etcd keeps them).
const FEED_DEPTH: usize = 8192;
/// Short-lived keys (stream messages, removal events) live at least this long: long
/// enough for every node's watch to see them.
const SHORT_LEASE_S: i64 = 10;
/// How long a presence or message write keeps trying members that cannot be reached.
const REQUEST_LIMIT: Duration = Duration::from_secs(5);
/// A short lease is reused for keys written within this long of its grant.
const SHORT_LEASE_REUSE: Duration = Duration::from_secs(5);

struct Versioned<T> {
    revision: i64,
    value: Option<T>,
}

#[derive(Default)]
struct Cache {
    services: HashMap<String, Versioned<ServiceRecord>>,
    keys: HashMap<String, Versioned<ApiKeyRecord>>,
    /// (service, object) -> identity -> rights.
    grants: HashMap<(String, String), HashMap<String, Versioned<Rights>>>,
    nodes: BTreeMap<String, NodeInfo>,
    /// (service, identity) -> the nodes holding a connection of it.
    presence: HashMap<(String, String), HashSet<String>>,
}

/// Replaces `slot` with `value` at `revision` unless it holds a newer one.
fn set<T>(slot: &mut Versioned<T>, revision: i64, value: Option<T>) {
    if revision >= slot.revision {
        *slot = Versioned { revision, value };
    }
}

fn set_in<K: std::hash::Hash + Eq, T>(
    map: &mut HashMap<K, Versioned<T>>,
    key: K,
    revision: i64,
    value: Option<T>,
) {
    let slot = map.entry(key).or_insert(Versioned {
        revision: 0,
        value: None,
    });
    set(slot, revision, value);
}

/// This node, once it has joined.
struct Joined {
    node: NodeInfo,
    lease: AtomicI64,
    ttl_s: i64,
}

pub(crate) struct State {
    client: Client,
    keys: Keys,
    cache: RwLock<Cache>,
    joined: OnceLock<Joined>,
    /// (lease, when granted) for short-lived keys.
    short: tokio::sync::Mutex<Option<(i64, Instant)>>,
    changes: Mutex<Option<mpsc::Receiver<ClusterChange>>>,
    /// Owners this node holds a presence entry for, put again under a new lease.
    held: Mutex<HashSet<(String, String)>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The etcd revision up to which the core's follower has applied the feed.
    applied: tokio::sync::watch::Sender<i64>,
    /// The last sync put (when it was sent, its revision), for `sync`'s callers
    /// that were waiting while it was sent.
    last_sync: tokio::sync::Mutex<Option<(Instant, i64)>>,
    /// What this node's last batches wrote (the store's `remember`), here so that the
    /// watch can drop what another node changed since.
    written: Mutex<Written>,
}

/// What this node's last batches wrote (or read), for the next batch to start from
/// without reading it again: a node that writes an object again (the usual case) needs
/// no read round trip. A copy another node changed since is dropped when the watch
/// brings that change; within the watch's delay it is still safe: `apply` compares each
/// record's revision, and a batch that lost that race, or refused a write for naming
/// another revision, is computed again reading everything (`read_for_batch`'s
/// `afresh`), which replaces the stale copies it meets.
#[derive(Default)]
pub(crate) struct Written {
    /// By object sid (unique across services), with the revision it was written at.
    pub(crate) objects: HashMap<String, ObjectRecord>,
    /// (service sid, unique name) -> object sid.
    pub(crate) names: HashMap<(String, String), String>,
}

impl Written {
    /// Keeps `record` as read from etcd, unless a copy at least as new is here.
    pub(crate) fn keep(&mut self, sid: &str, record: &ObjectRecord) {
        if self
            .objects
            .get(sid)
            .is_none_or(|r| r.revision < record.revision)
        {
            self.objects.insert(sid.to_owned(), record.clone());
        }
    }
}

/// Objects remembered at most (then forgotten all at once, and read again as needed).
pub(crate) const WRITTEN_KEPT: usize = 65_536;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    fn read(&self) -> RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the caches at one etcd revision and starts the watch right after it.
    pub(crate) async fn load(
        client: Client,
        keys: Keys,
        watch_delay: Duration,
    ) -> StoreResult<Arc<State>> {
        let (cache, revision) = load_cache(&client, &keys).await?;
        let (tx, rx) = mpsc::channel(FEED_DEPTH);
        let state = Arc::new(State {
            client,
            keys,
            cache: RwLock::new(cache),
            joined: OnceLock::new(),
            short: tokio::sync::Mutex::new(None),
            changes: Mutex::new(Some(rx)),
            held: Mutex::new(HashSet::new()),
            tasks: Mutex::new(Vec::new()),
            applied: tokio::sync::watch::Sender::new(revision),
            last_sync: tokio::sync::Mutex::new(None),
            written: Mutex::new(Written::default()),
        });
        let watch = tokio::spawn(watch(state.clone(), revision + 1, tx, watch_delay));
        lock(&state.tasks).push(watch);
        Ok(state)
    }

    /// Waits until the follower has applied the feed up to `revision` (at most
    /// `limit`: a write is durable whatever the watch does, so it is not refused for
    /// a slow watch). Whether it got there.
    pub(crate) async fn wait_applied(&self, revision: i64, limit: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(limit, applied.wait_for(|a| *a >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Resolves once the follower has applied everything etcd committed before the
    /// call: a put of the sync key, inside the watched range, comes back through the
    /// watch after every earlier event. (etcd's progress notifications would not
    /// need a write, but one could run ahead of events not yet sent, etcd issue 15220,
    /// fixed in 2023, after the 3.4.23 Debian ships.) Callers that waited while a
    /// put was sent share it, so a burst of them costs a write or two.
    pub(crate) async fn sync(&self, limit: Duration) -> StoreResult<()> {
        let asked = Instant::now();
        let revision = {
            let mut last = self.last_sync.lock().await;
            match *last {
                Some((sent, revision)) if sent >= asked => revision,
                _ => {
                    let sent = Instant::now();
                    let resp = self
                        .put(self.keys.sync(), Vec::new(), PutOptions::new())
                        .await?;
                    let revision = resp.header().map_or(0, |h| h.revision());
                    *last = Some((sent, revision));
                    revision
                }
            }
        };
        if self.wait_applied(revision, limit).await {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "this node's watch did not reach etcd revision {revision} in time"
            )))
        }
    }

    /// One put, sent again only if it never reached a member (see `etcd::call`).
    async fn put(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        options: PutOptions,
    ) -> StoreResult<etcd_client::PutResponse> {
        call(REQUEST_LIMIT, false, || {
            let mut kv = self.client.kv_client();
            let (key, value, options) = (key.clone(), value.clone(), options.clone());
            async move { kv.put(key, value, Some(options)).await }
        })
        .await
        .map_err(engine)
    }

    pub(crate) fn written(&self) -> MutexGuard<'_, Written> {
        lock(&self.written)
    }

    fn node_id(&self) -> Option<&str> {
        self.joined.get().map(|j| j.node.id.as_str())
    }

    /// Whether this node leads what runs once per cluster: the live node of the lowest
    /// id leads.
    fn leads(&self) -> bool {
        let me = self.node_id().unwrap_or("");
        self.read()
            .nodes
            .keys()
            .next()
            .is_none_or(|first| first == me)
    }

    pub(crate) fn service(&self, sid: &str) -> Option<ServiceRecord> {
        self.read().services.get(sid).and_then(|v| v.value.clone())
    }

    /// The etcd revision the cached service is at, and whether it exists there.
    pub(crate) fn service_revision(&self, sid: &str) -> Option<(i64, bool)> {
        self.read()
            .services
            .get(sid)
            .map(|v| (v.revision, v.value.is_some()))
    }

    pub(crate) fn service_by_name(&self, name: &str) -> Option<ServiceRecord> {
        self.read()
            .services
            .values()
            .filter_map(|v| v.value.as_ref())
            .find(|s| s.unique_name.as_deref() == Some(name))
            .cloned()
    }

    pub(crate) fn services(&self) -> Vec<ServiceRecord> {
        let mut all: Vec<_> = self
            .read()
            .services
            .values()
            .filter_map(|v| v.value.clone())
            .collect();
        all.sort_by(|a, b| a.sid.cmp(&b.sid));
        all
    }

    pub(crate) fn api_key(&self, sid: &str) -> Option<ApiKeyRecord> {
        self.read().keys.get(sid).and_then(|v| v.value.clone())
    }

    pub(crate) fn api_keys(&self) -> Vec<ApiKeyRecord> {
        let mut all: Vec<_> = self
            .read()
            .keys
            .values()
            .filter_map(|v| v.value.clone())
            .collect();
        all.sort_by(|a, b| a.sid.cmp(&b.sid));
        all
    }

    /// The cached grant, with its etcd `mod_revision` (a commit relying on it compares it).
    pub(crate) fn permission(
        &self,
        service: &str,
        object: &str,
        identity: &str,
    ) -> Option<Permission> {
        self.read()
            .grants
            .get(&(service.to_owned(), object.to_owned()))
            .and_then(|g| g.get(identity))
            .and_then(|v| {
                v.value.map(|rights| Permission {
                    rights,
                    store_version: v.revision,
                })
            })
    }

    pub(crate) fn permissions(&self, service: &str, object: &str) -> Vec<(String, Rights)> {
        let mut all: Vec<_> = self
            .read()
            .grants
            .get(&(service.to_owned(), object.to_owned()))
            .into_iter()
            .flatten()
            .filter_map(|(identity, v)| v.value.map(|r| (identity.clone(), r)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub(crate) fn cache_service(&self, revision: i64, sid: &str, record: Option<ServiceRecord>) {
        let mut cache = self.write();
        if record.is_none() {
            cache
                .grants
                .retain(|(service, _), _| service.as_str() != sid);
        }
        set_in(&mut cache.services, sid.to_owned(), revision, record);
    }

    pub(crate) fn cache_key(&self, revision: i64, sid: &str, record: Option<ApiKeyRecord>) {
        set_in(&mut self.write().keys, sid.to_owned(), revision, record);
    }

    pub(crate) fn cache_permission(
        &self,
        revision: i64,
        service: &str,
        object: &str,
        identity: &str,
        rights: Option<Rights>,
    ) {
        let mut cache = self.write();
        let grants = cache
            .grants
            .entry((service.to_owned(), object.to_owned()))
            .or_default();
        set_in(grants, identity.to_owned(), revision, rights);
    }

    /// A lease for keys that only need to live until every node's watch saw them; `None`
    /// (the key stays) if none can be granted now.
    pub(crate) async fn short_lease(&self) -> Option<i64> {
        let mut short = self.short.lock().await;
        if let Some((lease, granted)) = *short {
            if granted.elapsed() < SHORT_LEASE_REUSE {
                return Some(lease);
            }
        }
        match self.client.lease_client().grant(SHORT_LEASE_S, None).await {
            Ok(resp) => {
                *short = Some((resp.id(), Instant::now()));
                Some(resp.id())
            }
            Err(e) => {
                warn!(error = %e, "granting a short etcd lease failed");
                None
            }
        }
    }

    /// The events in etcd's order, except that one transaction's change-log puts come
    /// in their objects' revision order: etcd lists a transaction's puts in key order,
    /// and ring slots do not sort as revisions do (revision 1000 of a 1,000-slot ring
    /// takes slot 0, ahead of 999's slot 999), while each object's hub wants them in
    /// order. The sort is stable and keyed by etcd revision first, so nothing moves
    /// across transactions.
    fn in_revision_order<'e>(
        &self,
        events: &'e [etcd_client::Event],
    ) -> Vec<&'e etcd_client::Event> {
        let mut ordered: Vec<&etcd_client::Event> = events.iter().collect();
        ordered.sort_by_key(|e| {
            let Some(kv) = e.kv() else { return (0, 0) };
            let logged = if self.keys.is_log(kv.key()) && e.event_type() == EventType::Put {
                log_value_revision(kv.value()).unwrap_or(0)
            } else {
                0
            };
            (kv.mod_revision(), logged)
        });
        ordered
    }

    /// Applies one watch response's events to the caches and turns them into changes.
    /// Drops this node's copy of an object older than `revision`: another node wrote
    /// it since (this node's own writes are remembered at the revision they made).
    fn forget_written_before(&self, object_sid: &str, revision: u64) {
        let mut written = self.written();
        if written
            .objects
            .get(object_sid)
            .is_some_and(|r| r.revision < revision)
        {
            written.objects.remove(object_sid);
        }
    }

    fn changes_of(&self, events: &[etcd_client::Event]) -> Vec<ClusterChange> {
        let me = self.node_id().map(str::to_owned);
        // A node's lease ending deletes its registration and its presence entries in
        // one revision, so they arrive in one response: nodes gone first.
        let gone: HashSet<String> = events
            .iter()
            .filter(|e| e.event_type() == EventType::Delete)
            .filter_map(
                |e| match e.kv().and_then(|kv| self.keys.parse_feed(kv.key())) {
                    Some(FeedKey::Node { id }) => Some(id),
                    _ => None,
                },
            )
            .collect();
        let mut out = Vec::new();
        for event in self.in_revision_order(events) {
            let Some(kv) = event.kv() else { continue };
            let Some(key) = self.keys.parse_feed(kv.key()) else {
                continue;
            };
            let put = event.event_type() == EventType::Put;
            let revision = kv.mod_revision();
            match key {
                FeedKey::Log { object_sid } => {
                    if !put {
                        continue;
                    }
                    match split_log_value(kv.value()) {
                        Some((ends, object_revision, event)) => {
                            self.forget_written_before(&object_sid, object_revision);
                            out.push(ClusterChange::Event {
                                object_sid,
                                revision: object_revision,
                                event,
                                ends,
                            })
                        }
                        None => {
                            warn!(object = %object_sid, "a change-log entry in etcd is unreadable")
                        }
                    }
                }
                FeedKey::Service { sid } => {
                    let record = if put {
                        decoded::<ServiceRecord>(kv)
                    } else {
                        None
                    };
                    self.cache_service(revision, &sid, record.clone());
                    out.push(ClusterChange::Service { sid, record });
                }
                FeedKey::ApiKey { sid } => {
                    let record = if put {
                        decoded::<ApiKeyRecord>(kv)
                    } else {
                        None
                    };
                    let revoked = record.as_ref().is_none_or(|k| k.revoked);
                    self.cache_key(revision, &sid, record);
                    if revoked {
                        out.push(ClusterChange::KeyRevoked { sid });
                    }
                }
                FeedKey::Permission {
                    service_sid,
                    object_sid,
                    identity,
                } => {
                    let rights = if put { decoded::<Rights>(kv) } else { None };
                    self.cache_permission(revision, &service_sid, &object_sid, &identity, rights);
                    out.push(ClusterChange::Permission {
                        service_sid,
                        object_sid,
                    });
                }
                FeedKey::Node { id } => {
                    let mut cache = self.write();
                    if put {
                        match serde_json::from_slice::<NodeInfo>(kv.value()) {
                            Ok(node) => {
                                cache.nodes.insert(id, node);
                            }
                            Err(e) => {
                                warn!(node = %id, error = %e, "a node's registration is unreadable")
                            }
                        }
                    } else {
                        info!(node = %id, "a node left the cluster");
                        cache.nodes.remove(&id);
                    }
                }
                FeedKey::Presence {
                    service_sid,
                    identity,
                    node,
                } => {
                    let mut cache = self.write();
                    let owner = (service_sid, identity);
                    if put {
                        cache.presence.entry(owner).or_default().insert(node);
                        continue;
                    }
                    let holders = cache.presence.entry(owner.clone()).or_default();
                    holders.remove(&node);
                    let empty = holders.is_empty();
                    if empty {
                        cache.presence.remove(&owner);
                    }
                    let node_died = gone.contains(&node) || !cache.nodes.contains_key(&node);
                    if empty && node_died && me.as_deref() != Some(node.as_str()) {
                        out.push(ClusterChange::PresenceLost {
                            service_sid: owner.0,
                            identity: owner.1,
                        });
                    }
                }
                FeedKey::ServiceEnded { sid } => {
                    if put {
                        out.push(ClusterChange::ServiceEnded { sid });
                    }
                }
                FeedKey::Message { stream_sid } => {
                    if !put {
                        continue;
                    }
                    match decode::<StreamMessage>(kv.value()) {
                        Ok(message) => out.push(ClusterChange::Message {
                            sequence: u64::try_from(kv.version()).unwrap_or(0),
                            message,
                        }),
                        Err(e) => {
                            warn!(stream = %stream_sid, error = %e, "a stream message in etcd is unreadable")
                        }
                    }
                }
            }
        }
        out
    }
}

fn decoded<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Option<T> {
    match decode(kv.value()) {
        Ok(v) => Some(v),
        Err(e) => {
            warn!(error = %e, key = %String::from_utf8_lossy(kv.key()), "a record in etcd is unreadable");
            None
        }
    }
}

/// Reads what the caches hold, all at one revision; returns it with that revision.
async fn load_cache(client: &Client, keys: &Keys) -> StoreResult<(Cache, i64)> {
    // Reads again past a member that is down (a node starting while one is).
    let read = |prefix: Vec<u8>, options: GetOptions| {
        call(REQUEST_LIMIT, true, move || {
            let (mut kv, prefix, options) = (client.kv_client(), prefix.clone(), options.clone());
            async move { kv.get(prefix, Some(options)).await }
        })
    };
    let first = read(keys.services(), GetOptions::new().with_prefix())
        .await
        .map_err(engine)?;
    let revision = first.header().map_or(0, |h| h.revision());
    let at = |prefix: Vec<u8>| {
        let options = GetOptions::new().with_prefix().with_revision(revision);
        async move { read(prefix, options).await.map_err(engine) }
    };
    let mut cache = Cache::default();
    for kv in first.kvs() {
        if let (Some(FeedKey::Service { sid }), Some(record)) =
            (keys.parse_feed(kv.key()), decoded(kv))
        {
            set_in(&mut cache.services, sid, kv.mod_revision(), Some(record));
        }
    }
    for kv in at(keys.api_keys()).await?.kvs() {
        if let (Some(FeedKey::ApiKey { sid }), Some(record)) =
            (keys.parse_feed(kv.key()), decoded(kv))
        {
            set_in(&mut cache.keys, sid, kv.mod_revision(), Some(record));
        }
    }
    for kv in at(keys.all_permissions()).await?.kvs() {
        if let (
            Some(FeedKey::Permission {
                service_sid,
                object_sid,
                identity,
            }),
            Some(rights),
        ) = (keys.parse_feed(kv.key()), decoded(kv))
        {
            let grants = cache.grants.entry((service_sid, object_sid)).or_default();
            set_in(grants, identity, kv.mod_revision(), Some(rights));
        }
    }
    for kv in at(keys.nodes()).await?.kvs() {
        if let (Some(FeedKey::Node { id }), Ok(node)) = (
            keys.parse_feed(kv.key()),
            serde_json::from_slice::<NodeInfo>(kv.value()),
        ) {
            cache.nodes.insert(id, node);
        }
    }
    for kv in at(keys.all_presence()).await?.kvs() {
        if let Some(FeedKey::Presence {
            service_sid,
            identity,
            node,
        }) = keys.parse_feed(kv.key())
        {
            cache
                .presence
                .entry((service_sid, identity))
                .or_default()
                .insert(node);
        }
    }
    Ok((cache, revision))
}

/// The node's one watch, for as long as the node runs: from `next` on, resumed after
/// every error from the last revision it handled.
async fn watch(state: Arc<State>, mut next: i64, tx: mpsc::Sender<ClusterChange>, delay: Duration) {
    let mut failing_since: Option<Instant> = None;
    loop {
        // No progress notifications: before etcd's fix of issue 15220 one could run
        // ahead of events not yet sent, and resuming from it would skip them. A watch
        // quiet past a compaction reloads instead (below).
        let options = WatchOptions::new().with_prefix().with_start_revision(next);
        let mut stream = match state
            .client
            .watch_client()
            .watch(state.keys.feed_prefix().to_vec(), Some(options))
            .await
        {
            Ok(stream) => stream,
            Err(e) => {
                if failing_since.is_none() {
                    warn!(error = %e, "the cluster watch cannot reach etcd; retrying");
                    failing_since = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        loop {
            let resp = match stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => break,
                Err(e) => {
                    debug!(error = %e, "the cluster watch broke; resuming");
                    break;
                }
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if let Some(since) = failing_since.take() {
                info!(
                    after_ms = since.elapsed().as_millis() as u64,
                    "the cluster watch reaches etcd again"
                );
            }
            if resp.compact_revision() > 0 {
                // What happened between `next` and the compaction is gone: reload
                // what the caches hold, and every subscription catches up.
                warn!(
                    from = next,
                    compacted = resp.compact_revision(),
                    "the cluster watch fell behind etcd's compaction"
                );
                match reload(&state).await {
                    Ok((changes, revision)) => {
                        next = revision + 1;
                        for change in changes {
                            if tx.send(change).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => warn!(error = %e, "reloading after a compaction failed; retrying"),
                }
                break;
            }
            if resp.canceled() {
                debug!(
                    reason = resp.cancel_reason(),
                    "the cluster watch was cancelled; resuming"
                );
                break;
            }
            let events = resp.events();
            let position = match events.last().and_then(|e| e.kv()) {
                Some(last) => {
                    let changes = state.changes_of(events);
                    for change in changes {
                        if tx.send(change).await.is_err() {
                            return;
                        }
                    }
                    last.mod_revision()
                }
                None => continue,
            };
            next = next.max(position + 1);
            if tx.send(ClusterChange::Caught { position }).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// After a gap: the caches as they are now, and the changes that make the core
/// re-check everything the gap may have hidden.
async fn reload(state: &State) -> StoreResult<(Vec<ClusterChange>, i64)> {
    let (cache, revision) = load_cache(&state.client, &state.keys).await?;
    let mut changes = Vec::new();
    {
        let mut current = state.write();
        let sids: HashSet<String> = current
            .services
            .keys()
            .chain(cache.services.keys())
            .cloned()
            .collect();
        for sid in sids {
            let record = cache.services.get(&sid).and_then(|v| v.value.clone());
            changes.push(ClusterChange::Service { sid, record });
        }
        for (sid, key) in &cache.keys {
            if key.value.as_ref().is_some_and(|k| k.revoked) {
                changes.push(ClusterChange::KeyRevoked { sid: sid.clone() });
            }
        }
        *current = cache;
    }
    changes.push(ClusterChange::Gap);
    Ok((changes, revision))
}

/// Registers the node under a fresh lease, keeps the lease alive, compacts etcd's
/// history when it leads, and hands back the core's `Cluster`.
pub(crate) async fn join(
    state: Arc<State>,
    mut node: NodeInfo,
    ttl_s: i64,
    compaction_interval: Duration,
) -> StoreResult<Arc<EtcdCluster>> {
    if node.id.is_empty() {
        node.id = format!("{:016x}", rand::random::<u64>());
    }
    // A grant repeated after an answer was lost leaves a lease nobody keeps alive,
    // which ends by itself.
    let lease = call(REQUEST_LIMIT, true, || {
        let mut leases = state.client.lease_client();
        async move { leases.grant(ttl_s, None).await }
    })
    .await
    .map_err(engine)?
    .id();
    let joined = Joined {
        node: node.clone(),
        lease: AtomicI64::new(lease),
        ttl_s,
    };
    if state.joined.set(joined).is_err() {
        return Err(StoreError::Engine(
            "this store has joined the cluster already".into(),
        ));
    }
    register(&state, lease).await?;
    state.write().nodes.insert(node.id.clone(), node.clone());
    info!(node = %node.id, quic = %node.quic, "joined the cluster");
    let keeper = tokio::spawn(keep_alive(state.clone()));
    lock(&state.tasks).push(keeper);
    if !compaction_interval.is_zero() {
        let compactor = tokio::spawn(compact_history(state.clone(), compaction_interval));
        lock(&state.tasks).push(compactor);
    }
    Ok(Arc::new(EtcdCluster { state }))
}

/// etcd keeps every revision of every key until it is compacted, and refuses writes
/// once that history fills its space quota: every write here puts a record and a
/// change-log slot, so an etcd left alone fills up. Nothing here reads old revisions
/// (resumes read the change-log ring; a node's watch that falls behind a compaction
/// reloads), so, as the Kubernetes API server does, the cluster compacts by itself:
/// each `interval`, the leading node compacts to the revision its watch had reached one
/// interval before. Two nodes that both think they lead for a moment compact to about
/// the same revision; the second is refused, harmlessly.
async fn compact_history(state: Arc<State>, interval: Duration) {
    let mut seen_before: Option<i64> = None;
    loop {
        tokio::time::sleep(interval).await;
        let reached = *state.applied.borrow();
        let target = seen_before.replace(reached);
        let Some(target) = target.filter(|t| *t > 0) else {
            continue;
        };
        if !state.leads() {
            continue;
        }
        let mut kv = state.client.kv_client();
        match tokio::time::timeout(REQUEST_LIMIT, kv.compact(target, None)).await {
            Ok(Ok(_)) => debug!(revision = target, "compacted etcd's history"),
            // Compacted further already (by etcd itself, another node, an operator).
            Ok(Err(e)) if e.to_string().contains("compacted") => {
                debug!(revision = target, error = %e, "etcd's history was compacted already")
            }
            Ok(Err(e)) => warn!(revision = target, error = %e, "compacting etcd's history failed"),
            Err(_) => warn!(revision = target, "compacting etcd's history timed out"),
        }
    }
}

/// Puts the node's registration and its presence entries under `lease`.
async fn register(state: &State, lease: i64) -> StoreResult<()> {
    let Some(joined) = state.joined.get() else {
        return Ok(());
    };
    let value = serde_json::to_vec(&joined.node).map_err(|e| StoreError::Engine(e.to_string()))?;
    let leased = || PutOptions::new().with_lease(lease);
    state
        .put(state.keys.node(&joined.node.id), value, leased())
        .await?;
    let held: Vec<_> = lock(&state.held).iter().cloned().collect();
    for (service, identity) in held {
        let key = state.keys.presence(&service, &identity, &joined.node.id);
        state.put(key, Vec::new(), leased()).await?;
    }
    Ok(())
}

/// Keeps the node's lease alive; when it was lost anyway (etcd unreachable for longer
/// than its TTL), registers again under a new one.
async fn keep_alive(state: Arc<State>) {
    let Some(joined) = state.joined.get() else {
        return;
    };
    let interval = Duration::from_millis((joined.ttl_s.max(1) as u64) * 1000 / 3);
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(interval).await;
        let lease = joined.lease.load(Ordering::SeqCst);
        let alive = async {
            let (mut keeper, mut stream) = state.client.lease_client().keep_alive(lease).await?;
            keeper.keep_alive().await?;
            Ok::<_, etcd_client::Error>(stream.message().await?.map(|r| r.ttl()))
        };
        match tokio::time::timeout(interval, alive).await {
            Ok(Ok(Some(ttl))) if ttl > 0 => {
                last_ok = Instant::now();
                continue;
            }
            Ok(Ok(_)) => {
                warn!(node = %joined.node.id, "the node's lease expired; registering again")
            }
            Ok(Err(e)) => {
                debug!(error = %e, "keeping the node's lease alive failed");
                if last_ok.elapsed() < Duration::from_secs(joined.ttl_s as u64) {
                    continue;
                }
            }
            Err(_) => {
                if last_ok.elapsed() < Duration::from_secs(joined.ttl_s as u64) {
                    continue;
                }
            }
        }
        let granted = state.client.lease_client().grant(joined.ttl_s, None).await;
        match granted {
            Ok(resp) => {
                joined.lease.store(resp.id(), Ordering::SeqCst);
                match register(&state, resp.id()).await {
                    Ok(()) => {
                        last_ok = Instant::now();
                        info!(node = %joined.node.id, "registered again under a new lease");
                    }
                    Err(e) => debug!(error = %e, "registering again failed"),
                }
            }
            Err(e) => debug!(error = %e, "granting a new node lease failed"),
        }
    }
}

/// The core's `Cluster` on etcd.
pub struct EtcdCluster {
    state: Arc<State>,
}

impl EtcdCluster {
    /// This node's id in the cluster.
    pub fn node_id(&self) -> &str {
        self.state.node_id().unwrap_or("")
    }

    /// Leaves the cluster: stops the watch and the keep-alive and revokes the node's
    /// lease, so that the other nodes see it go now rather than after its TTL.
    pub async fn leave(&self) {
        for task in lock(&self.state.tasks).drain(..) {
            task.abort();
        }
        if let Some(joined) = self.state.joined.get() {
            let lease = joined.lease.load(Ordering::SeqCst);
            if let Err(e) = self.state.client.lease_client().revoke(lease).await {
                warn!(error = %e, "revoking the node's lease failed; it ends after its TTL");
            }
        }
    }
}

#[async_trait]
impl Cluster for EtcdCluster {
    fn changes(&self) -> Option<mpsc::Receiver<ClusterChange>> {
        lock(&self.state.changes).take()
    }

    async fn publish_message(&self, message: &StreamMessage) -> StoreResult<u64> {
        let lease = self.state.short_lease().await;
        let mut options = PutOptions::new().with_prev_key();
        if let Some(lease) = lease {
            options = options.with_lease(lease);
        }
        let (key, value) = (
            self.state.keys.message(&message.stream_sid),
            encode(message),
        );
        let resp = self.state.put(key, value, options).await?;
        // Answered once this node's subscribers have it, as a write is: a subscriber
        // that arrives after the answer does not get it.
        let revision = resp.header().map_or(0, |h| h.revision());
        if !self.state.wait_applied(revision, PUBLISH_WAIT).await {
            warn!(
                revision,
                "a published message was not seen by this node's watch in time"
            );
        }
        // The stream's key counts its puts (etcd's per-key version): the sequence every
        // node's watch reads back, 1 after the stream was quiet for the lease's life.
        Ok(resp.prev_key().map_or(1, |prev| prev.version() as u64 + 1))
    }

    async fn end_service(&self, sid: &str) -> StoreResult<()> {
        let mut options = PutOptions::new();
        if let Some(lease) = self.state.short_lease().await {
            options = options.with_lease(lease);
        }
        let key = self.state.keys.service_ended(sid);
        self.state.put(key, Vec::new(), options).await.map(drop)
    }

    async fn hold_presence(&self, owner: &Owner) -> StoreResult<()> {
        let Some(joined) = self.state.joined.get() else {
            return Ok(());
        };
        lock(&self.state.held).insert((owner.service_sid.clone(), owner.identity.clone()));
        let lease = joined.lease.load(Ordering::SeqCst);
        let key = self
            .state
            .keys
            .presence(&owner.service_sid, &owner.identity, &joined.node.id);
        self.state
            .put(key, Vec::new(), PutOptions::new().with_lease(lease))
            .await
            .map(drop)
    }

    async fn release_presence(&self, owner: &Owner) -> StoreResult<()> {
        let Some(joined) = self.state.joined.get() else {
            return Ok(());
        };
        lock(&self.state.held).remove(&(owner.service_sid.clone(), owner.identity.clone()));
        let key = self
            .state
            .keys
            .presence(&owner.service_sid, &owner.identity, &joined.node.id);
        call(REQUEST_LIMIT, false, || {
            let (mut kv, key) = (self.state.client.kv_client(), key.clone());
            async move { kv.delete(key, None).await }
        })
        .await
        .map(drop)
        .map_err(engine)
    }

    async fn present_elsewhere(&self, owner: &Owner) -> StoreResult<bool> {
        let me = self.state.node_id().unwrap_or("");
        Ok(self
            .state
            .read()
            .presence
            .get(&(owner.service_sid.clone(), owner.identity.clone()))
            .is_some_and(|nodes| nodes.iter().any(|n| n != me)))
    }

    fn nodes(&self) -> Vec<NodeInfo> {
        let me = self.state.node_id().unwrap_or("");
        let cache = self.state.read();
        let mine = cache.nodes.get(me).cloned();
        mine.into_iter()
            .chain(cache.nodes.values().filter(|n| n.id != me).cloned())
            .collect()
    }

    fn applied(&self, position: i64) {
        self.state.applied.send_if_modified(|a| {
            let newer = position > *a;
            if newer {
                *a = position;
            }
            newer
        });
    }

    fn leads(&self) -> bool {
        self.state.leads()
    }
}
