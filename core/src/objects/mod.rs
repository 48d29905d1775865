//! The rules of each object kind, as pure functions over stored records: given what is
//! stored and a request, the new record and the event, or a typed error. No IO here; the
//! commit task feeds these functions and persists what they return.

pub mod document;
pub mod items;

use serde_json::Value;
use syncline_proto::{Event, EventKind, Limits, ObjectInfo, ObjectKind, Reason, WireError};

use crate::store::ObjectRecord;
use crate::values::Json;

/// Who is writing, and when: the context every rule needs.
#[derive(Clone, Debug)]
pub struct WriteContext {
    pub service_sid: String,
    /// Identity, or `system` for the backend and the server itself.
    pub actor: String,
    /// Connection id of the writer (0 for the server).
    pub origin: u64,
    pub now_ms: u64,
    /// The identity whose rights the write needs (a token holder in a service with its
    /// ACL on); `None` for the backend, the server, and services without ACL.
    pub guard: Option<String>,
    /// Whether the writer may create objects: false for token holders in a service
    /// whose `token_create` is `none`.
    pub may_create: bool,
}

pub use syncline_proto::SYSTEM_ACTOR;

/// The event for removing `record` (by a write or by expiry).
pub fn removed_event(record: &ObjectRecord, ctx: &WriteContext, reason: Reason) -> Event {
    Event {
        object_sid: record.sid.clone(),
        revision: record.revision + 1,
        origin: ctx.origin,
        actor: ctx.actor.clone(),
        kind: EventKind::ObjectRemoved { reason },
    }
}

/// The live object a reference (sid or unique name) points to in a service; expired
/// objects read as absent.
pub async fn lookup(
    store: &dyn crate::store::Store,
    service_sid: &str,
    reference: &str,
    now_ms: u64,
) -> Result<Option<ObjectRecord>, crate::store::StoreError> {
    let sid = if syncline_proto::ids::is_sid(reference) {
        Some(reference.to_owned())
    } else {
        store.object_sid_by_name(service_sid, reference).await?
    };
    let Some(sid) = sid else { return Ok(None) };
    Ok(store
        .object(service_sid, &sid)
        .await?
        .filter(|r| !r.is_expired(now_ms)))
}

/// Any object's metadata as clients see it.
pub fn object_info(r: &ObjectRecord) -> ObjectInfo {
    ObjectInfo {
        sid: r.sid.clone(),
        kind: r.kind,
        unique_name: r.unique_name.clone(),
        revision: r.revision,
        created_by: r.created_by.clone(),
        date_created: r.date_created,
        date_updated: r.date_updated,
        date_expires: r.date_expires,
    }
}

/// Fails with `InvalidArgument` naming both kinds when `r` is not a `kind`.
pub fn expect_kind(r: &ObjectRecord, kind: ObjectKind) -> Result<(), WireError> {
    if r.kind == kind {
        Ok(())
    } else {
        Err(WireError::invalid(format!(
            "{} is a {}, not a {}",
            r.unique_name.as_deref().unwrap_or(&r.sid),
            r.kind.name(),
            kind.name()
        )))
    }
}

/// Unix-ms expiry for a TTL in seconds; 0 means never.
pub fn expiry(now_ms: u64, ttl_s: u64) -> Option<u64> {
    (ttl_s > 0).then(|| now_ms.saturating_add(ttl_s.saturating_mul(1000)))
}

/// A new, empty object of `kind` (a document holds `null`), at revision 0.
pub fn new_object(
    kind: ObjectKind,
    sid: String,
    unique_name: Option<String>,
    ttl: Option<u64>,
    ctx: &WriteContext,
) -> ObjectRecord {
    ObjectRecord {
        store_version: 0,
        service_sid: ctx.service_sid.clone(),
        sid,
        kind,
        unique_name,
        revision: 0,
        data: "null".into(),
        created_by: ctx.actor.clone(),
        date_created: ctx.now_ms,
        date_updated: ctx.now_ms,
        date_expires: ttl.and_then(|t| expiry(ctx.now_ms, t)),
        next_index: 0,
    }
}

/// `update` semantics for documents and items: merge the top-level keys of `patch` (a
/// JSON object) into `current`; a key whose value is `null` is removed. The result must
/// still fit the data limit.
pub fn merge_patch(current: &str, patch: &Json, limits: &Limits) -> Result<Json, WireError> {
    let Ok(Value::Object(patch)) = serde_json::from_str(patch.as_str()) else {
        return Err(WireError::invalid("update data must be a JSON object"));
    };
    let mut merged = match serde_json::from_str(current) {
        Ok(Value::Object(m)) => m,
        // A non-object value is replaced by the patch object.
        Ok(_) => serde_json::Map::new(),
        // Only a value stored before writes were checked as readers read them.
        Err(e) => {
            return Err(WireError::invalid(format!(
                "the current value cannot be loaded ({e}); replace it with set"
            )))
        }
    };
    for (k, v) in patch {
        if v.is_null() {
            merged.remove(&k);
        } else {
            merged.insert(k, v);
        }
    }
    let data = Value::Object(merged).to_string();
    if data.len() > limits.max_data_bytes {
        // Not the merged size: it would tell a writer without `read` how big the data is.
        return Err(WireError::new(
            syncline_proto::ErrorCode::TooLarge,
            format!(
                "the merged data would exceed the limit of {} bytes",
                limits.max_data_bytes
            ),
        ));
    }
    Ok(Json::from_serialized(data))
}
