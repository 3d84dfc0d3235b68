//! The quorum witness over HTTP, fed checkpoints made by hand: forks, rollbacks, stale old
//! sizes, bad proofs and signatures, unknown origins and hostile bodies are each refused with
//! their own status and code; accepted checkpoints are cosigned once.

// An integration test crate: helpers may fail loudly like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use knhk_agent::kms::local::LocalSigner;
use knhk_agent::kms::Signer as _;
use knhk_agent::quorum::protocol::{AddCheckpoint, ADD_CHECKPOINT_PATH, MAX_REQUEST_LEN};
use knhk_agent::receipts::SignedCheckpoint;
use knhk_core::checkpoint::Checkpoint;
use knhk_core::cosignature::{Cosignature, WitnessKey};
use knhk_core::merkle::{self, Hash};
use knhk_core::receipt::LogEntry;
use reqwest::StatusCode;
use serde_json::Value;
use support::in_process::InProcessAgent;
use support::regions::{prepare, receipt};

struct FakeLog {
    origin: String,
    entries: Vec<Vec<u8>>,
}

impl FakeLog {
    fn new(origin: &str, n: u64, salt: u64) -> FakeLog {
        FakeLog {
            origin: origin.to_owned(),
            entries: (0..n)
                .map(|i| {
                    LogEntry::Receipt(receipt(i * 1000 + salt))
                        .encode()
                        .unwrap()
                })
                .collect(),
        }
    }

    fn hashes(&self, n: u64) -> Vec<Hash> {
        self.entries[..n as usize]
            .iter()
            .map(|e| merkle::leaf_hash(e))
            .collect()
    }

    async fn checkpoint(&self, signer: &LocalSigner, n: u64) -> SignedCheckpoint {
        let text = Checkpoint::new(&self.origin, n, merkle::root(&self.hashes(n)))
            .unwrap()
            .with_timestamp(n)
            .to_text()
            .unwrap();
        let signature = signer.sign(text.as_bytes()).await.unwrap();
        SignedCheckpoint { text, signature }
    }

    async fn request(&self, signer: &LocalSigner, old: u64, n: u64) -> AddCheckpoint {
        AddCheckpoint {
            old_size: old,
            consistency: merkle::consistency_proof(&self.hashes(n), old).unwrap(),
            checkpoint: self.checkpoint(signer, n).await,
            entries: self.entries[old as usize..n as usize].to_vec(),
            pruned_hashes: Vec::new(),
        }
    }
}

/// Region `us` as an in-process agent that witnesses region `eu`'s log (whose peer URL leads
/// nowhere), with `us`'s witness key and `eu`'s log signer.
async fn us_witnessing_eu(dir: &std::path::Path) -> (InProcessAgent, WitnessKey, LocalSigner) {
    let (mut config, _, witness) = prepare(dir, "us", 1).await;
    let (eu_config, eu_keys, eu_witness) = prepare(dir, "eu", 1).await;
    config.quorum.peers = vec![knhk_agent::quorum::PeerConfig {
        region: "eu".into(),
        url: "http://127.0.0.1:9".into(),
        origin: eu_config.origin.clone(),
        log_keys: eu_keys,
        witness: eu_witness,
    }];
    let agent = InProcessAgent::start(config, reqwest::Client::new(), "/v1/witness/logs").await;
    let eu_signer = LocalSigner::open(&eu_config.key_dir(), &eu_config.kms.key_id).unwrap();
    (agent, witness, eu_signer)
}

async fn refusal(r: reqwest::Response) -> (StatusCode, String, Value) {
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    (status, body["code"].as_str().unwrap_or("").to_owned(), body)
}

/// A witness presented a forked log, a shrunk tree, a stale old size, a bad proof, a bad
/// signature, an unknown origin or a hostile request refuses each with its own status and
/// code, stores nothing, and re-sending an accepted checkpoint returns the same cosignature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witness_refuses_forks_rollbacks_and_hostile_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, witness, eu_signer) = us_witnessing_eu(dir.path()).await;
    let url = agent.url(ADD_CHECKPOINT_PATH);
    let post = |body: &AddCheckpoint| agent.http.post(&url).json(body).send();

    let log = FakeLog::new("knhk.test/eu", 8, 0);
    let first = log.request(&eu_signer, 0, 4).await;
    let r = post(&first).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cosigned: Value = r.json().await.unwrap();
    let line = Cosignature::parse_line(cosigned["cosignature"].as_str().unwrap()).unwrap();
    witness.verify(&first.checkpoint.text, &line).unwrap();
    // Idempotent: the same checkpoint again returns the stored cosignature.
    let again: Value = post(&first).await.unwrap().json().await.unwrap();
    assert_eq!(again, cosigned);

    // A fork: same size, other entries.
    let fork = FakeLog::new("knhk.test/eu", 8, 7);
    let (s, code, _) = refusal(post(&fork.request(&eu_signer, 0, 4).await).await.unwrap()).await;
    assert_eq!((s, code.as_str()), (StatusCode::CONFLICT, "fork"));
    // A fork that grows: its proof from the witnessed size does not verify.
    let (s, code, _) = refusal(post(&fork.request(&eu_signer, 4, 8).await).await.unwrap()).await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "bad_proof")
    );
    // A shrunk tree: a genuine prefix smaller than what was witnessed.
    let (s, code, _) = refusal(post(&log.request(&eu_signer, 0, 3).await).await.unwrap()).await;
    assert_eq!((s, code.as_str()), (StatusCode::CONFLICT, "rollback"));
    // A stale old size: 409 naming the witnessed size.
    let (s, code, body) = refusal(post(&log.request(&eu_signer, 2, 6).await).await.unwrap()).await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::CONFLICT, "old_size_mismatch")
    );
    assert_eq!(body["size"], 4);
    // A bad signature: signed by a key the witness does not trust.
    let stranger = LocalSigner::open(&dir.path().join("stranger"), "k").unwrap();
    let (s, code, _) = refusal(post(&log.request(&stranger, 4, 6).await).await.unwrap()).await;
    assert_eq!((s, code.as_str()), (StatusCode::FORBIDDEN, "bad_signature"));
    // An unknown origin.
    let other = FakeLog::new("knhk.test/mars", 2, 0);
    let (s, code, _) = refusal(post(&other.request(&eu_signer, 0, 2).await).await.unwrap()).await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::NOT_FOUND, "unknown_origin")
    );
    // Entries that do not produce the root, or the wrong count.
    let mut wrong = log.request(&eu_signer, 4, 6).await;
    wrong.entries[0] = fork.entries[4].clone();
    let (s, code, _) = refusal(post(&wrong).await.unwrap()).await;
    assert_eq!((s, code.as_str()), (StatusCode::BAD_REQUEST, "malformed"));
    wrong.entries.pop();
    let (s, code, _) = refusal(post(&wrong).await.unwrap()).await;
    assert_eq!((s, code.as_str()), (StatusCode::BAD_REQUEST, "malformed"));
    // Hostile bodies: not JSON, too many proof lines, oversized.
    let r = agent
        .http
        .post(&url)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(refusal(r).await.1, "malformed");
    let mut long = log.request(&eu_signer, 4, 6).await;
    long.consistency = vec![[0; 32]; 64];
    assert_eq!(refusal(post(&long).await.unwrap()).await.1, "malformed");
    let r = agent
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body(vec![b' '; MAX_REQUEST_LEN + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // After all that, the witness still holds exactly the first checkpoint, and grows on.
    let logs: Value = agent
        .http
        .get(agent.url("/v1/witness/logs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(logs[0]["size"], 4, "{logs}");
    assert_eq!(
        post(&log.request(&eu_signer, 4, 8).await)
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    agent.stop().await;
}

/// Past the 256-leaf groups a witness keeps in memory only as subtree roots, a genuine prefix
/// of what it witnessed is still told apart from a fork of the same size: both are decided on
/// the root at that size, rebuilt from leaf hashes it reads back from its store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witness_tells_rollback_from_fork_inside_pruned_groups() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, _, eu_signer) = us_witnessing_eu(dir.path()).await;
    let url = agent.url(ADD_CHECKPOINT_PATH);
    let post = |body: &AddCheckpoint| agent.http.post(&url).json(body).send();

    let log = FakeLog::new("knhk.test/eu", 600, 0);
    for (old, n) in [(0, 300), (300, 600)] {
        let r = post(&log.request(&eu_signer, old, n).await).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{old}..{n}");
    }
    let (s, code, _) = refusal(post(&log.request(&eu_signer, 0, 280).await).await.unwrap()).await;
    assert_eq!((s, code.as_str()), (StatusCode::CONFLICT, "rollback"));
    let fork = FakeLog::new("knhk.test/eu", 600, 7);
    let (s, code, _) = refusal(post(&fork.request(&eu_signer, 0, 280).await).await.unwrap()).await;
    assert_eq!((s, code.as_str()), (StatusCode::CONFLICT, "fork"));
    // The witnessed checkpoint itself is still recognised and cosigned again.
    let r = post(&log.request(&eu_signer, 300, 600).await)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
