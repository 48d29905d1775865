//! The protocol's translation, for QUIC and WebSocket alike: a wire `Request` becomes a
//! typed core `Command`, and a core `Outcome` becomes the wire's `Response`. Nothing
//! else of the wire goes below.

use syncline_core::command::{
    AdminCommand, Command, Identity, Json, Key, Outcome, PageSize, ReadCommand, SetMode, Ttl,
    WriteCommand,
};
use syncline_proto::limits::DEFAULT_LIST_WINDOW;
use syncline_proto::{ItemKey, Limits, ObjectKind, Request, Response, WireError};

/// The command a request asks for, checked. `Hello` is the connection's own
/// business (authentication), not a command.
pub fn command(request: Request, limits: &Limits) -> Result<Command, WireError> {
    let data = |text: String| Json::parse(text, limits.max_data_bytes);
    let ttl = |ttl: Option<u64>| Ttl::parse_opt(ttl, limits);
    let key = |kind: ObjectKind, key: ItemKey| Key::parse(kind, key, limits);
    Ok(match request {
        Request::Hello { .. } => return Err(WireError::invalid("already authenticated")),
        Request::Ping => Command::Ping,
        Request::Nodes => Command::Nodes,
        Request::UpdateToken { token } => Command::UpdateToken { token },
        Request::DocGet { document } => Command::Read(ReadCommand::Document { document }),
        Request::Fetch { object } => Command::Read(ReadCommand::Object { object }),
        Request::ItemGet {
            kind,
            object,
            key: k,
        } => Command::Read(ReadCommand::Item {
            kind,
            object,
            key: key(kind, k)?,
        }),
        Request::Items {
            kind,
            object,
            from,
            order,
            limit,
        } => {
            let limit = PageSize::parse(limit, limits)?;
            Command::Read(ReadCommand::Items {
                kind,
                object,
                from: from.map(|k| key(kind, k)).transpose()?,
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
        } => Command::Write(WriteCommand::ItemSet {
            kind,
            object,
            key: key(kind, k)?,
            data: data(text)?,
            if_match,
            ttl: ttl(t)?,
            mode: SetMode::Upsert,
            create_map: true,
            ephemeral,
        }),
        Request::ItemUpdate {
            kind,
            object,
            key: k,
            data: text,
            if_match,
        } => Command::Write(WriteCommand::ItemUpdate {
            kind,
            object,
            key: key(kind, k)?,
            patch: data(text)?,
            if_match,
        }),
        Request::ItemRemove {
            kind,
            object,
            key: k,
            if_match,
        } => Command::Write(WriteCommand::ItemRemove {
            kind,
            object,
            key: key(kind, k)?,
            if_match,
        }),
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
            window: PageSize::clamped(window.unwrap_or(DEFAULT_LIST_WINDOW), limits),
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
        } => Command::Admin(AdminCommand::PermissionGrant {
            object,
            identity: Identity::parse(identity, limits)?,
            rights,
        }),
        Request::PermissionRevoke { object, identity } => {
            Command::Admin(AdminCommand::PermissionRevoke {
                object,
                identity: Identity::parse(identity, limits)?,
            })
        }
        Request::PermissionList { object } => {
            Command::Admin(AdminCommand::PermissionList { object })
        }
        Request::SetTtl {
            kind,
            object,
            key: k,
            ttl,
        } => Command::Write(WriteCommand::SetTtl {
            kind,
            object,
            key: k.map(|k| key(kind, k)).transpose()?,
            ttl: Ttl::parse(ttl, limits)?,
        }),
        Request::ItemCreate {
            kind,
            object,
            key,
            data,
            ttl,
            ephemeral,
        } => {
            // An unconditional `ItemSet`, checked as one, that only creates.
            let set = Request::ItemSet {
                kind,
                object,
                key,
                data,
                if_match: None,
                ttl,
                ephemeral,
            };
            let mut set = command(set, limits)?;
            if let Command::Write(WriteCommand::ItemSet { mode, .. }) = &mut set {
                *mode = SetMode::Create;
            }
            set
        }
    })
}

/// The wire's answer for a core outcome.
pub fn response(outcome: Outcome) -> Response {
    match outcome {
        Outcome::TokenUpdated { expires_at } => Response::TokenUpdated { expires_at },
        Outcome::Pong => Response::Pong,
        Outcome::Nodes(nodes) => Response::Nodes(nodes),
        Outcome::Document(d) => Response::Document(d),
        Outcome::Deleted { sid, revision } => Response::Deleted { sid, revision },
        Outcome::Object(o) => Response::Object(o),
        Outcome::Item(i) => Response::Item(i),
        Outcome::ItemRemoved { key, revision } => Response::ItemRemoved { key, revision },
        Outcome::Items { items, next } => Response::Items { items, next },
        Outcome::Published { sequence } => Response::Published { sequence },
        Outcome::Subscribed {
            sub_id,
            object_sid,
            kind,
        } => Response::Subscribed {
            sub_id,
            object_sid,
            kind,
        },
        Outcome::Unsubscribed { sub_id } => Response::Unsubscribed { sub_id },
        Outcome::Service(s) => Response::Service(s),
        Outcome::Services(s) => Response::Services(s),
        Outcome::Key(k) => Response::Key(k),
        Outcome::Keys(k) => Response::Keys(k),
        Outcome::Permission(p) => Response::Permission(p),
        Outcome::Permissions(p) => Response::Permissions(p),
        Outcome::Done => Response::Done,
        Outcome::Written(w) => Response::Written(w),
        Outcome::Objects { objects, next } => Response::Objects { objects, next },
        Outcome::Documents { documents, next } => Response::Documents { documents, next },
    }
}

/// What a request asks for, as the metrics count it (`metrics::KINDS`).
pub fn kind(request: &Request) -> &'static str {
    match request {
        Request::Hello { .. } => "hello",
        Request::Ping => "ping",
        Request::Nodes => "nodes",
        Request::UpdateToken { .. } => "update_token",
        Request::DocGet { .. }
        | Request::Fetch { .. }
        | Request::ItemGet { .. }
        | Request::Items { .. } => "read",
        Request::DocSet { .. }
        | Request::DocUpdate { .. }
        | Request::Create { .. }
        | Request::Delete { .. }
        | Request::ListPush { .. }
        | Request::ItemSet { .. }
        | Request::ItemUpdate { .. }
        | Request::ItemRemove { .. }
        | Request::ItemCreate { .. }
        | Request::SetTtl { .. } => "write",
        Request::Publish { .. } => "publish",
        Request::Subscribe { .. } => "subscribe",
        Request::Unsubscribe { .. } => "unsubscribe",
        _ => "admin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncline_proto::{ErrorCode, Order, Rights};

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
        let ok = command(doc_set(r#"{"a":1}"#, Some(60)), &l).unwrap();
        assert!(matches!(
            ok,
            Command::Write(WriteCommand::DocSet { ttl: Some(t), .. }) if t.seconds() == 60
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
            let err = command(r.clone(), &l).unwrap_err();
            assert!(
                matches!(err.code, ErrorCode::InvalidArgument | ErrorCode::TooLarge),
                "{r:?}: {err:?}"
            );
        }
        assert_eq!(command(Request::Ping, &l).unwrap(), Command::Ping);
    }

    fn item_create(kind: ObjectKind, key: ItemKey, ttl: Option<u64>) -> Request {
        Request::ItemCreate {
            kind,
            object: "m".into(),
            key,
            data: "1".into(),
            ttl,
            ephemeral: false,
        }
    }

    #[test]
    fn an_item_create_is_a_map_set_that_only_creates_and_may_create_the_map() {
        let l = Limits::default();
        let request = item_create(ObjectKind::Map, ItemKey::Key("k".into()), Some(5));
        assert_eq!(kind(&request), "write");
        let Command::Write(WriteCommand::ItemSet {
            key,
            if_match,
            ttl,
            mode,
            create_map,
            ..
        }) = command(request, &l).unwrap()
        else {
            panic!("not an item set")
        };
        assert_eq!(*key, ItemKey::Key("k".into()));
        assert_eq!((if_match, ttl.map(Ttl::seconds)), (None, Some(5)));
        assert_eq!((mode, create_map), (SetMode::Create, true));
        for refused in [
            item_create(ObjectKind::Map, ItemKey::Key(String::new()), None),
            item_create(ObjectKind::Map, ItemKey::Index(1), None),
            item_create(ObjectKind::List, ItemKey::Key("k".into()), None),
            item_create(ObjectKind::Document, ItemKey::Key("k".into()), None),
            item_create(ObjectKind::Map, ItemKey::Key("k".into()), Some(u64::MAX)),
        ] {
            let err = command(refused.clone(), &l).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidArgument, "{refused:?}: {err:?}");
        }
    }
}
