//! `admin.json`: what the server writes on first start so that the operator's tools (the
//! CLI, a backend) can reach it as the backend. Mode 0600: it holds an API key secret.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, PartialEq)]
pub struct AdminConfig {
    /// Address the server listens on, e.g. `127.0.0.1:7400`.
    pub server: String,
    /// The server's self-signed certificate, to trust as CA.
    pub ca_file: PathBuf,
    pub account_sid: String,
    pub default_service_sid: String,
    pub api_key_sid: String,
    pub api_key_secret: String,
    /// The HTTPS (Twilio Sync v1 REST) base URL, e.g. `https://127.0.0.1:7401`, when the
    /// server serves it.
    #[serde(default)]
    pub http_url: Option<String>,
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
            .finish()
    }
}

impl AdminConfig {
    pub fn load(path: &Path) -> Result<AdminConfig, crate::Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| crate::Error::Config(format!("cannot read {}: {e}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| {
            crate::Error::Config(format!(
                "{} is not a valid admin config: {e}",
                path.display()
            ))
        })
    }
}
