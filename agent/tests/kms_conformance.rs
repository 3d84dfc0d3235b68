//! One conformance suite every signing provider passes, run here for the local Ed25519 signer,
//! Transit on a real OpenBao dev server, AWS KMS on a real moto server and Azure Key Vault on
//! the Key Vault test double (no emulator installs here): a signature verifies against the
//! provider's public keys and records provider, key id and version; a rotation through the log
//! keeps every older checkpoint verifying while new ones use the new version, and the public
//! keys list every live version; an unknown version is a clear error; the timed rotation
//! rotates on its own on an injected clock; a provider that is down fails the seal with nothing
//! recorded.

// An integration test crate: helpers may fail loudly like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use knhk_agent::clock::now_ns;
use knhk_agent::rotation::{Clock, Rotator};

use knhk_agent::kms::aws::{AwsSettings, AwsSigner, Credentials};
use knhk_agent::kms::aws_key_ref::AwsKeyRef;
use knhk_agent::kms::azure::AzureSigner;
use knhk_agent::kms::azure_settings::{AzureCredential, AzureSettings};
use knhk_agent::kms::transit::{TransitSettings, TransitSigner};
use knhk_agent::kms::{KmsError, RemoteFailure, Signer};
use knhk_agent::receipts::{ReceiptLog, ReceiptsError};
use knhk_core::checkpoint::{verify_signature, Alg};
use knhk_core::receipt::{encode_batch, ReceiptBuilder};
use knhk_e2e::azure_keyvault::{write_federated_token, KeyVaultDouble, Perm, TENANT};
use support::{Bao, Moto};

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

    // The timed rotation rotates on its own once the newest version has signed for the
    // interval, on an injected clock, and the next seal uses the new version.
    let log = Arc::new(log);
    let t0 = now_ns();
    log.key_in_use_since(t0).unwrap();
    let now = Arc::new(AtomicU64::new(t0));
    let read = now.clone();
    let clock: Clock = Arc::new(move || read.load(Ordering::SeqCst));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let hour = Duration::from_secs(3600);
    let task = Rotator::new(hour)
        .with_clock(clock, Duration::from_millis(10))
        .spawn(log.clone(), stopped);
    let live = || async { signer.public_keys().await.unwrap().len() };
    assert_eq!(live().await, 2, "{what}: no rotation before the interval");
    now.store(t0 + 3_600_000_000_000, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    while live().await < 3 {
        assert!(
            Instant::now() < deadline,
            "{what}: the timed rotation did not happen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    task.await.unwrap();
    log.append_batch(&batch()).unwrap();
    let timed = log.seal(now_ns()).await.unwrap().unwrap();
    assert_eq!(timed.signature.key_version, new.version + 1, "{what}");
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
    let e = seal_with_provider_down(signer, move || drop(bao)).await;
    assert_eq!(e.kind(), "provider", "{e}");
}

/// Seal once, stop the provider, seal again: the second seal fails with the provider's error
/// (returned), nothing is recorded, and the log's checkpoint stays the last good one.
async fn seal_with_provider_down(signer: Arc<dyn Signer>, stop: impl FnOnce()) -> KmsError {
    let dir = tempfile::tempdir().unwrap();
    let log = ReceiptLog::open(&dir.path().join("receipts.db"), "knhk.test/down", signer)
        .await
        .unwrap();
    log.append_batch(&encode_batch(&[ReceiptBuilder::new(0).build()]).unwrap())
        .unwrap();
    let good = log.seal(now_ns()).await.unwrap().unwrap();
    log.append_batch(&encode_batch(&[ReceiptBuilder::new(1).build()]).unwrap())
        .unwrap();
    stop();
    let err = match log.seal(now_ns()).await {
        Err(ReceiptsError::Kms(e)) => e,
        other => panic!("a seal with the provider down gave {other:?}"),
    };
    assert_eq!(
        log.latest_checkpoint().unwrap().unwrap(),
        good,
        "no half-signed checkpoint"
    );
    err
}

const REGION: &str = "eu-west-1";

fn aws(moto: &Moto, key_id: &str) -> AwsSettings {
    AwsSettings {
        key: AwsKeyRef::parse(key_id).unwrap(),
        region: Some(REGION.into()),
        endpoint: Some(moto.endpoint()),
        call_timeout: Duration::from_secs(10),
    }
}

fn credentials(id: &str, secret: &str) -> Credentials {
    Credentials::new(id, secret, None, None, "knhk-test")
}

/// Credentials moto takes when it does not enforce IAM.
fn any_credentials() -> Credentials {
    credentials("AKIAKNHKTEST", "knhk-test-secret")
}

/// A plain KMS client on moto, for what an operator does behind the agent's back.
fn kms_client(moto: &Moto) -> aws_sdk_kms::Client {
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new(REGION))
        .endpoint_url(moto.endpoint())
        .credentials_provider(any_credentials())
        .http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_https(),
        )
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

async fn new_key(kms: &aws_sdk_kms::Client, spec: aws_sdk_kms::types::KeySpec) -> String {
    kms.create_key()
        .key_spec(spec)
        .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_id()
        .to_owned()
}

async fn alias_target(kms: &aws_sdk_kms::Client, alias: &str) -> Option<String> {
    let out = kms.list_aliases().limit(1000).send().await.unwrap();
    out.aliases()
        .iter()
        .find(|a| a.alias_name() == Some(alias))
        .and_then(|a| a.target_key_id().map(str::to_owned))
}

fn failure_of(e: &KmsError) -> Option<RemoteFailure> {
    match e {
        KmsError::Remote { failure, .. } => Some(*failure),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_kms_on_moto_conforms_and_versions_live_behind_aliases() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let kms = kms_client(&moto);
    let settings = aws(&moto, "alias/knhk-conformance");
    let signer = AwsSigner::connect_with_credentials(&settings, any_credentials())
        .await
        .unwrap();
    assert_eq!(
        (signer.provider(), signer.key_id()),
        ("aws", "alias/knhk-conformance")
    );
    conformance(Arc::new(signer)).await;

    // The conformance run rotated twice (by hand and timed): three keys, each behind its
    // version alias, the family alias on the newest; a new signer (an agent restart) sees the
    // same numbering.
    let mut targets = Vec::new();
    for n in 1..=3 {
        targets.push(
            alias_target(&kms, &format!("alias/knhk-conformance/v{n}"))
                .await
                .unwrap(),
        );
    }
    assert!(targets[0] != targets[1] && targets[1] != targets[2] && targets[0] != targets[2]);
    assert_eq!(
        alias_target(&kms, "alias/knhk-conformance").await.unwrap(),
        targets[2]
    );
    let again = AwsSigner::connect_with_credentials(&settings, any_credentials())
        .await
        .unwrap();
    assert_eq!(again.sign(MSG).await.unwrap().key_version, 3);

    // Rotated the way AWS documents for asymmetric keys: a new key behind the alias. The next
    // signature adopts it as version 4, and versions 1 to 3 still verify.
    let by_hand = new_key(&kms, aws_sdk_kms::types::KeySpec::EccNistP256).await;
    kms.update_alias()
        .alias_name("alias/knhk-conformance")
        .target_key_id(&by_hand)
        .send()
        .await
        .unwrap();
    let sig = again.sign(MSG).await.unwrap();
    assert_eq!(sig.key_version, 4);
    assert_eq!(
        alias_target(&kms, "alias/knhk-conformance/v4")
            .await
            .unwrap(),
        by_hand
    );
    let keys = again.public_keys().await.unwrap();
    assert_eq!(
        keys.iter().map(|k| k.version).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    verify_signature(MSG, &sig, &keys).unwrap();
    for version in [1, 2, 3] {
        let old = again.sign_with_version(MSG, version).await.unwrap();
        verify_signature(MSG, &old, &keys).unwrap();
    }

    // A message over KMS's 4096-byte RAW limit goes as its SHA-256 (MessageType=DIGEST). moto
    // 5.2 ignores MessageType and signs the digest as if it were the message, so here the
    // signature does not verify, and the signer's own check refuses it before anything uses it
    // (against AWS the same request verifies: the check is what keeps a wrong answer out).
    let long = vec![b'x'; 5000];
    match again.sign(&long).await {
        Err(KmsError::UnexpectedResponse { reason, .. }) => {
            assert!(reason.contains("does not verify"), "{reason}");
        }
        other => panic!("moto's DIGEST answer gave {other:?}"),
    }

    // A key named by its id becomes version 1 of its own family.
    let existing = new_key(&kms, aws_sdk_kms::types::KeySpec::EccNistP256).await;
    let by_id = AwsSigner::connect_with_credentials(&aws(&moto, &existing), any_credentials())
        .await
        .unwrap();
    assert_eq!(by_id.key_id(), format!("alias/knhk/{existing}"));
    let keys = by_id.public_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    verify_signature(MSG, &by_id.sign(MSG).await.unwrap(), &keys).unwrap();
    assert_eq!(
        alias_target(&kms, &format!("alias/knhk/{existing}/v1"))
            .await
            .unwrap(),
        existing
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_kms_refuses_a_wrong_key_and_a_provider_down_records_nothing() {
    let Some(mut moto) = Moto::start().await else {
        return;
    };
    let kms = kms_client(&moto);
    // A key id that does not exist.
    let missing = "0badc0de-0000-4000-8000-000000000000";
    let err = AwsSigner::connect_with_credentials(&aws(&moto, missing), any_credentials())
        .await
        .unwrap_err();
    assert_eq!(failure_of(&err), Some(RemoteFailure::NotFound), "{err}");
    assert!(err.to_string().contains(missing), "{err}");
    // A key that cannot make the signatures verifiers check.
    let p384 = new_key(&kms, aws_sdk_kms::types::KeySpec::EccNistP384).await;
    match AwsSigner::connect_with_credentials(&aws(&moto, &p384), any_credentials()).await {
        Err(KmsError::KeyTypeMismatch { found, .. }) => assert!(found.contains("P384"), "{found}"),
        other => panic!("a P-384 key gave {other:?}"),
    }
    assert_eq!(
        alias_target(&kms, &format!("alias/knhk/{p384}/v1")).await,
        None
    );

    // Provider down: the seal fails, nothing is recorded, the last good checkpoint stands.
    let signer = Arc::new(
        AwsSigner::connect_with_credentials(&aws(&moto, "alias/knhk-down"), any_credentials())
            .await
            .unwrap(),
    );
    let e = seal_with_provider_down(signer, || moto.inner.kill()).await;
    assert_eq!(failure_of(&e), Some(RemoteFailure::Unavailable), "{e}");
    assert_eq!(e.kind(), "provider", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_kms_without_sign_permission_fails_the_seal_and_records_nothing() {
    let Some((moto, users)) = Moto::start_with_iam().await else {
        return;
    };
    let settings = aws(&moto, "alias/knhk-iam");
    let admin = credentials(&users.admin.id, &users.admin.secret);
    let reader = credentials(&users.reader.id, &users.reader.secret);
    // Credentials moto's IAM does not know are refused as AWS refuses them.
    let err = AwsSigner::connect_with_credentials(&settings, any_credentials())
        .await
        .unwrap_err();
    assert_eq!(
        failure_of(&err),
        Some(RemoteFailure::PermissionDenied),
        "{err}"
    );
    // The admin creates the key; the reader may read it but not sign with it.
    AwsSigner::connect_with_credentials(&settings, admin)
        .await
        .unwrap();
    let signer = Arc::new(
        AwsSigner::connect_with_credentials(&settings, reader)
            .await
            .unwrap(),
    );
    assert_eq!(signer.public_keys().await.unwrap().len(), 1);
    let dir = tempfile::tempdir().unwrap();
    let log = ReceiptLog::open(
        &dir.path().join("receipts.db"),
        "knhk.test/iam",
        signer.clone(),
    )
    .await;
    // Opening may seal nothing yet; the first seal needs a signature and is refused.
    let log = log.unwrap();
    log.append_batch(&encode_batch(&[ReceiptBuilder::new(0).build()]).unwrap())
        .unwrap();
    match log.seal(now_ns()).await {
        Err(ReceiptsError::Kms(e)) => {
            assert_eq!(e.kind(), "permission_denied", "{e}");
            assert!(e.to_string().contains("kms:Sign"), "{e}");
        }
        other => panic!("a seal without kms:Sign gave {other:?}"),
    }
    assert_eq!(log.latest_checkpoint().unwrap(), None, "nothing recorded");
}

const AZURE_APP: &str = "7d1f2c3e-knhk-agent";
const AZURE_SECRET: &str = "s3cret-value";

fn client_secret(client_id: &str, secret: &str) -> AzureCredential {
    AzureCredential::ClientSecret {
        tenant_id: TENANT.into(),
        client_id: client_id.into(),
        secret: secret.into(),
    }
}

/// Settings for key `name` on the double. The double is `https://127.0.0.1:<port>`, which is
/// not under the audience its challenge names, so Azure's challenge-domain check is off here
/// (one test below shows it refusing with the check on).
fn azure(kv: &KeyVaultDouble, name: &str, credential: AzureCredential) -> AzureSettings {
    AzureSettings {
        vault_url: kv.vault_url.clone(),
        key_name: name.into(),
        credential,
        authority_host: Some(kv.authority_host.clone()),
        ca_file: Some(kv.ca_file.clone()),
        verify_challenge_resource: false,
        call_timeout: Duration::from_secs(5),
    }
}

async fn azure_signer(kv: &KeyVaultDouble, name: &str) -> AzureSigner {
    AzureSigner::connect(&azure(kv, name, client_secret(AZURE_APP, AZURE_SECRET)))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "connect to the Key Vault double: {e}; requests {:?}",
                kv.requests()
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_key_vault_on_the_double_conforms_and_numbers_versions_by_tag() {
    let kv = KeyVaultDouble::start().await.unwrap();
    kv.add_app(AZURE_APP, AZURE_SECRET, &Perm::ALL);
    let signer = Arc::new(azure_signer(&kv, "conformance").await);
    assert_eq!(
        signer.key_id(),
        format!("{}/keys/conformance", kv.vault_url)
    );
    conformance(signer.clone()).await;
    let tags = |kv: &KeyVaultDouble| {
        kv.versions("conformance")
            .into_iter()
            .map(|(_, tag)| tag)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        tags(&kv),
        [Some("1".into()), Some("2".into()), Some("3".into())]
    );

    // A version made outside knhk (`az keyvault key rotate`) signs the next checkpoint and is
    // numbered 4; everything signed before still verifies.
    let before = signer.sign(MSG).await.unwrap();
    kv.rotate_outside_knhk("conformance").unwrap();
    let after = signer.sign(MSG).await.unwrap();
    assert_eq!((before.key_version, after.key_version), (3, 4));
    assert_eq!(
        tags(&kv)[3].as_deref(),
        Some("4"),
        "the adopted version is tagged"
    );
    let keys = signer.public_keys().await.unwrap();
    assert_eq!(
        keys.iter().map(|k| k.version).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    for sig in [&before, &after] {
        verify_signature(MSG, sig, &keys).unwrap();
    }
    // A second agent on the same key sees the same numbering.
    let other = azure_signer(&kv, "conformance").await;
    assert_eq!(other.public_keys().await.unwrap(), keys);
    // A disabled version is no longer listed.
    let first = kv.versions("conformance")[0].0.clone();
    kv.disable("conformance", &first);
    let keys = signer.public_keys().await.unwrap();
    assert_eq!(
        keys.iter().map(|k| k.version).collect::<Vec<_>>(),
        [2, 3, 4]
    );
    // A number is never given twice: with the newest version disabled, the next one made
    // outside knhk is numbered after it.
    let newest = kv.versions("conformance")[3].0.clone();
    kv.disable("conformance", &newest);
    kv.rotate_outside_knhk("conformance").unwrap();
    assert_eq!(signer.sign(MSG).await.unwrap().key_version, 5);
    assert_eq!(tags(&kv)[4].as_deref(), Some("5"));
}

fn remote_failure(e: &KmsError) -> Option<RemoteFailure> {
    match e {
        KmsError::Remote { failure, .. } => Some(*failure),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_key_vault_refuses_bad_credentials_wrong_keys_and_records_nothing_when_down() {
    let mut kv = KeyVaultDouble::start().await.unwrap();
    kv.add_app(AZURE_APP, AZURE_SECRET, &Perm::ALL);
    // A wrong client secret is refused by Entra ID.
    let err = AzureSigner::connect(&azure(&kv, "cp", client_secret(AZURE_APP, "wrong")))
        .await
        .unwrap_err();
    assert_eq!(
        remote_failure(&err),
        Some(RemoteFailure::PermissionDenied),
        "{err}"
    );
    assert!(
        !err.to_string().contains("wrong"),
        "no secret in errors: {err}"
    );
    // A key that cannot sign ES256.
    kv.create_p384_key("p384").unwrap();
    match AzureSigner::connect(&azure(&kv, "p384", client_secret(AZURE_APP, AZURE_SECRET))).await {
        Err(KmsError::KeyTypeMismatch { found, .. }) => assert!(found.contains("P-384"), "{found}"),
        other => panic!("a P-384 key gave {other:?}"),
    }
    assert_eq!(
        kv.versions("p384").len(),
        1,
        "no version added to a refused key"
    );
    // With Azure's challenge check on, a vault whose challenge names another domain is refused
    // before any token is sent to it.
    let checked = AzureSettings {
        verify_challenge_resource: true,
        ..azure(&kv, "cp", client_secret(AZURE_APP, AZURE_SECRET))
    };
    let seen = kv.requests().len();
    let err = AzureSigner::connect(&checked).await.unwrap_err();
    assert!(err.to_string().contains("challenge resource"), "{err}");
    let requests = &kv.requests()[seen..];
    assert!(
        !requests.iter().any(|r| r.contains("oauth2")),
        "no token was asked for: {requests:?}"
    );

    // Provider down: the seal fails, nothing is recorded, the last good checkpoint stands.
    let signer = Arc::new(azure_signer(&kv, "down").await);
    let e = seal_with_provider_down(signer, || kv.stop()).await;
    assert_eq!(remote_failure(&e), Some(RemoteFailure::Unavailable), "{e}");
    assert_eq!(e.kind(), "provider", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_key_vault_without_sign_permission_fails_the_seal_and_records_nothing() {
    let kv = KeyVaultDouble::start().await.unwrap();
    kv.add_app(AZURE_APP, AZURE_SECRET, &Perm::ALL);
    kv.add_app("reader", "reader-secret", &Perm::READ);
    azure_signer(&kv, "iam").await;
    let reader = Arc::new(
        AzureSigner::connect(&azure(&kv, "iam", client_secret("reader", "reader-secret")))
            .await
            .unwrap(),
    );
    assert_eq!(reader.public_keys().await.unwrap().len(), 1);
    // A key the reader may not create is refused, naming the key.
    let err = AzureSigner::connect(&azure(
        &kv,
        "absent",
        client_secret("reader", "reader-secret"),
    ))
    .await
    .unwrap_err();
    assert_eq!(
        remote_failure(&err),
        Some(RemoteFailure::PermissionDenied),
        "{err}"
    );
    assert!(err.to_string().contains("/keys/absent"), "{err}");
    assert!(kv.versions("absent").is_empty());

    let dir = tempfile::tempdir().unwrap();
    let log = ReceiptLog::open(&dir.path().join("receipts.db"), "knhk.test/iam", reader)
        .await
        .unwrap();
    log.append_batch(&encode_batch(&[ReceiptBuilder::new(0).build()]).unwrap())
        .unwrap();
    match log.seal(now_ns()).await {
        Err(ReceiptsError::Kms(e)) => {
            assert_eq!(e.kind(), "permission_denied", "{e}");
            assert!(e.to_string().contains("keys sign permission"), "{e}");
        }
        other => panic!("a seal without keys/sign gave {other:?}"),
    }
    assert_eq!(log.latest_checkpoint().unwrap(), None, "nothing recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_workload_identity_signs_with_the_projected_token_and_a_wrong_token_is_refused() {
    let kv = KeyVaultDouble::start().await.unwrap();
    kv.add_federated_app("aks-app", "eyJ.service-account.token", &Perm::ALL);
    let dir = tempfile::tempdir().unwrap();
    let token_file = write_federated_token(dir.path(), "eyJ.service-account.token").unwrap();
    let federated = |token_file: std::path::PathBuf| AzureCredential::WorkloadIdentity {
        tenant_id: TENANT.into(),
        client_id: "aks-app".into(),
        token_file,
    };
    let signer = AzureSigner::connect(&azure(&kv, "wi", federated(token_file)))
        .await
        .unwrap();
    let sig = signer.sign(MSG).await.unwrap();
    verify_signature(MSG, &sig, &signer.public_keys().await.unwrap()).unwrap();

    let other = tempfile::tempdir().unwrap();
    let wrong = write_federated_token(other.path(), "eyJ.another.token").unwrap();
    let err = AzureSigner::connect(&azure(&kv, "wi", federated(wrong)))
        .await
        .unwrap_err();
    assert_eq!(
        remote_failure(&err),
        Some(RemoteFailure::PermissionDenied),
        "{err}"
    );
}
