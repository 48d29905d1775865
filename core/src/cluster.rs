//! Several nodes over one shared store: the `Cluster` trait a shared store (etcd)
//! implements beside `Store`, and the follower task that turns what the cluster's one
//! watch saw into this node's hub deliveries and live effects.
//!
//! In cluster mode every event reaches the hub through the follower, the committing
//! node's included, in the store's commit order: the commit task does not publish, so
//! an event is delivered once per node whoever wrote it, and subscribers on every node
//! see the same order. Stream messages go through the store too (they are not kept
//! there beyond a short lease). Access changes (a key revoked, a service deleted or its
//! ACL toggled, a grant changed) made through any node end the affected sessions and
//! subscriptions here, as `admin` does on the node that made them.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use syncline_proto::{ErrorCode, Event, EventKind, NodeInfo};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::fanout::Ending;
use crate::presence::Owner;
use crate::shared::Shared;
use crate::store::{ServiceRecord, StoreResult};

/// A stream message as it crosses nodes; each node encodes it once for its
/// subscribers, numbered by the store (`sequence`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StreamMessage {
    pub stream_sid: String,
    /// The stream's revision (streams change only when created).
    pub revision: u64,
    pub origin: u64,
    pub actor: String,
    pub data: String,
}

/// What the cluster's watch saw, in the store's commit order.
#[derive(Debug)]
pub enum ClusterChange {
    /// A committed change of an object (any node's), encoded once by the node that
    /// committed it: delivered to this node's subscribers of the object.
    Event {
        object_sid: String,
        revision: u64,
        event: Bytes,
        /// The object is gone: its subscriptions end with this event.
        ends: bool,
    },
    /// A stream message and its cluster-wide sequence.
    Message {
        sequence: u64,
        message: StreamMessage,
    },
    /// A service was written (`Some`) or deleted (`None`). Its sessions end on
    /// `ServiceEnded`, once its objects' removals were delivered.
    Service {
        sid: String,
        record: Option<ServiceRecord>,
    },
    /// A deleted service's objects are gone (their removal events came before this):
    /// its sessions end.
    ServiceEnded { sid: String },
    /// An API key was revoked.
    KeyRevoked { sid: String },
    /// An identity's rights on an object changed.
    Permission {
        service_sid: String,
        object_sid: String,
    },
    /// No node holds a connection of this identity any more, and the last one to go
    /// was not a clean leave on a live node (its node's lease ended): its ephemeral
    /// items go after the service's window, as after a restart.
    PresenceLost {
        service_sid: String,
        identity: String,
    },
    /// The watch missed changes (they were compacted before it could resume): every
    /// subscription on this node catches up again (replay or snapshot).
    Gap,
    /// Everything the store committed up to this point (its own revision) was handed
    /// to the core in the changes before: the follower tells `Cluster::applied` once
    /// it has applied them.
    Caught { position: i64 },
}

/// A store shared by several nodes: what the single-node store does in memory
/// (presence, stream messages, who runs the reaper) goes through it instead.
#[async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// The feed of changes, taken once by the core at start; it ends at shutdown.
    fn changes(&self) -> Option<mpsc::Receiver<ClusterChange>>;
    /// Sends a stream message to every node's subscribers (this one's included,
    /// through the feed); returns its sequence.
    async fn publish_message(&self, message: &StreamMessage) -> StoreResult<u64>;
    /// A deleted service's objects are gone: every node ends its sessions (after
    /// delivering the removals, which the feed carried before this).
    async fn end_service(&self, sid: &str) -> StoreResult<()>;
    /// This node holds a connection of `owner` (its first one here).
    async fn hold_presence(&self, owner: &Owner) -> StoreResult<()>;
    /// This node's last connection of `owner` ended.
    async fn release_presence(&self, owner: &Owner) -> StoreResult<()>;
    /// Whether another node holds a connection of `owner` now.
    async fn present_elsewhere(&self, owner: &Owner) -> StoreResult<bool>;
    /// The live nodes, this one first.
    fn nodes(&self) -> Vec<NodeInfo>;
    /// Whether this node runs the cluster's once-only duties (the reaper, departures
    /// of identities whose node died): the live node with the lowest id.
    fn leads(&self) -> bool;
    /// The follower has applied every change up to `position` (a `Caught`): a write
    /// committed through this node is answered only once its events are on this
    /// node's hub, as with a single node (a server-initiated end then delivers them
    /// first, and a writer's own subscription hears of its write before the answer).
    fn applied(&self, position: i64);
}

/// Applies the feed to this node until it ends or the core stops.
pub(crate) async fn follow(
    shared: Arc<Shared>,
    mut changes: mpsc::Receiver<ClusterChange>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let change = tokio::select! {
            c = changes.recv() => match c {
                Some(c) => c,
                None => break,
            },
            _ = crate::shutdown_requested(&mut shutdown) => break,
        };
        apply(&shared, change).await;
    }
    debug!("cluster feed ended");
}

async fn apply(shared: &Arc<Shared>, change: ClusterChange) {
    match change {
        ClusterChange::Event {
            object_sid,
            revision,
            event,
            ends,
        } => shared.hub.publish(&object_sid, revision, &event, ends),
        ClusterChange::Message { sequence, message } => {
            let body = shared.hub.encode(&Event {
                object_sid: message.stream_sid.clone(),
                revision: message.revision,
                origin: message.origin,
                actor: message.actor,
                kind: EventKind::MessagePublished {
                    data: message.data,
                    sequence,
                },
            });
            shared
                .hub
                .deliver_message(&message.stream_sid, sequence, &body);
        }
        ClusterChange::Service { record, .. } => {
            if let Some(record) = record {
                crate::admin::recheck_subscriptions(shared, &record, None).await;
            }
        }
        ClusterChange::ServiceEnded { sid } => shared.end_sessions(
            |s| s.service_sid().as_deref() == Some(sid.as_str()),
            Ending {
                code: ErrorCode::Unauthorized,
                reason: "the service was deleted",
            },
        ),
        ClusterChange::KeyRevoked { sid } => shared.end_sessions(
            |s| s.key_sid().as_deref() == Some(sid.as_str()),
            Ending {
                code: ErrorCode::Unauthorized,
                reason: "API key revoked",
            },
        ),
        ClusterChange::Permission {
            service_sid,
            object_sid,
        } => match shared.store.service(&service_sid).await {
            Ok(Some(service)) => {
                crate::admin::recheck_subscriptions(shared, &service, Some(&object_sid)).await
            }
            Ok(None) => {}
            Err(e) => {
                warn!(error = %e, "a grant changed on another node; its service could not be read")
            }
        },
        ClusterChange::PresenceLost {
            service_sid,
            identity,
        } => {
            let leads = shared.cluster.as_ref().is_some_and(|c| c.leads());
            if leads {
                info!(
                    identity,
                    "an identity's node went away; its ephemeral items go after the window"
                );
                crate::departures::orphaned(
                    shared,
                    Owner {
                        service_sid,
                        identity,
                    },
                );
            }
        }
        ClusterChange::Caught { position } => {
            if let Some(cluster) = &shared.cluster {
                cluster.applied(position);
            }
        }
        ClusterChange::Gap => {
            warn!("the cluster feed missed changes (compacted); every subscription catches up");
            shared.hub.lag_all();
        }
    }
}
