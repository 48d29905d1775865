//! `syncline-bench-quinn DIR`: the bare-transport peer behind `syncline-bench --peer
//! quinn`. A fan-out server with Syncline's transport and framing and nothing else: no
//! storage, no sessions, no revisions. It binds with the server's own
//! `syncline_server::net::bind` (same TLS, ALPN, transport settings and UDP buffers) on
//! 127.0.0.1 with a fresh self-signed certificate written to `DIR/cert.pem`, and prints
//! its address on stdout.
//!
//! Each connection opens one bidirectional stream and sends a first frame naming its
//! role:
//! - `sub`: the server opens one long-lived unidirectional stream to it and writes the
//!   frame `ok` once the subscriber is registered; every frame a publisher sends after
//!   that is forwarded on this stream.
//! - `pub`: every later frame on the stream is forwarded, the same bytes to every
//!   subscriber (encoded once; each subscriber's copy is a reference).
//!
//! Frames are Syncline's: `u32` big-endian length, then the body. Each subscriber has a
//! bounded queue (1,024 frames, Syncline's outbox size); a frame that finds it full is
//! dropped for that subscriber, which the harness counts as missed. The harness kills
//! the process at the end.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use syncline_proto::frame::FrameDecoder;
use tokio::sync::mpsc;

/// A subscriber's queue, in frames (Syncline's outbox holds 1,024 events).
const QUEUE: usize = 1024;
/// The largest frame accepted (Syncline's default).
const MAX_FRAME: u32 = 64 * 1024;

/// The registered subscribers' queues.
type Hub = Arc<Mutex<Vec<mpsc::Sender<Bytes>>>>;

fn main() {
    let Some(dir) = std::env::args_os().nth(1).map(std::path::PathBuf::from) else {
        eprintln!("usage: syncline-bench-quinn DIR (the certificate goes to DIR/cert.pem)");
        std::process::exit(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("syncline-bench-quinn: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(serve(&dir)) {
        eprintln!("syncline-bench-quinn: {e}");
        std::process::exit(1);
    }
}

async fn serve(dir: &std::path::Path) -> Result<(), String> {
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .map_err(|e| format!("certificate: {e}"))?;
    let cert_file = dir.join("cert.pem");
    std::fs::write(&cert_file, generated.cert.pem())
        .map_err(|e| format!("writing {}: {e}", cert_file.display()))?;
    let certs = vec![generated.cert.der().clone()];
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(rustls_pki_types::PrivatePkcs8KeyDer::from(
        generated.key_pair.serialize_der(),
    ));
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    // A fresh stateless-reset secret per run: this peer keeps no state across restarts.
    let reset_secret: [u8; 32] = rand::random();
    let endpoint = syncline_server::net::bind(
        addr,
        certs,
        key,
        syncline_server::net::DEFAULT_IDLE_TIMEOUT,
        &reset_secret,
    )
    .map_err(|e| e.to_string())?;
    let local = endpoint.local_addr().map_err(|e| e.to_string())?;
    // The harness reads this one line to find the server.
    println!("{local}");
    let hub: Hub = Arc::default();
    while let Some(incoming) = endpoint.accept().await {
        let hub = hub.clone();
        tokio::spawn(async move {
            if let Ok(conn) = incoming.await {
                // A connection that breaks just goes; the harness sees what it missed.
                let _ = connection(conn, hub).await;
            }
        });
    }
    Ok(())
}

/// Reads frames off `recv` into `decoder` until one is complete; `None` at the end of
/// the stream.
async fn next_frame(
    recv: &mut quinn::RecvStream,
    decoder: &mut FrameDecoder,
) -> Result<Option<Bytes>, String> {
    loop {
        if let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
            return Ok(Some(frame));
        }
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => decoder.extend(&chunk.bytes),
            Ok(None) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The frame `body` with its length prefix.
fn frame(body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    Bytes::from(out)
}

async fn connection(conn: quinn::Connection, hub: Hub) -> Result<(), String> {
    let (_send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
    let mut decoder = FrameDecoder::new(MAX_FRAME);
    let role = next_frame(&mut recv, &mut decoder).await?;
    match role.as_deref() {
        Some(b"sub") => subscriber(conn, hub).await,
        Some(b"pub") => publisher(recv, decoder, hub).await,
        _ => {
            conn.close(4u32.into(), b"unknown role");
            Err("unknown role".into())
        }
    }
}

/// Registers the subscriber, says `ok`, then writes what the hub queues for it.
async fn subscriber(conn: quinn::Connection, hub: Hub) -> Result<(), String> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
    hub.lock().map_err(|_| "hub lock poisoned")?.push(tx);
    let mut events = conn.open_uni().await.map_err(|e| e.to_string())?;
    events
        .write_all(&frame(b"ok"))
        .await
        .map_err(|e| e.to_string())?;
    // Everything queued so far goes out in one write, as Syncline's writer batches.
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 256).await > 0 {
        events
            .write_all_chunks(&mut batch)
            .await
            .map_err(|e| e.to_string())?;
        batch.clear();
    }
    Ok(())
}

/// Forwards every frame of the publisher's stream to every subscriber.
async fn publisher(
    mut recv: quinn::RecvStream,
    mut decoder: FrameDecoder,
    hub: Hub,
) -> Result<(), String> {
    while let Some(body) = next_frame(&mut recv, &mut decoder).await? {
        // Encoded once: each subscriber's queue holds a reference to the same bytes.
        let shared = frame(&body);
        let mut subs = hub.lock().map_err(|_| "hub lock poisoned")?;
        // A closed queue is a subscriber that went away: forget it.
        subs.retain(|tx| {
            !matches!(
                tx.try_send(shared.clone()),
                Err(mpsc::error::TrySendError::Closed(_))
            )
        });
    }
    Ok(())
}
