//! Who may do what. One function decides; the session calls it for every request.
//!
//! With the service's `acl_enabled` off, every token of the service has full access
//! (development mode). With it on, an identity reaches the objects it created and nothing
//! else (grants per object and identity come with the permissions API); objects the
//! backend created are reachable by no token. The backend (API key) may do anything.

use crate::store::{ObjectRecord, ServiceRecord};

/// The authenticated party behind a connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// An API key: the trusted backend.
    Backend { key_sid: String },
    /// An access token holder.
    Identity { identity: String, key_sid: String },
}

impl Principal {
    /// The name recorded as creator / actor of this principal's changes.
    pub fn actor(&self) -> &str {
        match self {
            Principal::Backend { .. } => crate::objects::SYSTEM_ACTOR,
            Principal::Identity { identity, .. } => identity,
        }
    }

    pub fn key_sid(&self) -> &str {
        match self {
            Principal::Backend { key_sid } | Principal::Identity { key_sid, .. } => key_sid,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// get, subscribe
    Read,
    /// change data or items, publish
    Write,
    /// delete the object, change its TTL
    Manage,
}

/// May `principal` perform `action` on `object` (or create it, when `object` is `None`)?
pub fn allowed(
    principal: &Principal,
    service: &ServiceRecord,
    object: Option<&ObjectRecord>,
    _action: Action,
) -> bool {
    match principal {
        Principal::Backend { .. } => true,
        Principal::Identity { identity, .. } => {
            if !service.acl_enabled {
                return true;
            }
            match object {
                // Creating: the identity becomes the creator and so gets access.
                None => true,
                // `system` marks backend-created objects; a token identity that happens
                // to be called `system` must not inherit them.
                Some(o) => o.created_by == *identity && identity != crate::objects::SYSTEM_ACTOR,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncline_proto::ObjectKind;

    fn service(acl: bool) -> ServiceRecord {
        ServiceRecord {
            sid: "IS0".into(),
            unique_name: None,
            acl_enabled: acl,
            date_created: 0,
        }
    }

    fn object(created_by: &str) -> ObjectRecord {
        ObjectRecord {
            service_sid: "IS0".into(),
            sid: "ET0".into(),
            kind: ObjectKind::Document,
            unique_name: None,
            revision: 0,
            data: "{}".into(),
            created_by: created_by.into(),
            date_created: 0,
            date_updated: 0,
            date_expires: None,
            next_index: 0,
        }
    }

    fn who(i: &str) -> Principal {
        Principal::Identity {
            identity: i.into(),
            key_sid: "SK".into(),
        }
    }

    #[test]
    fn acl_off_is_open_within_the_service() {
        for a in [Action::Read, Action::Write, Action::Manage] {
            assert!(allowed(
                &who("bob"),
                &service(false),
                Some(&object("alice")),
                a
            ));
            assert!(allowed(
                &who("bob"),
                &service(false),
                Some(&object("system")),
                a
            ));
        }
    }

    #[test]
    fn acl_on_limits_identities_to_their_own_objects() {
        let s = service(true);
        for a in [Action::Read, Action::Write, Action::Manage] {
            assert!(allowed(&who("alice"), &s, Some(&object("alice")), a));
            assert!(!allowed(&who("bob"), &s, Some(&object("alice")), a));
            assert!(!allowed(&who("system"), &s, Some(&object("system")), a));
            assert!(!allowed(&who("bob"), &s, Some(&object("system")), a));
            let backend = Principal::Backend {
                key_sid: "SK".into(),
            };
            assert!(allowed(&backend, &s, Some(&object("alice")), a));
        }
        assert!(allowed(&who("bob"), &s, None, Action::Write));
    }
}
