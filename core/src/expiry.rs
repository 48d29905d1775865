//! Token expiry for every session, with one timer for the whole core: the sessions
//! authenticated by a token, ordered by the last second their token is accepted
//! (`auth::valid_until`). The core's expiry task sleeps until the earliest and ends
//! the sessions whose tokens the clock has passed. A timer per session, polled by its
//! watch at every wake-up, cost each delivery a timer poll and every connection a timer.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::Notify;

#[derive(Default)]
pub(crate) struct Expiries {
    /// (valid_until, session id), earliest first.
    by_time: Mutex<BTreeSet<(u64, u64)>>,
    /// Woken when an entry becomes the earliest: the task's sleep is too long.
    pub(crate) earlier: Notify,
}

impl Expiries {
    /// Moves `session` from `old` to `new` (either `None`: not there).
    pub(crate) fn set(&self, session: u64, old: Option<u64>, new: Option<u64>) {
        let mut by_time = self.by_time.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = old {
            by_time.remove(&(old, session));
        }
        if let Some(new) = new {
            by_time.insert((new, session));
            if by_time.first() == Some(&(new, session)) {
                self.earlier.notify_one();
            }
        }
    }

    /// Takes out the sessions whose tokens are no longer accepted at `now`, and says
    /// when the next one ends (its `valid_until`).
    pub(crate) fn take_due(&self, now: SystemTime) -> (Vec<u64>, Option<u64>) {
        let mut by_time = self.by_time.lock().unwrap_or_else(|e| e.into_inner());
        let mut due = Vec::new();
        while let Some(&(valid_until, session)) = by_time.first() {
            if !crate::auth::time_to_expiry(valid_until, now).is_zero() {
                return (due, Some(valid_until));
            }
            by_time.pop_first();
            due.push(session);
        }
        (due, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn sessions_come_due_in_order_once_the_clock_passes_their_last_second() {
        let e = Expiries::default();
        e.set(1, None, Some(100));
        e.set(2, None, Some(50));
        e.set(3, None, Some(200));
        // A token accepted through second 100 is refused from second 101.
        assert_eq!(e.take_due(at(100)), (vec![2], Some(100)));
        assert_eq!(e.take_due(at(101)), (vec![1], Some(200)));
        // An update moves a session; an ended one leaves.
        e.set(3, Some(200), Some(300));
        e.set(4, None, Some(150));
        e.set(4, Some(150), None);
        assert_eq!(e.take_due(at(250)), (vec![], Some(300)));
        assert_eq!(e.take_due(at(301)), (vec![3], None));
    }
}
