//! Checked values: each type here is made only by a constructor that checks it against
//! the limits, so a command holding one carries a value that already passed. Every edge
//! builds its commands from these, which is what makes QUIC, HTTP and WebSocket refuse
//! the same input with the same error.

use std::ops::Deref;

use syncline_proto::{ItemKey, Limits, ObjectKind, WireError};

/// JSON text that passed `Limits::check_json`: within its size limit and loadable by
/// every reader (see there). Only [`Json::parse`] and the object rules' own merge make
/// one, so a value in a command or a record cannot be unreadable.
#[derive(Debug, Clone, PartialEq)]
pub struct Json(String);

impl Json {
    /// Checks `text` against the data limit (`max_bytes`) and the readers' rules.
    pub fn parse(text: String, max_bytes: usize) -> Result<Json, WireError> {
        syncline_proto::limits::check_json(&text, max_bytes)?;
        Ok(Json(text))
    }

    /// JSON produced by serde_json itself (a merge result), which any reader loads.
    pub(crate) fn from_serialized(text: String) -> Json {
        Json(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// An identity a grant names: 1..=`max_identity_chars` characters, or `*` (every
/// identity of the service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity(String);

impl Identity {
    pub fn parse(identity: String, limits: &Limits) -> Result<Identity, WireError> {
        let chars = identity.chars().count();
        if chars == 0 || chars > limits.max_identity_chars {
            return Err(WireError::invalid(format!(
                "identity must be 1..={} characters (or `*`)",
                limits.max_identity_chars
            )));
        }
        Ok(Identity(identity))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A time to live in seconds within `max_ttl_s`; 0 means no expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(u64);

impl Ttl {
    pub fn parse(seconds: u64, limits: &Limits) -> Result<Ttl, WireError> {
        limits.check_ttl(seconds)?;
        Ok(Ttl(seconds))
    }

    /// An optional TTL, checked when present.
    pub fn parse_opt(seconds: Option<u64>, limits: &Limits) -> Result<Option<Ttl>, WireError> {
        seconds.map(|s| Ttl::parse(s, limits)).transpose()
    }

    pub fn seconds(self) -> u64 {
        self.0
    }
}

/// An item key of the shape its object kind uses: a list's index, or a map key of
/// 1..=`max_key_chars` characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key(ItemKey);

impl Key {
    pub fn parse(kind: ObjectKind, key: ItemKey, limits: &Limits) -> Result<Key, WireError> {
        match (kind, &key) {
            (ObjectKind::List, ItemKey::Index(_)) => {}
            (ObjectKind::Map, ItemKey::Key(k)) => limits.check_key(k)?,
            (ObjectKind::List, ItemKey::Key(_)) => {
                return Err(WireError::invalid("list items are addressed by index"))
            }
            (ObjectKind::Map, ItemKey::Index(_)) => {
                return Err(WireError::invalid("map items are addressed by key"))
            }
            (other, _) => {
                return Err(WireError::invalid(format!(
                    "a {} has no items",
                    other.name()
                )))
            }
        }
        Ok(Key(key))
    }

    pub fn into_inner(self) -> ItemKey {
        self.0
    }
}

impl Deref for Key {
    type Target = ItemKey;

    fn deref(&self) -> &ItemKey {
        &self.0
    }
}

/// How many entries one page holds: 1..=`max_page`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(u32);

impl PageSize {
    pub fn parse(limit: u32, limits: &Limits) -> Result<PageSize, WireError> {
        let max = limits.max_page;
        if limit == 0 || limit > max {
            return Err(WireError::invalid(format!("limit must be 1..={max}")));
        }
        Ok(PageSize(limit))
    }

    /// A list subscription's snapshot window: any asked size, brought into 1..=`max_page`.
    pub fn clamped(limit: u32, limits: &Limits) -> PageSize {
        PageSize(limit.clamp(1, limits.max_page.max(1)))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncline_proto::ErrorCode;

    #[test]
    fn each_value_refuses_what_its_limit_refuses() {
        let l = Limits::default();
        assert!(Identity::parse("x".repeat(300), &l).is_err());
        assert!(Identity::parse(String::new(), &l).is_err());
        assert!(Identity::parse("*".into(), &l).is_ok());
        assert!(Ttl::parse(u64::MAX, &l).is_err());
        assert!(Ttl::parse(0, &l).is_ok());
        assert!(Key::parse(ObjectKind::List, ItemKey::Key("k".into()), &l).is_err());
        assert!(Key::parse(ObjectKind::Map, ItemKey::Key(String::new()), &l).is_err());
        assert!(Key::parse(ObjectKind::Document, ItemKey::Index(1), &l).is_err());
        assert!(PageSize::parse(0, &l).is_err());
        assert!(PageSize::parse(l.max_page + 1, &l).is_err());
        assert_eq!(PageSize::clamped(0, &l).get(), 1);
        let e = Json::parse("{".into(), l.max_data_bytes).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
    }
}
