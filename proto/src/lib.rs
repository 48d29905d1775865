//! Syncline's wire protocol: message types, error codes, ids, limits and framing.
//!
//! This crate does no IO (no sockets, no tokio): the server and the client both build on
//! it, and it can be unit-tested and fuzzed on byte slices alone. The `io` feature adds
//! the two things both sides need that touch the system: the `admin.json` format with
//! its loader, and UDP socket setup. See [`frame`] for the
//! byte layout and [`message`] for what travels in a frame.
//!
//! ```
//! use syncline_proto::{frame, FrameDecoder, Request, RequestFrame};
//!
//! // Client side: one request, as bytes for the request stream.
//! let wire = frame::encode(&RequestFrame { id: 1, request: Request::Ping });
//!
//! // Server side: feed bytes as they arrive, take out whole frame bodies, decode them.
//! let mut decoder = FrameDecoder::new(64 * 1024);
//! decoder.extend(&wire);
//! let body = decoder.next_frame().unwrap().expect("one whole frame");
//! let frame: RequestFrame = frame::decode(&body, decoder.max()).unwrap();
//! assert_eq!(frame.request, Request::Ping);
//! ```

#![deny(missing_docs)]

pub mod error;
pub mod frame;
pub mod ids;
pub mod limits;
pub mod message;
pub mod token;
#[cfg(feature = "typescript")]
pub mod typescript;
pub mod ws;

// What the server and the client both need and that does IO: off by default, so that
// the wire types and framing above stay pure (tests and fuzzers need no sockets).
#[cfg(feature = "io")]
pub mod admin_config;
#[cfg(feature = "io")]
pub mod tls;
#[cfg(feature = "io")]
pub mod udp;

pub use error::{ErrorCode, WireError};
pub use frame::{EventFrameHeader, FrameDecoder, FrameError};
pub use ids::ObjectKind;
pub use limits::Limits;
pub use message::*;

/// ALPN protocol id negotiated on every Syncline QUIC connection.
pub const ALPN: &[u8] = b"syncline/1";

/// QUIC application close codes (sent in CONNECTION_CLOSE), so a client can tell why
/// the server hung up without a frame to read.
pub mod close_code {
    /// Normal close by either side.
    pub const NORMAL: u32 = 0;
    /// The server is shutting down; reconnect later.
    pub const GOING_AWAY: u32 = 1;
    /// Authentication failed (bad credential, or a first request other than `Hello`) or
    /// the key was revoked.
    pub const UNAUTHORIZED: u32 = 2;
    /// The access token expired and was not refreshed in time.
    pub const TOKEN_EXPIRED: u32 = 3;
    /// The peer broke the protocol. Today the server sends it when a client opens no
    /// request stream in time; bad frames are answered with `InvalidArgument` or
    /// `TooLarge` errors instead, and the connection stays open.
    pub const PROTOCOL_ERROR: u32 = 4;
}
