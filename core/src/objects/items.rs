//! Lists and maps: items keyed by index (lists, assigned by `push`, never reused) or by
//! string (maps). Every item change bumps the object's revision, and the item records
//! that revision as its own.

use syncline_proto::{Event, EventKind, ItemInfo, ItemKey, Limits, ObjectKind, Reason, WireError};

use super::{expect_kind, expiry, merge_patch, WriteContext};
use crate::store::{ItemRecord, ItemWrite, ObjectRecord};
use crate::values::Json;

/// One applied item change: the object's new record, the item write, the event.
pub type ItemChange = (ObjectRecord, ItemWrite, Event);

pub fn item_info(key: &ItemKey, r: &ItemRecord) -> ItemInfo {
    ItemInfo {
        key: key.clone(),
        revision: r.revision,
        data: r.data.clone(),
        created_by: r.created_by.clone(),
        date_created: r.date_created,
        date_updated: r.date_updated,
        date_expires: r.date_expires,
    }
}

fn check_if_match(item: &ItemRecord, if_match: Option<u64>) -> Result<(), WireError> {
    match if_match {
        Some(expected) if expected != item.revision => {
            Err(WireError::conflict(item.revision, expected))
        }
        _ => Ok(()),
    }
}

fn bump(object: &ObjectRecord, ctx: &WriteContext) -> ObjectRecord {
    let mut next = object.clone();
    next.revision += 1;
    next.date_updated = ctx.now_ms;
    next
}

fn event(object: &ObjectRecord, ctx: &WriteContext, kind: EventKind) -> Event {
    Event {
        object_sid: object.sid.clone(),
        revision: object.revision,
        origin: ctx.origin,
        actor: ctx.actor.clone(),
        kind,
    }
}

/// Who owns an item written with `ephemeral`: the writer (see `ItemRecord::ephemeral_owner`).
fn owner(ephemeral: bool, ctx: &WriteContext) -> Option<String> {
    ephemeral.then(|| ctx.actor.clone())
}

fn added(
    object: &ObjectRecord,
    key: ItemKey,
    data: String,
    ttl: Option<u64>,
    ephemeral_owner: Option<String>,
    ctx: &WriteContext,
) -> ItemChange {
    let next = bump(object, ctx);
    let item = ItemRecord {
        revision: next.revision,
        data,
        created_by: ctx.actor.clone(),
        date_created: ctx.now_ms,
        date_updated: ctx.now_ms,
        date_expires: ttl.and_then(|t| expiry(ctx.now_ms, t)),
        ephemeral_owner,
    };
    let ev = event(
        &next,
        ctx,
        EventKind::ItemAdded {
            item: item_info(&key, &item),
        },
    );
    (
        next,
        ItemWrite {
            key,
            before: None,
            after: Some(item),
        },
        ev,
    )
}

fn updated(
    object: &ObjectRecord,
    key: ItemKey,
    current: &ItemRecord,
    data: String,
    ttl: Option<u64>,
    ephemeral_owner: Option<String>,
    ctx: &WriteContext,
) -> ItemChange {
    let next = bump(object, ctx);
    let mut item = current.clone();
    item.revision = next.revision;
    item.data = data;
    item.ephemeral_owner = ephemeral_owner;
    item.date_updated = ctx.now_ms;
    if let Some(t) = ttl {
        item.date_expires = expiry(ctx.now_ms, t);
    }
    let ev = event(
        &next,
        ctx,
        EventKind::ItemUpdated {
            item: item_info(&key, &item),
            previous: current.data.clone(),
        },
    );
    (
        next,
        ItemWrite {
            key,
            before: Some(current.clone()),
            after: Some(item),
        },
        ev,
    )
}

/// `push`: appends with the list's next index.
pub fn push(
    list: &ObjectRecord,
    data: Json,
    ttl: Option<u64>,
    ephemeral: bool,
    ctx: &WriteContext,
) -> Result<ItemChange, WireError> {
    expect_kind(list, ObjectKind::List)?;
    let key = ItemKey::Index(list.next_index);
    let owner = owner(ephemeral, ctx);
    let (mut next, write, ev) = added(list, key, data.into_string(), ttl, owner, ctx);
    next.next_index += 1;
    Ok((next, write, ev))
}

/// `set`: replaces an item's data. A list item must exist; a map item is created if
/// it does not (then `if_match` cannot hold and is `NotFound`). A set decides who owns
/// the item: the writer with `ephemeral`, nobody (it stays) without.
#[allow(clippy::too_many_arguments)]
pub fn set(
    object: &ObjectRecord,
    key: ItemKey,
    current: Option<&ItemRecord>,
    data: Json,
    if_match: Option<u64>,
    ttl: Option<u64>,
    ephemeral: bool,
    ctx: &WriteContext,
    limits: &Limits,
) -> Result<ItemChange, WireError> {
    crate::values::Key::parse(object.kind, key.clone(), limits)?;
    let data = data.into_string();
    let owner = owner(ephemeral, ctx);
    match current {
        Some(cur) => {
            check_if_match(cur, if_match)?;
            Ok(updated(object, key, cur, data, ttl, owner, ctx))
        }
        None if object.kind == ObjectKind::Map && if_match.is_none() => {
            Ok(added(object, key, data, ttl, owner, ctx))
        }
        None => Err(WireError::not_found("item")),
    }
}

/// `update`: merges top-level keys into an existing item; its owner stays.
pub fn update(
    object: &ObjectRecord,
    key: ItemKey,
    current: Option<&ItemRecord>,
    patch: &Json,
    if_match: Option<u64>,
    ctx: &WriteContext,
    limits: &Limits,
) -> Result<ItemChange, WireError> {
    crate::values::Key::parse(object.kind, key.clone(), limits)?;
    let cur = current.ok_or_else(|| WireError::not_found("item"))?;
    check_if_match(cur, if_match)?;
    let data = merge_patch(&cur.data, patch, limits)?.into_string();
    let owner = cur.ephemeral_owner.clone();
    Ok(updated(object, key, cur, data, None, owner, ctx))
}

/// `remove` (by a write) or expiry (by the reaper, `reason: Expired`).
pub fn remove(
    object: &ObjectRecord,
    key: ItemKey,
    current: Option<&ItemRecord>,
    if_match: Option<u64>,
    reason: Reason,
    ctx: &WriteContext,
) -> Result<ItemChange, WireError> {
    let cur = current.ok_or_else(|| WireError::not_found("item"))?;
    check_if_match(cur, if_match)?;
    let next = bump(object, ctx);
    let ev = event(
        &next,
        ctx,
        EventKind::ItemRemoved {
            key: key.clone(),
            previous: cur.data.clone(),
            reason,
        },
    );
    Ok((
        next,
        ItemWrite {
            key,
            before: Some(cur.clone()),
            after: None,
        },
        ev,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::new_object;
    use syncline_proto::ErrorCode;

    fn j(text: &str) -> Json {
        Json::parse(text.into(), Limits::default().max_data_bytes).unwrap()
    }

    fn ctx() -> WriteContext {
        WriteContext {
            service_sid: "IS00000000000000000000000000000000".into(),
            actor: "alice".into(),
            origin: 1,
            now_ms: 5_000,
            guard: None,
            may_create: true,
        }
    }

    #[test]
    fn push_assigns_increasing_indices_and_bumps_revisions() {
        let list = new_object(ObjectKind::List, "ES1".into(), None, None, &ctx());
        let (list, w0, e0) = push(&list, j("1"), None, false, &ctx()).unwrap();
        let (list, w1, e1) = push(&list, j("2"), Some(10), false, &ctx()).unwrap();
        assert_eq!(
            (w0.key.clone(), w1.key.clone()),
            (ItemKey::Index(0), ItemKey::Index(1))
        );
        assert_eq!((e0.revision, e1.revision, list.revision), (1, 2, 2));
        assert_eq!(list.next_index, 2);
        let item = w1.after.unwrap();
        assert_eq!((item.revision, item.date_expires), (2, Some(15_000)));
        // Removing the last item does not give its index back.
        let (list, _, e) = remove(
            &list,
            ItemKey::Index(1),
            Some(&item),
            None,
            Reason::Write,
            &ctx(),
        )
        .unwrap();
        assert!(matches!(e.kind, EventKind::ItemRemoved { .. }));
        let (_, w2, _) = push(&list, j("3"), None, false, &ctx()).unwrap();
        assert_eq!(w2.key, ItemKey::Index(2));
    }

    #[test]
    fn item_rules() {
        let l = Limits::default();
        let map = new_object(ObjectKind::Map, "MP1".into(), None, None, &ctx());
        let k = || ItemKey::Key("k".into());
        let (map, w, e) = set(
            &map,
            k(),
            None,
            j(r#"{"a":1}"#),
            None,
            None,
            false,
            &ctx(),
            &l,
        )
        .unwrap();
        assert!(matches!(e.kind, EventKind::ItemAdded { .. }));
        let item = w.after.unwrap();
        let err = set(
            &map,
            k(),
            Some(&item),
            j("{}"),
            Some(0),
            None,
            false,
            &ctx(),
            &l,
        )
        .unwrap_err();
        assert_eq!(
            (err.code, err.current_revision),
            (ErrorCode::Conflict, Some(1))
        );
        let (_, w, e) = update(
            &map,
            k(),
            Some(&item),
            &j(r#"{"b":2}"#),
            Some(1),
            &ctx(),
            &l,
        )
        .unwrap();
        assert_eq!(w.after.unwrap().data, r#"{"a":1,"b":2}"#);
        assert!(
            matches!(e.kind, EventKind::ItemUpdated { ref previous, .. } if previous == r#"{"a":1}"#)
        );
        assert_eq!(
            update(&map, k(), None, &j("{}"), None, &ctx(), &l)
                .unwrap_err()
                .code,
            ErrorCode::NotFound
        );
        assert_eq!(
            remove(&map, k(), None, None, Reason::Write, &ctx())
                .unwrap_err()
                .code,
            ErrorCode::NotFound
        );
        let list = new_object(ObjectKind::List, "ES1".into(), None, None, &ctx());
        let err = set(
            &list,
            ItemKey::Index(0),
            None,
            j("1"),
            None,
            None,
            false,
            &ctx(),
            &l,
        )
        .unwrap_err();
        assert_eq!(
            err.code,
            ErrorCode::NotFound,
            "list items are not created by set"
        );
        let err = set(
            &list,
            ItemKey::Key("x".into()),
            None,
            j("1"),
            None,
            None,
            false,
            &ctx(),
            &l,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        let long = ItemKey::Key("k".repeat(321));
        assert_eq!(
            set(&map, long, None, j("1"), None, None, false, &ctx(), &l)
                .unwrap_err()
                .code,
            ErrorCode::TooLarge
        );
        assert_eq!(
            push(&map, j("1"), None, false, &ctx()).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn a_set_decides_the_owner_and_an_update_keeps_it() {
        let l = Limits::default();
        let map = new_object(ObjectKind::Map, "MP1".into(), None, None, &ctx());
        let k = || ItemKey::Key("alice".into());
        let (map, w, _) = set(&map, k(), None, j("1"), None, None, true, &ctx(), &l).unwrap();
        let item = w.after.unwrap();
        assert_eq!(item.ephemeral_owner.as_deref(), Some("alice"));
        let (map, w, _) = update(&map, k(), Some(&item), &j("{}"), None, &ctx(), &l).unwrap();
        let item = w.after.unwrap();
        assert_eq!(item.ephemeral_owner.as_deref(), Some("alice"));
        let bob = WriteContext {
            actor: "bob".into(),
            ..ctx()
        };
        let (map, w, _) = set(&map, k(), Some(&item), j("2"), None, None, true, &bob, &l).unwrap();
        let item = w.after.unwrap();
        assert_eq!(item.ephemeral_owner.as_deref(), Some("bob"));
        let (_, w, _) = set(&map, k(), Some(&item), j("3"), None, None, false, &bob, &l).unwrap();
        assert_eq!(
            w.after.unwrap().ephemeral_owner,
            None,
            "a plain set makes it stay"
        );
        let list = new_object(ObjectKind::List, "ES1".into(), None, None, &ctx());
        let (_, w, _) = push(&list, j("1"), None, true, &ctx()).unwrap();
        assert_eq!(w.after.unwrap().ephemeral_owner.as_deref(), Some("alice"));
    }
}
