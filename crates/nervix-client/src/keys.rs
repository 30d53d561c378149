//! An agent's long-term identity: an Ed25519 signing key (enrollment and login) and an X25519
//! key (end-to-end encrypted messages), stored together in one small JSON file.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use crypto_box::aead::OsRng;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::{self, CryptoError, Sealed};

/// Current key file format.
pub const KEY_FILE_VERSION: u32 = 1;

/// Anything bigger is not a key file; refusing early avoids reading an arbitrary file into memory.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file system refused.
    #[error("{}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// [`AgentKeys::save`] never replaces a key file.
    #[error("{}: already exists; refusing to overwrite a key file", path.display())]
    AlreadyExists {
        /// The key file.
        path: PathBuf,
    },
    #[error(
        "{}: permissions {mode:04o} let other users access the key; run `chmod 600` on it",
        path.display()
    )]
    /// Group or others may access the file.
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Not a key file this SDK wrote.
    #[error("{}: not a Nervix key file: {reason}", path.display())]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key file of another format version.
    #[error("{}: unsupported key file version {version} (this build reads version {KEY_FILE_VERSION})", path.display())]
    UnsupportedVersion {
        /// The key file.
        path: PathBuf,
        /// Its version.
        version: u32,
    },
}

/// The on-disk form. Its secret strings are wiped when it goes out of scope, whichever way
/// (save, load, or an early return on a parse error).
#[derive(Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    ed25519_secret: String,
    x25519_secret: String,
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        self.ed25519_secret.zeroize();
        self.x25519_secret.zeroize();
    }
}

/// An agent's secret keys. Not `Clone`, so the secrets exist once; share it behind an `Arc`.
/// `Debug` shows only the public halves.
pub struct AgentKeys {
    signing: SigningKey,
    encryption: crypto_box::SecretKey,
}

impl AgentKeys {
    /// Fresh keys from the operating system's CSPRNG.
    pub fn generate() -> Self {
        Self {
            signing: SigningKey::generate(&mut OsRng),
            encryption: crypto_box::SecretKey::generate(&mut OsRng),
        }
    }

    /// Rebuilds keys from their 32-byte secrets (e.g. fixed test keys).
    pub fn from_secret_bytes(ed25519_secret: &[u8; 32], x25519_secret: &[u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(ed25519_secret),
            encryption: crypto_box::SecretKey::from_bytes(*x25519_secret),
        }
    }

    /// Writes a new key file readable only by the owner. Fails with
    /// [`KeyError::AlreadyExists`] rather than replacing a key someone may still need.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), KeyError> {
        let path = path.as_ref();
        let contents = self.file_contents(path)?;
        let mut file = match create_private(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(KeyError::AlreadyExists { path: path.into() })
            }
            Err(source) => return Err(io_err(path, source)),
        };
        let written = file.write_all(&contents).and_then(|()| file.sync_all());
        if let Err(source) = written {
            // A truncated key file would be mistaken for a real one on the next run.
            drop(file);
            let _ = fs::remove_file(path);
            return Err(io_err(path, source));
        }
        Ok(())
    }

    /// Writes the key file, replacing any existing one atomically: readers see either the old
    /// or the new key, never a partial file, and a loosely-permissioned old file is replaced by
    /// a 0600 one.
    pub fn save_overwriting(&self, path: impl AsRef<Path>) -> Result<(), KeyError> {
        let path = path.as_ref();
        let file_name = path
            .file_name()
            .ok_or_else(|| malformed(path, "path has no file name"))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(file_name);
        tmp_name.push(format!(".tmp-{:016x}", rand::random::<u64>()));
        let tmp = path.with_file_name(tmp_name);

        self.save(&tmp)?;
        fs::rename(&tmp, path).map_err(|source| {
            let _ = fs::remove_file(&tmp);
            io_err(path, source)
        })
    }

    /// Reads a key file written by [`AgentKeys::save`]. On Unix, a file that other users can
    /// access is refused, as OpenSSH does for private keys.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let file = fs::File::open(path).map_err(|e| io_err(path, e))?;
        let meta = file.metadata().map_err(|e| io_err(path, e))?;
        if !meta.is_file() {
            return Err(malformed(path, "not a regular file"));
        }
        check_private(path, &meta)?;
        if meta.len() > MAX_KEY_FILE_BYTES {
            return Err(malformed(path, "file is too large"));
        }

        let mut raw = Zeroizing::new(Vec::new());
        file.take(MAX_KEY_FILE_BYTES)
            .read_to_end(&mut raw)
            .map_err(|e| io_err(path, e))?;
        let parsed: KeyFile = serde_json::from_slice(&raw)
            .map_err(|e| malformed(path, &format!("invalid JSON structure ({e})")))?;
        if parsed.version != KEY_FILE_VERSION {
            return Err(KeyError::UnsupportedVersion {
                path: path.into(),
                version: parsed.version,
            });
        }
        let ed = decode_secret(path, "ed25519_secret", &parsed.ed25519_secret)?;
        let x = decode_secret(path, "x25519_secret", &parsed.x25519_secret)?;
        Ok(Self::from_secret_bytes(&ed, &x))
    }

    /// The Ed25519 public key, as `public_key` in `POST /v1/enroll`.
    pub fn public_key_b64(&self) -> String {
        B64.encode(self.signing.verifying_key().as_bytes())
    }

    /// The X25519 public key, as `encryption_public_key` in `POST /v1/enroll`.
    pub fn encryption_public_key_b64(&self) -> String {
        B64.encode(self.encryption.public_key().as_bytes())
    }

    /// The Ed25519 public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// Secret half of the encryption key pair, for [`crypto::seal`] and [`crypto::open`].
    pub fn encryption_secret(&self) -> &crypto_box::SecretKey {
        &self.encryption
    }

    /// Signs the UTF-8 bytes of a server challenge exactly as received; returns the base64
    /// signature for `/respond` or `/v1/auth/token`.
    pub fn sign_challenge(&self, challenge: &str) -> String {
        B64.encode(self.signing.sign(challenge.as_bytes()).to_bytes())
    }

    /// Encrypts a message for the agent whose `encryption_public_key` is given.
    pub fn seal_for(
        &self,
        recipient_pub_b64: &str,
        plaintext: &[u8],
    ) -> Result<Sealed, CryptoError> {
        crypto::seal(&self.encryption, recipient_pub_b64, plaintext)
    }

    /// Decrypts a message from the agent whose `encryption_public_key` is given.
    pub fn open_from(
        &self,
        sender_pub_b64: &str,
        payload_b64: &str,
        nonce_b64: &str,
    ) -> Result<Vec<u8>, CryptoError> {
        crypto::open(&self.encryption, sender_pub_b64, payload_b64, nonce_b64)
    }

    fn file_contents(&self, path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let file = KeyFile {
            version: KEY_FILE_VERSION,
            ed25519_secret: B64.encode(self.signing.as_bytes()),
            x25519_secret: B64.encode(Zeroizing::new(self.encryption.to_bytes())),
        };
        let mut out = serde_json::to_vec_pretty(&file)
            .map(Zeroizing::new)
            .map_err(|e| malformed(path, &format!("cannot serialize key file: {e}")))?;
        out.push(b'\n');
        Ok(out)
    }
}

impl Drop for AgentKeys {
    fn drop(&mut self) {
        // `SigningKey` wipes itself, but crypto_box 0.9's `SecretKey` only wipes its scalar and
        // leaves the raw secret bytes behind. Overwriting the value in place replaces those bytes;
        // `black_box` keeps the store from being optimised away as dead.
        self.encryption = crypto_box::SecretKey::from_bytes([0; 32]);
        std::hint::black_box(&self.encryption);
    }
}

impl fmt::Debug for AgentKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentKeys")
            .field("public_key", &self.public_key_b64())
            .field("encryption_public_key", &self.encryption_public_key_b64())
            .finish_non_exhaustive()
    }
}

fn decode_secret(path: &Path, field: &str, b64: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let bytes = Zeroizing::new(
        B64.decode(b64)
            .map_err(|_| malformed(path, &format!("{field} is not valid base64")))?,
    );
    let mut out = Zeroizing::new([0u8; 32]);
    if bytes.len() != out.len() {
        return Err(malformed(
            path,
            &format!("{field} must decode to 32 bytes, not {}", bytes.len()),
        ));
    }
    out.copy_from_slice(&bytes);
    Ok(out)
}

#[cfg(unix)]
fn create_private(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // The mode is applied at creation, so the secret is never readable by others, not even
    // briefly; `create_new` also refuses to follow a planted symlink.
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &fs::Metadata) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::InsecurePermissions {
            path: path.into(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &fs::Metadata) -> Result<(), KeyError> {
    Ok(())
}

fn io_err(path: &Path, source: io::Error) -> KeyError {
    KeyError::Io {
        path: path.into(),
        source,
    }
}

fn malformed(path: &Path, reason: &str) -> KeyError {
    KeyError::Malformed {
        path: path.into(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signature;

    #[test]
    fn save_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.key");
        let keys = AgentKeys::generate();
        keys.save(&path).unwrap();

        let loaded = AgentKeys::load(&path).unwrap();
        assert_eq!(loaded.public_key_b64(), keys.public_key_b64());
        assert_eq!(
            loaded.encryption_public_key_b64(),
            keys.encryption_public_key_b64()
        );
        assert_eq!(loaded.signing.as_bytes(), keys.signing.as_bytes());

        let text = fs::read_to_string(&path).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["version"], 1);
        assert_eq!(
            B64.decode(value["ed25519_secret"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
        assert_eq!(
            B64.decode(value["x25519_secret"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
    }

    #[cfg(unix)]
    #[test]
    fn file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.key");
        AgentKeys::generate().save(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let replaced = dir.path().join("loose.key");
        fs::write(&replaced, "old").unwrap();
        fs::set_permissions(&replaced, fs::Permissions::from_mode(0o644)).unwrap();
        AgentKeys::generate().save_overwriting(&replaced).unwrap();
        assert_eq!(
            fs::metadata(&replaced).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[cfg(unix)]
    #[test]
    fn readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.key");
        AgentKeys::generate().save(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = AgentKeys::load(&path).unwrap_err();
        assert!(
            matches!(err, KeyError::InsecurePermissions { mode: 0o640, .. }),
            "{err}"
        );
    }

    #[test]
    fn refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.key");
        let first = AgentKeys::generate();
        first.save(&path).unwrap();
        let second = AgentKeys::generate();
        assert!(matches!(
            second.save(&path),
            Err(KeyError::AlreadyExists { .. })
        ));
        assert_eq!(
            AgentKeys::load(&path).unwrap().public_key_b64(),
            first.public_key_b64()
        );

        second.save_overwriting(&path).unwrap();
        assert_eq!(
            AgentKeys::load(&path).unwrap().public_key_b64(),
            second.public_key_b64()
        );
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn malformed_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, body: &str| {
            let path = dir.path().join(name);
            let mut f = create_private(&path).unwrap();
            f.write_all(body.as_bytes()).unwrap();
            path
        };
        let good = B64.encode([1u8; 32]);
        let cases = [
            ("empty", String::new()),
            ("garbage", "not json".to_owned()),
            ("missing", r#"{"version":1}"#.to_owned()),
            (
                "short",
                format!(
                    r#"{{"version":1,"ed25519_secret":"{}","x25519_secret":"{good}"}}"#,
                    B64.encode([1u8; 31])
                ),
            ),
            (
                "base64",
                format!(r#"{{"version":1,"ed25519_secret":"@@@","x25519_secret":"{good}"}}"#),
            ),
        ];
        for (name, body) in cases {
            let err = AgentKeys::load(write(name, &body)).unwrap_err();
            assert!(matches!(err, KeyError::Malformed { .. }), "{name}: {err}");
        }
        let future = write(
            "future",
            &format!(r#"{{"version":2,"ed25519_secret":"{good}","x25519_secret":"{good}"}}"#),
        );
        assert!(matches!(
            AgentKeys::load(future),
            Err(KeyError::UnsupportedVersion { version: 2, .. })
        ));
        assert!(matches!(
            AgentKeys::load(dir.path().join("absent")),
            Err(KeyError::Io { .. })
        ));
    }

    #[test]
    fn malformed_error_does_not_echo_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.key");
        let secret = B64.encode([9u8; 32]);
        let mut f = create_private(&path).unwrap();
        // Wrong type for `version` makes serde describe the document; the secret must not leak.
        write!(
            f,
            r#"{{"version":"1","ed25519_secret":"{secret}","x25519_secret":"{secret}"}}"#
        )
        .unwrap();
        let err = AgentKeys::load(&path).unwrap_err().to_string();
        assert!(!err.contains(&secret), "{err}");
    }

    #[test]
    fn signature_verifies_strictly() {
        let keys = AgentKeys::generate();
        let challenge = "nervix-enroll-v1:7d3c1f1e-0000-4000-8000-000000000000:bm9uY2U";
        let sig_b64 = keys.sign_challenge(challenge);
        let sig_bytes: [u8; 64] = B64.decode(&sig_b64).unwrap().try_into().unwrap();
        let sig = Signature::from_bytes(&sig_bytes);

        let public: [u8; 32] = B64
            .decode(keys.public_key_b64())
            .unwrap()
            .try_into()
            .unwrap();
        let verifying = VerifyingKey::from_bytes(&public).unwrap();
        verifying.verify_strict(challenge.as_bytes(), &sig).unwrap();
        assert!(verifying.verify_strict(b"another challenge", &sig).is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let keys = AgentKeys::from_secret_bytes(&[3u8; 32], &[4u8; 32]);
        let shown = format!("{keys:?}");
        assert!(shown.contains(&keys.public_key_b64()));
        assert!(!shown.contains(&B64.encode([3u8; 32])));
        assert!(!shown.contains(&B64.encode([4u8; 32])));
        assert!(!shown.contains("[3, 3"));
        assert!(!shown.contains("[4, 4"));
    }

    #[test]
    fn keys_encrypt_to_each_other() {
        let alice = AgentKeys::generate();
        let bob = AgentKeys::generate();
        let sealed = alice
            .seal_for(&bob.encryption_public_key_b64(), b"hi")
            .unwrap();
        let opened = bob
            .open_from(
                &alice.encryption_public_key_b64(),
                &sealed.payload_b64,
                &sealed.nonce_b64,
            )
            .unwrap();
        assert_eq!(opened, b"hi");
    }
}
