//! Documents: one JSON value, replaced by `set`, merged by `update`, removed by `delete`.

use syncline_proto::{DocumentInfo, Event, EventKind, Limits, ObjectKind, WireError};

use super::{expect_kind, expiry, WriteContext};
use crate::store::ObjectRecord;
use crate::values::Json;

/// A document record as clients see it.
pub fn info(r: &ObjectRecord) -> DocumentInfo {
    DocumentInfo {
        sid: r.sid.clone(),
        unique_name: r.unique_name.clone(),
        revision: r.revision,
        data: r.data.clone(),
        created_by: r.created_by.clone(),
        date_created: r.date_created,
        date_updated: r.date_updated,
        date_expires: r.date_expires,
    }
}

fn check_if_match(current: &ObjectRecord, if_match: Option<u64>) -> Result<(), WireError> {
    match if_match {
        Some(expected) if expected != current.revision => {
            Err(WireError::conflict(current.revision, expected))
        }
        _ => Ok(()),
    }
}

fn updated_event(before: &ObjectRecord, after: &ObjectRecord, ctx: &WriteContext) -> Event {
    Event {
        object_sid: after.sid.clone(),
        revision: after.revision,
        origin: ctx.origin,
        actor: ctx.actor.clone(),
        kind: EventKind::DocumentUpdated {
            data: after.data.clone(),
            previous: Some(before.data.clone()),
            date_updated: after.date_updated,
        },
    }
}

/// What a new document needs that the caller decides: its sid and unique name.
pub struct NewDocument {
    pub sid: String,
    pub unique_name: Option<String>,
}

/// `set`: replace the data, or create the document (revision 0) if `current` is `None`.
/// A TTL of 0 clears the expiry; no TTL keeps it.
pub fn set(
    current: Option<&ObjectRecord>,
    create: impl FnOnce() -> NewDocument,
    data: Json,
    if_match: Option<u64>,
    ttl: Option<u64>,
    ctx: &WriteContext,
) -> Result<(ObjectRecord, Event), WireError> {
    let data = data.into_string();
    match current {
        None => {
            if if_match.is_some() {
                return Err(WireError::not_found("document (if_match given)"));
            }
            let new = create();
            let record = ObjectRecord {
                store_version: 0,
                service_sid: ctx.service_sid.clone(),
                sid: new.sid,
                kind: ObjectKind::Document,
                unique_name: new.unique_name,
                revision: 0,
                data,
                created_by: ctx.actor.clone(),
                date_created: ctx.now_ms,
                date_updated: ctx.now_ms,
                date_expires: ttl.and_then(|t| expiry(ctx.now_ms, t)),
                next_index: 0,
            };
            let event = Event {
                object_sid: record.sid.clone(),
                revision: 0,
                origin: ctx.origin,
                actor: ctx.actor.clone(),
                kind: EventKind::DocumentUpdated {
                    data: record.data.clone(),
                    previous: None,
                    date_updated: record.date_updated,
                },
            };
            Ok((record, event))
        }
        Some(cur) => {
            check_kind(cur)?;
            check_if_match(cur, if_match)?;
            let mut next = cur.clone();
            next.revision += 1;
            next.data = data;
            next.date_updated = ctx.now_ms;
            if let Some(t) = ttl {
                next.date_expires = expiry(ctx.now_ms, t);
            }
            let event = updated_event(cur, &next, ctx);
            Ok((next, event))
        }
    }
}

/// `update`: merge the top-level keys of `patch` (a JSON object) into the data; a key
/// whose value is `null` is removed, as in JSON merge patch at the top level.
pub fn update(
    current: &ObjectRecord,
    patch: &Json,
    if_match: Option<u64>,
    ctx: &WriteContext,
    limits: &Limits,
) -> Result<(ObjectRecord, Event), WireError> {
    check_kind(current)?;
    check_if_match(current, if_match)?;
    let data = super::merge_patch(&current.data, patch, limits)?.into_string();
    let mut next = current.clone();
    next.revision += 1;
    next.data = data;
    next.date_updated = ctx.now_ms;
    let event = updated_event(current, &next, ctx);
    Ok((next, event))
}

/// `delete`: checks that the caller's expectation holds.
pub fn delete(current: &ObjectRecord, if_match: Option<u64>) -> Result<(), WireError> {
    check_kind(current)?;
    check_if_match(current, if_match)
}

fn check_kind(r: &ObjectRecord) -> Result<(), WireError> {
    expect_kind(r, ObjectKind::Document)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use syncline_proto::ErrorCode;

    fn ctx() -> WriteContext {
        WriteContext {
            service_sid: "IS00000000000000000000000000000000".into(),
            actor: "alice".into(),
            origin: 3,
            now_ms: 1_000,
            guard: None,
            may_create: true,
        }
    }

    fn j(text: &str) -> Json {
        Json::parse(text.into(), Limits::default().max_data_bytes).unwrap()
    }

    fn new_doc() -> NewDocument {
        NewDocument {
            sid: "ET00000000000000000000000000000001".into(),
            unique_name: Some("d".into()),
        }
    }

    #[test]
    fn create_then_set_counts_revisions() {
        let (r0, e0) = set(None, new_doc, j(r#"{"a":1}"#), None, Some(10), &ctx()).unwrap();
        assert_eq!((r0.revision, e0.revision), (0, 0));
        assert_eq!(r0.date_expires, Some(11_000));
        assert_eq!(r0.created_by, "alice");
        let (r1, e1) = set(Some(&r0), new_doc, j("[1]"), Some(0), None, &ctx()).unwrap();
        assert_eq!((r1.revision, e1.revision), (1, 1));
        assert_eq!(r1.date_expires, Some(11_000), "no ttl keeps the expiry");
        match e1.kind {
            EventKind::DocumentUpdated { previous, .. } => {
                assert_eq!(previous.as_deref(), Some(r#"{"a":1}"#))
            }
            other => panic!("unexpected {other:?}"),
        }
        let (r2, _) = set(Some(&r1), new_doc, j("2"), None, Some(0), &ctx()).unwrap();
        assert_eq!(r2.date_expires, None, "ttl 0 clears the expiry");
    }

    #[test]
    fn stale_if_match_conflicts_with_current_revision() {
        let l = Limits::default();
        let (r0, _) = set(None, new_doc, j("{}"), None, None, &ctx()).unwrap();
        let (r1, _) = set(Some(&r0), new_doc, j("{}"), None, None, &ctx()).unwrap();
        let err = set(Some(&r1), new_doc, j("{}"), Some(0), None, &ctx()).unwrap_err();
        assert_eq!(err.code, ErrorCode::Conflict);
        assert_eq!(err.current_revision, Some(1));
        assert_eq!(
            update(&r1, &j("{}"), Some(5), &ctx(), &l).unwrap_err().code,
            ErrorCode::Conflict
        );
        assert_eq!(delete(&r1, Some(0)).unwrap_err().code, ErrorCode::Conflict);
        assert!(delete(&r1, Some(1)).is_ok());
    }

    #[test]
    fn update_merges_top_level_keys() {
        let l = Limits::default();
        let (r0, _) = set(
            None,
            new_doc,
            j(r#"{"a":1,"b":{"x":1},"c":3}"#),
            None,
            None,
            &ctx(),
        )
        .unwrap();
        let (r1, _) = update(&r0, &j(r#"{"b":{"y":2},"c":null,"d":4}"#), None, &ctx(), &l).unwrap();
        let v: Value = serde_json::from_str(&r1.data).unwrap();
        assert_eq!(v, serde_json::json!({"a":1,"b":{"y":2},"d":4}));
        assert_eq!(
            update(&r1, &j("[1]"), None, &ctx(), &l).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn a_merge_that_outgrows_the_limit_is_refused() {
        let l = Limits::default();
        let half = format!(r#"{{"a":"{}"}}"#, "x".repeat(l.max_data_bytes / 2 + 1));
        let (r0, _) = set(None, new_doc, j(&half), None, None, &ctx()).unwrap();
        let other = half.replace(r#""a""#, r#""b""#);
        let err = update(&r0, &j(&other), None, &ctx(), &l).unwrap_err();
        assert_eq!(err.code, ErrorCode::TooLarge);
    }
}
