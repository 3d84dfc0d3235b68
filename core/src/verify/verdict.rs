//! The verdict on a file, in the words `knhk-agent verify` prints, for every host that shows it
//! (the CLI, the verifier in the browser): the facts established, whether the file passes, and
//! the reason when it does not.

use serde::Serialize;

use super::quorum::verify_cosignatures_json;
use super::verify_json;
use crate::checkpoint::PublicKeyVersion;
use crate::cosignature::WitnessKey;

/// The warning shown when the keys came from the file itself.
pub const SELF_CERTIFIED_WARNING: &str = "warning: keys were taken from the file itself (--trust-keys-in-file): this shows the file is consistent with itself, not who signed it";

/// What a check concluded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Whether the file passes.
    pub ok: bool,
    /// One line per established fact (and the self-certification warning), in order.
    pub lines: Vec<String>,
    /// Why it fails (without the file's name); `None` when it passes.
    pub failure: Option<String>,
}

/// Check `json` (a proof bundle or log export) against `trusted` keys (`None`: the keys in the
/// file), requiring a quorum of `k` signatures by `witnesses` when given, and refusing entries
/// after the last checkpoint unless `accept_unproven`.
pub fn check(
    json: &[u8],
    trusted: Option<&[PublicKeyVersion]>,
    accept_unproven: bool,
    quorum: Option<(usize, &[WitnessKey])>,
) -> Verdict {
    let checked = verify_json(json, trusted).and_then(|mut report| {
        if let Some((k, witnesses)) = quorum {
            report
                .lines
                .extend(verify_cosignatures_json(json, k, witnesses)?);
        }
        Ok(report)
    });
    match checked {
        Ok(report) if report.unproven > 0 && !accept_unproven => Verdict {
            ok: false,
            failure: Some(format!(
                "{} entries after the last checkpoint are proven by no signature (--accept-unproven accepts them as unproven)",
                report.unproven
            )),
            lines: report.lines,
        },
        Ok(mut report) => {
            if report.self_certified {
                report.lines.push(SELF_CERTIFIED_WARNING.to_owned());
            }
            Verdict {
                ok: true,
                lines: report.lines,
                failure: None,
            }
        }
        Err(e) => Verdict {
            ok: false,
            lines: Vec::new(),
            failure: Some(e.to_string()),
        },
    }
}
