//! The `knhk-agent` binary: `keys list` writes a trust file, `verify` passes an honest export
//! and bundle and exits non-zero with the reason on a tampered one.

// An integration test crate: helpers may fail loudly like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use knhk_agent::kms::local::LocalSigner;
use knhk_agent::receipts::ReceiptLog;
use knhk_core::class::{Class, Route};
use knhk_core::receipt::{encode_batch, Receipt, ReceiptBuilder};

fn agent(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_knhk-agent"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn receipt(i: u64) -> Receipt {
    ReceiptBuilder::new(i)
        .time_ns(i)
        .key_digest([i as u8; 16])
        .route(Some(Route::Stable))
        .routing_bucket(1)
        .priority(2)
        .class(Class::W1)
        .latency_us(10)
        .config_epoch(3)
        .worker_id(0)
        .build()
}

/// keys list prints a trust file; verify accepts the honest export and bundle with it and
/// rejects a tampered export with exit code 1 and the reason on stderr.
#[tokio::test]
async fn verify_command_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let key_dir = dir.path().join("keys");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[kms]\nprovider = \"local\"\nkey_id = \"ckpt\"\nkey_dir = \"{}\"\n",
            key_dir.display()
        ),
    )
    .unwrap();
    let listed = agent(&["keys", "--config", config.to_str().unwrap(), "list"], &[]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let trust = dir.path().join("trusted.json");
    std::fs::write(&trust, &listed.stdout).unwrap();

    let signer = Arc::new(LocalSigner::open(&key_dir, "ckpt").unwrap());
    let log = ReceiptLog::open(&dir.path().join("r.db"), "knhk.test/cli", signer)
        .await
        .unwrap();
    log.append_batch(&encode_batch(&(0..20).map(receipt).collect::<Vec<_>>()).unwrap())
        .unwrap();
    log.seal(1).await.unwrap();
    log.rotate_key(2).await.unwrap();
    log.append_batch(&encode_batch(&(20..30).map(receipt).collect::<Vec<_>>()).unwrap())
        .unwrap();
    log.seal(3).await.unwrap();

    let export = dir.path().join("export.json");
    std::fs::write(&export, serde_json::to_vec(&log.export().unwrap()).unwrap()).unwrap();
    let bundle = dir.path().join("bundle.json");
    std::fs::write(
        &bundle,
        serde_json::to_vec(&log.proof_bundle(5).unwrap()).unwrap(),
    )
    .unwrap();

    // The trust file predates the rotation: version 2 is trusted through the logged handover.
    let ok = agent(
        &[
            "verify",
            export.to_str().unwrap(),
            "--trusted-keys",
            trust.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("OK:"));

    let plain = agent(&["verify", bundle.to_str().unwrap()], &[]);
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    assert!(String::from_utf8_lossy(&plain.stdout).contains("warning: keys were taken"));

    let mut tampered: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&export).unwrap()).unwrap();
    tampered["checkpoints"].as_array_mut().unwrap().swap(0, 1);
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, serde_json::to_vec(&tampered).unwrap()).unwrap();
    let failed = agent(&["verify", bad.to_str().unwrap()], &[]);
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("verification FAILED") && stderr.contains("does not grow the log"),
        "{stderr}"
    );

    let missing = agent(
        &["verify", dir.path().join("nope.json").to_str().unwrap()],
        &[],
    );
    assert!(!missing.status.success());
}

/// A rotation interval above 24 h from the legacy variable makes the binary exit non-zero
/// with an error naming the variable.
#[test]
fn rotation_interval_above_24h_is_refused_by_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[kms]\nkey_dir = \"{}\"\n",
            dir.path().join("keys").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_knhk-agent"))
        .args(["keys", "--config", config.to_str().unwrap(), "list"])
        .env("KGC_SIDECAR_KEY_ROTATION_INTERVAL_HOURS", "25")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("KGC_SIDECAR_KEY_ROTATION_INTERVAL_HOURS"),
        "{stderr}"
    );
}
