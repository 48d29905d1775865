//! The rules of each object kind, as pure functions over stored records: given what is
//! stored and a request, the new record and the event, or a typed error. No IO here; the
//! commit task feeds these functions and persists what they return.

pub mod document;

use syncline_proto::{Event, EventKind, Reason};

use crate::store::ObjectRecord;

/// Who is writing, and when: the context every rule needs.
#[derive(Clone, Debug)]
pub struct WriteContext {
    pub service_sid: String,
    /// Identity, or `system` for the backend and the server itself.
    pub actor: String,
    /// Connection id of the writer (0 for the server).
    pub origin: u64,
    pub now_ms: u64,
}

/// Identity recorded as the creator/actor of backend and server changes.
pub const SYSTEM_ACTOR: &str = "system";

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
