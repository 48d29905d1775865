//! Framing: every message is `u32` big-endian length + bincode body.
//!
//! Two streams per connection use it:
//! - the request stream (client-opened, bidirectional): `RequestFrame` up, `ResponseFrame` down;
//! - the event stream (server-opened, unidirectional): each frame body is an
//!   [`EventFrameHeader`] (the client's `sub_id`, 8 bytes) followed by a bincode `Event`.
//!   The header is per subscriber, the event bytes are shared: an event is encoded once
//!   and written to every subscriber as `[len + header, event]` without re-encoding.
//!
//! Lengths are checked against the configured maximum before anything is allocated.
//!
//! Bodies are bincode with varint integers, little-endian, no trailing bytes: use
//! [`encode`] and [`decode`] rather than bincode directly.
//!
//! An event frame, written once for many subscribers and read back by one:
//!
//! ```
//! use syncline_proto::frame::{self, EventFrameHeader, FrameDecoder};
//! use syncline_proto::{Event, EventKind};
//!
//! let event = Event {
//!     object_sid: "ET00000000000000000000000000000001".into(),
//!     revision: 1,
//!     origin: 7,
//!     actor: "alice".into(),
//!     kind: EventKind::DocumentUpdated {
//!         data: r#"{"a":1}"#.into(),
//!         previous: None,
//!         date_updated: 1_700_000_000_000,
//!     },
//! };
//! // Server: encode the event once, then per subscriber write its header and the shared body.
//! let body = frame::encode_event(&event);
//! let mut wire = EventFrameHeader { sub_id: 42 }.encode(body.len()).to_vec();
//! wire.extend_from_slice(&body);
//!
//! // Client: split the event stream into frames and each frame into header and event.
//! let mut decoder = FrameDecoder::new(64 * 1024);
//! decoder.extend(&wire);
//! let frame = decoder.next_frame().unwrap().expect("a whole frame");
//! let (header, got) = EventFrameHeader::decode(&frame, decoder.max()).unwrap();
//! assert_eq!((header.sub_id, got), (42, event));
//! ```

use bincode::Options;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};

use crate::message::Event;

/// Bytes in the length prefix.
pub const LEN_PREFIX: usize = 4;

/// Body bytes of a refused frame that [`FrameDecoder`] hands back with
/// [`FrameError::TooLarge`]: enough for the longest varint, so that a request's id can
/// be read from them ([`peek_request_id`]).
pub const REFUSED_HEAD: usize = 9;

/// Why a frame could not be read. On the request stream the server answers either with
/// an error response (`TooLarge` or `InvalidArgument`) and keeps the connection open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The announced body length is over the decoder's limit. The body is skipped and
    /// decoding resumes after it.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The body length the length prefix announced, in bytes.
        len: u32,
        /// The limit it exceeds, in bytes (the decoder's `max_frame_bytes`).
        max: u32,
        /// The first `min(len, REFUSED_HEAD)` bytes of the refused body, where a
        /// request's id is ([`peek_request_id`]).
        head: Bytes,
    },
    /// The body is not a valid bincode encoding of the expected type (or has trailing
    /// bytes, or an event frame is shorter than its header); the text says why.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

fn options(limit: u32) -> impl Options {
    bincode::DefaultOptions::new()
        .with_varint_encoding()
        .with_little_endian()
        .with_limit(u64::from(limit))
        .reject_trailing_bytes()
}

/// Encodes `msg` as one frame: the `u32` big-endian body length, then the bincode body.
/// Never fails; the receiver's limit is not checked here.
pub fn encode<T: Serialize>(msg: &T) -> Bytes {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_u32(0);
    let mut w = (&mut buf).writer();
    // Serializing plain data into memory only fails on a size limit; we set none here.
    options(u32::MAX)
        .serialize_into(&mut w, msg)
        .unwrap_or_else(|e| unreachable!("in-memory bincode encode failed: {e}"));
    let body_len = (buf.len() - LEN_PREFIX) as u32;
    buf[..LEN_PREFIX].copy_from_slice(&body_len.to_be_bytes());
    buf.freeze()
}

/// Decodes a frame body (without its length prefix) with bincode's size limit set to
/// `max` bytes, so a forged length inside the body cannot make it allocate more;
/// `Malformed` if the body is not exactly one `T`.
pub fn decode<T: DeserializeOwned>(body: &[u8], max: u32) -> Result<T, FrameError> {
    options(max)
        .deserialize(body)
        .map_err(|e| FrameError::Malformed(e.to_string()))
}

/// The request id at the start of a `RequestFrame` body, if `body_head` holds one: the
/// id is the body's first field, a bincode varint (a byte up to 250 is the value; 251,
/// 252, 253 announce a little-endian `u16`, `u32`, `u64`). Reads no further than the id,
/// so it works on the head of a refused frame and on a body that does not decode.
pub fn peek_request_id(body_head: &[u8]) -> Option<u64> {
    fn le<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
        bytes.get(..N)?.try_into().ok()
    }
    let (&tag, rest) = body_head.split_first()?;
    match tag {
        0..=250 => Some(u64::from(tag)),
        251 => le::<2>(rest).map(|b| u64::from(u16::from_le_bytes(b))),
        252 => le::<4>(rest).map(|b| u64::from(u32::from_le_bytes(b))),
        253 => le::<8>(rest).map(u64::from_le_bytes),
        // 254 announces a u128, 255 is reserved: neither is a valid u64.
        _ => None,
    }
}

/// Encodes an event body once; pair it with [`EventFrameHeader::encode`] per subscriber.
pub fn encode_event(event: &Event) -> Bytes {
    let mut buf = Vec::with_capacity(128);
    options(u32::MAX)
        .serialize_into(&mut buf, event)
        .unwrap_or_else(|e| unreachable!("in-memory bincode encode failed: {e}"));
    Bytes::from(buf)
}

/// The per-subscriber part of an event frame: length prefix and subscription id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventFrameHeader {
    /// The subscription the event belongs to: the `sub_id` the client chose in
    /// `Request::Subscribe`. On the wire: 8 bytes, little-endian.
    pub sub_id: u64,
}

impl EventFrameHeader {
    /// Bytes of the header inside the frame body (the `sub_id`), before the event.
    pub const LEN: usize = 8;

    /// The 12 bytes that precede a shared event body of `body_len` bytes on the wire.
    pub fn encode(&self, body_len: usize) -> [u8; LEN_PREFIX + Self::LEN] {
        let mut out = [0u8; LEN_PREFIX + Self::LEN];
        out[..4].copy_from_slice(&((Self::LEN + body_len) as u32).to_be_bytes());
        out[4..].copy_from_slice(&self.sub_id.to_le_bytes());
        out
    }

    /// Splits an event frame body (as [`FrameDecoder::next_frame`] returns it) into its
    /// header and the event, decoded as [`decode`] does with `max`; `Malformed` if it is
    /// shorter than the header or the event does not decode.
    pub fn decode(body: &[u8], max: u32) -> Result<(EventFrameHeader, Event), FrameError> {
        if body.len() < Self::LEN {
            return Err(FrameError::Malformed(
                "event frame shorter than its header".into(),
            ));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&body[..Self::LEN]);
        let event = decode(&body[Self::LEN..], max)?;
        Ok((
            EventFrameHeader {
                sub_id: u64::from_le_bytes(id),
            },
            event,
        ))
    }
}

/// Splits a byte stream into frame bodies. Feed it bytes as they arrive; it never
/// buffers more than one frame beyond the limit's worth.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max: u32,
    /// Bytes of a refused (oversized) frame still to be discarded as they arrive, so the
    /// stream stays usable after the error.
    skip: usize,
}

impl FrameDecoder {
    /// A decoder that refuses bodies over `max_frame_bytes` bytes (the server uses
    /// `Limits::max_frame_bytes`).
    pub fn new(max_frame_bytes: u32) -> Self {
        FrameDecoder {
            buf: BytesMut::new(),
            max: max_frame_bytes,
            skip: 0,
        }
    }

    /// The body limit in bytes this decoder was made with; pass it on to [`decode`].
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Appends bytes as they arrive from the stream, split anywhere; then call
    /// [`FrameDecoder::next_frame`] until it returns `Ok(None)`.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame body, `None` if more bytes are needed, or an error if the
    /// announced length is over the limit. The error comes once the first
    /// `min(len, REFUSED_HEAD)` body bytes are in, and carries them (the request id is
    /// there). After it the oversized body is discarded as it arrives, without being
    /// buffered, and decoding resumes after it.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.skip > 0 {
            let n = self.skip.min(self.buf.len());
            self.buf.advance(n);
            self.skip -= n;
            if self.skip > 0 {
                return Ok(None);
            }
        }
        if self.buf.len() < LEN_PREFIX {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        if len > self.max {
            let head_len = (len as usize).min(REFUSED_HEAD);
            if self.buf.len() < LEN_PREFIX + head_len {
                return Ok(None);
            }
            let head = Bytes::copy_from_slice(&self.buf[LEN_PREFIX..LEN_PREFIX + head_len]);
            self.buf.advance(LEN_PREFIX);
            self.skip = len as usize;
            return Err(FrameError::TooLarge {
                len,
                max: self.max,
                head,
            });
        }
        let total = LEN_PREFIX + len as usize;
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(LEN_PREFIX);
        Ok(Some(self.buf.split_to(len as usize).freeze()))
    }

    /// Bytes received but not yet returned as a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::*;

    fn sample_request() -> RequestFrame {
        RequestFrame {
            id: 7,
            request: Request::DocSet {
                document: "room".into(),
                data: r#"{"a":1}"#.into(),
                if_match: Some(3),
                ttl: None,
            },
        }
    }

    #[test]
    fn round_trip_in_pieces() {
        let frame = encode(&sample_request());
        let mut dec = FrameDecoder::new(1024);
        // Byte by byte: a frame split anywhere must still decode.
        let mut got = None;
        for b in frame.iter() {
            dec.extend(&[*b]);
            if let Some(body) = dec.next_frame().unwrap() {
                got = Some(decode::<RequestFrame>(&body, 1024).unwrap());
            }
        }
        assert_eq!(got, Some(sample_request()));
        assert_eq!(dec.pending(), 0);
    }

    #[test]
    fn oversized_length_is_refused_before_allocation() {
        let mut dec = FrameDecoder::new(1024);
        dec.extend(&u32::MAX.to_be_bytes());
        // The refusal waits for the head of the body (where the request id is)...
        assert_eq!(dec.next_frame(), Ok(None));
        dec.extend(&[5, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(dec.next_frame(), Ok(None));
        dec.extend(&[8, 9, 10]);
        // ...and carries exactly REFUSED_HEAD bytes of it, nothing allocated for the rest.
        assert_eq!(
            dec.next_frame(),
            Err(FrameError::TooLarge {
                len: u32::MAX,
                max: 1024,
                head: Bytes::from_static(&[5, 1, 2, 3, 4, 5, 6, 7, 8]),
            })
        );
        assert!(dec.buf.capacity() < 1024);
        assert_eq!(dec.next_frame(), Ok(None));
    }

    #[test]
    fn a_refused_body_shorter_than_the_head_is_refused_when_complete() {
        let mut dec = FrameDecoder::new(2);
        let mut wire = 3u32.to_be_bytes().to_vec();
        wire.extend_from_slice(&[7, 0, 0]);
        wire.extend_from_slice(&1u32.to_be_bytes());
        wire.push(42);
        dec.extend(&wire[..6]);
        assert_eq!(dec.next_frame(), Ok(None));
        dec.extend(&wire[6..]);
        assert_eq!(
            dec.next_frame(),
            Err(FrameError::TooLarge {
                len: 3,
                max: 2,
                head: Bytes::from_static(&[7, 0, 0]),
            })
        );
        assert_eq!(dec.next_frame(), Ok(Some(Bytes::from_static(&[42]))));
    }

    #[test]
    fn the_request_id_of_a_refused_frame_can_be_read() {
        for id in [
            0,
            1,
            250,
            251,
            0xffff,
            0x1_0000,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let frame = encode(&RequestFrame {
                id,
                request: Request::DocSet {
                    document: "big".into(),
                    data: format!("\"{}\"", "x".repeat(5000)),
                    if_match: None,
                    ttl: None,
                },
            });
            let mut dec = FrameDecoder::new(1024);
            // Split anywhere, even inside the id.
            let mut refused = None;
            for chunk in frame.chunks(3) {
                dec.extend(chunk);
                match dec.next_frame() {
                    Ok(None) => {}
                    Err(FrameError::TooLarge { head, .. }) => refused = Some(head),
                    other => panic!("{other:?}"),
                }
            }
            let head = refused.expect("refused");
            assert_eq!(peek_request_id(&head), Some(id), "id {id}");
            assert_eq!(dec.pending(), 0);
        }
    }

    #[test]
    fn peek_request_id_reads_the_varint_as_bincode_does() {
        let ids = [
            0u64,
            7,
            250,
            251,
            252,
            300,
            0xffff,
            0x1_0000,
            1 << 40,
            u64::MAX,
        ];
        for id in ids {
            let body = encode(&RequestFrame {
                id,
                request: Request::Ping,
            });
            let body = &body[LEN_PREFIX..];
            assert_eq!(peek_request_id(body), Some(id), "id {id}");
            // One byte short of the varint: unreadable, never a wrong id.
            let varint_len = body.len() - 1; // Ping is one byte
            assert_eq!(peek_request_id(&body[..varint_len - 1]), None, "id {id}");
        }
        // Non-canonical but valid for bincode: 251 followed by a small u16.
        assert_eq!(peek_request_id(&[251, 5, 0]), Some(5));
        assert_eq!(decode::<u64>(&[251, 5, 0], 16), Ok(5));
        assert_eq!(peek_request_id(&[252, 1, 0, 0, 0, 0xaa]), Some(1));
        assert_eq!(peek_request_id(&[]), None);
        // 254 (u128) and 255 are not a u64 id, as bincode says too.
        for tag in [254u8, 255] {
            let body = [tag, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            assert_eq!(peek_request_id(&body), None);
            assert!(decode::<u64>(&body, 64).is_err());
        }
    }

    #[test]
    fn decoding_resumes_after_an_oversized_frame() {
        let mut dec = FrameDecoder::new(16);
        let mut wire = 100u32.to_be_bytes().to_vec();
        wire.extend_from_slice(&[0xaa; 100]);
        wire.extend_from_slice(&encode(&RequestFrame {
            id: 1,
            request: Request::Ping,
        }));
        let mut errors = 0;
        let mut frames = Vec::new();
        for chunk in wire.chunks(7) {
            dec.extend(chunk);
            loop {
                match dec.next_frame() {
                    Ok(Some(f)) => frames.push(decode::<RequestFrame>(&f, 16).unwrap()),
                    Ok(None) => break,
                    Err(FrameError::TooLarge { len: 100, .. }) => errors += 1,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        assert_eq!(errors, 1);
        assert_eq!(
            frames,
            vec![RequestFrame {
                id: 1,
                request: Request::Ping
            }]
        );
    }

    #[test]
    fn garbage_body_is_malformed_not_a_panic() {
        for body in [&b""[..], b"\xff\xff\xff\xff\xff", b"\x01\x09", &[0xfd; 40]] {
            assert!(decode::<RequestFrame>(body, 1024).is_err());
        }
        // A declared string length beyond the limit must not allocate it.
        let mut body = vec![7u8, 4]; // id 7, variant DocGet (index 4)
        body.extend_from_slice(&[0xfc, 0xff, 0xff, 0xff, 0x7f]); // huge string length
        assert!(decode::<RequestFrame>(&body, 1024).is_err());
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let frame = encode(&sample_request());
        let mut body = frame[LEN_PREFIX..].to_vec();
        body.push(0);
        assert!(decode::<RequestFrame>(&body, 1024).is_err());
    }

    #[test]
    fn requests_keep_their_variant_tags_so_older_clients_still_decode() {
        // The body is the id (one byte here), then the variant's index.
        let tag = |request: Request| encode(&RequestFrame { id: 1, request })[LEN_PREFIX + 1];
        let map = crate::ids::ObjectKind::Map;
        let key = || ItemKey::Key("k".into());
        assert_eq!(tag(Request::Ping), 2);
        let set = Request::ItemSet {
            kind: map,
            object: "m".into(),
            key: key(),
            data: "1".into(),
            if_match: None,
            ttl: None,
            ephemeral: false,
        };
        assert_eq!(tag(set), 11);
        assert_eq!(tag(Request::PermissionList { object: "m".into() }), 28);
        // Added later, so appended last.
        let create = Request::ItemCreate {
            kind: map,
            object: "m".into(),
            key: key(),
            data: "1".into(),
            ttl: None,
            ephemeral: false,
        };
        assert_eq!(tag(create.clone()), 29);
        let frame = encode(&RequestFrame {
            id: 1,
            request: create.clone(),
        });
        let back: RequestFrame = decode(&frame[LEN_PREFIX..], 1024).unwrap();
        assert_eq!(back.request, create);
        assert_eq!(tag(Request::Nodes), 31);
    }

    #[test]
    fn event_frames_share_the_body() {
        let event = Event {
            object_sid: crate::ids::make_sid("ET", [1; 16]),
            revision: 4,
            origin: 9,
            actor: "alice".into(),
            kind: EventKind::DocumentUpdated {
                data: "{}".into(),
                previous: None,
                date_updated: 1,
            },
        };
        let body = encode_event(&event);
        let header = EventFrameHeader { sub_id: 42 }.encode(body.len());
        let mut wire = header.to_vec();
        wire.extend_from_slice(&body);
        let mut dec = FrameDecoder::new(1024);
        dec.extend(&wire);
        let frame = dec.next_frame().unwrap().unwrap();
        let (h, e) = EventFrameHeader::decode(&frame, 1024).unwrap();
        assert_eq!(h.sub_id, 42);
        assert_eq!(e, event);
    }
}
