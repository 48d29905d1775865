//! The crash loop (`syncline-bench crash`): concurrent writers over documents, lists and
//! maps (sets, updates, pushes, removes, writes with TTLs), SIGKILL of the real server at
//! a random moment, a restart on the same data directory, and after every restart a
//! check that every acknowledged write is there at its revision, that nothing appears
//! half-applied or unexplained, and that revisions and list indices never go back.
//!
//! How a cycle is checked. Every object is written by known writers only, so after the
//! previous check its state is known exactly. Each write carries a unique `tag` in its
//! data. After the restart the checker reads the object (revision, data or every item)
//! and replays its change log from the revision of the last check (`subscribe` with
//! `since`; writes per object per cycle are capped below the server's replay bound so
//! this is always a replay, never a snapshot). The replayed events must be exactly the
//! revisions `last + 1 ..= now`, and each must be one write of this cycle, found by its
//! tag (removes by their key): an acknowledged write at the revision it was
//! acknowledged with and with the value it was acknowledged with, a write that was in
//! flight at the kill either there once or not at all. Applying the events in order to
//! the last known state must give exactly what the server now holds (data, item
//! revisions, expiry times). Anything else is a finding; see [`Findings`].
//!
//! Cluster mode (`--store etcd --nodes K`): K `serve --store etcd` nodes, each with its
//! own data directory, over a fresh 3-member etcd (every member started with
//! `--max-txn-ops 1024`), all in the run's scratch directory. Writer `w` writes through
//! node `w % K`. At the random moment one random node is SIGKILLed and, every other
//! cycle on average, one random etcd member too (never two members, so the quorum
//! stays); the writers on the other nodes go on until the writers are stopped, as the
//! killed node's are. The member is restarted on its dir and ports, then the node on
//! its data directory (its restart is the time measured), and the check reads through
//! the restarted node.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use syncline_client::{
    Client, ClientConfig, DocumentState, Item, ItemKey, ObjectKind, Order, PageOptions,
    SubscribeOptions, SyncEvent, SyncEventKind, WriteOptions, Written,
};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::measure::Progress;
use super::server::ServerUnderTest;
use super::{err, Error};

/// Writes per object per cycle. The server replays at most 256 missed changes
/// (`fanout::MAX_REPLAY`) before it sends a snapshot instead, and the check needs the
/// replay; the cap keeps every cycle's changes to an object below that.
const WRITES_PER_OBJECT: u32 = 200;
/// TTL of the writes that carry one: long enough that nothing expires during a run
/// (expiry would change revisions on its own), so the check can demand it survives.
const LONG_TTL_S: u64 = 86_400;
/// Items a writer keeps in a list before it prefers removing: lists stay small, so a
/// full read of every list stays cheap after thousands of cycles.
const LIST_ITEMS_PER_WRITER: usize = 24;
/// Keys of each writer's own map, and of the map all writers share.
const OWN_MAP_KEYS: u64 = 16;
const SHARED_MAP_KEYS: u64 = 8;

/// Deadlines, one per phase: a phase that overruns ends the run with an error naming it.
const START_DEADLINE: Duration = Duration::from_secs(30);
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
const WRITE_DEADLINE: Duration = Duration::from_secs(20);
/// Above `WRITE_DEADLINE`: writers through a surviving node wait for their answer.
const STOP_DEADLINE: Duration = Duration::from_secs(30);
const KILL_DEADLINE: Duration = Duration::from_secs(10);
const READ_DEADLINE: Duration = Duration::from_secs(15);
/// How long etcd gets to commit (or drop) what the killed node had sent it, before the
/// check (see the cycle).
const CLUSTER_SETTLE: Duration = Duration::from_secs(2);
/// Detailed findings kept for the report; the counters count them all.
const NOTES_KEPT: usize = 50;

/// What `syncline-bench crash` was asked to do.
#[derive(Debug, Clone)]
pub struct CrashParams {
    pub cycles: u64,
    pub writers: usize,
    /// The kill comes after a delay drawn uniformly from 0..=max_kill_ms once the
    /// writers are writing.
    pub max_kill_ms: u64,
    pub seed: u64,
    /// The server's relaxed mode, which acknowledges before the flush: losses are
    /// expected there, which makes it a test of this check.
    pub relaxed: bool,
    /// Cluster mode: nodes over a fresh 3-member etcd instead of one server on sled.
    pub etcd: bool,
    /// Nodes in cluster mode (1 on sled).
    pub nodes: usize,
}

impl CrashParams {
    /// `sled` or `etcd`.
    pub fn store(&self) -> &'static str {
        if self.etcd {
            "etcd"
        } else {
            "sled"
        }
    }
}

/// Members of the etcd cluster mode starts: one can be down and writes go on.
pub const ETCD_MEMBERS: usize = 3;

/// The result of a crash run; `error` says which phase failed, if one did.
#[derive(Debug, Default)]
pub struct CrashReport {
    pub cycles: u64,
    pub findings: Findings,
    pub writes_acknowledged: u64,
    pub writes_in_flight: u64,
    pub restart_ms: Vec<f64>,
    /// Nodes SIGKILLed (one per cycle), and in cluster mode etcd members SIGKILLed
    /// (and restarted), over all cycles.
    pub node_kills: u64,
    pub etcd_member_kills: u64,
    /// The store and node count the run used (a line of the table says them).
    pub store: &'static str,
    pub nodes: usize,
    pub elapsed: Duration,
    pub error: Option<String>,
    /// The data directory and server log, kept when anything went wrong.
    pub kept_dir: Option<PathBuf>,
}

impl CrashReport {
    /// True when nothing was lost, regressed, half-applied or failed.
    pub fn clean(&self) -> bool {
        self.error.is_none() && self.findings.failures() == 0
    }

    fn restart_quantile(&self, q: f64) -> f64 {
        let mut v = self.restart_ms.clone();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return 0.0;
        }
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        (v[i.min(v.len() - 1)] * 10.0).round() / 10.0
    }

    pub fn to_json(&self, params: &CrashParams, context: &Value) -> Value {
        let f = &self.findings;
        let mut v = json!({
            "workload": "crash",
            "system": if params.etcd { "syncline-cluster" } else { "syncline" },
            "store": params.store(),
            "nodes": params.nodes,
            "etcd_members": if params.etcd { ETCD_MEMBERS } else { 0 },
            "node_kills": self.node_kills,
            "etcd_member_kills": self.etcd_member_kills,
            "cycles": self.cycles,
            "writes_acknowledged": self.writes_acknowledged,
            "writes_checked": f.writes_checked,
            "writes_in_flight": self.writes_in_flight,
            "in_flight_landed": f.in_flight_landed,
            "in_flight_not_landed": f.in_flight_not_landed,
            "lost": f.lost,
            "regressions": f.regressions,
            "half_applied": f.half_applied,
            "log_mismatches": f.log_mismatches,
            "unexpected_errors": f.unexpected_errors,
            "max_restart_ms": self.restart_quantile(1.0),
            "p50_restart_ms": self.restart_quantile(0.5),
            "p99_restart_ms": self.restart_quantile(0.99),
            "elapsed_s": (self.elapsed.as_secs_f64() * 100.0).round() / 100.0,
            "relaxed": params.relaxed,
            "params": {
                "cycles": params.cycles,
                "writers": params.writers,
                "max_kill_ms": params.max_kill_ms,
                "seed": params.seed,
            },
            "failures": f.notes,
            "error": self.error,
            "kept_dir": self.kept_dir.as_ref().map(|p| p.display().to_string()),
        });
        if let (Value::Object(m), Value::Object(c)) = (&mut v, context) {
            m.extend(c.clone());
        }
        v
    }

    /// A markdown table for people, after a line naming the store.
    pub fn table(&self) -> String {
        let f = &self.findings;
        let mut out = if self.store == "etcd" {
            format!(
                "store etcd: {} nodes over {ETCD_MEMBERS} etcd members; {} node kills, \
                 {} etcd member kills (node restarts timed)\n\n",
                self.nodes, self.node_kills, self.etcd_member_kills
            )
        } else {
            format!("store {}: one server\n\n", self.store)
        };
        out.push_str(
            "| cycles | writes acked | writes checked | in flight: landed / not | lost | regressions | half-applied | log mismatches | unexpected errors | restart p50 / p99 / max ms | elapsed s |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        out.push_str(&format!(
            "| {} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} / {} / {} | {:.1} |\n",
            self.cycles,
            self.writes_acknowledged,
            f.writes_checked,
            f.in_flight_landed,
            f.in_flight_not_landed,
            f.lost,
            f.regressions,
            f.half_applied,
            f.log_mismatches,
            f.unexpected_errors,
            self.restart_quantile(0.5),
            self.restart_quantile(0.99),
            self.restart_quantile(1.0),
            self.elapsed.as_secs_f64(),
        ));
        for n in &f.notes {
            out.push_str(&format!("\n- {n}"));
        }
        if let Some(e) = &self.error {
            out.push_str(&format!("\n\nerror: {e}"));
        }
        if let Some(d) = &self.kept_dir {
            out.push_str(&format!(
                "\n\ndata directories and server logs kept in {}",
                d.display()
            ));
        }
        out
    }
}

/// What the checks found. `lost`, `regressions`, `half_applied`, `log_mismatches` and
/// `unexpected_errors` are failures; the rest describes what was checked.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Findings {
    /// An acknowledged write missing after the restart, at another revision than its
    /// acknowledgement said, or with other data or expiry than it was acknowledged with.
    pub lost: u64,
    /// A revision lower than one seen before, an acknowledged revision given twice or
    /// not above the last check's, a list index given again.
    pub regressions: u64,
    /// A change no write explains, a write applied twice or differently from what was
    /// sent, or state that disagrees with the change log (an item without its revision,
    /// a revision without its item).
    pub half_applied: u64,
    /// The change log does not replay the object's revisions since the last check.
    pub log_mismatches: u64,
    /// Writes that failed before the kill (the workload itself went wrong).
    pub unexpected_errors: u64,
    /// Acknowledged writes checked after a restart.
    pub writes_checked: u64,
    /// Writes in flight at the kill that turned out to have landed, or not.
    pub in_flight_landed: u64,
    pub in_flight_not_landed: u64,
    pub notes: Vec<String>,
}

impl Findings {
    pub fn failures(&self) -> u64 {
        self.lost
            + self.regressions
            + self.half_applied
            + self.log_mismatches
            + self.unexpected_errors
    }

    fn note(&mut self, what: String) {
        if self.notes.len() < NOTES_KEPT {
            self.notes.push(what);
        }
    }

    fn lost(&mut self, what: String) {
        self.lost += 1;
        self.note(format!("lost: {what}"));
    }

    fn regression(&mut self, what: String) {
        self.regressions += 1;
        self.note(format!("regression: {what}"));
    }

    fn half_applied(&mut self, what: String) {
        self.half_applied += 1;
        self.note(format!("half-applied: {what}"));
    }

    fn log_mismatch(&mut self, what: String) {
        self.log_mismatches += 1;
        self.note(format!("change log: {what}"));
    }

    fn unexpected(&mut self, what: String) {
        self.unexpected_errors += 1;
        self.note(format!("unexpected error: {what}"));
    }
}

/// A list or map item as the check compares it.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemState {
    pub revision: u64,
    pub data: Value,
    pub date_expires: Option<u64>,
}

impl From<&Item> for ItemState {
    fn from(i: &Item) -> Self {
        ItemState {
            revision: i.revision,
            data: i.data.clone(),
            date_expires: i.date_expires,
        }
    }
}

/// A document's expiry as far as the check knows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expiry {
    Exact(Option<u64>),
    /// A write with a TTL that was in flight landed: some expiry, its time unknown.
    SomeUnknown,
}

/// One object as it was at the last check: exactly the server's state then.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectModel {
    pub name: String,
    pub kind: ObjectKind,
    pub revision: u64,
    /// Documents: the value and its expiry.
    pub doc: Value,
    pub doc_expiry: Expiry,
    /// Lists and maps: every item.
    pub items: BTreeMap<ItemKey, ItemState>,
    /// Lists: the highest index ever seen, pushed or removed since; a new push must get
    /// a higher one.
    pub max_index: Option<u64>,
}

impl ObjectModel {
    fn new(name: String, kind: ObjectKind) -> Self {
        ObjectModel {
            name,
            kind,
            revision: 0,
            doc: Value::Null,
            doc_expiry: Expiry::Exact(None),
            items: BTreeMap::new(),
            max_index: None,
        }
    }
}

/// What a writer sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    DocSet {
        value: Value,
        ttl: Option<u64>,
    },
    DocUpdate {
        patch: Value,
    },
    Push {
        value: Value,
        ttl: Option<u64>,
    },
    MapSet {
        key: String,
        value: Value,
        ttl: Option<u64>,
    },
    Remove {
        key: ItemKey,
    },
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ttl = |t: &Option<u64>| t.map(|t| format!(" ttl {t}")).unwrap_or_default();
        match self {
            Op::DocSet { value, ttl: t } => write!(f, "set {value}{}", ttl(t)),
            Op::DocUpdate { patch } => write!(f, "update {patch}"),
            Op::Push { value, ttl: t } => write!(f, "push {value}{}", ttl(t)),
            Op::MapSet { key, value, ttl: t } => write!(f, "set {key} = {value}{}", ttl(t)),
            Op::Remove { key } => write!(f, "remove {key}"),
        }
    }
}

/// What the server said about a write.
#[derive(Debug, Clone, PartialEq)]
pub enum Fate {
    /// Boxed: most records are acknowledged anyway, and the enum stays small to move.
    Acked(Box<Ack>),
    /// No answer before the kill (or an error after it): it may or may not have landed.
    InFlight,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ack {
    pub revision: u64,
    pub key: Option<ItemKey>,
    pub doc: Option<DocumentState>,
    pub item: Option<Item>,
}

/// One write of a cycle, to object number `object`.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteRec {
    pub object: usize,
    pub writer: usize,
    pub tag: u64,
    pub op: Op,
    pub fate: Fate,
}

/// The server's state of one object, as read by the checker.
#[derive(Debug, Clone, PartialEq)]
pub enum Current {
    Document {
        revision: u64,
        data: Value,
        date_expires: Option<u64>,
    },
    Collection {
        revision: u64,
        items: BTreeMap<ItemKey, ItemState>,
    },
}

impl Current {
    fn revision(&self) -> u64 {
        match self {
            Current::Document { revision, .. } | Current::Collection { revision, .. } => *revision,
        }
    }
}

/// The change log as replayed, and whether the replay reached the object's revision.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    pub events: Vec<SyncEvent>,
    /// Why the replay stopped short, if it did (timeout, snapshot, error).
    pub cut_short: Option<String>,
}

fn tag_of(data: &Value) -> Option<u64> {
    data.get("tag").and_then(Value::as_u64)
}

/// A top-level merge as the server does it: keys in the patch replace, `null` removes,
/// a non-object value is replaced by the patch.
fn merge(base: &Value, patch: &Value) -> Value {
    let (Value::Object(b), Value::Object(p)) = (base, patch) else {
        return patch.clone();
    };
    let mut out = b.clone();
    for (k, v) in p {
        if v.is_null() {
            out.remove(k);
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// Marks and returns the first unused write that `pick` accepts.
fn claim(
    writes: &[&WriteRec],
    used: &mut [bool],
    pick: impl Fn(&WriteRec) -> bool,
) -> Option<usize> {
    let i = (0..writes.len()).find(|&i| !used[i] && pick(writes[i]))?;
    used[i] = true;
    Some(i)
}

/// What one replayed change turned out to be.
enum Step {
    /// Write number `.0` of this cycle, with what is wrong about how it landed (for an
    /// acknowledged write: why it is not there as acknowledged).
    Write(usize, Vec<String>),
    /// No write of this cycle made it (or it is a write applied a second time).
    Unexplained,
    /// Not a change at all (a snapshot) or one no writer here makes: the log is unusable.
    NotAChange,
}

/// Checks one object after a restart and returns its new model (the server's state,
/// once checked). `writes` are this cycle's writes to it, each writer's in the order
/// sent; `current` is what the server holds now; `replay` its change log since
/// `model.revision`. Pure, so the rules can be tested without a server.
pub fn check_object(
    cycle: u64,
    model: &ObjectModel,
    writes: &[&WriteRec],
    current: &Current,
    replay: &Replay,
    f: &mut Findings,
) -> ObjectModel {
    let name = format!("cycle {cycle}, {}", model.name);
    let now = current.revision();
    let mut next = model.clone();

    let went_back = now < model.revision;
    if went_back {
        f.regression(format!(
            "{name}: revision went back from {} to {now}",
            model.revision
        ));
    }
    let mut acked_revisions = BTreeSet::new();
    for w in writes {
        if let Fate::Acked(a) = &w.fate {
            if a.revision <= model.revision || !acked_revisions.insert(a.revision) {
                f.regression(format!(
                    "{name}: write {} was acknowledged with revision {}, not above the last \
                     check's {} or given twice",
                    w.tag, a.revision, model.revision
                ));
            }
        }
    }

    // Walk the change log in order, matching each revision to the write that made it.
    let mut used = vec![false; writes.len()];
    let mut expect = model.revision + 1;
    // Below the last check there is nothing to replay; the regression says it all.
    let mut log_complete = replay.cut_short.is_none() && !went_back;
    if let Some(why) = &replay.cut_short {
        f.log_mismatch(format!(
            "{name}: replay from revision {} to {now} stopped short: {why}",
            model.revision
        ));
    }
    for e in &replay.events {
        let at = e.revision;
        if at != expect {
            f.log_mismatch(format!(
                "{name}: the change log went from revision {} to {at}",
                expect - 1
            ));
            log_complete = false;
            break;
        }
        expect += 1;
        let (i, mut problems) = match step(&name, e, writes, &mut used, &mut next, f) {
            Step::Write(i, problems) => (i, problems),
            Step::Unexplained => {
                f.half_applied(format!(
                    "{name}: revision {at} ({}) is no write of this cycle, or one applied twice",
                    e.kind.name()
                ));
                next.revision = at;
                continue;
            }
            Step::NotAChange => {
                f.log_mismatch(format!(
                    "{name}: revision {at} is a {} event, where the replay of revisions {}..={now} \
                     was expected",
                    e.kind.name(),
                    model.revision + 1
                ));
                log_complete = false;
                break;
            }
        };
        let w = writes[i];
        match &w.fate {
            Fate::Acked(a) => {
                f.writes_checked += 1;
                if a.revision != at {
                    problems.push(format!(
                        "acknowledged with revision {}, the change log has it at {at}",
                        a.revision
                    ));
                }
                if !problems.is_empty() {
                    f.lost(format!(
                        "{name}: acknowledged write {} ({}): {}",
                        w.tag,
                        w.op,
                        problems.join("; ")
                    ));
                }
            }
            Fate::InFlight => {
                f.in_flight_landed += 1;
                if !problems.is_empty() {
                    f.half_applied(format!(
                        "{name}: write {} ({}), in flight at the kill, landed at revision {at} \
                         wrong: {}",
                        w.tag,
                        w.op,
                        problems.join("; ")
                    ));
                }
            }
        }
        next.revision = at;
    }

    if log_complete && expect - 1 != now {
        f.log_mismatch(format!(
            "{name}: the change log ends at revision {}, the object is at {now}",
            expect - 1
        ));
        log_complete = false;
    }
    for (i, w) in writes.iter().enumerate() {
        if used[i] {
            continue;
        }
        match &w.fate {
            Fate::Acked(a) => {
                f.writes_checked += 1;
                // Without a complete log only a revision below the acknowledgement
                // proves a loss; the log mismatch is reported already.
                if log_complete || now < a.revision {
                    f.lost(format!(
                        "{name}: acknowledged write {} ({}) at revision {} is not in the change \
                         log (object at revision {now})",
                        w.tag, w.op, a.revision
                    ));
                }
            }
            Fate::InFlight => f.in_flight_not_landed += 1,
        }
    }

    // The state must be what the log says: no item without its revision, no revision
    // without its item.
    if log_complete {
        compare_state(&name, &next, current, f);
    }
    rebase(next, current)
}

/// Matches one replayed change to the write that made it and applies it to `next`.
fn step(
    name: &str,
    e: &SyncEvent,
    writes: &[&WriteRec],
    used: &mut [bool],
    next: &mut ObjectModel,
    f: &mut Findings,
) -> Step {
    let found = match &e.kind {
        SyncEventKind::DocumentUpdated { data, previous } => {
            let tag = tag_of(data);
            claim(writes, used, |w| {
                matches!(w.op, Op::DocSet { .. } | Op::DocUpdate { .. }) && Some(w.tag) == tag
            })
            .map(|i| (i, document_step(writes[i], data, previous.as_ref(), next)))
        }
        SyncEventKind::ItemAdded { item } | SyncEventKind::ItemUpdated { item, .. } => {
            let tag = tag_of(&item.data);
            claim(writes, used, |w| {
                matches!(w.op, Op::Push { .. } | Op::MapSet { .. }) && Some(w.tag) == tag
            })
            .map(|i| (i, item_step(name, writes[i], e, item, next, f)))
        }
        SyncEventKind::ItemRemoved { key, previous, .. } => {
            // Removes carry no data: the first remove of this key not matched yet, which
            // for an object's only remover is the next one it sent.
            claim(
                writes,
                used,
                |w| matches!(&w.op, Op::Remove { key: k } if k == key),
            )
            .map(|i| {
                let problems = match next.items.remove(key) {
                    Some(b) if b.data != *previous => {
                        vec![format!("removed {previous}, the item held {}", b.data)]
                    }
                    Some(_) => Vec::new(),
                    None => vec![format!("removed {key}, which was not there")],
                };
                (i, problems)
            })
        }
        _ => return Step::NotAChange,
    };
    match found {
        Some((i, problems)) => Step::Write(i, problems),
        None => Step::Unexplained,
    }
}

/// A document change made by write `w`: checks it against what was sent (and
/// acknowledged) and applies it.
fn document_step(
    w: &WriteRec,
    data: &Value,
    previous: Option<&Value>,
    next: &mut ObjectModel,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(p) = previous {
        if *p != next.doc {
            problems.push(format!(
                "its event's previous value {p} is not the value before it, {}",
                next.doc
            ));
        }
    }
    let (expected, ttl) = match &w.op {
        Op::DocSet { value, ttl } => (value.clone(), *ttl),
        Op::DocUpdate { patch } => (merge(&next.doc, patch), None),
        _ => (Value::Null, None),
    };
    if *data != expected {
        problems.push(format!("holds {data}, the write makes {expected}"));
    }
    next.doc = data.clone();
    next.doc_expiry = match (&w.fate, ttl) {
        (Fate::Acked(a), _) => match &a.doc {
            Some(d) => {
                if d.data != *data {
                    problems.push(format!("holds {data}, acknowledged as {}", d.data));
                }
                Expiry::Exact(d.date_expires)
            }
            None => next.doc_expiry,
        },
        (Fate::InFlight, Some(_)) => Expiry::SomeUnknown,
        // Without a TTL a write keeps the document's expiry.
        (Fate::InFlight, None) => next.doc_expiry,
    };
    problems
}

/// An item added or updated by write `w` (a push or a map set): checks it against what
/// was sent (and acknowledged) and applies it. A reused list index is a regression.
fn item_step(
    name: &str,
    w: &WriteRec,
    e: &SyncEvent,
    item: &Item,
    next: &mut ObjectModel,
    f: &mut Findings,
) -> Vec<String> {
    let mut problems = Vec::new();
    let added = matches!(e.kind, SyncEventKind::ItemAdded { .. });
    let before = next.items.get(&item.key).cloned();
    let (value, ttl) = match &w.op {
        Op::Push { value, ttl } => {
            if !added {
                problems.push("a push shows as an update".into());
            }
            match (&item.key, next.max_index) {
                (ItemKey::Index(ix), Some(max)) if *ix <= max => f.regression(format!(
                    "{name}: a push got index {ix}, but index {max} was seen before"
                )),
                (ItemKey::Key(k), _) => problems.push(format!("a push got the map key {k}")),
                _ => {}
            }
            (value, *ttl)
        }
        Op::MapSet { key, value, ttl } => {
            if item.key != ItemKey::Key(key.clone()) {
                problems.push(format!("written to key {key}, shows at {}", item.key));
            }
            if added == before.is_some() {
                problems.push(format!(
                    "shows as {} an item that was {}",
                    if added { "adding" } else { "updating" },
                    if before.is_some() { "there" } else { "absent" }
                ));
            }
            (value, *ttl)
        }
        _ => (&Value::Null, None),
    };
    if let (SyncEventKind::ItemUpdated { previous, .. }, Some(b)) = (&e.kind, &before) {
        if *previous != b.data {
            problems.push(format!(
                "its event's previous value {previous} is not the item's {}",
                b.data
            ));
        }
    }
    if item.data != *value {
        problems.push(format!("holds {}, the write sent {value}", item.data));
    }
    if item.revision != e.revision {
        problems.push(format!(
            "the item says revision {}, its change is revision {}",
            item.revision, e.revision
        ));
    }
    let expiry_ok = match ttl {
        Some(_) => item.date_expires.is_some(),
        // Without a TTL an update keeps the item's expiry; a new item has none.
        None => item.date_expires == before.as_ref().and_then(|b| b.date_expires),
    };
    if !expiry_ok {
        problems.push(format!(
            "expiry {:?} after a write with ttl {ttl:?}",
            item.date_expires
        ));
    }
    if let Fate::Acked(a) = &w.fate {
        if a.key.as_ref() != Some(&item.key) {
            problems.push(format!(
                "acknowledged at key {:?}, shows at {}",
                a.key, item.key
            ));
        }
        if let Some(ai) = &a.item {
            if ai.data != item.data || ai.date_expires != item.date_expires {
                problems.push(format!(
                    "holds {} expiring {:?}, acknowledged as {} expiring {:?}",
                    item.data, item.date_expires, ai.data, ai.date_expires
                ));
            }
        }
    }
    if let ItemKey::Index(ix) = item.key {
        next.max_index = Some(next.max_index.map_or(ix, |m| m.max(ix)));
    }
    next.items.insert(item.key.clone(), ItemState::from(item));
    problems
}

/// Reports every difference between the state the change log leads to and the server's.
fn compare_state(name: &str, expected: &ObjectModel, current: &Current, f: &mut Findings) {
    match current {
        Current::Document {
            revision,
            data,
            date_expires,
        } => {
            if *data != expected.doc {
                f.half_applied(format!(
                    "{name}: the document at revision {revision} holds {data}, its change log says {}",
                    expected.doc
                ));
            }
            let expiry_ok = match expected.doc_expiry {
                Expiry::Exact(e) => e == *date_expires,
                Expiry::SomeUnknown => date_expires.is_some(),
            };
            if !expiry_ok {
                f.half_applied(format!(
                    "{name}: the document expires at {date_expires:?}, its writes say {:?}",
                    expected.doc_expiry
                ));
            }
        }
        Current::Collection { revision, items } => {
            for (k, i) in items {
                if i.revision > *revision {
                    f.half_applied(format!(
                        "{name}: item {k} has revision {}, above its object's {revision}",
                        i.revision
                    ));
                }
                match expected.items.get(k) {
                    None => f.half_applied(format!(
                        "{name}: item {k} ({}) is there, its change log has no such item",
                        i.data
                    )),
                    Some(e) if e != i => f.half_applied(format!(
                        "{name}: item {k} is {i:?}, its change log says {e:?}"
                    )),
                    Some(_) => {}
                }
            }
            for (k, e) in &expected.items {
                if !items.contains_key(k) {
                    f.half_applied(format!(
                        "{name}: item {k} ({}) is missing, its change log has it",
                        e.data
                    ));
                }
            }
        }
    }
}

/// The model for the next cycle: the server's state, now that it has been checked (or,
/// after a finding, reported), keeping what only the model knows.
fn rebase(mut next: ObjectModel, current: &Current) -> ObjectModel {
    match current {
        Current::Document {
            revision,
            data,
            date_expires,
        } => {
            next.revision = *revision;
            next.doc = data.clone();
            next.doc_expiry = Expiry::Exact(*date_expires);
        }
        Current::Collection { revision, items } => {
            next.revision = *revision;
            next.items = items.clone();
            for k in items.keys() {
                if let ItemKey::Index(ix) = k {
                    next.max_index = Some(next.max_index.map_or(*ix, |m| m.max(*ix)));
                }
            }
        }
    }
    next
}

/// What each writer does to one of its objects.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    OwnDoc,
    OwnList,
    OwnMap,
    SharedDoc,
    SharedList,
    SharedMap,
}

/// The objects: each writer's own document, list and map (one writer each, so every
/// step is known), and one of each kind that all writers change at once (writes to one
/// object in the same commit batch).
fn objects(writers: usize) -> Vec<(ObjectModel, Option<usize>, Role)> {
    let mut out = Vec::new();
    for w in 0..writers {
        out.push((
            ObjectModel::new(format!("crash-doc-{w}"), ObjectKind::Document),
            Some(w),
            Role::OwnDoc,
        ));
        out.push((
            ObjectModel::new(format!("crash-list-{w}"), ObjectKind::List),
            Some(w),
            Role::OwnList,
        ));
        out.push((
            ObjectModel::new(format!("crash-map-{w}"), ObjectKind::Map),
            Some(w),
            Role::OwnMap,
        ));
    }
    out.push((
        ObjectModel::new("crash-doc-shared".into(), ObjectKind::Document),
        None,
        Role::SharedDoc,
    ));
    out.push((
        ObjectModel::new("crash-list-shared".into(), ObjectKind::List),
        None,
        Role::SharedList,
    ));
    out.push((
        ObjectModel::new("crash-map-shared".into(), ObjectKind::Map),
        None,
        Role::SharedMap,
    ));
    out
}

/// One object as a writer sees it: which of its items this writer may remove.
struct Target {
    object: usize,
    name: String,
    role: Role,
    /// Items this writer put there and that are still there (lists: indices; own map:
    /// keys), so a remove always names an existing item.
    mine: BTreeSet<ItemKey>,
}

/// A writer's cycle: its connection, its objects and how to stop.
struct Writer {
    id: usize,
    client: Client,
    rng: StdRng,
    targets: Vec<Target>,
    budget: Arc<Vec<AtomicU32>>,
    tags: Arc<AtomicU64>,
    killed: Arc<AtomicBool>,
    /// The node this writer's connection goes through.
    node: usize,
    /// `Some(node killed)` once the cycle's writing is over.
    stop: watch::Receiver<Option<usize>>,
    n: u64,
}

/// A writer's record of the cycle.
struct WriterLog {
    writes: Vec<WriteRec>,
    errors_before_kill: Vec<String>,
}

/// Writer `w`'s next write to `t`, its `n`th, tagged `tag`.
fn next_op(rng: &mut StdRng, w: usize, n: u64, tag: u64, t: &Target) -> Op {
    let ttl = |rng: &mut StdRng| rng.gen_bool(0.15).then_some(LONG_TTL_S);
    let p: f64 = rng.gen();
    match t.role {
        Role::OwnDoc if p < 0.45 => Op::DocSet {
            value: json!({"tag": tag, "w": w, "n": n, "pad": "x".repeat((n % 64) as usize)}),
            ttl: None,
        },
        Role::OwnDoc if p < 0.85 => Op::DocUpdate {
            patch: json!({"tag": tag, format!("k{}", n % 8): n}),
        },
        Role::OwnDoc => Op::DocSet {
            value: json!({"tag": tag, "w": w, "n": n}),
            ttl: Some(LONG_TTL_S),
        },
        Role::SharedDoc => Op::DocUpdate {
            patch: json!({"tag": tag, format!("w{w}"): n}),
        },
        Role::OwnList | Role::SharedList => {
            let have = t.mine.len();
            let remove =
                have > 2 * LIST_ITEMS_PER_WRITER || (have > LIST_ITEMS_PER_WRITER / 2 && p < 0.4);
            match t.mine.iter().nth(rng.gen_range(0..have.max(1))) {
                Some(key) if remove => Op::Remove { key: key.clone() },
                _ => Op::Push {
                    value: json!({"tag": tag, "w": w, "n": n}),
                    ttl: ttl(rng),
                },
            }
        }
        Role::OwnMap => {
            let key = format!("k{}", rng.gen_range(0..OWN_MAP_KEYS));
            let item = ItemKey::Key(key.clone());
            if t.mine.contains(&item) && p < 0.35 {
                Op::Remove { key: item }
            } else {
                Op::MapSet {
                    key,
                    value: json!({"tag": tag, "w": w, "n": n}),
                    ttl: ttl(rng),
                }
            }
        }
        Role::SharedMap => Op::MapSet {
            key: format!("s{}", rng.gen_range(0..SHARED_MAP_KEYS)),
            value: json!({"tag": tag, "w": w, "n": n}),
            ttl: ttl(rng),
        },
    }
}

impl Writer {
    /// Writes until stopped, a write fails, or every object's budget is spent.
    async fn run(mut self) -> WriterLog {
        let mut log = WriterLog {
            writes: Vec::new(),
            errors_before_kill: Vec::new(),
        };
        loop {
            if self.stop.borrow().is_some() {
                break;
            }
            // A random object with budget left; none left: wait for the kill.
            let start = self.rng.gen_range(0..self.targets.len());
            let pick = (0..self.targets.len())
                .map(|k| (start + k) % self.targets.len())
                .find(|&i| {
                    self.budget[self.targets[i].object].fetch_add(1, Ordering::Relaxed)
                        < WRITES_PER_OBJECT
                });
            let Some(ti) = pick else {
                let _ = self.stop.wait_for(Option::is_some).await;
                break;
            };
            let t = &self.targets[ti];
            let tag = self.tags.fetch_add(1, Ordering::Relaxed);
            self.n += 1;
            let op = next_op(&mut self.rng, self.id, self.n, tag, t);
            let (object, name) = (t.object, t.name.clone());
            let result = {
                let write = tokio::time::timeout(WRITE_DEADLINE, perform(&self.client, &name, &op));
                tokio::pin!(write);
                let (mut stop, node) = (self.stop.clone(), self.node);
                tokio::select! {
                    // An answer that is already there counts, even if the stop came too.
                    biased;
                    r = &mut write => Some(r),
                    // Only a write through the killed node is left unanswered. One
                    // through a node that survives is still committed or refused, maybe
                    // seconds later (an etcd election): its answer settles its fate
                    // before the check, where giving up on it would let it land after.
                    _ = stop.wait_for(|s| *s == Some(node)) => None,
                }
            };
            let mut rec = WriteRec {
                object,
                writer: self.id,
                tag,
                op,
                fate: Fate::InFlight,
            };
            let failure = match result {
                None => None,
                Some(Ok(Ok(ack))) => {
                    let t = &mut self.targets[ti];
                    match (&rec.op, &ack.key) {
                        (Op::Push { .. }, Some(k)) => {
                            t.mine.insert(k.clone());
                        }
                        (Op::MapSet { key, .. }, _) if t.role == Role::OwnMap => {
                            t.mine.insert(ItemKey::Key(key.clone()));
                        }
                        (Op::Remove { key }, _) => {
                            t.mine.remove(key);
                        }
                        _ => {}
                    }
                    rec.fate = Fate::Acked(Box::new(ack));
                    log.writes.push(rec);
                    continue;
                }
                Some(Ok(Err(e))) => Some(e.to_string()),
                Some(Err(_)) => Some(format!("no answer within {WRITE_DEADLINE:?}")),
            };
            if let Some(e) = failure {
                if !self.killed.load(Ordering::SeqCst) {
                    log.errors_before_kill
                        .push(format!("writer {}: {} on {name}: {e}", self.id, rec.op));
                }
            }
            // Its fate is unknown; this writer's connection is gone or broken: stop.
            log.writes.push(rec);
            break;
        }
        self.client.close();
        log
    }
}

/// Sends one write and returns what the server acknowledged.
async fn perform(c: &Client, name: &str, op: &Op) -> Result<Ack, syncline_client::Error> {
    let doc = |w: Written<DocumentState>| Ack {
        revision: w.revision,
        key: None,
        doc: w.value,
        item: None,
    };
    let item = |w: Written<Item>| Ack {
        revision: w.revision,
        key: w.key,
        doc: None,
        item: w.value,
    };
    let bare = |revision| Ack {
        revision,
        key: None,
        doc: None,
        item: None,
    };
    Ok(match op {
        Op::DocSet { value, ttl } => doc(c
            .document(name)
            .set_with(
                value,
                WriteOptions {
                    if_match: None,
                    ttl: *ttl,
                },
            )
            .await?),
        Op::DocUpdate { patch } => doc(c.document(name).update(patch).await?),
        Op::Push { value, ttl } => item(
            c.list(name)
                .push_with(
                    value,
                    WriteOptions {
                        if_match: None,
                        ttl: *ttl,
                    },
                )
                .await?,
        ),
        Op::MapSet { key, value, ttl } => item(
            c.map(name)
                .set_with(
                    key,
                    value,
                    WriteOptions {
                        if_match: None,
                        ttl: *ttl,
                    },
                )
                .await?,
        ),
        Op::Remove {
            key: ItemKey::Index(i),
        } => bare(c.list(name).remove(*i).await?),
        Op::Remove {
            key: ItemKey::Key(k),
        } => bare(c.map(name).remove(k).await?),
    })
}

/// Runs `f` within `limit`, or fails naming `phase`.
async fn within<T>(
    phase: &str,
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| format!("{phase}: no progress within {limit:?}"))?
        .map_err(|e| format!("{phase}: {e}"))
}

async fn connect(server: &ServerUnderTest) -> Result<Client, Error> {
    let config = ClientConfig::from_admin(&server.admin).map_err(err)?;
    Client::connect(config).await.map_err(err)
}

/// Reads one object as the server has it now.
async fn read_current(c: &Client, m: &ObjectModel) -> Result<Current, Error> {
    if m.kind == ObjectKind::Document {
        let d = c.document(&m.name).get().await.map_err(err)?;
        return Ok(Current::Document {
            revision: d.revision,
            data: d.data,
            date_expires: d.date_expires,
        });
    }
    let before = c.fetch(&m.name).await.map_err(err)?;
    let mut items = BTreeMap::new();
    let mut from = None;
    // Bounded: lists and maps hold well under 1,000 pages of items here.
    for _ in 0..1000 {
        let options = PageOptions {
            from: from.take(),
            order: Order::Asc,
            limit: 1000,
        };
        let page = match m.kind {
            ObjectKind::List => c.list(&m.name).items(options).await,
            _ => c.map(&m.name).items(options).await,
        }
        .map_err(err)?;
        for i in &page.items {
            items.insert(i.key.clone(), ItemState::from(i));
        }
        match page.next {
            Some(n) => from = Some(n),
            None => break,
        }
    }
    let after = c.fetch(&m.name).await.map_err(err)?;
    if after.revision != before.revision {
        return Err(format!(
            "{} changed from revision {} to {} while it was read, with no writer running",
            m.name, before.revision, after.revision
        ));
    }
    Ok(Current::Collection {
        revision: after.revision,
        items,
    })
}

/// Replays the object's change log from `since` up to `to`.
async fn read_log(c: &Client, name: &str, since: u64, to: u64) -> Replay {
    let mut replay = Replay::default();
    if to <= since {
        return replay;
    }
    let options = SubscribeOptions {
        since: Some(since),
        window: None,
    };
    let deadline = tokio::time::Instant::now() + READ_DEADLINE;
    let mut sub = match tokio::time::timeout_at(deadline, c.subscribe(name, options)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            replay.cut_short = Some(format!("subscribing failed: {e}"));
            return replay;
        }
        Err(_) => {
            replay.cut_short = Some(format!("no subscription within {READ_DEADLINE:?}"));
            return replay;
        }
    };
    loop {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(Ok(e))) => {
                let (revision, stop) = (e.revision, e.kind == SyncEventKind::Snapshot);
                replay.events.push(e);
                if revision >= to || stop {
                    return replay;
                }
            }
            Ok(Some(Err(e))) => {
                replay.cut_short = Some(format!("the subscription failed: {e}"));
                return replay;
            }
            Ok(None) => {
                replay.cut_short = Some("the subscription ended".into());
                return replay;
            }
            Err(_) => {
                replay.cut_short = Some(format!(
                    "{} events within {READ_DEADLINE:?}",
                    replay.events.len()
                ));
                return replay;
            }
        }
    }
}

/// Starts a server on `data` (with `extra` `serve` flags) and waits until it accepts a
/// connection and answers a ping. Returns the server, that connection and the time it
/// took (the restart time).
async fn start(
    data: &Path,
    log: &Path,
    relaxed: bool,
    extra: &[String],
) -> Result<(ServerUnderTest, Client, Duration), Error> {
    let t0 = Instant::now();
    let deadline = t0 + START_DEADLINE;
    let server = ServerUnderTest::start_in_with(data, relaxed, log, deadline, extra).await?;
    let client = tokio::time::timeout_at(deadline.into(), async {
        let c = connect(&server).await?;
        c.ping().await.map_err(err)?;
        Ok::<_, Error>(c)
    })
    .await
    .map_err(|_| format!("no answer to a ping within {START_DEADLINE:?}"))??;
    Ok((server, client, t0.elapsed()))
}

/// Creates the objects (their state is the model's starting point).
async fn setup(
    c: &Client,
    objects: &mut [(ObjectModel, Option<usize>, Role)],
) -> Result<(), Error> {
    for (m, owner, _) in objects.iter_mut() {
        match m.kind {
            ObjectKind::Document => {
                let w = c
                    .document(&m.name)
                    .set(&json!({"tag": 0, "w": owner}))
                    .await
                    .map_err(err)?;
                let d = w
                    .value
                    .ok_or_else(|| format!("{}: the backend was not sent its write", m.name))?;
                m.revision = d.revision;
                m.doc = d.data;
                m.doc_expiry = Expiry::Exact(d.date_expires);
            }
            kind => {
                let info = c.create(kind, Some(&m.name), None).await.map_err(err)?;
                m.revision = info.revision;
            }
        }
    }
    Ok(())
}

/// The run's scratch space: the nodes' data directories and logs (in cluster mode also
/// the etcd members' dirs), removed at the end unless something went wrong.
struct Scratch {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
}

/// One node: its data directory and log (the same across restarts), its `serve` flags,
/// and its process while it runs.
struct Node {
    data: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    server: Option<ServerUnderTest>,
}

/// Everything the run starts and kills: the nodes and, in cluster mode, their etcd.
/// Dropping it kills every process still running, the nodes first (field order).
struct Installation {
    nodes: Vec<Node>,
    #[cfg(feature = "etcd")]
    etcd: Option<super::etcd::EtcdMembers>,
}

impl Installation {
    /// Starts the one server on sled, or in cluster mode the etcd and then each node
    /// (the first creates the installation and its certificate, which the others
    /// serve too). Returns a connection to the first node, for the setup.
    async fn start(params: &CrashParams, root: &Path) -> Result<(Self, Client), Error> {
        if params.etcd {
            return Self::start_cluster(params, root).await;
        }
        let mut node = Node {
            data: root.join("data"),
            log: root.join("server.log"),
            args: Vec::new(),
            server: None,
        };
        let (server, client, _) = start(&node.data, &node.log, params.relaxed, &[]).await?;
        node.server = Some(server);
        let me = Installation {
            nodes: vec![node],
            #[cfg(feature = "etcd")]
            etcd: None,
        };
        Ok((me, client))
    }

    #[cfg(not(feature = "etcd"))]
    async fn start_cluster(_: &CrashParams, _: &Path) -> Result<(Self, Client), Error> {
        Err("--store etcd needs the etcd cargo feature, which this build leaves out".into())
    }

    #[cfg(feature = "etcd")]
    async fn start_cluster(params: &CrashParams, root: &Path) -> Result<(Self, Client), Error> {
        use super::etcd::{EtcdMembers, CLUSTER_MAX_TXN_OPS};
        let ops = CLUSTER_MAX_TXN_OPS.to_string();
        let etcd = EtcdMembers::start(&root.join("etcd"), ETCD_MEMBERS, &["--max-txn-ops", &ops])
            .await
            .map_err(|e| format!("etcd: {e}"))?;
        let prefix = format!("/crash-{:016x}", rand::random::<u64>());
        let endpoints = etcd.endpoints();
        let common: Vec<String> = [
            "--store",
            "etcd",
            "--etcd-endpoints",
            &endpoints,
            "--etcd-prefix",
            &prefix,
            "--etcd-max-txn-ops",
            &ops,
        ]
        .map(str::to_owned)
        .to_vec();
        let mut me = Installation {
            nodes: Vec::new(),
            etcd: Some(etcd),
        };
        let mut first = None;
        for i in 0..params.nodes.max(1) {
            let mut args = common.clone();
            if let Some(n0) = me.nodes.first() {
                args.extend(ServerUnderTest::cert_args(&n0.data));
            }
            let mut node = Node {
                data: root.join(format!("node{i}")),
                log: root.join(format!("node{i}.log")),
                args,
                server: None,
            };
            let (server, client, _) = start(&node.data, &node.log, params.relaxed, &node.args)
                .await
                .map_err(|e| format!("node {i}: {e}"))?;
            node.server = Some(server);
            me.nodes.push(node);
            match first {
                None => first = Some(client),
                Some(_) => client.close(),
            }
        }
        let first = first.ok_or("no node started")?;
        Ok((me, first))
    }

    /// Node `i`'s server; an error if it is not running.
    fn server(&self, i: usize) -> Result<&ServerUnderTest, Error> {
        self.nodes[i]
            .server
            .as_ref()
            .ok_or_else(|| format!("node {i} is not running"))
    }

    /// SIGKILLs node `i` and waits until it is gone.
    async fn kill_node(&mut self, i: usize) -> Result<(), Error> {
        match self.nodes[i].server.as_mut() {
            Some(s) => s.kill(Instant::now() + KILL_DEADLINE).await,
            None => Err(format!("node {i} is not running")),
        }
    }

    /// Starts node `i` again on its data directory; returns a connection to it that
    /// has answered a ping, and the time that took.
    async fn restart_node(&mut self, i: usize, relaxed: bool) -> Result<(Client, Duration), Error> {
        let n = &mut self.nodes[i];
        n.server = None;
        let (server, client, took) = start(&n.data, &n.log, relaxed, &n.args).await?;
        n.server = Some(server);
        Ok((client, took))
    }

    /// etcd members (0 on sled).
    fn etcd_members(&self) -> usize {
        #[cfg(feature = "etcd")]
        if let Some(e) = &self.etcd {
            return e.members();
        }
        0
    }

    /// SIGKILLs etcd member `m`.
    fn kill_member(&mut self, m: usize) -> Result<(), Error> {
        #[cfg(feature = "etcd")]
        if let Some(e) = &mut self.etcd {
            return e.kill(m);
        }
        Err(format!("there is no etcd member {m}"))
    }

    /// Starts etcd member `m` again on its dir and ports, and waits until it answers a
    /// linearizable read.
    async fn restart_member(&mut self, m: usize) -> Result<(), Error> {
        #[cfg(feature = "etcd")]
        if let Some(e) = &mut self.etcd {
            return e.restart(m, Instant::now() + START_DEADLINE).await;
        }
        Err(format!("there is no etcd member {m}"))
    }
}

/// Runs the crash loop. Phase failures end the run and are reported in `error`.
pub async fn crash(params: &CrashParams) -> CrashReport {
    let started = Instant::now();
    let mut report = CrashReport {
        store: params.store(),
        nodes: params.nodes,
        ..CrashReport::default()
    };
    let scratch = match tempfile::Builder::new().prefix("syncline-crash-").tempdir() {
        Ok(d) => Scratch {
            root: d.path().to_owned(),
            dir: Some(d),
        },
        Err(e) => {
            report.error = Some(format!("setup: a temp dir: {e}"));
            return report;
        }
    };
    if let Err(e) = run_cycles(params, &scratch, &mut report).await {
        report.error = Some(e);
    }
    report.elapsed = started.elapsed();
    if !report.clean() {
        // The etcd members' data goes (its WAL alone is 64 MiB per member); their logs
        // stay with the nodes' data and logs.
        for m in 0..ETCD_MEMBERS {
            let _ = std::fs::remove_dir_all(scratch.root.join(format!("etcd/m{m}/data")));
        }
        if let Some(d) = scratch.dir {
            report.kept_dir = Some(d.keep());
        }
    }
    report
}

async fn run_cycles(
    params: &CrashParams,
    s: &Scratch,
    report: &mut CrashReport,
) -> Result<(), Error> {
    if params.writers == 0 {
        return Err("setup: --writers must be at least 1".into());
    }
    let mut rng = StdRng::seed_from_u64(params.seed);
    let mut objects = objects(params.writers);
    let tags = Arc::new(AtomicU64::new(1));
    let progress = Progress::new("crash");

    // Every process started here is killed when `installation` is dropped, on an error
    // too.
    let (mut installation, checker) = Installation::start(params, &s.root)
        .await
        .map_err(|e| format!("first start: {e}"))?;
    within("setup", READ_DEADLINE, setup(&checker, &mut objects)).await?;
    checker.close();
    let nodes = installation.nodes.len();

    for cycle in 1..=params.cycles {
        // Connect: one connection per writer (writer w through node w % nodes), all
        // open before the clock starts.
        let mut clients = Vec::with_capacity(params.writers);
        for w in 0..params.writers {
            clients.push(
                within(
                    &format!("cycle {cycle}: connect"),
                    CONNECT_DEADLINE,
                    connect(installation.server(w % nodes)?),
                )
                .await?,
            );
        }

        // Write, and kill the server at a random moment.
        let budget: Arc<Vec<AtomicU32>> =
            Arc::new(objects.iter().map(|_| AtomicU32::new(0)).collect());
        let killed = Arc::new(AtomicBool::new(false));
        let (stop_tx, stop_rx) = watch::channel(None);
        let mut set = JoinSet::new();
        for (w, client) in clients.into_iter().enumerate() {
            let targets = objects
                .iter()
                .enumerate()
                .filter(|(_, (_, owner, _))| !matches!(owner, Some(o) if *o != w))
                .map(|(i, (m, _, role))| Target {
                    object: i,
                    name: m.name.clone(),
                    role: *role,
                    mine: match role {
                        Role::OwnList | Role::OwnMap => m.items.keys().cloned().collect(),
                        Role::SharedList => m
                            .items
                            .iter()
                            .filter(|(_, it)| it.data["w"].as_u64() == Some(w as u64))
                            .map(|(k, _)| k.clone())
                            .collect(),
                        _ => BTreeSet::new(),
                    },
                })
                .collect();
            let writer = Writer {
                id: w,
                client,
                rng: StdRng::seed_from_u64(params.seed ^ (cycle << 16) ^ w as u64),
                targets,
                budget: budget.clone(),
                tags: tags.clone(),
                killed: killed.clone(),
                node: w % nodes,
                stop: stop_rx.clone(),
                n: cycle << 20,
            };
            set.spawn(writer.run());
        }
        let delay = Duration::from_millis(rng.gen_range(0..=params.max_kill_ms));
        tokio::time::sleep(delay).await;
        killed.store(true, Ordering::SeqCst);
        // One node; in cluster mode, half the time one etcd member too (one at most: the
        // other two keep the quorum). No draw with one node and no etcd, so a seed
        // gives the same kills on sled as before cluster mode.
        let victim = if nodes > 1 {
            rng.gen_range(0..nodes)
        } else {
            0
        };
        let members = installation.etcd_members();
        let member = if members > 0 && rng.gen_bool(0.5) {
            Some(rng.gen_range(0..members))
        } else {
            None
        };
        installation
            .kill_node(victim)
            .await
            .map_err(|e| format!("cycle {cycle}: kill node {victim}: {e}"))?;
        report.node_kills += 1;
        if let Some(m) = member {
            installation
                .kill_member(m)
                .map_err(|e| format!("cycle {cycle}: kill etcd member {m}: {e}"))?;
            report.etcd_member_kills += 1;
        }
        // Writers through the killed node still waiting for an answer record their write
        // as in flight; the others wait for theirs.
        let _ = stop_tx.send(Some(victim));
        let mut writes: Vec<WriteRec> = Vec::new();
        let joined = tokio::time::timeout(STOP_DEADLINE, async {
            while let Some(r) = set.join_next().await {
                let log = r.map_err(|e| format!("a writer task failed: {e}"))?;
                for e in log.errors_before_kill {
                    report.findings.unexpected(format!("cycle {cycle}: {e}"));
                }
                writes.extend(log.writes);
            }
            Ok::<_, Error>(())
        })
        .await;
        match joined {
            Ok(r) => r.map_err(|e| format!("cycle {cycle}: stop writers: {e}"))?,
            Err(_) => {
                return Err(format!(
                    "cycle {cycle}: stop writers: still writing after {STOP_DEADLINE:?}"
                ))
            }
        }
        for w in &writes {
            match w.fate {
                Fate::Acked(_) => report.writes_acknowledged += 1,
                Fate::InFlight => report.writes_in_flight += 1,
            }
        }

        // In cluster mode a transaction the killed node had sent may still be in etcd's
        // hands (one caught in a leader election is committed by the next leader): it
        // lands, or not, within this, and the check must come after it, or the next
        // cycle sees a write of this one as unexplained. (The surviving nodes' writes
        // were answered above.)
        if params.etcd {
            tokio::time::sleep(CLUSTER_SETTLE).await;
        }
        // The etcd member first (its restart waits for a linearizable read, which needs
        // a leader, so what it left in flight is settled before the check).
        if let Some(m) = member {
            installation
                .restart_member(m)
                .await
                .map_err(|e| format!("cycle {cycle}: restart etcd member {m}: {e}"))?;
        }
        // The node on its same data directory; the time until it answers is measured.
        let (checker, took) = installation
            .restart_node(victim, params.relaxed)
            .await
            .map_err(|e| format!("cycle {cycle}: restart node {victim}: {e}"))?;
        report.restart_ms.push(took.as_secs_f64() * 1000.0);

        // Check every object against what was acknowledged and what was in flight.
        for (i, (m, _, _)) in objects.iter_mut().enumerate() {
            let mine: Vec<&WriteRec> = writes.iter().filter(|w| w.object == i).collect();
            let phase = format!("cycle {cycle}: check {}", m.name);
            let current = within(&phase, READ_DEADLINE, read_current(&checker, m)).await?;
            let replay = if current.revision() >= m.revision {
                read_log(&checker, &m.name, m.revision, current.revision()).await
            } else {
                Replay::default()
            };
            *m = check_object(cycle, m, &mine, &current, &replay, &mut report.findings);
        }
        checker.close();
        report.cycles = cycle;
        progress.update(
            cycle as f64 / params.cycles as f64,
            &format!(
                "cycle {cycle}/{}: {} writes acknowledged, {} failures",
                params.cycles,
                report.writes_acknowledged,
                report.findings.failures()
            ),
        );
    }
    progress.finish();
    drop(installation);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked_doc(object: usize, tag: u64, op: Op, revision: u64, data: Value) -> WriteRec {
        WriteRec {
            object,
            writer: 0,
            tag,
            op,
            fate: Fate::Acked(Box::new(Ack {
                revision,
                key: None,
                doc: Some(DocumentState {
                    sid: "ET0".into(),
                    unique_name: None,
                    revision,
                    data,
                    created_by: "system".into(),
                    date_created: 0,
                    date_updated: 0,
                    date_expires: None,
                }),
                item: None,
            })),
        }
    }

    fn doc_event(revision: u64, data: Value) -> SyncEvent {
        SyncEvent {
            revision,
            is_local: false,
            actor: "system".into(),
            kind: SyncEventKind::DocumentUpdated {
                data,
                previous: None,
            },
        }
    }

    fn doc_model(revision: u64, doc: Value) -> ObjectModel {
        let mut m = ObjectModel::new("d".into(), ObjectKind::Document);
        m.revision = revision;
        m.doc = doc;
        m
    }

    fn doc_now(revision: u64, data: Value) -> Current {
        Current::Document {
            revision,
            data,
            date_expires: None,
        }
    }

    #[test]
    fn acknowledged_writes_found_in_the_log_and_the_state_are_clean() {
        let m = doc_model(3, json!({"tag": 0}));
        let a = acked_doc(
            0,
            7,
            Op::DocSet {
                value: json!({"tag": 7}),
                ttl: None,
            },
            4,
            json!({"tag": 7}),
        );
        let b = acked_doc(
            0,
            8,
            Op::DocUpdate {
                patch: json!({"tag": 8, "k": 1}),
            },
            5,
            json!({"tag": 8, "k": 1}),
        );
        let replay = Replay {
            events: vec![
                doc_event(4, json!({"tag": 7})),
                doc_event(5, json!({"tag": 8, "k": 1})),
            ],
            cut_short: None,
        };
        let mut f = Findings::default();
        let next = check_object(
            1,
            &m,
            &[&a, &b],
            &doc_now(5, json!({"tag": 8, "k": 1})),
            &replay,
            &mut f,
        );
        assert_eq!(f.failures(), 0, "{:?}", f.notes);
        assert_eq!(f.writes_checked, 2);
        assert_eq!(next.revision, 5);
    }

    #[test]
    fn an_acknowledged_write_missing_after_the_restart_is_lost() {
        let m = doc_model(3, json!({"tag": 0}));
        let a = acked_doc(
            0,
            7,
            Op::DocSet {
                value: json!({"tag": 7}),
                ttl: None,
            },
            4,
            json!({"tag": 7}),
        );
        let mut f = Findings::default();
        let next = check_object(
            1,
            &m,
            &[&a],
            &doc_now(3, json!({"tag": 0})),
            &Replay::default(),
            &mut f,
        );
        assert_eq!((f.lost, f.writes_checked), (1, 1), "{:?}", f.notes);
        assert_eq!(
            next.revision, 3,
            "the next cycle starts from what the server has"
        );
    }

    #[test]
    fn a_write_in_flight_may_land_or_not_but_only_once() {
        let m = doc_model(3, json!({"tag": 0}));
        let w = WriteRec {
            object: 0,
            writer: 0,
            tag: 9,
            op: Op::DocSet {
                value: json!({"tag": 9}),
                ttl: Some(60),
            },
            fate: Fate::InFlight,
        };
        let mut f = Findings::default();
        check_object(
            1,
            &m,
            &[&w],
            &doc_now(3, json!({"tag": 0})),
            &Replay::default(),
            &mut f,
        );
        assert_eq!((f.failures(), f.in_flight_not_landed), (0, 1));

        let mut f = Findings::default();
        let landed = Replay {
            events: vec![doc_event(4, json!({"tag": 9}))],
            cut_short: None,
        };
        let now = Current::Document {
            revision: 4,
            data: json!({"tag": 9}),
            date_expires: Some(1),
        };
        check_object(1, &m, &[&w], &now, &landed, &mut f);
        assert_eq!((f.failures(), f.in_flight_landed), (0, 1), "{:?}", f.notes);

        let mut f = Findings::default();
        let twice = Replay {
            events: vec![
                doc_event(4, json!({"tag": 9})),
                doc_event(5, json!({"tag": 9})),
            ],
            cut_short: None,
        };
        let now = Current::Document {
            revision: 5,
            data: json!({"tag": 9}),
            date_expires: Some(1),
        };
        check_object(1, &m, &[&w], &now, &twice, &mut f);
        assert_eq!(f.half_applied, 1, "{:?}", f.notes);
    }

    #[test]
    fn state_that_disagrees_with_the_change_log_is_half_applied() {
        let m = doc_model(3, json!({"tag": 0}));
        let a = acked_doc(
            0,
            7,
            Op::DocSet {
                value: json!({"tag": 7}),
                ttl: None,
            },
            4,
            json!({"tag": 7}),
        );
        let replay = Replay {
            events: vec![doc_event(4, json!({"tag": 7}))],
            cut_short: None,
        };
        let mut f = Findings::default();
        check_object(
            1,
            &m,
            &[&a],
            &doc_now(4, json!({"tag": 0})),
            &replay,
            &mut f,
        );
        assert_eq!((f.half_applied, f.lost), (1, 0), "{:?}", f.notes);
    }

    #[test]
    fn a_revision_below_the_last_check_is_a_regression() {
        let m = doc_model(5, json!({"tag": 0}));
        let mut f = Findings::default();
        check_object(
            1,
            &m,
            &[],
            &doc_now(4, json!({"tag": 0})),
            &Replay::default(),
            &mut f,
        );
        assert_eq!(f.regressions, 1);
    }

    fn item(key: ItemKey, revision: u64, data: Value) -> Item {
        Item {
            key,
            revision,
            data,
            created_by: "system".into(),
            date_created: 0,
            date_updated: 0,
            date_expires: None,
        }
    }

    #[test]
    fn a_push_that_reuses_an_index_is_a_regression_and_a_removed_item_must_stay_removed() {
        let mut m = ObjectModel::new("l".into(), ObjectKind::List);
        m.revision = 2;
        m.max_index = Some(1);
        m.items.insert(
            ItemKey::Index(1),
            ItemState {
                revision: 2,
                data: json!({"tag": 1}),
                date_expires: None,
            },
        );
        let remove = WriteRec {
            object: 0,
            writer: 0,
            tag: 5,
            op: Op::Remove {
                key: ItemKey::Index(1),
            },
            fate: Fate::Acked(Box::new(Ack {
                revision: 3,
                key: None,
                doc: None,
                item: None,
            })),
        };
        let pushed = item(ItemKey::Index(1), 4, json!({"tag": 6}));
        let push = WriteRec {
            object: 0,
            writer: 0,
            tag: 6,
            op: Op::Push {
                value: json!({"tag": 6}),
                ttl: None,
            },
            fate: Fate::Acked(Box::new(Ack {
                revision: 4,
                key: Some(ItemKey::Index(1)),
                doc: None,
                item: Some(pushed.clone()),
            })),
        };
        let replay = Replay {
            events: vec![
                SyncEvent {
                    revision: 3,
                    is_local: false,
                    actor: "system".into(),
                    kind: SyncEventKind::ItemRemoved {
                        key: ItemKey::Index(1),
                        previous: json!({"tag": 1}),
                        reason: syncline_client::Reason::Write,
                    },
                },
                SyncEvent {
                    revision: 4,
                    is_local: false,
                    actor: "system".into(),
                    kind: SyncEventKind::ItemAdded {
                        item: pushed.clone(),
                    },
                },
            ],
            cut_short: None,
        };
        let now = Current::Collection {
            revision: 4,
            items: [(ItemKey::Index(1), ItemState::from(&pushed))].into(),
        };
        let mut f = Findings::default();
        check_object(1, &m, &[&remove, &push], &now, &replay, &mut f);
        assert_eq!(
            (f.regressions, f.lost, f.half_applied),
            (1, 0, 0),
            "{:?}",
            f.notes
        );

        // The removal acknowledged, but the item back after the restart.
        let back = Current::Collection {
            revision: 3,
            items: m.items.clone(),
        };
        let mut f = Findings::default();
        check_object(
            1,
            &m,
            &[&remove],
            &back,
            &Replay {
                events: replay.events[..1].to_vec(),
                cut_short: None,
            },
            &mut f,
        );
        assert_eq!(f.half_applied, 1, "{:?}", f.notes);
    }

    #[test]
    fn a_snapshot_instead_of_a_replay_is_a_log_mismatch() {
        let m = doc_model(3, json!({"tag": 0}));
        let a = acked_doc(
            0,
            7,
            Op::DocSet {
                value: json!({"tag": 7}),
                ttl: None,
            },
            4,
            json!({"tag": 7}),
        );
        let replay = Replay {
            events: vec![SyncEvent {
                revision: 4,
                is_local: false,
                actor: "system".into(),
                kind: SyncEventKind::Snapshot,
            }],
            cut_short: None,
        };
        let mut f = Findings::default();
        check_object(
            1,
            &m,
            &[&a],
            &doc_now(4, json!({"tag": 7})),
            &replay,
            &mut f,
        );
        assert_eq!((f.log_mismatches, f.lost), (1, 0), "{:?}", f.notes);
    }

    #[test]
    fn merges_replace_top_level_keys_and_null_removes() {
        assert_eq!(
            merge(&json!({"a": 1, "b": 2}), &json!({"b": 3, "a": null})),
            json!({"b": 3})
        );
        assert_eq!(merge(&json!(5), &json!({"a": 1})), json!({"a": 1}));
    }
}
