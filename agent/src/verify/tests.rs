//! Tamper tests: an honest bundle and export verify; altering any field is detected with its
//! own error.

use std::collections::HashSet;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use knhk_core::checkpoint::{Checkpoint, CheckpointError};
use knhk_core::export::{LogExport, ProofBundle};
use knhk_core::receipt::encode_batch;

use super::*;

/// Does an error have the expected kind?
type Expect = fn(&VerifyError) -> bool;
use crate::kms::local::LocalSigner;
use crate::kms::Signer as _;
use crate::receipts::store::tests::sample;
use crate::receipts::ReceiptLog;

struct Fixture {
    _dir: tempfile::TempDir,
    log: ReceiptLog,
    signer: Arc<LocalSigner>,
}

/// A log of 3 batches with checkpoints at 10, 25 and (after a rotation) 26 and 40 leaves.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(LocalSigner::open(&dir.path().join("keys"), "ckpt").unwrap());
    let log = ReceiptLog::open(&dir.path().join("r.db"), "knhk.test/log", signer.clone())
        .await
        .unwrap();
    let batch = |r: std::ops::Range<u64>| encode_batch(&r.map(sample).collect::<Vec<_>>()).unwrap();
    log.append_batch(&batch(0..10)).unwrap();
    log.seal(1_000).await.unwrap().unwrap();
    log.append_batch(&batch(10..25)).unwrap();
    log.seal(2_000).await.unwrap().unwrap();
    assert!(
        log.seal(2_500).await.unwrap().is_none(),
        "nothing new to seal"
    );
    log.rotate_key(3_000).await.unwrap();
    log.append_batch(&batch(26..40)).unwrap();
    log.seal(4_000).await.unwrap().unwrap();
    Fixture {
        _dir: dir,
        log,
        signer,
    }
}

fn flip(bytes: &mut [u8], at: usize) {
    bytes[at] ^= 0x01;
}

fn b64_flip(text: &str) -> String {
    let mut raw = STANDARD.decode(text).unwrap();
    flip(&mut raw, 0);
    STANDARD.encode(raw)
}

/// The honest bundle verifies with and without a trusted key set, for every leaf.
#[tokio::test]
async fn honest_bundles_verify() {
    let f = fixture().await;
    let keys = f.signer.public_keys().await.unwrap();
    for i in 0..40 {
        let b = f.log.proof_bundle(i).unwrap();
        let report = verify_bundle(&b, None).unwrap();
        assert!(report.self_certified);
        verify_bundle(&b, Some(&keys)).unwrap();
        let json = serde_json::to_vec(&b).unwrap();
        verify_json(&json, Some(&keys)).unwrap();
    }
    assert!(matches!(
        f.log.proof_bundle(40),
        Err(crate::receipts::ReceiptsError::NotSealed { index: 40 })
    ));
}

/// Tampering with each bundle field is detected, each with its own error.
#[tokio::test]
async fn bundle_tampering_is_detected_per_field() {
    let f = fixture().await;
    let keys = f.signer.public_keys().await.unwrap();
    let honest = f.log.proof_bundle(7).unwrap();
    type Tamper = fn(&mut ProofBundle);
    let cases: Vec<(&str, Tamper, Expect)> = vec![
        (
            "receipt byte",
            |b| flip(&mut b.entry, 40),
            |e| matches!(e, VerifyError::LeafHashMismatch),
        ),
        (
            "receipt field out of range",
            |b| b.entry[26] = 9,
            |e| matches!(e, VerifyError::MalformedEntry { .. }),
        ),
        (
            "leaf hash",
            |b| flip(&mut b.leaf_hash, 3),
            |e| matches!(e, VerifyError::LeafHashMismatch),
        ),
        (
            "proof hash",
            |b| flip(&mut b.inclusion_proof[1], 5),
            |e| matches!(e, VerifyError::InclusionFailed { .. }),
        ),
        (
            "proof truncated",
            |b| {
                b.inclusion_proof.pop();
            },
            |e| matches!(e, VerifyError::InclusionFailed { .. }),
        ),
        (
            "leaf index",
            |b| b.leaf_index = 8,
            |e| matches!(e, VerifyError::InclusionFailed { .. }),
        ),
        (
            "tree size",
            |b| b.tree_size += 1,
            |e| matches!(e, VerifyError::TreeSizeMismatch { .. }),
        ),
        (
            "root hash",
            |b| flip(&mut b.root_hash, 0),
            |e| matches!(e, VerifyError::RootHashMismatch),
        ),
        (
            "signed tree size",
            |b| b.checkpoint.text = b.checkpoint.text.replacen("\n40\n", "\n41\n", 1),
            |e| matches!(e, VerifyError::TreeSizeMismatch { .. }),
        ),
        (
            "signed text",
            |b| {
                b.checkpoint.text =
                    b.checkpoint
                        .text
                        .replacen("knhk.test/log", "knhk.test/other", 1)
            },
            |e| matches!(e, VerifyError::BadSignature { .. }),
        ),
        (
            "checkpoint garbage",
            |b| b.checkpoint.text.push('\n'),
            |e| matches!(e, VerifyError::MalformedCheckpoint { .. }),
        ),
        (
            "signature",
            |b| flip(&mut b.checkpoint.signature.sig, 10),
            |e| matches!(e, VerifyError::BadSignature { .. }),
        ),
        (
            "signature key version",
            |b| b.checkpoint.signature.key_version = 1,
            |e| matches!(e, VerifyError::KeyVersionMismatch { .. }),
        ),
        (
            "key version",
            |b| b.public_key.version = 7,
            |e| matches!(e, VerifyError::KeyVersionMismatch { .. }),
        ),
        (
            "public key",
            |b| flip(&mut b.public_key.public_key, 0),
            |e| matches!(e, VerifyError::BadSignature { .. }),
        ),
        (
            "retired key",
            |b| b.public_key.retired = true,
            |e| {
                matches!(
                    e,
                    VerifyError::BadSignature {
                        source: CheckpointError::RetiredKey { .. },
                        ..
                    }
                )
            },
        ),
        (
            "format",
            |b| b.format = "other".into(),
            |e| matches!(e, VerifyError::UnknownFormat(_)),
        ),
    ];
    let mut messages = HashSet::new();
    for (name, tamper, expect) in cases {
        let mut b = honest.clone();
        tamper(&mut b);
        let err = verify_bundle(&b, Some(&keys)).expect_err(name);
        assert!(expect(&err), "{name}: {err}");
        messages.insert(err.to_string());
    }
    assert!(
        messages.len() >= 12,
        "messages are not distinct: {messages:?}"
    );
}

/// A bundle re-signed by a forger's own key passes only without a trust anchor; with the
/// agent's key set it is refused as untrusted.
#[tokio::test]
async fn forged_key_is_refused_with_trusted_keys() {
    let f = fixture().await;
    let keys = f.signer.public_keys().await.unwrap();
    let mut b = f.log.proof_bundle(3).unwrap();
    let forger_dir = tempfile::tempdir().unwrap();
    let forger = LocalSigner::open(forger_dir.path(), "ckpt").unwrap();
    forger.rotate().await.unwrap();
    b.checkpoint.signature = forger.sign(b.checkpoint.text.as_bytes()).await.unwrap();
    b.public_key = forger.public_keys().await.unwrap().pop().unwrap();
    verify_bundle(&b, None).unwrap();
    let err = verify_bundle(&b, Some(&keys)).unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedKey { .. }), "{err}");
}

/// The honest export verifies, and trust in version 1 alone extends to version 2 through the
/// logged rotation vouched for by version 1.
#[tokio::test]
async fn honest_export_verifies_with_rotation_handover() {
    let f = fixture().await;
    let keys = f.signer.public_keys().await.unwrap();
    let export = f.log.export().unwrap();
    assert_eq!(export.entries.len(), 40);
    assert_eq!(export.checkpoints.len(), 4);
    let report = verify_export(&export, None).unwrap();
    assert!(
        report.lines[1].contains("1 key rotation"),
        "{:?}",
        report.lines
    );
    verify_export(&export, Some(&keys)).unwrap();
    let v1_only: Vec<_> = keys.iter().filter(|k| k.version == 1).cloned().collect();
    verify_export(&export, Some(&v1_only)).unwrap();
    let v2_only: Vec<_> = keys.iter().filter(|k| k.version == 2).cloned().collect();
    assert!(matches!(
        verify_export(&export, Some(&v2_only)),
        Err(VerifyError::UntrustedKey { version: 1, .. })
    ));
    let json = serde_json::to_vec(&export).unwrap();
    verify_json(&json, Some(&v1_only)).unwrap();
}

/// Tampering with each part of an export is detected, each with its own error.
#[tokio::test]
async fn export_tampering_is_detected_per_field() {
    let f = fixture().await;
    let keys = f.signer.public_keys().await.unwrap();
    let honest = f.log.export().unwrap();
    type Tamper = fn(&mut LogExport);
    let cases: Vec<(&str, Tamper, Expect)> = vec![
        (
            "receipt byte",
            |e| flip(&mut e.entries[3], 40),
            |e| matches!(e, VerifyError::CheckpointRootMismatch { index: 0, .. }),
        ),
        (
            "receipt removed",
            |e| {
                e.entries.remove(12);
            },
            |e| matches!(e, VerifyError::CheckpointRootMismatch { index: 1, .. }),
        ),
        (
            "receipts reordered",
            |e| e.entries.swap(1, 2),
            |e| matches!(e, VerifyError::CheckpointRootMismatch { index: 0, .. }),
        ),
        (
            "log truncated",
            |e| e.entries.truncate(20),
            |e| matches!(e, VerifyError::CheckpointBeyondLog { .. }),
        ),
        (
            "key rotation turned into a pruned leaf",
            |e| {
                let hash = knhk_core::merkle::leaf_hash(&e.entries[25]);
                e.entries[25].clear();
                e.pruned_hashes = vec![hash];
            },
            |e| matches!(e, VerifyError::UnlistedPrune { index: 25 }),
        ),
        (
            "receipt pruned without a retention record",
            |e| {
                let hash = knhk_core::merkle::leaf_hash(&e.entries[3]);
                e.entries[3].clear();
                e.pruned_hashes = vec![hash];
            },
            |e| matches!(e, VerifyError::UnlistedPrune { index: 3 }),
        ),
        (
            "malformed entry",
            |e| e.entries[0] = vec![0, 1],
            |e| matches!(e, VerifyError::MalformedEntry { index: 0, .. }),
        ),
        (
            "checkpoints swapped",
            |e| e.checkpoints.swap(1, 2),
            |e| matches!(e, VerifyError::CheckpointOrder { .. }),
        ),
        (
            "checkpoint timestamp",
            |e| {
                e.checkpoints[1].text = e.checkpoints[1]
                    .text
                    .replace("timestamp_ns 2000", "timestamp_ns 500")
            },
            |e| matches!(e, VerifyError::TimeOrder { index: 1 }),
        ),
        (
            "checkpoint root",
            |e| {
                e.checkpoints[1].text = {
                    let c = Checkpoint::parse(&e.checkpoints[1].text).unwrap();
                    e.checkpoints[1].text.replace(
                        &STANDARD.encode(c.root_hash),
                        &b64_flip(&STANDARD.encode(c.root_hash)),
                    )
                }
            },
            |e| matches!(e, VerifyError::CheckpointRootMismatch { index: 1, .. }),
        ),
        (
            "checkpoint origin",
            |e| {
                e.checkpoints[0].text = e.checkpoints[0]
                    .text
                    .replace("knhk.test/log", "knhk.test/x")
            },
            |e| matches!(e, VerifyError::OriginMismatch { index: 0, .. }),
        ),
        (
            "checkpoint signature",
            |e| flip(&mut e.checkpoints[2].signature.sig, 0),
            |e| matches!(e, VerifyError::BadSignature { index: 2, .. }),
        ),
        (
            "checkpoint key version",
            |e| e.checkpoints[3].signature.key_version = 1,
            |e| matches!(e, VerifyError::BadSignature { index: 3, .. }),
        ),
        (
            "unknown key version",
            |e| e.checkpoints[3].signature.key_version = 9,
            |e| {
                matches!(
                    e,
                    VerifyError::BadSignature {
                        index: 3,
                        source: CheckpointError::UnknownKey { .. }
                    }
                )
            },
        ),
        (
            "public key",
            |e| flip(&mut e.public_keys[0].public_key, 0),
            |e| matches!(e, VerifyError::BadSignature { index: 0, .. }),
        ),
        (
            "rotated public key",
            |e| flip(&mut e.public_keys[1].public_key, 0),
            |e| matches!(e, VerifyError::RotationKeyMismatch { version: 2, .. }),
        ),
        (
            "consistency proof",
            |e| flip(&mut e.consistency[0].proof[0], 0),
            |e| {
                matches!(
                    e,
                    VerifyError::ConsistencyFailed {
                        from: 10,
                        to: 25,
                        ..
                    }
                )
            },
        ),
        (
            "consistency step dropped",
            |e| {
                e.consistency.remove(1);
            },
            |e| matches!(e, VerifyError::ConsistencyShape { .. }),
        ),
        (
            "consistency sizes",
            |e| e.consistency[2].from = 24,
            |e| matches!(e, VerifyError::ConsistencyShape { index: 2 }),
        ),
        (
            "format",
            |e| e.format = "x".into(),
            |e| matches!(e, VerifyError::UnknownFormat(_)),
        ),
    ];
    let mut messages = HashSet::new();
    for (name, tamper, expect) in cases {
        let mut e = honest.clone();
        tamper(&mut e);
        let err = verify_export(&e, Some(&keys)).expect_err(name);
        assert!(expect(&err), "{name}: {err}");
        messages.insert(err.to_string());
    }
    assert!(
        messages.len() >= 14,
        "messages are not distinct: {messages:?}"
    );
}

/// Files that are not JSON, or JSON of another shape, are refused with a format error.
#[test]
fn unknown_files_are_refused() {
    for bad in [
        &b"not json"[..],
        b"{}",
        b"{\"format\":\"knhk-proof-bundle/v1\"}",
        b"[1,2]",
    ] {
        assert!(matches!(
            verify_json(bad, None),
            Err(VerifyError::UnknownFormat(_))
        ));
    }
}

/// Leaves pruned the way retention prunes them (a retention record first, then the payloads)
/// verify and are listed; an empty leaf the record does not list, or one listed only by a
/// record before it, fails.
#[tokio::test]
async fn pruned_leaves_must_be_listed_by_a_later_retention_record() {
    use knhk_core::receipt::{LogEntry, PruneRecord};
    let f = fixture().await;
    let keys = f.signer.public_keys().await.unwrap();
    let records: Vec<LogEntry> = PruneRecord::covering(5_000, 4_500, &[2, 3, 4, 7])
        .into_iter()
        .map(LogEntry::Pruned)
        .collect();
    f.log.append_entries(&records).unwrap();
    assert_eq!(f.log.prune(&[2, 3, 4, 7]).unwrap(), 4);
    f.log.seal(6_000).await.unwrap().unwrap();
    let export = f.log.export().unwrap();
    assert_eq!(export.pruned_hashes.len(), 4);
    let report = verify_export(&export, Some(&keys)).unwrap();
    let text = report.lines.join("\n");
    assert!(
        text.contains("4 receipt payload(s) pruned") && text.contains("leaves 2..5, 7"),
        "{text}"
    );

    let mut unlisted = export.clone();
    let hash = knhk_core::merkle::leaf_hash(&unlisted.entries[8]);
    unlisted.entries[8].clear();
    unlisted.pruned_hashes.push(hash);
    let e = verify_export(&unlisted, Some(&keys)).unwrap_err();
    assert!(matches!(e, VerifyError::UnlistedPrune { index: 8 }), "{e}");
}

/// Batches that name their pod: the export attributes every receipt to it, a receipt's bundle
/// names the pod, a bundle whose origin leaf was altered is refused, and a signed log whose
/// origin claims leaves that are not its receipts is refused.
#[tokio::test]
async fn batch_origins_attribute_receipts_and_their_spans_are_checked() {
    use knhk_core::receipt::{encode_origin_batch, BatchOrigin, LogEntry, Origin};
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(LocalSigner::open(&dir.path().join("keys"), "ckpt").unwrap());
    let log = ReceiptLog::open(&dir.path().join("r.db"), "knhk.test/log", signer)
        .await
        .unwrap();
    let origin = Origin::new("checkout-1", "shop", "node-a").unwrap();
    let receipts: Vec<_> = (0..4).map(sample).collect();
    let range = log
        .append_batch_from(
            &encode_origin_batch(&origin, &receipts).unwrap(),
            "10.0.0.7",
        )
        .unwrap();
    assert_eq!(range, 1..5, "the origin leaf comes first");
    log.append_batch(&encode_batch(&receipts[..2]).unwrap())
        .unwrap();
    log.seal(1_000).await.unwrap().unwrap();

    let report = verify_export(&log.export().unwrap(), None).unwrap();
    assert!(
        report.lines.iter().any(|l| l.contains(
            "4 receipt(s) attributed by 1 batch origin(s) to 1 pod(s): shop/checkout-1 on node-a"
        )),
        "{:?}",
        report.lines
    );
    let bundle = log.proof_bundle(3).unwrap();
    let lines = verify_bundle(&bundle, None).unwrap().lines;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("decided by shop/checkout-1 on node-a")
                && l.contains("leaf 0")
                && l.contains("10.0.0.7")),
        "{lines:?}"
    );
    assert!(
        log.proof_bundle(5).unwrap().origin.is_none(),
        "a batch without an origin has none"
    );
    let mut altered = bundle.clone();
    let origin_entry = &mut altered.origin.as_mut().unwrap().entry;
    let last = origin_entry.len() - 1;
    origin_entry[last] = b'8';
    assert!(matches!(
        verify_bundle(&altered, None),
        Err(VerifyError::BadOrigin(m)) if m.contains("inclusion proof")
    ));

    // A misbehaving writer: an origin claiming three receipts, then a rotation entry.
    let dir2 = tempfile::tempdir().unwrap();
    let signer2 = Arc::new(LocalSigner::open(&dir2.path().join("keys"), "ckpt").unwrap());
    let bad = ReceiptLog::open(&dir2.path().join("r.db"), "knhk.test/log", signer2)
        .await
        .unwrap();
    bad.append_entries(&[
        LogEntry::BatchOrigin(BatchOrigin {
            time_ns: 1,
            count: 3,
            origin,
            peer: String::new(),
        }),
        LogEntry::Receipt(sample(0)),
    ])
    .unwrap();
    bad.rotate_key(2_000).await.unwrap();
    bad.seal(3_000).await.unwrap();
    let e = verify_export(&bad.export().unwrap(), None).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::OriginSpan {
                index: 0,
                count: 3,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("leaf 2 is a key rotation entry"),
        "{e}"
    );
}
