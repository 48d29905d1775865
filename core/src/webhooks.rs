//! Webhooks, Twilio's way (its "Sync Webhooks"): every change to an object or item and
//! every stream message of a service with a `webhook_url` becomes a form-encoded POST
//! with Twilio's parameters (`EventType`, `AccountSid`, `ServiceSid`, `Identity`,
//! `DocumentSid`, `ItemData`, ...), signed in `X-Twilio-Signature` with the
//! installation's auth token exactly as Twilio signs (so `twilio`'s `RequestValidator`
//! accepts it). Reachability (`endpoint_connected` / `endpoint_disconnected`) goes the
//! same way, for whoever tracks presence to call.
//!
//! Delivery never slows a write: the commit task (after durability) and the stream
//! publisher only push onto a bounded in-memory queue per service, and a full queue
//! drops its oldest event, counted (`dropped`, shown in the service's admin view) and
//! logged at most every `DROP_LOG_EVERY`. Each service's queue is split into lanes by
//! object sid; a lane delivers one event at a time, so one object's events arrive in
//! order, while a slow object holds up only the objects sharing its lane. A failed
//! delivery (connection error, timeout, 5xx, 429) is retried with exponential backoff
//! up to `attempts` times, then dropped and counted. Nothing survives a restart: the
//! queue is memory only, as Twilio promises no more than best effort either.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use syncline_proto::{Event, EventKind, ItemKey, ObjectKind, ServiceFlags, SYSTEM_ACTOR};
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::store::{ObjectRecord, Store};

/// How often, at most, drops are logged per service (the count is always exact).
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// Delivery settings. The defaults suit production; tests shrink the queue.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// Events queued per service, over all its lanes; past it the oldest is dropped.
    pub queue_capacity: usize,
    /// Lanes per service: events of one object share a lane and arrive in order.
    pub lanes: usize,
    /// Longest wait for one request's answer (connecting included).
    pub timeout: Duration,
    /// Delivery attempts per event, the first included.
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            queue_capacity: 10_000,
            lanes: 4,
            timeout: Duration::from_secs(5),
            attempts: 5,
            backoff: Duration::from_millis(500),
        }
    }
}

/// Where a service's webhooks go and which changes it wants, read from its flags.
/// `None` from `of` means "no webhooks": checked before anything is built, so a
/// service without a `webhook_url` costs a branch per change.
#[derive(Debug, Clone)]
pub struct Target {
    url: Arc<str>,
    from_backend: bool,
}

impl Target {
    pub fn of(flags: &ServiceFlags) -> Option<Target> {
        let url = flags.webhook_url.as_deref().filter(|u| !u.is_empty())?;
        Some(Target {
            url: url.into(),
            from_backend: flags.webhooks_from_backend,
        })
    }

    /// Whether a change made by `actor` is sent: the backend's (and the server's own,
    /// both recorded as `system`) only with `webhooks_from_backend`, Twilio's
    /// `WebhooksFromRestEnabled`.
    pub fn wants(&self, actor: &str) -> bool {
        actor != SYSTEM_ACTOR || self.from_backend
    }
}

/// One event as a webhook, before the parameters every event shares: the object it
/// is about (which picks its lane), and its own parameters in Twilio's names.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub object_sid: String,
    pub identity: String,
    pub params: Vec<(&'static str, String)>,
}

/// Twilio's names for a kind: the `EventType` prefix and the parameter prefix.
fn names(kind: ObjectKind) -> (&'static str, &'static str) {
    match kind {
        ObjectKind::Document => ("document", "Document"),
        ObjectKind::List => ("list", "List"),
        ObjectKind::Map => ("map", "Map"),
        ObjectKind::Stream => ("stream", "Stream"),
    }
}

/// `{Kind}Sid`, `{Kind}UniqueName` and, but for streams (which have none),
/// `{Kind}Revision`.
fn object_params(r: &ObjectRecord, revision: u64) -> Vec<(&'static str, String)> {
    let (sid, name, rev) = match r.kind {
        ObjectKind::Document => ("DocumentSid", "DocumentUniqueName", "DocumentRevision"),
        ObjectKind::List => ("ListSid", "ListUniqueName", "ListRevision"),
        ObjectKind::Map => ("MapSid", "MapUniqueName", "MapRevision"),
        ObjectKind::Stream => ("StreamSid", "StreamUniqueName", ""),
    };
    let mut p = Vec::with_capacity(8);
    p.push((sid, r.sid.clone()));
    if let Some(n) = &r.unique_name {
        p.push((name, n.clone()));
    }
    if !rev.is_empty() {
        p.push((rev, revision.to_string()));
    }
    p
}

fn item_key_param(p: &mut Vec<(&'static str, String)>, key: &ItemKey) {
    match key {
        ItemKey::Index(i) => p.push(("ItemIndex", i.to_string())),
        ItemKey::Key(k) => p.push(("ItemKey", k.clone())),
    }
}

/// What the commit task records for one change (`before` / `after`: the object record
/// on each side, `None` where it does not exist; `event`: what subscribers get), as a
/// webhook, or `None` when Twilio has no event for it (a TTL change).
pub fn change(
    before: Option<&ObjectRecord>,
    after: Option<&ObjectRecord>,
    event: Option<&Event>,
) -> Option<Change> {
    let object = after.or(before)?;
    let (prefix, _) = names(object.kind);
    let (event_type, identity, mut params) = match event {
        // Creation: Syncline sends subscribers nothing (there are none yet); Twilio
        // sends `*_created`.
        None if before.is_none() => {
            let mut p = object_params(object, object.revision);
            if object.kind == ObjectKind::Document {
                p.push(("DocumentData", object.data.clone()));
            }
            (format!("{prefix}_created"), object.created_by.clone(), p)
        }
        None => return None,
        Some(e) => {
            let mut p = object_params(object, e.revision);
            let suffix = match &e.kind {
                EventKind::DocumentUpdated { data, .. } => {
                    p.push(("DocumentData", data.clone()));
                    if before.is_none() {
                        "created"
                    } else {
                        "updated"
                    }
                }
                EventKind::ObjectRemoved { reason } => {
                    p.push(("Reason", reason.as_str().to_owned()));
                    "removed"
                }
                EventKind::ItemAdded { item } | EventKind::ItemUpdated { item, .. } => {
                    item_key_param(&mut p, &item.key);
                    p.push(("ItemData", item.data.clone()));
                    if matches!(e.kind, EventKind::ItemAdded { .. }) {
                        "item_added"
                    } else {
                        "item_updated"
                    }
                }
                EventKind::ItemRemoved { key, reason, .. } => {
                    item_key_param(&mut p, key);
                    p.push(("Reason", reason.as_str().to_owned()));
                    "item_removed"
                }
                _ => return None,
            };
            if matches!(
                e.kind,
                EventKind::ItemAdded { .. }
                    | EventKind::ItemUpdated { .. }
                    | EventKind::ItemRemoved { .. }
            ) {
                // Twilio's "sequence number representing the order of occurrence" of
                // item events: the object's revision is exactly that.
                p.push(("EventId", e.revision.to_string()));
            }
            (format!("{prefix}_{suffix}"), e.actor.clone(), p)
        }
    };
    params.push(("EventType", event_type));
    Some(Change {
        object_sid: object.sid.clone(),
        identity,
        params,
    })
}

/// A stream message as a webhook (`stream_message_published`). `MessageSequence` is
/// Syncline's: the stream's message count this run, as subscribers see it.
pub fn message(stream: &ObjectRecord, actor: &str, data: &str, sequence: u64) -> Change {
    let mut params = object_params(stream, 0);
    params.push(("MessageData", data.to_owned()));
    params.push(("MessageSequence", sequence.to_string()));
    params.push(("EventType", "stream_message_published".to_owned()));
    Change {
        object_sid: stream.sid.clone(),
        identity: actor.to_owned(),
        params,
    }
}

/// Twilio's `X-Twilio-Signature`: base64(HMAC-SHA1(auth token, url followed by each
/// parameter's name and value, sorted by name then value)), as twilio-python's
/// `RequestValidator.compute_signature` computes it. The URL is signed as configured;
/// the validator also tries it with the default port added or removed.
pub fn signature(auth_token: &str, url: &str, params: &[(&str, String)]) -> String {
    use base64::Engine as _;
    let mut sorted: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        auth_token.as_bytes(),
    );
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(url.as_bytes());
    for (k, v) in sorted {
        ctx.update(k.as_bytes());
        ctx.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(ctx.sign().as_ref())
}

/// What sends one webhook: a form-encoded POST of `body` to `url` with
/// `X-Twilio-Signature: signature`, answered with how it went. The server's HTTP client
/// implements it; scheduling, signing, the timeout and retries stay here.
#[async_trait::async_trait]
pub trait WebhookPoster: Send + Sync {
    async fn post(&self, url: &str, signature: &str, body: Bytes) -> Attempt;
}

/// The webhook sender; cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    account_sid: String,
    auth_token: String,
    options: WebhookOptions,
    poster: Arc<dyn WebhookPoster>,
    services: Mutex<HashMap<String, Arc<ServiceQueue>>>,
}

struct ServiceQueue {
    service_sid: String,
    lanes: Vec<Lane>,
    per_lane: usize,
    dropped: AtomicU64,
    /// When drops were last logged, and the count then.
    last_log: Mutex<(Option<Instant>, u64)>,
}

struct Lane {
    queue: Mutex<VecDeque<Job>>,
    ready: Notify,
}

struct Job {
    url: Arc<str>,
    params: Vec<(&'static str, String)>,
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// The receiver answered and refused with this status (4xx but 429): retrying
    /// would not help.
    Refused(u16),
    /// No answer, or one that a retry may change (5xx, 429): the reason.
    Failed(String),
}

impl Webhooks {
    /// A sender for this installation that posts through `poster`. Nothing runs until
    /// a service's first event.
    pub fn new(
        store: Arc<dyn Store>,
        account_sid: String,
        auth_token: String,
        options: WebhookOptions,
        poster: Arc<dyn WebhookPoster>,
    ) -> Webhooks {
        Webhooks {
            inner: Arc::new(Inner {
                store,
                account_sid,
                auth_token,
                options: WebhookOptions {
                    queue_capacity: options.queue_capacity.max(1),
                    lanes: options.lanes.max(1),
                    attempts: options.attempts.max(1),
                    ..options
                },
                poster,
                services: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Queues `change` for the service's `target`. Never waits: a full lane drops its
    /// oldest event.
    pub fn offer(&self, service_sid: &str, target: &Target, change: Change) {
        let queue = self.queue(service_sid);
        let mut params = Vec::with_capacity(change.params.len() + 4);
        params.push(("AccountSid", self.inner.account_sid.clone()));
        params.push(("ServiceSid", service_sid.to_owned()));
        params.push(("Identity", change.identity));
        if let Some(date) = crate::date_text(crate::now_ms()) {
            params.push(("DateCreated", date));
        }
        params.extend(change.params);
        let job = Job {
            url: target.url.clone(),
            params,
        };
        let mut hasher = DefaultHasher::new();
        change.object_sid.hash(&mut hasher);
        let lane = &queue.lanes[(hasher.finish() % queue.lanes.len() as u64) as usize];
        let overflowed = {
            let mut q = lane.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.push_back(job);
            q.len() > queue.per_lane && q.pop_front().is_some()
        };
        if overflowed {
            queue.count_drop("queue full; the oldest event was dropped");
        }
        lane.ready.notify_one();
    }

    /// Sends `endpoint_connected` (or `endpoint_disconnected`) for `identity` when the
    /// service has `reachability_webhooks_enabled` and a `webhook_url`. Debouncing is
    /// the caller's: this sends what it is told, when it is told.
    pub async fn reachability(&self, service_sid: &str, identity: &str, connected: bool) {
        let service = match self.inner.store.service(service_sid).await {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                warn!(service = service_sid, error = %e, "reachability webhook: service unreadable");
                return;
            }
        };
        if !service.flags.reachability_webhooks_enabled {
            return;
        }
        let Some(target) = Target::of(&service.flags) else {
            return;
        };
        let event_type = if connected {
            "endpoint_connected"
        } else {
            "endpoint_disconnected"
        };
        let change = Change {
            // One lane per identity: its connects and disconnects stay in order.
            object_sid: identity.to_owned(),
            identity: identity.to_owned(),
            params: vec![("EventType", event_type.to_owned())],
        };
        self.offer(service_sid, &target, change);
    }

    /// Webhook events dropped for the service since the server started.
    pub fn dropped(&self, service_sid: &str) -> u64 {
        let services = self
            .inner
            .services
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        services
            .get(service_sid)
            .map_or(0, |q| q.dropped.load(Ordering::Relaxed))
    }

    /// The service's queue, made (with its lane tasks) at its first event.
    fn queue(&self, service_sid: &str) -> Arc<ServiceQueue> {
        let mut services = self
            .inner
            .services
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(q) = services.get(service_sid) {
            return q.clone();
        }
        let o = &self.inner.options;
        let queue = Arc::new(ServiceQueue {
            service_sid: service_sid.to_owned(),
            lanes: (0..o.lanes)
                .map(|_| Lane {
                    queue: Mutex::new(VecDeque::new()),
                    ready: Notify::new(),
                })
                .collect(),
            per_lane: (o.queue_capacity / o.lanes).max(1),
            dropped: AtomicU64::new(0),
            last_log: Mutex::new((None, 0)),
        });
        for lane in 0..o.lanes {
            tokio::spawn(run_lane(Arc::downgrade(&self.inner), queue.clone(), lane));
        }
        services.insert(service_sid.to_owned(), queue.clone());
        queue
    }
}

impl Drop for Inner {
    /// Wakes the lane tasks so they see the sender is gone and end.
    fn drop(&mut self) {
        let services = self.services.lock().unwrap_or_else(|e| e.into_inner());
        for q in services.values() {
            q.lanes.iter().for_each(|l| l.ready.notify_one());
        }
    }
}

impl ServiceQueue {
    /// Counts one dropped event; logs the count at most every `DROP_LOG_EVERY`.
    fn count_drop(&self, why: &str) {
        let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_log.lock().unwrap_or_else(|e| e.into_inner());
        let due = match last.0 {
            None => true,
            Some(at) => at.elapsed() >= DROP_LOG_EVERY,
        };
        if due {
            warn!(
                service = %self.service_sid,
                dropped_total = total,
                dropped_since_last_report = total - last.1,
                reason = why,
                "webhook events dropped"
            );
            *last = (Some(Instant::now()), total);
        }
    }
}

/// One lane: takes its events in order and delivers each (with its retries) before
/// the next. Ends when the sender is gone.
async fn run_lane(inner: Weak<Inner>, queue: Arc<ServiceQueue>, lane: usize) {
    let lane = &queue.lanes[lane];
    loop {
        let job = lane
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        let Some(job) = job else {
            if inner.strong_count() == 0 {
                return;
            }
            lane.ready.notified().await;
            continue;
        };
        let Some(sender) = inner.upgrade() else {
            return;
        };
        deliver(&sender, &queue, job).await;
    }
}

/// Delivers one event: retries what may succeed later, then gives up and counts it.
async fn deliver(inner: &Inner, queue: &ServiceQueue, job: Job) {
    let o = &inner.options;
    let signature = signature(&inner.auth_token, &job.url, &job.params);
    let body: Bytes = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(job.params.iter().map(|(k, v)| (*k, v.as_str())))
        .finish()
        .into();
    let event_type = job
        .params
        .iter()
        .find(|(k, _)| *k == "EventType")
        .map_or("", |(_, v)| v.as_str());
    let mut last_error = String::new();
    for attempt in 0..o.attempts {
        if attempt > 0 {
            tokio::time::sleep(o.backoff.saturating_mul(1 << (attempt - 1).min(16))).await;
        }
        match send(inner, &job.url, &signature, body.clone()).await {
            Attempt::Delivered => return,
            Attempt::Refused(status) => {
                debug!(service = %queue.service_sid, event_type, %status, "webhook refused by its receiver");
                return;
            }
            Attempt::Failed(e) => {
                debug!(service = %queue.service_sid, event_type, attempt, error = %e, "webhook delivery failed");
                last_error = e;
            }
        }
    }
    debug!(service = %queue.service_sid, event_type, error = %last_error, "webhook given up");
    queue.count_drop("every delivery attempt failed");
}

async fn send(inner: &Inner, url: &str, signature: &str, body: Bytes) -> Attempt {
    // The timeout covers the answer's body too: a receiver that trickles it must not
    // hold the lane longer than one that never answers.
    match tokio::time::timeout(
        inner.options.timeout,
        inner.poster.post(url, signature, body),
    )
    .await
    {
        Err(_) => Attempt::Failed(format!("no answer in {:?}", inner.options.timeout)),
        Ok(attempt) => attempt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncline_proto::Reason;

    fn record(kind: ObjectKind) -> ObjectRecord {
        ObjectRecord {
            store_version: 0,
            service_sid: "IS00000000000000000000000000000001".into(),
            sid: "ET00000000000000000000000000000001".into(),
            kind,
            unique_name: Some("n".into()),
            revision: 3,
            data: r#"{"a":1}"#.into(),
            created_by: "alice".into(),
            date_created: 0,
            date_updated: 0,
            date_expires: None,
            next_index: 0,
        }
    }

    fn get<'a>(c: &'a Change, k: &str) -> Option<&'a str> {
        c.params
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn signatures_match_twilios_documented_example() {
        // The example of Twilio's "Webhooks security" page; the expected value is what
        // twilio-python's `RequestValidator("12345").compute_signature` returns for it.
        let params: Vec<(&str, String)> = vec![
            ("CallSid", "CA1234567890ABCDE".into()),
            ("Caller", "+12349013030".into()),
            ("Digits", "1234".into()),
            ("From", "+12349013030".into()),
            ("To", "+18005551212".into()),
        ];
        assert_eq!(
            signature(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }

    #[test]
    fn a_created_document_carries_its_data_and_a_ttl_change_sends_nothing() {
        let r = record(ObjectKind::Document);
        let c = change(None, Some(&r), None).unwrap();
        assert_eq!(get(&c, "EventType"), Some("document_created"));
        assert_eq!(get(&c, "DocumentData"), Some(r#"{"a":1}"#));
        assert_eq!(get(&c, "DocumentUniqueName"), Some("n"));
        assert_eq!(c.identity, "alice");
        assert_eq!(change(Some(&r), Some(&r), None), None);
    }

    #[test]
    fn removals_say_why_in_a_parameter_of_their_own() {
        let r = record(ObjectKind::Map);
        let e = Event {
            object_sid: r.sid.clone(),
            revision: 4,
            origin: 0,
            actor: "system".into(),
            kind: EventKind::ItemRemoved {
                key: ItemKey::Key("k".into()),
                previous: "1".into(),
                reason: Reason::Expired,
            },
        };
        let c = change(Some(&r), Some(&r), Some(&e)).unwrap();
        assert_eq!(get(&c, "EventType"), Some("map_item_removed"));
        assert_eq!(get(&c, "ItemKey"), Some("k"));
        assert_eq!(get(&c, "Reason"), Some("expired"));
        assert_eq!(get(&c, "MapRevision"), Some("4"));
    }
}
