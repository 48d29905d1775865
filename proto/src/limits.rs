//! Size limits, with DESIGN.md's defaults; all are configurable on the server.

use crate::error::{ErrorCode, WireError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame body accepted on any stream, checked before allocation.
    pub max_frame_bytes: u32,
    /// Largest document / item JSON (serialized bytes).
    pub max_data_bytes: usize,
    /// Largest stream message JSON.
    pub max_message_bytes: usize,
    /// Longest unique name or map key, in characters.
    pub max_name_chars: usize,
    /// Longest identity, in characters.
    pub max_identity_chars: usize,
    /// Largest access token accepted, in bytes.
    pub max_token_bytes: usize,
    /// Most items in one page.
    pub max_page: u32,
}

/// Newest list items a subscription's snapshot carries unless it asks otherwise.
pub const DEFAULT_LIST_WINDOW: u32 = 100;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 64 * 1024,
            max_data_bytes: 16 * 1024,
            max_message_bytes: 4 * 1024,
            max_name_chars: 320,
            max_identity_chars: 256,
            max_token_bytes: 8 * 1024,
            max_page: 1000,
        }
    }
}

impl Limits {
    /// Checks that `json` is well-formed JSON text of at most `max_data_bytes`.
    pub fn check_data(&self, json: &str) -> Result<(), WireError> {
        check_json(json, self.max_data_bytes)
    }

    /// Checks a stream message: JSON of at most `max_message_bytes`.
    pub fn check_message(&self, json: &str) -> Result<(), WireError> {
        check_json(json, self.max_message_bytes)
    }

    /// Checks a map key: 1..=`max_name_chars` characters of any Unicode.
    pub fn check_key(&self, key: &str) -> Result<(), WireError> {
        let chars = key.chars().count();
        if chars == 0 {
            return Err(WireError::invalid("map key must not be empty"));
        }
        if chars > self.max_name_chars {
            return Err(WireError::new(
                ErrorCode::TooLarge,
                format!(
                    "map key has {chars} characters, the limit is {}",
                    self.max_name_chars
                ),
            ));
        }
        Ok(())
    }
}

/// Checks a JSON payload: size first (cheap), then syntax.
pub fn check_json(json: &str, max_bytes: usize) -> Result<(), WireError> {
    if json.len() > max_bytes {
        return Err(WireError::new(
            ErrorCode::TooLarge,
            format!("data is {} bytes, the limit is {max_bytes}", json.len()),
        ));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(json)
        .map(|_| ())
        .map_err(|e| WireError::invalid(format!("data is not valid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_checks() {
        let l = Limits::default();
        assert!(l.check_data(r#"{"a":1}"#).is_ok());
        assert_eq!(
            l.check_data("{nope").unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        let big = format!("\"{}\"", "x".repeat(16 * 1024));
        assert_eq!(l.check_data(&big).unwrap_err().code, ErrorCode::TooLarge);
    }
}
