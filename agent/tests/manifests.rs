//! Every manifest in `istio/` parses, and what knhk reads from it is accepted by knhk itself:
//! each WasmPlugin's `pluginConfig` by the filter's own validator (`knhk_core::Policy`), each
//! `agent.toml` ConfigMap by the agent's (`AgentConfig`, with token files in place of the
//! Secrets). The wiring between them is checked too: the WasmPlugin runs on callers (mode
//! CLIENT), its `control.cluster` is Istio's name for a Service in the manifests, the agent's
//! `data_dir` is its persistent volume. Not run here: Kubernetes/Istio schema validation,
//! istiod, a cluster (docs/istio.md).

// An integration test crate: helpers may fail loudly like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use knhk_agent::config::AgentConfig;
use serde::Deserialize as _;
use serde_json::Value;

fn istio_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../istio")
}

/// Every YAML document of every file in `istio/`, with its file name.
fn documents() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(istio_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{name}: not YAML: {e}"));
            if value.is_null() {
                continue;
            }
            let json = serde_json::to_value(value).unwrap();
            for field in ["apiVersion", "kind"] {
                assert!(
                    json[field].is_string(),
                    "{name}: a document without {field}"
                );
            }
            assert!(
                json["metadata"]["name"].is_string(),
                "{name}: a document without a name"
            );
            out.push((name.clone(), json));
        }
    }
    out
}

fn of_kind<'a>(docs: &'a [(String, Value)], kind: &str) -> Vec<&'a (String, Value)> {
    docs.iter().filter(|(_, d)| d["kind"] == kind).collect()
}

/// Each WasmPlugin's pluginConfig is a valid knhk configuration; it runs on callers; its agent
/// cluster is Istio's `outbound|PORT||HOST` of a Service defined here.
#[test]
fn wasm_plugins_are_valid_knhk_configs_wired_to_the_agent() {
    let docs = documents();
    let plugins = of_kind(&docs, "WasmPlugin");
    assert!(!plugins.is_empty(), "no WasmPlugin in istio/");
    let services: Vec<String> = of_kind(&docs, "Service")
        .iter()
        .flat_map(|(_, s)| {
            let host = format!(
                "{}.{}.svc.cluster.local",
                s["metadata"]["name"].as_str().unwrap(),
                s["metadata"]["namespace"].as_str().unwrap_or("default")
            );
            s["spec"]["ports"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |p| format!("outbound|{}||{host}", p["port"]))
        })
        .collect();
    for (file, plugin) in plugins {
        let config = &plugin["spec"]["pluginConfig"];
        let policy = knhk_core::Policy::from_json(config.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{file}: pluginConfig refused by the filter: {e}"));
        let modes: Vec<&Value> = plugin["spec"]["match"]
            .as_array()
            .map(|m| m.iter().map(|x| &x["mode"]).collect())
            .unwrap_or_default();
        assert!(
            modes.iter().any(|m| *m == "CLIENT"),
            "{file}: the filter must run on the callers' sidecars (match mode CLIENT), got {modes:?}"
        );
        let control = policy
            .control
            .expect("a control section: config push and receipts");
        assert!(
            services.contains(&control.cluster),
            "{file}: control.cluster {} is none of Istio's clusters for the Services here: {services:?}",
            control.cluster
        );
        assert!(control.token.is_some(), "{file}: no control.token");
    }
}

/// Each `agent.toml` ConfigMap is accepted by the agent (token files standing in for the
/// Secrets), and may listen beyond loopback; the StatefulSet mounts a persistent volume at its
/// `data_dir`.
#[test]
fn agent_configs_are_valid_and_their_state_is_persistent() {
    let docs = documents();
    let secrets = tempfile::tempdir().unwrap();
    let mut seen = 0;
    for (file, map) in of_kind(&docs, "ConfigMap") {
        let Some(text) = map["data"]["agent.toml"].as_str() else {
            continue;
        };
        seen += 1;
        let mut cfg = AgentConfig::from_toml(text, Path::new(file))
            .unwrap_or_else(|e| panic!("{file}: agent.toml refused: {e}"));
        assert!(
            cfg.api.admin_token_file.is_some(),
            "{file}: no admin token file"
        );
        assert!(
            cfg.api.filter_token_file.is_some(),
            "{file}: no filter token file"
        );
        let data_dir = cfg.data_dir.clone();
        let admin = secrets.path().join(format!("admin-{seen}"));
        let filters = secrets.path().join(format!("filters-{seen}"));
        std::fs::write(&admin, "a".repeat(64)).unwrap();
        std::fs::write(&filters, "f".repeat(64)).unwrap();
        cfg.api.admin_token_file = Some(admin);
        cfg.api.filter_token_file = Some(filters);
        cfg.data_dir = secrets.path().join(format!("data-{seen}"));
        cfg.kms.key_dir = None;
        cfg.resolve_paths();
        if cfg.identity.enabled {
            // The SPIFFE socket comes from the pod's environment.
            cfg.identity.socket = Some("unix:///tmp/spire-agent.sock".into());
        }
        cfg.validate().unwrap_or_else(|e| panic!("{file}: {e}"));
        cfg.check_listeners("0.0.0.0:9901".parse().unwrap(), false)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        // Where the agent keeps its state: a volume claim in the StatefulSet of this file.
        let sets = of_kind(&docs, "StatefulSet");
        let Some((_, set)) = sets.iter().find(|(f, _)| f == file) else {
            continue;
        };
        let claims: Vec<&str> = set["spec"]["volumeClaimTemplates"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|c| c["metadata"]["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        let mounts = set["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let on_claim = mounts.iter().any(|m| {
            m["mountPath"].as_str() == data_dir.to_str()
                && claims.contains(&m["name"].as_str().unwrap_or_default())
        });
        assert!(
            on_claim,
            "{file}: data_dir {} is not on a volume claim",
            data_dir.display()
        );
        assert_eq!(set["spec"]["replicas"], 1, "{file}: one writer per log");
    }
    assert!(seen > 0, "no agent.toml ConfigMap in istio/");
}

/// The EnvoyFilter variant carries the same kind of configuration: a valid knhk config with a
/// control section on Istio's agent cluster, inserted on the callers' outbound listeners
/// before the router, failing open.
#[test]
fn envoy_filters_carry_valid_knhk_configs_on_outbound_listeners() {
    let docs = documents();
    let filters = of_kind(&docs, "EnvoyFilter");
    assert!(!filters.is_empty(), "no EnvoyFilter in istio/");
    for (file, filter) in filters {
        for patch in filter["spec"]["configPatches"].as_array().unwrap() {
            assert_eq!(patch["applyTo"], "HTTP_FILTER", "{file}");
            assert_eq!(
                patch["match"]["context"], "SIDECAR_OUTBOUND",
                "{file}: callers only"
            );
            assert_eq!(
                patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
                "envoy.filters.http.router",
                "{file}: before the router"
            );
            let wasm = &patch["patch"]["value"]["typed_config"];
            assert_eq!(
                wasm["@type"],
                "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
            );
            assert_eq!(wasm["config"]["failure_policy"], "FAIL_OPEN", "{file}");
            let text = wasm["config"]["configuration"]["value"].as_str().unwrap();
            let policy = knhk_core::Policy::from_json(text.as_bytes())
                .unwrap_or_else(|e| panic!("{file}: configuration refused by the filter: {e}"));
            let control = policy.control.expect("a control section");
            assert!(
                control.cluster.starts_with("outbound|9901||"),
                "{file}: {}",
                control.cluster
            );
        }
    }
}
