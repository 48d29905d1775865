//! Documents: one JSON value per object, with conditional writes and `mutate`; and
//! what the writes of every handle share: [`WriteOptions`] and [`Written`].

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use syncline_proto::{ErrorCode, ItemKey, ObjectKind, Request, Response, WireError, WrittenValue};

use crate::client::Client;
use crate::replica::{DocumentState, Replica};
use crate::subscription::{SubscribeOptions, Subscription};
use crate::{unexpected, Error, Result};

/// Attempts `mutate` makes before giving up with the last `Conflict`.
const MUTATE_ATTEMPTS: usize = 16;

/// What a write of data did, as the writer may see it: the answer to a document `set`
/// or `update`, a list `push` or an item `set` or `update`.
#[derive(Debug, Clone, PartialEq)]
pub struct Written<T> {
    /// The written object's sid.
    pub object_sid: String,
    /// The object's revision after the write.
    pub revision: u64,
    /// Who created the object: `system` for the backend, else the identity. Under ACL
    /// that identity keeps full access, so a backend writing into an object it meant to
    /// own learns here that a token holder claimed the name first
    /// ([`Written::created_by_identity`]).
    pub object_created_by: String,
    /// The item written (a `push`'s new index); `None` for documents.
    pub key: Option<ItemKey>,
    /// The document or item after the write; `None` when this identity may write the
    /// object but not read it (a `write` grant without `read`).
    pub value: Option<T>,
}

impl<T> Written<T> {
    /// The identity that created the object, when it was not the backend.
    pub fn created_by_identity(&self) -> Option<&str> {
        (self.object_created_by != crate::SYSTEM_ACTOR).then_some(self.object_created_by.as_str())
    }

    /// The value written, or `Forbidden` when this identity may not read it.
    pub fn into_value(self) -> Result<T> {
        self.value.ok_or_else(|| {
            Error::Server(WireError::new(
                ErrorCode::Forbidden,
                "written, but this identity may not read the result",
            ))
        })
    }
}

/// The answer to a write of data, with the value converted by `convert` (`Document` or
/// `Item`, whichever `value` holds).
pub(crate) fn written<T>(
    r: Response,
    convert: impl FnOnce(WrittenValue) -> Result<T>,
) -> Result<Written<T>> {
    match r {
        Response::Written(w) => Ok(Written {
            object_sid: w.object_sid,
            revision: w.revision,
            object_created_by: w.object_created_by,
            key: w.key,
            value: w.value.map(convert).transpose()?,
        }),
        other => Err(unexpected(other)),
    }
}

fn written_document(r: Response) -> Result<Written<DocumentState>> {
    written(r, |v| match v {
        WrittenValue::Document(d) => d.try_into(),
        other => Err(Error::Protocol(format!(
            "a document write answered with {other:?}"
        ))),
    })
}

/// Options for a write, one type for every write of every handle: each write `x(..)`
/// has an `x_with(.., WriteOptions)`. An option the write cannot honour (a TTL on an
/// `update`, `if_match` on a `push`) is refused with `InvalidArgument`, not ignored.
///
/// ```no_run
/// # async fn demo(client: syncline_client::Client) -> Result<(), syncline_client::Error> {
/// use serde_json::json;
/// use syncline_client::WriteOptions;
/// let doc = client.document("settings");
/// let current = doc.get().await?;
/// // Only if nobody wrote since; expires in an hour.
/// doc.set_with(&json!({"theme": "dark"}), WriteOptions::new().if_match(current.revision).ttl(3600))
///     .await?;
/// client.map("roster").remove_with("bob", WriteOptions::new().if_match(7)).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Write only if the document, item or object is at this revision (else `Conflict`).
    pub if_match: Option<u64>,
    /// Time to live in seconds; 0 removes the expiry. `None` keeps it.
    pub ttl: Option<u64>,
}

impl WriteOptions {
    /// No condition, expiry unchanged.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes only if the target is at `revision`.
    pub fn if_match(mut self, revision: u64) -> Self {
        self.if_match = Some(revision);
        self
    }

    /// Sets the time to live in seconds (0: never expires).
    pub fn ttl(mut self, seconds: u64) -> Self {
        self.ttl = Some(seconds);
        self
    }

    /// `if_match` for writes that take no TTL (a TTL there is refused, not dropped).
    pub(crate) fn without_ttl(self, write: &str) -> Result<Option<u64>> {
        match self.ttl {
            Some(_) => Err(invalid(format!("{write} takes no ttl"))),
            None => Ok(self.if_match),
        }
    }

    /// `ttl` for writes that take no condition (`push`).
    pub(crate) fn without_if_match(self, write: &str) -> Result<Option<u64>> {
        match self.if_match {
            Some(_) => Err(invalid(format!("{write} takes no if_match"))),
            None => Ok(self.ttl),
        }
    }
}

/// A handle on one document, by unique name or sid. Creating it does no IO.
///
/// ```no_run
/// # async fn demo(client: syncline_client::Client) -> Result<(), syncline_client::Error> {
/// use serde_json::json;
/// let doc = client.document("settings");
/// doc.set(&json!({"theme": "dark", "size": 12})).await?;
/// doc.update(&json!({"size": 14})).await?; // top-level merge; null removes a key
/// // Read-modify-write without lost updates (retried on Conflict).
/// doc.mutate(|v| Some(json!({"opens": v.and_then(|v| v["opens"].as_u64()).unwrap_or(0) + 1})))
///     .await?;
/// assert_eq!(doc.get().await?.data["size"], 14);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Document {
    client: Client,
    reference: String,
}

impl Client {
    /// A handle on a document, by unique name or sid (no IO until used).
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
    /// The document's time to live, alone: its data and revision stay (see
    /// [`Client::set_ttl`]).
    pub async fn set_ttl(&self, ttl: u64) -> Result<()> {
        self.client
            .set_ttl(ObjectKind::Document, &self.reference, None, ttl)
            .await
    }

    /// The document as the server has it now.
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
    pub async fn set(&self, data: &Value) -> Result<Written<DocumentState>> {
        self.set_with(data, WriteOptions::default()).await
    }

    /// `set` with options: `if_match` (else `Conflict`), `ttl`.
    pub async fn set_with(
        &self,
        data: &Value,
        options: WriteOptions,
    ) -> Result<Written<DocumentState>> {
        written_document(
            self.client
                .write(Request::DocSet {
                    document: self.reference.clone(),
                    data: data.to_string(),
                    if_match: options.if_match,
                    ttl: options.ttl,
                })
                .await?,
        )
    }

    /// Merges the top-level keys of `patch` (a JSON object; `null` removes a key).
    pub async fn update(&self, patch: &Value) -> Result<Written<DocumentState>> {
        self.update_with(patch, WriteOptions::default()).await
    }

    /// `update` with options (`if_match`; a TTL is refused: set it with `set_with`).
    pub async fn update_with(
        &self,
        patch: &Value,
        options: WriteOptions,
    ) -> Result<Written<DocumentState>> {
        let if_match = options.without_ttl("update")?;
        written_document(
            self.client
                .write(Request::DocUpdate {
                    document: self.reference.clone(),
                    data: patch.to_string(),
                    if_match,
                })
                .await?,
        )
    }

    /// Deletes the document; returns its final revision.
    pub async fn delete(&self) -> Result<u64> {
        self.delete_with(WriteOptions::default()).await
    }

    /// `delete` with options (`if_match` on the document's revision).
    pub async fn delete_with(&self, options: WriteOptions) -> Result<u64> {
        let if_match = options.without_ttl("delete")?;
        match self
            .client
            .write(Request::Delete {
                kind: Some(ObjectKind::Document),
                object: self.reference.clone(),
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
    ///
    /// A missing document (by name) is first created empty (`null`, revision 0) and then
    /// written with `if_match: 0`, so that concurrent first writers cannot overwrite each
    /// other: the one whose `create` lost re-reads and sees the `null` (or the winner's
    /// value). A reader arriving between the two steps sees `null` at revision 0.
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
            let if_match = match &current {
                Some(d) => Some(d.revision),
                // By sid, a missing document stays missing (`set` says `NotFound`).
                None if syncline_proto::ids::is_sid(&self.reference) => None,
                None => match self
                    .client
                    .create(ObjectKind::Document, Some(&self.reference), None)
                    .await
                {
                    Ok(created) => Some(created.revision),
                    Err(e) if e.code() == ErrorCode::AlreadyExists => {
                        last = Some(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let options = WriteOptions {
                if_match,
                ..WriteOptions::default()
            };
            match self.set_with(&next, options).await {
                Ok(d) => return d.into_value().map(Some),
                Err(e) if matches!(e.code(), ErrorCode::Conflict | ErrorCode::NotFound) => {
                    last = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Protocol("mutate made no attempt".into())))
    }

    /// Subscribes: the first event is a snapshot, then every change in revision order.
    pub async fn subscribe(&self) -> Result<Subscription> {
        self.client
            .subscribe(&self.reference, SubscribeOptions::default())
            .await
    }

    /// Resumes from a replica the caller kept: only the events after its revision are
    /// sent (or a snapshot if they are no longer known).
    pub async fn resume(&self, replica: DocumentState) -> Result<Subscription> {
        self.client
            .resume(&self.reference, Replica::Document(replica), None)
            .await
    }

    /// Subscribes from a bare revision (no replica until a snapshot arrives).
    pub async fn subscribe_since(&self, revision: u64) -> Result<Subscription> {
        let options = SubscribeOptions {
            since: Some(revision),
            window: None,
        };
        self.client.subscribe(&self.reference, options).await
    }
}

/// A request the client refuses before sending, as the server would.
fn invalid(message: String) -> Error {
    Error::Server(WireError::new(ErrorCode::InvalidArgument, message))
}

/// A document handle that reads and writes a Rust type `T` (as JSON, through serde)
/// instead of a `serde_json::Value`. Made by [`Client::typed_document`] or
/// [`Document::typed`]; [`TypedDocument::untyped`] gives the plain handle back (for
/// `update`, `delete`, `subscribe`, whose results [`DocumentState::data_as`] converts).
///
/// ```no_run
/// # async fn demo(client: syncline_client::Client) -> Result<(), syncline_client::Error> {
/// #[derive(serde::Serialize, serde::Deserialize, Default)]
/// struct Counter { visits: u64 }
/// let doc = client.typed_document::<Counter>("counter");
/// doc.mutate(|c| Some(Counter { visits: c.unwrap_or_default().visits + 1 })).await?;
/// let (counter, revision) = doc.get().await?;
/// println!("{} visits at revision {revision}", counter.visits);
/// # Ok(()) }
/// ```
pub struct TypedDocument<T> {
    inner: Document,
    _type: std::marker::PhantomData<fn() -> T>,
}

impl<T> Clone for TypedDocument<T> {
    fn clone(&self) -> Self {
        self.inner.clone().typed()
    }
}

impl Client {
    /// A handle on a document whose value is a `T` (see [`TypedDocument`]).
    pub fn typed_document<T>(&self, name_or_sid: &str) -> TypedDocument<T> {
        self.document(name_or_sid).typed()
    }
}

impl Document {
    /// This handle, reading and writing `T` instead of JSON values.
    pub fn typed<T>(self) -> TypedDocument<T> {
        TypedDocument {
            inner: self,
            _type: std::marker::PhantomData,
        }
    }
}

impl DocumentState {
    /// The value as a `T` (`InvalidArgument` if it does not have that shape).
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T> {
        from_value(self.data.clone())
    }
}

fn to_value<T: Serialize>(value: &T) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| Error::Json(format!("cannot serialize: {e}")))
}

fn from_value<T: DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value)
        .map_err(|e| Error::Json(format!("the document does not fit the type: {e}")))
}

impl<T: Serialize + DeserializeOwned> TypedDocument<T> {
    /// The plain handle on the same document.
    pub fn untyped(&self) -> &Document {
        &self.inner
    }

    /// The value and its revision.
    pub async fn get(&self) -> Result<(T, u64)> {
        let d = self.inner.get().await?;
        Ok((from_value(d.data)?, d.revision))
    }

    /// Replaces the value (creating the document if needed); returns the new revision.
    pub async fn set(&self, value: &T) -> Result<u64> {
        self.set_with(value, WriteOptions::default()).await
    }

    /// `set` with options (`if_match`, `ttl`); returns the new revision.
    pub async fn set_with(&self, value: &T, options: WriteOptions) -> Result<u64> {
        let written = self.inner.set_with(&to_value(value)?, options).await?;
        Ok(written.revision)
    }

    /// [`Document::mutate`] on `T`: `f` gets the current value (`None` if the document
    /// does not exist or is `null`) and returns the new one, or `None` to leave it.
    pub async fn mutate<F>(&self, mut f: F) -> Result<Option<T>>
    where
        F: FnMut(Option<T>) -> Option<T>,
    {
        // A value that does not fit `T` fails the whole call, not just this attempt.
        let mut misfit = None;
        let done = self
            .inner
            .mutate(|current| {
                let current = match current.filter(|v| !v.is_null()).cloned().map(from_value) {
                    Some(Ok(v)) => Some(v),
                    Some(Err(e)) => {
                        misfit = Some(e);
                        return None;
                    }
                    None => None,
                };
                let next = f(current)?;
                match to_value(&next) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        misfit = Some(e);
                        None
                    }
                }
            })
            .await?;
        if let Some(e) = misfit {
            return Err(e);
        }
        done.map(|d| from_value(d.data)).transpose()
    }
}
