//! JSON export formats: a proof bundle for one receipt and a whole-log export.
//!
//! Both are self-contained for offline checking by `knhk-agent verify` (and by the verifier
//! built from [`crate::verify`] for other hosts). Byte strings and hashes
//! are standard base64. A bundle repeats the tree size and root of its checkpoint, and the leaf
//! hash of its entry, so that tampering with any one field is reported as that field.

use serde::{Deserialize, Serialize};

use crate::b64;
use crate::checkpoint::{PublicKeyVersion, SignatureRecord};
use crate::merkle::Hash;

/// A checkpoint's note text with its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCheckpoint {
    /// C2SP tlog-checkpoint note text, exactly as signed.
    pub text: String,
    /// Signature over `text`.
    pub signature: SignatureRecord,
}

/// `format` value of a proof bundle.
pub const BUNDLE_FORMAT: &str = "knhk-proof-bundle/v1";
/// `format` value of a log export.
pub const EXPORT_FORMAT: &str = "knhk-log-export/v1";

/// Everything needed to check one receipt offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofBundle {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// Leaf index of the entry.
    pub leaf_index: u64,
    /// The leaf bytes (kind byte + entry).
    #[serde(with = "b64::bytes")]
    pub entry: Vec<u8>,
    /// RFC 6962 leaf hash of `entry`.
    #[serde(with = "b64::hash")]
    pub leaf_hash: Hash,
    /// Tree size of the checkpoint.
    pub tree_size: u64,
    /// Root hash of the checkpoint.
    #[serde(with = "b64::hash")]
    pub root_hash: Hash,
    /// Audit path from the leaf to the root.
    #[serde(with = "b64::hashes")]
    pub inclusion_proof: Vec<Hash>,
    /// The signed checkpoint.
    pub checkpoint: SignedCheckpoint,
    /// The public key version that signed it.
    pub public_key: PublicKeyVersion,
    /// C2SP `cosignature/v1` lines of other regions' witnesses over `checkpoint` (see
    /// `crate::quorum`); absent when the bundle cites a checkpoint not yet witnessed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cosignatures: Vec<String>,
    /// For a receipt: the batch origin leaf before it (which pod sent it), proven against the
    /// same checkpoint; absent when its batch carried no origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<OriginProof>,
}

/// A batch origin leaf and its inclusion proof (see [`ProofBundle::origin`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginProof {
    /// Leaf index of the origin entry.
    pub leaf_index: u64,
    /// The leaf bytes (kind 6 + entry).
    #[serde(with = "b64::bytes")]
    pub entry: Vec<u8>,
    /// Audit path from that leaf to the bundle's root.
    #[serde(with = "b64::hashes")]
    pub inclusion_proof: Vec<Hash>,
}

/// A consistency proof between two consecutive checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyStep {
    /// Tree size of the earlier checkpoint.
    pub from: u64,
    /// Tree size of the later checkpoint.
    pub to: u64,
    /// RFC 6962 consistency proof.
    #[serde(with = "b64::hashes")]
    pub proof: Vec<Hash>,
}

/// A whole log: every leaf, every checkpoint, proofs between checkpoints, every key version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogExport {
    /// Always [`EXPORT_FORMAT`].
    pub format: String,
    /// The log's origin line.
    pub origin: String,
    /// Every leaf, in index order.
    #[serde(with = "b64::bytes_list")]
    pub entries: Vec<Vec<u8>>,
    /// Every checkpoint, oldest first.
    pub checkpoints: Vec<SignedCheckpoint>,
    /// One step per pair of consecutive checkpoints.
    pub consistency: Vec<ConsistencyStep>,
    /// Every key version that signed a checkpoint or was introduced by a rotation.
    pub public_keys: Vec<PublicKeyVersion>,
    /// Leaf hashes of the entries pruned by retention (exported as empty bytes), in index
    /// order: roots and proofs still verify without their payloads.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "b64::hashes")]
    pub pruned_hashes: Vec<Hash>,
}
