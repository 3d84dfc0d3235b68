//! Signed config epochs: the envelope the agent signs and the filter verifies before applying.
//!
//! The envelope follows DSSE (in-toto's Dead Simple Signing Envelope): the signatures cover
//! `PAE(payload_type, payload)`, never a re-serialization, so signer and verifier agree on the
//! exact bytes. The payload is a JSON [`ConfigPayload`]: a monotonic epoch, the policy, and
//! optionally the next trusted key set (a rotation handover, as in TUF root rotation: the new
//! keys are announced in a config signed by a currently trusted key).
//!
//! [`open`] is what the filter runs on every config it receives; it refuses, with a distinct
//! error, anything oversized, malformed, unsigned, signed by an untrusted or retired key, not
//! newer than the epoch in force, or carrying an invalid policy.

use serde::{Deserialize, Serialize};

use crate::checkpoint::{verify_signature, CheckpointError, PublicKeyVersion, SignatureRecord};
use crate::config::from_json::{base64, read_alg, read_public_key};
use crate::config::read::At;
use crate::config::ConfigError;
use crate::limits::{MAX_ENVELOPE_BYTES, MAX_PAYLOAD_BYTES, MAX_SIGNATURES, MAX_TRUSTED_KEYS};
use crate::policy::Policy;
use serde_json::Value;

/// DSSE payload type of a knhk config.
pub const PAYLOAD_TYPE: &str = "application/vnd.knhk.config+json";

/// The signed envelope as it travels (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// DSSE payload type; must be [`PAYLOAD_TYPE`].
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// The [`ConfigPayload`] JSON bytes, base64.
    #[serde(with = "crate::b64::bytes")]
    pub payload: Vec<u8>,
    /// Signatures over `PAE(payload_type, payload)`.
    pub signatures: Vec<SignatureRecord>,
}

/// What the agent signs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigPayload {
    /// Monotonic config epoch; a filter applies only epochs above the one in force.
    pub epoch: u64,
    /// When the agent issued it, ns since the Unix epoch (informational).
    pub issued_at_ns: u64,
    /// The policy: a filter configuration without `control` (that stays static), validated by
    /// the same reader as a static configuration.
    pub policy: serde_json::Value,
    /// When set, the key set that verifies the *next* epochs (rotation handover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_keys: Option<Vec<PublicKeyVersion>>,
}

/// Why a signed config was refused. The last good config stays in force in every case.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnvelopeError {
    /// Larger than [`MAX_ENVELOPE_BYTES`].
    #[error("signed config refused: {0} bytes exceeds the {MAX_ENVELOPE_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not a valid envelope or payload.
    #[error("signed config refused: malformed {what}: {reason}")]
    Malformed {
        /// Envelope or payload.
        what: &'static str,
        /// Parser message.
        reason: String,
    },
    /// No signature at all, or too many.
    #[error("signed config refused: needs 1..={MAX_SIGNATURES} signatures, has {0}")]
    SignatureCount(usize),
    /// No signature verified against the trusted keys; the first failure is reported.
    #[error("signed config refused: no trusted signature ({0})")]
    Untrusted(CheckpointError),
    /// The epoch is not newer than the one in force (replay or rollback).
    #[error("signed config refused: epoch {epoch} is not newer than epoch {current} in force")]
    Stale {
        /// Epoch offered.
        epoch: u64,
        /// Epoch in force.
        current: u64,
    },
    /// The policy inside does not validate.
    #[error("signed config refused: epoch {epoch}: {error}")]
    InvalidPolicy {
        /// Epoch offered.
        epoch: u64,
        /// Validation error.
        error: ConfigError,
    },
    /// The announced next key set is empty or too large.
    #[error("signed config refused: next_keys must hold 1..={MAX_TRUSTED_KEYS} keys, has {0}")]
    NextKeys(usize),
}

/// A verified, validated config ready to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// Its epoch.
    pub epoch: u64,
    /// The validated policy, with `version` set to the epoch.
    pub policy: Policy,
    /// The key set to trust from now on, when the config rotated it.
    pub next_keys: Option<Vec<PublicKeyVersion>>,
    /// The key that verified it.
    pub signed_by: PublicKeyVersion,
}

/// DSSE pre-authentication encoding: `"DSSEv1" SP len(type) SP type SP len(body) SP body`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// The bytes a signer must sign for `payload`.
pub fn signing_input(payload: &[u8]) -> Vec<u8> {
    pae(PAYLOAD_TYPE, payload)
}

/// Verify and validate an envelope against the `trusted` keys, given the epoch in force.
pub fn open(
    bytes: &[u8],
    trusted: &[PublicKeyVersion],
    current_epoch: u64,
) -> Result<Accepted, EnvelopeError> {
    if bytes.len() > MAX_ENVELOPE_BYTES {
        return Err(EnvelopeError::TooLarge(bytes.len()));
    }
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(EnvelopeError::Malformed {
            what: "envelope",
            reason: "must be a JSON object".into(),
        });
    }
    let envelope = read_envelope(bytes).map_err(|e| EnvelopeError::Malformed {
        what: "envelope",
        reason: e,
    })?;
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(EnvelopeError::Malformed {
            what: "envelope",
            reason: format!(
                "payloadType {:?}, expected {PAYLOAD_TYPE:?}",
                envelope.payload_type
            ),
        });
    }
    let count = envelope.signatures.len();
    if count == 0 || count > MAX_SIGNATURES {
        return Err(EnvelopeError::SignatureCount(count));
    }
    let message = signing_input(&envelope.payload);
    let mut first_failure = None;
    let mut signed_by = None;
    for sig in &envelope.signatures {
        match verify_signature(&message, sig, trusted) {
            Ok(key) => {
                signed_by = Some(key.clone());
                break;
            }
            Err(e) => {
                first_failure.get_or_insert(e);
            }
        }
    }
    let Some(signed_by) = signed_by else {
        return Err(EnvelopeError::Untrusted(
            first_failure.unwrap_or(CheckpointError::Malformed("no signature")),
        ));
    };
    // Only now, with the payload authenticated, is it parsed; only an object is a payload.
    if envelope.payload.trim_ascii_start().first() != Some(&b'{') {
        return Err(EnvelopeError::Malformed {
            what: "payload",
            reason: "must be a JSON object".into(),
        });
    }
    let payload = read_payload(&envelope.payload).map_err(|e| EnvelopeError::Malformed {
        what: "payload",
        reason: e,
    })?;
    if payload.epoch <= current_epoch {
        return Err(EnvelopeError::Stale {
            epoch: payload.epoch,
            current: current_epoch,
        });
    }
    let invalid = |error| EnvelopeError::InvalidPolicy {
        epoch: payload.epoch,
        error,
    };
    let mut policy = Policy::from_value(&payload.policy).map_err(invalid)?;
    if policy.control.is_some() {
        return Err(invalid(ConfigError::new(
            "control",
            "is static plugin configuration and cannot be pushed",
        )));
    }
    policy.version = payload.epoch;
    if let Some(keys) = &payload.next_keys {
        if keys.is_empty() || keys.len() > MAX_TRUSTED_KEYS {
            return Err(EnvelopeError::NextKeys(keys.len()));
        }
    }
    Ok(Accepted {
        epoch: payload.epoch,
        policy,
        next_keys: payload.next_keys,
        signed_by,
    })
}

/// Read an envelope from JSON. By hand, as the configuration is (`config::read`): the derived
/// deserializers of these types stay for the agent, which writes them, and out of the filter.
fn read_envelope(bytes: &[u8]) -> Result<Envelope, String> {
    let doc = crate::json::parse(bytes).map_err(|e| e.to_string())?;
    let at = At::root(&doc);
    let o = at
        .object("struct Envelope", &["payloadType", "payload", "signatures"])
        .map_err(located)?;
    let read = || -> Result<Envelope, ConfigError> {
        Ok(Envelope {
            payload_type: o.required("payloadType")?.string()?,
            payload: base64(&o.required("payload")?)?,
            signatures: o.required("signatures")?.list(read_signature)?,
        })
    };
    read().map_err(located)
}

/// The parts of a payload the filter uses.
struct Payload {
    epoch: u64,
    policy: Value,
    next_keys: Option<Vec<PublicKeyVersion>>,
}

/// Read a payload from JSON (see [`ConfigPayload`]; `issued_at_ns` is checked, not kept).
fn read_payload(bytes: &[u8]) -> Result<Payload, String> {
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(format!(
            "{} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit",
            bytes.len()
        ));
    }
    let mut doc = crate::json::parse(bytes).map_err(|e| e.to_string())?;
    let read = |doc: &Value| -> Result<(u64, Option<Vec<PublicKeyVersion>>), ConfigError> {
        let o = At::root(doc).object(
            "struct ConfigPayload",
            &["epoch", "issued_at_ns", "policy", "next_keys"],
        )?;
        o.required("issued_at_ns")?.u64()?;
        o.required("policy")?;
        Ok((
            o.required("epoch")?.u64()?,
            o.opt("next_keys", |at| at.list(read_public_key))?,
        ))
    };
    let (epoch, next_keys) = read(&doc).map_err(located)?;
    let policy = doc
        .get_mut("policy")
        .map(Value::take)
        .unwrap_or(Value::Null);
    Ok(Payload {
        epoch,
        policy,
        next_keys,
    })
}

/// One signature of an envelope.
fn read_signature(at: &At<'_>) -> Result<SignatureRecord, ConfigError> {
    let o = at.object(
        "struct SignatureRecord",
        &["provider", "key_id", "key_version", "alg", "sig"],
    )?;
    Ok(SignatureRecord {
        provider: o.required("provider")?.string()?,
        key_id: o.required("key_id")?.string()?,
        key_version: o.required("key_version")?.u32()?,
        alg: read_alg(&o.required("alg")?)?,
        sig: base64(&o.required("sig")?)?,
    })
}

/// A reader's error as one line: `field `signatures[0].sig`: invalid base64: …`.
fn located(e: ConfigError) -> String {
    format!("field `{}`: {}", e.field, e.reason)
}

#[cfg(test)]
mod tests;
