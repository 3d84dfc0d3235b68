//! Which pod decided: the checks on batch origin entries (kind 6). In an export, each origin
//! leaf must be followed by exactly the receipts it counts (pruned receipts keep their place);
//! in a proof bundle, the origin proof must be a batch origin included in the same checkpoint
//! whose span covers the receipt.

use std::collections::BTreeSet;

use super::VerifyError;
use crate::checkpoint::Checkpoint;
use crate::export::ProofBundle;
use crate::merkle;
use crate::receipt::{BatchOrigin, LogEntry};

/// One line on an origin entry.
pub(super) fn describe(index: u64, o: &BatchOrigin) -> String {
    let peer = if o.peer.is_empty() { "?" } else { &o.peer };
    format!(
        "batch origin at leaf {index}: {} receipt(s) from {}, posted from {peer}",
        o.count, o.origin
    )
}

/// Walks an export's leaves in order, checking every origin's span.
#[derive(Default)]
pub(super) struct Spans {
    /// The open span: origin leaf, receipts it claims, receipts still expected.
    open: Option<(u64, u32, u32)>,
    origins: u64,
    attributed: u64,
    pods: BTreeSet<String>,
}

impl Spans {
    /// The next leaf: `None` for a pruned (empty) one, which only a receipt can be.
    pub(super) fn leaf(&mut self, index: u64, entry: Option<&LogEntry>) -> Result<(), VerifyError> {
        if let Some((at, count, left)) = self.open {
            return match entry {
                None | Some(LogEntry::Receipt(_)) => {
                    self.attributed += 1;
                    self.open = (left > 1).then_some((at, count, left - 1));
                    Ok(())
                }
                Some(other) => Err(VerifyError::OriginSpan {
                    index: at,
                    count,
                    problem: format!("leaf {index} is a {}", other.kind_name()),
                }),
            };
        }
        if let Some(LogEntry::BatchOrigin(o)) = entry {
            self.origins += 1;
            self.pods.insert(o.origin.to_string());
            if o.count > 0 {
                self.open = Some((index, o.count, o.count));
            }
        }
        Ok(())
    }

    /// After the last leaf: no span may run past it. Returns the report's line.
    pub(super) fn finish(self) -> Result<Vec<String>, VerifyError> {
        if let Some((index, count, left)) = self.open {
            return Err(VerifyError::OriginSpan {
                index,
                count,
                problem: format!("the log ends {left} leaves short"),
            });
        }
        if self.origins == 0 {
            return Ok(Vec::new());
        }
        Ok(vec![format!(
            "{} receipt(s) attributed by {} batch origin(s) to {} pod(s): {}",
            self.attributed,
            self.origins,
            self.pods.len(),
            self.pods.iter().cloned().collect::<Vec<_>>().join(", ")
        )])
    }
}

/// Check a bundle's origin proof (when present) against its receipt and checkpoint; the
/// report's line on who decided.
pub(super) fn check_bundle(
    bundle: &ProofBundle,
    entry: &LogEntry,
    cp: &Checkpoint,
) -> Result<Option<String>, VerifyError> {
    let Some(proof) = &bundle.origin else {
        return Ok(None);
    };
    let bad = |why: String| Err(VerifyError::BadOrigin(why));
    if !matches!(entry, LogEntry::Receipt(_)) {
        return bad(format!("leaf {} is not a receipt", bundle.leaf_index));
    }
    let origin = match LogEntry::decode(&proof.entry) {
        Ok(LogEntry::BatchOrigin(o)) => o,
        Ok(other) => {
            return bad(format!(
                "leaf {} is a {}",
                proof.leaf_index,
                other.kind_name()
            ))
        }
        Err(e) => return bad(format!("leaf {} is malformed: {e}", proof.leaf_index)),
    };
    let first = proof.leaf_index.saturating_add(1);
    let last = proof.leaf_index.saturating_add(u64::from(origin.count));
    if !(first..=last).contains(&bundle.leaf_index) {
        return bad(format!(
            "the origin at leaf {} covers leaves {first}..={last}, not {}",
            proof.leaf_index, bundle.leaf_index
        ));
    }
    merkle::verify_inclusion(
        &merkle::leaf_hash(&proof.entry),
        proof.leaf_index,
        cp.tree_size,
        &proof.inclusion_proof,
        &cp.root_hash,
    )
    .map_err(|e| {
        VerifyError::BadOrigin(format!(
            "inclusion proof for leaf {} fails: {e}",
            proof.leaf_index
        ))
    })?;
    Ok(Some(format!(
        "decided by {} (batch origin at leaf {}, included in the same checkpoint, posted from {})",
        origin.origin,
        proof.leaf_index,
        if origin.peer.is_empty() {
            "?"
        } else {
            &origin.peer
        }
    )))
}
