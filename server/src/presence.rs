//! Who is connected: live connections per (service, identity), and the debounced
//! departure that follows the last one. An identity's ephemeral items live while it has
//! a live connection; when the last one ends, a departure is scheduled after the
//! service's debouncing window, and it removes the items (`reason: disconnected`) only
//! if the identity is still away when the commit task runs it. A reconnect inside the
//! window cancels the departure, so nothing is emitted. The same arrivals and
//! departures are the reachability webhooks (`endpoint_connected` /
//! `endpoint_disconnected`).
//!
//! `Presence` is the bookkeeping (no IO, tested directly); `schedule_departure` and
//! `restore` are the timers around it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::commit::{WriteOp, WriteOutcome};
use crate::objects::WriteContext;
use crate::state::Shared;
use crate::store::ServiceRecord;

/// An identity in a service: whose items are ephemeral, and who is reachable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub service_sid: String,
    pub identity: String,
}

/// Live connections of every identity that has one, or whose departure is pending.
#[derive(Default)]
pub struct Presence {
    table: Mutex<HashMap<Owner, Entry>>,
    next_epoch: AtomicU64,
    /// Set at shutdown: connections closing because the server stops are not their
    /// owners leaving (their items wait for the owners to come back after the restart).
    stopping: AtomicBool,
}

struct Entry {
    connections: u32,
    /// The departure scheduled when `connections` fell to 0; a later arrival clears it,
    /// so the departure finds a different (or no) epoch and does nothing.
    departing: Option<u64>,
}

/// What an arrival means for the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// It was away (no connection, no departure pending): it is now reachable.
    Reachable,
    /// It had a connection, or came back inside its debouncing window: nothing changed.
    Unchanged,
}

impl Presence {
    // Every update leaves the table whole (a count changed, an entry added or removed),
    // so a panic elsewhere while it was held leaves nothing to distrust.
    fn table(&self) -> MutexGuard<'_, HashMap<Owner, Entry>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection of `owner` authenticated.
    pub fn arrive(&self, owner: &Owner) -> Arrival {
        let mut table = self.table();
        match table.get_mut(owner) {
            Some(entry) => {
                entry.connections += 1;
                entry.departing = None;
                Arrival::Unchanged
            }
            None => {
                table.insert(
                    owner.clone(),
                    Entry {
                        connections: 1,
                        departing: None,
                    },
                );
                Arrival::Reachable
            }
        }
    }

    /// A connection of `owner` ended. When it was the last, the departure to schedule
    /// (its epoch); `None` while others remain, or when the server is stopping.
    pub fn leave(&self, owner: &Owner) -> Option<u64> {
        let mut table = self.table();
        let entry = table.get_mut(owner)?;
        entry.connections = entry.connections.saturating_sub(1);
        if entry.connections > 0 || self.stopping.load(Ordering::Relaxed) {
            return None;
        }
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed) + 1;
        entry.departing = Some(epoch);
        Some(epoch)
    }

    /// After a restart: `owner` had ephemeral items and no connection yet; its
    /// departure is pending as if its last connection had just ended.
    pub fn restored(&self, owner: &Owner) -> Option<u64> {
        let mut table = self.table();
        if table.contains_key(owner) {
            return None;
        }
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed) + 1;
        table.insert(
            owner.clone(),
            Entry {
                connections: 0,
                departing: Some(epoch),
            },
        );
        Some(epoch)
    }

    /// Whether `owner` has a live connection now.
    pub fn is_connected(&self, owner: &Owner) -> bool {
        self.table().get(owner).is_some_and(|e| e.connections > 0)
    }

    /// Ends the departure `epoch` if it still stands (no connection came since): the
    /// owner is away, and forgotten. The commit task calls this in the batch that
    /// removes the owner's items, so an arrival is ordered before or after it.
    pub fn depart(&self, owner: &Owner, epoch: u64) -> bool {
        let mut table = self.table();
        let stands = table
            .get(owner)
            .is_some_and(|e| e.connections == 0 && e.departing == Some(epoch));
        if stands {
            table.remove(owner);
        }
        stands
    }

    /// (identities with a live connection, identities departing) for the metrics.
    pub fn counts(&self) -> (usize, usize) {
        let table = self.table();
        let present = table.values().filter(|e| e.connections > 0).count();
        (present, table.len() - present)
    }

    /// From now on, closing connections are the server stopping, not owners leaving.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
}

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
    if shared.presence.arrive(owner) == Arrival::Reachable {
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

/// Runs the departure `epoch` of `owner` once the service's window has passed: the
/// commit task removes the owner's ephemeral items if it is still away. Holds the
/// server state weakly, so a pending departure does not keep a stopping server alive.
fn schedule_departure(shared: &Arc<Shared>, owner: Owner, epoch: u64, after_restart: bool) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak: Weak<Shared> = Arc::downgrade(shared);
    runtime.spawn(async move {
        let Some(service) = service_of(&weak, &owner).await else {
            return;
        };
        tokio::time::sleep(window(&service, after_restart)).await;
        let Some(shared) = weak.upgrade() else { return };
        if shared.presence.is_stopping() {
            return;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Owner {
        Owner {
            service_sid: "IS1".into(),
            identity: "alice".into(),
        }
    }

    #[test]
    fn the_last_connection_leaving_schedules_a_departure_and_a_return_cancels_it() {
        let p = Presence::default();
        assert_eq!(p.arrive(&alice()), Arrival::Reachable);
        assert_eq!(p.arrive(&alice()), Arrival::Unchanged);
        assert_eq!(p.counts(), (1, 0));
        assert_eq!(p.leave(&alice()), None, "one connection is left");
        assert!(p.is_connected(&alice()));
        let epoch = p.leave(&alice()).expect("the last one left");
        assert!(!p.is_connected(&alice()));
        assert_eq!(p.counts(), (0, 1));
        assert_eq!(
            p.arrive(&alice()),
            Arrival::Unchanged,
            "back inside the window"
        );
        assert!(!p.depart(&alice(), epoch), "the return cancelled it");
        let later = p.leave(&alice()).expect("left again");
        assert_ne!(later, epoch);
        assert!(
            !p.depart(&alice(), epoch),
            "an old departure stays cancelled"
        );
        assert!(p.depart(&alice(), later));
        assert_eq!(p.arrive(&alice()), Arrival::Reachable, "away, then back");
    }

    #[test]
    fn connections_closed_by_a_stopping_server_are_not_departures() {
        let p = Presence::default();
        p.arrive(&alice());
        p.stop();
        assert_eq!(p.leave(&alice()), None);
    }

    #[test]
    fn a_restored_owner_departs_unless_it_comes_back() {
        let p = Presence::default();
        let epoch = p.restored(&alice()).unwrap();
        assert!(!p.is_connected(&alice()));
        assert_eq!(
            p.arrive(&alice()),
            Arrival::Unchanged,
            "it was never seen away"
        );
        assert!(!p.depart(&alice(), epoch));
        let bob = Owner {
            identity: "bob".into(),
            ..alice()
        };
        let epoch = p.restored(&bob).unwrap();
        assert!(p.depart(&bob, epoch));
    }
}
