//! Helpers for the end-to-end tests: a real server on 127.0.0.1:0 in a temp dir (in
//! process, or the real `syncline` binary as a child process), clients for the backend
//! and for identities, and a raw connection for sending bytes the client never would.

pub mod etcd;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use syncline_client::{AdminConfig, Client, ClientConfig, Subscription, SyncEvent};
use syncline_proto::frame::{self, FrameDecoder};
use syncline_proto::{Credential, Request, RequestFrame, ResponseFrame};
use syncline_server::{EtcdOptions, Server, ServerOptions, StoreChoice};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Upper bound for anything a test waits for; generous because CI machines are shared.
pub const WAIT: Duration = Duration::from_secs(20);

/// A server running in this process.
pub struct TestServer {
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
    pub admin: AdminConfig,
    pub options: ServerOptions,
}

impl TestServer {
    pub fn options(dir: &Path) -> ServerOptions {
        let mut o = ServerOptions::new(dir);
        o.listen = "127.0.0.1:0".parse().expect("loopback address");
        o.http_listen = Some("127.0.0.1:0".parse().expect("loopback address"));
        o.reap_interval = Duration::from_millis(50);
        o
    }

    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts with options adjusted by `tweak` (limits, log retention, ...). In etcd mode
    /// (`SYNCLINE_TEST_STORE=etcd`) a server left on sled runs as a node over the
    /// process's shared etcd instead, under a prefix of its own.
    pub async fn start_with(tweak: impl FnOnce(&mut ServerOptions)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut options = Self::options(dir.path());
        tweak(&mut options);
        if etcd_mode() && matches!(options.store, StoreChoice::Sled) {
            let mut etcd = EtcdOptions::new(vec![shared_etcd()]);
            etcd.prefix = etcd_prefix_for(dir.path());
            options.store = StoreChoice::Etcd(Box::new(etcd));
        }
        let server = Server::start(options.clone()).await.expect("server starts");
        let admin = server.admin().clone();
        TestServer {
            server: Some(server),
            dir,
            admin,
            options,
        }
    }

    /// A node of the installation kept under `prefix` in the etcd at `endpoints`: nodes
    /// started with the same two are one installation (cluster tests).
    pub async fn start_node(endpoints: &[String], prefix: &str) -> TestServer {
        Self::start_node_with(endpoints, prefix, |_| {}).await
    }

    /// `start_node`, with its etcd options changed by `tweak`.
    pub async fn start_node_with(
        endpoints: &[String],
        prefix: &str,
        tweak: impl FnOnce(&mut EtcdOptions),
    ) -> TestServer {
        Self::start_with(|o| {
            let mut etcd = EtcdOptions::new(endpoints.to_vec());
            etcd.prefix = prefix.into();
            // Quorum loss is refused within this (10 s by default), kept short here.
            etcd.request_timeout = Duration::from_secs(3);
            tweak(&mut etcd);
            o.store = StoreChoice::Etcd(Box::new(etcd));
        })
        .await
    }

    /// Graceful shutdown, then a fresh start on the same data directory and the same
    /// QUIC port (so clients can reconnect to the address they know).
    pub async fn restart(&mut self) {
        self.shutdown().await;
        self.start_again().await;
    }

    /// Starts the server again after `shutdown`, on the same data directory and port.
    pub async fn start_again(&mut self) {
        let server = Server::start(self.options.clone())
            .await
            .expect("server restarts");
        self.admin = server.admin().clone();
        self.server = Some(server);
    }

    /// Graceful shutdown; the port is kept for `start_again`.
    pub async fn shutdown(&mut self) {
        if let Some(s) = self.server.take() {
            self.options.listen = s.local_addr();
            s.shutdown().await;
        }
    }

    pub async fn backend(&self) -> Client {
        backend(&self.admin).await
    }

    /// The backend acting in `service` (a sid or unique name).
    pub async fn backend_in(&self, service: &str) -> Client {
        let config = ClientConfig::from_admin(&self.admin)
            .expect("admin config")
            .service(service);
        Client::connect(config).await.expect("backend connects")
    }

    pub fn token(&self, identity: &str, ttl_s: u64) -> String {
        token(&self.admin, identity, ttl_s)
    }

    /// A token for `identity` that the server accepts for `secs` more seconds: its `exp`
    /// is `secs` - 60 from now, the server allowing 60 s of clock skew past `exp`
    /// before it refuses the token and closes connections authenticated by it.
    pub fn token_closing_in(&self, identity: &str, secs: u64) -> String {
        let exp = syncline_client::token::now_s() + secs - syncline_proto::token::CLOCK_SKEW_S;
        syncline_client::token::mint(
            &self.admin.api_key_sid,
            &self.admin.api_key_secret,
            &self.admin.account_sid,
            &self.admin.default_service_sid,
            identity,
            1,
            exp - 1,
        )
    }

    pub async fn client_as(&self, identity: &str) -> Client {
        Client::connect(self.token_config(&self.token(identity, 3600)))
            .await
            .expect("identity connects")
    }

    pub fn token_config(&self, token: &str) -> ClientConfig {
        ClientConfig::with_token(&self.admin.server, &self.admin.ca_file, token).expect("config")
    }
}

pub async fn backend(admin: &AdminConfig) -> Client {
    Client::connect(ClientConfig::from_admin(admin).expect("admin config"))
        .await
        .expect("backend connects")
}

pub fn token(admin: &AdminConfig, identity: &str, ttl_s: u64) -> String {
    syncline_client::token::mint(
        &admin.api_key_sid,
        &admin.api_key_secret,
        &admin.account_sid,
        &admin.default_service_sid,
        identity,
        ttl_s,
        syncline_client::token::now_s(),
    )
}

/// The keys of a subscribed map's replica (who is in a room).
pub fn roster(sub: &Subscription) -> std::collections::BTreeSet<String> {
    sub.collection()
        .map(|c| {
            c.items
                .keys()
                .filter_map(|k| match k {
                    syncline_client::ItemKey::Key(k) => Some(k.clone()),
                    syncline_client::ItemKey::Index(_) => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The next event of a subscription, failing the test if none comes in time.
pub async fn next_event(sub: &mut Subscription) -> SyncEvent {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("an event in time")
        .expect("subscription open")
        .expect("event ok")
}

/// Asserts that no event arrives within `quiet`.
pub async fn assert_no_event(sub: &mut Subscription, quiet: Duration) {
    if let Ok(e) = tokio::time::timeout(quiet, sub.next()).await {
        panic!("unexpected event {e:?}");
    }
}

/// A connection that speaks raw frames, to send what a well-behaved client never would.
pub struct RawConnection {
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    decoder: FrameDecoder,
    events: Option<quinn::RecvStream>,
    event_decoder: FrameDecoder,
    _endpoint: quinn::Endpoint,
}

impl RawConnection {
    pub async fn open(admin: &AdminConfig) -> RawConnection {
        let config = ClientConfig::from_admin(admin).expect("config");
        let mut endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
        endpoint.set_default_client_config(config.quinn_config().expect("quinn config"));
        let conn = endpoint
            .connect(config.server, &config.server_name)
            .expect("connect")
            .await
            .expect("handshake");
        let (send, recv) = conn.open_bi().await.expect("stream");
        RawConnection {
            conn,
            send,
            recv,
            decoder: FrameDecoder::new(1 << 20),
            events: None,
            event_decoder: FrameDecoder::new(1 << 24),
            _endpoint: endpoint,
        }
    }

    /// Opens and authenticates as the backend.
    pub async fn backend(admin: &AdminConfig) -> RawConnection {
        Self::authenticated(
            admin,
            Credential::ApiKey {
                sid: admin.api_key_sid.clone(),
                secret: admin.api_key_secret.clone(),
            },
        )
        .await
    }

    /// Opens and authenticates with `credential`.
    pub async fn authenticated(admin: &AdminConfig, credential: Credential) -> RawConnection {
        let mut raw = Self::open(admin).await;
        let hello = Request::Hello {
            credential,
            service: None,
        };
        let r = raw.call(1, hello).await;
        assert!(r.result.is_ok(), "hello: {r:?}");
        raw
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.send.write_all(bytes).await.expect("write");
    }

    pub async fn send(&mut self, id: u64, request: Request) {
        let f: Bytes = frame::encode(&RequestFrame { id, request });
        self.send_bytes(&f).await;
    }

    pub async fn call(&mut self, id: u64, request: Request) -> ResponseFrame {
        self.send(id, request).await;
        self.response().await
    }

    /// Reads the next `n` event frames from the server's event stream.
    pub async fn events(&mut self, n: usize) -> Vec<(u64, syncline_proto::Event)> {
        tokio::time::timeout(WAIT, async {
            if self.events.is_none() {
                self.events = Some(self.conn.accept_uni().await.expect("event stream"));
            }
            let Some(stream) = self.events.as_mut() else {
                unreachable!()
            };
            let mut out = Vec::new();
            while out.len() < n {
                if let Some(body) = self.event_decoder.next_frame().expect("frame") {
                    let (h, e) =
                        syncline_proto::EventFrameHeader::decode(&body, 1 << 24).expect("event");
                    out.push((h.sub_id, e));
                    continue;
                }
                let chunk = stream
                    .read_chunk(64 * 1024, true)
                    .await
                    .expect("read")
                    .expect("stream open");
                self.event_decoder.extend(&chunk.bytes);
            }
            out
        })
        .await
        .expect("events in time")
    }

    pub async fn response(&mut self) -> ResponseFrame {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(body) = self.decoder.next_frame().expect("frame") {
                    return frame::decode(&body, 1 << 20).expect("response decodes");
                }
                let chunk = self
                    .recv
                    .read_chunk(64 * 1024, true)
                    .await
                    .expect("read")
                    .expect("stream open");
                self.decoder.extend(&chunk.bytes);
            }
        })
        .await
        .expect("a response in time")
    }
}

/// Path of the real `syncline` binary, built once if this test run has not built it.
pub fn syncline_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/deps/<test-exe> -> target/<profile>/syncline
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target profile dir")
            .to_owned();
        let bin = profile_dir.join("syncline");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "syncline-cli", "--bin", "syncline"]);
        if let Some(target_dir) = profile_dir.parent() {
            cmd.arg("--target-dir").arg(target_dir);
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        // cargo runs tests with the test package's CARGO_PKG_*, OUT_DIR and the like set.
        // Build scripts (ring's) rerun when those change, so passing them on would
        // rebuild ring and everything above it here, and again in the next `cargo test`.
        for (key, _) in std::env::vars_os() {
            let Some(k) = key.to_str() else { continue };
            let set_for_this_package = k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_BIN_EXE_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                    "OUT_DIR",
                ]
                .contains(&k);
            if set_for_this_package {
                cmd.env_remove(k);
            }
        }
        // Always ask cargo: it is a no-op when the binary is current, and rebuilds it
        // when the sources changed since.
        let status = cmd.status().expect("cargo build runs");
        assert!(status.success(), "building the syncline binary failed");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
    .clone()
}

/// The real binary serving a data directory, killed on drop.
pub struct ServerProcess {
    pub child: Child,
    pub admin: AdminConfig,
    pub data: PathBuf,
    /// `serve` flags beyond the tests' defaults, kept for restarts.
    pub extra_args: Vec<String>,
}

impl ServerProcess {
    /// Starts `syncline serve` on 127.0.0.1:0 and waits until it listens.
    pub fn start(data: &Path) -> ServerProcess {
        Self::start_on(data, "127.0.0.1:0")
    }

    /// Starts `syncline serve` on `listen` (QUIC) and waits until it listens.
    pub fn start_on(data: &Path, listen: &str) -> ServerProcess {
        Self::start_with_log(data, listen, Stdio::null())
    }

    /// As [`ServerProcess::start`], the server's log (warnings and errors) going to
    /// `stderr` (a file, to read what the server said).
    pub fn start_logging(data: &Path, stderr: impl Into<Stdio>) -> ServerProcess {
        Self::start_logging_with(data, &[], stderr)
    }

    /// As [`ServerProcess::start_logging`], with more `serve` flags (`--keep-free-mib 4`).
    pub fn start_logging_with(
        data: &Path,
        extra_args: &[&str],
        stderr: impl Into<Stdio>,
    ) -> ServerProcess {
        let extra_args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        let (child, admin) = Self::spawn(data, "127.0.0.1:0", &extra_args, stderr);
        ServerProcess {
            child,
            admin,
            data: data.to_owned(),
            extra_args,
        }
    }

    fn start_with_log(data: &Path, listen: &str, stderr: impl Into<Stdio>) -> ServerProcess {
        let (child, admin) = Self::spawn(data, listen, &[], stderr);
        ServerProcess {
            child,
            admin,
            data: data.to_owned(),
            extra_args: Vec::new(),
        }
    }

    fn spawn(
        data: &Path,
        listen: &str,
        extra_args: &[String],
        stderr: impl Into<Stdio>,
    ) -> (Child, AdminConfig) {
        let admin_path = data.join("admin.json");
        let _ = std::fs::remove_file(&admin_path);
        let mut command = Command::new(syncline_bin());
        command
            .args([
                "serve",
                "--listen",
                listen,
                "--http-listen",
                "127.0.0.1:0",
                "--reap-interval-ms",
                "50",
                "--data",
            ])
            .arg(data)
            .args(extra_args);
        if etcd_mode() && !extra_args.iter().any(|a| a == "--store") {
            command
                .args(["--store", "etcd", "--etcd-endpoints", &shared_etcd()])
                .args(["--etcd-prefix", &etcd_prefix_for(data)]);
        }
        let child = command
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn syncline serve");
        // admin.json is rewritten on every start with the bound address, after binding.
        let deadline = std::time::Instant::now() + WAIT;
        let admin = loop {
            if let Ok(a) = AdminConfig::load(&admin_path) {
                break a;
            }
            assert!(std::time::Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        (child, admin)
    }

    /// SIGTERM (graceful shutdown: clients are told the server is going away), then a
    /// fresh start on the same data directory and QUIC address.
    pub fn restart(&mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {pid}");
        let _ = self.child.wait();
        self.start_again();
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A fresh start on the same data directory and QUIC address, after `kill`.
    pub fn start_again(&mut self) {
        let (child, admin) = Self::spawn(
            &self.data,
            &self.admin.server,
            &self.extra_args,
            Stdio::null(),
        );
        self.child = child;
        self.admin = admin;
    }

    /// A `syncline` client command against this server, as the backend.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(syncline_bin());
        c.env("SYNCLINE_CONFIG", self.data.join("admin.json"))
            .env_remove("SYNCLINE_TOKEN")
            .env_remove("SYNCLINE_SERVICE")
            .env_remove("SYNCLINE_SERVER")
            .env_remove("SYNCLINE_CA");
        c
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A child process (a long-running CLI command) that is killed and reaped when dropped,
/// so that a test that fails half-way does not leave it running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every live item of a list or map, read from the server page by page (small pages, so
/// that paging itself is exercised).
pub async fn server_items(
    c: &Client,
    kind: syncline_client::ObjectKind,
    name: &str,
) -> std::collections::BTreeMap<syncline_client::ItemKey, serde_json::Value> {
    let mut out = std::collections::BTreeMap::new();
    let mut from = None;
    loop {
        let options = syncline_client::PageOptions {
            from,
            order: syncline_client::Order::Asc,
            limit: 7,
        };
        let page = if kind == syncline_client::ObjectKind::List {
            c.list(name).items(options).await
        } else {
            c.map(name).items(options).await
        };
        let page = page.expect("a page of items");
        out.extend(page.items.into_iter().map(|i| (i.key, i.data)));
        match page.next {
            Some(n) => from = Some(n),
            None => return out,
        }
    }
}

/// Makes sure `python3` can import Twilio's helper library and PyJWT (the interop and
/// REST tests drive Syncline with them), installing them with pip if needed.
pub fn ensure_python_libraries() {
    ensure_python_packages("import twilio, jwt", &["twilio", "PyJWT"]);
}

/// Makes sure `python3` can run schemathesis (the REST fuzz test), installing it with
/// pip if needed.
pub fn ensure_schemathesis() {
    ensure_python_packages("import schemathesis.cli, requests", &["schemathesis"]);
}

/// Makes sure `python3 -c check` succeeds, installing `packages` with pip if it does not.
fn ensure_python_packages(check: &str, packages: &[&str]) {
    let ready = || {
        Command::new("python3")
            .args(["-c", check])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready() {
        return;
    }
    let _ = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(packages)
        .status();
    assert!(
        ready(),
        "this test needs python3 with {}: python3 -m pip install {}",
        packages.join(", "),
        packages.join(" ")
    );
}

impl TestServer {
    /// Runs a Python script against this server, with its HTTPS URL, CA file, account,
    /// default service and admin key in the environment (`HTTP_URL`, `CA_FILE`,
    /// `ACCOUNT_SID`, `SERVICE_SID`, `KEY_SID`, `KEY_SECRET`) and `extra` besides.
    /// Returns what it printed; a failing script fails the test with both outputs.
    pub fn run_python(&self, script: &str, extra: &[(&str, String)]) -> String {
        let http_url = self
            .admin
            .http_url
            .clone()
            .expect("the test server serves HTTPS");
        let mut cmd = Command::new("python3");
        cmd.args(["-c", script])
            .env("HTTP_URL", http_url)
            .env("CA_FILE", &self.admin.ca_file)
            .env("ACCOUNT_SID", &self.admin.account_sid)
            .env("SERVICE_SID", &self.admin.default_service_sid)
            .env("KEY_SID", &self.admin.api_key_sid)
            .env("KEY_SECRET", &self.admin.api_key_secret)
            .env("PYTHONWARNINGS", "ignore");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("python3 runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "the script failed after:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

/// A TLS connection to the server's HTTPS listener, trusting its CA.
pub async fn https_connect(admin: &AdminConfig) -> TlsStream<TcpStream> {
    let url = admin
        .http_url
        .clone()
        .expect("the test server listens on HTTPS");
    let addr = url.trim_start_matches("https://").to_owned();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&admin.ca_file).expect("CA file") {
        roots.add(cert.expect("CA certificate")).expect("CA added");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(&addr).await.expect("TCP connect");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake")
}

/// The `Authorization` header's value for the installation's admin API key.
pub fn basic_auth(admin: &AdminConfig) -> String {
    use base64::Engine;
    let pair = format!("{}:{}", admin.api_key_sid, admin.api_key_secret);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// One HTTP/1.1 request on a fresh connection (`authorization`: the header's value);
/// the status code and the whole answer.
pub async fn https_request(
    admin: &AdminConfig,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = https_connect(admin).await;
    let authorization = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{authorization}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.expect("request sent");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    (status, answer)
}

/// A WebSocket client of `/v1/ws` speaking the protocol's JSON, as a browser would:
/// requests numbered from 1, answers matched by id, events kept until asked for.
pub struct WsClient {
    pub socket: tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>,
    next_id: u64,
    events: std::collections::VecDeque<syncline_proto::ws::EventFrame>,
    /// Answers with id 0 (notices) received while waiting for something else.
    pub notices: Vec<syncline_proto::WireError>,
}

/// What a WebSocket read gave: a message of the protocol, or the close frame's code and
/// reason (`None` when the connection ended without one).
#[derive(Debug)]
pub enum WsRead {
    Message(syncline_proto::ws::ServerMessage),
    Closed(Option<(u16, String)>),
}

impl WsClient {
    /// Opens the WebSocket, offering `protocol` (`None`: none); the handshake's error if
    /// the server refuses the upgrade.
    pub async fn open(
        admin: &AdminConfig,
        protocol: Option<&str>,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>,
        tokio_tungstenite::tungstenite::Error,
    > {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = admin
            .http_url
            .clone()
            .expect("the test server listens on HTTPS")
            .replacen("https://", "wss://", 1);
        let mut request = format!("{url}{}", syncline_proto::ws::PATH)
            .into_client_request()
            .expect("a WebSocket request");
        if let Some(p) = protocol {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", p.parse().expect("a header value"));
        }
        let tls = https_connect(admin).await;
        tokio_tungstenite::client_async(request, tls)
            .await
            .map(|(socket, _)| socket)
    }

    /// Connects with the `syncline.v1` subprotocol, not yet authenticated.
    pub async fn connect(admin: &AdminConfig) -> WsClient {
        let socket = Self::open(admin, Some(syncline_proto::ws::SUBPROTOCOL))
            .await
            .expect("WebSocket upgrade");
        WsClient {
            socket,
            next_id: 1,
            events: Default::default(),
            notices: Vec::new(),
        }
    }

    /// Connects and says `Hello` with `credential`, expecting a `Welcome`.
    pub async fn hello(
        admin: &AdminConfig,
        credential: Credential,
    ) -> (WsClient, syncline_proto::Welcome) {
        let mut ws = Self::connect(admin).await;
        match ws
            .request(Request::Hello {
                credential,
                service: None,
            })
            .await
        {
            Ok(syncline_proto::Response::Welcome(w)) => (ws, w),
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    pub async fn send_text(&mut self, text: String) {
        use futures_util::SinkExt;
        self.socket
            .send(tokio_tungstenite::tungstenite::Message::Text(text.into()))
            .await
            .expect("message sent");
    }

    /// Sends `request` under the next id; returns the id.
    pub async fn send(&mut self, request: Request) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let text = serde_json::to_string(&RequestFrame { id, request }).expect("encodes");
        self.send_text(text).await;
        id
    }

    /// The next protocol message or the close, within `WAIT`; pings are answered by
    /// reading.
    pub async fn read(&mut self) -> WsRead {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let next = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a WebSocket message in time");
            match next {
                Some(Ok(Message::Text(text))) => {
                    let message = serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("not a server message ({e}): {text}"));
                    return WsRead::Message(message);
                }
                Some(Ok(Message::Close(frame))) => {
                    return WsRead::Closed(
                        frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())),
                    )
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    eprintln!("WebSocket read failed: {e}");
                    return WsRead::Closed(None);
                }
                None => return WsRead::Closed(None),
            }
        }
    }

    /// The answer to request `id`, keeping events and notices that come first.
    pub async fn answer(
        &mut self,
        id: u64,
    ) -> Result<syncline_proto::Response, syncline_proto::WireError> {
        use syncline_proto::ws::ServerMessage;
        loop {
            match self.read().await {
                WsRead::Message(ServerMessage::Response(r)) if r.id == id => return r.result,
                WsRead::Message(ServerMessage::Response(r)) if r.id == 0 => {
                    if let Err(e) = r.result {
                        self.notices.push(e);
                    }
                }
                WsRead::Message(ServerMessage::Response(r)) => {
                    panic!("an answer to {}, not {id}", r.id)
                }
                WsRead::Message(ServerMessage::Event(e)) => self.events.push_back(e),
                WsRead::Closed(c) => panic!("closed ({c:?}) before the answer to {id}"),
            }
        }
    }

    pub async fn request(
        &mut self,
        request: Request,
    ) -> Result<syncline_proto::Response, syncline_proto::WireError> {
        let id = self.send(request).await;
        self.answer(id).await
    }

    /// The next event, within `WAIT`.
    pub async fn event(&mut self) -> syncline_proto::ws::EventFrame {
        use syncline_proto::ws::ServerMessage;
        if let Some(e) = self.events.pop_front() {
            return e;
        }
        match self.read().await {
            WsRead::Message(ServerMessage::Event(e)) => e,
            WsRead::Message(ServerMessage::Response(r)) => {
                panic!("an answer ({r:?}) while waiting for an event")
            }
            WsRead::Closed(c) => panic!("closed ({c:?}) while waiting for an event"),
        }
    }

    /// Reads until the server closes; its close code and reason. Notices on the way
    /// are kept in `notices`.
    pub async fn closed(&mut self) -> Option<(u16, String)> {
        use syncline_proto::ws::ServerMessage;
        loop {
            match self.read().await {
                WsRead::Closed(c) => return c,
                WsRead::Message(ServerMessage::Response(r)) => {
                    if let Err(e) = r.result {
                        self.notices.push(e);
                    }
                }
                WsRead::Message(ServerMessage::Event(e)) => self.events.push_back(e),
            }
        }
    }
}

/// Runs `npm args` in `dir` (a JavaScript folder of the repository: `clients/js`,
/// `examples/chat`) with `SYNCLINE_BIN` naming the server this build made, plus `env`.
/// Installs the folder's dependencies from its lock file first if they are missing.
pub fn npm(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> std::process::Output {
    let run = |args: &[&str]| {
        let mut cmd = Command::new("npm");
        cmd.args(args)
            .current_dir(dir)
            .env("SYNCLINE_BIN", syncline_bin());
        for (key, value) in env {
            cmd.env(key, value);
        }
        cmd.output().unwrap_or_else(|e| {
            panic!("npm {args:?} did not start ({e}): install Node.js 20 or later with npm")
        })
    };
    if !dir.join("node_modules").is_dir() {
        let installed = run(&["ci", "--no-audit", "--no-fund"]);
        assert!(
            installed.status.success(),
            "npm ci in {} failed:\n{}",
            dir.display(),
            String::from_utf8_lossy(&installed.stderr)
        );
    }
    run(args)
}

/// Whether this run's servers are nodes over etcd (`SYNCLINE_TEST_STORE=etcd`): the
/// end-to-end suite then runs in cluster mode, each server a node of its own
/// installation in one etcd that the test process starts.
pub fn etcd_mode() -> bool {
    std::env::var("SYNCLINE_TEST_STORE").is_ok_and(|v| v == "etcd")
}

/// The installation prefix of the server whose data directory is `data`: the same on
/// every restart, different for every server.
pub fn etcd_prefix_for(data: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut h);
    format!("/test-{:016x}", h.finish())
}

/// The client URL of the one etcd this test process shares between its servers in etcd
/// mode, started on first use. It runs under `sh`, which holds a pipe from this
/// process: when the process ends, however it ends, the pipe closes and `sh` kills
/// etcd, so no etcd outlives the tests.
pub fn shared_etcd() -> String {
    /// The URL, and what keeps etcd alive until the process ends: `sh` and the pipe it
    /// reads (never waited for: the process ending is what ends them).
    type Shared = (String, std::sync::Mutex<(Child, std::process::ChildStdin)>);
    static ETCD: OnceLock<Shared> = OnceLock::new();
    let (url, _) = ETCD.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir for etcd");
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        };
        let (client, peer) = (free(), free());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into());
        let script = format!(
            "{bin} --name t --data-dir '{data}' --listen-client-urls {url} --advertise-client-urls {url} \
             --listen-peer-urls {peer_url} --initial-advertise-peer-urls {peer_url} \
             --initial-cluster t={peer_url} --max-txn-ops 1024 --logger zap --log-level error \
             >'{log}' 2>&1 & pid=$!; read _; kill -9 $pid; wait $pid; rm -rf '{dir}'",
            data = dir.path().join("data").display(),
            log = dir.path().join("etcd.log").display(),
            dir = dir.path().display(),
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            // Quiet about the etcd it kills at the end.
            .stderr(Stdio::null())
            .spawn()
            .expect("sh starts etcd");
        let stdin = child.stdin.take().expect("piped stdin");
        let deadline = std::time::Instant::now() + WAIT;
        while !etcd_is_healthy(client) {
            assert!(
                std::time::Instant::now() < deadline,
                "etcd did not start (is etcd-server installed?); see {}",
                dir.path().join("etcd.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The directory is `sh`'s to remove once etcd is gone.
        let _ = dir.keep();
        (url, std::sync::Mutex::new((child, stdin)))
    });
    url.clone()
}

fn etcd_is_healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}
