//! The data directory and first-start bootstrap: the self-signed certificate, the store,
//! the installation's account sid, the default service and the admin API key, and the
//! `admin.json` that hands them to the operator's tools.
//!
//! Layout of a data directory (mode 0700):
//! ```text
//! admin.json      server address, CA file, account sid, default service, admin key,
//!                 auth token (0600)
//! tls/cert.pem    self-signed certificate for localhost, 127.0.0.1, ::1
//! tls/key.pem     its private key (0600)
//! reset.key       32 random bytes: the QUIC stateless-reset secret (0600), see `reset_key`
//! db/             the sled store
//! ```

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use syncline_core::auth::{new_auth_token, new_secret, random_sid};
use syncline_proto::admin_config::AdminConfig;
use syncline_proto::ids::{ACCOUNT_PREFIX, API_KEY_PREFIX, SERVICE_PREFIX};

use syncline_core::store::{ApiKeyRecord, Installation, ServiceRecord, Store, StoreError};
use syncline_store_sled::SledStore;

/// Unique name of the service created on first start.
pub const DEFAULT_SERVICE_NAME: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS files: {0}")]
    Tls(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ConfigError + '_ {
    move |source| ConfigError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `contents` to `path` atomically (temp file + rename) with the given mode.
/// Change-log entries kept per object for resuming subscribers, unless `serve` says otherwise.
pub const DEFAULT_LOG_RETENTION: u64 = 1000;

pub fn write_private(path: &Path, contents: &[u8], mode: u32) -> Result<(), ConfigError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(contents).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

pub struct TlsIdentity {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The file clients trust as CA.
    pub cert_file: PathBuf,
}

/// Loads the given certificate and key, or the data directory's own, creating a
/// self-signed pair on first start.
pub fn tls_identity(
    data_dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<TlsIdentity, ConfigError> {
    let (cert_file, key_file) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_owned(), k.to_owned()),
        (None, None) => {
            let dir = data_dir.join("tls");
            let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
            if !c.exists() || !k.exists() {
                std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                let names = vec![
                    "localhost".to_owned(),
                    "127.0.0.1".to_owned(),
                    "::1".to_owned(),
                ];
                let generated = rcgen::generate_simple_self_signed(names)
                    .map_err(|e| ConfigError::Tls(e.to_string()))?;
                write_private(&k, generated.key_pair.serialize_pem().as_bytes(), 0o600)?;
                write_private(&c, generated.cert.pem().as_bytes(), 0o644)?;
            }
            (c, k)
        }
        _ => return Err(ConfigError::Tls("--cert and --key go together".into())),
    };
    let certs = CertificateDer::pem_file_iter(&cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ConfigError::Tls(format!("{}: {e}", cert_file.display())))?;
    if certs.is_empty() {
        return Err(ConfigError::Tls(format!(
            "{}: no certificate",
            cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&key_file)
        .map_err(|e| ConfigError::Tls(format!("{}: {e}", key_file.display())))?;
    let cert_file = std::fs::canonicalize(&cert_file).map_err(io(&cert_file))?;
    Ok(TlsIdentity {
        certs,
        key,
        cert_file,
    })
}

/// Length of `reset.key`.
pub const RESET_KEY_LEN: usize = 32;

/// The secret the QUIC endpoint keys its stateless resets and connection ids with
/// (`net::bind`), made on first start (`reset.key`, 0600) and read on every later one. A
/// server restarted after a crash answers its old connections' packets with resets their
/// clients can verify, so they reconnect at once instead of waiting for their idle timeout. A file of another
/// length is an error rather than replaced: a new secret would make that wait come back
/// unnoticed.
pub fn reset_key(data_dir: &Path) -> Result<[u8; RESET_KEY_LEN], ConfigError> {
    let path = data_dir.join("reset.key");
    match std::fs::read(&path) {
        Ok(bytes) => <[u8; RESET_KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
            let message = format!(
                "damaged: a stateless-reset key is {RESET_KEY_LEN} bytes, this file has {}; \
                 remove it to have a new one made (connected clients then wait for their \
                 idle timeout once)",
                bytes.len()
            );
            io(&path)(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                message,
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; RESET_KEY_LEN] = rand::Rng::gen(&mut rand::rngs::OsRng);
            write_private(&path, &key, 0o600)?;
            Ok(key)
        }
        Err(e) => Err(io(&path)(e)),
    }
}

/// Creates the data directory (0700) if needed.
pub fn prepare_data_dir(data_dir: &Path) -> Result<PathBuf, ConfigError> {
    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io(data_dir))?;
    std::fs::canonicalize(data_dir).map_err(io(data_dir))
}

/// The installation's auth token, made now when it has none: on first start, and at
/// the first start of a data directory from before webhooks.
pub async fn auth_token(store: &dyn Store) -> Result<String, ConfigError> {
    if let Some(token) = store.auth_token().await? {
        return Ok(token);
    }
    // Another node of a cluster may make one at the same moment: the first one stays.
    Ok(store.create_auth_token(&new_auth_token()).await?)
}

/// Replaces the data directory's auth token, in the store and in `admin.json`. Runs
/// offline: the store is the server's while it runs (opening it then fails), and a
/// server started afterwards signs with the new token.
pub async fn rotate_auth_token(data_dir: &Path) -> Result<String, ConfigError> {
    let retention = DEFAULT_LOG_RETENTION;
    let store = SledStore::open(&data_dir.join("db"), retention, true)?;
    if store.installation().await?.is_none() {
        return Err(StoreError::Corrupt(format!(
            "{} holds no installation (has a server ever started there?)",
            data_dir.display()
        ))
        .into());
    }
    let token = new_auth_token();
    store.put_auth_token(&token).await?;
    let admin_path = data_dir.join("admin.json");
    if admin_path.exists() {
        let mut admin = AdminConfig::load(&admin_path).map_err(|e| ConfigError::Io {
            path: admin_path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.0),
        })?;
        admin.auth_token = Some(token.clone());
        write_admin_config(&admin_path, &admin)?;
    }
    Ok(token)
}

/// The installation, created on first start. Returns it, the admin key, and whether it
/// was created now.
pub async fn installation(
    store: &dyn Store,
) -> Result<(Installation, ApiKeyRecord, bool), ConfigError> {
    let existing = |inst: Installation| async move {
        match store.api_key(&inst.admin_key_sid).await? {
            Some(key) => Ok((inst, key, false)),
            None => Err(ConfigError::from(StoreError::Corrupt(
                "the admin API key is missing".into(),
            ))),
        }
    };
    if let Some(inst) = store.installation().await? {
        return existing(inst).await;
    }
    let now = syncline_core::now_ms();
    let service = ServiceRecord {
        sid: random_sid(SERVICE_PREFIX),
        unique_name: Some(DEFAULT_SERVICE_NAME.into()),
        flags: Default::default(),
        date_created: now,
        date_updated: now,
    };
    let key = ApiKeyRecord {
        sid: random_sid(API_KEY_PREFIX),
        friendly_name: Some("admin".into()),
        secret: new_secret(),
        date_created: now,
        revoked: false,
    };
    let inst = Installation {
        account_sid: random_sid(ACCOUNT_PREFIX),
        default_service_sid: service.sid.clone(),
        admin_key_sid: key.sid.clone(),
    };
    if store.create_installation(&inst, &service, &key).await? {
        return Ok((inst, key, true));
    }
    // Another node of the cluster created it first.
    match store.installation().await? {
        Some(inst) => existing(inst).await,
        None => {
            Err(StoreError::Corrupt("the installation vanished while it was created".into()).into())
        }
    }
}

/// Writes `admin.json` (0600) for the operator's tools.
pub fn write_admin_config(path: &Path, admin: &AdminConfig) -> Result<(), ConfigError> {
    let mut text = serde_json::to_vec_pretty(admin)
        .map_err(|e| ConfigError::Tls(format!("serializing admin config: {e}")))?;
    text.push(b'\n');
    write_private(path, &text, 0o600)
}
