//! `knhk-agent keys rotate` while the agent runs: the running signer adopts the version the
//! command wrote, the next seal logs the handover (a rotation entry, sealed by the previous
//! version, as every rotation), and the seals after it sign with the new version; the log
//! verifies offline with both keys.

// An integration test crate: helpers may fail loudly like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use knhk_agent::clock::now_ns;
use knhk_agent::kms::local::LocalSigner;
use knhk_agent::kms::Signer;
use knhk_agent::receipts::ReceiptLog;
use knhk_core::receipt::{encode_batch, LogEntry, ReceiptBuilder};

#[tokio::test]
async fn a_rotation_by_another_process_takes_effect_at_the_next_seal() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let signer: Arc<dyn Signer> = Arc::new(LocalSigner::open(&keys, "checkpoints").unwrap());
    let log = ReceiptLog::open(&dir.path().join("receipts.db"), "knhk.test/rotate", signer)
        .await
        .unwrap();
    let batch = || encode_batch(&[ReceiptBuilder::new(0).build()]).unwrap();
    log.append_batch(&batch()).unwrap();
    let first = log.seal(now_ns()).await.unwrap().unwrap();
    assert_eq!(first.signature.key_version, 1);

    // The command, as `knhk-agent keys rotate` runs it: its own signer on the same directory.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_knhk-agent"))
        .args(["keys", "--config"])
        .arg({
            let config = dir.path().join("agent.toml");
            std::fs::write(
                &config,
                format!(
                    "data_dir = {:?}\n[kms]\nkey_id = \"checkpoints\"\nkey_dir = {:?}\n",
                    dir.path().join("data").display().to_string(),
                    keys.display().to_string()
                ),
            )
            .unwrap();
            config
        })
        .arg("rotate")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rotated["version"], 2, "{rotated}");

    // The next seal adopts it: a rotation entry, sealed by the previous version.
    log.append_batch(&batch()).unwrap();
    let handover = log.seal(now_ns()).await.unwrap().unwrap();
    assert_eq!(
        handover.signature.key_version, 1,
        "the handover is vouched for by v1"
    );
    let export = log.export().unwrap();
    let rotations: Vec<(u32, u32)> = export
        .entries
        .iter()
        .filter_map(|e| match LogEntry::decode(e).ok()? {
            LogEntry::KeyRotation(r) => Some((r.previous_version, r.new_version)),
            _ => None,
        })
        .collect();
    assert_eq!(rotations, [(1, 2)]);
    // And every seal after it signs with v2.
    log.append_batch(&batch()).unwrap();
    let after = log.seal(now_ns()).await.unwrap().unwrap();
    assert_eq!(after.signature.key_version, 2);
    let versions: Vec<u32> = export.public_keys.iter().map(|k| k.version).collect();
    assert_eq!(versions, [1, 2]);
    // The whole log verifies offline against both versions, pinned.
    let export = log.export().unwrap();
    let json = serde_json::to_vec(&export).unwrap();
    knhk_agent::verify::verify_json(&json, Some(&export.public_keys)).unwrap();
}
