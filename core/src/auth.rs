//! Authentication: API keys (the trusted backend) and JWT access tokens.
//!
//! Token rules (DESIGN.md, "Identity, tokens, ACL"): HS256 only; a `kid`, if present,
//! must equal `iss`; `iss` names a live API key whose secret signed the token; `sub` is
//! this installation's account sid; `exp` is required and `nbf` honoured, both with
//! `CLOCK_SKEW_S` of slack; lifetime at most 24 h; a `data_sync` grant with an identity
//! of 1..=256 characters. Everything here is pure: the key lookup is passed in.
//!
//! Expiry is one rule ([`valid_until`], [`is_expired`], [`time_to_expiry`]): a token is
//! accepted while now <= `exp` + `CLOCK_SKEW_S`, and a connection it authenticated is
//! closed with `TokenExpired` when the clock passes that same second.

use std::time::{Duration, SystemTime};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::distributions::{Alphanumeric, DistString};
use syncline_proto::ids::make_sid;
use syncline_proto::token::{TokenClaims, CLOCK_SKEW_S, MAX_TOKEN_LIFETIME_S};
use syncline_proto::{ErrorCode, Limits, WireError};

use crate::store::ApiKeyRecord;

/// What a client presents to authenticate: the backend's API key, or an access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// The trusted backend: an API key's sid and its secret as printed at creation.
    ApiKey { sid: String, secret: String },
    /// A JWT access token (Twilio's Access Token format with a Sync grant).
    Token(String),
}

/// What a verified token grants.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    pub identity: String,
    pub service_sid: String,
    pub key_sid: String,
    /// The token's `exp`, Unix seconds: what clients are told and refresh against.
    pub expires_at: u64,
    /// The last Unix second the token is accepted ([`valid_until`] of `exp`): a
    /// connection it authenticates is closed when the clock passes it.
    pub valid_until: u64,
}

/// The last Unix second at which a token with this `exp` is accepted: `exp` plus the
/// clock skew allowed. Verification and the connection's close timer both use it.
pub fn valid_until(exp: u64) -> u64 {
    exp.saturating_add(CLOCK_SKEW_S)
}

/// Whether a token accepted until `valid_until` has expired at Unix second `now_s`.
pub fn is_expired(valid_until: u64, now_s: u64) -> bool {
    now_s > valid_until
}

/// How long from `now` until a token accepted until `valid_until` expires, i.e. until
/// the first instant whose Unix second is past it ([`is_expired`]); zero if it has.
pub fn time_to_expiry(valid_until: u64, now: SystemTime) -> Duration {
    let end = Duration::from_secs(valid_until.saturating_add(1));
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    end.saturating_sub(now)
}

fn unauthorized(msg: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::Unauthorized, msg)
}

/// Reads `iss` from the unverified payload, to find the key to verify with.
pub fn unverified_issuer(token: &str) -> Result<String, WireError> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| unauthorized("malformed token: expected three dot-separated parts"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| unauthorized("malformed token: payload is not base64url"))?;
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: String,
    }
    serde_json::from_slice::<Iss>(&bytes)
        .map(|c| c.iss)
        .map_err(|_| unauthorized("malformed token: payload has no string `iss`"))
}

/// Verifies `token`. `key` is the API key named by the token's `iss` (see
/// [`unverified_issuer`]), if there is one.
pub fn verify_token(
    token: &str,
    key: Option<ApiKeyRecord>,
    account_sid: &str,
    limits: &Limits,
    now_s: u64,
) -> Result<VerifiedToken, WireError> {
    if token.len() > limits.max_token_bytes {
        return Err(unauthorized(format!(
            "token is {} bytes, the limit is {}",
            token.len(),
            limits.max_token_bytes
        )));
    }
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| unauthorized(format!("malformed token header: {e}")))?;
    if header.alg != Algorithm::HS256 {
        return Err(unauthorized(format!(
            "token algorithm {:?} is not accepted; use HS256",
            header.alg
        )));
    }
    let iss = unverified_issuer(token)?;
    if header.kid.as_ref().is_some_and(|kid| *kid != iss) {
        return Err(unauthorized("token `kid` does not match `iss`"));
    }
    let key = key
        .filter(|k| k.sid == iss)
        .filter(|k| !k.revoked)
        .ok_or_else(|| unauthorized("token was signed by an unknown or revoked API key"))?;
    // Times are checked below against `now_s`, so that one clock decides everything.
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    let claims = jsonwebtoken::decode::<TokenClaims>(
        token,
        &DecodingKey::from_secret(key.secret.as_bytes()),
        &validation,
    )
    .map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidSignature => {
            unauthorized("token signature does not verify")
        }
        _ => unauthorized(format!("invalid token: {e}")),
    })?
    .claims;
    if is_expired(valid_until(claims.exp), now_s) {
        return Err(WireError::new(ErrorCode::TokenExpired, "token has expired"));
    }
    if claims
        .nbf
        .is_some_and(|nbf| nbf > now_s.saturating_add(CLOCK_SKEW_S))
    {
        return Err(unauthorized("token is not valid yet (nbf)"));
    }
    if claims.sub != account_sid {
        return Err(unauthorized(
            "token `sub` is not this installation's account sid",
        ));
    }
    let start = claims.nbf.unwrap_or(now_s);
    if claims.exp.saturating_sub(start) > MAX_TOKEN_LIFETIME_S {
        return Err(unauthorized("token lifetime exceeds 24 hours"));
    }
    let grant = claims
        .grants
        .data_sync
        .ok_or_else(|| unauthorized("token has no data_sync grant"))?;
    let identity = claims.grants.identity.unwrap_or_default();
    let chars = identity.chars().count();
    if chars == 0 || chars > limits.max_identity_chars {
        return Err(unauthorized(format!(
            "token identity must be 1..={} characters",
            limits.max_identity_chars
        )));
    }
    Ok(VerifiedToken {
        identity,
        service_sid: grant.service_sid,
        key_sid: key.sid,
        expires_at: claims.exp,
        valid_until: valid_until(claims.exp),
    })
}

/// Checks an API key credential in constant time.
pub fn verify_api_key(presented: &str, key: Option<ApiKeyRecord>) -> Result<String, WireError> {
    let bad = || unauthorized("unknown or revoked API key, or wrong secret");
    let key = key.filter(|k| !k.revoked).ok_or_else(bad)?;
    let (a, b) = (presented.as_bytes(), key.secret.as_bytes());
    let diff = a
        .iter()
        .zip(b)
        .fold((a.len() ^ b.len()) as u8, |acc, (x, y)| acc | (x ^ y));
    if diff == 0 && a.len() == b.len() {
        Ok(key.sid)
    } else {
        Err(bad())
    }
}

/// A new random sid with `prefix` (`IS`, `SK`, ...).
pub fn random_sid(prefix: &str) -> String {
    make_sid(prefix, rand::random())
}

/// A new API key secret: 32 alphanumeric characters, as Twilio's are.
pub fn new_secret() -> String {
    Alphanumeric.sample_string(&mut rand::rngs::OsRng, 32)
}

/// A new auth token: 32 lowercase hex characters (128 random bits), as Twilio's are.
pub fn new_auth_token() -> String {
    let bytes: [u8; 16] = rand::Rng::gen(&mut rand::rngs::OsRng);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncline_client::token::mint;

    const ACCOUNT: &str = "AC00000000000000000000000000000000";
    const SERVICE: &str = "IS00000000000000000000000000000000";
    const KEY: &str = "SK00000000000000000000000000000000";
    const NOW: u64 = 1_800_000_000;

    fn key() -> Option<ApiKeyRecord> {
        Some(ApiKeyRecord {
            sid: KEY.into(),
            friendly_name: None,
            secret: "s3cret".into(),
            date_created: 0,
            revoked: false,
        })
    }

    fn token(identity: &str, ttl: u64) -> String {
        mint(KEY, "s3cret", ACCOUNT, SERVICE, identity, ttl, NOW)
    }

    fn verify(t: &str) -> Result<VerifiedToken, WireError> {
        verify_token(t, key(), ACCOUNT, &Limits::default(), NOW)
    }

    #[test]
    fn good_token_verifies() {
        let v = verify(&token("alice", 3600)).unwrap();
        assert_eq!(v.identity, "alice");
        assert_eq!(v.service_sid, SERVICE);
        assert_eq!(v.expires_at, NOW + 3600);
    }

    #[test]
    fn refusals() {
        let code = |t: &str| verify(t).unwrap_err().code;
        assert_eq!(code(&token("alice", 25 * 3600)), ErrorCode::Unauthorized);
        assert_eq!(code(&token("", 60)), ErrorCode::Unauthorized);
        assert_eq!(code(&token(&"x".repeat(257), 60)), ErrorCode::Unauthorized);
        assert_eq!(code("not a token"), ErrorCode::Unauthorized);
        let expired = mint(KEY, "s3cret", ACCOUNT, SERVICE, "a", 60, NOW - 3600);
        assert_eq!(code(&expired), ErrorCode::TokenExpired);
        let wrong_secret = mint(KEY, "other", ACCOUNT, SERVICE, "a", 60, NOW);
        assert_eq!(code(&wrong_secret), ErrorCode::Unauthorized);
        let wrong_account = mint(
            KEY,
            "s3cret",
            "AC11111111111111111111111111111111",
            SERVICE,
            "a",
            60,
            NOW,
        );
        assert_eq!(code(&wrong_account), ErrorCode::Unauthorized);
        let t = token("alice", 60);
        let revoked = verify_token(
            &t,
            key().map(|k| ApiKeyRecord { revoked: true, ..k }),
            ACCOUNT,
            &Limits::default(),
            NOW,
        );
        assert_eq!(revoked.unwrap_err().code, ErrorCode::Unauthorized);
    }

    #[test]
    fn expiry_boundary_is_exp_plus_the_skew() {
        // `ttl` 60 minted at NOW - 60 - back: exp = NOW - back.
        let past = |back: u64| mint(KEY, "s3cret", ACCOUNT, SERVICE, "a", 60, NOW - 60 - back);
        let v = verify(&past(30)).expect("30 s past exp is within the skew");
        assert_eq!(v.expires_at, NOW - 30);
        assert_eq!(v.valid_until, NOW + 30);
        let v = verify(&past(CLOCK_SKEW_S)).expect("exactly exp + skew is still accepted");
        assert_eq!(v.valid_until, NOW);
        assert_eq!(
            verify(&past(CLOCK_SKEW_S + 1)).unwrap_err().code,
            ErrorCode::TokenExpired
        );
        // The close timer ends the connection exactly when verification starts refusing.
        let at = |s: u64, ms: u64| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms)
        };
        assert_eq!(
            time_to_expiry(NOW, at(NOW - 30, 0)),
            Duration::from_secs(31)
        );
        assert_eq!(time_to_expiry(NOW, at(NOW, 0)), Duration::from_secs(1));
        assert_eq!(time_to_expiry(NOW, at(NOW, 999)), Duration::from_millis(1));
        assert_eq!(time_to_expiry(NOW, at(NOW + 1, 0)), Duration::ZERO);
        assert_eq!(time_to_expiry(NOW, at(NOW + 5, 0)), Duration::ZERO);
        for ms in (0..3000).step_by(250) {
            let now = at(NOW - 1, ms);
            let now_s = NOW - 1 + ms / 1000;
            assert_eq!(
                time_to_expiry(NOW, now).is_zero(),
                is_expired(NOW, now_s),
                "at {ms} ms"
            );
        }
    }

    #[test]
    fn api_key_compare() {
        assert!(verify_api_key("s3cret", key()).is_ok());
        assert!(verify_api_key("s3cre", key()).is_err());
        assert!(verify_api_key("s3cret!", key()).is_err());
        assert!(verify_api_key("s3cret", None).is_err());
    }
}
