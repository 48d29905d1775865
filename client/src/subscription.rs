//! Subscriptions to any kind of object: the event stream of one object, applied to a
//! local replica before each event is returned, so that after every event the replica
//! equals the server's state (for a list: its items from the window's start on).

use std::collections::BTreeMap;

use serde_json::Value;
use syncline_proto::{
    Event, EventKind, ItemInfo, ItemKey, ObjectInfo, ObjectKind, ObjectState, Reason, Request,
    Response, WireError,
};
use tokio::sync::mpsc;

use crate::connection::unexpected;
use crate::document::DocumentState;
use crate::{Client, Error, Result};

pub(crate) fn parse(s: &str) -> Result<Value> {
    serde_json::from_str(s).map_err(|e| Error::Protocol(format!("server sent invalid JSON: {e}")))
}

/// A list or map item. `revision` is the object revision at which it last changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub key: ItemKey,
    pub revision: u64,
    pub data: Value,
    pub created_by: String,
    pub date_created: u64,
    pub date_updated: u64,
    pub date_expires: Option<u64>,
}

impl TryFrom<ItemInfo> for Item {
    type Error = Error;
    fn try_from(i: ItemInfo) -> Result<Self> {
        Ok(Item {
            data: parse(&i.data)?,
            key: i.key,
            revision: i.revision,
            created_by: i.created_by,
            date_created: i.date_created,
            date_updated: i.date_updated,
            date_expires: i.date_expires,
        })
    }
}

/// A list's or map's local copy.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionReplica {
    pub info: ObjectInfo,
    /// Lists: the replica holds the items with index >= this (the newest N at subscribe
    /// time, and everything pushed since). Maps: 0, all items.
    pub window_start: u64,
    pub items: BTreeMap<ItemKey, Item>,
}

impl CollectionReplica {
    fn holds(&self, key: &ItemKey) -> bool {
        match key {
            ItemKey::Index(i) => *i >= self.window_start,
            ItemKey::Key(_) => true,
        }
    }
}

/// The local copy of a subscribed object.
#[derive(Debug, Clone, PartialEq)]
pub enum Replica {
    /// Nothing yet (resumed from a bare revision, before any snapshot), or removed.
    Empty,
    Document(DocumentState),
    List(CollectionReplica),
    Map(CollectionReplica),
    /// Streams keep no state; this is the stream's metadata.
    Stream(ObjectInfo),
}

impl Replica {
    /// The revision the replica is at, if it has one.
    pub fn revision(&self) -> Option<u64> {
        match self {
            Replica::Empty => None,
            Replica::Document(d) => Some(d.revision),
            Replica::List(c) | Replica::Map(c) => Some(c.info.revision),
            Replica::Stream(i) => Some(i.revision),
        }
    }

    /// The sid of the replicated object, if there is a replica.
    pub fn sid(&self) -> Option<&str> {
        match self {
            Replica::Empty => None,
            Replica::Document(d) => Some(&d.sid),
            Replica::List(c) | Replica::Map(c) => Some(&c.info.sid),
            Replica::Stream(i) => Some(&i.sid),
        }
    }

    fn collection(&mut self) -> Option<&mut CollectionReplica> {
        match self {
            Replica::List(c) | Replica::Map(c) => Some(c),
            _ => None,
        }
    }
}

/// What happened to a subscribed object.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncEvent {
    /// The object's revision after the change (for stream messages: the stream's).
    pub revision: u64,
    /// Caused by a request on this very connection.
    pub is_local: bool,
    /// Identity that caused it (`system` for the backend and the server).
    pub actor: String,
    pub kind: SyncEventKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SyncEventKind {
    /// The replica was replaced by the server's whole state (first event, or a resync).
    Snapshot,
    DocumentUpdated {
        data: Value,
        previous: Option<Value>,
    },
    ItemAdded {
        item: Item,
    },
    ItemUpdated {
        item: Item,
        previous: Value,
    },
    ItemRemoved {
        key: ItemKey,
        previous: Value,
        reason: Reason,
    },
    /// A stream message; `missed` counts messages this subscriber did not get before it
    /// (after a resync, say).
    MessagePublished {
        data: Value,
        sequence: u64,
        missed: u64,
    },
    /// The object is gone; the subscription has ended.
    Removed {
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

    /// Resumes with a replica kept from an earlier subscription: only what came after its
    /// revision is sent (or a snapshot).
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
        self.subscribe_from(&sid, options, replica).await
    }

    async fn subscribe_from(
        &self,
        object: &str,
        options: SubscribeOptions,
        replica: Replica,
    ) -> Result<Subscription> {
        let (sub_id, object_sid, kind, events) = self.open_subscription(object, options).await?;
        Ok(Subscription {
            client: self.clone(),
            sub_id,
            object_sid,
            kind,
            window: options.window,
            events,
            replica,
            building: None,
            last_sequence: None,
            ended: false,
        })
    }

    async fn open_subscription(
        &self,
        object: &str,
        options: SubscribeOptions,
    ) -> Result<(u64, String, ObjectKind, mpsc::Receiver<Event>)> {
        let sub_id = self.next_sub_id();
        // Registered before asking, so no event can arrive unrouted.
        let events = self.register_subscription(sub_id)?;
        let answer = self
            .call(Request::Subscribe {
                sub_id,
                object: object.to_owned(),
                since: options.since,
                window: options.window,
            })
            .await;
        match answer {
            Ok(Response::Subscribed {
                object_sid, kind, ..
            }) => Ok((sub_id, object_sid, kind, events)),
            Ok(other) => {
                self.forget_subscription(sub_id);
                Err(unexpected(other))
            }
            Err(e) => {
                self.forget_subscription(sub_id);
                Err(e)
            }
        }
    }
}

/// A live subscription. Events come in revision order, each applied to the replica
/// before it is returned. Dropping it unsubscribes.
pub struct Subscription {
    client: Client,
    sub_id: u64,
    object_sid: String,
    kind: ObjectKind,
    window: Option<u32>,
    events: mpsc::Receiver<Event>,
    replica: Replica,
    /// A collection snapshot arriving in chunks; it replaces the replica when complete.
    building: Option<Replica>,
    last_sequence: Option<u64>,
    ended: bool,
}

impl Subscription {
    pub fn object_sid(&self) -> &str {
        &self.object_sid
    }

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

    /// The next event; `None` once the subscription has ended or the connection is gone
    /// (the first `None` after a lost connection comes as an error saying why).
    pub async fn next(&mut self) -> Option<Result<SyncEvent>> {
        loop {
            if self.ended {
                return None;
            }
            // Events already received are returned first; after that, a closed
            // connection ends the subscription even if its router is gone.
            let event = tokio::select! {
                biased;
                e = self.events.recv() => e,
                _ = self.client.connection_closed() => None,
            };
            let Some(event) = event else {
                if self.client.is_closed() {
                    self.ended = true;
                    return Some(Err(self.client.closed_or_lost()));
                }
                // Cut off for falling behind its buffer (see the connection's event
                // reader): resubscribe from the replica's revision, which replays what
                // was missed or sends a snapshot.
                if let Err(e) = self.reopen().await {
                    self.ended = true;
                    return Some(Err(e));
                }
                continue;
            };
            match self.apply(event) {
                Ok(Some(e)) => return Some(Ok(e)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    async fn reopen(&mut self) -> Result<()> {
        let old = self.sub_id;
        let client = self.client.clone();
        tokio::spawn(async move {
            let _ = client.call(Request::Unsubscribe { sub_id: old }).await;
        });
        let options = SubscribeOptions {
            since: self.replica.revision(),
            window: self.window,
        };
        // A snapshot still being assembled is abandoned; the new one replaces it.
        self.building = None;
        let (sub_id, _, _, events) = self
            .client
            .open_subscription(&self.object_sid, options)
            .await?;
        self.sub_id = sub_id;
        self.events = events;
        Ok(())
    }

    /// Applies one event; `None` for a snapshot chunk that is not the last.
    fn apply(&mut self, e: Event) -> Result<Option<SyncEvent>> {
        let is_local = e.origin == self.client.welcome().connection_id;
        let revision = e.revision;
        let kind = match e.kind {
            EventKind::Snapshot { state } => match state {
                ObjectState::Document(d) => {
                    self.replica = Replica::Document(d.try_into()?);
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
                    self.last_sequence = Some(sequence);
                    SyncEventKind::Snapshot
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
                SyncEventKind::Snapshot
            }
            EventKind::DocumentUpdated {
                data,
                previous,
                date_updated,
            } => {
                let data = parse(&data)?;
                let previous = previous.as_deref().map(parse).transpose()?;
                if let Replica::Document(d) = &mut self.replica {
                    d.data = data.clone();
                    d.revision = revision;
                    d.date_updated = date_updated;
                }
                SyncEventKind::DocumentUpdated { data, previous }
            }
            EventKind::ItemAdded { item } => {
                let item = Item::try_from(item)?;
                self.upsert(revision, &item);
                SyncEventKind::ItemAdded { item }
            }
            EventKind::ItemUpdated { item, previous } => {
                let item = Item::try_from(item)?;
                self.upsert(revision, &item);
                SyncEventKind::ItemUpdated {
                    item,
                    previous: parse(&previous)?,
                }
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
                SyncEventKind::Removed { reason }
            }
            EventKind::SubscriptionEnded { error } => {
                self.ended = true;
                SyncEventKind::Ended(error)
            }
        };
        Ok(Some(SyncEvent {
            revision,
            is_local,
            actor: e.actor,
            kind,
        }))
    }

    /// Puts an added or updated item into a collection replica (idempotent).
    fn upsert(&mut self, revision: u64, item: &Item) {
        if let Some(c) = self.replica.collection() {
            if c.holds(&item.key) {
                c.items.insert(item.key.clone(), item.clone());
            }
            c.info.revision = revision;
            c.info.date_updated = item.date_updated;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.client.forget_subscription(self.sub_id);
        if self.ended {
            return;
        }
        let client = self.client.clone();
        let sub_id = self.sub_id;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = client.call(Request::Unsubscribe { sub_id }).await;
            });
        }
    }
}
