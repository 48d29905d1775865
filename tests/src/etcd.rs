//! A real etcd cluster for tests: 1 or 3 `etcd` processes (Debian's `etcd-server`, or
//! `$ETCD_BIN`) on 127.0.0.1, each member in its own temp dir with its own client and
//! peer ports, killed when the fixture is dropped. Tests that need it start with
//! `if !syncline_tests::etcd::require_etcd() { return; }`: without etcd they are skipped,
//! unless `SYNCLINE_REQUIRE_ETCD` is set (`.ci/run` sets it and installs etcd), which
//! makes a missing etcd a failure instead of a silent skip.

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};

/// How long a member (or the whole cluster) gets to answer after it is started: a cold
/// 3-member start takes a second or two, a shared CI machine may take much longer.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect and per-request timeout of `client()`: a request to a cluster without quorum
/// fails within this instead of waiting for etcd's own (longer) server-side timeout.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
/// Tries at starting a cluster when a member exits at once (see `EtcdCluster::start`).
const START_ATTEMPTS: u32 = 3;

/// The etcd binary: `$ETCD_BIN` when set (a build of one's own), else `etcd` on PATH.
fn etcd_bin() -> String {
    std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into())
}

/// Whether `etcd --version` runs here. Checked once per test binary: every etcd test asks.
pub fn etcd_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new(etcd_bin())
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Whether an etcd test should run: false (the caller returns, the test is skipped, and
/// why is printed on stderr) when etcd is not installed. Panics instead when
/// `SYNCLINE_REQUIRE_ETCD` is set, as CI does after installing etcd, so that a broken
/// install fails the run rather than hiding behind skipped tests.
pub fn require_etcd() -> bool {
    if etcd_available() {
        return true;
    }
    let bin = etcd_bin();
    assert!(
        std::env::var_os("SYNCLINE_REQUIRE_ETCD").is_none(),
        "SYNCLINE_REQUIRE_ETCD is set but `{bin} --version` does not run \
         (apt-get install etcd-server, or set ETCD_BIN)"
    );
    eprintln!(
        "skipped: `{bin} --version` does not run (apt-get install etcd-server, or set ETCD_BIN)"
    );
    false
}

/// One member: its name, dir, ports, and its process while it runs.
struct Member {
    name: String,
    /// Holds `data/` and `etcd.log`; removed with the fixture (after the process is dead).
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// The last lines the member logged, for a panic message.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    /// Starts the process: `state` is "new" for the first start and "existing" for a
    /// restart on the same data dir (the log is appended to, so a restart keeps the
    /// history of the first run).
    fn spawn(&mut self, cluster: &ClusterArgs, state: &str) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("etcd log file");
        let bin = etcd_bin();
        let child = Command::new(&bin)
            .args(["--name", &self.name, "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &self.client_url()])
            .args(["--advertise-client-urls", &self.client_url()])
            .args(["--listen-peer-urls", &self.peer_url()])
            .args(["--initial-advertise-peer-urls", &self.peer_url()])
            .args(["--initial-cluster", &cluster.initial_cluster])
            .args(["--initial-cluster-token", &cluster.token])
            .args(["--initial-cluster-state", state])
            .args(&cluster.extra)
            // zap logs to stderr, which is the member's log file.
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {bin}: {e} (apt-get install etcd-server, or set ETCD_BIN)")
            });
        self.child = Some(child);
    }

    /// SIGKILL and reap; nothing if it is not running.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// How the process ended, if it has exited on its own (a port taken by someone
    /// else between `free_ports` and etcd's bind, a bad flag, a full disk).
    fn exited(&mut self) -> Option<ExitStatus> {
        let status = self
            .child
            .as_mut()?
            .try_wait()
            .expect("etcd process status");
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Why the member did not come up: `what` happened and the last lines of its log.
    fn failure(&self, what: &str) -> String {
        format!(
            "etcd member {} ({}) {what}; its log ends with:\n{}",
            self.name,
            self.client_url(),
            self.log_tail()
        )
    }

    /// Panics with `failure`, naming a copy of the member's whole log (its temp dir goes
    /// with the fixture while the panic unwinds; the copy, in the system's temp dir,
    /// outlives the failed test).
    fn fail(&self, token: &str, what: &str) -> ! {
        let saved = std::env::temp_dir().join(format!("{token}-{}.log", self.name));
        let log = match std::fs::copy(self.log_path(), &saved) {
            Ok(_) => format!("the whole log is saved as {}", saved.display()),
            Err(e) => format!("its log could not be saved: {e}"),
        };
        panic!("{}\n({log})", self.failure(what))
    }
}

/// Why member `.0` did not answer: what happened.
enum NotUp {
    /// Its process exited: worth one more try on fresh ports when starting a cluster.
    Exited(usize, String),
    /// It runs but did not answer before the deadline.
    Late(usize, String),
}

/// A real etcd cluster on 127.0.0.1; every member is killed (and reaped) on drop.
pub struct EtcdCluster {
    members: Vec<Member>,
    args: ClusterArgs,
}

/// What every member of one cluster is started with, at every (re)start.
struct ClusterArgs {
    /// `m0=http://127.0.0.1:p0,...`.
    initial_cluster: String,
    /// Unique per cluster, so members of two clusters in one test run never join up.
    token: String,
    /// More flags, from `start_with`.
    extra: Vec<String>,
}

/// `n` distinct free loopback ports: all bound at once (so they differ), then released
/// for etcd to bind.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound address").port())
        .collect()
}

impl EtcdCluster {
    /// Starts `members` (1 or 3) fresh members as one new cluster and returns once every
    /// one answers a linearizable read (so the cluster has a leader and each member is
    /// caught up). A member that exits during start (most likely a port taken between
    /// `free_ports` and etcd's bind) costs one more try, on fresh ports and dirs, up to
    /// `START_ATTEMPTS`. Panics, naming the member's log, if it comes to that or if the
    /// whole start takes over `START_TIMEOUT`.
    pub async fn start(members: usize) -> EtcdCluster {
        Self::start_with(members, &[]).await
    }

    /// `start`, each member with more command-line flags (`--quota-backend-bytes=N`).
    pub async fn start_with(members: usize, extra: &[&str]) -> EtcdCluster {
        assert!(
            members == 1 || members == 3,
            "an etcd test cluster has 1 or 3 members, not {members}"
        );
        let deadline = Instant::now() + START_TIMEOUT;
        for attempt in 1.. {
            let mut cluster = Self::spawn_new(members, extra);
            // Members of a new cluster only answer once a majority is up, so wait for
            // them after starting them all.
            let mut up = Ok(());
            for i in 0..members {
                up = cluster.wait_until_answers(i, deadline).await;
                if up.is_err() {
                    break;
                }
            }
            match up {
                Ok(()) => return cluster,
                Err(NotUp::Exited(i, what)) if attempt < START_ATTEMPTS => {
                    let why = cluster.members[i].failure(&what);
                    eprintln!("etcd cluster, start attempt {attempt}: {why}\n(trying again)");
                }
                Err(NotUp::Exited(i, what) | NotUp::Late(i, what)) => {
                    cluster.members[i].fail(&cluster.args.token, &what)
                }
            }
        }
        unreachable!("the attempts end in a return or a panic")
    }

    /// Spawns the members of a new cluster on fresh ports, each in a fresh temp dir.
    fn spawn_new(members: usize, extra: &[&str]) -> EtcdCluster {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let token = format!(
            "syncline-etcd-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let ports = free_ports(2 * members);
        let members: Vec<Member> = (0..members)
            .map(|i| Member {
                name: format!("m{i}"),
                dir: tempfile::tempdir().expect("temp dir"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            members,
            args: ClusterArgs {
                initial_cluster,
                token,
                extra: extra.iter().map(|a| a.to_string()).collect(),
            },
        };
        for m in &mut cluster.members {
            m.spawn(&cluster.args, "new");
        }
        cluster
    }

    /// Each member's client URL, `http://127.0.0.1:PORT`, in member order, whether the
    /// member runs or not (a client given all of them must cope with dead ones).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// SIGKILLs member `i` (no graceful shutdown: a crash, as far as the cluster can
    /// tell) and waits until the process is gone. Its dir and ports are kept for
    /// `restart`.
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Starts member `i` again after `kill`, on the same data dir and ports, as a member
    /// of the existing cluster, and waits until it answers a linearizable read (which
    /// needs a quorum including it). Panics, naming its log, if it exits or does not
    /// answer within `START_TIMEOUT`.
    pub async fn restart(&mut self, i: usize) {
        let m = &mut self.members[i];
        m.spawn(&self.args, "existing");
        let deadline = Instant::now() + START_TIMEOUT;
        if let Err(NotUp::Exited(i, what) | NotUp::Late(i, what)) =
            self.wait_until_answers(i, deadline).await
        {
            self.members[i].fail(&self.args.token, &what)
        }
    }

    /// A client of the whole cluster (every endpoint, live or not), with a connect
    /// timeout and a per-request timeout of `CLIENT_TIMEOUT`, so that a test against a
    /// cluster without quorum gets an error instead of hanging. etcd-client does not
    /// fail over: with a member down, some requests go to it and fail at once
    /// (`Unavailable`, "tcp connect error"); sent again they may reach a live one.
    pub async fn client(&self) -> Client {
        Self::connect(&self.endpoints()).await
    }

    /// A client of member `i` alone, same timeouts as `client()`: for tests that need to
    /// know which member served a request (a write through one, a read through another).
    pub async fn member_client(&self, i: usize) -> Client {
        Self::connect(&[self.members[i].client_url()]).await
    }

    /// A client of `endpoints` with `CLIENT_TIMEOUT` for connecting and for each request.
    async fn connect(endpoints: &[String]) -> Client {
        let options = ConnectOptions::new()
            .with_connect_timeout(CLIENT_TIMEOUT)
            .with_timeout(CLIENT_TIMEOUT);
        // Connections open lazily: this does not fail for endpoints that are down.
        Client::connect(endpoints, Some(options))
            .await
            .expect("etcd client")
    }

    /// Polls member `i` with a linearizable read until it answers, or it exits, or
    /// `deadline` passes.
    async fn wait_until_answers(&mut self, i: usize, deadline: Instant) -> Result<(), NotUp> {
        let endpoint = self.members[i].client_url();
        loop {
            if let Some(status) = self.members[i].exited() {
                let what = format!("exited ({status})");
                return Err(NotUp::Exited(i, what));
            }
            let probe = async {
                let options = ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(1))
                    .with_timeout(Duration::from_secs(2));
                let mut c = Client::connect([&endpoint], Some(options)).await?;
                c.get("syncline-test-ready", None).await
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(3), probe).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                let what = format!("did not answer within {} s", START_TIMEOUT.as_secs());
                return Err(NotUp::Late(i, what));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for EtcdCluster {
    /// Kills and reaps every member, so no etcd outlives its test, panicking or not (the
    /// temp dirs are removed after, once nothing writes to them).
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
    }
}
