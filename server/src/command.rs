//! Typed write commands: what a transport's edge turns a client's write into, once,
//! before anything below it runs. Everything a request carries that does not depend on
//! stored state (JSON payloads, TTL bounds, item key shapes) is checked here, so the
//! commit task and the object rules receive only values that already passed, and
//! nothing below the edge sees the wire's `Request`.

use syncline_proto::{ItemKey, Limits, ObjectKind, Request, WireError};

use crate::objects::items;

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
    /// Replace a document's data, creating it (by name) if it does not exist.
    DocSet {
        document: String,
        data: Json,
        if_match: Option<u64>,
        ttl: Option<u64>,
    },
    /// Merge top-level keys into a document's data.
    DocUpdate {
        document: String,
        patch: Json,
        if_match: Option<u64>,
    },
    Create {
        kind: ObjectKind,
        unique_name: Option<String>,
        ttl: Option<u64>,
    },
    Delete {
        kind: Option<ObjectKind>,
        object: String,
        if_match: Option<u64>,
    },
    /// Append to a list, creating it (by name) if it does not exist.
    ListPush {
        list: String,
        data: Json,
        ttl: Option<u64>,
    },
    /// Replace a list item, or upsert a map item (creating the map by name if needed).
    ItemSet {
        kind: ObjectKind,
        object: String,
        key: ItemKey,
        data: Json,
        if_match: Option<u64>,
        ttl: Option<u64>,
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

impl WriteCommand {
    /// The write `request` asks for, checked; `Ok(None)` when it is not a write.
    pub fn from_request(request: Request, limits: &Limits) -> Result<Option<Self>, WireError> {
        let data = |text: String| Json::parse(text, limits.max_data_bytes);
        let ttl = |ttl: Option<u64>| -> Result<Option<u64>, WireError> {
            if let Some(t) = ttl {
                limits.check_ttl(t)?;
            }
            Ok(ttl)
        };
        let command = match request {
            Request::DocSet {
                document,
                data: text,
                if_match,
                ttl: t,
            } => WriteCommand::DocSet {
                document,
                data: data(text)?,
                if_match,
                ttl: ttl(t)?,
            },
            Request::DocUpdate {
                document,
                data: text,
                if_match,
            } => WriteCommand::DocUpdate {
                document,
                patch: data(text)?,
                if_match,
            },
            Request::Create {
                kind,
                unique_name,
                ttl: t,
            } => WriteCommand::Create {
                kind,
                unique_name,
                ttl: ttl(t)?,
            },
            Request::Delete {
                kind,
                object,
                if_match,
            } => WriteCommand::Delete {
                kind,
                object,
                if_match,
            },
            Request::ListPush {
                list,
                data: text,
                ttl: t,
            } => WriteCommand::ListPush {
                list,
                data: data(text)?,
                ttl: ttl(t)?,
            },
            Request::ItemSet {
                kind,
                object,
                key,
                data: text,
                if_match,
                ttl: t,
            } => {
                items::check_key(kind, &key, limits)?;
                WriteCommand::ItemSet {
                    kind,
                    object,
                    key,
                    data: data(text)?,
                    if_match,
                    ttl: ttl(t)?,
                }
            }
            Request::ItemUpdate {
                kind,
                object,
                key,
                data: text,
                if_match,
            } => {
                items::check_key(kind, &key, limits)?;
                WriteCommand::ItemUpdate {
                    kind,
                    object,
                    key,
                    patch: data(text)?,
                    if_match,
                }
            }
            Request::ItemRemove {
                kind,
                object,
                key,
                if_match,
            } => {
                items::check_key(kind, &key, limits)?;
                WriteCommand::ItemRemove {
                    kind,
                    object,
                    key,
                    if_match,
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(command))
    }

    /// The time to live the write sets, if any: changing it takes `manage`.
    pub fn ttl(&self) -> Option<u64> {
        match self {
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
        let ok = WriteCommand::from_request(doc_set(r#"{"a":1}"#, Some(60)), &l).unwrap();
        assert!(matches!(
            ok,
            Some(WriteCommand::DocSet { ttl: Some(60), .. })
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
            },
            Request::ListPush {
                list: "l".into(),
                data: "{".into(),
                ttl: None,
            },
            Request::ItemRemove {
                kind: ObjectKind::List,
                object: "l".into(),
                key: ItemKey::Key("k".into()),
                if_match: None,
            },
        ];
        for r in refused {
            let err = WriteCommand::from_request(r.clone(), &l).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidArgument, "{r:?}");
        }
        assert_eq!(
            WriteCommand::from_request(Request::Ping, &l).unwrap(),
            None,
            "not a write"
        );
    }
}
