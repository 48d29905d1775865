//! The QUIC edge: the endpoint, one task per connection, framing onto streams. It moves
//! frames between quinn and the protocol's request loop (`crate::protocol`): requests
//! come in as frames, answers go back as frames, and the session's watch writes events
//! (`events`).

pub mod connection;
pub mod events;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tracing::warn;

/// Receive buffer asked for on the UDP socket (see `bind_udp` for how it is obtained); the
/// OS default (about 208 KiB) drops handshakes and fan-out bursts under load.
const UDP_RECV_BUFFER: usize = 16 * 1024 * 1024;
const UDP_SEND_BUFFER: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// How long a silent connection lives by default. A client that vanished without
/// closing (killed, unplugged) is noticed this long after its last packet, and only
/// then do its identity's ephemeral items start their debouncing window.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Transport settings sized for many mostly idle clients: one request stream and a few
/// event streams each, modest windows. `idle_timeout`: see `DEFAULT_IDLE_TIMEOUT`.
pub fn transport_config(idle_timeout: Duration) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(4u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window((256u32 * 1024).into())
        .receive_window((512u32 * 1024).into())
        .send_window(2 * 1024 * 1024)
        // A client acknowledges every second packet by default: under fan-out that is one
        // ACK packet back to the server for every two events, which costs both sides as
        // much as the events. Ask for one per ten packets (or per 25 ms, the usual delay).
        .ack_frequency_config(Some({
            let mut ack = quinn::AckFrequencyConfig::default();
            ack.ack_eliciting_threshold(9u32.into());
            ack
        }))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(idle_timeout)
                .unwrap_or(quinn::VarInt::from_u32(30_000).into()),
        ))
        // A live client must not time out when the server's timeout is shorter than
        // its own keep-alive: the server pings idle connections too (only those: a
        // ping goes out when nothing else did for this long).
        .keep_alive_interval(Some(idle_timeout / 3))
        // No path-MTU probing: events and answers are small and fit QUIC's 1,200-byte
        // floor, while probing cost every connection four padded probes each way plus
        // their ACKs (ARCHITECTURE.md, "No path-MTU discovery").
        .mtu_discovery_config(None);
    t
}

/// Binds the server endpoint on `addr` with the given certificate. `reset_secret` keys
/// the stateless resets (HMAC-SHA256) and the connection ids' check: the server's is
/// kept in its data directory (`config::reset_key`), so that after a restart its resets
/// still end the connections of the process before it.
pub fn bind(
    addr: SocketAddr,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    idle_timeout: Duration,
    reset_secret: &[u8],
) -> Result<quinn::Endpoint, EndpointError> {
    let provider = Arc::new(syncline_proto::tls::quic_crypto_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| EndpointError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| EndpointError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![syncline_proto::ALPN.to_vec()];
    // The server's order decides (AES-128-GCM first, see `quic_crypto_provider`): the
    // cipher is paid per packet by the server, for every subscriber of every event.
    tls.ignore_client_order = true;
    // Resumption keeps reconnect storms cheap (a full handshake costs ~0.5 ms of CPU).
    // Stateless tickets (sealed with a key that rotates every 6 hours, kept in memory
    // only), not a server-side session cache: rustls's cache removes a used session with
    // a linear scan of all of them, and at 16,384 sessions that scan was 10.7% of the
    // server's CPU while 10,000 clients connected. A server restart makes old tickets
    // unreadable; those clients do a full handshake.
    tls.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| EndpointError::Tls(e.to_string()))?;
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.max_early_data_size = 0;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| EndpointError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(transport_config(idle_timeout)));

    let bind_err = |source| EndpointError::Bind { addr, source };
    let bound =
        syncline_proto::udp::bind_udp(addr, UDP_RECV_BUFFER, UDP_SEND_BUFFER).map_err(bind_err)?;
    if bound.recv_buffer < UDP_RECV_BUFFER {
        warn!(
            granted_kib = bound.recv_buffer / 1024,
            wanted_kib = UDP_RECV_BUFFER / 1024,
            "small UDP receive buffer: bursts will be dropped and retransmitted; \
             raise net.core.rmem_max (sysctl) or run with CAP_NET_ADMIN"
        );
    }
    let socket = bound.socket;
    // A restarted server must take its predecessor's connection ids as its own (quinn
    // drops a packet whose id fails the generator's check, answering nothing) and sign
    // its stateless reset as the predecessor did: both keys come from `reset_secret`.
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset_secret);
    let cid_tag = ring::hmac::sign(&reset_key, b"syncline connection id key");
    let mut cid_key = [0; 8];
    cid_key.copy_from_slice(&cid_tag.as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
    endpoint_config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    quinn::Endpoint::new(
        endpoint_config,
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(bind_err)
}
