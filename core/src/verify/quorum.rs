//! Offline check of the cosignatures a proof bundle carries: `knhk-agent verify --quorum k
//! --witness-keys <file>`.
//!
//! `k` counts the log's own checkpoint signature (checked by [`super::verify_bundle`]) plus
//! each distinct trusted witness whose C2SP `cosignature/v1` line verifies over the bundle's
//! checkpoint. Lines from unknown witness names or key IDs are ignored, as the C2SP spec asks.

use crate::cosignature::{Cosignature, WitnessKey};

use super::{parse, Verifiable, VerifyError};
use crate::export::ProofBundle;

/// Count the valid trusted cosignatures of `bundle`; fails unless, with the log's own
/// signature, they reach `k`. Returns one report line per counted witness.
pub fn verify_cosignatures(
    bundle: &ProofBundle,
    k: usize,
    witnesses: &[WitnessKey],
) -> Result<Vec<String>, VerifyError> {
    verify_cosignature_lines(&bundle.checkpoint.text, &bundle.cosignatures, k, witnesses)
}

/// [`verify_cosignatures`] over `lines` cosigning the checkpoint `checkpoint_text` (whose own
/// signature the caller has checked).
pub fn verify_cosignature_lines(
    checkpoint_text: &str,
    lines: &[String],
    k: usize,
    witnesses: &[WitnessKey],
) -> Result<Vec<String>, VerifyError> {
    let mut counted: Vec<&str> = Vec::new();
    let mut problems = Vec::new();
    for line in lines {
        let parsed = match Cosignature::parse_line(line) {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!("unparsable cosignature: {e}"));
                continue;
            }
        };
        let Some(w) = witnesses
            .iter()
            .find(|w| w.name == parsed.name && w.key_id() == parsed.key_id)
        else {
            continue;
        };
        match w.verify(checkpoint_text, &parsed) {
            Ok(()) if !counted.contains(&w.name.as_str()) => counted.push(&w.name),
            Ok(()) => {}
            Err(e) => problems.push(format!("{}: {e}", w.name)),
        }
    }
    let found = counted.len() + 1;
    if found < k {
        return Err(VerifyError::QuorumNotMet {
            needed: k,
            found,
            detail: if problems.is_empty() {
                "no further trusted cosignatures".to_owned()
            } else {
                problems.join("; ")
            },
        });
    }
    let mut lines: Vec<String> = counted
        .iter()
        .map(|name| format!("cosigned by witness {name}"))
        .collect();
    lines.push(format!(
        "quorum met: {found} of the {k} required signatures (the log's own and {} witness(es))",
        counted.len()
    ));
    Ok(lines)
}

/// [`verify_cosignatures`] on a file given as JSON; log exports carry no cosignatures.
pub fn verify_cosignatures_json(
    json: &[u8],
    k: usize,
    witnesses: &[WitnessKey],
) -> Result<Vec<String>, VerifyError> {
    match parse(json)? {
        Verifiable::Bundle(b) => verify_cosignatures(&b, k, witnesses),
        Verifiable::Export(_) => Err(VerifyError::UnknownFormat(
            "--quorum applies to proof bundles (from /v1/quorum/receipts/{index}/proof); log exports carry no cosignatures".to_owned(),
        )),
    }
}
