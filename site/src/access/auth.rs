//! API keys: the `--api-keys` file, checking a presented key, and making new keys.
//!
//! The file holds one key per line, `NAME SHA256HEX`, optionally followed by `admin` (that
//! key may also read `/metrics` and `/api/v1/nodes`). Only hashes are stored, so the file
//! can be read by an operator or a config system without handing out working keys. Keys are
//! high-entropy random strings ([`generate_key`]), so one unsalted SHA-256 is enough: there
//! is nothing to brute-force from a hash. A presented key is hashed and compared against
//! every entry in constant time; neither keys nor hashes are ever logged.
//!
//! The file is re-read when it changes ([`KeyFile::watch`] polls it), so keys can be added
//! or revoked without a restart. A file that becomes unreadable or malformed keeps the last
//! good set in force and logs why, rather than locking every client out.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use parking_lot::RwLock;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

/// How often the key file is checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// Prefix of generated keys, so a leaked one is recognisable in logs or code scanners.
pub const KEY_PREFIX: &str = "glk_";

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("reading {path}: {source}")]
    /// The key file could not be read.
    Read {
        /// The key file.
        path: String,
        /// What the file system said.
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    /// The key file could not be written (`glimpse keys new`).
    Write {
        /// The key file.
        path: String,
        /// What the file system said.
        source: std::io::Error,
    },
    #[error("{path} line {line}: {why}")]
    /// A line is not `NAME SHA256HEX [admin]`.
    Syntax {
        /// The key file.
        path: String,
        /// The line, counted from 1.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
    #[error("{path} has no keys: every request would be refused")]
    /// The file holds no key at all.
    Empty {
        /// The key file.
        path: String,
    },
    #[error("invalid key name {0:?}: use 1 to 64 letters, digits, '.', '_' or '-'")]
    /// A key name with characters other than letters, digits, `.`, `_` or `-`, or too long.
    BadName(String),
    #[error("{path} already has a key named {name:?}")]
    /// Two keys share a name.
    Duplicate {
        /// The key file.
        path: String,
        /// The name used twice.
        name: String,
    },
    #[error("the system random number generator failed")]
    /// No randomness for a new key.
    Random,
}

/// Who a valid key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHolder {
    /// The key's name in the file: what limits and job ownership are keyed on.
    pub name: Arc<str>,
    /// Whether the key may read operator data (`/metrics`, `/api/v1/nodes`).
    pub admin: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    holder: KeyHolder,
    hash: [u8; 32],
}

/// A parsed key file.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    entries: Vec<Entry>,
}

impl ApiKeys {
    /// Parse the text of a key file. `path` only names the file in errors.
    pub fn parse(text: &str, path: &str) -> Result<ApiKeys, KeyFileError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let syntax = |why: String| KeyFileError::Syntax {
                path: path.to_string(),
                line: i + 1,
                why,
            };
            let mut fields = line.split_whitespace();
            let (Some(name), Some(hex)) = (fields.next(), fields.next()) else {
                return Err(syntax("expected `NAME SHA256HEX [admin]`".into()));
            };
            check_name(name).map_err(|e| syntax(e.to_string()))?;
            let hash = parse_hex32(hex)
                .ok_or_else(|| syntax("the hash must be 64 hexadecimal digits".into()))?;
            let admin = match fields.next() {
                None => false,
                Some("admin") => true,
                Some(other) => return Err(syntax(format!("unknown role {other:?}"))),
            };
            if fields.next().is_some() {
                return Err(syntax("too many fields".into()));
            }
            if entries.iter().any(|e| &*e.holder.name == name) {
                return Err(syntax(format!("duplicate key name {name:?}")));
            }
            entries.push(Entry {
                holder: KeyHolder {
                    name: Arc::from(name),
                    admin,
                },
                hash,
            });
        }
        if entries.is_empty() {
            return Err(KeyFileError::Empty {
                path: path.to_string(),
            });
        }
        Ok(ApiKeys { entries })
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The holder of `presented`, if it is one of the keys. Every entry is compared, in
    /// constant time, whatever matches.
    pub fn verify(&self, presented: &str) -> Option<KeyHolder> {
        let digest = sha256(presented.as_bytes());
        let mut found = None;
        for e in &self.entries {
            let same: bool = e.hash.ct_eq(&digest).into();
            if same && found.is_none() {
                found = Some(e.holder.clone());
            }
        }
        found
    }
}

/// The key file in force, re-read when it changes.
#[derive(Debug)]
pub struct KeyFile {
    path: PathBuf,
    keys: RwLock<Arc<ApiKeys>>,
    seen: RwLock<Option<Vec<u8>>>,
}

impl KeyFile {
    /// Read and parse `path`; an error here stops the server from starting.
    pub fn load(path: &Path) -> Result<KeyFile, KeyFileError> {
        let bytes = read(path)?;
        let keys = ApiKeys::parse(
            &String::from_utf8_lossy(&bytes),
            &path.display().to_string(),
        )?;
        Ok(KeyFile {
            path: path.to_path_buf(),
            keys: RwLock::new(Arc::new(keys)),
            seen: RwLock::new(Some(bytes)),
        })
    }

    /// The keys in force now.
    pub fn current(&self) -> Arc<ApiKeys> {
        self.keys.read().clone()
    }

    /// Re-read the file if its contents changed. Returns `Ok(true)` when a new set of keys
    /// took effect; on an error the previous keys stay in force.
    pub fn reload(&self) -> Result<bool, KeyFileError> {
        let bytes = read(&self.path)?;
        if self.seen.read().as_deref() == Some(&bytes[..]) {
            return Ok(false);
        }
        let parsed = ApiKeys::parse(
            &String::from_utf8_lossy(&bytes),
            &self.path.display().to_string(),
        );
        // Remember the contents either way, so a bad file is reported once, not every poll.
        *self.seen.write() = Some(bytes);
        let keys = parsed?;
        *self.keys.write() = Arc::new(keys);
        Ok(true)
    }

    /// Poll the file every [`RELOAD_INTERVAL`] until `stop` completes. Polling (rather than
    /// inotify) also follows the atomic renames editors and Kubernetes Secret volumes use.
    pub async fn watch(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(RELOAD_INTERVAL) => {}
            }
            let this = self.clone();
            let result = tokio::task::spawn_blocking(move || this.reload()).await;
            match result {
                Ok(Ok(true)) => tracing::info!(
                    keys = self.current().len(),
                    file = %self.path.display(),
                    "API keys reloaded"
                ),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::error!("API keys not reloaded, the previous ones stay in force: {e}")
                }
                Err(e) => tracing::error!("API key reload task failed: {e}"),
            }
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    std::fs::read(path).map_err(|source| KeyFileError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn check_name(name: &str) -> Result<(), KeyFileError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(KeyFileError::BadName(name.to_string()))
    }
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Lower-case hex SHA-256 of a key, as the key file stores it.
pub fn key_hash_hex(key: &str) -> String {
    sha256(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh key: [`KEY_PREFIX`] and 32 random bytes, base64url.
pub fn generate_key() -> Result<String, KeyFileError> {
    let mut raw = [0u8; 32];
    SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| KeyFileError::Random)?;
    Ok(format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    ))
}

/// `glimpse keys new`: make a key, append `NAME HASH [admin]` to `path` (created with mode
/// 0600 when missing), and return the key, which exists nowhere else afterwards.
pub fn add_new_key(path: &Path, name: &str, admin: bool) -> Result<String, KeyFileError> {
    use std::io::Write;
    check_name(name)?;
    let shown = path.display().to_string();
    let existing = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(KeyFileError::Read {
                path: shown,
                source,
            });
        }
    };
    if !existing.trim().is_empty() {
        let keys = ApiKeys::parse(&existing, &shown)?;
        if keys.entries.iter().any(|e| &*e.holder.name == name) {
            return Err(KeyFileError::Duplicate {
                path: shown,
                name: name.to_string(),
            });
        }
    }
    let key = generate_key()?;
    let mut line = String::new();
    if !existing.is_empty() && !existing.ends_with('\n') {
        line.push('\n');
    }
    line.push_str(&format!("{name} {}", key_hash_hex(&key)));
    if admin {
        line.push_str(" admin");
    }
    line.push('\n');
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let write = |source| KeyFileError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut file = options.open(path).map_err(write)?;
    file.write_all(line.as_bytes()).map_err(write)?;
    file.sync_all().map_err(write)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_verify_against_their_hashes_only() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 43);
        assert_ne!(a, b);
        let text = format!(
            "# team keys\nalice {} admin\n\nbob {}  # the batch job\n",
            key_hash_hex(&a),
            key_hash_hex(&b)
        );
        let keys = ApiKeys::parse(&text, "keys").unwrap();
        assert_eq!(keys.len(), 2);
        let alice = keys.verify(&a).unwrap();
        assert_eq!((&*alice.name, alice.admin), ("alice", true));
        let bob = keys.verify(&b).unwrap();
        assert_eq!((&*bob.name, bob.admin), ("bob", false));
        assert!(keys.verify("").is_none());
        assert!(
            keys.verify(&key_hash_hex(&a)).is_none(),
            "the hash is not a key"
        );
        assert!(keys.verify(&format!("{a} ")).is_none());
    }

    #[test]
    fn malformed_files_name_the_line() {
        let h = key_hash_hex("x");
        for (text, needle) in [
            ("alice".to_string(), "line 1"),
            (format!("alice {h}\nalice {h}"), "duplicate"),
            ("alice abc".to_string(), "64 hexadecimal"),
            (format!("al ice {h}"), "hexadecimal"),
            (format!("alice {h} root"), "unknown role"),
            (format!("a/b {h}"), "invalid key name"),
            ("# nothing\n".to_string(), "no keys"),
        ] {
            let err = ApiKeys::parse(&text, "k.txt").unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn new_keys_are_appended_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let k1 = add_new_key(&path, "ci", false).unwrap();
        let file = KeyFile::load(&path).unwrap();
        assert!(file.current().verify(&k1).is_some());
        assert!(matches!(
            add_new_key(&path, "ci", true),
            Err(KeyFileError::Duplicate { .. })
        ));
        let k2 = add_new_key(&path, "ops", true).unwrap();
        assert!(file.current().verify(&k2).is_none(), "not yet reloaded");
        assert!(file.reload().unwrap());
        assert!(file.current().verify(&k2).is_some_and(|h| h.admin));
        assert!(!file.reload().unwrap(), "unchanged file: nothing to do");
        // A broken edit keeps the previous keys.
        std::fs::write(&path, "garbage line\n").unwrap();
        assert!(file.reload().is_err());
        assert!(file.current().verify(&k1).is_some());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key file is private");
        }
    }
}
