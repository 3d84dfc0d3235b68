//! The CLI's calls to a running agent that has an admin token: `holds`, `rollout` and
//! `keys rotate-config` (and `holds list`, an admin read) succeed with the token (from `--token-file` or
//! `KNHK_ADMIN_TOKEN_FILE`) and are refused with 401 without it, changing nothing.

// An integration test crate: helpers may fail loudly like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::process::Output;

use knhk_agent::config::AgentConfig;
use support::in_process::InProcessAgent;

const TOKEN: &str = "0123456789abcdef0123456789abcdef-cli-admin";

/// `knhk-agent ARGS` with `env`, off the async runtime.
async fn cli(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_knhk-agent"))
            .args(&args)
            .env_remove("KNHK_ADMIN_TOKEN_FILE")
            .envs(env)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn holds(agent: &InProcessAgent) -> serde_json::Value {
    agent.get_json("/v1/holds").await
}

async fn start(dir: &Path) -> (InProcessAgent, String) {
    let token = dir.join("admin-token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let mut config = AgentConfig {
        origin: "knhk.test/cli-admin".into(),
        data_dir: dir.join("data"),
        ..AgentConfig::default()
    };
    config.api.admin_token_file = Some(token.clone());
    // The test's own reads (GET /v1/holds is an admin read) carry the token.
    let admin = knhk_e2e::agent::client_with_token(TOKEN).unwrap();
    let agent = InProcessAgent::start(config, admin, "/v1/checkpoints/latest").await;
    (agent, token.to_str().unwrap().to_owned())
}

/// Holds: without the token, place is refused with 401 and no hold exists; with it (flag or
/// environment), place, list and release work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_need_and_take_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, token) = start(dir.path()).await;
    let addr = agent.addr.to_string();
    let place = |extra: &[&str]| {
        let mut a = args(&["holds", "--agent", &addr]);
        a.extend(args(extra));
        a.extend(args(&[
            "place", "--id", "case-1", "--reason", "legal", "--leaves", "0..1",
        ]));
        a
    };
    let refused = cli(place(&[]), vec![]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("401"), "{}", stderr(&refused));
    assert!(!stderr(&refused).contains(TOKEN));
    let before = holds(&agent).await;
    assert!(!before.to_string().contains("case-1"), "{before}");

    let placed = cli(place(&["--token-file", &token]), vec![]).await;
    assert!(placed.status.success(), "{}", stderr(&placed));
    let unlisted = cli(args(&["holds", "--agent", &addr, "list"]), vec![]).await;
    assert!(
        stderr(&unlisted).contains("401"),
        "holds are an admin read: {}",
        stderr(&unlisted)
    );
    let listed = cli(
        args(&["holds", "--agent", &addr, "--token-file", &token, "list"]),
        vec![],
    )
    .await;
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("case-1"));
    let released = cli(
        args(&[
            "holds", "--agent", &addr, "release", "--id", "case-1", "--reason", "closed",
        ]),
        vec![("KNHK_ADMIN_TOKEN_FILE", token.clone())],
    )
    .await;
    assert!(released.status.success(), "{}", stderr(&released));
    assert!(holds(&agent).await.to_string().contains("released"));
    agent.stop().await;
}

/// `rollout pause` and `keys rotate-config` are refused with 401 without the token, and get
/// past authorisation with it (the agent then answers on the merits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_and_keys_take_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, token) = start(dir.path()).await;
    let addr = agent.addr.to_string();
    for command in [
        args(&["rollout", "--agent", &addr, "pause"]),
        args(&["keys", "rotate-config", "--agent", &addr]),
    ] {
        let refused = cli(command.clone(), vec![]).await;
        assert!(!refused.status.success(), "{command:?}");
        assert!(
            stderr(&refused).contains("401"),
            "{command:?}: {}",
            stderr(&refused)
        );
        let mut with = command.clone();
        with.extend(args(&["--token-file", &token]));
        let allowed = cli(with, vec![]).await;
        assert!(
            !stderr(&allowed).contains("401"),
            "{command:?}: {}",
            stderr(&allowed)
        );
        assert!(!stderr(&allowed).contains(TOKEN));
    }
    agent.stop().await;
}

/// `knhk-agent capacity`: refused with 401 without the admin token; with it, the table shows
/// each class and route the receipts carried, the hot keys, and "insufficient data" where the
/// windows cannot carry a model (one steady window here); `--json` is the report itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_needs_the_admin_token_and_reports_the_receipts() {
    use knhk_core::class::{Class, Route};
    use knhk_core::receipt::ReceiptBuilder;
    let dir = tempfile::tempdir().unwrap();
    let (agent, token) = start(dir.path()).await;
    let addr = agent.addr.to_string();
    // 300 receipts of W1 on canary 30 s ago, one hot key among them.
    let t = knhk_agent::clock::now_ns() - 30_000_000_000;
    let receipts: Vec<_> = (0..300u64)
        .map(|i| {
            let mut key = [0u8; 16];
            key[0] = if i % 2 == 0 { 7 } else { (i % 200) as u8 + 8 };
            ReceiptBuilder::new(i)
                .time_ns(t + i * 1_000_000)
                .class(Class::W1)
                .route(Some(Route::Canary))
                .key_digest(key)
                .latency_us(20_000)
                .build()
        })
        .collect();
    let posted = agent.post_receipts(&receipts).await;
    assert!(posted.status().is_success(), "{}", posted.status());

    let refused = cli(args(&["capacity", "--agent", &addr]), vec![]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("401"), "{}", stderr(&refused));

    let table = cli(
        args(&["capacity", "--agent", &addr, "--token-file", &token]),
        vec![],
    )
    .await;
    assert!(table.status.success(), "{}", stderr(&table));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("W1  canary"), "{text}");
    assert!(text.contains("W1 on canary: insufficient data"), "{text}");
    assert!(
        text.contains("the canary sample is skewed"),
        "one key carries half the canary traffic: {text}"
    );

    let json = cli(
        args(&[
            "capacity",
            "--agent",
            &addr,
            "--token-file",
            &token,
            "--json",
        ]),
        vec![],
    )
    .await;
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["series"][0]["class"], "W1");
    assert_eq!(report["series"][0]["model"]["status"], "insufficient_data");
    assert_eq!(report["hot_keys"]["canary"]["requests"], 300);
    let top = &report["hot_keys"]["canary"]["top"][0];
    assert_eq!(top["count"], 150, "{top}");
    assert_eq!(
        top["routing_bucket"], 298,
        "the bucket of the key's latest receipt: {top}"
    );
    // The hot keys' share is a gauge on /metrics too (no model: no headroom gauge).
    let metrics = agent
        .http
        .get(agent.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("knhk_agent_capacity_hot_keys_share_ratio{")
                && l.contains("knhk_capacity_stream=\"canary\"")
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    let share: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(share >= 0.5, "{line}");
    assert!(
        !metrics.contains("knhk_agent_capacity_headroom"),
        "{metrics}"
    );
    agent.stop().await;
}
