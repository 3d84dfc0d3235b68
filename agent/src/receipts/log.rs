//! [`ReceiptLog`]: the receipt log service — append, seal, rotate, prove, export.
//!
//! Sealing takes the current size and root, renders the checkpoint text and makes exactly one
//! KMS call to sign it; seals are serialised so checkpoints are recorded in tree-size order.
//! Rotation adds a key version, appends a [`KeyRotation`] entry carrying the new public key,
//! and seals a checkpoint over it signed by the *previous* version: whoever trusts the old key
//! can learn the new one from the log itself.

use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use knhk_core::checkpoint::{Checkpoint, PublicKeyVersion};
use knhk_core::merkle::{leaf_hash, Hash};
use knhk_core::receipt::{
    decode_origin_batch, Batch, BatchOrigin, KeyRotation, LogEntry, Receipt, ENTRY_KIND_RECEIPT,
};

use super::export::{LogExport, OriginProof, ProofBundle, BUNDLE_FORMAT};
use super::ingest::Ingest;
use super::{ReceiptStore, ReceiptsError, SignedCheckpoint};
use crate::kms::{KmsError, Signer};
use crate::telemetry::Metrics;
use tracing::Instrument as _;

/// Called with the leaf index of the first receipt and the receipts of every batch appended
/// (after it is durable): how the promotion gates see traffic.
pub type ReceiptObserver = Arc<dyn Fn(u64, &[Receipt]) + Send + Sync>;

/// Called with the leaf indexes of every prune (after it is durable).
pub type PruneObserver = Arc<dyn Fn(&[u64]) + Send + Sync>;

/// The receipt log with its signer.
pub struct ReceiptLog {
    store: Mutex<ReceiptStore>,
    signer: Arc<dyn Signer>,
    seal_lock: tokio::sync::Mutex<()>,
    observer: OnceLock<ReceiptObserver>,
    prune_observer: OnceLock<PruneObserver>,
    ingest: OnceLock<Ingest>,
    metrics: OnceLock<Arc<Metrics>>,
    sealed: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for ReceiptLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptLog")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl ReceiptLog {
    /// Open the store at `path` for log `origin`, and record the signer's current keys: all of
    /// them for a key this log has not seen, otherwise the versions up to the newest one it
    /// knows (a newer version, rotated while the agent was down, is adopted at the next seal
    /// with a logged handover; see [`ReceiptLog::seal`]).
    pub async fn open(
        path: &Path,
        origin: &str,
        signer: Arc<dyn Signer>,
    ) -> Result<Self, ReceiptsError> {
        let mut store = ReceiptStore::open(path, origin)?;
        let mut keys = signer.public_keys().await?;
        let newest_known = store
            .public_keys()?
            .iter()
            .filter(|k| k.provider == signer.provider() && k.key_id == signer.key_id())
            .map(|k| k.version)
            .max();
        if let Some(newest) = newest_known {
            keys.retain(|k| k.version <= newest);
        }
        store.record_public_keys(&keys)?;
        Ok(ReceiptLog {
            store: Mutex::new(store),
            signer,
            seal_lock: tokio::sync::Mutex::new(()),
            observer: OnceLock::new(),
            prune_observer: OnceLock::new(),
            ingest: OnceLock::new(),
            metrics: OnceLock::new(),
            sealed: tokio::sync::watch::Sender::new(0),
        })
    }

    fn store(&self) -> Result<MutexGuard<'_, ReceiptStore>, ReceiptsError> {
        self.store.lock().map_err(|_| ReceiptsError::Poisoned)
    }

    /// [`ReceiptLog::append_batch_from`] with no known sender address.
    pub fn append_batch(&self, body: &[u8]) -> Result<Range<u64>, ReceiptsError> {
        self.append_batch_from(body, "")
    }

    /// Decode a `KNRB` batch and append it atomically; the range of its receipts. A batch
    /// that names its pod is preceded by a batch origin leaf (at `range.start - 1`) recording
    /// that identity and `peer`, the address it came from. When this returns `Ok`, the batch
    /// is durable; on any error nothing was appended.
    pub fn append_batch_from(&self, body: &[u8], peer: &str) -> Result<Range<u64>, ReceiptsError> {
        let span = tracing::info_span!(
            "knhk.receipts.ingest",
            "knhk.receipts.count" = tracing::field::Empty,
            "knhk.log.first_index" = tracing::field::Empty,
            "error.type" = tracing::field::Empty,
        );
        let _entered = span.enter();
        let started = Instant::now();
        let result = self.append_decoded(body, peer);
        match &result {
            Ok((range, receipts)) => {
                span.record("knhk.receipts.count", range.end - range.start);
                span.record("knhk.log.first_index", range.start);
                if let Some(m) = self.metrics.get() {
                    m.receipts_ingested(receipts);
                    m.ingest_duration(started.elapsed());
                }
            }
            Err(e) => {
                span.record("error.type", e.kind());
            }
        }
        result.map(|(range, _)| range)
    }

    fn append_decoded(
        &self,
        body: &[u8],
        peer: &str,
    ) -> Result<(Range<u64>, Vec<Receipt>), ReceiptsError> {
        let Batch {
            origin,
            mut receipts,
        } = decode_origin_batch(body)?;
        if let Some(ingest) = self.ingest.get() {
            ingest.apply(&mut receipts)?;
        }
        let mut entries = Vec::with_capacity(receipts.len() + 1);
        if !origin.is_empty() && !receipts.is_empty() {
            entries.push(LogEntry::BatchOrigin(BatchOrigin {
                time_ns: crate::clock::now_ns(),
                // At most MAX_BATCH_RECORDS, checked by the decoder.
                count: u32::try_from(receipts.len()).unwrap_or(u32::MAX),
                origin,
                peer: peer.to_owned(),
            }));
        }
        let headed = entries.len() as u64;
        entries.extend(receipts.iter().copied().map(LogEntry::Receipt));
        // Encoding and leaf hashing run before the store is locked: concurrent batches do
        // them in parallel, and only the tree and the transaction are serialised.
        let encoded = super::store::encode_leaves(&entries)?;
        let stored = self.store()?.append_encoded(encoded)?;
        let range = stored.start + headed..stored.end;
        if let Some(observe) = self.observer.get() {
            observe(range.start, &receipts);
        }
        Ok((range, receipts))
    }

    /// Set the instruments ingest and sealing record into (once; later calls are ignored and
    /// return false).
    pub fn set_metrics(&self, metrics: Arc<Metrics>) -> bool {
        self.metrics.set(metrics).is_ok()
    }

    /// The instruments, when set.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.get()
    }

    /// Set what every batch goes through before it is appended (once; later calls are ignored
    /// and return false): the epoch check and the digest keying of [`Ingest`].
    pub fn set_ingest(&self, ingest: Ingest) -> bool {
        self.ingest.set(ingest).is_ok()
    }

    /// The ingest in force, when set.
    pub fn ingest(&self) -> Option<&Ingest> {
        self.ingest.get()
    }

    /// Set the observer of appended batches (once; later calls are ignored and return false).
    pub fn set_observer(&self, observer: ReceiptObserver) -> bool {
        self.observer.set(observer).is_ok()
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

    /// The signer's provider and key id.
    pub fn signing_key(&self) -> (&str, &str) {
        (self.signer.provider(), self.signer.key_id())
    }

    /// The newest `limit` checkpoints, newest first.
    pub fn recent_checkpoints(&self, limit: u64) -> Result<Vec<SignedCheckpoint>, ReceiptsError> {
        self.store()?.recent_checkpoints(limit)
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
    ///
    /// When the KMS signs with a version this log has not recorded — rotated outside this
    /// process: `knhk-agent keys rotate`, the KMS's own CLI or auto-rotation — that signature is
    /// discarded and the version is adopted the way [`ReceiptLog::rotate_key`] introduces one:
    /// a rotation entry, and a checkpoint over it signed by the newest version the log knows.
    pub async fn seal(&self, time_ns: u64) -> Result<Option<SignedCheckpoint>, ReceiptsError> {
        let span = tracing::info_span!(
            "knhk.checkpoint.seal",
            "knhk.checkpoint.tree_size" = tracing::field::Empty,
            "error.type" = tracing::field::Empty,
        );
        let started = Instant::now();
        let sealed = self.seal_inner(time_ns).instrument(span.clone()).await;
        match &sealed {
            Ok(Some(cp)) => {
                if let Ok(c) = Checkpoint::parse(&cp.text) {
                    span.record("knhk.checkpoint.tree_size", c.tree_size);
                }
                if let Some(m) = self.metrics.get() {
                    m.seal_duration(started.elapsed());
                }
            }
            Ok(None) => {}
            Err(e) => {
                span.record("error.type", e.kind());
            }
        }
        sealed
    }

    async fn seal_inner(&self, time_ns: u64) -> Result<Option<SignedCheckpoint>, ReceiptsError> {
        let started = Instant::now();
        let _serial = self.seal_lock.lock().await;
        // Seal the empty log once, so even an idle log has a signed head.
        let force = self.store()?.latest_checkpoint()?.is_none();
        let Some(text) = self.pending_text(time_ns, force)? else {
            return Ok(None);
        };
        let signature = self.signer.sign(text.as_bytes()).await?;
        let known = self.store()?.public_keys()?;
        let same_key = |k: &&PublicKeyVersion| {
            k.provider == signature.provider && k.key_id == signature.key_id
        };
        if !known
            .iter()
            .filter(same_key)
            .any(|k| k.version == signature.key_version)
        {
            if let Some(cp) = self
                .adopt_version(time_ns, signature.key_version, &known)
                .await?
            {
                return Ok(Some(cp));
            }
        }
        let cp = SignedCheckpoint { text, signature };
        self.store()?.record_checkpoint(&cp)?;
        self.notify_sealed(&cp);
        tracing::debug!(
            tree_size = Checkpoint::parse(&cp.text).map_or(0, |c| c.tree_size),
            key_version = cp.signature.key_version,
            elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "sealed checkpoint"
        );
        Ok(Some(cp))
    }

    /// Adopt key version `new_version`, created outside this log: record it, log the rotation
    /// from the newest live version in `known`, and seal over that entry with the old version.
    /// Returns `None` (after recording the keys) when no known version can vouch for it.
    async fn adopt_version(
        &self,
        time_ns: u64,
        new_version: u32,
        known: &[PublicKeyVersion],
    ) -> Result<Option<SignedCheckpoint>, ReceiptsError> {
        let keys = self.signer.public_keys().await?;
        let new = keys
            .iter()
            .find(|k| k.version == new_version)
            .cloned()
            .ok_or_else(|| KmsError::UnknownVersion {
                key_id: self.signer.key_id().to_owned(),
                version: new_version,
            })?;
        let previous = keys
            .iter()
            .filter(|k| !k.retired && k.version < new_version)
            .filter(|k| {
                known.iter().any(|p| {
                    p.provider == k.provider && p.key_id == k.key_id && p.version == k.version
                })
            })
            .map(|k| k.version)
            .max();
        let Some(previous) = previous else {
            tracing::warn!(
                key = %self.signer.key_id(),
                version = new_version,
                "signing key version created outside the agent and no known live version can vouch for it; recording it without a handover"
            );
            self.store()?.record_public_keys(&keys)?;
            return Ok(None);
        };
        tracing::warn!(
            key = %self.signer.key_id(),
            previous,
            version = new_version,
            "signing key version created outside the agent; logging the handover"
        );
        self.hand_over(time_ns, previous, &new).await.map(Some)
    }

    /// Log the rotation from `previous` to `new` and seal a checkpoint over it signed by
    /// `previous`; record every key version.
    async fn hand_over(
        &self,
        time_ns: u64,
        previous: u32,
        new: &PublicKeyVersion,
    ) -> Result<SignedCheckpoint, ReceiptsError> {
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
            store.record_public_keys(std::slice::from_ref(new))?;
            store.append(&[entry])?;
            store.set_key_in_use_since(time_ns)?;
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
        drop(store);
        self.notify_sealed(&cp);
        Ok(cp)
    }

    /// Since when (ns since the epoch) the newest key version has signed: the time of the last
    /// rotation this log recorded, or of the first call (`now_ns`) when it recorded none. Kept
    /// in the database, so a restart does not reset a key's age.
    pub fn key_in_use_since(&self, now_ns: u64) -> Result<u64, ReceiptsError> {
        self.store()?.key_in_use_since(now_ns)
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
        let cp = self.hand_over(time_ns, previous, &new).await?;
        Ok((new, cp))
    }

    /// Proof bundle for leaf `index` against the newest checkpoint.
    pub fn proof_bundle(&self, index: u64) -> Result<ProofBundle, ReceiptsError> {
        let checkpoint = self
            .latest_checkpoint()?
            .ok_or(ReceiptsError::NotSealed { index })?;
        self.proof_bundle_for(index, checkpoint)
    }

    /// Proof bundle for leaf `index` against `checkpoint` (one of this log's checkpoints).
    pub fn proof_bundle_for(
        &self,
        index: u64,
        checkpoint: SignedCheckpoint,
    ) -> Result<ProofBundle, ReceiptsError> {
        let store = self.store()?;
        let cp = Checkpoint::parse(&checkpoint.text)?;
        if index >= cp.tree_size {
            return Err(ReceiptsError::NotSealed { index });
        }
        let entry = store.entry(index)?;
        if entry.is_empty() {
            return Err(ReceiptsError::Pruned { index });
        }
        let inclusion_proof = store.inclusion_proof(index, cp.tree_size)?;
        let origin = match entry.first() {
            Some(&ENTRY_KIND_RECEIPT) => match store.origin_of(index)? {
                Some((at, bytes)) => Some(OriginProof {
                    leaf_index: at,
                    entry: bytes,
                    inclusion_proof: store.inclusion_proof(at, cp.tree_size)?,
                }),
                None => None,
            },
            _ => None,
        };
        let public_key = store.public_key_for(&checkpoint.signature)?;
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
            cosignatures: Vec::new(),
            origin,
        })
    }

    // --- Read access for cross-region replication (see `crate::quorum`). ---

    /// Wake-ups after each recorded checkpoint; the value is its tree size.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.sealed.subscribe()
    }

    fn notify_sealed(&self, cp: &SignedCheckpoint) {
        let size = Checkpoint::parse(&cp.text).map_or(0, |c| c.tree_size);
        self.sealed.send_replace(size);
    }

    /// Checkpoints with a tree size above `size`, oldest first.
    pub fn checkpoints_after(&self, size: u64) -> Result<Vec<SignedCheckpoint>, ReceiptsError> {
        self.store()?.checkpoints_after(size)
    }

    /// The checkpoint of exactly `size` leaves, if one was sealed.
    pub fn checkpoint_at(&self, size: u64) -> Result<Option<SignedCheckpoint>, ReceiptsError> {
        let Some(last) = size.checked_sub(1) else {
            return Ok(None);
        };
        let found = self.store()?.checkpoint_covering(last)?;
        Ok(found.filter(|c| Checkpoint::parse(&c.text).is_ok_and(|p| p.tree_size == size)))
    }

    /// Every legal hold entry of the log, as `(index, bytes)`.
    pub fn hold_entries(&self) -> Result<Vec<(u64, Vec<u8>)>, ReceiptsError> {
        self.store()?.hold_entries()
    }

    /// Remove the payloads of leaves `indexes` (see [`ReceiptStore::prune`]), then tell the
    /// prune observer (the tiles publisher, which republishes their entry bundles).
    pub fn prune(&self, indexes: &[u64]) -> Result<u64, ReceiptsError> {
        let pruned = self.store()?.prune(indexes)?;
        if pruned > 0 {
            if let Some(observer) = self.prune_observer.get() {
                observer(indexes);
            }
        }
        Ok(pruned)
    }

    /// Set the prune observer, once; `false` when one is set already.
    pub fn set_prune_observer(&self, observer: PruneObserver) -> bool {
        self.prune_observer.set(observer).is_ok()
    }

    /// Leaf hashes of the pruned leaves among `entries` (empty bytes), in order.
    pub fn pruned_hashes(&self, entries: &[(u64, Vec<u8>)]) -> Result<Vec<Hash>, ReceiptsError> {
        let store = self.store()?;
        entries
            .iter()
            .filter(|(_, e)| e.is_empty())
            .map(|(i, _)| store.leaf_hash_at(*i))
            .collect()
    }

    /// Consistency proof from `first` to `second` leaves.
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, ReceiptsError> {
        self.store()?.consistency_proof(first, second)
    }

    /// A snapshot of the log for a long read (an export): see [`ReceiptStore::reader`].
    pub fn reader(&self) -> Result<ReceiptStore, ReceiptsError> {
        self.store()?.reader()
    }

    /// The whole log as a [`LogExport`], built through the streamed writer
    /// ([`super::stream::write_export`]) so both produce the same document. In memory: for
    /// tests and small logs; the API streams it.
    pub fn export(&self) -> Result<LogExport, ReceiptsError> {
        let store = self.reader()?;
        let mut bytes = Vec::new();
        super::stream::write_export(&store, |chunk| {
            bytes.extend_from_slice(&chunk);
            true
        })
        .map_err(|e| match e {
            super::stream::StreamError::Log(e) => e,
            super::stream::StreamError::Gone => ReceiptsError::Corrupt("export sink gone".into()),
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ReceiptsError::Corrupt(format!("the streamed export does not parse: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use knhk_core::receipt::encode_batch;

    use super::*;
    use crate::kms::local::LocalSigner;
    use crate::receipts::store::tests::sample;
    use crate::verify::verify_export;

    fn batch(r: Range<u64>) -> Vec<u8> {
        encode_batch(&r.map(sample).collect::<Vec<_>>()).unwrap()
    }

    fn rotations(log: &ReceiptLog) -> Vec<(u32, u32)> {
        log.export()
            .unwrap()
            .entries
            .iter()
            .filter_map(|e| match LogEntry::decode(e).unwrap() {
                LogEntry::KeyRotation(k) => Some((k.previous_version, k.new_version)),
                _ => None,
            })
            .collect()
    }

    /// Versions rotated behind the log's back, while it runs and while it is closed, are
    /// adopted with a logged handover signed by the version before: the export verifies
    /// against trust in version 1 alone.
    #[tokio::test]
    async fn versions_rotated_outside_are_adopted_with_a_handover() {
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("keys");
        let db = dir.path().join("r.db");
        let signer = Arc::new(LocalSigner::open(&keys_dir, "ckpt").unwrap());
        let trusted = signer.public_keys().await.unwrap();
        let log = ReceiptLog::open(&db, "knhk.test/adopt", signer.clone())
            .await
            .unwrap();
        log.append_batch(&batch(0..10)).unwrap();
        assert_eq!(log.seal(1).await.unwrap().unwrap().signature.key_version, 1);

        // Rotated in the KMS while the log runs: the next seal logs the handover with v1.
        signer.rotate().await.unwrap();
        log.append_batch(&batch(10..20)).unwrap();
        let handover = log.seal(2).await.unwrap().unwrap();
        assert_eq!(handover.signature.key_version, 1);
        assert_eq!(Checkpoint::parse(&handover.text).unwrap().tree_size, 21);
        log.append_batch(&batch(20..30)).unwrap();
        assert_eq!(log.seal(3).await.unwrap().unwrap().signature.key_version, 2);
        drop(log);

        // Rotated while the log is closed (another process, same key files).
        LocalSigner::open(&keys_dir, "ckpt")
            .unwrap()
            .rotate()
            .await
            .unwrap();
        let reopened = Arc::new(LocalSigner::open(&keys_dir, "ckpt").unwrap());
        let log = ReceiptLog::open(&db, "knhk.test/adopt", reopened)
            .await
            .unwrap();
        log.append_batch(&batch(30..40)).unwrap();
        assert_eq!(log.seal(4).await.unwrap().unwrap().signature.key_version, 2);
        log.append_batch(&batch(40..50)).unwrap();
        assert_eq!(log.seal(5).await.unwrap().unwrap().signature.key_version, 3);

        assert_eq!(rotations(&log), [(1, 2), (2, 3)]);
        let report = verify_export(&log.export().unwrap(), Some(&trusted)).unwrap();
        assert!(!report.self_certified);
    }
}
