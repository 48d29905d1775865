//! Syncline's embedded store: the core's [`Store`] on sled, one tree, keys prefixed by record type, so that a
//! batch (records, name index, expiry index, change log) is one atomic `apply_batch`
//! followed by one flush.
//!
//! Key layout (sids are fixed-length ASCII, revisions and times big-endian u64):
//! - `i`                        -> Installation
//! - `s` service_sid            -> ServiceRecord;   `S` unique_name -> service sid
//! - `k` key_sid                -> ApiKeyRecord
//! - `o` service_sid object_sid -> ObjectRecord;    `n` service_sid name -> object sid
//! - `l` object_sid slot        -> revision + encoded Event (the change log: a ring of
//!   `log_retention` slots, u32 BE, slot = revision % retention; see `log_key`)
//! - `x` expires_ms service_sid object_sid -> ()   (the reaper's index)
//! - `t` object_sid item_key    -> ItemRecord      (list index: u64 BE; map key: UTF-8)
//! - `y` expires_ms service_sid object_sid item_key -> ()   (items' expiry index)
//! - `e` service_sid identity_len(u16 BE) identity object_sid item_key -> ()
//!   (ephemeral items by owner)
//! - `p` service_sid object_sid identity -> Rights (per-object permissions)
//! - `L`                        -> the `log_retention` the change log is laid out for (u64 BE)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tracing::{error, warn};

use async_trait::async_trait;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use syncline_core::store::*;
use syncline_proto::{ItemKey, ObjectKind, Order, Rights};

pub struct SledStore {
    /// The open database; `None` while it is being reopened after a storage failure
    /// (see [`SledStore::recover`]). `try_read` only: a reader never waits for a reopen.
    handles: Arc<RwLock<Option<Handles>>>,
    /// A write failed on a storage error: writes are refused until a reopen succeeds.
    broken: AtomicBool,
    /// Writes are being refused because free space fell under `keep_free_bytes`.
    short_of_space: AtomicBool,
    /// Free space kept on the data directory's file system: writes are refused below it,
    /// so that sled itself never meets a full disk (see [`DEFAULT_KEEP_FREE_BYTES`]).
    keep_free_bytes: u64,
    dir: std::path::PathBuf,
    log_retention: u64,
    durable: bool,
    /// sled's page cache, kept for reopening.
    cache_bytes: u64,
    registry: Arc<RwLock<Registry>>,
    /// Hears when the database dropped by a reopen is closed; `Some` while it is not.
    closing: Arc<std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>>,
}

/// Services and API keys, held in memory as well as on disk. Every request checks its
/// service and key; reading them from sled took two tree lookups per request, each
/// waiting on sled's batch lock while a commit batch was being applied. They are few and
/// change only through this store, which writes sled and the map under the map's lock
/// (so concurrent changes land in the same order in both) and flushes after.
#[derive(Default)]
struct Registry {
    services: BTreeMap<String, ServiceRecord>,
    service_names: BTreeMap<String, String>,
    keys: BTreeMap<String, ApiKeyRecord>,
}

/// sled's errors in Syncline's terms: an IO error (a full disk, a failing device) is the
/// storage being unavailable, which a client may retry; anything else is a fault.
fn engine(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) => StoreError::Unavailable(format!("{io} ({:?})", io.kind())),
        other => StoreError::Engine(other.to_string()),
    }
}

/// Whether an error's text says the disk is full. sled hands back copies of its first
/// IO error that keep the kind but not the OS code, so the kind's name is what is left
/// (`ErrorKind::StorageFull` itself is newer than the crate's minimum Rust).
fn is_full(text: &str) -> bool {
    text.contains("StorageFull") || text.contains("No space left")
}

/// Free space a broken store needs before it reopens (and writes resume): opening
/// sled writes a snapshot and a fresh log segment, and a reopen that fails for want of
/// room would leave the store without even its reads.
pub const REOPEN_FREE_BYTES: u64 = 8 << 20;

/// Free space kept on the data directory's file system unless the operator says
/// otherwise (`serve --keep-free-mib`). Writes are refused with `Unavailable` below it,
/// before sled sees the disk full: a sled database that met `ENOSPC` fails its reads
/// too (a read helps finish a node split, which writes), until it is opened again.
/// A few large batches' worth: a batch is at most `MAX_BATCH` writes of at most 16 KiB.
pub const DEFAULT_KEEP_FREE_BYTES: u64 = 64 << 20;

/// sled's page cache unless `serve --cache-mib` says otherwise: sled's own default
/// (1 GiB), which every measurement so far ran with. The cache holds pages read or
/// written recently; it is an upper bound that a small data set never reaches, and a
/// machine short of memory can set less at the cost of reads going to disk.
pub const DEFAULT_CACHE_BYTES: u64 = 1 << 30;

#[derive(Clone)]
struct Handles {
    db: sled::Db,
    tree: sled::Tree,
}

/// How long closing a broken database may take. sled's close flushes, and after a
/// storage failure that flush can wait forever for a log buffer that is never written
/// (seen on a full disk: `make_stable` on a condition variable nobody signals).
const CLOSE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Drops the database (and with it, once sled's flusher lets go, the directory's lock)
/// and opens it again, reloading the in-memory registry from what is on disk. The old
/// one is closed on a thread of its own ([`close_in_background`]): a close that does
/// not finish leaves the store refusing, not a task hanging.
fn reopen(
    handles: &RwLock<Option<Handles>>,
    registry: &RwLock<Registry>,
    closing: &std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    dir: &std::path::Path,
    cache_bytes: u64,
) -> StoreResult<()> {
    let mut slot = handles.write().unwrap_or_else(|e| e.into_inner());
    let mut closing = closing.lock().unwrap_or_else(|e| e.into_inner());
    // The first attempt waits for the close; later ones (at later writes) only look.
    let mut wait = std::time::Duration::ZERO;
    if let Some(old) = slot.take() {
        *closing = Some(close_in_background(old)?);
        wait = CLOSE_DEADLINE;
    }
    if let Some(closed) = closing.as_ref() {
        match closed.recv_timeout(wait) {
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => *closing = None,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                return Err(StoreError::Unavailable(
                    "the database is still closing after a storage failure; \
                     if this lasts, restart the server to resume writes"
                        .into(),
                ))
            }
        }
    }
    let db = open_db(dir, cache_bytes)?;
    let tree = db.open_tree("syncline").map_err(engine)?;
    *registry.write().unwrap_or_else(|e| e.into_inner()) = load_registry(&tree)?;
    *slot = Some(Handles { db, tree });
    Ok(())
}

/// Drops `old` on a thread of its own; the receiver hears when it is gone.
fn close_in_background(old: Handles) -> StoreResult<std::sync::mpsc::Receiver<()>> {
    let (closed, done) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("sled-close".into())
        .spawn(move || {
            drop(old);
            let _ = closed.send(());
        })
        .map_err(|e| StoreError::Unavailable(format!("closing the database: {e}")))?;
    Ok(done)
}

/// Services and API keys as stored.
fn load_registry(tree: &sled::Tree) -> StoreResult<Registry> {
    let mut registry = Registry::default();
    for v in tree.scan_prefix(b"s").values() {
        let service = decode_service(&v.map_err(engine)?)?;
        if let Some(name) = &service.unique_name {
            registry
                .service_names
                .insert(name.clone(), service.sid.clone());
        }
        registry.services.insert(service.sid.clone(), service);
    }
    for v in tree.scan_prefix(b"k").values() {
        let key: ApiKeyRecord = decode(&v.map_err(engine)?)?;
        registry.keys.insert(key.sid.clone(), key);
    }
    Ok(registry)
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serialize(v).unwrap_or_else(|e| unreachable!("in-memory bincode encode: {e}"))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    bincode::deserialize(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Opens the sled database in `dir`. A store just dropped in this process may still
/// hold the directory's lock for a moment (sled's background flusher lets go of it
/// when it next wakes, up to `flush_every_ms` later), so a busy lock is retried for a
/// few seconds before it is an error; another process holding it stays an error.
fn open_db(dir: &std::path::Path, cache_bytes: u64) -> StoreResult<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(500))
            .open()
        {
            Err(sled::Error::Io(e)) if is_lock_busy(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other.map_err(engine),
        }
    }
}

/// Whether opening failed only because the directory's lock is held. sled reports it
/// as `ErrorKind::Other` with the lock's own error (`WouldBlock`) in the text.
fn is_lock_busy(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

/// A service record, also in the layout written before `token_create` and
/// `friendly_name` existed (it is at least 5 bytes shorter, so it never decodes as the
/// current layout: the last field runs out).
fn decode_service(bytes: &[u8]) -> StoreResult<ServiceRecord> {
    #[derive(serde::Deserialize)]
    struct FlagsBeforeTokenCreate {
        acl_enabled: bool,
        webhook_url: Option<String>,
        webhooks_from_backend: bool,
        reachability_webhooks_enabled: bool,
        reachability_debouncing_enabled: bool,
        reachability_debouncing_window_ms: Option<u32>,
    }
    #[derive(serde::Deserialize)]
    struct ServiceBeforeTokenCreate {
        sid: String,
        unique_name: Option<String>,
        flags: FlagsBeforeTokenCreate,
        date_created: u64,
        date_updated: u64,
    }
    decode(bytes).or_else(|current_error| {
        let old: ServiceBeforeTokenCreate = decode(bytes).map_err(|_| current_error)?;
        let f = old.flags;
        Ok(ServiceRecord {
            sid: old.sid,
            unique_name: old.unique_name,
            flags: syncline_proto::ServiceFlags {
                acl_enabled: f.acl_enabled,
                webhook_url: f.webhook_url,
                webhooks_from_backend: f.webhooks_from_backend,
                reachability_webhooks_enabled: f.reachability_webhooks_enabled,
                reachability_debouncing_enabled: f.reachability_debouncing_enabled,
                reachability_debouncing_window_ms: f.reachability_debouncing_window_ms,
                token_create: Default::default(),
                friendly_name: None,
            },
            date_created: old.date_created,
            date_updated: old.date_updated,
        })
    })
}

/// An item record, also in the layout written before ephemeral items existed (one
/// field shorter, so it never decodes as the current layout: the last field runs out).
fn decode_item(bytes: &[u8]) -> StoreResult<ItemRecord> {
    #[derive(serde::Deserialize)]
    struct ItemBeforeEphemeral {
        revision: u64,
        data: String,
        created_by: String,
        date_created: u64,
        date_updated: u64,
        date_expires: Option<u64>,
    }
    decode(bytes).or_else(|current_error| {
        let old: ItemBeforeEphemeral = decode(bytes).map_err(|_| current_error)?;
        Ok(ItemRecord {
            revision: old.revision,
            data: old.data,
            created_by: old.created_by,
            date_created: old.date_created,
            date_updated: old.date_updated,
            date_expires: old.date_expires,
            ephemeral_owner: None,
        })
    })
}

fn key_of(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

fn object_key(service_sid: &str, sid: &str) -> Vec<u8> {
    key_of(&[b"o", service_sid.as_bytes(), sid.as_bytes()])
}

fn name_key(service_sid: &str, name: &str) -> Vec<u8> {
    key_of(&[b"n", service_sid.as_bytes(), name.as_bytes()])
}

/// The change log is a ring: revision `r` lives in slot `r % retention`, so each write
/// overwrites the entry that falls out of retention instead of inserting one and
/// removing another. That is one sled operation per write instead of two, and the
/// object's log stops splitting and merging tree nodes once the ring is full. A slot's
/// value starts with the revision it holds, which readers check.
fn log_key(object_sid: &str, revision: u64, retention: u64) -> Vec<u8> {
    let slot = (revision % retention) as u32;
    key_of(&[b"l", object_sid.as_bytes(), &slot.to_be_bytes()])
}

/// Slots are `revision % retention`: entries laid out for another retention, or in the
/// format before the ring (8-byte revision keys), would never be read or overwritten
/// again. They are removed once, on the first open with a new layout.
fn prune_log_for(tree: &sled::Tree, retention: u64) -> StoreResult<()> {
    let layout = retention.to_be_bytes();
    if tree.get(b"L").map_err(engine)?.as_deref() == Some(&layout[..]) {
        return Ok(());
    }
    let ring_key_len = 1 + syncline_proto::ids::SID_LEN + 4;
    let mut batch = sled::Batch::default();
    for k in tree.scan_prefix(b"l").keys() {
        let k = k.map_err(engine)?;
        let in_ring = k.len() == ring_key_len
            && <[u8; 4]>::try_from(&k[k.len() - 4..])
                .is_ok_and(|slot| u64::from(u32::from_be_bytes(slot)) < retention);
        if !in_ring {
            batch.remove(k);
        }
    }
    batch.insert(&b"L"[..], &layout[..]);
    tree.apply_batch(batch).map_err(engine)?;
    Ok(())
}

fn log_value(revision: u64, event: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + event.len());
    v.extend_from_slice(&revision.to_be_bytes());
    v.extend_from_slice(event);
    v
}

fn expiry_key(expires: u64, service_sid: &str, sid: &str) -> Vec<u8> {
    key_of(&[
        b"x",
        &expires.to_be_bytes(),
        service_sid.as_bytes(),
        sid.as_bytes(),
    ])
}

fn item_key_bytes(key: &ItemKey) -> Vec<u8> {
    match key {
        ItemKey::Index(i) => i.to_be_bytes().to_vec(),
        ItemKey::Key(k) => k.as_bytes().to_vec(),
    }
}

/// Reads an item key back; the object's kind (from its sid) says which shape it has.
fn item_key_from(object_sid: &str, bytes: &[u8]) -> StoreResult<ItemKey> {
    if ObjectKind::from_sid(object_sid) == Some(ObjectKind::List) {
        let b: [u8; 8] = bytes
            .try_into()
            .map_err(|_| StoreError::Corrupt("list item key".into()))?;
        Ok(ItemKey::Index(u64::from_be_bytes(b)))
    } else {
        String::from_utf8(bytes.to_vec())
            .map(ItemKey::Key)
            .map_err(|_| StoreError::Corrupt("map item key".into()))
    }
}

fn item_key(object_sid: &str, key: &ItemKey) -> Vec<u8> {
    key_of(&[b"t", object_sid.as_bytes(), &item_key_bytes(key)])
}

fn item_expiry_key(expires: u64, service_sid: &str, object_sid: &str, key: &ItemKey) -> Vec<u8> {
    key_of(&[
        b"y",
        &expires.to_be_bytes(),
        service_sid.as_bytes(),
        object_sid.as_bytes(),
        &item_key_bytes(key),
    ])
}

/// The prefix of one owner's entries in the ephemeral index. Identities are at most
/// 256 characters, so their byte length fits a u16; the length keeps one identity's
/// entries from running into a longer identity that starts the same way.
fn ephemeral_owner_prefix(service_sid: &str, identity: &str) -> Vec<u8> {
    let len = u16::try_from(identity.len()).unwrap_or(u16::MAX);
    key_of(&[
        b"e",
        service_sid.as_bytes(),
        &len.to_be_bytes(),
        identity.as_bytes(),
    ])
}

fn ephemeral_key(service_sid: &str, identity: &str, object_sid: &str, key: &ItemKey) -> Vec<u8> {
    let mut k = ephemeral_owner_prefix(service_sid, identity);
    k.extend_from_slice(object_sid.as_bytes());
    k.extend_from_slice(&item_key_bytes(key));
    k
}

/// The item-side indexes (expiry, ephemeral owner) of one item record, for `insert` or
/// `remove` alongside the record.
fn item_index_keys(
    service_sid: &str,
    object_sid: &str,
    key: &ItemKey,
    item: &ItemRecord,
) -> impl Iterator<Item = Vec<u8>> {
    let expiry = item
        .date_expires
        .map(|exp| item_expiry_key(exp, service_sid, object_sid, key));
    let owner = item
        .ephemeral_owner
        .as_deref()
        .map(|owner| ephemeral_key(service_sid, owner, object_sid, key));
    expiry.into_iter().chain(owner)
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. `durable = false` is the relaxed mode: writes
    /// are acknowledged before they reach the disk (sled still flushes every 500 ms).
    pub fn open(dir: &std::path::Path, log_retention: u64, durable: bool) -> StoreResult<Self> {
        Self::open_with_cache(dir, log_retention, durable, DEFAULT_CACHE_BYTES)
    }

    /// `open`, with sled's page cache at most `cache_bytes` (`serve --cache-mib`).
    pub fn open_with_cache(
        dir: &std::path::Path,
        log_retention: u64,
        durable: bool,
        cache_bytes: u64,
    ) -> StoreResult<Self> {
        let db = open_db(dir, cache_bytes)?;
        let tree = db.open_tree("syncline").map_err(engine)?;
        let log_retention = log_retention.max(1);
        prune_log_for(&tree, log_retention)?;
        let registry = load_registry(&tree)?;
        Ok(SledStore {
            handles: Arc::new(RwLock::new(Some(Handles { db, tree }))),
            broken: AtomicBool::new(false),
            short_of_space: AtomicBool::new(false),
            keep_free_bytes: DEFAULT_KEEP_FREE_BYTES,
            dir: dir.to_owned(),
            log_retention,
            durable,
            cache_bytes,
            registry: Arc::new(RwLock::new(registry)),
            closing: Arc::default(),
        })
    }

    /// Keeps `bytes` free on the data directory's file system (writes are refused
    /// below it); 0 lets writes run until the disk itself is full.
    pub fn keep_free(mut self, bytes: u64) -> Self {
        self.keep_free_bytes = bytes;
        self
    }

    /// The open database, or `Unavailable` while it is being reopened.
    fn handles(&self) -> StoreResult<(sled::Db, sled::Tree)> {
        match self.handles.try_read() {
            Ok(h) => match &*h {
                Some(h) => Ok((h.db.clone(), h.tree.clone())),
                None => Err(StoreError::Unavailable(
                    "the store could not be reopened after a storage failure; it is tried again at the next write".into(),
                )),
            },
            Err(std::sync::TryLockError::Poisoned(e)) => match &*e.into_inner() {
                Some(h) => Ok((h.db.clone(), h.tree.clone())),
                None => Err(StoreError::Unavailable("the store is closed".into())),
            },
            Err(std::sync::TryLockError::WouldBlock) => Err(StoreError::Unavailable(
                "the store is being reopened after a storage failure".into(),
            )),
        }
    }

    fn tree(&self) -> StoreResult<sled::Tree> {
        self.handles().map(|(_, tree)| tree)
    }

    /// After a write or flush: on a storage failure (an IO error such as a full disk),
    /// marks the store broken. sled records the first IO error of its log writer and
    /// fails every later write with it, for good; only a fresh open clears it
    /// (recovering what reached the disk: what was acknowledged; dropping what was
    /// applied in memory and never flushed). Opening needs free space itself, so the
    /// broken database stays open for reads until [`Store::writable`] finds room.
    async fn recover_after(&self, result: StoreResult<()>) -> StoreResult<()> {
        let Err(e) = result else { return Ok(()) };
        if !matches!(e, StoreError::Unavailable(_) | StoreError::NotDurable(_)) {
            return Err(e);
        }
        if !self.broken.swap(true, Ordering::SeqCst) {
            if is_full(&e.to_string()) {
                error!(dir = %self.dir.display(), error = %e,
                    "storage is full (no space left on device): writes are refused until space is freed; reads go on");
            } else {
                error!(dir = %self.dir.display(), error = %e,
                    "storage write failed: writes are refused until the store is reopened; reads go on");
            }
        }
        Err(e)
    }

    /// Free bytes on the data directory's file system.
    fn free_bytes(&self) -> StoreResult<u64> {
        fs2::available_space(&self.dir).map_err(|e| {
            StoreError::Unavailable(format!("free space of {}: {e}", self.dir.display()))
        })
    }

    async fn reopen_blocking(&self) -> StoreResult<()> {
        let (handles, registry, closing, dir, cache_bytes) = (
            self.handles.clone(),
            self.registry.clone(),
            self.closing.clone(),
            self.dir.clone(),
            self.cache_bytes,
        );
        let reopened = tokio::task::spawn_blocking(move || {
            reopen(&handles, &registry, &closing, &dir, cache_bytes)
        })
        .await
        .map_err(|e| StoreError::Engine(format!("reopen task: {e}")))
        .and_then(|r| r);
        match &reopened {
            Ok(()) => {
                self.broken.store(false, Ordering::SeqCst);
                warn!(dir = %self.dir.display(), "store reopened after a storage failure: writes resume");
            }
            Err(e) => error!(dir = %self.dir.display(), error = %e,
                "the store could not be reopened; it is tried again at the next write"),
        }
        reopened
    }

    // The maps hold plain data that every writer leaves whole, so a panic elsewhere
    // while the lock was held leaves nothing to distrust.
    fn registry(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }

    fn registry_mut(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|e| e.into_inner())
    }

    fn get<T: DeserializeOwned>(&self, k: &[u8]) -> StoreResult<Option<T>> {
        match self.tree()?.get(k).map_err(engine)? {
            Some(v) => decode(&v).map(Some),
            None => Ok(None),
        }
    }

    fn put<T: Serialize>(&self, k: &[u8], v: &T) -> StoreResult<()> {
        self.tree()?.insert(k, encode(v)).map_err(engine)?;
        Ok(())
    }

    fn add_to_batch(
        &self,
        tree: &sled::Tree,
        batch: &mut sled::Batch,
        w: &ObjectWrite,
        deleted: &[&str],
    ) {
        if let Some(before) = &w.before {
            if let Some(exp) = before.date_expires {
                batch.remove(expiry_key(exp, &before.service_sid, &before.sid));
            }
            if let Some(name) = &before.unique_name {
                batch.remove(name_key(&before.service_sid, name));
            }
        }
        match &w.after {
            Some(after) => {
                batch.insert(object_key(&after.service_sid, &after.sid), encode(after));
                if let Some(name) = &after.unique_name {
                    batch.insert(name_key(&after.service_sid, name), after.sid.as_bytes());
                }
                if let Some(exp) = after.date_expires {
                    batch.insert(expiry_key(exp, &after.service_sid, &after.sid), &[]);
                }
            }
            None => {
                if let Some(before) = &w.before {
                    batch.remove(object_key(&before.service_sid, &before.sid));
                    // The object is gone, and so are its history and its items.
                    let prefix = key_of(&[b"l", before.sid.as_bytes()]);
                    for k in tree.scan_prefix(&prefix).keys().flatten() {
                        batch.remove(k);
                    }
                    let prefix =
                        key_of(&[b"p", before.service_sid.as_bytes(), before.sid.as_bytes()]);
                    for k in tree.scan_prefix(&prefix).keys().flatten() {
                        batch.remove(k);
                    }
                    let prefix = key_of(&[b"t", before.sid.as_bytes()]);
                    for (k, v) in tree.scan_prefix(&prefix).flatten() {
                        if let (Ok(item), Ok(ik)) = (
                            decode_item(&v),
                            item_key_from(&before.sid, &k[prefix.len()..]),
                        ) {
                            for index in
                                item_index_keys(&before.service_sid, &before.sid, &ik, &item)
                            {
                                batch.remove(index);
                            }
                        }
                        batch.remove(k);
                    }
                }
            }
        }
        if let Some(after) = &w.after {
            if deleted.contains(&after.sid.as_str()) {
                // Deleted later in this same batch: its log and items go with it.
                return;
            }
            for iw in &w.items {
                if let Some(before) = &iw.before {
                    for index in item_index_keys(&after.service_sid, &after.sid, &iw.key, before) {
                        batch.remove(index);
                    }
                }
                match &iw.after {
                    Some(item) => {
                        batch.insert(item_key(&after.sid, &iw.key), encode(item));
                        for index in item_index_keys(&after.service_sid, &after.sid, &iw.key, item)
                        {
                            batch.insert(index, &[]);
                        }
                    }
                    None => batch.remove(item_key(&after.sid, &iw.key)),
                }
            }
        }
        if let (Some(entry), Some(after)) = (&w.log, &w.after) {
            batch.insert(
                log_key(&after.sid, entry.revision, self.log_retention),
                log_value(entry.revision, &entry.event),
            );
        }
    }
}

#[async_trait]
impl Store for SledStore {
    async fn installation(&self) -> StoreResult<Option<Installation>> {
        self.get(b"i")
    }

    async fn put_installation(&self, inst: &Installation) -> StoreResult<()> {
        self.writable().await?;
        self.put(b"i", inst)?;
        self.flush().await
    }

    async fn auth_token(&self) -> StoreResult<Option<String>> {
        self.get(b"a")
    }

    async fn put_auth_token(&self, token: &str) -> StoreResult<()> {
        self.put(b"a", &token)?;
        self.flush().await
    }

    async fn service(&self, sid: &str) -> StoreResult<Option<ServiceRecord>> {
        Ok(self.registry().services.get(sid).cloned())
    }

    async fn service_by_name(&self, unique_name: &str) -> StoreResult<Option<ServiceRecord>> {
        let registry = self.registry();
        Ok(registry
            .service_names
            .get(unique_name)
            .and_then(|sid| registry.services.get(sid))
            .cloned())
    }

    async fn put_service(&self, service: &ServiceRecord) -> StoreResult<()> {
        self.writable().await?;
        let mut batch = sled::Batch::default();
        batch.insert(key_of(&[b"s", service.sid.as_bytes()]), encode(service));
        if let Some(name) = &service.unique_name {
            batch.insert(key_of(&[b"S", name.as_bytes()]), service.sid.as_bytes());
        }
        {
            let mut registry = self.registry_mut();
            // Checked under the registry's lock, which every service write takes.
            if let Some(name) = &service.unique_name {
                if registry
                    .service_names
                    .get(name)
                    .is_some_and(|holder| *holder != service.sid)
                {
                    return Err(StoreError::NameTaken(name.clone()));
                }
            }
            self.tree()?.apply_batch(batch).map_err(engine)?;
            if let Some(old) = registry.services.get(&service.sid) {
                if let Some(old_name) = old.unique_name.clone() {
                    registry.service_names.remove(&old_name);
                }
            }
            if let Some(name) = &service.unique_name {
                registry
                    .service_names
                    .insert(name.clone(), service.sid.clone());
            }
            registry
                .services
                .insert(service.sid.clone(), service.clone());
        }
        self.flush().await
    }

    async fn services(&self) -> StoreResult<Vec<ServiceRecord>> {
        Ok(self.registry().services.values().cloned().collect())
    }

    async fn delete_service(&self, service: &ServiceRecord) -> StoreResult<()> {
        self.writable().await?;
        let mut batch = sled::Batch::default();
        batch.remove(key_of(&[b"s", service.sid.as_bytes()]));
        if let Some(name) = &service.unique_name {
            batch.remove(key_of(&[b"S", name.as_bytes()]));
        }
        let prefix = key_of(&[b"p", service.sid.as_bytes()]);
        for k in self.tree()?.scan_prefix(&prefix).keys() {
            batch.remove(k.map_err(engine)?);
        }
        {
            let mut registry = self.registry_mut();
            self.tree()?.apply_batch(batch).map_err(engine)?;
            registry.services.remove(&service.sid);
            if let Some(name) = &service.unique_name {
                registry.service_names.remove(name);
            }
        }
        self.flush().await
    }

    async fn objects_of(&self, service_sid: &str) -> StoreResult<Vec<ObjectRecord>> {
        self.tree()?
            .scan_prefix(key_of(&[b"o", service_sid.as_bytes()]))
            .values()
            .map(|v| decode(&v.map_err(engine)?))
            .collect()
    }

    async fn object_page(
        &self,
        service_sid: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<ObjectRecord>> {
        let scope = key_of(&[b"o", service_sid.as_bytes(), prefix.as_bytes()]);
        let mut end = scope.clone();
        end.push(0xff);
        let start = match after {
            // Just past `after`: the sid itself plus one zero byte sorts right after it.
            Some(sid) => {
                let mut k = object_key(service_sid, sid);
                k.push(0);
                k.max(scope)
            }
            None => scope,
        };
        self.tree()?
            .range(start..end)
            .values()
            .take(limit)
            .map(|v| decode(&v.map_err(engine)?))
            .collect()
    }

    async fn api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        Ok(self.registry().keys.values().cloned().collect())
    }

    async fn permission(
        &self,
        service_sid: &str,
        object_sid: &str,
        identity: &str,
    ) -> StoreResult<Option<Permission>> {
        let rights: Option<Rights> = self.get(&key_of(&[
            b"p",
            service_sid.as_bytes(),
            object_sid.as_bytes(),
            identity.as_bytes(),
        ]))?;
        Ok(rights.map(|rights| Permission {
            rights,
            store_version: 0,
        }))
    }

    async fn put_permission(
        &self,
        service_sid: &str,
        object_sid: &str,
        identity: &str,
        rights: Option<Rights>,
    ) -> StoreResult<()> {
        self.writable().await?;
        let k = key_of(&[
            b"p",
            service_sid.as_bytes(),
            object_sid.as_bytes(),
            identity.as_bytes(),
        ]);
        match rights {
            Some(r) => self.put(&k, &r)?,
            None => {
                self.tree()?.remove(k).map_err(engine)?;
            }
        }
        self.flush().await
    }

    async fn permissions(
        &self,
        service_sid: &str,
        object_sid: &str,
    ) -> StoreResult<Vec<(String, Rights)>> {
        let prefix = key_of(&[b"p", service_sid.as_bytes(), object_sid.as_bytes()]);
        let mut out = Vec::new();
        for kv in self.tree()?.scan_prefix(&prefix) {
            let (k, v) = kv.map_err(engine)?;
            let identity = String::from_utf8(k[prefix.len()..].to_vec())
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.push((identity, decode(&v)?));
        }
        Ok(out)
    }

    async fn api_key(&self, sid: &str) -> StoreResult<Option<ApiKeyRecord>> {
        Ok(self.registry().keys.get(sid).cloned())
    }

    async fn put_api_key(&self, k: &ApiKeyRecord) -> StoreResult<()> {
        self.writable().await?;
        {
            let mut registry = self.registry_mut();
            self.put(&key_of(&[b"k", k.sid.as_bytes()]), k)?;
            registry.keys.insert(k.sid.clone(), k.clone());
        }
        self.flush().await
    }

    async fn object(&self, service_sid: &str, sid: &str) -> StoreResult<Option<ObjectRecord>> {
        self.get(&object_key(service_sid, sid))
    }

    async fn object_sid_by_name(
        &self,
        service_sid: &str,
        name: &str,
    ) -> StoreResult<Option<String>> {
        match self
            .tree()?
            .get(name_key(service_sid, name))
            .map_err(engine)?
        {
            Some(sid) => String::from_utf8(sid.to_vec())
                .map(Some)
                .map_err(|e| StoreError::Corrupt(e.to_string())),
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
        if up_to - after > self.log_retention {
            return Ok(None);
        }
        let mut entries = Vec::with_capacity((up_to - after) as usize);
        for revision in after + 1..=up_to {
            let key = log_key(object_sid, revision, self.log_retention);
            let Some(v) = self.tree()?.get(key).map_err(engine)? else {
                return Ok(None);
            };
            // A slot overwritten by a later revision (or never written): compacted.
            match v.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                Some(held) if u64::from_be_bytes(held) == revision => {}
                _ => return Ok(None),
            }
            entries.push(LogEntry {
                revision,
                event: Bytes::copy_from_slice(&v[8..]),
            });
        }
        Ok(Some(entries))
    }

    async fn item(&self, object_sid: &str, key: &ItemKey) -> StoreResult<Option<ItemRecord>> {
        match self
            .tree()?
            .get(item_key(object_sid, key))
            .map_err(engine)?
        {
            Some(v) => decode_item(&v).map(Some),
            None => Ok(None),
        }
    }

    async fn items(
        &self,
        object_sid: &str,
        from: Option<&ItemKey>,
        order: Order,
        limit: usize,
    ) -> StoreResult<Vec<(ItemKey, ItemRecord)>> {
        let prefix = key_of(&[b"t", object_sid.as_bytes()]);
        let mut end = prefix.clone();
        end.push(0xff);
        let start = from.map(|k| item_key(object_sid, k));
        let range: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
            match (order, start) {
                (Order::Asc, Some(s)) => Box::new(self.tree()?.range(s..end)),
                (Order::Asc, None) => Box::new(self.tree()?.scan_prefix(&prefix)),
                (Order::Desc, Some(s)) => Box::new(self.tree()?.range(prefix.clone()..=s).rev()),
                (Order::Desc, None) => Box::new(self.tree()?.scan_prefix(&prefix).rev()),
            };
        let mut out = Vec::new();
        for kv in range.take(limit) {
            let (k, v) = kv.map_err(engine)?;
            out.push((
                item_key_from(object_sid, &k[prefix.len()..])?,
                decode_item(&v)?,
            ));
        }
        Ok(out)
    }

    async fn expired_items(&self, now_ms: u64, limit: usize) -> StoreResult<Vec<ExpiredItem>> {
        let start = key_of(&[b"y", &0u64.to_be_bytes()]);
        let end = key_of(&[b"y", &now_ms.to_be_bytes(), &[0xff]]);
        let sid = syncline_proto::ids::SID_LEN;
        let mut out = Vec::new();
        for k in self.tree()?.range(start..end).keys().take(limit) {
            let k = k.map_err(engine)?;
            let rest = &k[9..];
            if rest.len() < 2 * sid {
                return Err(StoreError::Corrupt("item expiry index key".into()));
            }
            let service_sid = String::from_utf8_lossy(&rest[..sid]).into_owned();
            let object_sid = String::from_utf8_lossy(&rest[sid..2 * sid]).into_owned();
            let key = item_key_from(&object_sid, &rest[2 * sid..])?;
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
        let prefix = ephemeral_owner_prefix(service_sid, identity);
        let sid = syncline_proto::ids::SID_LEN;
        let mut out = Vec::new();
        for k in self.tree()?.scan_prefix(&prefix).keys() {
            let k = k.map_err(engine)?;
            let rest = &k[prefix.len()..];
            if rest.len() < sid {
                return Err(StoreError::Corrupt("ephemeral index key".into()));
            }
            let object_sid = String::from_utf8_lossy(&rest[..sid]).into_owned();
            let key = item_key_from(&object_sid, &rest[sid..])?;
            out.push((object_sid, key));
        }
        Ok(out)
    }

    async fn ephemeral_owners(&self) -> StoreResult<Vec<(String, String)>> {
        let sid = syncline_proto::ids::SID_LEN;
        let corrupt = || StoreError::Corrupt("ephemeral index key".into());
        let mut owners: Vec<(String, String)> = Vec::new();
        for k in self.tree()?.scan_prefix(b"e").keys() {
            let k = k.map_err(engine)?;
            let service = k.get(1..1 + sid).ok_or_else(corrupt)?;
            let len = k.get(1 + sid..3 + sid).ok_or_else(corrupt)?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let identity = k.get(3 + sid..3 + sid + len).ok_or_else(corrupt)?;
            let owner = (
                String::from_utf8_lossy(service).into_owned(),
                String::from_utf8_lossy(identity).into_owned(),
            );
            // Keys are sorted, so one owner's entries are together.
            if owners.last() != Some(&owner) {
                owners.push(owner);
            }
        }
        Ok(owners)
    }

    async fn expired(&self, now_ms: u64, limit: usize) -> StoreResult<Vec<(String, String)>> {
        let start = expiry_key(0, "", "");
        let end = key_of(&[b"x", &now_ms.to_be_bytes(), &[0xff]]);
        let mut out = Vec::new();
        for k in self.tree()?.range(start..end).keys().take(limit) {
            let k = k.map_err(engine)?;
            let rest = &k[9..];
            if rest.len() != 2 * syncline_proto::ids::SID_LEN {
                return Err(StoreError::Corrupt("expiry index key".into()));
            }
            let (service, object) = rest.split_at(syncline_proto::ids::SID_LEN);
            out.push((
                String::from_utf8_lossy(service).into_owned(),
                String::from_utf8_lossy(object).into_owned(),
            ));
        }
        Ok(out)
    }

    async fn writable(&self) -> StoreResult<()> {
        let free = self.free_bytes()?;
        if free < self.keep_free_bytes {
            if !self.short_of_space.swap(true, Ordering::SeqCst) {
                error!(dir = %self.dir.display(), free, keep_free = self.keep_free_bytes,
                    "storage is nearly full: writes are refused until space is freed; reads go on");
            }
            return Err(StoreError::Full(format!(
                "{free} bytes free under {}, writes resume above {}",
                self.dir.display(),
                self.keep_free_bytes
            )));
        }
        if self.short_of_space.swap(false, Ordering::SeqCst) {
            warn!(dir = %self.dir.display(), free, "space was freed: writes resume");
        }
        if !self.broken.load(Ordering::SeqCst) {
            return Ok(());
        }
        if free < REOPEN_FREE_BYTES {
            return Err(StoreError::Full(format!(
                "{free} bytes free under {}, {REOPEN_FREE_BYTES} needed to resume writes",
                self.dir.display()
            )));
        }
        self.reopen_blocking().await
    }

    // No `writable` check here: the commit task, the one caller, asked just before it
    // computed the batch (a second `statvfs` per batch would tell nothing new).
    async fn apply(&self, writes: Vec<ObjectWrite>, _: &Conditions) -> StoreResult<()> {
        let deleted: Vec<&str> = writes
            .iter()
            .filter(|w| w.after.is_none())
            .filter_map(|w| w.before.as_ref().map(|b| b.sid.as_str()))
            .collect();
        let (db, tree) = self.handles()?;
        let mut batch = sled::Batch::default();
        for w in &writes {
            self.add_to_batch(&tree, &mut batch, w, &deleted);
        }
        // sled's apply can block on its own IO (log segment rollover), so it runs on the
        // blocking pool, not on a tokio worker that serves connections; the flush goes
        // in the same hand-off (one thread switch per batch, not two).
        let durable = self.durable;
        let applied = tokio::task::spawn_blocking(move || {
            tree.apply_batch(batch).map_err(engine)?;
            if durable {
                db.flush()
                    .map_err(|e| StoreError::NotDurable(engine(e).to_string()))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Engine(format!("apply task: {e}")))?;
        self.recover_after(applied).await
    }

    async fn flush(&self) -> StoreResult<()> {
        let (db, _) = self.handles()?;
        let flushed = tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::Engine(format!("flush task: {e}")))?
            .map(|_| ())
            .map_err(engine);
        self.recover_after(flushed).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncline_proto::{ServiceFlags, TokenCreate};

    fn service(sid: &str, name: Option<&str>, acl: bool) -> ServiceRecord {
        ServiceRecord {
            sid: sid.into(),
            unique_name: name.map(Into::into),
            flags: ServiceFlags {
                acl_enabled: acl,
                ..Default::default()
            },
            date_created: 1,
            date_updated: 1,
        }
    }

    #[test]
    fn services_stored_before_token_create_still_load() {
        #[derive(serde::Serialize)]
        struct OldFlags {
            acl_enabled: bool,
            webhook_url: Option<String>,
            webhooks_from_backend: bool,
            reachability_webhooks_enabled: bool,
            reachability_debouncing_enabled: bool,
            reachability_debouncing_window_ms: Option<u32>,
        }
        #[derive(serde::Serialize)]
        struct OldService {
            sid: String,
            unique_name: Option<String>,
            flags: OldFlags,
            date_created: u64,
            date_updated: u64,
        }
        // Dates chosen so that a misread of the old layout would look plausible.
        for date in [0, 1, 1_764_000_000_000, u64::MAX] {
            let old = OldService {
                sid: "IS00000000000000000000000000000001".into(),
                unique_name: Some("chat".into()),
                flags: OldFlags {
                    acl_enabled: true,
                    webhook_url: Some("https://example.test/hook".into()),
                    webhooks_from_backend: false,
                    reachability_webhooks_enabled: true,
                    reachability_debouncing_enabled: false,
                    reachability_debouncing_window_ms: Some(7_000),
                },
                date_created: date,
                date_updated: date,
            };
            let loaded = decode_service(&encode(&old)).unwrap();
            assert_eq!(loaded.unique_name.as_deref(), Some("chat"));
            assert!(loaded.flags.acl_enabled && loaded.flags.reachability_webhooks_enabled);
            assert_eq!(loaded.flags.reachability_debouncing_window_ms, Some(7_000));
            assert_eq!(loaded.flags.token_create, TokenCreate::Own);
            assert_eq!((loaded.date_created, loaded.date_updated), (date, date));
        }
        let mut current = service("IS00000000000000000000000000000002", None, true);
        current.flags.token_create = TokenCreate::None;
        assert_eq!(decode_service(&encode(&current)).unwrap(), current);
    }

    fn document(revision: u64) -> ObjectRecord {
        ObjectRecord {
            store_version: 0,
            service_sid: "IS00000000000000000000000000000001".into(),
            sid: "ET00000000000000000000000000000001".into(),
            kind: ObjectKind::Document,
            unique_name: None,
            revision,
            data: format!("{{\"n\":{revision}}}"),
            created_by: "system".into(),
            date_created: 1,
            date_updated: 1,
            date_expires: None,
            next_index: 0,
        }
    }

    #[tokio::test]
    async fn the_ephemeral_index_follows_owners_through_writes_deletes_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let service = "IS00000000000000000000000000000001";
        let map = |revision: u64| ObjectRecord {
            store_version: 0,
            sid: "MP00000000000000000000000000000001".into(),
            kind: ObjectKind::Map,
            ..document(revision)
        };
        let item = |owner: Option<&str>| ItemRecord {
            revision: 1,
            data: "1".into(),
            created_by: "alice".into(),
            date_created: 1,
            date_updated: 1,
            date_expires: None,
            ephemeral_owner: owner.map(Into::into),
        };
        let key = |k: &str| ItemKey::Key(k.into());
        let write = |rev: u64, k: &str, before: Option<ItemRecord>, after: Option<ItemRecord>| {
            ObjectWrite {
                before: Some(map(rev - 1)),
                after: Some(map(rev)),
                log: None,
                items: vec![ItemWrite {
                    key: key(k),
                    before,
                    after,
                }],
            }
        };
        let store = SledStore::open(dir.path(), 10, true).unwrap();
        store
            .apply(
                vec![
                    write(1, "a", None, Some(item(Some("alice")))),
                    write(2, "b", None, Some(item(Some("alice")))),
                    write(3, "c", None, Some(item(Some("al")))),
                    write(4, "d", None, Some(item(None))),
                ],
                &Conditions::default(),
            )
            .await
            .unwrap();
        let sid = map(0).sid;
        assert_eq!(
            store.ephemeral_items(service, "alice").await.unwrap(),
            vec![(sid.clone(), key("a")), (sid.clone(), key("b"))],
            "a shorter identity's entries are not alice's"
        );
        assert_eq!(
            store.ephemeral_owners().await.unwrap(),
            vec![
                (service.into(), "al".into()),
                (service.into(), "alice".into())
            ]
        );
        // A plain set takes the item out of the index; a removal too.
        store
            .apply(
                vec![
                    write(5, "a", Some(item(Some("alice"))), Some(item(None))),
                    write(6, "c", Some(item(Some("al"))), None),
                ],
                &Conditions::default(),
            )
            .await
            .unwrap();
        drop(store);
        let store = SledStore::open(dir.path(), 10, true).unwrap();
        assert_eq!(
            store.ephemeral_items(service, "alice").await.unwrap(),
            vec![(sid.clone(), key("b"))]
        );
        assert_eq!(store.ephemeral_items(service, "al").await.unwrap(), vec![]);
        // Deleting the map deletes its items' index entries.
        store
            .apply(vec![deletion(map(6))], &Conditions::default())
            .await
            .unwrap();
        assert_eq!(store.ephemeral_owners().await.unwrap(), vec![]);
    }

    #[test]
    fn items_stored_before_ephemeral_owners_still_load() {
        #[derive(serde::Serialize)]
        struct OldItem {
            revision: u64,
            data: String,
            created_by: String,
            date_created: u64,
            date_updated: u64,
            date_expires: Option<u64>,
        }
        let old = encode(&OldItem {
            revision: 3,
            data: "{}".into(),
            created_by: "bob".into(),
            date_created: 1,
            date_updated: 2,
            date_expires: Some(9),
        });
        let item = decode_item(&old).unwrap();
        assert_eq!(
            (item.revision, item.date_expires, item.ephemeral_owner),
            (3, Some(9), None)
        );
        assert!(decode_item(b"\x01").is_err(), "garbage is still corrupt");
    }

    /// The write that deletes `record`.
    fn deletion(record: ObjectRecord) -> ObjectWrite {
        ObjectWrite {
            before: Some(record),
            after: None,
            log: None,
            items: Vec::new(),
        }
    }

    fn revisions(entries: Option<Vec<LogEntry>>) -> Option<Vec<(u64, Vec<u8>)>> {
        entries.map(|es| {
            es.into_iter()
                .map(|e| (e.revision, e.event.to_vec()))
                .collect()
        })
    }

    /// The change log is a ring of `retention` slots: what is in it reads back exactly,
    /// and a range reaching past it (overwritten, never written, or too long) is `None`
    /// ("compacted"), never a partial or wrong answer. Also after reopening.
    #[tokio::test]
    async fn change_log_keeps_the_last_retention_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let sid = document(0).sid;
        let event = |r: u64| format!("event {r}").into_bytes();
        {
            let store = SledStore::open(dir.path(), 4, true).unwrap();
            let mut before = None;
            for r in 1..=10 {
                let after = document(r);
                store
                    .apply(
                        vec![ObjectWrite {
                            before: before.replace(after.clone()),
                            after: Some(after),
                            log: Some(LogEntry {
                                revision: r,
                                event: Bytes::from(event(r)),
                            }),
                            items: Vec::new(),
                        }],
                        &Conditions::default(),
                    )
                    .await
                    .unwrap();
            }
            let want = |from: u64| Some((from..=10).map(|r| (r, event(r))).collect::<Vec<_>>());
            assert_eq!(
                revisions(store.log_range(&sid, 6, 10).await.unwrap()),
                want(7)
            );
            assert_eq!(
                revisions(store.log_range(&sid, 9, 10).await.unwrap()),
                want(10)
            );
            assert_eq!(
                revisions(store.log_range(&sid, 10, 10).await.unwrap()),
                Some(vec![])
            );
            // Five back with four slots, and slots since overwritten.
            assert_eq!(store.log_range(&sid, 5, 10).await.unwrap(), None);
            assert_eq!(store.log_range(&sid, 1, 4).await.unwrap(), None);
            // Past the newest revision: slot 11 % 4 holds revision 7.
            assert_eq!(store.log_range(&sid, 10, 11).await.unwrap(), None);
        }
        {
            // An entry in the format before the ring (8-byte revision key) is pruned on
            // the next open, and the layout is remembered.
            let store = SledStore::open(dir.path(), 4, true).unwrap();
            let old = key_of(&[b"l", sid.as_bytes(), &3u64.to_be_bytes()]);
            store
                .tree()
                .unwrap()
                .insert(&old, &b"old event"[..])
                .unwrap();
            store.tree().unwrap().remove(b"L").unwrap();
        }
        let store = SledStore::open(dir.path(), 4, true).unwrap();
        assert_eq!(store.tree().unwrap().scan_prefix(b"l").count(), 4);
        let got = revisions(store.log_range(&sid, 7, 10).await.unwrap()).unwrap();
        assert_eq!(
            got.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
            vec![8, 9, 10]
        );
        drop(store);
        // A smaller retention drops the slots it no longer uses; what survives in the
        // others is not mistaken for the new layout's revisions.
        let store = SledStore::open(dir.path(), 2, true).unwrap();
        assert_eq!(store.tree().unwrap().scan_prefix(b"l").count(), 2);
        assert_eq!(store.log_range(&sid, 8, 10).await.unwrap(), None);
        // Deleting the object deletes its log.
        store
            .apply(vec![deletion(document(10))], &Conditions::default())
            .await
            .unwrap();
        assert_eq!(store.log_range(&sid, 9, 10).await.unwrap(), None);
        assert_eq!(store.tree().unwrap().scan_prefix(b"l").count(), 0);
    }

    /// Services and keys are served from memory: every change must show at once, and
    /// the map must come back whole from disk after a restart.
    #[test]
    fn opening_waits_for_a_store_of_this_process_that_is_letting_go_of_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = open_db(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(first);
        });
        // The lock is busy for 300 ms: retried, not an error.
        let second = open_db(dir.path(), DEFAULT_CACHE_BYTES);
        closer.join().unwrap();
        assert!(second.is_ok(), "{:?}", second.err());
    }

    #[tokio::test]
    async fn writes_are_refused_below_the_kept_free_space_and_resume_above_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 10, true)
            .unwrap()
            .keep_free(u64::MAX);
        let refused = store.writable().await.unwrap_err();
        assert!(matches!(&refused, StoreError::Full(_)), "{refused}");
        // Reads are not affected; the same store takes writes once the reserve is met.
        assert!(store.services().await.unwrap().is_empty());
        let store = store.keep_free(0);
        store.writable().await.unwrap();
    }

    #[tokio::test]
    async fn services_and_keys_read_back_after_changes_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let a = "IS00000000000000000000000000000001";
        let b = "IS00000000000000000000000000000002";
        {
            let store = SledStore::open(dir.path(), 10, true).unwrap();
            store
                .put_service(&service(a, Some("alpha"), false))
                .await
                .unwrap();
            store
                .put_service(&service(b, Some("beta"), false))
                .await
                .unwrap();
            // Renamed and ACL switched on: the old name no longer finds it.
            store
                .put_service(&service(a, Some("gamma"), true))
                .await
                .unwrap();
            assert!(store.service_by_name("alpha").await.unwrap().is_none());
            assert!(store.service(a).await.unwrap().unwrap().acl_enabled());
            store
                .delete_service(&service(b, Some("beta"), false))
                .await
                .unwrap();
            assert!(store.service(b).await.unwrap().is_none());
            assert!(store.service_by_name("beta").await.unwrap().is_none());
            let key = ApiKeyRecord {
                sid: "SK00000000000000000000000000000001".into(),
                friendly_name: None,
                secret: "s".into(),
                date_created: 1,
                revoked: false,
            };
            store.put_api_key(&key).await.unwrap();
            store
                .put_api_key(&ApiKeyRecord {
                    revoked: true,
                    ..key
                })
                .await
                .unwrap();
        }
        let store = SledStore::open(dir.path(), 10, true).unwrap();
        let found = store.service_by_name("gamma").await.unwrap().unwrap();
        assert_eq!(found, service(a, Some("gamma"), true));
        assert_eq!(store.services().await.unwrap(), vec![found]);
        assert!(store.service(b).await.unwrap().is_none());
        let keys = store.api_keys().await.unwrap();
        assert_eq!(keys.len(), 1);
        assert!(keys[0].revoked);
        assert!(store.api_key(&keys[0].sid).await.unwrap().unwrap().revoked);
    }
}
