//! Syncline's store for several nodes: the core's `Store` and `Cluster` traits on a
//! shared etcd cluster. Every node of an installation connects to the same etcd (under
//! the same prefix); a commit batch is one etcd transaction that compares what it read;
//! each node holds one watch on the range every node must hear about (`keys.rs`) and
//! turns it into the core's `ClusterChange`s, keeping its caches of services, keys and
//! grants, the live nodes and who is present where (`feed.rs`).

mod etcd;
mod feed;
pub mod keys;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KeyValue, PutOptions,
    SortOrder, SortTarget, Txn, TxnOp,
};
use serde::de::DeserializeOwned;
use syncline_core::store::{
    ApiKeyRecord, CacheMiss, Conditions, ExpiredItem, Installation, ItemRecord, LogEntry,
    ObjectRecord, ObjectWrite, Permission, ServiceRecord, Store, StoreError, StoreResult,
};
use syncline_proto::{ItemKey, Order, Rights};
use tracing::warn;

use etcd::{call, decode, encode, engine, log_value, split_log_value, PUBLISH_WAIT};
pub use feed::EtcdCluster;
use feed::{Written, WRITTEN_KEPT};
use keys::{item_key_from, range_end, Keys};

/// How a node reaches etcd.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// Client URLs of the etcd members (`http://host:2379`, or `https://` with `tls`).
    pub endpoints: Vec<String>,
    /// Every key of the installation starts with it; several installations can share
    /// one etcd under different prefixes.
    pub prefix: String,
    /// etcd user and password, when etcd's authentication is on.
    pub user: Option<(String, String)>,
    /// TLS to etcd (`https://` endpoints): the CA that signed etcd's certificate, and
    /// this node's client certificate and key when etcd asks for one
    /// (`--client-cert-auth`).
    pub tls: Option<EtcdTls>,
    /// Change-log entries kept per object for resuming subscribers.
    pub log_retention: u64,
    /// Longest wait for one etcd request: without quorum, writes fail with
    /// `Unavailable` after this, never hang.
    pub request_timeout: Duration,
    /// Seconds a node's lease lives without a keep-alive: a node that dies leaves the
    /// node list, and takes its presence with it, this long after.
    pub node_ttl_s: i64,
    /// etcd's `--max-txn-ops` (128 unless etcd was started with another): bounds the
    /// writes per commit batch.
    pub max_txn_ops: usize,
    /// How often the cluster compacts etcd's history (the leading node, to the revision
    /// of one interval before; see `feed::compact_history`). Zero: never, for an etcd
    /// that compacts itself (`--auto-compaction-retention`).
    pub compaction_interval: Duration,
    /// Holds back each answer of this node's watch this long: a node that lags the
    /// others, which tests need and cannot otherwise make on one machine. Zero (no
    /// delay) unless a test sets it; not a command-line option.
    pub watch_delay: Duration,
}

/// PEM files for TLS to etcd.
#[derive(Clone, Debug)]
pub struct EtcdTls {
    pub ca_file: std::path::PathBuf,
    /// Certificate and key, for etcd's client certificate authentication.
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl EtcdTls {
    fn options(&self) -> StoreResult<etcd_client::TlsOptions> {
        let read = |path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| StoreError::Unavailable(format!("reading {}: {e}", path.display())))
        };
        let mut tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&self.ca_file)?));
        if let Some((cert, key)) = &self.client {
            tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
        }
        Ok(tls)
    }
}

impl EtcdOptions {
    pub fn new(endpoints: Vec<String>) -> EtcdOptions {
        EtcdOptions {
            endpoints,
            prefix: DEFAULT_PREFIX.into(),
            user: None,
            tls: None,
            log_retention: 256,
            request_timeout: Duration::from_secs(10),
            node_ttl_s: 5,
            max_txn_ops: 128,
            compaction_interval: Duration::from_secs(300),
            watch_delay: Duration::ZERO,
        }
    }
}

pub const DEFAULT_PREFIX: &str = "/syncline";

/// Largest etcd answer read (a page of items, an object's items when it is deleted).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Operations a write of one record can take in a transaction (object, log entry, item,
/// item indexes, name, expiry), for the batch bound.
const OPS_PER_WRITE: usize = 8;

fn decode_object(kv: &KeyValue) -> StoreResult<ObjectRecord> {
    let mut record: ObjectRecord = decode(kv.value())?;
    record.store_version = kv.mod_revision();
    Ok(record)
}

/// One key's last operation in a transaction (etcd refuses a key twice in one).
enum Op {
    Put(Vec<u8>, Option<i64>),
    Delete,
    /// Deletes `[key, end)`.
    DeleteRange(Vec<u8>),
}

/// The Store on etcd; also the node's `Cluster` (see `feed.rs`).
pub struct EtcdStore {
    client: Client,
    keys: Keys,
    options: EtcdOptions,
    cluster: Arc<feed::State>,
    /// The revision of the last batch with events this node committed.
    committed: std::sync::atomic::AtomicI64,
}

impl EtcdStore {
    /// Connects to etcd and loads the caches (services, keys, grants, nodes, presence).
    /// The node joins the cluster later, with `join`, once it knows its addresses.
    pub async fn connect(options: EtcdOptions) -> StoreResult<Arc<EtcdStore>> {
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(options.request_timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        if let Some((user, password)) = &options.user {
            connect = connect.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &options.tls {
            connect = connect.with_tls(tls.options()?);
        }
        let client = Client::connect(&options.endpoints, Some(connect))
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "connecting to etcd at {}: {e}",
                    options.endpoints.join(",")
                ))
            })?;
        let keys = Keys::new(&options.prefix);
        let cluster = feed::State::load(client.clone(), keys.clone(), options.watch_delay).await?;
        Ok(Arc::new(EtcdStore {
            client,
            keys,
            options,
            cluster,
            committed: std::sync::atomic::AtomicI64::new(0),
        }))
    }

    /// The node's view of the cluster (the core's `Cluster`), once it has joined.
    pub async fn join(
        self: &Arc<Self>,
        node: syncline_proto::NodeInfo,
    ) -> StoreResult<Arc<EtcdCluster>> {
        feed::join(
            self.cluster.clone(),
            node,
            self.options.node_ttl_s,
            self.options.compaction_interval,
        )
        .await
    }

    /// What this node's last batches wrote (`feed::Written`).
    fn written(&self) -> std::sync::MutexGuard<'_, Written> {
        self.cluster.written()
    }

    fn kv(&self) -> etcd_client::KvClient {
        // A page of items may carry up to 1,000 items of 16 KiB (the core cuts pages at
        // 4 MiB of data, past gRPC's default 4 MiB limit with the keys and framing).
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    async fn get_one(&self, key: Vec<u8>) -> StoreResult<Option<KeyValue>> {
        let mut resp = call(self.options.request_timeout, true, || {
            let (mut kv, key) = (self.kv(), key.clone());
            async move { kv.get(key, None).await }
        })
        .await
        .map_err(engine)?;
        Ok(resp.take_kvs().into_iter().next())
    }

    /// `recheck` of one service by sid.
    async fn recheck_service(&self, sid: &str) -> StoreResult<()> {
        if let Some(kv) = self.get_one(self.keys.service(sid)).await? {
            let record = decode(kv.value())?;
            self.cluster
                .cache_service(kv.mod_revision(), sid, Some(record));
        }
        Ok(())
    }

    async fn get_value<T: DeserializeOwned>(&self, key: Vec<u8>) -> StoreResult<Option<T>> {
        match self.get_one(key).await? {
            Some(kv) => decode(kv.value()).map(Some),
            None => Ok(None),
        }
    }

    async fn range(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
        order: SortOrder,
    ) -> StoreResult<Vec<KeyValue>> {
        let mut options = GetOptions::new()
            .with_range(end)
            .with_sort(SortTarget::Key, order);
        if limit > 0 {
            options = options.with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        let mut resp = call(self.options.request_timeout, true, || {
            let (mut kv, start, options) = (self.kv(), start.clone(), options.clone());
            async move { kv.get(start, Some(options)).await }
        })
        .await
        .map_err(engine)?;
        Ok(resp.take_kvs())
    }

    async fn prefix(&self, prefix: Vec<u8>, keys_only: bool) -> StoreResult<Vec<KeyValue>> {
        let mut options = GetOptions::new().with_prefix();
        if keys_only {
            options = options.with_keys_only();
        }
        let mut resp = call(self.options.request_timeout, true, || {
            let (mut kv, prefix, options) = (self.kv(), prefix.clone(), options.clone());
            async move { kv.get(prefix, Some(options)).await }
        })
        .await
        .map_err(engine)?;
        Ok(resp.take_kvs())
    }

    /// Each key's value (or `None`), read in one read-only transaction (at most
    /// `max_txn_ops` gets each).
    async fn read_many(
        &self,
        keys: impl Iterator<Item = Vec<u8>>,
    ) -> StoreResult<(Vec<Option<KeyValue>>, i64)> {
        let keys: Vec<Vec<u8>> = keys.collect();
        let mut out = Vec::with_capacity(keys.len());
        let mut at = 0;
        for chunk in keys.chunks(self.options.max_txn_ops.max(1)) {
            let gets: Vec<TxnOp> = chunk
                .iter()
                .map(|key| TxnOp::get(key.clone(), None))
                .collect();
            let resp = call(self.options.request_timeout, true, || {
                let (mut kv, txn) = (self.kv(), Txn::new().and_then(gets.clone()));
                async move { kv.txn(txn).await }
            })
            .await
            .map_err(engine)?;
            at = at.max(resp.header().map_or(0, |h| h.revision()));
            for op in resp.op_responses() {
                match op {
                    etcd_client::TxnOpResponse::Get(mut get) => {
                        out.push(get.take_kvs().into_iter().next());
                    }
                    _ => return Err(StoreError::Corrupt("a read answered with a write".into())),
                }
            }
        }
        if out.len() != keys.len() {
            return Err(StoreError::Engine("a batch read lost answers".into()));
        }
        Ok((out, at))
    }

    /// The slot of an object's change-log ring that `revision` goes to (`Keys::log`).
    fn log_slot(&self, revision: u64) -> u64 {
        revision % self.options.log_retention.max(1)
    }

    /// Keeps what a committed batch wrote (each object's last state, at the batch's
    /// revision) for the next batch.
    fn remember(&self, writes: &[ObjectWrite], revision: i64) {
        let mut written = self.written();
        if written.objects.len() > WRITTEN_KEPT {
            *written = Written::default();
        }
        for w in writes {
            if let Some(before) = &w.before {
                written.objects.remove(&before.sid);
                if let Some(name) = &before.unique_name {
                    written
                        .names
                        .remove(&(before.service_sid.clone(), name.clone()));
                }
            }
            if let Some(after) = &w.after {
                let mut record = after.clone();
                record.store_version = revision;
                if let Some(name) = &after.unique_name {
                    written
                        .names
                        .insert((after.service_sid.clone(), name.clone()), after.sid.clone());
                }
                written.objects.insert(after.sid.clone(), record);
            }
        }
    }

    /// One transaction, sent again only if it never reached a member (see `call`).
    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, etcd_client::Error> {
        call(self.options.request_timeout, false, || {
            let (mut kv, txn) = (self.kv(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await
    }

    async fn put_raw(&self, key: Vec<u8>, value: Vec<u8>) -> StoreResult<i64> {
        let resp = call(self.options.request_timeout, false, || {
            let (mut kv, key, value) = (self.kv(), key.clone(), value.clone());
            async move { kv.put(key, value, None).await }
        })
        .await
        .map_err(engine)?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Puts `value` under `key` only if the key is absent: whether it was put.
    async fn create(&self, key: Vec<u8>, value: Vec<u8>) -> StoreResult<bool> {
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        let resp = self.txn(txn).await.map_err(engine)?;
        Ok(resp.succeeded())
    }

    /// The item-side index keys (expiry, ephemeral owner) of one item record.
    fn item_index_keys(
        &self,
        service_sid: &str,
        object_sid: &str,
        key: &ItemKey,
        item: &ItemRecord,
    ) -> Vec<Vec<u8>> {
        let expiry = item
            .date_expires
            .map(|exp| self.keys.item_expiry(exp, service_sid, object_sid, key));
        let owner = item
            .ephemeral_owner
            .as_deref()
            .map(|owner| self.keys.ephemeral(service_sid, owner, object_sid, key));
        expiry.into_iter().chain(owner).collect()
    }

    /// The transaction of one commit batch: what it compares and what it writes.
    async fn batch_txn(
        &self,
        writes: &[ObjectWrite],
        conditions: &Conditions,
    ) -> StoreResult<(Vec<Compare>, BTreeMap<Vec<u8>, Op>)> {
        let k = &self.keys;
        let deleted: HashSet<&str> = writes
            .iter()
            .filter(|w| w.after.is_none())
            .filter_map(|w| w.before.as_ref().map(|b| b.sid.as_str()))
            .collect();
        let mut compares = Vec::new();
        let mut compared: HashSet<&str> = HashSet::new();
        let mut names_freed: HashSet<Vec<u8>> = HashSet::new();
        let mut names_compared: HashSet<Vec<u8>> = HashSet::new();
        let mut ops: BTreeMap<Vec<u8>, Op> = BTreeMap::new();
        for w in writes {
            let Some(record) = w.after.as_ref().or(w.before.as_ref()) else {
                continue;
            };
            let (service, sid) = (record.service_sid.as_str(), record.sid.as_str());
            let object_key = k.object(service, sid);
            // What the batch read of this object (its first write's `before`) must
            // still be what is stored; every item change rewrites its object, so
            // this covers the object's items too.
            if compared.insert(sid) {
                compares.push(match &w.before {
                    Some(b) => {
                        Compare::mod_revision(object_key.clone(), CompareOp::Equal, b.store_version)
                    }
                    None => Compare::create_revision(object_key.clone(), CompareOp::Equal, 0),
                });
            }
            if let Some(before) = &w.before {
                if let Some(exp) = before.date_expires {
                    ops.insert(k.expiry(exp, service, sid), Op::Delete);
                }
                if let Some(name) = &before.unique_name {
                    let name_key = k.name(service, name);
                    names_freed.insert(name_key.clone());
                    ops.insert(name_key, Op::Delete);
                }
            }
            match &w.after {
                Some(after) => {
                    ops.insert(object_key, Op::Put(encode(after), None));
                    if let Some(name) = &after.unique_name {
                        let name_key = k.name(service, name);
                        // A name nobody in this batch gave up must be free in etcd: two
                        // nodes creating the same name both see it absent.
                        if !names_freed.contains(&name_key)
                            && names_compared.insert(name_key.clone())
                        {
                            compares.push(Compare::create_revision(
                                name_key.clone(),
                                CompareOp::Equal,
                                0,
                            ));
                        }
                        ops.insert(name_key, Op::Put(sid.as_bytes().to_vec(), None));
                    }
                    if let Some(exp) = after.date_expires {
                        ops.insert(k.expiry(exp, service, sid), Op::Put(Vec::new(), None));
                    }
                }
                None => {
                    ops.insert(object_key, Op::Delete);
                    // Its items' indexes, then its items, grants and history.
                    for kv in self.prefix(k.items(sid), false).await? {
                        let prefix_len = k.items(sid).len();
                        let (Ok(item), Some(ik)) = (
                            decode::<ItemRecord>(kv.value()),
                            item_key_from(sid, &kv.key()[prefix_len..]),
                        ) else {
                            continue;
                        };
                        for index in self.item_index_keys(service, sid, &ik, &item) {
                            ops.insert(index, Op::Delete);
                        }
                    }
                    let items = k.items(sid);
                    ops.insert(items.clone(), Op::DeleteRange(range_end(&items)));
                    let grants = k.permissions(service, Some(sid));
                    ops.insert(grants.clone(), Op::DeleteRange(range_end(&grants)));
                    if let Some(log) = &w.log {
                        // The removal event reaches every node through the watch, then
                        // goes with the node's short-lived lease; the rest of the ring
                        // goes now (two ranges around the slot: etcd refuses a key
                        // twice in one transaction).
                        let slot = self.log_slot(log.revision);
                        let ring = k.logs(sid);
                        ops.insert(ring.clone(), Op::DeleteRange(k.log(sid, slot)));
                        let mut after_slot = k.log(sid, slot);
                        after_slot.push(0);
                        ops.insert(after_slot, Op::DeleteRange(range_end(&ring)));
                        ops.insert(
                            k.log(sid, slot),
                            Op::Put(
                                log_value(true, log.revision, &log.event),
                                self.cluster.short_lease().await,
                            ),
                        );
                    }
                    continue;
                }
            }
            if deleted.contains(sid) {
                // Deleted later in this same batch: its items and history go with it.
                continue;
            }
            for iw in &w.items {
                if let Some(before) = &iw.before {
                    for index in self.item_index_keys(service, sid, &iw.key, before) {
                        ops.insert(index, Op::Delete);
                    }
                }
                match &iw.after {
                    Some(item) => {
                        ops.insert(k.item(sid, &iw.key), Op::Put(encode(item), None));
                        for index in self.item_index_keys(service, sid, &iw.key, item) {
                            ops.insert(index, Op::Put(Vec::new(), None));
                        }
                    }
                    None => {
                        ops.insert(k.item(sid, &iw.key), Op::Delete);
                    }
                }
            }
            if let Some(log) = &w.log {
                ops.insert(
                    k.log(sid, self.log_slot(log.revision)),
                    Op::Put(log_value(false, log.revision, &log.event), None),
                );
            }
        }
        // The batch judged its writes by the services as this node caches them (flags,
        // webhooks): they must still be what is stored, or it is computed again.
        let touched: std::collections::BTreeSet<&str> = writes
            .iter()
            .filter_map(|w| w.after.as_ref().or(w.before.as_ref()))
            .map(|r| r.service_sid.as_str())
            .collect();
        for sid in touched {
            compares.push(match self.cluster.service_revision(sid) {
                Some((revision, true)) => {
                    Compare::mod_revision(k.service(sid), CompareOp::Equal, revision)
                }
                _ => Compare::version(k.service(sid), CompareOp::Equal, 0),
            });
        }
        // Its access decisions rested on these grants as this node caches them: a
        // revoke or change through another node since then (which the cache may not
        // show yet) makes the batch computed again, after a catch-up.
        let mut grants_compared = HashSet::new();
        for g in &conditions.grants {
            let key = k.permission(&g.service_sid, &g.object_sid, &g.identity);
            if grants_compared.insert(key.clone()) {
                compares.push(Compare::mod_revision(
                    key,
                    CompareOp::Equal,
                    g.store_version,
                ));
            }
        }
        // A departure removes an identity's items only while no node holds it: one that
        // connected through another node since this node last heard (its presence entry
        // put, not yet in this node's mirror) fails this, and the departure is decided
        // again. (A compare over an empty range holds: no key is there.)
        for (service, identity) in &conditions.departed {
            let held = k.presence_of(service, identity);
            let end = range_end(&held);
            compares.push(Compare::create_revision(held, CompareOp::Equal, 0).with_range(end));
        }
        Ok((compares, ops))
    }
}

fn txn_op(key: Vec<u8>, op: Op) -> TxnOp {
    match op {
        Op::Put(value, lease) => {
            TxnOp::put(key, value, lease.map(|l| PutOptions::new().with_lease(l)))
        }
        Op::Delete => TxnOp::delete(key, None),
        Op::DeleteRange(end) => TxnOp::delete(key, Some(DeleteOptions::new().with_range(end))),
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn installation(&self) -> StoreResult<Option<Installation>> {
        self.get_value(self.keys.installation()).await
    }

    async fn put_installation(&self, inst: &Installation) -> StoreResult<()> {
        self.put_raw(self.keys.installation(), encode(inst))
            .await
            .map(drop)
    }

    /// One transaction, so that of several nodes starting on an empty etcd exactly one
    /// creates the installation, and the others read it.
    async fn create_installation(
        &self,
        inst: &Installation,
        service: &ServiceRecord,
        key: &ApiKeyRecord,
    ) -> StoreResult<bool> {
        let k = &self.keys;
        let mut ops = vec![
            TxnOp::put(k.service(&service.sid), encode(service), None),
            TxnOp::put(k.api_key(&key.sid), encode(key), None),
            TxnOp::put(k.installation(), encode(inst), None),
        ];
        if let Some(name) = &service.unique_name {
            ops.push(TxnOp::put(
                k.service_name(name),
                service.sid.as_bytes(),
                None,
            ));
        }
        let txn = Txn::new()
            .when([Compare::create_revision(
                k.installation(),
                CompareOp::Equal,
                0,
            )])
            .and_then(ops);
        let resp = self.txn(txn).await.map_err(engine)?;
        if resp.succeeded() {
            let revision = resp.header().map_or(0, |h| h.revision());
            self.cluster
                .cache_service(revision, &service.sid, Some(service.clone()));
            self.cluster
                .cache_key(revision, &key.sid, Some(key.clone()));
        }
        Ok(resp.succeeded())
    }

    async fn auth_token(&self) -> StoreResult<Option<String>> {
        self.get_value(self.keys.auth_token()).await
    }

    async fn put_auth_token(&self, token: &str) -> StoreResult<()> {
        self.put_raw(self.keys.auth_token(), encode(&token.to_owned()))
            .await
            .map(drop)
    }

    async fn create_auth_token(&self, token: &str) -> StoreResult<String> {
        if self
            .create(self.keys.auth_token(), encode(&token.to_owned()))
            .await?
        {
            return Ok(token.to_owned());
        }
        self.auth_token()
            .await?
            .ok_or_else(|| StoreError::Corrupt("the auth token vanished".into()))
    }

    async fn service(&self, sid: &str) -> StoreResult<Option<ServiceRecord>> {
        Ok(self.cluster.service(sid))
    }

    async fn service_by_name(&self, unique_name: &str) -> StoreResult<Option<ServiceRecord>> {
        Ok(self.cluster.service_by_name(unique_name))
    }

    async fn put_service(&self, service: &ServiceRecord) -> StoreResult<()> {
        let k = &self.keys;
        let mut ops = vec![TxnOp::put(k.service(&service.sid), encode(service), None)];
        let old = self.cluster.service(&service.sid);
        if let Some(name) = old.as_ref().and_then(|o| {
            o.unique_name
                .clone()
                .filter(|n| Some(n) != service.unique_name.as_ref())
        }) {
            ops.push(TxnOp::delete(k.service_name(&name), None));
        }
        let mut compares = Vec::new();
        if let Some(name) = &service.unique_name {
            let name_key = k.service_name(name);
            let held = old.is_some_and(|o| o.unique_name.as_ref() == Some(name));
            // The name is this service's already, or nobody's: two nodes creating
            // services of one name both read it free, and one of them is refused here.
            compares.push(if held {
                Compare::value(name_key.clone(), CompareOp::Equal, service.sid.as_bytes())
            } else {
                Compare::create_revision(name_key.clone(), CompareOp::Equal, 0)
            });
            ops.push(TxnOp::put(name_key, service.sid.as_bytes(), None));
        }
        let resp = self
            .txn(Txn::new().when(compares).and_then(ops))
            .await
            .map_err(engine)?;
        if !resp.succeeded() {
            return Err(StoreError::NameTaken(
                service.unique_name.clone().unwrap_or_default(),
            ));
        }
        let revision = resp.header().map_or(0, |h| h.revision());
        self.cluster
            .cache_service(revision, &service.sid, Some(service.clone()));
        Ok(())
    }

    async fn services(&self) -> StoreResult<Vec<ServiceRecord>> {
        Ok(self.cluster.services())
    }

    async fn delete_service(&self, service: &ServiceRecord) -> StoreResult<()> {
        let k = &self.keys;
        let grants = k.permissions(&service.sid, None);
        let mut ops = vec![
            TxnOp::delete(k.service(&service.sid), None),
            TxnOp::delete(
                grants.clone(),
                Some(DeleteOptions::new().with_range(range_end(&grants))),
            ),
        ];
        if let Some(name) = &service.unique_name {
            ops.push(TxnOp::delete(k.service_name(name), None));
        }
        let resp = self.txn(Txn::new().and_then(ops)).await.map_err(engine)?;
        let revision = resp.header().map_or(0, |h| h.revision());
        self.cluster.cache_service(revision, &service.sid, None);
        Ok(())
    }

    async fn objects_of(&self, service_sid: &str) -> StoreResult<Vec<ObjectRecord>> {
        self.prefix(self.keys.objects(service_sid, ""), false)
            .await?
            .iter()
            .map(decode_object)
            .collect()
    }

    async fn object_page(
        &self,
        service_sid: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<ObjectRecord>> {
        let start = match after {
            Some(sid) => {
                let mut k = self.keys.object(service_sid, sid);
                k.push(0);
                k
            }
            None => self.keys.objects(service_sid, prefix),
        };
        let end = range_end(&self.keys.objects(service_sid, prefix));
        self.range(start, end, limit, SortOrder::Ascend)
            .await?
            .iter()
            .map(decode_object)
            .collect()
    }

    async fn api_key(&self, sid: &str) -> StoreResult<Option<ApiKeyRecord>> {
        Ok(self.cluster.api_key(sid))
    }

    async fn put_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        let revision = self
            .put_raw(self.keys.api_key(&key.sid), encode(key))
            .await?;
        self.cluster
            .cache_key(revision, &key.sid, Some(key.clone()));
        Ok(())
    }

    async fn api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        Ok(self.cluster.api_keys())
    }

    async fn permission(
        &self,
        service_sid: &str,
        object_sid: &str,
        identity: &str,
    ) -> StoreResult<Option<Permission>> {
        Ok(self.cluster.permission(service_sid, object_sid, identity))
    }

    async fn put_permission(
        &self,
        service_sid: &str,
        object_sid: &str,
        identity: &str,
        rights: Option<Rights>,
    ) -> StoreResult<()> {
        let key = self.keys.permission(service_sid, object_sid, identity);
        let revision = match &rights {
            Some(r) => self.put_raw(key, encode(r)).await?,
            None => {
                let resp = call(self.options.request_timeout, false, || {
                    let (mut kv, key) = (self.kv(), key.clone());
                    async move { kv.delete(key, None).await }
                })
                .await
                .map_err(engine)?;
                resp.header().map_or(0, |h| h.revision())
            }
        };
        self.cluster
            .cache_permission(revision, service_sid, object_sid, identity, rights);
        Ok(())
    }

    async fn permissions(
        &self,
        service_sid: &str,
        object_sid: &str,
    ) -> StoreResult<Vec<(String, Rights)>> {
        Ok(self.cluster.permissions(service_sid, object_sid))
    }

    async fn object(&self, service_sid: &str, sid: &str) -> StoreResult<Option<ObjectRecord>> {
        match self.get_one(self.keys.object(service_sid, sid)).await? {
            Some(kv) => decode_object(&kv).map(Some),
            None => Ok(None),
        }
    }

    async fn object_sid_by_name(
        &self,
        service_sid: &str,
        name: &str,
    ) -> StoreResult<Option<String>> {
        match self.get_one(self.keys.name(service_sid, name)).await? {
            Some(kv) => String::from_utf8(kv.value().to_vec())
                .map(Some)
                .map_err(|_| StoreError::Corrupt("name index".into())),
            None => Ok(None),
        }
    }

    async fn log_range(
        &self,
        object_sid: &str,
        after: u64,
        up_to: u64,
    ) -> StoreResult<Option<Vec<LogEntry>>> {
        if after >= up_to {
            return Ok(Some(Vec::new()));
        }
        if up_to - after > self.options.log_retention {
            return Ok(None);
        }
        // The slots of after+1..=up_to: one run of the ring, or two when it wraps.
        let (first, last) = (self.log_slot(after + 1), self.log_slot(up_to));
        let k = &self.keys;
        let runs = if first <= last {
            vec![(first, last)]
        } else {
            vec![(first, self.options.log_retention.max(1) - 1), (0, last)]
        };
        let mut entries = Vec::with_capacity((up_to - after) as usize);
        for (from, to) in runs {
            let kvs = self
                .range(
                    k.log(object_sid, from),
                    k.log(object_sid, to + 1),
                    0,
                    SortOrder::Ascend,
                )
                .await?;
            for kv in kvs {
                let (_, revision, event) = split_log_value(kv.value())
                    .ok_or_else(|| StoreError::Corrupt("change-log entry".into()))?;
                // A slot holds the latest revision written to it: one overwritten
                // since `up_to` means the history asked for is gone.
                if revision <= after || revision > up_to {
                    return Ok(None);
                }
                entries.push(LogEntry { revision, event });
            }
        }
        if entries.len() as u64 != up_to - after {
            return Ok(None);
        }
        Ok(Some(entries))
    }

    /// Two read-only transactions (services and names, then records): two round trips
    /// for a batch, whatever its size. The services read refresh the cache; what is read
    /// replaces an older remembered copy (`feed::Written`).
    async fn read_for_batch(
        &self,
        services: &[String],
        references: &[(String, String)],
        afresh: bool,
    ) -> StoreResult<Vec<(Option<String>, Option<ObjectRecord>)>> {
        let k = &self.keys;
        // What this node wrote last, unless the batch is computed again.
        let known_names: Vec<Option<String>> = {
            let written = self.written();
            references
                .iter()
                .map(|key| written.names.get(key).filter(|_| !afresh).cloned())
                .collect()
        };
        let mut sids: Vec<Option<String>> = references
            .iter()
            .zip(&known_names)
            .map(|((_, r), known)| {
                if syncline_proto::ids::is_sid(r) {
                    Some(r.clone())
                } else {
                    known.clone()
                }
            })
            .collect();
        let named: Vec<usize> = (0..references.len())
            .filter(|&i| sids[i].is_none())
            .collect();
        // Services are read only for a batch computed again: otherwise the batch uses
        // the cached ones and `apply` compares their revisions.
        let services_read: &[String] = if afresh { services } else { &[] };
        let (mut found, at) = self
            .read_many(
                services_read.iter().map(|sid| k.service(sid)).chain(
                    named
                        .iter()
                        .map(|&i| k.name(&references[i].0, &references[i].1)),
                ),
            )
            .await?;
        for (sid, kv) in services_read.iter().zip(found.drain(..services_read.len())) {
            let record = kv
                .map(|kv| decode::<ServiceRecord>(kv.value()).map(|r| (kv.mod_revision(), r)))
                .transpose()?;
            match record {
                Some((revision, record)) => self.cluster.cache_service(revision, sid, Some(record)),
                None => self.cluster.cache_service(at, sid, None),
            }
        }
        for (&i, kv) in named.iter().zip(found) {
            sids[i] = match kv {
                Some(kv) => Some(
                    String::from_utf8(kv.value().to_vec())
                        .map_err(|_| StoreError::Corrupt("name index".into()))?,
                ),
                None => None,
            };
            let mut written = self.written();
            match &sids[i] {
                Some(sid) => written.names.insert(references[i].clone(), sid.clone()),
                None => written.names.remove(&references[i]),
            };
        }
        let mut out: Vec<(Option<String>, Option<ObjectRecord>)> =
            sids.iter().map(|sid| (sid.clone(), None)).collect();
        let mut wanted = Vec::new();
        {
            // Looked up now, not copied before the reads above (it holds up to
            // `WRITTEN_KEPT` records); `apply` compares each record's revision anyway.
            let written = self.written();
            for (i, sid) in sids.iter().enumerate() {
                let Some(sid) = sid else { continue };
                match written
                    .objects
                    .get(sid)
                    .filter(|r| !afresh && r.service_sid == references[i].0)
                {
                    Some(record) => out[i].1 = Some(record.clone()),
                    None => wanted.push(i),
                }
            }
        }
        let (records, _) = self
            .read_many(wanted.iter().filter_map(|&i| {
                sids[i]
                    .as_deref()
                    .map(|sid| k.object(&references[i].0, sid))
            }))
            .await?;
        let mut written = self.written();
        for (&i, kv) in wanted.iter().zip(records) {
            let record = kv.as_ref().map(decode_object).transpose()?;
            if let (Some(sid), Some(r)) = (&sids[i], &record) {
                written.keep(sid, r);
            }
            out[i].1 = record;
        }
        Ok(out)
    }

    async fn item(&self, object_sid: &str, key: &ItemKey) -> StoreResult<Option<ItemRecord>> {
        self.get_value(self.keys.item(object_sid, key)).await
    }

    async fn items(
        &self,
        object_sid: &str,
        from: Option<&ItemKey>,
        order: Order,
        limit: usize,
    ) -> StoreResult<Vec<(ItemKey, ItemRecord)>> {
        let prefix = self.keys.items(object_sid);
        let (start, end, sort) = match (order, from) {
            (Order::Asc, Some(f)) => (
                self.keys.item(object_sid, f),
                range_end(&prefix),
                SortOrder::Ascend,
            ),
            (Order::Asc, None) => (prefix.clone(), range_end(&prefix), SortOrder::Ascend),
            (Order::Desc, Some(f)) => {
                let mut end = self.keys.item(object_sid, f);
                end.push(0);
                (prefix.clone(), end, SortOrder::Descend)
            }
            (Order::Desc, None) => (prefix.clone(), range_end(&prefix), SortOrder::Descend),
        };
        let mut out = Vec::new();
        for kv in self.range(start, end, limit, sort).await? {
            let key = item_key_from(object_sid, &kv.key()[prefix.len()..])
                .ok_or_else(|| StoreError::Corrupt("item key".into()))?;
            out.push((key, decode(kv.value())?));
        }
        Ok(out)
    }

    async fn expired_items(&self, now_ms: u64, limit: usize) -> StoreResult<Vec<ExpiredItem>> {
        let (start, end) = self.keys.item_expiries_until(now_ms);
        let mut out = Vec::new();
        for kv in self.range(start, end, limit, SortOrder::Ascend).await? {
            let (service_sid, object_sid, key) = self
                .keys
                .split_expiry(kv.key())
                .ok_or_else(|| StoreError::Corrupt("item expiry index key".into()))?;
            let key = item_key_from(&object_sid, key)
                .ok_or_else(|| StoreError::Corrupt("item expiry index key".into()))?;
            out.push(ExpiredItem {
                service_sid,
                object_sid,
                key,
            });
        }
        Ok(out)
    }

    async fn ephemeral_items(
        &self,
        service_sid: &str,
        identity: &str,
    ) -> StoreResult<Vec<(String, ItemKey)>> {
        let mut out = Vec::new();
        for kv in self
            .prefix(self.keys.ephemeral_owner(service_sid, identity), true)
            .await?
        {
            let (_, _, object_sid, key) = self
                .keys
                .split_ephemeral(kv.key())
                .ok_or_else(|| StoreError::Corrupt("ephemeral index key".into()))?;
            let key = item_key_from(&object_sid, key)
                .ok_or_else(|| StoreError::Corrupt("ephemeral index key".into()))?;
            out.push((object_sid, key));
        }
        Ok(out)
    }

    async fn ephemeral_owners(&self) -> StoreResult<Vec<(String, String)>> {
        let mut owners: Vec<(String, String)> = Vec::new();
        for kv in self.prefix(self.keys.ephemeral_owners(), true).await? {
            let (service, identity, _, _) = self
                .keys
                .split_ephemeral(kv.key())
                .ok_or_else(|| StoreError::Corrupt("ephemeral index key".into()))?;
            let owner = (service, identity);
            // Keys are sorted, so one owner's entries are together.
            if owners.last() != Some(&owner) {
                owners.push(owner);
            }
        }
        Ok(owners)
    }

    async fn expired(&self, now_ms: u64, limit: usize) -> StoreResult<Vec<(String, String)>> {
        let (start, end) = self.keys.expiries_until(now_ms);
        let mut out = Vec::new();
        for kv in self.range(start, end, limit, SortOrder::Ascend).await? {
            let (service, object, rest) = self
                .keys
                .split_expiry(kv.key())
                .ok_or_else(|| StoreError::Corrupt("expiry index key".into()))?;
            if !rest.is_empty() {
                return Err(StoreError::Corrupt("expiry index key".into()));
            }
            out.push((service, object));
        }
        Ok(out)
    }

    async fn apply(&self, writes: Vec<ObjectWrite>, conditions: &Conditions) -> StoreResult<()> {
        let (compares, ops) = self.batch_txn(&writes, conditions).await?;
        let count = ops.len();
        let txn = Txn::new().when(compares).and_then(
            ops.into_iter()
                .map(|(k, op)| txn_op(k, op))
                .collect::<Vec<_>>(),
        );
        let resp = self.txn(txn).await.map_err(|e| {
            // Sent (a call that never reached a member is sent again, so this one may
            // have): whether it applies is up to etcd, and it may, later.
            let e = match engine(e) {
                StoreError::Unavailable(text) => StoreError::Uncertain(text),
                other => other,
            };
            if count > self.options.max_txn_ops {
                warn!(
                    operations = count,
                    max = self.options.max_txn_ops,
                    "a commit batch exceeded etcd's --max-txn-ops"
                );
            }
            e
        })?;
        if resp.succeeded() {
            self.remember(&writes, resp.header().map_or(0, |h| h.revision()));
            // Its writers wait for this (`visible`); only a batch with events shows up
            // in the watch at its revision.
            if writes.iter().any(|w| w.log.is_some()) {
                let revision = resp.header().map_or(0, |h| h.revision());
                self.committed
                    .fetch_max(revision, std::sync::atomic::Ordering::SeqCst);
            }
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "{} records of the batch changed",
                writes.len()
            )))
        }
    }

    async fn flush(&self) -> StoreResult<()> {
        // Every acknowledged etcd write is already committed by a quorum and fsynced.
        Ok(())
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn visible(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let revision = self.committed.load(std::sync::atomic::Ordering::SeqCst);
        let cluster = self.cluster.clone();
        Box::pin(async move {
            if !cluster.wait_applied(revision, PUBLISH_WAIT).await {
                warn!(
                    revision,
                    "a committed batch's events were not seen by this node's watch in time"
                );
            }
        })
    }

    /// Also at most the change-log ring's slots: a batch writing one object more often
    /// would put two of its entries in one slot, and the first would never be sent.
    fn max_batch_writes(&self) -> usize {
        let ring = usize::try_from(self.options.log_retention).unwrap_or(usize::MAX);
        (self.options.max_txn_ops / OPS_PER_WRITE).min(ring).max(1)
    }

    async fn catch_up(&self) -> StoreResult<()> {
        self.cluster.sync(self.options.request_timeout).await
    }

    /// One linearizable read (two for a name: the name's sid, then the service). What
    /// is absent is not cached: a stream of unknown names or keys leaves no trace.
    async fn recheck(&self, miss: CacheMiss<'_>) -> StoreResult<()> {
        let k = &self.keys;
        match miss {
            CacheMiss::Service(sid) => self.recheck_service(sid).await,
            CacheMiss::ServiceName(name) => match self.get_one(k.service_name(name)).await? {
                Some(kv) => {
                    let sid = std::str::from_utf8(kv.value())
                        .map_err(|_| StoreError::Corrupt("service name key".into()))?;
                    self.recheck_service(sid).await
                }
                None => Ok(()),
            },
            CacheMiss::ApiKey(sid) => {
                if let Some(kv) = self.get_one(k.api_key(sid)).await? {
                    let record = decode(kv.value())?;
                    self.cluster.cache_key(kv.mod_revision(), sid, Some(record));
                }
                Ok(())
            }
            CacheMiss::Grant {
                service_sid,
                object_sid,
                identity,
            } => {
                let key = k.permission(service_sid, object_sid, identity);
                if let Some(kv) = self.get_one(key).await? {
                    let rights = decode(kv.value())?;
                    self.cluster.cache_permission(
                        kv.mod_revision(),
                        service_sid,
                        object_sid,
                        identity,
                        Some(rights),
                    );
                }
                Ok(())
            }
        }
    }
}
