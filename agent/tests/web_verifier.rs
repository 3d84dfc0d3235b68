//! The browser verifier (`knhk-verifier-web`, core's verification behind wasm-bindgen) agrees
//! with `knhk-agent verify` on an honest and a tampered set: the same pass or fail, the same
//! facts, the same reason; natively, and as the offline page in a real headless Chromium.

// An integration test crate: helpers may fail loudly like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

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

/// An honest export and bundle of a log with a key rotation, each tampering of them, and the
/// same export with an unsealed entry; written under `dir` with the trust file.
struct Fixtures {
    dir: tempfile::TempDir,
    trust: std::path::PathBuf,
    trusted: Vec<u8>,
    /// (name, path, bytes) of each case, honest ones first.
    cases: Vec<(String, std::path::PathBuf, Vec<u8>)>,
    unsealed: (std::path::PathBuf, Vec<u8>),
    export: Value,
}

async fn fixtures() -> Fixtures {
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
    let mut cases = Vec::new();
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
        cases.push((name.to_owned(), path, bytes));
    }
    let bytes = serde_json::to_vec(&unsealed).unwrap();
    let path = dir.path().join("unsealed.json");
    std::fs::write(&path, &bytes).unwrap();
    Fixtures {
        dir,
        trust,
        trusted,
        cases,
        unsealed: (path, bytes),
        export,
    }
}

#[tokio::test]
async fn the_browser_verifier_agrees_with_the_cli_on_honest_and_tampered_files() {
    let Fixtures {
        dir: _dir,
        trust,
        trusted,
        cases,
        unsealed,
        export,
    } = fixtures().await;
    let mut failures = 0;
    for (name, path, bytes) in &cases {
        for keys in [Some(&trust), None] {
            let (ok, lines, reason) = cli(path, keys.map(|p| p.as_path()), false);
            let trusted_text = keys.map(|_| String::from_utf8(trusted.clone()).unwrap());
            let web = knhk_verifier_web::verdict(bytes, trusted_text.as_deref(), false, None, None);
            assert_eq!(web.ok, ok, "{name} (pinned: {})", keys.is_some());
            assert_eq!(web.failure, reason, "{name} (pinned: {})", keys.is_some());
            assert_eq!(web.lines, lines, "{name} (pinned: {})", keys.is_some());
            // The JSON the page reads is the same verdict.
            let json: Value = serde_json::from_str(&knhk_verifier_web::verify(
                bytes,
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
    let (path, bytes) = unsealed;
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

/// The page, built by `cargo xtask build-verifier`, in a real headless Chromium (Debian's, via
/// chromedriver), opened from a file with every network request refused: for each case the
/// page shows the verdict line and facts the CLI prints, word for word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_headless_chromium_shows_the_cli_verdicts_offline() {
    let page = match knhk_e2e::paths::verifier_page() {
        Ok(page) => page,
        Err(e) if !knhk_e2e::paths::require_real() => {
            eprintln!("SKIPPED: {e:#}");
            return;
        }
        Err(e) => panic!("{e:#}"),
    };
    let Some(browser) = knhk_e2e::browser::Browser::start(true).await.unwrap() else {
        return;
    };
    let client = browser.client.clone();
    let fx = fixtures().await;
    let page_url = format!("file://{}", page.canonicalize().unwrap().display());
    let mut checked = 0;
    let run = |name: String, path: std::path::PathBuf, accept: bool| {
        let client = client.clone();
        let page_url = page_url.clone();
        let trust = fx.trust.clone();
        async move {
            client.goto(&page_url).await.unwrap();
            knhk_e2e::wait::poll("the page's module to load", Duration::from_secs(20), || {
                let client = client.clone();
                async move {
                    let ready = client
                        .execute("return document.body.dataset.ready || null", vec![])
                        .await?;
                    Ok(ready.as_str().map(|_| ()))
                }
            })
            .await
            .unwrap();
            let element = |id: &'static str| {
                let client = client.clone();
                async move {
                    client
                        .find(knhk_e2e::browser::Locator::Id(id))
                        .await
                        .unwrap()
                }
            };
            let choose = |id: &'static str, file: std::path::PathBuf| async move {
                element(id)
                    .await
                    .send_keys(file.to_str().unwrap())
                    .await
                    .unwrap()
            };
            choose("file", path.clone()).await;
            choose("keys-file", trust.clone()).await;
            if accept {
                element("accept-unproven").await.click().await.unwrap();
            }
            element("verify").await.click().await.unwrap();
            let verdict = knhk_e2e::wait::poll("the verdict", Duration::from_secs(20), || {
                let client = client.clone();
                async move {
                    let shown = client
                        .execute(
                            "const r = document.getElementById('result'); return r.dataset.ok ? [document.getElementById('verdict').textContent, document.getElementById('lines').textContent] : null",
                            vec![],
                        )
                        .await?;
                    Ok(shown.as_array().map(|a| {
                        (
                            a[0].as_str().unwrap_or_default().to_owned(),
                            a[1].as_str().unwrap_or_default().to_owned(),
                        )
                    }))
                }
            })
            .await
            .unwrap();
            let (ok, lines, reason) = cli(&path, Some(&trust), accept);
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let expected = match &reason {
                None => format!("OK: {file}"),
                Some(r) => format!("verification FAILED: {file}: {r}"),
            };
            assert_eq!(verdict.0, expected, "{name}");
            let shown_lines: Vec<String> = if verdict.1.is_empty() {
                Vec::new()
            } else {
                verdict.1.split('\n').map(str::to_owned).collect()
            };
            assert_eq!(shown_lines, lines, "{name}");
            ok
        }
    };
    for (name, path, _) in fx.cases.clone() {
        let ok = run(name.clone(), path, false).await;
        assert_eq!(ok, name.starts_with("honest"), "{name}");
        checked += 1;
    }
    for accept in [false, true] {
        let ok = run(
            format!("unsealed, accepted: {accept}"),
            fx.unsealed.0.clone(),
            accept,
        )
        .await;
        assert_eq!(ok, accept);
        checked += 1;
    }
    assert_eq!(checked, fx.cases.len() + 2);
    browser.close().await.unwrap();
}
