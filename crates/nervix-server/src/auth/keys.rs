//! The server's Ed25519 token-signing keys.
//!
//! Each key lives in its own file `<data>/keys/<kid>.json` (mode 0600, folder 0700). The newest
//! key signs; every key on disk verifies, so tokens signed before a rotation stay valid until
//! they expire, and `/.well-known/jwks.json` lists them all. `kid` is the RFC 7638 thumbprint.
//! Key material never reaches logs: `SigningKeyFile`'s Debug is redacted.
//!
//! A key file that group or others may read or write is refused, not repaired (as the SDK
//! refuses agent keys): whoever could read it may already hold a copy, so the operator must
//! learn of it (and rotate), and a writable file could have been swapped for a key of theirs.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};
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
}

#[derive(Serialize, Deserialize)]
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

impl KeyRing {
    pub fn keys_dir(data_dir: &Path) -> PathBuf {
        data_dir.join("keys")
    }

    /// Loads the key ring, creating the first key when the folder has none.
    pub fn load_or_create(data_dir: &Path) -> Result<KeyRing, KeyError> {
        match Self::load(data_dir) {
            Err(KeyError::Empty) => {
                Self::generate(data_dir)?;
                Self::load(data_dir)
            }
            other => other,
        }
    }

    pub fn load(data_dir: &Path) -> Result<KeyRing, KeyError> {
        let dir = Self::keys_dir(data_dir);
        let mut keys = HashMap::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(KeyError::Empty),
            Err(e) => return Err(io_err(&dir)(e)),
        };
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
            let file: KeyFile =
                serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
            let seed: [u8; 32] = STANDARD
                .decode(&file.seed)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| malformed("seed is not 32 bytes of base64".into()))?;
            let entry = Self::entry(&seed, file.created_at).map_err(malformed)?;
            if entry.kid != file.kid {
                return Err(malformed("kid does not match the key".into()));
            }
            keys.insert(entry.kid.clone(), entry);
        }
        let active = keys
            .values()
            .max_by_key(|k| (k.created_at, k.kid.clone()))
            .map(|k| k.kid.clone())
            .ok_or(KeyError::Empty)?;
        Ok(KeyRing { keys, active })
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

    /// Writes a new signing key, which becomes the active one. Returns its kid.
    pub fn generate(data_dir: &Path) -> Result<String, KeyError> {
        let dir = Self::keys_dir(data_dir);
        crate::private_fs::create_private_dir(&dir).map_err(io_err(&dir))?;
        #[cfg(unix)]
        {
            // A folder that existed already is tightened too.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_err(&dir))?;
        }
        let signing = SigningKey::generate(&mut rand::rngs::OsRng);
        let kid = thumbprint(&signing.verifying_key().to_bytes());
        let file = KeyFile {
            kid: kid.clone(),
            created_at: Utc::now(),
            seed: STANDARD.encode(signing.to_bytes()),
        };
        let path = dir.join(format!("{kid}.json"));
        let body = serde_json::to_vec_pretty(&file).map_err(|e| KeyError::Malformed {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&path).map_err(io_err(&path))?;
        f.write_all(&body).map_err(io_err(&path))?;
        f.sync_all().map_err(io_err(&path))?;
        Ok(kid)
    }

    /// Deletes keys that stopped signing more than `keep` ago: no unexpired token uses them.
    pub fn prune(data_dir: &Path, keep: chrono::Duration) -> Result<Vec<String>, KeyError> {
        let ring = Self::load(data_dir)?;
        let mut by_age: Vec<&SigningKeyEntry> = ring.keys.values().collect();
        by_age.sort_by_key(|k| k.created_at);
        let mut removed = Vec::new();
        // A key retired when its successor was created.
        for pair in by_age.windows(2) {
            if pair[1].created_at + keep < Utc::now() {
                let path = Self::keys_dir(data_dir).join(format!("{}.json", pair[0].kid));
                fs::remove_file(&path).map_err(io_err(&path))?;
                removed.push(pair[0].kid.clone());
            }
        }
        Ok(removed)
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

    #[test]
    fn create_load_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::load_or_create(dir.path()).unwrap();
        let first = ring.active().kid.clone();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = KeyRing::keys_dir(dir.path()).join(format!("{first}.json"));
            let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(
            KeyRing::load_or_create(dir.path()).unwrap().active().kid,
            first
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
        let second = KeyRing::generate(dir.path()).unwrap();
        let ring = KeyRing::load(dir.path()).unwrap();
        assert_eq!(ring.active().kid, second);
        assert!(ring.get(&first).is_some());
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 2);
        assert!(!format!("{ring:?}").contains("seed"));
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[cfg(unix)]
    #[test]
    fn key_files_other_users_may_access_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let kid = KeyRing::load_or_create(dir.path())
            .unwrap()
            .active()
            .kid
            .clone();
        let path = KeyRing::keys_dir(dir.path()).join(format!("{kid}.json"));
        for loose in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660, 0o700 | 0o001] {
            fs::set_permissions(&path, fs::Permissions::from_mode(loose)).unwrap();
            let err = KeyRing::load(dir.path()).unwrap_err();
            assert!(
                matches!(&err, KeyError::InsecurePermissions { path: p, mode } if *p == path && *mode == loose),
                "{loose:04o}: {err:?}"
            );
            let message = err.to_string();
            assert!(
                message.contains(&path.display().to_string()) && message.contains("chmod 600"),
                "{message}"
            );
            // Neither startup nor a rotation works around it with a fresh key.
            assert!(matches!(
                KeyRing::load_or_create(dir.path()),
                Err(KeyError::InsecurePermissions { .. })
            ));
            assert_eq!(
                mode(&path),
                loose,
                "the mode is left for the operator to fix"
            );
        }
        assert_eq!(
            fs::read_dir(KeyRing::keys_dir(dir.path())).unwrap().count(),
            1
        );
        for private in [0o600, 0o400] {
            fs::set_permissions(&path, fs::Permissions::from_mode(private)).unwrap();
            assert_eq!(KeyRing::load(dir.path()).unwrap().active().kid, kid);
        }
    }

    #[cfg(unix)]
    #[test]
    fn data_and_key_folders_are_created_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let parent = dir.path().join("srv");
        let data = parent.join("nervix-data");
        crate::private_fs::create_private_dir(&data).unwrap();
        assert_eq!(mode(&parent), 0o700);
        assert_eq!(mode(&data), 0o700);
        KeyRing::load_or_create(&data).unwrap();
        assert_eq!(mode(&KeyRing::keys_dir(&data)), 0o700);

        // A data folder the operator made keeps its mode; a keys folder is tightened.
        let shared = dir.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o750)).unwrap();
        crate::private_fs::create_private_dir(&shared).unwrap();
        assert_eq!(mode(&shared), 0o750);
        let keys = KeyRing::keys_dir(&shared);
        fs::create_dir(&keys).unwrap();
        fs::set_permissions(&keys, fs::Permissions::from_mode(0o755)).unwrap();
        KeyRing::load_or_create(&shared).unwrap();
        assert_eq!(mode(&keys), 0o700);
    }
}
