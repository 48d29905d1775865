//! The HTTP client that posts webhooks for the core's scheduler (`syncline_core::webhooks`):
//! one pooled hyper client over rustls, HTTPS or plain HTTP as the URL says.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use syncline_core::webhooks::{Attempt, WebhookPoster};

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Posts webhooks; cheap to share.
pub struct HyperPoster {
    client: HttpClient,
}

impl HyperPoster {
    pub fn new() -> Result<HyperPoster, String> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
            .map_err(|e| format!("webhook client TLS: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(8)
            .build(connector);
        Ok(HyperPoster { client })
    }
}

#[async_trait::async_trait]
impl WebhookPoster for HyperPoster {
    async fn post(&self, url: &str, signature: &str, body: Bytes) -> Attempt {
        let request = hyper::Request::post(url)
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(
                hyper::header::USER_AGENT,
                concat!("Syncline/", env!("CARGO_PKG_VERSION")),
            )
            .header("X-Twilio-Signature", signature)
            .body(Full::new(body));
        let request = match request {
            Ok(r) => r,
            Err(e) => return Attempt::Failed(format!("bad webhook URL {url:?}: {e}")),
        };
        let response = match self.client.request(request).await {
            Ok(r) => r,
            Err(e) => return Attempt::Failed(e.to_string()),
        };
        let status = response.status();
        // Read (and drop) the body so the connection can be reused.
        let _ = response.into_body().collect().await;
        if status.is_success() {
            Attempt::Delivered
        } else if status.is_server_error() || status == hyper::StatusCode::TOO_MANY_REQUESTS {
            Attempt::Failed(format!("answered {status}"))
        } else {
            Attempt::Refused(status.as_u16())
        }
    }
}
