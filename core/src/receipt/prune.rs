//! Kind 5: a retention record — the leaves whose receipt payloads a retention run prunes,
//! appended to the log before they are pruned. A verifier then accepts an empty (pruned) leaf
//! only when a record later in the log lists it, so turning a rollout event, hold or key
//! rotation into a "pruned" leaf in an export is caught: the record would have to be forged
//! into the signed tree.
//!
//! Layout (little-endian): `time_ns` u64, `cutoff_ns` u64 (receipts decided before it were
//! due), range count u32 (1..=[`MAX_PRUNE_RANGES`]), then per range `start` u64 and `end` u64:
//! half-open `[start, end)`, non-empty, ascending and disjoint.

use super::wire::{need, Reader};
use super::ReceiptError;

/// Leaf kind byte of a retention record.
pub const ENTRY_KIND_PRUNED: u8 = 5;
/// Ranges one record may list (a run that prunes more writes several records).
pub const MAX_PRUNE_RANGES: usize = 4096;

/// Leaves a retention run pruned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneRecord {
    /// When the run happened, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// Receipts decided before this instant were due.
    pub cutoff_ns: u64,
    /// Half-open leaf ranges, ascending and disjoint.
    pub ranges: Vec<(u64, u64)>,
}

impl PruneRecord {
    /// Records listing `indexes` (ascending, distinct), at most [`MAX_PRUNE_RANGES`] ranges
    /// each; none when `indexes` is empty.
    pub fn covering(time_ns: u64, cutoff_ns: u64, indexes: &[u64]) -> Vec<PruneRecord> {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for &i in indexes {
            match ranges.last_mut() {
                Some((_, end)) if *end == i => *end = i + 1,
                _ => ranges.push((i, i + 1)),
            }
        }
        ranges
            .chunks(MAX_PRUNE_RANGES)
            .map(|chunk| PruneRecord {
                time_ns,
                cutoff_ns,
                ranges: chunk.to_vec(),
            })
            .collect()
    }

    /// Whether leaf `index` is listed.
    pub fn covers(&self, index: u64) -> bool {
        let at = self.ranges.partition_point(|&(_, end)| end <= index);
        self.ranges
            .get(at)
            .is_some_and(|&(start, _)| start <= index)
    }

    /// Leaves listed.
    pub fn count(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    pub(super) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), ReceiptError> {
        self.check()?;
        out.extend_from_slice(&self.time_ns.to_le_bytes());
        out.extend_from_slice(&self.cutoff_ns.to_le_bytes());
        out.extend_from_slice(
            &u32::try_from(self.ranges.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        for (start, end) in &self.ranges {
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&end.to_le_bytes());
        }
        Ok(())
    }

    fn check(&self) -> Result<(), ReceiptError> {
        let n = self.ranges.len();
        if n == 0 || n > MAX_PRUNE_RANGES {
            return Err(ReceiptError::InvalidField {
                field: "prune range count",
                value: u64::try_from(n).unwrap_or(u64::MAX),
            });
        }
        let mut floor = 0;
        for &(start, end) in &self.ranges {
            if start < floor || end <= start {
                return Err(ReceiptError::InvalidField {
                    field: "prune range",
                    value: start,
                });
            }
            floor = end;
        }
        Ok(())
    }

    pub(super) fn decode(buf: &[u8]) -> Result<PruneRecord, ReceiptError> {
        need(buf, 0, 20)?;
        let mut r = Reader::new(buf);
        let time_ns = r.u64();
        let cutoff_ns = r.u64();
        let n = r.u32() as usize;
        if n == 0 || n > MAX_PRUNE_RANGES {
            return Err(ReceiptError::InvalidField {
                field: "prune range count",
                value: n as u64,
            });
        }
        let end = 20 + n * 16;
        need(buf, 0, end)?;
        if buf.len() > end {
            return Err(ReceiptError::Oversized {
                what: "retention record",
                expected: end,
                actual: buf.len(),
            });
        }
        let ranges = (0..n).map(|_| (r.u64(), r.u64())).collect();
        let record = PruneRecord {
            time_ns,
            cutoff_ns,
            ranges,
        };
        record.check()?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::super::LogEntry;
    use super::*;

    /// Indexes become ascending ranges, chunked; `covers` is exact; the entry round-trips and
    /// malformed ones (empty, overlapping, descending, truncated, trailing bytes) are refused.
    #[test]
    fn ranges_round_trip_and_are_checked() {
        let records = PruneRecord::covering(9, 5, &[1, 2, 3, 7, 9, 10]);
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(r.ranges, vec![(1, 4), (7, 8), (9, 11)]);
        assert_eq!(r.count(), 6);
        for i in 0..12 {
            assert_eq!(r.covers(i), [1, 2, 3, 7, 9, 10].contains(&i), "{i}");
        }
        let bytes = LogEntry::Pruned(r.clone()).encode().unwrap();
        assert_eq!(bytes[0], ENTRY_KIND_PRUNED);
        assert_eq!(
            LogEntry::decode(&bytes).unwrap(),
            LogEntry::Pruned(r.clone())
        );
        let many: Vec<u64> = (0..(MAX_PRUNE_RANGES as u64 + 1)).map(|i| i * 2).collect();
        assert_eq!(PruneRecord::covering(0, 0, &many).len(), 2);
        assert!(PruneRecord::covering(0, 0, &[]).is_empty());
        for ranges in [
            vec![],
            vec![(3, 3)],
            vec![(4, 6), (5, 7)],
            vec![(8, 9), (1, 2)],
        ] {
            let bad = PruneRecord {
                time_ns: 0,
                cutoff_ns: 0,
                ranges,
            };
            assert!(LogEntry::Pruned(bad).encode().is_err());
        }
        assert!(LogEntry::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(LogEntry::decode(&long).is_err());
        let mut overlapping = bytes.clone();
        overlapping[21 + 16..21 + 24].copy_from_slice(&2u64.to_le_bytes());
        assert!(LogEntry::decode(&overlapping).is_err());
    }
}
