//! Group commit: the single writer. Every change to an object goes through here, in
//! batches: each batch reads the current records, applies the object rules, becomes one
//! atomic store write and one flush, and only then are its writers answered and its
//! events published. Under load batches grow by themselves; idle, a lone write is flushed
//! at once. Because there is one writer, revisions are assigned without locks or retries.

use std::collections::HashMap;
use std::sync::Arc;

use syncline_proto::frame::encode_event;
use syncline_proto::ids::{is_sid, make_sid, validate_unique_name};
use syncline_proto::{DocumentInfo, ErrorCode, Event, Limits, ObjectKind, Reason, WireError};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error};

use crate::fanout::Hub;
use crate::objects::{self, document, WriteContext};
use crate::store::{LogEntry, ObjectRecord, ObjectWrite, Store, StoreError};

/// Most writes applied in one batch (one flush).
const MAX_BATCH: usize = 1024;
/// Writes waiting for the committer; past this, writers wait (back-pressure).
const QUEUE_DEPTH: usize = 8192;

#[derive(Debug, Clone)]
pub enum WriteOp {
    DocSet {
        document: String,
        data: String,
        if_match: Option<u64>,
        ttl: Option<u64>,
    },
    DocUpdate {
        document: String,
        data: String,
        if_match: Option<u64>,
    },
    DocDelete {
        document: String,
        if_match: Option<u64>,
    },
    /// Deletes the object if (and only if) it has expired: the reaper's request.
    Expire { object_sid: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    Document(DocumentInfo),
    Deleted {
        sid: String,
        revision: u64,
    },
    /// Nothing to do (an `Expire` for an object that is gone or was renewed).
    Unchanged,
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
}

impl Committer {
    /// Starts the commit task. It ends when every `Committer` clone is dropped, after
    /// committing what was queued.
    pub fn start(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        limits: Limits,
    ) -> (Committer, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let task = tokio::spawn(run(rx, store, hub, limits));
        (Committer { tx }, task)
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

async fn run(
    mut rx: mpsc::Receiver<Pending>,
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    limits: Limits,
) {
    let mut queued = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut queued, MAX_BATCH).await > 0 {
        let mut batch = Batch::new(&*store);
        let results: Vec<_> = {
            let mut results = Vec::with_capacity(queued.len());
            for p in &queued {
                results.push(batch.apply(&p.ctx, &p.op, &limits).await);
            }
            results
        };
        let size = queued.len();
        match store.apply(batch.writes).await {
            Ok(()) => {
                for e in &batch.events {
                    hub.publish(&e.object_sid, e.revision, &e.body, e.ends);
                }
                for (p, r) in queued.drain(..).zip(results) {
                    let _ = p.reply.send(r);
                }
                debug!(size, "batch committed");
            }
            Err(e) => {
                error!(error = %e, size, "batch commit failed; writes refused");
                for p in queued.drain(..) {
                    let _ = p.reply.send(Err(WireError::internal(
                        "storage failed to commit the write",
                    )));
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
    objects: HashMap<(String, String), Option<ObjectRecord>>,
    names: HashMap<(String, String), Option<String>>,
    writes: Vec<ObjectWrite>,
    events: Vec<Published>,
}

fn storage(e: StoreError) -> WireError {
    error!(error = %e, "storage read failed");
    WireError::internal("storage read failed")
}

impl<'a> Batch<'a> {
    fn new(store: &'a dyn Store) -> Self {
        Batch {
            store,
            objects: HashMap::new(),
            names: HashMap::new(),
            writes: Vec::new(),
            events: Vec::new(),
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
                let system = WriteContext {
                    actor: objects::SYSTEM_ACTOR.into(),
                    origin: 0,
                    ..ctx.clone()
                };
                let event = objects::removed_event(&r, &system, Reason::Expired);
                self.record(Some(r), None, event);
                Ok(None)
            }
            other => Ok(other),
        }
    }

    /// Adds one object change and its event to the batch.
    fn record(&mut self, before: Option<ObjectRecord>, after: Option<ObjectRecord>, event: Event) {
        let Some(any) = after.as_ref().or(before.as_ref()) else {
            return;
        };
        let service = any.service_sid.clone();
        let sid = any.sid.clone();
        if let Some(name) = before.as_ref().and_then(|b| b.unique_name.clone()) {
            self.names.insert((service.clone(), name), None);
        }
        if let Some(name) = after.as_ref().and_then(|a| a.unique_name.clone()) {
            self.names
                .insert((service.clone(), name), Some(sid.clone()));
        }
        self.objects.insert((service, sid.clone()), after.clone());
        let body = encode_event(&event);
        let ends = after.is_none();
        self.writes.push(ObjectWrite {
            before,
            log: after.as_ref().map(|_| LogEntry {
                revision: event.revision,
                event: body.clone(),
            }),
            after,
        });
        self.events.push(Published {
            object_sid: sid,
            revision: event.revision,
            body,
            ends,
        });
    }

    async fn apply(
        &mut self,
        ctx: &WriteContext,
        op: &WriteOp,
        limits: &Limits,
    ) -> Result<WriteOutcome, WireError> {
        match op {
            WriteOp::DocSet {
                document,
                data,
                if_match,
                ttl,
            } => {
                let current = self.load(ctx, document).await?;
                if current.is_none() {
                    if is_sid(document) {
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
                    *ttl,
                    ctx,
                    limits,
                )?;
                let info = document::info(&next);
                self.record(current, Some(next), event);
                Ok(WriteOutcome::Document(info))
            }
            WriteOp::DocUpdate {
                document,
                data,
                if_match,
            } => {
                let current = self
                    .load(ctx, document)
                    .await?
                    .ok_or_else(|| WireError::not_found("document"))?;
                let (next, event) = document::update(&current, data, *if_match, ctx, limits)?;
                let info = document::info(&next);
                self.record(Some(current), Some(next), event);
                Ok(WriteOutcome::Document(info))
            }
            WriteOp::DocDelete { document, if_match } => {
                let current = self
                    .load(ctx, document)
                    .await?
                    .ok_or_else(|| WireError::not_found("document"))?;
                document::delete(&current, *if_match)?;
                let event = objects::removed_event(&current, ctx, Reason::Write);
                let outcome = WriteOutcome::Deleted {
                    sid: current.sid.clone(),
                    revision: event.revision,
                };
                self.record(Some(current), None, event);
                Ok(outcome)
            }
            WriteOp::Expire { object_sid } => {
                // `load` removes the object if it has expired; otherwise nothing changes.
                self.load(ctx, object_sid).await?;
                Ok(WriteOutcome::Unchanged)
            }
        }
    }
}

/// A fresh random sid for a new object.
pub fn new_sid(kind: ObjectKind) -> String {
    make_sid(kind.prefix(), rand::random())
}
