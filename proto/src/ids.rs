//! Sids (`PP` + 32 lowercase hex) and the rules for unique names.
//!
//! Every service, account, API key and object is named by a sid: a two-letter uppercase
//! prefix saying what it is (`IS` service, `AC` account, `SK` API key, `ET` document,
//! `ES` list, `MP` map, `TO` stream) and 32 lowercase hex digits. Objects and services
//! may also carry a unique name, which must not look like a sid.

use crate::error::WireError;
use crate::limits::Limits;
use serde::{Deserialize, Serialize};

/// Length of a sid: two-letter prefix plus 32 hex digits.
pub const SID_LEN: usize = 34;

/// Prefix of a service sid (`IS` + 32 hex digits).
pub const SERVICE_PREFIX: &str = "IS";
/// Prefix of the installation's account sid (`AC` + 32 hex digits), the `sub` of every
/// access token.
pub const ACCOUNT_PREFIX: &str = "AC";
/// Prefix of an API key sid (`SK` + 32 hex digits), the `iss` of the tokens it signs.
pub const API_KEY_PREFIX: &str = "SK";

/// The kinds of synchronized object; each has its own sid prefix.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub enum ObjectKind {
    /// One JSON value (at most `Limits::max_data_bytes`); sid prefix `ET`.
    Document,
    /// Items ordered by a `u64` index that is never reused; sid prefix `ES`.
    List,
    /// Items keyed by a string of 1..=`Limits::max_name_chars` characters; sid prefix `MP`.
    Map,
    /// Ephemeral messages to current subscribers, never stored; sid prefix `TO`.
    Stream,
}

impl ObjectKind {
    /// The two-letter sid prefix of this kind: `ET`, `ES`, `MP` or `TO`.
    pub fn prefix(self) -> &'static str {
        match self {
            ObjectKind::Document => "ET",
            ObjectKind::List => "ES",
            ObjectKind::Map => "MP",
            ObjectKind::Stream => "TO",
        }
    }

    /// The kind a sid names, from its prefix; `None` if `sid` is not shaped like a sid
    /// ([`is_sid`]) or is not an object's (a service's, a key's, ...).
    pub fn from_sid(sid: &str) -> Option<ObjectKind> {
        if !is_sid(sid) {
            return None;
        }
        [
            ObjectKind::Document,
            ObjectKind::List,
            ObjectKind::Map,
            ObjectKind::Stream,
        ]
        .into_iter()
        .find(|k| sid.starts_with(k.prefix()))
    }

    /// The lowercase name used in messages and the CLI: `document`, `list`, `map`,
    /// `stream`.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Document => "document",
            ObjectKind::List => "list",
            ObjectKind::Map => "map",
            ObjectKind::Stream => "stream",
        }
    }
}

/// True if `s` has the shape of a sid: two ASCII uppercase letters and 32 lowercase hex digits.
pub fn is_sid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == SID_LEN
        && b[..2].iter().all(u8::is_ascii_uppercase)
        && b[2..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// Builds a sid from a prefix and 16 random bytes (the caller owns the randomness, so
/// this crate stays free of IO and entropy sources).
pub fn make_sid(prefix: &str, random: [u8; 16]) -> String {
    let mut s = String::with_capacity(SID_LEN);
    s.push_str(prefix);
    for b in random {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Checks a unique name: 1..=`limits.max_name_chars` characters (Unicode scalar
/// values), and not shaped like a sid (or lookups by "id or name" would be ambiguous).
/// Empty or sid-shaped: `InvalidArgument`; too long: `TooLarge`.
pub fn validate_unique_name(name: &str, limits: &Limits) -> Result<(), WireError> {
    let chars = name.chars().count();
    if chars == 0 {
        return Err(WireError::invalid("unique name must not be empty"));
    }
    if chars > limits.max_name_chars {
        return Err(WireError::new(
            crate::ErrorCode::TooLarge,
            format!(
                "unique name has {chars} characters, the limit is {}",
                limits.max_name_chars
            ),
        ));
    }
    if is_sid(name) {
        return Err(WireError::invalid(
            "unique name must not look like a sid (two capitals and 32 hex digits)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_shape() {
        let sid = make_sid("ET", [0xab; 16]);
        assert_eq!(sid.len(), SID_LEN);
        assert!(is_sid(&sid));
        assert_eq!(ObjectKind::from_sid(&sid), Some(ObjectKind::Document));
        assert!(!is_sid("ETABABABABABABABABABABABABABABABAB"));
        assert!(!is_sid("et00000000000000000000000000000000"));
        assert_eq!(
            ObjectKind::from_sid("IS00000000000000000000000000000000"),
            None
        );
    }

    #[test]
    fn names() {
        let l = Limits::default();
        assert!(validate_unique_name("room-1", &l).is_ok());
        assert!(validate_unique_name("ünïcode ✓", &l).is_ok());
        assert_eq!(
            validate_unique_name("", &l).unwrap_err().code,
            crate::ErrorCode::InvalidArgument
        );
        assert_eq!(
            validate_unique_name(&"x".repeat(321), &l).unwrap_err().code,
            crate::ErrorCode::TooLarge
        );
        assert!(validate_unique_name(&"é".repeat(320), &l).is_ok());
        assert!(validate_unique_name(&make_sid("ET", [1; 16]), &l).is_err());
    }
}
