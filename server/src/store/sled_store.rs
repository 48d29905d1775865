//! The sled implementation of [`Store`]: one tree, keys prefixed by record type, so that a
//! batch (records, name index, expiry index, change log) is one atomic `apply_batch`
//! followed by one flush.
//!
//! Key layout (sids are fixed-length ASCII, revisions and times big-endian u64):
//! - `i`                        -> Installation
//! - `s` service_sid            -> ServiceRecord;   `S` unique_name -> service sid
//! - `k` key_sid                -> ApiKeyRecord
//! - `o` service_sid object_sid -> ObjectRecord;    `n` service_sid name -> object sid
//! - `l` object_sid revision    -> encoded Event (the change log, last `log_retention` kept)
//! - `x` expires_ms service_sid object_sid -> ()   (the reaper's index)

use super::*;
use serde::de::DeserializeOwned;

pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    log_retention: u64,
    durable: bool,
}

fn engine(e: sled::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serialize(v).unwrap_or_else(|e| unreachable!("in-memory bincode encode: {e}"))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    bincode::deserialize(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

fn object_key(service_sid: &str, sid: &str) -> Vec<u8> {
    key(&[b"o", service_sid.as_bytes(), sid.as_bytes()])
}

fn name_key(service_sid: &str, name: &str) -> Vec<u8> {
    key(&[b"n", service_sid.as_bytes(), name.as_bytes()])
}

fn log_key(object_sid: &str, revision: u64) -> Vec<u8> {
    key(&[b"l", object_sid.as_bytes(), &revision.to_be_bytes()])
}

fn expiry_key(expires: u64, service_sid: &str, sid: &str) -> Vec<u8> {
    key(&[
        b"x",
        &expires.to_be_bytes(),
        service_sid.as_bytes(),
        sid.as_bytes(),
    ])
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. `durable = false` is the relaxed mode: writes
    /// are acknowledged before they reach the disk (sled still flushes every 500 ms).
    pub fn open(dir: &std::path::Path, log_retention: u64, durable: bool) -> StoreResult<Self> {
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(500))
            .open()
            .map_err(engine)?;
        let tree = db.open_tree("syncline").map_err(engine)?;
        Ok(SledStore {
            db,
            tree,
            log_retention: log_retention.max(1),
            durable,
        })
    }

    fn get<T: DeserializeOwned>(&self, k: &[u8]) -> StoreResult<Option<T>> {
        match self.tree.get(k).map_err(engine)? {
            Some(v) => decode(&v).map(Some),
            None => Ok(None),
        }
    }

    fn put<T: Serialize>(&self, k: &[u8], v: &T) -> StoreResult<()> {
        self.tree.insert(k, encode(v)).map_err(engine)?;
        Ok(())
    }

    fn add_to_batch(&self, batch: &mut sled::Batch, w: &ObjectWrite, deleted: &[&str]) {
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
                    // The object is gone, and so is its history: drop the whole log.
                    let prefix = key(&[b"l", before.sid.as_bytes()]);
                    for k in self.tree.scan_prefix(&prefix).keys().flatten() {
                        batch.remove(k);
                    }
                }
            }
        }
        if let (Some(entry), Some(after)) = (&w.log, &w.after) {
            if deleted.contains(&after.sid.as_str()) {
                // Deleted later in this same batch: its log goes with it.
                return;
            }
            batch.insert(log_key(&after.sid, entry.revision), entry.event.as_ref());
            if entry.revision >= self.log_retention {
                batch.remove(log_key(&after.sid, entry.revision - self.log_retention));
            }
        }
    }
}

#[async_trait]
impl Store for SledStore {
    async fn installation(&self) -> StoreResult<Option<Installation>> {
        self.get(b"i")
    }

    async fn put_installation(&self, inst: &Installation) -> StoreResult<()> {
        self.put(b"i", inst)?;
        self.flush().await
    }

    async fn service(&self, sid: &str) -> StoreResult<Option<ServiceRecord>> {
        self.get(&key(&[b"s", sid.as_bytes()]))
    }

    async fn service_by_name(&self, unique_name: &str) -> StoreResult<Option<ServiceRecord>> {
        match self
            .tree
            .get(key(&[b"S", unique_name.as_bytes()]))
            .map_err(engine)?
        {
            Some(sid) => {
                let sid = String::from_utf8(sid.to_vec())
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                self.service(&sid).await
            }
            None => Ok(None),
        }
    }

    async fn put_service(&self, service: &ServiceRecord) -> StoreResult<()> {
        let mut batch = sled::Batch::default();
        batch.insert(key(&[b"s", service.sid.as_bytes()]), encode(service));
        if let Some(name) = &service.unique_name {
            batch.insert(key(&[b"S", name.as_bytes()]), service.sid.as_bytes());
        }
        self.tree.apply_batch(batch).map_err(engine)?;
        self.flush().await
    }

    async fn api_key(&self, sid: &str) -> StoreResult<Option<ApiKeyRecord>> {
        self.get(&key(&[b"k", sid.as_bytes()]))
    }

    async fn put_api_key(&self, k: &ApiKeyRecord) -> StoreResult<()> {
        self.put(&key(&[b"k", k.sid.as_bytes()]), k)?;
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
        match self.tree.get(name_key(service_sid, name)).map_err(engine)? {
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
        let start = log_key(object_sid, after + 1);
        let end = log_key(object_sid, up_to);
        let mut entries = Vec::new();
        let mut expected = after + 1;
        for item in self.tree.range(start..=end) {
            let (k, v) = item.map_err(engine)?;
            let mut rev = [0u8; 8];
            rev.copy_from_slice(&k[k.len() - 8..]);
            let revision = u64::from_be_bytes(rev);
            if revision != expected {
                return Ok(None);
            }
            entries.push(LogEntry {
                revision,
                event: Bytes::copy_from_slice(&v),
            });
            expected += 1;
        }
        Ok((expected == up_to + 1).then_some(entries))
    }

    async fn expired(&self, now_ms: u64, limit: usize) -> StoreResult<Vec<(String, String)>> {
        let start = expiry_key(0, "", "");
        let end = key(&[b"x", &now_ms.to_be_bytes(), &[0xff]]);
        let mut out = Vec::new();
        for k in self.tree.range(start..end).keys().take(limit) {
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

    async fn apply(&self, writes: Vec<ObjectWrite>) -> StoreResult<()> {
        let deleted: Vec<&str> = writes
            .iter()
            .filter(|w| w.after.is_none())
            .filter_map(|w| w.before.as_ref().map(|b| b.sid.as_str()))
            .collect();
        let mut batch = sled::Batch::default();
        for w in &writes {
            self.add_to_batch(&mut batch, w, &deleted);
        }
        self.tree.apply_batch(batch).map_err(engine)?;
        if self.durable {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&self) -> StoreResult<()> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::Engine(format!("flush task: {e}")))?
            .map_err(engine)?;
        Ok(())
    }
}
