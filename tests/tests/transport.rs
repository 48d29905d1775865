//! What a connection puts on the wire besides Syncline's own frames: no path-MTU probes
//! from either side (ARCHITECTURE.md, "No path-MTU discovery").

use std::time::Duration;

use serde_json::json;
use syncline_tests::TestServer;

#[tokio::test]
async fn neither_side_probes_the_path_mtu_so_packets_stay_at_quic_s_1200_byte_floor() {
    let s = TestServer::start().await;
    let alice = s.client_as("alice").await;
    // Enough traffic, and a document larger than one packet, for probing to have
    // started: quinn sends its first probe as soon as the handshake is confirmed.
    let big = "x".repeat(12_000);
    alice
        .document("notes")
        .set(&json!({ "text": big }))
        .await
        .unwrap();
    let read = alice.document("notes").get().await.unwrap();
    assert_eq!(read.data["text"].as_str().map(str::len), Some(12_000));
    for _ in 0..20 {
        alice.ping().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    alice.ping().await.unwrap();

    let stats = alice.transport_stats().expect("connected");
    assert_eq!(
        stats.path.sent_plpmtud_probes, 0,
        "the client probed the path MTU"
    );
    assert_eq!(
        stats.frame_rx.ping, 0,
        "the server sent PING frames (its MTU probes are padded PINGs)"
    );
    assert_eq!(stats.path.current_mtu, 1200);
    assert!(
        stats.udp_rx.bytes > 12_000,
        "the document came back over this connection"
    );
}

#[tokio::test]
async fn a_disconnected_client_has_no_transport_stats() {
    let s = TestServer::start().await;
    let alice = s.client_as("alice").await;
    assert!(alice.transport_stats().is_some());
    alice.close();
    assert!(alice.transport_stats().is_none());
}
