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

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TokenClaims {
    pub jti: String,
    pub iss: String,
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    pub grants: Grants,
}

/// Other grants (chat, video, ...) may be present; they are ignored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Grants {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_sync: Option<SyncGrant>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SyncGrant {
    pub service_sid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_id: Option<String>,
}
