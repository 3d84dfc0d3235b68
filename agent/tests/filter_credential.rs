//! The filters' credential (`[api] filter_token_file`, the filter's `control.token`): receipt
//! batches and config polls without it, or with a token not in the file, are refused with 401
//! and a distinct message, append nothing and are counted; a rotation (old and new token both
//! in the file) and a revocation take effect without a restart; the admin token is accepted
//! on the config poll but never writes receipts; no answer echoes a token.

// An integration test crate: helpers may fail loudly like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use knhk_agent::config::AgentConfig;
use knhk_core::class::Route;
use knhk_core::receipt::{encode_batch, ReceiptBuilder};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::in_process::InProcessAgent;

const ADMIN: &str = "admin-token-0123456789abcdef0123456789abcdef";
const FILTER_A: &str = "filter-token-a-0123456789abcdef0123456789";
const FILTER_B: &str = "filter-token-b-0123456789abcdef0123456789";

fn batch(epoch: u64, n: u64) -> Vec<u8> {
    let receipts: Vec<_> = (0..n)
        .map(|i| {
            ReceiptBuilder::new(i)
                .time_ns(1_700_000_000_000_000_000 + i)
                .route(Some(Route::Canary))
                .priority(1)
                .status(200)
                .latency_us(900)
                .config_epoch(epoch)
                .worker_id(0)
                .build()
        })
        .collect();
    encode_batch(&receipts).unwrap()
}

struct Rig {
    _dir: tempfile::TempDir,
    tokens: std::path::PathBuf,
    agent: InProcessAgent,
    anon: reqwest::Client,
}

impl Rig {
    async fn start() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let admin = dir.path().join("admin-token");
        std::fs::write(&admin, format!("{ADMIN}\n")).unwrap();
        let tokens = dir.path().join("filter-tokens");
        std::fs::write(
            &tokens,
            format!("# the filters' control.token\n{FILTER_A}\n"),
        )
        .unwrap();
        let mut config = AgentConfig {
            origin: "knhk.test/filter-credential".into(),
            data_dir: dir.path().join("data"),
            ..AgentConfig::default()
        };
        config.api.admin_token_file = Some(admin);
        config.api.filter_token_file = Some(tokens.clone());
        let http = knhk_e2e::agent::client_with_token(ADMIN).unwrap();
        let agent = InProcessAgent::start(config, http, "/v1/policy").await;
        let r = agent
            .http
            .put(agent.url("/v1/policy"))
            .json(&json!({"routing": {"salt": "credential-salt", "key_sources": [{"header": "x-user-id"}]}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        Rig {
            _dir: dir,
            tokens,
            agent,
            anon: reqwest::Client::new(),
        }
    }

    /// Post a batch with `authorization` (none when `None`): status and body text.
    async fn post(&self, token: Option<&str>, body: Vec<u8>) -> (StatusCode, String) {
        let mut req = self
            .anon
            .post(self.agent.url("/v1/receipts"))
            .header("content-type", "application/x-knhk-receipts")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }

    /// `GET /v1/config?after=0` with `token`: status and body text.
    async fn poll(&self, token: Option<&str>) -> (StatusCode, String) {
        let mut req = self.anon.get(self.agent.url("/v1/config?after=0"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn admin_json(&self, path: &str) -> Value {
        let r = self
            .agent
            .http
            .get(self.agent.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        r.json().await.unwrap()
    }

    async fn size(&self) -> u64 {
        self.admin_json("/v1/receipts?limit=1").await["size"]
            .as_u64()
            .unwrap()
    }

    /// Post with `token` until the answer is `want` (the file is re-read every second).
    async fn until_post_is(&self, token: &str, want: StatusCode) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (status, body) = self.post(Some(token), batch(1, 1)).await;
            if status == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "still {status} ({body}), want {want}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Refused without the credential, with a wrong one and with the admin token: 401, distinct
/// messages, nothing appended, counted; accepted with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_need_a_filter_token() {
    let rig = Rig::start().await;
    let before = rig.size().await;
    let (status, body) = rig.post(None, batch(1, 5)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("filter credential is missing"), "{body}");
    for wrong in [FILTER_B, ADMIN, "x"] {
        let (status, body) = rig.post(Some(wrong), batch(1, 5)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body.contains("not one the agent accepts"), "{body}");
        assert!(!body.contains(wrong), "the answer echoes the token: {body}");
    }
    assert_eq!(
        rig.size().await,
        before,
        "a refused batch appended receipts"
    );
    let refusals = rig.admin_json("/v1/auth/refusals").await;
    assert_eq!(refusals["receipts"], 4, "{refusals}");
    assert_eq!(refusals["filter_tokens"], 1, "{refusals}");
    let (status, body) = rig.post(Some(FILTER_A), batch(1, 5)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(rig.size().await, before + 5);
    let r = rig
        .anon
        .get(rig.agent.url("/v1/auth/refusals"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "the counters are an admin read"
    );
    rig.agent.stop().await;
}

/// The config long-poll carries the salt: refused without a filter or admin token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_poll_needs_a_filter_or_admin_token() {
    let rig = Rig::start().await;
    let (status, body) = rig.poll(None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(!body.contains("credential-salt"), "{body}");
    assert!(body.contains("filter credential is missing"), "{body}");
    let (status, body) = rig.poll(Some(FILTER_B)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    for good in [FILTER_A, ADMIN] {
        let (status, body) = rig.poll(Some(good)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body.contains("credential-salt") || body.contains("payload"),
            "{body}"
        );
    }
    assert_eq!(rig.admin_json("/v1/auth/refusals").await["config"], 2);
    // The config keys stay public: the filters' operators pin them.
    let r = rig
        .anon
        .get(rig.agent.url("/v1/config/keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    rig.agent.stop().await;
}

/// Rotation: with old and new in the file both are accepted; with the old removed it is
/// refused (revoked) and the new one still writes. A broken file keeps the set in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_revocation_without_restart() {
    let rig = Rig::start().await;
    let (status, _) = rig.post(Some(FILTER_B), batch(1, 1)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    std::fs::write(&rig.tokens, format!("{FILTER_A}\n{FILTER_B}\n")).unwrap();
    rig.until_post_is(FILTER_B, StatusCode::OK).await;
    let (status, body) = rig.post(Some(FILTER_A), batch(1, 1)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "both accepted during the rotation: {body}"
    );
    std::fs::write(&rig.tokens, format!("{FILTER_B}\n")).unwrap();
    rig.until_post_is(FILTER_A, StatusCode::UNAUTHORIZED).await;
    let before = rig.size().await;
    let (status, _) = rig.post(Some(FILTER_A), batch(1, 3)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked");
    assert_eq!(rig.size().await, before);
    std::fs::write(&rig.tokens, "not-a-token\n").unwrap();
    let (status, _) = rig.post(Some(FILTER_B), batch(1, 1)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        rig.admin_json("/v1/auth/refusals").await["filter_tokens"],
        1
    );
    rig.agent.stop().await;
}
