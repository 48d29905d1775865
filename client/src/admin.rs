//! The backend's administration API (API-key connections only): services, API keys and
//! per-object permissions.

use syncline_proto::{
    KeyInfo, PermissionInfo, Request, Response, Rights, ServiceFlags, ServiceFlagsPatch,
    ServiceInfo,
};

use crate::client::Client;
use crate::{unexpected, Result};

fn service(r: Response) -> Result<ServiceInfo> {
    match r {
        Response::Service(s) => Ok(s),
        other => Err(unexpected(other)),
    }
}

fn done(r: Response) -> Result<()> {
    match r {
        Response::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

impl Client {
    /// Creates a service, optionally named, with its flags.
    pub async fn create_service(
        &self,
        unique_name: Option<&str>,
        flags: ServiceFlags,
    ) -> Result<ServiceInfo> {
        service(
            self.call(Request::ServiceCreate {
                unique_name: unique_name.map(str::to_owned),
                flags,
            })
            .await?,
        )
    }

    /// Every service of the installation.
    pub async fn services(&self) -> Result<Vec<ServiceInfo>> {
        match self.call(Request::ServiceList).await? {
            Response::Services(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// A service by sid or unique name.
    pub async fn service(&self, service_ref: &str) -> Result<ServiceInfo> {
        service(
            self.call(Request::ServiceGet {
                service: service_ref.to_owned(),
            })
            .await?,
        )
    }

    /// Changes a service's flags (the fields given in `flags`).
    pub async fn update_service(
        &self,
        service_ref: &str,
        flags: ServiceFlagsPatch,
    ) -> Result<ServiceInfo> {
        service(
            self.call(Request::ServiceUpdate {
                service: service_ref.to_owned(),
                flags,
            })
            .await?,
        )
    }

    /// Deletes a service with all its objects and permissions; its connections close.
    pub async fn delete_service(&self, service_ref: &str) -> Result<()> {
        done(
            self.call(Request::ServiceDelete {
                service: service_ref.to_owned(),
            })
            .await?,
        )
    }

    /// A new API key. Its `secret` is in this answer only.
    pub async fn create_key(&self, friendly_name: Option<&str>) -> Result<KeyInfo> {
        match self
            .call(Request::KeyCreate {
                friendly_name: friendly_name.map(str::to_owned),
            })
            .await?
        {
            Response::Key(k) => Ok(k),
            other => Err(unexpected(other)),
        }
    }

    /// Every API key (their secrets are never shown again).
    pub async fn keys(&self) -> Result<Vec<KeyInfo>> {
        match self.call(Request::KeyList).await? {
            Response::Keys(k) => Ok(k),
            other => Err(unexpected(other)),
        }
    }

    /// Revokes a key: tokens it signed are refused from now on, live connections close.
    pub async fn revoke_key(&self, sid: &str) -> Result<KeyInfo> {
        match self
            .call(Request::KeyRevoke {
                sid: sid.to_owned(),
            })
            .await?
        {
            Response::Key(k) => Ok(k),
            other => Err(unexpected(other)),
        }
    }

    /// Sets exactly `rights` for `identity` (`*`: everyone) on an object.
    pub async fn grant(
        &self,
        object: &str,
        identity: &str,
        rights: Rights,
    ) -> Result<PermissionInfo> {
        match self
            .call(Request::PermissionGrant {
                object: object.to_owned(),
                identity: identity.to_owned(),
                rights,
            })
            .await?
        {
            Response::Permission(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    /// Removes all of `identity`'s rights on an object.
    pub async fn revoke(&self, object: &str, identity: &str) -> Result<()> {
        done(
            self.call(Request::PermissionRevoke {
                object: object.to_owned(),
                identity: identity.to_owned(),
            })
            .await?,
        )
    }

    /// The grants on an object, per identity.
    pub async fn permissions(&self, object: &str) -> Result<Vec<PermissionInfo>> {
        match self
            .call(Request::PermissionList {
                object: object.to_owned(),
            })
            .await?
        {
            Response::Permissions(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }
}
