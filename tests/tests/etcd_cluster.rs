//! The etcd test fixture (`syncline_tests::etcd::EtcdCluster`) against a real 3-member
//! cluster, and the etcd behaviour Syncline's cluster mode relies on: any member serves
//! what another committed, a cluster keeps accepting writes with one member down and
//! refuses them (within a bounded time) without quorum, and a transaction comparing
//! `mod_revision` lets exactly one of two writers that read the same revision win.
//! Skipped without etcd, unless `SYNCLINE_REQUIRE_ETCD` is set (`.ci/run` sets it).
//! Every test is bounded by `tokio::time::timeout`; the tests run in parallel, each on a
//! cluster of its own, and the whole file takes well under 40 s.

use std::future::Future;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, Error, Txn, TxnOp, TxnOpResponse};
use syncline_tests::etcd::{require_etcd, EtcdCluster, CLIENT_TIMEOUT};

/// Bound on a whole test: a cold start, an election or two, a few client timeouts.
const TEST_LIMIT: Duration = Duration::from_secs(35);

/// Runs a test body with an upper bound, so a test can fail but never hang.
async fn bounded(body: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .expect("the test finished within its time limit");
}

/// The value of `key` as read through `c` (a linearizable read), if there is one.
async fn value(c: &mut Client, key: &str) -> Option<String> {
    let r = c.get(key, None).await.expect("get");
    r.kvs()
        .first()
        .map(|kv| kv.value_str().expect("utf-8 value").to_owned())
}

/// Each member's id and the leader's id as that member sees it (0: none), asked of
/// the live members `live`.
async fn leaders(cluster: &EtcdCluster, live: &[usize]) -> Vec<(u64, u64)> {
    let mut seen = Vec::new();
    for &i in live {
        let status = cluster
            .member_client(i)
            .await
            .status()
            .await
            .unwrap_or_else(|e| panic!("status of member {i}: {e}"));
        seen.push((
            status.header().expect("header").member_id(),
            status.leader(),
        ));
    }
    seen
}

#[tokio::test]
async fn a_put_through_one_member_is_read_through_the_others() {
    if !require_etcd() {
        return;
    }
    bounded(async {
        let cluster = EtcdCluster::start(3).await;
        cluster
            .member_client(0)
            .await
            .put("greeting", "hello", None)
            .await
            .expect("put through member 0");
        for i in [1, 2] {
            let mut c = cluster.member_client(i).await;
            assert_eq!(
                value(&mut c, "greeting").await.as_deref(),
                Some("hello"),
                "read through member {i}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn with_the_leader_killed_puts_still_succeed_through_the_two_members_left() {
    if !require_etcd() {
        return;
    }
    bounded(async {
        let mut cluster = EtcdCluster::start(3).await;
        let mut before = cluster.client().await;
        before.put("k", "0", None).await.expect("put with all up");
        let seen = leaders(&cluster, &[0, 1, 2]).await;
        let old = seen[0].1;
        let gone = seen
            .iter()
            .position(|&(id, _)| id == old)
            .expect("the leader is a member");
        cluster.kill(gone);
        let live: Vec<usize> = (0..3).filter(|&i| i != gone).collect();
        // A put sent before the two left notice the loss (an election timeout, 1 s) is
        // forwarded to the dead leader and lost: etcd answers it only at its own request
        // timeout (7 s). So wait for the new leader first.
        let killed = Instant::now();
        loop {
            let seen = leaders(&cluster, &live).await;
            if seen
                .iter()
                .all(|&(_, l)| l != 0 && l != old && l == seen[0].1)
            {
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(10),
                "no new leader 10 s after the old one was killed: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("a new leader {:?} after the kill", killed.elapsed());
        for &i in &live {
            let mut c = cluster.member_client(i).await;
            c.put("k", format!("via {i}"), None)
                .await
                .unwrap_or_else(|e| panic!("put through member {i}, {gone} down: {e}"));
            assert_eq!(value(&mut c, "k").await, Some(format!("via {i}")));
        }
        // A client of every endpoint does not fail over: a request it sends to the dead
        // member fails at once, and goes through when sent again.
        let mut after = cluster.client().await;
        for (n, c) in [&mut before, &mut after].into_iter().enumerate() {
            for v in 0..10 {
                put_retrying(c, "k", &format!("client {n}, put {v}")).await;
            }
        }
        assert_eq!(
            value(&mut cluster.member_client((gone + 1) % 3).await, "k")
                .await
                .as_deref(),
            Some("client 1, put 9")
        );
    })
    .await;
}

#[tokio::test]
async fn with_two_of_three_killed_a_put_fails_within_the_client_timeout_and_succeeds_once_one_restarts(
) {
    if !require_etcd() {
        return;
    }
    bounded(async {
        let mut cluster = EtcdCluster::start(3).await;
        let mut c = cluster.client().await;
        c.put("k", "with quorum", None).await.expect("put");
        cluster.kill(1);
        cluster.kill(2);
        // Through the one member left, so the failure is for want of quorum, not of a
        // connection: etcd holds the put (for its own 7 s), the client gives up first.
        let mut left = cluster.member_client(0).await;
        let started = Instant::now();
        let refused = left.put("k", "without quorum", None).await;
        let took = started.elapsed();
        let err = refused.expect_err("a put without quorum fails");
        assert!(
            took < CLIENT_TIMEOUT + Duration::from_secs(2),
            "the failing put took {took:?}: {err}"
        );
        cluster.restart(1).await;
        // `restart` returned once member 1 answered a linearizable read: quorum is back.
        left.put("k", "quorum again", None)
            .await
            .expect("put through member 0 after the restart");
        put_retrying(&mut c, "k", "quorum again, all endpoints").await;
        let mut c1 = cluster.member_client(1).await;
        assert_eq!(
            value(&mut c1, "k").await.as_deref(),
            Some("quorum again, all endpoints")
        );
    })
    .await;
}

/// gRPC's `UNAVAILABLE` and `UNKNOWN` status codes (fixed by gRPC's spec).
const UNAVAILABLE: i32 = 14;
const UNKNOWN: i32 = 2;

/// A put through a client of every endpoint while some are down: etcd-client's balanced
/// channel sends some requests to a dead member, which fail at once with `UNAVAILABLE`
/// ("tcp connect error"), or `UNKNOWN` ("transport error") on a connection that member
/// had; sent again, the request may go to a live one. Any other error fails the test,
/// and so does a put that took over ten attempts.
async fn put_retrying(c: &mut Client, key: &str, v: &str) {
    let mut errors = Vec::new();
    while errors.len() < 10 {
        match c.put(key, v, None).await {
            Ok(_) => return,
            Err(Error::GRpcStatus(s)) if [UNAVAILABLE, UNKNOWN].contains(&i32::from(s.code())) => {
                errors.push(s.to_string())
            }
            Err(e) => panic!("put {key}={v}: {e}"),
        }
    }
    panic!("put {key}={v} failed ten times: {errors:#?}");
}

/// The compare-and-swap a cluster-mode commit makes: write only if the key is still at
/// the revision this writer read.
fn cas(key: &str, read_at: i64, new: &str) -> Txn {
    Txn::new()
        .when([Compare::mod_revision(key, CompareOp::Equal, read_at)])
        .and_then([TxnOp::put(key, new, None)])
        .or_else([TxnOp::get(key, None)])
}

#[tokio::test]
async fn a_txn_comparing_mod_revision_succeeds_once_and_fails_for_a_second_writer_that_read_the_same_revision(
) {
    if !require_etcd() {
        return;
    }
    bounded(async {
        let cluster = EtcdCluster::start(3).await;
        let (mut a, mut b) = (
            cluster.member_client(0).await,
            cluster.member_client(2).await,
        );
        a.put("doc", "v0", None).await.expect("put");
        let read_at = |r: etcd_client::GetResponse| r.kvs()[0].mod_revision();
        let rev_a = read_at(a.get("doc", None).await.expect("a reads"));
        let rev_b = read_at(b.get("doc", None).await.expect("b reads"));
        assert_eq!(rev_a, rev_b, "both writers read the same revision");

        let first = a.txn(cas("doc", rev_a, "from a")).await.expect("a's txn");
        assert!(first.succeeded(), "the first writer's compare holds");
        let second = b.txn(cas("doc", rev_b, "from b")).await.expect("b's txn");
        assert!(!second.succeeded(), "the second writer's compare fails");
        // The failed txn's else branch shows b what won, at a newer revision.
        let [TxnOpResponse::Get(seen)] = &second.op_responses()[..] else {
            panic!("one get in the else branch: {:?}", second.op_responses());
        };
        let kv = &seen.kvs()[0];
        assert_eq!(kv.value_str().expect("utf-8"), "from a");
        assert!(kv.mod_revision() > rev_b);
        assert_eq!(value(&mut b, "doc").await.as_deref(), Some("from a"));
    })
    .await;
}
