//! The filter as `istio/wasmplugin.yaml` configures it, in Envoy shaped as Istio shapes a
//! client sidecar (`envoy/istio-client.yaml`: the outbound listener, the VirtualService's
//! routes to `outbound|8080|SUBSET|checkout…` clusters, the agent's Service cluster
//! `outbound|9901||knhk-agent.knhk.svc.cluster.local`), with the real agent behind that
//! cluster: the manifest's split, config push through the agent's cluster (a new weight takes
//! effect), and receipts reaching the agent with the filter's token. Not Istio's exact output
//! (static resources, no ECDS, plain TCP): docs/istio.md says what was not run.

// An integration test binary: failing loudly on the first broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use knhk_e2e::agent::{AgentProcess, FILTER_TOKEN};
use knhk_e2e::client::Client;
use knhk_e2e::envoy::{Envoy, EnvoySpec};
use knhk_e2e::paths;
use knhk_e2e::rig::oracle_route;
use knhk_e2e::upstream::Upstream;
use knhk_e2e::wait::poll;
use serde::Deserialize as _;
use serde_json::Value;

/// The WasmPlugin's pluginConfig from `istio/wasmplugin.yaml`.
fn manifest_plugin_config() -> Value {
    let text = std::fs::read_to_string(paths::repo_root().join("istio/wasmplugin.yaml")).unwrap();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value: Value =
            serde_json::to_value(serde_yaml::Value::deserialize(doc).unwrap()).unwrap();
        if value["kind"] == "WasmPlugin" {
            return value["spec"]["pluginConfig"].clone();
        }
    }
    panic!("no WasmPlugin in istio/wasmplugin.yaml");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_config_routes_pushes_and_receipts_in_istios_client_shape() {
    let dir = paths::scratch_dir()
        .join("e2e")
        .join(format!("istio-shape-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let agent = AgentProcess::start(&dir, None).await.unwrap();
    let manifest = manifest_plugin_config();
    let salt = manifest["routing"]["salt"].as_str().unwrap().to_owned();
    let bp = manifest["routing"]["canary_basis_points"].as_u64().unwrap() as u16;
    // The agent pushes the same policy (a pushed config carries no `control`).
    let mut pushed = manifest.clone();
    pushed.as_object_mut().unwrap().remove("control");
    let first = agent.put_policy(&pushed).await.unwrap();

    // The manifest's control section, with the placeholders an operator fills in filled in.
    let mut config = manifest.clone();
    config["control"]["token"] = FILTER_TOKEN.into();
    config["control"]["trusted_keys"] =
        serde_json::to_value(agent.config_keys().await.unwrap()).unwrap();
    config["control"]["poll_timeout_ms"] = 5000.into();
    config["control"]["receipts"] = serde_json::json!({"flush_interval_ms": 50});
    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    let mut spec = EnvoySpec::e2e(
        "istio-shape",
        &config.to_string(),
        stable.port(),
        canary.port(),
    )
    .unwrap();
    spec.template = paths::envoy_template("istio-client.yaml");
    spec.agent_port = Some(agent.port());
    let envoy = Envoy::start(&spec).await.unwrap();
    let client = Client::fresh_connections(&envoy.base_url()).unwrap();

    // The manifest's split, key by key, through Istio's subset clusters.
    let keys: Vec<String> = (0..400).map(|i| format!("user-{i}")).collect();
    let mut wrong = Vec::new();
    for key in &keys {
        let reply = client
            .get("/checkout/cart", &[("x-user-id", key)])
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.describe());
        let want = oracle_route(&salt, key, bp);
        if reply.upstream() != Some(want) {
            wrong.push((key.clone(), reply.upstream().map(str::to_owned)));
        }
    }
    assert!(
        wrong.is_empty(),
        "routed unlike the core: {:?}",
        &wrong[..wrong.len().min(5)]
    );

    // Receipts of those requests reach the agent through its Istio-named cluster, with the
    // filter's token (without it the agent would refuse them).
    poll("receipts at the agent", Duration::from_secs(20), || async {
        Ok((agent.log_size().await? >= keys.len() as u64).then_some(()))
    })
    .await
    .unwrap();
    let (_, refusals) = agent.call("GET", "/v1/auth/refusals", None).await.unwrap();
    assert_eq!(refusals["receipts"], 0, "{refusals}");

    // Config push through the same cluster: everyone to canary.
    let mut all = pushed.clone();
    all["version"] = 8.into();
    all["routing"]["canary_basis_points"] = 10_000.into();
    let second = agent.put_policy(&all).await.unwrap();
    assert!(second > first);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut streak = 0;
    let mut n = 0;
    while streak < 16 {
        assert!(
            Instant::now() < deadline,
            "the pushed weight did not reach every worker"
        );
        n += 1;
        let reply = client
            .get("/checkout/cart", &[("x-user-id", &format!("probe-{n}"))])
            .await
            .unwrap();
        streak = if reply.upstream() == Some("canary") {
            streak + 1
        } else {
            0
        };
    }
}
