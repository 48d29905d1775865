//! `Core`, the one handle the edges hold: authenticate, execute, open a session (whose
//! watch delivers events), and read what operators see (limits, the installation,
//! metrics). Its state is private. `CoreTasks` owns the tasks the core runs (the commit
//! task, the reaper, token expiry); dropping it stops them, `stop` stops them gracefully.

use std::sync::Arc;
use std::time::Duration;

use syncline_proto::{Limits, WireError};
use tokio::sync::watch;
use tracing::warn;

use crate::auth::Login;
use crate::cluster::Cluster;
use crate::command::{Command, Outcome};
use crate::commit::Committer;
use crate::engine::{self, Caller};
use crate::fanout::Ending;
use crate::fanout::{EventEncoder, Hub};
use crate::metrics::Edge;
use crate::session::Session;
use crate::shared::{RateLimit, Shared};
use crate::store::{Installation, Store};
use crate::webhooks::{WebhookOptions, WebhookPoster, Webhooks};

/// What the core is started with, beyond its store.
pub struct CoreOptions {
    pub installation: Installation,
    /// Signs webhooks (`X-Twilio-Signature`).
    pub auth_token: String,
    pub limits: Limits,
    pub rate: RateLimit,
    /// How often the reaper looks for expired objects.
    pub reap_interval: Duration,
    pub webhooks: WebhookOptions,
    /// Posts webhooks (the server's HTTP client).
    pub poster: Arc<dyn WebhookPoster>,
    /// Encodes each event once for every subscriber (the wire's encoding).
    pub encoder: EventEncoder,
    /// Where clients reach this node (the answer to `Nodes` when it is alone).
    pub node: syncline_proto::NodeInfo,
    /// The other nodes, when `store` is shared by several (`Store::is_shared`).
    pub cluster: Option<Arc<dyn Cluster>>,
}

/// The core, cheap to clone. Every edge holds one.
#[derive(Clone)]
pub struct Core {
    shared: Arc<Shared>,
}

/// The core's running tasks; dropping this aborts them, `stop` ends them in order.
pub struct CoreTasks {
    shutdown: watch::Sender<bool>,
    reaper: Option<tokio::task::JoinHandle<()>>,
    /// Ends sessions whose tokens expire (it holds the core's state until shutdown).
    expiry: Option<tokio::task::JoinHandle<()>>,
    commit: Option<tokio::task::JoinHandle<()>>,
    /// Applies what the other nodes did (cluster mode).
    follower: Option<tokio::task::JoinHandle<()>>,
    store: Arc<dyn Store>,
}

impl Core {
    /// Starts the commit task and the reaper over `store`, and schedules the departures
    /// owed since the last run (ephemeral items whose owners have not come back).
    pub async fn start(store: Arc<dyn Store>, options: CoreOptions) -> (Core, CoreTasks) {
        let hub = Arc::new(Hub::new(options.encoder));
        let presence = Arc::new(crate::presence::Presence::default());
        let webhooks = Webhooks::new(
            store.clone(),
            options.installation.account_sid.clone(),
            options.auth_token,
            options.webhooks,
            options.poster,
        );
        let (committer, commit) = Committer::start(
            store.clone(),
            hub.clone(),
            presence,
            options.cluster.clone(),
            webhooks.clone(),
            options.limits.clone(),
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let reaper = tokio::spawn(crate::reaper::run(
            store.clone(),
            committer.clone(),
            options.reap_interval,
            options.cluster.clone(),
            shutdown_rx,
        ));
        let changes = options.cluster.as_ref().and_then(|c| c.changes());
        let shared = Arc::new(Shared::new(
            store.clone(),
            committer,
            hub,
            options.limits,
            options.installation,
            options.rate,
            webhooks,
            options.cluster,
            options.node,
        ));
        // Registered before the departures owed are scheduled, so that what other
        // nodes do from now on is not missed.
        let follower = changes.map(|changes| {
            tokio::spawn(crate::follower::follow(
                shared.clone(),
                changes,
                shutdown.subscribe(),
            ))
        });
        crate::departures::restore(&shared).await;
        let expiry = tokio::spawn(shared.clone().expire_sessions(shutdown.subscribe()));
        let tasks = CoreTasks {
            shutdown,
            reaper: Some(reaper),
            expiry: Some(expiry),
            commit: Some(commit),
            follower,
            store,
        };
        (Core { shared }, tasks)
    }

    /// Opens a session for one client connection on `edge`. `force_close` cuts its
    /// transport at once (used when a session told to end does not drain in time).
    pub fn open_session(
        &self,
        edge: Edge,
        force_close: Arc<dyn Fn(Ending) + Send + Sync>,
    ) -> Arc<Session> {
        Session::open(&self.shared, edge, force_close)
    }

    /// Checks a credential for a stateless request (one HTTP call); `service` as in
    /// `Session::hello`.
    pub async fn authenticate(
        &self,
        login: Login,
        service: Option<String>,
    ) -> Result<Caller, WireError> {
        engine::authenticate(&self.shared, login, service, 0)
            .await
            .map(|(caller, _)| caller)
    }

    /// Runs one command for a stateless caller (no session: subscriptions and token
    /// updates are refused), counted under `kind` for `edge`.
    pub async fn execute(
        &self,
        edge: Edge,
        kind: &str,
        caller: &Caller,
        command: Command,
    ) -> Result<Outcome, WireError> {
        let result = engine::execute(&self.shared, caller, command).await;
        self.shared.metrics.request(edge, kind, &result);
        result
    }

    /// Counts a request an edge refused before it became a command.
    pub fn count_refused(&self, edge: Edge, kind: &str, error: &WireError) {
        self.shared
            .metrics
            .request::<()>(edge, kind, &Err(error.clone()));
    }

    /// Counts an HTTP response by its route pattern and status.
    pub fn count_http_response(&self, route: &str, status: u16) {
        self.shared.metrics.http_response(route, status);
    }

    /// The request rate each client gets (per connection, or per credential on HTTP).
    pub fn rate(&self) -> RateLimit {
        self.shared.rate
    }

    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    pub fn installation(&self) -> &Installation {
        &self.shared.installation
    }

    /// What the core has counted, with the gauges read now (`/metrics` renders it).
    pub fn metrics(&self) -> crate::metrics::Snapshot {
        self.shared.metrics()
    }

    /// Whether the store answers (`/readyz`).
    pub async fn ready(&self) -> bool {
        let default = &self.shared.installation.default_service_sid;
        matches!(self.shared.store.service(default).await, Ok(Some(_)))
    }

    /// Webhook events dropped for `service_sid` in this run.
    pub fn webhooks_dropped(&self, service_sid: &str) -> u64 {
        self.shared.webhooks.dropped(service_sid)
    }

    /// From now on, sessions that end are the server going away, not their owners
    /// leaving: their ephemeral items wait for them to come back after a restart.
    pub fn stopping(&self) {
        self.shared.presence.stop();
    }
}

impl CoreTasks {
    /// Stops the reaper, lets the commit task finish what is queued (it ends once every
    /// `Core` clone is dropped, so drop them first), and flushes the store.
    pub async fn stop(mut self) {
        self.shutdown.send_replace(true);
        if let Some(reaper) = self.reaper.take() {
            let _ = reaper.await;
        }
        if let Some(expiry) = self.expiry.take() {
            let _ = expiry.await;
        }
        if let Some(commit) = self.commit.take() {
            let _ = commit.await;
        }
        if let Some(follower) = self.follower.take() {
            let _ = follower.await;
        }
        if let Err(e) = self.store.flush().await {
            warn!(error = %e, "final flush failed");
        }
    }
}

impl Drop for CoreTasks {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(reaper) = self.reaper.take() {
            reaper.abort();
        }
        if let Some(expiry) = self.expiry.take() {
            expiry.abort();
        }
        if let Some(commit) = self.commit.take() {
            commit.abort();
        }
        if let Some(follower) = self.follower.take() {
            follower.abort();
        }
    }
}
