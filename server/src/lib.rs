//! Syncline server: the edges and the wiring. QUIC (`net`), WebSocket (`ws`, for
//! browsers; both run the request loop in `protocol`) and HTTP (`http`: Twilio Sync v1
//! REST, server-sent events, `/metrics`) translate into the core's typed
//! commands and render its answers and watches; `config` bootstraps the data directory,
//! TLS and `admin.json`; `server` starts and stops it all over the sled store. Nothing
//! here decides access, limits, revisions or sessions: that is `syncline_core`.

pub mod config;
pub mod http;
pub mod net;
pub mod protocol;
pub mod server;
pub mod webhook_client;
pub mod ws;

pub use server::{Server, ServerError, ServerOptions, StoreChoice};
pub use syncline_core::{now_ms, now_s};
pub use syncline_store_etcd::{EtcdOptions, EtcdTls};
