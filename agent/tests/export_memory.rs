//! `GET /v1/log/export` streams: six concurrent exports of a 250,000-entry log (≈ 18 MB of
//! JSON each) raise the agent's resident memory by less than [`BOUND_MB`], where building
//! each export in memory took several times its size per export (measured 1.4 GB for six
//! exports of 1.74 M entries). Its own test binary, so no other test shares the process whose
//! memory it reads; the agent runs in-process.

// An integration test crate: helpers may fail loudly like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use knhk_agent::config::AgentConfig;
use knhk_core::receipt::ReceiptBuilder;
use reqwest::StatusCode;
use support::in_process::InProcessAgent;

/// Entries in the log.
const ENTRIES: u64 = 250_000;
/// The stated bound on the growth of resident memory while six exports run, MiB.
const BOUND_MB: u64 = 64;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_concurrent_exports_stay_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let config = AgentConfig {
        origin: "knhk.test/export-memory".into(),
        data_dir: dir.path().join("data"),
        ..AgentConfig::default()
    };
    let agent =
        InProcessAgent::start(config, reqwest::Client::new(), "/v1/checkpoints/latest").await;
    let mut i = 0;
    while i < ENTRIES {
        let n = (ENTRIES - i).min(16_384);
        let receipts: Vec<_> = (i..i + n).map(|k| ReceiptBuilder::new(k).build()).collect();
        let r = agent.post_receipts(&receipts).await;
        assert_eq!(r.status(), StatusCode::OK);
        i += n;
    }
    // Settle: one export read to the end first (SQLite caches, allocator pools).
    let first = agent
        .http
        .get(agent.url("/v1/log/export"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let doc: serde_json::Value = first.json().await.unwrap();
    assert_eq!(doc["entries"].as_array().unwrap().len() as u64, ENTRIES);
    drop(doc);
    let before = rss_kib();

    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let exports: Vec<_> = (0..6)
        .map(|_| {
            let (http, url) = (agent.http.clone(), agent.url("/v1/log/export"));
            tokio::spawn(async move {
                let mut r = http.get(url).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                let mut bytes = 0usize;
                // A slow reader: the agent must wait for it, not buffer ahead.
                while let Some(chunk) = r.chunk().await.unwrap() {
                    bytes += chunk.len();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                bytes
            })
        })
        .collect();
    let mut sizes = Vec::new();
    for e in exports {
        sizes.push(e.await.unwrap());
    }
    sampler.abort();
    let grew_mib = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before)
        / 1024;
    println!(
        "six exports of {} bytes each: resident memory grew {grew_mib} MiB (bound {BOUND_MB} MiB)",
        sizes[0]
    );
    assert!(
        sizes.iter().all(|&s| s == sizes[0] && s > 15_000_000),
        "{sizes:?}"
    );
    assert!(
        grew_mib < BOUND_MB,
        "grew {grew_mib} MiB, bound {BOUND_MB} MiB"
    );
    agent.stop().await;
}
