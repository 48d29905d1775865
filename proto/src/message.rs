//! What travels in frames: requests and responses on the request stream, and events on
//! the event stream. Field order is part of the wire format (bincode); append, never reorder.
//!
//! Conventions used throughout: an object or service is named by its sid (`PP` + 32
//! lowercase hex, see [`crate::ids`]) or by its unique name; JSON payloads (`data`) are
//! JSON text, checked with [`Limits::check_data`](crate::Limits::check_data); revisions
//! are the object's `u64` revision (0 at creation, +1 per change); times are Unix
//! milliseconds; TTLs are seconds (`Some(0)`: no expiry, `None` on a change: keep the
//! current expiry) up to [`Limits::max_ttl_s`](crate::Limits::max_ttl_s).

use crate::error::WireError;
use crate::ids::ObjectKind;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The creator and actor recorded for changes made by the backend (an API key) and by
/// the server itself (expiry).
pub const SYSTEM_ACTOR: &str = "system";

/// A request from the client, tagged with an id the response echoes. Id 0 is not used
/// by requests: the server answers with id 0 only errors tied to no request (token
/// expiry, a frame whose id cannot be read), and refuses a request numbered 0 with
/// such a notice (`InvalidArgument`) without running it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct RequestFrame {
    /// Chosen by the client and echoed in [`ResponseFrame::id`]; nonzero, and unique
    /// among the client's requests in flight, since responses may come back in any order.
    pub id: u64,
    /// What is asked.
    pub request: Request,
}

/// How a connection authenticates. Its `Debug` never prints a secret.
#[derive(Serialize, Deserialize, Clone, PartialEq)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub enum Credential {
    /// A JWT access token (Twilio Access Token format with a Sync grant).
    Token(String),
    /// An API key: the trusted backend.
    ApiKey {
        /// The key's sid, `SK` + 32 hex digits.
        sid: String,
        /// The key's secret, exactly as printed when the key was created.
        secret: String,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Token(_) => f.write_str("Token(<redacted>)"),
            Credential::ApiKey { sid, .. } => write!(f, "ApiKey({sid}, <redacted>)"),
        }
    }
}

/// A request from the client to the server, one per [`RequestFrame`]. Each names the
/// [`Response`] variant that answers it; any may instead fail with a [`WireError`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub enum Request {
    /// Must be the first request on a connection. `service` (id or unique name) selects the
    /// service for an API-key connection; a token always acts in its own service.
    /// Answer: [`Response::Welcome`]; if authentication fails the server also closes the
    /// connection (`close_code::UNAUTHORIZED` or `TOKEN_EXPIRED`).
    Hello {
        /// The access token or API key the connection authenticates with.
        credential: Credential,
        /// API key: the service to act in (`None`: the installation's default service).
        /// Token: `None` or the token's own service, else `Forbidden`.
        service: Option<String>,
    },
    /// Replaces the connection's token with a fresh one for the same identity.
    /// Answer: [`Response::TokenUpdated`]; a token for another identity or service is
    /// `Unauthorized`, and on an API-key connection it is `InvalidArgument`.
    UpdateToken {
        /// The new JWT access token (at most `Limits::max_token_bytes`).
        token: String,
    },
    /// A liveness check; answer: [`Response::Pong`].
    Ping,
    /// A document's current data and metadata; answer: [`Response::Document`].
    /// `document` is a sid or a unique name, here and below.
    DocGet {
        /// The document's sid (`ET…`) or unique name.
        document: String,
    },
    /// Replaces the document's data, creating the document if it does not exist.
    /// Answer: [`Response::Written`].
    DocSet {
        /// The document's sid (`ET…`) or unique name (a name creates it if missing).
        document: String,
        /// The new value, JSON text of at most `Limits::max_data_bytes`.
        data: String,
        /// Write only if the document is at this revision, else `Conflict` (`NotFound`
        /// if the document does not exist); `None`: unconditional.
        if_match: Option<u64>,
        /// New time to live in seconds from now (`Some(0)`: none); `None` keeps the
        /// current expiry (none for a new document).
        ttl: Option<u64>,
    },
    /// Merges the top-level keys of `data` (a JSON object) into the document's data.
    /// Answer: [`Response::Written`]; `NotFound` if the document does not exist.
    DocUpdate {
        /// The document's sid (`ET…`) or unique name.
        document: String,
        /// A JSON object (else `InvalidArgument`); a key whose value is `null` is removed.
        data: String,
        /// Write only if the document is at this revision, else `Conflict`; `None`:
        /// unconditional.
        if_match: Option<u64>,
    },
    /// Creates an object of `kind` (a document starts as `null`). `AlreadyExists` if the
    /// name is taken. Answer: [`Response::Object`].
    Create {
        /// What to create.
        kind: ObjectKind,
        /// An optional name to address it by (see [`crate::ids::validate_unique_name`]).
        unique_name: Option<String>,
        /// Time to live in seconds; `None` or `Some(0)`: no expiry.
        ttl: Option<u64>,
    },
    /// An object's metadata (any kind), by sid or unique name. Answer: [`Response::Object`].
    Fetch {
        /// The object's sid or unique name.
        object: String,
    },
    /// Deletes an object with its items. `kind`, if given, must match.
    /// Answer: [`Response::Deleted`]; subscribers get `ObjectRemoved` with reason `Write`.
    /// Needs `manage` under ACL.
    Delete {
        /// The kind the caller expects; a different kind is refused. `None`: any kind.
        kind: Option<ObjectKind>,
        /// The object's sid or unique name.
        object: String,
        /// Delete only if the object is at this revision, else `Conflict`; `None`:
        /// unconditional.
        if_match: Option<u64>,
    },
    /// Appends an item with a new index, creating the list if it does not exist.
    /// Answer: [`Response::Written`], whose `key` is the new index.
    ListPush {
        /// The list's sid (`ES…`) or unique name (a name creates it if missing).
        list: String,
        /// The item's value, JSON text of at most `Limits::max_data_bytes`.
        data: String,
        /// The item's time to live in seconds; `None` or `Some(0)`: no expiry.
        ttl: Option<u64>,
        /// The item lives while the writer's identity has a live connection (see
        /// `ItemSet::ephemeral`).
        ephemeral: bool,
    },
    /// One item of a list or map; answer: [`Response::Item`], `NotFound` if it does not
    /// exist (or has expired).
    ItemGet {
        /// [`ObjectKind::List`] or [`ObjectKind::Map`]; must match the object.
        kind: ObjectKind,
        /// The list's or map's sid or unique name.
        object: String,
        /// The item: [`ItemKey::Index`] for a list, [`ItemKey::Key`] for a map.
        key: ItemKey,
    },
    /// List: replace an existing item. Map: upsert (creating the map if needed).
    /// `if_match` compares with the item's revision. Answer: [`Response::Written`].
    ItemSet {
        /// [`ObjectKind::List`] or [`ObjectKind::Map`]; must match the object.
        kind: ObjectKind,
        /// The list's or map's sid or unique name.
        object: String,
        /// The item: [`ItemKey::Index`] for a list, [`ItemKey::Key`] for a map.
        key: ItemKey,
        /// The item's new value, JSON text of at most `Limits::max_data_bytes`.
        data: String,
        /// Write only if the item is at this revision, else `Conflict` (`NotFound` if the
        /// item does not exist); `None`: unconditional.
        if_match: Option<u64>,
        /// New time to live in seconds from now (`Some(0)`: none); `None` keeps the
        /// item's current expiry.
        ttl: Option<u64>,
        /// The item lives while the writer's identity has a live connection: once its
        /// last connection ends (and the service's debouncing window passes) it is
        /// removed with `reason: Disconnected`. Needs an access token's connection.
        ephemeral: bool,
    },
    /// Merges top-level keys into an existing item. Answer: [`Response::Written`];
    /// `NotFound` if the item does not exist.
    ItemUpdate {
        /// [`ObjectKind::List`] or [`ObjectKind::Map`]; must match the object.
        kind: ObjectKind,
        /// The list's or map's sid or unique name.
        object: String,
        /// The item: [`ItemKey::Index`] for a list, [`ItemKey::Key`] for a map.
        key: ItemKey,
        /// A JSON object (else `InvalidArgument`); a key whose value is `null` is removed.
        data: String,
        /// Write only if the item is at this revision, else `Conflict`; `None`:
        /// unconditional.
        if_match: Option<u64>,
    },
    /// Removes an item. Answer: [`Response::ItemRemoved`]; `NotFound` if it does not exist.
    ItemRemove {
        /// [`ObjectKind::List`] or [`ObjectKind::Map`]; must match the object.
        kind: ObjectKind,
        /// The list's or map's sid or unique name.
        object: String,
        /// The item: [`ItemKey::Index`] for a list, [`ItemKey::Key`] for a map.
        key: ItemKey,
        /// Remove only if the item is at this revision, else `Conflict`; `None`:
        /// unconditional.
        if_match: Option<u64>,
    },
    /// A page of items starting at `from` (inclusive) in `order`; `limit`
    /// 1..=`Limits::max_page` (default 1,000). Answer: [`Response::Items`].
    Items {
        /// [`ObjectKind::List`] or [`ObjectKind::Map`]; must match the object.
        kind: ObjectKind,
        /// The list's or map's sid or unique name.
        object: String,
        /// The first item of the page (inclusive); `None`: from the first item in `order`.
        /// Pass the previous page's `next` to continue.
        from: Option<ItemKey>,
        /// By index (lists) or key (maps), ascending or descending.
        order: Order,
        /// Most items to return, 1..=`Limits::max_page`, else `InvalidArgument`.
        limit: u32,
    },
    /// Sends a message to the stream's current subscribers (creating the stream if needed).
    /// Nothing is stored. Answer: [`Response::Published`].
    Publish {
        /// The stream's sid (`TO…`) or unique name (a name creates it if missing).
        stream: String,
        /// The message, JSON text of at most `Limits::max_message_bytes` (default 4 KiB).
        data: String,
    },
    /// Subscribes to an object's events. `sub_id` is chosen by the client and tags every
    /// event frame of this subscription. With `since`, only what came after that revision
    /// is sent (or a snapshot when it is no longer known); without, a snapshot first.
    /// Answer: [`Response::Subscribed`]; events follow on the event stream.
    Subscribe {
        /// The client's id for this subscription, unique among the connection's live
        /// subscriptions (a reused one is `InvalidArgument`; past 1,024 subscriptions on
        /// one connection, `RateLimited`).
        sub_id: u64,
        /// The object's sid or unique name (any kind).
        object: String,
        /// The revision the client's replica already has; `None`: start with a snapshot.
        since: Option<u64>,
        /// Lists: how many of the newest items the snapshot carries (default
        /// [`DEFAULT_LIST_WINDOW`](crate::limits::DEFAULT_LIST_WINDOW), clamped to
        /// 1..=`Limits::max_page`). Ignored for other kinds.
        window: Option<u32>,
    },
    /// Ends a subscription; answer: [`Response::Unsubscribed`].
    Unsubscribe {
        /// The `sub_id` given to `Subscribe`.
        sub_id: u64,
    },
    // Administration: backend (API key) connections only.
    /// Creates a service (backend only, like every request below; a token's is
    /// `Forbidden`). Answer: [`Response::Service`]; `AlreadyExists` if the name is taken.
    ServiceCreate {
        /// An optional name to address the service by.
        unique_name: Option<String>,
        /// Its flags; out-of-range values are `InvalidArgument`.
        flags: ServiceFlags,
    },
    /// Every service of the installation; answer: [`Response::Services`].
    ServiceList,
    /// One service; answer: [`Response::Service`].
    /// `service`: sid or unique name, here and below.
    ServiceGet {
        /// The service's sid (`IS…`) or unique name.
        service: String,
    },
    /// Changes the flags that are `Some` in `flags`. Answer: [`Response::Service`].
    ServiceUpdate {
        /// The service's sid (`IS…`) or unique name.
        service: String,
        /// The flags to change.
        flags: ServiceFlagsPatch,
    },
    /// Deletes the service with every object and permission in it, and closes the
    /// connections acting in it. Answer: [`Response::Done`].
    ServiceDelete {
        /// The service's sid (`IS…`) or unique name.
        service: String,
    },
    /// A new API key; its secret is in the answer and never again.
    /// Answer: [`Response::Key`].
    KeyCreate {
        /// An optional label for people.
        friendly_name: Option<String>,
    },
    /// Every API key, without secrets; answer: [`Response::Keys`].
    KeyList,
    /// Revokes a key: every token it signed is refused from now on, live ones too.
    /// Answer: [`Response::Key`]. The key in `admin.json` cannot be revoked.
    KeyRevoke {
        /// The key's sid, `SK` + 32 hex digits.
        sid: String,
    },
    /// Sets exactly these rights of `identity` (`*`: every identity) on the object, in
    /// the connection's service. Answer: [`Response::Permission`]. Takes effect at once,
    /// live subscriptions included.
    PermissionGrant {
        /// The object's sid or unique name.
        object: String,
        /// A token identity (1..=`Limits::max_identity_chars` characters) or `*`.
        identity: String,
        /// The rights it holds from now on (all `false` removes the grant).
        rights: Rights,
    },
    /// Removes every right `identity` was granted on the object; answer:
    /// [`Response::Done`]. A subscriber that loses `read` is told and dropped.
    PermissionRevoke {
        /// The object's sid or unique name.
        object: String,
        /// The identity (or `*`) whose grant is removed.
        identity: String,
    },
    /// The grants on an object; answer: [`Response::Permissions`].
    PermissionList {
        /// The object's sid or unique name.
        object: String,
    },
    // Appended after the administration requests so that the variant indices above
    // (bincode's tags) stay as they were: a client built before it keeps working.
    /// Map: creates the item only if its key is absent (an expired item counts as
    /// absent), creating the map if needed like [`Request::ItemSet`]; if the item is
    /// there, `AlreadyExists` and nothing changes. The check and the write are one step
    /// on the server, so no other writer's item is overwritten. List: `InvalidArgument`
    /// (a list item is only ever created by [`Request::ListPush`]). Answer:
    /// [`Response::Written`].
    ItemCreate {
        /// [`ObjectKind::Map`]; must match the object.
        kind: ObjectKind,
        /// The map's sid (`MP…`) or unique name (a name creates it if missing).
        object: String,
        /// The item: [`ItemKey::Key`].
        key: ItemKey,
        /// The item's value, JSON text of at most `Limits::max_data_bytes`.
        data: String,
        /// The item's time to live in seconds; `None` or `Some(0)`: no expiry.
        ttl: Option<u64>,
        /// The item lives while the writer's identity has a live connection (see
        /// `ItemSet::ephemeral`).
        ephemeral: bool,
    },
    /// Changes only the time to live of an object (`key: None`, any kind) or of one list
    /// or map item, not its data: no new revision, no event. Needs `manage` under ACL.
    /// Answer: [`Response::Object`] for an object, [`Response::Written`] for an item;
    /// `NotFound` if it does not exist.
    SetTtl {
        /// The object's kind; must match.
        kind: ObjectKind,
        /// The object's sid or unique name.
        object: String,
        /// An item of a list or map: [`ItemKey::Index`] or [`ItemKey::Key`]; `None`:
        /// the object itself.
        key: Option<ItemKey>,
        /// Seconds from now, up to `Limits::max_ttl_s`; 0: no expiry.
        ttl: u64,
    },
    /// The installation's live nodes, where a client goes when its node does: one for
    /// a single server, every registered node in cluster mode (this one first). Asked
    /// after `Welcome`, whose layout older clients decode, so it cannot grow.
    /// Answer: [`Response::Nodes`].
    Nodes,
}

/// A service's flags as set at creation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct ServiceFlags {
    /// Whether the ACL applies to token holders (default `false`: every valid token has
    /// full access within the service, development mode).
    pub acl_enabled: bool,
    /// Where the service's webhooks are POSTed (an `http://` or `https://` URL of at most
    /// 2,048 characters); `None`: no webhooks.
    pub webhook_url: Option<String>,
    /// Whether changes by the backend (and the server's own, both `system`) also send
    /// webhooks (Twilio's `WebhooksFromRestEnabled`); default `false`.
    pub webhooks_from_backend: bool,
    /// Whether `endpoint_connected` / `endpoint_disconnected` webhooks are sent when an
    /// identity comes and goes (needs `webhook_url`).
    pub reachability_webhooks_enabled: bool,
    /// Whether an identity's departure (removing its ephemeral items, and its
    /// `endpoint_disconnected` webhook) waits for the debouncing window; off: at once
    /// (except right after a server restart, when the window always applies).
    pub reachability_debouncing_enabled: bool,
    /// The debouncing window in ms, 1,000..=30,000 (else `InvalidArgument`); `None`: 5,000.
    pub reachability_debouncing_window_ms: Option<u32>,
    /// Whether access-token holders may create objects.
    pub token_create: TokenCreate,
    /// A label for people (Twilio's `FriendlyName`), at most 255 characters.
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
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
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
    /// The flag's value as the CLI and JSON spell it: `own` or `none`.
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
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct ServiceFlagsPatch {
    /// New [`ServiceFlags::acl_enabled`]; takes effect at once, live subscriptions included.
    pub acl_enabled: Option<bool>,
    /// New [`ServiceFlags::webhook_url`]; `Some(None)` clears it.
    pub webhook_url: Option<Option<String>>,
    /// New [`ServiceFlags::webhooks_from_backend`].
    pub webhooks_from_backend: Option<bool>,
    /// New [`ServiceFlags::reachability_webhooks_enabled`].
    pub reachability_webhooks_enabled: Option<bool>,
    /// New [`ServiceFlags::reachability_debouncing_enabled`].
    pub reachability_debouncing_enabled: Option<bool>,
    /// New [`ServiceFlags::reachability_debouncing_window_ms`], 1,000..=30,000 ms.
    pub reachability_debouncing_window_ms: Option<u32>,
    /// New [`ServiceFlags::token_create`].
    pub token_create: Option<TokenCreate>,
    /// New [`ServiceFlags::friendly_name`]; an empty name clears it.
    pub friendly_name: Option<String>,
}

/// A service as administration shows it: its flags (with defaults filled in) and dates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct ServiceInfo {
    /// The service's sid, `IS` + 32 hex digits.
    pub sid: String,
    /// Its unique name, if it has one.
    pub unique_name: Option<String>,
    /// See [`ServiceFlags::acl_enabled`].
    pub acl_enabled: bool,
    /// See [`ServiceFlags::webhook_url`].
    pub webhook_url: Option<String>,
    /// See [`ServiceFlags::webhooks_from_backend`].
    pub webhooks_from_backend: bool,
    /// See [`ServiceFlags::reachability_webhooks_enabled`].
    pub reachability_webhooks_enabled: bool,
    /// See [`ServiceFlags::reachability_debouncing_enabled`].
    pub reachability_debouncing_enabled: bool,
    /// The debouncing window in effect, in ms (5,000 unless set).
    pub reachability_debouncing_window_ms: u32,
    /// When it was created, Unix milliseconds.
    pub date_created: u64,
    /// When its flags last changed, Unix milliseconds.
    pub date_updated: u64,
    /// See [`ServiceFlags::token_create`].
    pub token_create: TokenCreate,
    /// See [`ServiceFlags::friendly_name`].
    pub friendly_name: Option<String>,
    /// Webhook events this server run dropped for the service: its queue was full
    /// (the oldest went) or every delivery attempt failed. Counted from server start.
    pub webhooks_dropped: u64,
}

/// An API key as administration shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct KeyInfo {
    /// The key's sid, `SK` + 32 hex digits (the `iss` of tokens it signs).
    pub sid: String,
    /// The label given at creation, if any.
    pub friendly_name: Option<String>,
    /// The secret: only in the answer to `KeyCreate`, `None` everywhere else.
    pub secret: Option<String>,
    /// When it was created, Unix milliseconds.
    pub date_created: u64,
    /// Whether it was revoked (it and every token it signed are refused).
    pub revoked: bool,
}

/// Rights an identity holds on an object.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct Rights {
    /// get, subscribe
    pub read: bool,
    /// change data and items, publish
    pub write: bool,
    /// delete the object, change its TTL
    pub manage: bool,
}

/// One grant: the rights of an identity on an object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct PermissionInfo {
    /// The object's sid.
    pub object_sid: String,
    /// The identity the rights are granted to, or `*` for every identity of the service.
    pub identity: String,
    /// What it may do.
    pub rights: Rights,
}

/// The answer to one request, with its id; id 0 carries an error tied to no request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct ResponseFrame {
    /// The [`RequestFrame::id`] of the request answered, or 0 for an error tied to none.
    pub id: u64,
    /// The answer, or why the request failed.
    pub result: Result<Response, WireError>,
}

/// A successful answer; each [`Request`] variant says which one it gets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub enum Response {
    /// The answer to `Hello`: the connection is authenticated.
    Welcome(Welcome),
    /// The answer to `UpdateToken`: the new token is in effect.
    TokenUpdated {
        /// The new token's `exp`, in Unix seconds.
        expires_at: u64,
    },
    /// The answer to `Ping`.
    Pong,
    /// The answer to `DocGet`.
    Document(DocumentInfo),
    /// An object was deleted; `revision` is its last revision.
    Deleted {
        /// The deleted object's sid.
        sid: String,
        /// The revision of the removal itself (one past the object's last change), as
        /// carried by the `ObjectRemoved` event.
        revision: u64,
    },
    /// The answer to `Create` and `Fetch`: the object's metadata.
    Object(ObjectInfo),
    /// The answer to `ItemGet`.
    Item(ItemInfo),
    /// An item was removed; `revision` is the object's revision after the removal.
    ItemRemoved {
        /// The removed item's index or key.
        key: ItemKey,
        /// The object's revision after the removal.
        revision: u64,
    },
    /// A page of items; `next` is where the following page starts, if there is one.
    Items {
        /// The page, in the requested order. It may hold fewer than `limit` items (pages
        /// are also bounded in bytes, and expired items are left out) and still have a
        /// `next`.
        items: Vec<ItemInfo>,
        /// The key to pass as `from` for the next page; `None`: this was the last.
        next: Option<ItemKey>,
    },
    /// The answer to `Publish`: the message went out to the current subscribers.
    Published {
        /// The message's number in the stream, as in `EventKind::MessagePublished`.
        sequence: u64,
    },
    /// The answer to `Subscribe`: the subscription is live; its events (a snapshot or
    /// the missed changes first) come on the event stream tagged with `sub_id`.
    Subscribed {
        /// The client's subscription id, echoed.
        sub_id: u64,
        /// The sid of the object subscribed to (resolved from a unique name).
        object_sid: String,
        /// The object's kind, which says which events to expect.
        kind: ObjectKind,
    },
    /// The answer to `Unsubscribe`: no more events for `sub_id`.
    Unsubscribed {
        /// The subscription ended.
        sub_id: u64,
    },
    /// The answer to `ServiceCreate`, `ServiceGet` and `ServiceUpdate`.
    Service(ServiceInfo),
    /// The answer to `ServiceList`.
    Services(Vec<ServiceInfo>),
    /// The answer to `KeyCreate` (with the secret) and `KeyRevoke` (without).
    Key(KeyInfo),
    /// The answer to `KeyList` (no secrets).
    Keys(Vec<KeyInfo>),
    /// The answer to `PermissionGrant`: the rights now held.
    Permission(PermissionInfo),
    /// The answer to `PermissionList`: every grant on the object.
    Permissions(Vec<PermissionInfo>),
    /// Done; nothing to return (a permission revoke, a service deletion).
    Done,
    /// The answer to a write of data: document `set` and `update`, list `push`, item
    /// `set` and `update`.
    Written(WriteInfo),
    /// A page of a service's lists, maps or streams, in sid order; `next`: the sid to
    /// continue after. (Produced for the HTTP edge's listings; no QUIC request asks
    /// for it yet.)
    Objects {
        /// The objects the caller may read, at most the page size.
        objects: Vec<ObjectInfo>,
        /// The last sid of this page, to continue after; `None`: this was the last page.
        next: Option<String>,
    },
    /// A page of a service's documents, with their data, in sid order. (HTTP edge only,
    /// as `Objects`.)
    Documents {
        /// The documents the caller may read, at most the page size.
        documents: Vec<DocumentInfo>,
        /// The last sid of this page, to continue after; `None`: this was the last page.
        next: Option<String>,
    },
    /// The answer to `Nodes`: the live nodes, the answering one first.
    Nodes(Vec<NodeInfo>),
}

/// One live node of an installation: where clients reach it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct NodeInfo {
    /// The node's id (stable for its run; `local` for a single server).
    pub id: String,
    /// Its QUIC address, `host:port`.
    pub quic: String,
    /// Its HTTPS base URL (REST and the WebSocket edge at `/v1/ws`), if it serves HTTP.
    pub https: Option<String>,
}

/// What a write of data did, as the writer may see it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct WriteInfo {
    /// The sid of the object written (resolved from, or created for, a unique name).
    pub object_sid: String,
    /// The object's kind.
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

/// The value after a write ([`WriteInfo::value`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub enum WrittenValue {
    /// After a document `set` or `update`.
    Document(DocumentInfo),
    /// After a list `push` or an item `set` or `update`.
    Item(ItemInfo),
}

/// The answer to `Hello`: who the connection is and what it may send.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct Welcome {
    /// Unique per server run; events caused by this connection carry it as `origin`.
    pub connection_id: u64,
    /// `None` for an API-key (backend) connection.
    pub identity: Option<String>,
    /// The service the connection acts in, `IS` + 32 hex digits.
    pub service_sid: String,
    /// The installation's account sid, `AC` + 32 hex digits.
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
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct DocumentInfo {
    /// The document's sid, `ET` + 32 hex digits.
    pub sid: String,
    /// Its unique name, if it has one.
    pub unique_name: Option<String>,
    /// Its current revision (0 at creation, +1 per change).
    pub revision: u64,
    /// JSON text.
    pub data: String,
    /// The identity that created it, or `system` for the backend.
    pub created_by: String,
    /// Creation time, Unix milliseconds.
    pub date_created: u64,
    /// Last change, Unix milliseconds.
    pub date_updated: u64,
    /// When it expires, Unix milliseconds; `None`: never.
    pub date_expires: Option<u64>,
}

/// One change to an object, as delivered to subscribers and kept in the change log.
/// It is encoded once and the same bytes go to every subscriber.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct Event {
    /// The sid of the object that changed.
    pub object_sid: String,
    /// The object's revision after this change.
    pub revision: u64,
    /// Connection id of the connection whose request caused it; 0 for the server itself
    /// (expiry, presence, snapshots) and for HTTP requests. Compare with
    /// [`Welcome::connection_id`] to tell one's own changes.
    pub origin: u64,
    /// Identity that caused it (`system` for the backend or the server).
    pub actor: String,
    /// What happened.
    pub kind: EventKind,
}

/// What an [`Event`] says happened.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub enum EventKind {
    /// The whole current state: the first event of a subscription, or a resync when the
    /// missed events are no longer known or the subscriber fell behind. Replace the replica.
    Snapshot {
        /// The object's state at the event's revision.
        state: ObjectState,
    },
    /// A document was created or its data changed (`set` or `update`).
    DocumentUpdated {
        /// The new data, JSON text.
        data: String,
        /// The data before the change; `None` when this change created the document.
        previous: Option<String>,
        /// Time of the change, Unix milliseconds.
        date_updated: u64,
    },
    /// The object was deleted or expired.
    ObjectRemoved {
        /// Why: `Write` (deleted) or `Expired`.
        reason: Reason,
    },
    /// A list item was pushed or a map item created.
    ItemAdded {
        /// The new item.
        item: ItemInfo,
    },
    /// An item's data changed (`set` or `update`).
    ItemUpdated {
        /// The item after the change.
        item: ItemInfo,
        /// Its data before the change, JSON text.
        previous: String,
    },
    /// An item was removed, expired, or (ephemeral) lost its writer.
    ItemRemoved {
        /// The removed item's index or key.
        key: ItemKey,
        /// Its last data, JSON text.
        previous: String,
        /// Why it went.
        reason: Reason,
    },
    /// A stream message. `sequence` counts the stream's messages (from 1 at server start),
    /// so a subscriber can tell when it missed some.
    MessagePublished {
        /// The message, JSON text.
        data: String,
        /// The message's number in the stream.
        sequence: u64,
    },
    /// Items of the snapshot just sent (collections are sent in chunks that fit a frame);
    /// `done` marks the last chunk.
    SnapshotItems {
        /// A chunk of the snapshot's items, in ascending order.
        items: Vec<ItemInfo>,
        /// `true` on the last chunk (which may be empty).
        done: bool,
    },
    /// The server ends this subscription (e.g. access was revoked); no more events follow.
    SubscriptionEnded {
        /// Why (e.g. `Forbidden` after a revoke).
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

/// An object's whole state, as a [`EventKind::Snapshot`] carries it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub enum ObjectState {
    /// A document: metadata and data, complete in this event.
    Document(DocumentInfo),
    /// Followed by `SnapshotItems`: the items with index >= `window_start`.
    List {
        /// The list's metadata.
        info: ObjectInfo,
        /// The lowest index the snapshot carries (the subscription's window of newest
        /// items); older items are read with `Items`.
        window_start: u64,
    },
    /// Followed by `SnapshotItems`: every item.
    Map {
        /// The map's metadata.
        info: ObjectInfo,
    },
    /// `sequence` of the last message published, so the next one is `sequence + 1`.
    Stream {
        /// The stream's metadata.
        info: ObjectInfo,
        /// The last message's sequence (0: none since server start).
        sequence: u64,
    },
}

/// Any object's metadata. Times are Unix milliseconds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct ObjectInfo {
    /// The object's sid (`ET`, `ES`, `MP` or `TO` + 32 hex digits).
    pub sid: String,
    /// Its kind (also told by the sid's prefix).
    pub kind: ObjectKind,
    /// Its unique name, if it has one.
    pub unique_name: Option<String>,
    /// Its current revision (0 at creation, +1 per change to it or its items).
    pub revision: u64,
    /// The identity that created it, or `system` for the backend.
    pub created_by: String,
    /// Creation time.
    pub date_created: u64,
    /// Last change.
    pub date_updated: u64,
    /// When it expires; `None`: never.
    pub date_expires: Option<u64>,
}

/// Where an item sits: a list index or a map key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub enum ItemKey {
    /// A list item's index, given by `push` and never reused.
    Index(u64),
    /// A map item's key, 1..=`Limits::max_name_chars` characters.
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

/// The order of a page of items: by list index or by map key.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub enum Order {
    /// Lowest index or key first (the default).
    #[default]
    Asc,
    /// Highest index or key first.
    Desc,
}

/// A list or map item. `revision` is the object revision at which it last changed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct ItemInfo {
    /// The item's list index or map key.
    pub key: ItemKey,
    /// The object revision at which the item last changed.
    pub revision: u64,
    /// JSON text.
    pub data: String,
    /// The identity that created the item, or `system` for the backend.
    pub created_by: String,
    /// Creation time, Unix milliseconds.
    pub date_created: u64,
    /// Last change, Unix milliseconds.
    pub date_updated: u64,
    /// When it expires, Unix milliseconds; `None`: never.
    pub date_expires: Option<u64>,
}

/// Why an object or item went away (in `ObjectRemoved` and `ItemRemoved` events).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub enum Reason {
    /// A client or the backend deleted or removed it.
    Write,
    /// Its TTL ran out and the reaper deleted it.
    Expired,
    /// An ephemeral item whose writer's identity has no live connection left (after the
    /// service's debouncing window).
    Disconnected,
}

impl Reason {
    /// The lowercase name used by the CLI, webhooks and docs: `write`, `expired`,
    /// `disconnected`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Write => "write",
            Reason::Expired => "expired",
            Reason::Disconnected => "disconnected",
        }
    }
}
