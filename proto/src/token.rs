//! The access-token claims: the Twilio Access Token format with a Sync (`data_sync`)
//! grant, so that Twilio's helper libraries and any JWT library mint valid tokens.
//!
//! Header: `alg: HS256` (optionally `cty: twilio-fpa;v=1`, `kid` = `iss`).
//! Claims: `iss` = API key sid, `sub` = account sid, `jti`, `exp`, optional `nbf`/`iat`,
//! `grants = { identity, data_sync: { service_sid } }`. Signed with the key's secret.

use serde::{Deserialize, Serialize};

/// Content type Twilio's libraries put in the JWT header.
pub const TWILIO_CTY: &str = "twilio-fpa;v=1";
/// Longest accepted lifetime, `exp` − (`nbf` or now), in seconds.
pub const MAX_TOKEN_LIFETIME_S: u64 = 24 * 3600;
/// Clock skew allowed when checking `exp` and `nbf`, in seconds.
pub const CLOCK_SKEW_S: u64 = 60;

/// The claims of a Syncline access token (the JWT payload), as Twilio's `AccessToken`
/// writes them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TokenClaims {
    /// The token's id; Twilio's helpers write `{key sid}-{issue time}`. Not checked.
    pub jti: String,
    /// The sid of the API key (`SK` + 32 hex) whose secret signed the token; revoking
    /// that key invalidates the token.
    pub iss: String,
    /// The installation's account sid (`AC` + 32 hex, in `admin.json`).
    pub sub: String,
    /// Expiry, in Unix seconds. Accepted up to [`CLOCK_SKEW_S`] past it; `exp` − (`nbf`
    /// or now) must be at most [`MAX_TOKEN_LIFETIME_S`].
    pub exp: u64,
    /// Not before, in Unix seconds (less [`CLOCK_SKEW_S`]); `None`: valid from issue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, in Unix seconds; informational, `None` if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Who the token speaks for and which service it may use.
    pub grants: Grants,
}

/// The token's `grants` claim. Other grants (chat, video, ...) may be present; they are
/// ignored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Grants {
    /// The identity the connection acts as (1..=`Limits::max_identity_chars`
    /// characters): the actor of its changes and the subject of ACL grants. Optional in
    /// the JSON, but a token without one is `Unauthorized`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The Sync grant naming the service; optional in the JSON, but a token without one
    /// is `Unauthorized`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_sync: Option<SyncGrant>,
}

/// Twilio's Sync grant (`data_sync`): the one service a token may use.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SyncGrant {
    /// The service sid (`IS` + 32 hex) the token acts in; a `Hello` naming another
    /// service is `Forbidden`.
    pub service_sid: String,
    /// Twilio's optional endpoint id (a device or installation label); carried, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_id: Option<String>,
}
