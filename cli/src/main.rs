//! The `syncline` binary: `serve` runs the server (`syncline-server`); the other commands
//! are thin clients over `syncline-client` that print JSON, one object per line, on
//! stdout, and errors as one line `Code: message` on stderr with a per-code exit status.

mod output;

// glibc's malloc was a quarter of the server's CPU under write load (arena locks,
// consolidation); mimalloc's per-thread free lists take most of that away.
// `--features system-allocator` leaves the system's malloc in place, for heap profilers
// (heaptrack) that see only that one.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use syncline_client::{
    AdminConfig, Client, ClientConfig, ConnectionState, Error, ItemKey, Order, PageOptions, Rights,
    ServiceFlags, ServiceFlagsPatch, SubscribeOptions, SyncEventKind, TokenCreate, WriteOptions,
    Written,
};
use syncline_proto::ids::{is_sid, SERVICE_PREFIX};

// Everything `serve` and `auth-token rotate` take from the server library.
use syncline_core::RateLimit;
use syncline_server::config::rotate_auth_token;
use syncline_server::http::DEFAULT_HTTP_LISTEN;
use syncline_server::server::DEFAULT_LISTEN;
use syncline_server::{EtcdOptions, EtcdTls, Server, ServerOptions, StoreChoice};
use syncline_store_sled::{DEFAULT_CACHE_BYTES, DEFAULT_KEEP_FREE_BYTES};

/// Exit status for usage and local (non-server) failures.
const EXIT_USAGE: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "syncline",
    version,
    about = "Syncline: a self-hosted real-time sync store"
)]
struct Cli {
    /// admin.json written by the server on first start (the backend's credentials).
    #[arg(long, env = "SYNCLINE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Act as this access token's identity (empty: act as the backend).
    #[arg(long, env = "SYNCLINE_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Service (sid or unique name) the backend acts on; default: the `default` service.
    #[arg(long, env = "SYNCLINE_SERVICE", global = true)]
    service: Option<String>,
    /// Server address, for a token holder without a config file.
    #[arg(long, env = "SYNCLINE_SERVER", global = true)]
    server: Option<String>,
    /// CA certificate file, for a token holder without a config file.
    #[arg(long, env = "SYNCLINE_CA", global = true)]
    ca: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (creates the data directory, certificate and admin key on first start).
    Serve(Box<ServeArgs>),
    /// Mint an access token with the admin key.
    Token {
        #[arg(long)]
        identity: String,
        /// Lifetime in seconds (at most 86400).
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Documents: get, set, update, delete.
    #[command(subcommand)]
    Doc(DocCommand),
    /// Lists: ordered items with never-reused indices.
    #[command(subcommand)]
    List(ListCommand),
    /// Maps: items by string key.
    #[command(subcommand)]
    Map(MapCommand),
    /// Message streams: ephemeral messages to current subscribers.
    #[command(subcommand)]
    Stream(StreamCommand),
    /// Services (backend only): isolated namespaces with their own flags.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// API keys (backend only).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Per-object permissions for identities (backend only; matter when ACL is on).
    #[command(subcommand)]
    Permission(PermissionCommand),
    /// The installation's auth token (webhook signatures), run on the data directory.
    #[command(subcommand)]
    AuthToken(AuthTokenCommand),
    /// Print an object's state, then every change as it happens, until interrupted.
    Watch {
        name: String,
        /// Print only what came after this revision (or a snapshot if it is no longer known).
        #[arg(long)]
        since: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
enum AuthTokenCommand {
    /// Replace the auth token in the data directory (and its admin.json) and print it.
    /// Offline: stop the server first (it holds the store); it signs with the new token
    /// from its next start.
    Rotate {
        #[arg(long, default_value = "./syncline-data")]
        data: PathBuf,
    },
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[arg(long, default_value = "./syncline-data")]
    data: PathBuf,
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: std::net::SocketAddr,
    /// HTTPS address of the REST API (Twilio Sync v1), or `off`.
    #[arg(long, default_value = DEFAULT_HTTP_LISTEN)]
    http_listen: String,
    /// Certificate chain (PEM) instead of the self-signed one.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) for --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Acknowledge writes before they reach the disk (faster; a crash may lose the last ~0.5 s).
    #[arg(long)]
    relaxed: bool,
    /// How often expired objects are removed, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    reap_interval_ms: u64,
    /// How long a silent connection lives, in milliseconds: a client that vanished
    /// without closing is noticed (and its presence starts to end) this long after its
    /// last packet. The server pings idle clients at a third of it.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1_000..=600_000))]
    idle_timeout_ms: u64,
    /// Requests per second each connection may send (token bucket, burst twice this).
    /// The load harness raises it so that 64 writers can share a few connections.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    rate_limit: u32,
    /// Free space (MiB) kept on the data directory's file system: below it, writes are
    /// refused with `Unavailable` until space is freed; reads go on. 0: write until full.
    #[arg(long, default_value_t = DEFAULT_KEEP_FREE_BYTES >> 20)]
    keep_free_mib: u64,
    /// Upper bound (MiB) of the storage engine's page cache: recently read and written
    /// pages stay in memory up to it. Less saves memory on a small machine; reads that
    /// miss go to disk.
    #[arg(long, default_value_t = DEFAULT_CACHE_BYTES >> 20)]
    cache_mib: u64,
    /// The QUIC address (`host:port`) clients on other machines reach this node at, as
    /// the node list gives it (default: the address bound; set it when listening on
    /// 0.0.0.0 or behind NAT).
    #[arg(long)]
    advertise: Option<String>,
    /// The HTTPS base URL (`https://host:port`) to give in the node list.
    #[arg(long)]
    advertise_https: Option<String>,
    /// Where the data lives: `sled` (embedded, in --data; one node) or `etcd` (a shared
    /// etcd cluster, --etcd-endpoints; any number of nodes are one installation).
    #[arg(long, value_enum, default_value_t = StoreArg::Sled)]
    store: StoreArg,
    /// etcd client URLs, comma-separated (`http://127.0.0.1:2379,...`), for --store etcd.
    #[arg(long, value_delimiter = ',', required_if_eq("store", "etcd"))]
    etcd_endpoints: Vec<String>,
    /// Prefix of every key the installation keeps in etcd.
    #[arg(long, default_value = syncline_store_etcd::DEFAULT_PREFIX)]
    etcd_prefix: String,
    /// etcd user, when etcd's authentication is on (the password from
    /// SYNCLINE_ETCD_PASSWORD).
    #[arg(long, requires = "etcd_password")]
    etcd_user: Option<String>,
    #[arg(
        long,
        env = "SYNCLINE_ETCD_PASSWORD",
        hide_env_values = true,
        requires = "etcd_user"
    )]
    etcd_password: Option<String>,
    /// CA certificate (PEM) that signed etcd's, for `https://` endpoints.
    #[arg(long)]
    etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's `--client-cert-auth`.
    #[arg(long, requires_all = ["etcd_key", "etcd_ca"])]
    etcd_cert: Option<PathBuf>,
    /// Private key (PEM) for --etcd-cert.
    #[arg(long, requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// etcd's --max-txn-ops (128 by default): bounds the writes in one commit batch.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(16..))]
    etcd_max_txn_ops: u32,
    /// Seconds this node's registration (and its clients' presence) outlives it if it
    /// dies without leaving.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(i64).range(2..=60))]
    node_ttl_s: i64,
    /// Seconds between compactions of etcd's history, done by one node of the cluster
    /// (to the revision of one interval before); 0 for an etcd that compacts itself
    /// (`--auto-compaction-retention`).
    #[arg(long, default_value_t = 300)]
    etcd_compaction_interval_s: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum StoreArg {
    Sled,
    Etcd,
}

#[derive(Subcommand, Debug)]
enum DocCommand {
    Get {
        name: String,
    },
    /// Replace the value (creates the document if missing).
    Set {
        name: String,
        json: String,
        #[arg(long)]
        if_match: Option<u64>,
        /// Time to live in seconds (0: never expires).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Merge top-level keys into the value.
    Update {
        name: String,
        json: String,
        #[arg(long)]
        if_match: Option<u64>,
    },
    Delete {
        name: String,
        #[arg(long)]
        if_match: Option<u64>,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
enum OrderArg {
    #[default]
    Asc,
    Desc,
}

impl From<OrderArg> for Order {
    fn from(o: OrderArg) -> Order {
        match o {
            OrderArg::Asc => Order::Asc,
            OrderArg::Desc => Order::Desc,
        }
    }
}

#[derive(Args, Debug)]
struct PageArgs {
    #[arg(long, value_enum, default_value_t = OrderArg::Asc)]
    order: OrderArg,
    /// At most this many items (1..=1000); default: all, page by page.
    #[arg(long)]
    limit: Option<u32>,
}

#[derive(Subcommand, Debug)]
enum ListCommand {
    /// Create an empty list (`push` creates one too).
    Create {
        name: String,
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Append an item (creates the list if missing).
    Push {
        name: String,
        json: String,
        #[arg(long)]
        ttl: Option<u64>,
    },
    Get {
        name: String,
        index: u64,
    },
    /// Replace an item.
    Set {
        name: String,
        index: u64,
        json: String,
        #[arg(long)]
        if_match: Option<u64>,
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Merge top-level keys into an item.
    Update {
        name: String,
        index: u64,
        json: String,
        #[arg(long)]
        if_match: Option<u64>,
    },
    Remove {
        name: String,
        index: u64,
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// Print items, one per line.
    Items {
        name: String,
        /// First index (inclusive).
        #[arg(long)]
        from: Option<u64>,
        #[command(flatten)]
        page: PageArgs,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum MapCommand {
    /// Create an empty map (`set` creates one too).
    Create {
        name: String,
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Upsert an item (creates the map if missing).
    Set {
        name: String,
        key: String,
        json: String,
        #[arg(long)]
        if_match: Option<u64>,
        #[arg(long)]
        ttl: Option<u64>,
        /// Keep the item only while this command runs: it stays connected until
        /// interrupted, and the server removes the item when its identity's last
        /// connection is gone (needs --token).
        #[arg(long, conflicts_with_all = ["if_match", "ttl"])]
        ephemeral: bool,
    },
    /// Merge top-level keys into an item.
    Update {
        name: String,
        key: String,
        json: String,
        #[arg(long)]
        if_match: Option<u64>,
    },
    Get {
        name: String,
        key: String,
    },
    Remove {
        name: String,
        key: String,
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// Print items ordered by key, one per line.
    Items {
        name: String,
        /// First key (inclusive).
        #[arg(long)]
        from: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum StreamCommand {
    Create {
        name: String,
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Send a message (JSON, at most 4 KiB); creates the stream if missing.
    Publish {
        name: String,
        json: String,
    },
    Delete {
        name: String,
    },
}

#[derive(Args, Debug, Default)]
struct FlagArgs {
    #[arg(long)]
    acl_enabled: Option<bool>,
    #[arg(long)]
    webhook_url: Option<String>,
    #[arg(long)]
    webhooks_from_backend: Option<bool>,
    #[arg(long)]
    reachability_webhooks_enabled: Option<bool>,
    #[arg(long)]
    reachability_debouncing_enabled: Option<bool>,
    /// 1000..=30000
    #[arg(long)]
    reachability_debouncing_window_ms: Option<u32>,
    /// `own`: token holders may create objects (and own them); `none`: only the backend
    /// creates them, so no identity can claim a name first.
    #[arg(long)]
    token_create: Option<TokenCreate>,
    /// A label for people (`update`: an empty one clears it).
    #[arg(long)]
    friendly_name: Option<String>,
}

#[derive(Subcommand, Debug)]
enum ServiceCommand {
    Create {
        name: String,
        /// Turn on per-identity access control.
        #[arg(long)]
        acl_enabled: bool,
        #[arg(long)]
        webhook_url: Option<String>,
        /// `own` (default): token holders may create objects; `none`: only the backend.
        #[arg(long, default_value = "own")]
        token_create: TokenCreate,
    },
    List,
    /// A service by sid or unique name. (The field is not called `service`: that id
    /// belongs to the global `--service` option.)
    Get {
        #[arg(value_name = "SERVICE")]
        target: String,
    },
    /// Change flags, e.g. `--acl-enabled true`.
    Update {
        #[arg(value_name = "SERVICE")]
        target: String,
        #[command(flatten)]
        flags: FlagArgs,
    },
    /// Delete the service with every object and permission in it.
    Delete {
        #[arg(value_name = "SERVICE")]
        target: String,
    },
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Prints {"sid","secret"}: the only time the secret is shown.
    Create {
        #[arg(long)]
        name: Option<String>,
    },
    List,
    /// Revoke: tokens it signed are refused at once, live connections too.
    Revoke {
        sid: String,
    },
}

#[derive(Subcommand, Debug)]
enum PermissionCommand {
    /// Set exactly the rights given (none given: no rights).
    Grant {
        object: String,
        /// An identity, or `*` for every identity of the service.
        identity: String,
        #[arg(long)]
        read: bool,
        #[arg(long)]
        write: bool,
        #[arg(long)]
        manage: bool,
    },
    /// Remove all of the identity's rights on the object.
    Revoke {
        object: String,
        identity: String,
    },
    List {
        object: String,
    },
}

fn main() {
    std::process::exit(run_command_line());
}

/// Runs the command line; returns the process exit status.
fn run_command_line() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { 0 };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Internal: cannot start the runtime: {e}");
            return 1;
        }
    };
    let result = runtime.block_on(async {
        let opened = Opened::default();
        let result = run(cli, &opened).await;
        opened.shutdown().await;
        result
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            e.code().exit_code()
        }
    }
}

async fn run(cli: Cli, opened: &Opened) -> Result<(), Error> {
    match &cli.command {
        Command::Serve(args) => serve(args).await,
        Command::AuthToken(AuthTokenCommand::Rotate { data }) => {
            let token = rotate_auth_token(data)
                .await
                .map_err(|e| Error::Config(format!("{e} (is the server still running?)")))?;
            println!("{token}");
            Ok(())
        }
        Command::Token { identity, ttl } => {
            let admin = admin_config(&cli)?;
            let service = service_sid(&cli, &admin).await?;
            let token = syncline_client::token::mint(
                &admin.api_key_sid,
                &admin.api_key_secret,
                &admin.account_sid,
                &service,
                identity,
                *ttl,
                syncline_client::token::now_s(),
            );
            println!("{token}");
            Ok(())
        }
        Command::Doc(cmd) => {
            let client = connect(&cli, opened).await?;
            let doc = |name: &str| client.document(name);
            let written = match cmd {
                DocCommand::Get { name } => {
                    output::line(&output::document(&doc(name).get().await?));
                    return Ok(());
                }
                DocCommand::Set {
                    name,
                    json,
                    if_match,
                    ttl,
                } => {
                    let options = write_options(*if_match, *ttl);
                    doc(name).set_with(&parse_json(json)?, options).await?
                }
                DocCommand::Update {
                    name,
                    json,
                    if_match,
                } => {
                    let options = write_options(*if_match, None);
                    doc(name).update_with(&parse_json(json)?, options).await?
                }
                DocCommand::Delete { name, if_match } => {
                    let options = write_options(*if_match, None);
                    deleted(name, doc(name).delete_with(options).await?);
                    return Ok(());
                }
            };
            note_foreign_creator(&client, &written);
            output::line(&output::written(&written, output::document));
            Ok(())
        }
        Command::List(cmd) => {
            let client = connect(&cli, opened).await?;
            list_command(&client, cmd).await
        }
        Command::Map(cmd) => {
            let client = connect(&cli, opened).await?;
            map_command(&client, cmd).await
        }
        Command::Stream(cmd) => {
            let client = connect(&cli, opened).await?;
            match cmd {
                StreamCommand::Create { name, ttl } => {
                    let o = client.stream(name).create(*ttl).await?;
                    output::line(&output::object(&o));
                }
                StreamCommand::Publish { name, json } => {
                    let sequence = client.stream(name).publish(&parse_json(json)?).await?;
                    output::line(&serde_json::json!({"published": name, "sequence": sequence}));
                }
                StreamCommand::Delete { name } => {
                    deleted(name, client.stream(name).delete().await?)
                }
            }
            Ok(())
        }
        Command::Service(cmd) => {
            let client = connect(&cli, opened).await?;
            match cmd {
                ServiceCommand::Create {
                    name,
                    acl_enabled,
                    webhook_url,
                    token_create,
                } => {
                    let flags = ServiceFlags {
                        acl_enabled: *acl_enabled,
                        webhook_url: webhook_url.clone(),
                        token_create: *token_create,
                        ..ServiceFlags::default()
                    };
                    output::line(&output::json(
                        &client.create_service(Some(name), flags).await?,
                    ));
                }
                ServiceCommand::List => {
                    for s in client.services().await? {
                        output::line(&output::json(&s));
                    }
                }
                ServiceCommand::Get { target } => {
                    output::line(&output::json(&client.service(target).await?))
                }
                ServiceCommand::Update { target, flags } => {
                    let patch = ServiceFlagsPatch {
                        acl_enabled: flags.acl_enabled,
                        // An empty URL clears it.
                        webhook_url: flags
                            .webhook_url
                            .clone()
                            .map(|u| Some(u).filter(|u| !u.is_empty())),
                        webhooks_from_backend: flags.webhooks_from_backend,
                        reachability_webhooks_enabled: flags.reachability_webhooks_enabled,
                        reachability_debouncing_enabled: flags.reachability_debouncing_enabled,
                        reachability_debouncing_window_ms: flags.reachability_debouncing_window_ms,
                        token_create: flags.token_create,
                        friendly_name: flags.friendly_name.clone(),
                    };
                    output::line(&output::json(&client.update_service(target, patch).await?));
                }
                ServiceCommand::Delete { target } => {
                    client.delete_service(target).await?;
                    output::line(&serde_json::json!({"deleted": target}));
                }
            }
            Ok(())
        }
        Command::Key(cmd) => {
            let client = connect(&cli, opened).await?;
            match cmd {
                KeyCommand::Create { name } => {
                    let key = client.create_key(name.as_deref()).await?;
                    output::line(&serde_json::json!({"sid": key.sid, "secret": key.secret}));
                }
                KeyCommand::List => {
                    for k in client.keys().await? {
                        output::line(&output::json(&k));
                    }
                }
                KeyCommand::Revoke { sid } => {
                    output::line(&output::json(&client.revoke_key(sid).await?))
                }
            }
            Ok(())
        }
        Command::Permission(cmd) => {
            let client = connect(&cli, opened).await?;
            match cmd {
                PermissionCommand::Grant {
                    object,
                    identity,
                    read,
                    write,
                    manage,
                } => {
                    let rights = Rights {
                        read: *read,
                        write: *write,
                        manage: *manage,
                    };
                    output::line(&output::json(
                        &client.grant(object, identity, rights).await?,
                    ));
                }
                PermissionCommand::Revoke { object, identity } => {
                    client.revoke(object, identity).await?;
                    output::line(&serde_json::json!({"revoked": identity, "object": object}));
                }
                PermissionCommand::List { object } => {
                    for p in client.permissions(object).await? {
                        output::line(&output::json(&p));
                    }
                }
            }
            Ok(())
        }
        Command::Watch { name, since } => {
            let client = opened
                .keep(Client::connect(config(&cli)?.with_keep_alive(WATCH_KEEP_ALIVE)).await?);
            watch(&client, name, *since).await
        }
    }
}

async fn watch(client: &Client, name: &str, since: Option<u64>) -> Result<(), Error> {
    let options = SubscribeOptions {
        since,
        window: None,
    };
    let mut sub = client.subscribe(name, options).await?;
    // The client reconnects and resumes by itself; the user hears about it on stderr,
    // while stdout carries only the object's lines (what was missed comes there, as
    // the events replayed or a snapshot line, or a stream's `missed` line).
    let mut states = client.state_changes();
    // One listener for the whole watch: a `ctrl_c()` made anew each turn of the loop
    // misses a SIGINT that arrives while a line is being printed.
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    let mut first = true;
    loop {
        let event = tokio::select! {
            e = sub.next() => e,
            Some(state) = states.next() => {
                note_state(&state);
                continue;
            }
            _ = &mut interrupted => return Ok(()),
        };
        let Some(event) = event else { return Ok(()) };
        let event = event?;
        if event.kind == SyncEventKind::Snapshot {
            // Without --since, the opening snapshot is the current-state line (and the
            // items); later snapshots (resyncs) are marked as such.
            let mut lines = output::replica_lines(sub.replica());
            let opening = first && since.is_none();
            if let (false, Some(state_line)) = (opening, lines.first_mut()) {
                *state_line = output::event(&event, &sub);
            }
            lines.iter().for_each(output::line);
        } else {
            output::line(&output::event(&event, &sub));
        }
        first = false;
        match event.kind {
            SyncEventKind::Removed { .. } => return Ok(()),
            SyncEventKind::Ended(e) => return Err(Error::Server(e)),
            _ => {}
        }
    }
}

/// One stderr line per connection change `watch` lives through.
fn note_state(state: &ConnectionState) {
    match state {
        ConnectionState::Disconnected { retry_in } => {
            eprintln!("note: disconnected; reconnecting in {retry_in:.1?}")
        }
        ConnectionState::Connected => eprintln!("note: reconnected; resuming"),
        ConnectionState::Denied { code, reason } => {
            eprintln!("note: the server refused the connection: {code}: {reason}")
        }
        ConnectionState::Connecting | ConnectionState::Closed => {}
    }
}

fn deleted(name: &str, revision: u64) {
    output::line(&serde_json::json!({"deleted": name, "revision": revision}));
}

/// Prints items page by page: one page of `limit` if given, else every item.
async fn print_items<F, Fut>(
    mut page_at: F,
    from: Option<ItemKey>,
    page: &PageArgs,
) -> Result<(), Error>
where
    F: FnMut(PageOptions) -> Fut,
    Fut: std::future::Future<Output = Result<syncline_client::Page, Error>>,
{
    let mut from = from;
    loop {
        let p = page_at(PageOptions {
            from: from.take(),
            order: page.order.into(),
            limit: page.limit.unwrap_or(1000),
        })
        .await?;
        p.items.iter().for_each(|i| output::line(&output::item(i)));
        match p.next {
            Some(next) if page.limit.is_none() => from = Some(next),
            _ => return Ok(()),
        }
    }
}

/// A backend that writes into an object a token holder created is told so on stderr:
/// that identity keeps full access to it (under ACL), which the backend may not expect.
fn note_foreign_creator<T>(client: &Client, written: &Written<T>) {
    if client.welcome().identity.is_none() {
        if let Some(identity) = written.created_by_identity() {
            eprintln!(
                "note: {} was created by identity {identity:?}, not by the backend; \
                 under ACL it keeps full access to it",
                written.object_sid
            );
        }
    }
}

async fn list_command(client: &Client, cmd: &ListCommand) -> Result<(), Error> {
    let written = match cmd {
        ListCommand::Create { name, ttl } => {
            output::line(&output::object(&client.list(name).create(*ttl).await?));
            return Ok(());
        }
        ListCommand::Push { name, json, ttl } => {
            client
                .list(name)
                .push_with(&parse_json(json)?, write_options(None, *ttl))
                .await?
        }
        ListCommand::Get { name, index } => {
            output::line(&output::item(&client.list(name).get(*index).await?));
            return Ok(());
        }
        ListCommand::Set {
            name,
            index,
            json,
            if_match,
            ttl,
        } => {
            let options = write_options(*if_match, *ttl);
            client
                .list(name)
                .set_with(*index, &parse_json(json)?, options)
                .await?
        }
        ListCommand::Update {
            name,
            index,
            json,
            if_match,
        } => {
            client
                .list(name)
                .update_with(*index, &parse_json(json)?, write_options(*if_match, None))
                .await?
        }
        ListCommand::Remove {
            name,
            index,
            if_match,
        } => {
            let options = write_options(*if_match, None);
            let revision = client.list(name).remove_with(*index, options).await?;
            output::line(&serde_json::json!({"removed": index, "revision": revision}));
            return Ok(());
        }
        ListCommand::Items { name, from, page } => {
            let list = client.list(name);
            return print_items(|o| list.items(o), from.map(ItemKey::Index), page).await;
        }
        ListCommand::Delete { name } => {
            deleted(name, client.list(name).delete().await?);
            return Ok(());
        }
    };
    note_foreign_creator(client, &written);
    output::line(&output::written(&written, output::item));
    Ok(())
}

async fn map_command(client: &Client, cmd: &MapCommand) -> Result<(), Error> {
    let written = match cmd {
        MapCommand::Create { name, ttl } => {
            output::line(&output::object(&client.map(name).create(*ttl).await?));
            return Ok(());
        }
        MapCommand::Set {
            name,
            key,
            json,
            ephemeral: true,
            ..
        } => {
            let map = client.map(name);
            let data = parse_json(json)?;
            let mut states = client.state_changes();
            let written = map.set_ephemeral(key, &data).await?;
            output::line(&output::written(&written, output::item));
            // The item lives as long as this command: hold the connection until told to
            // stop. The client reconnects by itself after a drop; the item may have
            // gone with the debouncing window meanwhile, so it is set again each time.
            loop {
                tokio::select! {
                    _ = shutdown_signal() => {
                        // Closing tells the server at once; a process that just exits
                        // is noticed only after the server's idle timeout.
                        client.close();
                        // The close leaves from quinn's driver task: let it go out.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        return Ok(());
                    }
                    state = states.next() => {
                        let Some(state) = state else {
                            return Err(Error::Closed {
                                code: syncline_client::ErrorCode::Unavailable,
                                reason: "the client stopped".into(),
                            });
                        };
                        note_state(&state);
                        match state {
                            ConnectionState::Connected => {
                                let written = map.set_ephemeral(key, &data).await?;
                                output::line(&output::written(&written, output::item));
                            }
                            ConnectionState::Denied { code, reason } => {
                                return Err(Error::Closed { code, reason });
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        MapCommand::Set {
            name,
            key,
            json,
            if_match,
            ttl,
            ephemeral: false,
        } => {
            let options = write_options(*if_match, *ttl);
            client
                .map(name)
                .set_with(key, &parse_json(json)?, options)
                .await?
        }
        MapCommand::Update {
            name,
            key,
            json,
            if_match,
        } => {
            client
                .map(name)
                .update_with(key, &parse_json(json)?, write_options(*if_match, None))
                .await?
        }
        MapCommand::Get { name, key } => {
            output::line(&output::item(&client.map(name).get(key).await?));
            return Ok(());
        }
        MapCommand::Remove {
            name,
            key,
            if_match,
        } => {
            let options = write_options(*if_match, None);
            let revision = client.map(name).remove_with(key, options).await?;
            output::line(&serde_json::json!({"removed": key, "revision": revision}));
            return Ok(());
        }
        MapCommand::Items { name, from, page } => {
            let map = client.map(name);
            return print_items(|o| map.items(o), from.clone().map(ItemKey::Key), page).await;
        }
        MapCommand::Delete { name } => {
            deleted(name, client.map(name).delete().await?);
            return Ok(());
        }
    };
    note_foreign_creator(client, &written);
    output::line(&output::written(&written, output::item));
    Ok(())
}

/// The write options the `--if-match` and `--ttl` flags ask for.
fn write_options(if_match: Option<u64>, ttl: Option<u64>) -> WriteOptions {
    WriteOptions { if_match, ttl }
}

fn parse_json(s: &str) -> Result<Value, Error> {
    serde_json::from_str(s).map_err(|e| Error::Json(format!("argument is not valid JSON: {e}")))
}

fn config_path(cli: &Cli) -> PathBuf {
    cli.config
        .clone()
        .unwrap_or_else(|| PathBuf::from("./syncline-data/admin.json"))
}

fn admin_config(cli: &Cli) -> Result<AdminConfig, Error> {
    Ok(AdminConfig::load(&config_path(cli))?)
}

fn token(cli: &Cli) -> Option<&str> {
    cli.token.as_deref().filter(|t| !t.is_empty())
}

/// The service sid for minting: the given sid, the default service, or a lookup by name.
async fn service_sid(cli: &Cli, admin: &AdminConfig) -> Result<String, Error> {
    match cli.service.as_deref() {
        None => Ok(admin.default_service_sid.clone()),
        Some(s) if is_sid(s) && s.starts_with(SERVICE_PREFIX) => Ok(s.to_owned()),
        Some(name) => {
            let config = ClientConfig::from_admin(admin)?.service(name);
            let client = Client::connect(config).await?;
            let sid = client.welcome().service_sid.clone();
            client.shutdown().await;
            Ok(sid)
        }
    }
}

async fn connect(cli: &Cli, opened: &Opened) -> Result<Client, Error> {
    Ok(opened.keep(Client::connect(config(cli)?).await?))
}

/// The clients a command opened. They are shut down before the process exits, so the
/// server hears of it at once instead of at its idle timeout (which would also keep a
/// token identity present that long).
#[derive(Default)]
struct Opened(std::sync::Mutex<Vec<Client>>);

impl Opened {
    fn keep(&self, client: Client) -> Client {
        if let Ok(mut all) = self.0.lock() {
            all.push(client.clone());
        }
        client
    }

    async fn shutdown(&self) {
        let all = self
            .0
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default();
        for client in all {
            client.shutdown().await;
        }
    }
}

/// How often `watch` keeps its connection alive when nothing happens: a watch is one
/// long-lived connection a person is looking at, so after a server crash and restart
/// it should be back within seconds, whenever the crash happened (the restarted
/// server answers the keep-alive with a stateless reset).
const WATCH_KEEP_ALIVE: Duration = Duration::from_secs(2);

fn config(cli: &Cli) -> Result<ClientConfig, Error> {
    let config = match token(cli) {
        Some(token) => {
            let admin = if cli.server.is_none() || cli.ca.is_none() {
                Some(admin_config(cli).map_err(|e| {
                    Error::Config(format!(
                        "{e}; a token holder without a config file gives --server and --ca"
                    ))
                })?)
            } else {
                None
            };
            let server = cli
                .server
                .clone()
                .or_else(|| admin.as_ref().map(|a| a.server.clone()))
                .unwrap_or_default();
            let ca = cli
                .ca
                .clone()
                .or_else(|| admin.as_ref().map(|a| a.ca_file.clone()))
                .unwrap_or_default();
            ClientConfig::with_token(&server, ca, token)?
        }
        None => {
            let admin = admin_config(cli)?;
            let mut config = ClientConfig::from_admin(&admin)?;
            if let Some(server) = &cli.server {
                config = ClientConfig {
                    ..ClientConfig::new(
                        server,
                        cli.ca.as_ref().unwrap_or(&admin.ca_file),
                        config.credential,
                    )?
                };
            }
            match &cli.service {
                Some(s) => config.service(s.clone()),
                None => config,
            }
        }
    };
    Ok(config)
}

async fn serve(args: &ServeArgs) -> Result<(), Error> {
    init_tracing();
    let mut options = ServerOptions::new(&args.data);
    options.listen = args.listen;
    options.http_listen = match args.http_listen.as_str() {
        "off" => None,
        addr => Some(
            addr.parse()
                .map_err(|e| Error::Config(format!("--http-listen {addr:?}: {e}")))?,
        ),
    };
    options.cert = args.cert.clone();
    options.key = args.key.clone();
    options.durable = !args.relaxed;
    options.reap_interval = Duration::from_millis(args.reap_interval_ms.max(10));
    options.idle_timeout = Duration::from_millis(args.idle_timeout_ms);
    options.keep_free_bytes = args.keep_free_mib.saturating_mul(1 << 20);
    options.cache_bytes = args.cache_mib.saturating_mul(1 << 20);
    options.rate = RateLimit {
        per_second: f64::from(args.rate_limit),
        burst: 2.0 * f64::from(args.rate_limit),
    };
    options.advertise = args.advertise.clone();
    options.advertise_https = args.advertise_https.clone();
    if args.store == StoreArg::Etcd {
        let mut etcd = EtcdOptions::new(args.etcd_endpoints.clone());
        etcd.prefix = args.etcd_prefix.clone();
        etcd.user = args.etcd_user.clone().zip(args.etcd_password.clone());
        etcd.max_txn_ops = args.etcd_max_txn_ops as usize;
        etcd.node_ttl_s = args.node_ttl_s;
        etcd.compaction_interval = Duration::from_secs(args.etcd_compaction_interval_s);
        etcd.tls = args.etcd_ca.clone().map(|ca_file| EtcdTls {
            ca_file,
            client: args.etcd_cert.clone().zip(args.etcd_key.clone()),
        });
        options.store = StoreChoice::Etcd(Box::new(etcd));
    }
    let server = Server::start(options)
        .await
        .map_err(|e| Error::Config(e.to_string()))?;
    shutdown_signal().await;
    tracing::info!("signal received; shutting down");
    server.shutdown().await;
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
