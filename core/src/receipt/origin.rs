//! Which proxy decided: the serving pod's identity a filter sends in every `KNRB` batch
//! (version 2), and the log entry (kind 6) the agent appends before the batch's receipts.
//!
//! An identity field is 0 to [`MAX_IDENTITY_LEN`] bytes of printable ASCII without spaces
//! (`!`..=`~`): Kubernetes names, node names and addresses all fit, and nothing a console, a
//! log line or a terminal would interpret (control characters, escapes, line breaks) can.
//! Empty means unknown.
//!
//! Batch origin section (after the batch header): pod, namespace, node, each one length byte
//! and its bytes. Log entry layout (little-endian, after the kind byte): `time_ns` u64 (when
//! the agent received the batch), `count` u32 (the receipts that follow this leaf, all from
//! this batch), then pod, namespace, node and `peer` (the address the agent saw the batch
//! come from) in the same text form.

use super::wire::Reader;
use super::ReceiptError;

/// Leaf kind byte of a batch origin.
pub const ENTRY_KIND_BATCH_ORIGIN: u8 = 6;
/// Longest identity field, in bytes (a DNS subdomain, the longest Kubernetes name).
pub const MAX_IDENTITY_LEN: usize = 253;
/// Most bytes an origin section takes in a batch.
pub const MAX_ORIGIN_LEN: usize = 3 * (1 + MAX_IDENTITY_LEN);

/// The serving proxy's identity, as the filter knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// Pod name (Istio: the `POD_NAME` of the sidecar, the node metadata's `NAME`).
    pub pod: String,
    /// Pod namespace (`POD_NAMESPACE`, the node metadata's `NAMESPACE`).
    pub namespace: String,
    /// The Kubernetes node (or host) the pod runs on (`NODE_NAME`).
    pub node: String,
}

/// A batch as decoded: where it came from and its receipts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The sender's identity (empty for a version 1 batch).
    pub origin: Origin,
    /// The decisions, in order.
    pub receipts: Vec<super::Receipt>,
}

/// Log entry: the next `count` leaves are the receipts of one batch from `origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOrigin {
    /// When the agent received the batch, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// Receipts that follow this leaf.
    pub count: u32,
    /// The identity the filter reported.
    pub origin: Origin,
    /// The address the agent received the batch from (empty when unknown).
    pub peer: String,
}

/// `Ok` when `value` is a valid identity field (see the module docs), else `InvalidIdentity`
/// naming `field`.
pub fn check_identity(field: &'static str, value: &str) -> Result<(), ReceiptError> {
    if value.len() <= MAX_IDENTITY_LEN && value.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(ReceiptError::InvalidIdentity {
            field,
            max: MAX_IDENTITY_LEN,
        })
    }
}

fn put_identity(out: &mut Vec<u8>, field: &'static str, value: &str) -> Result<(), ReceiptError> {
    check_identity(field, value)?;
    // At most MAX_IDENTITY_LEN < 256 bytes, checked above.
    out.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(value.as_bytes());
    Ok(())
}

fn get_identity(r: &mut Reader<'_>, field: &'static str) -> Result<String, ReceiptError> {
    let truncated = |expected: usize, actual: usize| ReceiptError::Truncated {
        what: field,
        expected,
        actual,
    };
    if r.buf.len() < r.pos + 1 {
        return Err(truncated(r.pos + 1, r.buf.len()));
    }
    let len = usize::from(r.u8());
    let Some(bytes) = r.buf.get(r.pos..r.pos + len) else {
        return Err(truncated(r.pos + len, r.buf.len()));
    };
    r.pos += len;
    // Printable ASCII is UTF-8; the check runs first so a bad byte is named as such.
    let text = bytes.iter().map(|&b| char::from(b)).collect::<String>();
    check_identity(field, &text)?;
    Ok(text)
}

impl Origin {
    /// An origin from its fields, each checked (see the module docs).
    pub fn new(pod: &str, namespace: &str, node: &str) -> Result<Origin, ReceiptError> {
        check_identity("pod", pod)?;
        check_identity("namespace", namespace)?;
        check_identity("node", node)?;
        Ok(Origin {
            pod: pod.to_owned(),
            namespace: namespace.to_owned(),
            node: node.to_owned(),
        })
    }

    /// True when no field is known.
    pub fn is_empty(&self) -> bool {
        self.pod.is_empty() && self.namespace.is_empty() && self.node.is_empty()
    }

    /// Bytes of the encoded section.
    pub fn encoded_len(&self) -> usize {
        3 + self.pod.len() + self.namespace.len() + self.node.len()
    }

    pub(super) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), ReceiptError> {
        put_identity(out, "pod", &self.pod)?;
        put_identity(out, "namespace", &self.namespace)?;
        put_identity(out, "node", &self.node)
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Origin, ReceiptError> {
        Ok(Origin {
            pod: get_identity(r, "pod")?,
            namespace: get_identity(r, "namespace")?,
            node: get_identity(r, "node")?,
        })
    }
}

impl std::fmt::Display for Origin {
    /// `namespace/pod on node`, with `?` for what is unknown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let or_unknown = |s: &str| {
            if s.is_empty() {
                "?".to_owned()
            } else {
                s.to_owned()
            }
        };
        write!(
            f,
            "{}/{} on {}",
            or_unknown(&self.namespace),
            or_unknown(&self.pod),
            or_unknown(&self.node)
        )
    }
}

impl BatchOrigin {
    pub(super) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), ReceiptError> {
        out.extend_from_slice(&self.time_ns.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        self.origin.encode_into(out)?;
        put_identity(out, "peer", &self.peer)
    }

    pub(super) fn decode(buf: &[u8]) -> Result<BatchOrigin, ReceiptError> {
        if buf.len() < 12 {
            return Err(ReceiptError::Truncated {
                what: "batch origin entry",
                expected: 12,
                actual: buf.len(),
            });
        }
        let mut r = Reader::new(buf);
        let time_ns = r.u64();
        let count = r.u32();
        let origin = Origin::decode(&mut r)?;
        let peer = get_identity(&mut r, "peer")?;
        if buf.len() > r.pos {
            return Err(ReceiptError::Oversized {
                what: "batch origin entry",
                expected: r.pos,
                actual: buf.len(),
            });
        }
        Ok(BatchOrigin {
            time_ns,
            count,
            origin,
            peer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{decode_batch, decode_origin_batch, encode_origin_batch, LogEntry};
    use super::*;
    use crate::receipt::{ReceiptBuilder, BATCH_HEADER_LEN, RECORD_LEN};

    fn origin() -> Origin {
        Origin::new("checkout-7d4f9-x2k8p", "shop", "node-a.internal").unwrap()
    }

    /// A version 2 batch carries its origin and decodes to the same origin and receipts; an
    /// empty origin is three zero bytes.
    #[test]
    fn batches_carry_their_origin() {
        let receipts: Vec<_> = (0..3).map(|i| ReceiptBuilder::new(i).build()).collect();
        let bytes = encode_origin_batch(&origin(), &receipts).unwrap();
        assert_eq!(bytes[4], 2);
        let batch = decode_origin_batch(&bytes).unwrap();
        assert_eq!(batch.origin, origin());
        assert_eq!(batch.receipts, receipts);
        assert_eq!(decode_batch(&bytes).unwrap(), receipts);
        let empty = encode_origin_batch(&Origin::default(), &receipts).unwrap();
        assert_eq!(empty.len(), BATCH_HEADER_LEN + 3 + 3 * RECORD_LEN);
        assert!(decode_origin_batch(&empty).unwrap().origin.is_empty());
    }

    /// Hostile identity text is refused when built and when decoded: control characters, line
    /// breaks, spaces, non-ASCII, over-long fields; a length byte past the end is truncation.
    #[test]
    fn hostile_identities_are_refused() {
        for bad in [
            "pod\nx",
            "pod x",
            "\u{1b}[31mred",
            "pödname",
            "p\0d",
            &"a".repeat(254),
        ] {
            let e = Origin::new(bad, "ns", "node").unwrap_err().to_string();
            assert!(e.contains("pod") && e.contains("253"), "{bad:?}: {e}");
        }
        Origin::new(&"a".repeat(253), "", "").unwrap();
        let receipts = [ReceiptBuilder::new(0).build()];
        let good = encode_origin_batch(&origin(), &receipts).unwrap();
        // Byte 9 is the pod's length; byte 10 its first character.
        let mut tampered = good.clone();
        tampered[10] = b'\n';
        let e = decode_origin_batch(&tampered).unwrap_err().to_string();
        assert!(e.contains("pod"), "{e}");
        let mut long = good.clone();
        long[9] = 250;
        assert!(decode_origin_batch(&long).is_err());
        assert!(decode_origin_batch(&good[..BATCH_HEADER_LEN + 2]).is_err());
        assert!(decode_origin_batch(&good[..good.len() - 1]).is_err());
        let mut extra = good.clone();
        extra.push(0);
        assert!(decode_origin_batch(&extra).is_err());
    }

    /// The log entry round-trips and refuses truncation, trailing bytes and bad text.
    #[test]
    fn origin_entries_round_trip() {
        let entry = BatchOrigin {
            time_ns: 1_700_000_000_000_000_000,
            count: 512,
            origin: origin(),
            peer: "10.0.0.7".into(),
        };
        let bytes = LogEntry::BatchOrigin(entry.clone()).encode().unwrap();
        assert_eq!(bytes[0], ENTRY_KIND_BATCH_ORIGIN);
        assert_eq!(
            LogEntry::decode(&bytes).unwrap(),
            LogEntry::BatchOrigin(entry.clone())
        );
        for cut in 1..bytes.len() {
            assert!(LogEntry::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(b'x');
        assert!(LogEntry::decode(&extra).is_err());
        let bad = BatchOrigin {
            peer: "10.0.0.7\r\n".into(),
            ..entry
        };
        assert!(LogEntry::BatchOrigin(bad).encode().is_err());
        assert_eq!(
            origin().to_string(),
            "shop/checkout-7d4f9-x2k8p on node-a.internal"
        );
        assert_eq!(Origin::default().to_string(), "?/? on ?");
    }
}
