//! The JavaScript SDK's wire types are the server's: `clients/js/src/wire.ts` must be
//! exactly what the Rust types generate.

use std::path::PathBuf;

#[test]
fn the_sdk_wire_types_are_generated_from_the_rust_types() {
    let generated = syncline_proto::typescript::declarations();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/js/src/wire.ts");
    if std::env::var_os("SYNCLINE_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write wire.ts");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: run `SYNCLINE_BLESS=1 cargo test -p syncline-tests --test typescript` \
         and commit it",
        path.display()
    );
}
