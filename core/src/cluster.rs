//! Several nodes over one shared store: the `Cluster` trait a shared store (etcd)
//! implements beside `Store`, and the changes its one watch reports. The follower
//! (`follower.rs`) applies them to this node.

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use syncline_proto::NodeInfo;
use tokio::sync::mpsc;

use crate::presence::Owner;
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
