//! The bare transport as a [`Peer`], behind `--peer quinn` (W2 and W3 only): the
//! `syncline-bench-quinn` process (`src/quinn_peer.rs`), a fan-out server with
//! Syncline's QUIC endpoint (`syncline_server::net::bind`: same TLS, transport settings
//! and UDP buffers), Syncline's framing and nothing else: no storage, no sessions, no
//! revisions. What Syncline adds on top of the transport is the difference between its
//! rows and these (`"system": "quinn"`).
//!
//! The clients are Syncline's too (`Client::endpoint_for`: the same TLS and transport
//! settings, the same 32 shared UDP endpoints as the Syncline workloads). A subscriber
//! opens a stream, says `sub` and waits for the server's `ok` on the one event stream
//! the server opens to it; the writer says `pub` and then sends one frame per event,
//! carrying `seq` and `sent_ns`, at the rate, without waiting (nothing is acknowledged:
//! there is no store), in seq order (`Order::Sender`): delivery is checked by `seq`,
//! which must arrive 1, 2, 3, ... on every subscriber.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use syncline_client::{ClientConfig, Credential};
use syncline_proto::frame::FrameDecoder;
use tokio::sync::Mutex;

use super::measure::MeasuredProcess;
use super::peer::{Ack, Next, Order, Peer};
use super::syncline::Endpoints;
use super::{err, Error};

/// How long the server gets to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest frame a client accepts.
const MAX_FRAME: u32 = 64 * 1024;

/// A fresh `syncline-bench-quinn` on 127.0.0.1, killed when dropped.
pub struct QuinnUnderTest {
    config: ClientConfig,
    endpoints: Endpoints,
    process: MeasuredProcess,
    _dir: tempfile::TempDir,
}

/// Fails at once if `syncline-bench-quinn` is not built (checked before any workload
/// runs).
pub fn preflight() -> Result<(), Error> {
    peer_bin().map(|_| ())
}

/// `syncline-bench-quinn` next to this executable (cargo builds it with the harness).
fn peer_bin() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    let mut dir = exe
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("syncline-bench-quinn");
    if bin.is_file() {
        return Ok(bin);
    }
    let release = if dir.ends_with("release") {
        " --release"
    } else {
        ""
    };
    // `cargo run` builds only the binary it runs; `cargo build` builds both.
    Err(format!(
        "{} is missing; build it with `cargo build{release} -p syncline-bench` \
         (same CARGO_TARGET_DIR as this tool)",
        bin.display()
    ))
}

/// The frame `body` with its length prefix (Syncline's framing).
fn frame(body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// Reads frames off `recv` into `decoder` until one is complete; `None` at the end.
async fn next_frame(
    recv: &mut quinn::RecvStream,
    decoder: &mut FrameDecoder,
) -> Result<Option<Bytes>, Error> {
    loop {
        if let Some(f) = decoder.next_frame().map_err(err)? {
            return Ok(Some(f));
        }
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => decoder.extend(&chunk.bytes),
            Ok(None) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The publisher: its connection and the stream it sends frames on (one sender at a
/// time: the writer sends in order).
#[derive(Clone)]
pub struct Publisher {
    _conn: quinn::Connection,
    send: Arc<Mutex<quinn::SendStream>>,
}

/// A registered subscriber's event stream (the server opened it).
pub struct Frames {
    events: quinn::RecvStream,
    decoder: FrameDecoder,
}

impl QuinnUnderTest {
    /// Starts the peer in a temp dir and waits for the address it prints.
    pub async fn start() -> Result<Self, Error> {
        let dir = tempfile::tempdir().map_err(err)?;
        let bin = peer_bin()?;
        let mut child = Command::new(&bin)
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout from the quinn peer")?;
        let process = MeasuredProcess(Some(child));
        // One line, read on a blocking thread; the timeout bounds the wait (if it fires,
        // the process is killed by `process`'s Drop and the read ends with it).
        let line = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .map(|_| line)
        });
        let line = match tokio::time::timeout(START_TIMEOUT, line).await {
            Ok(r) => r.map_err(err)?.map_err(err)?,
            Err(_) => {
                return Err(format!(
                    "the quinn peer printed no address within {} s",
                    START_TIMEOUT.as_secs()
                ))
            }
        };
        let addr = line.trim();
        if addr.is_empty() {
            return Err("the quinn peer exited before it listened".into());
        }
        let config = ClientConfig::new(
            addr,
            dir.path().join("cert.pem"),
            Credential::Token(String::new()),
        )
        .map_err(err)?;
        Ok(QuinnUnderTest {
            endpoints: Endpoints::new(&config)?,
            config,
            process,
            _dir: dir,
        })
    }

    /// A new connection with its stream open and its role sent.
    async fn open(&self, role: &[u8]) -> Result<(quinn::Connection, quinn::SendStream), Error> {
        let conn = self
            .endpoints
            .next()
            .connect(self.config.server, &self.config.server_name)
            .map_err(err)?
            .await
            .map_err(err)?;
        let (mut send, _recv) = conn.open_bi().await.map_err(err)?;
        send.write_all(&frame(role)).await.map_err(err)?;
        Ok((conn, send))
    }
}

impl Peer for QuinnUnderTest {
    const SYSTEM: &'static str = "quinn";
    const QUIC: bool = true;
    const ORDER: Order = Order::Sender;

    type Conn = Publisher;
    type Ticket = ();
    type Link = quinn::Connection;
    type Events = Frames;

    fn process(&self) -> &MeasuredProcess {
        &self.process
    }

    fn kind(&self) -> &'static str {
        "frames"
    }

    /// A publisher: a connection that said `pub`.
    async fn connect(&self) -> Result<Publisher, Error> {
        let (conn, send) = self.open(b"pub").await?;
        Ok(Publisher {
            _conn: conn,
            send: Arc::new(Mutex::new(send)),
        })
    }

    /// The bare transport stores nothing: there is no W1 to run against it.
    async fn write(&self, _: &mut Publisher, _: &str, _: &Value) -> Result<(), Error> {
        Err("the bare quinn peer stores nothing: it has no write workload".into())
    }

    /// One frame; nothing is acknowledged.
    async fn publish(&self, c: &mut Publisher, _topic: &str, value: Value) -> Result<Ack, Error> {
        let frame = frame(value.to_string().as_bytes());
        c.send.lock().await.write_all(&frame).await.map_err(err)?;
        Ok(Ack::default())
    }

    fn tickets(&self, n: usize, _topic: &str) -> Result<Vec<()>, Error> {
        Ok(vec![(); n])
    }

    /// A subscriber, registered (the server said `ok`) when this returns.
    async fn subscribe(
        &self,
        _ticket: (),
        _topic: &str,
    ) -> Result<(quinn::Connection, Frames), Error> {
        let (conn, send) = self.open(b"sub").await?;
        // The stream stays open: finishing it is not needed, and dropping it would
        // reset nothing the server reads after the role.
        drop(send);
        let mut events = conn.accept_uni().await.map_err(err)?;
        let mut decoder = FrameDecoder::new(MAX_FRAME);
        match next_frame(&mut events, &mut decoder).await? {
            Some(ok) if &ok[..] == b"ok" => Ok((conn, Frames { events, decoder })),
            _ => Err("the quinn peer did not confirm a subscriber".into()),
        }
    }

    async fn next(f: &mut Frames) -> Next {
        loop {
            let body = match next_frame(&mut f.events, &mut f.decoder).await {
                Ok(Some(body)) => body,
                Ok(None) => return Next::Ended("the event stream ended".to_owned()),
                Err(e) => return Next::Ended(e),
            };
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if let Some(seq) = v["seq"].as_u64() {
                return Next::Event {
                    at: seq,
                    seq: Some(seq),
                    sent_ns: v["sent_ns"].as_u64(),
                };
            }
        }
    }

    fn transport_stats(link: &quinn::Connection) -> Option<quinn::ConnectionStats> {
        Some(link.stats())
    }
}
