//! Rollout events as log entries: every promotion, pause, resume, abort, rollback and flag
//! change of a rollout is a leaf of the same Merkle log as the decisions it was based on, so a
//! signed checkpoint vouches for both.
//!
//! Layout (after the kind byte [`ENTRY_KIND_ROLLOUT_EVENT`]): `time_ns` u64 LE, body length
//! u32 LE, body: a UTF-8 JSON object written by the agent (rollout id, action, gates, weights,
//! the cited window of receipt leaves and the analysis figures). The core checks the framing
//! and that the body is a JSON object; the agent gives the object its meaning.

use super::wire::Reader;
use super::ReceiptError;

/// Leaf kind byte of a rollout event.
pub const ENTRY_KIND_ROLLOUT_EVENT: u8 = 2;
/// Largest event body accepted, bytes.
pub const MAX_EVENT_BODY: usize = 16 * 1024;

/// One rollout event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutEvent {
    /// When it happened, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// The event as a JSON object.
    pub body: String,
}

fn body_error(len: usize) -> ReceiptError {
    ReceiptError::InvalidField {
        field: "rollout event body",
        value: u64::try_from(len).unwrap_or(u64::MAX),
    }
}

fn is_object(body: &str) -> bool {
    matches!(
        serde_json::from_slice::<serde_json::Value>(body.as_bytes()),
        Ok(serde_json::Value::Object(_))
    )
}

impl RolloutEvent {
    /// Append the encoded event (without the kind byte).
    pub(super) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), ReceiptError> {
        let len = self.body.len();
        if len == 0 || len > MAX_EVENT_BODY || !is_object(&self.body) {
            return Err(body_error(len));
        }
        out.extend_from_slice(&self.time_ns.to_le_bytes());
        out.extend_from_slice(
            &u32::try_from(len)
                .map_err(|_| body_error(len))?
                .to_le_bytes(),
        );
        out.extend_from_slice(self.body.as_bytes());
        Ok(())
    }

    /// Decode an event (without the kind byte); refuses truncation, trailing bytes, oversized
    /// bodies and bodies that are not a JSON object.
    pub(super) fn decode(buf: &[u8]) -> Result<RolloutEvent, ReceiptError> {
        if buf.len() < 12 {
            return Err(ReceiptError::Truncated {
                what: "rollout event",
                expected: 12,
                actual: buf.len(),
            });
        }
        let mut r = Reader::new(buf);
        let time_ns = r.u64();
        let len = usize::try_from(r.u32()).unwrap_or(usize::MAX);
        if len == 0 || len > MAX_EVENT_BODY {
            return Err(body_error(len));
        }
        let end = 12 + len;
        if buf.len() < end {
            return Err(ReceiptError::Truncated {
                what: "rollout event",
                expected: end,
                actual: buf.len(),
            });
        }
        if buf.len() > end {
            return Err(ReceiptError::Oversized {
                what: "rollout event",
                expected: end,
                actual: buf.len(),
            });
        }
        let body = core::str::from_utf8(&buf[12..end]).map_err(|_| body_error(len))?;
        if !is_object(body) {
            return Err(body_error(len));
        }
        Ok(RolloutEvent {
            time_ns,
            body: body.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::LogEntry;
    use super::*;

    /// An event round-trips through a log entry; truncated, padded, oversized and non-object
    /// bodies are refused on both encode and decode.
    #[test]
    fn events_round_trip_and_hostile_input_is_refused() {
        let event = RolloutEvent {
            time_ns: 42,
            body: r#"{"action":"rollback","rollout":"r1"}"#.to_owned(),
        };
        let leaf = LogEntry::RolloutEvent(event.clone()).encode().unwrap();
        assert_eq!(leaf[0], ENTRY_KIND_ROLLOUT_EVENT);
        assert_eq!(
            LogEntry::decode(&leaf).unwrap(),
            LogEntry::RolloutEvent(event)
        );
        assert!(matches!(
            LogEntry::decode(&leaf[..leaf.len() - 1]),
            Err(ReceiptError::Truncated { .. })
        ));
        let mut padded = leaf.clone();
        padded.push(0);
        assert!(matches!(
            LogEntry::decode(&padded),
            Err(ReceiptError::Oversized { .. })
        ));
        for body in ["", "[1]", "not json", &"x".repeat(MAX_EVENT_BODY + 1)] {
            let bad = RolloutEvent {
                time_ns: 1,
                body: body.to_owned(),
            };
            assert!(LogEntry::RolloutEvent(bad).encode().is_err(), "{body:.20}");
        }
        let mut forged = vec![ENTRY_KIND_ROLLOUT_EVENT];
        forged.extend_from_slice(&1u64.to_le_bytes());
        forged.extend_from_slice(&3u32.to_le_bytes());
        forged.extend_from_slice(b"[1]");
        assert!(LogEntry::decode(&forged).is_err());
        let mut huge = vec![ENTRY_KIND_ROLLOUT_EVENT];
        huge.extend_from_slice(&1u64.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(LogEntry::decode(&huge).is_err());
    }
}
