//! Decision receipts: a fixed-layout binary record per decision, the `KNRB` batch the filter
//! posts, and the log entries (receipts and key rotations) that become Merkle leaves.
//!
//! Record layout, version 1, little-endian, [`RECORD_LEN`] = 51 bytes:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version (= 1) |
//! | 1 | 8 | `time_ns` |
//! | 9 | 16 | `key_digest`: first 16 bytes of SHA-256(`len(salt)` u32 BE ‖ salt ‖ key) |
//! | 25 | 1 | route: 0 none, 1 stable, 2 canary |
//! | 26 | 2 | routing bucket (`0..10000`, or [`NO_BUCKET`]) |
//! | 28 | 2 | priority bucket (`0..10000`, or [`NO_BUCKET`]) |
//! | 30 | 1 | requested class: 0 R1, 1 W1, 2 C1 |
//! | 31 | 1 | class served |
//! | 32 | 1 | admission outcome, index in [`Admission::ALL`] |
//! | 33 | 2 | response status (0 when none was sent) |
//! | 35 | 4 | `latency_us` |
//! | 39 | 8 | config epoch |
//! | 47 | 4 | worker id |
//!
//! The raw routing key never enters a receipt: only its salted digest, which is the same hash
//! the bucketing uses ([`crate::bucket`]). The salt is in every filter's configuration, so the
//! agent keys the digest again with a secret of its own before the receipt becomes a leaf
//! (`agent/src/receipts/ingest.rs`): a log or export alone cannot be brute-forced back to keys.

mod entry;
pub mod event;
#[cfg(any(test, feature = "test-util"))]
mod fixture;
mod hold;
mod origin;
mod prune;
mod wire;

pub use entry::{
    KeyRotation, LogEntry, ENTRY_KIND_HOLD_PLACED, ENTRY_KIND_HOLD_RELEASED,
    ENTRY_KIND_KEY_ROTATION, ENTRY_KIND_RECEIPT,
};
pub use event::{RolloutEvent, ENTRY_KIND_ROLLOUT_EVENT};
#[cfg(any(test, feature = "test-util"))]
pub use fixture::ReceiptBuilder;
pub use hold::{HoldPlaced, HoldReleased, HoldSelector};
pub use origin::{
    check_identity, Batch, BatchOrigin, Origin, ENTRY_KIND_BATCH_ORIGIN, MAX_IDENTITY_LEN,
    MAX_ORIGIN_LEN,
};
pub use prune::{PruneRecord, ENTRY_KIND_PRUNED, MAX_PRUNE_RANGES};

use crate::bucket::BUCKETS;
use crate::class::{Class, Route};
use crate::decision::Admission;
use crate::limits::MAX_BATCH_RECORDS;
use wire::Reader;

/// The record format version this build writes and reads.
pub const RECORD_VERSION: u8 = 1;
/// Size of one encoded record.
pub const RECORD_LEN: usize = 51;
/// Bucket value meaning "no routing key".
pub const NO_BUCKET: u16 = u16::MAX;
/// Key digest meaning "no routing key".
pub const NO_KEY: [u8; 16] = [0; 16];

/// Batch magic: the first four bytes of every batch.
pub const BATCH_MAGIC: [u8; 4] = *b"KNRB";
/// The batch format version this build writes: 2 adds the sender's [`Origin`] after the
/// header. Version 1 (no origin) is still read, from filters of older releases.
pub const BATCH_VERSION: u8 = 2;
/// Batch header: magic, version, record count (u32 LE).
pub const BATCH_HEADER_LEN: usize = 9;
/// Largest valid batch in bytes.
pub const MAX_BATCH_LEN: usize = BATCH_HEADER_LEN + MAX_ORIGIN_LEN + MAX_BATCH_RECORDS * RECORD_LEN;

/// Why a record, batch or log entry could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// The input ended before the fixed layout did.
    #[error("truncated {what}: {actual} bytes, need {expected}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The input is longer than the layout it declares.
    #[error("oversized {what}: {actual} bytes, expected {expected}")]
    Oversized {
        /// What was being read.
        what: &'static str,
        /// Bytes expected.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// A record or batch version this build does not know.
    #[error("unknown {what} version {version}")]
    UnknownVersion {
        /// Record or batch.
        what: &'static str,
        /// The version byte found.
        version: u8,
    },
    /// The batch does not start with `KNRB`.
    #[error("not a receipt batch: bad magic")]
    BadMagic,
    /// A batch declares or holds more records than [`MAX_BATCH_RECORDS`].
    #[error("batch of {count} records exceeds the limit of {max}")]
    TooManyRecords {
        /// Records declared or given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// An enumerated field holds a value outside its range.
    #[error("invalid {field} value {value}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// The raw value.
        value: u64,
    },
    /// A log entry kind this build does not know.
    #[error("unknown log entry kind {0}")]
    UnknownEntryKind(u8),
    /// A text field is not UTF-8, is empty, or is longer than its length prefix allows.
    #[error("invalid {field}: must be non-empty UTF-8 of at most {max} bytes")]
    InvalidText {
        /// The field.
        field: &'static str,
        /// Its byte limit.
        max: usize,
    },
    /// An identity field (pod, namespace, node, peer) holds other than printable ASCII, or is
    /// too long.
    #[error("invalid {field}: must be at most {max} bytes of printable ASCII without spaces")]
    InvalidIdentity {
        /// The field.
        field: &'static str,
        /// Its byte limit.
        max: usize,
    },
}

/// One decision, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// Wall-clock time of the decision, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// Salted digest of the routing key ([`key_digest`]); [`NO_KEY`] without one.
    pub key_digest: [u8; 16],
    /// Route set; `None` for excluded requests.
    pub route: Option<Route>,
    /// Routing bucket, or [`NO_BUCKET`].
    pub routing_bucket: u16,
    /// Priority bucket, or [`NO_BUCKET`].
    pub priority: u16,
    /// Class the request asked for.
    pub requested_class: Class,
    /// Class it was served as.
    pub class: Class,
    /// Admission outcome.
    pub admission: Admission,
    /// Response status taken at the log phase (0 when none was sent).
    pub status: u16,
    /// Request latency in microseconds, taken at the log phase.
    pub latency_us: u32,
    /// Signed config epoch in force.
    pub config_epoch: u64,
    /// Worker (VM) that decided.
    pub worker_id: u32,
}

/// The receipt's key digest: the 16-byte keyed SipHash the routing buckets come from
/// ([`crate::bucket`]).
pub fn key_digest(salt: &[u8], key: &[u8]) -> [u8; 16] {
    crate::bucket::buckets(salt, key).key_digest
}

impl Receipt {
    /// The receipt of `decision`, completed at the log phase.
    pub fn of(decision: &crate::decision::Decision, done: Completion) -> Receipt {
        Receipt {
            time_ns: done.time_ns,
            key_digest: decision.buckets.map_or(NO_KEY, |b| b.key_digest),
            route: decision.route,
            routing_bucket: decision.buckets.map_or(NO_BUCKET, |b| b.routing),
            priority: decision.buckets.map_or(NO_BUCKET, |b| b.priority),
            requested_class: decision.requested_class,
            class: decision.class,
            admission: decision.admission,
            status: done.status,
            latency_us: done.latency_us,
            config_epoch: done.config_epoch,
            worker_id: done.worker_id,
        }
    }
}

/// What the log phase adds to a decision to make its receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// Decision time, ns since the Unix epoch.
    pub time_ns: u64,
    /// Response status (0 when none).
    pub status: u16,
    /// Request latency, microseconds.
    pub latency_us: u32,
    /// Config epoch in force.
    pub config_epoch: u64,
    /// Worker (VM) id.
    pub worker_id: u32,
}

fn route_code(route: Option<Route>) -> u8 {
    match route {
        None => 0,
        Some(Route::Stable) => 1,
        Some(Route::Canary) => 2,
    }
}

fn route_from(code: u8) -> Result<Option<Route>, ReceiptError> {
    match code {
        0 => Ok(None),
        1 => Ok(Some(Route::Stable)),
        2 => Ok(Some(Route::Canary)),
        other => Err(ReceiptError::InvalidField {
            field: "route",
            value: u64::from(other),
        }),
    }
}

fn class_from(field: &'static str, code: u8) -> Result<Class, ReceiptError> {
    Class::ALL
        .get(usize::from(code))
        .copied()
        .ok_or(ReceiptError::InvalidField {
            field,
            value: u64::from(code),
        })
}

fn admission_code(a: Admission) -> u8 {
    // Six outcomes: the index always fits.
    u8::try_from(a.index()).unwrap_or(u8::MAX)
}

fn admission_from(code: u8) -> Result<Admission, ReceiptError> {
    Admission::ALL
        .get(usize::from(code))
        .copied()
        .ok_or(ReceiptError::InvalidField {
            field: "admission",
            value: u64::from(code),
        })
}

fn check_bucket(field: &'static str, v: u16) -> Result<u16, ReceiptError> {
    if v < BUCKETS || v == NO_BUCKET {
        Ok(v)
    } else {
        Err(ReceiptError::InvalidField {
            field,
            value: u64::from(v),
        })
    }
}

impl Receipt {
    /// Append the [`RECORD_LEN`]-byte encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(RECORD_VERSION);
        out.extend_from_slice(&self.time_ns.to_le_bytes());
        out.extend_from_slice(&self.key_digest);
        out.push(route_code(self.route));
        out.extend_from_slice(&self.routing_bucket.to_le_bytes());
        out.extend_from_slice(&self.priority.to_le_bytes());
        // Three classes: the index always fits.
        out.push(u8::try_from(self.requested_class.index()).unwrap_or(u8::MAX));
        out.push(u8::try_from(self.class.index()).unwrap_or(u8::MAX));
        out.push(admission_code(self.admission));
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&self.latency_us.to_le_bytes());
        out.extend_from_slice(&self.config_epoch.to_le_bytes());
        out.extend_from_slice(&self.worker_id.to_le_bytes());
    }

    /// The [`RECORD_LEN`]-byte encoding.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut v = Vec::with_capacity(RECORD_LEN);
        self.encode_into(&mut v);
        let mut out = [0u8; RECORD_LEN];
        out.copy_from_slice(&v);
        out
    }

    /// Decode exactly one record; anything shorter, longer, of another version or with an
    /// out-of-range field is refused.
    pub fn decode(buf: &[u8]) -> Result<Receipt, ReceiptError> {
        let Some(&version) = buf.first() else {
            return Err(ReceiptError::Truncated {
                what: "receipt",
                expected: RECORD_LEN,
                actual: 0,
            });
        };
        if version != RECORD_VERSION {
            return Err(ReceiptError::UnknownVersion {
                what: "receipt",
                version,
            });
        }
        if buf.len() < RECORD_LEN {
            return Err(ReceiptError::Truncated {
                what: "receipt",
                expected: RECORD_LEN,
                actual: buf.len(),
            });
        }
        if buf.len() > RECORD_LEN {
            return Err(ReceiptError::Oversized {
                what: "receipt",
                expected: RECORD_LEN,
                actual: buf.len(),
            });
        }
        let mut r = Reader::new(&buf[1..]);
        let time_ns = r.u64();
        let key_digest = r.take::<16>();
        let route = route_from(r.u8())?;
        let routing_bucket = check_bucket("routing_bucket", r.u16())?;
        let priority = check_bucket("priority", r.u16())?;
        let requested_class = class_from("requested_class", r.u8())?;
        let class = class_from("class", r.u8())?;
        let admission = admission_from(r.u8())?;
        Ok(Receipt {
            time_ns,
            key_digest,
            route,
            routing_bucket,
            priority,
            requested_class,
            class,
            admission,
            status: r.u16(),
            latency_us: r.u32(),
            config_epoch: r.u64(),
            worker_id: r.u32(),
        })
    }
}

/// Encode a batch without an origin (see [`encode_origin_batch`]).
pub fn encode_batch(records: &[Receipt]) -> Result<Vec<u8>, ReceiptError> {
    encode_origin_batch(&Origin::default(), records)
}

/// Encode a batch: `KNRB`, version 2, count (u32 LE), the origin section, then the records.
pub fn encode_origin_batch(origin: &Origin, records: &[Receipt]) -> Result<Vec<u8>, ReceiptError> {
    if records.len() > MAX_BATCH_RECORDS {
        return Err(ReceiptError::TooManyRecords {
            count: records.len(),
            max: MAX_BATCH_RECORDS,
        });
    }
    let mut out =
        Vec::with_capacity(BATCH_HEADER_LEN + origin.encoded_len() + records.len() * RECORD_LEN);
    out.extend_from_slice(&BATCH_MAGIC);
    out.push(BATCH_VERSION);
    // Bounded by MAX_BATCH_RECORDS above.
    out.extend_from_slice(
        &u32::try_from(records.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    origin.encode_into(&mut out)?;
    for r in records {
        r.encode_into(&mut out);
    }
    Ok(out)
}

/// The receipts of a batch, without its origin (see [`decode_origin_batch`]).
pub fn decode_batch(buf: &[u8]) -> Result<Vec<Receipt>, ReceiptError> {
    decode_origin_batch(buf).map(|b| b.receipts)
}

/// Decode a batch of version 1 or 2. The length must be exactly the header, the origin
/// section (version 2) and `count` records, `count` at most [`MAX_BATCH_RECORDS`], and every
/// field valid; otherwise nothing is returned.
pub fn decode_origin_batch(buf: &[u8]) -> Result<Batch, ReceiptError> {
    if buf.len() < BATCH_HEADER_LEN {
        return Err(ReceiptError::Truncated {
            what: "batch header",
            expected: BATCH_HEADER_LEN,
            actual: buf.len(),
        });
    }
    let mut r = Reader::new(buf);
    if r.take::<4>() != BATCH_MAGIC {
        return Err(ReceiptError::BadMagic);
    }
    let version = r.u8();
    if version != 1 && version != BATCH_VERSION {
        return Err(ReceiptError::UnknownVersion {
            what: "batch",
            version,
        });
    }
    let count = usize::try_from(r.u32()).unwrap_or(usize::MAX);
    if count > MAX_BATCH_RECORDS {
        return Err(ReceiptError::TooManyRecords {
            count,
            max: MAX_BATCH_RECORDS,
        });
    }
    let origin = if version == 1 {
        Origin::default()
    } else {
        Origin::decode(&mut r)?
    };
    let body = r.pos;
    let expected = body + count * RECORD_LEN;
    if buf.len() < expected {
        return Err(ReceiptError::Truncated {
            what: "batch",
            expected,
            actual: buf.len(),
        });
    }
    if buf.len() > expected {
        return Err(ReceiptError::Oversized {
            what: "batch",
            expected,
            actual: buf.len(),
        });
    }
    let receipts = buf[body..]
        .chunks_exact(RECORD_LEN)
        .map(Receipt::decode)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Batch { origin, receipts })
}

#[cfg(test)]
mod tests;
