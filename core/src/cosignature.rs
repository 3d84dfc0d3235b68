//! Witness cosignatures in the C2SP `tlog-cosignature` Ed25519 (`cosignature/v1`) format.
//!
//! A cosignature is a signed-note signature line over a checkpoint's note text:
//!
//! ```text
//! — <witness name> base64(key ID (4 bytes) ‖ timestamp (u64 BE, POSIX seconds) ‖ Ed25519 signature (64 bytes))
//! ```
//!
//! The key ID is `SHA-256(<name> ‖ "\n" ‖ 0x04 ‖ public key)[:4]`. The signed message is
//! `"cosignature/v1\n" ‖ "time <timestamp>\n" ‖ <checkpoint note text>`. A verifier is
//! configured with (name, public key) pairs and ignores lines from other names or key IDs.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::checkpoint::{verify_with_key, Alg, CheckpointError};

/// Signature type byte of Ed25519 cosignatures in the key ID computation.
pub const ED25519_COSIGNATURE_TYPE: u8 = 0x04;
/// Header line of the signed message (without its newline).
pub const COSIGNATURE_HEADER: &str = "cosignature/v1";
/// The em dash that opens every note signature line.
pub const SIGNATURE_LINE_PREFIX: &str = "\u{2014} ";
/// Largest timestamp allowed by the specification (2^63 - 1).
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;
/// Longest witness name accepted.
pub const MAX_NAME_LEN: usize = 255;

/// Why a cosignature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CosignatureError {
    /// The line is not `— <name> <base64>` with 76 bytes of signature blob.
    #[error("malformed cosignature line: {0}")]
    Malformed(&'static str),
    /// The witness name is empty, too long, or holds whitespace or `+`.
    #[error("invalid witness name")]
    InvalidName,
    /// The line names another witness or key than the one it is checked against.
    #[error("cosignature is from {found:?}, not from the expected witness key {expected:?}")]
    WrongKey {
        /// Name on the line.
        found: String,
        /// Name expected.
        expected: String,
    },
    /// The timestamp exceeds 2^63 - 1.
    #[error("cosignature timestamp out of range")]
    TimestampRange,
    /// The signature does not verify.
    #[error("cosignature does not verify: {0}")]
    BadSignature(CheckpointError),
}

/// A witness identity: its name and Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessKey {
    /// Key name, a schema-less URL such as `knhk.example/witness/eu`.
    pub name: String,
    /// Raw 32-byte Ed25519 public key, base64 in JSON.
    #[serde(with = "crate::b64::bytes")]
    pub public_key: Vec<u8>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '+')
}

impl WitnessKey {
    /// The 4-byte key ID of this witness key.
    pub fn key_id(&self) -> [u8; 4] {
        let mut h = Sha256::new();
        h.update(self.name.as_bytes());
        h.update(b"\n");
        h.update([ED25519_COSIGNATURE_TYPE]);
        h.update(&self.public_key);
        let d = h.finalize();
        [d[0], d[1], d[2], d[3]]
    }

    /// Check that `line` is a valid cosignature by this key over `checkpoint_text`.
    pub fn verify(
        &self,
        checkpoint_text: &str,
        line: &Cosignature,
    ) -> Result<(), CosignatureError> {
        if line.name != self.name || line.key_id != self.key_id() {
            return Err(CosignatureError::WrongKey {
                found: line.name.clone(),
                expected: self.name.clone(),
            });
        }
        let msg = signed_message(checkpoint_text, line.timestamp)?;
        verify_with_key(
            Alg::Ed25519,
            &self.public_key,
            msg.as_bytes(),
            &line.signature,
        )
        .map_err(CosignatureError::BadSignature)
    }
}

/// The message a `cosignature/v1` signs: header line, time line, then the checkpoint text.
pub fn signed_message(checkpoint_text: &str, timestamp: u64) -> Result<String, CosignatureError> {
    if timestamp > MAX_TIMESTAMP {
        return Err(CosignatureError::TimestampRange);
    }
    Ok(format!(
        "{COSIGNATURE_HEADER}\ntime {timestamp}\n{checkpoint_text}"
    ))
}

/// One parsed cosignature line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosignature {
    /// Witness name.
    pub name: String,
    /// Key ID (see [`WitnessKey::key_id`]).
    pub key_id: [u8; 4],
    /// POSIX seconds when the witness cosigned.
    pub timestamp: u64,
    /// Ed25519 signature over [`signed_message`].
    pub signature: [u8; 64],
}

impl Cosignature {
    /// Build from parts; the name is validated.
    pub fn new(
        key: &WitnessKey,
        timestamp: u64,
        signature: [u8; 64],
    ) -> Result<Self, CosignatureError> {
        if !valid_name(&key.name) {
            return Err(CosignatureError::InvalidName);
        }
        if timestamp > MAX_TIMESTAMP {
            return Err(CosignatureError::TimestampRange);
        }
        Ok(Cosignature {
            name: key.name.clone(),
            key_id: key.key_id(),
            timestamp,
            signature,
        })
    }

    /// The note signature line, with its final newline.
    pub fn to_line(&self) -> String {
        let mut blob = Vec::with_capacity(76);
        blob.extend_from_slice(&self.key_id);
        blob.extend_from_slice(&self.timestamp.to_be_bytes());
        blob.extend_from_slice(&self.signature);
        format!(
            "{SIGNATURE_LINE_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(blob)
        )
    }

    /// Parse one signature line (with or without its final newline).
    pub fn parse_line(line: &str) -> Result<Self, CosignatureError> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let rest = line
            .strip_prefix(SIGNATURE_LINE_PREFIX)
            .ok_or(CosignatureError::Malformed("missing the em dash prefix"))?;
        let (name, blob) = rest
            .split_once(' ')
            .ok_or(CosignatureError::Malformed("missing the signature"))?;
        if !valid_name(name) {
            return Err(CosignatureError::InvalidName);
        }
        let blob = STANDARD
            .decode(blob)
            .map_err(|_| CosignatureError::Malformed("signature is not base64"))?;
        if blob.len() != 4 + 8 + 64 {
            return Err(CosignatureError::Malformed(
                "signature blob is not 76 bytes (key ID, timestamp, Ed25519 signature)",
            ));
        }
        let mut key_id = [0u8; 4];
        key_id.copy_from_slice(&blob[..4]);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&blob[4..12]);
        let timestamp = u64::from_be_bytes(ts);
        if timestamp > MAX_TIMESTAMP {
            return Err(CosignatureError::TimestampRange);
        }
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&blob[12..]);
        Ok(Cosignature {
            name: name.to_owned(),
            key_id,
            timestamp,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ed25519_dalek::{Signer as _, SigningKey};

    fn witness() -> (SigningKey, WitnessKey) {
        let sk = SigningKey::from_bytes(&[7u8; 32]);
        let key = WitnessKey {
            name: "knhk.test/witness/eu".into(),
            public_key: sk.verifying_key().to_bytes().to_vec(),
        };
        (sk, key)
    }

    const CP: &str = "knhk.test/us\n3\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

    fn cosign(sk: &SigningKey, key: &WitnessKey, ts: u64) -> Cosignature {
        let msg = signed_message(CP, ts).unwrap();
        Cosignature::new(key, ts, sk.sign(msg.as_bytes()).to_bytes()).unwrap()
    }

    /// The signed message is the header, the time line and the note text, as the spec shows.
    #[test]
    fn signed_message_matches_the_spec_layout() {
        assert_eq!(
            signed_message(CP, 1_679_315_147).unwrap(),
            format!("cosignature/v1\ntime 1679315147\n{CP}")
        );
        assert_eq!(
            signed_message(CP, u64::MAX),
            Err(CosignatureError::TimestampRange)
        );
    }

    /// A line round-trips through text and verifies; a changed checkpoint, timestamp or key
    /// is refused with its own error.
    #[test]
    fn lines_round_trip_and_verify() {
        let (sk, key) = witness();
        let cs = cosign(&sk, &key, 1_700_000_000);
        let line = cs.to_line();
        assert!(line.starts_with("\u{2014} knhk.test/witness/eu "));
        let parsed = Cosignature::parse_line(&line).unwrap();
        assert_eq!(parsed, cs);
        key.verify(CP, &parsed).unwrap();
        let other_cp = CP.replace('3', "4");
        assert!(matches!(
            key.verify(&other_cp, &parsed),
            Err(CosignatureError::BadSignature(_))
        ));
        let mut later = parsed.clone();
        later.timestamp += 1;
        assert!(matches!(
            key.verify(CP, &later),
            Err(CosignatureError::BadSignature(_))
        ));
        let other = WitnessKey {
            name: "knhk.test/witness/us".into(),
            public_key: key.public_key.clone(),
        };
        assert!(matches!(
            other.verify(CP, &parsed),
            Err(CosignatureError::WrongKey { .. })
        ));
    }

    /// The key ID is the first four bytes of SHA-256(name ‖ LF ‖ 0x04 ‖ key).
    #[test]
    fn key_id_follows_the_spec() {
        let (_, key) = witness();
        let mut h = Sha256::new();
        h.update(b"knhk.test/witness/eu\n\x04");
        h.update(&key.public_key);
        assert_eq!(key.key_id(), h.finalize()[..4]);
    }

    /// Hostile lines are refused without panicking.
    #[test]
    fn malformed_lines_are_refused() {
        for line in [
            "",
            "- name AAAA",
            "\u{2014} name",
            "\u{2014}  AAAA",
            "\u{2014} name !!!",
            "\u{2014} name AAAA",
            "\u{2014} na me AAAA",
        ] {
            assert!(Cosignature::parse_line(line).is_err(), "{line:?}");
        }
    }
}
