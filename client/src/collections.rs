//! Lists, maps and message streams. Lists and maps share one implementation over
//! [`ItemKey`]; `List` and `Map` only fix the key's shape.

use serde_json::Value;
use syncline_proto::{ItemKey, ObjectInfo, ObjectKind, Order, Request, Response, WrittenValue};

use crate::client::Client;
use crate::document::{written, WriteOptions, Written};
use crate::replica::Item;
use crate::subscription::{SubscribeOptions, Subscription};
use crate::{unexpected, Result};

/// One page of items and where the next one starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The items of this page, in the page's order.
    pub items: Vec<Item>,
    /// Pass as `from` to get the next page; `None` on the last page.
    pub next: Option<ItemKey>,
}

/// Which items a page holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageOptions {
    /// First key of the page (inclusive); `None`: from the first (or, descending, the last).
    pub from: Option<ItemKey>,
    /// Ascending (default) or descending key order.
    pub order: Order,
    /// 1..=1000; 0 means 100.
    pub limit: u32,
}

impl Client {
    /// Creates an object of `kind`, optionally named and expiring.
    pub async fn create(
        &self,
        kind: ObjectKind,
        unique_name: Option<&str>,
        ttl: Option<u64>,
    ) -> Result<ObjectInfo> {
        object(
            self.write(Request::Create {
                kind,
                unique_name: unique_name.map(str::to_owned),
                ttl,
            })
            .await?,
        )
    }

    /// Changes only the time to live (seconds from now, 0: none) of an object, or of one
    /// list or map item (`key`): its data stays, no revision is made and no event sent.
    /// Needs the connection: it is never queued as an offline write. The handles'
    /// `set_ttl` and `set_item_ttl` call this.
    pub async fn set_ttl(
        &self,
        kind: ObjectKind,
        object: &str,
        key: Option<ItemKey>,
        ttl: u64,
    ) -> Result<()> {
        match self
            .call(Request::SetTtl {
                kind,
                object: object.to_owned(),
                key,
                ttl,
            })
            .await?
        {
            Response::Object(_) | Response::Written(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Any object's metadata, by sid or unique name.
    pub async fn fetch(&self, object_ref: &str) -> Result<ObjectInfo> {
        object(
            self.call(Request::Fetch {
                object: object_ref.to_owned(),
            })
            .await?,
        )
    }

    /// Deletes any object (and its items); returns its final revision.
    pub async fn delete(&self, object_ref: &str) -> Result<u64> {
        self.delete_with(object_ref, WriteOptions::default()).await
    }

    /// `delete` with options (`if_match` on the object's revision).
    pub async fn delete_with(&self, object_ref: &str, options: WriteOptions) -> Result<u64> {
        deleted(
            self.write(Request::Delete {
                kind: None,
                object: object_ref.to_owned(),
                if_match: options.without_ttl("delete")?,
            })
            .await?,
        )
    }

    /// A handle on a list, by unique name or sid (no IO until used).
    pub fn list(&self, name_or_sid: &str) -> List {
        List(Items::new(self, ObjectKind::List, name_or_sid))
    }

    /// A handle on a map, by unique name or sid (no IO until used).
    pub fn map(&self, name_or_sid: &str) -> Map {
        Map(Items::new(self, ObjectKind::Map, name_or_sid))
    }

    /// A handle on a message stream, by unique name or sid (no IO until used).
    pub fn stream(&self, name_or_sid: &str) -> Stream {
        Stream {
            client: self.clone(),
            reference: name_or_sid.to_owned(),
        }
    }
}

fn object(r: Response) -> Result<ObjectInfo> {
    match r {
        Response::Object(o) => Ok(o),
        other => Err(unexpected(other)),
    }
}

fn deleted(r: Response) -> Result<u64> {
    match r {
        Response::Deleted { revision, .. } => Ok(revision),
        other => Err(unexpected(other)),
    }
}

fn item(r: Response) -> Result<Item> {
    match r {
        Response::Item(i) => i.try_into(),
        other => Err(unexpected(other)),
    }
}

fn written_item(r: Response) -> Result<Written<Item>> {
    written(r, |v| match v {
        WrittenValue::Item(i) => i.try_into(),
        other => Err(crate::Error::Protocol(format!(
            "an item write answered with {other:?}"
        ))),
    })
}

/// The shared implementation of list and map handles.
#[derive(Clone)]
struct Items {
    client: Client,
    kind: ObjectKind,
    reference: String,
}

impl Items {
    fn new(client: &Client, kind: ObjectKind, reference: &str) -> Self {
        Items {
            client: client.clone(),
            kind,
            reference: reference.to_owned(),
        }
    }

    async fn create(&self, ttl: Option<u64>) -> Result<ObjectInfo> {
        self.client
            .create(self.kind, Some(&self.reference), ttl)
            .await
    }

    async fn set_ttl(&self, key: Option<ItemKey>, ttl: u64) -> Result<()> {
        self.client
            .set_ttl(self.kind, &self.reference, key, ttl)
            .await
    }

    async fn info(&self) -> Result<ObjectInfo> {
        self.client.fetch(&self.reference).await
    }

    async fn delete(&self, options: WriteOptions) -> Result<u64> {
        deleted(
            self.client
                .write(Request::Delete {
                    kind: Some(self.kind),
                    object: self.reference.clone(),
                    if_match: options.without_ttl("delete")?,
                })
                .await?,
        )
    }

    async fn get(&self, key: ItemKey) -> Result<Item> {
        item(
            self.client
                .call(Request::ItemGet {
                    kind: self.kind,
                    object: self.reference.clone(),
                    key,
                })
                .await?,
        )
    }

    async fn set(
        &self,
        key: ItemKey,
        data: &Value,
        options: WriteOptions,
        ephemeral: bool,
    ) -> Result<Written<Item>> {
        written_item(
            self.client
                .write(Request::ItemSet {
                    kind: self.kind,
                    object: self.reference.clone(),
                    key,
                    data: data.to_string(),
                    if_match: options.if_match,
                    ttl: options.ttl,
                    ephemeral,
                })
                .await?,
        )
    }

    async fn update(
        &self,
        key: ItemKey,
        patch: &Value,
        options: WriteOptions,
    ) -> Result<Written<Item>> {
        let if_match = options.without_ttl("update")?;
        written_item(
            self.client
                .write(Request::ItemUpdate {
                    kind: self.kind,
                    object: self.reference.clone(),
                    key,
                    data: patch.to_string(),
                    if_match,
                })
                .await?,
        )
    }

    async fn remove(&self, key: ItemKey, options: WriteOptions) -> Result<u64> {
        let if_match = options.without_ttl("remove")?;
        match self
            .client
            .write(Request::ItemRemove {
                kind: self.kind,
                object: self.reference.clone(),
                key,
                if_match,
            })
            .await?
        {
            Response::ItemRemoved { revision, .. } => Ok(revision),
            other => Err(unexpected(other)),
        }
    }

    async fn items(&self, options: PageOptions) -> Result<Page> {
        let limit = if options.limit == 0 {
            100
        } else {
            options.limit
        };
        match self
            .client
            .call(Request::Items {
                kind: self.kind,
                object: self.reference.clone(),
                from: options.from,
                order: options.order,
                limit,
            })
            .await?
        {
            Response::Items { items, next } => Ok(Page {
                items: items
                    .into_iter()
                    .map(Item::try_from)
                    .collect::<Result<_>>()?,
                next,
            }),
            other => Err(unexpected(other)),
        }
    }

    async fn subscribe(&self, window: Option<u32>) -> Result<Subscription> {
        let options = SubscribeOptions {
            since: None,
            window,
        };
        self.client.subscribe(&self.reference, options).await
    }
}

/// An ordered list of items with never-reused indices. Creating the handle does no IO.
///
/// ```no_run
/// # async fn demo(client: syncline_client::Client) -> Result<(), syncline_client::Error> {
/// use serde_json::json;
/// use syncline_client::{PageOptions, WriteOptions};
/// let chat = client.list("chat");
/// let written = chat.push(&json!({"text": "hi"})).await?;
/// // A message that disappears after a minute.
/// chat.push_with(&json!({"text": "brb"}), WriteOptions::new().ttl(60)).await?;
/// let page = chat.items(PageOptions::default()).await?;
/// println!("{} items, first written at revision {}", page.items.len(), written.revision);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct List(Items);

impl List {
    /// The list's own time to live, alone (see [`Client::set_ttl`]).
    pub async fn set_ttl(&self, ttl: u64) -> Result<()> {
        self.0.set_ttl(None, ttl).await
    }

    /// One item's time to live, alone (see [`Client::set_ttl`]).
    pub async fn set_item_ttl(&self, index: u64, ttl: u64) -> Result<()> {
        self.0.set_ttl(Some(ItemKey::Index(index)), ttl).await
    }

    /// Creates the list explicitly (`push` creates it too).
    pub async fn create(&self, ttl: Option<u64>) -> Result<ObjectInfo> {
        self.0.create(ttl).await
    }

    /// The list's metadata (revision, creator, dates, expiry).
    pub async fn info(&self) -> Result<ObjectInfo> {
        self.0.info().await
    }

    /// Appends an item with the next index, creating the list if needed.
    pub async fn push(&self, data: &Value) -> Result<Written<Item>> {
        self.push_with(data, WriteOptions::default()).await
    }

    /// `push` with options: `ttl` (the item expires); `if_match` is refused.
    pub async fn push_with(&self, data: &Value, options: WriteOptions) -> Result<Written<Item>> {
        let ttl = options.without_if_match("push")?;
        self.push_item(data, ttl, false).await
    }

    /// Appends an item that lives while this identity has a live connection (see
    /// [`Map::set_ephemeral`]).
    pub async fn push_ephemeral(&self, data: &Value) -> Result<Written<Item>> {
        self.push_item(data, None, true).await
    }

    async fn push_item(
        &self,
        data: &Value,
        ttl: Option<u64>,
        ephemeral: bool,
    ) -> Result<Written<Item>> {
        written_item(
            self.0
                .client
                .write(Request::ListPush {
                    list: self.0.reference.clone(),
                    data: data.to_string(),
                    ttl,
                    ephemeral,
                })
                .await?,
        )
    }

    /// One item by index.
    pub async fn get(&self, index: u64) -> Result<Item> {
        self.0.get(ItemKey::Index(index)).await
    }

    /// Replaces an existing item.
    pub async fn set(&self, index: u64, data: &Value) -> Result<Written<Item>> {
        self.set_with(index, data, WriteOptions::default()).await
    }

    /// `set` with options: `if_match` on the item's revision, `ttl`.
    pub async fn set_with(
        &self,
        index: u64,
        data: &Value,
        options: WriteOptions,
    ) -> Result<Written<Item>> {
        self.0
            .set(ItemKey::Index(index), data, options, false)
            .await
    }

    /// Merges the top-level keys of `patch` into an item.
    pub async fn update(&self, index: u64, patch: &Value) -> Result<Written<Item>> {
        self.update_with(index, patch, WriteOptions::default())
            .await
    }

    /// `update` with options (`if_match` on the item's revision).
    pub async fn update_with(
        &self,
        index: u64,
        patch: &Value,
        options: WriteOptions,
    ) -> Result<Written<Item>> {
        self.0.update(ItemKey::Index(index), patch, options).await
    }

    /// Removes an item; returns the list's revision after the removal.
    pub async fn remove(&self, index: u64) -> Result<u64> {
        self.remove_with(index, WriteOptions::default()).await
    }

    /// `remove` with options (`if_match` on the item's revision).
    pub async fn remove_with(&self, index: u64, options: WriteOptions) -> Result<u64> {
        self.0.remove(ItemKey::Index(index), options).await
    }

    /// One page of items (see [`PageOptions`]).
    pub async fn items(&self, options: PageOptions) -> Result<Page> {
        self.0.items(options).await
    }

    /// Deletes the object and its items; returns its final revision.
    pub async fn delete(&self) -> Result<u64> {
        self.0.delete(WriteOptions::default()).await
    }

    /// `delete` with options (`if_match` on the object's revision).
    pub async fn delete_with(&self, options: WriteOptions) -> Result<u64> {
        self.0.delete(options).await
    }

    /// Subscribes with a replica of the newest `window` items (default 100) and all
    /// items pushed after.
    pub async fn subscribe(&self, window: Option<u32>) -> Result<Subscription> {
        self.0.subscribe(window).await
    }
}

/// Items keyed by string, ordered by key. Creating the handle does no IO.
///
/// ```no_run
/// # async fn demo(client: syncline_client::Client) -> Result<(), syncline_client::Error> {
/// use serde_json::json;
/// let roster = client.map("roster");
/// roster.set("bob", &json!({"status": "online"})).await?;
/// // Only if nobody has written "carol" yet (else `AlreadyExists`).
/// roster.create_item("carol", &json!({"status": "invited"})).await?;
/// roster.update("bob", &json!({"status": "away"})).await?;
/// assert_eq!(roster.get("bob").await?.data["status"], "away");
/// roster.remove("bob").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Map(Items);

impl Map {
    /// The map's own time to live, alone (see [`Client::set_ttl`]).
    pub async fn set_ttl(&self, ttl: u64) -> Result<()> {
        self.0.set_ttl(None, ttl).await
    }

    /// One item's time to live, alone (see [`Client::set_ttl`]).
    pub async fn set_item_ttl(&self, key: &str, ttl: u64) -> Result<()> {
        self.0
            .set_ttl(Some(ItemKey::Key(key.to_owned())), ttl)
            .await
    }

    /// Creates the map explicitly (`set` creates it too).
    pub async fn create(&self, ttl: Option<u64>) -> Result<ObjectInfo> {
        self.0.create(ttl).await
    }

    /// The map's metadata (revision, creator, dates, expiry).
    pub async fn info(&self) -> Result<ObjectInfo> {
        self.0.info().await
    }

    /// Upserts an item, creating the map if needed.
    pub async fn set(&self, key: &str, data: &Value) -> Result<Written<Item>> {
        self.set_with(key, data, WriteOptions::default()).await
    }

    /// `set` with options: `if_match` on the item's revision, `ttl`.
    pub async fn set_with(
        &self,
        key: &str,
        data: &Value,
        options: WriteOptions,
    ) -> Result<Written<Item>> {
        self.0
            .set(ItemKey::Key(key.to_owned()), data, options, false)
            .await
    }

    /// Creates an item only if `key` is absent (creating the map if needed): if the item
    /// is there, `AlreadyExists` and it is left as it was. The server checks and writes
    /// in one step, so another writer's item is never overwritten, as `set` would.
    ///
    /// ```no_run
    /// # async fn claim(client: syncline_client::Client) -> syncline_client::Result<()> {
    /// use syncline_client::ErrorCode;
    /// let seats = client.map("seats");
    /// match seats.create_item("12A", &serde_json::json!({"by": "alice"})).await {
    ///     Ok(_) => println!("yours"),
    ///     Err(e) if e.code() == ErrorCode::AlreadyExists => println!("taken"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn create_item(&self, key: &str, data: &Value) -> Result<Written<Item>> {
        self.create_item_with(key, data, WriteOptions::default())
            .await
    }

    /// `create_item` with options: `ttl`; `if_match` is refused (there is no item to
    /// match).
    pub async fn create_item_with(
        &self,
        key: &str,
        data: &Value,
        options: WriteOptions,
    ) -> Result<Written<Item>> {
        let ttl = options.without_if_match("create_item")?;
        written_item(
            self.0
                .client
                .write(Request::ItemCreate {
                    kind: ObjectKind::Map,
                    object: self.0.reference.clone(),
                    key: ItemKey::Key(key.to_owned()),
                    data: data.to_string(),
                    ttl,
                    ephemeral: false,
                })
                .await?,
        )
    }

    /// Upserts an item that lives while this identity is connected: presence in one
    /// call. When the identity's last connection ends (closed, timed out, killed, or the
    /// server restarted and it did not come back), the server removes the item with
    /// `reason: disconnected`, after the service's reachability debouncing window if
    /// debouncing is on, at once if not. A reconnect inside the window keeps it, and
    /// nothing is sent. Needs an access token's connection (an API key has no identity
    /// to be present). A later plain `set` of the item makes it stay.
    ///
    /// ```no_run
    /// # async fn roster(client: syncline_client::Client) -> syncline_client::Result<()> {
    /// let room = client.map("room:lobby");
    /// room.set_ephemeral("alice", &serde_json::json!({ "status": "online" }))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_ephemeral(&self, key: &str, data: &Value) -> Result<Written<Item>> {
        self.0
            .set(
                ItemKey::Key(key.to_owned()),
                data,
                WriteOptions::default(),
                true,
            )
            .await
    }

    /// One item by key.
    pub async fn get(&self, key: &str) -> Result<Item> {
        self.0.get(ItemKey::Key(key.to_owned())).await
    }

    /// Merges the top-level keys of `patch` into an item.
    pub async fn update(&self, key: &str, patch: &Value) -> Result<Written<Item>> {
        self.update_with(key, patch, WriteOptions::default()).await
    }

    /// `update` with options (`if_match` on the item's revision).
    pub async fn update_with(
        &self,
        key: &str,
        patch: &Value,
        options: WriteOptions,
    ) -> Result<Written<Item>> {
        self.0
            .update(ItemKey::Key(key.to_owned()), patch, options)
            .await
    }

    /// Removes an item; returns the map's revision after the removal.
    pub async fn remove(&self, key: &str) -> Result<u64> {
        self.remove_with(key, WriteOptions::default()).await
    }

    /// `remove` with options (`if_match` on the item's revision).
    pub async fn remove_with(&self, key: &str, options: WriteOptions) -> Result<u64> {
        self.0.remove(ItemKey::Key(key.to_owned()), options).await
    }

    /// One page of items, ordered by key (see [`PageOptions`]).
    pub async fn items(&self, options: PageOptions) -> Result<Page> {
        self.0.items(options).await
    }

    /// Deletes the object and its items; returns its final revision.
    pub async fn delete(&self) -> Result<u64> {
        self.0.delete(WriteOptions::default()).await
    }

    /// `delete` with options (`if_match` on the object's revision).
    pub async fn delete_with(&self, options: WriteOptions) -> Result<u64> {
        self.0.delete(options).await
    }

    /// Subscribes with a replica of every item.
    pub async fn subscribe(&self) -> Result<Subscription> {
        self.0.subscribe(None).await
    }
}

/// Ephemeral messages to the current subscribers. Creating the handle does no IO.
///
/// ```no_run
/// # async fn demo(client: syncline_client::Client) -> Result<(), syncline_client::Error> {
/// use serde_json::json;
/// use syncline_client::SyncEventKind;
/// let typing = client.stream("typing");
/// let mut sub = typing.subscribe().await?;
/// typing.publish(&json!({"who": "alice"})).await?;
/// while let Some(event) = sub.next().await {
///     match event?.kind {
///         SyncEventKind::MessagePublished { data, .. } => println!("{data}"),
///         // Messages are not replayed after a lost connection; this says so.
///         SyncEventKind::Missed { messages } => println!("missed {messages:?}"),
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Stream {
    client: Client,
    reference: String,
}

impl Stream {
    /// Creates the stream explicitly (`publish` creates it too).
    pub async fn create(&self, ttl: Option<u64>) -> Result<ObjectInfo> {
        self.client
            .create(ObjectKind::Stream, Some(&self.reference), ttl)
            .await
    }

    /// The stream's time to live, alone (see [`Client::set_ttl`]).
    pub async fn set_ttl(&self, ttl: u64) -> Result<()> {
        self.client
            .set_ttl(ObjectKind::Stream, &self.reference, None, ttl)
            .await
    }

    /// Sends a message (JSON, at most 4 KiB), creating the stream if needed. Returns its
    /// sequence number.
    pub async fn publish(&self, data: &Value) -> Result<u64> {
        match self
            .client
            .write(Request::Publish {
                stream: self.reference.clone(),
                data: data.to_string(),
            })
            .await?
        {
            Response::Published { sequence } => Ok(sequence),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes the stream; its subscribers get `Removed`.
    pub async fn delete(&self) -> Result<u64> {
        deleted(
            self.client
                .write(Request::Delete {
                    kind: Some(ObjectKind::Stream),
                    object: self.reference.clone(),
                    if_match: None,
                })
                .await?,
        )
    }

    /// Subscribes: a snapshot (the stream's last sequence), then every message published.
    pub async fn subscribe(&self) -> Result<Subscription> {
        self.client
            .subscribe(&self.reference, SubscribeOptions::default())
            .await
    }
}
