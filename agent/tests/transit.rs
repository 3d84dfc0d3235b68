//! The Transit provider against a real OpenBao dev server: key creation, signing, public keys
//! of every version, rotation, and verification with `knhk-core`.

// An integration test crate: helpers may fail loudly like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use knhk_agent::kms::transit::{TransitSettings, TransitSigner};
use knhk_agent::kms::{build_signer, KmsConfig, KmsError, Provider, Signer};
use knhk_core::checkpoint::{verify_signature, Alg};
use support::Bao;

fn settings(bao: &Bao, key: &str, alg: Alg) -> TransitSettings {
    TransitSettings {
        address: bao.addr.clone(),
        token: bao.token.clone(),
        mount: "transit".into(),
        key_name: key.into(),
        key_type: alg,
    }
}

async fn exercise(bao: &Bao, alg: Alg) {
    let signer = TransitSigner::connect(&settings(bao, &format!("ckpt-{alg}"), alg))
        .await
        .unwrap();
    let msg = b"knhk.test/log\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
    let s1 = signer.sign(msg).await.unwrap();
    assert_eq!(
        (s1.provider.as_str(), s1.key_version, s1.alg),
        ("transit", 1, alg)
    );
    let keys = signer.public_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    verify_signature(msg, &s1, &keys).unwrap();

    let v2 = signer.rotate().await.unwrap();
    assert_eq!(v2.version, 2);
    let s2 = signer.sign(msg).await.unwrap();
    assert_eq!(s2.key_version, 2);
    let old = signer.sign_with_version(msg, 1).await.unwrap();
    assert_eq!(old.key_version, 1);
    let keys = signer.public_keys().await.unwrap();
    assert_eq!(keys.iter().map(|k| k.version).collect::<Vec<_>>(), [1, 2]);
    assert!(keys.iter().all(|k| !k.retired));
    for sig in [&s1, &s2, &old] {
        verify_signature(msg, sig, &keys).unwrap();
    }
    let mut tampered = s2.clone();
    tampered.key_version = 1;
    assert!(verify_signature(msg, &tampered, &keys).is_err());

    // Reconnecting finds the existing key instead of creating another.
    let again = TransitSigner::connect(&settings(bao, &format!("ckpt-{alg}"), alg))
        .await
        .unwrap();
    assert_eq!(again.public_keys().await.unwrap(), keys);
}

/// An Ed25519 Transit key is created, signs, rotates, and every version verifies locally.
#[tokio::test]
async fn transit_ed25519_sign_rotate_verify() {
    let Some(bao) = Bao::start().await else {
        return;
    };
    exercise(&bao, Alg::Ed25519).await;
}

/// An ECDSA P-256 Transit key is created, signs (DER converted), rotates, and verifies locally.
#[tokio::test]
async fn transit_ecdsa_p256_sign_rotate_verify() {
    let Some(bao) = Bao::start().await else {
        return;
    };
    exercise(&bao, Alg::EcdsaP256).await;
}

/// Versions below min_decryption_version are reported retired and their signatures refused.
#[tokio::test]
async fn transit_retired_versions_are_refused() {
    let Some(bao) = Bao::start().await else {
        return;
    };
    let signer = TransitSigner::connect(&settings(&bao, "retire", Alg::Ed25519))
        .await
        .unwrap();
    let old = signer.sign(b"m").await.unwrap();
    signer.rotate().await.unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/transit/keys/retire/config", bao.addr))
        .header("X-Vault-Token", &bao.token)
        .json(&serde_json::json!({"min_decryption_version": 2}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    let keys = signer.public_keys().await.unwrap();
    let v1 = keys.iter().find(|k| k.version == 1);
    assert!(v1.is_none_or(|k| k.retired), "{keys:?}");
    assert!(verify_signature(b"m", &old, &keys).is_err());
    let new = signer.sign(b"m").await.unwrap();
    verify_signature(b"m", &new, &keys).unwrap();
}

/// An existing key of another type is refused instead of silently used.
#[tokio::test]
async fn transit_key_type_mismatch_is_refused() {
    let Some(bao) = Bao::start().await else {
        return;
    };
    TransitSigner::connect(&settings(&bao, "typed", Alg::Ed25519))
        .await
        .unwrap();
    let err = TransitSigner::connect(&settings(&bao, "typed", Alg::EcdsaP256))
        .await
        .unwrap_err();
    assert!(matches!(err, KmsError::KeyTypeMismatch { .. }), "{err}");
}

/// The configured path (legacy env overrides included) builds a working Transit signer, and a
/// bad token fails with a vault error naming the operation.
#[tokio::test]
async fn transit_from_legacy_environment() {
    let Some(bao) = Bao::start().await else {
        return;
    };
    let mut cfg = KmsConfig::default();
    let vars = [
        ("KGC_SIDECAR_KMS_PROVIDER", "vault".to_owned()),
        ("KGC_SIDECAR_KMS_KEY_ID", "legacy-key".to_owned()),
        ("KGC_SIDECAR_KMS_VAULT_URL", bao.addr.clone()),
        ("KGC_SIDECAR_KMS_VAULT_MOUNT", "transit".to_owned()),
        ("VAULT_TOKEN", bao.token.clone()),
    ];
    cfg.apply_env(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
        .unwrap();
    assert_eq!(cfg.provider, Provider::Transit);
    let signer = build_signer(&cfg).await.unwrap();
    assert_eq!(signer.key_id(), "legacy-key");
    let sig = signer.sign(b"x").await.unwrap();
    verify_signature(b"x", &sig, &signer.public_keys().await.unwrap()).unwrap();

    cfg.vault_token = Some("wrong-token".into());
    let err = build_signer(&cfg).await.err().unwrap();
    assert!(err.to_string().contains("vault read key"), "{err}");
}
