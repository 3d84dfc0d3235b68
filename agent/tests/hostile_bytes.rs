//! Property-based hostile bytes against the running agent: arbitrary bodies, and valid
//! `KNRB` batches cut short or extended, posted to `POST /v1/receipts`; arbitrary bodies to
//! `PUT /v1/policy`; arbitrary leaf-digest queries. Each is refused with a 4xx and a JSON
//! reason, and neither the log nor the config epoch changes.

// An integration test crate: helpers may fail loudly like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use knhk_agent::config::AgentConfig;
use knhk_core::receipt::{encode_batch, ReceiptBuilder};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::in_process::InProcessAgent;

struct Rig {
    runtime: tokio::runtime::Runtime,
    agent: Option<InProcessAgent>,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn start() -> Rig {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = AgentConfig {
            origin: "knhk.test/hostile-bytes".into(),
            data_dir: dir.path().join("data"),
            ..AgentConfig::default()
        };
        let agent = runtime.block_on(InProcessAgent::start(
            config,
            reqwest::Client::new(),
            "/v1/checkpoints/latest",
        ));
        Rig {
            runtime,
            agent: Some(agent),
            _dir: dir,
        }
    }

    fn agent(&self) -> &InProcessAgent {
        self.agent.as_ref().unwrap()
    }

    /// `method path` with `body` and `content_type`: status and body text.
    fn call(&self, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> (u16, String) {
        let agent = self.agent();
        self.runtime.block_on(async {
            let r = agent
                .http
                .request(method.parse().unwrap(), agent.url(path))
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    }

    /// Log size and config epoch.
    fn state(&self) -> (u64, u64) {
        let agent = self.agent();
        self.runtime.block_on(async {
            let page = agent.get_json("/v1/receipts?limit=1").await;
            let policy = agent.get_json("/v1/policy").await;
            (
                page["size"].as_u64().unwrap(),
                policy["epoch"].as_u64().unwrap(),
            )
        })
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(agent) = self.agent.take() {
            self.runtime.block_on(agent.stop());
        }
    }
}

fn refused(status: u16, body: &str) -> Result<(), TestCaseError> {
    prop_assert!((400..500).contains(&status), "{status}: {body}");
    let reason: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {body}")))?;
    prop_assert!(
        reason["error"].as_str().is_some_and(|s| !s.is_empty()),
        "{body}"
    );
    Ok(())
}

#[test]
fn hostile_bytes_are_refused_and_change_nothing() {
    let rig = Rig::start();
    let valid = encode_batch(
        &(0..8)
            .map(|i| ReceiptBuilder::new(i).build())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let before = rig.state();
    let mut runner = TestRunner::new(Config {
        cases: 96,
        ..Config::default()
    });
    // Arbitrary bodies (not starting with the magic) and valid batches cut or extended.
    let bodies = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2048)
            .prop_filter("not a batch", |b| !b.starts_with(b"KNRB")),
        (1..valid.len()).prop_map({
            let valid = valid.clone();
            move |cut| valid[..cut].to_vec()
        }),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map({
            let valid = valid.clone();
            move |tail| [valid.clone(), tail].concat()
        }),
    ];
    runner
        .run(&bodies, |body| {
            let (status, text) =
                rig.call("POST", "/v1/receipts", "application/x-knhk-receipts", body);
            refused(status, &text)
        })
        .unwrap();
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..4096), |body| {
            let (status, text) = rig.call("PUT", "/v1/policy", "application/json", body);
            refused(status, &text)
        })
        .unwrap();
    runner
        .run(&"\\PC{0,80}", |digest| {
            let body = serde_json::to_vec(&serde_json::json!({ "key_digest": digest })).unwrap();
            let (status, text) =
                rig.call("POST", "/v1/receipts/leaf-digest", "application/json", body);
            let is_hex32 = digest.len() == 32 && digest.bytes().all(|b| b.is_ascii_hexdigit());
            if is_hex32 {
                prop_assert_eq!(status, 200, "{}", text);
                Ok(())
            } else {
                refused(status, &text)
            }
        })
        .unwrap();
    assert_eq!(
        rig.state(),
        before,
        "hostile bytes changed the log or the epoch"
    );
}
