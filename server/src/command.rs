//! Typed commands: what a transport's edge turns each request into, once, before
//! anything below it runs. Everything a request carries that does not depend on stored
//! state (JSON payloads, TTL bounds, item key shapes, page sizes, identities) is checked
//! here, so the engine, the commit task and the object rules receive only values that
//! already passed, and nothing below the edge knows which transport a command came
//! from. `Command::from_request` is the QUIC edge's conversion; the HTTP edge builds
//! the same commands from its routes.

use syncline_proto::limits::DEFAULT_LIST_WINDOW;
use syncline_proto::{
    ItemKey, Limits, ObjectKind, Order, Request, Rights, ServiceFlags, ServiceFlagsPatch, WireError,
};

use crate::objects::items;

/// A request, typed and checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Ping,
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
        window: u32,
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
        key: ItemKey,
    },
    /// A page of the service's objects of `kind`, in sid order, after the sid `after`.
    Objects {
        kind: ObjectKind,
        after: Option<String>,
        limit: u32,
    },
    /// A page of items from `from` (inclusive); `limit` is 1..=max_page.
    Items {
        kind: ObjectKind,
        object: String,
        from: Option<ItemKey>,
        order: Order,
        limit: u32,
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

/// Checks a grant's identity: 1..=`max_identity_chars` characters (or `*`).
pub fn check_identity(identity: &str, limits: &Limits) -> Result<(), WireError> {
    let chars = identity.chars().count();
    if chars == 0 || chars > limits.max_identity_chars {
        return Err(WireError::invalid(format!(
            "identity must be 1..={} characters (or `*`)",
            limits.max_identity_chars
        )));
    }
    Ok(())
}

fn check_ttl(ttl: Option<u64>, limits: &Limits) -> Result<Option<u64>, WireError> {
    if let Some(t) = ttl {
        limits.check_ttl(t)?;
    }
    Ok(ttl)
}

impl Command {
    /// What it asks for, as the metrics count it (`metrics::KINDS`).
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Ping => "ping",
            Command::Read(_) => "read",
            Command::Write(_) => "write",
            Command::Publish { .. } => "publish",
            Command::Admin(_) => "admin",
            Command::UpdateToken { .. } => "update_token",
            Command::Subscribe { .. } => "subscribe",
            Command::Unsubscribe { .. } => "unsubscribe",
        }
    }

    /// The command a QUIC request asks for, checked. `Hello` is the connection's own
    /// business (authentication), not a command.
    pub fn from_request(request: Request, limits: &Limits) -> Result<Command, WireError> {
        let data = |text: String| Json::parse(text, limits.max_data_bytes);
        let ttl = |ttl: Option<u64>| check_ttl(ttl, limits);
        let key = |kind: ObjectKind, key: &ItemKey| items::check_key(kind, key, limits);
        Ok(match request {
            Request::Hello { .. } => return Err(WireError::invalid("already authenticated")),
            Request::Ping => Command::Ping,
            Request::UpdateToken { token } => Command::UpdateToken { token },
            Request::DocGet { document } => Command::Read(ReadCommand::Document { document }),
            Request::Fetch { object } => Command::Read(ReadCommand::Object { object }),
            Request::ItemGet {
                kind,
                object,
                key: k,
            } => {
                key(kind, &k)?;
                Command::Read(ReadCommand::Item {
                    kind,
                    object,
                    key: k,
                })
            }
            Request::Items {
                kind,
                object,
                from,
                order,
                limit,
            } => {
                let max = limits.max_page;
                if limit == 0 || limit > max {
                    return Err(WireError::invalid(format!("limit must be 1..={max}")));
                }
                if let Some(k) = &from {
                    key(kind, k)?;
                }
                Command::Read(ReadCommand::Items {
                    kind,
                    object,
                    from,
                    order,
                    limit,
                })
            }
            Request::DocSet {
                document,
                data: text,
                if_match,
                ttl: t,
            } => Command::Write(WriteCommand::DocSet {
                document,
                data: data(text)?,
                if_match,
                ttl: ttl(t)?,
                mode: SetMode::Upsert,
            }),
            Request::DocUpdate {
                document,
                data: text,
                if_match,
            } => Command::Write(WriteCommand::DocUpdate {
                document,
                patch: data(text)?,
                if_match,
            }),
            Request::Create {
                kind,
                unique_name,
                ttl: t,
            } => Command::Write(WriteCommand::Create {
                kind,
                unique_name,
                ttl: ttl(t)?,
                data: None,
            }),
            Request::Delete {
                kind,
                object,
                if_match,
            } => Command::Write(WriteCommand::Delete {
                kind,
                object,
                if_match,
            }),
            Request::ListPush {
                list,
                data: text,
                ttl: t,
                ephemeral,
            } => Command::Write(WriteCommand::ListPush {
                list,
                data: data(text)?,
                ttl: ttl(t)?,
                create_list: true,
                ephemeral,
            }),
            Request::ItemSet {
                kind,
                object,
                key: k,
                data: text,
                if_match,
                ttl: t,
                ephemeral,
            } => {
                key(kind, &k)?;
                Command::Write(WriteCommand::ItemSet {
                    kind,
                    object,
                    key: k,
                    data: data(text)?,
                    if_match,
                    ttl: ttl(t)?,
                    mode: SetMode::Upsert,
                    create_map: true,
                    ephemeral,
                })
            }
            Request::ItemUpdate {
                kind,
                object,
                key: k,
                data: text,
                if_match,
            } => {
                key(kind, &k)?;
                Command::Write(WriteCommand::ItemUpdate {
                    kind,
                    object,
                    key: k,
                    patch: data(text)?,
                    if_match,
                })
            }
            Request::ItemRemove {
                kind,
                object,
                key: k,
                if_match,
            } => {
                key(kind, &k)?;
                Command::Write(WriteCommand::ItemRemove {
                    kind,
                    object,
                    key: k,
                    if_match,
                })
            }
            Request::Publish { stream, data } => Command::Publish {
                stream,
                data: Json::parse(data, limits.max_message_bytes)?,
            },
            Request::Subscribe {
                sub_id,
                object,
                since,
                window,
            } => Command::Subscribe {
                sub_id,
                object,
                since,
                window: window
                    .unwrap_or(DEFAULT_LIST_WINDOW)
                    .clamp(1, limits.max_page),
            },
            Request::Unsubscribe { sub_id } => Command::Unsubscribe { sub_id },
            Request::ServiceCreate { unique_name, flags } => {
                Command::Admin(AdminCommand::ServiceCreate { unique_name, flags })
            }
            Request::ServiceList => Command::Admin(AdminCommand::ServiceList),
            Request::ServiceGet { service } => Command::Admin(AdminCommand::ServiceGet { service }),
            Request::ServiceUpdate { service, flags } => {
                Command::Admin(AdminCommand::ServiceUpdate { service, flags })
            }
            Request::ServiceDelete { service } => {
                Command::Admin(AdminCommand::ServiceDelete { service })
            }
            Request::KeyCreate { friendly_name } => {
                Command::Admin(AdminCommand::KeyCreate { friendly_name })
            }
            Request::KeyList => Command::Admin(AdminCommand::KeyList),
            Request::KeyRevoke { sid } => Command::Admin(AdminCommand::KeyRevoke { sid }),
            Request::PermissionGrant {
                object,
                identity,
                rights,
            } => {
                check_identity(&identity, limits)?;
                Command::Admin(AdminCommand::PermissionGrant {
                    object,
                    identity,
                    rights,
                })
            }
            Request::PermissionRevoke { object, identity } => {
                check_identity(&identity, limits)?;
                Command::Admin(AdminCommand::PermissionRevoke { object, identity })
            }
            Request::PermissionList { object } => {
                Command::Admin(AdminCommand::PermissionList { object })
            }
        })
    }
}

/// JSON text that passed `Limits::check_json`: within its size limit and loadable by
/// every reader (see there). Only [`Json::parse`] and the object rules' own merge make
/// one, so a value in a command or a record cannot be unreadable.
#[derive(Debug, Clone, PartialEq)]
pub struct Json(String);

impl Json {
    /// Checks `text` against the data limit (`max_bytes`) and the readers' rules.
    pub fn parse(text: String, max_bytes: usize) -> Result<Json, WireError> {
        syncline_proto::limits::check_json(&text, max_bytes)?;
        Ok(Json(text))
    }

    /// JSON produced by serde_json itself (a merge result), which any reader loads.
    pub(crate) fn from_serialized(text: String) -> Json {
        Json(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
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
        ttl: Option<u64>,
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
        ttl: Option<u64>,
        data: Option<Json>,
    },
    /// Change only the expiry of an object, or of one of its items (`key`). Takes
    /// `manage`; the revision stays, and no event is sent (the data did not change).
    SetTtl {
        kind: ObjectKind,
        object: String,
        key: Option<ItemKey>,
        ttl: u64,
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
        ttl: Option<u64>,
        create_list: bool,
        /// Owned by the writer's connections (see `ItemSet::ephemeral`).
        ephemeral: bool,
    },
    /// Write an item's data, as `mode` says (a list item must exist whatever the mode).
    ItemSet {
        kind: ObjectKind,
        object: String,
        key: ItemKey,
        data: Json,
        if_match: Option<u64>,
        ttl: Option<u64>,
        mode: SetMode,
        /// A map `set` may create its map (by name) if it does not exist (QUIC's
        /// `set` does; REST's item create answers that the map is missing).
        create_map: bool,
        /// The item becomes the writer's: removed when the writer's identity has had no
        /// live connection for the service's debouncing window. Only a token holder's
        /// QUIC connection can write one (REST has no connection to outlive).
        ephemeral: bool,
    },
    ItemUpdate {
        kind: ObjectKind,
        object: String,
        key: ItemKey,
        patch: Json,
        if_match: Option<u64>,
    },
    ItemRemove {
        kind: ObjectKind,
        object: String,
        key: ItemKey,
        if_match: Option<u64>,
    },
}

/// What an item `set` does about an item that is there, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMode {
    /// Replace it, or create it (a map item, and its map by name): QUIC's map `set`.
    Upsert,
    /// Create it; `AlreadyExists` if it is there (REST's item create).
    Create,
    /// Replace it; `NotFound` if it is not there (REST's item update, any list `set`).
    Replace,
}

impl WriteCommand {
    /// The time to live the write sets, if any: changing it takes `manage`.
    pub fn ttl(&self) -> Option<u64> {
        match self {
            WriteCommand::SetTtl { ttl, .. } => Some(*ttl),
            WriteCommand::DocSet { ttl, .. }
            | WriteCommand::Create { ttl, .. }
            | WriteCommand::ListPush { ttl, .. }
            | WriteCommand::ItemSet { ttl, .. } => *ttl,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncline_proto::ErrorCode;

    fn doc_set(data: &str, ttl: Option<u64>) -> Request {
        Request::DocSet {
            document: "d".into(),
            data: data.into(),
            if_match: None,
            ttl,
        }
    }

    #[test]
    fn writes_are_checked_once_at_the_edge() {
        let l = Limits::default();
        let ok = Command::from_request(doc_set(r#"{"a":1}"#, Some(60)), &l).unwrap();
        assert!(matches!(
            ok,
            Command::Write(WriteCommand::DocSet { ttl: Some(60), .. })
        ));
        let refused = [
            doc_set(r#""\ud800""#, None),
            doc_set("1e400", None),
            doc_set(&format!("{}{}", "[".repeat(200), "]".repeat(200)), None),
            doc_set("{}", Some(260_000_000_000)),
            Request::ItemSet {
                kind: ObjectKind::Map,
                object: "m".into(),
                key: ItemKey::Key("k".into()),
                data: "1".into(),
                if_match: None,
                ttl: Some(u64::MAX),
                ephemeral: false,
            },
            Request::ListPush {
                list: "l".into(),
                data: "{".into(),
                ttl: None,
                ephemeral: false,
            },
            Request::ItemRemove {
                kind: ObjectKind::List,
                object: "l".into(),
                key: ItemKey::Key("k".into()),
                if_match: None,
            },
            Request::Publish {
                stream: "s".into(),
                data: format!("\"{}\"", "x".repeat(5000)),
            },
            Request::Items {
                kind: ObjectKind::List,
                object: "l".into(),
                from: None,
                order: Order::Asc,
                limit: 0,
            },
            Request::PermissionGrant {
                object: "d".into(),
                identity: String::new(),
                rights: Rights::default(),
            },
        ];
        for r in refused {
            let err = Command::from_request(r.clone(), &l).unwrap_err();
            assert!(
                matches!(err.code, ErrorCode::InvalidArgument | ErrorCode::TooLarge),
                "{r:?}: {err:?}"
            );
        }
        assert_eq!(
            Command::from_request(Request::Ping, &l).unwrap(),
            Command::Ping
        );
    }
}
