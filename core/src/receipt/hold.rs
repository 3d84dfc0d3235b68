//! Legal hold entries: kind 3 places a hold, kind 4 releases one. Both are ordinary log
//! entries, so placing and releasing a hold are themselves signed (covered by a checkpoint)
//! and travel to every witness with the log.
//!
//! Hold placed layout (little-endian): `time_ns` u64, hold id (u8 length + UTF-8), reason
//! (u8 length + UTF-8), selector code u8, selector `from` u64, selector `to` u64, `until_ns`
//! u64 (0: no end date). Hold released: `time_ns` u64, hold id, reason.
//!
//! Selectors (half-open `from..to`): 1 receipt decision time in ns, 2 leaf index (a receipt's
//! id is its leaf index), 3 config epoch (a rollout is held through the config epochs it
//! spans).

use super::wire::{get_text, need, put_text, Reader};
use super::{Receipt, ReceiptError};

/// What a hold pins. In JSON: `{"by": "time", "from_ns", "to_ns"}`, `{"by": "leaves",
/// "from", "to"}` or `{"by": "epochs", "from", "to"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "by", rename_all = "snake_case", deny_unknown_fields)]
pub enum HoldSelector {
    /// Receipts whose decision time is in `from_ns..to_ns`.
    Time {
        /// Start, ns since the epoch (inclusive).
        from_ns: u64,
        /// End, ns since the epoch (exclusive).
        to_ns: u64,
    },
    /// Leaves `from..to` of the log that placed the hold (a receipt id is its leaf index).
    Leaves {
        /// First leaf (inclusive).
        from: u64,
        /// Last leaf (exclusive).
        to: u64,
    },
    /// Receipts decided under config epochs `from..to` (a rollout maps to its epochs).
    Epochs {
        /// First epoch (inclusive).
        from: u64,
        /// Last epoch (exclusive).
        to: u64,
    },
}

impl HoldSelector {
    fn code(self) -> (u8, u64, u64) {
        match self {
            HoldSelector::Time { from_ns, to_ns } => (1, from_ns, to_ns),
            HoldSelector::Leaves { from, to } => (2, from, to),
            HoldSelector::Epochs { from, to } => (3, from, to),
        }
    }

    fn from_code(code: u8, from: u64, to: u64) -> Result<Self, ReceiptError> {
        if from >= to {
            return Err(ReceiptError::InvalidField {
                field: "hold selector range",
                value: from,
            });
        }
        match code {
            1 => Ok(HoldSelector::Time {
                from_ns: from,
                to_ns: to,
            }),
            2 => Ok(HoldSelector::Leaves { from, to }),
            3 => Ok(HoldSelector::Epochs { from, to }),
            _ => Err(ReceiptError::InvalidField {
                field: "hold selector",
                value: u64::from(code),
            }),
        }
    }

    /// Whether the receipt at leaf `index` of the placing log (`own_log`) is pinned.
    pub fn covers(&self, index: u64, receipt: &Receipt, own_log: bool) -> bool {
        match *self {
            HoldSelector::Time { from_ns, to_ns } => (from_ns..to_ns).contains(&receipt.time_ns),
            HoldSelector::Leaves { from, to } => own_log && (from..to).contains(&index),
            HoldSelector::Epochs { from, to } => (from..to).contains(&receipt.config_epoch),
        }
    }
}

/// A legal hold was placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldPlaced {
    /// When, ns since the epoch.
    pub time_ns: u64,
    /// Hold identifier (unique per log).
    pub hold_id: String,
    /// Why (case number, ticket).
    pub reason: String,
    /// What it pins.
    pub selector: HoldSelector,
    /// When it lapses by itself, ns since the epoch; `None` until released.
    pub until_ns: Option<u64>,
}

/// A legal hold was released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldReleased {
    /// When, ns since the epoch.
    pub time_ns: u64,
    /// The hold released.
    pub hold_id: String,
    /// Why.
    pub reason: String,
}

fn end(buf: &[u8], pos: usize) -> Result<(), ReceiptError> {
    if buf.len() > pos {
        return Err(ReceiptError::Oversized {
            what: "hold entry",
            expected: pos,
            actual: buf.len(),
        });
    }
    Ok(())
}

impl HoldPlaced {
    pub(super) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), ReceiptError> {
        let (code, from, to) = self.selector.code();
        HoldSelector::from_code(code, from, to)?;
        out.extend_from_slice(&self.time_ns.to_le_bytes());
        put_text(out, "hold_id", &self.hold_id)?;
        put_text(out, "reason", &self.reason)?;
        out.push(code);
        out.extend_from_slice(&from.to_le_bytes());
        out.extend_from_slice(&to.to_le_bytes());
        out.extend_from_slice(&self.until_ns.unwrap_or(0).to_le_bytes());
        Ok(())
    }

    pub(super) fn decode(buf: &[u8]) -> Result<Self, ReceiptError> {
        let mut r = Reader::new(buf);
        need(buf, 0, 8)?;
        let time_ns = r.u64();
        let hold_id = get_text(&mut r, "hold_id")?;
        let reason = get_text(&mut r, "reason")?;
        need(buf, r.pos, 1 + 8 * 3)?;
        let code = r.u8();
        let from = r.u64();
        let to = r.u64();
        let until = r.u64();
        end(buf, r.pos)?;
        Ok(HoldPlaced {
            time_ns,
            hold_id,
            reason,
            selector: HoldSelector::from_code(code, from, to)?,
            until_ns: (until != 0).then_some(until),
        })
    }
}

impl HoldReleased {
    pub(super) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), ReceiptError> {
        out.extend_from_slice(&self.time_ns.to_le_bytes());
        put_text(out, "hold_id", &self.hold_id)?;
        put_text(out, "reason", &self.reason)
    }

    pub(super) fn decode(buf: &[u8]) -> Result<Self, ReceiptError> {
        let mut r = Reader::new(buf);
        need(buf, 0, 8)?;
        let time_ns = r.u64();
        let hold_id = get_text(&mut r, "hold_id")?;
        let reason = get_text(&mut r, "reason")?;
        end(buf, r.pos)?;
        Ok(HoldReleased {
            time_ns,
            hold_id,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::LogEntry;
    use super::*;

    fn placed() -> HoldPlaced {
        HoldPlaced {
            time_ns: 5,
            hold_id: "case-42".into(),
            reason: "litigation".into(),
            selector: HoldSelector::Epochs { from: 3, to: 5 },
            until_ns: Some(99),
        }
    }

    /// Both hold entries round-trip with kinds 3 and 4; every truncation and an appended byte
    /// are refused.
    #[test]
    fn hold_entries_round_trip_and_refuse_damage() {
        let entries = [
            LogEntry::HoldPlaced(placed()),
            LogEntry::HoldPlaced(HoldPlaced {
                until_ns: None,
                selector: HoldSelector::Time {
                    from_ns: 1,
                    to_ns: 2,
                },
                ..placed()
            }),
            LogEntry::HoldReleased(HoldReleased {
                time_ns: 6,
                hold_id: "case-42".into(),
                reason: "settled".into(),
            }),
        ];
        for e in entries {
            let bytes = e.encode().unwrap();
            assert!(matches!(bytes[0], 3 | 4));
            assert_eq!(LogEntry::decode(&bytes).unwrap(), e);
            for n in 0..bytes.len() {
                assert!(LogEntry::decode(&bytes[..n]).is_err(), "{n}");
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(LogEntry::decode(&long).is_err());
        }
    }

    /// Empty ranges, unknown selectors and empty ids are refused on both sides.
    #[test]
    fn invalid_holds_are_refused() {
        let empty = HoldPlaced {
            selector: HoldSelector::Leaves { from: 4, to: 4 },
            ..placed()
        };
        assert!(LogEntry::HoldPlaced(empty).encode().is_err());
        let no_id = HoldPlaced {
            hold_id: String::new(),
            ..placed()
        };
        assert!(LogEntry::HoldPlaced(no_id).encode().is_err());
        let mut bytes = LogEntry::HoldPlaced(placed()).encode().unwrap();
        let code_at = 1 + 8 + 1 + 7 + 1 + 10;
        bytes[code_at] = 9;
        assert!(LogEntry::decode(&bytes).is_err());
    }
}
