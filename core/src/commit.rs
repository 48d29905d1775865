//! Group commit: the single writer. Every change to an object goes through here, in
//! batches: each batch reads the current records, applies the object rules, becomes one
//! atomic store write and one flush, and only then are its writers answered and its
//! events published. Under load batches grow by themselves; idle, a lone write is flushed
//! at once. Because there is one writer, revisions are assigned without locks or retries.

use std::collections::HashMap;
use std::sync::Arc;

use syncline_proto::ids::{is_sid, make_sid, validate_unique_name};
use syncline_proto::{
    ErrorCode, Event, ItemKey, Limits, ObjectInfo, ObjectKind, Reason, WireError, WriteInfo,
    WrittenValue,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error};

use crate::acl::{self, Access, Action};
use crate::cluster::Cluster;
use crate::command::{Json, SetMode, Ttl, WriteCommand};
use crate::fanout::Hub;
use crate::metrics::CommitStats;
use crate::objects::{self, document, items, WriteContext};
use crate::presence::{Owner, Presence};
use crate::store::{
    Conditions, ItemRecord, ItemWrite, LogEntry, ObjectRecord, ObjectWrite, Store, StoreError,
};
use crate::webhooks::{self, Target, Webhooks};

/// Most writes applied in one batch (one flush).
const MAX_BATCH: usize = 1024;
/// Writes waiting for the committer; past this, writers wait (back-pressure).
const QUEUE_DEPTH: usize = 8192;
/// Times a batch is computed again after losing a race with another node (a shared
/// store's `Conflict`); past this its writers get `Unavailable` and may retry.
const MAX_CONFLICT_ATTEMPTS: u32 = 16;

#[derive(Debug, Clone)]
pub enum WriteOp {
    /// A client's write, checked at its transport's edge.
    Client(WriteCommand),
    /// Creates the stream `name`, or hands back the existing one: how `publish` gets
    /// its stream.
    EnsureStream { name: String },
    /// Deletes the object if (and only if) it has expired: the reaper's request.
    Expire { object_sid: String },
    /// Removes the item if (and only if) it has expired.
    ExpireItem { object_sid: String, key: ItemKey },
    /// Deletes every object of the context's service (the service is being deleted).
    DeleteAll,
    /// `identity`'s last connection ended and its window passed: if no connection came
    /// back since (the departure `epoch` still stands), remove its ephemeral items.
    Depart { identity: String, epoch: u64 },
}

#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// A write of data (document or item), as the writer may see it.
    Written(WriteInfo),
    Object(ObjectInfo),
    ItemRemoved {
        key: ItemKey,
        revision: u64,
    },
    Deleted {
        sid: String,
        revision: u64,
    },
    /// Nothing to do (an expiry for something gone or renewed, a departure cancelled).
    Unchanged,
    /// The identity is away: its ephemeral items (this many) were removed.
    Departed {
        items: usize,
    },
}

struct Pending {
    ctx: WriteContext,
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteOutcome, WireError>>,
}

/// Handle to the commit task; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Pending>,
    stats: Arc<CommitStats>,
    /// Who is connected, as the commit task sees it (ephemeral writes, departures).
    presence: Arc<Presence>,
}

impl Committer {
    /// Starts the commit task. It ends when every `Committer` clone is dropped, after
    /// committing what was queued.
    pub fn start(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        presence: Arc<Presence>,
        cluster: Option<Arc<dyn Cluster>>,
        webhooks: Webhooks,
        limits: Limits,
    ) -> (Committer, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let stats = Arc::new(CommitStats::default());
        let task = tokio::spawn(run(
            rx,
            Parts {
                store,
                hub,
                presence: presence.clone(),
                cluster,
                webhooks,
            },
            limits,
            stats.clone(),
        ));
        let committer = Committer {
            tx,
            stats,
            presence,
        };
        (committer, task)
    }

    /// The presence table the commit task decides ephemeral writes and departures by.
    pub fn presence(&self) -> &Arc<Presence> {
        &self.presence
    }

    /// What the commit task has done: batches, writes, their size and flush times.
    pub fn commit_stats(&self) -> &CommitStats {
        &self.stats
    }

    /// (batches committed, writes in them) since start.
    pub fn stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.stats.batches.load(Relaxed),
            self.stats.writes.load(Relaxed),
        )
    }

    pub async fn submit(&self, ctx: WriteContext, op: WriteOp) -> Result<WriteOutcome, WireError> {
        let (reply, rx) = oneshot::channel();
        let unavailable = || WireError::new(ErrorCode::Unavailable, "server is shutting down");
        self.tx
            .send(Pending { ctx, op, reply })
            .await
            .map_err(|_| unavailable())?;
        rx.await.map_err(|_| unavailable())?
    }
}

/// What the commit task works with.
struct Parts {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    presence: Arc<Presence>,
    /// The other nodes, in cluster mode: a departure asks whether one holds the identity.
    cluster: Option<Arc<dyn Cluster>>,
    webhooks: Webhooks,
}

async fn run(
    mut rx: mpsc::Receiver<Pending>,
    parts: Parts,
    limits: Limits,
    stats: Arc<CommitStats>,
) {
    let Parts {
        store,
        hub,
        presence,
        cluster,
        webhooks,
    } = parts;
    let max_batch = MAX_BATCH.min(store.max_batch_writes()).max(1);
    let mut queued = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut queued, max_batch).await > 0 {
        // A store that cannot take writes (a full disk) refuses the batch before it is
        // computed: it may be about to reopen and drop state a batch would build on.
        if let Err(e) = store.writable().await {
            debug!(error = %e, size = queued.len(), "storage not writable; writes refused");
            for p in queued.drain(..) {
                let _ = p.reply.send(Err(e.client_error("writes are refused")));
            }
            continue;
        }
        // On a store shared by several nodes, another node may change a record this
        // batch read before it commits (`Conflict`): nothing was applied, so the batch
        // is computed again over what is stored now, as if it had just been queued.
        let mut attempt = 0;
        // Whether this computation reads every record from the store of record.
        let mut read_afresh = false;
        let (mut batch, results, applied) = loop {
            let mut batch = Batch::new(&*store, &hub, &presence, cluster.as_deref());
            if store.is_shared() {
                batch.prefetch(&queued, read_afresh).await;
            }
            let mut results = Vec::with_capacity(queued.len());
            for p in &queued {
                // A refused write leaves nothing in the batch, not even the object it
                // had created on its way to the refusal.
                let savepoint = batch.savepoint();
                let result = batch.apply(&p.ctx, &p.op, &limits).await;
                if result.is_err() {
                    batch.rollback(savepoint);
                }
                results.push(result);
            }
            // A write refused for naming another revision may have been judged on this
            // node's copy of what it last wrote, which another node may have changed
            // since (a refusal is not compared when the batch commits): the batch is
            // decided again, once, on what is stored.
            let refused_on_revision = results
                .iter()
                .any(|r| matches!(r, Err(e) if e.code == ErrorCode::Conflict));
            if store.is_shared() && !read_afresh && refused_on_revision {
                read_afresh = true;
                stats
                    .recomputed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            // A batch of no-ops (expiries of what was renewed, departures cancelled or
            // with no items) has nothing to make durable: no flush for it.
            let applied = if batch.writes.is_empty() {
                Ok(())
            } else {
                let started = std::time::Instant::now();
                let applied = store
                    .apply(std::mem::take(&mut batch.writes), &batch.conditions)
                    .await;
                stats.flush_took(queued.len(), started.elapsed());
                applied
            };
            match applied {
                Err(StoreError::Conflict(what)) if attempt < MAX_CONFLICT_ATTEMPTS => {
                    attempt += 1;
                    read_afresh = true;
                    stats
                        .recomputed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    debug!(
                        attempt,
                        what, "batch lost a race with another node; computing it again"
                    );
                    // The change may be a grant's (a revoke through another node) or a
                    // presence entry's, which this node's caches show only once its
                    // watch brings it.
                    if !batch.conditions.is_empty() {
                        if let Err(e) = store.catch_up().await {
                            debug!(error = %e, "catching up before computing the batch again failed");
                        }
                    }
                }
                applied => break (batch, results, applied),
            }
        };
        let size = queued.len();
        match applied {
            Ok(()) => {
                stats
                    .batches
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                stats
                    .writes
                    .fetch_add(size as u64, std::sync::atomic::Ordering::Relaxed);
                // A shared store's watch publishes every node's events, this one's too.
                if !store.is_shared() {
                    batch
                        .events
                        .iter()
                        .for_each(|e| hub.publish(&e.object_sid, e.revision, &e.body, e.ends));
                }
                for (owner, epoch) in &batch.departures {
                    presence.depart(owner, *epoch);
                }
                let hooks = std::mem::take(&mut batch.hooks);
                let replies: Vec<_> = queued.drain(..).map(|p| p.reply).zip(results).collect();
                let tell = {
                    let webhooks = webhooks.clone();
                    move || {
                        // Durable, so it may be told; the queue never waits.
                        for (service, target, change) in hooks {
                            webhooks.offer(&service, &target, change);
                        }
                        for (reply, r) in replies {
                            let _ = reply.send(r);
                        }
                    }
                };
                if store.is_shared() {
                    // Writers are answered once this node's hub has the batch's events
                    // (its watch brings them); the next batch need not wait for that.
                    let visible = store.visible();
                    tokio::spawn(async move {
                        visible.await;
                        tell();
                    });
                } else {
                    tell();
                }
                debug!(size, "batch committed");
            }
            Err(e @ StoreError::NotDurable(_)) => {
                // The store reopened itself to get past the failure: what was applied
                // in memory and never flushed is gone again, so its events are not
                // published (subscribers would hold revisions that the next writes
                // reuse). Readers may have seen it in between, as in a crash.
                error!(error = %e, size, "flush failed; writes refused");
                for p in queued.drain(..) {
                    let _ = p.reply.send(Err(WireError::new(
                        ErrorCode::Unavailable,
                        "storage could not make the write durable (see the server's log); \
                         it is most likely not written: read before retrying",
                    )));
                }
            }
            Err(e) => {
                error!(error = %e, size, "batch commit failed; writes refused");
                for p in queued.drain(..) {
                    let _ = p
                        .reply
                        .send(Err(e.client_error("storage failed to commit the write")));
                }
            }
        }
    }
}

struct Published {
    object_sid: String,
    revision: u64,
    body: bytes::Bytes,
    /// The object is gone: the subscription ends with this event.
    ends: bool,
}

/// One batch in the making: an overlay of what earlier writes in the batch changed, so
/// that later writes in the same batch see them.
struct Batch<'a> {
    store: &'a dyn Store,
    /// Each event is encoded here once, for the change log and every subscriber.
    hub: &'a Hub,
    /// Who is connected: ephemeral writes need their writer to be, and departures
    /// must still stand when they run.
    presence: &'a Presence,
    /// Each service written to in this batch: `None` if it was deleted, else where its
    /// webhooks go (read with the record the batch loads anyway, so a service without
    /// webhooks costs nothing more).
    services: HashMap<String, Option<Option<Target>>>,
    objects: HashMap<(String, String), Option<ObjectRecord>>,
    names: HashMap<(String, String), Option<String>>,
    items: HashMap<(String, ItemKey), Option<ItemRecord>>,
    writes: Vec<ObjectWrite>,
    /// What the batch's decisions rested on, for a shared store to compare.
    conditions: Conditions,
    /// The other nodes (cluster mode).
    cluster: Option<&'a dyn Cluster>,
    events: Vec<Published>,
    /// Webhook events (service, target, change), offered once the batch is durable.
    /// Apart from `events`: object creation has a webhook but no subscriber event.
    hooks: Vec<(String, Target, webhooks::Change)>,
    /// What each overlay change replaced, newest last, so a refused write can be undone.
    undo: Vec<Undo>,
    /// Departures this batch carries out, ended in `Presence` once it is committed (a
    /// batch computed again after a conflict must find them still standing).
    departures: Vec<(Owner, u64)>,
}

/// An overlay entry as it was before a change (`None`: there was none).
enum Undo {
    Object((String, String), Option<Option<ObjectRecord>>),
    Name((String, String), Option<Option<String>>),
    Item((String, ItemKey), Option<Option<ItemRecord>>),
}

/// How far a batch had got: `Batch::rollback` returns it there.
#[derive(Clone, Copy)]
struct Savepoint {
    writes: usize,
    grants: usize,
    departed: usize,
    events: usize,
    hooks: usize,
    undo: usize,
    departures: usize,
}

fn restore<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, key: K, before: Option<V>) {
    match before {
        Some(v) => map.insert(key, v),
        None => map.remove(&key),
    };
}

fn storage(e: StoreError) -> WireError {
    error!(error = %e, "storage read failed");
    e.client_error("storage read failed")
}

impl<'a> Batch<'a> {
    fn new(
        store: &'a dyn Store,
        hub: &'a Hub,
        presence: &'a Presence,
        cluster: Option<&'a dyn Cluster>,
    ) -> Self {
        Batch {
            store,
            hub,
            presence,
            services: HashMap::new(),
            objects: HashMap::new(),
            names: HashMap::new(),
            items: HashMap::new(),
            writes: Vec::new(),
            conditions: Conditions::default(),
            cluster,
            events: Vec::new(),
            hooks: Vec::new(),
            undo: Vec::new(),
            departures: Vec::new(),
        }
    }

    /// Reads the objects the queued writes name, all at once, into the overlay: on a
    /// shared store each read is a network round trip, and the batch would otherwise
    /// make them one after another (two per write named by unique name). If they
    /// cannot be read here, each write reads its own, and meets the error, as usual.
    /// `afresh`: see `Store::read_for_batch`.
    async fn prefetch(&mut self, queued: &[Pending], afresh: bool) {
        let references: Vec<(String, String)> = queued
            .iter()
            .filter_map(|p| match &p.op {
                WriteOp::Client(command) => command
                    .object()
                    .map(|r| (p.ctx.service_sid.clone(), r.to_owned())),
                _ => None,
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let services: Vec<String> = queued
            .iter()
            .map(|p| p.ctx.service_sid.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let Ok(found) = self
            .store
            .read_for_batch(&services, &references, afresh)
            .await
        else {
            return;
        };
        for ((service, reference), (sid, record)) in references.into_iter().zip(found) {
            if !is_sid(&reference) {
                self.names.insert((service.clone(), reference), sid.clone());
            }
            if let Some(sid) = sid {
                self.objects.insert((service, sid), record);
            }
        }
    }

    fn savepoint(&self) -> Savepoint {
        Savepoint {
            writes: self.writes.len(),
            grants: self.conditions.grants.len(),
            departed: self.conditions.departed.len(),
            events: self.events.len(),
            hooks: self.hooks.len(),
            undo: self.undo.len(),
            departures: self.departures.len(),
        }
    }

    /// Forgets every change recorded since `to`.
    fn rollback(&mut self, to: Savepoint) {
        self.writes.truncate(to.writes);
        self.conditions.grants.truncate(to.grants);
        self.conditions.departed.truncate(to.departed);
        self.events.truncate(to.events);
        self.hooks.truncate(to.hooks);
        self.departures.truncate(to.departures);
        while self.undo.len() > to.undo {
            match self.undo.pop() {
                Some(Undo::Object(k, before)) => restore(&mut self.objects, k, before),
                Some(Undo::Name(k, before)) => restore(&mut self.names, k, before),
                Some(Undo::Item(k, before)) => restore(&mut self.items, k, before),
                None => break,
            }
        }
    }

    /// Refuses writes to a deleted service. A service is deleted by removing its record
    /// first and then its objects (`DeleteAll`, queued behind every write already
    /// checked here), so a write that races the deletion either lands before
    /// `DeleteAll` and is deleted with the rest, or is refused here; none is left behind.
    async fn require_service(&mut self, service_sid: &str) -> Result<(), WireError> {
        let exists = match self.services.get(service_sid) {
            Some(known) => known.is_some(),
            None => {
                let service = self.store.service(service_sid).await.map_err(storage)?;
                let known = service.map(|s| Target::of(&s.flags));
                let exists = known.is_some();
                self.services.insert(service_sid.to_owned(), known);
                exists
            }
        };
        if exists {
            Ok(())
        } else {
            Err(WireError::new(
                ErrorCode::Unauthorized,
                "the service was deleted",
            ))
        }
    }

    async fn load_sid(
        &mut self,
        service: &str,
        sid: &str,
    ) -> Result<Option<ObjectRecord>, WireError> {
        let key = (service.to_owned(), sid.to_owned());
        if let Some(r) = self.objects.get(&key) {
            return Ok(r.clone());
        }
        let r = self.store.object(service, sid).await.map_err(storage)?;
        self.objects.insert(key, r.clone());
        Ok(r)
    }

    /// The live record a reference (sid or unique name) points to. An expired record is
    /// removed here, in this batch, with its `expired` event, and reads as absent.
    async fn load(
        &mut self,
        ctx: &WriteContext,
        reference: &str,
    ) -> Result<Option<ObjectRecord>, WireError> {
        let service = ctx.service_sid.as_str();
        let sid = if is_sid(reference) {
            Some(reference.to_owned())
        } else {
            let key = (service.to_owned(), reference.to_owned());
            match self.names.get(&key) {
                Some(s) => s.clone(),
                None => self
                    .store
                    .object_sid_by_name(service, reference)
                    .await
                    .map_err(storage)?,
            }
        };
        let Some(sid) = sid else { return Ok(None) };
        let record = self.load_sid(service, &sid).await?;
        match record {
            Some(r) if r.is_expired(ctx.now_ms) => {
                let system = system(ctx);
                let event = objects::removed_event(&r, &system, Reason::Expired);
                self.record(Some(r), None, None, Some(event));
                Ok(None)
            }
            other => Ok(other),
        }
    }

    /// Adds one object change (with at most one item change) and its event to the batch.
    fn record(
        &mut self,
        before: Option<ObjectRecord>,
        after: Option<ObjectRecord>,
        item: Option<ItemWrite>,
        event: Option<Event>,
    ) {
        let Some(any) = after.as_ref().or(before.as_ref()) else {
            return;
        };
        let service = any.service_sid.clone();
        let sid = any.sid.clone();
        if let Some(Some(Some(target))) = self.services.get(&service) {
            let change = webhooks::change(before.as_ref(), after.as_ref(), event.as_ref());
            if let Some(change) = change.filter(|c| target.wants(&c.identity)) {
                self.hooks.push((service.clone(), target.clone(), change));
            }
        }
        if let Some(name) = before.as_ref().and_then(|b| b.unique_name.clone()) {
            let key = (service.clone(), name);
            let old = self.names.insert(key.clone(), None);
            self.undo.push(Undo::Name(key, old));
        }
        if let Some(name) = after.as_ref().and_then(|a| a.unique_name.clone()) {
            let key = (service.clone(), name);
            let old = self.names.insert(key.clone(), Some(sid.clone()));
            self.undo.push(Undo::Name(key, old));
        }
        let key = (service, sid.clone());
        let old = self.objects.insert(key.clone(), after.clone());
        self.undo.push(Undo::Object(key, old));
        if let Some(iw) = &item {
            let key = (sid.clone(), iw.key.clone());
            let old = self.items.insert(key.clone(), iw.after.clone());
            self.undo.push(Undo::Item(key, old));
        }
        let encoded = event.map(|e| (e.revision, self.hub.encode(&e)));
        let ends = after.is_none();
        self.writes.push(ObjectWrite {
            before,
            log: encoded.as_ref().map(|(revision, body)| LogEntry {
                revision: *revision,
                event: body.clone(),
            }),
            after,
            items: item.into_iter().collect(),
        });
        if let Some((revision, body)) = encoded {
            self.events.push(Published {
                object_sid: sid,
                revision,
                body,
                ends,
            });
        }
    }

    /// The live item, or `None`. An expired item is removed here, in this batch, with its
    /// `expired` event.
    async fn load_item(
        &mut self,
        ctx: &WriteContext,
        object: &ObjectRecord,
        key: &ItemKey,
    ) -> Result<(ObjectRecord, Option<ItemRecord>), WireError> {
        let k = (object.sid.clone(), key.clone());
        let item = match self.items.get(&k) {
            Some(i) => i.clone(),
            None => {
                let i = self.store.item(&object.sid, key).await.map_err(storage)?;
                self.items.insert(k, i.clone());
                i
            }
        };
        match item {
            Some(i) if i.is_expired(ctx.now_ms) => {
                let (next, write, event) = items::remove(
                    object,
                    key.clone(),
                    Some(&i),
                    None,
                    Reason::Expired,
                    &system(ctx),
                )?;
                self.record(
                    Some(object.clone()),
                    Some(next.clone()),
                    Some(write),
                    Some(event),
                );
                Ok((next, None))
            }
            other => Ok((object.clone(), other)),
        }
    }

    /// The live object of `kind` behind `reference`, with the writer's access to it;
    /// created (by name) when missing and `create` is set, else `NotFound`.
    async fn load_kind(
        &mut self,
        ctx: &WriteContext,
        reference: &str,
        kind: ObjectKind,
        create: bool,
        actions: &[Action],
        limits: &Limits,
    ) -> Result<(ObjectRecord, Access), WireError> {
        let existing = self.load(ctx, reference).await?;
        let create = create && !is_sid(reference);
        let access = self.guard(ctx, existing.as_ref(), actions, create).await?;
        if let Some(r) = existing {
            objects::expect_kind(&r, kind)?;
            return Ok((r, access));
        }
        if !create {
            return Err(WireError::not_found(kind.name()));
        }
        validate_unique_name(reference, limits)?;
        let r = objects::new_object(kind, new_sid(kind), Some(reference.to_owned()), None, ctx);
        self.record(None, Some(r.clone()), None, None);
        Ok((r, access))
    }

    /// Checks the writer's right to every one of `actions` on `object` (`None`: missing,
    /// which only an operation that would create it (`create`) may pass): whether it
    /// may create at all (`token_create`), then, under an enabled ACL, its grants.
    /// Everyone else passes with full access. What it returns says whether the writer
    /// may read the object, and so whether its answer may carry the data. The grants a
    /// yes rests on go with the batch to its store (`Store::apply`).
    async fn guard(
        &mut self,
        ctx: &WriteContext,
        object: Option<&ObjectRecord>,
        actions: &[Action],
        create: bool,
    ) -> Result<Access, WireError> {
        if object.is_none() && create && !ctx.may_create {
            return Err(acl::creation_refused(ctx.guard.is_some()));
        }
        let Some(identity) = &ctx.guard else {
            return Ok(Access::FULL);
        };
        let allowed = acl::check(self.store, identity, object, actions, create).await?;
        self.conditions.grants.extend(allowed.grants);
        Ok(allowed.access)
    }

    /// Applies an item change computed by the rules and answers what the writer may see.
    fn apply_item(
        &mut self,
        before: ObjectRecord,
        change: items::ItemChange,
        access: Access,
    ) -> WriteOutcome {
        let (next, write, event) = change;
        let outcome = match &write.after {
            Some(item) => {
                let value = WrittenValue::Item(items::item_info(&write.key, item));
                written(&next, Some(write.key.clone()), value, access)
            }
            None => WriteOutcome::ItemRemoved {
                key: write.key.clone(),
                revision: next.revision,
            },
        };
        self.record(Some(before), Some(next), Some(write), Some(event));
        outcome
    }

    async fn apply(
        &mut self,
        ctx: &WriteContext,
        op: &WriteOp,
        limits: &Limits,
    ) -> Result<WriteOutcome, WireError> {
        if !matches!(op, WriteOp::DeleteAll) {
            self.require_service(&ctx.service_sid).await?;
        }
        let command = match op {
            WriteOp::Client(command) => command,
            WriteOp::EnsureStream { name } => {
                return self
                    .create(
                        ctx,
                        ObjectKind::Stream,
                        Some(name),
                        None,
                        None,
                        true,
                        limits,
                    )
                    .await;
            }
            WriteOp::DeleteAll => {
                let all = self
                    .store
                    .objects_of(&ctx.service_sid)
                    .await
                    .map_err(storage)?;
                // A shared store bounds its transactions: a service with more objects
                // goes in several of these (the caller repeats it until none is left).
                for r in all.into_iter().take(self.store.max_batch_writes()) {
                    // Skip what an earlier write in this batch already removed.
                    if let Some(current) = self.load_sid(&ctx.service_sid, &r.sid).await? {
                        let event = objects::removed_event(&current, ctx, Reason::Write);
                        self.record(Some(current), None, None, Some(event));
                    }
                }
                return Ok(WriteOutcome::Unchanged);
            }
            WriteOp::ExpireItem { object_sid, key } => {
                // `load_item` removes the item if it has expired; otherwise nothing changes.
                if let Some(current) = self.load(ctx, object_sid).await? {
                    self.load_item(ctx, &current, key).await?;
                }
                return Ok(WriteOutcome::Unchanged);
            }
            WriteOp::Expire { object_sid } => {
                // `load` removes the object if it has expired; otherwise nothing changes.
                self.load(ctx, object_sid).await?;
                return Ok(WriteOutcome::Unchanged);
            }
            WriteOp::Depart { identity, epoch } => {
                return self.depart(ctx, identity, *epoch).await;
            }
        };
        // The rights a write needs: `write` to change data, `manage` to change a TTL,
        // both when it does both.
        let with_ttl = |base: Action| -> Vec<Action> {
            let mut actions = vec![base];
            if command.ttl().is_some() {
                actions.push(Action::Manage);
            }
            actions
        };
        match command {
            WriteCommand::DocSet {
                document,
                data,
                if_match,
                ttl,
                mode,
            } => {
                let current = self.load(ctx, document).await?;
                // Only a write that would create the document may pass the guard without
                // one: with `if_match` (or as a `Replace`) it would not, and must be
                // refused like a taken name, or the answer would tell which one it is.
                let create = current.is_none()
                    && !is_sid(document)
                    && if_match.is_none()
                    && *mode == SetMode::Upsert;
                let access = self
                    .guard(ctx, current.as_ref(), &with_ttl(Action::Write), create)
                    .await?;
                if current.is_none() {
                    if !create {
                        return Err(WireError::not_found("document"));
                    }
                    validate_unique_name(document, limits)?;
                }
                let create = || document::NewDocument {
                    sid: new_sid(ObjectKind::Document),
                    unique_name: Some(document.clone()),
                };
                let (next, event) = document::set(
                    current.as_ref(),
                    create,
                    data.clone(),
                    *if_match,
                    ttl.map(Ttl::seconds),
                    ctx,
                )?;
                let value = WrittenValue::Document(document::info(&next));
                let outcome = written(&next, None, value, access);
                self.record(current, Some(next), None, Some(event));
                Ok(outcome)
            }
            WriteCommand::DocUpdate {
                document,
                patch,
                if_match,
            } => {
                let current = self.load(ctx, document).await?;
                let access = self
                    .guard(ctx, current.as_ref(), &[Action::Write], false)
                    .await?;
                let current = current.ok_or_else(|| WireError::not_found("document"))?;
                let (next, event) = document::update(&current, patch, *if_match, ctx, limits)?;
                let value = WrittenValue::Document(document::info(&next));
                let outcome = written(&next, None, value, access);
                self.record(Some(current), Some(next), None, Some(event));
                Ok(outcome)
            }
            WriteCommand::Create {
                kind,
                unique_name,
                ttl,
                data,
            } => {
                if data.is_some() && *kind != ObjectKind::Document {
                    return Err(WireError::invalid(format!(
                        "a {} does not start with data",
                        kind.name()
                    )));
                }
                let name = unique_name.as_deref();
                self.create(
                    ctx,
                    *kind,
                    name,
                    ttl.map(Ttl::seconds),
                    data.as_ref(),
                    false,
                    limits,
                )
                .await
            }
            WriteCommand::SetTtl {
                kind,
                object,
                key,
                ttl,
            } => {
                let current = self.load(ctx, object).await?;
                let access = self
                    .guard(ctx, current.as_ref(), &[Action::Manage], false)
                    .await?;
                let current = current.ok_or_else(|| WireError::not_found(kind.name()))?;
                objects::expect_kind(&current, *kind)?;
                let expires = objects::expiry(ctx.now_ms, ttl.seconds());
                match key {
                    None => {
                        let mut next = current.clone();
                        next.date_expires = expires;
                        let info = objects::object_info(&next);
                        self.record(Some(current), Some(next), None, None);
                        Ok(WriteOutcome::Object(info))
                    }
                    Some(key) => {
                        let (current, item) = self.load_item(ctx, &current, key).await?;
                        let before = item.ok_or_else(|| WireError::not_found("item"))?;
                        let mut after = before.clone();
                        after.date_expires = expires;
                        let value = WrittenValue::Item(items::item_info(key, &after));
                        let outcome = written(&current, Some(ItemKey::clone(key)), value, access);
                        let write = crate::store::ItemWrite {
                            key: ItemKey::clone(key),
                            before: Some(before),
                            after: Some(after),
                        };
                        self.record(Some(current.clone()), Some(current), Some(write), None);
                        Ok(outcome)
                    }
                }
            }
            WriteCommand::Delete {
                kind,
                object,
                if_match,
            } => {
                let what = kind.map_or("object", |k| k.name());
                let current = self.load(ctx, object).await?;
                self.guard(ctx, current.as_ref(), &[Action::Manage], false)
                    .await?;
                let current = current.ok_or_else(|| WireError::not_found(what))?;
                if let Some(k) = kind {
                    objects::expect_kind(&current, *k)?;
                }
                if let Some(expected) = if_match {
                    if *expected != current.revision {
                        return Err(WireError::conflict(current.revision, *expected));
                    }
                }
                let event = objects::removed_event(&current, ctx, Reason::Write);
                let outcome = WriteOutcome::Deleted {
                    sid: current.sid.clone(),
                    revision: event.revision,
                };
                self.record(Some(current), None, None, Some(event));
                Ok(outcome)
            }
            WriteCommand::ListPush {
                list,
                data,
                ttl,
                create_list,
                ephemeral,
            } => {
                if *ephemeral {
                    self.require_connected(ctx)?;
                }
                let actions = with_ttl(Action::Write);
                let (current, access) = self
                    .load_kind(ctx, list, ObjectKind::List, *create_list, &actions, limits)
                    .await?;
                let change = items::push(
                    &current,
                    data.clone(),
                    ttl.map(Ttl::seconds),
                    *ephemeral,
                    ctx,
                )?;
                Ok(self.apply_item(current, change, access))
            }
            WriteCommand::ItemSet {
                kind,
                object,
                key,
                data,
                if_match,
                ttl,
                mode,
                create_map,
                ephemeral,
            } => {
                if *mode == SetMode::Create && *kind != ObjectKind::Map {
                    return Err(WireError::invalid(
                        "only a map item is created by key: a list item is created by push, \
                         which gives it a new index",
                    ));
                }
                if *ephemeral {
                    self.require_connected(ctx)?;
                }
                // A map `set` creates its map, unless `if_match` or the mode says the
                // item must exist already (then it cannot, and nothing is created).
                let create = *create_map
                    && *kind == ObjectKind::Map
                    && if_match.is_none()
                    && *mode != SetMode::Replace;
                let actions = with_ttl(Action::Write);
                let (current, item, access) = self
                    .item_target(ctx, *kind, object, key, create, &actions, limits)
                    .await?;
                match (mode, &item) {
                    (SetMode::Create, Some(_)) => {
                        return Err(WireError::new(
                            ErrorCode::AlreadyExists,
                            format!("item {} exists", **key),
                        ))
                    }
                    (SetMode::Replace, None) => return Err(WireError::not_found("item")),
                    _ => {}
                }
                let change = items::set(
                    &current,
                    ItemKey::clone(key),
                    item.as_ref(),
                    data.clone(),
                    *if_match,
                    ttl.map(Ttl::seconds),
                    *ephemeral,
                    ctx,
                    limits,
                )?;
                Ok(self.apply_item(current, change, access))
            }
            WriteCommand::ItemUpdate {
                kind,
                object,
                key,
                patch,
                if_match,
            } => {
                let (current, item, access) = self
                    .item_target(ctx, *kind, object, key, false, &[Action::Write], limits)
                    .await?;
                let change = items::update(
                    &current,
                    ItemKey::clone(key),
                    item.as_ref(),
                    patch,
                    *if_match,
                    ctx,
                    limits,
                )?;
                Ok(self.apply_item(current, change, access))
            }
            WriteCommand::ItemRemove {
                kind,
                object,
                key,
                if_match,
            } => {
                let (current, item, access) = self
                    .item_target(ctx, *kind, object, key, false, &[Action::Write], limits)
                    .await?;
                let change = items::remove(
                    &current,
                    ItemKey::clone(key),
                    item.as_ref(),
                    *if_match,
                    Reason::Write,
                    ctx,
                )?;
                Ok(self.apply_item(current, change, access))
            }
        }
    }

    /// An ephemeral item belongs to its writer's connections: only an identity with a
    /// live connection can write one. Checked here, in the batch, so that a write that
    /// lost a race with its connection's departure cannot leave an item nobody owns.
    fn require_connected(&self, ctx: &WriteContext) -> Result<(), WireError> {
        let owner = Owner {
            service_sid: ctx.service_sid.clone(),
            identity: ctx.actor.clone(),
        };
        if ctx.origin != 0
            && ctx.actor != objects::SYSTEM_ACTOR
            && self.presence.is_connected(&owner)
        {
            return Ok(());
        }
        Err(WireError::invalid(
            "an ephemeral item lives as long as its writer's connections: write it from an access token's connection (API keys and REST have none)",
        ))
    }

    /// Removes `identity`'s ephemeral items if its departure `epoch` still stands (no
    /// connection came back since it was scheduled).
    async fn depart(
        &mut self,
        ctx: &WriteContext,
        identity: &str,
        epoch: u64,
    ) -> Result<WriteOutcome, WireError> {
        let owner = Owner {
            service_sid: ctx.service_sid.clone(),
            identity: identity.to_owned(),
        };
        if !self.presence.departure_stands(&owner, epoch) {
            return Ok(WriteOutcome::Unchanged);
        }
        // Connected through another node: still present, nothing goes (and the store
        // compares that no node holds it, for one this node has not heard of yet).
        if let Some(cluster) = self.cluster {
            if cluster.present_elsewhere(&owner).await.map_err(storage)? {
                self.departures.push((owner, epoch));
                return Ok(WriteOutcome::Unchanged);
            }
            self.conditions
                .departed
                .push((owner.service_sid.clone(), owner.identity.clone()));
        }
        self.departures.push((owner, epoch));
        let mut owned: std::collections::BTreeSet<(String, ItemKey)> = self
            .store
            .ephemeral_items(&ctx.service_sid, identity)
            .await
            .map_err(storage)?
            .into_iter()
            .collect();
        // Items this batch wrote are not in the store yet.
        owned.extend(
            self.items
                .iter()
                .filter(|(_, item)| {
                    item.as_ref()
                        .is_some_and(|i| i.ephemeral_owner.as_deref() == Some(identity))
                })
                .map(|((sid, key), _)| (sid.clone(), key.clone())),
        );
        let mut removed = 0;
        for (object_sid, key) in owned {
            let Some(object) = self.load_sid(&ctx.service_sid, &object_sid).await? else {
                continue;
            };
            let (object, item) = self.load_item(ctx, &object, &key).await?;
            let Some(item) = item.filter(|i| i.ephemeral_owner.as_deref() == Some(identity)) else {
                continue;
            };
            let (next, write, event) =
                items::remove(&object, key, Some(&item), None, Reason::Disconnected, ctx)?;
            self.record(Some(object), Some(next), Some(write), Some(event));
            removed += 1;
        }
        Ok(WriteOutcome::Departed { items: removed })
    }

    /// The object of `kind` behind `object` (created when `create`, see `load_kind`),
    /// checked for write, and its live item at `key`.
    #[allow(clippy::too_many_arguments)]
    async fn item_target(
        &mut self,
        ctx: &WriteContext,
        kind: ObjectKind,
        object: &str,
        key: &ItemKey,
        create: bool,
        actions: &[Action],
        limits: &Limits,
    ) -> Result<(ObjectRecord, Option<ItemRecord>, Access), WireError> {
        let (current, access) = self
            .load_kind(ctx, object, kind, create, actions, limits)
            .await?;
        let (current, item) = self.load_item(ctx, &current, key).await?;
        Ok((current, item, access))
    }

    /// Creates an object. A taken name is `AlreadyExists`, unless `existing_ok` and the
    /// object there is of the same kind, which is then handed back.
    #[allow(clippy::too_many_arguments)]
    async fn create(
        &mut self,
        ctx: &WriteContext,
        kind: ObjectKind,
        unique_name: Option<&str>,
        ttl: Option<u64>,
        data: Option<&Json>,
        existing_ok: bool,
        limits: &Limits,
    ) -> Result<WriteOutcome, WireError> {
        if let Some(name) = unique_name {
            validate_unique_name(name, limits)?;
            if let Some(existing) = self.load(ctx, name).await? {
                // Saying "taken" would reveal the object to one who may not see it;
                // handing it back (`existing_ok`, for publish) needs write.
                let action = if existing_ok {
                    Action::Write
                } else {
                    Action::Read
                };
                self.guard(ctx, Some(&existing), &[action], false).await?;
                if existing_ok && existing.kind == kind {
                    return Ok(WriteOutcome::Object(objects::object_info(&existing)));
                }
                return Err(WireError::new(
                    ErrorCode::AlreadyExists,
                    format!("the name {name:?} is taken by a {}", existing.kind.name()),
                ));
            }
        }
        self.guard(ctx, None, &[], true).await?;
        let mut r = objects::new_object(
            kind,
            new_sid(kind),
            unique_name.map(str::to_owned),
            ttl,
            ctx,
        );
        if let Some(data) = data {
            r.data = data.as_str().to_owned();
        }
        let info = objects::object_info(&r);
        self.record(None, Some(r), None, None);
        Ok(WriteOutcome::Object(info))
    }
}

/// The answer to a write of data: the object's revision and creator, and the written
/// value only for a writer that may read the object.
fn written(
    object: &ObjectRecord,
    key: Option<ItemKey>,
    value: WrittenValue,
    access: Access,
) -> WriteOutcome {
    WriteOutcome::Written(WriteInfo {
        object_sid: object.sid.clone(),
        kind: object.kind,
        revision: object.revision,
        object_created_by: object.created_by.clone(),
        key,
        value: access.may_read.then_some(value),
    })
}

/// The context of changes the server makes itself (expiry).
fn system(ctx: &WriteContext) -> WriteContext {
    WriteContext {
        actor: objects::SYSTEM_ACTOR.into(),
        origin: 0,
        guard: None,
        may_create: true,
        ..ctx.clone()
    }
}

/// A fresh random sid for a new object.
pub fn new_sid(kind: ObjectKind) -> String {
    make_sid(kind.prefix(), rand::random())
}
