//! Documents: one JSON value per object, with conditional writes, `mutate`, and
//! subscriptions that keep a local replica.

use serde_json::Value;
use syncline_proto::{
    DocumentInfo, ErrorCode, Event, EventKind, ObjectState, Reason, Request, Response, WireError,
};
use tokio::sync::mpsc;

use crate::connection::unexpected;
use crate::{Client, Error, Result};

/// Attempts `mutate` makes before giving up with the last `Conflict`.
const MUTATE_ATTEMPTS: usize = 16;

/// A document as the server has it. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentState {
    pub sid: String,
    pub unique_name: Option<String>,
    pub revision: u64,
    pub data: Value,
    pub created_by: String,
    pub date_created: u64,
    pub date_updated: u64,
    pub date_expires: Option<u64>,
}

impl TryFrom<DocumentInfo> for DocumentState {
    type Error = Error;
    fn try_from(d: DocumentInfo) -> Result<Self> {
        Ok(DocumentState {
            data: parse(&d.data)?,
            sid: d.sid,
            unique_name: d.unique_name,
            revision: d.revision,
            created_by: d.created_by,
            date_created: d.date_created,
            date_updated: d.date_updated,
            date_expires: d.date_expires,
        })
    }
}

fn parse(s: &str) -> Result<Value> {
    serde_json::from_str(s).map_err(|e| Error::Protocol(format!("server sent invalid JSON: {e}")))
}

/// Options for conditional and expiring writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Write only if the document is at this revision (else `Conflict`).
    pub if_match: Option<u64>,
    /// Time to live in seconds; 0 removes the expiry. `None` keeps it.
    pub ttl: Option<u64>,
}

/// A handle on one document, by unique name or sid. Creating it does no IO.
#[derive(Clone)]
pub struct Document {
    client: Client,
    reference: String,
}

impl Client {
    pub fn document(&self, name_or_sid: &str) -> Document {
        Document {
            client: self.clone(),
            reference: name_or_sid.to_owned(),
        }
    }
}

fn document_from(r: Response) -> Result<DocumentState> {
    match r {
        Response::Document(d) => d.try_into(),
        other => Err(unexpected(other)),
    }
}

impl Document {
    pub async fn get(&self) -> Result<DocumentState> {
        document_from(
            self.client
                .call(Request::DocGet {
                    document: self.reference.clone(),
                })
                .await?,
        )
    }

    /// Replaces the value, creating the document if it does not exist.
    pub async fn set(&self, data: &Value) -> Result<DocumentState> {
        self.set_with(data, WriteOptions::default()).await
    }

    pub async fn set_with(&self, data: &Value, options: WriteOptions) -> Result<DocumentState> {
        document_from(
            self.client
                .call(Request::DocSet {
                    document: self.reference.clone(),
                    data: data.to_string(),
                    if_match: options.if_match,
                    ttl: options.ttl,
                })
                .await?,
        )
    }

    /// Merges the top-level keys of `patch` (a JSON object; `null` removes a key).
    pub async fn update(&self, patch: &Value) -> Result<DocumentState> {
        self.update_with(patch, None).await
    }

    pub async fn update_with(&self, patch: &Value, if_match: Option<u64>) -> Result<DocumentState> {
        document_from(
            self.client
                .call(Request::DocUpdate {
                    document: self.reference.clone(),
                    data: patch.to_string(),
                    if_match,
                })
                .await?,
        )
    }

    /// Deletes the document; returns its final revision.
    pub async fn delete(&self) -> Result<u64> {
        self.delete_with(None).await
    }

    pub async fn delete_with(&self, if_match: Option<u64>) -> Result<u64> {
        match self
            .client
            .call(Request::DocDelete {
                document: self.reference.clone(),
                if_match,
            })
            .await?
        {
            Response::Deleted { revision, .. } => Ok(revision),
            other => Err(unexpected(other)),
        }
    }

    /// Read, apply `f`, write back only if nobody wrote in between; on `Conflict`, again
    /// (at most 16 times). `f` gets the current value (`None` if the document does not
    /// exist) and returns the new one, or `None` to leave it alone (then `Ok(None)`).
    /// Creating a missing document is not conditional: two concurrent creators both
    /// succeed, the later one winning.
    pub async fn mutate<F>(&self, mut f: F) -> Result<Option<DocumentState>>
    where
        F: FnMut(Option<&Value>) -> Option<Value>,
    {
        let mut last = None;
        for _ in 0..MUTATE_ATTEMPTS {
            let current = match self.get().await {
                Ok(d) => Some(d),
                Err(e) if e.code() == ErrorCode::NotFound => None,
                Err(e) => return Err(e),
            };
            let Some(next) = f(current.as_ref().map(|d| &d.data)) else {
                return Ok(None);
            };
            let options = WriteOptions {
                if_match: current.as_ref().map(|d| d.revision),
                ttl: None,
            };
            match self.set_with(&next, options).await {
                Ok(d) => return Ok(Some(d)),
                Err(e) if matches!(e.code(), ErrorCode::Conflict | ErrorCode::NotFound) => {
                    last = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Protocol("mutate made no attempt".into())))
    }

    /// Subscribes: the first event is a snapshot, then every change in revision order.
    pub async fn subscribe(&self) -> Result<DocumentSubscription> {
        self.subscribe_inner(None, None).await
    }

    /// Resumes from a replica the caller kept: only the events after its revision are
    /// sent (or a snapshot if they are no longer known).
    pub async fn resume(&self, replica: DocumentState) -> Result<DocumentSubscription> {
        let since = replica.revision;
        self.subscribe_inner(Some(since), Some(replica)).await
    }

    /// Subscribes from a bare revision (no replica until a snapshot arrives).
    pub async fn subscribe_since(&self, revision: u64) -> Result<DocumentSubscription> {
        self.subscribe_inner(Some(revision), None).await
    }

    async fn subscribe_inner(
        &self,
        since: Option<u64>,
        replica: Option<DocumentState>,
    ) -> Result<DocumentSubscription> {
        let sub_id = self.client.next_sub_id();
        // Registered before asking, so no event can arrive unrouted.
        let events = self.client.register_subscription(sub_id)?;
        let answer = self
            .client
            .call(Request::Subscribe {
                sub_id,
                object: self.reference.clone(),
                since,
            })
            .await;
        let object_sid = match answer {
            Ok(Response::Subscribed { object_sid, .. }) => object_sid,
            Ok(other) => {
                self.client.forget_subscription(sub_id);
                return Err(unexpected(other));
            }
            Err(e) => {
                self.client.forget_subscription(sub_id);
                return Err(e);
            }
        };
        Ok(DocumentSubscription {
            client: self.client.clone(),
            sub_id,
            object_sid,
            events,
            replica,
            ended: false,
        })
    }
}

/// What happened to a subscribed document.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentEvent {
    pub revision: u64,
    /// Caused by a request on this very connection.
    pub is_local: bool,
    /// Identity that caused it (`system` for the backend and the server).
    pub actor: String,
    pub kind: DocumentEventKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DocumentEventKind {
    /// The replica was replaced by the server's whole state (first event, or a resync).
    Snapshot,
    Updated {
        data: Value,
        previous: Option<Value>,
    },
    /// The document is gone; the subscription has ended.
    Removed { reason: Reason },
    /// The server ended the subscription (e.g. access revoked, object gone).
    Ended(WireError),
}

/// A live subscription. Events come in revision order, each applied to the replica
/// before it is returned. Dropping it unsubscribes.
pub struct DocumentSubscription {
    client: Client,
    sub_id: u64,
    object_sid: String,
    events: mpsc::Receiver<Event>,
    replica: Option<DocumentState>,
    ended: bool,
}

impl DocumentSubscription {
    pub fn object_sid(&self) -> &str {
        &self.object_sid
    }

    /// The local copy, equal to the server's state as of the last event returned.
    pub fn replica(&self) -> Option<&DocumentState> {
        self.replica.as_ref()
    }

    /// The next event; `None` once the subscription has ended or the connection is gone.
    pub async fn next(&mut self) -> Option<Result<DocumentEvent>> {
        if self.ended {
            return None;
        }
        // Events already received are returned first; after that, a closed connection
        // ends the subscription even if its router is gone.
        let event = tokio::select! {
            biased;
            e = self.events.recv() => e,
            _ = self.client.connection_closed() => None,
        };
        let Some(event) = event else {
            self.ended = true;
            return Some(Err(self.client.closed_or_lost()));
        };
        Some(self.apply(event))
    }

    fn apply(&mut self, e: Event) -> Result<DocumentEvent> {
        let is_local = e.origin == self.client.welcome().connection_id;
        let kind = match e.kind {
            EventKind::Snapshot {
                state: ObjectState::Document(d),
            } => {
                self.replica = Some(d.try_into()?);
                DocumentEventKind::Snapshot
            }
            EventKind::DocumentUpdated {
                data,
                previous,
                date_updated,
            } => {
                let data = parse(&data)?;
                let previous = previous.as_deref().map(parse).transpose()?;
                if let Some(r) = self.replica.as_mut() {
                    r.data = data.clone();
                    r.revision = e.revision;
                    r.date_updated = date_updated;
                }
                DocumentEventKind::Updated { data, previous }
            }
            EventKind::ObjectRemoved { reason } => {
                self.ended = true;
                self.replica = None;
                DocumentEventKind::Removed { reason }
            }
            EventKind::SubscriptionEnded { error } => {
                self.ended = true;
                DocumentEventKind::Ended(error)
            }
        };
        Ok(DocumentEvent {
            revision: e.revision,
            is_local,
            actor: e.actor,
            kind,
        })
    }
}

impl Drop for DocumentSubscription {
    fn drop(&mut self) {
        self.client.forget_subscription(self.sub_id);
        if self.ended {
            return;
        }
        let client = self.client.clone();
        let sub_id = self.sub_id;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = client.call(Request::Unsubscribe { sub_id }).await;
            });
        }
    }
}
