//! Presence over time: a session's arrival (and the reachability webhook it may send),
//! the debounced departure that follows the last connection of an identity, and the
//! departures owed after a restart. The bookkeeping itself is `presence::Presence`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::commit::{WriteOp, WriteOutcome};
use crate::objects::WriteContext;
use crate::presence::{Arrival, Owner};
use crate::shared::Shared;
use crate::store::ServiceRecord;

/// How long a departed owner's items stay: the service's debouncing window when
/// debouncing is on, none when it is off. After a restart the window applies whatever
/// the flag says: the server going away is not the owner leaving, and removing every
/// ephemeral item at start would make each restart look like everyone left.
fn window(service: &ServiceRecord, after_restart: bool) -> Duration {
    let flags = &service.flags;
    if flags.reachability_debouncing_enabled || after_restart {
        Duration::from_millis(u64::from(flags.debouncing_window_ms()))
    } else {
        Duration::ZERO
    }
}

/// A connection of `owner` authenticated: counts it, and tells reachability webhooks
/// when the identity was away. Awaited before the connection is welcomed, so that its
/// `endpoint_connected` is queued before any `endpoint_disconnected` that follows.
async fn arrive(shared: &Arc<Shared>, owner: &Owner) {
    let arrival = shared.presence.arrive(owner);
    if let Some(cluster) = &shared.cluster {
        if shared.presence.connections(owner) == 1 {
            if let Err(e) = cluster.hold_presence(owner).await {
                warn!(identity = %owner.identity, error = %e, "registering presence with the cluster failed; another node may remove this identity's ephemeral items");
            }
        }
    }
    if arrival == Arrival::Reachable {
        debug!(identity = %owner.identity, "identity reachable");
        shared
            .webhooks
            .reachability(&owner.service_sid, &owner.identity, true)
            .await;
    }
}

/// A connection of `owner` ended (from a drop guard: no async here). Schedules the
/// departure when it was the last.
pub fn leave(shared: &Arc<Shared>, owner: Owner) {
    if let Some(epoch) = shared.presence.leave(&owner) {
        schedule_departure(shared, owner, epoch, false);
    }
}

/// The cluster says no node holds `owner` any more, its last node having gone away:
/// its items go after the service's window unless it comes back (here or elsewhere).
pub fn orphaned(shared: &Arc<Shared>, owner: Owner) {
    if let Some(epoch) = shared.presence.restored(&owner) {
        schedule_departure(shared, owner, epoch, false);
    }
}

/// Runs the departure `epoch` of `owner` once the service's window has passed: the
/// commit task removes the owner's ephemeral items if it is still away. Holds the
/// server state weakly, so a pending departure does not keep a stopping server alive.
fn schedule_departure(shared: &Arc<Shared>, owner: Owner, epoch: u64, after_restart: bool) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak: Weak<Shared> = Arc::downgrade(shared);
    // The cluster learns of the departure at once (its presence entry for this node
    // goes); the window is counted from here on every node alike.
    let release = shared.cluster.clone().filter(|_| !after_restart);
    runtime.spawn(async move {
        // Not if a connection came back meanwhile (its arrival held the presence again).
        let back = weak
            .upgrade()
            .is_none_or(|s| s.presence.connections(&owner) > 0);
        if let Some(cluster) = release.as_ref().filter(|_| !back) {
            if let Err(e) = cluster.release_presence(&owner).await {
                warn!(identity = %owner.identity, error = %e, "releasing presence in the cluster failed; its lease ends it");
            }
        }
        let Some(service) = service_of(&weak, &owner).await else {
            return;
        };
        tokio::time::sleep(window(&service, after_restart)).await;
        let Some(shared) = weak.upgrade() else { return };
        if shared.presence.is_stopping() {
            return;
        }
        // Whether another node holds the identity is decided in the commit (`Batch::depart`).
        let ctx = WriteContext {
            service_sid: owner.service_sid.clone(),
            actor: crate::objects::SYSTEM_ACTOR.into(),
            origin: 0,
            now_ms: crate::now_ms(),
            guard: None,
            may_create: false,
        };
        let op = WriteOp::Depart {
            identity: owner.identity.clone(),
            epoch,
        };
        match shared.committer.submit(ctx, op).await {
            Ok(WriteOutcome::Departed { items }) => {
                debug!(identity = %owner.identity, items, "identity left; its ephemeral items removed");
                shared
                    .webhooks
                    .reachability(&owner.service_sid, &owner.identity, false)
                    .await;
            }
            Ok(_) => {}
            // Its service was deleted meanwhile, and its items with it.
            Err(e) if e.code == syncline_proto::ErrorCode::Unauthorized => {}
            // The owner's items stay until its next departure or the next restart.
            Err(e) => warn!(identity = %owner.identity, error = %e.message, "removing a departed identity's ephemeral items failed"),
        }
    });
}

async fn service_of(shared: &Weak<Shared>, owner: &Owner) -> Option<ServiceRecord> {
    let shared = shared.upgrade()?;
    match shared.store.service(&owner.service_sid).await {
        Ok(service) => service,
        Err(e) => {
            warn!(error = %e, "reading a service for a departure failed");
            None
        }
    }
}

/// At start: every identity that owns ephemeral items has no connection yet; each gets
/// its window to come back before its items go.
pub async fn restore(shared: &Arc<Shared>) {
    let owners = match shared.store.ephemeral_owners().await {
        Ok(owners) => owners,
        Err(e) => {
            warn!(error = %e, "reading ephemeral item owners failed; their items stay until they leave again");
            return;
        }
    };
    if !owners.is_empty() {
        info!(
            owners = owners.len(),
            "ephemeral items from before the restart wait for their owners to come back"
        );
    }
    for (service_sid, identity) in owners {
        let owner = Owner {
            service_sid,
            identity,
        };
        if let Some(epoch) = shared.presence.restored(&owner) {
            schedule_departure(shared, owner, epoch, true);
        }
    }
}

/// Holds one connection's presence; dropping it (the connection ended, however it
/// ended) is the connection leaving.
pub struct Present {
    shared: Weak<Shared>,
    owner: Owner,
}

impl Present {
    pub async fn new(shared: &Arc<Shared>, owner: Owner) -> Self {
        arrive(shared, &owner).await;
        Present {
            shared: Arc::downgrade(shared),
            owner,
        }
    }
}

impl Drop for Present {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            leave(&shared, self.owner.clone());
        }
    }
}
