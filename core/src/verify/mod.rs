//! Offline verification of proof bundles and log exports, as run by `knhk-agent verify`: pure,
//! so any host that can read the file (the CLI, a verifier in the auditor's browser) gives the
//! same verdicts and messages from this one copy.
//!
//! Nothing here talks to the agent or a KMS: everything is checked from the file, and
//! optionally against a trusted key set (the output of `knhk-agent keys list`). Without a
//! trusted set, the keys carried in the file are used and the report says so, since a forger
//! could carry their own. With one, a key version is trusted if it is in the set, or if a key
//! rotation entry introducing it is covered by a checkpoint signed by an already trusted version
//! (the rotation handover the agent records).
//!
//! Every failure is a distinct [`VerifyError`] naming the field or step that failed.

use std::collections::HashSet;

use crate::checkpoint::{verify_signature, Checkpoint, CheckpointError, PublicKeyVersion};
use crate::merkle::{self, Frontier, Hash, MerkleError};
use crate::receipt::{LogEntry, ReceiptError};
use serde::Deserialize;

pub mod handover;
pub mod quorum;
pub mod verdict;

pub use handover::handed_over_key;
mod origin;
pub use verdict::{check, Verdict};

use crate::export::{LogExport, ProofBundle, SignedCheckpoint, BUNDLE_FORMAT, EXPORT_FORMAT};

/// Why verification failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The file is not JSON of a known format.
    #[error("not a knhk proof bundle or log export: {0}")]
    UnknownFormat(String),
    /// The bundle's entry bytes are not a valid log entry.
    #[error("entry at leaf {index} is malformed: {source}")]
    MalformedEntry {
        /// Leaf index.
        index: u64,
        /// Decoder error.
        source: ReceiptError,
    },
    /// The entry bytes do not hash to the bundle's leaf hash.
    #[error("receipt bytes do not match the leaf hash: the receipt was altered")]
    LeafHashMismatch,
    /// The checkpoint text does not parse.
    #[error("checkpoint {index} is malformed: {source}")]
    MalformedCheckpoint {
        /// Position in the file (0 for a bundle).
        index: usize,
        /// Parser error.
        source: CheckpointError,
    },
    /// The bundle's tree size differs from its signed checkpoint's.
    #[error("tree size {claimed} differs from the signed checkpoint's {signed}")]
    TreeSizeMismatch {
        /// Size in the bundle.
        claimed: u64,
        /// Size in the checkpoint.
        signed: u64,
    },
    /// The bundle's root hash differs from its signed checkpoint's.
    #[error("root hash differs from the signed checkpoint's root hash")]
    RootHashMismatch,
    /// The bundled public key is not the version the signature names.
    #[error(
        "signature names {sig_provider} key {sig_key} version {sig_version}, but the bundled key is {key_provider} key {key_key} version {key_version}"
    )]
    KeyVersionMismatch {
        /// Signature's provider.
        sig_provider: String,
        /// Signature's key id.
        sig_key: String,
        /// Signature's key version.
        sig_version: u32,
        /// Key's provider.
        key_provider: String,
        /// Key's id.
        key_key: String,
        /// Key's version.
        key_version: u32,
    },
    /// The checkpoint signature does not verify.
    #[error("checkpoint {index} signature is invalid: {source}")]
    BadSignature {
        /// Position in the file (0 for a bundle).
        index: usize,
        /// What failed.
        source: CheckpointError,
    },
    /// The signing key is not trusted.
    #[error("{provider} key {key_id} version {version} is not among the trusted keys")]
    UntrustedKey {
        /// Provider.
        provider: String,
        /// Key id.
        key_id: String,
        /// Version.
        version: u32,
    },
    /// The inclusion proof does not lead from the leaf to the checkpoint root.
    #[error("inclusion proof for leaf {index} fails: {source}")]
    InclusionFailed {
        /// Leaf index.
        index: u64,
        /// What failed.
        source: MerkleError,
    },
    /// A checkpoint's origin is not the log's.
    #[error("checkpoint {index} has origin {found:?}, the log is {expected:?}")]
    OriginMismatch {
        /// Position.
        index: usize,
        /// Its origin.
        found: String,
        /// The export's origin.
        expected: String,
    },
    /// Checkpoints are not in strictly increasing tree size order.
    #[error("checkpoint {index} (size {size}) does not grow the log past size {previous}")]
    CheckpointOrder {
        /// Position.
        index: usize,
        /// Its size.
        size: u64,
        /// The previous checkpoint's size.
        previous: u64,
    },
    /// Checkpoint timestamps go backwards.
    #[error("checkpoint {index} is timestamped before its predecessor")]
    TimeOrder {
        /// Position.
        index: usize,
    },
    /// A checkpoint covers more leaves than the export holds.
    #[error("checkpoint {index} covers {size} leaves, the export holds only {available}")]
    CheckpointBeyondLog {
        /// Position.
        index: usize,
        /// Its size.
        size: u64,
        /// Leaves in the export.
        available: u64,
    },
    /// An export holds no checkpoint, so no entry in it is signed.
    #[error("the export holds no checkpoint: none of its entries is signed")]
    NoCheckpoint,
    /// A checkpoint's root differs from the root of the exported leaves at its size.
    #[error("checkpoint {index} root does not match the exported leaves at size {size}: entries were altered, removed or reordered")]
    CheckpointRootMismatch {
        /// Position.
        index: usize,
        /// Its size.
        size: u64,
    },
    /// The consistency steps do not pair up the consecutive checkpoints.
    #[error("consistency step {index} is missing or covers the wrong sizes")]
    ConsistencyShape {
        /// Position.
        index: usize,
    },
    /// A consistency proof between consecutive checkpoints fails.
    #[error("consistency proof from size {from} to {to} fails: {source}")]
    ConsistencyFailed {
        /// Earlier size.
        from: u64,
        /// Later size.
        to: u64,
        /// What failed.
        source: MerkleError,
    },
    /// The pruned leaf hashes do not pair up with the pruned (empty) entries.
    #[error("the export's pruned_hashes do not match its pruned (empty) entries")]
    PrunedHashes,
    /// An empty (pruned) leaf no later retention record lists: retention prunes receipts only
    /// and records them first, so this leaf's payload was removed by someone else.
    #[error("leaf {index} is empty but no retention record after it lists it: only receipts are pruned, and retention records them first (an event, hold or rotation may have been removed)")]
    UnlistedPrune {
        /// The leaf.
        index: u64,
    },
    /// Fewer signatures than `--quorum` asks for (the log's own plus trusted cosignatures).
    #[error("quorum not met: {found} of {needed} signatures ({detail})")]
    QuorumNotMet {
        /// Signatures required.
        needed: usize,
        /// Valid signatures found.
        found: usize,
        /// Why others did not count.
        detail: String,
    },
    /// A batch origin entry claims leaves that are not its batch's receipts.
    #[error("batch origin at leaf {index} claims the next {count} leaves as its receipts, but {problem}")]
    OriginSpan {
        /// Leaf index of the origin entry.
        index: u64,
        /// Receipts it claims.
        count: u32,
        /// What is found instead.
        problem: String,
    },
    /// A bundle's origin proof is malformed, does not cover the receipt, or is not included.
    #[error("the bundle's batch origin does not hold: {0}")]
    BadOrigin(String),
    /// A rotation entry's public key differs from the exported key of that version.
    #[error("rotation entry at leaf {index} announces a key that differs from exported version {version}")]
    RotationKeyMismatch {
        /// Leaf index.
        index: u64,
        /// Version introduced.
        version: u32,
    },
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// One line per established fact, for the command's output.
    pub lines: Vec<String>,
    /// True when no trusted key set was given (keys came from the file itself).
    pub self_certified: bool,
    /// Entries of an export after its last checkpoint: in the file, but proven by no signed
    /// checkpoint (0 for a bundle). The command refuses them unless told to accept them.
    pub unproven: u64,
}

fn same_key(a: &PublicKeyVersion, b: &PublicKeyVersion) -> bool {
    a.provider == b.provider
        && a.key_id == b.key_id
        && a.version == b.version
        && a.alg == b.alg
        && a.public_key == b.public_key
}

fn check_signature(
    index: usize,
    cp: &SignedCheckpoint,
    keys: &[PublicKeyVersion],
) -> Result<PublicKeyVersion, VerifyError> {
    verify_signature(cp.text.as_bytes(), &cp.signature, keys)
        .cloned()
        .map_err(|source| VerifyError::BadSignature { index, source })
}

fn untrusted(k: &PublicKeyVersion) -> VerifyError {
    VerifyError::UntrustedKey {
        provider: k.provider.clone(),
        key_id: k.key_id.clone(),
        version: k.version,
    }
}

/// Verify a proof bundle.
pub fn verify_bundle(
    bundle: &ProofBundle,
    trusted: Option<&[PublicKeyVersion]>,
) -> Result<Report, VerifyError> {
    if bundle.format != BUNDLE_FORMAT {
        return Err(VerifyError::UnknownFormat(bundle.format.clone()));
    }
    let index = bundle.leaf_index;
    let entry = LogEntry::decode(&bundle.entry)
        .map_err(|source| VerifyError::MalformedEntry { index, source })?;
    if merkle::leaf_hash(&bundle.entry) != bundle.leaf_hash {
        return Err(VerifyError::LeafHashMismatch);
    }
    let cp = Checkpoint::parse(&bundle.checkpoint.text)
        .map_err(|source| VerifyError::MalformedCheckpoint { index: 0, source })?;
    if cp.tree_size != bundle.tree_size {
        return Err(VerifyError::TreeSizeMismatch {
            claimed: bundle.tree_size,
            signed: cp.tree_size,
        });
    }
    if cp.root_hash != bundle.root_hash {
        return Err(VerifyError::RootHashMismatch);
    }
    let sig = &bundle.checkpoint.signature;
    let key = &bundle.public_key;
    if !sig.is_by(key) {
        return Err(VerifyError::KeyVersionMismatch {
            sig_provider: sig.provider.clone(),
            sig_key: sig.key_id.clone(),
            sig_version: sig.key_version,
            key_provider: key.provider.clone(),
            key_key: key.key_id.clone(),
            key_version: key.version,
        });
    }
    check_signature(0, &bundle.checkpoint, std::slice::from_ref(key))?;
    if let Some(trusted) = trusted {
        if !trusted.iter().any(|t| same_key(t, key) && !t.retired) {
            return Err(untrusted(key));
        }
    }
    merkle::verify_inclusion(
        &bundle.leaf_hash,
        index,
        cp.tree_size,
        &bundle.inclusion_proof,
        &cp.root_hash,
    )
    .map_err(|source| VerifyError::InclusionFailed { index, source })?;
    let kind = entry.kind_name();
    let mut lines = vec![
        format!(
            "{kind} at leaf {index} is included in {} at tree size {}",
            cp.origin, cp.tree_size
        ),
        format!(
            "checkpoint signed by {} key {} version {} ({})",
            key.provider, key.key_id, key.version, key.alg
        ),
    ];
    if let LogEntry::RolloutEvent(event) = &entry {
        lines.push(format!("rollout event: {}", event.body));
    }
    if let LogEntry::BatchOrigin(o) = &entry {
        lines.push(origin::describe(index, o));
    }
    if let Some(line) = origin::check_bundle(bundle, &entry, &cp)? {
        lines.push(line);
    }
    Ok(Report {
        lines,
        self_certified: trusted.is_none(),
        unproven: 0,
    })
}

/// Verify a whole-log export.
pub fn verify_export(
    export: &LogExport,
    trusted: Option<&[PublicKeyVersion]>,
) -> Result<Report, VerifyError> {
    if export.format != EXPORT_FORMAT {
        return Err(VerifyError::UnknownFormat(export.format.clone()));
    }
    // Decode every leaf and compute the root at every checkpoint size.
    let mut rotations = Vec::new();
    let mut events = Vec::new();
    let mut hashes: Vec<Hash> = Vec::with_capacity(export.entries.len());
    let mut pruned = export.pruned_hashes.iter();
    let mut empty = Vec::new();
    let mut records = Vec::new();
    let mut spans = origin::Spans::default();
    for (i, bytes) in export.entries.iter().enumerate() {
        let index = u64::try_from(i).unwrap_or(u64::MAX);
        if bytes.is_empty() {
            // Pruned by retention: only its leaf hash remains.
            let hash = pruned.next().ok_or(VerifyError::PrunedHashes)?;
            hashes.push(*hash);
            empty.push(index);
            spans.leaf(index, None)?;
            continue;
        }
        let decoded = LogEntry::decode(bytes);
        if let Ok(entry) = &decoded {
            spans.leaf(index, Some(entry))?;
        }
        match decoded {
            Ok(LogEntry::KeyRotation(k)) => rotations.push((index, k)),
            Ok(LogEntry::RolloutEvent(e)) => events.push((index, e)),
            Ok(LogEntry::Pruned(p)) => records.push((index, p)),
            Ok(_) => {}
            Err(source) => return Err(VerifyError::MalformedEntry { index, source }),
        }
        hashes.push(merkle::leaf_hash(bytes));
    }
    if pruned.next().is_some() {
        return Err(VerifyError::PrunedHashes);
    }
    let attribution = spans.finish()?;
    // Every empty leaf must be listed by a retention record later in the log.
    for &index in &empty {
        let listed = records
            .iter()
            .any(|(at, record)| *at > index && record.covers(index));
        if !listed {
            return Err(VerifyError::UnlistedPrune { index });
        }
    }
    for (index, k) in &rotations {
        let exported = export.public_keys.iter().find(|p| {
            p.provider == k.provider && p.key_id == k.key_id && p.version == k.new_version
        });
        if !exported.is_some_and(|p| p.public_key == k.public_key && p.alg == k.alg) {
            return Err(VerifyError::RotationKeyMismatch {
                index: *index,
                version: k.new_version,
            });
        }
    }
    let available = u64::try_from(hashes.len()).unwrap_or(u64::MAX);
    let mut trusted_set: Option<Vec<PublicKeyVersion>> =
        trusted.map(|t| t.iter().filter(|k| !k.retired).cloned().collect());
    if export.checkpoints.is_empty() {
        // Nothing in the file is signed: it proves nothing, whatever its entries say.
        return Err(VerifyError::NoCheckpoint);
    }
    // First pass: shape and order of the checkpoints themselves.
    let mut parsed = Vec::with_capacity(export.checkpoints.len());
    for (index, signed) in export.checkpoints.iter().enumerate() {
        let cp = Checkpoint::parse(&signed.text)
            .map_err(|source| VerifyError::MalformedCheckpoint { index, source })?;
        if cp.origin != export.origin {
            return Err(VerifyError::OriginMismatch {
                index,
                found: cp.origin,
                expected: export.origin.clone(),
            });
        }
        if let Some(prev) = parsed.last() {
            let prev: &Checkpoint = prev;
            if cp.tree_size <= prev.tree_size {
                return Err(VerifyError::CheckpointOrder {
                    index,
                    size: cp.tree_size,
                    previous: prev.tree_size,
                });
            }
            if let (Some(a), Some(b)) = (prev.timestamp_ns(), cp.timestamp_ns()) {
                if b < a {
                    return Err(VerifyError::TimeOrder { index });
                }
            }
        }
        parsed.push(cp);
    }
    // Second pass: contents, signatures, trust and consistency.
    let mut frontier = Frontier::new();
    let mut previous: Option<(u64, Hash)> = None;
    let mut signers = HashSet::new();
    for (index, (signed, cp)) in export.checkpoints.iter().zip(&parsed).enumerate() {
        if cp.tree_size > available {
            return Err(VerifyError::CheckpointBeyondLog {
                index,
                size: cp.tree_size,
                available,
            });
        }
        while frontier.size() < cp.tree_size {
            let next = usize::try_from(frontier.size()).unwrap_or(usize::MAX);
            match hashes.get(next) {
                Some(h) => frontier.push(*h),
                None => break,
            }
        }
        if frontier.root() != cp.root_hash {
            return Err(VerifyError::CheckpointRootMismatch {
                index,
                size: cp.tree_size,
            });
        }
        let key = check_signature(index, signed, &export.public_keys)?;
        if let Some(set) = trusted_set.as_mut() {
            if !set.iter().any(|t| same_key(t, &key)) {
                return Err(untrusted(&key));
            }
            // Rotations covered by this trusted checkpoint hand trust to their new versions.
            for (leaf, k) in &rotations {
                if *leaf < cp.tree_size && handed_over_key(&key, k).is_some() {
                    if let Some(p) = export.public_keys.iter().find(|p| {
                        p.provider == k.provider
                            && p.key_id == k.key_id
                            && p.version == k.new_version
                            && !p.retired
                    }) {
                        if !set.iter().any(|t| same_key(t, p)) {
                            set.push(p.clone());
                        }
                    }
                }
            }
        }
        signers.insert((key.provider.clone(), key.key_id.clone(), key.version));
        if let Some((prev_size, prev_root)) = previous {
            let step = export
                .consistency
                .get(index - 1)
                .filter(|s| s.from == prev_size && s.to == cp.tree_size)
                .ok_or(VerifyError::ConsistencyShape { index: index - 1 })?;
            merkle::verify_consistency(
                prev_size,
                cp.tree_size,
                &prev_root,
                &cp.root_hash,
                &step.proof,
            )
            .map_err(|source| VerifyError::ConsistencyFailed {
                from: prev_size,
                to: cp.tree_size,
                source,
            })?;
        }
        previous = Some((cp.tree_size, cp.root_hash));
    }
    if export.consistency.len() != export.checkpoints.len().saturating_sub(1) {
        return Err(VerifyError::ConsistencyShape {
            index: export.checkpoints.len().saturating_sub(1),
        });
    }
    let sealed = previous.map_or(0, |(s, _)| s);
    let mut lines = vec![
        format!(
            "{}: {} entries, {} checkpoints, each consistent with the one before",
            export.origin,
            available,
            export.checkpoints.len()
        ),
        format!(
            "{} key rotation(s); {} signing key version(s) used",
            rotations.len(),
            signers.len()
        ),
    ];
    for (index, event) in &events {
        lines.push(format!("rollout event at leaf {index}: {}", event.body));
    }
    lines.extend(attribution);
    if !empty.is_empty() {
        lines.push(format!(
            "{} receipt payload(s) pruned by retention, each listed by a retention record; their leaf hashes still verify: leaves {}",
            empty.len(),
            ranges_text(&empty)
        ));
    }
    if sealed < available {
        lines.push(format!(
            "{} entries after size {sealed} are not covered by a signed checkpoint: unproven",
            available - sealed
        ));
    }
    Ok(Report {
        lines,
        self_certified: trusted.is_none(),
        unproven: available.saturating_sub(sealed),
    })
}

/// A file `verify` accepts.
#[derive(Debug)]
pub enum Verifiable {
    /// A proof bundle.
    Bundle(Box<ProofBundle>),
    /// A log export.
    Export(Box<LogExport>),
}

#[derive(Deserialize)]
struct FormatProbe {
    format: String,
}

/// Parse a bundle or export from JSON, choosing by its `format` field.
pub fn parse(json: &[u8]) -> Result<Verifiable, VerifyError> {
    let probe: FormatProbe =
        serde_json::from_slice(json).map_err(|e| VerifyError::UnknownFormat(e.to_string()))?;
    match probe.format.as_str() {
        BUNDLE_FORMAT => serde_json::from_slice(json)
            .map(|b| Verifiable::Bundle(Box::new(b)))
            .map_err(|e| VerifyError::UnknownFormat(format!("proof bundle: {e}"))),
        EXPORT_FORMAT => serde_json::from_slice(json)
            .map(|e| Verifiable::Export(Box::new(e)))
            .map_err(|e| VerifyError::UnknownFormat(format!("log export: {e}"))),
        other => Err(VerifyError::UnknownFormat(format!("format {other:?}"))),
    }
}

/// Verify a bundle or export given as JSON bytes.
pub fn verify_json(
    json: &[u8],
    trusted: Option<&[PublicKeyVersion]>,
) -> Result<Report, VerifyError> {
    match parse(json)? {
        Verifiable::Bundle(b) => verify_bundle(&b, trusted),
        Verifiable::Export(e) => verify_export(&e, trusted),
    }
}

/// `3..5, 9, 12..20` for ascending `indexes` (half-open ranges, single leaves bare).
fn ranges_text(indexes: &[u64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut run: Option<(u64, u64)> = None;
    let push = |(start, end): (u64, u64), parts: &mut Vec<String>| {
        parts.push(if end == start + 1 {
            start.to_string()
        } else {
            format!("{start}..{end}")
        });
    };
    for &i in indexes {
        run = match run {
            Some((s, e)) if e == i => Some((s, i + 1)),
            Some(r) => {
                push(r, &mut parts);
                Some((i, i + 1))
            }
            None => Some((i, i + 1)),
        };
    }
    if let Some(r) = run {
        push(r, &mut parts);
    }
    parts.join(", ")
}
