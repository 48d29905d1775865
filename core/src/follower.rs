//! The follower: applies what the cluster's watch saw (`cluster::ClusterChange`) to
//! this node, as the node that made each change did to itself.
//!
//! In cluster mode every event reaches the hub through here, the committing node's
//! included, in the store's commit order: the commit task does not publish, so an event
//! is delivered once per node whoever wrote it, and subscribers on every node see the
//! same order. Stream messages come this way too. Access changes (a key revoked, a
//! service deleted or its ACL toggled, a grant changed) made through any node end the
//! affected sessions and subscriptions here, as `admin` does on the node that made them.

use std::sync::Arc;

use syncline_proto::{ErrorCode, Event, EventKind};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::cluster::ClusterChange;
use crate::fanout::Ending;
use crate::presence::Owner;
use crate::shared::Shared;

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
