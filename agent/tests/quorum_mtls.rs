//! Cross-region quorum over mutual TLS with SPIFFE SVIDs from the Workload API test double
//! (`knhk_e2e::spiffe_workload`, the real gRPC protocol): three regions commit 2-of-3 with the
//! witness routes only on the mTLS peer listener, SVIDs rotating mid-stream break no commit, a
//! workload whose SPIFFE ID is outside the allow-list is refused both ways, and a region whose
//! SVID expired stops serving while the others keep committing.

// An integration test crate: helpers may fail loudly like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use knhk_agent::identity::IdentityConfig;
use knhk_agent::quorum::PeerConfig;
use knhk_e2e::spiffe_workload::{TestCas, WorkloadApi};
use reqwest::StatusCode;
use serde_json::Value;
use support::in_process::InProcessAgent;
use support::regions::{prepare, receipt};

const TRUST_DOMAIN: &str = "knhk.test";
const ALLOW: &str = "spiffe://knhk.test/region/*";
const DEADLINE: Duration = Duration::from_secs(30);

struct Region {
    name: String,
    api: std::net::SocketAddr,
    workload: WorkloadApi,
    agent: InProcessAgent,
    _dir: tempfile::TempDir,
}

/// Start regions `(name, spiffe id)`; every region is every other's peer; threshold `k`.
async fn start(
    dir: &std::path::Path,
    cas: &TestCas,
    regions: &[(&str, &str)],
    k: usize,
) -> Vec<Region> {
    let mut prepared = Vec::new();
    for (name, id) in regions {
        let (config, log_keys, witness) = prepare(dir, name, k).await;
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let wdir = tempfile::tempdir().unwrap();
        let workload = WorkloadApi::start(wdir.path(), cas, id, Duration::from_secs(3600))
            .await
            .unwrap();
        prepared.push((
            name.to_string(),
            config,
            log_keys,
            witness,
            api,
            peer,
            workload,
            wdir,
        ));
    }
    let peers: Vec<PeerConfig> = prepared
        .iter()
        .map(
            |(name, config, log_keys, witness, _, peer, _, _)| PeerConfig {
                region: name.clone(),
                url: format!("https://{}", peer.local_addr().unwrap()),
                origin: config.origin.clone(),
                log_keys: log_keys.clone(),
                witness: witness.clone(),
            },
        )
        .collect();
    let mut out = Vec::new();
    for (name, mut config, _, _, api, peer, workload, wdir) in prepared {
        config.quorum.peers = peers.iter().filter(|p| p.region != name).cloned().collect();
        config.identity = IdentityConfig {
            enabled: true,
            socket: Some(workload.endpoint()),
            trust_domain: Some(TRUST_DOMAIN.to_owned()),
            allow: vec![ALLOW.to_owned()],
            ..IdentityConfig::default()
        };
        let addr = api.local_addr().unwrap();
        let agent = InProcessAgent::start_with_peer(
            api,
            Some(peer),
            config,
            reqwest::Client::new(),
            "/v1/quorum/status",
        )
        .await;
        out.push(Region {
            name,
            api: addr,
            workload,
            agent,
            _dir: wdir,
        });
    }
    out
}

impl Region {
    async fn status(&self) -> Value {
        let r = self
            .agent
            .http
            .get(self.agent.url("/v1/quorum/status"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    async fn post(&self, range: std::ops::Range<u64>) -> u64 {
        // Epoch 0 (the filters' static configuration): these agents issue no config epochs.
        let receipts: Vec<_> = range
            .map(|i| knhk_core::receipt::Receipt {
                config_epoch: 0,
                ..receipt(i)
            })
            .collect();
        let body = knhk_core::receipt::encode_batch(&receipts).unwrap();
        let r = self
            .agent
            .http
            .post(format!("http://{}/v1/receipts", self.api))
            .header("content-type", "application/x-knhk-receipts")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        r.json::<Value>().await.unwrap()["size"].as_u64().unwrap()
    }

    /// Poll the quorum status until `done` holds.
    async fn wait(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let s = self.status().await;
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{}: timed out waiting for {what}: {s:#}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_committed(&self, size: u64) -> Value {
        self.wait(&format!("a commit of size >= {size}"), |s| {
            s["latest_committed"]["tree_size"]
                .as_u64()
                .is_some_and(|c| c >= size)
        })
        .await
    }
}

fn peer<'a>(status: &'a Value, region: &str) -> &'a Value {
    status["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["region"] == region)
        .unwrap()
}

/// 2-of-3 over mTLS: commits with SVIDs; witness routes are not on the plain API listener;
/// all three SVIDs rotate between batches and every batch still commits with both peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_over_mtls_survives_svid_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let cas = TestCas::new();
    let regions = start(
        dir.path(),
        &cas,
        &[
            ("eu", "spiffe://knhk.test/region/eu"),
            ("us", "spiffe://knhk.test/region/us"),
            ("ap", "spiffe://knhk.test/region/ap"),
        ],
        2,
    )
    .await;
    let eu = &regions[0];
    let r = eu
        .agent
        .http
        .post(eu.agent.url("/v1/witness/add-checkpoint"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "witness routes only on the mTLS listener"
    );
    let mut next = 0;
    for round in 0..4 {
        let size = eu.post(next..next + 25).await;
        next += 25;
        let s = eu
            .wait(&format!("round {round}: both peers at {size}"), |s| {
                ["us", "ap"]
                    .iter()
                    .all(|p| peer(s, p)["acked_size"].as_u64().is_some_and(|a| a >= size))
            })
            .await;
        assert!(
            s["latest_committed"]["tree_size"].as_u64().unwrap() >= size,
            "{s:#}"
        );
        let served: Vec<String> = regions
            .iter()
            .map(|r| r.workload.current().leaf_pem())
            .collect();
        for r in &regions {
            r.workload.rotate().unwrap();
        }
        assert!(regions
            .iter()
            .zip(&served)
            .all(|(r, old)| r.workload.current().leaf_pem() != *old));
    }
    for r in regions {
        r.agent.stop().await;
    }
}

/// A workload whose SPIFFE ID is outside the allow-list (same trust domain) is refused both
/// ways: its checkpoints never reach eu's witness, and eu will not send to it; a region whose
/// SVID expired stops serving (eu reports it unreachable) while eu keeps committing with us.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_are_refused_and_expired_regions_stop_serving() {
    let dir = tempfile::tempdir().unwrap();
    let cas = TestCas::new();
    let regions = start(
        dir.path(),
        &cas,
        &[
            ("eu", "spiffe://knhk.test/region/eu"),
            ("us", "spiffe://knhk.test/region/us"),
            ("ap", "spiffe://knhk.test/region/ap"),
            ("xx", "spiffe://knhk.test/batch/xx"),
        ],
        2,
    )
    .await;
    let (eu, ap, xx) = (&regions[0], &regions[2], &regions[3]);
    let size = eu.post(0..10).await;
    eu.wait_committed(size).await;
    let xx_size = xx.post(0..10).await;
    let xx_status = xx
        .wait("eu refusing xx", |s| !peer(s, "eu")["last_error"].is_null())
        .await;
    assert!(
        peer(&xx_status, "eu")["acked_size"].as_u64().unwrap_or(0) < xx_size,
        "{xx_status:#}"
    );
    let refused = peer(&xx_status, "eu")["last_error"].to_string();
    assert!(
        refused.contains("AccessDenied"),
        "eu's server refuses xx's SVID: {refused}"
    );
    let eu_status = eu
        .wait("xx refused by eu", |s| {
            !peer(s, "xx")["last_error"].is_null()
        })
        .await;
    assert!(
        peer(&eu_status, "xx")["acked_size"].as_u64().unwrap_or(0) < size,
        "{eu_status:#}"
    );
    let refused = peer(&eu_status, "xx")["last_error"].to_string();
    assert!(
        refused.contains("invalid peer certificate"),
        "eu's client refuses xx's SVID: {refused}"
    );
    // ap's SVID expires: it stops serving; eu commits on with us.
    ap.workload.push_expired().unwrap();
    let before = eu.status().await;
    let ap_acked = peer(&before, "ap")["acked_size"].as_u64().unwrap_or(0);
    let size = eu.post(10..30).await;
    eu.wait_committed(size).await;
    // The replicator commits before it publishes the acking peer's size (so a status showing
    // a quorum of acks also shows the commit): us's acked size follows the commit.
    eu.wait("us to have acknowledged the commit", |s| {
        peer(s, "us")["acked_size"].as_u64().unwrap_or(0) >= size
    })
    .await;
    let s = eu
        .wait("ap unreachable", |s| {
            peer(s, "ap")["acked_size"].as_u64().unwrap_or(0) == ap_acked
                && !peer(s, "ap")["last_error"].is_null()
        })
        .await;
    assert!(
        peer(&s, "ap")["acked_size"].as_u64().unwrap_or(0) < size,
        "{s:#}"
    );
    // A fresh SVID brings ap back, and it catches up.
    ap.workload.rotate().unwrap();
    eu.wait("ap caught up", |s| {
        peer(s, "ap")["acked_size"]
            .as_u64()
            .is_some_and(|a| a >= size)
    })
    .await;
    for r in regions {
        r.agent.stop().await;
    }
}
