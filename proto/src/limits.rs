//! Size limits, with DESIGN.md's defaults; all are configurable on the server.

use crate::error::{ErrorCode, WireError};
use serde::{Deserialize, Serialize};

/// The server's size limits. `Limits::default()` gives DESIGN.md's defaults (listed per
/// field); a request over a size limit is refused with `TooLarge`, one out of range
/// (page size, TTL) with `InvalidArgument`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame body accepted on any stream, in bytes (length prefix excluded),
    /// checked before allocation. Default 64 KiB; a client learns the server's value in
    /// `Welcome::max_frame_bytes`.
    pub max_frame_bytes: u32,
    /// Largest document / item JSON, in serialized bytes. Default 16 KiB.
    pub max_data_bytes: usize,
    /// Largest stream message JSON, in bytes. Default 4 KiB.
    pub max_message_bytes: usize,
    /// Longest unique name or map key, in characters. Default 320.
    pub max_name_chars: usize,
    /// Longest identity, in characters. Default 256.
    pub max_identity_chars: usize,
    /// Largest access token accepted, in bytes. Default 8 KiB.
    pub max_token_bytes: usize,
    /// Most items in one page, and the largest list window of a subscription snapshot.
    /// Default 1,000.
    pub max_page: u32,
    /// Longest time to live, in seconds, of an object or an item. Default [`MAX_TTL_S`]
    /// (365 days).
    pub max_ttl_s: u64,
}

/// Twilio Sync's own bound on `Ttl` (365 days): a client written against Twilio never
/// needs more, and it keeps every expiry a representable date for millennia.
pub const MAX_TTL_S: u64 = 365 * 24 * 3600;

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
            max_ttl_s: MAX_TTL_S,
        }
    }
}

impl Limits {
    /// Checks that `json` is JSON text that readers can load, of at most `max_data_bytes`
    /// (see [`check_json`]): `TooLarge` or `InvalidArgument` if not.
    pub fn check_data(&self, json: &str) -> Result<(), WireError> {
        check_json(json, self.max_data_bytes)
    }

    /// Checks a stream message: JSON of at most `max_message_bytes` (see [`check_json`]):
    /// `TooLarge` or `InvalidArgument` if not.
    pub fn check_message(&self, json: &str) -> Result<(), WireError> {
        check_json(json, self.max_message_bytes)
    }

    /// Checks a time to live in seconds (0: no expiry) against `max_ttl_s`;
    /// `InvalidArgument` if over it.
    pub fn check_ttl(&self, ttl_s: u64) -> Result<(), WireError> {
        if ttl_s > self.max_ttl_s {
            return Err(WireError::invalid(format!(
                "ttl is {ttl_s} s, the limit is {} s (365 days; 0 means no expiry)",
                self.max_ttl_s
            )));
        }
        Ok(())
    }

    /// Checks a map key: 1..=`max_name_chars` characters of any Unicode. Empty:
    /// `InvalidArgument`; too long: `TooLarge`.
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

/// Checks a JSON payload: size first (cheap), then that serde_json, with its default
/// limits, reads it back as every reader does (`serde_json::Value`, the client's replicas,
/// `update`'s merge). Syntax alone is not enough: nesting deeper than serde_json's
/// recursion limit (128), lone UTF-16 surrogates (`"\ud800"`) and numbers out of `f64`'s
/// range (`1e400`) are well-formed JSON that no reader could load, so one write would
/// poison the object for everybody. The walk allocates no tree.
///
/// Over `max_bytes`: `TooLarge`; not loadable JSON: `InvalidArgument`.
pub fn check_json(json: &str, max_bytes: usize) -> Result<(), WireError> {
    if json.len() > max_bytes {
        return Err(WireError::new(
            ErrorCode::TooLarge,
            format!("data is {} bytes, the limit is {max_bytes}", json.len()),
        ));
    }
    let mut de = serde_json::Deserializer::from_str(json);
    serde::Deserialize::deserialize(&mut de)
        .and_then(|Readable| de.end())
        .map_err(|e| WireError::invalid(format!("data is not JSON that readers can load: {e}")))
}

/// A JSON value walked the way `serde_json::Value` is built (same `deserialize_any`
/// path, so the same recursion limit and string and number checks), keeping nothing.
struct Readable;

impl<'de> serde::Deserialize<'de> for Readable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ReadableVisitor)
    }
}

struct ReadableVisitor;

impl<'de> serde::de::Visitor<'de> for ReadableVisitor {
    type Value = Readable;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Readable, E> {
        if v.is_finite() {
            Ok(Readable)
        } else {
            Err(E::custom("number out of range"))
        }
    }
    fn visit_str<E>(self, _: &str) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_unit<E>(self) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Readable, A::Error> {
        while seq.next_element::<Readable>()?.is_some() {}
        Ok(Readable)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Readable, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, Readable>()?
            .is_some()
        {}
        Ok(Readable)
    }
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

    #[test]
    fn json_that_readers_cannot_load_is_refused_and_what_they_can_is_kept() {
        let l = Limits::default();
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let deep_objects = |n: usize| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
        let refused = [
            deep(200),
            deep_objects(200),
            r#""\ud800""#.to_owned(),
            r#"{"k":"\udc00x"}"#.to_owned(),
            "1e400".to_owned(),
            "[-1e309]".to_owned(),
            "[1] 2".to_owned(),
        ];
        for json in &refused {
            let err = l.check_data(json).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidArgument, "{json}");
            // The rule the check stands for: serde_json's reader refuses it too.
            assert!(
                serde_json::from_str::<serde_json::Value>(json).is_err(),
                "{json}"
            );
        }
        // Exactly serde_json's depth limit, whatever it is: the two agree around it.
        for n in 100..=140 {
            for json in [deep(n), deep_objects(n)] {
                let readable = serde_json::from_str::<serde_json::Value>(&json).is_ok();
                assert_eq!(l.check_data(&json).is_ok(), readable, "depth {n}");
            }
        }
        let kept = [
            deep(100),
            r#""\ud83d\ude00""#.to_owned(),
            "1.7976931348623157e308".to_owned(),
            "-0".to_owned(),
            "18446744073709551615".to_owned(),
            "-9223372036854775808".to_owned(),
            r#"{"a":[1,{"b":null}],"c":"\u00e9"}"#.to_owned(),
        ];
        for json in &kept {
            assert!(l.check_data(json).is_ok(), "{json}");
            assert!(
                serde_json::from_str::<serde_json::Value>(json).is_ok(),
                "{json}"
            );
        }
    }

    #[test]
    fn ttls_are_bounded_by_a_year() {
        let l = Limits::default();
        assert!(l.check_ttl(0).is_ok());
        assert!(l.check_ttl(MAX_TTL_S).is_ok());
        for ttl in [MAX_TTL_S + 1, 260_000_000_000, u64::MAX] {
            assert_eq!(
                l.check_ttl(ttl).unwrap_err().code,
                ErrorCode::InvalidArgument
            );
        }
    }
}
