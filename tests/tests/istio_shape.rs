//! The filter as `istio/base/wasmplugin.yaml` configures it, in Envoy shaped as Istio shapes a
//! client sidecar (`envoy/istio-client.yaml`: the outbound listener, the VirtualService's
//! routes of `istio/base/routing.yaml` to `outbound|8080|v1|…` / `outbound|8080|v2|…`
//! clusters, the agent's Service cluster `outbound|9901||knhk-agent.knhk.svc.cluster.local`),
//! with the real agent started from the manifest's own `istio/base/agent.toml` behind that
//! cluster: the manifest's split, config push (a new weight takes effect), receipts reaching
//! the agent with the filter's token, a rollout rolled back when the candidate fails and one
//! promoted to production when it is healthy. Not Istio's exact output (static resources, no
//! ECDS, plain TCP): docs/istio.md says what was not run.

// An integration test binary: failing loudly on the first broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use knhk_e2e::agent::{AgentProcess, ADMIN_TOKEN, FILTER_TOKEN};
use knhk_e2e::paths;
use knhk_e2e::rig::{oracle_route, ControlledRig, Shape};
use knhk_e2e::rollout::{
    measure_rollback, rollout_spec, tail_off_stable, Fault, Recorder, RolloutRig, KEYS,
};
use knhk_e2e::wait::poll;
use serde::Deserialize as _;
use serde_json::{json, Value};

/// The WasmPlugin's pluginConfig from `istio/base/wasmplugin.yaml`.
fn manifest_plugin_config() -> Value {
    let path = paths::repo_root().join("istio/base/wasmplugin.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value: Value =
            serde_json::to_value(serde_yaml::Value::deserialize(doc).unwrap()).unwrap();
        if value["kind"] == "WasmPlugin" {
            return value["spec"]["pluginConfig"].clone();
        }
    }
    panic!("no WasmPlugin in {}", path.display());
}

/// `istio/base/agent.toml` (the agent's ConfigMap) with its pod paths moved into `dir`: the
/// data directory and the two Secret files, which get the harness's tokens.
fn manifest_agent_config(dir: &std::path::Path) -> std::path::PathBuf {
    let mut moved =
        std::fs::read_to_string(paths::repo_root().join("istio/base/agent.toml")).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    for (pod_path, local, content) in [
        ("/var/lib/knhk", dir.join("data"), None),
        (
            "/etc/knhk-admin/token",
            dir.join("admin-token"),
            Some(ADMIN_TOKEN),
        ),
        (
            "/etc/knhk-filters/tokens",
            dir.join("filter-tokens"),
            Some(FILTER_TOKEN),
        ),
    ] {
        let quoted = format!("\"{pod_path}\"");
        assert!(
            moved.contains(&quoted),
            "agent.toml no longer names {pod_path}"
        );
        moved = moved.replace(&quoted, &format!("\"{}\"", local.display()));
        if let Some(content) = content {
            std::fs::write(&local, format!("{content}\n")).unwrap();
        }
    }
    let config = dir.join("agent.toml");
    std::fs::write(&config, moved).unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_config_routes_pushes_receipts_and_rolls_out_in_istios_client_shape() {
    let dir = paths::scratch_dir()
        .join("e2e")
        .join(format!("istio-shape-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = manifest_agent_config(&dir);
    let agent = AgentProcess::launch(&dir, &config, None, &[])
        .await
        .unwrap();
    let manifest = manifest_plugin_config();
    let salt = manifest["routing"]["salt"].as_str().unwrap().to_owned();
    let bp = manifest["routing"]["canary_basis_points"].as_u64().unwrap() as u16;
    // The agent pushes the same policy (a pushed config carries no `control`), with the
    // decision exposed to the test client (`debug_headers`: the rollout load reads the epoch).
    let mut pushed = manifest.clone();
    pushed.as_object_mut().unwrap().remove("control");
    pushed["debug_headers"] = true.into();
    let first = agent.put_policy(&pushed).await.unwrap();

    // The manifest's control section, with the placeholders an operator fills in filled in.
    let mut static_config = manifest.clone();
    static_config["debug_headers"] = true.into();
    static_config["control"]["token"] = FILTER_TOKEN.into();
    static_config["control"]["trusted_keys"] =
        serde_json::to_value(agent.config_keys().await.unwrap()).unwrap();
    static_config["control"]["poll_timeout_ms"] = 5000.into();
    static_config["control"]["receipts"] = json!({"flush_interval_ms": 50});
    let rig = ControlledRig::start_shaped(
        "istio-shape",
        &static_config,
        agent.port(),
        Some(Shape {
            template: "istio-client.yaml",
            // Istio names a WasmPlugin's filter <namespace>.<name>; docs/istio.md's EnvoyFilter
            // names the native module's the same way.
            filter_name: "shop.knhk",
        }),
    )
    .await
    .unwrap();
    let rig = RolloutRig { agent, rig };
    rig.wait_epoch(first).await.unwrap();
    let client = &rig.rig.client;

    // The manifest's split, key by key, through Istio's subset clusters (v1 plays `stable`,
    // v2 `canary`).
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
        Ok((rig.agent.log_size().await? >= keys.len() as u64).then_some(()))
    })
    .await
    .unwrap();
    let (_, refusals) = rig
        .agent
        .call("GET", "/v1/auth/refusals", None)
        .await
        .unwrap();
    assert_eq!(refusals["receipts"], 0, "{refusals}");

    // Config push through the same cluster: everyone to v2.
    let mut all = pushed.clone();
    all["version"] = 8.into();
    all["routing"]["canary_basis_points"] = 10_000.into();
    let second = rig.agent.put_policy(&all).await.unwrap();
    assert!(second > first);
    rig.wait_epoch(second).await.unwrap();
    for n in 0..16 {
        let reply = client
            .get("/checkout/cart", &[("x-user-id", &format!("probe-{n}"))])
            .await
            .unwrap();
        assert_eq!(reply.upstream(), Some("canary"), "{}", reply.describe());
    }

    // A rollout v1 → v2 whose candidate starts failing: rolled back, every key on v1.
    let run = measure_rollback(&rig, "istio-rollback", Fault::Status(503))
        .await
        .unwrap();
    let reason = run.status["reason"].as_str().unwrap();
    assert!(reason.contains("success rate"), "{reason}");
    let (tail_keys, off) = tail_off_stable(&run.records, 2 * KEYS as usize);
    assert_eq!(tail_keys.len() as u64, KEYS, "the tail covers every key");
    assert!(
        off.is_empty(),
        "after the rollback: {:?}",
        &off[..off.len().min(5)]
    );

    // A healthy candidate: promoted by analysis to production, after which the filter writes
    // v2 for everyone and the VirtualService's v2 route takes every key.
    rig.rig.canary.set_status(200);
    let spec = rollout_spec(
        "istio-promote",
        &json!({"analysis": {"interval_ms": 50, "window_ms": 3000, "pass_for_ms": 500,
                             "min_samples": 15, "failure_threshold": 2, "max_p99_ms": 150.0}}),
    );
    rig.call("POST", "/v1/rollouts", Some(spec)).await.unwrap();
    let recorder = Recorder::start(client, 8);
    let (done, _) = rig
        .until("production", |s| s["phase"] == "completed")
        .await
        .unwrap();
    let completed_epoch = done["history"]
        .as_array()
        .and_then(|h| h.last())
        .and_then(|h| h["epoch"].as_u64())
        .unwrap();
    rig.wait_epoch(completed_epoch).await.unwrap();
    recorder
        .wait_after(Instant::now(), 2 * KEYS as usize)
        .await
        .unwrap();
    let records = recorder.stop().await;
    let tail: Vec<_> = records.iter().rev().take(2 * KEYS as usize).collect();
    let off_v2: Vec<_> = tail
        .iter()
        .filter(|r| r.upstream.as_deref() != Some("canary"))
        .collect();
    assert!(
        off_v2.is_empty(),
        "after the promotion: {:?}",
        &off_v2[..off_v2.len().min(5)]
    );
}
