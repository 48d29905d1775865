//! Request decoding: a `RequestFrame` body as the QUIC edge reads it (bincode with the
//! frame limit), then `protocol::request::command`, the QUIC edge's translation into a checked core command. No
//! panic, only typed errors; a command that passes carries JSON every reader loads.
//!
//! Input: the frame body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use syncline_proto::frame::{self, FrameError};
use syncline_proto::{Limits, Request, RequestFrame};
use syncline_core::command::{Command, WriteCommand};
use syncline_server::protocol::request;

fn check_json(text: &str) {
    serde_json::from_str::<serde_json::Value>(text).expect("a checked payload loads");
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let frame = match frame::decode::<RequestFrame>(data, limits.max_frame_bytes) {
        Ok(frame) => frame,
        Err(FrameError::Malformed(_)) => return,
        Err(e) => panic!("{e:?}"),
    };
    assert_eq!(frame::peek_request_id(data), Some(frame.id));
    let is_hello = matches!(frame.request, Request::Hello { .. });
    match request::command(frame.request, &limits) {
        Ok(Command::Write(w)) => match &w {
            WriteCommand::DocSet { data, .. }
            | WriteCommand::ListPush { data, .. }
            | WriteCommand::ItemSet { data, .. } => {
                assert!(data.as_str().len() <= limits.max_data_bytes);
                check_json(data.as_str());
            }
            WriteCommand::DocUpdate { patch, .. } | WriteCommand::ItemUpdate { patch, .. } => {
                check_json(patch.as_str())
            }
            _ => {}
        },
        Ok(Command::Publish { data, .. }) => {
            assert!(data.as_str().len() <= limits.max_message_bytes);
            check_json(data.as_str());
        }
        Ok(Command::Subscribe { window, .. }) => {
            assert!((1..=limits.max_page).contains(&window.get()))
        }
        Ok(_) => assert!(!is_hello),
        Err(e) => assert!(!e.message.is_empty()),
    }
});
