//! Syncline benchmarks: shared fixtures for the criterion micro-benchmarks in
//! `benches/micro.rs` (the load harness grows here later).
//!
//! - [`doc_json`]: the ~200-byte JSON document every write and event bench carries.
//! - [`batches`]: counts the commit task's batches (one flush each in durable mode) and the
//!   writes in them, so a bench can show whether group commit actually grouped.

/// A service sid for bench writes (the committer does not look services up).
pub const SERVICE_SID: &str = "IS00000000000000000000000000000001";

/// A JSON object of about 200 bytes whose values vary with `n`, so consecutive writes
/// really change the document.
pub fn doc_json(n: u64) -> String {
    format!(
        r#"{{"player":"player-{n:08}","room":"lobby-7","x":{x},"y":{y},"hp":87,"status":"moving","inventory":["sword","shield","potion","map"],"flags":{{"ready":true,"muted":false}},"seq":{n},"note":"padding to about 200 bytes"}}"#,
        x = n % 1000,
        y = (n * 7) % 1000,
    )
}

/// Batch accounting from the commit task's own `debug!(size, "batch committed")` event
/// (target `syncline_server::commit`), read through a tracing layer that is interested in
/// nothing else. No hook in the server and no wrapper around the store: if the event is
/// renamed, the counts just stay at zero.
pub mod batches {
    use std::sync::atomic::{AtomicU64, Ordering};

    use tracing::field::{Field, Visit};
    use tracing::subscriber::Interest;
    use tracing::{Event, Metadata, Subscriber};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

    const TARGET: &str = "syncline_server::commit";
    const MESSAGE: &str = "batch committed";

    static BATCHES: AtomicU64 = AtomicU64::new(0);
    static WRITES: AtomicU64 = AtomicU64::new(0);

    struct Counter;

    #[derive(Default)]
    struct Fields {
        size: Option<u64>,
        is_batch: bool,
    }

    impl Visit for Fields {
        fn record_u64(&mut self, field: &Field, value: u64) {
            if field.name() == "size" {
                self.size = Some(value);
            }
        }
        fn record_i64(&mut self, field: &Field, value: i64) {
            if field.name() == "size" {
                self.size = u64::try_from(value).ok();
            }
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "message" {
                self.is_batch = value == MESSAGE;
            }
        }
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.is_batch = format!("{value:?}") == MESSAGE;
            }
        }
    }

    fn wanted(meta: &Metadata<'_>) -> bool {
        meta.is_event() && meta.target() == TARGET
    }

    impl<S: Subscriber> Layer<S> for Counter {
        fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
            if wanted(meta) {
                Interest::always()
            } else {
                Interest::never()
            }
        }
        fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
            wanted(meta)
        }
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            let mut f = Fields::default();
            event.record(&mut f);
            if let (true, Some(size)) = (f.is_batch, f.size) {
                BATCHES.fetch_add(1, Ordering::Relaxed);
                WRITES.fetch_add(size, Ordering::Relaxed);
            }
        }
    }

    /// Starts counting (installs the layer as the global tracing subscriber). Call once,
    /// before the first commit task starts; false if another subscriber was installed.
    pub fn install() -> bool {
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Counter))
            .is_ok()
    }

    /// (batches, writes) committed since the last [`reset`].
    pub fn counts() -> (u64, u64) {
        (
            BATCHES.load(Ordering::Relaxed),
            WRITES.load(Ordering::Relaxed),
        )
    }

    pub fn reset() {
        BATCHES.store(0, Ordering::Relaxed);
        WRITES.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn doc_is_about_200_bytes_of_json() {
        for n in [0, 1, 12_345, u64::from(u32::MAX)] {
            let s = super::doc_json(n);
            assert!((180..=240).contains(&s.len()), "{} bytes", s.len());
            serde_json::from_str::<serde_json::Value>(&s).unwrap();
        }
    }
}
