//! W4, `chat` (Syncline only): rooms of members, each room a List of messages, a Map
//! roster and a Stream for typing; members post at a rate in total and every member
//! follows its room's three objects.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use syncline_client::ObjectKind;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::follow::{follow, Followers};
use super::measure::{self, Drain, Ledger, Outcome, Progress, DRAIN};
use super::syncline::Syncline;
use super::workloads::{backstop, open_all, Sample, OPEN_LIMIT, OVERRUN};
use super::{err, Error};

/// Room `r`'s objects: its messages, its roster and its typing stream.
fn room_objects(r: usize) -> [(String, ObjectKind); 3] {
    [
        (format!("room-{r}"), ObjectKind::List),
        (format!("roster-{r}"), ObjectKind::Map),
        (format!("typing-{r}"), ObjectKind::Stream),
    ]
}

/// W4: `rooms` × `members`; members post `rate` messages/s in total.
pub async fn chat(
    syncline: &Arc<Syncline>,
    rooms: usize,
    members: usize,
    rate: u32,
    duration: Duration,
) -> Result<Outcome, Error> {
    let progress = Progress::new("chat");
    measure::phase("chat: creating the rooms", OPEN_LIMIT, async {
        let setup = syncline.backend().await?;
        for r in 0..rooms {
            let [(room, _), (roster, _), (typing, _)] = room_objects(r);
            setup.list(&room).create(None).await.map_err(err)?;
            setup.map(&roster).create(None).await.map_err(err)?;
            setup.stream(&typing).create(None).await.map_err(err)?;
        }
        Ok(())
    })
    .await?;
    let configs = syncline.identity_configs(rooms * members, "member")?;
    let opened = measure::phase(
        "chat: opening the members",
        OPEN_LIMIT,
        open_all(
            configs.into_iter().enumerate().collect(),
            &progress,
            |(i, config)| {
                let syncline = syncline.clone();
                let objects = room_objects(i / members).map(|(name, _)| name);
                async move { syncline.member(config, &objects).await }
            },
        ),
    )
    .await?;
    let drain = Drain::new(Instant::now() + duration + OVERRUN + DRAIN);
    // One follower per (room, object) per member; targets are per object, so each
    // follower gets its own watch channel fed at the end.
    let mut targets: Vec<(String, watch::Sender<Option<u64>>)> = Vec::new();
    let mut set = JoinSet::new();
    let mut clients = Vec::with_capacity(opened.len());
    for (i, (client, subs)) in opened.into_iter().enumerate() {
        for ((name, _), sub) in room_objects(i / members).into_iter().zip(subs) {
            let (tx, rx) = watch::channel(None);
            targets.push((name, tx));
            // Nothing exists before the first post: a follower that saw nothing
            // missed every revision up to its object's last.
            let ledger = Ledger::in_sequence(None, 0);
            set.spawn(follow::<Syncline>(sub, ledger, rx, drain.clock()));
        }
        clients.push(client);
    }
    let before = Sample::take(&**syncline);
    let start = Instant::now();
    let total = (duration.as_secs_f64() * f64::from(rate)).ceil() as u64;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let posting = measure::phase("chat: posting", duration + OVERRUN, async {
        for n in 0..total {
            tick.tick().await;
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let who = (rng % clients.len() as u64) as usize;
            let room = who / members;
            let c = &clients[who];
            let sent = json!({"from": who, "n": n, "sent_ns": measure::now_ns()});
            let list = format!("room-{room}");
            let rev = c.list(&list).push(&sent).await.map_err(err)?.revision;
            last.insert(list, rev);
            if n % 2 == 0 {
                let typing = format!("typing-{room}");
                let seq = c.stream(&typing).publish(&sent).await.map_err(err)?;
                last.insert(typing, seq);
            }
            if n % 5 == 0 {
                let roster = format!("roster-{room}");
                let rev = c
                    .map(&roster)
                    .set(&format!("m{who}"), &sent)
                    .await
                    .map_err(err)?
                    .revision;
                last.insert(roster, rev);
            }
            if n % u64::from(rate.max(1)) == 0 {
                progress.update(n as f64 / total as f64, "");
            }
        }
        Ok(())
    });
    posting.await?;
    drain.writers_done();
    for (name, tx) in &targets {
        // Objects nobody wrote to are at revision 0 (sequence 0): nothing to wait for.
        tx.send_replace(Some(last.get(name).copied().unwrap_or(0)));
    }
    let (seen, extra) = Followers::join("chat: delivering", set, backstop(&drain))
        .await?
        .split();
    progress.finish();
    let mut o = before.outcome(
        &**syncline,
        "chat",
        seen.1.received as f64,
        start.elapsed(),
        seen,
        json!({"rooms": rooms, "members": members, "rate": rate, "duration_s": duration.as_secs_f64(), "messages": total}),
    );
    o.extra.extend(extra);
    Ok(o)
}
