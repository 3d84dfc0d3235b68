//! Signature records, public key versions, and verification for Ed25519 and ECDSA P-256.
//!
//! A [`SignatureRecord`] names who signed (provider, key id, key version) and carries the raw
//! signature: 64 bytes for Ed25519, and for ECDSA P-256 the fixed 64-byte `r ‖ s` form over
//! SHA-256 of the message. Public keys are raw 32 bytes (Ed25519) or SEC1 points (P-256).
//! Verification accepts every version that is known and not retired.

use core::fmt;

use serde::{Deserialize, Serialize};

use super::CheckpointError;

/// Signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Alg {
    /// Pure Ed25519 (RFC 8032).
    #[serde(rename = "ed25519")]
    Ed25519,
    /// ECDSA over NIST P-256 with SHA-256.
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
}

impl Alg {
    /// The wire name (`ed25519`, `ecdsa-p256`).
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Ed25519 => "ed25519",
            Alg::EcdsaP256 => "ecdsa-p256",
        }
    }

    /// Parse a wire name.
    pub fn parse(name: &str) -> Option<Alg> {
        match name {
            "ed25519" => Some(Alg::Ed25519),
            "ecdsa-p256" => Some(Alg::EcdsaP256),
            _ => None,
        }
    }

    /// The one-byte code used in binary log entries.
    pub fn code(self) -> u8 {
        match self {
            Alg::Ed25519 => 1,
            Alg::EcdsaP256 => 2,
        }
    }

    /// Inverse of [`Alg::code`].
    pub fn from_code(code: u8) -> Option<Alg> {
        match code {
            1 => Some(Alg::Ed25519),
            2 => Some(Alg::EcdsaP256),
            _ => None,
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who signed what: provider, key id, key version, algorithm and the signature bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureRecord {
    /// Signing provider (`local`, `transit`, …).
    pub provider: String,
    /// Key identifier within the provider.
    pub key_id: String,
    /// Key version that signed.
    pub key_version: u32,
    /// Algorithm.
    pub alg: Alg,
    /// Raw signature, base64 in JSON.
    #[serde(with = "crate::b64::bytes")]
    pub sig: Vec<u8>,
}

impl SignatureRecord {
    /// Whether `key` is the key version this record names (provider, key id and version).
    pub fn is_by(&self, key: &PublicKeyVersion) -> bool {
        self.provider == key.provider
            && self.key_id == key.key_id
            && self.key_version == key.version
    }
}

/// One version of a signing key, as a verifier needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyVersion {
    /// Signing provider.
    pub provider: String,
    /// Key identifier within the provider.
    pub key_id: String,
    /// Version number.
    pub version: u32,
    /// Algorithm.
    pub alg: Alg,
    /// Raw Ed25519 key or SEC1 P-256 point, base64 in JSON.
    #[serde(with = "crate::b64::bytes")]
    pub public_key: Vec<u8>,
    /// Retired versions no longer verify anything.
    pub retired: bool,
}

/// Verify `sig` over `msg` with one public key of algorithm `alg`.
pub fn verify_with_key(
    alg: Alg,
    public_key: &[u8],
    msg: &[u8],
    sig: &[u8],
) -> Result<(), CheckpointError> {
    match alg {
        Alg::Ed25519 => {
            let pk: [u8; 32] = public_key
                .try_into()
                .map_err(|_| CheckpointError::MalformedPublicKey(alg))?;
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&pk)
                .map_err(|_| CheckpointError::MalformedPublicKey(alg))?;
            let sig: [u8; 64] = sig
                .try_into()
                .map_err(|_| CheckpointError::MalformedSignature(alg))?;
            let sig = ed25519_dalek::Signature::from_bytes(&sig);
            vk.verify_strict(msg, &sig)
                .map_err(|_| CheckpointError::BadSignature)
        }
        #[cfg(feature = "ecdsa")]
        Alg::EcdsaP256 => {
            use p256::ecdsa::signature::Verifier as _;
            let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(public_key)
                .map_err(|_| CheckpointError::MalformedPublicKey(alg))?;
            if sig.len() != 64 {
                return Err(CheckpointError::MalformedSignature(alg));
            }
            let sig = p256::ecdsa::Signature::from_slice(sig)
                .map_err(|_| CheckpointError::MalformedSignature(alg))?;
            vk.verify(msg, &sig)
                .map_err(|_| CheckpointError::BadSignature)
        }
        #[cfg(not(feature = "ecdsa"))]
        Alg::EcdsaP256 => Err(CheckpointError::UnsupportedAlg(alg)),
    }
}

/// Verify `sig` over `msg` against a key set: the key version it names must be present, not
/// retired, of the same algorithm, and the signature must verify. Returns the key used.
pub fn verify_signature<'k>(
    msg: &[u8],
    sig: &SignatureRecord,
    keys: &'k [PublicKeyVersion],
) -> Result<&'k PublicKeyVersion, CheckpointError> {
    let key = keys
        .iter()
        .find(|k| sig.is_by(k))
        .ok_or_else(|| CheckpointError::UnknownKey {
            provider: sig.provider.clone(),
            key_id: sig.key_id.clone(),
            version: sig.key_version,
        })?;
    if key.retired {
        return Err(CheckpointError::RetiredKey {
            provider: sig.provider.clone(),
            key_id: sig.key_id.clone(),
            version: sig.key_version,
        });
    }
    if key.alg != sig.alg {
        return Err(CheckpointError::AlgorithmMismatch {
            signature: sig.alg,
            key: key.alg,
        });
    }
    verify_with_key(key.alg, &key.public_key, msg, &sig.sig)?;
    Ok(key)
}
