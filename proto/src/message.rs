//! What travels in frames: requests and responses on the request stream, and events on
//! the event stream. Field order is part of the wire format (bincode); append, never reorder.

use crate::error::WireError;
use crate::ids::ObjectKind;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The creator and actor recorded for changes made by the backend (an API key) and by
/// the server itself (expiry).
pub const SYSTEM_ACTOR: &str = "system";

/// A request from the client, tagged with an id the response echoes. Id 0 is not used
/// by requests: the server answers with id 0 only errors tied to no request (token
/// expiry, a frame whose id cannot be read).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RequestFrame {
    pub id: u64,
    pub request: Request,
}

/// How a connection authenticates. Its `Debug` never prints a secret.
#[derive(Serialize, Deserialize, Clone, PartialEq)]
pub enum Credential {
    /// A JWT access token (Twilio Access Token format with a Sync grant).
    Token(String),
    /// An API key: the trusted backend.
    ApiKey { sid: String, secret: String },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Token(_) => f.write_str("Token(<redacted>)"),
            Credential::ApiKey { sid, .. } => write!(f, "ApiKey({sid}, <redacted>)"),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Request {
    /// Must be the first request on a connection. `service` (id or unique name) selects the
    /// service for an API-key connection; a token always acts in its own service.
    Hello {
        credential: Credential,
        service: Option<String>,
    },
    /// Replaces the connection's token with a fresh one for the same identity.
    UpdateToken {
        token: String,
    },
    Ping,
    /// `document` is a sid or a unique name, here and below.
    DocGet {
        document: String,
    },
    /// Replaces the document's data, creating the document if it does not exist.
    DocSet {
        document: String,
        data: String,
        if_match: Option<u64>,
        ttl: Option<u64>,
    },
    /// Merges the top-level keys of `data` (a JSON object) into the document's data.
    DocUpdate {
        document: String,
        data: String,
        if_match: Option<u64>,
    },
    /// Creates an object of `kind` (a document starts as `null`). `AlreadyExists` if the
    /// name is taken.
    Create {
        kind: ObjectKind,
        unique_name: Option<String>,
        ttl: Option<u64>,
    },
    /// An object's metadata (any kind), by sid or unique name.
    Fetch {
        object: String,
    },
    /// Deletes an object with its items. `kind`, if given, must match.
    Delete {
        kind: Option<ObjectKind>,
        object: String,
        if_match: Option<u64>,
    },
    /// Appends an item with a new index, creating the list if it does not exist.
    ListPush {
        list: String,
        data: String,
        ttl: Option<u64>,
        /// The item lives while the writer's identity has a live connection (see
        /// `ItemSet::ephemeral`).
        ephemeral: bool,
    },
    ItemGet {
        kind: ObjectKind,
        object: String,
        key: ItemKey,
    },
    /// List: replace an existing item. Map: upsert (creating the map if needed).
    /// `if_match` compares with the item's revision.
    ItemSet {
        kind: ObjectKind,
        object: String,
        key: ItemKey,
        data: String,
        if_match: Option<u64>,
        ttl: Option<u64>,
        /// The item lives while the writer's identity has a live connection: once its
        /// last connection ends (and the service's debouncing window passes) it is
        /// removed with `reason: Disconnected`. Needs an access token's connection.
        ephemeral: bool,
    },
    /// Merges top-level keys into an existing item.
    ItemUpdate {
        kind: ObjectKind,
        object: String,
        key: ItemKey,
        data: String,
        if_match: Option<u64>,
    },
    ItemRemove {
        kind: ObjectKind,
        object: String,
        key: ItemKey,
        if_match: Option<u64>,
    },
    /// A page of items starting at `from` (inclusive) in `order`; `limit` 1..=1000.
    Items {
        kind: ObjectKind,
        object: String,
        from: Option<ItemKey>,
        order: Order,
        limit: u32,
    },
    /// Sends a message to the stream's current subscribers (creating the stream if needed).
    Publish {
        stream: String,
        data: String,
    },
    /// Subscribes to an object's events. `sub_id` is chosen by the client and tags every
    /// event frame of this subscription. With `since`, only what came after that revision
    /// is sent (or a snapshot when it is no longer known); without, a snapshot first.
    Subscribe {
        sub_id: u64,
        object: String,
        since: Option<u64>,
        /// Lists: how many of the newest items the snapshot carries (default 100).
        window: Option<u32>,
    },
    Unsubscribe {
        sub_id: u64,
    },
    // Administration: backend (API key) connections only.
    ServiceCreate {
        unique_name: Option<String>,
        flags: ServiceFlags,
    },
    ServiceList,
    /// `service`: sid or unique name, here and below.
    ServiceGet {
        service: String,
    },
    /// Changes the flags that are `Some` in `flags`.
    ServiceUpdate {
        service: String,
        flags: ServiceFlagsPatch,
    },
    /// Deletes the service with every object and permission in it.
    ServiceDelete {
        service: String,
    },
    /// A new API key; its secret is in the answer and never again.
    KeyCreate {
        friendly_name: Option<String>,
    },
    KeyList,
    /// Revokes a key: every token it signed is refused from now on, live ones too.
    KeyRevoke {
        sid: String,
    },
    /// Sets exactly these rights of `identity` (`*`: every identity) on the object, in
    /// the connection's service.
    PermissionGrant {
        object: String,
        identity: String,
        rights: Rights,
    },
    PermissionRevoke {
        object: String,
        identity: String,
    },
    PermissionList {
        object: String,
    },
}

/// A service's flags as set at creation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ServiceFlags {
    pub acl_enabled: bool,
    pub webhook_url: Option<String>,
    pub webhooks_from_backend: bool,
    pub reachability_webhooks_enabled: bool,
    pub reachability_debouncing_enabled: bool,
    /// 1,000..=30,000; `None`: 5,000.
    pub reachability_debouncing_window_ms: Option<u32>,
    /// Whether access-token holders may create objects.
    pub token_create: TokenCreate,
    /// A label for people (Twilio's `FriendlyName`).
    pub friendly_name: Option<String>,
}

impl ServiceFlags {
    /// Twilio's default `reachability_debouncing_window`.
    pub const DEFAULT_DEBOUNCING_WINDOW_MS: u32 = 5_000;

    /// The debouncing window in effect: the one set, or Twilio's default.
    pub fn debouncing_window_ms(&self) -> u32 {
        self.reachability_debouncing_window_ms
            .unwrap_or(Self::DEFAULT_DEBOUNCING_WINDOW_MS)
    }
}

/// Whether access-token holders may create objects in a service (by writing to a free
/// name, pushing to a new list, publishing to a new stream, or `create`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TokenCreate {
    /// They may, and become the creator (under ACL: the only identity with access until
    /// the backend grants more). A token holder can claim a name before the backend does.
    #[default]
    Own,
    /// Only the backend creates objects: a token's write to a missing object is
    /// `Forbidden`, so no identity can squat a name the backend will use.
    None,
}

impl TokenCreate {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenCreate::Own => "own",
            TokenCreate::None => "none",
        }
    }
}

impl std::str::FromStr for TokenCreate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "own" => Ok(TokenCreate::Own),
            "none" => Ok(TokenCreate::None),
            other => Err(format!("token_create is `own` or `none`, not {other:?}")),
        }
    }
}

/// Flags to change; `None` leaves a flag as it is. `webhook_url: Some(None)` clears it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ServiceFlagsPatch {
    pub acl_enabled: Option<bool>,
    pub webhook_url: Option<Option<String>>,
    pub webhooks_from_backend: Option<bool>,
    pub reachability_webhooks_enabled: Option<bool>,
    pub reachability_debouncing_enabled: Option<bool>,
    pub reachability_debouncing_window_ms: Option<u32>,
    pub token_create: Option<TokenCreate>,
    pub friendly_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ServiceInfo {
    pub sid: String,
    pub unique_name: Option<String>,
    pub acl_enabled: bool,
    pub webhook_url: Option<String>,
    pub webhooks_from_backend: bool,
    pub reachability_webhooks_enabled: bool,
    pub reachability_debouncing_enabled: bool,
    pub reachability_debouncing_window_ms: u32,
    pub date_created: u64,
    pub date_updated: u64,
    pub token_create: TokenCreate,
    pub friendly_name: Option<String>,
    /// Webhook events this server run dropped for the service: its queue was full
    /// (the oldest went) or every delivery attempt failed. Counted from server start.
    pub webhooks_dropped: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct KeyInfo {
    pub sid: String,
    pub friendly_name: Option<String>,
    /// Only in the answer to `KeyCreate`.
    pub secret: Option<String>,
    pub date_created: u64,
    pub revoked: bool,
}

/// Rights an identity holds on an object.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rights {
    /// get, subscribe
    pub read: bool,
    /// change data and items, publish
    pub write: bool,
    /// delete the object, change its TTL
    pub manage: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PermissionInfo {
    pub object_sid: String,
    pub identity: String,
    pub rights: Rights,
}

/// The answer to one request, with its id; id 0 carries an error tied to no request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ResponseFrame {
    pub id: u64,
    pub result: Result<Response, WireError>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Response {
    Welcome(Welcome),
    TokenUpdated {
        expires_at: u64,
    },
    Pong,
    Document(DocumentInfo),
    /// An object was deleted; `revision` is its last revision.
    Deleted {
        sid: String,
        revision: u64,
    },
    Object(ObjectInfo),
    Item(ItemInfo),
    /// An item was removed; `revision` is the object's revision after the removal.
    ItemRemoved {
        key: ItemKey,
        revision: u64,
    },
    /// A page of items; `next` is where the following page starts, if there is one.
    Items {
        items: Vec<ItemInfo>,
        next: Option<ItemKey>,
    },
    Published {
        sequence: u64,
    },
    Subscribed {
        sub_id: u64,
        object_sid: String,
        kind: ObjectKind,
    },
    Unsubscribed {
        sub_id: u64,
    },
    Service(ServiceInfo),
    Services(Vec<ServiceInfo>),
    Key(KeyInfo),
    Keys(Vec<KeyInfo>),
    Permission(PermissionInfo),
    Permissions(Vec<PermissionInfo>),
    /// Done; nothing to return (a revoke, a service deletion).
    Done,
    /// The answer to a write of data: document `set` and `update`, list `push`, item
    /// `set` and `update`.
    Written(WriteInfo),
    /// A page of a service's lists, maps or streams, in sid order; `next`: the sid to
    /// continue after.
    Objects {
        objects: Vec<ObjectInfo>,
        next: Option<String>,
    },
    /// A page of a service's documents, with their data.
    Documents {
        documents: Vec<DocumentInfo>,
        next: Option<String>,
    },
}

/// What a write of data did, as the writer may see it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct WriteInfo {
    pub object_sid: String,
    pub kind: ObjectKind,
    /// The object's revision after the write.
    pub revision: u64,
    /// Who created the object: `system` for the backend, else an identity, which under
    /// ACL keeps full access to it. A backend writing into an object it expected to own
    /// learns here that a token holder created it first.
    pub object_created_by: String,
    /// The item written (for a `push`, its new index); `None` for documents.
    pub key: Option<ItemKey>,
    /// The document or item after the write; `None` when the writer may not read the
    /// object (a write grant does not include reading).
    pub value: Option<WrittenValue>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum WrittenValue {
    Document(DocumentInfo),
    Item(ItemInfo),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Welcome {
    /// Unique per server run; events caused by this connection carry it as `origin`.
    pub connection_id: u64,
    /// `None` for an API-key (backend) connection.
    pub identity: Option<String>,
    pub service_sid: String,
    pub account_sid: String,
    /// Unix seconds at which the token expires, its `exp` (`None` for API keys). The
    /// server allows `token::CLOCK_SKEW_S` past it before it closes the connection.
    pub token_expires_at: Option<u64>,
    /// The largest request frame body the server accepts (`Limits::max_frame_bytes`);
    /// the client refuses a larger request itself rather than send it.
    pub max_frame_bytes: u32,
}

/// A document as readers see it. Times are Unix milliseconds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DocumentInfo {
    pub sid: String,
    pub unique_name: Option<String>,
    pub revision: u64,
    /// JSON text.
    pub data: String,
    pub created_by: String,
    pub date_created: u64,
    pub date_updated: u64,
    pub date_expires: Option<u64>,
}

/// One change to an object, as delivered to subscribers and kept in the change log.
/// It is encoded once and the same bytes go to every subscriber.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Event {
    pub object_sid: String,
    /// The object's revision after this change.
    pub revision: u64,
    /// Connection id of the connection whose request caused it; 0 for the server itself.
    pub origin: u64,
    /// Identity that caused it (`system` for the backend or the server).
    pub actor: String,
    pub kind: EventKind,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum EventKind {
    /// The whole current state: the first event of a subscription, or a resync when the
    /// missed events are no longer known or the subscriber fell behind. Replace the replica.
    Snapshot {
        state: ObjectState,
    },
    DocumentUpdated {
        data: String,
        previous: Option<String>,
        date_updated: u64,
    },
    ObjectRemoved {
        reason: Reason,
    },
    ItemAdded {
        item: ItemInfo,
    },
    ItemUpdated {
        item: ItemInfo,
        previous: String,
    },
    ItemRemoved {
        key: ItemKey,
        previous: String,
        reason: Reason,
    },
    /// A stream message. `sequence` counts the stream's messages (from 1 at server start),
    /// so a subscriber can tell when it missed some.
    MessagePublished {
        data: String,
        sequence: u64,
    },
    /// Items of the snapshot just sent (collections are sent in chunks that fit a frame);
    /// `done` marks the last chunk.
    SnapshotItems {
        items: Vec<ItemInfo>,
        done: bool,
    },
    /// The server ends this subscription (e.g. access was revoked); no more events follow.
    SubscriptionEnded {
        error: WireError,
    },
}

impl EventKind {
    /// The snake_case event name used by the CLI and docs.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Snapshot { .. } => "snapshot",
            EventKind::DocumentUpdated { .. } => "document_updated",
            EventKind::ObjectRemoved { .. } => "object_removed",
            EventKind::ItemAdded { .. } => "item_added",
            EventKind::ItemUpdated { .. } => "item_updated",
            EventKind::ItemRemoved { .. } => "item_removed",
            EventKind::MessagePublished { .. } => "message_published",
            EventKind::SnapshotItems { .. } => "snapshot_items",
            EventKind::SubscriptionEnded { .. } => "subscription_ended",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum ObjectState {
    Document(DocumentInfo),
    /// Followed by `SnapshotItems`: the items with index >= `window_start`.
    List {
        info: ObjectInfo,
        window_start: u64,
    },
    /// Followed by `SnapshotItems`: every item.
    Map {
        info: ObjectInfo,
    },
    /// `sequence` of the last message published, so the next one is `sequence + 1`.
    Stream {
        info: ObjectInfo,
        sequence: u64,
    },
}

/// Any object's metadata. Times are Unix milliseconds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ObjectInfo {
    pub sid: String,
    pub kind: ObjectKind,
    pub unique_name: Option<String>,
    pub revision: u64,
    pub created_by: String,
    pub date_created: u64,
    pub date_updated: u64,
    pub date_expires: Option<u64>,
}

/// Where an item sits: a list index or a map key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ItemKey {
    Index(u64),
    Key(String),
}

impl std::fmt::Display for ItemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ItemKey::Index(i) => write!(f, "{i}"),
            ItemKey::Key(k) => f.write_str(k),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

/// A list or map item. `revision` is the object revision at which it last changed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ItemInfo {
    pub key: ItemKey,
    pub revision: u64,
    /// JSON text.
    pub data: String,
    pub created_by: String,
    pub date_created: u64,
    pub date_updated: u64,
    pub date_expires: Option<u64>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Write,
    Expired,
    /// An ephemeral item whose writer's identity has no live connection left (after the
    /// service's debouncing window).
    Disconnected,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Write => "write",
            Reason::Expired => "expired",
            Reason::Disconnected => "disconnected",
        }
    }
}
