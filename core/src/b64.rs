//! Serde adapters for byte fields in knhk's JSON formats: standard padded base64, one module
//! per shape (`#[serde(with = "knhk_core::b64::bytes")]`). Shared by the core's signed formats
//! and the agent's exports, so both read and write byte fields the same way.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serializer};

/// A SHA-256 hash (the Merkle log's node and leaf hashes).
type Hash = [u8; 32];

/// Bytes as standard base64.
pub mod bytes {
    use super::*;

    /// Serialize as standard padded base64.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    /// Deserialize from standard padded base64; a clear error for anything else.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text)
            .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
    }
}

fn to_hash<E: serde::de::Error>(text: &str) -> Result<Hash, E> {
    let raw = STANDARD
        .decode(text)
        .map_err(|e| E::custom(format!("invalid base64: {e}")))?;
    raw.try_into()
        .map_err(|_| E::custom("a hash must be 32 bytes"))
}

/// One 32-byte hash as base64.
pub mod hash {
    use super::*;

    /// Serialize as standard padded base64.
    pub fn serialize<S: Serializer>(v: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    /// Deserialize from standard padded base64; a clear error for anything else.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        to_hash(&String::deserialize(d)?)
    }
}

/// A list of byte strings as base64.
pub mod bytes_list {
    use super::*;
    use serde::ser::SerializeSeq as _;

    /// Serialize as standard padded base64.
    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for item in v {
            seq.serialize_element(&STANDARD.encode(item))?;
        }
        seq.end()
    }

    /// Deserialize from standard padded base64; a clear error for anything else.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| {
                STANDARD
                    .decode(t)
                    .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
            })
            .collect()
    }
}

/// A list of 32-byte hashes as base64.
pub mod hashes {
    use super::*;
    use serde::ser::SerializeSeq as _;

    /// Serialize as standard padded base64.
    pub fn serialize<S: Serializer>(v: &[Hash], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for item in v {
            seq.serialize_element(&STANDARD.encode(item))?;
        }
        seq.end()
    }

    /// Deserialize from standard padded base64; a clear error for anything else.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| to_hash(t))
            .collect()
    }
}
