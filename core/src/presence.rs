//! Who is connected: live connections per (service, identity), and the debounced
//! departure that follows the last one. An identity's ephemeral items live while it has
//! a live connection; when the last one ends, a departure is scheduled after the
//! service's debouncing window, and it removes the items (`reason: disconnected`) only
//! if the identity is still away when the commit task runs it. A reconnect inside the
//! window cancels the departure, so nothing is emitted. The same arrivals and
//! departures are the reachability webhooks (`endpoint_connected` /
//! `endpoint_disconnected`).
//!
//! `Presence` is the bookkeeping (no IO, tested directly), which the commit task decides
//! ephemeral writes and departures by; `departures` holds the timers around it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

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

    /// `owner`'s live connections on this node.
    pub fn connections(&self, owner: &Owner) -> u32 {
        self.table().get(owner).map_or(0, |e| e.connections)
    }

    /// Whether `owner` has a live connection now.
    pub fn is_connected(&self, owner: &Owner) -> bool {
        self.table().get(owner).is_some_and(|e| e.connections > 0)
    }

    /// Whether the departure `epoch` still stands (no connection came since): the
    /// commit task asks while it computes the batch that removes the owner's items,
    /// and calls `depart` once that batch is committed.
    pub fn departure_stands(&self, owner: &Owner, epoch: u64) -> bool {
        self.table()
            .get(owner)
            .is_some_and(|e| e.connections == 0 && e.departing == Some(epoch))
    }

    /// Ends the departure `epoch` if it still stands (no connection came since): the
    /// owner is away, and forgotten.
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
