//! A terminal roster of a room: join it as your identity (an ephemeral map item that
//! lives exactly as long as this program's connection) and print who is here whenever
//! it changes. Run it in two terminals with two identities:
//!
//! ```text
//! SYNCLINE_TOKEN=$(syncline token --identity alice) cargo run -p syncline-client --example presence
//! SYNCLINE_TOKEN=$(syncline token --identity bob)   cargo run -p syncline-client --example presence
//! ```
//!
//! Stop one (Ctrl-C, or kill it): the other sees it leave.

use serde_json::json;
use syncline_client::{Client, ClientConfig, SyncEventKind};

#[tokio::main]
async fn main() -> Result<(), syncline_client::Error> {
    let token = std::env::var("SYNCLINE_TOKEN").expect("a token from your backend");
    let server = std::env::var("SYNCLINE_SERVER").unwrap_or_else(|_| "127.0.0.1:7400".into());
    let ca = std::env::var("SYNCLINE_CA").unwrap_or_else(|_| "syncline-data/tls/cert.pem".into());
    let client = Client::connect(ClientConfig::with_token(&server, &ca, &token)?).await?;
    let me = client.welcome().identity.clone().unwrap_or_default();

    let room = client.map("room:lobby");
    // Joining creates the room if it is not there yet; the snapshot then includes us.
    room.set_ephemeral(&me, &json!({ "joined_ms": now_ms() }))
        .await?;
    let mut sub = room.subscribe().await?;

    loop {
        tokio::select! {
            event = sub.next() => {
                let Some(event) = event else { break };
                let event = event?;
                if let SyncEventKind::ItemRemoved { key, reason, .. } = &event.kind {
                    println!("{key} left ({})", reason.as_str());
                }
                let here: Vec<String> = sub
                    .collection()
                    .map(|c| c.items.keys().map(|k| k.to_string()).collect())
                    .unwrap_or_default();
                println!("here: {}", here.join(", "));
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    // Leaving at once: without the close the server notices only at its idle timeout.
    client.close();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
