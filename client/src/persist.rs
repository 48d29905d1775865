//! Saving a [`Replica`] to a file and loading it back, so an app restarted offline shows
//! its last state and resumes from its revision ([`Client::resume`]).
//!
//! The file is JSON: `{"format": "syncline-replica", "version": 1, "replica": ...}`. A
//! save writes a temporary file beside the target, flushes it and renames it over the
//! target, so a crash leaves either the old file or the new one, whole.
//!
//! [`Client::resume`]: crate::Client::resume

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde_json::Value;

use crate::replica::Replica;
use crate::{Error, Result};

/// The replica file format this client writes, and the newest it reads. A file with a
/// higher version was written by a newer client and is refused rather than misread.
pub const REPLICA_FORMAT_VERSION: u64 = 1;

/// What the file's `format` field says, so another JSON file is never taken for one.
const FORMAT: &str = "syncline-replica";

#[derive(Serialize)]
struct FileOut<'a> {
    format: &'static str,
    version: u64,
    replica: &'a Replica,
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn bad_file(path: &Path, reason: impl Into<String>) -> Error {
    Error::ReplicaFile {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// A name for the temporary file, unique within this process, beside `path`.
fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    path.with_file_name(name)
}

impl Replica {
    /// Saves the replica to `path` (JSON, see [`REPLICA_FORMAT_VERSION`]), replacing the
    /// file whole: it is written to a temporary file beside it, flushed to disk and
    /// renamed over `path`, so a crash mid-save leaves the previous file intact.
    ///
    /// ```no_run
    /// # async fn demo(client: syncline_client::Client) -> syncline_client::Result<()> {
    /// use syncline_client::Replica;
    /// let path = std::path::Path::new("settings.replica.json");
    /// // While running: keep the file current with the subscription's replica.
    /// let mut sub = client.document("settings").subscribe().await?;
    /// while let Some(event) = sub.next().await {
    ///     event?;
    ///     sub.replica().save(path)?;
    /// #   break;
    /// }
    /// // After a restart, even with no network: the last state at once...
    /// let replica = Replica::load(path)?;
    /// if let Replica::Document(d) = &replica {
    ///     println!("last known value {} at revision {}", d.data, d.revision);
    /// }
    /// // ...and once connected, only what changed since that revision.
    /// let mut sub = client.resume("settings", replica, None).await?;
    /// # Ok(()) }
    /// ```
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let file = FileOut {
            format: FORMAT,
            version: REPLICA_FORMAT_VERSION,
            replica: self,
        };
        let bytes = serde_json::to_vec(&file)
            .map_err(|e| bad_file(path, format!("cannot encode the replica: {e}")))?;
        let temp = temp_path(path);
        let written = (|| {
            let mut f = std::fs::File::create(&temp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&temp, path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(io_error(path, e));
        }
        // The rename is durable once the directory is; not every platform can open a
        // directory to flush it, and the file itself is already whole either way.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Loads a replica saved by [`Replica::save`]. A file that is not a replica file, is
    /// damaged, or was written by a newer client (format version above
    /// [`REPLICA_FORMAT_VERSION`]) is refused with [`Error::ReplicaFile`]
    /// (`InvalidArgument`); one that cannot be read, with [`Error::Io`].
    pub fn load(path: impl AsRef<Path>) -> Result<Replica> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
        let mut file: Value = serde_json::from_slice(&bytes)
            .map_err(|e| bad_file(path, format!("not a replica file (not JSON: {e})")))?;
        if file.get("format").and_then(Value::as_str) != Some(FORMAT) {
            return Err(bad_file(
                path,
                format!("not a replica file (no \"format\": \"{FORMAT}\")"),
            ));
        }
        let version = file
            .get("version")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad_file(path, "the replica file has no format version"))?;
        if version > REPLICA_FORMAT_VERSION {
            return Err(bad_file(
                path,
                format!(
                    "written by a newer client: format version {version}, this client reads \
                     versions up to {REPLICA_FORMAT_VERSION}"
                ),
            ));
        }
        let replica = file
            .get_mut("replica")
            .map(Value::take)
            .ok_or_else(|| bad_file(path, "the replica file holds no replica"))?;
        serde_json::from_value(replica)
            .map_err(|e| bad_file(path, format!("damaged replica file: {e}")))
    }
}
