//! knhk's offline verifier for the auditor's browser: [`knhk_core::verify::check`] behind one
//! `wasm-bindgen` export, so a page that loads this module gives the same verdicts and messages
//! as `knhk-agent verify` on the same file and keys (shared code; tested against the CLI in
//! `agent/tests/web_verifier.rs`). Nothing here reaches the network.

#![forbid(unsafe_code)]

use knhk_core::checkpoint::PublicKeyVersion;
use knhk_core::cosignature::WitnessKey;
use knhk_core::verify::{check, Verdict};
use wasm_bindgen::prelude::wasm_bindgen;

fn refused(failure: String) -> Verdict {
    Verdict {
        ok: false,
        lines: Vec::new(),
        failure: Some(failure),
    }
}

/// Check `file` (a proof bundle or log export, JSON bytes) against `trusted_keys` (JSON list
/// from `knhk-agent keys list`; absent: the keys in the file, reported as self-certified),
/// requiring `quorum` signatures by `witness_keys` (JSON list from `knhk-agent keys witness`)
/// when given, refusing entries after the last checkpoint unless `accept_unproven`. Returns the
/// verdict as JSON: `{"ok", "lines", "failure"}`.
#[wasm_bindgen]
pub fn verify(
    file: &[u8],
    trusted_keys: Option<String>,
    accept_unproven: bool,
    quorum: Option<u32>,
    witness_keys: Option<String>,
) -> String {
    let verdict = verdict(
        file,
        trusted_keys.as_deref(),
        accept_unproven,
        quorum,
        witness_keys.as_deref(),
    );
    serde_json::to_string(&verdict).unwrap_or_else(|e| {
        format!(
            "{{\"ok\":false,\"lines\":[],\"failure\":\"the verdict could not be encoded: {e}\"}}"
        )
    })
}

/// [`verify`] before encoding: what the page shows.
pub fn verdict(
    file: &[u8],
    trusted_keys: Option<&str>,
    accept_unproven: bool,
    quorum: Option<u32>,
    witness_keys: Option<&str>,
) -> Verdict {
    let trusted: Option<Vec<PublicKeyVersion>> = match trusted_keys {
        Some(text) => match serde_json::from_str(text) {
            Ok(keys) => Some(keys),
            Err(e) => return refused(format!("parsing trusted keys: {e}")),
        },
        None => None,
    };
    let witnesses: Option<(usize, Vec<WitnessKey>)> = match (quorum, witness_keys) {
        (Some(k), Some(text)) => match serde_json::from_str(text) {
            Ok(keys) => Some((k as usize, keys)),
            Err(e) => return refused(format!("parsing witness keys: {e}")),
        },
        (Some(_), None) => return refused("a quorum needs witness keys".to_owned()),
        (None, _) => None,
    };
    check(
        file,
        trusted.as_deref(),
        accept_unproven,
        witnesses.as_ref().map(|(k, w)| (*k, w.as_slice())),
    )
}
