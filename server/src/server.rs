//! The server's lifecycle: bootstrap, bind, accept connections, run the commit task and
//! the reaper, and shut down gracefully: stop accepting, let in-flight requests finish,
//! tell clients the server is going away, flush the store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use syncline_proto::admin_config::AdminConfig;
use syncline_proto::Limits;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use syncline_core::store::Store;
use syncline_core::webhooks::WebhookOptions;
use syncline_core::{Core, CoreOptions, RateLimit};
use syncline_store_etcd::{EtcdOptions, EtcdStore};
use syncline_store_sled::SledStore;

use crate::config::{self, ConfigError};
use crate::net::{self, EndpointError};

/// Default listen address (UDP).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";
/// Time connections get to finish their requests at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Where the HTTPS (REST) listener binds; `None`: no HTTP.
    pub http_listen: Option<SocketAddr>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub limits: Limits,
    pub rate: RateLimit,
    /// How often the reaper looks for expired objects.
    pub reap_interval: Duration,
    /// Change-log entries kept per object for resuming subscribers.
    pub log_retention: u64,
    /// `false` acknowledges writes before they are flushed (relaxed mode; off by default).
    pub durable: bool,
    /// Free space kept on the data directory's file system: writes are refused below it.
    pub keep_free_bytes: u64,
    /// Upper bound of sled's page cache (`syncline_store_sled::DEFAULT_CACHE_BYTES`).
    pub cache_bytes: u64,
    /// How long a silent QUIC connection lives (`net::DEFAULT_IDLE_TIMEOUT`).
    pub idle_timeout: Duration,
    /// Webhook delivery: queue bound, lanes, timeout, retries.
    pub webhooks: WebhookOptions,
    /// The QUIC address and HTTPS URL other machines reach this node at, as the node
    /// list (`Request::Nodes`) gives them; `None`: the bound ones (right on one
    /// machine, not for a node listening on 0.0.0.0 or behind NAT).
    pub advertise: Option<String>,
    pub advertise_https: Option<String>,
    /// Where the data lives: sled in the data directory (one node), or a shared etcd
    /// cluster (several nodes; the data directory keeps only the node's certificate,
    /// `reset.key` and `admin.json`).
    pub store: StoreChoice,
}

/// The storage engine a server runs on.
#[derive(Debug, Clone)]
pub enum StoreChoice {
    Sled,
    Etcd(Box<EtcdOptions>),
}

impl ServerOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerOptions {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 7401))),
            cert: None,
            key: None,
            limits: Limits::default(),
            rate: RateLimit::default(),
            reap_interval: Duration::from_secs(1),
            log_retention: config::DEFAULT_LOG_RETENTION,
            durable: true,
            keep_free_bytes: syncline_store_sled::DEFAULT_KEEP_FREE_BYTES,
            cache_bytes: syncline_store_sled::DEFAULT_CACHE_BYTES,
            idle_timeout: net::DEFAULT_IDLE_TIMEOUT,
            webhooks: WebhookOptions::default(),
            store: StoreChoice::Sled,
            advertise: None,
            advertise_https: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
}

/// A running server.
pub struct Server {
    local_addr: SocketAddr,
    admin: AdminConfig,
    admin_path: PathBuf,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Bootstraps the data directory if needed, binds, and starts serving.
    pub async fn start(opts: ServerOptions) -> Result<Server, ServerError> {
        let data_dir = config::prepare_data_dir(&opts.data_dir)?;
        let tls = config::tls_identity(&data_dir, opts.cert.as_deref(), opts.key.as_deref())?;
        let reset_key = config::reset_key(&data_dir)?;
        let (store, etcd): (Arc<dyn Store>, _) = match &opts.store {
            StoreChoice::Sled => {
                let sled = SledStore::open_with_cache(
                    &data_dir.join("db"),
                    opts.log_retention,
                    opts.durable,
                    opts.cache_bytes,
                )
                .map_err(ConfigError::from)?
                .keep_free(opts.keep_free_bytes);
                (Arc::new(sled), None)
            }
            StoreChoice::Etcd(options) => {
                let mut options = EtcdOptions::clone(options);
                options.log_retention = opts.log_retention;
                let etcd = EtcdStore::connect(options)
                    .await
                    .map_err(ConfigError::from)?;
                (etcd.clone(), Some(etcd))
            }
        };
        let (installation, admin_key, created) = config::installation(&*store).await?;
        let auth_token = config::auth_token(&*store).await?;
        let http = match opts.http_listen {
            Some(addr) => {
                let config = crate::http::tls_config(tls.certs.clone(), tls.key.clone_key())?;
                Some((crate::http::bind(addr).await?, config))
            }
            None => None,
        };
        let http_url = match &http {
            Some((listener, _)) => listener.local_addr().ok().map(|a| format!("https://{a}")),
            None => None,
        };
        let endpoint = net::bind(
            opts.listen,
            tls.certs,
            tls.key,
            opts.idle_timeout,
            &reset_key,
        )?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| EndpointError::Bind {
                addr: opts.listen,
                source,
            })?;
        let admin = AdminConfig {
            server: local_addr.to_string(),
            ca_file: tls.cert_file,
            account_sid: installation.account_sid.clone(),
            default_service_sid: installation.default_service_sid.clone(),
            api_key_sid: admin_key.sid.clone(),
            api_key_secret: admin_key.secret.clone(),
            http_url: http_url.clone(),
            auth_token: Some(auth_token.clone()),
        };
        let admin_path = data_dir.join("admin.json");
        config::write_admin_config(&admin_path, &admin)?;
        if created {
            info!(
                data_dir = %data_dir.display(),
                admin_config = %admin_path.display(),
                account = %installation.account_sid,
                "first start: created the data directory, a self-signed certificate, the default service and an admin API key"
            );
        }
        info!(addr = %local_addr, data_dir = %data_dir.display(), "listening (QUIC, ALPN syncline/1)");
        if let Some(url) = &http_url {
            info!(url = %url, "listening (HTTPS: Twilio Sync v1 REST, /healthz, /readyz)");
        }

        let node = syncline_proto::NodeInfo {
            id: if etcd.is_some() {
                String::new()
            } else {
                "local".into()
            },
            quic: opts
                .advertise
                .clone()
                .unwrap_or_else(|| local_addr.to_string()),
            https: opts.advertise_https.clone().or_else(|| http_url.clone()),
        };
        let cluster = match &etcd {
            Some(etcd) => Some(etcd.join(node.clone()).await.map_err(ConfigError::from)?),
            None => None,
        };
        let poster = crate::webhook_client::HyperPoster::new().map_err(ConfigError::Tls)?;
        let (core, core_tasks) = Core::start(
            store,
            CoreOptions {
                installation,
                auth_token,
                limits: opts.limits,
                rate: opts.rate,
                reap_interval: opts.reap_interval,
                webhooks: opts.webhooks.clone(),
                poster: Arc::new(poster),
                encoder: syncline_proto::frame::encode_event,
                node,
                cluster: cluster
                    .clone()
                    .map(|c| c as Arc<dyn syncline_core::cluster::Cluster>),
            },
        )
        .await;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let http_task = http.map(|(listener, config)| {
            tokio::spawn(crate::http::serve(
                listener,
                config,
                core.clone(),
                shutdown_rx.clone(),
                opts.idle_timeout,
            ))
        });
        let task = tokio::spawn(async move {
            accept_loop(&endpoint, core, shutdown_rx).await;
            if let Some(http) = http_task {
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, http).await;
            }
            // Every session is gone: the commit task drains what is queued and ends.
            core_tasks.stop().await;
            if let Some(cluster) = cluster {
                cluster.leave().await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
            info!("shut down");
        });
        Ok(Server {
            local_addr,
            admin,
            admin_path,
            shutdown,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The backend's view of this server (address, CA file, admin key).
    pub fn admin(&self) -> &AdminConfig {
        &self.admin
    }

    pub fn admin_path(&self) -> &std::path::Path {
        &self.admin_path
    }

    /// Shuts down gracefully and waits until everything is flushed.
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(endpoint: &quinn::Endpoint, core: Core, mut shutdown: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    conns.spawn(net::connection::serve(incoming, core.clone(), shutdown.clone()));
                }
                None => break,
            },
            _ = syncline_core::shutdown_requested(&mut shutdown) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    info!(
        connections = conns.len(),
        "shutting down: draining connections"
    );
    // Connections closing from here on are the server going away, not their owners.
    core.stopping();
    endpoint.set_server_config(None);
    drop(core);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!("connections did not drain in time; closing them");
        conns.shutdown().await;
    }
}
