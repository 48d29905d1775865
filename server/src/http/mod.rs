//! The HTTP edge: Twilio Sync v1's REST surface over HTTPS, with the QUIC endpoint's
//! certificate, for backends written against Twilio (HTTP Basic with an API key acts as
//! the backend, `Bearer` with an access token as its identity). Each request is
//! authenticated, rate limited, turned into the same typed `Command` a QUIC request
//! becomes, and run by the engine; so access, limits, revisions and errors are decided
//! below this edge, once. Also `/healthz`, `/readyz` and `/openapi.json` (generated from
//! the route table in `openapi.rs`, which also decides which paths and methods exist),
//! the upgrade to the WebSocket edge (`crate::ws`) at `/v1/ws`, and the web console at
//! `/admin` (`console`).

mod console;
mod context;
mod events;
pub mod form;
mod metrics;
pub mod openapi;
mod routes;
pub mod twilio;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, info_span, warn, Instrument};

use syncline_core::Core;

use context::Http;
pub use context::{BODY_TIMEOUT, DISCARD_BODY_BYTES, MAX_BODY_BYTES};

/// Default HTTPS listen address.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:7401";
/// Time a client has to complete its TLS handshake, to send its request headers, and
/// to send its body: nothing a request sends can hold a connection slot forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTPS connections served at once; more wait in the accept queue.
pub const MAX_CONNECTIONS: usize = 1024;
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("HTTPS TLS configuration: {0}")]
    Tls(String),
    #[error("binding HTTPS on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The TLS configuration of the HTTPS listener: the server's certificate, HTTP/1.1.
pub fn tls_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, HttpError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| HttpError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// Serves HTTPS on `listener` until shutdown is requested, then lets requests in
/// progress finish (up to the drain timeout of the caller).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    core: Core,
    mut shutdown: watch::Receiver<bool>,
    idle_timeout: Duration,
) {
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let http = Arc::new(Http::new(
        core,
        format!("https://{local}"),
        shutdown.clone(),
        idle_timeout,
    ));
    let router = routes::router(http);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "HTTPS accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = syncline_core::shutdown_requested(&mut shutdown) => break,
        };
        // Answers and WebSocket events are small and due at once: Nagle's algorithm
        // would hold each behind the previous one's acknowledgement.
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "TCP_NODELAY not set");
        }
        let acceptor = acceptor.clone();
        let router = router.clone();
        let mut stop = shutdown.clone();
        let span = info_span!("http", %remote);
        connections.spawn(
            async move {
                let _permit = permit;
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return debug!(error = %e, "TLS handshake failed"),
                    Err(_) => return debug!("TLS handshake timed out"),
                };
                let service = hyper_util::service::TowerToHyperService::new(router);
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT);
                // With upgrades: `/v1/ws` turns the connection into a WebSocket, which
                // then lives in its own task, no longer holding a connection slot.
                let conn = builder
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades();
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => if let Err(e) = r { debug!(error = %e, "HTTP connection ended") },
                    _ = syncline_core::shutdown_requested(&mut stop) => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            }
            .instrument(span),
        );
        while connections.try_join_next().is_some() {}
    }
    info!(connections = connections.len(), "HTTPS: draining");
    while connections.join_next().await.is_some() {}
}
