//! TTL expiry: periodically finds objects and items whose time has passed and asks the commit task
//! to delete them, which emits their `object_removed` event with reason `expired`.
//! Readers already treat them as gone; the reaper makes it so on disk and tells subscribers.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, error};

use crate::commit::{Committer, WriteOp};
use crate::objects::{WriteContext, SYSTEM_ACTOR};
use crate::store::Store;

/// Objects expired per sweep at most; the rest wait for the next one.
const SWEEP_LIMIT: usize = 1000;

/// Sweeps every `interval`. With several nodes, only the one the cluster says leads
/// sweeps (expiry is once per cluster; a second sweeper would only lose races).
pub async fn run(
    store: Arc<dyn Store>,
    committer: Committer,
    interval: Duration,
    cluster: Option<Arc<dyn crate::cluster::Cluster>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::shutdown_requested(&mut shutdown) => return,
        }
        if cluster.as_ref().is_some_and(|c| !c.leads()) {
            continue;
        }
        let now = crate::now_ms();
        let expired = match store.expired(now, SWEEP_LIMIT).await {
            Ok(e) => e,
            Err(e) => {
                error!(error = %e, "reaper could not read the expiry index");
                continue;
            }
        };
        let items = match store.expired_items(now, SWEEP_LIMIT).await {
            Ok(i) => i,
            Err(e) => {
                error!(error = %e, "reaper could not read the item expiry index");
                Vec::new()
            }
        };
        let ops = expired
            .into_iter()
            .map(|(service_sid, object_sid)| (service_sid, WriteOp::Expire { object_sid }))
            .chain(items.into_iter().map(|i| {
                let op = WriteOp::ExpireItem {
                    object_sid: i.object_sid,
                    key: i.key,
                };
                (i.service_sid, op)
            }));
        for (service_sid, op) in ops {
            let ctx = WriteContext {
                service_sid,
                actor: SYSTEM_ACTOR.into(),
                origin: 0,
                now_ms: now,
                guard: None,
                may_create: true,
            };
            debug!(?op, "expiring");
            if let Err(e) = committer.submit(ctx, op).await {
                debug!(error = %e, "expiry not applied");
            }
        }
    }
}
