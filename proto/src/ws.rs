//! The WebSocket form of the protocol (browsers): the same requests, answers and events
//! as QUIC, as JSON text messages (serde's JSON form of the types in [`crate::message`])
//! instead of bincode frames. One message carries one request, one answer or one event.
//!
//! Client to server: a [`RequestFrame`], e.g. `{"id":1,"request":"Ping"}`.
//! Server to client: a [`ServerMessage`]: an answer `{"id":1,"result":{"Ok":"Pong"}}`
//! or an event `{"sub_id":7,"event":{…}}`.

use serde::{Deserialize, Serialize};

use crate::message::{Event, RequestFrame, ResponseFrame};

/// Where the HTTPS listener upgrades to WebSocket.
pub const PATH: &str = "/v1/ws";
/// The subprotocol a client asks for (`Sec-WebSocket-Protocol`); the server answers with
/// it, and refuses an upgrade that does not offer it.
pub const SUBPROTOCOL: &str = "syncline.v1";

/// An event of subscription `sub_id`: what QUIC sends as an event frame.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct EventFrame {
    /// The `sub_id` the client gave in `Subscribe`.
    pub sub_id: u64,
    /// The event.
    pub event: Event,
}

/// Any message from the server: an event (it has `sub_id` and `event`) or an answer (it
/// has `id` and `result`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(untagged)]
pub enum ServerMessage {
    /// An event of a subscription.
    Event(EventFrame),
    /// The answer to a request (or, with id 0, a notice tied to none).
    Response(ResponseFrame),
}

/// A client's message, as the server reads it (kept beside [`ServerMessage`] so both
/// directions are named here).
pub type ClientMessage = RequestFrame;

/// The WebSocket close code for a QUIC [`close_code`](crate::close_code): 1000 for a
/// normal close, else 4000 plus the QUIC code (4001 going away, 4002 unauthorized,
/// 4003 token expired, 4004 protocol error), in the range RFC 6455 leaves to
/// applications.
pub fn close_code(quic: u32) -> u16 {
    match quic {
        crate::close_code::NORMAL => 1000,
        other => 4000u16.saturating_add(u16::try_from(other).unwrap_or(999)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{EventKind, Reason, Request, Response};

    #[test]
    fn an_answer_and_an_event_read_back_as_what_they_are() {
        let answer = ServerMessage::Response(ResponseFrame {
            id: 3,
            result: Ok(Response::Pong),
        });
        let text = serde_json::to_string(&answer).expect("encodes");
        assert_eq!(text, r#"{"id":3,"result":{"Ok":"Pong"}}"#);
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&text).ok(),
            Some(answer)
        );

        let event = ServerMessage::Event(EventFrame {
            sub_id: 7,
            event: Event {
                object_sid: "ET0".into(),
                revision: 2,
                origin: 0,
                actor: "system".into(),
                kind: EventKind::ObjectRemoved {
                    reason: Reason::Write,
                },
            },
        });
        let text = serde_json::to_string(&event).expect("encodes");
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&text).ok(),
            Some(event)
        );
    }

    #[test]
    fn a_request_reads_from_its_json_form() {
        let frame: ClientMessage =
            serde_json::from_str(r#"{"id":1,"request":{"DocGet":{"document":"d"}}}"#)
                .expect("decodes");
        assert_eq!(
            frame.request,
            Request::DocGet {
                document: "d".into()
            }
        );
    }

    #[test]
    fn close_codes_are_in_the_application_range() {
        assert_eq!(close_code(crate::close_code::NORMAL), 1000);
        assert_eq!(close_code(crate::close_code::UNAUTHORIZED), 4002);
        assert_eq!(close_code(crate::close_code::TOKEN_EXPIRED), 4003);
    }
}
