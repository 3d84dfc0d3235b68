//! Promotion gates with the agent in-process on port 0, fed through its real receipt endpoint:
//! promotion on analysis, automatic rollback with a signed, verifiable cause, inconclusive
//! holds, refused transitions, manual controls and a restart that resumes the same gate.

// An integration test crate: helpers may fail loudly like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::in_process::InProcessAgent;

use std::path::Path;
use std::time::{Duration, Instant};

use knhk_agent::config::AgentConfig;
use knhk_agent::verify::verify_json;
use knhk_core::class::Route;
use knhk_core::receipt::{encode_batch, Receipt, ReceiptBuilder};
use reqwest::StatusCode;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(20);

fn config(dir: &Path) -> AgentConfig {
    let mut config = AgentConfig {
        origin: "knhk.test/gates".into(),
        data_dir: dir.join("data"),
        ..AgentConfig::default()
    };
    config.kms.key_dir = Some(dir.join("keys"));
    config
}

async fn start(dir: &Path) -> InProcessAgent {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    InProcessAgent::start(config(dir), http, "/v1/policy").await
}

async fn call(
    agent: &InProcessAgent,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = agent.http.request(method.parse().unwrap(), agent.url(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn put_base_policy(agent: &InProcessAgent) {
    let (s, body) = call(
        agent,
        "PUT",
        "/v1/policy",
        Some(json!({"routing": {"salt": "gates", "key_sources": [{"header": "x-user-id"}]}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

async fn status(agent: &InProcessAgent) -> Value {
    let (s, body) = call(agent, "GET", "/v1/rollouts/current", None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body
}

async fn policy(agent: &InProcessAgent) -> Value {
    call(agent, "GET", "/v1/policy", None).await.1
}

fn receipt(route: Route, status: u16, latency_us: u32, epoch: u64, i: u64) -> Receipt {
    ReceiptBuilder::new(i)
        .time_ns(1_700_000_000_000_000_000 + i)
        .route(Some(route))
        .priority(1)
        .status(status)
        .latency_us(latency_us)
        .config_epoch(epoch)
        .worker_id(0)
        .build()
}

/// An agent with the base policy and rollout `id` (`extra` merged into the spec) started.
async fn running(id: &str, extra: Value) -> (tempfile::TempDir, InProcessAgent) {
    let dir = tempfile::tempdir().unwrap();
    let agent = start(dir.path()).await;
    put_base_policy(&agent).await;
    let (s, body) = call(&agent, "POST", "/v1/rollouts", Some(rollout(id, extra))).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    (dir, agent)
}

/// Post `n` candidate and `n` stable receipts under the rollout's current epoch.
async fn feed(agent: &InProcessAgent, n: u64, canary_status: u16, canary_latency_us: u32) {
    let epoch = status(agent).await["since_epoch"].as_u64().unwrap();
    let mut batch = Vec::new();
    for i in 0..n {
        batch.push(receipt(
            Route::Canary,
            canary_status,
            canary_latency_us,
            epoch,
            i,
        ));
        batch.push(receipt(Route::Stable, 200, 2_000, epoch, i));
    }
    let r = agent.post_receipts(&batch).await;
    assert_eq!(r.status(), StatusCode::OK);
}

/// Poll the status until `done` holds, feeding traffic with `feed_with` between polls.
async fn until(
    agent: &InProcessAgent,
    what: &str,
    traffic: Option<(u16, u32)>,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let s = status(agent).await;
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status: {s:#}"
        );
        if let Some((code, latency)) = traffic {
            feed(agent, 20, code, latency).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rollout(id: &str, extra: Value) -> Value {
    let mut spec = json!({
        "id": id,
        "stable": "v1",
        "candidate": "v2",
        "steps": [5, 25],
        "direct_to_production": true,
        "analysis": {"interval_ms": 20, "window_ms": 2000, "pass_for_ms": 100, "min_samples": 20,
                     "failure_threshold": 2, "max_p99_ms": 50.0}
    });
    if let (Some(obj), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            obj.insert(k.clone(), v.clone());
        }
    }
    spec
}

/// Healthy traffic walks canary 5 % → 25 % → production on analysis alone; production makes
/// the candidate the stable route value with the weight reset to 0; every step is in history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_candidate_is_promoted_to_production() {
    let (_dir, agent) = running("walk", json!({})).await;
    assert_eq!(status(&agent).await["canary_percent"], 5.0);
    let p = policy(&agent).await;
    assert_eq!(p["policy"]["routing"]["canary_basis_points"], 500);
    assert_eq!(
        p["policy"]["routing"]["route_values"],
        json!({"stable": "v1", "canary": "v2"})
    );
    until(&agent, "25 %", Some((200, 2_000)), |s| {
        s["canary_percent"] == 25.0
    })
    .await;
    let done = until(&agent, "production", Some((200, 2_000)), |s| {
        s["phase"] == "completed"
    })
    .await;
    assert_eq!(done["gate"], "production");
    assert_eq!(done["serving_stable"], "v2");
    let p = policy(&agent).await;
    assert_eq!(p["policy"]["routing"]["canary_basis_points"], 0);
    assert_eq!(p["policy"]["routing"]["route_values"]["stable"], "v2");
    let actions: Vec<&str> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["start", "promote", "promote"]);
    assert!(done["history"][1]["cause"]
        .as_str()
        .unwrap()
        .contains("analysis passed"));
    agent.stop().await;
}

/// A candidate answering 5xx is rolled back: weight 0, the cause names the success rate, the
/// event leaf cites the receipt window, and `verify` of the export and of the event's proof
/// bundle shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_candidate_is_rolled_back_with_signed_cause() {
    let (_dir, agent) = running("bad", json!({})).await;
    let rolled = until(&agent, "rollback", Some((503, 2_000)), |s| {
        s["phase"] == "rolled_back"
    })
    .await;
    assert_eq!(rolled["canary_percent"], 0.0);
    assert!(
        rolled["reason"].as_str().unwrap().contains("success rate"),
        "{rolled:#}"
    );
    let p = policy(&agent).await;
    assert_eq!(p["policy"]["routing"]["canary_basis_points"], 0);
    let event = rolled["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(event["action"], "rollback");
    let leaf = event["leaf_index"].as_u64().unwrap();
    let (s, entry) = call(
        &agent,
        "GET",
        &format!("/v1/receipts?from={leaf}&limit=1"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let logged = &entry["entries"][0]["entry"]["event"];
    assert_eq!(logged["action"], "rollback");
    assert!(logged["window"]["candidate"]["errors"].as_u64().unwrap() > 0);
    assert!(logged["window"]["first_index"].as_u64().unwrap() < leaf);
    let (s, bundle) = call(&agent, "GET", &format!("/v1/receipts/{leaf}/proof"), None).await;
    assert_eq!(s, StatusCode::OK, "{bundle}");
    let report = verify_json(bundle.to_string().as_bytes(), None).unwrap();
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.contains("rollout event") && l.contains("success rate")),
        "{:?}",
        report.lines
    );
    let (_, export) = call(&agent, "GET", "/v1/log/export", None).await;
    let report = verify_json(export.to_string().as_bytes(), None).unwrap();
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.contains("\"action\":\"rollback\"")),
        "{:?}",
        report.lines
    );
    agent.stop().await;
}

/// A candidate answering slowly breaks its p99 limit and is rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_candidate_is_rolled_back() {
    let (_dir, agent) = running("slow", json!({})).await;
    let rolled = until(&agent, "rollback", Some((200, 400_000)), |s| {
        s["phase"] == "rolled_back"
    })
    .await;
    assert!(
        rolled["reason"].as_str().unwrap().contains("p99"),
        "{rolled:#}"
    );
    agent.stop().await;
}

/// Too little traffic is inconclusive: many evaluations pass without a promotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_traffic_holds_the_gate() {
    let (_dir, agent) = running("quiet", json!({})).await;
    feed(&agent, 5, 200, 2_000).await;
    let s = until(&agent, "30 evaluations", None, |s| {
        s["evaluations"].as_u64().unwrap() >= 30
    })
    .await;
    assert_eq!(s["verdict"]["verdict"], "inconclusive", "{s:#}");
    assert_eq!(
        (s["gate"].as_str(), s["step"].as_u64()),
        (Some("canary"), Some(0))
    );
    assert_eq!(s["history"].as_array().unwrap().len(), 1);
    agent.stop().await;
}

/// Refused transitions and bad documents answer 4xx naming the reason and change nothing;
/// pause stops promotion, resume restarts it, abort returns all traffic to stable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_are_checked_and_manual_controls_work() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start(dir.path()).await;
    let (s, body) = call(
        &agent,
        "POST",
        "/v1/rollouts",
        Some(rollout("early", json!({}))),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "no policy yet: {body}");
    put_base_policy(&agent).await;
    let (s, _) = call(&agent, "GET", "/v1/rollouts/current", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    for (spec, field) in [
        (rollout("x", json!({"steps": [25, 5]})), "steps[1]"),
        (rollout("x", json!({"steps": [0]})), "steps[0]"),
        (rollout("x", json!({"steps": [101]})), "steps[0]"),
        (rollout("x", json!({"candidate": "v1"})), "candidate"),
        (rollout("x", json!({"id": "a b"})), "id"),
        (rollout("x", json!({"colour": 1})), "colour"),
        (
            rollout("x", json!({"analysis": {"min_success_rate": 1.5}})),
            "min_success_rate",
        ),
        (
            rollout("x", json!({"analysis": {"min_health": 0}})),
            "min_health",
        ),
        (
            rollout("x", json!({"direct_to_production": false})),
            "staging",
        ),
    ] {
        let (s, body) = call(&agent, "POST", "/v1/rollouts", Some(spec)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(field),
            "{field}: {body}"
        );
    }
    let huge = "x".repeat(70 * 1024);
    let r = agent
        .http
        .post(agent.url("/v1/rollouts"))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = agent
        .http
        .post(agent.url("/v1/rollouts"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = call(&agent, "GET", "/v1/rollouts/current", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "refused documents start nothing");

    let manual = rollout("manual", json!({"auto_promote": false}));
    assert_eq!(
        call(&agent, "POST", "/v1/rollouts", Some(manual.clone()))
            .await
            .0,
        StatusCode::CREATED
    );
    let (s, body) = call(
        &agent,
        "POST",
        "/v1/rollouts",
        Some(rollout("second", json!({}))),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    let (s, body) = call(
        &agent,
        "POST",
        "/v1/rollouts/current/promote",
        Some(json!({"to": "staging"})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(
        body["error"].as_str().unwrap().contains("no staging"),
        "{body}"
    );
    let (s, body) = call(
        &agent,
        "POST",
        "/v1/rollouts/current/promote",
        Some(json!({"to": "qa"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let (s, body) = call(
        &agent,
        "POST",
        "/v1/rollouts/current/promote",
        Some(json!({"to": "canary"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["canary_percent"], 25.0);
    let (s, body) = call(
        &agent,
        "POST",
        "/v1/rollouts/current/promote",
        Some(json!({"to": "canary"})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "last step: {body}");
    assert_eq!(
        call(&agent, "POST", "/v1/rollouts/current/pause", None)
            .await
            .0,
        StatusCode::OK
    );
    let (s, body) = call(&agent, "POST", "/v1/rollouts/current/pause", None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        call(&agent, "POST", "/v1/rollouts/current/resume", None)
            .await
            .0,
        StatusCode::OK
    );
    let (s, body) = call(
        &agent,
        "POST",
        "/v1/rollouts/current/abort",
        Some(json!({"reason": "bad feeling"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["phase"], "aborted");
    assert_eq!(body["reason"], "bad feeling");
    assert_eq!(
        policy(&agent).await["policy"]["routing"]["canary_basis_points"],
        0
    );
    for action in ["pause", "resume", "promote", "abort"] {
        let (s, body) = call(
            &agent,
            "POST",
            &format!("/v1/rollouts/current/{action}"),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::CONFLICT, "{action} after abort: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("aborted"),
            "{body}"
        );
    }
    let (s, body) = call(&agent, "POST", "/v1/rollouts", Some(manual)).await;
    assert_eq!(s, StatusCode::CONFLICT, "reused id: {body}");
    let actions: Vec<String> = status(&agent).await["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, ["start", "promote", "pause", "resume", "abort"]);
    agent.stop().await;
}

/// An operator's policy change during a rollout keeps the rollout's weight; a restart resumes
/// the same gate, step and weights from `gates.db` without publishing anything new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_survives_policy_changes_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start(dir.path()).await;
    put_base_policy(&agent).await;
    call(
        &agent,
        "POST",
        "/v1/rollouts",
        Some(rollout("durable", json!({"auto_promote": false}))),
    )
    .await;
    call(&agent, "POST", "/v1/rollouts/current/promote", None).await;
    let (s, body) = call(
        &agent,
        "PUT",
        "/v1/policy",
        Some(json!({"routing": {"salt": "gates", "canary_basis_points": 9000, "key_sources": [{"header": "x-user-id"}]}, "debug_headers": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let before = policy(&agent).await;
    assert_eq!(
        before["policy"]["routing"]["canary_basis_points"], 2500,
        "the rollout owns the weight"
    );
    assert_eq!(
        before["policy"]["debug_headers"], true,
        "the operator's change applies"
    );
    agent.stop().await;
    let agent = start(dir.path()).await;
    let s = status(&agent).await;
    assert_eq!(
        (
            s["gate"].as_str(),
            s["step"].as_u64(),
            s["canary_percent"].as_f64()
        ),
        (Some("canary"), Some(1), Some(25.0))
    );
    let after = policy(&agent).await;
    assert_eq!(after["epoch"], before["epoch"], "nothing republished");
    assert_eq!(after["policy"], before["policy"]);
    agent.stop().await;
}

fn cli(agent: &InProcessAgent, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_knhk-agent"))
        .args(["rollout", "--agent", &agent.addr.to_string()])
        .args(args)
        .output()
        .unwrap()
}

/// `knhk-agent rollout start|status|promote|abort` drive a running agent; refusals exit 1 with
/// the agent's reason; `status` shows the gate, weights, figures and history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_command_drives_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start(dir.path()).await;
    put_base_policy(&agent).await;
    let file = dir.path().join("rollout.json");
    std::fs::write(
        &file,
        rollout("cli", json!({"auto_promote": false})).to_string(),
    )
    .unwrap();
    let out = cli(&agent, &["start", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("rollout cli: v1 -> v2  [running in canary]"),
        "{text}"
    );
    feed(&agent, 30, 200, 2_000).await;
    until(&agent, "an evaluation with figures", None, |s| {
        !s["figures"].is_null()
    })
    .await;
    let out = cli(&agent, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("canary weight 5%"), "{text}");
    assert!(text.contains("candidate samples"), "{text}");
    assert!(text.contains("start"), "{text}");
    let out = cli(&agent, &["promote", "--to", "staging"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no staging audience"));
    let out = cli(&agent, &["promote"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("canary weight 25%"));
    let out = cli(&agent, &["abort", "--reason", "operator drill"]);
    assert!(out.status.success());
    let out = cli(&agent, &["status", "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["phase"], "aborted");
    assert_eq!(status["reason"], "operator drill");
    let out = cli(&agent, &["disable-flag", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    agent.stop().await;
}

/// A rollout's flags are on for their gate's share of keys, an operator's own flags are kept,
/// disabling one removes it from the pushed policy and is recorded, and a rollback turns the
/// rest off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_flags_follow_the_gate_and_are_disabled_on_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start(dir.path()).await;
    let (s, body) = call(
        &agent,
        "PUT",
        "/v1/policy",
        Some(
            json!({"routing": {"salt": "gates", "key_sources": [{"header": "x-user-id"}]},
                    "flags": {"items": [{"name": "ops-banner", "basis_points": 10000}]}}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let spec = rollout(
        "flags",
        json!({"flags": [{"name": "new-checkout", "canary": 10, "production": 100},
                         {"name": "dark-mode", "canary": 50}]}),
    );
    let (s, body) = call(&agent, "POST", "/v1/rollouts", Some(spec)).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let items = policy(&agent).await["policy"]["flags"]["items"].clone();
    assert_eq!(
        items,
        json!([{"name": "ops-banner", "basis_points": 10000},
               {"name": "new-checkout", "basis_points": 1000},
               {"name": "dark-mode", "basis_points": 5000}])
    );
    let (s, body) = call(
        &agent,
        "POST",
        "/v1/rollouts/current/flags/dark-mode/disable",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let items = policy(&agent).await["policy"]["flags"]["items"].clone();
    assert_eq!(items.as_array().unwrap().len(), 2, "{items}");
    assert_eq!(
        body["history"].as_array().unwrap().last().unwrap()["action"],
        "flag_disabled"
    );
    let (s, _) = call(
        &agent,
        "POST",
        "/v1/rollouts/current/flags/dark-mode/disable",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = call(
        &agent,
        "POST",
        "/v1/rollouts/current/flags/ops-banner/disable",
        None,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "operator flags are not the rollout's to disable"
    );
    until(&agent, "rollback", Some((503, 2_000)), |s| {
        s["phase"] == "rolled_back"
    })
    .await;
    let items = policy(&agent).await["policy"]["flags"]["items"].clone();
    assert_eq!(
        items,
        json!([{"name": "ops-banner", "basis_points": 10000}])
    );
    let bad = rollout("bad-flag", json!({"flags": [{"name": "x", "canary": 120}]}));
    let (s, body) = call(&agent, "POST", "/v1/rollouts", Some(bad)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("flags[0].canary"),
        "{body}"
    );
    let bad = rollout(
        "bad-audience",
        json!({"staging": {"bucket_ranges": [{"from": 5, "to": 2}]}, "start": "staging"}),
    );
    let (s, body) = call(&agent, "POST", "/v1/rollouts", Some(bad)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("routing.audience.bucket_ranges[0]"),
        "{body}"
    );
    agent.stop().await;
}

/// With `[api] admin_token_file`, state-changing requests and operational reads (the policy
/// with its salt, rollout state) need the bearer token (401 and nothing changes without it or
/// with a wrong one), receipt ingest and checkpoints stay open (no filter tokens configured),
/// the CLI passes the token from `--token-file`, and an unacceptable token file stops the
/// start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_guards_state_changes() {
    let dir = tempfile::tempdir().unwrap();
    let token = "t0ken-".repeat(8);
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let mut cfg = config(dir.path());
    cfg.api.admin_token_file = Some(token_file.clone());
    let admin = knhk_e2e::agent::client_with_token(&token).unwrap();
    let anon = reqwest::Client::new();
    let agent = InProcessAgent::start(cfg.clone(), admin, "/v1/policy").await;
    let body = json!({"routing": {"salt": "gates", "key_sources": [{"header": "x-user-id"}]}});
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic abc"),
        Some("Bearer "),
    ] {
        let mut req = anon.put(agent.url("/v1/policy")).json(&body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
    }
    assert_eq!(policy(&agent).await["epoch"], 0, "nothing was published");
    let r = agent
        .http
        .put(agent.url("/v1/policy"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for path in [
        "/v1/policy",
        "/v1/rollouts/current",
        "/v1/holds",
        "/v1/log/export",
    ] {
        let r = anon.get(agent.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "GET {path}");
        let text = r.text().await.unwrap();
        assert!(
            !text.contains("gates"),
            "GET {path} leaked the salt: {text}"
        );
    }
    let r = anon
        .get(agent.url("/v1/checkpoints/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "checkpoints stay public");
    let r = anon
        .post(agent.url("/v1/receipts"))
        .header("content-type", "application/x-knhk-receipts")
        .body(encode_batch(&[receipt(Route::Stable, 200, 1, 1, 0)]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "without [api] filter_token_file receipt ingest needs no token (loopback only)"
    );
    let file = dir.path().join("rollout.json");
    std::fs::write(&file, rollout("guarded", json!({})).to_string()).unwrap();
    let out = cli(&agent, &["start", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_knhk-agent"))
        .args([
            "rollout",
            "--agent",
            &agent.addr.to_string(),
            "--token-file",
        ])
        .arg(&token_file)
        .args(["start", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        call(&agent, "GET", "/v1/rollouts/current", None).await.0,
        StatusCode::OK
    );
    agent.stop().await;
    std::fs::write(&token_file, "too-short").unwrap();
    let err = cfg.validate().unwrap_err();
    assert!(err.to_string().contains("admin_token_file"), "{err}");
}
