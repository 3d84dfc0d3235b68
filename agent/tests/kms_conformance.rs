//! One conformance suite every signing provider passes, run here for the local Ed25519 signer
//! and for Transit on a real OpenBao dev server (issue 17 adds AWS KMS on moto and Azure Key
//! Vault on its double to the same suite): a signature verifies against the provider's public
//! keys and records provider, key id and version; a rotation through the log keeps every older
//! checkpoint verifying while new ones use the new version, and the public keys list every
//! live version; an unknown version is a clear error; a provider that is down fails the seal
//! with nothing recorded.

// An integration test crate: helpers may fail loudly like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;

use knhk_agent::clock::now_ns;
use knhk_agent::kms::transit::{TransitSettings, TransitSigner};
use knhk_agent::kms::{KmsError, Signer};
use knhk_agent::receipts::{ReceiptLog, ReceiptsError};
use knhk_core::checkpoint::{verify_signature, Alg};
use knhk_core::receipt::{encode_batch, ReceiptBuilder};
use support::Bao;

const MSG: &[u8] = b"knhk.test/conformance\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";

/// The suite, on a fresh key of `signer`.
async fn conformance(signer: Arc<dyn Signer>) {
    let what = format!("{}/{}", signer.provider(), signer.key_id());
    // Sign → verify, and what the signature records.
    let sig = signer.sign(MSG).await.unwrap();
    assert_eq!(sig.provider, signer.provider(), "{what}");
    assert_eq!(sig.key_id, signer.key_id(), "{what}");
    let keys = signer.public_keys().await.unwrap();
    assert_eq!(
        keys.iter().map(|k| k.version).collect::<Vec<_>>(),
        [sig.key_version],
        "{what}"
    );
    verify_signature(MSG, &sig, &keys).unwrap();
    let mut forged = sig.clone();
    forged.sig[0] ^= 1;
    assert!(
        verify_signature(MSG, &forged, &keys).is_err(),
        "{what}: a flipped bit verifies"
    );

    // Rotation through the log: the older checkpoint still verifies, new ones use the new version.
    let dir = tempfile::tempdir().unwrap();
    let log = ReceiptLog::open(
        &dir.path().join("receipts.db"),
        "knhk.test/conformance",
        signer.clone(),
    )
    .await
    .unwrap();
    let batch = || encode_batch(&[ReceiptBuilder::new(0).build()]).unwrap();
    log.append_batch(&batch()).unwrap();
    let before = log.seal(now_ns()).await.unwrap().unwrap();
    let (new, handover) = log.rotate_key(now_ns()).await.unwrap();
    assert_eq!(new.version, sig.key_version + 1, "{what}");
    assert_eq!(
        handover.signature.key_version, sig.key_version,
        "{what}: the handover is signed by the previous version"
    );
    log.append_batch(&batch()).unwrap();
    let after = log.seal(now_ns()).await.unwrap().unwrap();
    assert_eq!(after.signature.key_version, new.version, "{what}");
    let keys = signer.public_keys().await.unwrap();
    assert_eq!(
        keys.iter().map(|k| k.version).collect::<Vec<_>>(),
        [sig.key_version, new.version],
        "{what}: every live version"
    );
    for cp in [&before, &handover, &after] {
        verify_signature(cp.text.as_bytes(), &cp.signature, &keys).unwrap();
    }
    let export = log.export().unwrap();
    knhk_agent::verify::verify_json(&serde_json::to_vec(&export).unwrap(), Some(&keys)).unwrap();

    // An unknown version is a clear error naming it.
    match signer.sign_with_version(MSG, 99).await {
        Err(KmsError::UnknownVersion { version: 99, .. }) => {}
        other => panic!("{what}: version 99 gave {other:?}"),
    }
}

#[tokio::test]
async fn local_signer_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let signer = knhk_agent::kms::local::LocalSigner::open(dir.path(), "conformance").unwrap();
    conformance(Arc::new(signer)).await;
}

fn transit(bao: &Bao, key: &str) -> TransitSettings {
    TransitSettings {
        address: bao.addr.clone(),
        token: bao.token.clone(),
        mount: "transit".into(),
        key_name: key.into(),
        key_type: Alg::EcdsaP256,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transit_on_openbao_conforms_and_a_provider_down_records_nothing() {
    let Some(bao) = Bao::start().await else {
        return;
    };
    let signer = TransitSigner::connect(&transit(&bao, "conformance"))
        .await
        .unwrap();
    conformance(Arc::new(signer)).await;

    // Provider down: the seal fails with the provider's error, nothing is recorded, and the
    // log's checkpoint stays the last good one.
    let signer = Arc::new(
        TransitSigner::connect(&transit(&bao, "down"))
            .await
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let log = ReceiptLog::open(&dir.path().join("receipts.db"), "knhk.test/down", signer)
        .await
        .unwrap();
    log.append_batch(&encode_batch(&[ReceiptBuilder::new(0).build()]).unwrap())
        .unwrap();
    let good = log.seal(now_ns()).await.unwrap().unwrap();
    log.append_batch(&encode_batch(&[ReceiptBuilder::new(1).build()]).unwrap())
        .unwrap();
    drop(bao);
    match log.seal(now_ns()).await {
        Err(ReceiptsError::Kms(e)) => assert_eq!(e.kind(), "provider", "{e}"),
        other => panic!("a seal with the provider down gave {other:?}"),
    }
    assert_eq!(
        log.latest_checkpoint().unwrap().unwrap(),
        good,
        "no half-signed checkpoint"
    );
}
