//! How this crate talks to etcd, shared by the store (`lib.rs`) and the node's feed
//! (`feed.rs`): the one retry rule for calls, the error mapping, and the encodings of
//! records and change-log entries.

use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use syncline_core::store::{StoreError, StoreResult};

/// Longest wait for this node's watch to hand a committed batch's events to its hub
/// before the writers are answered anyway.
pub const PUBLISH_WAIT: Duration = Duration::from_secs(5);

/// Runs one etcd call, again (until `limit`) while it fails in a way that repeating
/// cannot make wrong: a read after any transport failure, a write only when it never
/// reached a member (the client keeps a member that was just killed in its rotation
/// for a moment, and a call sent to it fails at connecting). A write that may have
/// reached a member is never sent twice.
pub(crate) async fn call<T, F, Fut>(
    limit: Duration,
    read: bool,
    mut f: F,
) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match f().await {
            Err(e) if tokio::time::Instant::now() < deadline && may_repeat(&e, read) => {
                tracing::debug!(error = %e, "an etcd call failed; trying again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

pub(crate) fn may_repeat(e: &etcd_client::Error, read: bool) -> bool {
    let text = e.to_string();
    let never_sent = text.contains("error trying to connect")
        || text.contains("tcp connect error")
        || text.contains("Connection refused");
    // gRPC's UNAVAILABLE (14): no leader, a leader change, a member going away.
    let transport = matches!(e, etcd_client::Error::TransportError(_))
        || matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() as i32 == 14);
    never_sent || (read && transport)
}

pub(crate) fn engine(e: etcd_client::Error) -> StoreError {
    let text = e.to_string();
    // etcd refuses writes past its space quota (the NOSPACE alarm); reads go on.
    if text.contains("database space exceeded") || text.contains("NOSPACE") {
        return StoreError::Full(text);
    }
    StoreError::Unavailable(text)
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serialize(v).unwrap_or_else(|e| unreachable!("in-memory bincode encode: {e}"))
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    bincode::deserialize(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A change-log value: whether the event ends the object's subscriptions, the object's
/// revision (its key names only a slot of the object's ring, `Keys::log`), then the
/// event as the committing node encoded it.
pub(crate) fn log_value(ends: bool, revision: u64, event: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + event.len());
    v.push(u8::from(ends));
    v.extend_from_slice(&revision.to_be_bytes());
    v.extend_from_slice(event);
    v
}

/// (ends, revision, event) of a change-log value.
pub(crate) fn split_log_value(v: &[u8]) -> Option<(bool, u64, Bytes)> {
    let revision = log_value_revision(v)?;
    Some((v[0] == 1, revision, Bytes::copy_from_slice(&v[9..])))
}

/// The object revision of a change-log value, without copying its event.
pub(crate) fn log_value_revision(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(1..9)?.try_into().ok()?))
}
