//! The witness: verifies other regions' checkpoints against what it last cosigned, stores
//! their entries, and returns timestamped C2SP `cosignature/v1` cosignatures.
//!
//! Checks, in order, each with its own [`QuorumError`]: request limits (`Malformed`), known
//! origin (`UnknownOrigin`), the checkpoint signature against the log's trusted keys — the
//! configured ones plus versions handed over by logged rotations (`BadSignature`), a smaller
//! tree than witnessed (`Fork` when it disagrees with the stored leaves, else `Rollback`), the
//! same size with another root (`Fork`), the old size (`OldSizeMismatch`), the consistency
//! proof (`BadProof`), and the entries re-hashing to the checkpoint root (`Malformed`).
//! Re-sending an already cosigned checkpoint returns the stored cosignature and stores
//! nothing. Check and persist happen under one lock, in one transaction.

pub mod api;
pub mod store;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, MutexGuard};

use knhk_core::checkpoint::{verify_signature, Checkpoint, PublicKeyVersion};
use knhk_core::cosignature::{signed_message, Cosignature, WitnessKey};
use knhk_core::merkle::{self, Frontier, Tree};
use knhk_core::receipt::LogEntry;
use serde::Serialize;

pub use api::witness_router;
pub use store::WitnessStore;

use super::protocol::{
    AddCheckpoint, Cosigned, MAX_ENTRIES_PER_REQUEST, MAX_ENTRY_LEN, MAX_PROOF_LEN,
};
use super::{QuorumConfig, QuorumError};
use crate::clock::now_ns;
use crate::kms::local::LocalSigner;
use crate::kms::Signer;
use crate::verify::handed_over_key;

/// Key id of the witness key under `<data_dir>/witness-key/`.
pub const WITNESS_KEY_ID: &str = "witness";

/// What the witness holds of one peer log.
#[derive(Debug)]
struct LogView {
    tree: Tree,
    frontier: Frontier,
    keys: Vec<PublicKeyVersion>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<std::sync::Mutex<WitnessStore>>,
    logs: HashMap<String, LogView>,
}

/// One witnessed log, as reported by `GET /v1/witness/logs`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct WitnessedLog {
    /// Origin.
    pub origin: String,
    /// Leaves stored (= size of the newest cosigned checkpoint).
    pub size: u64,
    /// The newest cosigned checkpoint text.
    pub checkpoint: Option<String>,
    /// Our cosignature over it.
    pub cosignature: Option<String>,
    /// Key versions trusted for the log now.
    pub trusted_key_versions: Vec<u32>,
}

/// The witness of the peers' logs.
pub struct Witness {
    key: WitnessKey,
    signer: LocalSigner,
    inner: tokio::sync::Mutex<Inner>,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Witness")
            .field("name", &self.key.name)
            .finish_non_exhaustive()
    }
}

/// Open (creating on first use) this region's witness signing key under `data_dir`.
pub async fn open_witness_key(
    config: &QuorumConfig,
    data_dir: &Path,
) -> Result<(LocalSigner, WitnessKey), QuorumError> {
    let signer = LocalSigner::open(&data_dir.join("witness-key"), WITNESS_KEY_ID)?;
    let newest = signer
        .public_keys()
        .await?
        .into_iter()
        .next_back()
        .ok_or_else(|| QuorumError::Corrupt("witness key has no version".to_owned()))?;
    let key = WitnessKey {
        name: config.witness_name(),
        public_key: newest.public_key,
    };
    Ok((signer, key))
}

fn lock(
    store: &std::sync::Mutex<WitnessStore>,
) -> Result<MutexGuard<'_, WitnessStore>, QuorumError> {
    store.lock().map_err(|_| QuorumError::Poisoned)
}

fn load_view(
    store: &WitnessStore,
    origin: &str,
    configured: &[PublicKeyVersion],
) -> Result<LogView, QuorumError> {
    let mut tree = Tree::pruned(crate::receipts::leaf_source::LEAF_GROUP_LOG2);
    let mut frontier = Frontier::new();
    store.for_each_leaf_hash(origin, |h| {
        frontier.push(h);
        tree.push(h);
    })?;
    if let Some(latest) = store.latest(origin)? {
        let cp = Checkpoint::parse(&latest.checkpoint.text)
            .map_err(|e| QuorumError::Corrupt(format!("stored checkpoint: {e}")))?;
        if cp.tree_size != frontier.size() || cp.root_hash != frontier.root() {
            return Err(QuorumError::Corrupt(format!(
                "{origin}: stored leaves do not match the cosigned checkpoint at size {}",
                cp.tree_size
            )));
        }
    }
    let mut keys = configured.to_vec();
    for k in store.learned_keys(origin)? {
        if !keys
            .iter()
            .any(|t| t.provider == k.provider && t.key_id == k.key_id && t.version == k.version)
        {
            keys.push(k);
        }
    }
    Ok(LogView {
        tree,
        frontier,
        keys,
    })
}

impl Witness {
    /// Open the witness key and `witness.db` in `data_dir`, for the peers in `config`.
    pub async fn open(config: &QuorumConfig, data_dir: &Path) -> Result<Self, QuorumError> {
        let (signer, key) = open_witness_key(config, data_dir).await?;
        let store = WitnessStore::open(&data_dir.join("witness.db"))?;
        let mut logs = HashMap::new();
        for peer in &config.peers {
            logs.insert(
                peer.origin.clone(),
                load_view(&store, &peer.origin, &peer.log_keys)?,
            );
        }
        Ok(Witness {
            key,
            signer,
            inner: tokio::sync::Mutex::new(Inner {
                store: Arc::new(std::sync::Mutex::new(store)),
                logs,
            }),
        })
    }

    /// This witness's identity.
    pub fn key(&self) -> &WitnessKey {
        &self.key
    }

    /// What the witness holds of each log.
    pub async fn logs(&self) -> Result<Vec<WitnessedLog>, QuorumError> {
        let inner = self.inner.lock().await;
        let mut out = Vec::new();
        for (origin, view) in &inner.logs {
            let latest = lock(&inner.store)?.latest(origin)?;
            out.push(WitnessedLog {
                origin: origin.clone(),
                size: view.frontier.size(),
                checkpoint: latest.as_ref().map(|w| w.checkpoint.text.clone()),
                cosignature: latest.map(|w| w.cosignature),
                trusted_key_versions: view.keys.iter().map(|k| k.version).collect(),
            });
        }
        out.sort_by(|a, b| a.origin.cmp(&b.origin));
        Ok(out)
    }

    /// Origins of the witnessed logs.
    pub async fn origins(&self) -> Vec<String> {
        self.inner.lock().await.logs.keys().cloned().collect()
    }

    /// Stored leaves of `origin` (see [`WitnessStore::entries`]).
    pub async fn entries(
        &self,
        origin: &str,
        from: u64,
        limit: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, QuorumError> {
        lock(&self.inner.lock().await.store)?.entries(origin, from, limit)
    }

    /// Legal hold entries of `origin`.
    pub async fn hold_entries(&self, origin: &str) -> Result<Vec<(u64, Vec<u8>)>, QuorumError> {
        lock(&self.inner.lock().await.store)?.hold_entries(origin)
    }

    /// Remove stored payloads of `origin` (retention), keeping hashes.
    pub async fn prune(&self, origin: &str, indexes: &[u64]) -> Result<u64, QuorumError> {
        lock(&self.inner.lock().await.store)?.prune(origin, indexes)
    }

    async fn cosign(&self, text: &str) -> Result<(String, u64), QuorumError> {
        let time_ns = now_ns();
        let secs = time_ns / 1_000_000_000;
        let msg = signed_message(text, secs).map_err(|e| QuorumError::Corrupt(e.to_string()))?;
        let record = self.signer.sign(msg.as_bytes()).await?;
        let sig: [u8; 64] =
            record.sig.as_slice().try_into().map_err(|_| {
                QuorumError::Corrupt("witness signature is not 64 bytes".to_owned())
            })?;
        let line = Cosignature::new(&self.key, secs, sig)
            .map_err(|e| QuorumError::Corrupt(e.to_string()))?
            .to_line();
        Ok((line, time_ns))
    }

    /// Verify `req` and cosign its checkpoint (see the module docs for the checks).
    pub async fn add_checkpoint(&self, req: AddCheckpoint) -> Result<Cosigned, QuorumError> {
        if req.consistency.len() > MAX_PROOF_LEN {
            return Err(QuorumError::Malformed(format!(
                "consistency proof of {} hashes exceeds {MAX_PROOF_LEN}",
                req.consistency.len()
            )));
        }
        let count = u64::try_from(req.entries.len()).unwrap_or(u64::MAX);
        if count > MAX_ENTRIES_PER_REQUEST {
            return Err(QuorumError::Malformed(format!(
                "{count} entries exceed the limit of {MAX_ENTRIES_PER_REQUEST} per request"
            )));
        }
        if req.entries.iter().any(|e| e.len() > MAX_ENTRY_LEN) {
            return Err(QuorumError::Malformed(format!(
                "an entry exceeds {MAX_ENTRY_LEN} bytes"
            )));
        }
        let text = &req.checkpoint.text;
        let cp = Checkpoint::parse(text).map_err(|e| QuorumError::Malformed(e.to_string()))?;
        let mut inner = self.inner.lock().await;
        let Inner { store, logs } = &mut *inner;
        let view = logs
            .get_mut(&cp.origin)
            .ok_or_else(|| QuorumError::UnknownOrigin(cp.origin.clone()))?;
        let signer_key = verify_signature(text.as_bytes(), &req.checkpoint.signature, &view.keys)
            .map_err(|e| QuorumError::BadSignature(e.to_string()))?
            .clone();
        if req.old_size > cp.tree_size {
            return Err(QuorumError::Malformed(format!(
                "old size {} exceeds the checkpoint size {}",
                req.old_size, cp.tree_size
            )));
        }
        let witnessed = view.frontier.size();
        if cp.tree_size <= witnessed {
            let stored = lock(store)?.witnessed(&cp.origin, cp.tree_size)?;
            if let Some(stored) = stored {
                if stored.checkpoint.text == *text {
                    return Ok(Cosigned {
                        tree_size: cp.tree_size,
                        cosignature: stored.cosignature,
                    });
                }
            }
            // cp.tree_size ≤ witnessed, so only unreadable stored leaves make this fail.
            let root = {
                let guard = lock(store)?;
                view.tree
                    .root_at(cp.tree_size, &guard.leaf_source(&cp.origin))
            }
            .map_err(|e| QuorumError::Corrupt(format!("{}: witnessed leaves: {e}", cp.origin)))?;
            if root != cp.root_hash {
                return Err(QuorumError::Fork {
                    size: cp.tree_size,
                    detail: format!(
                        "the checkpoint's root differs from the root of the {} entries witnessed",
                        cp.tree_size
                    ),
                });
            }
            if cp.tree_size < witnessed {
                return Err(QuorumError::Rollback {
                    witnessed,
                    offered: cp.tree_size,
                });
            }
        }
        if req.old_size != witnessed {
            return Err(QuorumError::OldSizeMismatch {
                witnessed,
                offered: req.old_size,
            });
        }
        merkle::verify_consistency(
            witnessed,
            cp.tree_size,
            &view.frontier.root(),
            &cp.root_hash,
            &req.consistency,
        )
        .map_err(|e| QuorumError::BadProof {
            from: witnessed,
            to: cp.tree_size,
            detail: e.to_string(),
        })?;
        if count != cp.tree_size - witnessed {
            return Err(QuorumError::Malformed(format!(
                "{count} entries sent, {} needed for sizes {witnessed}..{}",
                cp.tree_size - witnessed,
                cp.tree_size
            )));
        }
        let mut frontier = view.frontier.clone();
        let mut hashed = Vec::with_capacity(req.entries.len());
        let mut learned = Vec::new();
        let mut pruned = req.pruned_hashes.iter();
        for (i, bytes) in req.entries.into_iter().enumerate() {
            if bytes.is_empty() {
                // Pruned at the log by retention: the hash stands in; the root check binds it.
                let hash = *pruned.next().ok_or_else(|| {
                    QuorumError::Malformed("a pruned entry has no hash in pruned_hashes".to_owned())
                })?;
                frontier.push(hash);
                hashed.push((bytes, hash));
                continue;
            }
            let entry = LogEntry::decode(&bytes).map_err(|e| {
                QuorumError::Malformed(format!(
                    "entry {}: {e}",
                    witnessed + u64::try_from(i).unwrap_or(0)
                ))
            })?;
            if let LogEntry::KeyRotation(rotation) = &entry {
                if let Some(k) = handed_over_key(&signer_key, rotation) {
                    if !view.keys.contains(&k) && !learned.contains(&k) {
                        learned.push(k);
                    }
                }
            }
            let hash = merkle::leaf_hash(&bytes);
            frontier.push(hash);
            hashed.push((bytes, hash));
        }
        if pruned.next().is_some() {
            return Err(QuorumError::Malformed(
                "more pruned_hashes than pruned entries".to_owned(),
            ));
        }
        if frontier.root() != cp.root_hash {
            return Err(QuorumError::Malformed(
                "the entries sent do not hash to the checkpoint root".to_owned(),
            ));
        }
        let (cosignature, time_ns) = self.cosign(text).await?;
        let accepted = store::Accepted {
            origin: cp.origin.clone(),
            first_index: witnessed,
            entries: hashed,
            tree_size: cp.tree_size,
            checkpoint: req.checkpoint,
            cosignature,
            learned,
            time_ns,
        };
        // The durable write (an fsync) runs off the async workers; the witness lock is held
        // across it, so check and persist stay atomic.
        let shared = store.clone();
        let accepted = tokio::task::spawn_blocking(move || {
            shared
                .lock()
                .map_err(|_| QuorumError::Poisoned)?
                .accept(&accepted)
                .map(|()| accepted)
        })
        .await
        .map_err(|e| QuorumError::Corrupt(format!("witness write task failed: {e}")))??;
        let (hashed, learned, cosignature) =
            (accepted.entries, accepted.learned, accepted.cosignature);
        for (_, h) in &hashed {
            view.tree.push(*h);
        }
        view.frontier = frontier;
        view.keys.extend(learned);
        Ok(Cosigned {
            tree_size: cp.tree_size,
            cosignature,
        })
    }
}
