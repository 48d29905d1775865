//! The REST surface as data: one table of every path and method Syncline serves over
//! HTTPS, with Twilio's parameter names, the answers and the error statuses. The router
//! checks each request against it (404 for a path it lacks, 405 for a method it lacks)
//! and `/openapi.json` is generated from it, so the document and what is served cannot
//! drift apart.

use std::sync::OnceLock;

use axum::http::Method;
use serde_json::{json, Map, Value};

/// The HTTP methods the REST surface uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Delete,
}

impl Verb {
    fn name(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Delete => "delete",
        }
    }

    fn matches(self, method: &Method) -> bool {
        match self {
            Verb::Get => method == Method::GET,
            Verb::Post => method == Method::POST,
            Verb::Delete => method == Method::DELETE,
        }
    }
}

/// The type of a parameter, as Twilio's form encoding carries it.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    Text,
    /// A name or key: not empty.
    Name,
    Uri,
    Boolean,
    /// A non-negative integer.
    Count,
    /// Seconds to live: 0 (never expires) up to the server's limit.
    Ttl,
    /// JSON text (an object, array or value), as Twilio's `Data`.
    JsonText,
    PageSize,
    /// Milliseconds, 1000 to 30000 (Twilio's range for the debouncing window).
    Window,
    Choice(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub ty: Ty,
    pub required: bool,
    pub doc: &'static str,
}

const fn opt(name: &'static str, ty: Ty, doc: &'static str) -> Param {
    Param {
        name,
        ty,
        required: false,
        doc,
    }
}

const fn req(name: &'static str, ty: Ty, doc: &'static str) -> Param {
    Param {
        name,
        ty,
        required: true,
        doc,
    }
}

/// What a successful answer carries.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// A JSON resource of the named schema.
    Json(&'static str),
    /// Twilio's paging envelope: records of `schema` under `key`, and `meta`.
    Page {
        key: &'static str,
        schema: &'static str,
    },
    /// No body (204).
    Empty,
    /// A short `text/plain` answer (health checks, metrics).
    Text,
    /// `text/event-stream`, open until the client leaves.
    EventStream,
    /// This document.
    OpenApi,
}

/// One (path, method) pair.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    pub verb: Verb,
    pub id: &'static str,
    pub summary: &'static str,
    pub query: &'static [Param],
    pub form: &'static [Param],
    /// Takes `If-Match` (a revision): 412 when it is not the current one.
    pub if_match: bool,
    pub status: u16,
    pub body: Body,
    pub errors: &'static [u16],
    /// Needs no `Authorization`.
    pub public: bool,
    /// A change that needs at least one of its form parameters (54010 otherwise).
    pub at_least_one: bool,
}

pub struct PathSpec {
    /// The OpenAPI template: literal segments, and `{Name}` for one non-empty segment.
    pub path: &'static str,
    pub ops: &'static [Op],
}

impl PathSpec {
    pub fn allows(&self, method: &Method) -> bool {
        self.ops.iter().any(|op| op.verb.matches(method))
    }

    /// Whether the handler of `method` here reads the request body: the API's routes
    /// do; the public ones (health checks, metrics, this document) take none.
    pub fn takes_body(&self, method: &Method) -> bool {
        self.ops
            .iter()
            .find(|op| op.verb.matches(method))
            .is_some_and(|op| !op.public)
    }

    /// The `Allow` header for a 405.
    pub fn allow(&self) -> String {
        self.ops
            .iter()
            .map(|op| op.verb.name().to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn matches(&self, path: &str) -> bool {
        let mut want = self.path.split('/');
        let mut got = path.split('/');
        loop {
            match (want.next(), got.next()) {
                (None, None) => return true,
                (Some(w), Some(g)) if w.starts_with('{') => {
                    if g.is_empty() {
                        return false;
                    }
                }
                (Some(w), Some(g)) if w == g => {}
                _ => return false,
            }
        }
    }
}

/// The table entry for a request path (as sent, percent-encoded), if any.
pub fn lookup(path: &str) -> Option<&'static PathSpec> {
    PATHS.iter().find(|p| p.matches(path))
}

// Errors any authenticated operation can answer: a bad parameter, no or bad
// credentials, no right, no such service or object, a body too slow or too large,
// the rate limit. Creates add 409 (the unique name is taken), If-Match adds 412.
const ERRORS: &[u16] = &[400, 401, 403, 404, 408, 413, 429];
const CREATE_ERRORS: &[u16] = &[400, 401, 403, 404, 408, 409, 413, 429];
const IF_MATCH_ERRORS: &[u16] = &[400, 401, 403, 404, 408, 412, 413, 429];

const PAGING: &[Param] = &[
    opt(
        "PageSize",
        Ty::PageSize,
        "How many records a page holds (default 50; at most the server's page limit).",
    ),
    opt(
        "Page",
        Ty::Count,
        "The page number, for the client's own state (echoed in `meta`).",
    ),
    opt(
        "PageToken",
        Ty::Text,
        "Where the next page starts, as `meta.next_page_url` carries it.",
    ),
];
const ITEM_PAGING: &[Param] = &[
    opt(
        "Order",
        Ty::Choice(&["asc", "desc"]),
        "Items by index (List) or key (Map), ascending by default.",
    ),
    opt(
        "From",
        Ty::Text,
        "The index (List) or key (Map) of the first item.",
    ),
    opt(
        "Bounds",
        Ty::Choice(&["inclusive", "exclusive"]),
        "Whether `From` itself is included (default inclusive).",
    ),
    PAGING[0],
    PAGING[1],
    PAGING[2],
];
const FLAG_DOCS: [Param; 8] = [
    opt("FriendlyName", Ty::Text, "A name for people."),
    opt("WebhookUrl", Ty::Uri, "Where webhooks go (empty: none)."),
    opt(
        "ReachabilityWebhooksEnabled",
        Ty::Boolean,
        "Send reachability webhooks.",
    ),
    opt(
        "AclEnabled",
        Ty::Boolean,
        "Tokens need a Permission per object.",
    ),
    opt(
        "ReachabilityDebouncingEnabled",
        Ty::Boolean,
        "Debounce reachability webhooks.",
    ),
    opt(
        "ReachabilityDebouncingWindow",
        Ty::Window,
        "The debouncing window, in milliseconds.",
    ),
    opt(
        "WebhooksFromRestEnabled",
        Ty::Boolean,
        "Send webhooks for REST writes too.",
    ),
    opt(
        "TokenCreate",
        Ty::Choice(&["own", "none"]),
        "Syncline's own: whether token holders may create objects.",
    ),
];
const SERVICE_UPDATE: &[Param] = &FLAG_DOCS;
const SERVICE_CREATE: &[Param] = &[
    opt(
        "UniqueName",
        Ty::Name,
        "Syncline's own: a unique name usable in place of the sid.",
    ),
    FLAG_DOCS[0],
    FLAG_DOCS[1],
    FLAG_DOCS[2],
    FLAG_DOCS[3],
    FLAG_DOCS[4],
    FLAG_DOCS[5],
    FLAG_DOCS[6],
    FLAG_DOCS[7],
];
const UNIQUE_NAME: Param = opt(
    "UniqueName",
    Ty::Name,
    "A name unique in the Service, usable in place of the sid.",
);
const DATA: Param = opt("Data", Ty::JsonText, "The JSON data.");
const DATA_REQUIRED: Param = req("Data", Ty::JsonText, "The JSON data.");
const TTL: Param = opt("Ttl", Ty::Ttl, "Seconds until it expires (0: never).");
const COLLECTION_TTL: Param = opt(
    "CollectionTtl",
    Ty::Ttl,
    "Seconds until the collection expires (0: never); `Ttl` is its alias.",
);
const ITEM_TTL: Param = opt(
    "ItemTtl",
    Ty::Ttl,
    "Seconds until the item expires (0: never); `Ttl` is its alias.",
);
const ITEM_COLLECTION_TTL: Param = opt(
    "CollectionTtl",
    Ty::Ttl,
    "Seconds until the item's collection expires (0: never).",
);
const RIGHTS: &[Param] = &[
    req("Read", Ty::Boolean, "May read the object."),
    req("Write", Ty::Boolean, "May write the object."),
    req("Manage", Ty::Boolean, "May delete the object."),
];

const fn op(verb: Verb, id: &'static str, summary: &'static str, status: u16, body: Body) -> Op {
    Op {
        verb,
        id,
        summary,
        query: &[],
        form: &[],
        if_match: false,
        status,
        body,
        errors: ERRORS,
        public: false,
        at_least_one: false,
    }
}

const fn list(
    id: &'static str,
    summary: &'static str,
    key: &'static str,
    schema: &'static str,
    query: &'static [Param],
) -> Op {
    Op {
        query,
        ..op(Verb::Get, id, summary, 200, Body::Page { key, schema })
    }
}

const fn fetch(id: &'static str, summary: &'static str, schema: &'static str) -> Op {
    op(Verb::Get, id, summary, 200, Body::Json(schema))
}

const fn create(
    id: &'static str,
    summary: &'static str,
    status: u16,
    schema: &'static str,
    form: &'static [Param],
) -> Op {
    Op {
        form,
        errors: CREATE_ERRORS,
        ..op(Verb::Post, id, summary, status, Body::Json(schema))
    }
}

const fn update(
    id: &'static str,
    summary: &'static str,
    schema: &'static str,
    form: &'static [Param],
    if_match: bool,
) -> Op {
    Op {
        form,
        if_match,
        errors: if if_match { IF_MATCH_ERRORS } else { ERRORS },
        ..op(Verb::Post, id, summary, 200, Body::Json(schema))
    }
}

/// An update that changes nothing is refused: at least one parameter is needed.
const fn change(
    id: &'static str,
    summary: &'static str,
    schema: &'static str,
    form: &'static [Param],
    if_match: bool,
) -> Op {
    Op {
        at_least_one: true,
        ..update(id, summary, schema, form, if_match)
    }
}

const fn delete(id: &'static str, summary: &'static str, if_match: bool) -> Op {
    Op {
        if_match,
        errors: if if_match { IF_MATCH_ERRORS } else { ERRORS },
        ..op(Verb::Delete, id, summary, 204, Body::Empty)
    }
}

const SINCE: &[Param] = &[opt(
    "since",
    Ty::Count,
    "The revision the watcher has: only what came after it (or a snapshot).",
)];

/// Syncline's own watch over HTTP: `since` (or `Last-Event-ID`) resumes.
const fn events(id: &'static str, summary: &'static str) -> Op {
    Op {
        query: SINCE,
        errors: &[400, 401, 403, 404, 429],
        ..op(Verb::Get, id, summary, 200, Body::EventStream)
    }
}

const fn public(id: &'static str, summary: &'static str, body: Body) -> Op {
    Op {
        errors: &[],
        public: true,
        ..op(Verb::Get, id, summary, 200, body)
    }
}

/// Every path served, in Twilio's spec order; Syncline's own last.
pub static PATHS: &[PathSpec] = &[
    PathSpec {
        path: "/v1/Services",
        ops: &[
            list("ListService", "The Services", "services", "Service", PAGING),
            create(
                "CreateService",
                "Create a Service",
                201,
                "Service",
                SERVICE_CREATE,
            ),
        ],
    },
    PathSpec {
        path: "/v1/Services/{Sid}",
        ops: &[
            fetch("FetchService", "A Service", "Service"),
            update(
                "UpdateService",
                "Change a Service's flags",
                "Service",
                SERVICE_UPDATE,
                false,
            ),
            delete(
                "DeleteService",
                "Delete a Service and everything in it",
                false,
            ),
        ],
    },
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Documents",
        ops: &[
            list(
                "ListDocument",
                "The Documents",
                "documents",
                "Document",
                PAGING,
            ),
            create(
                "CreateDocument",
                "Create a Document",
                201,
                "Document",
                &[UNIQUE_NAME, DATA, TTL],
            ),
        ],
    },
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Documents/{Sid}",
        ops: &[
            fetch("FetchDocument", "A Document", "Document"),
            change(
                "UpdateDocument",
                "Replace a Document's data or change its TTL",
                "Document",
                &[DATA, TTL],
                true,
            ),
            delete("DeleteDocument", "Delete a Document", true),
        ],
    },
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Documents/{DocumentSid}/Permissions",
        ops: &[list(
            "ListDocumentPermission",
            "The Permissions on a Document",
            "permissions",
            "DocumentPermission",
            PAGING,
        )],
    },
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Documents/{DocumentSid}/Permissions/{Identity}",
        ops: &[
            fetch(
                "FetchDocumentPermission",
                "An identity's Permission on a Document",
                "DocumentPermission",
            ),
            update(
                "UpdateDocumentPermission",
                "Grant an identity rights on a Document",
                "DocumentPermission",
                RIGHTS,
                false,
            ),
            delete(
                "DeleteDocumentPermission",
                "Revoke an identity's Permission on a Document",
                false,
            ),
        ],
    },
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Lists",
        ops: &[
            list("ListSyncList", "The Lists", "lists", "SyncList", PAGING),
            create(
                "CreateSyncList",
                "Create a List",
                201,
                "SyncList",
                &[UNIQUE_NAME, TTL, COLLECTION_TTL],
            ),
        ],
    },
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Lists/{Sid}",
        ops: &[
            fetch("FetchSyncList", "A List", "SyncList"),
            change(
                "UpdateSyncList",
                "Change a List's TTL",
                "SyncList",
                &[TTL, COLLECTION_TTL],
                false,
            ),
            delete("DeleteSyncList", "Delete a List", false),
        ],
    },
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Lists/{ListSid}/Items",
        ops: &[
            list(
                "ListSyncListItem",
                "A List's Items",
                "items",
                "SyncListItem",
                ITEM_PAGING,
            ),
            create(
                "CreateSyncListItem",
                "Append an Item to a List",
                201,
                "SyncListItem",
                &[DATA_REQUIRED, TTL, ITEM_TTL, ITEM_COLLECTION_TTL],
            ),
        ],
    },
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Lists/{ListSid}/Items/{Index}",
        ops: &[
            fetch("FetchSyncListItem", "A List Item", "SyncListItem"),
            change(
                "UpdateSyncListItem",
                "Replace a List Item's data or change its TTL",
                "SyncListItem",
                &[DATA, TTL, ITEM_TTL, ITEM_COLLECTION_TTL],
                true,
            ),
            delete("DeleteSyncListItem", "Remove a List Item", true),
        ],
    },
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Lists/{ListSid}/Permissions",
        ops: &[list(
            "ListSyncListPermission",
            "The Permissions on a List",
            "permissions",
            "SyncListPermission",
            PAGING,
        )],
    },
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Lists/{ListSid}/Permissions/{Identity}",
        ops: &[
            fetch(
                "FetchSyncListPermission",
                "An identity's Permission on a List",
                "SyncListPermission",
            ),
            update(
                "UpdateSyncListPermission",
                "Grant an identity rights on a List",
                "SyncListPermission",
                RIGHTS,
                false,
            ),
            delete(
                "DeleteSyncListPermission",
                "Revoke an identity's Permission on a List",
                false,
            ),
        ],
    },
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Maps",
        ops: &[
            list("ListSyncMap", "The Maps", "maps", "SyncMap", PAGING),
            create(
                "CreateSyncMap",
                "Create a Map",
                201,
                "SyncMap",
                &[UNIQUE_NAME, TTL, COLLECTION_TTL],
            ),
        ],
    },
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Maps/{Sid}",
        ops: &[
            fetch("FetchSyncMap", "A Map", "SyncMap"),
            change(
                "UpdateSyncMap",
                "Change a Map's TTL",
                "SyncMap",
                &[TTL, COLLECTION_TTL],
                false,
            ),
            delete("DeleteSyncMap", "Delete a Map", false),
        ],
    },
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Maps/{MapSid}/Items",
        ops: &[
            list(
                "ListSyncMapItem",
                "A Map's Items",
                "items",
                "SyncMapItem",
                ITEM_PAGING,
            ),
            create(
                "CreateSyncMapItem",
                "Add an Item to a Map",
                201,
                "SyncMapItem",
                &[
                    req("Key", Ty::Name, "The item's key."),
                    DATA_REQUIRED,
                    TTL,
                    ITEM_TTL,
                    ITEM_COLLECTION_TTL,
                ],
            ),
        ],
    },
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Maps/{MapSid}/Items/{Key}",
        ops: &[
            fetch("FetchSyncMapItem", "A Map Item", "SyncMapItem"),
            change(
                "UpdateSyncMapItem",
                "Replace a Map Item's data or change its TTL",
                "SyncMapItem",
                &[DATA, TTL, ITEM_TTL, ITEM_COLLECTION_TTL],
                true,
            ),
            delete("DeleteSyncMapItem", "Remove a Map Item", true),
        ],
    },
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Maps/{MapSid}/Permissions",
        ops: &[list(
            "ListSyncMapPermission",
            "The Permissions on a Map",
            "permissions",
            "SyncMapPermission",
            PAGING,
        )],
    },
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Maps/{MapSid}/Permissions/{Identity}",
        ops: &[
            fetch(
                "FetchSyncMapPermission",
                "An identity's Permission on a Map",
                "SyncMapPermission",
            ),
            update(
                "UpdateSyncMapPermission",
                "Grant an identity rights on a Map",
                "SyncMapPermission",
                RIGHTS,
                false,
            ),
            delete(
                "DeleteSyncMapPermission",
                "Revoke an identity's Permission on a Map",
                false,
            ),
        ],
    },
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Streams",
        ops: &[
            list(
                "ListSyncStream",
                "The Streams",
                "streams",
                "SyncStream",
                PAGING,
            ),
            create(
                "CreateSyncStream",
                "Create a Stream",
                201,
                "SyncStream",
                &[UNIQUE_NAME, TTL],
            ),
        ],
    },
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Streams/{Sid}",
        ops: &[
            fetch("FetchSyncStream", "A Stream", "SyncStream"),
            change(
                "UpdateSyncStream",
                "Change a Stream's TTL",
                "SyncStream",
                &[TTL],
                false,
            ),
            delete("DeleteSyncStream", "Delete a Stream", false),
        ],
    },
    // Not in Twilio's API (its Streams have no Permissions), but Syncline applies its
    // ACL to streams too: without these a backend could not let a token holder publish
    // to a stream under `acl_enabled`.
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Streams/{StreamSid}/Permissions",
        ops: &[list(
            "ListSyncStreamPermission",
            "The Permissions on a Stream (Syncline's own)",
            "permissions",
            "SyncStreamPermission",
            PAGING,
        )],
    },
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Streams/{StreamSid}/Permissions/{Identity}",
        ops: &[
            fetch(
                "FetchSyncStreamPermission",
                "An identity's Permission on a Stream (Syncline's own)",
                "SyncStreamPermission",
            ),
            update(
                "UpdateSyncStreamPermission",
                "Grant an identity rights on a Stream (Syncline's own)",
                "SyncStreamPermission",
                RIGHTS,
                false,
            ),
            delete(
                "DeleteSyncStreamPermission",
                "Revoke an identity's Permission on a Stream (Syncline's own)",
                false,
            ),
        ],
    },
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Streams/{StreamSid}/Messages",
        ops: &[Op {
            form: &[req("Data", Ty::JsonText, "The message: JSON data.")],
            ..op(
                Verb::Post,
                "CreateStreamMessage",
                "Publish a message to a Stream's subscribers",
                201,
                Body::Json("StreamMessage"),
            )
        }],
    },
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Documents/{DocumentSid}/Events",
        ops: &[events(
            "WatchDocument",
            "A Document's changes as server-sent events",
        )],
    },
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Lists/{ListSid}/Events",
        ops: &[events(
            "WatchSyncList",
            "A List's changes as server-sent events",
        )],
    },
    PathSpec {
        path: "/v1/Services/{ServiceSid}/Maps/{MapSid}/Events",
        ops: &[events(
            "WatchSyncMap",
            "A Map's changes as server-sent events",
        )],
    },
    PathSpec {
        path: "/v1/Nodes",
        ops: &[fetch(
            "ListNodes",
            "The installation's live nodes, this one first (Syncline's own: where clients go when their node does)",
            "Nodes",
        )],
    },
    PathSpec {
        path: "/healthz",
        ops: &[public("Healthz", "Alive", Body::Text)],
    },
    PathSpec {
        path: "/readyz",
        ops: &[Op {
            errors: &[503],
            ..public("Readyz", "Ready: the store answers", Body::Text)
        }],
    },
    PathSpec {
        path: "/openapi.json",
        ops: &[public("OpenApi", "This document", Body::OpenApi)],
    },
    PathSpec {
        path: "/metrics",
        ops: &[public("Metrics", "Counters in Prometheus text", Body::Text)],
    },
];

fn param_schema(ty: Ty, max_ttl: u64, max_page: u32) -> Value {
    match ty {
        Ty::Text => json!({ "type": "string" }),
        Ty::Name => json!({ "type": "string", "minLength": 1 }),
        Ty::Window => json!({ "type": "integer", "minimum": 1000, "maximum": 30000 }),
        // Empty clears it.
        Ty::Uri => json!({
            "type": "string",
            "anyOf": [{ "format": "uri" }, { "maxLength": 0 }],
        }),
        Ty::Boolean => json!({ "type": "boolean" }),
        Ty::Count => json!({ "type": "integer", "minimum": 0 }),
        Ty::Ttl => json!({ "type": "integer", "minimum": 0, "maximum": max_ttl }),
        Ty::JsonText => json!({
            "type": "string",
            "contentMediaType": "application/json",
            "examples": ["{\"a\":1}"],
        }),
        // A larger size is not refused: the page is cut to the server's limit (and
        // `meta.page_size` says so).
        Ty::PageSize => json!({
            "type": "integer",
            "minimum": 1,
            "description": format!("Pages hold at most {max_page} records; a larger size is served as {max_page}."),
        }),
        Ty::Choice(values) => json!({ "type": "string", "enum": values }),
    }
}

fn path_param(name: &str) -> Value {
    let (schema, doc) = match name {
        "Index" => (
            json!({ "type": "integer", "minimum": 0 }),
            "The List Item's index.",
        ),
        "Key" => (json!({ "type": "string" }), "The Map Item's key."),
        "Identity" => (
            json!({ "type": "string" }),
            "The identity the Permission is for.",
        ),
        "ServiceSid" => (
            json!({ "type": "string", "examples": ["default"] }),
            "The Service: its sid, its unique name, or `default`.",
        ),
        _ => (json!({ "type": "string" }), "The sid, or the unique name."),
    };
    json!({ "name": name, "in": "path", "required": true, "description": doc, "schema": schema })
}

fn error_response(status: u16) -> Value {
    let description = match status {
        400 => "A parameter is missing or malformed",
        401 => "No credentials, or credentials that are not valid",
        403 => "The caller may not do this",
        404 => "No such resource",
        408 => "The request body did not arrive in time",
        409 => "The unique name or key is taken",
        412 => "If-Match is not the current revision",
        413 => "The request body or the data is too large",
        429 => "Too many requests: retry after `Retry-After` seconds",
        503 => "Not ready",
        _ => "Error",
    };
    let mut r = json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
    });
    if status == 429 {
        r["headers"] = json!({
            "Retry-After": { "description": "Seconds to wait", "schema": { "type": "integer" } }
        });
    }
    if status == 503 {
        r["content"] = json!({ "text/plain": { "schema": { "type": "string" } } });
    }
    r
}

fn success_response(op: &Op) -> Value {
    let schema = |s: &Value| json!({ "application/json": { "schema": s } });
    match op.body {
        Body::Json(name) => json!({
            "description": op.summary,
            "content": schema(&json!({ "$ref": format!("#/components/schemas/{name}") })),
        }),
        Body::Page { key, schema: item } => json!({
            "description": op.summary,
            "content": schema(&json!({
                "type": "object",
                "required": [key, "meta"],
                "properties": {
                    key: { "type": "array", "items": { "$ref": format!("#/components/schemas/{item}") } },
                    "meta": { "$ref": "#/components/schemas/Meta" },
                },
            })),
        }),
        Body::Empty => json!({ "description": op.summary }),
        Body::Text => json!({
            "description": op.summary,
            "content": { "text/plain": { "schema": { "type": "string" } } },
        }),
        Body::EventStream => json!({
            "description": op.summary,
            "content": { "text/event-stream": { "schema": { "type": "string" } } },
        }),
        Body::OpenApi => json!({
            "description": op.summary,
            "content": schema(&json!({ "type": "object" })),
        }),
    }
}

fn operation(op: &Op, path: &str, max_ttl: u64, max_page: u32) -> Value {
    let mut parameters: Vec<Value> = path
        .split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(path_param)
        .collect();
    for p in op.query {
        parameters.push(json!({
            "name": p.name,
            "in": "query",
            "required": p.required,
            "description": p.doc,
            "schema": param_schema(p.ty, max_ttl, max_page),
        }));
    }
    if op.if_match {
        parameters.push(json!({
            "name": "If-Match",
            "in": "header",
            "required": false,
            "description": "Apply only if this is the current revision (412 otherwise).",
            "schema": { "type": "string", "pattern": "^\"?[0-9]+\"?$" },
        }));
    }
    let mut responses = Map::new();
    responses.insert(op.status.to_string(), success_response(op));
    for status in op.errors {
        responses.insert(status.to_string(), error_response(*status));
    }
    let mut v = json!({
        "operationId": op.id,
        "summary": op.summary,
        "parameters": parameters,
        "responses": responses,
    });
    if !op.form.is_empty() {
        let properties: Map<String, Value> = op
            .form
            .iter()
            .map(|p| {
                let mut s = param_schema(p.ty, max_ttl, max_page);
                s["description"] = Value::String(p.doc.to_owned());
                (p.name.to_owned(), s)
            })
            .collect();
        let required: Vec<&str> = op
            .form
            .iter()
            .filter(|p| p.required)
            .map(|p| p.name)
            .collect();
        let mut schema = json!({ "type": "object", "properties": properties });
        if !required.is_empty() {
            schema["required"] = json!(required);
        }
        if op.at_least_one {
            schema["minProperties"] = json!(1);
        }
        v["requestBody"] = json!({
            "required": !required.is_empty() || op.at_least_one,
            "content": { "application/x-www-form-urlencoded": { "schema": schema } },
        });
    }
    if op.public {
        v["security"] = json!([]);
    }
    v
}

fn nullable(ty: &str) -> Value {
    json!({ "type": [ty, "null"] })
}

fn date() -> Value {
    json!({ "type": ["string", "null"], "format": "date-time" })
}

fn uri_map(names: &[&str]) -> Value {
    let properties: Map<String, Value> = names
        .iter()
        .map(|n| {
            (
                (*n).to_owned(),
                json!({ "type": "string", "format": "uri" }),
            )
        })
        .collect();
    json!({ "type": "object", "properties": properties })
}

/// An object (Document, List, Map, Stream) as `twilio::object` / `twilio::document`
/// render it.
fn object_schema(links: &[&str], revision: bool, data: bool) -> Value {
    let mut properties = json!({
        "sid": { "type": "string" },
        "unique_name": nullable("string"),
        "account_sid": { "type": "string" },
        "service_sid": { "type": "string" },
        "url": { "type": "string", "format": "uri" },
        "links": uri_map(links),
        "date_expires": date(),
        "date_created": date(),
        "date_updated": date(),
        "created_by": { "type": "string" },
    });
    if revision {
        properties["revision"] = json!({ "type": "string" });
    }
    if data {
        properties["data"] = json!({ "description": "The JSON data (any JSON value)." });
    }
    json!({
        "type": "object",
        "required": ["sid", "account_sid", "service_sid", "url"],
        "properties": properties,
    })
}

fn item_schema(key: Value, parent: &str) -> Value {
    json!({
        "type": "object",
        "required": ["account_sid", "service_sid", "url", "revision", parent],
        "properties": {
            "index": key.get("index").cloned().unwrap_or(Value::Null),
            "key": key.get("key").cloned().unwrap_or(Value::Null),
            parent: { "type": "string" },
            "account_sid": { "type": "string" },
            "service_sid": { "type": "string" },
            "url": { "type": "string", "format": "uri" },
            "revision": { "type": "string" },
            "data": { "description": "The JSON data (any JSON value); left out for a writer that may not read." },
            "date_expires": date(),
            "date_created": date(),
            "date_updated": date(),
            "created_by": { "type": "string" },
        },
    })
}

fn permission_schema(field: &str) -> Value {
    json!({
        "type": "object",
        "required": ["account_sid", "service_sid", field, "identity", "read", "write", "manage", "url"],
        "properties": {
            "account_sid": { "type": "string" },
            "service_sid": { "type": "string" },
            field: { "type": "string" },
            "identity": { "type": "string" },
            "read": { "type": "boolean" },
            "write": { "type": "boolean" },
            "manage": { "type": "boolean" },
            "url": { "type": "string", "format": "uri" },
        },
    })
}

fn schemas() -> Value {
    let mut list_item = item_schema(
        json!({ "index": { "type": "integer", "minimum": 0 } }),
        "list_sid",
    );
    let mut map_item = item_schema(json!({ "key": { "type": "string" } }), "map_sid");
    for (schema, key, other) in [
        (&mut list_item, "index", "key"),
        (&mut map_item, "key", "index"),
    ] {
        if let Some(required) = schema["required"].as_array_mut() {
            required.push(json!(key));
        }
        if let Some(properties) = schema["properties"].as_object_mut() {
            properties.remove(other);
        }
    }
    json!({
        "Nodes": {
            "type": "object",
            "required": ["nodes"],
            "properties": {
                "nodes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "quic", "https"],
                        "properties": {
                            "id": { "type": "string" },
                            "quic": { "type": "string", "description": "host:port (UDP)" },
                            "https": { "type": ["string", "null"], "format": "uri" },
                        },
                    },
                },
            },
        },
        "Error": {
            "type": "object",
            "description": "Twilio's error body (what its helper libraries turn into TwilioRestException).",
            "required": ["code", "message", "more_info", "status"],
            "properties": {
                "code": { "type": "integer", "description": "Twilio's error code" },
                "message": { "type": "string" },
                "more_info": { "type": "string", "format": "uri" },
                "status": { "type": "integer", "description": "The HTTP status" },
            },
        },
        "Meta": {
            "type": "object",
            "required": ["first_page_url", "key", "next_page_url", "page", "page_size", "previous_page_url", "url"],
            "properties": {
                "first_page_url": { "type": "string", "format": "uri" },
                "key": { "type": "string" },
                "next_page_url": { "type": ["string", "null"], "format": "uri" },
                "page": { "type": "integer", "minimum": 0 },
                "page_size": { "type": "integer", "minimum": 1 },
                "previous_page_url": { "type": ["string", "null"], "format": "uri" },
                "url": { "type": "string", "format": "uri" },
            },
        },
        "Service": {
            "type": "object",
            "required": ["sid", "account_sid", "url"],
            "properties": {
                "sid": { "type": "string" },
                "unique_name": nullable("string"),
                "account_sid": { "type": "string" },
                "friendly_name": nullable("string"),
                "date_created": date(),
                "date_updated": date(),
                "url": { "type": "string", "format": "uri" },
                "webhook_url": nullable("string"),
                "webhooks_from_rest_enabled": { "type": "boolean" },
                "reachability_webhooks_enabled": { "type": "boolean" },
                "acl_enabled": { "type": "boolean" },
                "reachability_debouncing_enabled": { "type": "boolean" },
                "reachability_debouncing_window": { "type": "integer", "minimum": 0 },
                "links": uri_map(&["documents", "lists", "maps", "streams"]),
                "token_create": { "type": "string", "enum": ["own", "none"] },
                "webhooks_dropped": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Syncline's own: webhook events dropped for this service since the server started (queue full, or every delivery attempt failed).",
                },
            },
        },
        "Document": object_schema(&["permissions"], true, true),
        "SyncList": object_schema(&["items", "permissions"], true, false),
        "SyncMap": object_schema(&["items", "permissions"], true, false),
        "SyncStream": object_schema(&["messages"], false, false),
        "SyncListItem": list_item,
        "SyncMapItem": map_item,
        "StreamMessage": {
            "type": "object",
            "required": ["sid", "data"],
            "properties": {
                "sid": { "type": "string" },
                "data": { "description": "The message (any JSON value)." },
                "sequence": { "type": "integer", "description": "Syncline's own: the message's place in the stream." },
            },
        },
        "DocumentPermission": permission_schema("document_sid"),
        "SyncListPermission": permission_schema("list_sid"),
        "SyncMapPermission": permission_schema("map_sid"),
        "SyncStreamPermission": permission_schema("stream_sid"),
    })
}

/// The OpenAPI 3.1 document of the table, with the server's TTL and page limits.
pub fn document(max_ttl: u64, max_page: u32) -> Value {
    let mut paths = Map::new();
    for spec in PATHS {
        let mut item = Map::new();
        for op in spec.ops {
            item.insert(
                op.verb.name().to_owned(),
                operation(op, spec.path, max_ttl, max_page),
            );
        }
        paths.insert(spec.path.to_owned(), Value::Object(item));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Syncline: Twilio Sync v1 REST API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Twilio Sync v1's REST surface as Syncline serves it. Form-encoded bodies with Twilio's PascalCase names; JSON answers with snake_case fields; errors as Twilio's `code`, `message`, `more_info`, `status`. HTTP Basic with an API key acts as the backend; Bearer with an access token acts as its identity.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "basic": { "type": "http", "scheme": "basic", "description": "API key sid and secret (the backend)" },
                "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "An access token (its identity)" },
            },
        },
        "security": [{ "basic": [] }, { "bearer": [] }],
    })
}

/// The document, built once (the limits do not change while the server runs).
pub fn cached(max_ttl: u64, max_page: u32) -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| document(max_ttl, max_page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_json_with_every_path_and_twilios_names() {
        let text = serde_json::to_string(&document(31_536_000, 1000)).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        let s = "/v1/Services/{ServiceSid}";
        let mut expected = vec![
            "/v1/Services".to_owned(),
            "/v1/Services/{Sid}".to_owned(),
            "/healthz".to_owned(),
            "/readyz".to_owned(),
            "/openapi.json".to_owned(),
            "/metrics".to_owned(),
            "/v1/Nodes".to_owned(),
            format!("{s}/Streams/{{StreamSid}}/Messages"),
        ];
        for (kinds, parent) in [
            ("Documents", "DocumentSid"),
            ("Lists", "ListSid"),
            ("Maps", "MapSid"),
            ("Streams", "StreamSid"),
        ] {
            expected.push(format!("{s}/{kinds}"));
            expected.push(format!("{s}/{kinds}/{{Sid}}"));
            expected.push(format!("{s}/{kinds}/{{{parent}}}/Permissions"));
            expected.push(format!("{s}/{kinds}/{{{parent}}}/Permissions/{{Identity}}"));
            if kinds == "Streams" {
                continue;
            }
            expected.push(format!("{s}/{kinds}/{{{parent}}}/Events"));
            if kinds != "Documents" {
                let key = if kinds == "Lists" { "Index" } else { "Key" };
                expected.push(format!("{s}/{kinds}/{{{parent}}}/Items"));
                expected.push(format!("{s}/{kinds}/{{{parent}}}/Items/{{{key}}}"));
            }
        }
        let mut listed: Vec<&String> = paths.keys().collect();
        listed.sort();
        expected.sort();
        assert_eq!(listed, expected.iter().collect::<Vec<_>>());

        let create = &paths[&format!("{s}/Maps/{{MapSid}}/Items")]["post"];
        let form = &create["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"];
        assert_eq!(form["required"], json!(["Key", "Data"]));
        for name in ["Key", "Data", "Ttl", "ItemTtl", "CollectionTtl"] {
            assert!(form["properties"].get(name).is_some(), "{name}");
        }
        let grant = &paths[&format!("{s}/Lists/{{ListSid}}/Permissions/{{Identity}}")]["post"];
        let form = &grant["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"];
        assert_eq!(form["required"], json!(["Read", "Write", "Manage"]));
        let update = &paths[&format!("{s}/Lists/{{Sid}}")]["post"]["requestBody"];
        assert_eq!(update["required"], true);
        let form = &update["content"]["application/x-www-form-urlencoded"]["schema"];
        assert_eq!(
            form["minProperties"], 1,
            "an empty update is refused (54010)"
        );
        let error = &doc["components"]["schemas"]["Error"]["required"];
        assert_eq!(error, &json!(["code", "message", "more_info", "status"]));
        assert_eq!(paths["/openapi.json"]["get"]["security"], json!([]));
    }

    #[test]
    fn requests_are_checked_against_the_table_by_path_and_method() {
        let doc = lookup("/v1/Services/default/Documents/ET1").unwrap();
        assert!(doc.allows(&Method::GET) && doc.allows(&Method::DELETE));
        assert!(!doc.allows(&Method::PUT));
        assert_eq!(doc.allow(), "GET, POST, DELETE");
        let messages = lookup("/v1/Services/default/Streams/s/Messages").unwrap();
        assert!(messages.allows(&Method::POST) && !messages.allows(&Method::GET));
        for missing in [
            "/v1/Services/default/Streams/s/Items",
            "/v1/Services/default/Documents/d/Items",
            "/v1/Services/default/Things",
            "/v1/Services//Documents",
            "/v1/Services/default/Documents/d/",
            "/v2/Services",
        ] {
            assert!(lookup(missing).is_none(), "{missing}");
        }
        // Every template matches itself with its placeholders filled in.
        for spec in PATHS {
            let concrete = spec.path.replace('{', "x").replace('}', "");
            assert!(std::ptr::eq(lookup(&concrete).unwrap(), spec), "{concrete}");
        }
    }
}
