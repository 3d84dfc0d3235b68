//! The browser verifier (`knhk-verifier-web`, core's verification behind wasm-bindgen) agrees
//! with `knhk-agent verify` on an honest and a tampered set: the same pass or fail, the same
//! facts, the same reason. Run natively here against the real binary; the page in a real
//! browser is issue 19's next step.

// An integration test crate: helpers may fail loudly like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use knhk_agent::kms::local::LocalSigner;
use knhk_agent::kms::Signer as _;
use knhk_agent::receipts::ReceiptLog;
use knhk_core::receipt::{encode_batch, ReceiptBuilder};
use serde_json::Value;

/// What the CLI concluded: pass, the facts on stdout, the reason on stderr.
fn cli(
    file: &Path,
    trusted: Option<&Path>,
    accept_unproven: bool,
) -> (bool, Vec<String>, Option<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_knhk-agent"));
    cmd.arg("verify").arg(file);
    match trusted {
        Some(t) => cmd.arg("--trusted-keys").arg(t),
        None => cmd.arg("--trust-keys-in-file"),
    };
    if accept_unproven {
        cmd.arg("--accept-unproven");
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let ok_line = format!("OK: {}", file.display());
    let lines = stdout
        .lines()
        .filter(|l| *l != ok_line)
        .map(str::to_owned)
        .collect();
    let prefix = format!("verification FAILED: {}: ", file.display());
    let reason = stderr
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(str::to_owned);
    (out.status.success(), lines, reason)
}

#[tokio::test]
async fn the_browser_verifier_agrees_with_the_cli_on_honest_and_tampered_files() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(LocalSigner::open(&dir.path().join("keys"), "ckpt").unwrap());
    let log = ReceiptLog::open(&dir.path().join("r.db"), "knhk.test/web", signer.clone())
        .await
        .unwrap();
    let batch = |r: std::ops::Range<u64>| {
        encode_batch(
            &r.map(|i| ReceiptBuilder::new(i).build())
                .collect::<Vec<_>>(),
        )
        .unwrap()
    };
    log.append_batch(&batch(0..20)).unwrap();
    log.seal(1).await.unwrap();
    log.rotate_key(2).await.unwrap();
    log.append_batch(&batch(20..30)).unwrap();
    log.seal(3).await.unwrap();
    // Both versions pinned: a bundle signed by version 2 carries no handover to follow.
    let trusted = serde_json::to_vec(&signer.public_keys().await.unwrap()).unwrap();
    let trust = dir.path().join("trusted.json");
    std::fs::write(&trust, &trusted).unwrap();
    let export: Value = serde_json::to_value(log.export().unwrap()).unwrap();
    let bundle: Value = serde_json::to_value(log.proof_bundle(5).unwrap()).unwrap();
    log.append_batch(&batch(30..31)).unwrap();
    let unsealed: Value = serde_json::to_value(log.export().unwrap()).unwrap();

    let flip = |v: &mut Value| {
        let mut bytes = STANDARD.decode(v.as_str().unwrap()).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        *v = Value::String(STANDARD.encode(bytes));
    };
    type Tamper = fn(&mut Value, &dyn Fn(&mut Value));
    let export_cases: Vec<(&str, Tamper)> = vec![
        ("honest export", |_, _| {}),
        ("a receipt altered", |e, flip| flip(&mut e["entries"][3])),
        ("checkpoints swapped", |e, _| {
            e["checkpoints"].as_array_mut().unwrap().swap(0, 1)
        }),
        ("a checkpoint signature altered", |e, flip| {
            flip(&mut e["checkpoints"][0]["signature"]["sig"])
        }),
        ("an entry removed", |e, _| {
            e["entries"].as_array_mut().unwrap().remove(7);
        }),
        ("a key replaced", |e, flip| {
            flip(&mut e["public_keys"][0]["public_key"])
        }),
    ];
    let bundle_cases: Vec<(&str, Tamper)> = vec![
        ("honest bundle", |_, _| {}),
        ("the bundled entry altered", |b, flip| flip(&mut b["entry"])),
        ("the tree size changed", |b, _| b["tree_size"] = 1000.into()),
        ("the proof cut short", |b, _| {
            b["inclusion_proof"].as_array_mut().unwrap().pop();
        }),
    ];
    let mut failures = 0;
    for (name, file, tamper) in export_cases
        .iter()
        .map(|(n, t)| (*n, &export, *t))
        .chain(bundle_cases.iter().map(|(n, t)| (*n, &bundle, *t)))
    {
        let mut v = file.clone();
        tamper(&mut v, &flip);
        let bytes = serde_json::to_vec(&v).unwrap();
        let path = dir.path().join(format!("{}.json", name.replace(' ', "-")));
        std::fs::write(&path, &bytes).unwrap();
        for keys in [Some(&trust), None] {
            let (ok, lines, reason) = cli(&path, keys.map(|p| p.as_path()), false);
            let trusted_text = keys.map(|_| String::from_utf8(trusted.clone()).unwrap());
            let web =
                knhk_verifier_web::verdict(&bytes, trusted_text.as_deref(), false, None, None);
            assert_eq!(web.ok, ok, "{name} (pinned: {})", keys.is_some());
            assert_eq!(web.failure, reason, "{name} (pinned: {})", keys.is_some());
            assert_eq!(web.lines, lines, "{name} (pinned: {})", keys.is_some());
            // The JSON the page reads is the same verdict.
            let json: Value = serde_json::from_str(&knhk_verifier_web::verify(
                &bytes,
                trusted_text.clone(),
                false,
                None,
                None,
            ))
            .unwrap();
            assert_eq!(json["ok"], ok, "{name}");
            if keys.is_some() && name.starts_with("honest") {
                assert!(ok, "{name}: {reason:?}");
            }
            if !name.starts_with("honest") {
                assert!(!ok, "{name} passed");
                failures += 1;
            }
        }
    }
    assert!(
        failures >= 16,
        "every tampering refused by both, pinned or not"
    );

    // Entries after the last checkpoint: refused unless accepted, by both.
    let bytes = serde_json::to_vec(&unsealed).unwrap();
    let path = dir.path().join("unsealed.json");
    std::fs::write(&path, &bytes).unwrap();
    let text = String::from_utf8(trusted.clone()).unwrap();
    for accept in [false, true] {
        let (ok, lines, reason) = cli(&path, Some(&trust), accept);
        let web = knhk_verifier_web::verdict(&bytes, Some(&text), accept, None, None);
        assert_eq!((web.ok, &web.failure, &web.lines), (ok, &reason, &lines));
        assert_eq!(ok, accept);
    }
    // Malformed keys are a clear refusal, not a pass.
    let web = knhk_verifier_web::verdict(
        &serde_json::to_vec(&export).unwrap(),
        Some("[{"),
        false,
        None,
        None,
    );
    assert!(!web.ok && web.failure.unwrap().starts_with("parsing trusted keys"));
}
