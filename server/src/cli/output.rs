//! JSON lines for people and scripts: documents and events as the CLI prints them.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};
use syncline_client::{DocumentEvent, DocumentEventKind, DocumentState};

/// RFC 3339 UTC time of a Unix-milliseconds timestamp.
pub fn time(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
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

/// An event line: `{"event","revision","data",...}` where `data` is the whole new value.
pub fn event(e: &DocumentEvent, replica: Option<&DocumentState>, object_sid: &str) -> Value {
    let mut line = json!({
        "event": name(&e.kind),
        "object_sid": object_sid,
        "revision": e.revision,
        "actor": e.actor,
        "is_local": e.is_local,
    });
    let fields = match &e.kind {
        DocumentEventKind::Snapshot => replica.map(document).unwrap_or(Value::Null),
        DocumentEventKind::Updated { data, previous } => {
            json!({"data": data, "previous": previous})
        }
        DocumentEventKind::Removed { reason } => json!({"reason": reason.as_str(), "data": null}),
        DocumentEventKind::Ended(err) => json!({"code": err.code.as_str(), "message": err.message}),
    };
    if let (Value::Object(line), Value::Object(fields)) = (&mut line, fields) {
        for (k, v) in fields {
            line.entry(k).or_insert(v);
        }
    }
    line
}

fn name(kind: &DocumentEventKind) -> &'static str {
    match kind {
        DocumentEventKind::Snapshot => "snapshot",
        DocumentEventKind::Updated { .. } => "document_updated",
        DocumentEventKind::Removed { .. } => "object_removed",
        DocumentEventKind::Ended(_) => "subscription_ended",
    }
}

/// Prints one line and flushes, so that a pipe sees each event as it happens.
pub fn line(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}
