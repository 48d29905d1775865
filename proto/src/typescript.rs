//! The TypeScript declarations of the wire types, generated from the Rust types (with
//! `ts-rs`) so that the JavaScript SDK's types cannot drift from the server's. The SDK's
//! `clients/js/src/wire.ts` is this output; a test in `tests/` fails when it is stale.

use ts_rs::{Config, TS};

use crate::error::{ErrorCode, WireError};
use crate::ids::ObjectKind;
use crate::message::*;
use crate::ws::{EventFrame, ServerMessage};

/// Every declaration, in one module. Integers are `number`: revisions, times, ids and
/// sequences stay far below 2^53, and JSON.parse gives numbers.
pub fn declarations() -> String {
    let cfg = Config::new().with_large_int("number");
    let mut out = String::from(
        "// Generated from the Rust wire types (syncline-proto, feature `typescript`).\n\
         // Do not edit: run `SYNCLINE_BLESS=1 cargo test -p syncline-tests --test typescript`.\n\
         // Every `data` and `previous` field is JSON text: JSON.parse it.\n",
    );
    macro_rules! declare {
        ($($t:ty),* $(,)?) => {$(
            out.push('\n');
            if let Some(docs) = <$t as TS>::docs() {
                out.push_str(&docs);
            }
            out.push_str("export ");
            out.push_str(&<$t as TS>::decl(&cfg));
            out.push('\n');
        )*};
    }
    declare!(
        RequestFrame,
        Credential,
        Request,
        ServiceFlags,
        TokenCreate,
        ServiceFlagsPatch,
        ServiceInfo,
        KeyInfo,
        Rights,
        PermissionInfo,
        ResponseFrame,
        Response,
        WriteInfo,
        WrittenValue,
        Welcome,
        NodeInfo,
        DocumentInfo,
        Event,
        EventKind,
        ObjectState,
        ObjectInfo,
        ItemKey,
        Order,
        ItemInfo,
        Reason,
        ObjectKind,
        ErrorCode,
        WireError,
        EventFrame,
        ServerMessage,
    );
    out
}
