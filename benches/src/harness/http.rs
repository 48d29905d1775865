//! W1 over HTTPS: the same durable document writes as `write`, sent by backends through
//! the REST API (Twilio Sync v1's `POST /Documents/{Sid}` with a form-encoded `Data`), each
//! writer on its own keep-alive HTTP/1.1 connection with its own API key (the REST rate
//! limit is per credential, as QUIC's is per connection). Beside `write`'s figure it shows
//! what the HTTP gateway costs.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};

use super::measure::{self, Delivery, Outcome, Progress};
use super::syncline::Syncline;
use super::workloads::{write_loop, Sample, OPEN_LIMIT};
use super::{err, Error};

/// One backend's HTTPS connection.
pub struct HttpWriter {
    send: SendRequest<Full<Bytes>>,
    authorization: String,
    host: String,
}

impl HttpWriter {
    async fn connect(
        tls: &tokio_rustls::TlsConnector,
        addr: std::net::SocketAddr,
        key: (&str, &str),
    ) -> Result<HttpWriter, Error> {
        use base64::Engine;
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(err)?;
        tcp.set_nodelay(true).map_err(err)?;
        let name = ServerName::IpAddress(addr.ip().into());
        let stream = tls.connect(name, tcp).await.map_err(err)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(err)?;
        tokio::spawn(conn);
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", key.0, key.1));
        Ok(HttpWriter {
            send,
            authorization: format!("Basic {credentials}"),
            host: addr.to_string(),
        })
    }

    /// POSTs a form and returns the status, failing on a broken connection.
    async fn post(&mut self, path: &str, form: String) -> Result<u16, Error> {
        let request = hyper::Request::post(path)
            .header("host", &self.host)
            .header("authorization", &self.authorization)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .map_err(err)?;
        self.send.ready().await.map_err(err)?;
        let response = self.send.send_request(request).await.map_err(err)?;
        let status = response.status().as_u16();
        // Read the answer whole: the next request goes on the same connection.
        response.into_body().collect().await.map_err(err)?;
        Ok(status)
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// W1 over HTTPS: `writers` backends each writing a ~200-byte document.
pub async fn write(
    syncline: &Syncline,
    writers: usize,
    shared: Option<usize>,
    duration: std::time::Duration,
) -> Result<Outcome, Error> {
    let server = syncline.server();
    let url = server
        .admin
        .http_url
        .clone()
        .ok_or("the server under test serves no HTTPS (admin.json has no http_url)")?;
    let addr: std::net::SocketAddr = url
        .trim_start_matches("https://")
        .parse()
        .map_err(|e| format!("http_url {url:?}: {e}"))?;
    let pem = std::fs::read(&server.admin.ca_file).map_err(err)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.map_err(err)?).map_err(err)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(err)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    // One API key per writer: the REST rate limit is per credential.
    let service = server.admin.default_service_sid.clone();
    let clients = measure::phase("write --http: opening connections", OPEN_LIMIT, async {
        let admin = syncline.backend().await?;
        let mut clients = Vec::with_capacity(writers);
        for w in 0..writers {
            let key = admin.create_key(Some("bench")).await.map_err(err)?;
            let secret = key.secret.ok_or("a new key came without its secret")?;
            let mut c = HttpWriter::connect(&tls, addr, (&key.sid, &secret)).await?;
            // The documents exist first: an update by name does not create one.
            let name = match shared {
                Some(n) => format!("shared-{}", w % n.max(1)),
                None => format!("writer-{w}"),
            };
            let path = format!("/v1/Services/{service}/Documents");
            let status = c
                .post(&path, form(&[("UniqueName", &name), ("Data", "{}")]))
                .await?;
            if status != 201 && status != 409 {
                return Err(format!("creating {name} over HTTPS answered {status}"));
            }
            clients.push(c);
        }
        Ok(clients)
    })
    .await?;
    let progress = Progress::new("write --http");
    let before = Sample::take(syncline);
    let (latency, elapsed) = write_loop(
        clients,
        shared,
        duration,
        &progress,
        move |mut c: HttpWriter, key: String, value: Value| {
            let path = format!("/v1/Services/{service}/Documents/{key}");
            async move {
                let status = c.post(&path, form(&[("Data", &value.to_string())])).await?;
                if status != 200 {
                    return Err(format!("a write over HTTPS answered {status}"));
                }
                Ok(c)
            }
        },
    )
    .await?;
    let writes = latency.len() as f64;
    let mut o = before.outcome(
        syncline,
        "write_http",
        writes,
        elapsed,
        (latency, Delivery::default()),
        json!({"writers": writers, "shared": shared, "duration_s": duration.as_secs_f64(), "transport": "https"}),
    );
    o.add_cpu_per_1000_writes(writes);
    Ok(o)
}
