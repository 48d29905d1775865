//! Syncline with WebSocket subscribers, as a [`Peer`] (`fanout --ws`, `conns --ws`,
//! system `syncline-ws`): the same server and the same QUIC writer as
//! [`Syncline`](super::syncline::Syncline), while each subscriber is a browser-like
//! client on `/v1/ws`: its own TCP and TLS connection, JSON text messages.

use std::sync::Arc;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Map, Value};
use syncline_client::Client;
use syncline_proto::ws::{ServerMessage, PATH, SUBPROTOCOL};
use syncline_proto::{
    Credential, EventKind, ObjectState, Request, RequestFrame, Response, WireError,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::measure::MeasuredProcess;
use super::peer::{Ack, Next, Order, Peer, Written};
use super::syncline::Syncline;
use super::{err, Error};

type Socket = WebSocketStream<TlsStream<TcpStream>>;

/// The subscription id every subscriber uses (one subscription per connection).
const SUB_ID: u64 = 1;

pub struct SynclineWs {
    quic: Syncline,
    tls: tokio_rustls::TlsConnector,
    /// `host:port` of the HTTPS listener.
    addr: String,
}

impl SynclineWs {
    /// WebSocket subscribers on the server `quic` drives (its writer stays on QUIC).
    pub fn new(quic: Syncline) -> Result<Self, Error> {
        let admin = &quic.server().admin;
        let url = admin
            .http_url
            .clone()
            .ok_or("the server has no HTTPS listener")?;
        let addr = url.trim_start_matches("https://").to_owned();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&admin.ca_file).map_err(err)? {
            roots.add(cert.map_err(err)?).map_err(err)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(err)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(SynclineWs {
            quic,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            addr,
        })
    }

    async fn open(&self) -> Result<Socket, Error> {
        let tcp = TcpStream::connect(&self.addr).await.map_err(err)?;
        // Events are small and each one is due at once.
        tcp.set_nodelay(true).map_err(err)?;
        let name = ServerName::try_from("localhost").map_err(err)?;
        let tls = self.tls.connect(name, tcp).await.map_err(err)?;
        let mut request = format!("wss://{}{PATH}", self.addr)
            .into_client_request()
            .map_err(err)?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", SUBPROTOCOL.parse().map_err(err)?);
        let (socket, _) = tokio_tungstenite::client_async(request, tls)
            .await
            .map_err(err)?;
        Ok(socket)
    }
}

/// Sends `request` as id `id` and reads until its answer; events that come first are
/// kept in `early`.
async fn call(
    socket: &mut Socket,
    id: u64,
    request: Request,
    early: &mut Vec<syncline_proto::ws::EventFrame>,
) -> Result<Response, Error> {
    let text = serde_json::to_string(&RequestFrame { id, request }).map_err(err)?;
    socket.send(Message::Text(text.into())).await.map_err(err)?;
    loop {
        match read(socket).await? {
            ServerMessage::Response(r) if r.id == id => {
                return r
                    .result
                    .map_err(|e: WireError| format!("{}: {}", e.code, e.message))
            }
            ServerMessage::Response(r) => {
                return Err(format!("an answer to {} while waiting for {id}", r.id))
            }
            ServerMessage::Event(e) => early.push(e),
        }
    }
}

/// The next protocol message (pings are answered by the reading itself).
async fn read<S>(socket: &mut S) -> Result<ServerMessage, Error>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str()).map_err(err);
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(format!("closed: {frame:?}"));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(err(e)),
            None => return Err("the connection ended".into()),
        }
    }
}

/// One subscriber's events: its socket's reading half and what came before the
/// subscription's answer.
pub struct WsEvents {
    rx: SplitStream<Socket>,
    early: std::vec::IntoIter<syncline_proto::ws::EventFrame>,
}

/// The position an event is at and the payload's send time, as `syncline.rs` reads
/// them from QUIC events; `None` for events that carry no written value.
fn next_of(event: syncline_proto::Event) -> Option<Next> {
    let sent_ns = |data: &str| {
        serde_json::from_str::<Value>(data)
            .ok()
            .and_then(|v| v["sent_ns"].as_u64())
    };
    match event.kind {
        EventKind::Snapshot { state } => Some(Next::Snapshot {
            at: match state {
                ObjectState::Stream { sequence, .. } => sequence,
                _ => event.revision,
            },
        }),
        EventKind::DocumentUpdated { data, .. } => Some(Next::Event {
            at: event.revision,
            seq: None,
            sent_ns: sent_ns(&data),
        }),
        EventKind::ItemAdded { item } | EventKind::ItemUpdated { item, .. } => Some(Next::Event {
            at: event.revision,
            seq: None,
            sent_ns: sent_ns(&item.data),
        }),
        EventKind::MessagePublished { data, sequence } => Some(Next::Event {
            at: sequence,
            seq: None,
            sent_ns: sent_ns(&data),
        }),
        EventKind::SubscriptionEnded { error } => Some(Next::Ended(format!(
            "subscription ended: {}: {}",
            error.code, error.message
        ))),
        EventKind::ObjectRemoved { .. } => Some(Next::Ended("the object was removed".into())),
        EventKind::ItemRemoved { .. } | EventKind::SnapshotItems { .. } => None,
    }
}

impl Peer for SynclineWs {
    const SYSTEM: &'static str = "syncline-ws";
    const QUIC: bool = false;
    const ORDER: Order = Order::Positions;

    type Conn = Client;
    type Ticket = String;
    type Link = SplitSink<Socket, Message>;
    type Events = WsEvents;

    fn process(&self) -> &MeasuredProcess {
        self.quic.process()
    }

    fn kind(&self) -> &'static str {
        self.quic.kind()
    }

    fn writers_for(rate: u32) -> usize {
        Syncline::writers_for(rate)
    }

    async fn connect(&self) -> Result<Client, Error> {
        self.quic.connect().await
    }

    async fn write(&self, c: &mut Client, key: &str, value: &Value) -> Result<(), Error> {
        self.quic.write(c, key, value).await
    }

    async fn publish(&self, c: &mut Client, topic: &str, value: Value) -> Result<Ack, Error> {
        self.quic.publish(c, topic, value).await
    }

    /// An access token per subscriber, as for QUIC.
    fn tickets(&self, n: usize, topic: &str) -> Result<Vec<String>, Error> {
        let a = &self.quic.server().admin;
        let now = syncline_client::token::now_s();
        Ok((0..n)
            .map(|i| {
                syncline_client::token::mint(
                    &a.api_key_sid,
                    &a.api_key_secret,
                    &a.account_sid,
                    &a.default_service_sid,
                    &format!("{topic}{i}"),
                    3600,
                    now,
                )
            })
            .collect())
    }

    async fn subscribe(&self, token: String, topic: &str) -> Result<(Self::Link, WsEvents), Error> {
        let mut socket = self.open().await?;
        let mut early = Vec::new();
        call(
            &mut socket,
            1,
            Request::Hello {
                credential: Credential::Token(token),
                service: None,
            },
            &mut early,
        )
        .await?;
        call(
            &mut socket,
            2,
            Request::Subscribe {
                sub_id: SUB_ID,
                object: topic.to_owned(),
                since: None,
                window: None,
            },
            &mut early,
        )
        .await?;
        let (tx, rx) = socket.split();
        Ok((
            tx,
            WsEvents {
                rx,
                early: early.into_iter(),
            },
        ))
    }

    async fn next(events: &mut WsEvents) -> Next {
        loop {
            let frame = match events.early.next() {
                Some(f) => f,
                None => match read(&mut events.rx).await {
                    Ok(ServerMessage::Event(f)) => f,
                    Ok(ServerMessage::Response(r)) => {
                        return Next::Ended(format!("an unexpected answer: {r:?}"))
                    }
                    Err(e) => return Next::Ended(e),
                },
            };
            if let Some(next) = next_of(frame.event) {
                return next;
            }
        }
    }

    fn writer_figures(&self, written: &Written, extra: &mut Map<String, Value>) {
        self.quic.writer_figures(written, extra)
    }
}
