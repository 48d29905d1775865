//! Syncline client: connect over QUIC with an access token or an API key, read and write
//! documents, lists, maps and message streams, and subscribe to them with a local replica
//! that equals the server's value after every event.
//!
//! The guide, in the order an app meets it:
//!
//! - [`ClientConfig`]: where to connect, the credential, a token provider
//!   ([`ClientConfig::with_token_provider`]), deadlines and the [`ReconnectPolicy`].
//! - [`Client`]: one per app; it reconnects by itself and says where it stands
//!   ([`Client::state`], [`Client::state_changes`]).
//! - Handles, which do no IO until used: [`Document`], [`List`], [`Map`], [`Stream`].
//!   Every write has one options style, `x(..)` and `x_with(.., `[`WriteOptions`]`)`.
//! - [`Subscription`]: a snapshot, then every change in revision order, applied to its
//!   [`Replica`] first; it survives lost connections without duplicates or gaps, and is a
//!   `futures::Stream`.
//! - Offline: [`ClientConfig::with_offline_writes`] queues writes made while
//!   disconnected, each conditional on the revision it was based on (a moved base comes
//!   back as [`Error::WriteConflict`] with both values); [`Replica::save`] and
//!   [`Replica::load`] keep a replica in a file, and [`Client::start`] with
//!   [`Client::resume`] shows it and catches up, server or not
//!   (`client/examples/offline.rs`).
//! - Presence: [`Map::set_ephemeral`] and [`List::push_ephemeral`] write items that live
//!   as long as this identity has a live connection (see `client/examples/presence.rs`).
//! - [`Error`]: every failure has a stable [`ErrorCode`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), syncline_client::Error> {
//! use syncline_client::{Client, ClientConfig};
//! let config = ClientConfig::with_token("127.0.0.1:7400", "syncline-data/tls/cert.pem", "eyJ...")?;
//! let client = Client::connect(config).await?;
//! let doc = client.document("settings");
//! doc.set(&serde_json::json!({"theme": "dark"})).await?;
//! let mut sub = doc.subscribe().await?;
//! while let Some(event) = sub.next().await {
//!     let event = event?;
//!     println!("rev {} local={} value={:?}", event.revision, event.is_local, sub.document());
//! }
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

// The modules stand in three layers and import downward only, so that each layer reads
// (and changes) without the ones above it; ARCHITECTURE.md draws them:
// - ground: config, replica (persist: its file), nodes (which node to try), link,
//   connection (the core);
// - keeping a client going: reconnect (the supervisor), offline (the write queue);
// - what the app holds: client, subscription, document, collections, admin.
mod admin;
mod client;
mod collections;
mod config;
mod connection;
mod document;
mod link;
mod nodes;
mod offline;
mod persist;
mod reconnect;
mod replica;
mod subscription;
pub mod token;

pub use syncline_proto::udp;

pub use client::Client;
pub use collections::{List, Map, Page, PageOptions, Stream};
pub use config::{
    ClientConfig, ReconnectPolicy, TokenFuture, TokenProvider, DEFAULT_OFFLINE_WAIT,
    DEFAULT_REQUEST_TIMEOUT,
};
pub use connection::{ConnectionState, StateChanges, TokenState, TOKEN_WARNING_S};
pub use document::{Document, TypedDocument, WriteOptions, Written};
pub use offline::{AttemptedWrite, ServerValue, WriteConflict};
pub use persist::REPLICA_FORMAT_VERSION;
pub use replica::{CollectionReplica, DocumentState, Item, Replica};
pub use subscription::{SubscribeOptions, Subscription, SyncEvent, SyncEventKind};
pub use syncline_proto::admin_config::AdminConfig;
pub use syncline_proto::{
    Credential, ErrorCode, ItemKey, KeyInfo, NodeInfo, ObjectInfo, ObjectKind, Order,
    PermissionInfo, Reason, Rights, ServiceFlags, ServiceFlagsPatch, ServiceInfo, TokenCreate,
    WireError, SYSTEM_ACTOR,
};

use syncline_proto::close_code;

/// Everything a client call can fail with; [`Error::code`] gives the stable code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused the request; `code` says why. A request the server could only
    /// refuse is refused by the client before sending, in the server's terms: one over
    /// the server's frame limit (`Welcome::max_frame_bytes`) is `TooLarge`.
    #[error("{0}")]
    Server(#[from] WireError),
    /// The server closed the connection (token expired, auth failed, shutting down).
    #[error("{code}: connection closed by the server ({reason})")]
    Closed {
        /// Why: `TokenExpired`, `Unauthorized`, `Unavailable` (going away), ...
        code: ErrorCode,
        /// The server's words.
        reason: String,
    },
    /// The connection could not be made or was lost (`Unavailable`).
    #[error("Unavailable: connection failed: {0}")]
    Connection(String),
    /// The configuration is unusable: a CA file, an address (`InvalidArgument`).
    #[error("InvalidArgument: configuration: {0}")]
    Config(String),
    /// A JSON argument is not valid JSON (`InvalidArgument`).
    #[error("InvalidArgument: {0}")]
    Json(String),
    /// The server answered something this client does not understand (`Internal`).
    #[error("Internal: protocol error: {0}")]
    Protocol(String),
    /// A write queued while offline met a changed base once sent: another writer
    /// changed (or deleted) what it was based on, the server kept that, and nothing was
    /// written. Carries both values (`Conflict`, like a failed `if_match`). Only writes
    /// queued with [`ClientConfig::with_offline_writes`] end this way; a write sent
    /// while connected keeps failing with [`Error::Server`] and code `Conflict`.
    #[error("Conflict: {0}")]
    WriteConflict(Box<WriteConflict>),
    /// A replica file could not be used: not a replica, damaged, or written by a newer
    /// client ([`Replica::load`]) (`InvalidArgument`).
    #[error("InvalidArgument: replica file {}: {reason}", path.display())]
    ReplicaFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A replica file could not be read or written: missing, no permission, disk full
    /// (`Unavailable`, as the server answers its own storage errors).
    #[error("Unavailable: replica file {}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
}

impl Error {
    /// The stable error code, for callers that branch on it (and the CLI's exit code).
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Server(e) => e.code,
            Error::Closed { code, .. } => *code,
            Error::Connection(_) => ErrorCode::Unavailable,
            Error::Config(_) | Error::Json(_) | Error::ReplicaFile { .. } => {
                ErrorCode::InvalidArgument
            }
            Error::Protocol(_) => ErrorCode::Internal,
            Error::WriteConflict(_) => ErrorCode::Conflict,
            Error::Io { .. } => ErrorCode::Unavailable,
        }
    }

    /// For `Conflict`: the current revision (of the object, or for an item write of the
    /// item); `None` when a [`WriteConflict`] found it deleted.
    pub fn current_revision(&self) -> Option<u64> {
        match self {
            Error::Server(e) => e.current_revision,
            Error::WriteConflict(c) => c.current.revision(),
            _ => None,
        }
    }

    /// The conflict of a write queued while offline, with both values.
    pub fn write_conflict(&self) -> Option<&WriteConflict> {
        match self {
            Error::WriteConflict(c) => Some(c),
            _ => None,
        }
    }

    pub(crate) fn from_connection(e: &quinn::ConnectionError) -> Error {
        match e {
            quinn::ConnectionError::ApplicationClosed(close) => {
                let code = match close.error_code.into_inner() as u32 {
                    close_code::TOKEN_EXPIRED => ErrorCode::TokenExpired,
                    close_code::UNAUTHORIZED => ErrorCode::Unauthorized,
                    close_code::PROTOCOL_ERROR => ErrorCode::InvalidArgument,
                    _ => ErrorCode::Unavailable,
                };
                Error::Closed {
                    code,
                    reason: String::from_utf8_lossy(&close.reason).into_owned(),
                }
            }
            other => Error::Connection(other.to_string()),
        }
    }
}

/// An `Unavailable` error with `message`.
pub(crate) fn unavailable(message: impl Into<String>) -> Error {
    Error::Server(WireError::new(ErrorCode::Unavailable, message))
}

/// An answer that does not fit the request: the server and this client disagree on
/// the protocol.
pub(crate) fn unexpected(r: syncline_proto::Response) -> Error {
    Error::Protocol(format!("unexpected response {r:?}"))
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<syncline_proto::admin_config::AdminConfigError> for Error {
    fn from(e: syncline_proto::admin_config::AdminConfigError) -> Self {
        Error::Config(e.0)
    }
}
