//! The backend's administration requests: services, API keys and per-object permissions,
//! and their immediate effect on what is live: revoking a key closes the connections it
//! authenticated, deleting a service closes its connections, and a grant, a revoke or an
//! ACL toggle ends the subscriptions that lost `read`.

use syncline_proto::ids::{is_sid, validate_unique_name, API_KEY_PREFIX, SERVICE_PREFIX};
use syncline_proto::{
    ErrorCode, KeyInfo, PermissionInfo, Rights, ServiceFlags, ServiceFlagsPatch, ServiceInfo,
    WireError,
};
use tracing::{error, info};

use crate::acl::{self, Action};
use crate::auth::{new_secret, random_sid};
use crate::command::{AdminCommand, Outcome};
use crate::commit::WriteOp;
use crate::fanout::Ending;
use crate::objects::{self, WriteContext};
use crate::shared::Shared;
use crate::store::{confirmed, ApiKeyRecord, CacheMiss, ServiceRecord, StoreError};
use crate::{fanout, now_ms};

/// Default and bounds of `reachability_debouncing_window_ms`.
const DEBOUNCE_RANGE_MS: std::ops::RangeInclusive<u32> = 1_000..=30_000;

fn store_err(e: StoreError) -> WireError {
    error!(error = %e, "storage failed");
    e.client_error("storage failed")
}

/// A service as administration shows it, with its webhook drop count of this run.
pub(crate) fn service_info(shared: &Shared, s: &ServiceRecord) -> ServiceInfo {
    ServiceInfo {
        sid: s.sid.clone(),
        unique_name: s.unique_name.clone(),
        acl_enabled: s.flags.acl_enabled,
        webhook_url: s.flags.webhook_url.clone(),
        webhooks_from_backend: s.flags.webhooks_from_backend,
        reachability_webhooks_enabled: s.flags.reachability_webhooks_enabled,
        reachability_debouncing_enabled: s.flags.reachability_debouncing_enabled,
        reachability_debouncing_window_ms: s.flags.debouncing_window_ms(),
        date_created: s.date_created,
        date_updated: s.date_updated,
        token_create: s.flags.token_create,
        friendly_name: s.flags.friendly_name.clone(),
        webhooks_dropped: shared.webhooks.dropped(&s.sid),
    }
}

fn key_info(k: &ApiKeyRecord, with_secret: bool) -> KeyInfo {
    KeyInfo {
        sid: k.sid.clone(),
        friendly_name: k.friendly_name.clone(),
        secret: with_secret.then(|| k.secret.clone()),
        date_created: k.date_created,
        revoked: k.revoked,
    }
}

fn check_flags(f: &ServiceFlags) -> Result<(), WireError> {
    if let Some(w) = f.reachability_debouncing_window_ms {
        if !DEBOUNCE_RANGE_MS.contains(&w) {
            return Err(WireError::invalid(
                "reachability_debouncing_window_ms must be 1000..=30000",
            ));
        }
    }
    if f.friendly_name
        .as_ref()
        .is_some_and(|n| n.chars().count() > 255)
    {
        return Err(WireError::invalid(
            "friendly_name must be at most 255 characters",
        ));
    }
    if let Some(url) = &f.webhook_url {
        let ok = (url.starts_with("http://") || url.starts_with("https://")) && url.len() <= 2048;
        if !ok {
            return Err(WireError::invalid(
                "webhook_url must be an http(s) URL of at most 2048 characters",
            ));
        }
    }
    Ok(())
}

fn apply_patch(f: &mut ServiceFlags, p: ServiceFlagsPatch) {
    if let Some(v) = p.acl_enabled {
        f.acl_enabled = v;
    }
    if let Some(v) = p.webhook_url {
        f.webhook_url = v;
    }
    if let Some(v) = p.webhooks_from_backend {
        f.webhooks_from_backend = v;
    }
    if let Some(v) = p.reachability_webhooks_enabled {
        f.reachability_webhooks_enabled = v;
    }
    if let Some(v) = p.reachability_debouncing_enabled {
        f.reachability_debouncing_enabled = v;
    }
    if let Some(v) = p.reachability_debouncing_window_ms {
        f.reachability_debouncing_window_ms = Some(v);
    }
    if let Some(v) = p.token_create {
        f.token_create = v;
    }
    if let Some(v) = p.friendly_name {
        // The patch's type cannot say "clear" (its wire layout predates it): an empty
        // name does.
        f.friendly_name = Some(v).filter(|n| !n.is_empty());
    }
}

/// A service by sid or unique name.
pub(crate) async fn find_service(shared: &Shared, s: &str) -> Result<ServiceRecord, WireError> {
    let store = &*shared.store;
    let found = if is_sid(s) && s.starts_with(SERVICE_PREFIX) {
        confirmed(store, CacheMiss::Service(s), || store.service(s)).await
    } else {
        confirmed(store, CacheMiss::ServiceName(s), || {
            store.service_by_name(s)
        })
        .await
    };
    found
        .map_err(store_err)?
        .ok_or_else(|| WireError::not_found("service"))
}

/// Handles one administration request of a backend connection acting in `service`.
pub(crate) async fn handle(
    shared: &Shared,
    service: &ServiceRecord,
    ctx: WriteContext,
    command: AdminCommand,
) -> Result<Outcome, WireError> {
    let store = &*shared.store;
    match command {
        AdminCommand::ServiceCreate {
            unique_name,
            mut flags,
        } => {
            flags.friendly_name = flags.friendly_name.filter(|n| !n.is_empty());
            if let Some(name) = &unique_name {
                validate_unique_name(name, &shared.limits)?;
            }
            check_flags(&flags)?;
            let now = now_ms();
            let record = ServiceRecord {
                sid: random_sid(SERVICE_PREFIX),
                unique_name,
                flags,
                date_created: now,
                date_updated: now,
            };
            store.put_service(&record).await.map_err(|e| match e {
                StoreError::NameTaken(name) => WireError::new(
                    ErrorCode::AlreadyExists,
                    format!("a service named {name:?} exists"),
                ),
                e => store_err(e),
            })?;
            info!(service = %record.sid, "service created");
            Ok(Outcome::Service(service_info(shared, &record)))
        }
        AdminCommand::ServiceList => {
            let all = store.services().await.map_err(store_err)?;
            Ok(Outcome::Services(
                all.iter().map(|s| service_info(shared, s)).collect(),
            ))
        }
        AdminCommand::ServiceGet { service } => Ok(Outcome::Service(service_info(
            shared,
            &find_service(shared, &service).await?,
        ))),
        AdminCommand::ServiceUpdate { service, flags } => {
            let mut record = find_service(shared, &service).await?;
            let acl_before = record.acl_enabled();
            apply_patch(&mut record.flags, flags);
            check_flags(&record.flags)?;
            record.date_updated = now_ms();
            store.put_service(&record).await.map_err(store_err)?;
            if record.acl_enabled() != acl_before {
                info!(service = %record.sid, acl_enabled = record.acl_enabled(), "ACL toggled");
                recheck_subscriptions(shared, &record, None).await;
            }
            Ok(Outcome::Service(service_info(shared, &record)))
        }
        AdminCommand::ServiceDelete { service } => {
            let record = find_service(shared, &service).await?;
            if record.sid == shared.installation.default_service_sid {
                return Err(WireError::invalid(
                    "the default service cannot be deleted (the CLI and admin.json rely on it)",
                ));
            }
            let ctx = WriteContext {
                service_sid: record.sid.clone(),
                ..ctx
            };
            // The record goes first, so that the commit task refuses new writes to the
            // service; then every object goes through the commit task, so subscribers
            // hear of it and nothing written just before is left behind.
            store.delete_service(&record).await.map_err(store_err)?;
            // Each `DeleteAll` removes what one transaction of the store may hold (all
            // of it on sled); nothing new can appear, so this ends.
            loop {
                shared
                    .committer
                    .submit(ctx.clone(), WriteOp::DeleteAll)
                    .await?;
                if store
                    .objects_of(&record.sid)
                    .await
                    .map_err(store_err)?
                    .is_empty()
                {
                    break;
                }
            }
            let sid = record.sid.clone();
            shared.end_sessions(
                |s| s.service_sid().as_deref() == Some(sid.as_str()),
                Ending {
                    code: ErrorCode::Unauthorized,
                    reason: "the service was deleted",
                },
            );
            if let Some(cluster) = &shared.cluster {
                if let Err(e) = cluster.end_service(&sid).await {
                    error!(error = %e, service = %sid, "telling the other nodes to end a deleted service's sessions failed; their requests are refused meanwhile");
                }
            }
            info!(service = %record.sid, "service deleted");
            Ok(Outcome::Done)
        }
        AdminCommand::KeyCreate { friendly_name } => {
            let key = ApiKeyRecord {
                sid: random_sid(API_KEY_PREFIX),
                friendly_name,
                secret: new_secret(),
                date_created: now_ms(),
                revoked: false,
            };
            store.put_api_key(&key).await.map_err(store_err)?;
            info!(key = %key.sid, "API key created");
            Ok(Outcome::Key(key_info(&key, true)))
        }
        AdminCommand::KeyList => {
            let keys = store.api_keys().await.map_err(store_err)?;
            Ok(Outcome::Keys(
                keys.iter().map(|k| key_info(k, false)).collect(),
            ))
        }
        AdminCommand::KeyRevoke { sid } => {
            if sid == shared.installation.admin_key_sid {
                return Err(WireError::invalid(
                    "the admin key from admin.json cannot be revoked",
                ));
            }
            let mut key = confirmed(store, CacheMiss::ApiKey(&sid), || store.api_key(&sid))
                .await
                .map_err(store_err)?
                .ok_or_else(|| WireError::not_found("API key"))?;
            key.revoked = true;
            store.put_api_key(&key).await.map_err(store_err)?;
            shared.end_sessions(
                |s| s.key_sid().as_deref() == Some(sid.as_str()),
                Ending {
                    code: ErrorCode::Unauthorized,
                    reason: "API key revoked",
                },
            );
            info!(key = %sid, "API key revoked");
            Ok(Outcome::Key(key_info(&key, false)))
        }
        AdminCommand::PermissionGrant {
            object,
            identity,
            rights,
        } => {
            let record = live_object(shared, service, &object).await?;
            let stored = (rights != Rights::default()).then_some(rights);
            store
                .put_permission(&service.sid, &record.sid, identity.as_str(), stored)
                .await
                .map_err(store_err)?;
            recheck_subscriptions(shared, service, Some(&record.sid)).await;
            Ok(Outcome::Permission(PermissionInfo {
                object_sid: record.sid,
                identity: identity.into_string(),
                rights,
            }))
        }
        AdminCommand::PermissionRevoke { object, identity } => {
            let record = live_object(shared, service, &object).await?;
            store
                .put_permission(&service.sid, &record.sid, identity.as_str(), None)
                .await
                .map_err(store_err)?;
            recheck_subscriptions(shared, service, Some(&record.sid)).await;
            Ok(Outcome::Done)
        }
        AdminCommand::PermissionList { object } => {
            let record = live_object(shared, service, &object).await?;
            // A grant made through another node a moment ago is listed.
            store.catch_up().await.map_err(store_err)?;
            let all = store
                .permissions(&service.sid, &record.sid)
                .await
                .map_err(store_err)?;
            Ok(Outcome::Permissions(
                all.into_iter()
                    .map(|(identity, rights)| PermissionInfo {
                        object_sid: record.sid.clone(),
                        identity,
                        rights,
                    })
                    .collect(),
            ))
        }
    }
}

async fn live_object(
    shared: &Shared,
    service: &ServiceRecord,
    reference: &str,
) -> Result<crate::store::ObjectRecord, WireError> {
    objects::lookup(&*shared.store, &service.sid, reference, now_ms())
        .await
        .map_err(store_err)?
        .ok_or_else(|| WireError::not_found("object"))
}

/// Ends the subscriptions of token holders in `service` (on one object, or all) that no
/// longer have `read`. Called after every grant, revoke and ACL toggle.
pub(crate) async fn recheck_subscriptions(
    shared: &Shared,
    service: &ServiceRecord,
    object_sid: Option<&str>,
) {
    if !service.acl_enabled() {
        return;
    }
    let candidates = shared.hub.matching(|sid, s| {
        s.identity.is_some()
            && *s.service_sid == *service.sid
            && object_sid.is_none_or(|o| o == sid)
    });
    let store = &*shared.store;
    for (sid, subscriber) in candidates {
        let Some(identity) = subscriber.identity.as_deref() else {
            continue;
        };
        let record = match store.object(&service.sid, &sid).await {
            Ok(Some(r)) => r,
            // Gone: its removal event ends the subscription.
            Ok(None) => continue,
            Err(e) => {
                error!(error = %e, "permission recheck could not read the object");
                continue;
            }
        };
        let keep = match acl::grants(store, &record, identity).await {
            Ok(grants) => acl::allowed(identity, &record, &[Action::Read], &acl::rights(&grants)),
            Err(e) => {
                // Fail closed: a subscription whose access cannot be confirmed ends.
                error!(error = %e, "permission recheck could not read grants");
                false
            }
        };
        if !keep {
            let forbidden = WireError::new(ErrorCode::Forbidden, "forbidden");
            let event = fanout::ended_event(&sid, record.revision, forbidden);
            shared.hub.end(&sid, &subscriber, &event);
            info!(object = %sid, identity, "subscription ended: read access lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_friendly_name_in_a_patch_clears_it_and_a_missing_one_keeps_it() {
        let mut flags = ServiceFlags {
            friendly_name: Some("lobby".into()),
            ..Default::default()
        };
        apply_patch(&mut flags, ServiceFlagsPatch::default());
        assert_eq!(flags.friendly_name.as_deref(), Some("lobby"));
        let rename = ServiceFlagsPatch {
            friendly_name: Some("hall".into()),
            ..Default::default()
        };
        apply_patch(&mut flags, rename);
        assert_eq!(flags.friendly_name.as_deref(), Some("hall"));
        let clear = ServiceFlagsPatch {
            friendly_name: Some(String::new()),
            ..Default::default()
        };
        apply_patch(&mut flags, clear);
        assert_eq!(flags.friendly_name, None);
    }
}
