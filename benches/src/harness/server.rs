//! The server under test: a fresh `syncline serve` (release build, temp data dir,
//! 127.0.0.1, killed at the end), or an external one given by `--server`/`--config`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use syncline_client::AdminConfig;

use super::measure;

/// The self-signed certificate and key a server makes in its data directory.
const CERT_FILE: &str = "tls/cert.pem";
const KEY_FILE: &str = "tls/key.pem";

pub struct ServerUnderTest {
    pub admin: AdminConfig,
    process: measure::MeasuredProcess,
    _data: Option<tempfile::TempDir>,
}

/// The `syncline` binary next to this one (`target/<profile>/syncline`), or the one
/// `SYNCLINE_SERVER_BIN` names: an A/B of two server builds runs the same harness
/// against each. It is not built here: running cargo from inside a measurement tool
/// rebuilds at surprising moments and competes with the run for the CPU, so a missing
/// binary is an error that says which command builds it.
pub fn syncline_bin() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("SYNCLINE_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!(
                "SYNCLINE_SERVER_BIN names {}, which is not a file",
                bin.display()
            ))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // Test and bench executables live one level down, in `deps/`.
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("syncline");
    if bin.is_file() {
        return Ok(bin);
    }
    let release = if dir.ends_with("release") {
        " --release"
    } else {
        ""
    };
    Err(format!(
        "the server binary {} is missing; build it first with \
         `cargo build{release} -p syncline-cli` (same CARGO_TARGET_DIR as this tool)",
        bin.display()
    ))
}

/// The per-connection request rate the harness gives a server for W1: writers that
/// share a connection (`write --connections`) send far more than the default 500
/// requests/s on it, and the limit, not the server, would be measured.
pub const WRITE_RATE_LIMIT: u32 = 1_000_000;

/// `syncline serve` on 127.0.0.1:0 over `data`, its stderr going to `stderr`;
/// `rate_limit` replaces the default per-connection request rate.
fn serve_command(
    data: &Path,
    relaxed: bool,
    rate_limit: Option<u32>,
    stderr: Stdio,
) -> Result<Command, String> {
    let mut cmd = Command::new(syncline_bin()?);
    // Port 0 for HTTPS too: harness runs (and tests) must not collide on 7401.
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--data",
    ])
    .arg(data)
    .env("RUST_LOG", "warn")
    .stdout(Stdio::null())
    .stderr(stderr);
    if relaxed {
        cmd.arg("--relaxed");
    }
    if let Some(rate) = rate_limit {
        cmd.args(["--rate-limit", &rate.to_string()]);
    }
    Ok(cmd)
}

impl ServerUnderTest {
    /// Starts a fresh server on 127.0.0.1 in a temp dir. `relaxed` acknowledges writes
    /// before they are flushed.
    pub fn spawn(relaxed: bool) -> Result<Self, String> {
        Self::spawn_with(relaxed, None)
    }

    /// [`spawn`](Self::spawn), with `rate_limit` requests/s per connection instead of
    /// the server's default.
    pub fn spawn_with(relaxed: bool, rate_limit: Option<u32>) -> Result<Self, String> {
        Self::spawn_args(relaxed, rate_limit, &[])
    }

    /// [`spawn_with`](Self::spawn_with), with more `serve` flags.
    fn spawn_args(
        relaxed: bool,
        rate_limit: Option<u32>,
        extra: &[String],
    ) -> Result<Self, String> {
        let data = tempfile::tempdir().map_err(|e| e.to_string())?;
        let child = serve_command(data.path(), relaxed, rate_limit, Stdio::inherit())?
            .args(extra)
            .spawn()
            .map_err(|e| format!("starting syncline: {e}"))?;
        let admin_path = data.path().join("admin.json");
        let deadline = Instant::now() + Duration::from_secs(30);
        let admin = loop {
            if let Ok(a) = AdminConfig::load(&admin_path) {
                break a;
            }
            if Instant::now() > deadline {
                return Err("the server did not start within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok(ServerUnderTest {
            admin,
            process: measure::MeasuredProcess(Some(child)),
            _data: Some(data),
        })
    }

    /// Starts `nodes` fresh servers over the etcd at `endpoint`, under one new prefix:
    /// one installation. The first makes its self-signed certificate and the others
    /// serve the same one, so one CA file reaches every node.
    /// `extra`: more `serve` flags for every node.
    pub fn spawn_cluster(
        nodes: usize,
        endpoint: &str,
        max_txn_ops: usize,
        relaxed: bool,
        rate_limit: Option<u32>,
        extra: &[String],
    ) -> Result<Vec<Self>, String> {
        let prefix = format!("/bench-{:016x}", rand::random::<u64>());
        let mut args: Vec<String> = [
            "--store",
            "etcd",
            "--etcd-endpoints",
            endpoint,
            "--etcd-prefix",
            &prefix,
            "--etcd-max-txn-ops",
            &max_txn_ops.to_string(),
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend_from_slice(extra);
        let mut all: Vec<Self> = Vec::with_capacity(nodes);
        for _ in 0..nodes.max(1) {
            let node = Self::spawn_args(relaxed, rate_limit, &args)?;
            if all.is_empty() {
                let dir = node._data.as_ref().ok_or("no data dir")?.path().to_owned();
                args.extend([
                    "--cert".to_owned(),
                    dir.join(CERT_FILE).display().to_string(),
                    "--key".to_owned(),
                    dir.join(KEY_FILE).display().to_string(),
                ]);
            }
            all.push(node);
        }
        Ok(all)
    }

    /// Starts a server over an existing data directory (the crash loop restarts one on
    /// the same directory), its stderr appended to `log`, with `extra` `serve` flags
    /// (the crash loop's cluster mode: `--store etcd`, its endpoints and prefix, a
    /// shared certificate). Returns once `admin.json` names the new address, or fails
    /// at `deadline`, or as soon as the process exits.
    pub async fn start_in_with(
        data: &Path,
        relaxed: bool,
        log: &Path,
        deadline: Instant,
        extra: &[String],
    ) -> Result<Self, String> {
        let admin_path = data.join("admin.json");
        // The server rewrites admin.json with its new port after binding; the old one
        // would send clients to the dead server's port.
        match std::fs::remove_file(&admin_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("removing {}: {e}", admin_path.display())),
        }
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("opening {}: {e}", log.display()))?;
        let child = serve_command(data, relaxed, None, Stdio::from(stderr))?
            .args(extra)
            .spawn()
            .map_err(|e| format!("starting syncline: {e}"))?;
        let mut process = measure::MeasuredProcess(Some(child));
        loop {
            if let Ok(admin) = AdminConfig::load(&admin_path) {
                return Ok(ServerUnderTest {
                    admin,
                    process,
                    _data: None,
                });
            }
            if let Some(status) = process.try_wait()? {
                return Err(format!(
                    "the server exited ({status}) before it listened; its log: {}",
                    log.display()
                ));
            }
            if Instant::now() > deadline {
                return Err("the server wrote no admin.json before the deadline".into());
            }
            // Short polls: the time to come back is what the crash loop measures.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// `--cert` and `--key` naming the certificate a server made in its data directory
    /// `data`: given to the other nodes of a cluster, so that one CA file reaches all.
    pub fn cert_args(data: &Path) -> Vec<String> {
        vec![
            "--cert".to_owned(),
            data.join(CERT_FILE).display().to_string(),
            "--key".to_owned(),
            data.join(KEY_FILE).display().to_string(),
        ]
    }

    /// SIGKILL, then waits (up to `deadline`) until the process is gone, so that its
    /// files and port are released before a restart.
    pub async fn kill(&mut self, deadline: Instant) -> Result<(), String> {
        self.process.sigkill()?;
        loop {
            if self.process.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("the killed server had not exited by the deadline".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// An external server, reached with its admin config (its CPU and memory are not
    /// measured unless it runs on this machine and `pid` is given).
    pub fn external(config: &Path, server: Option<&str>) -> Result<Self, String> {
        let mut admin = AdminConfig::load(config).map_err(|e| e.to_string())?;
        if let Some(s) = server {
            admin.server = s.to_owned();
        }
        Ok(ServerUnderTest {
            admin,
            process: measure::MeasuredProcess(None),
            _data: None,
        })
    }

    /// The server process (none for an external server).
    pub fn process(&self) -> &measure::MeasuredProcess {
        &self.process
    }

    pub fn cpu_seconds(&self) -> f64 {
        self.process.cpu_seconds()
    }

    /// (current, peak) RSS in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        self.process.rss_kib()
    }
}
