//! The policy service: validation with the filter's rules, durable monotonic epochs, handover
//! signing, long-poll wake-ups, and the policy file check.

use std::time::Duration;

use knhk_core::envelope::{self, EnvelopeError};

use super::*;
use crate::kms::local::LocalSigner;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn signer(&self) -> Arc<LocalSigner> {
        Arc::new(LocalSigner::open(&self.dir.path().join("keys"), "cfg").unwrap())
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("policy.json")
    }

    async fn open_with(&self, signer: Arc<LocalSigner>, file: bool) -> Arc<PolicyService> {
        PolicyService::with_signer(
            signer,
            &self.dir.path().join(DATABASE_FILE),
            file.then(|| self.file()),
            PolicyConfig::default(),
        )
        .await
        .unwrap()
    }

    async fn open(&self, file: bool) -> Arc<PolicyService> {
        self.open_with(self.signer(), file).await
    }
}

fn policy(bp: u32) -> Vec<u8> {
    format!(r#"{{"routing": {{"canary_basis_points": {bp}}}}}"#).into_bytes()
}

/// Every refusal names what is wrong: size, JSON syntax, shape, `control`, and core's rules
/// with the field path.
#[test]
fn validation_uses_the_filter_rules() {
    validate_policy(&policy(1000)).unwrap();
    let cases: [(&[u8], &str); 7] = [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b"{\"colour\": 1}", "colour"),
        (
            b"{\"routing\": {\"canary_basis_points\": \"ten\"}}",
            "routing.canary_basis_points",
        ),
        (
            b"{\"routing\": {\"canary_basis_points\": 20000}}",
            "routing.canary_basis_points",
        ),
        (
            b"{\"control\": {\"cluster\": \"x\", \"trusted_keys\": []}}",
            "`control`",
        ),
    ];
    for (doc, needle) in cases {
        let e = validate_policy(doc).unwrap_err();
        assert!(
            e.to_string().contains(needle),
            "{:?}: {e}",
            String::from_utf8_lossy(doc)
        );
    }
    let huge = vec![b' '; MAX_CONFIG_BYTES + 1];
    assert!(matches!(
        validate_policy(&huge),
        Err(PolicyError::TooLarge(_))
    ));
    validate_policy(b"{\"control\": null}").unwrap();
}

/// Epochs rise by one per change, an identical policy publishes nothing, and a reopened
/// store resumes above the last epoch with the same envelope.
#[tokio::test]
async fn epochs_are_monotonic_and_durable() {
    let f = Fixture::new();
    let svc = f.open(false).await;
    assert_eq!(svc.snapshot().epoch(), 0);
    let (e1, changed) = svc.set_policy(&policy(100), Source::Api).await.unwrap();
    assert!(changed);
    assert_eq!(e1.epoch, 1);
    let (same, changed) = svc.set_policy(&policy(100), Source::Api).await.unwrap();
    assert!(!changed);
    assert_eq!(same.epoch, 1);
    let (e2, _) = svc.set_policy(&policy(200), Source::Api).await.unwrap();
    assert_eq!(e2.epoch, 2);
    let keys = svc.trusted_keys().await.unwrap();
    let accepted = envelope::open(&e2.envelope, &keys, 1).unwrap();
    assert_eq!(accepted.policy.canary_basis_points, 200);
    drop(svc);
    let svc = f.open(false).await;
    let latest = svc.snapshot().latest.unwrap();
    assert_eq!(latest.epoch, 2);
    assert_eq!(latest.envelope, e2.envelope);
    let (e3, _) = svc.set_policy(&policy(300), Source::Api).await.unwrap();
    assert_eq!(e3.epoch, 3);
}

/// A key rotated behind the agent's back still gets a handover: the next epoch announces the
/// new key and is signed by both versions, and later epochs by the new one only.
#[tokio::test]
async fn external_rotation_is_handed_over() {
    let f = Fixture::new();
    let signer = f.signer();
    let svc = f.open_with(signer.clone(), false).await;
    let (e1, _) = svc.set_policy(&policy(100), Source::Api).await.unwrap();
    let old = svc.trusted_keys().await.unwrap();
    signer.rotate().await.unwrap();
    let (h, _) = svc.set_policy(&policy(200), Source::Api).await.unwrap();
    assert!(h.handover);
    let accepted = envelope::open(&h.envelope, &old, e1.epoch).unwrap();
    let next = accepted.next_keys.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].version, 2);
    envelope::open(&h.envelope, &next, e1.epoch).unwrap();
    let (e3, _) = svc.set_policy(&policy(300), Source::Api).await.unwrap();
    assert!(!e3.handover);
    envelope::open(&e3.envelope, &next, h.epoch).unwrap();
    assert!(matches!(
        envelope::open(&e3.envelope, &old, h.epoch),
        Err(EnvelopeError::Untrusted(_))
    ));
    assert_eq!(svc.trusted_keys().await.unwrap(), next);
}

/// A filter behind the newest handover is served the handover first, then the epoch in force.
#[tokio::test]
async fn laggards_get_the_handover_first() {
    let f = Fixture::new();
    let svc = f.open(false).await;
    svc.set_policy(&policy(100), Source::Api).await.unwrap();
    let rotation = svc.rotate().await.unwrap();
    assert_eq!(rotation.epoch, 2);
    assert_eq!(rotation.previous_version, 1);
    assert_eq!(rotation.key.version, 2);
    svc.set_policy(&policy(200), Source::Api).await.unwrap();
    let snap = svc.snapshot();
    assert_eq!(snap.next_for(0).unwrap().epoch, 2);
    assert_eq!(snap.next_for(1).unwrap().epoch, 2);
    assert_eq!(snap.next_for(2).unwrap().epoch, 3);
    assert!(snap.next_for(3).is_none());
}

/// With time paused, a long-poll with nothing newer returns `None` after exactly its timeout.
#[tokio::test(start_paused = true)]
async fn long_poll_times_out() {
    let f = Fixture::new();
    let svc = f.open(false).await;
    let start = tokio::time::Instant::now();
    assert!(svc.wait_newer(0, Duration::from_secs(30)).await.is_none());
    assert_eq!(start.elapsed(), Duration::from_secs(30));
}

/// A held long-poll returns the new epoch when one is published, and `close` releases the
/// others at once.
#[tokio::test]
async fn long_poll_wakes_on_publish_and_close() {
    let f = Fixture::new();
    let svc = f.open(false).await;
    let hour = Duration::from_secs(3600);
    let waiter = tokio::spawn({
        let svc = svc.clone();
        async move { svc.wait_newer(0, hour).await }
    });
    svc.set_policy(&policy(100), Source::Api).await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap().epoch, 1);
    let held = tokio::spawn({
        let svc = svc.clone();
        async move { svc.wait_newer(1, hour).await }
    });
    svc.close();
    assert!(held.await.unwrap().is_none());
    assert!(svc.wait_newer(1, hour).await.is_none());
}

/// The policy file: a valid change publishes, an invalid one is refused with the field named
/// and the epoch stays, a fixed file clears the error, and a restart does not re-publish it.
#[tokio::test]
async fn policy_file_changes_are_checked() {
    let f = Fixture::new();
    std::fs::write(f.file(), policy(100)).unwrap();
    let svc = f.open(true).await;
    assert_eq!(svc.snapshot().epoch(), 1);
    assert_eq!(svc.snapshot().latest.unwrap().source, Source::File);
    assert_eq!(svc.check_file().await, FileCheck::Unchanged);
    std::fs::write(f.file(), br#"{"routing": {"canary_basis_points": -1}}"#).unwrap();
    let FileCheck::Refused(reason) = svc.check_file().await else {
        panic!("invalid file accepted");
    };
    assert!(reason.contains("routing.canary_basis_points"), "{reason}");
    assert_eq!(svc.snapshot().epoch(), 1);
    assert!(svc.file_error().is_some());
    std::fs::write(f.file(), policy(200)).unwrap();
    assert_eq!(svc.check_file().await, FileCheck::Applied(2));
    assert!(svc.file_error().is_none());
    svc.set_policy(&policy(300), Source::Api).await.unwrap();
    drop(svc);
    let svc = f.open(true).await;
    assert_eq!(
        svc.snapshot().epoch(),
        3,
        "the API change survives a restart"
    );
    std::fs::remove_file(f.file()).unwrap();
    assert!(matches!(svc.check_file().await, FileCheck::Refused(_)));
    assert_eq!(svc.snapshot().epoch(), 3);
}

/// A stored envelope altered on disk stops the service from opening rather than being served.
#[tokio::test]
async fn tampered_store_is_refused() {
    let f = Fixture::new();
    let svc = f.open(false).await;
    svc.set_policy(&policy(100), Source::Api).await.unwrap();
    drop(svc);
    let conn = rusqlite::Connection::open(f.dir.path().join(DATABASE_FILE)).unwrap();
    let envelope: Vec<u8> = conn
        .query_row("SELECT envelope FROM config_epochs", [], |r| r.get(0))
        .unwrap();
    let mut env: Envelope = serde_json::from_slice(&envelope).unwrap();
    env.signatures[0].sig[0] ^= 1;
    conn.execute(
        "UPDATE config_epochs SET envelope = ?1",
        [serde_json::to_vec(&env).unwrap()],
    )
    .unwrap();
    drop(conn);
    let err = PolicyService::with_signer(
        f.signer(),
        &f.dir.path().join(DATABASE_FILE),
        None,
        PolicyConfig::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PolicyError::Corrupt(_)), "{err}");
}
