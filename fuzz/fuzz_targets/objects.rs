//! The pure object rules (`server/src/objects/`): `merge_patch`, documents and items,
//! over records and payloads built from the input. Payloads go through `Json::parse`
//! as at the edge; stored data is whatever the input says (a record may predate the
//! checks). Checks, beyond "no panic": a merge keeps every key the patch does not name,
//! drops the ones it sets to null, takes the rest from the patch, fits the limit and is
//! JSON every reader loads; every change bumps the revision by one, its event carries
//! that revision, an item records it, a push takes the list's next index; refusals are
//! typed errors.
//!
//! Revisions and list indices stay below 2^53: a record only gets there one write at
//! a time, so a record at `u64::MAX` is not a state the server can be in.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use syncline_proto::{EventKind, ItemKey, Limits, ObjectKind, Reason};
use syncline_core::command::{Json, Key};
use syncline_core::objects::{self, document, items, WriteContext};
use syncline_core::store::{ItemRecord, ObjectRecord};

const MAX_REVISION: u64 = 1 << 53;

fn kind(u: &mut Unstructured) -> Result<ObjectKind> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => ObjectKind::Document,
        1 => ObjectKind::List,
        2 => ObjectKind::Map,
        _ => ObjectKind::Stream,
    })
}

fn key(u: &mut Unstructured) -> Result<ItemKey> {
    Ok(if u.arbitrary()? {
        ItemKey::Index(u.int_in_range(0..=MAX_REVISION)?)
    } else {
        ItemKey::Key(u.arbitrary::<&str>()?.to_owned())
    })
}

fn opt_u64(u: &mut Unstructured, max: u64) -> Result<Option<u64>> {
    Ok(if u.arbitrary()? {
        Some(u.int_in_range(0..=max)?)
    } else {
        None
    })
}

fn record(u: &mut Unstructured, data: String) -> Result<ObjectRecord> {
    Ok(ObjectRecord {
        service_sid: "IS00000000000000000000000000000000".into(),
        sid: "ET00000000000000000000000000000001".into(),
        kind: kind(u)?,
        unique_name: None,
        revision: u.int_in_range(0..=MAX_REVISION)?,
        data,
        created_by: "alice".into(),
        date_created: 1,
        date_updated: 2,
        date_expires: opt_u64(u, u64::MAX)?,
        next_index: u.int_in_range(0..=MAX_REVISION)?,
    })
}

fn item(u: &mut Unstructured, data: String, object: &ObjectRecord) -> Result<ItemRecord> {
    Ok(ItemRecord {
        revision: u.int_in_range(0..=object.revision)?,
        data,
        created_by: "bob".into(),
        date_created: 1,
        date_updated: 2,
        date_expires: opt_u64(u, u64::MAX)?,
        ephemeral_owner: if u.arbitrary()? {
            Some("bob".into())
        } else {
            None
        },
    })
}

/// The merge's contract, checked against the inputs.
fn check_merge(current: &str, patch: &str, merged: &Json, limits: &Limits) {
    syncline_proto::limits::check_json(merged.as_str(), limits.max_data_bytes)
        .expect("a merge result is loadable JSON within the limit");
    let Ok(Value::Object(merged)) = serde_json::from_str::<Value>(merged.as_str()) else {
        panic!("a merge result is an object");
    };
    let Ok(Value::Object(patch)) = serde_json::from_str::<Value>(patch) else {
        panic!("a merge took a patch that is not an object");
    };
    for (k, v) in &patch {
        if v.is_null() {
            assert!(!merged.contains_key(k), "{k} set to null is removed");
        } else {
            assert_eq!(merged.get(k), Some(v), "{k} comes from the patch");
        }
    }
    if let Ok(Value::Object(before)) = serde_json::from_str::<Value>(current) {
        for (k, v) in &before {
            if !patch.contains_key(k) {
                assert_eq!(merged.get(k), Some(v), "{k} is kept");
            }
        }
    }
}

fn ctx() -> WriteContext {
    WriteContext {
        service_sid: "IS00000000000000000000000000000000".into(),
        actor: "carol".into(),
        origin: 7,
        now_ms: 1_700_000_000_000,
        guard: None,
        may_create: true,
    }
}

fn run(u: &mut Unstructured) -> Result<()> {
    let limits = Limits {
        max_data_bytes: u.int_in_range(2..=16 * 1024)?,
        max_name_chars: u.int_in_range(1..=320)?,
        ..Limits::default()
    };
    let op = u.int_in_range(0..=8u8)?;
    let stored = u.arbitrary::<&str>()?.to_owned();
    let payload = u.arbitrary::<&str>()?.to_owned();
    let object = record(u, stored.clone())?;
    let current_item = if u.arbitrary()? {
        Some(item(u, stored.clone(), &object)?)
    } else {
        None
    };
    let key = key(u)?;
    let if_match = opt_u64(u, MAX_REVISION)?;
    let ttl = opt_u64(u, limits.max_ttl_s)?;
    let ephemeral: bool = u.arbitrary()?;
    let ctx = ctx();
    let json = match Json::parse(payload.clone(), limits.max_data_bytes) {
        Ok(json) => json,
        Err(e) => {
            assert!(!e.message.is_empty());
            // Not a payload the edge would pass; the rules never see it.
            return Ok(());
        }
    };
    match op {
        0 => {
            if let Ok(merged) = objects::merge_patch(&stored, &json, &limits) {
                check_merge(&stored, &payload, &merged, &limits);
            }
        }
        1 => {
            let new = || document::NewDocument {
                sid: "ET00000000000000000000000000000002".into(),
                unique_name: Some("doc".into()),
            };
            let current = u.arbitrary::<bool>()?.then_some(&object);
            if let Ok((next, event)) = document::set(current, new, json, if_match, ttl, &ctx) {
                assert_eq!(next.data, payload);
                assert_eq!(event.revision, next.revision);
                match current {
                    Some(cur) => {
                        assert_eq!(next.revision, cur.revision + 1);
                        assert_eq!(cur.kind, ObjectKind::Document);
                        assert!(if_match.is_none_or(|m| m == cur.revision));
                    }
                    None => assert_eq!((next.revision, if_match), (0, None)),
                }
            }
        }
        2 => {
            if let Ok((next, event)) = document::update(&object, &json, if_match, &ctx, &limits) {
                check_merge(
                    &stored,
                    &payload,
                    &Json::parse(next.data.clone(), usize::MAX).expect("merged"),
                    &limits,
                );
                assert_eq!(next.revision, object.revision + 1);
                assert_eq!(event.revision, next.revision);
                assert!(matches!(event.kind, EventKind::DocumentUpdated { .. }));
            }
        }
        3 => {
            if document::delete(&object, if_match).is_ok() {
                assert_eq!(object.kind, ObjectKind::Document);
            }
        }
        4 => {
            if let Ok((next, write, event)) = items::push(&object, json, ttl, ephemeral, &ctx) {
                assert_eq!(object.kind, ObjectKind::List);
                assert_eq!(write.key, ItemKey::Index(object.next_index));
                assert_eq!(next.next_index, object.next_index + 1);
                check_item_change(&object, &next, &write, &event);
            }
        }
        5 => {
            let r = items::set(
                &object,
                key.clone(),
                current_item.as_ref(),
                json,
                if_match,
                ttl,
                ephemeral,
                &ctx,
                &limits,
            );
            if let Ok((next, write, event)) = r {
                Key::parse(object.kind, key.clone(), &limits).expect("a set key is well-shaped");
                let owner = write.after.as_ref().and_then(|i| i.ephemeral_owner.as_deref());
                assert_eq!(owner, ephemeral.then_some(ctx.actor.as_str()), "a set decides the owner");
                assert_eq!(
                    write.after.as_ref().map(|i| i.data.as_str()),
                    Some(payload.as_str())
                );
                check_item_change(&object, &next, &write, &event);
            }
        }
        6 => {
            let r = items::update(
                &object,
                key.clone(),
                current_item.as_ref(),
                &json,
                if_match,
                &ctx,
                &limits,
            );
            if let Ok((next, write, event)) = r {
                let after = write.after.as_ref().expect("an update keeps the item");
                check_merge(
                    &stored,
                    &payload,
                    &Json::parse(after.data.clone(), usize::MAX).expect("merged"),
                    &limits,
                );
                check_item_change(&object, &next, &write, &event);
            }
        }
        7 => {
            let reason = if u.arbitrary()? {
                Reason::Write
            } else {
                Reason::Expired
            };
            if let Ok((next, write, event)) =
                items::remove(&object, key, current_item.as_ref(), if_match, reason, &ctx)
            {
                assert!(write.after.is_none());
                check_item_change(&object, &next, &write, &event);
            }
        }
        _ => {
            let _ = Key::parse(kind(u)?, key.clone(), &limits);
            let _ = objects::expect_kind(&object, kind(u)?);
            let at = objects::expiry(ctx.now_ms, ttl.unwrap_or(0));
            assert_eq!(at.is_some(), ttl.unwrap_or(0) > 0);
        }
    }
    Ok(())
}

fn check_item_change(
    before: &ObjectRecord,
    next: &ObjectRecord,
    write: &syncline_core::store::ItemWrite,
    event: &syncline_proto::Event,
) {
    assert_eq!(next.revision, before.revision + 1);
    assert_eq!(event.revision, next.revision);
    assert_eq!(event.object_sid, before.sid);
    if let Some(after) = &write.after {
        assert_eq!(after.revision, next.revision);
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
