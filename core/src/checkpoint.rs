//! Checkpoints: the signed tree heads of the receipt log, in C2SP tlog-checkpoint text form,
//! and the signature records and public key versions that authenticate them.
//!
//! The note text is at least three newline-terminated, non-empty lines:
//!
//! ```text
//! <origin>
//! <tree size, ASCII decimal, no leading zeros>
//! <standard base64 (padded) of the 32-byte RFC 6962 root hash>
//! [<extension line>]...
//! ```
//!
//! The signature covers exactly these bytes. knhk writes one extension line,
//! `timestamp_ns <decimal>`, the sealing time.

pub(crate) mod signature;

pub use signature::{verify_signature, verify_with_key, Alg, PublicKeyVersion, SignatureRecord};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::merkle::Hash;

/// Largest checkpoint text accepted by [`Checkpoint::parse`].
pub const MAX_CHECKPOINT_LEN: usize = 16 * 1024;
/// Prefix of the extension line carrying the sealing time.
pub const TIMESTAMP_EXTENSION: &str = "timestamp_ns ";

/// Why a checkpoint or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The checkpoint text breaks the tlog-checkpoint format; the message says where.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// The origin is empty or holds whitespace, control characters or `+`.
    #[error("invalid checkpoint origin")]
    InvalidOrigin,
    /// An extension line is empty or holds a newline.
    #[error("invalid checkpoint extension line")]
    InvalidExtension,
    /// No public key with the signature's provider, key id and version is known.
    #[error("no public key for {provider} key {key_id} version {version}")]
    UnknownKey {
        /// The signature's provider.
        provider: String,
        /// The signature's key id.
        key_id: String,
        /// The signature's key version.
        version: u32,
    },
    /// The key version exists but is retired: its signatures are no longer accepted.
    #[error("{provider} key {key_id} version {version} is retired")]
    RetiredKey {
        /// The signature's provider.
        provider: String,
        /// The signature's key id.
        key_id: String,
        /// The signature's key version.
        version: u32,
    },
    /// The signature names another algorithm than its key version has.
    #[error("signature algorithm {signature} does not match key algorithm {key}")]
    AlgorithmMismatch {
        /// Algorithm the signature claims.
        signature: Alg,
        /// Algorithm of the key version.
        key: Alg,
    },
    /// The public key bytes are not a valid key of its algorithm.
    #[error("malformed {0} public key")]
    MalformedPublicKey(Alg),
    /// The signature bytes are not a valid signature encoding of its algorithm.
    #[error("malformed {0} signature")]
    MalformedSignature(Alg),
    /// The signature does not verify over the message with the key.
    #[error("signature does not verify")]
    BadSignature,
    /// This build cannot verify the algorithm (the wasm filter verifies Ed25519 only).
    #[error("{0} verification is not built into this binary")]
    UnsupportedAlg(Alg),
}

/// A tree head: origin, size, root hash, extension lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Log identity, e.g. `knhk.example/eu-west-1`.
    pub origin: String,
    /// Number of leaves.
    pub tree_size: u64,
    /// RFC 6962 root over the first `tree_size` leaves.
    pub root_hash: Hash,
    /// Extension lines, without their newline.
    pub extensions: Vec<String>,
}

fn valid_origin(origin: &str) -> bool {
    !origin.is_empty()
        && !origin
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '+')
}

fn valid_extension(line: &str) -> bool {
    !line.is_empty() && !line.chars().any(|c| c == '\n' || c == '\r')
}

fn parse_size(line: &str) -> Result<u64, CheckpointError> {
    let bad = CheckpointError::Malformed("tree size is not a canonical decimal");
    if line.is_empty() || !line.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    if line.len() > 1 && line.starts_with('0') {
        return Err(bad);
    }
    line.parse::<u64>().map_err(|_| bad)
}

fn parse_root(line: &str) -> Result<Hash, CheckpointError> {
    let bad = CheckpointError::Malformed("root hash is not base64 of 32 bytes");
    let bytes = STANDARD.decode(line).map_err(|_| bad.clone())?;
    let hash: Hash = bytes.try_into().map_err(|_| bad.clone())?;
    if STANDARD.encode(hash) != line {
        return Err(bad);
    }
    Ok(hash)
}

impl Checkpoint {
    /// A checkpoint without extensions; the origin is validated.
    pub fn new(origin: &str, tree_size: u64, root_hash: Hash) -> Result<Self, CheckpointError> {
        if !valid_origin(origin) {
            return Err(CheckpointError::InvalidOrigin);
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            tree_size,
            root_hash,
            extensions: Vec::new(),
        })
    }

    /// Add the `timestamp_ns` extension line.
    pub fn with_timestamp(mut self, time_ns: u64) -> Self {
        self.extensions
            .push(format!("{TIMESTAMP_EXTENSION}{time_ns}"));
        self
    }

    /// The sealing time from the `timestamp_ns` extension, if present and well-formed.
    pub fn timestamp_ns(&self) -> Option<u64> {
        self.extensions
            .iter()
            .find_map(|l| l.strip_prefix(TIMESTAMP_EXTENSION))
            .and_then(|v| parse_size(v).ok())
    }

    /// The note text that is signed. Refuses fields that would frame a different checkpoint.
    pub fn to_text(&self) -> Result<String, CheckpointError> {
        if !valid_origin(&self.origin) {
            return Err(CheckpointError::InvalidOrigin);
        }
        if !self.extensions.iter().all(|l| valid_extension(l)) {
            return Err(CheckpointError::InvalidExtension);
        }
        let mut out = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.tree_size,
            STANDARD.encode(self.root_hash)
        );
        for line in &self.extensions {
            out.push_str(line);
            out.push('\n');
        }
        Ok(out)
    }

    /// Parse note text strictly: every line newline-terminated and non-empty, canonical size
    /// and root, at most [`MAX_CHECKPOINT_LEN`] bytes.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        if text.len() > MAX_CHECKPOINT_LEN {
            return Err(CheckpointError::Malformed("checkpoint text too long"));
        }
        let Some(body) = text.strip_suffix('\n') else {
            return Err(CheckpointError::Malformed(
                "checkpoint text must end with a newline",
            ));
        };
        let mut lines = body.split('\n');
        let origin = lines
            .next()
            .ok_or(CheckpointError::Malformed("missing origin line"))?;
        if !valid_origin(origin) {
            return Err(CheckpointError::InvalidOrigin);
        }
        let tree_size = parse_size(
            lines
                .next()
                .ok_or(CheckpointError::Malformed("missing tree size line"))?,
        )?;
        let root_hash = parse_root(
            lines
                .next()
                .ok_or(CheckpointError::Malformed("missing root hash line"))?,
        )?;
        let mut extensions = Vec::new();
        for line in lines {
            if !valid_extension(line) {
                return Err(CheckpointError::Malformed("empty extension line"));
            }
            extensions.push(line.to_owned());
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            tree_size,
            root_hash,
            extensions,
        })
    }
}

#[cfg(test)]
mod tests;
