//! The server's Ed25519 token-signing keys.
//!
//! The keys live in the database (`Store::signing_keys`), so every node shares them: a token
//! issued by any node verifies on all, and a rotation made on one reaches the others by their
//! reload (`Keys::refresh`, every 2 s, and at once for a token naming a key this node has not
//! seen yet). The newest key signs; every stored key verifies, so tokens signed before a
//! rotation stay valid until they expire, and `/.well-known/jwks.json` lists them all. `kid`
//! is the RFC 7638 thumbprint. Key material never reaches logs: Debug output is redacted.
//!
//! At rest, a key's seed is sealed with AES-256-GCM under the operator's master key when one
//! is configured ([`MasterKey`]: a random 96-bit nonce per seal, the kid as associated data),
//! and nodes share it in that sealed form; without one it is stored in the clear and the
//! server says so at start. [`open`] refuses a master key that does not open every stored key
//! before it writes anything. Key files of older versions (`<data>/keys/<kid>.json`) are
//! imported into an empty database on first start and the folder renamed `keys.imported`.
//!
//! A key file that group or others may read or write is refused, not repaired (as the SDK
//! refuses agent keys): whoever could read it may already hold a copy, so the operator must
//! learn of it (and rotate), and a writable file could have been swapped for a key of theirs.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{DecodingKey, EncodingKey};
use nervix_store::{KeySeal, SigningKeyRecord, Store, StoreError};
use parking_lot::RwLock;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key folder {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key file {path} has permissions {mode:04o}, which let other users read or replace the \
         signing key; run `chmod 600 {path}` (and rotate the key if others may have copied it)"
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("key file {path} is malformed: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("no signing key")]
    Empty,
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("master key: {0}")]
    MasterKey(String),
    #[error(
        "the master key does not open signing key {kid}: this is not the master key the keys \
         were sealed with (NERVIX_MASTER_KEY / NERVIX_MASTER_KEY_FILE); nothing was changed"
    )]
    WrongMasterKey { kid: String },
    #[error(
        "signing key {kid} is sealed with a master key, and none is configured: set \
         NERVIX_MASTER_KEY or NERVIX_MASTER_KEY_FILE (the same as the other nodes use)"
    )]
    MasterKeyMissing { kid: String },
    #[error("stored signing key {kid} is malformed: {reason}")]
    Corrupt { kid: String, reason: String },
}

/// A key file of the versions before keys moved into the database.
#[derive(Deserialize)]
struct KeyFile {
    kid: String,
    created_at: DateTime<Utc>,
    /// The 32-byte Ed25519 seed, base64.
    seed: String,
}

pub struct SigningKeyEntry {
    pub kid: String,
    pub created_at: DateTime<Utc>,
    pub public: [u8; 32],
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
}

impl std::fmt::Debug for SigningKeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyEntry")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// Every key in the folder; the newest signs.
#[derive(Debug)]
pub struct KeyRing {
    keys: HashMap<String, SigningKeyEntry>,
    active: String,
}

/// RFC 7638 JWK thumbprint of an Ed25519 public key.
pub fn thumbprint(public: &[u8; 32]) -> String {
    let x = URL_SAFE_NO_PAD.encode(public);
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A key's Ed25519 seed and when it was made, in the clear: only ever in memory (its Debug
/// output is redacted).
#[derive(Debug)]
pub struct Seed {
    pub seed: SecretBox<[u8; 32]>,
    pub created_at: DateTime<Utc>,
}

impl Seed {
    fn generate() -> Seed {
        let signing = SigningKey::generate(&mut rand::rngs::OsRng);
        Seed {
            seed: SecretBox::new(Box::new(signing.to_bytes())),
            created_at: Utc::now(),
        }
    }

    pub fn kid(&self) -> String {
        let signing = SigningKey::from_bytes(self.seed.expose_secret());
        thumbprint(&signing.verifying_key().to_bytes())
    }
}

impl KeyRing {
    /// The folder older versions kept key files in.
    pub fn keys_dir(data_dir: &Path) -> PathBuf {
        data_dir.join("keys")
    }

    /// A ring of these keys; the newest signs.
    pub fn from_seeds(seeds: &[Seed]) -> Result<KeyRing, KeyError> {
        let mut keys = HashMap::new();
        for s in seeds {
            let entry = Self::entry(s.seed.expose_secret(), s.created_at).map_err(|reason| {
                KeyError::Corrupt {
                    kid: s.kid(),
                    reason,
                }
            })?;
            keys.insert(entry.kid.clone(), entry);
        }
        let active = keys
            .values()
            .max_by_key(|k| (k.created_at, k.kid.clone()))
            .map(|k| k.kid.clone())
            .ok_or(KeyError::Empty)?;
        Ok(KeyRing { keys, active })
    }

    /// A ring of one fresh key (benchmarks and unit tests; a server's keys come from [`open`]).
    pub fn generate() -> KeyRing {
        #[allow(clippy::expect_used)]
        Self::from_seeds(&[Seed::generate()]).expect("a fresh key builds a ring")
    }

    fn entry(seed: &[u8; 32], created_at: DateTime<Utc>) -> Result<SigningKeyEntry, String> {
        let signing = SigningKey::from_bytes(seed);
        let public = signing.verifying_key().to_bytes();
        let der = signing.to_pkcs8_der().map_err(|e| e.to_string())?;
        Ok(SigningKeyEntry {
            kid: thumbprint(&public),
            created_at,
            public,
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            decoding: DecodingKey::from_ed_der(&public),
        })
    }

    pub fn active(&self) -> &SigningKeyEntry {
        // `load` guarantees `active` names a key in the map.
        &self.keys[&self.active]
    }

    pub fn get(&self, kid: &str) -> Option<&SigningKeyEntry> {
        self.keys.get(kid)
    }

    pub fn kids(&self) -> Vec<String> {
        let mut k: Vec<String> = self.keys.keys().cloned().collect();
        k.sort();
        k
    }

    /// RFC 7517 JWK set of every verification key.
    pub fn jwks(&self) -> serde_json::Value {
        let mut keys: Vec<&SigningKeyEntry> = self.keys.values().collect();
        keys.sort_by_key(|k| std::cmp::Reverse(k.created_at));
        serde_json::json!({
            "keys": keys.iter().map(|k| serde_json::json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": "EdDSA",
                "use": "sig",
                "kid": k.kid,
                "x": URL_SAFE_NO_PAD.encode(k.public),
            })).collect::<Vec<_>>()
        })
    }
}

/// Reads the key files an older version kept in `<data>/keys/`; none when there is no folder.
fn read_key_files(data_dir: &Path) -> Result<Vec<Seed>, KeyError> {
    let dir = KeyRing::keys_dir(data_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&dir)(e)),
    };
    let mut seeds = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_err(&dir))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let mut f = fs::File::open(&path).map_err(io_err(&path))?;
        // The mode of the file that is read, not of whatever the path names later.
        check_private(&path, &f.metadata().map_err(io_err(&path))?)?;
        let mut text = String::new();
        f.read_to_string(&mut text).map_err(io_err(&path))?;
        let malformed = |reason: String| KeyError::Malformed {
            path: path.clone(),
            reason,
        };
        let file: KeyFile = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
        let seed: [u8; 32] = STANDARD
            .decode(&file.seed)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| malformed("seed is not 32 bytes of base64".into()))?;
        let seed = Seed {
            seed: SecretBox::new(Box::new(seed)),
            created_at: file.created_at,
        };
        if seed.kid() != file.kid {
            return Err(malformed("kid does not match the key".into()));
        }
        seeds.push(seed);
    }
    Ok(seeds)
}

/// Where the operator's master key comes from (`NERVIX_MASTER_KEY`, `NERVIX_MASTER_KEY_FILE`).
#[derive(Debug, Clone, Default)]
pub enum MasterKeySource {
    /// No master key: signing keys are stored in the clear.
    #[default]
    None,
    /// The key itself, 32 bytes in standard base64.
    Value(SecretString),
    /// A file holding the key in standard base64 (surrounding whitespace ignored).
    File(PathBuf),
}

impl MasterKeySource {
    /// The key, `None` when none is configured, or why it cannot be used.
    pub fn load(&self) -> Result<Option<MasterKey>, KeyError> {
        match self {
            MasterKeySource::None => Ok(None),
            MasterKeySource::Value(v) => MasterKey::from_base64(v.expose_secret())
                .map(Some)
                .map_err(|why| KeyError::MasterKey(format!("NERVIX_MASTER_KEY {why}"))),
            MasterKeySource::File(path) => {
                let mut f = fs::File::open(path).map_err(|e| {
                    KeyError::MasterKey(format!("cannot read {}: {e}", path.display()))
                })?;
                check_private(path, &f.metadata().map_err(io_err(path))?)?;
                let mut text = String::new();
                f.read_to_string(&mut text).map_err(io_err(path))?;
                MasterKey::from_base64(text.trim())
                    .map(Some)
                    .map_err(|why| KeyError::MasterKey(format!("{} {why}", path.display())))
            }
        }
    }
}

/// The operator's AES-256 key that seals signing-key seeds at rest.
pub struct MasterKey(Aes256Gcm);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// A sealed seed: nonce, then ciphertext and tag.
const NONCE_LEN: usize = 12;

impl MasterKey {
    pub fn from_base64(text: &str) -> Result<MasterKey, String> {
        let bytes =
            SecretBox::new(Box::new(STANDARD.decode(text).map_err(|_| {
                "is not base64 (make one with `openssl rand -base64 32`)"
            })?));
        if bytes.expose_secret().len() != 32 {
            return Err(format!(
                "must be 32 bytes of base64, not {} (make one with `openssl rand -base64 32`)",
                bytes.expose_secret().len()
            ));
        }
        Aes256Gcm::new_from_slice(bytes.expose_secret())
            .map(MasterKey)
            .map_err(|e| e.to_string())
    }

    /// Seals a seed under a fresh random nonce, bound to its kid.
    pub fn seal(&self, kid: &str, seed: &[u8; 32]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: seed,
            aad: kid.as_bytes(),
        };
        // Encrypting 32 bytes in memory cannot fail (the limit is 64 GiB).
        let sealed = self.0.encrypt(&nonce, payload).unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// The seed sealed under this key for `kid`; `None` when this key did not seal it (or the
    /// sealed bytes or the kid were altered).
    pub fn unseal(&self, kid: &str, sealed: &[u8]) -> Option<SecretBox<[u8; 32]>> {
        if sealed.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let payload = Payload {
            msg: body,
            aad: kid.as_bytes(),
        };
        let plain = SecretBox::new(Box::new(
            self.0.decrypt(Nonce::from_slice(nonce), payload).ok()?,
        ));
        let seed: [u8; 32] = plain.expose_secret().as_slice().try_into().ok()?;
        Some(SecretBox::new(Box::new(seed)))
    }
}

/// The stored form of `seed`: sealed under `master` when there is one.
fn stored(seed: &Seed, master: Option<&MasterKey>) -> SigningKeyRecord {
    let kid = seed.kid();
    let (seal, secret) = match master {
        Some(m) => (KeySeal::Aes256Gcm, m.seal(&kid, seed.seed.expose_secret())),
        None => (KeySeal::None, seed.seed.expose_secret().to_vec()),
    };
    SigningKeyRecord {
        kid,
        created_at: seed.created_at,
        seal,
        secret,
    }
}

/// The seed of a stored key, checked against its kid.
fn unsealed(record: &SigningKeyRecord, master: Option<&MasterKey>) -> Result<Seed, KeyError> {
    let kid = record.kid.clone();
    let seed = match (record.seal, master) {
        (KeySeal::None, _) => {
            let seed: [u8; 32] =
                record
                    .secret
                    .as_slice()
                    .try_into()
                    .map_err(|_| KeyError::Corrupt {
                        kid: kid.clone(),
                        reason: "the seed is not 32 bytes".into(),
                    })?;
            SecretBox::new(Box::new(seed))
        }
        (KeySeal::Aes256Gcm, None) => return Err(KeyError::MasterKeyMissing { kid }),
        (KeySeal::Aes256Gcm, Some(m)) => m
            .unseal(&kid, &record.secret)
            .ok_or(KeyError::WrongMasterKey { kid: kid.clone() })?,
    };
    let seed = Seed {
        seed,
        created_at: record.created_at,
    };
    if seed.kid() != kid {
        return Err(KeyError::Corrupt {
            kid,
            reason: "the kid does not match the key".into(),
        });
    }
    Ok(seed)
}

/// Every stored key, unsealed: fails, naming the key, on one this node cannot open.
async fn stored_seeds(
    store: &dyn Store,
    master: Option<&MasterKey>,
) -> Result<(Vec<SigningKeyRecord>, Vec<Seed>), KeyError> {
    let records = store.signing_keys().await?;
    let seeds = records
        .iter()
        .map(|r| unsealed(r, master))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((records, seeds))
}

/// Opens the signing keys for a node (or an admin command) at start: on an empty database, the
/// key files of an older version are imported (or a first key made); then every stored key is
/// opened, which refuses a wrong or missing master key before anything is written; then, with
/// a master key, keys still stored in the clear are sealed.
pub async fn open(
    store: &dyn Store,
    data_dir: &Path,
    master: Option<&MasterKey>,
) -> Result<KeyRing, KeyError> {
    if store.signing_keys().await?.is_empty() {
        let files = read_key_files(data_dir)?;
        let imported = !files.is_empty();
        let seeds = if imported {
            files
        } else {
            vec![Seed::generate()]
        };
        let records: Vec<SigningKeyRecord> = seeds.iter().map(|s| stored(s, master)).collect();
        // Several nodes starting together on an empty database may each store a first key
        // (PostgreSQL: both see no key): harmless, every node verifies with every stored key.
        let inserted = store.insert_signing_keys(&records, true).await?;
        if imported && inserted > 0 {
            let from = KeyRing::keys_dir(data_dir);
            let to = data_dir.join("keys.imported");
            tracing::warn!(
                keys = inserted,
                from = %from.display(),
                to = %to.display(),
                "signing key files imported into the database; the files are kept, renamed, in \
                 the clear: delete them once this version runs well"
            );
            fs::rename(&from, &to).map_err(io_err(&from))?;
        }
    }
    let (records, seeds) = stored_seeds(store, master).await?;
    let ring = KeyRing::from_seeds(&seeds)?;
    match master {
        Some(m) => {
            let clear: Vec<SigningKeyRecord> = seeds
                .iter()
                .zip(&records)
                .filter(|(_, r)| r.seal == KeySeal::None)
                .map(|(s, _)| stored(s, Some(m)))
                .collect();
            if !clear.is_empty() {
                let sealed = store.seal_signing_keys(&clear).await?;
                tracing::info!(keys = sealed, "sealed signing keys with the master key");
            }
        }
        None => tracing::warn!(
            "token-signing keys are stored unencrypted in the database: set NERVIX_MASTER_KEY \
             or NERVIX_MASTER_KEY_FILE to seal them (AES-256-GCM)"
        ),
    }
    Ok(ring)
}

/// Makes a new key the active one (sealed under `master` when there is one) and deletes keys
/// retired longer than `keep` ago. Returns the new kid and the deleted ones.
pub async fn rotate(
    store: &dyn Store,
    master: Option<&MasterKey>,
    keep: chrono::Duration,
) -> Result<(String, Vec<String>), KeyError> {
    let seed = Seed::generate();
    let record = stored(&seed, master);
    store
        .insert_signing_keys(std::slice::from_ref(&record), false)
        .await?;
    let pruned = store.prune_signing_keys(Utc::now() - keep).await?;
    Ok((record.kid, pruned))
}

/// How often a token naming a key this node does not know may send it to the database: a
/// stream of made-up kids costs one read a second.
const UNKNOWN_KID_REFRESH: Duration = Duration::from_secs(1);

/// This node's view of the shared keys, refreshed from the database.
pub struct Keys {
    ring: RwLock<Arc<KeyRing>>,
    master: Option<MasterKey>,
    /// When the last refresh for an unknown kid ran; held while one runs.
    unknown_refresh: tokio::sync::Mutex<Option<Instant>>,
}

impl Keys {
    pub fn new(ring: KeyRing, master: Option<MasterKey>) -> Keys {
        Keys {
            ring: RwLock::new(Arc::new(ring)),
            master,
            unknown_refresh: tokio::sync::Mutex::new(None),
        }
    }

    /// The current key ring.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.read().clone()
    }

    pub fn master(&self) -> Option<&MasterKey> {
        self.master.as_ref()
    }

    /// Reads the stored keys again and swaps the ring when they changed; true when it did.
    pub async fn refresh(&self, store: &dyn Store) -> Result<bool, KeyError> {
        let records = store.signing_keys().await?;
        let mut kids: Vec<String> = records.iter().map(|r| r.kid.clone()).collect();
        kids.sort();
        if kids == self.ring().kids() {
            return Ok(false);
        }
        let seeds = records
            .iter()
            .map(|r| unsealed(r, self.master.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let ring = KeyRing::from_seeds(&seeds)?;
        tracing::info!(active = %ring.active().kid, keys = kids.len(), "signing keys changed; reloaded");
        *self.ring.write() = Arc::new(ring);
        Ok(true)
    }

    /// For a token that names `kid`, which this node does not know: another node may have
    /// made it a moment ago, so read the keys again (at most once a second). True when the
    /// ring knows `kid` afterwards.
    pub async fn refresh_for(&self, store: &dyn Store, kid: &str) -> bool {
        let mut last = self.unknown_refresh.lock().await;
        // A refresh that ran while this one waited may have brought the key.
        if self.ring().get(kid).is_some() {
            return true;
        }
        if last.is_some_and(|at| at.elapsed() < UNKNOWN_KID_REFRESH) {
            return false;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.refresh(store).await {
            tracing::warn!(error = %e, "cannot reload the signing keys");
        }
        self.ring().get(kid).is_some()
    }

    /// Rotates (see [`rotate`]) and takes the new key into this node's ring at once.
    pub async fn rotate(
        &self,
        store: &dyn Store,
        keep: chrono::Duration,
    ) -> Result<(String, Vec<String>), KeyError> {
        let rotated = rotate(store, self.master.as_ref(), keep).await?;
        self.refresh(store).await?;
        Ok(rotated)
    }
}

/// Refuses a key file that group or others may read or write.
#[cfg(unix)]
fn check_private(path: &Path, meta: &fs::Metadata) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &fs::Metadata) -> Result<(), KeyError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> MasterKey {
        MasterKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap()
    }

    #[test]
    fn sealed_seeds_open_only_with_their_key_and_kid() {
        let seed = Seed::generate();
        let kid = seed.kid();
        let m = master();
        let a = m.seal(&kid, seed.seed.expose_secret());
        let b = m.seal(&kid, seed.seed.expose_secret());
        assert_eq!(a.len(), 60);
        assert_ne!(a, b, "a fresh nonce per seal");
        assert_ne!(&a[12..44], seed.seed.expose_secret().as_slice());
        let opened = m.unseal(&kid, &a).unwrap();
        assert_eq!(opened.expose_secret(), seed.seed.expose_secret());
        let other = MasterKey::from_base64(&STANDARD.encode([8u8; 32])).unwrap();
        assert!(other.unseal(&kid, &a).is_none(), "another master key");
        assert!(m.unseal("another-kid", &a).is_none(), "the kid is bound");
        let mut flipped = a.clone();
        flipped[20] ^= 1;
        assert!(m.unseal(&kid, &flipped).is_none(), "tampered");
        assert!(!format!("{m:?}").contains('7'));
    }

    #[test]
    fn master_keys_must_be_32_bytes_of_base64() {
        assert!(MasterKey::from_base64("not base64!").is_err());
        let short = MasterKey::from_base64(&STANDARD.encode([1u8; 16])).unwrap_err();
        assert!(
            short.contains("32 bytes") && short.contains("not 16"),
            "{short}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        fs::write(&path, format!("{}\n", STANDARD.encode([9u8; 32]))).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                MasterKeySource::File(path.clone()).load(),
                Err(KeyError::InsecurePermissions { .. })
            ));
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert!(MasterKeySource::File(path).load().unwrap().is_some());
        assert!(MasterKeySource::None.load().unwrap().is_none());
    }

    #[test]
    fn ring_signs_with_the_newest_and_hides_seeds() {
        let old = Seed::generate();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let new = Seed::generate();
        let ring = KeyRing::from_seeds(&[new, old]).unwrap();
        let kids = ring.kids();
        assert_eq!(kids.len(), 2);
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 2);
        assert_eq!(
            ring.jwks()["keys"][0]["kid"].as_str().unwrap(),
            ring.active().kid
        );
        assert!(!format!("{ring:?}").contains("seed"));
        assert!(matches!(KeyRing::from_seeds(&[]), Err(KeyError::Empty)));
    }

    /// A key file as versions before 0012 wrote it.
    fn write_key_file(data_dir: &Path, seed: &Seed, mode: u32) -> PathBuf {
        let dir = KeyRing::keys_dir(data_dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.json", seed.kid()));
        let body = serde_json::json!({
            "kid": seed.kid(),
            "created_at": seed.created_at,
            "seed": STANDARD.encode(seed.seed.expose_secret()),
        });
        fs::write(&path, body.to_string()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        }
        #[cfg(not(unix))]
        let _ = mode;
        path
    }

    #[test]
    fn old_key_files_are_read_with_their_kid_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_key_files(dir.path()).unwrap().is_empty());
        let seed = Seed::generate();
        write_key_file(dir.path(), &seed, 0o600);
        let read = read_key_files(dir.path()).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].kid(), seed.kid());
        assert_eq!(read[0].created_at, seed.created_at);
    }

    #[cfg(unix)]
    #[test]
    fn key_files_other_users_may_access_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for loose in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660, 0o700 | 0o001] {
            let path = write_key_file(dir.path(), &Seed::generate(), loose);
            let err = read_key_files(dir.path()).unwrap_err();
            assert!(
                matches!(&err, KeyError::InsecurePermissions { path: p, mode } if *p == path && *mode == loose),
                "{loose:04o}: {err:?}"
            );
            let message = err.to_string();
            assert!(
                message.contains(&path.display().to_string()) && message.contains("chmod 600"),
                "{message}"
            );
            fs::remove_file(path).unwrap();
        }
    }
}
