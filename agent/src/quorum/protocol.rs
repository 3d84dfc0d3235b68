//! The witness protocol, JSON over HTTP, modelled on C2SP `tlog-witness` `add-checkpoint`.
//!
//! `POST /v1/witness/add-checkpoint` with an [`AddCheckpoint`] body: the old size the log
//! believes the witness holds, an RFC 6962 consistency proof from it, the signed checkpoint,
//! and the leaves `old_size..tree_size` (which the witness stores, and re-hashes to check the
//! root; a leaf pruned by retention travels as its hash in `pruned_hashes`). Answers, as in C2SP: `200` with a [`Cosigned`] body; `404` unknown origin; `403` bad
//! signature; `409` old size mismatch (body carries the witnessed `size`), fork or rollback;
//! `422` bad consistency proof; `400` malformed; `413` too large. Every refusal body is a
//! [`Refusal`] whose `code` names the error.

use knhk_core::merkle::Hash;
use serde::{Deserialize, Serialize};

use crate::receipts::SignedCheckpoint;
use knhk_core::b64;

/// Path of the add-checkpoint call.
pub const ADD_CHECKPOINT_PATH: &str = "/v1/witness/add-checkpoint";
/// Most consistency proof hashes (C2SP allows 63).
pub const MAX_PROOF_LEN: usize = 63;
/// Most leaves one request may carry; catch-up steps through the log's checkpoints.
pub const MAX_ENTRIES_PER_REQUEST: u64 = 50_000;
/// Largest request body.
pub const MAX_REQUEST_LEN: usize = 8 * 1024 * 1024;
/// Largest single leaf.
pub const MAX_ENTRY_LEN: usize = 4096;

/// Body of `POST /v1/witness/add-checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddCheckpoint {
    /// Size the log believes the witness last cosigned (0 the first time).
    pub old_size: u64,
    /// RFC 6962 consistency proof from `old_size` to the checkpoint's size.
    #[serde(with = "b64::hashes")]
    pub consistency: Vec<Hash>,
    /// The log's signed checkpoint.
    pub checkpoint: SignedCheckpoint,
    /// Leaves `old_size..tree_size`, base64; a leaf pruned by retention is empty.
    #[serde(with = "b64::bytes_list")]
    pub entries: Vec<Vec<u8>>,
    /// Leaf hashes of the empty (pruned) entries, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "b64::hashes")]
    pub pruned_hashes: Vec<Hash>,
}

/// Answer to an accepted checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cosigned {
    /// Tree size cosigned.
    pub tree_size: u64,
    /// The C2SP `cosignature/v1` note signature line (with its newline).
    pub cosignature: String,
}

/// Body of every witness refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Human-readable reason.
    pub error: String,
    /// Stable code: `unknown_origin`, `bad_signature`, `rollback`, `fork`,
    /// `old_size_mismatch`, `bad_proof`, `malformed`, `too_large`, `internal`.
    pub code: String,
    /// The witnessed tree size, on `old_size_mismatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}
