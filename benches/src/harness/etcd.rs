//! etcd as a [`Peer`], behind `--peer etcd` (cargo feature `etcd`): a fresh single-node
//! etcd (temp data dir, 127.0.0.1, default durable settings, killed at the end) driven
//! with the `etcd-client` crate, so the same parameters give result lines with
//! `"system": "etcd"` next to Syncline's. A write is a put; a clone of an etcd `Client`
//! shares its gRPC channel (one HTTP/2 connection, requests multiplexed on it), which
//! is how etcd's own client shares a connection. A subscriber is a client with its own
//! connection and one watch.
//!
//! Fan-out delivery is checked by the `seq` each value carries, not by `mod_revision`
//! (`Order::Commits`): etcd's revision is global, and the writer keeps several puts in
//! flight, so etcd may commit seq 7 before seq 6. A watcher must see every seq exactly
//! once (`missed`, `duplicated`) and in etcd's own commit order (`out_of_order`: a
//! `mod_revision` that does not increase). etcd has no snapshot resync: a watcher that
//! falls too far behind is cancelled.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, EventType, WatchResponse, WatchStream};
use serde_json::Value;

use super::measure::MeasuredProcess;
use super::peer::{Ack, Next, Order, Peer};
use super::{err, Error};

/// How long etcd gets to answer after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for one request (a put, a watch being created).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A fresh etcd on 127.0.0.1, killed when dropped.
pub struct EtcdUnderTest {
    endpoint: String,
    process: MeasuredProcess,
    data: tempfile::TempDir,
}

/// Two free loopback ports (bound together so they differ, then released).
fn free_ports() -> Result<(u16, u16), Error> {
    let a = TcpListener::bind("127.0.0.1:0").map_err(err)?;
    let b = TcpListener::bind("127.0.0.1:0").map_err(err)?;
    Ok((
        a.local_addr().map_err(err)?.port(),
        b.local_addr().map_err(err)?.port(),
    ))
}

/// Fails at once, naming the package, if there is no etcd to start (checked before
/// any workload runs, so a long run does not end on it).
pub fn preflight() -> Result<(), Error> {
    let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into());
    match Command::new(&bin).arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err(format!(
            "--peer etcd: cannot run {bin}; install etcd with \
             `apt-get install etcd-server`, or set ETCD_BIN"
        )),
    }
}

impl EtcdUnderTest {
    /// Starts `etcd` (or `$ETCD_BIN`) as one node on 127.0.0.1 in a temp dir and waits
    /// until it answers.
    pub async fn start() -> Result<Self, Error> {
        Self::start_with(&[]).await
    }

    /// [`start`](Self::start) with more etcd flags (cluster mode raises
    /// `--max-txn-ops`, which no single put uses).
    pub async fn start_with(extra: &[&str]) -> Result<Self, Error> {
        let data = tempfile::tempdir().map_err(err)?;
        let (client_port, peer_port) = free_ports()?;
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(data.path().join("etcd.log")).map_err(err)?;
        let child = spawn_member(
            Urls {
                name: "bench",
                dir: data.path(),
                client: &client_url,
                peer: &peer_url,
            },
            &format!("bench={peer_url}"),
            None,
            extra,
            log,
        )?;
        let mut me = EtcdUnderTest {
            endpoint: client_url,
            process: MeasuredProcess(Some(child)),
            data,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = me.process.try_wait()? {
                return Err(format!("etcd exited ({status}): {}", me.log_tail()));
            }
            let probe = async {
                let mut c = me.client().await?;
                c.get("syncline-bench-ready", None).await.map_err(err)
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), probe).await {
                return Ok(me);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd did not answer within {} s: {}",
                    START_TIMEOUT.as_secs(),
                    me.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its client URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The last lines etcd logged (for errors).
    fn log_tail(&self) -> String {
        last_lines(&self.data.path().join("etcd.log"))
    }

    /// A new client, with its own connection (opened by its first request).
    async fn client(&self) -> Result<Client, Error> {
        let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(5));
        Client::connect([&self.endpoint], Some(options))
            .await
            .map_err(err)
    }
}

/// The last lines of an etcd log, for errors.
fn last_lines(log: &std::path::Path) -> String {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

/// Where one etcd member lives and listens.
struct Urls<'a> {
    name: &'a str,
    /// Holds `data/`.
    dir: &'a std::path::Path,
    client: &'a str,
    peer: &'a str,
}

/// Starts one etcd member (`$ETCD_BIN` or `etcd`) on 127.0.0.1, logging to `log`:
/// alone, or one of a cluster with its token and `--initial-cluster-state`.
fn spawn_member<S: AsRef<std::ffi::OsStr>>(
    at: Urls<'_>,
    initial_cluster: &str,
    token_and_state: Option<(&str, &str)>,
    extra: &[S],
    log: std::fs::File,
) -> Result<std::process::Child, Error> {
    let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into());
    let mut command = Command::new(&bin);
    command
        .args(["--name", at.name, "--data-dir"])
        .arg(at.dir.join("data"))
        .args(["--listen-client-urls", at.client])
        .args(["--advertise-client-urls", at.client])
        .args(["--listen-peer-urls", at.peer])
        .args(["--initial-advertise-peer-urls", at.peer])
        .args(["--initial-cluster", initial_cluster]);
    if let Some((token, state)) = token_and_state {
        command
            .args(["--initial-cluster-token", token])
            .args(["--initial-cluster-state", state]);
    }
    command
        .args(["--logger", "zap", "--log-level", "warn"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| {
            format!("starting {bin}: {e} (install etcd with `apt-get install etcd-server`, or set ETCD_BIN)")
        })
}

/// etcd's `--max-txn-ops` for a cluster the harness starts, and the nodes'
/// `--etcd-max-txn-ops` (the README's number).
pub const CLUSTER_MAX_TXN_OPS: usize = 1024;

/// One member of [`EtcdMembers`]: its name, ports, dir, and its process while it runs.
struct Member {
    name: String,
    /// Holds `data/` and `etcd.log`.
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    process: Option<MeasuredProcess>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// The last lines the member logged (for errors).
    fn log_tail(&self) -> String {
        format!(
            "etcd member {} ({}), log {}:\n{}",
            self.name,
            self.client_url(),
            self.log_path().display(),
            last_lines(&self.log_path())
        )
    }
}

/// A real etcd cluster of several members on 127.0.0.1 (the crash loop's cluster
/// mode), each member in `dir/m{i}` with its own client and peer ports, started with
/// `extra` flags. A member can be SIGKILLed and restarted on the same dir and ports
/// (`--initial-cluster-state existing`); every member is killed when this is dropped.
pub struct EtcdMembers {
    members: Vec<Member>,
    /// `m0=http://127.0.0.1:p0,...`: the same for every member and every (re)start.
    initial_cluster: String,
    /// Unique per cluster, so members of two clusters never join up.
    token: String,
    extra: Vec<String>,
}

impl EtcdMembers {
    /// Starts `n` members as one new cluster under `dir` and returns once every one
    /// answers a linearizable read (so there is a leader and each member is caught up).
    pub async fn start(dir: &Path, n: usize, extra: &[&str]) -> Result<Self, Error> {
        let listeners: Vec<TcpListener> = (0..2 * n)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()
            .map_err(err)?;
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<_, _>>()
            .map_err(err)?;
        drop(listeners);
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("m{i}");
            let dir = dir.join(&name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            members.push(Member {
                name,
                dir,
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                process: None,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let mut me = EtcdMembers {
            members,
            initial_cluster,
            token: format!("syncline-bench-{:016x}", rand::random::<u64>()),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        for i in 0..n {
            me.spawn(i, "new")?;
        }
        // Members of a new cluster answer only once a majority is up: wait after
        // starting them all.
        let deadline = Instant::now() + START_TIMEOUT;
        for i in 0..n {
            me.wait_until_answers(i, deadline).await?;
        }
        Ok(me)
    }

    /// How many members there are (running or not).
    pub fn members(&self) -> usize {
        self.members.len()
    }

    /// Every member's client URL, comma-separated (for `--etcd-endpoints`), whether it
    /// runs or not.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(Member::client_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts member `i`'s process: `state` is `new` for the first start, `existing`
    /// for a restart on the same data dir (its log is appended to).
    fn spawn(&mut self, i: usize, state: &str) -> Result<(), Error> {
        let m = &self.members[i];
        if m.process.is_some() {
            return Err(format!("etcd member {} is already running", m.name));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.log_path())
            .map_err(|e| format!("{}: {e}", m.log_path().display()))?;
        let child = spawn_member(
            Urls {
                name: &m.name,
                dir: &m.dir,
                client: &m.client_url(),
                peer: &m.peer_url(),
            },
            &self.initial_cluster,
            Some((&self.token, state)),
            &self.extra,
            log,
        )?;
        self.members[i].process = Some(MeasuredProcess(Some(child)));
        Ok(())
    }

    /// SIGKILLs member `i` (a crash, as far as the cluster can tell) and reaps it. Its
    /// dir and ports are kept for [`restart`](Self::restart).
    pub fn kill(&mut self, i: usize) -> Result<(), Error> {
        let m = &mut self.members[i];
        let mut p = m
            .process
            .take()
            .ok_or_else(|| format!("etcd member {} is not running", m.name))?;
        p.sigkill()?;
        if let Some(mut c) = p.0.take() {
            c.wait()
                .map_err(|e| format!("reaping etcd member {}: {e}", m.name))?;
        }
        Ok(())
    }

    /// Starts member `i` again after [`kill`](Self::kill), on the same data dir and
    /// ports, and waits (up to `deadline`) until it answers a linearizable read (which
    /// needs a leader and a quorum).
    pub async fn restart(&mut self, i: usize, deadline: Instant) -> Result<(), Error> {
        self.spawn(i, "existing")?;
        self.wait_until_answers(i, deadline).await
    }

    /// Polls member `i` with a linearizable read until it answers, or it exits, or
    /// `deadline` passes.
    async fn wait_until_answers(&mut self, i: usize, deadline: Instant) -> Result<(), Error> {
        let endpoint = self.members[i].client_url();
        loop {
            let exited = match self.members[i].process.as_mut() {
                Some(p) => p.try_wait()?,
                None => return Err(format!("etcd member {i} is not running")),
            };
            if let Some(status) = exited {
                self.members[i].process = None;
                return Err(format!("exited ({status}): {}", self.members[i].log_tail()));
            }
            let probe = async {
                let options = ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(1))
                    .with_timeout(Duration::from_secs(2));
                let mut c = Client::connect([&endpoint], Some(options)).await?;
                c.get("syncline-bench-ready", None).await
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(3), probe).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "did not answer before the deadline: {}",
                    self.members[i].log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for EtcdMembers {
    /// Kills and reaps every member still running (`MeasuredProcess`'s own drop).
    fn drop(&mut self) {
        for m in &mut self.members {
            m.process.take();
        }
    }
}

/// One put with a time limit; returns the revision it was committed at.
async fn put(c: &mut Client, key: &str, value: String) -> Result<u64, Error> {
    match tokio::time::timeout(REQUEST_TIMEOUT, c.put(key, value, None)).await {
        Ok(r) => Ok(r
            .map_err(err)?
            .header()
            .map_or(0, |h| h.revision().max(0) as u64)),
        Err(_) => Err(format!("etcd put of {key} took over {REQUEST_TIMEOUT:?}")),
    }
}

/// A watch, and the response whose events it is handing out (from the index).
pub struct Watch {
    stream: WatchStream,
    pending: Option<(WatchResponse, usize)>,
}

impl Peer for EtcdUnderTest {
    const SYSTEM: &'static str = "etcd";
    const QUIC: bool = false;
    const ORDER: Order = Order::Commits;

    type Conn = Client;
    type Ticket = ();
    /// The watcher's client, kept (with its connection) while its watch is read.
    type Link = Client;
    type Events = Watch;

    fn process(&self) -> &MeasuredProcess {
        &self.process
    }

    fn kind(&self) -> &'static str {
        "document"
    }

    async fn connect(&self) -> Result<Client, Error> {
        let mut c = self.client().await?;
        // Connections are opened lazily: open each before the clock starts.
        c.get("warm-up", None).await.map_err(err)?;
        Ok(c)
    }

    async fn write(&self, c: &mut Client, key: &str, value: &Value) -> Result<(), Error> {
        put(c, key, value.to_string()).await.map(drop)
    }

    async fn publish(&self, c: &mut Client, topic: &str, value: Value) -> Result<Ack, Error> {
        Ok(Ack::at(put(c, topic, value.to_string()).await?))
    }

    fn tickets(&self, n: usize, _topic: &str) -> Result<Vec<()>, Error> {
        Ok(vec![(); n])
    }

    /// A client with its own connection and one watch on `topic`, confirmed by etcd
    /// (nothing written after it is lost).
    async fn subscribe(&self, _ticket: (), topic: &str) -> Result<(Client, Watch), Error> {
        let mut c = self.client().await?;
        let mut stream = c.watch(topic, None).await.map_err(err)?;
        match stream.message().await.map_err(err)? {
            Some(r) if r.created() => Ok((
                c,
                Watch {
                    stream,
                    pending: None,
                },
            )),
            _ => Err(format!("etcd did not create the watch on {topic}")),
        }
    }

    async fn next(w: &mut Watch) -> Next {
        loop {
            if let Some((resp, i)) = &mut w.pending {
                while let Some(e) = resp.events().get(*i) {
                    *i += 1;
                    let Some(kv) = e.kv().filter(|_| e.event_type() == EventType::Put) else {
                        continue;
                    };
                    let v: Value = serde_json::from_slice(kv.value()).unwrap_or(Value::Null);
                    let Some(seq) = v["seq"].as_u64() else {
                        continue;
                    };
                    return Next::Event {
                        at: kv.mod_revision().max(0) as u64,
                        seq: Some(seq),
                        sent_ns: v["sent_ns"].as_u64(),
                    };
                }
                w.pending = None;
            }
            match w.stream.message().await {
                Ok(Some(resp)) if resp.canceled() => {
                    return Next::Ended(format!(
                        "etcd cancelled the watch: {}",
                        resp.cancel_reason()
                    ))
                }
                Ok(Some(resp)) => w.pending = Some((resp, 0)),
                Ok(None) => return Next::Ended("the watch ended".to_owned()),
                Err(e) => return Next::Ended(e.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::measure;
    use super::super::workloads::{conns, fanout, write};
    use super::*;

    /// W1..W3 against a real etcd, small; skipped where no `etcd` binary is installed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn workloads_run_against_a_local_etcd() {
        let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into());
        if Command::new(&bin).arg("--version").output().is_err() {
            eprintln!("no {bin} here: skipped");
            return;
        }
        let etcd = Arc::new(EtcdUnderTest::start().await.unwrap());
        let pid = etcd.process.pid().unwrap();
        let w = write(&etcd, 4, 2, None, Duration::from_millis(300))
            .await
            .unwrap();
        let f = fanout(&etcd, 5, 50, Duration::from_millis(400))
            .await
            .unwrap();
        let c = conns(&etcd, 20).await.unwrap();
        for o in [&w, &f, &c] {
            let d = o.delivery;
            assert_eq!((d.missed, d.duplicated, d.out_of_order), (0, 0, 0));
            assert!(o.ops_per_s > 0.0 && o.server_rss_kib > 0, "{}", o.workload);
            assert_eq!(o.system, "etcd");
        }
        assert_eq!(f.delivery.received, 5 * 20);
        assert_eq!(c.delivery.received, 20);
        drop(etcd);
        assert!(
            measure::cpu_seconds(pid).is_none(),
            "etcd outlived its Drop"
        );
    }
}
