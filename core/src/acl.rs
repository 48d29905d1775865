//! Who may do what. One function decides; the session calls it for every request.
//!
//! With the service's `acl_enabled` off, every token of the service has full access
//! (development mode). With it on, an identity reaches the objects it created, and others
//! only through grants (`read`, `write`, `manage`) to it or to `*`; objects the backend
//! created are reachable by no token without a grant. The backend (API key) may do
//! anything. Under ACL, an identity without access is told `Forbidden` whether or not
//! the object exists, so refusals reveal nothing.

use syncline_proto::{ErrorCode, Rights, WireError};

use crate::store::{
    CacheMiss, GrantRead, ObjectRecord, Permission, ServiceRecord, Store, StoreError,
};

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

impl Action {
    fn granted_by(self, r: &Rights) -> bool {
        match self {
            Action::Read => r.read,
            Action::Write => r.write,
            Action::Manage => r.manage,
        }
    }
}

/// The identity whose access must be checked, or `None` when everything is allowed (the
/// backend, or a service with its ACL off).
pub fn guarded_identity<'a>(principal: &'a Principal, service: &ServiceRecord) -> Option<&'a str> {
    match principal {
        Principal::Identity { identity, .. } if service.acl_enabled() => Some(identity),
        _ => None,
    }
}

/// May `identity` (under an enabled ACL) perform every one of `actions` on `object`?
/// `grants` are the rights held on it by the identity and by `*`; together they must
/// cover each action (a `set` with a TTL needs `write` and `manage`).
pub fn allowed(
    identity: &str,
    object: &ObjectRecord,
    actions: &[Action],
    grants: &[Rights],
) -> bool {
    is_creator(identity, object)
        || actions
            .iter()
            .all(|a| grants.iter().any(|g| a.granted_by(g)))
}

/// The rights of grants as `grants` reads them, for `allowed`.
pub fn rights(grants: &[(String, Permission)]) -> Vec<Rights> {
    grants.iter().map(|(_, p)| p.rights).collect()
}

/// Whether `identity` created `object`, which gives it every right without a grant.
fn is_creator(identity: &str, object: &ObjectRecord) -> bool {
    // `system` marks backend-created objects; a token identity that happens to be called
    // `system` must not inherit them.
    object.created_by == identity && identity != crate::objects::SYSTEM_ACTOR
}

/// What a successful check learned besides "yes": whether the identity may also read
/// the object, which decides whether the answer to its write may carry the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub may_read: bool,
}

/// A yes from [`check`]: the access, and the grants it rests on (none for the object's
/// creator, or for a creation), which a commit hands its store to compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub access: Access,
    pub grants: Vec<GrantRead>,
}

impl Access {
    /// The backend, the server itself, and everyone in a service without ACL.
    pub const FULL: Access = Access { may_read: true };
}

/// The grants that count for `identity` on an object: its own and those of `*`.
pub async fn grants(
    store: &dyn Store,
    object: &ObjectRecord,
    identity: &str,
) -> Result<Vec<(String, Permission)>, StoreError> {
    let mut out = Vec::with_capacity(2);
    for who in [identity, EVERYONE] {
        if let Some(p) = store
            .permission(&object.service_sid, &object.sid, who)
            .await?
        {
            out.push((who.to_owned(), p));
        }
    }
    Ok(out)
}

/// Checks `actions` on `object` (`None`: it does not exist) for `identity`. Creating is
/// allowed (`create`, which the caller sets only when the operation would create the
/// object); anything else on a missing object is `Forbidden`, like an object without
/// access, so that a refusal does not tell whether it exists.
pub async fn check(
    store: &dyn Store,
    identity: &str,
    object: Option<&ObjectRecord>,
    actions: &[Action],
    create: bool,
) -> Result<Allowed, WireError> {
    let Some(o) = object else {
        let created = Allowed {
            access: Access::FULL,
            grants: Vec::new(),
        };
        return create.then_some(created).ok_or_else(forbidden);
    };
    let failed = |e: StoreError| {
        tracing::error!(error = %e, "permission read failed");
        e.client_error("storage read failed")
    };
    let mut held = grants(store, o, identity).await.map_err(failed)?;
    if !allowed(identity, o, actions, &rights(&held)) && store.is_shared() {
        // This node's grants may not yet hold one given through another node a moment
        // ago (see `store::confirmed`): a refusal is decided on the grants as stored.
        for who in [identity, EVERYONE] {
            let miss = CacheMiss::Grant {
                service_sid: &o.service_sid,
                object_sid: &o.sid,
                identity: who,
            };
            store.recheck(miss).await.map_err(failed)?;
        }
        held = grants(store, o, identity).await.map_err(failed)?;
    }
    let rights = rights(&held);
    if !allowed(identity, o, actions, &rights) {
        return Err(forbidden());
    }
    let access = Access {
        may_read: allowed(identity, o, &[Action::Read], &rights),
    };
    let grants = if is_creator(identity, o) {
        Vec::new()
    } else {
        held.into_iter()
            .map(|(who, p)| GrantRead {
                service_sid: o.service_sid.clone(),
                object_sid: o.sid.clone(),
                identity: who,
                store_version: p.store_version,
            })
            .collect()
    };
    Ok(Allowed { access, grants })
}

/// The one refusal a token holder gets under ACL, whether or not the object exists.
pub fn forbidden() -> WireError {
    WireError::new(ErrorCode::Forbidden, "forbidden")
}

/// The refusal of a token holder's write that would create an object in a service
/// whose `token_create` is `none`. Under ACL it is the plain refusal, so that it does
/// not tell a free name from a taken one.
pub fn creation_refused(under_acl: bool) -> WireError {
    if under_acl {
        forbidden()
    } else {
        WireError::new(
            ErrorCode::Forbidden,
            "access tokens cannot create objects in this service (token_create: none); \
             the backend creates them",
        )
    }
}

/// The identity that stands for every identity of the service in grants.
pub const EVERYONE: &str = "*";

#[cfg(test)]
mod tests {
    use super::*;
    use syncline_proto::ObjectKind;

    fn object(created_by: &str) -> ObjectRecord {
        ObjectRecord {
            store_version: 0,
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

    const ALL: [Action; 3] = [Action::Read, Action::Write, Action::Manage];

    #[test]
    fn creators_have_every_right_and_others_none() {
        for a in ALL {
            assert!(allowed("alice", &object("alice"), &[a], &[]));
            assert!(!allowed("bob", &object("alice"), &[a], &[]));
            assert!(!allowed("bob", &object("system"), &[a], &[]));
            assert!(
                !allowed("system", &object("system"), &[a], &[]),
                "`system` is not the backend"
            );
        }
    }

    #[test]
    fn grants_give_exactly_their_rights() {
        let read = Rights {
            read: true,
            ..Rights::default()
        };
        let write = Rights {
            write: true,
            ..Rights::default()
        };
        let manage = Rights {
            manage: true,
            ..Rights::default()
        };
        let o = object("system");
        assert!(allowed("bob", &o, &[Action::Read], &[read]));
        assert!(!allowed("bob", &o, &[Action::Write], &[read]));
        assert!(!allowed("bob", &o, &[Action::Manage], &[read, write]));
        assert!(allowed("bob", &o, &[Action::Write], &[read, write]));
        // A write that also sets a TTL needs both rights, from one grant or two.
        let both = [Action::Write, Action::Manage];
        assert!(!allowed("bob", &o, &both, &[manage]));
        assert!(!allowed("bob", &o, &both, &[write]));
        assert!(allowed("bob", &o, &both, &[write, manage]));
        assert!(allowed(
            "bob",
            &o,
            &both,
            &[Rights {
                read: false,
                write: true,
                manage: true
            }]
        ));
    }

    #[test]
    fn only_identities_under_acl_are_guarded() {
        let mut service = ServiceRecord {
            sid: "IS0".into(),
            unique_name: None,
            flags: Default::default(),
            date_created: 0,
            date_updated: 0,
        };
        let bob = Principal::Identity {
            identity: "bob".into(),
            key_sid: "SK".into(),
        };
        let backend = Principal::Backend {
            key_sid: "SK".into(),
        };
        assert_eq!(guarded_identity(&bob, &service), None);
        service.flags.acl_enabled = true;
        assert_eq!(guarded_identity(&bob, &service), Some("bob"));
        assert_eq!(guarded_identity(&backend, &service), None);
    }
}
