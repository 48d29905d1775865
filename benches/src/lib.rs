//! Syncline benchmarks: shared fixtures for the criterion micro-benchmarks in
//! `benches/micro.rs` (the load harness grows here later).
//!
//! - [`doc_json`]: the ~200-byte JSON document every write and event bench carries.

/// A service sid for bench writes (the committer does not look services up).
pub const SERVICE_SID: &str = "IS00000000000000000000000000000001";

/// A JSON object of about 200 bytes whose values vary with `n`, so consecutive writes
/// really change the document.
pub fn doc_json(n: u64) -> String {
    format!(
        r#"{{"player":"player-{n:08}","room":"lobby-7","x":{x},"y":{y},"hp":87,"status":"moving","inventory":["sword","shield","potion","map"],"flags":{{"ready":true,"muted":false}},"seq":{n},"note":"padding to about 200 bytes"}}"#,
        x = n % 1000,
        y = (n * 7) % 1000,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn doc_is_about_200_bytes_of_json() {
        for n in [0, 1, 12_345, u64::from(u32::MAX)] {
            let s = super::doc_json(n);
            assert!((180..=240).contains(&s.len()), "{} bytes", s.len());
            serde_json::from_str::<serde_json::Value>(&s).unwrap();
        }
    }
}
