//! A note that works offline: the last state comes from a file at start (server or
//! not), an edit made while the server is away is queued and sent when it is back, and
//! an edit that met someone else's is shown with both values instead of overwriting.
//!
//! ```text
//! export SYNCLINE_TOKEN=$(syncline token --identity alice)
//! cargo run -p syncline-client --example offline -- "buy milk"
//! ```
//!
//! Run it again with the server stopped: it shows the saved note, and the edit waits
//! for the server (start it again) instead of failing.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use syncline_client::{Client, ClientConfig, Error, Replica};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let token = std::env::var("SYNCLINE_TOKEN").expect("a token from your backend");
    let server = std::env::var("SYNCLINE_SERVER").unwrap_or_else(|_| "127.0.0.1:7400".into());
    let ca = std::env::var("SYNCLINE_CA").unwrap_or_else(|_| "syncline-data/tls/cert.pem".into());
    let config = ClientConfig::with_token(&server, &ca, &token)?.with_offline_writes(100);
    // Returns at once, whether the server is reachable or not.
    let client = Client::start(config)?;
    let note = client.document("note");
    let file = Path::new("note.replica.json");

    let mut sub = match Replica::load(file) {
        Ok(replica) => {
            if let Replica::Document(d) = &replica {
                println!("last known note: {} (revision {})", d.data, d.revision);
            }
            // At once while offline; catches up (only what changed) once connected.
            client.resume("note", replica, None).await?
        }
        Err(e) => {
            // The first run needs the server: the note must exist to subscribe.
            println!("no saved note ({e}); fetching it");
            note.mutate(|v| v.is_none().then(|| json!({ "text": "" })))
                .await?;
            let mut sub = note.subscribe().await?;
            sub.next().await.transpose()?;
            sub
        }
    };

    if let Some(text) = std::env::args().nth(1) {
        // Offline, this waits in the queue, conditional on the revision shown above.
        match note.update(&json!({ "text": text })).await {
            Ok(w) => println!("written at revision {}", w.revision),
            Err(Error::WriteConflict(c)) => println!(
                "not written: {c}. You wrote {:?}; the server has {:?}",
                c.attempted,
                c.current.data()
            ),
            Err(e) => return Err(e),
        }
    }
    // Whatever arrives in a moment, then keep the state for the next start.
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
        event?;
    }
    sub.replica().save(file)?;
    if let Some(d) = sub.document() {
        println!("note: {} (revision {})", d.data, d.revision);
    }
    Ok(())
}
