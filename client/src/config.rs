//! What a client is told before it connects: [`ClientConfig`] (server, CA, credential,
//! deadlines), the [`ReconnectPolicy`] and the [`TokenProvider`]; and the QUIC/TLS
//! configuration built from them.

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use syncline_proto::Credential;

use crate::{AdminConfig, Error, Result};

/// Where and how to connect, authenticate and reconnect.
///
/// ```no_run
/// # fn demo() -> Result<(), syncline_client::Error> {
/// use std::time::Duration;
/// use syncline_client::ClientConfig;
/// let config = ClientConfig::with_token("127.0.0.1:7400", "cert.pem", "")?
///     // Asked for a token now, before each expiry and after a TokenExpired close.
///     .with_token_provider(|| async { Ok(String::from("eyJ...")) })
///     .with_offline_wait(Duration::from_secs(2));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientConfig {
    /// The server's QUIC address.
    pub server: SocketAddr,
    /// Name checked against the server certificate.
    pub server_name: String,
    /// PEM of the certificate(s) to trust as CA.
    pub ca_pem: Vec<u8>,
    /// The API key or access token `Hello` sends first (an empty token with a token
    /// provider: the provider's).
    pub credential: Credential,
    /// Service (sid or unique name) for an API-key connection; ignored for tokens,
    /// which always act in their own service.
    pub service: Option<String>,
    /// The longest a request waits for its answer before failing with `Unavailable`
    /// (default `DEFAULT_REQUEST_TIMEOUT`): a server that stopped answering must not
    /// hang the caller until the connection's idle timeout, or forever.
    pub request_timeout: Duration,
    /// How long an operation issued while the client is disconnected waits for the
    /// connection before failing with `Unavailable` (default `DEFAULT_OFFLINE_WAIT`).
    pub offline_wait: Duration,
    /// Backoff and attempt limits for reconnecting.
    pub reconnect: ReconnectPolicy,
    /// Where fresh access tokens come from (`None`: the token in `credential` is all
    /// there is, and its expiry ends the client in `Denied`).
    pub token_provider: Option<TokenProvider>,
    /// How many writes may wait for the connection while disconnected (`None`, the
    /// default: none, writes fail after `offline_wait`); see
    /// [`ClientConfig::with_offline_writes`].
    pub offline_writes: Option<usize>,
    /// How often an idle connection sends a keep-alive (default `DEFAULT_KEEP_ALIVE`).
    /// It is also how soon an idle client notices a server that crashed and restarted:
    /// the restarted server answers the keep-alive with a stateless reset.
    pub keep_alive: Duration,
    /// Other nodes of the installation (`host:port`), tried after `server` when it does
    /// not answer; see [`ClientConfig::with_nodes`]. Empty by default: the client learns
    /// the nodes from the server it reaches.
    pub nodes: Vec<String>,
}

/// How long an operation waits for a lost connection to come back, unless the config
/// says otherwise: long enough to ride out a server restart, short enough that an app
/// hears about an outage while its user still cares.
pub const DEFAULT_OFFLINE_WAIT: Duration = Duration::from_secs(5);

/// How often an idle connection sends a keep-alive unless the config says otherwise:
/// rare enough to keep idle connections cheap, often enough to hold NAT bindings.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// How long a request waits for its answer unless the config says otherwise. Generous:
/// under load (a reconnect storm, a flush stalled on a slow disk) answers take seconds.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl ClientConfig {
    /// A config for `server` (`host:port`), trusting the CA in `ca_file`.
    pub fn new(server: &str, ca_file: impl AsRef<Path>, credential: Credential) -> Result<Self> {
        let ca_file = ca_file.as_ref();
        let ca_pem = std::fs::read(ca_file).map_err(|e| {
            Error::Config(format!("cannot read CA file {}: {e}", ca_file.display()))
        })?;
        let addr = server
            .to_socket_addrs()
            .map_err(|e| Error::Config(format!("server address {server:?}: {e}")))?
            .next()
            .ok_or_else(|| {
                Error::Config(format!("server address {server:?} resolves to nothing"))
            })?;
        let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(ClientConfig {
            server: addr,
            server_name: host.to_owned(),
            ca_pem,
            credential,
            service: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            offline_wait: DEFAULT_OFFLINE_WAIT,
            reconnect: ReconnectPolicy::default(),
            token_provider: None,
            offline_writes: None,
            keep_alive: DEFAULT_KEEP_ALIVE,
            nodes: Vec::new(),
        })
    }

    /// Connects as an identity with an access token.
    pub fn with_token(server: &str, ca_file: impl AsRef<Path>, token: &str) -> Result<Self> {
        Self::new(server, ca_file, Credential::Token(token.to_owned()))
    }

    /// Connects as the backend with the admin key from `admin.json`.
    pub fn from_admin(admin: &AdminConfig) -> Result<Self> {
        Self::new(
            &admin.server,
            &admin.ca_file,
            Credential::ApiKey {
                sid: admin.api_key_sid.clone(),
                secret: admin.api_key_secret.clone(),
            },
        )
    }

    /// Sets how long each request waits for its answer (see `request_timeout`).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets how long operations wait for the connection while disconnected.
    pub fn with_offline_wait(mut self, wait: Duration) -> Self {
        self.offline_wait = wait;
        self
    }

    /// Queues up to `capacity` writes issued while the client is disconnected, instead
    /// of failing them after `offline_wait`, and sends them in order once it is
    /// connected again, before any write issued after that.
    ///
    /// Each queued write carries `if_match`: the write's own if given, else the revision
    /// of the newest replica this client holds for its target (a live [`Subscription`]'s:
    /// the document's or object's revision, an item's for list and map item writes, as
    /// the server compares them). If another writer changed that base meanwhile, the
    /// write comes back as [`Error::WriteConflict`] with what the app tried and what the
    /// server holds, and nothing is written. A write that would change existing data
    /// and has no known base (no subscription holds its target, no `if_match`) is not
    /// queued: it fails at once with `Unavailable`. List `push`, stream `publish` and
    /// `create` need no base and are queued as they are. A full queue fails the write
    /// at once with `Unavailable`.
    ///
    /// A queued write's future resolves once the write was sent and answered (spawn it
    /// to go on without waiting); dropping the future does not take the write back.
    /// Writes through a handle with [`Client::with_deadline`] are never queued: their
    /// deadline still applies. Reads still wait `offline_wait` and fail.
    ///
    /// [`Subscription`]: crate::Subscription
    /// [`Client::with_deadline`]: crate::Client::with_deadline
    pub fn with_offline_writes(mut self, capacity: usize) -> Self {
        self.offline_writes = Some(capacity);
        self
    }

    /// Sets how the client reconnects.
    pub fn with_reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Gets access tokens from `provider`: at connect when the config's token is
    /// empty, before each token expires (3 minutes before `exp`, or half-way through a
    /// shorter token) and before reconnecting after `TokenExpired` or `Unauthorized`.
    pub fn with_token_provider<F, Fut>(mut self, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<String>> + Send + 'static,
    {
        self.token_provider = Some(Arc::new(move || Box::pin(provider())));
        self
    }

    /// Sets how often an idle connection sends a keep-alive (see `keep_alive`).
    pub fn with_keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = interval;
        self
    }

    /// Other nodes of the same installation (`host:port` each) to try when `server` does
    /// not answer, first connection included. Not needed to fail over once connected:
    /// after each `Welcome` the client asks its node for the installation's live nodes
    /// (`Request::Nodes`) and goes to another one when its own is lost. This list is
    /// for the start (an app that starts while the configured node is down) and stays a
    /// last resort after the listed nodes. Every node must present a certificate the
    /// config's CA trusts, valid for its own host or for the configured server's name
    /// (nodes sharing one certificate); a node whose certificate is not trusted counts as
    /// a failed attempt and the next one is tried. An address that is not `host:port` is
    /// refused (`InvalidArgument`).
    pub fn with_nodes<S: AsRef<str>>(mut self, nodes: impl IntoIterator<Item = S>) -> Result<Self> {
        for node in nodes {
            let node = node.as_ref();
            if crate::nodes::Target::advertised(node).is_none() {
                return Err(Error::Config(format!(
                    "node address {node:?}: expected host:port"
                )));
            }
            self.nodes.push(node.to_owned());
        }
        Ok(self)
    }

    /// Acts on `service` (sid or unique name): API-key connections only.
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    /// The quinn client configuration (TLS 1.3, the CA, ALPN `syncline/1`).
    pub fn quinn_config(&self) -> Result<quinn::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca_pem) {
            let cert = cert.map_err(|e| Error::Config(format!("CA file: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| Error::Config(format!("CA certificate: {e}")))?;
        }
        let provider = Arc::new(syncline_proto::tls::quic_crypto_provider());
        let verifier = InstallationVerifier::new(roots, provider.clone(), &self.server_name)?;
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        tls.alpn_protocols = vec![syncline_proto::ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| Error::Config(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(self.keep_alive));
        // Syncline's frames fit QUIC's 1,200-byte floor; probing for a larger MTU costs
        // each connection four padded probes and their ACKs (see ARCHITECTURE.md).
        transport.mtu_discovery_config(None);
        config.transport_config(Arc::new(transport));
        Ok(config)
    }
}

/// The usual certificate check (a chain to the config's CA, valid now, for the name
/// dialed), which also accepts a certificate valid for the configured server's name
/// instead of the name dialed. The client dials the other nodes of its installation by
/// the host each advertises (an IP, usually), while nodes of one installation commonly
/// share one certificate, issued for the installation's name: that certificate is the
/// installation's whichever node presents it. Anything else (an untrusted chain, an
/// expired certificate, a name matching neither) is refused as before.
#[derive(Debug)]
struct InstallationVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    installation: rustls_pki_types::ServerName<'static>,
}

impl InstallationVerifier {
    fn new(
        roots: rustls::RootCertStore,
        provider: Arc<rustls::crypto::CryptoProvider>,
        installation: &str,
    ) -> Result<Self> {
        let inner =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| Error::Config(format!("CA file: {e}")))?;
        let installation = rustls_pki_types::ServerName::try_from(installation.to_owned())
            .map_err(|e| Error::Config(format!("server name {installation:?}: {e}")))?;
        Ok(InstallationVerifier {
            inner,
            installation,
        })
    }
}

impl rustls::client::danger::ServerCertVerifier for InstallationVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error as TlsError};
        let verify = |name: &rustls_pki_types::ServerName<'_>| {
            self.inner
                .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
        };
        match verify(server_name) {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if *server_name != self.installation => verify(&self.installation),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The future a [`TokenProvider`] returns.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String>> + Send>>;

/// An async callback that returns a fresh access token (from the app's backend, say).
/// The client calls it before the current token expires (and swaps it in with
/// `update_token`), and before reconnecting after a `TokenExpired` or `Unauthorized`
/// close or refusal. Build one with [`ClientConfig::with_token_provider`].
pub type TokenProvider = Arc<dyn Fn() -> TokenFuture + Send + Sync>;

/// How the client reconnects. The defaults suit an app on a flaky network: a first
/// retry within 250 ms, then waits doubling up to 30 s, each drawn at random between 0
/// and that bound ("full jitter", so that a restarted server is not hit by all its
/// clients at the same instant). A wait comes before each round of attempts: one
/// attempt per known node of the installation, the current node first (see
/// `failover_after`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// The bound of the first wait (default 250 ms).
    pub initial_backoff: Duration,
    /// The largest bound a wait grows to (default 30 s).
    pub max_backoff: Duration,
    /// How long one attempt (QUIC handshake and `Hello`) may take before it counts as
    /// failed (default 10 s). A server that is down does not refuse a QUIC handshake;
    /// it just never answers.
    pub connect_timeout: Duration,
    /// With several nodes known, how long an attempt on one node goes unanswered before
    /// the next node is tried alongside it (default 1 s); an attempt that fails brings
    /// the next one on at once. The first node to welcome the client wins and the other
    /// attempts are dropped. Without it, a node that went silent would cost each round
    /// a whole `connect_timeout` before the others were tried.
    pub failover_after: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            failover_after: Duration::from_secs(1),
        }
    }
}

impl ReconnectPolicy {
    /// The wait before reconnect attempt `attempt` (0 for the first): uniform in
    /// `0..=min(max_backoff, initial_backoff * 2^attempt)`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let bound = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max_backoff);
        let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(random_u64() % nanos.saturating_add(1))
    }
}

/// A random number from the standard library's per-process hash keys (no dependency
/// for a jitter that needs no cryptographic quality).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::{ServerName, UnixTime};

    /// A self-signed certificate for `names`, and a verifier trusting it as the CA, for
    /// an installation named `installation`.
    fn verifier_for(
        names: &[&str],
        installation: &str,
    ) -> (CertificateDer<'static>, InstallationVerifier) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::generate_simple_self_signed(names)
            .expect("certificate")
            .cert;
        let der = cert.der().clone();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der.clone()).expect("root");
        let provider = Arc::new(syncline_proto::tls::quic_crypto_provider());
        let verifier = InstallationVerifier::new(roots, provider, installation).expect("verifier");
        (der, verifier)
    }

    fn check(
        verifier: &InstallationVerifier,
        cert: &CertificateDer<'_>,
        dialed: &str,
    ) -> std::result::Result<(), rustls::Error> {
        let name = ServerName::try_from(dialed.to_owned()).expect("server name");
        verifier
            .verify_server_cert(cert, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn a_node_dialed_by_its_ip_is_trusted_with_a_certificate_for_the_installations_name() {
        // Nodes sharing one certificate for sync.example.com, advertising their IPs.
        let (cert, verifier) = verifier_for(&["sync.example.com"], "sync.example.com");
        check(&verifier, &cert, "sync.example.com").expect("the configured name");
        check(&verifier, &cert, "10.0.0.2").expect("a node by its IP");
        // A certificate for a node's own IP is trusted too (per-node certificates).
        let (cert, verifier) = verifier_for(&["10.0.0.2"], "sync.example.com");
        check(&verifier, &cert, "10.0.0.2").expect("the node's own name");
    }

    #[test]
    fn a_certificate_for_neither_name_or_from_another_ca_is_refused() {
        let (cert, verifier) = verifier_for(&["other.example.com"], "sync.example.com");
        let e = check(&verifier, &cert, "10.0.0.2").unwrap_err();
        assert!(matches!(e, rustls::Error::InvalidCertificate(_)), "{e:?}");
        // Trusted CA, right name, but the certificate presented is another's (same
        // subject: its signature does not verify).
        let (stranger, _) = verifier_for(&["sync.example.com"], "sync.example.com");
        let (_, verifier) = verifier_for(&["sync.example.com"], "sync.example.com");
        let e = check(&verifier, &stranger, "sync.example.com").unwrap_err();
        assert!(matches!(e, rustls::Error::InvalidCertificate(_)), "{e:?}");
    }

    #[test]
    fn backoff_stays_within_its_doubling_bound_and_the_cap() {
        let p = ReconnectPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            failover_after: Duration::from_secs(1),
        };
        for attempt in 0..40 {
            let bound =
                Duration::from_millis(100 * (1u64 << attempt.min(20))).min(Duration::from_secs(1));
            for _ in 0..50 {
                assert!(p.backoff(attempt) <= bound, "attempt {attempt}");
            }
        }
        // Jitter: not every draw is the same.
        let draws: std::collections::HashSet<_> = (0..50).map(|_| p.backoff(5)).collect();
        assert!(draws.len() > 1);
    }
}
