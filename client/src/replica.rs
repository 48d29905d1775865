//! The local copy of an object and the values it holds: [`Replica`], [`DocumentState`],
//! [`CollectionReplica`] and [`Item`], each built from the wire's form. Pure data, no
//! IO: subscriptions keep replicas current, the offline queue reads bases from them,
//! and `persist.rs` keeps them in files.

use std::collections::BTreeMap;

use serde_json::Value;
use syncline_proto::{DocumentInfo, ItemInfo, ItemKey, ObjectInfo, ObjectKind};

use crate::{Error, Result};

/// The wire carries JSON values as text, which the server has checked: text that does
/// not parse is the server's fault (`Protocol`), not the caller's.
pub(crate) fn parse(s: &str) -> Result<Value> {
    serde_json::from_str(s).map_err(|e| Error::Protocol(format!("server sent invalid JSON: {e}")))
}

/// A document as the server has it. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DocumentState {
    /// The document's sid (`ET…`).
    pub sid: String,
    /// Its unique name, if it has one.
    pub unique_name: Option<String>,
    /// Starts at 0, +1 per change.
    pub revision: u64,
    /// The JSON value.
    pub data: Value,
    /// Identity that created it (`system` for the backend).
    pub created_by: String,
    /// Creation time.
    pub date_created: u64,
    /// Last change.
    pub date_updated: u64,
    /// Expiry time, if it has a TTL.
    pub date_expires: Option<u64>,
}

impl TryFrom<DocumentInfo> for DocumentState {
    type Error = Error;
    fn try_from(d: DocumentInfo) -> Result<Self> {
        Ok(DocumentState {
            data: parse(&d.data)?,
            sid: d.sid,
            unique_name: d.unique_name,
            revision: d.revision,
            created_by: d.created_by,
            date_created: d.date_created,
            date_updated: d.date_updated,
            date_expires: d.date_expires,
        })
    }
}

/// A list or map item. `revision` is the object revision at which it last changed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Item {
    /// Index (lists) or key (maps).
    pub key: ItemKey,
    /// The object revision at which it last changed.
    pub revision: u64,
    /// The item's JSON value.
    pub data: Value,
    /// Identity that created it (`system` for the backend).
    pub created_by: String,
    /// Creation time, Unix milliseconds.
    pub date_created: u64,
    /// Last change, Unix milliseconds.
    pub date_updated: u64,
    /// Expiry time, Unix milliseconds, if it has a TTL.
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
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CollectionReplica {
    /// The object's metadata as of the replica's revision.
    pub info: ObjectInfo,
    /// Lists: the replica holds the items with index >= this (the newest N at subscribe
    /// time, and everything pushed since). Maps: 0, all items.
    pub window_start: u64,
    /// The items held, by key.
    #[serde(with = "items_as_list")]
    pub items: BTreeMap<ItemKey, Item>,
}

impl CollectionReplica {
    pub(crate) fn holds(&self, key: &ItemKey) -> bool {
        match key {
            ItemKey::Index(i) => *i >= self.window_start,
            ItemKey::Key(_) => true,
        }
    }
}

/// The local copy of a subscribed object. [`Replica::save`] and [`Replica::load`] keep
/// it in a file across restarts; [`Client::resume`] continues from it.
///
/// [`Client::resume`]: crate::Client::resume
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Replica {
    /// Nothing yet (resumed from a bare revision, before any snapshot), or removed.
    Empty,
    /// A document's state.
    Document(DocumentState),
    /// A list's window of items.
    List(CollectionReplica),
    /// A map's items.
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

    /// The replicated object's kind, if there is a replica.
    pub fn kind(&self) -> Option<ObjectKind> {
        match self {
            Replica::Empty => None,
            Replica::Document(_) => Some(ObjectKind::Document),
            Replica::List(_) => Some(ObjectKind::List),
            Replica::Map(_) => Some(ObjectKind::Map),
            Replica::Stream(_) => Some(ObjectKind::Stream),
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

    pub(crate) fn collection(&mut self) -> Option<&mut CollectionReplica> {
        match self {
            Replica::List(c) | Replica::Map(c) => Some(c),
            _ => None,
        }
    }
}

/// Items travel as a list: JSON object keys must be strings, and a list or map item's
/// key is an index or a string; each item carries its key anyway.
mod items_as_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};
    use syncline_proto::ItemKey;

    use super::Item;

    pub(super) fn serialize<S: Serializer>(
        items: &BTreeMap<ItemKey, Item>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(items.values())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<BTreeMap<ItemKey, Item>, D::Error> {
        let items = Vec::<Item>::deserialize(d)?;
        Ok(items.into_iter().map(|i| (i.key.clone(), i)).collect())
    }
}
