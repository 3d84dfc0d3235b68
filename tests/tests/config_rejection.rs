//! An invalid plugin configuration as the *first* configuration: the filter refuses it at
//! `on_configure` with one clear log line and `knhk.config.rejected`, but does not refuse the
//! plugin — Envoy would then reject the whole extension config, which in Istio (ECDS) makes
//! every request on the listener a 500 whatever `failStrategy` says. With no valid
//! configuration ever applied, requests get the refused configuration's `fail_mode`: untouched
//! (open, the default) or 503 (when it says `closed`). An invalid *update* over a good one keeps
//! the good one in force: `reconfigure.rs`.

// An integration test binary: failing loudly on the first broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use knhk_core::Policy;
use knhk_e2e::client::Client;
use knhk_e2e::envoy::{rejection_lines, Envoy};
use knhk_e2e::rig::{base_config, Rig};
use knhk_e2e::upstream::Upstream;
use std::time::Duration;

/// The rig's spec with Envoy's log file flushed every 100 ms (the default is seconds), so the
/// test can wait on the log.
fn fast_log_spec(
    name: &str,
    config: &serde_json::Value,
    stable: &Upstream,
    canary: &Upstream,
) -> knhk_e2e::envoy::EnvoySpec {
    let mut spec = Rig::spec(name, config, stable, canary).unwrap();
    spec.flush_log_often();
    spec
}

/// Each kind of invalid config (out-of-range weight, unknown field, zero budget, C1 tighter than
/// R1, bad enum value) yields exactly one `invalid knhk config: field ...` line naming the field,
/// identical to what `knhk-core` reports; Envoy starts, counts the refusal, and requests reach
/// the default route (stable) untouched: no decision, no route header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_first_config_is_refused_and_traffic_fails_open() {
    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    // (label, field the message must name, path of the value to set, value)
    let mutations: [(&str, &str, &[&str], serde_json::Value); 5] = [
        (
            "weight",
            "routing.canary_basis_points",
            &["routing", "canary_basis_points"],
            20_000.into(),
        ),
        (
            "unknown",
            "routing",
            &["routing", "canary_percent"],
            10.into(),
        ),
        (
            "zero",
            "admission.classes.R1",
            &["admission", "classes", "R1", "p99_max_ms"],
            0.into(),
        ),
        (
            "c1-tight",
            "admission.classes.C1",
            &["admission", "classes", "C1", "p99_max_ms"],
            1.into(),
        ),
        ("fail-mode", "fail_mode", &["fail_mode"], "sideways".into()),
    ];
    for (name, field, path, value) in mutations {
        let mut config = base_config();
        *path.iter().fold(&mut config, |node, step| &mut node[*step]) = value;
        let expected = Policy::from_json(config.to_string().as_bytes())
            .expect_err("the mutated config must be invalid for the core too")
            .to_string();
        assert!(
            expected.contains(field),
            "core message {expected:?} should name {field}"
        );
        let envoy = Envoy::start(&fast_log_spec(name, &config, &stable, &canary))
            .await
            .unwrap();
        let client = Client::new(&envoy.base_url()).unwrap();
        // A canary-forcing request would go to canary under any valid config of this rig.
        let reply = client
            .get("/api", &[("x-user-id", "u"), ("x-knhk-canary", "1")])
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{name}: {}", reply.describe());
        assert_eq!(
            reply.upstream(),
            Some("stable"),
            "{name}: untouched, default route"
        );
        assert!(
            reply.decision().is_none(),
            "{name}: no decision without a config"
        );
        // Envoy writes its log file in batches: wait for the lines.
        envoy
            .wait_log_line(Duration::from_secs(20), |l| {
                l.contains("no valid configuration yet")
            })
            .await
            .unwrap();
        let log = envoy.log();
        let lines = rejection_lines(&log);
        // One line per plugin instance configured: two on the main thread (Envoy configures a
        // base VM and the main thread's own), one per worker (two).
        assert!(
            (1..=4).contains(&lines.len()),
            "{name}: expected one rejection line per VM, got {lines:#?}\n{log}"
        );
        assert!(
            lines.iter().all(|l| l.contains(&expected)),
            "{name}: log lines {lines:?} do not carry the core's message {expected:?}"
        );
        assert!(
            log.contains("no valid configuration yet: requests pass untouched (fail open)"),
            "{name}: {log}"
        );
        assert!(
            !log.contains("Unable to create Wasm plugin"),
            "{name}: {log}"
        );
        envoy
            .wait_metric("knhk.config.rejected", Duration::from_secs(10), |v| {
                v >= 1.0
            })
            .await
            .unwrap();
    }
}

/// A refused first configuration that says `fail_mode: closed` gets 503 for every request
/// (no decision could be made), not traffic served without the filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_first_config_that_says_closed_fails_closed() {
    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    let mut config = base_config();
    config["fail_mode"] = "closed".into();
    config["routing"]["canary_basis_points"] = 20_000.into();
    let envoy = Envoy::start(&fast_log_spec("closed", &config, &stable, &canary))
        .await
        .unwrap();
    let client = Client::new(&envoy.base_url()).unwrap();
    let reply = client.get("/api", &[("x-user-id", "u")]).await.unwrap();
    assert_eq!(reply.status, 503, "{}", reply.describe());
    assert_eq!(reply.upstream(), None, "nothing reached an upstream");
    envoy
        .wait_log_line(Duration::from_secs(20), |l| {
            l.contains("no valid configuration yet: requests pass refused with 503 (fail closed)")
        })
        .await
        .unwrap();
}

/// An empty plugin configuration means "all defaults" and is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_config_is_accepted() {
    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    let mut spec = Rig::spec("empty-config", &serde_json::json!({}), &stable, &canary).unwrap();
    spec.plugin_config = Some(String::new());
    let envoy = Envoy::start(&spec).await.unwrap();
    let client = knhk_e2e::client::Client::new(&envoy.base_url()).unwrap();
    let reply = client.get("/", &[("x-user-id", "u")]).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.upstream(), Some("stable"), "default weight is 0 bp");
    assert!(
        reply.decision().is_none(),
        "debug headers are off by default"
    );
}
