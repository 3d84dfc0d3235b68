//! [`ReceiptLog`]: the receipt log service — append, seal, rotate, prove, export.
//!
//! Sealing takes the current size and root, renders the checkpoint text and makes exactly one
//! KMS call to sign it; seals are serialised so checkpoints are recorded in tree-size order.
//! Rotation adds a key version, appends a [`KeyRotation`] entry carrying the new public key,
//! and seals a checkpoint over it signed by the *previous* version: whoever trusts the old key
//! can learn the new one from the log itself.

use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use knhk_core::checkpoint::{Checkpoint, PublicKeyVersion};
use knhk_core::merkle::leaf_hash;
use knhk_core::receipt::{decode_batch, KeyRotation, LogEntry};

use super::export::{ConsistencyStep, LogExport, ProofBundle, BUNDLE_FORMAT, EXPORT_FORMAT};
use super::{ReceiptStore, ReceiptsError, SignedCheckpoint};
use crate::kms::{KmsError, Signer};

/// Nanoseconds since the Unix epoch, from the system clock.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The receipt log with its signer.
pub struct ReceiptLog {
    store: Mutex<ReceiptStore>,
    signer: Arc<dyn Signer>,
    seal_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ReceiptLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptLog")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl ReceiptLog {
    /// Open the store at `path` for log `origin`, and record the signer's current keys.
    pub async fn open(
        path: &Path,
        origin: &str,
        signer: Arc<dyn Signer>,
    ) -> Result<Self, ReceiptsError> {
        let mut store = ReceiptStore::open(path, origin)?;
        store.record_public_keys(&signer.public_keys().await?)?;
        Ok(ReceiptLog {
            store: Mutex::new(store),
            signer,
            seal_lock: tokio::sync::Mutex::new(()),
        })
    }

    fn store(&self) -> Result<MutexGuard<'_, ReceiptStore>, ReceiptsError> {
        self.store.lock().map_err(|_| ReceiptsError::Poisoned)
    }

    /// Decode a `KNRB` batch and append it atomically. When this returns `Ok`, the batch is
    /// durable; on any error nothing was appended.
    pub fn append_batch(&self, body: &[u8]) -> Result<Range<u64>, ReceiptsError> {
        let entries: Vec<LogEntry> = decode_batch(body)?
            .into_iter()
            .map(LogEntry::Receipt)
            .collect();
        self.store()?.append(&entries)
    }

    /// Append log entries atomically.
    pub fn append_entries(&self, entries: &[LogEntry]) -> Result<Range<u64>, ReceiptsError> {
        self.store()?.append(entries)
    }

    /// Current number of leaves.
    pub fn size(&self) -> Result<u64, ReceiptsError> {
        Ok(self.store()?.size())
    }

    /// Up to `limit` leaves from `from`.
    pub fn entries(&self, from: u64, limit: u64) -> Result<Vec<(u64, Vec<u8>)>, ReceiptsError> {
        self.store()?.entries(from, limit)
    }

    /// The newest checkpoint.
    pub fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>, ReceiptsError> {
        self.store()?.latest_checkpoint()
    }

    /// Checkpoint text for the current tree, or `None` when the newest checkpoint already
    /// covers it.
    fn pending_text(&self, time_ns: u64, force: bool) -> Result<Option<String>, ReceiptsError> {
        let store = self.store()?;
        let size = store.size();
        if let Some(last) = store.latest_checkpoint()? {
            let last_size = Checkpoint::parse(&last.text)?.tree_size;
            if last_size == size && !force {
                return Ok(None);
            }
        }
        let cp = Checkpoint::new(store.origin(), size, store.root())?.with_timestamp(time_ns);
        Ok(Some(cp.to_text()?))
    }

    /// Seal the log: sign a checkpoint over everything appended so far (one KMS call). Returns
    /// `None` when nothing was appended since the last checkpoint.
    pub async fn seal(&self, time_ns: u64) -> Result<Option<SignedCheckpoint>, ReceiptsError> {
        let _serial = self.seal_lock.lock().await;
        // Seal the empty log once, so even an idle log has a signed head.
        let force = self.store()?.latest_checkpoint()?.is_none();
        let Some(text) = self.pending_text(time_ns, force)? else {
            return Ok(None);
        };
        let signature = self.signer.sign(text.as_bytes()).await?;
        let cp = SignedCheckpoint { text, signature };
        self.store()?.record_checkpoint(&cp)?;
        Ok(Some(cp))
    }

    /// Rotate the signing key: add a version, log the rotation, and seal a checkpoint over it
    /// signed by the previous version. Returns the new key and that checkpoint.
    pub async fn rotate_key(
        &self,
        time_ns: u64,
    ) -> Result<(PublicKeyVersion, SignedCheckpoint), ReceiptsError> {
        let _serial = self.seal_lock.lock().await;
        let before = self.signer.public_keys().await?;
        let previous = before
            .iter()
            .filter(|k| !k.retired)
            .map(|k| k.version)
            .max()
            .ok_or_else(|| KmsError::UnknownVersion {
                key_id: self.signer.key_id().to_owned(),
                version: 0,
            })?;
        let new = self.signer.rotate().await?;
        let entry = LogEntry::KeyRotation(KeyRotation {
            time_ns,
            provider: self.signer.provider().to_owned(),
            key_id: self.signer.key_id().to_owned(),
            alg: new.alg,
            previous_version: previous,
            new_version: new.version,
            public_key: new.public_key.clone(),
        });
        {
            let mut store = self.store()?;
            store.record_public_keys(std::slice::from_ref(&new))?;
            store.append(&[entry])?;
        }
        let text = self.pending_text(time_ns, true)?.ok_or_else(|| {
            ReceiptsError::Corrupt("no checkpoint text after a rotation entry".to_owned())
        })?;
        let signature = self
            .signer
            .sign_with_version(text.as_bytes(), previous)
            .await?;
        let cp = SignedCheckpoint { text, signature };
        let keys = self.signer.public_keys().await?;
        let mut store = self.store()?;
        store.record_checkpoint(&cp)?;
        store.record_public_keys(&keys)?;
        Ok((new, cp))
    }

    /// Proof bundle for leaf `index` against the newest checkpoint.
    pub fn proof_bundle(&self, index: u64) -> Result<ProofBundle, ReceiptsError> {
        let store = self.store()?;
        let checkpoint = store
            .latest_checkpoint()?
            .ok_or(ReceiptsError::NotSealed { index })?;
        let cp = Checkpoint::parse(&checkpoint.text)?;
        if index >= cp.tree_size {
            return Err(ReceiptsError::NotSealed { index });
        }
        let entry = store.entry(index)?;
        let inclusion_proof = store.inclusion_proof(index, cp.tree_size)?;
        let sig = &checkpoint.signature;
        let public_key = store
            .public_keys()?
            .into_iter()
            .find(|k| {
                k.provider == sig.provider && k.key_id == sig.key_id && k.version == sig.key_version
            })
            .ok_or_else(|| {
                ReceiptsError::Corrupt(format!(
                    "no stored public key for {} {} v{}",
                    sig.provider, sig.key_id, sig.key_version
                ))
            })?;
        Ok(ProofBundle {
            format: BUNDLE_FORMAT.to_owned(),
            leaf_index: index,
            leaf_hash: leaf_hash(&entry),
            entry,
            tree_size: cp.tree_size,
            root_hash: cp.root_hash,
            inclusion_proof,
            checkpoint,
            public_key,
        })
    }

    /// The whole log, for offline verification.
    pub fn export(&self) -> Result<LogExport, ReceiptsError> {
        let store = self.store()?;
        let entries = store
            .entries(0, store.size())?
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        let checkpoints = store.checkpoints()?;
        let mut sizes = Vec::with_capacity(checkpoints.len());
        for cp in &checkpoints {
            sizes.push(Checkpoint::parse(&cp.text)?.tree_size);
        }
        let mut consistency = Vec::with_capacity(sizes.len().saturating_sub(1));
        for pair in sizes.windows(2) {
            if let [from, to] = *pair {
                consistency.push(ConsistencyStep {
                    from,
                    to,
                    proof: store.consistency_proof(from, to)?,
                });
            }
        }
        Ok(LogExport {
            format: EXPORT_FORMAT.to_owned(),
            origin: store.origin().to_owned(),
            entries,
            checkpoints,
            consistency,
            public_keys: store.public_keys()?,
        })
    }
}
