//! Subscriptions to any kind of object: the event stream of one object, applied to a
//! local replica before each event is returned, so that after every event the replica
//! equals the server's state (for a list: its items from the window's start on).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use serde_json::Value;
use syncline_proto::{
    ErrorCode, Event, EventKind, ItemKey, ObjectKind, ObjectState, Reason, Request, Response,
    WireError,
};
use tokio::sync::mpsc;
use tracing::debug;

use crate::client::Client;
use crate::link::Link;
use crate::offline::Known;
use crate::replica::{parse, CollectionReplica, DocumentState, Item, Replica};
use crate::{unexpected, Error, Result};

/// What happened to a subscribed object.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncEvent {
    /// The object's revision after the change (for stream messages: the stream's).
    pub revision: u64,
    /// Caused by a request on this very connection.
    pub is_local: bool,
    /// Identity that caused it (`system` for the backend and the server).
    pub actor: String,
    /// What changed.
    pub kind: SyncEventKind,
}

/// The kinds of change an event carries.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncEventKind {
    /// The replica was replaced by the server's whole state (first event, or a resync).
    Snapshot,
    /// A document's new value.
    DocumentUpdated {
        /// The value after the change.
        data: Value,
        /// The value before, if there was one.
        previous: Option<Value>,
    },
    /// An item was added.
    ItemAdded {
        /// The new item.
        item: Item,
    },
    /// An item changed.
    ItemUpdated {
        /// The item after the change.
        item: Item,
        /// Its value before.
        previous: Value,
    },
    /// An item was removed (or expired).
    ItemRemoved {
        /// Its key.
        key: ItemKey,
        /// Its last value.
        previous: Value,
        /// Why (`write`, `expired`, ...).
        reason: Reason,
    },
    /// A stream message; `missed` counts messages this subscriber did not get before it
    /// (after a resync, say).
    MessagePublished {
        /// The message.
        data: Value,
        /// Its sequence number (restarts at 1 with the server).
        sequence: u64,
        /// Messages this subscriber did not get just before this one.
        missed: u64,
    },
    /// A stream subscription came back after a lost connection (or a cut-off):
    /// `messages` were published meanwhile and not delivered (messages are never
    /// replayed). `None` when the server restarted meanwhile, so that the number is
    /// unknown. Never sent when nothing was missed.
    Missed {
        /// How many messages went by, when known.
        messages: Option<u64>,
    },
    /// The object is gone; the subscription has ended.
    Removed {
        /// Why (`write`, `expired`, ...).
        reason: Reason,
    },
    /// The server ended the subscription (access revoked, object gone).
    Ended(WireError),
}

impl SyncEventKind {
    /// The snake_case event name the CLI prints.
    pub fn name(&self) -> &'static str {
        match self {
            SyncEventKind::Snapshot => "snapshot",
            SyncEventKind::DocumentUpdated { .. } => "document_updated",
            SyncEventKind::ItemAdded { .. } => "item_added",
            SyncEventKind::ItemUpdated { .. } => "item_updated",
            SyncEventKind::ItemRemoved { .. } => "item_removed",
            SyncEventKind::MessagePublished { .. } => "message_published",
            SyncEventKind::Missed { .. } => "missed",
            SyncEventKind::Removed { .. } => "object_removed",
            SyncEventKind::Ended(_) => "subscription_ended",
        }
    }
}

/// How to subscribe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Only what came after this revision (or a snapshot if it is no longer known).
    pub since: Option<u64>,
    /// Lists: how many of the newest items the snapshot carries (default 100).
    pub window: Option<u32>,
}

impl Client {
    /// Subscribes to any object by sid or unique name.
    pub async fn subscribe(&self, object: &str, options: SubscribeOptions) -> Result<Subscription> {
        self.subscribe_from(object, options, Replica::Empty).await
    }

    /// Resumes with a replica kept from an earlier subscription (or loaded with
    /// [`Replica::load`]): only what came after its revision is sent (or a snapshot).
    ///
    /// With [`ClientConfig::with_offline_writes`], a client that is not connected
    /// returns the subscription at once, holding `replica`, and resumes it once
    /// connected; meanwhile the replica gives queued writes their base. A refusal that
    /// resuming meets then (the object deleted, access lost) ends the subscription with
    /// `Ended` instead of failing this call. Without it (or for an empty replica, or
    /// through a handle with a deadline), this waits for the connection as every
    /// operation does.
    ///
    /// [`ClientConfig::with_offline_writes`]: crate::ClientConfig::with_offline_writes
    pub async fn resume(
        &self,
        object: &str,
        replica: Replica,
        window: Option<u32>,
    ) -> Result<Subscription> {
        let options = SubscribeOptions {
            since: replica.revision(),
            window,
        };
        // The replica's own sid is resumed, so a name that now belongs to a re-created
        // object is `NotFound` rather than a mix of the two objects.
        let sid = replica.sid().unwrap_or(object).to_owned();
        if self.queues_writes() && !self.core().connected() {
            if let Some(kind) = replica.kind() {
                return Ok(self.resume_offline(object, sid, kind, options, replica));
            }
        }
        self.subscribe_from(&sid, options, replica).await
    }

    /// A subscription holding `replica` that resumes once the client is connected.
    fn resume_offline(
        &self,
        object: &str,
        sid: String,
        kind: ObjectKind,
        options: SubscribeOptions,
        replica: Replica,
    ) -> Subscription {
        let known = self.track_replica(object, &sid, &replica);
        // A channel already ended: nothing arrives before the resubscription.
        let (_, events) = mpsc::channel(1);
        let offline = Opened {
            link: None,
            sub_id: 0,
            object_sid: sid,
            kind,
            events,
        };
        let mut sub = self.new_subscription(offline, options, replica, known);
        sub.start_reopen(None);
        sub
    }

    /// Shares a new subscription's revisions with the offline queue (when it is on).
    fn track_replica(
        &self,
        object: &str,
        sid: &str,
        replica: &Replica,
    ) -> Option<Arc<Mutex<Known>>> {
        let queue = self.offline()?;
        let mut known = Known {
            sid: sid.to_owned(),
            unique_name: (!syncline_proto::ids::is_sid(object)).then(|| object.to_owned()),
            ..Known::default()
        };
        known.reset(replica);
        let known = Arc::new(Mutex::new(known));
        queue.track(&known);
        Some(known)
    }

    async fn subscribe_from(
        &self,
        object: &str,
        options: SubscribeOptions,
        replica: Replica,
    ) -> Result<Subscription> {
        let link = self.link().await?;
        let opened = self.open_subscription(link, object, options).await?;
        let known = self.track_replica(object, &opened.object_sid, &replica);
        Ok(self.new_subscription(opened, options, replica, known))
    }

    /// A subscription at the start of its life, on `link` or (offline) on none yet.
    fn new_subscription(
        &self,
        opened: Opened,
        options: SubscribeOptions,
        replica: Replica,
        known: Option<Arc<Mutex<Known>>>,
    ) -> Subscription {
        Subscription {
            client: self.clone(),
            link: opened.link,
            sub_id: opened.sub_id,
            object_sid: opened.object_sid,
            kind: opened.kind,
            window: options.window,
            revision: options.since,
            events: opened.events,
            replica,
            building: None,
            last_sequence: None,
            resumed: false,
            reopening: None,
            ended: false,
            known,
        }
    }

    async fn open_subscription(
        &self,
        link: Arc<Link>,
        object: &str,
        options: SubscribeOptions,
    ) -> Result<Opened> {
        let sub_id = self.core().next_id();
        // Registered before asking, so no event can arrive unrouted.
        let events = link.register_subscription(sub_id)?;
        let answer = self
            .call_on(
                &link,
                Request::Subscribe {
                    sub_id,
                    object: object.to_owned(),
                    since: options.since,
                    window: options.window,
                },
            )
            .await;
        match answer {
            Ok(Response::Subscribed {
                object_sid, kind, ..
            }) => Ok(Opened {
                link: Some(link),
                sub_id,
                object_sid,
                kind,
                events,
            }),
            Ok(other) => {
                link.forget_subscription(sub_id);
                Err(unexpected(other))
            }
            Err(e) => {
                link.forget_subscription(sub_id);
                Err(e)
            }
        }
    }
}

/// A subscription open on one connection.
struct Opened {
    /// `None` for a subscription made offline, before its first connection.
    link: Option<Arc<Link>>,
    sub_id: u64,
    object_sid: String,
    kind: ObjectKind,
    events: mpsc::Receiver<Event>,
}

/// The wait between attempts to resubscribe when the server could not take the
/// subscription (an answer that timed out, a connection lost during the request).
const REOPEN_RETRY: Duration = Duration::from_millis(500);

/// A live subscription. Events come in revision order, each applied to the replica
/// before it is returned. Dropping it unsubscribes.
///
/// It survives lost connections: when the client has reconnected, it resubscribes from
/// the revision it had reached, so the missed changes arrive in order (or, when the
/// server no longer has them, as one `Snapshot`), never twice and never with a gap.
/// A stream subscription reports what it missed with [`SyncEventKind::Missed`].
/// It is a `futures::Stream` of `Result<SyncEvent>` too.
///
/// ```no_run
/// # async fn demo(client: syncline_client::Client) -> Result<(), syncline_client::Error> {
/// let mut sub = client.map("roster").subscribe().await?;
/// while let Some(event) = sub.next().await {
///     let event = event?;
///     let items = sub.collection().map_or(0, |c| c.items.len());
///     println!("{} at revision {}: {items} items", event.kind.name(), event.revision);
/// }
/// # Ok(()) }
/// ```
pub struct Subscription {
    client: Client,
    /// The connection this subscription is open on (`None`: resumed while offline, not
    /// yet open anywhere).
    link: Option<Arc<Link>>,
    sub_id: u64,
    object_sid: String,
    kind: ObjectKind,
    window: Option<u32>,
    /// The object revision delivered so far (what a resubscription asks to continue
    /// from); for a replica built from a snapshot, its revision.
    revision: Option<u64>,
    events: mpsc::Receiver<Event>,
    replica: Replica,
    /// A collection snapshot arriving in chunks; it replaces the replica when complete.
    building: Option<Replica>,
    last_sequence: Option<u64>,
    /// Resubscribed since the last snapshot: a stream's next snapshot says what was missed.
    resumed: bool,
    /// A resubscription under way (after a lost connection or a cut-off).
    reopening: Option<Pin<Box<dyn Future<Output = Result<Opened>> + Send>>>,
    ended: bool,
    /// The replica's revisions, shared with the client for offline writes' bases (with
    /// `offline_writes` only).
    known: Option<Arc<Mutex<Known>>>,
}

impl Subscription {
    /// The subscribed object's sid.
    pub fn object_sid(&self) -> &str {
        &self.object_sid
    }

    /// The subscribed object's kind.
    pub fn kind(&self) -> ObjectKind {
        self.kind
    }

    /// The local copy, equal to the server's state as of the last event returned.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// Streams: the sequence of the last message seen (or, after the snapshot, of the
    /// stream's last message before this subscription).
    pub fn last_sequence(&self) -> Option<u64> {
        self.last_sequence
    }

    /// The replica of a subscribed document.
    pub fn document(&self) -> Option<&DocumentState> {
        match &self.replica {
            Replica::Document(d) => Some(d),
            _ => None,
        }
    }

    /// The replica of a subscribed list or map.
    pub fn collection(&self) -> Option<&CollectionReplica> {
        match &self.replica {
            Replica::List(c) | Replica::Map(c) => Some(c),
            _ => None,
        }
    }

    /// The next event; `None` once the subscription has ended. While the client is
    /// reconnecting this waits; if the client is denied or closed, the subscription
    /// ends with that error.
    pub async fn next(&mut self) -> Option<Result<SyncEvent>> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<SyncEvent>>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            if let Some(reopening) = self.reopening.as_mut() {
                let result = ready!(reopening.as_mut().poll(cx));
                self.reopening = None;
                match result {
                    Ok(opened) => {
                        debug!(
                            object = %self.object_sid,
                            since = ?self.revision,
                            "subscription resumed"
                        );
                        self.link = opened.link;
                        self.sub_id = opened.sub_id;
                        self.events = opened.events;
                        self.resumed = true;
                        continue;
                    }
                    Err(e) => match e {
                        // The object is gone or no longer readable.
                        Error::Server(w)
                            if matches!(w.code, ErrorCode::NotFound | ErrorCode::Forbidden) =>
                        {
                            self.ended = true;
                            return Poll::Ready(Some(Ok(SyncEvent {
                                revision: self.revision.unwrap_or(0),
                                is_local: false,
                                actor: crate::SYSTEM_ACTOR.into(),
                                kind: SyncEventKind::Ended(w),
                            })));
                        }
                        e if self.client.is_closed() => {
                            self.ended = true;
                            return Poll::Ready(Some(Err(e)));
                        }
                        e => {
                            debug!(error = %e, "resubscribing failed; trying again");
                            self.start_reopen(Some(REOPEN_RETRY));
                            continue;
                        }
                    },
                }
            }
            match ready!(self.events.poll_recv(cx)) {
                Some(event) => match self.apply(event) {
                    Ok(Some(e)) => return Poll::Ready(Some(Ok(e))),
                    Ok(None) => continue,
                    Err(e) => return Poll::Ready(Some(Err(e))),
                },
                // The connection is gone, or this subscription was cut off for falling
                // behind its buffer (see the connection's event reader): resubscribe
                // from the revision reached, which replays what was missed or sends a
                // snapshot.
                None => self.start_reopen(None),
            }
        }
    }

    /// Starts resubscribing (after `delay`), on the same connection if it is still
    /// open, else on the next one the client makes.
    fn start_reopen(&mut self, delay: Option<Duration>) {
        let client = self.client.clone();
        let old_link = self.link.take();
        let old_sub = self.sub_id;
        if let Some(l) = &old_link {
            l.forget_subscription(old_sub);
        }
        let object = self.object_sid.clone();
        let options = SubscribeOptions {
            since: if self.kind == ObjectKind::Stream {
                None
            } else {
                self.revision
            },
            window: self.window,
        };
        // A snapshot still being assembled is abandoned; the new one replaces it.
        self.building = None;
        self.reopening = Some(Box::pin(async move {
            if let Some(old_link) = old_link.as_ref().filter(|l| !l.is_closed()) {
                let _ = client
                    .call_on(old_link, Request::Unsubscribe { sub_id: old_sub })
                    .await;
            }
            drop(old_link);
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            // Waits as long as the client keeps trying; a terminal state fails here.
            let link = client.core().wait_link(None).await?;
            client.open_subscription(link, &object, options).await
        }));
    }

    /// Applies one event; `None` for a snapshot chunk that is not the last.
    fn apply(&mut self, e: Event) -> Result<Option<SyncEvent>> {
        // Origins are connection ids, so "local" means this subscription's connection.
        let is_local = e.origin != 0
            && self
                .link
                .as_ref()
                .is_some_and(|l| e.origin == l.welcome.connection_id);
        let revision = e.revision;
        let kind = match e.kind {
            EventKind::Snapshot { state } => match state {
                ObjectState::Document(d) => {
                    self.replica = Replica::Document(d.try_into()?);
                    self.resumed = false;
                    self.track(|k, r| k.reset(r));
                    SyncEventKind::Snapshot
                }
                ObjectState::List { info, window_start } => {
                    self.building = Some(Replica::List(CollectionReplica {
                        info,
                        window_start,
                        items: BTreeMap::new(),
                    }));
                    return Ok(None);
                }
                ObjectState::Map { info } => {
                    self.building = Some(Replica::Map(CollectionReplica {
                        info,
                        window_start: 0,
                        items: BTreeMap::new(),
                    }));
                    return Ok(None);
                }
                ObjectState::Stream { info, sequence } => {
                    self.replica = Replica::Stream(info);
                    let last = self.last_sequence.replace(sequence);
                    if std::mem::take(&mut self.resumed) {
                        // Messages are not replayed: say what went by while away.
                        let missed = match last {
                            Some(last) if sequence >= last => Some(sequence - last),
                            // The server restarted (sequences start again at 1):
                            // how many were lost before the restart is unknown.
                            Some(_) => None,
                            None => Some(sequence),
                        };
                        if missed == Some(0) {
                            return Ok(None);
                        }
                        SyncEventKind::Missed { messages: missed }
                    } else {
                        SyncEventKind::Snapshot
                    }
                }
            },
            EventKind::SnapshotItems { items, done } => {
                let Some(c) = self.building.as_mut().and_then(Replica::collection) else {
                    return Err(Error::Protocol("snapshot items without a snapshot".into()));
                };
                for i in items {
                    let item = Item::try_from(i)?;
                    c.items.insert(item.key.clone(), item);
                }
                if !done {
                    return Ok(None);
                }
                self.replica = self.building.take().unwrap_or(Replica::Empty);
                self.resumed = false;
                self.track(|k, r| k.reset(r));
                SyncEventKind::Snapshot
            }
            EventKind::DocumentUpdated {
                data,
                previous,
                date_updated,
            } => {
                let data = parse(&data)?;
                let mut replaced = None;
                if let Replica::Document(d) = &mut self.replica {
                    let in_order = d.revision + 1 == revision;
                    let old = std::mem::replace(&mut d.data, data.clone());
                    replaced = in_order.then_some(old);
                    d.revision = revision;
                    d.date_updated = date_updated;
                }
                // A replica one revision behind holds the previous value already: the
                // wire's copy is parsed only when it does not (the costliest step of an
                // event, under fan-out).
                let previous = match (previous, replaced) {
                    (None, _) => None,
                    (Some(_), Some(old)) => Some(old),
                    (Some(text), None) => Some(parse(&text)?),
                };
                self.track(|k, _| k.revision = Some(revision));
                SyncEventKind::DocumentUpdated { data, previous }
            }
            EventKind::ItemAdded { item } => {
                let item = Item::try_from(item)?;
                let _ = self.upsert(revision, &item);
                SyncEventKind::ItemAdded { item }
            }
            EventKind::ItemUpdated { item, previous } => {
                let item = Item::try_from(item)?;
                // As for documents: an in-order replica holding the item has its
                // previous value.
                let in_order = self
                    .replica
                    .collection()
                    .is_some_and(|c| c.info.revision + 1 == revision);
                let replaced = self.upsert(revision, &item).filter(|_| in_order);
                let previous = match replaced {
                    Some(old) => old.data,
                    None => parse(&previous)?,
                };
                SyncEventKind::ItemUpdated { item, previous }
            }
            EventKind::ItemRemoved {
                key,
                previous,
                reason,
            } => {
                if let Some(c) = self.replica.collection() {
                    c.items.remove(&key);
                    c.info.revision = revision;
                }
                self.track(|k, _| {
                    if let Some(items) = k.items.as_mut() {
                        items.remove(&key);
                    }
                    k.revision = Some(revision);
                });
                SyncEventKind::ItemRemoved {
                    key,
                    previous: parse(&previous)?,
                    reason,
                }
            }
            EventKind::MessagePublished { data, sequence } => {
                let missed = match self.last_sequence {
                    Some(last) if sequence > last => sequence - last - 1,
                    _ => 0,
                };
                self.last_sequence = Some(sequence);
                SyncEventKind::MessagePublished {
                    data: parse(&data)?,
                    sequence,
                    missed,
                }
            }
            EventKind::ObjectRemoved { reason } => {
                self.ended = true;
                self.replica = Replica::Empty;
                self.track(|k, _| k.removed = true);
                SyncEventKind::Removed { reason }
            }
            EventKind::SubscriptionEnded { error } => {
                self.ended = true;
                SyncEventKind::Ended(error)
            }
        };
        if self.kind != ObjectKind::Stream {
            self.revision = Some(revision);
        }
        Ok(Some(SyncEvent {
            revision,
            is_local,
            actor: e.actor,
            kind,
        }))
    }

    /// Puts an added or updated item into a collection replica (idempotent); returns
    /// the item it replaced.
    fn upsert(&mut self, revision: u64, item: &Item) -> Option<Item> {
        let mut held = false;
        let mut replaced = None;
        if let Some(c) = self.replica.collection() {
            held = c.holds(&item.key);
            if held {
                replaced = c.items.insert(item.key.clone(), item.clone());
            }
            c.info.revision = revision;
            c.info.date_updated = item.date_updated;
        }
        self.track(|k, _| {
            if let Some(items) = k.items.as_mut().filter(|_| held) {
                items.insert(item.key.clone(), item.revision);
            }
            k.revision = Some(revision);
        });
        replaced
    }

    /// Keeps the client's view of this replica's revisions current (offline writes).
    fn track(&self, f: impl FnOnce(&mut Known, &Replica)) {
        if let Some(known) = &self.known {
            if let Ok(mut k) = known.lock() {
                f(&mut k, &self.replica);
            }
        }
    }
}

impl futures_core::Stream for Subscription {
    type Item = Result<SyncEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_event(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(link) = self.link.take() else {
            return;
        };
        link.forget_subscription(self.sub_id);
        if self.ended || self.reopening.is_some() || link.is_closed() {
            return;
        }
        let client = self.client.clone();
        let sub_id = self.sub_id;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = client.call_on(&link, Request::Unsubscribe { sub_id }).await;
            });
        }
    }
}
