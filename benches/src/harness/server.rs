//! The server under test: a fresh `syncline serve` (release build, temp data dir,
//! 127.0.0.1, killed at the end), or an external one given by `--server`/`--config`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use syncline_client::AdminConfig;

use super::measure;

pub struct ServerUnderTest {
    pub admin: AdminConfig,
    process: measure::MeasuredProcess,
    _data: Option<tempfile::TempDir>,
}

/// The `syncline` binary next to this one (`target/<profile>/`), built if missing.
fn syncline_bin() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // Test and bench executables live one level down, in `deps/`.
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("syncline");
    let release = dir.ends_with("release");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "-q", "-p", "syncline-server", "--bin", "syncline"]);
    if release {
        cmd.arg("--release");
    }
    // Asking cargo is cheap when the binary is current and rebuilds it when it is not.
    let status = cmd.status().map_err(|e| format!("running cargo: {e}"))?;
    if !status.success() || !bin.exists() {
        return Err(format!("could not build {}", bin.display()));
    }
    Ok(bin)
}

impl ServerUnderTest {
    /// Starts a fresh server on 127.0.0.1 in a temp dir. `relaxed` acknowledges writes
    /// before they are flushed.
    pub fn spawn(relaxed: bool) -> Result<Self, String> {
        let data = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(syncline_bin()?);
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(data.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        if relaxed {
            cmd.arg("--relaxed");
        }
        let child = cmd.spawn().map_err(|e| format!("starting syncline: {e}"))?;
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

    pub fn cpu_seconds(&self) -> f64 {
        self.process.cpu_seconds()
    }

    /// (current, peak) RSS in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        self.process.rss_kib()
    }
}
