//! Stable error codes shared by server, client and CLI, and [`WireError`], the error as it
//! travels in a [`ResponseFrame`](crate::ResponseFrame) or ends a subscription
//! ([`EventKind::SubscriptionEnded`](crate::EventKind::SubscriptionEnded)).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The stable code of every error Syncline reports. The names are part of the public
/// contract (CLI output, client API, docs); never rename one.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub enum ErrorCode {
    /// The credential was refused: a bad or revoked API key, a token that does not verify,
    /// or a request before a successful `Hello`. CLI exit code 10.
    Unauthorized,
    /// The access token's `exp` has passed (beyond the allowed clock skew); get a fresh
    /// token and reconnect or send `UpdateToken`. CLI exit code 11.
    TokenExpired,
    /// The caller is authenticated but may not do this (ACL rights, backend-only
    /// requests, another service). CLI exit code 12.
    Forbidden,
    /// No such service, key, object or item (expired ones count as absent).
    /// CLI exit code 13.
    NotFound,
    /// A unique name (object or service) is already taken. CLI exit code 14.
    AlreadyExists,
    /// An `if_match` revision differs from the current one; [`WireError::current_revision`]
    /// carries the current revision. CLI exit code 15.
    Conflict,
    /// Over a size limit ([`Limits`](crate::Limits)): frame, data, message, name or key.
    /// CLI exit code 16.
    TooLarge,
    /// A malformed or out-of-range request field (bad JSON, TTL past the maximum, page
    /// limit out of range, wrong key type, ...). CLI exit code 17.
    InvalidArgument,
    /// Too many requests (or subscriptions) on this connection; slow down and retry.
    /// CLI exit code 18.
    RateLimited,
    /// The server cannot serve this now (shutting down, storage unavailable); a retry
    /// later may work. CLI exit code 19.
    Unavailable,
    /// A server-side fault; the details are in the server's log. CLI exit code 20.
    Internal,
}

impl ErrorCode {
    /// Every code, in declaration order (which is also their bincode index).
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::Unauthorized,
        ErrorCode::TokenExpired,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::Conflict,
        ErrorCode::TooLarge,
        ErrorCode::InvalidArgument,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The code's stable name, as printed by the CLI and `Display` (e.g. `"NotFound"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "Unauthorized",
            ErrorCode::TokenExpired => "TokenExpired",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::NotFound => "NotFound",
            ErrorCode::AlreadyExists => "AlreadyExists",
            ErrorCode::Conflict => "Conflict",
            ErrorCode::TooLarge => "TooLarge",
            ErrorCode::InvalidArgument => "InvalidArgument",
            ErrorCode::RateLimited => "RateLimited",
            ErrorCode::Unavailable => "Unavailable",
            ErrorCode::Internal => "Internal",
        }
    }

    /// The CLI's process exit code for this error (documented in the README).
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorCode::Unauthorized => 10,
            ErrorCode::TokenExpired => 11,
            ErrorCode::Forbidden => 12,
            ErrorCode::NotFound => 13,
            ErrorCode::AlreadyExists => 14,
            ErrorCode::Conflict => 15,
            ErrorCode::TooLarge => 16,
            ErrorCode::InvalidArgument => 17,
            ErrorCode::RateLimited => 18,
            ErrorCode::Unavailable => 19,
            ErrorCode::Internal => 20,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as it travels on the wire: a stable code, a human message, and for
/// `Conflict` the object's current revision so the caller can retry without a read.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct WireError {
    /// What kind of error it is; match on this, never on the message.
    pub code: ErrorCode,
    /// A human-readable explanation, for logs and people; its wording may change.
    pub message: String,
    /// For [`ErrorCode::Conflict`], the object's (or item's) current revision; `None` for
    /// every other code.
    pub current_revision: Option<u64>,
}

impl WireError {
    /// An error with `code` and `message` and no revision.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            code,
            message: message.into(),
            current_revision: None,
        }
    }

    /// A [`ErrorCode::Conflict`] for an `if_match` of `expected` against the
    /// `current_revision`, which it carries in [`WireError::current_revision`].
    pub fn conflict(current_revision: u64, expected: u64) -> Self {
        WireError {
            code: ErrorCode::Conflict,
            message: format!(
                "if_match revision {expected} does not match the current revision {current_revision}"
            ),
            current_revision: Some(current_revision),
        }
    }

    /// A [`ErrorCode::NotFound`] with the message "`what` not found".
    pub fn not_found(what: &str) -> Self {
        WireError::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    /// An [`ErrorCode::InvalidArgument`] with `message`.
    pub fn invalid(message: impl Into<String>) -> Self {
        WireError::new(ErrorCode::InvalidArgument, message)
    }

    /// An [`ErrorCode::Internal`] with `message`.
    pub fn internal(message: impl Into<String>) -> Self {
        WireError::new(ErrorCode::Internal, message)
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for WireError {}
