//! Stable error codes shared by server, client and CLI.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The stable code of every error Syncline reports. The names are part of the public
/// contract (CLI output, client API, docs); never rename one.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Unauthorized,
    TokenExpired,
    Forbidden,
    NotFound,
    AlreadyExists,
    Conflict,
    TooLarge,
    InvalidArgument,
    RateLimited,
    Unavailable,
    Internal,
}

impl ErrorCode {
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
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
    pub current_revision: Option<u64>,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            code,
            message: message.into(),
            current_revision: None,
        }
    }

    pub fn conflict(current_revision: u64, expected: u64) -> Self {
        WireError {
            code: ErrorCode::Conflict,
            message: format!(
                "if_match revision {expected} does not match the current revision {current_revision}"
            ),
            current_revision: Some(current_revision),
        }
    }

    pub fn not_found(what: &str) -> Self {
        WireError::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        WireError::new(ErrorCode::InvalidArgument, message)
    }

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
