//! The `syncline` command line: `serve` runs the server; the other commands are thin
//! clients over `syncline-client` that print JSON, one object per line, on stdout, and
//! errors as one line `Code: message` on stderr with a per-code exit status.

mod output;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use syncline_client::{AdminConfig, Client, ClientConfig, DocumentEventKind, Error, WriteOptions};
use syncline_proto::ids::{is_sid, SERVICE_PREFIX};

use crate::server::{Server, ServerOptions, DEFAULT_LISTEN};

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
    Serve(ServeArgs),
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
    /// Print an object's state, then every change as it happens, until interrupted.
    Watch {
        name: String,
        /// Print only what came after this revision (or a snapshot if it is no longer known).
        #[arg(long)]
        since: Option<u64>,
    },
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[arg(long, default_value = "./syncline-data")]
    data: PathBuf,
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: std::net::SocketAddr,
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

/// Runs the command line; returns the process exit status.
pub fn main() -> i32 {
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
    let result = runtime.block_on(run(cli));
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            e.code().exit_code()
        }
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    match &cli.command {
        Command::Serve(args) => serve(args).await,
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
            let client = connect(&cli).await?;
            let doc = |name: &str| client.document(name);
            let state = match cmd {
                DocCommand::Get { name } => doc(name).get().await?,
                DocCommand::Set {
                    name,
                    json,
                    if_match,
                    ttl,
                } => {
                    let options = WriteOptions {
                        if_match: *if_match,
                        ttl: *ttl,
                    };
                    doc(name).set_with(&parse_json(json)?, options).await?
                }
                DocCommand::Update {
                    name,
                    json,
                    if_match,
                } => doc(name).update_with(&parse_json(json)?, *if_match).await?,
                DocCommand::Delete { name, if_match } => {
                    let revision = doc(name).delete_with(*if_match).await?;
                    output::line(&serde_json::json!({"deleted": name, "revision": revision}));
                    return Ok(());
                }
            };
            output::line(&output::document(&state));
            Ok(())
        }
        Command::Watch { name, since } => {
            let client = connect(&cli).await?;
            watch(&client, name, *since).await
        }
    }
}

async fn watch(client: &Client, name: &str, since: Option<u64>) -> Result<(), Error> {
    let doc = client.document(name);
    let mut sub = match since {
        Some(rev) => doc.subscribe_since(rev).await?,
        None => doc.subscribe().await?,
    };
    let mut first = true;
    loop {
        let event = tokio::select! {
            e = sub.next() => e,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(event) = event else { return Ok(()) };
        let event = event?;
        // Without --since, the opening snapshot is the current-state line.
        if first && since.is_none() && event.kind == DocumentEventKind::Snapshot {
            if let Some(state) = sub.replica() {
                output::line(&output::document(state));
            }
        } else {
            output::line(&output::event(&event, sub.replica(), sub.object_sid()));
        }
        first = false;
        match event.kind {
            DocumentEventKind::Removed { .. } => return Ok(()),
            DocumentEventKind::Ended(e) => return Err(Error::Server(e)),
            _ => {}
        }
    }
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
    AdminConfig::load(&config_path(cli))
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
            client.close();
            Ok(sid)
        }
    }
}

async fn connect(cli: &Cli) -> Result<Client, Error> {
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
    Client::connect(config).await
}

async fn serve(args: &ServeArgs) -> Result<(), Error> {
    init_tracing();
    let mut options = ServerOptions::new(&args.data);
    options.listen = args.listen;
    options.cert = args.cert.clone();
    options.key = args.key.clone();
    options.durable = !args.relaxed;
    options.reap_interval = Duration::from_millis(args.reap_interval_ms.max(10));
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
