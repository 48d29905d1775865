//! Offline writes (opt-in, [`ClientConfig::with_offline_writes`]): a write issued while
//! the client is not connected joins a bounded FIFO queue instead of failing after
//! `offline_wait`, carrying as `if_match` the revision it was based on; one task per
//! client sends the queue in order once a connection is back, and turns a base that
//! moved into a [`WriteConflict`] with both values.
//!
//! The bases come from the live subscriptions' replicas: each subscription of a client
//! with offline writes keeps a small [`Known`] (revisions only, no data) in the
//! queue's [`Bases`], updated as it applies events.
//!
//! [`ClientConfig::with_offline_writes`]: crate::ClientConfig::with_offline_writes

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use serde_json::Value;
use syncline_proto::{ErrorCode, ItemKey, ObjectInfo, ObjectKind, Request, Response, WireError};
use tokio::sync::{oneshot, Notify};
use tracing::debug;

use crate::connection::{ConnectionState, Core};
use crate::link::Link;
use crate::replica::{parse, DocumentState, Item, Replica};
use crate::{unavailable, unexpected, Error, Result};

/// A write that was queued while offline and found, once sent, that what it was based
/// on had changed: the server kept its value and nothing was written. Both sides are
/// here so the app can merge, ask its user, or drop its change; the client never
/// retries it by itself. Its code is `Conflict`, as for a failed `if_match`.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteConflict {
    /// The object as the write named it (unique name or sid).
    pub object: String,
    /// The item written, for list and map item writes.
    pub key: Option<ItemKey>,
    /// What the app tried to write.
    pub attempted: AttemptedWrite,
    /// The revision the write was based on (its `if_match`); `None` when it was based
    /// on the object or item not existing, or on an earlier queued write to the same
    /// target that did not go through.
    pub base_revision: Option<u64>,
    /// What the server holds now.
    pub current: ServerValue,
}

impl std::fmt::Display for WriteConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of {}", self.attempted.name(), self.object)?;
        if let Some(key) = &self.key {
            write!(f, " item {key}")?;
        }
        match self.base_revision {
            Some(r) => write!(f, ", queued offline at revision {r}")?,
            None => write!(f, ", queued offline")?,
        }
        match self.current.revision() {
            Some(r) => write!(f, ", met revision {r} on the server; not written"),
            None => write!(f, ", found it deleted on the server; not written"),
        }
    }
}

/// The write a [`WriteConflict`] did not apply.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptedWrite {
    /// A `set` (document, list item or map item) of this value.
    Set(Value),
    /// An `update` (top-level merge) with this patch.
    Update(Value),
    /// An item `remove`.
    Remove,
    /// An object `delete`.
    Delete,
}

impl AttemptedWrite {
    fn name(&self) -> &'static str {
        match self {
            AttemptedWrite::Set(_) => "set",
            AttemptedWrite::Update(_) => "update",
            AttemptedWrite::Remove => "remove",
            AttemptedWrite::Delete => "delete",
        }
    }
}

/// The server's side of a [`WriteConflict`], read just after the write was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerValue {
    /// The document now.
    Document(DocumentState),
    /// The item now.
    Item(Item),
    /// The object now (a list, map or stream `delete` conflicted: its revision moved).
    Object(ObjectInfo),
    /// The document, item or object no longer exists.
    Deleted,
}

impl ServerValue {
    /// The revision of what the server holds (`None`: deleted).
    pub fn revision(&self) -> Option<u64> {
        match self {
            ServerValue::Document(d) => Some(d.revision),
            ServerValue::Item(i) => Some(i.revision),
            ServerValue::Object(o) => Some(o.revision),
            ServerValue::Deleted => None,
        }
    }

    /// The JSON value the server holds, for documents and items.
    pub fn data(&self) -> Option<&Value> {
        match self {
            ServerValue::Document(d) => Some(&d.data),
            ServerValue::Item(i) => Some(&i.data),
            ServerValue::Object(_) | ServerValue::Deleted => None,
        }
    }
}

/// What one live subscription knows of its object's revisions: enough to give an
/// offline write its base, without a second copy of the data.
#[derive(Debug, Default)]
pub(crate) struct Known {
    pub(crate) sid: String,
    pub(crate) unique_name: Option<String>,
    /// `None` until the replica has a state.
    pub(crate) revision: Option<u64>,
    /// The object was removed (the subscription saw `object_removed`).
    pub(crate) removed: bool,
    /// Which item keys the replica holds (lists: index >= this).
    pub(crate) window_start: u64,
    /// Collections: every item the replica holds, with its revision.
    pub(crate) items: Option<HashMap<ItemKey, u64>>,
}

impl Known {
    /// Takes everything from a replica that was just replaced (snapshot, resume).
    pub(crate) fn reset(&mut self, replica: &Replica) {
        self.removed = false;
        self.revision = replica.revision();
        match replica {
            Replica::Document(d) => {
                self.unique_name = d.unique_name.clone().or(self.unique_name.take());
                self.items = None;
            }
            Replica::List(c) | Replica::Map(c) => {
                self.unique_name = c.info.unique_name.clone().or(self.unique_name.take());
                self.window_start = c.window_start;
                self.items = Some(
                    c.items
                        .values()
                        .map(|i| (i.key.clone(), i.revision))
                        .collect(),
                );
            }
            Replica::Stream(info) => {
                self.unique_name = info.unique_name.clone().or(self.unique_name.take());
                self.items = None;
            }
            Replica::Empty => self.items = None,
        }
    }

    fn names(&self, reference: &str) -> bool {
        self.sid == reference || self.unique_name.as_deref() == Some(reference)
    }

    /// The base of a write to the object (`key: None`) or to one of its items.
    fn base(&self, key: Option<&ItemKey>) -> Option<Basis> {
        if self.removed {
            return Some(Basis::Absent);
        }
        let revision = self.revision?;
        let Some(key) = key else {
            return Some(Basis::Revision(revision));
        };
        let items = self.items.as_ref()?;
        if let Some(r) = items.get(key) {
            return Some(Basis::Revision(*r));
        }
        // A list replica says nothing about items older than its window.
        match key {
            ItemKey::Index(i) if *i < self.window_start => None,
            _ => Some(Basis::Absent),
        }
    }
}

/// What a write was based on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Basis {
    Revision(u64),
    Absent,
}

/// The live subscriptions' [`Known`]s of one client.
#[derive(Default)]
struct Bases(Mutex<Vec<Weak<Mutex<Known>>>>);

impl Bases {
    fn register(&self, known: &Arc<Mutex<Known>>) {
        if let Ok(mut all) = self.0.lock() {
            all.retain(|k| k.strong_count() > 0);
            all.push(Arc::downgrade(known));
        }
    }

    /// The object's sid, if a subscription knows it, and the base of a write to it (or
    /// to its item `key`) from the newest replica that knows one.
    fn lookup(&self, reference: &str, key: Option<&ItemKey>) -> (Option<String>, Option<Basis>) {
        let Ok(all) = self.0.lock() else {
            return (None, None);
        };
        let mut sid = None;
        let mut best: Option<(u64, Basis)> = None;
        for known in all.iter().filter_map(Weak::upgrade) {
            let Ok(k) = known.lock() else { continue };
            if !k.names(reference) {
                continue;
            }
            sid.get_or_insert_with(|| k.sid.clone());
            if let Some(basis) = k.base(key) {
                let rank = k.revision.unwrap_or(0);
                if best.is_none_or(|(r, _)| rank > r) {
                    best = Some((rank, basis));
                }
            }
        }
        (sid, best.map(|(_, b)| b))
    }
}

/// Where a write lands, for ordering writes that build on each other: an object (its
/// sid when a subscription knows it, else the name written) and maybe one item.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Target {
    object: String,
    key: Option<ItemKey>,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            Some(key) => write!(f, "item {key} of {}", self.object),
            None => f.write_str(&self.object),
        }
    }
}

impl Target {
    fn object_level(&self) -> Target {
        Target {
            object: self.object.clone(),
            key: None,
        }
    }
}

/// How a queued write is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base {
    /// As the app issued it: writes with no base (push, publish, create, a map item
    /// create, which is its own condition) and writes issued while connected that wait
    /// behind the queue to keep the client's order.
    AsIs,
    /// With `if_match` this revision.
    Revision(u64),
    /// Based on the object or item not existing.
    Absent,
    /// Based on what an earlier queued write to the same target leaves.
    AfterPrevious,
}

/// What a sent write left behind, for the queued writes that build on it.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Revision(u64),
    Absent,
    Failed,
}

struct Entry {
    request: Request,
    target: Option<Target>,
    base: Base,
    reply: oneshot::Sender<Result<Response>>,
}

#[derive(Default)]
struct Inner {
    entries: VecDeque<Entry>,
    /// An entry is being sent (it has left `entries`).
    busy: bool,
    /// Queued (or in-flight) writes per target; an object's count includes its items'.
    pending: HashMap<Target, usize>,
    /// What the writes sent since the queue was last empty left, per target.
    outcomes: HashMap<Target, Outcome>,
}

/// The queue of writes waiting for a connection.
pub(crate) struct Queue {
    capacity: usize,
    inner: Mutex<Inner>,
    wake: Notify,
    /// What live subscriptions know of revisions, for queued writes' bases.
    bases: Bases,
}

/// What to do with a write.
pub(crate) enum Admitted {
    /// Send it now, as a connected client always did.
    Direct(Request),
    /// It is queued; its answer comes here.
    Queued(oneshot::Receiver<Result<Response>>),
}

/// What a write request is, for the queue.
enum Shape {
    /// No base: appends, messages, creations (a map item create fails rather than
    /// overwrite, so it needs none either).
    Free(Option<Target>),
    /// Changes existing data: needs a base.
    Based(Target),
}

fn shape(request: &Request) -> Result<Shape> {
    let target = |object: &str, key: Option<&ItemKey>| Target {
        object: object.to_owned(),
        key: key.cloned(),
    };
    Ok(match request {
        Request::DocSet { document, .. } | Request::DocUpdate { document, .. } => {
            Shape::Based(target(document, None))
        }
        Request::Delete { object, .. } => Shape::Based(target(object, None)),
        Request::ItemSet { object, key, .. }
        | Request::ItemUpdate { object, key, .. }
        | Request::ItemRemove { object, key, .. } => Shape::Based(target(object, Some(key))),
        Request::ListPush { list, .. } => Shape::Free(Some(target(list, None))),
        Request::ItemCreate { object, key, .. } => Shape::Free(Some(target(object, Some(key)))),
        Request::Publish { .. } | Request::Create { .. } => Shape::Free(None),
        other => {
            return Err(Error::Protocol(format!(
                "not a write the offline queue takes: {other:?}"
            )))
        }
    })
}

fn if_match_of(request: &mut Request) -> Option<&mut Option<u64>> {
    match request {
        Request::DocSet { if_match, .. }
        | Request::DocUpdate { if_match, .. }
        | Request::Delete { if_match, .. }
        | Request::ItemSet { if_match, .. }
        | Request::ItemUpdate { if_match, .. }
        | Request::ItemRemove { if_match, .. } => Some(if_match),
        _ => None,
    }
}

impl Queue {
    pub(crate) fn new(capacity: usize) -> Queue {
        Queue {
            capacity,
            inner: Mutex::new(Inner::default()),
            wake: Notify::new(),
            bases: Bases::default(),
        }
    }

    /// Gives queued writes the revisions a new subscription's replica holds, for as
    /// long as the subscription keeps `known`.
    pub(crate) fn track(&self, known: &Arc<Mutex<Known>>) {
        self.bases.register(known);
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| Error::Protocol("offline write queue poisoned".into()))
    }

    /// Sends `request` now (connected, nothing queued) or queues it with its base.
    pub(crate) fn admit(&self, core: &Core, mut request: Request) -> Result<Admitted> {
        if let Some(e) = core.status.borrow().state.terminal_error() {
            return Err(e);
        }
        let connected = core.connected();
        let mut inner = self.lock()?;
        if connected && inner.entries.is_empty() && !inner.busy {
            return Ok(Admitted::Direct(request));
        }
        if inner.entries.len() >= self.capacity {
            return Err(unavailable(format!(
                "the offline write queue is full ({} writes wait for the connection); \
                 this write was not queued",
                self.capacity
            )));
        }
        let shape = shape(&request)?;
        let explicit = if_match_of(&mut request).and_then(|m| *m);
        // A target is named by its sid when a subscription knows it, so that writes to
        // one object by name and by sid are ordered as writes to one target.
        let resolve = |mut target: Target| {
            let (sid, basis) = self.bases.lookup(&target.object, target.key.as_ref());
            if let Some(sid) = sid {
                target.object = sid;
            }
            (target, basis)
        };
        let (target, base) = match shape {
            Shape::Free(target) => (target.map(|t| resolve(t).0), Base::AsIs),
            Shape::Based(target) => {
                let (target, basis) = resolve(target);
                let base = if connected {
                    Base::AsIs
                } else if let Some(r) = explicit {
                    Base::Revision(r)
                } else if inner.pending.get(&target).is_some_and(|n| *n > 0) {
                    Base::AfterPrevious
                } else {
                    match basis {
                        Some(Basis::Revision(r)) => Base::Revision(r),
                        Some(Basis::Absent) => Base::Absent,
                        None => return Err(no_base(&target)),
                    }
                };
                (Some(target), base)
            }
        };
        if let Some(t) = &target {
            *inner.pending.entry(t.clone()).or_default() += 1;
            if t.key.is_some() {
                *inner.pending.entry(t.object_level()).or_default() += 1;
            }
        }
        let (reply, rx) = oneshot::channel();
        debug!(?base, "write queued while offline");
        inner.entries.push_back(Entry {
            request,
            target,
            base,
            reply,
        });
        drop(inner);
        self.wake.notify_one();
        Ok(Admitted::Queued(rx))
    }

    /// The next entry to send (the queue counts as busy until `finish`).
    fn take(&self) -> Option<(Entry, Option<Outcome>)> {
        let mut inner = self.inner.lock().ok()?;
        let entry = inner.entries.pop_front()?;
        inner.busy = true;
        let previous = entry
            .target
            .as_ref()
            .and_then(|t| inner.outcomes.get(t).copied());
        Some((entry, previous))
    }

    /// Records what a sent entry left, for the writes queued after it.
    fn finish(&self, target: Option<&Target>, result: &Result<Response>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.busy = false;
        if let Some(t) = target {
            let object = t.object_level();
            let (own, object_outcome) = match result {
                Ok(Response::Written(w)) => {
                    (Outcome::Revision(w.revision), Outcome::Revision(w.revision))
                }
                Ok(Response::ItemRemoved { revision, .. }) => {
                    (Outcome::Absent, Outcome::Revision(*revision))
                }
                Ok(Response::Deleted { .. }) => (Outcome::Absent, Outcome::Absent),
                _ => (Outcome::Failed, Outcome::Failed),
            };
            inner.outcomes.insert(object.clone(), object_outcome);
            if t.key.is_some() {
                inner.outcomes.insert(t.clone(), own);
            }
            for k in [Some(t.clone()), t.key.is_some().then_some(object)]
                .into_iter()
                .flatten()
            {
                if let Some(n) = inner.pending.get_mut(&k) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        inner.pending.remove(&k);
                    }
                }
            }
        }
        if inner.entries.is_empty() {
            inner.outcomes.clear();
        }
    }

    /// Fails every queued write with `error` (the client was closed or denied).
    fn fail_all(&self, error: impl Fn() -> Error) {
        let entries = match self.inner.lock() {
            Ok(mut inner) => {
                inner.pending.clear();
                inner.outcomes.clear();
                std::mem::take(&mut inner.entries)
            }
            Err(_) => return,
        };
        for e in entries {
            let _ = e.reply.send(Err(error()));
        }
    }
}

fn no_base(target: &Target) -> Error {
    unavailable(format!(
        "not connected to the server, and this write to {target} has no known base revision \
         (no live subscription holds it and no if_match was given); it was not queued, \
         since sent later it could overwrite changes it never saw"
    ))
}

/// The client's queue sender: waits for entries and a connection, sends each entry in
/// order, and stops when the client is closed or denied (failing what is left).
pub(crate) async fn drain(core: Arc<Core>, queue: Arc<Queue>) {
    let mut shutdown = core.shutdown.subscribe();
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        let empty = match queue.lock() {
            Ok(inner) => inner.entries.is_empty(),
            // A panic while holding the queue: its answers are lost with it.
            Err(e) => {
                debug!(error = %e, "offline write queue unusable; stopping");
                return;
            }
        };
        if empty {
            tokio::select! {
                _ = queue.wake.notified() => continue,
                _ = shutdown.changed() => break,
            }
        }
        let link = tokio::select! {
            link = core.wait_link(None) => link,
            _ = shutdown.changed() => break,
        };
        let link = match link {
            Ok(link) => link,
            Err(e) => {
                // Denied: nothing will ever send these.
                let (code, message) = (e.code(), e.to_string());
                queue.fail_all(|| Error::Closed {
                    code,
                    reason: message.clone(),
                });
                return;
            }
        };
        let Some((entry, previous)) = queue.take() else {
            continue;
        };
        let Entry {
            request,
            target,
            base,
            reply,
        } = entry;
        let result = send(&core, &link, request, base, previous).await;
        queue.finish(target.as_ref(), &result);
        let _ = reply.send(result);
    }
    queue.fail_all(|| {
        ConnectionState::Closed
            .terminal_error()
            .unwrap_or_else(|| Error::Connection("the client was closed".into()))
    });
}

async fn call(core: &Core, link: &Link, request: Request) -> Result<Response> {
    link.call(core.next_id(), request, core.config.request_timeout)
        .await
}

/// Sends one queued write according to its base.
async fn send(
    core: &Core,
    link: &Link,
    request: Request,
    base: Base,
    previous: Option<Outcome>,
) -> Result<Response> {
    match base {
        Base::AsIs => call(core, link, request).await,
        Base::Revision(r) => conditional(core, link, request, r).await,
        Base::Absent => absent(core, link, request).await,
        Base::AfterPrevious => match previous {
            Some(Outcome::Revision(r)) => conditional(core, link, request, r).await,
            Some(Outcome::Absent) => absent(core, link, request).await,
            // The write this one built on did not go through: its base is not there.
            Some(Outcome::Failed) | None => match current(core, link, &request).await {
                Ok(now) => Err(conflict(&request, None, now)),
                Err(e) => Err(e),
            },
        },
    }
}

/// Sends `request` with `if_match: revision`; a refusal for a moved or missing base
/// becomes a [`WriteConflict`].
async fn conditional(core: &Core, link: &Link, mut request: Request, r: u64) -> Result<Response> {
    if let Some(m) = if_match_of(&mut request) {
        *m = Some(r);
    }
    match call(core, link, request.clone()).await {
        // `NotFound` with an `if_match`: the document or item is gone.
        Err(e) if matches!(e.code(), ErrorCode::Conflict | ErrorCode::NotFound) => {
            match current(core, link, &request).await {
                Ok(now) => Err(conflict(&request, Some(r), now)),
                Err(_) => Err(e),
            }
        }
        other => other,
    }
}

/// Sends a write based on its target not existing, so that it cannot land on a target
/// that appeared meanwhile. A map item `set` goes as `ItemCreate`, which the server
/// applies only if the key is still absent; a document by name is created first
/// (`create` fails if the name was taken, and the set then needs revision 0). Either
/// refused with `AlreadyExists` is a conflict with what is there now. Any other write
/// changes only what exists: a target that exists now is a conflict, and one still
/// absent gets `NotFound` without the write being sent (the server could answer
/// nothing else, unless the target appeared in between, which it must not touch).
async fn absent(core: &Core, link: &Link, request: Request) -> Result<Response> {
    let refused = match &request {
        Request::DocSet { document, .. } if !syncline_proto::ids::is_sid(document) => {
            let create = Request::Create {
                kind: ObjectKind::Document,
                unique_name: Some(document.clone()),
                ttl: None,
            };
            match call(core, link, create).await {
                Ok(Response::Object(o)) => {
                    return conditional(core, link, request, o.revision).await
                }
                Ok(other) => return Err(unexpected(other)),
                Err(e) => e,
            }
        }
        Request::ItemSet {
            kind: ObjectKind::Map,
            object,
            key,
            data,
            ttl,
            ephemeral,
            ..
        } => {
            let create = Request::ItemCreate {
                kind: ObjectKind::Map,
                object: object.clone(),
                key: key.clone(),
                data: data.clone(),
                ttl: *ttl,
                ephemeral: *ephemeral,
            };
            match call(core, link, create).await {
                Err(e) => e,
                answered => return answered,
            }
        }
        _ => {
            return match current(core, link, &request).await? {
                ServerValue::Deleted => Err(still_absent(&request)),
                now => Err(conflict(&request, None, now)),
            }
        }
    };
    if refused.code() != ErrorCode::AlreadyExists {
        return Err(refused);
    }
    match current(core, link, &request).await {
        Ok(now) => Err(conflict(&request, None, now)),
        Err(_) => Err(refused),
    }
}

/// The answer to a write that changes only what exists, queued on its target's
/// absence, when the target is still absent: the server's `NotFound`, without sending it.
fn still_absent(request: &Request) -> Error {
    let what = match shape(request) {
        Ok(Shape::Based(target)) => target.to_string(),
        _ => "the target".to_owned(),
    };
    Error::Server(WireError::new(
        ErrorCode::NotFound,
        format!(
            "{what} does not exist: this write was queued offline on its absence and \
             changes only what exists, so it was not sent"
        ),
    ))
}

/// What the server holds now where `request` writes.
async fn current(core: &Core, link: &Link, request: &Request) -> Result<ServerValue> {
    let read = match request {
        Request::DocSet { document, .. } | Request::DocUpdate { document, .. } => Request::DocGet {
            document: document.clone(),
        },
        Request::Delete {
            kind: Some(ObjectKind::Document),
            object,
            ..
        } => Request::DocGet {
            document: object.clone(),
        },
        Request::Delete { object, .. } => Request::Fetch {
            object: object.clone(),
        },
        Request::ItemSet {
            kind, object, key, ..
        }
        | Request::ItemUpdate {
            kind, object, key, ..
        }
        | Request::ItemRemove {
            kind, object, key, ..
        } => Request::ItemGet {
            kind: *kind,
            object: object.clone(),
            key: key.clone(),
        },
        other => {
            return Err(Error::Protocol(format!(
                "no current value to read for {other:?}"
            )))
        }
    };
    match call(core, link, read).await {
        Ok(Response::Document(d)) => Ok(ServerValue::Document(d.try_into()?)),
        Ok(Response::Item(i)) => Ok(ServerValue::Item(i.try_into()?)),
        Ok(Response::Object(o)) => Ok(ServerValue::Object(o)),
        Ok(other) => Err(unexpected(other)),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(ServerValue::Deleted),
        Err(e) => Err(e),
    }
}

fn conflict(request: &Request, base_revision: Option<u64>, current: ServerValue) -> Error {
    let value = |data: &str| parse(data).unwrap_or_else(|_| Value::String(data.to_owned()));
    let (object, key, attempted) = match request {
        Request::DocSet { document, data, .. } => {
            (document, None, AttemptedWrite::Set(value(data)))
        }
        Request::DocUpdate { document, data, .. } => {
            (document, None, AttemptedWrite::Update(value(data)))
        }
        Request::ItemSet {
            object, key, data, ..
        } => (object, Some(key), AttemptedWrite::Set(value(data))),
        Request::ItemUpdate {
            object, key, data, ..
        } => (object, Some(key), AttemptedWrite::Update(value(data))),
        Request::ItemRemove { object, key, .. } => (object, Some(key), AttemptedWrite::Remove),
        Request::Delete { object, .. } => (object, None, AttemptedWrite::Delete),
        other => {
            return Error::Protocol(format!("a conflict on a write without a base: {other:?}"))
        }
    };
    Error::WriteConflict(Box::new(WriteConflict {
        object: object.clone(),
        key: key.cloned(),
        attempted,
        base_revision,
        current,
    }))
}
