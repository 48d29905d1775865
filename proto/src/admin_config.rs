//! `admin.json`: what the server writes on first start so that the operator's tools (the
//! CLI, a backend) can reach it as the backend. Mode 0600: it holds an API key secret.
//! Defined here, once, so the server (which writes it) and the client (which reads it)
//! share it without one depending on the other; behind the `io` feature, as it reads
//! a file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The contents of `admin.json`: where the server is and the credentials to reach it as
/// the backend. Its `Debug` prints neither the key secret nor the auth token.
#[derive(Serialize, Deserialize, Clone, PartialEq)]
pub struct AdminConfig {
    /// Address the server listens on, e.g. `127.0.0.1:7400`.
    pub server: String,
    /// The server's self-signed certificate, to trust as CA.
    pub ca_file: PathBuf,
    /// The installation's account sid (`AC` + 32 hex), created on first start: the `sub`
    /// of every access token.
    pub account_sid: String,
    /// The service (`IS` + 32 hex) created on first start, used by an API-key connection
    /// whose `Hello` names none.
    pub default_service_sid: String,
    /// The sid (`SK` + 32 hex) of the API key created on first start: the backend's
    /// credential, and the `iss` of tokens minted with it.
    pub api_key_sid: String,
    /// That key's secret, exactly as printed at creation; its UTF-8 bytes are the HMAC
    /// key of the tokens it signs.
    pub api_key_secret: String,
    /// The HTTPS (Twilio Sync v1 REST) base URL, e.g. `https://127.0.0.1:7401`, when the
    /// server serves it.
    #[serde(default)]
    pub http_url: Option<String>,
    /// The installation's auth token (32 lowercase hex characters, like Twilio's): the
    /// key of every webhook's `X-Twilio-Signature`. Absent in files from before webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("server", &self.server)
            .field("ca_file", &self.ca_file)
            .field("account_sid", &self.account_sid)
            .field("default_service_sid", &self.default_service_sid)
            .field("api_key_sid", &self.api_key_sid)
            .field("api_key_secret", &"<redacted>")
            .field("http_url", &self.http_url)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Why an `admin.json` could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AdminConfigError(pub String);

impl AdminConfig {
    /// Reads and parses the `admin.json` at `path`; the error names the file and says
    /// whether it could not be read or is not a valid admin config.
    pub fn load(path: &Path) -> Result<AdminConfig, AdminConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AdminConfigError(format!("cannot read {}: {e}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| {
            AdminConfigError(format!(
                "{} is not a valid admin config: {e}",
                path.display()
            ))
        })
    }
}
