// Generated from the Rust wire types (syncline-proto, feature `typescript`).
// Do not edit: run `SYNCLINE_BLESS=1 cargo test -p syncline-tests --test typescript`.
// Every `data` and `previous` field is JSON text: JSON.parse it.

/**
 * A request from the client, tagged with an id the response echoes. Id 0 is not used
 * by requests: the server answers with id 0 only errors tied to no request (token
 * expiry, a frame whose id cannot be read), and refuses a request numbered 0 with
 * such a notice (`InvalidArgument`) without running it.
 */
export type RequestFrame = { 
/**
 * Chosen by the client and echoed in [`ResponseFrame::id`]; nonzero, and unique
 * among the client's requests in flight, since responses may come back in any order.
 */
id: number, 
/**
 * What is asked.
 */
request: Request, };

/**
 * How a connection authenticates. Its `Debug` never prints a secret.
 */
export type Credential = { "Token": string } | { "ApiKey": { 
/**
 * The key's sid, `SK` + 32 hex digits.
 */
sid: string, 
/**
 * The key's secret, exactly as printed when the key was created.
 */
secret: string, } };

/**
 * A request from the client to the server, one per [`RequestFrame`]. Each names the
 * [`Response`] variant that answers it; any may instead fail with a [`WireError`].
 */
export type Request = { "Hello": { 
/**
 * The access token or API key the connection authenticates with.
 */
credential: Credential, 
/**
 * API key: the service to act in (`None`: the installation's default service).
 * Token: `None` or the token's own service, else `Forbidden`.
 */
service: string | null, } } | { "UpdateToken": { 
/**
 * The new JWT access token (at most `Limits::max_token_bytes`).
 */
token: string, } } | "Ping" | { "DocGet": { 
/**
 * The document's sid (`ET…`) or unique name.
 */
document: string, } } | { "DocSet": { 
/**
 * The document's sid (`ET…`) or unique name (a name creates it if missing).
 */
document: string, 
/**
 * The new value, JSON text of at most `Limits::max_data_bytes`.
 */
data: string, 
/**
 * Write only if the document is at this revision, else `Conflict` (`NotFound`
 * if the document does not exist); `None`: unconditional.
 */
if_match: number | null, 
/**
 * New time to live in seconds from now (`Some(0)`: none); `None` keeps the
 * current expiry (none for a new document).
 */
ttl: number | null, } } | { "DocUpdate": { 
/**
 * The document's sid (`ET…`) or unique name.
 */
document: string, 
/**
 * A JSON object (else `InvalidArgument`); a key whose value is `null` is removed.
 */
data: string, 
/**
 * Write only if the document is at this revision, else `Conflict`; `None`:
 * unconditional.
 */
if_match: number | null, } } | { "Create": { 
/**
 * What to create.
 */
kind: ObjectKind, 
/**
 * An optional name to address it by (see [`crate::ids::validate_unique_name`]).
 */
unique_name: string | null, 
/**
 * Time to live in seconds; `None` or `Some(0)`: no expiry.
 */
ttl: number | null, } } | { "Fetch": { 
/**
 * The object's sid or unique name.
 */
object: string, } } | { "Delete": { 
/**
 * The kind the caller expects; a different kind is refused. `None`: any kind.
 */
kind: ObjectKind | null, 
/**
 * The object's sid or unique name.
 */
object: string, 
/**
 * Delete only if the object is at this revision, else `Conflict`; `None`:
 * unconditional.
 */
if_match: number | null, } } | { "ListPush": { 
/**
 * The list's sid (`ES…`) or unique name (a name creates it if missing).
 */
list: string, 
/**
 * The item's value, JSON text of at most `Limits::max_data_bytes`.
 */
data: string, 
/**
 * The item's time to live in seconds; `None` or `Some(0)`: no expiry.
 */
ttl: number | null, 
/**
 * The item lives while the writer's identity has a live connection (see
 * `ItemSet::ephemeral`).
 */
ephemeral: boolean, } } | { "ItemGet": { 
/**
 * [`ObjectKind::List`] or [`ObjectKind::Map`]; must match the object.
 */
kind: ObjectKind, 
/**
 * The list's or map's sid or unique name.
 */
object: string, 
/**
 * The item: [`ItemKey::Index`] for a list, [`ItemKey::Key`] for a map.
 */
key: ItemKey, } } | { "ItemSet": { 
/**
 * [`ObjectKind::List`] or [`ObjectKind::Map`]; must match the object.
 */
kind: ObjectKind, 
/**
 * The list's or map's sid or unique name.
 */
object: string, 
/**
 * The item: [`ItemKey::Index`] for a list, [`ItemKey::Key`] for a map.
 */
key: ItemKey, 
/**
 * The item's new value, JSON text of at most `Limits::max_data_bytes`.
 */
data: string, 
/**
 * Write only if the item is at this revision, else `Conflict` (`NotFound` if the
 * item does not exist); `None`: unconditional.
 */
if_match: number | null, 
/**
 * New time to live in seconds from now (`Some(0)`: none); `None` keeps the
 * item's current expiry.
 */
ttl: number | null, 
/**
 * The item lives while the writer's identity has a live connection: once its
 * last connection ends (and the service's debouncing window passes) it is
 * removed with `reason: Disconnected`. Needs an access token's connection.
 */
ephemeral: boolean, } } | { "ItemUpdate": { 
/**
 * [`ObjectKind::List`] or [`ObjectKind::Map`]; must match the object.
 */
kind: ObjectKind, 
/**
 * The list's or map's sid or unique name.
 */
object: string, 
/**
 * The item: [`ItemKey::Index`] for a list, [`ItemKey::Key`] for a map.
 */
key: ItemKey, 
/**
 * A JSON object (else `InvalidArgument`); a key whose value is `null` is removed.
 */
data: string, 
/**
 * Write only if the item is at this revision, else `Conflict`; `None`:
 * unconditional.
 */
if_match: number | null, } } | { "ItemRemove": { 
/**
 * [`ObjectKind::List`] or [`ObjectKind::Map`]; must match the object.
 */
kind: ObjectKind, 
/**
 * The list's or map's sid or unique name.
 */
object: string, 
/**
 * The item: [`ItemKey::Index`] for a list, [`ItemKey::Key`] for a map.
 */
key: ItemKey, 
/**
 * Remove only if the item is at this revision, else `Conflict`; `None`:
 * unconditional.
 */
if_match: number | null, } } | { "Items": { 
/**
 * [`ObjectKind::List`] or [`ObjectKind::Map`]; must match the object.
 */
kind: ObjectKind, 
/**
 * The list's or map's sid or unique name.
 */
object: string, 
/**
 * The first item of the page (inclusive); `None`: from the first item in `order`.
 * Pass the previous page's `next` to continue.
 */
from: ItemKey | null, 
/**
 * By index (lists) or key (maps), ascending or descending.
 */
order: Order, 
/**
 * Most items to return, 1..=`Limits::max_page`, else `InvalidArgument`.
 */
limit: number, } } | { "Publish": { 
/**
 * The stream's sid (`TO…`) or unique name (a name creates it if missing).
 */
stream: string, 
/**
 * The message, JSON text of at most `Limits::max_message_bytes` (default 4 KiB).
 */
data: string, } } | { "Subscribe": { 
/**
 * The client's id for this subscription, unique among the connection's live
 * subscriptions (a reused one is `InvalidArgument`; past 1,024 subscriptions on
 * one connection, `RateLimited`).
 */
sub_id: number, 
/**
 * The object's sid or unique name (any kind).
 */
object: string, 
/**
 * The revision the client's replica already has; `None`: start with a snapshot.
 */
since: number | null, 
/**
 * Lists: how many of the newest items the snapshot carries (default
 * [`DEFAULT_LIST_WINDOW`](crate::limits::DEFAULT_LIST_WINDOW), clamped to
 * 1..=`Limits::max_page`). Ignored for other kinds.
 */
window: number | null, } } | { "Unsubscribe": { 
/**
 * The `sub_id` given to `Subscribe`.
 */
sub_id: number, } } | { "ServiceCreate": { 
/**
 * An optional name to address the service by.
 */
unique_name: string | null, 
/**
 * Its flags; out-of-range values are `InvalidArgument`.
 */
flags: ServiceFlags, } } | "ServiceList" | { "ServiceGet": { 
/**
 * The service's sid (`IS…`) or unique name.
 */
service: string, } } | { "ServiceUpdate": { 
/**
 * The service's sid (`IS…`) or unique name.
 */
service: string, 
/**
 * The flags to change.
 */
flags: ServiceFlagsPatch, } } | { "ServiceDelete": { 
/**
 * The service's sid (`IS…`) or unique name.
 */
service: string, } } | { "KeyCreate": { 
/**
 * An optional label for people.
 */
friendly_name: string | null, } } | "KeyList" | { "KeyRevoke": { 
/**
 * The key's sid, `SK` + 32 hex digits.
 */
sid: string, } } | { "PermissionGrant": { 
/**
 * The object's sid or unique name.
 */
object: string, 
/**
 * A token identity (1..=`Limits::max_identity_chars` characters) or `*`.
 */
identity: string, 
/**
 * The rights it holds from now on (all `false` removes the grant).
 */
rights: Rights, } } | { "PermissionRevoke": { 
/**
 * The object's sid or unique name.
 */
object: string, 
/**
 * The identity (or `*`) whose grant is removed.
 */
identity: string, } } | { "PermissionList": { 
/**
 * The object's sid or unique name.
 */
object: string, } } | { "ItemCreate": { 
/**
 * [`ObjectKind::Map`]; must match the object.
 */
kind: ObjectKind, 
/**
 * The map's sid (`MP…`) or unique name (a name creates it if missing).
 */
object: string, 
/**
 * The item: [`ItemKey::Key`].
 */
key: ItemKey, 
/**
 * The item's value, JSON text of at most `Limits::max_data_bytes`.
 */
data: string, 
/**
 * The item's time to live in seconds; `None` or `Some(0)`: no expiry.
 */
ttl: number | null, 
/**
 * The item lives while the writer's identity has a live connection (see
 * `ItemSet::ephemeral`).
 */
ephemeral: boolean, } } | { "SetTtl": { 
/**
 * The object's kind; must match.
 */
kind: ObjectKind, 
/**
 * The object's sid or unique name.
 */
object: string, 
/**
 * An item of a list or map: [`ItemKey::Index`] or [`ItemKey::Key`]; `None`:
 * the object itself.
 */
key: ItemKey | null, 
/**
 * Seconds from now, up to `Limits::max_ttl_s`; 0: no expiry.
 */
ttl: number, } } | "Nodes";

/**
 * A service's flags as set at creation.
 */
export type ServiceFlags = { 
/**
 * Whether the ACL applies to token holders (default `false`: every valid token has
 * full access within the service, development mode).
 */
acl_enabled: boolean, 
/**
 * Where the service's webhooks are POSTed (an `http://` or `https://` URL of at most
 * 2,048 characters); `None`: no webhooks.
 */
webhook_url: string | null, 
/**
 * Whether changes by the backend (and the server's own, both `system`) also send
 * webhooks (Twilio's `WebhooksFromRestEnabled`); default `false`.
 */
webhooks_from_backend: boolean, 
/**
 * Whether `endpoint_connected` / `endpoint_disconnected` webhooks are sent when an
 * identity comes and goes (needs `webhook_url`).
 */
reachability_webhooks_enabled: boolean, 
/**
 * Whether an identity's departure (removing its ephemeral items, and its
 * `endpoint_disconnected` webhook) waits for the debouncing window; off: at once
 * (except right after a server restart, when the window always applies).
 */
reachability_debouncing_enabled: boolean, 
/**
 * The debouncing window in ms, 1,000..=30,000 (else `InvalidArgument`); `None`: 5,000.
 */
reachability_debouncing_window_ms: number | null, 
/**
 * Whether access-token holders may create objects.
 */
token_create: TokenCreate, 
/**
 * A label for people (Twilio's `FriendlyName`), at most 255 characters.
 */
friendly_name: string | null, };

/**
 * Whether access-token holders may create objects in a service (by writing to a free
 * name, pushing to a new list, publishing to a new stream, or `create`).
 */
export type TokenCreate = "own" | "none";

/**
 * Flags to change; `None` leaves a flag as it is. `webhook_url: Some(None)` clears it.
 */
export type ServiceFlagsPatch = { 
/**
 * New [`ServiceFlags::acl_enabled`]; takes effect at once, live subscriptions included.
 */
acl_enabled: boolean | null, 
/**
 * New [`ServiceFlags::webhook_url`]; `Some(None)` clears it.
 */
webhook_url: string | null | null, 
/**
 * New [`ServiceFlags::webhooks_from_backend`].
 */
webhooks_from_backend: boolean | null, 
/**
 * New [`ServiceFlags::reachability_webhooks_enabled`].
 */
reachability_webhooks_enabled: boolean | null, 
/**
 * New [`ServiceFlags::reachability_debouncing_enabled`].
 */
reachability_debouncing_enabled: boolean | null, 
/**
 * New [`ServiceFlags::reachability_debouncing_window_ms`], 1,000..=30,000 ms.
 */
reachability_debouncing_window_ms: number | null, 
/**
 * New [`ServiceFlags::token_create`].
 */
token_create: TokenCreate | null, 
/**
 * New [`ServiceFlags::friendly_name`]; an empty name clears it.
 */
friendly_name: string | null, };

/**
 * A service as administration shows it: its flags (with defaults filled in) and dates.
 */
export type ServiceInfo = { 
/**
 * The service's sid, `IS` + 32 hex digits.
 */
sid: string, 
/**
 * Its unique name, if it has one.
 */
unique_name: string | null, 
/**
 * See [`ServiceFlags::acl_enabled`].
 */
acl_enabled: boolean, 
/**
 * See [`ServiceFlags::webhook_url`].
 */
webhook_url: string | null, 
/**
 * See [`ServiceFlags::webhooks_from_backend`].
 */
webhooks_from_backend: boolean, 
/**
 * See [`ServiceFlags::reachability_webhooks_enabled`].
 */
reachability_webhooks_enabled: boolean, 
/**
 * See [`ServiceFlags::reachability_debouncing_enabled`].
 */
reachability_debouncing_enabled: boolean, 
/**
 * The debouncing window in effect, in ms (5,000 unless set).
 */
reachability_debouncing_window_ms: number, 
/**
 * When it was created, Unix milliseconds.
 */
date_created: number, 
/**
 * When its flags last changed, Unix milliseconds.
 */
date_updated: number, 
/**
 * See [`ServiceFlags::token_create`].
 */
token_create: TokenCreate, 
/**
 * See [`ServiceFlags::friendly_name`].
 */
friendly_name: string | null, 
/**
 * Webhook events this server run dropped for the service: its queue was full
 * (the oldest went) or every delivery attempt failed. Counted from server start.
 */
webhooks_dropped: number, };

/**
 * An API key as administration shows it.
 */
export type KeyInfo = { 
/**
 * The key's sid, `SK` + 32 hex digits (the `iss` of tokens it signs).
 */
sid: string, 
/**
 * The label given at creation, if any.
 */
friendly_name: string | null, 
/**
 * The secret: only in the answer to `KeyCreate`, `None` everywhere else.
 */
secret: string | null, 
/**
 * When it was created, Unix milliseconds.
 */
date_created: number, 
/**
 * Whether it was revoked (it and every token it signed are refused).
 */
revoked: boolean, };

/**
 * Rights an identity holds on an object.
 */
export type Rights = { 
/**
 * get, subscribe
 */
read: boolean, 
/**
 * change data and items, publish
 */
write: boolean, 
/**
 * delete the object, change its TTL
 */
manage: boolean, };

/**
 * One grant: the rights of an identity on an object.
 */
export type PermissionInfo = { 
/**
 * The object's sid.
 */
object_sid: string, 
/**
 * The identity the rights are granted to, or `*` for every identity of the service.
 */
identity: string, 
/**
 * What it may do.
 */
rights: Rights, };

/**
 * The answer to one request, with its id; id 0 carries an error tied to no request.
 */
export type ResponseFrame = { 
/**
 * The [`RequestFrame::id`] of the request answered, or 0 for an error tied to none.
 */
id: number, 
/**
 * The answer, or why the request failed.
 */
result: { Ok : Response } | { Err : WireError }, };

/**
 * A successful answer; each [`Request`] variant says which one it gets.
 */
export type Response = { "Welcome": Welcome } | { "TokenUpdated": { 
/**
 * The new token's `exp`, in Unix seconds.
 */
expires_at: number, } } | "Pong" | { "Document": DocumentInfo } | { "Deleted": { 
/**
 * The deleted object's sid.
 */
sid: string, 
/**
 * The revision of the removal itself (one past the object's last change), as
 * carried by the `ObjectRemoved` event.
 */
revision: number, } } | { "Object": ObjectInfo } | { "Item": ItemInfo } | { "ItemRemoved": { 
/**
 * The removed item's index or key.
 */
key: ItemKey, 
/**
 * The object's revision after the removal.
 */
revision: number, } } | { "Items": { 
/**
 * The page, in the requested order. It may hold fewer than `limit` items (pages
 * are also bounded in bytes, and expired items are left out) and still have a
 * `next`.
 */
items: Array<ItemInfo>, 
/**
 * The key to pass as `from` for the next page; `None`: this was the last.
 */
next: ItemKey | null, } } | { "Published": { 
/**
 * The message's number in the stream, as in `EventKind::MessagePublished`.
 */
sequence: number, } } | { "Subscribed": { 
/**
 * The client's subscription id, echoed.
 */
sub_id: number, 
/**
 * The sid of the object subscribed to (resolved from a unique name).
 */
object_sid: string, 
/**
 * The object's kind, which says which events to expect.
 */
kind: ObjectKind, } } | { "Unsubscribed": { 
/**
 * The subscription ended.
 */
sub_id: number, } } | { "Service": ServiceInfo } | { "Services": Array<ServiceInfo> } | { "Key": KeyInfo } | { "Keys": Array<KeyInfo> } | { "Permission": PermissionInfo } | { "Permissions": Array<PermissionInfo> } | "Done" | { "Written": WriteInfo } | { "Objects": { 
/**
 * The objects the caller may read, at most the page size.
 */
objects: Array<ObjectInfo>, 
/**
 * The last sid of this page, to continue after; `None`: this was the last page.
 */
next: string | null, } } | { "Documents": { 
/**
 * The documents the caller may read, at most the page size.
 */
documents: Array<DocumentInfo>, 
/**
 * The last sid of this page, to continue after; `None`: this was the last page.
 */
next: string | null, } } | { "Nodes": Array<NodeInfo> };

/**
 * What a write of data did, as the writer may see it.
 */
export type WriteInfo = { 
/**
 * The sid of the object written (resolved from, or created for, a unique name).
 */
object_sid: string, 
/**
 * The object's kind.
 */
kind: ObjectKind, 
/**
 * The object's revision after the write.
 */
revision: number, 
/**
 * Who created the object: `system` for the backend, else an identity, which under
 * ACL keeps full access to it. A backend writing into an object it expected to own
 * learns here that a token holder created it first.
 */
object_created_by: string, 
/**
 * The item written (for a `push`, its new index); `None` for documents.
 */
key: ItemKey | null, 
/**
 * The document or item after the write; `None` when the writer may not read the
 * object (a write grant does not include reading).
 */
value: WrittenValue | null, };

/**
 * The value after a write ([`WriteInfo::value`]).
 */
export type WrittenValue = { "Document": DocumentInfo } | { "Item": ItemInfo };

/**
 * The answer to `Hello`: who the connection is and what it may send.
 */
export type Welcome = { 
/**
 * Unique per server run; events caused by this connection carry it as `origin`.
 */
connection_id: number, 
/**
 * `None` for an API-key (backend) connection.
 */
identity: string | null, 
/**
 * The service the connection acts in, `IS` + 32 hex digits.
 */
service_sid: string, 
/**
 * The installation's account sid, `AC` + 32 hex digits.
 */
account_sid: string, 
/**
 * Unix seconds at which the token expires, its `exp` (`None` for API keys). The
 * server allows `token::CLOCK_SKEW_S` past it before it closes the connection.
 */
token_expires_at: number | null, 
/**
 * The largest request frame body the server accepts (`Limits::max_frame_bytes`);
 * the client refuses a larger request itself rather than send it.
 */
max_frame_bytes: number, };

/**
 * One live node of an installation: where clients reach it.
 */
export type NodeInfo = { 
/**
 * The node's id (stable for its run; `local` for a single server).
 */
id: string, 
/**
 * Its QUIC address, `host:port`.
 */
quic: string, 
/**
 * Its HTTPS base URL (REST and the WebSocket edge at `/v1/ws`), if it serves HTTP.
 */
https: string | null, };

/**
 * A document as readers see it. Times are Unix milliseconds.
 */
export type DocumentInfo = { 
/**
 * The document's sid, `ET` + 32 hex digits.
 */
sid: string, 
/**
 * Its unique name, if it has one.
 */
unique_name: string | null, 
/**
 * Its current revision (0 at creation, +1 per change).
 */
revision: number, 
/**
 * JSON text.
 */
data: string, 
/**
 * The identity that created it, or `system` for the backend.
 */
created_by: string, 
/**
 * Creation time, Unix milliseconds.
 */
date_created: number, 
/**
 * Last change, Unix milliseconds.
 */
date_updated: number, 
/**
 * When it expires, Unix milliseconds; `None`: never.
 */
date_expires: number | null, };

/**
 * One change to an object, as delivered to subscribers and kept in the change log.
 * It is encoded once and the same bytes go to every subscriber.
 */
export type Event = { 
/**
 * The sid of the object that changed.
 */
object_sid: string, 
/**
 * The object's revision after this change.
 */
revision: number, 
/**
 * Connection id of the connection whose request caused it; 0 for the server itself
 * (expiry, presence, snapshots) and for HTTP requests. Compare with
 * [`Welcome::connection_id`] to tell one's own changes.
 */
origin: number, 
/**
 * Identity that caused it (`system` for the backend or the server).
 */
actor: string, 
/**
 * What happened.
 */
kind: EventKind, };

/**
 * What an [`Event`] says happened.
 */
export type EventKind = { "Snapshot": { 
/**
 * The object's state at the event's revision.
 */
state: ObjectState, } } | { "DocumentUpdated": { 
/**
 * The new data, JSON text.
 */
data: string, 
/**
 * The data before the change; `None` when this change created the document.
 */
previous: string | null, 
/**
 * Time of the change, Unix milliseconds.
 */
date_updated: number, } } | { "ObjectRemoved": { 
/**
 * Why: `Write` (deleted) or `Expired`.
 */
reason: Reason, } } | { "ItemAdded": { 
/**
 * The new item.
 */
item: ItemInfo, } } | { "ItemUpdated": { 
/**
 * The item after the change.
 */
item: ItemInfo, 
/**
 * Its data before the change, JSON text.
 */
previous: string, } } | { "ItemRemoved": { 
/**
 * The removed item's index or key.
 */
key: ItemKey, 
/**
 * Its last data, JSON text.
 */
previous: string, 
/**
 * Why it went.
 */
reason: Reason, } } | { "MessagePublished": { 
/**
 * The message, JSON text.
 */
data: string, 
/**
 * The message's number in the stream.
 */
sequence: number, } } | { "SnapshotItems": { 
/**
 * A chunk of the snapshot's items, in ascending order.
 */
items: Array<ItemInfo>, 
/**
 * `true` on the last chunk (which may be empty).
 */
done: boolean, } } | { "SubscriptionEnded": { 
/**
 * Why (e.g. `Forbidden` after a revoke).
 */
error: WireError, } };

/**
 * An object's whole state, as a [`EventKind::Snapshot`] carries it.
 */
export type ObjectState = { "Document": DocumentInfo } | { "List": { 
/**
 * The list's metadata.
 */
info: ObjectInfo, 
/**
 * The lowest index the snapshot carries (the subscription's window of newest
 * items); older items are read with `Items`.
 */
window_start: number, } } | { "Map": { 
/**
 * The map's metadata.
 */
info: ObjectInfo, } } | { "Stream": { 
/**
 * The stream's metadata.
 */
info: ObjectInfo, 
/**
 * The last message's sequence (0: none since server start).
 */
sequence: number, } };

/**
 * Any object's metadata. Times are Unix milliseconds.
 */
export type ObjectInfo = { 
/**
 * The object's sid (`ET`, `ES`, `MP` or `TO` + 32 hex digits).
 */
sid: string, 
/**
 * Its kind (also told by the sid's prefix).
 */
kind: ObjectKind, 
/**
 * Its unique name, if it has one.
 */
unique_name: string | null, 
/**
 * Its current revision (0 at creation, +1 per change to it or its items).
 */
revision: number, 
/**
 * The identity that created it, or `system` for the backend.
 */
created_by: string, 
/**
 * Creation time.
 */
date_created: number, 
/**
 * Last change.
 */
date_updated: number, 
/**
 * When it expires; `None`: never.
 */
date_expires: number | null, };

/**
 * Where an item sits: a list index or a map key.
 */
export type ItemKey = { "Index": number } | { "Key": string };

/**
 * The order of a page of items: by list index or by map key.
 */
export type Order = "Asc" | "Desc";

/**
 * A list or map item. `revision` is the object revision at which it last changed.
 */
export type ItemInfo = { 
/**
 * The item's list index or map key.
 */
key: ItemKey, 
/**
 * The object revision at which the item last changed.
 */
revision: number, 
/**
 * JSON text.
 */
data: string, 
/**
 * The identity that created the item, or `system` for the backend.
 */
created_by: string, 
/**
 * Creation time, Unix milliseconds.
 */
date_created: number, 
/**
 * Last change, Unix milliseconds.
 */
date_updated: number, 
/**
 * When it expires, Unix milliseconds; `None`: never.
 */
date_expires: number | null, };

/**
 * Why an object or item went away (in `ObjectRemoved` and `ItemRemoved` events).
 */
export type Reason = "Write" | "Expired" | "Disconnected";

/**
 * The kinds of synchronized object; each has its own sid prefix.
 */
export type ObjectKind = "Document" | "List" | "Map" | "Stream";

/**
 * The stable code of every error Syncline reports. The names are part of the public
 * contract (CLI output, client API, docs); never rename one.
 */
export type ErrorCode = "Unauthorized" | "TokenExpired" | "Forbidden" | "NotFound" | "AlreadyExists" | "Conflict" | "TooLarge" | "InvalidArgument" | "RateLimited" | "Unavailable" | "Internal";

/**
 * An error as it travels on the wire: a stable code, a human message, and for
 * `Conflict` the object's current revision so the caller can retry without a read.
 */
export type WireError = { 
/**
 * What kind of error it is; match on this, never on the message.
 */
code: ErrorCode, 
/**
 * A human-readable explanation, for logs and people; its wording may change.
 */
message: string, 
/**
 * For [`ErrorCode::Conflict`], the object's (or item's) current revision; `None` for
 * every other code.
 */
current_revision: number | null, };

/**
 * An event of subscription `sub_id`: what QUIC sends as an event frame.
 */
export type EventFrame = { 
/**
 * The `sub_id` the client gave in `Subscribe`.
 */
sub_id: number, 
/**
 * The event.
 */
event: Event, };

/**
 * Any message from the server: an event (it has `sub_id` and `event`) or an answer (it
 * has `id` and `result`).
 */
export type ServerMessage = EventFrame | ResponseFrame;
