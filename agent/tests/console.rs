//! The operator console's routes with the agent in-process on port 0: the state document is
//! readable without the admin token and shows a live rollout (weights, timeline, history),
//! admission per class, capacity, checkpoints and keys, and carries no secret; the actions it
//! links to stay refused without the token; the page is sent with its security headers.

// An integration test crate: helpers may fail loudly like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use knhk_agent::config::AgentConfig;
use knhk_agent::console::api::{CONSOLE_CSP, VERIFIER_CSP};
use knhk_agent::console::assets;
use knhk_core::class::Route;
use knhk_core::receipt::{Receipt, ReceiptBuilder};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::in_process::InProcessAgent;

const SALT: &str = "console-secret-salt-7d1f";

fn receipt(route: Route, status: u16, epoch: u64, i: u64, shed: bool) -> Receipt {
    let mut b = ReceiptBuilder::new(i)
        .time_ns(knhk_agent::clock::now_ns())
        .route(Some(route))
        .priority(1)
        .status(status)
        .latency_us(2_000)
        .config_epoch(epoch)
        .worker_id(0);
    if shed {
        b = b.admission(knhk_core::decision::Admission::Shed);
    }
    b.build()
}

async fn state(anon: &reqwest::Client, agent: &InProcessAgent) -> (Value, String) {
    let r = anon
        .get(agent.url("/v1/console/state"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let text = r.text().await.unwrap();
    (serde_json::from_str(&text).unwrap(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_shows_a_live_rollout_without_the_token_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let token = "c0nsole-".repeat(6);
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let mut config = AgentConfig {
        origin: "knhk.test/console".into(),
        data_dir: dir.path().join("data"),
        ..AgentConfig::default()
    };
    config.kms.key_dir = Some(dir.path().join("keys"));
    config.api.admin_token_file = Some(token_file);
    let admin = knhk_e2e::agent::client_with_token(&token).unwrap();
    let anon = reqwest::Client::new();
    let agent = InProcessAgent::start(config, admin, "/v1/policy").await;

    let (before, _) = state(&anon, &agent).await;
    assert_eq!(before["rollout"], Value::Null);
    assert_eq!(before["origin"], "knhk.test/console");
    assert_eq!(before["actions_need_token"], true);
    assert_eq!(before["keys"]["provider"], "local");
    assert_eq!(before["verifier"], assets::VERIFIER.is_some());

    let r = agent
        .http
        .put(agent.url("/v1/policy"))
        .json(&json!({"routing": {"salt": SALT, "key_sources": [{"header": "x-user-id"}]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let spec = json!({"id": "console-walk", "stable": "v1", "candidate": "v2", "steps": [5, 25],
        "direct_to_production": true, "auto_promote": true,
        "analysis": {"interval_ms": 20, "window_ms": 2000, "pass_for_ms": 100, "min_samples": 20,
                     "failure_threshold": 2}});
    let r = agent
        .http
        .post(agent.url("/v1/rollouts"))
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );

    // Healthy traffic until the engine promotes 5 % → 25 %; the console follows it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    let mut posted = 0u64;
    let (seen, text) = loop {
        let (s, text) = state(&anon, &agent).await;
        if s["rollout"]["canary_percent"] == 25.0 {
            break (s, text);
        }
        assert!(Instant::now() < deadline, "no promotion: {s:#}");
        let epoch = s["rollout"]["since_epoch"].as_u64().unwrap();
        let batch: Vec<Receipt> = (0..20)
            .flat_map(|_| {
                i += 1;
                [
                    receipt(Route::Canary, 200, epoch, i, false),
                    receipt(Route::Stable, 200, epoch, i, i % 10 == 0),
                ]
            })
            .collect();
        posted += batch.len() as u64;
        assert_eq!(agent.post_receipts(&batch).await.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let rollout = &seen["rollout"];
    assert_eq!(rollout["spec"]["id"], "console-walk");
    assert_eq!(rollout["phase"], "running");
    let timeline = rollout["timeline"].as_array().unwrap();
    let actions: Vec<&str> = timeline
        .iter()
        .filter_map(|p| p["action"].as_str())
        .collect();
    assert_eq!(actions, ["start", "promote"], "{timeline:?}");
    let promote = timeline.iter().find(|p| p["action"] == "promote").unwrap();
    assert_eq!(promote["canary_percent"], 25.0);
    assert!(promote["candidate"]["samples"].as_u64().unwrap() >= 20);
    assert!(
        timeline.iter().any(|p| p["verdict"] == "pass"),
        "evaluations are plotted: {timeline:?}"
    );
    let times: Vec<u64> = timeline
        .iter()
        .map(|p| p["time_ns"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    assert_eq!(rollout["history"][1]["action"], "promote");

    // Admission: every posted receipt is counted once, per class, with the shed ones.
    let counted: u64 = seen["admission"]["points"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["classes"].as_array().unwrap().clone())
        .map(|c| c["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, posted);
    let shed: u64 = seen["admission"]["points"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["classes"].as_array().unwrap().clone())
        .map(|c| c["shed"].as_u64().unwrap())
        .sum();
    assert_eq!(shed, posted / 2 / 10);
    assert_eq!(seen["capacity"]["hot_keys"]["all"]["requests"], posted);

    // The log: the rollout events are sealed; checkpoints newest first, signed by key 1.
    let cps = seen["log"]["checkpoints"].as_array().unwrap();
    assert!(cps.len() >= 2);
    let sizes: Vec<u64> = cps
        .iter()
        .map(|c| c["tree_size"].as_u64().unwrap())
        .collect();
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
    assert!(seen["log"]["tree_size"].as_u64().unwrap() >= sizes[0]);
    assert_eq!(cps[0]["key_version"], 1);
    assert_eq!(seen["keys"]["key_version"], 1);
    let since = seen["keys"]["in_use_since_ns"].as_u64().unwrap();
    let next = seen["keys"]["next_rotation_ns"].as_u64().unwrap();
    assert_eq!(next - since, 24 * 3600 * 1_000_000_000, "the default 24 h");
    assert_eq!(seen["log"]["quorum"], Value::Null);

    // No secret, no key digest.
    assert!(!text.contains(SALT), "the salt leaked: {text}");
    assert!(!text.contains(&token), "the token leaked");
    assert!(!text.contains("key_digest"), "hot keys' digests leaked");

    // The console's actions are the admin routes: refused without the token, nothing changes.
    for action in ["pause", "abort", "promote"] {
        let r = anon
            .post(agent.url(&format!("/v1/rollouts/current/{action}")))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{action}");
    }
    let r = anon
        .post(agent.url("/v1/console/state"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "only reads are public"
    );
    let (after, _) = state(&anon, &agent).await;
    assert_eq!(after["rollout"]["phase"], "running");
    assert_eq!(after["rollout"]["canary_percent"], 25.0);
    let r = agent
        .http
        .post(agent.url("/v1/rollouts/current/pause"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (paused, _) = state(&anon, &agent).await;
    assert_eq!(paused["rollout"]["phase"], "paused");
    let last = paused["rollout"]["timeline"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["action"], "pause");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_sent_with_its_security_headers() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AgentConfig {
        origin: "knhk.test/console-page".into(),
        data_dir: dir.path().join("data"),
        ..AgentConfig::default()
    };
    config.kms.key_dir = Some(dir.path().join("keys"));
    let agent = InProcessAgent::start(config, reqwest::Client::new(), "/v1/policy").await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http.get(agent.url("/console")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.headers()["location"], "/console/");
    if knhk_e2e::paths::require_real() {
        assert!(
            assets::built(),
            "the agent was built without the console: cargo xtask build-console"
        );
    }
    let r = http.get(agent.url("/console/")).send().await.unwrap();
    let expected = if assets::built() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    assert_eq!(r.status(), expected);
    let headers = r.headers().clone();
    assert_eq!(headers["content-security-policy"], CONSOLE_CSP);
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let page = r.text().await.unwrap();
    if assets::built() {
        assert!(page.contains("app.js"), "{page}");
        for (path, kind) in [
            ("/console/app.js", "text/javascript"),
            ("/console/app.css", "text/css"),
        ] {
            let r = http.get(agent.url(path)).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert!(r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind));
        }
    } else {
        assert!(page.contains("cargo xtask build-console"), "{page}");
    }
    let r = http
        .get(agent.url("/console/verify.html"))
        .send()
        .await
        .unwrap();
    match assets::VERIFIER {
        Some(_) => {
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()["content-security-policy"], VERIFIER_CSP);
        }
        None => assert_eq!(r.status(), StatusCode::NOT_FOUND),
    }
    // Nothing outside the console's files is reachable through its prefix.
    for path in ["/console/..%2fv1%2fpolicy", "/console/app.js.map"] {
        let r = http.get(agent.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    agent.stop().await;
}
