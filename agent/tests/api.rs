//! The agent in-process on port 0: receipt ingest, reads, proofs and export over HTTP, hostile
//! input on every endpoint, and graceful shutdown that keeps every acknowledged receipt.

// An integration test crate: helpers may fail loudly like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::in_process::InProcessAgent;

use std::path::Path;
use std::time::{Duration, Instant};

use knhk_agent::config::AgentConfig;
use knhk_agent::verify::verify_json;
use knhk_core::receipt::{encode_batch, Receipt, ReceiptBuilder, MAX_BATCH_LEN};
use reqwest::StatusCode;

const CT: &str = "application/x-knhk-receipts";

/// The in-process agent with the receipt-API helpers these tests use.
struct Agent(InProcessAgent);

impl std::ops::Deref for Agent {
    type Target = InProcessAgent;
    fn deref(&self) -> &InProcessAgent {
        &self.0
    }
}

impl Agent {
    async fn start(dir: &Path) -> Agent {
        let mut config = AgentConfig {
            origin: "knhk.test/api".into(),
            data_dir: dir.join("data"),
            seal_interval: Duration::from_secs(1),
            ..AgentConfig::default()
        };
        config.kms.key_dir = Some(dir.join("keys"));
        Agent(InProcessAgent::start(config, reqwest::Client::new(), "/v1/checkpoints/latest").await)
    }

    async fn get(&self, path: &str) -> reqwest::Result<reqwest::Response> {
        self.http.get(self.url(path)).send().await
    }

    async fn post(&self, body: Vec<u8>, content_type: Option<&str>) -> reqwest::Response {
        let mut req = self.http.post(self.url("/v1/receipts")).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.send().await.unwrap()
    }

    async fn json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        r.json().await.unwrap()
    }

    async fn size(&self) -> u64 {
        self.json("/v1/receipts?limit=1").await["size"]
            .as_u64()
            .unwrap()
    }

    async fn stop(self) {
        self.0.stop().await;
    }
}

fn receipt(i: u64) -> Receipt {
    ReceiptBuilder::new(i).config_epoch(0).build()
}

fn batch(range: std::ops::Range<u64>) -> Vec<u8> {
    encode_batch(&range.map(receipt).collect::<Vec<_>>()).unwrap()
}

async fn error_of(r: reqwest::Response) -> (StatusCode, String) {
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap();
    (status, body["error"].as_str().unwrap().to_owned())
}

/// Batches are acknowledged with their indexes, read back page by page, proven against a signed
/// checkpoint, and the export verifies offline.
#[tokio::test]
async fn ingest_read_prove_export() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path()).await;
    let r = agent.post(batch(0..150), Some(CT)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let ack: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (ack["first_index"].as_u64(), ack["count"].as_u64()),
        (Some(0), Some(150))
    );
    let r = agent
        .post(
            batch(150..160),
            Some("application/octet-stream; charset=binary"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    let page = agent.json("/v1/receipts?from=0&limit=100").await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 100);
    assert_eq!(page["next"].as_u64(), Some(100));
    let e = &page["entries"][7]["entry"];
    assert_eq!(e["kind"], "receipt");
    assert_eq!(e["route"], "canary");
    assert_eq!(e["time_ns"].as_u64(), Some(1_007));
    let last = agent.json("/v1/receipts?from=100&limit=100").await;
    assert_eq!(last["entries"].as_array().unwrap().len(), 60);
    assert!(last["next"].is_null());

    // The sealer covers the receipts within its interval; poll for the proof.
    let deadline = Instant::now() + Duration::from_secs(15);
    let bundle = loop {
        let r = agent.get("/v1/receipts/159/proof").await.unwrap();
        if r.status() == StatusCode::OK {
            break r.bytes().await.unwrap();
        }
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert!(Instant::now() < deadline, "receipts were never sealed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    verify_json(&bundle, None).unwrap();
    let cp = agent.json("/v1/checkpoints/latest").await;
    assert!(cp["text"]
        .as_str()
        .unwrap()
        .starts_with("knhk.test/api\n160\n"));
    let export = agent
        .get("/v1/log/export")
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let report = verify_json(&export, None).unwrap();
    assert!(
        report.lines[0].contains("160 entries"),
        "{:?}",
        report.lines
    );
    agent.stop().await;
}

/// Malformed, oversized and wrongly typed batches get a 4xx with a clear message and change
/// nothing.
#[tokio::test]
async fn hostile_batches_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path()).await;
    agent.post(batch(0..5), Some(CT)).await;
    let good = batch(5..10);
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    let mut bad_field = good.clone();
    // After the 9-byte header and the empty origin section (three zero lengths).
    bad_field[9 + 3 + 25] = 7;
    // A pod name with a line break, as a hostile filter would forge a log line with it.
    let origin = knhk_core::receipt::Origin::new("checkout-1", "shop", "node-a").unwrap();
    let mut forged_pod =
        knhk_core::receipt::encode_origin_batch(&origin, &(5..10).map(receipt).collect::<Vec<_>>())
            .unwrap();
    forged_pod[10 + 4] = b'\n';
    let mut huge_count = good.clone();
    huge_count[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
    let cases: Vec<(Vec<u8>, Option<&str>, StatusCode, &str)> = vec![
        (
            good.clone(),
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type",
        ),
        (
            good.clone(),
            Some("application/json"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type",
        ),
        (bad_magic, Some(CT), StatusCode::BAD_REQUEST, "bad magic"),
        (forged_pod, Some(CT), StatusCode::BAD_REQUEST, "invalid pod"),
        (
            good[..good.len() - 3].to_vec(),
            Some(CT),
            StatusCode::BAD_REQUEST,
            "truncated",
        ),
        (
            [good.clone(), vec![0]].concat(),
            Some(CT),
            StatusCode::BAD_REQUEST,
            "oversized",
        ),
        (
            bad_field,
            Some(CT),
            StatusCode::BAD_REQUEST,
            "invalid route",
        ),
        (
            huge_count,
            Some(CT),
            StatusCode::BAD_REQUEST,
            "exceeds the limit",
        ),
        (
            Vec::new(),
            Some(CT),
            StatusCode::BAD_REQUEST,
            "truncated batch header",
        ),
        (
            vec![0u8; MAX_BATCH_LEN + 1],
            Some(CT),
            StatusCode::PAYLOAD_TOO_LARGE,
            "exceeds the limit",
        ),
    ];
    for (body, ct, status, needle) in cases {
        let (got, message) = error_of(agent.post(body, ct).await).await;
        assert_eq!(got, status, "{needle}: {message}");
        assert!(message.contains(needle), "{needle}: {message}");
        assert_eq!(agent.size().await, 5, "{needle} changed the log");
    }
    agent.stop().await;
}

/// Bad queries and paths on the read endpoints get a 4xx with a clear message.
#[tokio::test]
async fn hostile_reads_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path()).await;
    agent.post(batch(0..3), Some(CT)).await;
    let cases = [
        (
            "/v1/receipts?limit=0",
            StatusCode::BAD_REQUEST,
            "limit must be between",
        ),
        (
            "/v1/receipts?limit=100000",
            StatusCode::BAD_REQUEST,
            "limit must be between",
        ),
        (
            "/v1/receipts?from=4",
            StatusCode::BAD_REQUEST,
            "beyond the log size",
        ),
        ("/v1/receipts?from=abc", StatusCode::BAD_REQUEST, "from"),
        ("/v1/receipts?from=-1", StatusCode::BAD_REQUEST, "from"),
        (
            "/v1/receipts?from=99999999999999999999999",
            StatusCode::BAD_REQUEST,
            "from",
        ),
        ("/v1/receipts?colour=red", StatusCode::BAD_REQUEST, "colour"),
        (
            "/v1/receipts/abc/proof",
            StatusCode::BAD_REQUEST,
            "not a non-negative integer",
        ),
        (
            "/v1/receipts/-1/proof",
            StatusCode::BAD_REQUEST,
            "not a non-negative integer",
        ),
        (
            "/v1/receipts/3/proof",
            StatusCode::NOT_FOUND,
            "beyond the log size",
        ),
        (
            "/v1/receipts/18446744073709551616/proof",
            StatusCode::BAD_REQUEST,
            "not a non-negative integer",
        ),
    ];
    for (path, status, needle) in cases {
        let (got, message) = error_of(agent.get(path).await.unwrap()).await;
        assert_eq!(got, status, "{path}: {message}");
        assert!(message.contains(needle), "{path}: {message}");
    }
    assert_eq!(
        agent.get("/v1/nope").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let put = agent
        .http
        .put(agent.url("/v1/log/export"))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(agent.size().await, 3);
    agent.stop().await;
}

/// Graceful shutdown seals everything acknowledged; a restart on the same data serves it all
/// and keeps the log consistent.
#[tokio::test]
async fn shutdown_seals_and_restart_keeps_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path()).await;
    for b in 0..10 {
        let r = agent.post(batch(b * 20..b * 20 + 20), Some(CT)).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    agent.stop().await;
    let agent = Agent::start(dir.path()).await;
    assert_eq!(agent.size().await, 200);
    let cp = agent.json("/v1/checkpoints/latest").await;
    assert!(
        cp["text"]
            .as_str()
            .unwrap()
            .starts_with("knhk.test/api\n200\n"),
        "{cp}"
    );
    let bundle = agent
        .get("/v1/receipts/199/proof")
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    verify_json(&bundle, None).unwrap();
    agent.post(batch(200..210), Some(CT)).await;
    agent.stop().await;
}

/// Every file the agent keeps, relative to `root`, sorted.
fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// An agent configured with only `data_dir` (from a file, or in code) keeps all its state
/// under it, the checkpoint and config keys included; nothing lands beside it.
#[tokio::test]
async fn all_state_follows_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("srv");
    let from_file = AgentConfig::from_toml(
        &format!("data_dir = {:?}\n", data.display().to_string()),
        Path::new("agent.toml"),
    )
    .unwrap();
    let agent =
        InProcessAgent::start(from_file, reqwest::Client::new(), "/v1/checkpoints/latest").await;
    agent.stop().await;
    let files = files_under(&data);
    for want in [
        "receipts.db",
        "policy.db",
        "gates.db",
        "digest-key",
        "keys/knhk-checkpoints/v1.ed25519",
        "keys/knhk-config/v1.ed25519",
    ] {
        assert!(files.iter().any(|f| f == want), "{want} not in {files:?}");
    }
    let beside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, vec![std::ffi::OsString::from("srv")]);

    let in_code = dir.path().join("code");
    let config = AgentConfig {
        data_dir: in_code.clone(),
        ..AgentConfig::default()
    };
    let agent =
        InProcessAgent::start(config, reqwest::Client::new(), "/v1/checkpoints/latest").await;
    agent.stop().await;
    assert!(in_code.join("keys/knhk-checkpoints/v1.ed25519").exists());
}

/// A batch with a receipt claiming a config epoch the agent never issued (2^63, or the next
/// one) is refused with 422 naming the receipt and the epochs, and appends nothing; once the
/// epoch is issued the same batch is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_of_unissued_epochs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path()).await;
    let claim = |epoch: u64| {
        encode_batch(&[
            ReceiptBuilder::new(0).config_epoch(0).build(),
            ReceiptBuilder::new(1).config_epoch(epoch).build(),
        ])
        .unwrap()
    };
    for epoch in [1u64 << 63, 1] {
        let (status, message) = error_of(agent.post(claim(epoch), Some(CT)).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{message}");
        assert!(
            message.contains("receipt 1")
                && message.contains(&format!("config epoch {epoch}"))
                && message.contains("issued is 0"),
            "{message}"
        );
        assert_eq!(agent.size().await, 0, "nothing appended");
    }
    let r = agent
        .http
        .put(agent.url("/v1/policy"))
        .json(&serde_json::json!({"routing": {"salt": "epochs"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = agent.post(claim(1), Some(CT)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(agent.size().await, 2);
    agent.0.stop().await;
}

/// The log carries keyed digests: not the filter's salted digest, the same for the same key,
/// and what `POST /v1/receipts/leaf-digest` (and `knhk-agent bucket --key K --agent`) answers
/// for that key; a malformed query is refused. Without the agent's digest key, knowing the salt
/// does not find a key's receipts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_digests_are_keyed_by_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path()).await;
    let r = agent
        .http
        .put(agent.url("/v1/policy"))
        .json(&serde_json::json!({"routing": {"salt": "keyed", "key_sources": [{"header": "x-user-id"}]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let filter_digest = knhk_core::receipt::key_digest(b"keyed", b"user-42");
    let mut receipts: Vec<_> = (0..2)
        .map(|i| ReceiptBuilder::new(i).key_digest(filter_digest).build())
        .collect();
    receipts.push(
        ReceiptBuilder::new(2)
            .key_digest(knhk_core::receipt::key_digest(b"keyed", b"user-43"))
            .build(),
    );
    let r = agent.post(encode_batch(&receipts).unwrap(), Some(CT)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = agent.json("/v1/receipts?from=0&limit=3").await;
    let logged: Vec<&str> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entry"]["key_digest"].as_str().unwrap())
        .collect();
    assert_eq!(logged[0], logged[1]);
    assert_ne!(logged[0], logged[2], "another key, another digest");
    assert_ne!(
        logged[0],
        hex::encode(filter_digest),
        "the log holds the unkeyed digest"
    );
    let asked = agent
        .http
        .post(agent.url("/v1/receipts/leaf-digest"))
        .json(&serde_json::json!({"key_digest": hex::encode(filter_digest)}))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), StatusCode::OK);
    let asked: serde_json::Value = asked.json().await.unwrap();
    assert_eq!(asked["leaf_digest"], logged[0]);
    for bad in [
        serde_json::json!({"key_digest": "zz"}),
        serde_json::json!({"key": "user-42"}),
    ] {
        let r = agent
            .http
            .post(agent.url("/v1/receipts/leaf-digest"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{bad}: {}", r.status());
    }
    let addr = agent.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_knhk-agent"))
            .args(["bucket", "--key", "user-42", "--agent", &addr, "--json"])
            .env_remove("KNHK_ADMIN_TOKEN_FILE")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["leaf_digest"], logged[0], "{answer}");
    assert_eq!(answer["key_digest"], hex::encode(filter_digest));
    // `knhk-agent receipts --key K`: exactly that key's receipts.
    let addr = agent.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_knhk-agent"))
            .args(["receipts", "--key", "user-42", "--agent", &addr, "--json"])
            .env_remove("KNHK_ADMIN_TOKEN_FILE")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("2 receipt(s) of this key"), "{stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let indexes: Vec<u64> = lines.iter().map(|l| l["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, [0, 1]);
    assert!(lines.iter().all(|l| l["entry"]["key_digest"] == logged[0]));
    agent.0.stop().await;
}
