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

use bincode::Options;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};

use crate::message::Event;

/// Bytes in the length prefix.
pub const LEN_PREFIX: usize = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: u32, max: u32 },
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

/// Encodes `msg` as one frame (length prefix included).
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

/// Decodes a frame body (without its length prefix).
pub fn decode<T: DeserializeOwned>(body: &[u8], max: u32) -> Result<T, FrameError> {
    options(max)
        .deserialize(body)
        .map_err(|e| FrameError::Malformed(e.to_string()))
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
    pub sub_id: u64,
}

impl EventFrameHeader {
    pub const LEN: usize = 8;

    /// The 12 bytes that precede a shared event body of `body_len` bytes on the wire.
    pub fn encode(&self, body_len: usize) -> [u8; LEN_PREFIX + Self::LEN] {
        let mut out = [0u8; LEN_PREFIX + Self::LEN];
        out[..4].copy_from_slice(&((Self::LEN + body_len) as u32).to_be_bytes());
        out[4..].copy_from_slice(&self.sub_id.to_le_bytes());
        out
    }

    /// Splits an event frame body into its header and the event.
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
    pub fn new(max_frame_bytes: u32) -> Self {
        FrameDecoder {
            buf: BytesMut::new(),
            max: max_frame_bytes,
            skip: 0,
        }
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame body, `None` if more bytes are needed, or an error if the
    /// announced length is over the limit. After that error the oversized body is
    /// discarded as it arrives, without being buffered, and decoding resumes after it.
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
            self.buf.advance(LEN_PREFIX);
            self.skip = len as usize;
            return Err(FrameError::TooLarge { len, max: self.max });
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
        assert_eq!(
            dec.next_frame(),
            Err(FrameError::TooLarge {
                len: u32::MAX,
                max: 1024
            })
        );
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
