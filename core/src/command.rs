//! Typed commands and their outcomes: what every edge turns a request into, once,
//! before anything below it runs, and what the core answers. A command's fields that
//! do not depend on stored state are checked values (`values`: JSON payloads, TTLs, item
//! keys, page sizes, identities), which only their checking constructors make, so an
//! edge cannot hand the core an unchecked command and every edge refuses the same input
//! with the same error. Nothing here knows which transport a command came from.

use syncline_proto::{
    DocumentInfo, ItemInfo, ItemKey, KeyInfo, ObjectInfo, ObjectKind, Order, PermissionInfo,
    Rights, ServiceFlags, ServiceFlagsPatch, ServiceInfo, WriteInfo,
};

pub use crate::values::{Identity, Json, Key, PageSize, Ttl};

/// A request, typed and checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Ping,
    /// The installation's live nodes (where a client goes when its node does).
    Nodes,
    Read(ReadCommand),
    Write(WriteCommand),
    /// Sends a message to a stream's current subscribers (creating the stream by name).
    Publish {
        stream: String,
        data: Json,
    },
    /// Backend (API key) only.
    Admin(AdminCommand),
    // Bound to a live connection: only an edge that holds one takes these.
    UpdateToken {
        token: String,
    },
    Subscribe {
        sub_id: u64,
        object: String,
        since: Option<u64>,
        /// Lists: how many of the newest items the snapshot carries (1..=max_page).
        window: PageSize,
    },
    Unsubscribe {
        sub_id: u64,
    },
}

/// Reads; under ACL they need `read`.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadCommand {
    Document {
        document: String,
    },
    /// Any object's metadata.
    Object {
        object: String,
    },
    Item {
        kind: ObjectKind,
        object: String,
        key: Key,
    },
    /// A page of the service's objects of `kind`, in sid order, after the sid `after`.
    Objects {
        kind: ObjectKind,
        after: Option<String>,
        limit: PageSize,
    },
    /// A page of items from `from` (inclusive); `limit` is 1..=max_page.
    Items {
        kind: ObjectKind,
        object: String,
        from: Option<Key>,
        order: Order,
        limit: PageSize,
    },
}

/// Services, API keys and permissions: the backend's business.
#[derive(Debug, Clone, PartialEq)]
pub enum AdminCommand {
    ServiceCreate {
        unique_name: Option<String>,
        flags: ServiceFlags,
    },
    ServiceList,
    ServiceGet {
        service: String,
    },
    ServiceUpdate {
        service: String,
        flags: ServiceFlagsPatch,
    },
    ServiceDelete {
        service: String,
    },
    KeyCreate {
        friendly_name: Option<String>,
    },
    KeyList,
    KeyRevoke {
        sid: String,
    },
    PermissionGrant {
        object: String,
        identity: Identity,
        rights: Rights,
    },
    PermissionRevoke {
        object: String,
        identity: Identity,
    },
    PermissionList {
        object: String,
    },
}

impl Command {
    /// What it asks for, as the metrics count it (`metrics::KINDS`).
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Ping => "ping",
            Command::Nodes => "nodes",
            Command::Read(_) => "read",
            Command::Write(_) => "write",
            Command::Publish { .. } => "publish",
            Command::Admin(_) => "admin",
            Command::UpdateToken { .. } => "update_token",
            Command::Subscribe { .. } => "subscribe",
            Command::Unsubscribe { .. } => "unsubscribe",
        }
    }
}

/// What a command did, as the caller sees it. Each edge renders it: QUIC as its wire
/// answer, HTTP as Twilio's JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    TokenUpdated {
        /// The new token's `exp`, Unix seconds.
        expires_at: u64,
    },
    Pong,
    Nodes(Vec<syncline_proto::NodeInfo>),
    Document(DocumentInfo),
    /// An object was deleted; `revision` is that of its removal.
    Deleted {
        sid: String,
        revision: u64,
    },
    Object(ObjectInfo),
    Item(ItemInfo),
    /// An item was removed; `revision` is the object's after the removal.
    ItemRemoved {
        key: ItemKey,
        revision: u64,
    },
    /// A page of items; `next` is where the following page starts.
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
    Done,
    Written(WriteInfo),
    /// A page of lists, maps or streams in sid order; `next`: the sid to continue after.
    Objects {
        objects: Vec<ObjectInfo>,
        next: Option<String>,
    },
    /// A page of documents with their data, in sid order.
    Documents {
        documents: Vec<DocumentInfo>,
        next: Option<String>,
    },
}

/// A client's write, checked. Object references are sids or unique names; their
/// existence, kind, revision and access are decided by the commit task.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteCommand {
    /// Replace a document's data; `Upsert` creates it (by name) if it does not exist,
    /// `Replace` refuses (REST's update), `Create` is not a `DocSet` (see `Create`).
    DocSet {
        document: String,
        data: Json,
        if_match: Option<u64>,
        ttl: Option<Ttl>,
        mode: SetMode,
    },
    /// Merge top-level keys into a document's data.
    DocUpdate {
        document: String,
        patch: Json,
        if_match: Option<u64>,
    },
    /// Create an object; `AlreadyExists` if the name is taken. A document may start
    /// with `data` (else `null`).
    Create {
        kind: ObjectKind,
        unique_name: Option<String>,
        ttl: Option<Ttl>,
        data: Option<Json>,
    },
    /// Change only the expiry of an object, or of one of its items (`key`). Takes
    /// `manage`; the revision stays, and no event is sent (the data did not change).
    SetTtl {
        kind: ObjectKind,
        object: String,
        key: Option<Key>,
        ttl: Ttl,
    },
    Delete {
        kind: Option<ObjectKind>,
        object: String,
        if_match: Option<u64>,
    },
    /// Append to a list; `create_list`: create it (by name) if it does not exist.
    ListPush {
        list: String,
        data: Json,
        ttl: Option<Ttl>,
        create_list: bool,
        /// Owned by the writer's connections (see `ItemSet::ephemeral`).
        ephemeral: bool,
    },
    /// Write an item's data, as `mode` says (a list item must exist: `Replace` or
    /// `Upsert` only, `Create` is `InvalidArgument`).
    ItemSet {
        kind: ObjectKind,
        object: String,
        key: Key,
        data: Json,
        if_match: Option<u64>,
        ttl: Option<Ttl>,
        mode: SetMode,
        /// A map `set` may create its map (by name) if it does not exist (QUIC's
        /// `ItemSet` and `ItemCreate` do; REST's item create answers that the map is
        /// missing).
        create_map: bool,
        /// The item becomes the writer's: removed when the writer's identity has had no
        /// live connection for the service's debouncing window. Only a token holder's
        /// QUIC connection can write one (REST has no connection to outlive).
        ephemeral: bool,
    },
    ItemUpdate {
        kind: ObjectKind,
        object: String,
        key: Key,
        patch: Json,
        if_match: Option<u64>,
    },
    ItemRemove {
        kind: ObjectKind,
        object: String,
        key: Key,
        if_match: Option<u64>,
    },
}

/// What an item `set` does about an item that is there, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMode {
    /// Replace it, or create it (a map item, and its map by name): QUIC's map `set`.
    Upsert,
    /// Create it; `AlreadyExists` if it is there (REST's item create, QUIC's
    /// `ItemCreate`). Maps only: a list item is created by push.
    Create,
    /// Replace it; `NotFound` if it is not there (REST's item update, any list `set`).
    Replace,
}

impl WriteCommand {
    /// The object the write names (a sid or a unique name); `None` for a `Create`.
    pub fn object(&self) -> Option<&str> {
        match self {
            WriteCommand::DocSet { document, .. } | WriteCommand::DocUpdate { document, .. } => {
                Some(document)
            }
            WriteCommand::ListPush { list, .. } => Some(list),
            WriteCommand::SetTtl { object, .. }
            | WriteCommand::Delete { object, .. }
            | WriteCommand::ItemSet { object, .. }
            | WriteCommand::ItemUpdate { object, .. }
            | WriteCommand::ItemRemove { object, .. } => Some(object),
            WriteCommand::Create { .. } => None,
        }
    }

    /// The time to live the write sets, if any: changing it takes `manage`.
    pub fn ttl(&self) -> Option<u64> {
        match self {
            WriteCommand::SetTtl { ttl, .. } => Some(ttl.seconds()),
            WriteCommand::DocSet { ttl, .. }
            | WriteCommand::Create { ttl, .. }
            | WriteCommand::ListPush { ttl, .. }
            | WriteCommand::ItemSet { ttl, .. } => ttl.map(Ttl::seconds),
            _ => None,
        }
    }
}
