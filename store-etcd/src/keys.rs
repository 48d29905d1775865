//! The key layout under the installation's prefix. What every node must hear about
//! (the change log, services, keys, grants, nodes, presence, stream messages) lives
//! under `{prefix}/f/`, the one range each node watches; the rest (objects, items,
//! names, indexes) under `{prefix}/d/`, which no node watches. Parts after the tag are
//! sids (fixed length), big-endian numbers, or length-prefixed text, so a key splits
//! back into its parts and one identity's entries never run into another's.

use syncline_proto::ids::SID_LEN;
use syncline_proto::{ItemKey, ObjectKind};

/// The end of a prefix range: the prefix with its last byte incremented (etcd's
/// `with_prefix` rule), for ranges built by hand.
pub fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Tags of the watched range, the byte after `{prefix}/f/`.
pub const LOG: u8 = b'l';
pub const SERVICE: u8 = b's';
pub const KEY: u8 = b'k';
pub const PERMISSION: u8 = b'p';
pub const NODE: u8 = b'N';
pub const PRESENCE: u8 = b'P';
pub const MESSAGE: u8 = b'M';
pub const SERVICE_ENDED: u8 = b'E';
/// One key every node puts to learn that its watch has caught up (`State::sync`).
pub const SYNC: u8 = b'C';

#[derive(Clone, Debug)]
pub struct Keys {
    /// `{prefix}/f/`
    feed: Vec<u8>,
    /// `{prefix}/d/`
    data: Vec<u8>,
}

fn with(base: &[u8], tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(base.len() + 1 + parts.iter().map(|p| p.len()).sum::<usize>());
    k.extend_from_slice(base);
    k.push(tag);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// Text inside a key, not at its end: its length first.
fn sized(text: &str) -> Vec<u8> {
    let len = u16::try_from(text.len()).unwrap_or(u16::MAX);
    let mut v = len.to_be_bytes().to_vec();
    v.extend_from_slice(text.as_bytes());
    v
}

/// Reads a `sized` text at the start of `bytes`: (text, rest).
fn read_sized(bytes: &[u8]) -> Option<(String, &[u8])> {
    let len = usize::from(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]));
    let text = bytes.get(2..2 + len)?;
    Some((String::from_utf8(text.to_vec()).ok()?, &bytes[2 + len..]))
}

pub fn item_key_bytes(key: &ItemKey) -> Vec<u8> {
    match key {
        ItemKey::Index(i) => i.to_be_bytes().to_vec(),
        ItemKey::Key(k) => k.as_bytes().to_vec(),
    }
}

/// Reads an item key back; the object's kind (from its sid) says which shape it has.
pub fn item_key_from(object_sid: &str, bytes: &[u8]) -> Option<ItemKey> {
    if ObjectKind::from_sid(object_sid) == Some(ObjectKind::List) {
        let b: [u8; 8] = bytes.try_into().ok()?;
        Some(ItemKey::Index(u64::from_be_bytes(b)))
    } else {
        String::from_utf8(bytes.to_vec()).ok().map(ItemKey::Key)
    }
}

/// What a key of the watched range is.
#[derive(Debug, PartialEq)]
pub enum FeedKey {
    Log {
        object_sid: String,
    },
    Service {
        sid: String,
    },
    ApiKey {
        sid: String,
    },
    Permission {
        service_sid: String,
        object_sid: String,
        identity: String,
    },
    Node {
        id: String,
    },
    Presence {
        service_sid: String,
        identity: String,
        node: String,
    },
    Message {
        stream_sid: String,
    },
    ServiceEnded {
        sid: String,
    },
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        let prefix = prefix.trim_end_matches('/');
        Keys {
            feed: format!("{prefix}/f/").into_bytes(),
            data: format!("{prefix}/d/").into_bytes(),
        }
    }

    pub fn feed_prefix(&self) -> &[u8] {
        &self.feed
    }

    pub fn data_prefix(&self) -> &[u8] {
        &self.data
    }

    pub fn installation(&self) -> Vec<u8> {
        with(&self.data, b'i', &[])
    }

    pub fn auth_token(&self) -> Vec<u8> {
        with(&self.data, b'a', &[])
    }

    pub fn service(&self, sid: &str) -> Vec<u8> {
        with(&self.feed, SERVICE, &[sid.as_bytes()])
    }

    pub fn services(&self) -> Vec<u8> {
        with(&self.feed, SERVICE, &[])
    }

    pub fn service_name(&self, name: &str) -> Vec<u8> {
        with(&self.data, b'S', &[name.as_bytes()])
    }

    pub fn api_key(&self, sid: &str) -> Vec<u8> {
        with(&self.feed, KEY, &[sid.as_bytes()])
    }

    pub fn api_keys(&self) -> Vec<u8> {
        with(&self.feed, KEY, &[])
    }

    pub fn permission(&self, service_sid: &str, object_sid: &str, identity: &str) -> Vec<u8> {
        with(
            &self.feed,
            PERMISSION,
            &[
                service_sid.as_bytes(),
                object_sid.as_bytes(),
                identity.as_bytes(),
            ],
        )
    }

    /// Every grant of a service (`object_sid: None`) or of one object.
    pub fn permissions(&self, service_sid: &str, object_sid: Option<&str>) -> Vec<u8> {
        let object = object_sid.unwrap_or("");
        with(
            &self.feed,
            PERMISSION,
            &[service_sid.as_bytes(), object.as_bytes()],
        )
    }

    pub fn all_permissions(&self) -> Vec<u8> {
        with(&self.feed, PERMISSION, &[])
    }

    pub fn object(&self, service_sid: &str, sid: &str) -> Vec<u8> {
        with(&self.data, b'o', &[service_sid.as_bytes(), sid.as_bytes()])
    }

    pub fn objects(&self, service_sid: &str, sid_prefix: &str) -> Vec<u8> {
        with(
            &self.data,
            b'o',
            &[service_sid.as_bytes(), sid_prefix.as_bytes()],
        )
    }

    pub fn name(&self, service_sid: &str, name: &str) -> Vec<u8> {
        with(&self.data, b'n', &[service_sid.as_bytes(), name.as_bytes()])
    }

    pub fn item(&self, object_sid: &str, key: &ItemKey) -> Vec<u8> {
        with(
            &self.data,
            b't',
            &[object_sid.as_bytes(), &item_key_bytes(key)],
        )
    }

    pub fn items(&self, object_sid: &str) -> Vec<u8> {
        with(&self.data, b't', &[object_sid.as_bytes()])
    }

    pub fn expiry(&self, expires: u64, service_sid: &str, sid: &str) -> Vec<u8> {
        with(
            &self.data,
            b'x',
            &[
                &expires.to_be_bytes(),
                service_sid.as_bytes(),
                sid.as_bytes(),
            ],
        )
    }

    /// Object expiry entries up to and including `now_ms`: [start, end).
    pub fn expiries_until(&self, now_ms: u64) -> (Vec<u8>, Vec<u8>) {
        (
            with(&self.data, b'x', &[]),
            with(&self.data, b'x', &[&now_ms.saturating_add(1).to_be_bytes()]),
        )
    }

    pub fn item_expiry(
        &self,
        expires: u64,
        service_sid: &str,
        object_sid: &str,
        key: &ItemKey,
    ) -> Vec<u8> {
        with(
            &self.data,
            b'y',
            &[
                &expires.to_be_bytes(),
                service_sid.as_bytes(),
                object_sid.as_bytes(),
                &item_key_bytes(key),
            ],
        )
    }

    pub fn item_expiries_until(&self, now_ms: u64) -> (Vec<u8>, Vec<u8>) {
        (
            with(&self.data, b'y', &[]),
            with(&self.data, b'y', &[&now_ms.saturating_add(1).to_be_bytes()]),
        )
    }

    /// Splits an object or item expiry key (after its 8-byte time) into its parts.
    pub fn split_expiry<'a>(&self, key: &'a [u8]) -> Option<(String, String, &'a [u8])> {
        let rest = key.get(self.data.len() + 1 + 8..)?;
        let service = std::str::from_utf8(rest.get(..SID_LEN)?).ok()?;
        let object = std::str::from_utf8(rest.get(SID_LEN..2 * SID_LEN)?).ok()?;
        Some((service.to_owned(), object.to_owned(), &rest[2 * SID_LEN..]))
    }

    pub fn ephemeral_owner(&self, service_sid: &str, identity: &str) -> Vec<u8> {
        with(
            &self.data,
            b'e',
            &[service_sid.as_bytes(), &sized(identity)],
        )
    }

    pub fn ephemeral_owners(&self) -> Vec<u8> {
        with(&self.data, b'e', &[])
    }

    pub fn ephemeral(
        &self,
        service_sid: &str,
        identity: &str,
        object_sid: &str,
        key: &ItemKey,
    ) -> Vec<u8> {
        let mut k = self.ephemeral_owner(service_sid, identity);
        k.extend_from_slice(object_sid.as_bytes());
        k.extend_from_slice(&item_key_bytes(key));
        k
    }

    /// (service, identity, object sid, item key bytes) of an ephemeral index key.
    pub fn split_ephemeral<'a>(&self, key: &'a [u8]) -> Option<(String, String, String, &'a [u8])> {
        let rest = key.get(self.data.len() + 1..)?;
        let service = std::str::from_utf8(rest.get(..SID_LEN)?).ok()?.to_owned();
        let (identity, rest) = read_sized(&rest[SID_LEN..])?;
        let object = std::str::from_utf8(rest.get(..SID_LEN)?).ok()?.to_owned();
        Some((service, identity, object, &rest[SID_LEN..]))
    }

    /// Slot `slot` of the object's change-log ring: revision r goes to slot
    /// r % retention, overwriting the entry `retention` revisions older, so history is
    /// bounded without deletes (a delete is another raft write and watch event).
    pub fn log(&self, object_sid: &str, slot: u64) -> Vec<u8> {
        with(
            &self.feed,
            LOG,
            &[object_sid.as_bytes(), &slot.to_be_bytes()],
        )
    }

    pub fn logs(&self, object_sid: &str) -> Vec<u8> {
        with(&self.feed, LOG, &[object_sid.as_bytes()])
    }

    pub fn node(&self, id: &str) -> Vec<u8> {
        with(&self.feed, NODE, &[id.as_bytes()])
    }

    pub fn nodes(&self) -> Vec<u8> {
        with(&self.feed, NODE, &[])
    }

    pub fn sync(&self) -> Vec<u8> {
        with(&self.feed, SYNC, &[])
    }

    pub fn presence(&self, service_sid: &str, identity: &str, node: &str) -> Vec<u8> {
        with(
            &self.feed,
            PRESENCE,
            &[service_sid.as_bytes(), &sized(identity), node.as_bytes()],
        )
    }

    /// Every node's presence entry of one identity.
    pub fn presence_of(&self, service_sid: &str, identity: &str) -> Vec<u8> {
        with(
            &self.feed,
            PRESENCE,
            &[service_sid.as_bytes(), &sized(identity)],
        )
    }

    pub fn all_presence(&self) -> Vec<u8> {
        with(&self.feed, PRESENCE, &[])
    }

    /// Marks a deleted service whose objects are gone (short-lived).
    pub fn service_ended(&self, sid: &str) -> Vec<u8> {
        with(&self.feed, SERVICE_ENDED, &[sid.as_bytes()])
    }

    pub fn message(&self, stream_sid: &str) -> Vec<u8> {
        with(&self.feed, MESSAGE, &[stream_sid.as_bytes()])
    }

    /// What a key of the watched range names; `None` for a key this version does not
    /// know (a newer node's), which is ignored.
    /// Whether `key` is a change-log entry, without parsing it.
    pub fn is_log(&self, key: &[u8]) -> bool {
        key.strip_prefix(self.feed.as_slice())
            .is_some_and(|rest| rest.first() == Some(&LOG))
    }

    pub fn parse_feed(&self, key: &[u8]) -> Option<FeedKey> {
        let rest = key.strip_prefix(self.feed.as_slice())?;
        let (&tag, rest) = rest.split_first()?;
        let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_owned);
        Some(match tag {
            LOG => FeedKey::Log {
                object_sid: text(rest.get(..SID_LEN)?)?,
            },
            SERVICE => FeedKey::Service { sid: text(rest)? },
            KEY => FeedKey::ApiKey { sid: text(rest)? },
            PERMISSION => FeedKey::Permission {
                service_sid: text(rest.get(..SID_LEN)?)?,
                object_sid: text(rest.get(SID_LEN..2 * SID_LEN)?)?,
                identity: text(rest.get(2 * SID_LEN..)?)?,
            },
            NODE => FeedKey::Node { id: text(rest)? },
            PRESENCE => {
                let service_sid = text(rest.get(..SID_LEN)?)?;
                let (identity, node) = read_sized(&rest[SID_LEN..])?;
                FeedKey::Presence {
                    service_sid,
                    identity,
                    node: text(node)?,
                }
            }
            MESSAGE => FeedKey::Message {
                stream_sid: text(rest)?,
            },
            SERVICE_ENDED => FeedKey::ServiceEnded { sid: text(rest)? },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: &str = "IS00000000000000000000000000000001";
    const OBJ: &str = "MP00000000000000000000000000000002";

    #[test]
    fn feed_keys_split_back_into_their_parts() {
        let k = Keys::new("/syncline/");
        assert!(k.is_log(&k.log(OBJ, 7)));
        assert!(!k.is_log(&k.permission(SVC, OBJ, "al/ice")));
        assert!(!k.is_log(&k.object(SVC, OBJ)));
        assert_eq!(
            k.parse_feed(&k.log(OBJ, 7)),
            Some(FeedKey::Log {
                object_sid: OBJ.into(),
            })
        );
        assert_eq!(
            k.parse_feed(&k.permission(SVC, OBJ, "al/ice")),
            Some(FeedKey::Permission {
                service_sid: SVC.into(),
                object_sid: OBJ.into(),
                identity: "al/ice".into()
            })
        );
        assert_eq!(
            k.parse_feed(&k.presence(SVC, "bob", "n1")),
            Some(FeedKey::Presence {
                service_sid: SVC.into(),
                identity: "bob".into(),
                node: "n1".into()
            })
        );
        assert_eq!(k.parse_feed(&k.object(SVC, OBJ)), None);
    }

    #[test]
    fn one_identitys_entries_never_run_into_a_longer_one_that_starts_the_same() {
        let k = Keys::new("/s");
        let short = k.ephemeral_owner(SVC, "ann");
        let long = k.ephemeral(SVC, "anna", OBJ, &ItemKey::Key("x".into()));
        assert!(!long.starts_with(&short));
        let (service, identity, object, key) = k.split_ephemeral(&long).unwrap();
        assert_eq!(
            (service.as_str(), identity.as_str(), object.as_str()),
            (SVC, "anna", OBJ)
        );
        assert_eq!(key, b"x");
    }

    #[test]
    fn a_prefix_range_ends_past_every_key_that_starts_with_it() {
        assert_eq!(range_end(b"a/b"), b"a/c".to_vec());
        assert_eq!(range_end(b"a\xff"), b"b".to_vec());
    }
}
