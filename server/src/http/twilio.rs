//! Twilio Sync v1's JSON: the resources as its OpenAPI description has them (snake_case
//! fields, `revision` as a string, dates as `YYYY-MM-DDTHH:MM:SSZ`, absolute `url` and
//! `links`), the paging envelope, and the error body with Twilio's codes. Pure: built
//! from the engine's answers and the request's base URL.

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use syncline_proto::{
    DocumentInfo, ErrorCode, ItemInfo, ItemKey, ObjectInfo, ObjectKind, PermissionInfo,
    ServiceInfo, WireError,
};

/// The resource a route is about, to pick Twilio's error code for a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Service,
    Object(ObjectKind),
    Item(ObjectKind),
    Permission,
    Message,
    /// An API key (the console's key management; not a Twilio Sync resource).
    Key,
}

/// Twilio's `YYYY-MM-DDTHH:MM:SSZ` (what its helper libraries parse), or null past
/// year 9999.
pub fn date(ms: u64) -> Value {
    date_text(ms).map_or(Value::Null, Value::String)
}

pub use syncline_core::date_text;

/// Stored JSON text as a JSON value, without parsing it again. Text the server stored
/// was checked when written; should it still not be JSON, it shows as a string.
fn data(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).unwrap_or_else(|_| {
        let quoted = serde_json::to_string(text).unwrap_or_else(|_| "null".into());
        RawValue::from_string(quoted).unwrap_or_default()
    })
}

fn kind_path(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Document => "Documents",
        ObjectKind::List => "Lists",
        ObjectKind::Map => "Maps",
        ObjectKind::Stream => "Streams",
    }
}

/// Where a service's resources live: `{base}/v1/Services/{sid}`.
pub struct Urls<'a> {
    pub base: &'a str,
    pub account_sid: &'a str,
    pub service_sid: &'a str,
}

impl Urls<'_> {
    pub fn service(&self) -> String {
        format!("{}/v1/Services/{}", self.base, self.service_sid)
    }

    pub fn object(&self, kind: ObjectKind, sid: &str) -> String {
        format!("{}/{}/{sid}", self.service(), kind_path(kind))
    }

    pub fn item(&self, kind: ObjectKind, sid: &str, key: &ItemKey) -> String {
        let key = percent_encoding::utf8_percent_encode(
            &key.to_string(),
            percent_encoding::NON_ALPHANUMERIC,
        )
        .to_string();
        format!("{}/Items/{key}", self.object(kind, sid))
    }
}

#[derive(Serialize)]
struct DocumentJson<'a> {
    sid: &'a str,
    unique_name: Option<&'a str>,
    account_sid: &'a str,
    service_sid: &'a str,
    url: String,
    links: Value,
    revision: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Box<RawValue>>,
    date_expires: Value,
    date_created: Value,
    date_updated: Value,
    created_by: &'a str,
}

/// A Document. `data` is `None` for a writer that may not read it: the field is left
/// out rather than shown as something it is not.
pub fn document(u: &Urls, d: &DocumentInfo, with_data: bool) -> Value {
    let url = u.object(ObjectKind::Document, &d.sid);
    let json = DocumentJson {
        sid: &d.sid,
        unique_name: d.unique_name.as_deref(),
        account_sid: u.account_sid,
        service_sid: u.service_sid,
        links: json!({ "permissions": format!("{url}/Permissions") }),
        url,
        revision: d.revision.to_string(),
        data: with_data.then(|| data(&d.data)),
        date_expires: d.date_expires.map_or(Value::Null, date),
        date_created: date(d.date_created),
        date_updated: date(d.date_updated),
        created_by: &d.created_by,
    };
    serde_json::to_value(json).unwrap_or(Value::Null)
}

/// A List, Map or Stream (a Stream has no revision).
pub fn object(u: &Urls, o: &ObjectInfo) -> Value {
    let url = u.object(o.kind, &o.sid);
    let links = match o.kind {
        ObjectKind::Stream => json!({ "messages": format!("{url}/Messages") }),
        ObjectKind::Document => json!({ "permissions": format!("{url}/Permissions") }),
        _ => json!({
            "items": format!("{url}/Items"),
            "permissions": format!("{url}/Permissions"),
        }),
    };
    let mut v = json!({
        "sid": o.sid,
        "unique_name": o.unique_name,
        "account_sid": u.account_sid,
        "service_sid": u.service_sid,
        "url": url,
        "links": links,
        "date_expires": o.date_expires.map_or(Value::Null, date),
        "date_created": date(o.date_created),
        "date_updated": date(o.date_updated),
        "created_by": o.created_by,
    });
    if o.kind != ObjectKind::Stream {
        v["revision"] = Value::String(o.revision.to_string());
    }
    v
}

/// A List Item or Map Item of the object `object_sid`.
pub fn item(u: &Urls, kind: ObjectKind, object_sid: &str, i: &ItemInfo) -> Value {
    let mut v = json!({
        "account_sid": u.account_sid,
        "service_sid": u.service_sid,
        "url": u.item(kind, object_sid, &i.key),
        "revision": i.revision.to_string(),
        "data": data(&i.data),
        "date_expires": i.date_expires.map_or(Value::Null, date),
        "date_created": date(i.date_created),
        "date_updated": date(i.date_updated),
        "created_by": i.created_by,
    });
    key_fields(&mut v, &i.key, object_sid);
    v
}

/// Where an item sits: `index` and `list_sid`, or `key` and `map_sid`.
fn key_fields(v: &mut Value, key: &ItemKey, object_sid: &str) {
    match key {
        ItemKey::Index(index) => {
            v["index"] = json!(index);
            v["list_sid"] = json!(object_sid);
        }
        ItemKey::Key(key) => {
            v["key"] = json!(key);
            v["map_sid"] = json!(object_sid);
        }
    }
}

/// The answer to an item write by a writer that may not read the item: where it is and
/// its revision, without data.
pub fn item_without_data(
    u: &Urls,
    kind: ObjectKind,
    object_sid: &str,
    key: &ItemKey,
    revision: u64,
) -> Value {
    let mut v = json!({
        "account_sid": u.account_sid,
        "service_sid": u.service_sid,
        "url": u.item(kind, object_sid, key),
        "revision": revision.to_string(),
    });
    key_fields(&mut v, key, object_sid);
    v
}

/// A Service. Syncline's own fields (`token_create`, `webhooks_dropped`) come after
/// Twilio's.
pub fn service(base: &str, account_sid: &str, s: &ServiceInfo) -> Value {
    let url = format!("{base}/v1/Services/{}", s.sid);
    json!({
        "sid": s.sid,
        "unique_name": s.unique_name,
        "account_sid": account_sid,
        "friendly_name": s.friendly_name,
        "date_created": date(s.date_created),
        "date_updated": date(s.date_updated),
        "url": url,
        "webhook_url": s.webhook_url,
        "webhooks_from_rest_enabled": s.webhooks_from_backend,
        "reachability_webhooks_enabled": s.reachability_webhooks_enabled,
        "acl_enabled": s.acl_enabled,
        "reachability_debouncing_enabled": s.reachability_debouncing_enabled,
        "reachability_debouncing_window": s.reachability_debouncing_window_ms,
        "links": {
            "documents": format!("{url}/Documents"),
            "lists": format!("{url}/Lists"),
            "maps": format!("{url}/Maps"),
            "streams": format!("{url}/Streams"),
        },
        "token_create": s.token_create.as_str(),
        "webhooks_dropped": s.webhooks_dropped,
    })
}

/// A Document, List, Map or Stream Permission (Streams' are Syncline's own).
pub fn permission(u: &Urls, kind: ObjectKind, p: &PermissionInfo) -> Value {
    let field = match kind {
        ObjectKind::List => "list_sid",
        ObjectKind::Map => "map_sid",
        ObjectKind::Stream => "stream_sid",
        ObjectKind::Document => "document_sid",
    };
    let identity =
        percent_encoding::utf8_percent_encode(&p.identity, percent_encoding::NON_ALPHANUMERIC);
    json!({
        "account_sid": u.account_sid,
        "service_sid": u.service_sid,
        field: p.object_sid,
        "identity": p.identity,
        "read": p.rights.read,
        "write": p.rights.write,
        "manage": p.rights.manage,
        "url": format!("{}/Permissions/{identity}", u.object(kind, &p.object_sid)),
    })
}

/// Twilio's list envelope: the records under `key`, and `meta` with absolute page URLs
/// that carry every query parameter (helper libraries fetch `next_page_url` verbatim).
pub fn page(
    key: &str,
    records: Vec<Value>,
    url: &str,
    query: &[(String, String)],
    page: u64,
    page_size: u32,
    next_token: Option<String>,
) -> Value {
    let with = |extra: &[(&str, String)]| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in query {
            if !matches!(k.as_str(), "Page" | "PageSize" | "PageToken") {
                q.append_pair(k, v);
            }
        }
        for (k, v) in extra {
            q.append_pair(k, v);
        }
        format!("{url}?{}", q.finish())
    };
    let size = page_size.to_string();
    let this = match query.iter().find(|(k, _)| k == "PageToken") {
        Some((_, t)) => with(&[
            ("PageSize", size.clone()),
            ("Page", page.to_string()),
            ("PageToken", t.clone()),
        ]),
        None => with(&[("PageSize", size.clone()), ("Page", page.to_string())]),
    };
    let next = next_token.map(|t| {
        with(&[
            ("PageSize", size.clone()),
            ("Page", (page + 1).to_string()),
            ("PageToken", t),
        ])
    });
    json!({
        key: records,
        "meta": {
            "first_page_url": with(&[("PageSize", size.clone()), ("Page", "0".into())]),
            "key": key,
            "next_page_url": next,
            "page": page,
            "page_size": page_size,
            "previous_page_url": Value::Null,
            "url": this,
        }
    })
}

/// An error as Twilio answers it: the HTTP status, and the body its helper libraries
/// turn into `TwilioRestException` (`code`, `message`, `more_info`, `status`; never
/// `type` + `title`, which they read as another kind of exception).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
    /// Seconds, for 429.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A malformed or missing parameter (400), naming it.
    pub fn parameter(name: &str, problem: impl std::fmt::Display) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            20001,
            format!("Invalid parameter {name}: {problem}"),
        )
    }

    /// The engine's refusal of a request about `resource`, with Twilio's status and
    /// code for it.
    pub fn from_wire(e: WireError, resource: Resource) -> Self {
        let about_item = e.message.starts_with("item");
        let (status, code) = match e.code {
            ErrorCode::NotFound => (
                StatusCode::NOT_FOUND,
                if e.message.starts_with("service") {
                    54050
                } else {
                    not_found_code(resource, about_item)
                },
            ),
            ErrorCode::Conflict => (
                StatusCode::PRECONDITION_FAILED,
                match resource {
                    Resource::Object(ObjectKind::Document) => 54103,
                    Resource::Item(ObjectKind::List) => 54155,
                    Resource::Item(ObjectKind::Map) => 54205,
                    _ => 20412,
                },
            ),
            ErrorCode::AlreadyExists => {
                (StatusCode::CONFLICT, if about_item { 54208 } else { 54301 })
            }
            ErrorCode::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, 54006),
            ErrorCode::InvalidArgument => (
                StatusCode::BAD_REQUEST,
                if e.message.contains("JSON") {
                    54008
                } else if e.message.contains("unique name") || e.message.contains("unique_name") {
                    54302
                } else {
                    20001
                },
            ),
            ErrorCode::Forbidden => (StatusCode::FORBIDDEN, 54007),
            ErrorCode::Unauthorized => (StatusCode::UNAUTHORIZED, 20003),
            ErrorCode::TokenExpired => (StatusCode::UNAUTHORIZED, 20104),
            ErrorCode::RateLimited => (StatusCode::TOO_MANY_REQUESTS, 54009),
            ErrorCode::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, 20503),
            ErrorCode::Internal => (StatusCode::INTERNAL_SERVER_ERROR, 20500),
        };
        let mut err = ApiError::new(status, code, e.message);
        if status == StatusCode::TOO_MANY_REQUESTS {
            err.retry_after = Some(1);
        }
        err
    }

    /// The answer carrying it: its status, Twilio's error body, `Retry-After` for 429.
    pub fn response(&self) -> axum::response::Response {
        use axum::response::IntoResponse;
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = s.to_string().parse() {
                r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        r
    }

    pub fn body(&self) -> Value {
        json!({
            "code": self.code,
            "message": self.message,
            "more_info": format!("https://www.twilio.com/docs/errors/{}", self.code),
            "status": self.status.as_u16(),
        })
    }
}

fn not_found_code(resource: Resource, about_item: bool) -> u32 {
    match resource {
        Resource::Service => 54050,
        Resource::Object(ObjectKind::Document) | Resource::Item(ObjectKind::Document) => 54100,
        Resource::Object(ObjectKind::List) => 54150,
        Resource::Item(ObjectKind::List) => {
            if about_item {
                54151
            } else {
                54150
            }
        }
        Resource::Object(ObjectKind::Map) => 54200,
        Resource::Item(ObjectKind::Map) => {
            if about_item {
                54201
            } else {
                54200
            }
        }
        Resource::Object(ObjectKind::Stream)
        | Resource::Item(ObjectKind::Stream)
        | Resource::Message => 54250,
        Resource::Permission | Resource::Key => 20404,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_what_twilio_helpers_parse() {
        assert_eq!(date(0), json!("1970-01-01T00:00:00Z"));
        assert_eq!(date(1_438_286_400_123), json!("2015-07-30T20:00:00Z"));
        assert_eq!(date(u64::MAX), Value::Null);
    }

    #[test]
    fn refusals_get_twilio_statuses_and_codes() {
        let doc = Resource::Object(ObjectKind::Document);
        let e = ApiError::from_wire(WireError::not_found("document"), doc);
        assert_eq!((e.status.as_u16(), e.code), (404, 54100));
        let e = ApiError::from_wire(WireError::conflict(3, 1), doc);
        assert_eq!((e.status.as_u16(), e.code), (412, 54103));
        let item = Resource::Item(ObjectKind::Map);
        let e = ApiError::from_wire(WireError::not_found("item"), item);
        assert_eq!((e.status.as_u16(), e.code), (404, 54201));
        let e = ApiError::from_wire(WireError::not_found("map"), item);
        assert_eq!((e.status.as_u16(), e.code), (404, 54200));
        let limited = WireError::new(ErrorCode::RateLimited, "slow down");
        let e = ApiError::from_wire(limited, doc);
        assert_eq!((e.status.as_u16(), e.retry_after), (429, Some(1)));
        let body = e.body();
        assert!(body.get("type").is_none() && body.get("title").is_none());
        assert_eq!(body["status"], 429);
    }
}
