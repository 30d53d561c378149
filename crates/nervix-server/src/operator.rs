//! Operator commands that work on the server's data folder and database directly
//! (`nervix admin ...`), for the same configuration as `nervix serve`.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::Utc;
use nervix_core::Role;
use nervix_store::{AuditEntry, NewAgent};
use rand::RngCore;
use serde_json::json;
use uuid::Uuid;

use crate::app::auth::ADMIN_HANDLE;
use crate::auth::keys::{self, KeyError, KeyRing};
use crate::config::Config;
use crate::private_fs::create_private_dir;
use crate::server::{ensure_data_dir, open_store, ServerError};

/// Issues an admin token (90 days) for the operator's admin identity.
pub async fn create_admin_token(config: &Config) -> Result<String, ServerError> {
    let store = open_store(config, 2).await?;
    let keys = match open_keys(config, store.as_ref()).await {
        Ok(keys) => keys,
        Err(e) => {
            store.close().await;
            return Err(e);
        }
    };
    let now = Utc::now();
    // The admin identity logs in only through this command, never by challenge: its public
    // key is random bytes whose private half nobody has.
    let mut unusable = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut unusable);
    let agent = NewAgent {
        id: Uuid::now_v7(),
        handle: ADMIN_HANDLE.into(),
        name: "Platform administrator".into(),
        public_key: STANDARD.encode(unusable),
        encryption_public_key: None,
        capabilities: Vec::new(),
        metadata: json!({}),
        max_concurrent_tasks: 1,
        role: Role::Admin,
        created_at: now,
    };
    let created = AuditEntry {
        at: now,
        actor_id: None,
        actor_handle: Some("operator".into()),
        action: "admin.bootstrap".into(),
        target: Some(agent.id.to_string()),
        client_ip: None,
        details: json!({}),
    };
    let admin = store.ensure_agent(&agent, &created).await?;
    if admin.role != Role::Admin {
        // Enrollment refuses this handle, so only a database edited by hand gets here.
        store.close().await;
        return Err(ServerError::Store(nervix_store::StoreError::Corrupt(
            format!("the handle {ADMIN_HANDLE:?} belongs to an agent without the admin role"),
        )));
    }
    let issued = crate::auth::issue(
        &keys,
        admin.id,
        &admin.handle,
        Role::Admin,
        None,
        now,
        config.token_ttl,
    )
    .map_err(|e| {
        ServerError::Keys(KeyError::Malformed {
            path: config.data_dir.clone(),
            reason: e.to_string(),
        })
    })?;
    let audit = AuditEntry {
        at: now,
        actor_id: Some(admin.id),
        actor_handle: Some(admin.handle.clone()),
        action: "token.issue".into(),
        target: Some(admin.id.to_string()),
        client_ip: None,
        details: json!({"jti": issued.record.jti, "via": "nervix admin create-token"}),
    };
    store.insert_token(&issued.record, &audit).await?;
    store.close().await;
    Ok(issued.token)
}

/// The signing keys as `serve` opens them (the same master key, import and sealing).
async fn open_keys(
    config: &Config,
    store: &dyn nervix_store::Store,
) -> Result<KeyRing, ServerError> {
    let master = config.master_key.load()?;
    Ok(keys::open(store, &config.data_dir, master.as_ref()).await?)
}

/// Creates a new active signing key in the database, which every running node takes up
/// within seconds; older keys keep verifying until their tokens expire, and keys retired
/// longer than the token lifetime are deleted. Returns the new kid and the deleted ones.
pub async fn rotate_signing_key(config: &Config) -> Result<(String, Vec<String>), ServerError> {
    let store = open_store(config, 2).await?;
    let rotated = async {
        open_keys(config, store.as_ref()).await?;
        let master = config.master_key.load()?;
        Ok(keys::rotate(store.as_ref(), master.as_ref(), config.token_ttl).await?)
    }
    .await;
    store.close().await;
    rotated
}

/// Recomputes the ledger from its entries and reports what does not add up.
pub async fn verify_ledger(config: &Config) -> Result<nervix_store::LedgerReport, ServerError> {
    let store = open_store(config, 2).await?;
    let report = store.verify_ledger().await;
    store.close().await;
    Ok(report?)
}

/// The database file inside a backup folder.
pub const BACKUP_DATABASE: &str = "nervix.db";

/// What `nervix admin backup` did.
#[derive(Debug)]
pub enum Backup {
    /// The embedded database and the signing-key files, copied into the folder.
    Copied { database: PathBuf, key_files: usize },
    /// PostgreSQL: the database is `pg_dump`'s to copy; how, in words (the key files, if any,
    /// were copied).
    Postgres { key_files: usize, how: String },
}

/// `nervix admin backup DEST`: an online, consistent copy of the embedded database and of the
/// signing keys into `DEST`, a new (or empty) folder created readable by this user only. The
/// database is copied first and the key files after it, so every key the copy's tokens were
/// signed with is in the folder (keys are only ever added before they sign). Runs beside a
/// serving `nervix serve`.
pub async fn backup(config: &Config, dest: &Path) -> Result<Backup, ServerError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ServerError::DataDir { path, source }
    };
    if dest.exists() && std::fs::read_dir(dest).map_err(io(dest))?.next().is_some() {
        return Err(ServerError::DataDir {
            path: dest.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the backup folder is not empty",
            ),
        });
    }
    create_private_dir(dest).map_err(io(dest))?;
    if config.database_url.starts_with("postgres") {
        let key_files = copy_key_files(&KeyRing::keys_dir(&config.data_dir), &dest.join("keys"))?;
        return Ok(Backup::Postgres {
            key_files,
            how: postgres_route(dest),
        });
    }
    let database = dest.join(BACKUP_DATABASE);
    nervix_store::SqliteStore::backup_into(&config.database_url, &database).await?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o600))
            .map_err(io(&database))?;
    }
    let key_files = copy_key_files(&KeyRing::keys_dir(&config.data_dir), &dest.join("keys"))?;
    sync_dir(dest)?;
    Ok(Backup::Copied {
        database,
        key_files,
    })
}

fn postgres_route(dest: &Path) -> String {
    let dump = dest.join("nervix.pgdump");
    format!(
        "On PostgreSQL the database is backed up by PostgreSQL's own tools, online and \
         consistent (one snapshot):\n  \
         pg_dump --format=custom --file {dump} \"$NERVIX_DATABASE_URL\"\n\
         Restore into an empty database, then start nervix on it (it migrates a dump from an \
         older version on start):\n  \
         pg_restore --no-owner --dbname \"$NERVIX_DATABASE_URL\" {dump}\n\
         Signing keys stored in the database are in the dump; the key files of the data \
         folder, if any, were copied to {keys} (copy them back into <data>/keys/ on every node).",
        dump = dump.display(),
        keys = dest.join("keys").display(),
    )
}

/// What `nervix admin restore` did.
#[derive(Debug)]
pub struct Restored {
    pub database: PathBuf,
    pub key_files: usize,
}

/// `nervix admin restore SRC`: puts a backup folder's database and key files into a fresh data
/// folder (no database file there yet, no key files) and migrates the database to this
/// version. Embedded default only: a PostgreSQL database is restored with `pg_restore`.
pub async fn restore(config: &Config, src: &Path) -> Result<Restored, ServerError> {
    let refuse = |path: &Path, why: &str| ServerError::DataDir {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_owned()),
    };
    if config.database_url.starts_with("postgres") {
        return Err(refuse(
            src,
            "restore a PostgreSQL database with pg_restore (see `nervix admin backup`), then \
             copy the backup's keys/ folder into the data folder",
        ));
    }
    let copy = src.join(BACKUP_DATABASE);
    if !copy.is_file() {
        return Err(refuse(&copy, "no database in the backup folder"));
    }
    let target = nervix_store::SqliteStore::file_of(&config.database_url)?
        .ok_or_else(|| refuse(src, "the database URL names no file"))?;
    let taken = ["", "-wal", "-shm"].iter().any(|suffix| {
        let mut p = target.clone().into_os_string();
        p.push(suffix);
        Path::new(&p).exists()
    });
    if taken {
        return Err(refuse(
            &target,
            "a database is already there: restore into a fresh data folder",
        ));
    }
    let keys = KeyRing::keys_dir(&config.data_dir);
    if keys.is_dir()
        && std::fs::read_dir(&keys)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(refuse(
            &keys,
            "signing keys are already there: restore into a fresh data folder",
        ));
    }
    ensure_data_dir(&config.data_dir)?;
    if let Some(parent) = target.parent() {
        create_private_dir(parent).map_err(|source| ServerError::DataDir {
            path: parent.to_owned(),
            source,
        })?;
    }
    // Copied under a temporary name and renamed, so a restore cut short never leaves a
    // half-written database where the server would open it.
    let partial = target.with_extension("restoring");
    copy_private(&copy, &partial)?;
    std::fs::rename(&partial, &target).map_err(|source| ServerError::DataDir {
        path: target.clone(),
        source,
    })?;
    let key_files = copy_key_files(&src.join("keys"), &keys)?;
    if let Some(parent) = target.parent() {
        sync_dir(parent)?;
    }
    // Opening migrates a backup taken by an older version, and proves the copy readable.
    let store = open_store(config, 2).await?;
    store.close().await;
    Ok(Restored {
        database: target,
        key_files,
    })
}

/// Copies every file of `from` (if it exists) into `to` (created 0700), each 0600 and synced.
fn copy_key_files(from: &Path, to: &Path) -> Result<usize, ServerError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ServerError::DataDir { path, source }
    };
    if !from.is_dir() {
        return Ok(0);
    }
    create_private_dir(to).map_err(io(to))?;
    let mut copied = 0;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        if entry.file_type().map_err(io(&entry.path()))?.is_file() {
            copy_private(&entry.path(), &to.join(entry.file_name()))?;
            copied += 1;
        }
    }
    sync_dir(to)?;
    Ok(copied)
}

/// Copies `from` to a new file `to` readable by this user only, synced to disk.
fn copy_private(from: &Path, to: &Path) -> Result<(), ServerError> {
    let err = |source| ServerError::DataDir {
        path: to.to_owned(),
        source,
    };
    let mut source = std::fs::File::open(from).map_err(|source| ServerError::DataDir {
        path: from.to_owned(),
        source,
    })?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(to).map_err(err)?;
    std::io::copy(&mut source, &mut file).map_err(err)?;
    file.sync_all().map_err(err)
}

/// Makes the names in `dir` (new files, renames) durable.
fn sync_dir(dir: &Path) -> Result<(), ServerError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| ServerError::DataDir {
            path: dir.to_owned(),
            source,
        })
}
