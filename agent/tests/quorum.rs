//! Cross-region quorum with three in-process agents on loopback: 2-of-3 commits, a region
//! down, two down and the catch-up, key rotations followed by witnesses, legal hold against
//! retention on every region, offline verification of cosigned bundles, the start-up refusal
//! of bad thresholds, and the commit latency benchmark. Witness refusals: `witness.rs`.

// An integration test crate: helpers may fail loudly like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use knhk_agent::kms::local::LocalSigner;
use knhk_agent::kms::Signer as _;
use knhk_agent::receipts::ProofBundle;
use knhk_agent::verify::quorum::verify_cosignatures;
use knhk_agent::verify::verify_bundle;
use knhk_agent::{run, Listeners};
use knhk_core::checkpoint::Checkpoint;
use knhk_core::merkle;
use reqwest::StatusCode;
use serde_json::Value;
use support::regions::{prepare, receipt, Regions};

/// A checkpoint of 2 of 3 regions commits with both peers up: the report names the regions
/// that acknowledged, and the cosigned bundle verifies offline at quorum 2 and 3 but not 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_with_two_of_three_and_bundles_verify_offline() {
    let regions = Regions::start(&["eu", "us", "ap"], 2).await;
    let size = regions.post("eu", 0..20).await;
    regions.wait_committed("eu", size).await;
    // Wait until both peers acknowledged the newest checkpoint, for a 3-signature bundle.
    let status = regions
        .wait_status("eu", "both peers acknowledge", |s| {
            s["latest"]["acknowledged"]
                .as_array()
                .is_some_and(|a| a.len() == 3)
                && s["latest_committed"]["tree_size"] == s["latest_size"]
        })
        .await;
    let latest = status["latest_size"].as_u64().unwrap();
    // /metrics: a cosignature latency was recorded per peer, and neither lags any more.
    let metrics = reqwest::get(regions.url("eu", "/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for peer in ["us", "ap"] {
        let count =
            format!("knhk_agent_quorum_ack_duration_seconds_count{{knhk_quorum_peer=\"{peer}\"}} ");
        let acks: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&count))
            .unwrap_or_else(|| panic!("no ack latency of {peer}:\n{metrics}"))
            .parse()
            .unwrap();
        assert!(acks >= 1, "{metrics}");
        assert!(
            metrics.contains(&format!(
                "knhk_agent_quorum_lag{{knhk_quorum_peer=\"{peer}\"}} 0\n"
            )),
            "{peer} caught up:\n{metrics}"
        );
    }
    let report = regions
        .json("eu", &format!("/v1/quorum/checkpoints/{latest}"))
        .await;
    assert_eq!(report["committed"], true, "{report}");

    let bundle: ProofBundle =
        serde_json::from_value(regions.json("eu", "/v1/quorum/receipts/3/proof").await).unwrap();
    verify_bundle(&bundle, Some(&regions.regions[0].log_keys)).unwrap();
    let witnesses: Vec<_> = regions.regions.iter().map(|r| r.witness.clone()).collect();
    assert!(!bundle.cosignatures.is_empty());
    verify_cosignatures(&bundle, 2, &witnesses).unwrap();
    assert!(verify_cosignatures(&bundle, 1 + bundle.cosignatures.len() + 1, &witnesses).is_err());
    // A cosignature does not verify over another checkpoint.
    let mut forged = bundle.clone();
    forged.checkpoint.text = forged
        .checkpoint
        .text
        .replace("knhk.test/eu", "knhk.test/xx");
    assert!(verify_cosignatures(&forged, 2, &witnesses).is_err());
    // The same checks with the command: `verify --quorum k --witness-keys`.
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, json: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, json).unwrap();
        p
    };
    let bundle_file = file("bundle.json", serde_json::to_string(&bundle).unwrap());
    let keys_file = file(
        "keys.json",
        serde_json::to_string(&regions.regions[0].log_keys).unwrap(),
    );
    let witness_file = file("witnesses.json", serde_json::to_string(&witnesses).unwrap());
    let verify = |k: usize| {
        std::process::Command::new(env!("CARGO_BIN_EXE_knhk-agent"))
            .arg("verify")
            .arg(&bundle_file)
            .arg("--trusted-keys")
            .arg(&keys_file)
            .args(["--quorum", &k.to_string(), "--witness-keys"])
            .arg(&witness_file)
            .output()
            .unwrap()
    };
    let ok = verify(2);
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{out}");
    assert!(out.contains("quorum met"), "{out}");
    let short = verify(4);
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("quorum not met"));
    // Every peer holds eu's receipts as a witness.
    for peer in ["us", "ap"] {
        let logs = regions.json(peer, "/v1/witness/logs").await;
        let eu = logs
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["origin"] == "knhk.test/eu")
            .unwrap();
        assert!(eu["size"].as_u64().unwrap() >= size, "{peer}: {logs}");
    }
}

/// With one region killed commits continue; with two down they stop with the errors named
/// per region; when one returns it catches up from where it stopped, commits resume, and the
/// witness holds every entry exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_down_stop_commits_and_catch_up_on_return() {
    let mut regions = Regions::start(&["eu", "us", "ap"], 2).await;
    let first = regions.post("eu", 0..10).await;
    regions.wait_committed("eu", first).await;

    regions.stop("ap").await;
    let second = regions.post("eu", 10..30).await;
    regions.wait_committed("eu", second).await;

    regions.stop("us").await;
    let third = regions.post("eu", 30..60).await;
    let stuck = regions
        .wait_status(
            "eu",
            "newest checkpoint uncommitted, both peers unreachable",
            |s| {
                s["latest_size"].as_u64().is_some_and(|l| l >= third)
                    && s["latest"]["errors"].as_array().is_some_and(|e| {
                        e.len() == 2
                            && e.iter().all(|x| {
                                x["error"]
                                    .as_str()
                                    .is_some_and(|m| m.contains("unreachable"))
                            })
                    })
            },
        )
        .await;
    assert_eq!(stuck["up_to_date"], false, "{stuck}");
    assert!(
        stuck["latest_committed"]["tree_size"].as_u64().unwrap() < third,
        "{stuck}"
    );

    regions.restart("us").await;
    regions.wait_committed("eu", third).await;
    // Exactly the committed entries, once each: the witness's size is the log size it cosigned.
    let logs = regions.json("us", "/v1/witness/logs").await;
    let eu = logs
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["origin"] == "knhk.test/eu")
        .unwrap()
        .clone();
    let cosigned = Checkpoint::parse(eu["checkpoint"].as_str().unwrap()).unwrap();
    assert_eq!(eu["size"].as_u64().unwrap(), cosigned.tree_size, "{logs}");
    assert!(cosigned.tree_size >= third);
    // The witness's copy is eu's log: every leaf once, in order, same hash and bytes.
    let store = knhk_agent::quorum::witness::WitnessStore::open(
        &regions.regions[regions.index("us")]
            .config
            .data_dir
            .join("witness.db"),
    )
    .unwrap();
    let copy = store.entries("knhk.test/eu", 0, 1000).unwrap();
    let page = regions
        .json("eu", &format!("/v1/receipts?limit={}", cosigned.tree_size))
        .await;
    let original: Vec<(u64, Vec<u8>)> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            use base64::Engine as _;
            let leaf = base64::engine::general_purpose::STANDARD
                .decode(e["leaf"].as_str().unwrap())
                .unwrap();
            (e["index"].as_u64().unwrap(), leaf)
        })
        .collect();
    // (us's retention ran at its restart and may have pruned expired payloads of the copy;
    // their leaf hashes remain.)
    let mut hashes = Vec::new();
    store
        .for_each_leaf_hash("knhk.test/eu", |h| hashes.push(h))
        .unwrap();
    assert_eq!(hashes.len(), original.len());
    assert_eq!(copy.len(), original.len());
    for (((i, kept), (j, leaf)), hash) in copy.iter().zip(&original).zip(&hashes) {
        assert_eq!(i, j);
        assert_eq!(*hash, merkle::leaf_hash(leaf), "leaf {i}");
        assert!(kept.is_empty() || kept == leaf, "leaf {i} differs");
    }

    // The returned region's own log commits again too (us + eu; ap still down).
    let us_size = regions.post("us", 100..105).await;
    regions.wait_committed("us", us_size).await;
    regions.restart("ap").await;
    regions
        .wait_status("eu", "ap catches up", |s| {
            s["peers"].as_array().is_some_and(|p| {
                p.iter().any(|x| {
                    x["region"] == "ap"
                        && x["last_error"].is_null()
                        && x["acked_size"].as_u64().is_some_and(|a| a >= third)
                })
            })
        })
        .await;
}

/// A threshold of 0 or above the number of regions stops the agent at start with a message
/// naming the setting.
#[tokio::test]
async fn bad_thresholds_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for k in [0, 2] {
        let (config, _, _) = prepare(dir.path(), "solo", k).await;
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = run(
            Listeners { api, peer: None },
            config,
            std::future::pending(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("quorum.threshold"), "{err}");
    }
}

fn kinds(page: &Value) -> Vec<String> {
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entry"]["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// A legal hold (by epochs, and by receipt id) placed as a signed entry in one region survives
/// a retention run on every region — its own log, the witnessed copies, and other regions'
/// own receipts it selects — while the export still verifies; releasing it lets the next run
/// prune what it pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legal_hold_survives_retention_on_every_region_until_released() {
    let regions = Regions::start(&["eu", "us", "ap"], 2).await;
    regions.post("eu", 0..40).await; // config epochs 0..4, ten receipts each
    regions.post("us", 10..15).await; // epoch 1: held by eu's hold on us too
    regions.post("us", 50..55).await; // epoch 5: not held
    let (s, epochs) = regions
        .post_json(
            "eu",
            "/v1/holds",
            &serde_json::json!({"hold_id": "case-1", "reason": "litigation 42",
                "selector": {"by": "epochs", "from": 1, "to": 2}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{epochs}");
    let (s, one) = regions
        .post_json(
            "eu",
            "/v1/holds",
            &serde_json::json!({"hold_id": "receipt-35", "reason": "dispute",
                "selector": {"by": "leaves", "from": 35, "to": 36}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{one}");
    // The same id again, or releasing an unknown hold, is refused.
    let (s, _) = regions
        .post_json(
            "eu",
            "/v1/holds",
            &serde_json::json!({"hold_id": "case-1", "reason": "again",
                "selector": {"by": "epochs", "from": 1, "to": 2}}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = regions
        .post_json(
            "eu",
            "/v1/holds/nope/release",
            &serde_json::json!({"reason": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let size = one["tree_size"].as_u64().unwrap();
    regions.wait_replicated("eu", size).await;
    let us_size = regions.json("us", "/v1/receipts?limit=1").await["size"]
        .as_u64()
        .unwrap();
    regions.wait_replicated("us", us_size).await;

    // Every region knows both holds, and retention keeps what they pin.
    for r in ["eu", "us", "ap"] {
        let holds = regions.json(r, "/v1/holds").await;
        assert_eq!(holds.as_array().unwrap().len(), 2, "{r}: {holds}");
    }
    let (_, eu_run) = regions
        .post_json("eu", "/v1/retention/run", &Value::Null)
        .await;
    assert_eq!(eu_run["pruned_own"], 29, "{eu_run}");
    assert_eq!(eu_run["held"].as_u64().unwrap(), 11 + 5, "{eu_run}"); // + us's epoch-1 copies
    let (_, us_run) = regions
        .post_json("us", "/v1/retention/run", &Value::Null)
        .await;
    assert_eq!(us_run["pruned_own"], 5, "{us_run}");
    assert_eq!(us_run["pruned_witnessed"], 29, "{us_run}"); // eu's copy; ap's log is empty
    let (_, ap_run) = regions
        .post_json("ap", "/v1/retention/run", &Value::Null)
        .await;
    assert_eq!(ap_run["pruned_witnessed"], 29 + 5, "{ap_run}"); // eu's copy and us's

    let page = regions.json("eu", "/v1/receipts?limit=100").await;
    let k = kinds(&page);
    assert!(k[10..20].iter().all(|x| x == "receipt"), "{k:?}");
    assert_eq!(k[35], "receipt");
    assert_eq!(k[0], "pruned");
    assert_eq!(k[40], "hold");
    let export = regions.json("eu", "/v1/log/export").await;
    let report = knhk_agent::verify::verify_json(
        export.to_string().as_bytes(),
        Some(&regions.regions[0].log_keys),
    )
    .unwrap();
    assert!(
        report.lines.iter().any(|l| l.contains("pruned")),
        "{report:?}"
    );
    let gone = regions
        .http
        .get(regions.url("eu", "/v1/receipts/0/proof"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::GONE);
    regions.json("eu", "/v1/receipts/12/proof").await;

    // Release the epoch hold; the next runs prune what it pinned, everywhere.
    let (s, released) = regions
        .post_json(
            "eu",
            "/v1/holds/case-1/release",
            &serde_json::json!({"reason": "settled"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{released}");
    regions
        .wait_replicated("eu", released["tree_size"].as_u64().unwrap())
        .await;
    let (_, eu_run) = regions
        .post_json("eu", "/v1/retention/run", &Value::Null)
        .await;
    assert_eq!(eu_run["pruned_own"], 10, "{eu_run}");
    let (_, us_run) = regions
        .post_json("us", "/v1/retention/run", &Value::Null)
        .await;
    assert_eq!(us_run["pruned_own"], 5, "{us_run}");
    assert_eq!(us_run["pruned_witnessed"], 10, "{us_run}");
    let k = kinds(&regions.json("eu", "/v1/receipts?limit=100").await);
    assert_eq!(k.iter().filter(|x| *x == "receipt").count(), 1, "{k:?}");
}

/// Seal-to-commit latency of 2-of-3 on loopback (run by `cargo xtask bench-quorum`): eu's log
/// and replicator in-process, us and ap as full agents, over mutual TLS with SVIDs (connections
/// are reused, so a handshake is paid once per witness); each sample appends 100 receipts,
/// seals (one signature) and runs one replication round to both witnesses. Prints one JSON
/// line with p50/p99 of: `commit_us`, the latency quorum adds (round start to the k-th
/// signature recorded); `round_us`, the whole round (until the slower witness answered);
/// `seal_to_commit_us`, from the checkpoint's timestamp (before signing) to its commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with cargo xtask bench-quorum"]
async fn quorum_commit_latency() {
    use std::sync::Arc;
    use std::time::Instant;

    use knhk_agent::quorum::Replicator;
    use knhk_agent::receipts::ReceiptLog;
    use knhk_core::receipt::encode_batch;

    let iters: usize = std::env::var("KNHK_BENCH_QUORUM_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut regions = Regions::start(&["eu", "us", "ap"], 2).await;
    regions.stop("eu").await;
    let eu = &regions.regions[0].config;
    let signer = Arc::new(LocalSigner::open(&eu.key_dir(), &eu.kms.key_id).unwrap());
    let log = Arc::new(
        ReceiptLog::open(&eu.database_path(), &eu.origin, signer)
            .await
            .unwrap(),
    );
    // The witnesses only answer over mutual TLS: call them with eu's SVID, as the agent does.
    let identity = knhk_agent::identity::Identity::open(&eu.identity)
        .await
        .unwrap();
    let replicator = Arc::new(
        Replicator::open(
            &eu.quorum,
            &eu.data_dir,
            log.clone(),
            knhk_agent::identity::https_client(identity),
        )
        .unwrap(),
    );
    replicator.round().await.unwrap();
    let mut round_us = Vec::with_capacity(iters);
    let mut total_us = Vec::with_capacity(iters);
    let mut commit_us = Vec::with_capacity(iters);
    for i in 0..iters as u64 {
        let batch =
            encode_batch(&(i * 100..i * 100 + 100).map(receipt).collect::<Vec<_>>()).unwrap();
        log.append_batch(&batch).unwrap();
        let sealed = log
            .seal(knhk_agent::clock::now_ns())
            .await
            .unwrap()
            .unwrap();
        let start_ns = knhk_agent::clock::now_ns();
        let t1 = Instant::now();
        let report = replicator.round().await.unwrap().unwrap();
        round_us.push(t1.elapsed().as_micros() as u64);
        assert!(report.committed, "{report:?}");
        let commit = replicator
            .state()
            .unwrap()
            .commit(report.tree_size)
            .unwrap()
            .unwrap();
        let sealed_ns = Checkpoint::parse(&sealed.text)
            .unwrap()
            .timestamp_ns()
            .unwrap();
        commit_us.push(commit.committed_ns.saturating_sub(start_ns) / 1000);
        total_us.push(commit.committed_ns.saturating_sub(sealed_ns) / 1000);
    }
    let pct = |v: &mut Vec<u64>, p: f64| {
        v.sort_unstable();
        v[((v.len() as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(v.len() - 1)]
    };
    println!(
        "{}",
        serde_json::json!({
            "bench": "quorum_commit_latency",
            "regions": 3, "threshold": 2, "iterations": iters, "receipts_per_checkpoint": 100,
            "commit_us": {"p50": pct(&mut commit_us, 0.50), "p99": pct(&mut commit_us, 0.99), "max": pct(&mut commit_us, 1.0)},
            "round_us": {"p50": pct(&mut round_us, 0.50), "p99": pct(&mut round_us, 0.99), "max": pct(&mut round_us, 1.0)},
            "seal_to_commit_us": {"p50": pct(&mut total_us, 0.50), "p99": pct(&mut total_us, 0.99), "max": pct(&mut total_us, 1.0)},
        })
    );
}

/// A region's signing key rotated while its agent was down is adopted with a logged handover; its
/// witnesses follow the rotation from the log and keep cosigning checkpoints signed by the
/// new version, which they were never configured with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witnesses_follow_key_rotations_recorded_in_the_log() {
    let mut regions = Regions::start(&["eu", "us", "ap"], 3).await;
    let first = regions.post("eu", 0..5).await;
    regions.wait_committed("eu", first).await;
    // `knhk-agent keys rotate` while eu is stopped (local key files).
    regions.stop("eu").await;
    let eu = &regions.regions[0].config;
    LocalSigner::open(&eu.key_dir(), &eu.kms.key_id)
        .unwrap()
        .rotate()
        .await
        .unwrap();
    regions.restart("eu").await;
    // The next seal logs the handover (signed by v1); the one after is signed by v2.
    let second = regions.post("eu", 5..10).await;
    regions.wait_committed("eu", second + 1).await;
    let third = regions.post("eu", 10..15).await;
    regions.wait_committed("eu", third).await;
    let latest: Value = regions.json("eu", "/v1/checkpoints/latest").await;
    assert_eq!(latest["signature"]["key_version"], 2, "{latest}");
    let logs = regions.json("us", "/v1/witness/logs").await;
    let eu_log = logs
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["origin"] == "knhk.test/eu")
        .unwrap();
    assert_eq!(
        eu_log["trusted_key_versions"],
        serde_json::json!([1, 2]),
        "{logs}"
    );
}
