//! A queue that one consumer empties a whole batch at a time: producers add under a lock,
//! and the consumer takes everything queued in one go, swapping in its emptied buffers.
//! A connection's event queue (`fanout::Outbox`) and its answer queue
//! (`net::connection`) are this. It allocates nothing until something is queued (a tokio
//! channel reserves 32 slots when created, paid by every idle connection), and it wakes
//! the consumer once per batch, not once per item.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

/// What a [`BatchQueue`] holds between two takes.
pub trait Batch: Default {
    fn is_empty(&self) -> bool;
    /// Readies the consumer's emptied batch to go back into the queue: releases what a
    /// burst grew (see [`trim`]), so an idle connection does not keep it.
    fn trim(&mut self);
}

/// A buffer that grew past this many items in a burst is released when handed back.
const KEPT_CAPACITY: usize = 64;

/// Releases `v`'s buffer if a burst grew it past [`KEPT_CAPACITY`].
pub fn trim<T>(v: &mut Vec<T>) {
    if v.capacity() > KEPT_CAPACITY {
        *v = Vec::new();
    }
}

#[derive(Default)]
pub struct BatchQueue<B> {
    queue: Mutex<B>,
    ready: Notify,
}

impl<B: Batch> BatchQueue<B> {
    /// Every change under the lock is one push or one swap: a panic elsewhere while it
    /// was held cannot leave the batch half-changed, so it is used as it is.
    fn lock(&self) -> MutexGuard<'_, B> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes the batch with `add`, and wakes the consumer if that made an empty batch
    /// non-empty. Otherwise a wake-up is already pending: the one that made it non-empty,
    /// not yet answered by a [`take`](Self::take).
    pub fn add<R>(&self, add: impl FnOnce(&mut B) -> R) -> R {
        let (result, woke) = {
            let mut batch = self.lock();
            let was_empty = batch.is_empty();
            let result = add(&mut batch);
            (result, was_empty && !batch.is_empty())
        };
        if woke {
            self.ready.notify_one();
        }
        result
    }

    /// Reads the batch as it is now.
    pub fn inspect<R>(&self, f: impl FnOnce(&B) -> R) -> R {
        f(&self.lock())
    }

    /// Waits until something was added since the last [`take`](Self::take) (at once if
    /// it already was). May return with nothing to take: callers take and carry on.
    pub async fn ready(&self) {
        self.ready.notified().await
    }

    /// Moves everything queued into `into`, which must be empty; its buffers (trimmed)
    /// become the queue's for the next batch.
    pub fn take(&self, into: &mut B) {
        debug_assert!(into.is_empty());
        into.trim();
        std::mem::swap(&mut *self.lock(), into);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Items(Vec<u32>);

    impl Batch for Items {
        fn is_empty(&self) -> bool {
            self.0.is_empty()
        }
        fn trim(&mut self) {
            trim(&mut self.0);
        }
    }

    #[tokio::test]
    async fn items_added_before_the_consumer_waits_are_not_missed() {
        let queue = BatchQueue::<Items>::default();
        queue.add(|b| b.0.push(1));
        queue.add(|b| b.0.push(2));
        tokio::time::timeout(std::time::Duration::from_secs(5), queue.ready())
            .await
            .expect("the wake-up of the first add is kept until waited for");
        let mut batch = Items::default();
        queue.take(&mut batch);
        assert_eq!(batch.0, vec![1, 2], "one batch, in the order added");

        batch.0.clear();
        queue.add(|b| b.0.push(3));
        tokio::time::timeout(std::time::Duration::from_secs(5), queue.ready())
            .await
            .expect("an add after a take wakes the consumer again");
        queue.take(&mut batch);
        assert_eq!(batch.0, vec![3]);
    }

    #[test]
    fn a_buffer_grown_by_a_burst_is_released_when_handed_back() {
        let queue = BatchQueue::<Items>::default();
        queue.add(|b| b.0.extend(0..1000));
        let mut batch = Items::default();
        queue.take(&mut batch);
        batch.0.clear();
        assert!(batch.0.capacity() >= 1000);
        queue.take(&mut batch);
        queue.inspect(|b| assert_eq!(b.0.capacity(), 0, "the burst's buffer was released"));
    }
}
