//! Config push with the agent in-process on port 0: a policy change reaches long-polls as an
//! envelope the filter's own `envelope::open` accepts, epochs survive restarts, invalid policy
//! files and hostile requests change nothing, and config-key rotation hands over to the new key.

// An integration test crate: helpers may fail loudly like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use knhk_e2e::stats::Distribution;
use support::in_process::InProcessAgent;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use knhk_agent::config::AgentConfig;
use knhk_agent::kms::Provider;
use knhk_agent::policy::api::{PolicyView, Published};
use knhk_agent::policy::service::Rotation;
use knhk_core::checkpoint::{Alg, PublicKeyVersion};
use knhk_core::envelope::{self, EnvelopeError};
use reqwest::StatusCode;

const JSON: &str = "application/json";
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The in-process agent with the config-push helpers these tests use.
struct Agent(InProcessAgent);

impl std::ops::Deref for Agent {
    type Target = InProcessAgent;
    fn deref(&self) -> &InProcessAgent {
        &self.0
    }
}

fn config(dir: &Path, policy_file: Option<PathBuf>) -> AgentConfig {
    let mut config = AgentConfig {
        origin: "knhk.test/config".into(),
        data_dir: dir.join("data"),
        policy_file,
        ..AgentConfig::default()
    };
    config.kms.key_dir = Some(dir.join("keys"));
    config.policy.watch_interval = Duration::from_millis(20);
    config
}

impl Agent {
    async fn start(config: AgentConfig) -> Agent {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .unwrap();
        Agent(InProcessAgent::start(config, http, "/v1/policy").await)
    }

    async fn policy(&self) -> PolicyView {
        let r = self.http.get(self.url("/v1/policy")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    async fn keys(&self) -> Vec<PublicKeyVersion> {
        let r = self
            .http
            .get(self.url("/v1/config/keys"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    async fn put(&self, body: &str) -> reqwest::Response {
        self.http
            .put(self.url("/v1/policy"))
            .header("content-type", JSON)
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    async fn put_ok(&self, body: &str) -> u64 {
        let r = self.put(body).await;
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
        let p: Published = r.json().await.unwrap();
        p.epoch
    }

    async fn poll(&self, after: u64, timeout_ms: u64) -> reqwest::Response {
        self.http
            .get(self.url(&format!("/v1/config?after={after}&timeout_ms={timeout_ms}")))
            .send()
            .await
            .unwrap()
    }

    /// Poll `GET /v1/policy` until `done` holds, with a deadline.
    async fn until(&self, what: &str, done: impl Fn(&PolicyView) -> bool) -> PolicyView {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let view = self.policy().await;
            if done(&view) {
                return view;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn stop(self) {
        self.0.stop().await;
    }
}

fn policy(bp: u32) -> String {
    format!(r#"{{"routing": {{"canary_basis_points": {bp}}}}}"#)
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

/// A PUT reaches a long-poll as an envelope that `envelope::open` accepts with the keys from
/// `GET /v1/config/keys`, carrying the policy, and `GET /v1/policy` shows the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_reaches_long_poll_as_a_verifiable_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(config(dir.path(), None)).await;
    let view = agent.policy().await;
    assert_eq!(view.epoch, 0);
    assert!(view.policy.is_none());
    let trusted = agent.keys().await;
    assert_eq!(trusted.len(), 1);
    let epoch = agent.put_ok(&policy(1500)).await;
    assert_eq!(epoch, 1);
    let r = agent.poll(0, 1000).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), JSON);
    assert_eq!(header(&r, "x-knhk-epoch"), "1");
    let body = r.bytes().await.unwrap();
    let accepted = envelope::open(&body, &trusted, 0).unwrap();
    assert_eq!(accepted.epoch, 1);
    assert_eq!(accepted.policy.canary_basis_points, 1500);
    assert_eq!(accepted.signed_by, trusted[0]);
    let view = agent.policy().await;
    assert_eq!(view.epoch, 1);
    assert_eq!(
        view.policy.unwrap(),
        serde_json::from_str::<serde_json::Value>(&policy(1500)).unwrap()
    );
    assert_eq!(view.signed_by.unwrap(), trusted[0]);
    // The same policy again publishes nothing.
    let r = agent.put(&policy(1500)).await;
    let p: Published = r.json().await.unwrap();
    assert_eq!((p.epoch, p.changed), (1, false));
    agent.stop().await;
}

/// A long-poll at the current epoch answers 204 once its timeout passes, 200 with the new
/// epoch as soon as a PUT lands during the hold, and 204 at once when the agent shuts down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_holds_until_timeout_or_change() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(config(dir.path(), None)).await;
    agent.put_ok(&policy(100)).await;
    let start = Instant::now();
    let r = agent.poll(1, 200).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "x-knhk-epoch"), "1");
    assert!(
        start.elapsed() >= Duration::from_millis(190),
        "{:?}",
        start.elapsed()
    );
    let url = agent.url("/v1/config?after=1&timeout_ms=60000");
    let http = agent.http.clone();
    let waiter = tokio::spawn(async move {
        let r = http.get(url).send().await.unwrap();
        (r.status(), Instant::now())
    });
    agent
        .until("the long-poll to be held", |v| v.waiting == 1)
        .await;
    let put_at = Instant::now();
    assert_eq!(agent.put_ok(&policy(200)).await, 2);
    let (status, answered) = waiter.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(
        answered.duration_since(put_at) < Duration::from_secs(10),
        "a 60 s hold must end with the change"
    );
    // Shutdown is not held up by a held long-poll: it answers 204 at once.
    let url = agent.url("/v1/config?after=2&timeout_ms=60000");
    let http = agent.http.clone();
    let held = tokio::spawn(async move { http.get(url).send().await.unwrap().status() });
    agent
        .until("the long-poll to be held", |v| v.waiting == 1)
        .await;
    let stop_at = Instant::now();
    agent.stop().await;
    assert_eq!(held.await.unwrap(), StatusCode::NO_CONTENT);
    assert!(
        stop_at.elapsed() < Duration::from_secs(10),
        "shutdown waited for the hold"
    );
}

/// 200 held long-polls are all woken by one PUT; over 100 PUTs with 8 waiters each (Envoy
/// workers), the time from issuing the PUT to each waiter holding the envelope is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_waiters_wake_on_one_put() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), None);
    // Every waiter comes from 127.0.0.1: let this one client hold all 200.
    cfg.policy.max_long_polls_per_client = 256;
    let agent = Agent::start(cfg).await;
    let mut epoch = agent.put_ok(&policy(0)).await;
    let trusted = agent.keys().await;

    let spawn_waiters = |n: usize, after: u64| {
        (0..n)
            .map(|_| {
                let http = agent.http.clone();
                let url = agent.url(&format!("/v1/config?after={after}&timeout_ms=60000"));
                tokio::spawn(async move {
                    let r = http.get(url).send().await.unwrap();
                    let status = r.status();
                    let body = r.bytes().await.unwrap();
                    (status, body, Instant::now())
                })
            })
            .collect::<Vec<_>>()
    };

    let waiters = spawn_waiters(200, epoch);
    agent
        .until("200 held long-polls", |v| v.waiting == 200)
        .await;
    epoch = agent.put_ok(&policy(1)).await;
    for w in waiters {
        let (status, body, _) = w.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            envelope::open(&body, &trusted, epoch - 1).unwrap().epoch,
            epoch
        );
    }

    let mut wake = Vec::new();
    let mut puts = Vec::new();
    for i in 0..100u32 {
        let waiters = spawn_waiters(8, epoch);
        agent.until("8 held long-polls", |v| v.waiting == 8).await;
        let put_at = Instant::now();
        epoch = agent.put_ok(&policy(2 + i)).await;
        puts.push(put_at.elapsed());
        for w in waiters {
            let (status, _, at) = w.await.unwrap();
            assert_eq!(status, StatusCode::OK);
            wake.push(at.duration_since(put_at));
        }
    }
    let (wake, puts) = (
        Distribution::of_durations(wake),
        Distribution::of_durations(puts),
    );
    println!(
        "config push wake-up (PUT issued -> envelope at waiter), {} samples: p50 {:?} p99 {:?} max {:?}; PUT round trip p50 {:?} p99 {:?}",
        wake.len(),
        wake.duration_at(50.0),
        wake.duration_at(99.0),
        wake.duration_at(100.0),
        puts.duration_at(50.0),
        puts.duration_at(99.0),
    );
    agent.stop().await;
}

/// The epoch survives a restart on the same data directory: the policy and envelope are
/// served again, and the next PUT gets a higher epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoch_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(config(dir.path(), None)).await;
    agent.put_ok(&policy(100)).await;
    assert_eq!(agent.put_ok(&policy(200)).await, 2);
    let before = agent.poll(0, 0).await.bytes().await.unwrap();
    agent.stop().await;

    let agent = Agent::start(config(dir.path(), None)).await;
    let view = agent.policy().await;
    assert_eq!(view.epoch, 2);
    assert_eq!(
        view.policy.unwrap(),
        serde_json::from_str::<serde_json::Value>(&policy(200)).unwrap()
    );
    let after = agent.poll(0, 0).await.bytes().await.unwrap();
    assert_eq!(
        before, after,
        "the persisted envelope is served, not re-signed"
    );
    assert_eq!(agent.put_ok(&policy(300)).await, 3);
    agent.stop().await;
}

/// The policy file is applied at start and on change; an invalid change is refused (the error
/// names the field) while the epoch in force stays and is still served; a fixed file applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_policy_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.json");
    std::fs::write(&file, policy(100)).unwrap();
    let agent = Agent::start(config(dir.path(), Some(file.clone()))).await;
    let view = agent.until("the file's epoch", |v| v.epoch == 1).await;
    assert!(view.policy_file.unwrap().error.is_none());

    std::fs::write(&file, r#"{"routing": {"canary_basis_points": 20000}}"#).unwrap();
    let view = agent
        .until("the refusal", |v| {
            v.policy_file.as_ref().is_some_and(|f| f.error.is_some())
        })
        .await;
    let error = view.policy_file.unwrap().error.unwrap();
    assert!(error.contains("routing.canary_basis_points"), "{error}");
    assert_eq!(view.epoch, 1);
    assert_eq!(agent.poll(1, 50).await.status(), StatusCode::NO_CONTENT);

    std::fs::write(&file, "{ not json").unwrap();
    agent
        .until("the second refusal", |v| {
            v.policy_file
                .as_ref()
                .and_then(|f| f.error.as_deref())
                .is_some_and(|e| e.contains("not valid JSON"))
        })
        .await;
    assert_eq!(agent.policy().await.epoch, 1);

    std::fs::write(&file, policy(300)).unwrap();
    let view = agent.until("the fixed file", |v| v.epoch == 2).await;
    assert!(view.policy_file.unwrap().error.is_none());
    agent.stop().await;
}

/// Hostile requests to every config endpoint get a 4xx with a JSON message, and neither the
/// epoch nor the key set changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inputs_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(config(dir.path(), None)).await;
    agent.put_ok(&policy(100)).await;
    let keys = agent.keys().await;
    let http = &agent.http;
    let put = |ct: Option<&str>, body: Vec<u8>| {
        let mut r = http.put(agent.url("/v1/policy")).body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r
    };
    let oversized = format!(r#"{{"routing": {{"salt": "{}"}}}}"#, "a".repeat(70 * 1024));
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            put(Some(JSON), b"{\"routing\":".to_vec()),
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
        (
            "empty body",
            put(Some(JSON), Vec::new()),
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
        (
            "array",
            put(Some(JSON), b"[1]".to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "JSON object",
        ),
        (
            "wrong type",
            put(
                Some(JSON),
                br#"{"routing": {"canary_basis_points": "ten"}}"#.to_vec(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "routing.canary_basis_points",
        ),
        (
            "negative",
            put(
                Some(JSON),
                br#"{"routing": {"canary_basis_points": -5}}"#.to_vec(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "routing.canary_basis_points",
        ),
        (
            "out of range",
            put(
                Some(JSON),
                br#"{"routing": {"canary_basis_points": 10001}}"#.to_vec(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "routing.canary_basis_points",
        ),
        (
            "unknown field",
            put(
                Some(JSON),
                br#"{"routing": {"canary_percent": 5}}"#.to_vec(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "canary_percent",
        ),
        (
            "control",
            put(
                Some(JSON),
                br#"{"control": {"cluster": "evil", "trusted_keys": []}}"#.to_vec(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "control",
        ),
        (
            "duplicate key",
            put(
                Some(JSON),
                br#"{"routing": {"canary_basis_points": 1, "canary_basis_points": 2}}"#.to_vec(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "duplicate",
        ),
        (
            "oversized",
            put(Some(JSON), oversized.into_bytes()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "65536",
        ),
        (
            "text/plain",
            put(Some("text/plain"), policy(5).into_bytes()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/json",
        ),
        (
            "no content type",
            put(None, policy(5).into_bytes()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/json",
        ),
        (
            "DELETE policy",
            http.delete(agent.url("/v1/policy")),
            StatusCode::METHOD_NOT_ALLOWED,
            "GET, PUT",
        ),
        (
            "POST policy",
            http.post(agent.url("/v1/policy"))
                .header("content-type", JSON)
                .body(policy(5)),
            StatusCode::METHOD_NOT_ALLOWED,
            "GET, PUT",
        ),
        (
            "negative after",
            http.get(agent.url("/v1/config?after=-1")),
            StatusCode::BAD_REQUEST,
            "after",
        ),
        (
            "text after",
            http.get(agent.url("/v1/config?after=abc")),
            StatusCode::BAD_REQUEST,
            "after",
        ),
        (
            "overflowing after",
            http.get(agent.url("/v1/config?after=184467440737095516160")),
            StatusCode::BAD_REQUEST,
            "after",
        ),
        (
            "after beyond epoch",
            http.get(agent.url("/v1/config?after=18446744073709551615")),
            StatusCode::CONFLICT,
            "above this agent's config epoch",
        ),
        (
            "negative timeout",
            http.get(agent.url("/v1/config?after=1&timeout_ms=-1")),
            StatusCode::BAD_REQUEST,
            "timeout_ms",
        ),
        (
            "text timeout",
            http.get(agent.url("/v1/config?after=1&timeout_ms=soon")),
            StatusCode::BAD_REQUEST,
            "timeout_ms",
        ),
        (
            "huge timeout",
            http.get(agent.url("/v1/config?after=1&timeout_ms=99999999999")),
            StatusCode::BAD_REQUEST,
            "maximum",
        ),
        (
            "unknown param",
            http.get(agent.url("/v1/config?after=1&epoch=2")),
            StatusCode::BAD_REQUEST,
            "unknown query parameter",
        ),
        (
            "repeated param",
            http.get(agent.url("/v1/config?after=0&after=1")),
            StatusCode::BAD_REQUEST,
            "twice",
        ),
        (
            "POST config",
            http.post(agent.url("/v1/config")),
            StatusCode::METHOD_NOT_ALLOWED,
            "GET",
        ),
        (
            "PUT keys",
            http.put(agent.url("/v1/config/keys"))
                .header("content-type", JSON)
                .body("[]"),
            StatusCode::METHOD_NOT_ALLOWED,
            "GET",
        ),
        (
            "GET rotate",
            http.get(agent.url("/v1/config/keys/rotate")),
            StatusCode::METHOD_NOT_ALLOWED,
            "POST",
        ),
        (
            "rotate with body",
            http.post(agent.url("/v1/config/keys/rotate")).body("{}"),
            StatusCode::BAD_REQUEST,
            "no body",
        ),
    ];
    for (what, request, status, needle) in cases {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), status, "{what}");
        let body: serde_json::Value = r.json().await.unwrap();
        let message = body["error"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains(needle), "{what}: {message}");
        let view = agent.policy().await;
        assert_eq!(view.epoch, 1, "{what} changed the epoch");
        assert_eq!(
            view.policy.unwrap(),
            serde_json::from_str::<serde_json::Value>(&policy(100)).unwrap(),
            "{what} changed the policy"
        );
    }
    assert_eq!(agent.keys().await, keys, "the key set changed");
    agent.stop().await;
}

/// Rotation as a filter sees it: trusting the old key it accepts the handover (signed by the
/// old version), adopts `next_keys`, and accepts the next epoch; that next epoch, signed by the
/// new key only, is refused by a filter that trusts only the old key; a filter behind the
/// handover is served it first; `keys rotate-config` and `keys list-config` do the same from
/// the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_hands_over_to_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(config(dir.path(), None)).await;
    let old = agent.keys().await;
    agent.put_ok(&policy(100)).await;
    let e1 = agent.poll(0, 0).await.bytes().await.unwrap();
    let mut trusted = old.clone();
    let mut current = envelope::open(&e1, &trusted, 0).unwrap().epoch;

    let r = agent
        .http
        .post(agent.url("/v1/config/keys/rotate"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let rotation: Rotation = r.json().await.unwrap();
    assert_eq!(rotation.epoch, 2);
    assert_eq!(rotation.previous_version, old[0].version);
    assert_eq!(rotation.key.version, old[0].version + 1);

    let handover = agent.poll(current, 1000).await.bytes().await.unwrap();
    let accepted = envelope::open(&handover, &trusted, current).unwrap();
    assert_eq!(
        accepted.signed_by, old[0],
        "the handover verifies with the old key"
    );
    assert_eq!(accepted.policy.canary_basis_points, 100, "same policy");
    trusted = accepted.next_keys.unwrap();
    assert_eq!(trusted, vec![rotation.key.clone()]);
    current = accepted.epoch;
    assert_eq!(agent.keys().await, trusted);

    agent.put_ok(&policy(200)).await;
    let e3 = agent.poll(current, 1000).await.bytes().await.unwrap();
    let accepted = envelope::open(&e3, &trusted, current).unwrap();
    assert_eq!(accepted.signed_by, rotation.key);
    assert!(accepted.next_keys.is_none());
    assert!(matches!(
        envelope::open(&e3, &old, current),
        Err(EnvelopeError::Untrusted(_))
    ));

    // A filter restarted with its old static keys is served the handover first.
    let r = agent.poll(0, 0).await;
    assert_eq!(header(&r, "x-knhk-epoch"), "2");
    let first = envelope::open(&r.bytes().await.unwrap(), &old, 0).unwrap();
    let r = agent.poll(first.epoch, 0).await;
    assert_eq!(header(&r, "x-knhk-epoch"), "3");
    envelope::open(
        &r.bytes().await.unwrap(),
        &first.next_keys.unwrap(),
        first.epoch,
    )
    .unwrap();

    // The command line: rotate through the running agent, then list offline.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_knhk-agent"))
        .args(["keys", "rotate-config", "--agent", &agent.addr.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Rotation = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((cli.epoch, cli.key.version), (4, rotation.key.version + 1));
    let h2 = agent.poll(3, 1000).await.bytes().await.unwrap();
    let accepted = envelope::open(&h2, &trusted, 3).unwrap();
    assert_eq!(accepted.next_keys.unwrap(), vec![cli.key.clone()]);
    agent.stop().await;

    let toml = dir.path().join("agent.toml");
    std::fs::write(
        &toml,
        format!(
            "data_dir = {:?}\n[kms]\nkey_dir = {:?}\n",
            dir.path().join("data"),
            dir.path().join("keys")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_knhk-agent"))
        .args(["keys", "--config"])
        .arg(&toml)
        .arg("list-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<PublicKeyVersion> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed, vec![cli.key]);
}

/// With OpenBao Transit as the provider (ECDSA checkpoints), configs are signed by a separate
/// Ed25519 Transit key, open with the keys the agent publishes, and rotation hands over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transit_signs_configs_with_an_ed25519_key() {
    let Some(bao) = support::Bao::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), None);
    let unique = support::rand_u64();
    cfg.kms.provider = Provider::Transit;
    cfg.kms.vault_address = Some(bao.addr.clone());
    cfg.kms.vault_token = Some(bao.token.clone());
    cfg.kms.vault_key_type = Alg::EcdsaP256;
    cfg.kms.key_id = format!("ckpt-{unique:x}");
    cfg.policy.key_id = format!("cfg-{unique:x}");
    let agent = Agent::start(cfg).await;
    let old = agent.keys().await;
    assert_eq!(
        (old[0].provider.as_str(), old[0].alg),
        ("transit", Alg::Ed25519)
    );
    agent.put_ok(&policy(100)).await;
    let e1 = agent.poll(0, 1000).await.bytes().await.unwrap();
    assert_eq!(envelope::open(&e1, &old, 0).unwrap().epoch, 1);
    let r = agent
        .http
        .post(agent.url("/v1/config/keys/rotate"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let h = agent.poll(1, 1000).await.bytes().await.unwrap();
    let next = envelope::open(&h, &old, 1).unwrap().next_keys.unwrap();
    assert_eq!(next[0].version, 2);
    agent.put_ok(&policy(200)).await;
    let e3 = agent.poll(2, 1000).await.bytes().await.unwrap();
    envelope::open(&e3, &next, 2).unwrap();
    assert!(envelope::open(&e3, &old, 2).is_err());
    agent.stop().await;
}

/// The `knhk-agent` binary's output of `bucket --json` for `key`, with the policy from `source`
/// (`--policy FILE` or `--agent ADDR`).
fn bucket_cli(key: &str, source: &[&str]) -> (i32, serde_json::Value, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_knhk-agent"))
        .args(["bucket", "--key", key, "--json"])
        .args(source)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
}

/// `knhk-agent bucket` answers, from a policy file and from the running agent's policy in force,
/// the route, buckets and flags the filter's own `decide()` gives a request with that key; a
/// refused policy file and an agent with no policy are one-line errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_command_agrees_with_the_filters_decision() {
    use knhk_core::host::FakeRequest;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.json");
    std::fs::write(
        &file,
        r#"{"routing": {"salt": "cli-salt", "canary_basis_points": 3000,
             "key_sources": [{"header": "x-user-id"}]},
            "flags": {"items": [{"name": "new-cart", "basis_points": 5000}]}}"#,
    )
    .unwrap();
    let policy = knhk_core::Policy::from_json(&std::fs::read(&file).unwrap()).unwrap();

    let empty = Agent::start(config(&dir.path().join("empty"), None)).await;
    let (code, _, stderr) = bucket_cli("u", &["--agent", &empty.addr.to_string()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no policy in force"), "{stderr}");
    empty.stop().await;

    let agent = Agent::start(config(dir.path(), Some(file.clone()))).await;
    let addr = agent.addr.to_string();
    let mut canary = 0;
    for i in 0..40 {
        let key = format!("user-{i}");
        let req = FakeRequest::get("/").with("x-user-id", &key);
        let d = knhk_core::decide(&policy, &Default::default(), &req);
        for source in [
            vec!["--policy", file.to_str().unwrap()],
            vec!["--agent", &addr],
        ] {
            let (code, json, stderr) = bucket_cli(&key, &source);
            assert_eq!(code, 0, "{source:?}: {stderr}");
            assert_eq!(json["route"], d.route.unwrap().as_str(), "{key} {source:?}");
            assert_eq!(json["routing_bucket"], d.buckets.unwrap().routing);
            assert_eq!(json["priority_bucket"], d.buckets.unwrap().priority);
            let flags = policy.flags.as_ref().unwrap().header_value(d.flags);
            let got: Vec<&str> = json["flags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap())
                .collect();
            assert_eq!(flags, (!got.is_empty()).then(|| got.join(",")), "{key}");
        }
        canary += usize::from(d.route == Some(knhk_core::Route::Canary));
    }
    assert!(
        (1..40).contains(&canary),
        "30 % weight put {canary} of 40 keys on canary"
    );
    agent.stop().await;

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"routing": {"canary_basis_points": 20000}}"#).unwrap();
    let (code, _, stderr) = bucket_cli("u", &["--policy", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("routing.canary_basis_points"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// The older sidecar's SLO settings (`KGC_SIDECAR_SLO_*`) override the class budgets and
/// strategy of every pushed epoch; a policy they would make invalid is refused naming them,
/// and nothing is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_slo_settings_override_every_pushed_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), None);
    cfg.policy
        .apply_env(|k| match k {
            "KGC_SIDECAR_SLO_W1_P99_MAX_MS" => Some("250".to_owned()),
            "KGC_SIDECAR_SLO_ADMISSION_STRATEGY" => Some("degrade".to_owned()),
            _ => None,
        })
        .unwrap();
    let agent = Agent::start(cfg).await;
    let epoch = agent.put_ok(&policy(1000)).await;
    let view = agent.policy().await;
    assert_eq!(view.epoch, epoch);
    let classes = &view.policy.as_ref().unwrap()["admission"]["classes"];
    assert_eq!(
        classes["W1"],
        serde_json::json!({"p99_max_ms": 250, "strategy": "degrade"})
    );
    assert_eq!(classes["R1"], serde_json::json!({"strategy": "degrade"}));
    // What the filters receive: the signed envelope of the long-poll carries the same.
    let r = agent.poll(0, 1000).await;
    assert_eq!(r.status(), StatusCode::OK);
    let keys = agent.keys().await;
    let opened = envelope::open(&r.bytes().await.unwrap(), &keys, 0).unwrap();
    assert_eq!(
        opened.policy.budget(knhk_core::class::Class::W1).p99_max_ns,
        250_000_000
    );
    // R1 at 300 ms would be looser than the overridden W1 (250 ms): refused, naming them.
    let r = agent
        .put(r#"{"admission": {"classes": {"R1": {"p99_max_ms": 300}}}}"#)
        .await;
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_client_error(), "{status} {text}");
    assert!(text.contains("KGC_SIDECAR_SLO_"), "{text}");
    assert_eq!(agent.policy().await.epoch, epoch, "nothing was published");
}
