//! JSON lines for people and scripts: objects, items and events as the CLI prints them.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use syncline_client::{
    DocumentState, Item, ItemKey, ObjectInfo, Replica, Subscription, SyncEvent, SyncEventKind,
    Written,
};

/// The last instant RFC 3339 (and humantime, which panics past it) can write:
/// 9999-12-31T23:59:59.999Z.
const LAST_RFC3339_MS: u64 = 253_402_300_799_999;

/// RFC 3339 UTC time of a Unix-milliseconds timestamp. Total: a time past year 9999
/// (an expiry stored before TTLs were bounded) prints as its millisecond count.
pub fn time(ms: u64) -> String {
    if ms > LAST_RFC3339_MS {
        return format!("unix-ms:{ms} (after 9999-12-31)");
    }
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The line for a write of data: the document or item as written, or, for a writer
/// that may not read it, what the server told: the object, the item key, the revision.
pub fn written<T>(w: &Written<T>, value: impl Fn(&T) -> Value) -> Value {
    match &w.value {
        Some(v) => value(v),
        None => {
            let mut line = Map::new();
            line.insert("sid".into(), json!(w.object_sid));
            if let Some(key) = &w.key {
                key_field(&mut line, key);
            }
            line.insert("revision".into(), json!(w.revision));
            line.insert("data_withheld".into(), json!("no read access"));
            Value::Object(line)
        }
    }
}

pub fn document(d: &DocumentState) -> Value {
    json!({
        "sid": d.sid,
        "unique_name": d.unique_name,
        "revision": d.revision,
        "data": d.data,
        "created_by": d.created_by,
        "date_created": time(d.date_created),
        "date_updated": time(d.date_updated),
        "date_expires": d.date_expires.map(time),
    })
}

pub fn object(o: &ObjectInfo) -> Value {
    json!({
        "sid": o.sid,
        "kind": o.kind.name(),
        "unique_name": o.unique_name,
        "revision": o.revision,
        "created_by": o.created_by,
        "date_created": time(o.date_created),
        "date_updated": time(o.date_updated),
        "date_expires": o.date_expires.map(time),
    })
}

fn key_field(line: &mut Map<String, Value>, key: &ItemKey) {
    match key {
        ItemKey::Index(i) => line.insert("index".into(), json!(i)),
        ItemKey::Key(k) => line.insert("key".into(), json!(k)),
    };
}

/// An item line: `{"index"|"key","revision","data","date_updated",...}`.
pub fn item(i: &Item) -> Value {
    let mut line = Map::new();
    key_field(&mut line, &i.key);
    line.insert("revision".into(), json!(i.revision));
    line.insert("data".into(), i.data.clone());
    line.insert("created_by".into(), json!(i.created_by));
    line.insert("date_created".into(), json!(time(i.date_created)));
    line.insert("date_updated".into(), json!(time(i.date_updated)));
    line.insert("date_expires".into(), json!(i.date_expires.map(time)));
    Value::Object(line)
}

/// The state line of a replica (document line, or object line for the others).
pub fn replica(r: &Replica) -> Option<Value> {
    match r {
        Replica::Empty => None,
        Replica::Document(d) => Some(document(d)),
        Replica::List(c) | Replica::Map(c) => Some(object(&c.info)),
        Replica::Stream(info) => Some(object(info)),
    }
}

/// The lines of a replica: its state line, then (lists, maps) one line per item.
pub fn replica_lines(r: &Replica) -> Vec<Value> {
    let mut lines: Vec<Value> = replica(r).into_iter().collect();
    if let Replica::List(c) | Replica::Map(c) = r {
        lines.extend(c.items.values().map(item));
    }
    lines
}

/// An event line: `{"event","revision","data",...}`. For documents `data` is the whole
/// new value; for items, the item's.
pub fn event(e: &SyncEvent, sub: &Subscription) -> Value {
    let mut line = Map::new();
    line.insert("event".into(), json!(e.kind.name()));
    line.insert("object_sid".into(), json!(sub.object_sid()));
    line.insert("revision".into(), json!(e.revision));
    line.insert("actor".into(), json!(e.actor));
    line.insert("is_local".into(), json!(e.is_local));
    match &e.kind {
        SyncEventKind::Snapshot => {
            if let Some(Value::Object(state)) = replica(sub.replica()) {
                for (k, v) in state {
                    line.entry(k).or_insert(v);
                }
            }
        }
        SyncEventKind::DocumentUpdated { data, previous } => {
            line.insert("data".into(), data.clone());
            line.insert("previous".into(), json!(previous));
        }
        SyncEventKind::ItemAdded { item } => {
            key_field(&mut line, &item.key);
            line.insert("data".into(), item.data.clone());
        }
        SyncEventKind::ItemUpdated { item, previous } => {
            key_field(&mut line, &item.key);
            line.insert("data".into(), item.data.clone());
            line.insert("previous".into(), previous.clone());
        }
        SyncEventKind::ItemRemoved {
            key,
            previous,
            reason,
        } => {
            key_field(&mut line, key);
            line.insert("data".into(), Value::Null);
            line.insert("previous".into(), previous.clone());
            line.insert("reason".into(), json!(reason.as_str()));
        }
        SyncEventKind::MessagePublished {
            data,
            sequence,
            missed,
        } => {
            line.insert("data".into(), data.clone());
            line.insert("sequence".into(), json!(sequence));
            line.insert("missed".into(), json!(missed));
        }
        SyncEventKind::Missed { messages } => {
            // `null`: the server restarted meanwhile, so the count is unknown.
            line.insert("messages".into(), json!(messages));
            line.insert("sequence".into(), json!(sub.last_sequence()));
        }
        SyncEventKind::Removed { reason } => {
            line.insert("data".into(), Value::Null);
            line.insert("reason".into(), json!(reason.as_str()));
        }
        SyncEventKind::Ended(err) => {
            line.insert("code".into(), json!(err.code.as_str()));
            line.insert("message".into(), json!(err.message));
        }
    }
    Value::Object(line)
}

/// Any serializable answer (services, keys, permissions) as a line, times as RFC 3339.
pub fn json<T: serde::Serialize>(v: &T) -> Value {
    let mut v = serde_json::to_value(v).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        for field in ["date_created", "date_updated"] {
            if let Some(ms) = m.get(field).and_then(Value::as_u64) {
                m.insert(field.into(), json!(time(ms)));
            }
        }
        if m.get("secret").is_some_and(Value::is_null) {
            m.remove("secret");
        }
    }
    v
}

/// Prints one line and flushes, so that a pipe sees each event as it happens.
pub fn line(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_time_formats_without_panicking() {
        assert_eq!(time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(time(LAST_RFC3339_MS), "9999-12-31T23:59:59.999Z");
        for ms in [LAST_RFC3339_MS + 1, 260_000_000_000_000, u64::MAX] {
            assert!(time(ms).starts_with("unix-ms:"), "{ms}");
        }
    }
}
