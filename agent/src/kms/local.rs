//! The local provider: Ed25519 key versions as files, for a one-machine start with no external
//! service.
//!
//! Layout: `<key_dir>/<key_id>/v<N>.ed25519`, each file the 32-byte secret seed, mode 0600, in
//! a directory of mode 0700. The first open generates version 1; [`LocalSigner::rotate`] writes
//! the next version (temp file, fsync, rename, fsync of the directory) and keeps the old ones so
//! their checkpoints keep verifying. Files readable by group or others are refused.

use std::fs;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use ed25519_dalek::{Signer as _, SigningKey};
use knhk_core::checkpoint::{Alg, PublicKeyVersion, SignatureRecord};
use tokio::sync::RwLock;

use super::{KmsError, Signer};

/// Provider name in signature records.
pub const PROVIDER: &str = "local";
const SUFFIX: &str = ".ed25519";

/// Ed25519 signer over key files.
pub struct LocalSigner {
    dir: PathBuf,
    key_id: String,
    /// `(version, key)`, ascending.
    keys: RwLock<Vec<(u32, SigningKey)>>,
}

impl std::fmt::Debug for LocalSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSigner")
            .field("dir", &self.dir)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KmsError + '_ {
    move |source| KmsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn version_of(name: &str) -> Option<u32> {
    let digits = name.strip_prefix('v')?.strip_suffix(SUFFIX)?;
    if digits.is_empty() || digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

fn read_key(path: &Path) -> Result<SigningKey, KmsError> {
    let meta = fs::symlink_metadata(path).map_err(io_err(path))?;
    if !meta.file_type().is_file() {
        return Err(KmsError::CorruptKey {
            path: path.to_path_buf(),
            reason: "not a regular file",
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KmsError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let bytes = fs::read(path).map_err(io_err(path))?;
    let seed: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| KmsError::CorruptKey {
            path: path.to_path_buf(),
            reason: "expected a 32-byte Ed25519 seed",
        })?;
    Ok(SigningKey::from_bytes(&seed))
}

fn write_key(dir: &Path, version: u32) -> Result<SigningKey, KmsError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| KmsError::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    let key = SigningKey::from_bytes(&seed);
    crate::private_file::create(&dir.join(format!("v{version}{SUFFIX}")), &seed)
        .map_err(|(path, source)| KmsError::Io { path, source })?;
    Ok(key)
}

fn public(key_id: &str, version: u32, key: &SigningKey) -> PublicKeyVersion {
    PublicKeyVersion {
        provider: PROVIDER.to_owned(),
        key_id: key_id.to_owned(),
        version,
        alg: Alg::Ed25519,
        public_key: key.verifying_key().to_bytes().to_vec(),
        retired: false,
    }
}

impl LocalSigner {
    /// Open (or on first use create) the key `key_id` under `key_dir`.
    pub fn open(key_dir: &Path, key_id: &str) -> Result<Self, KmsError> {
        if !super::config::valid_key_id(key_id) {
            return Err(KmsError::InvalidConfig {
                setting: "kms.key_id",
                reason: format!("{key_id:?} is not a valid key id"),
            });
        }
        let dir = key_dir.join(key_id);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(&dir))?;
        let mut keys = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name();
            if let Some(v) = name.to_str().and_then(version_of) {
                keys.push((v, read_key(&entry.path())?));
            }
        }
        keys.sort_by_key(|(v, _)| *v);
        if keys.is_empty() {
            keys.push((1, write_key(&dir, 1)?));
            tracing::info!(key_dir = %dir.display(), "generated local signing key version 1");
        }
        Ok(LocalSigner {
            dir,
            key_id: key_id.to_owned(),
            keys: RwLock::new(keys),
        })
    }

    /// Directory holding this key's version files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Read in the versions another process wrote since (`knhk-agent keys rotate` while the
    /// agent runs), in version order, so the next seal signs with the newest and the log
    /// records the handover. A file that does not read yet (still being written) stops the
    /// scan there; the next call tries again.
    async fn adopt_new_versions(&self) {
        let newest = self.keys.read().await.last().map_or(0, |(v, _)| *v);
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut newer: Vec<(u32, std::path::PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let v = e.file_name().to_str().and_then(version_of)?;
                (v > newest).then(|| (v, e.path()))
            })
            .collect();
        if newer.is_empty() {
            return;
        }
        newer.sort_by_key(|(v, _)| *v);
        let mut keys = self.keys.write().await;
        for (version, path) in newer {
            if keys.last().is_some_and(|(v, _)| *v >= version) {
                continue;
            }
            match read_key(&path) {
                Ok(key) => {
                    tracing::info!(key_id = %self.key_id, version, "adopted a local key version created outside the agent");
                    keys.push((version, key));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a new local key version does not read yet; trying again at the next call");
                    break;
                }
            }
        }
    }

    fn record(&self, version: u32, key: &SigningKey, msg: &[u8]) -> SignatureRecord {
        SignatureRecord {
            provider: PROVIDER.to_owned(),
            key_id: self.key_id.clone(),
            key_version: version,
            alg: Alg::Ed25519,
            sig: key.sign(msg).to_bytes().to_vec(),
        }
    }
}

#[async_trait]
impl Signer for LocalSigner {
    fn provider(&self) -> &str {
        PROVIDER
    }

    fn key_id(&self) -> &str {
        &self.key_id
    }

    async fn sign(&self, msg: &[u8]) -> Result<SignatureRecord, KmsError> {
        self.adopt_new_versions().await;
        let keys = self.keys.read().await;
        let (version, key) = keys.last().ok_or(KmsError::UnknownVersion {
            key_id: self.key_id.clone(),
            version: 0,
        })?;
        Ok(self.record(*version, key, msg))
    }

    async fn sign_with_version(
        &self,
        msg: &[u8],
        version: u32,
    ) -> Result<SignatureRecord, KmsError> {
        let keys = self.keys.read().await;
        let (_, key) =
            keys.iter()
                .find(|(v, _)| *v == version)
                .ok_or(KmsError::UnknownVersion {
                    key_id: self.key_id.clone(),
                    version,
                })?;
        Ok(self.record(version, key, msg))
    }

    async fn public_keys(&self) -> Result<Vec<PublicKeyVersion>, KmsError> {
        self.adopt_new_versions().await;
        let keys = self.keys.read().await;
        Ok(keys
            .iter()
            .map(|(v, k)| public(&self.key_id, *v, k))
            .collect())
    }

    async fn rotate(&self) -> Result<PublicKeyVersion, KmsError> {
        self.adopt_new_versions().await;
        let mut keys = self.keys.write().await;
        let next = keys.last().map_or(1, |(v, _)| v.saturating_add(1));
        let key = write_key(&self.dir, next)?;
        let pk = public(&self.key_id, next, &key);
        keys.push((next, key));
        tracing::info!(key_id = %self.key_id, version = next, "rotated local signing key");
        Ok(pk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knhk_core::checkpoint::verify_signature;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// First open generates version 1 as a 0600 file in a 0700 directory, and it signs.
    #[tokio::test]
    async fn first_open_generates_a_private_key() {
        let tmp = tempfile::tempdir().unwrap();
        let s = LocalSigner::open(tmp.path(), "ckpt").unwrap();
        let file = tmp.path().join("ckpt/v1.ed25519");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&tmp.path().join("ckpt")), 0o700);
        assert_eq!(fs::read(&file).unwrap().len(), 32);
        let sig = s.sign(b"hello").await.unwrap();
        assert_eq!(sig.key_version, 1);
        let keys = s.public_keys().await.unwrap();
        verify_signature(b"hello", &sig, &keys).unwrap();
    }

    /// Reopening loads the same key; rotation adds a 0600 version and old signatures still verify.
    #[tokio::test]
    async fn rotation_keeps_old_versions_verifiable() {
        let tmp = tempfile::tempdir().unwrap();
        let s = LocalSigner::open(tmp.path(), "ckpt").unwrap();
        let old = s.sign(b"m").await.unwrap();
        let pk2 = s.rotate().await.unwrap();
        assert_eq!(pk2.version, 2);
        assert_eq!(mode(&tmp.path().join("ckpt/v2.ed25519")), 0o600);
        let new = s.sign(b"m").await.unwrap();
        assert_eq!(new.key_version, 2);
        assert_ne!(old.sig, new.sig);
        let vouched = s.sign_with_version(b"m", 1).await.unwrap();
        assert_eq!(vouched.key_version, 1);
        drop(s);
        let reopened = LocalSigner::open(tmp.path(), "ckpt").unwrap();
        let keys = reopened.public_keys().await.unwrap();
        assert_eq!(keys.iter().map(|k| k.version).collect::<Vec<_>>(), [1, 2]);
        for sig in [&old, &new, &vouched] {
            verify_signature(b"m", sig, &keys).unwrap();
        }
        assert!(matches!(
            reopened.sign_with_version(b"m", 9).await,
            Err(KmsError::UnknownVersion { version: 9, .. })
        ));
    }

    /// A key file readable by others is refused at open, naming the file and its mode.
    /// A version another process adds (the CLI's `keys rotate`) is signed with at the next
    /// call, and listed; a partly written file is skipped until it reads.
    #[tokio::test]
    async fn versions_written_by_another_process_are_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let running = LocalSigner::open(dir.path(), "k").unwrap();
        assert_eq!(running.sign(b"m").await.unwrap().key_version, 1);
        let cli = LocalSigner::open(dir.path(), "k").unwrap();
        assert_eq!(cli.rotate().await.unwrap().version, 2);
        assert_eq!(running.sign(b"m").await.unwrap().key_version, 2);
        let versions: Vec<u32> = running
            .public_keys()
            .await
            .unwrap()
            .iter()
            .map(|k| k.version)
            .collect();
        assert_eq!(versions, [1, 2]);
        // Half a seed: not adopted, nothing fails; adopted once complete.
        let v3 = running.dir().join(format!("v3{SUFFIX}"));
        crate::private_file::create(&v3, &[7u8; 16]).unwrap();
        assert_eq!(running.sign(b"m").await.unwrap().key_version, 2);
        std::fs::write(&v3, [7u8; 32]).unwrap();
        assert_eq!(running.sign(b"m").await.unwrap().key_version, 3);
        // Its own rotation goes past what the other process made.
        assert_eq!(running.rotate().await.unwrap().version, 4);
    }

    #[test]
    fn world_readable_key_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        drop(LocalSigner::open(tmp.path(), "ckpt").unwrap());
        let file = tmp.path().join("ckpt/v1.ed25519");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        let err = LocalSigner::open(tmp.path(), "ckpt").unwrap_err();
        assert!(
            matches!(err, KmsError::InsecurePermissions { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("v1.ed25519"));
    }

    /// A truncated key file is refused as corrupt rather than used.
    #[test]
    fn corrupt_key_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        drop(LocalSigner::open(tmp.path(), "ckpt").unwrap());
        let file = tmp.path().join("ckpt/v1.ed25519");
        fs::write(&file, [1u8; 31]).unwrap();
        assert!(matches!(
            LocalSigner::open(tmp.path(), "ckpt"),
            Err(KmsError::CorruptKey { .. })
        ));
    }

    /// Key ids that could escape the key directory are refused.
    #[test]
    fn path_like_key_ids_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["../x", "a/b", ".hidden", ""] {
            assert!(matches!(
                LocalSigner::open(tmp.path(), bad),
                Err(KmsError::InvalidConfig { .. })
            ));
        }
    }
}
