//! The published `checkpoint`: a C2SP signed note whose text is the checkpoint exactly as the
//! log signed it, followed by the log's signature line and the witnesses' `cosignature/v1`
//! lines.
//!
//! The log's line is named after the checkpoint origin. Its key ID follows the signed-note
//! recommendation `SHA-256(name ‖ "\n" ‖ type ‖ public key)[:4]`: type `0x01` with the raw key
//! for Ed25519 (a standard signed-note Ed25519 signature, which any note verifier accepts), and
//! for ECDSA P-256 (AWS KMS, Azure Key Vault) type `0xff` followed by the identifier
//! [`ECDSA_P256_IDENTIFIER`] and the SEC1 point, the signature being the 64-byte `r ‖ s` over
//! SHA-256 of the note text.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::TileError;
use crate::checkpoint::{Alg, Checkpoint, PublicKeyVersion, SignatureRecord};
use crate::cosignature::{Cosignature, SIGNATURE_LINE_PREFIX};
use crate::export::SignedCheckpoint;

/// Longest note accepted: the checkpoint and up to 64 signature lines.
pub const MAX_NOTE_LEN: usize = 32 * 1024;
/// Signed-note type byte of Ed25519 signatures.
pub const ED25519_TYPE: u8 = 0x01;
/// Signed-note type byte for algorithms without an assigned one.
pub const OTHER_TYPE: u8 = 0xff;
/// What follows [`OTHER_TYPE`] in the key ID of an ECDSA P-256 log key.
pub const ECDSA_P256_IDENTIFIER: &[u8] = b"knhk/ecdsa-p256-sha256";

/// The 4-byte signed-note key ID of the log key `key` under the key name `name`.
pub fn log_key_id(name: &str, key: &PublicKeyVersion) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    match key.alg {
        Alg::Ed25519 => h.update([ED25519_TYPE]),
        Alg::EcdsaP256 => {
            h.update([OTHER_TYPE]);
            h.update(ECDSA_P256_IDENTIFIER);
        }
    }
    h.update(&key.public_key);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// Render the note: `checkpoint`'s text, a blank line, the log's signature (by `key`, the
/// version that made it), then each cosignature line.
pub fn render(
    checkpoint: &SignedCheckpoint,
    key: &PublicKeyVersion,
    cosignatures: &[String],
) -> Result<String, TileError> {
    let cp = Checkpoint::parse(&checkpoint.text).map_err(|e| TileError::Note(e.to_string()))?;
    let mut blob = log_key_id(&cp.origin, key).to_vec();
    blob.extend_from_slice(&checkpoint.signature.sig);
    let mut out = format!(
        "{}\n{SIGNATURE_LINE_PREFIX}{} {}\n",
        checkpoint.text,
        cp.origin,
        STANDARD.encode(blob)
    );
    for line in cosignatures {
        let line = line.strip_suffix('\n').unwrap_or(line);
        Cosignature::parse_line(line).map_err(|e| TileError::Note(e.to_string()))?;
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

/// A parsed note: the checkpoint as signed by a trusted log key, and the other lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The checkpoint, with the signature record of the trusted key that signed it.
    pub checkpoint: SignedCheckpoint,
    /// That key.
    pub key: PublicKeyVersion,
    /// The parsed checkpoint.
    pub parsed: Checkpoint,
    /// Every other line that parses as a `cosignature/v1` line, with its newline (not yet
    /// verified: the quorum check does that against the witness keys it trusts).
    pub cosignatures: Vec<String>,
}

/// Split `note` into its text and signature lines, strictly.
fn split(note: &str) -> Result<(&str, Vec<&str>), TileError> {
    let bad = |m: &str| TileError::Note(m.to_owned());
    if note.len() > MAX_NOTE_LEN {
        return Err(bad("longer than 32 KiB"));
    }
    if note.chars().any(|c| c.is_control() && c != '\n') {
        return Err(bad("holds control characters"));
    }
    let Some(at) = note.rfind("\n\n") else {
        return Err(bad("no blank line before the signatures"));
    };
    let (text, sigs) = (&note[..=at], &note[at + 2..]);
    let Some(sigs) = sigs.strip_suffix('\n') else {
        return Err(bad("does not end with a newline"));
    };
    let lines: Vec<&str> = sigs.split('\n').collect();
    if lines
        .iter()
        .any(|l| l.is_empty() || !l.starts_with(SIGNATURE_LINE_PREFIX))
    {
        return Err(bad("a signature line does not start with an em dash"));
    }
    Ok((text, lines))
}

/// The checkpoint `note` carries, parsed strictly but not verified: which log and size a
/// destination holds, before anything in it is trusted.
pub fn unverified_checkpoint(note: &str) -> Result<Checkpoint, TileError> {
    let (text, _) = split(note)?;
    Checkpoint::parse(text).map_err(|e| TileError::Note(e.to_string()))
}

/// Open `note` with the log keys in `trusted`: the line named after the checkpoint's origin
/// whose key ID is a trusted, not retired key's becomes the checkpoint's signature record.
/// The signature itself is checked by the bundle verifier, like every other signature.
pub fn open(note: &str, trusted: &[PublicKeyVersion]) -> Result<Opened, TileError> {
    let (text, lines) = split(note)?;
    let parsed = Checkpoint::parse(text).map_err(|e| TileError::Note(e.to_string()))?;
    let mut own = None;
    let mut cosignatures = Vec::new();
    for line in lines {
        let rest = &line[SIGNATURE_LINE_PREFIX.len()..];
        let Some((name, b64)) = rest.split_once(' ') else {
            return Err(TileError::Note(
                "a signature line has no signature".to_owned(),
            ));
        };
        let blob = STANDARD
            .decode(b64)
            .map_err(|_| TileError::Note(format!("the signature of {name} is not base64")))?;
        if blob.len() < 4 {
            return Err(TileError::Note(format!(
                "the signature of {name} is shorter than a key ID"
            )));
        }
        if name == parsed.origin {
            let key = trusted
                .iter()
                .find(|k| !k.retired && log_key_id(name, k) == blob[..4]);
            if let (Some(key), None) = (key, &own) {
                own = Some((key.clone(), blob[4..].to_vec()));
            }
            continue;
        }
        if Cosignature::parse_line(line).is_ok() {
            cosignatures.push(format!("{line}\n"));
        }
    }
    let Some((key, sig)) = own else {
        return Err(TileError::Note(format!(
            "no signature line of {} by a trusted log key",
            parsed.origin
        )));
    };
    Ok(Opened {
        checkpoint: SignedCheckpoint {
            text: text.to_owned(),
            signature: SignatureRecord {
                provider: key.provider.clone(),
                key_id: key.key_id.clone(),
                key_version: key.version,
                alg: key.alg,
                sig,
            },
        },
        key,
        parsed,
        cosignatures,
    })
}
