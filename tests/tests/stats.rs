//! The filter's stats reach Envoy's admin `/stats/prometheus`, with exact counts.
//!
//! Envoy 1.40 keeps wasm metrics in the `wasmcustom` namespace (`wasmcustom.knhk.route.canary`
//! on `/stats`) and exports them to Prometheus with that namespace and the `envoy_` prefix
//! stripped (`knhk_route_canary`). Counters live in VM memory and are flushed on the filter's
//! timer, so the test polls.

// An integration test binary: failing loudly on the first broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use knhk_e2e::client::concurrent;
use knhk_e2e::paths;
use knhk_e2e::rig::{base_config, oracle_route, Rig};
use std::time::Duration;

const SALT: &str = "s1";

/// After a known mix of traffic (routed, excluded, R1), the route and admission counters equal
/// what was sent, per route as the core decides, and the gauges show the config version and no
/// shedding; the names appear on `/stats/prometheus` as `knhk_*`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_visible_on_prometheus_endpoint() {
    let rig = Rig::start("stats", &base_config()).await.unwrap();
    let keys: Vec<String> = (0..500).map(|i| format!("stats-{i}")).collect();
    let canary = keys
        .iter()
        .filter(|k| oracle_route(SALT, k, 1000) == "canary")
        .count() as f64;
    let stable = keys.len() as f64 - canary;
    concurrent(keys.clone(), 16, |key| {
        let client = rig.client.clone();
        async move { client.get("/api/items", &[("x-user-id", &key)]).await }
    })
    .await
    .unwrap();
    for i in 0..20 {
        rig.client
            .get("/healthz", &[("x-user-id", &format!("h{i}"))])
            .await
            .unwrap();
    }
    let mut hot_canary = 0.0;
    for i in 0..30 {
        let key = format!("hot-{i}");
        if oracle_route(SALT, &key, 1000) == "canary" {
            hot_canary += 1.0;
        }
        rig.client
            .get("/hot/buy", &[("x-user-id", &key)])
            .await
            .unwrap();
    }

    let wait = Duration::from_secs(10);
    let envoy = &rig.envoy;
    envoy
        .wait_metric("knhk.route.canary", wait, |v| v == canary + hot_canary)
        .await
        .unwrap();
    envoy
        .wait_metric("knhk.route.stable", wait, |v| {
            v == stable + 30.0 - hot_canary
        })
        .await
        .unwrap();
    envoy
        .wait_metric("knhk.route.excluded", wait, |v| v == 20.0)
        .await
        .unwrap();
    envoy
        .wait_metric("knhk.admission.w1.admitted", wait, |v| v == 500.0)
        .await
        .unwrap();
    envoy
        .wait_metric("knhk.admission.r1.admitted", wait, |v| v == 30.0)
        .await
        .unwrap();
    envoy
        .wait_metric("knhk.config.version", wait, |v| v == 3.0)
        .await
        .unwrap();

    // Envoy keeps each host's custom stats in its own namespace: `wasmcustom.` (stripped in
    // Prometheus output) for the wasm build, `dynamicmodulescustom.` (kept, after `envoy_`)
    // for the dynamic module. The names under it are the same.
    let (namespace, prometheus_prefix) = if paths::native_host() {
        ("dynamicmodulescustom", "envoy_dynamicmodulescustom_")
    } else {
        ("wasmcustom", "")
    };
    let text = envoy.stats_prometheus().await.unwrap();
    for name in [
        "knhk_route_stable",
        "knhk_route_canary",
        "knhk_route_excluded",
        "knhk_admission_r1_admitted",
        "knhk_admission_w1_shed",
        "knhk_admission_c1_degraded",
        "knhk_admission_r1_shadow_shed",
        "knhk_admission_w1_shadow_degraded",
        "knhk_admission_r1_shed_level_bp",
        "knhk_decision_errors",
        "knhk_config_rejected",
        "knhk_config_version",
    ] {
        let name = format!("{prometheus_prefix}{name}");
        assert!(
            text.lines()
                .any(|l| l.starts_with(&name) && l[name.len()..].starts_with(['{', ' '])),
            "{name} missing from /stats/prometheus"
        );
    }
    for zero in [
        "knhk.admission.r1.shed",
        "knhk.admission.w1.shed",
        "knhk.admission.c1.admitted",
        "knhk.decision.errors",
        "knhk.config.rejected",
        "knhk.admission.r1.shed_level_bp",
    ] {
        assert_eq!(envoy.metric(zero).await.unwrap(), Some(0.0), "{zero}");
    }
    let (_, plain) = envoy
        .admin_get("/stats?filter=knhk.route.canary")
        .await
        .unwrap();
    assert!(
        plain.contains(&format!("{namespace}.knhk.route.canary")),
        "/stats naming changed: {plain}"
    );
}
