//! Minting access tokens, for backends that hold an API key (and for the CLI's
//! `syncline token`). The format is Twilio's Access Token with a `data_sync` grant; see
//! `syncline_proto::token`.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use syncline_proto::token::{Grants, SyncGrant, TokenClaims, TWILIO_CTY};

/// Mints a token for `identity` in `service_sid`, valid from `now_s` for `ttl_s` seconds.
pub fn mint(
    key_sid: &str,
    key_secret: &str,
    account_sid: &str,
    service_sid: &str,
    identity: &str,
    ttl_s: u64,
    now_s: u64,
) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.cty = Some(TWILIO_CTY.to_owned());
    let claims = TokenClaims {
        jti: format!("{key_sid}-{now_s}"),
        iss: key_sid.to_owned(),
        sub: account_sid.to_owned(),
        exp: now_s + ttl_s,
        nbf: Some(now_s),
        iat: Some(now_s),
        grants: Grants {
            identity: Some(identity.to_owned()),
            data_sync: Some(SyncGrant {
                service_sid: service_sid.to_owned(),
                endpoint_id: None,
            }),
        },
    };
    // HMAC signing of serializable claims cannot fail.
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(key_secret.as_bytes()),
    )
    .unwrap_or_else(|e| unreachable!("HS256 encode failed: {e}"))
}

/// Seconds since the Unix epoch.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
