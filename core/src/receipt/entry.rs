//! Log entries: what one Merkle leaf holds. A leaf is `kind` (one byte) followed by the entry.
//!
//! Kind 2 is a [`RolloutEvent`](super::RolloutEvent) (see [`super::event`]).
//!
//! Kind 0 is a decision [`Receipt`] in its fixed layout. Kind 1 is a [`KeyRotation`]: the
//! signing key moved to a new version, whose public key is recorded so an auditor who trusts
//! the old version can learn the new one from the log itself (the checkpoint that covers the
//! rotation entry is signed by the old version).
//!
//! Kind 6 is a [`BatchOrigin`](super::BatchOrigin): the pod whose batch the next leaves are
//! (see [`super::origin`]).
//!
//! Kinds 3 and 4 place and release a legal hold (see [`super::hold`]); kind 5 records the
//! leaves a retention run prunes (see [`super::prune`]).
//!
//! Key rotation layout (little-endian): `time_ns` u64, provider (u8 length + UTF-8), key id
//! (u8 length + UTF-8), algorithm u8 (see [`Alg::code`]), previous version u32, new version
//! u32, public key (u16 length + bytes).

use super::event::{RolloutEvent, ENTRY_KIND_ROLLOUT_EVENT};
use super::hold::{HoldPlaced, HoldReleased};
use super::origin::{BatchOrigin, ENTRY_KIND_BATCH_ORIGIN};
use super::prune::{PruneRecord, ENTRY_KIND_PRUNED};
use super::wire::{get_text, need, put_text, Reader};
use super::{Receipt, ReceiptError, RECORD_LEN};
use crate::checkpoint::Alg;

/// Leaf kind byte of a decision receipt.
pub const ENTRY_KIND_RECEIPT: u8 = 0;
/// Leaf kind byte of a key rotation.
pub const ENTRY_KIND_KEY_ROTATION: u8 = 1;
// Kind 2 is reserved (rollout events).
/// Leaf kind byte of a legal hold being placed (see [`HoldPlaced`]).
pub const ENTRY_KIND_HOLD_PLACED: u8 = 3;
/// Leaf kind byte of a legal hold being released.
pub const ENTRY_KIND_HOLD_RELEASED: u8 = 4;

/// Longest public key a rotation entry may carry (an uncompressed SEC1 P-256 point is 65).
const MAX_PUBLIC_KEY_LEN: usize = 1024;

/// A signing key moved to a new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRotation {
    /// When the rotation happened, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// Signing provider (`local`, `transit`, …).
    pub provider: String,
    /// Key identifier within the provider.
    pub key_id: String,
    /// Algorithm of the new version.
    pub alg: Alg,
    /// Version signatures used before.
    pub previous_version: u32,
    /// Version signatures use from now on.
    pub new_version: u32,
    /// Public key of the new version (raw Ed25519, or SEC1 P-256).
    pub public_key: Vec<u8>,
}

/// What one Merkle leaf holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEntry {
    /// A routing/admission decision.
    Receipt(Receipt),
    /// A signing key rotation.
    KeyRotation(KeyRotation),
    /// A rollout promotion, pause, resume, abort, rollback or flag change.
    RolloutEvent(RolloutEvent),
    /// A legal hold was placed.
    HoldPlaced(HoldPlaced),
    /// A legal hold was released.
    HoldReleased(HoldReleased),
    /// A retention run pruned these leaves' receipt payloads.
    Pruned(PruneRecord),
    /// The next leaves are one batch's receipts, from this pod.
    BatchOrigin(BatchOrigin),
}

impl KeyRotation {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), ReceiptError> {
        out.extend_from_slice(&self.time_ns.to_le_bytes());
        put_text(out, "provider", &self.provider)?;
        put_text(out, "key_id", &self.key_id)?;
        out.push(self.alg.code());
        out.extend_from_slice(&self.previous_version.to_le_bytes());
        out.extend_from_slice(&self.new_version.to_le_bytes());
        let len = u16::try_from(self.public_key.len())
            .ok()
            .filter(|l| *l > 0 && usize::from(*l) <= MAX_PUBLIC_KEY_LEN)
            .ok_or(ReceiptError::InvalidField {
                field: "public_key length",
                value: u64::try_from(self.public_key.len()).unwrap_or(u64::MAX),
            })?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&self.public_key);
        Ok(())
    }

    fn decode(buf: &[u8]) -> Result<KeyRotation, ReceiptError> {
        let mut r = Reader::new(buf);
        need(buf, 0, 8)?;
        let time_ns = r.u64();
        let provider = get_text(&mut r, "provider")?;
        let key_id = get_text(&mut r, "key_id")?;
        need(buf, r.pos, 1 + 4 + 4 + 2)?;
        let code = r.u8();
        let alg = Alg::from_code(code).ok_or(ReceiptError::InvalidField {
            field: "alg",
            value: u64::from(code),
        })?;
        let previous_version = r.u32();
        let new_version = r.u32();
        let len = usize::from(r.u16());
        if len == 0 || len > MAX_PUBLIC_KEY_LEN {
            return Err(ReceiptError::InvalidField {
                field: "public_key length",
                value: u64::try_from(len).unwrap_or(u64::MAX),
            });
        }
        need(buf, r.pos, len)?;
        let public_key = buf[r.pos..r.pos + len].to_vec();
        let end = r.pos + len;
        if buf.len() > end {
            return Err(ReceiptError::Oversized {
                what: "key rotation entry",
                expected: end,
                actual: buf.len(),
            });
        }
        Ok(KeyRotation {
            time_ns,
            provider,
            key_id,
            alg,
            previous_version,
            new_version,
            public_key,
        })
    }
}

impl LogEntry {
    /// What this entry is, in words (`receipt`, `key rotation entry`, …), as reports name it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            LogEntry::Receipt(_) => "receipt",
            LogEntry::KeyRotation(_) => "key rotation entry",
            LogEntry::RolloutEvent(_) => "rollout event",
            LogEntry::HoldPlaced(_) => "legal hold placement",
            LogEntry::HoldReleased(_) => "legal hold release",
            LogEntry::Pruned(_) => "retention record",
            LogEntry::BatchOrigin(_) => "batch origin",
        }
    }

    /// The leaf bytes: kind, then the entry.
    pub fn encode(&self) -> Result<Vec<u8>, ReceiptError> {
        match self {
            LogEntry::Receipt(r) => {
                let mut out = Vec::with_capacity(1 + RECORD_LEN);
                out.push(ENTRY_KIND_RECEIPT);
                r.encode_into(&mut out);
                Ok(out)
            }
            LogEntry::KeyRotation(k) => {
                let mut out = Vec::with_capacity(64 + k.public_key.len());
                out.push(ENTRY_KIND_KEY_ROTATION);
                k.encode_into(&mut out)?;
                Ok(out)
            }
            LogEntry::RolloutEvent(e) => {
                let mut out = Vec::with_capacity(13 + e.body.len());
                out.push(ENTRY_KIND_ROLLOUT_EVENT);
                e.encode_into(&mut out)?;
                Ok(out)
            }
            LogEntry::HoldPlaced(h) => {
                let mut out = vec![ENTRY_KIND_HOLD_PLACED];
                h.encode_into(&mut out)?;
                Ok(out)
            }
            LogEntry::HoldReleased(h) => {
                let mut out = vec![ENTRY_KIND_HOLD_RELEASED];
                h.encode_into(&mut out)?;
                Ok(out)
            }
            LogEntry::Pruned(p) => {
                let mut out = Vec::with_capacity(21 + 16 * p.ranges.len());
                out.push(ENTRY_KIND_PRUNED);
                p.encode_into(&mut out)?;
                Ok(out)
            }
            LogEntry::BatchOrigin(o) => {
                let mut out = Vec::with_capacity(16 + o.origin.encoded_len() + o.peer.len());
                out.push(ENTRY_KIND_BATCH_ORIGIN);
                o.encode_into(&mut out)?;
                Ok(out)
            }
        }
    }

    /// Decode leaf bytes; unknown kinds and malformed entries are refused.
    pub fn decode(buf: &[u8]) -> Result<LogEntry, ReceiptError> {
        match buf.split_first() {
            None => Err(ReceiptError::Truncated {
                what: "log entry",
                expected: 1,
                actual: 0,
            }),
            Some((&ENTRY_KIND_RECEIPT, rest)) => Receipt::decode(rest).map(LogEntry::Receipt),
            Some((&ENTRY_KIND_KEY_ROTATION, rest)) => {
                KeyRotation::decode(rest).map(LogEntry::KeyRotation)
            }
            Some((&ENTRY_KIND_ROLLOUT_EVENT, rest)) => {
                RolloutEvent::decode(rest).map(LogEntry::RolloutEvent)
            }
            Some((&ENTRY_KIND_HOLD_PLACED, rest)) => {
                HoldPlaced::decode(rest).map(LogEntry::HoldPlaced)
            }
            Some((&ENTRY_KIND_HOLD_RELEASED, rest)) => {
                HoldReleased::decode(rest).map(LogEntry::HoldReleased)
            }
            Some((&ENTRY_KIND_PRUNED, rest)) => PruneRecord::decode(rest).map(LogEntry::Pruned),
            Some((&ENTRY_KIND_BATCH_ORIGIN, rest)) => {
                BatchOrigin::decode(rest).map(LogEntry::BatchOrigin)
            }
            Some((&kind, _)) => Err(ReceiptError::UnknownEntryKind(kind)),
        }
    }
}
