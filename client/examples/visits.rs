//! The README's client example: count a visit, then watch the document.
//! Run with `SYNCLINE_TOKEN=$(syncline token --identity me) cargo run -p syncline-client --example visits`.

use serde_json::json;
use syncline_client::{Client, ClientConfig};

#[tokio::main]
async fn main() -> Result<(), syncline_client::Error> {
    let token = std::env::var("SYNCLINE_TOKEN").expect("a token from your backend");
    let config = ClientConfig::with_token("127.0.0.1:7400", "syncline-data/tls/cert.pem", &token)?;
    let client = Client::connect(config).await?;
    let doc = client.document("room");
    doc.mutate(|cur| {
        Some(json!({"visits": cur.and_then(|v| v["visits"].as_u64()).unwrap_or(0) + 1}))
    })
    .await?;
    let mut sub = doc.subscribe().await?; // first event: a snapshot
    while let Some(event) = sub.next().await {
        let event = event?; // in revision order, no gaps
        println!(
            "rev {} mine={} now {:?}",
            event.revision,
            event.is_local,
            sub.document().map(|d| &d.data)
        );
    }
    Ok(())
}
