//! `istio/` as operators apply it: the Kustomize base and every overlay rendered by the real
//! kustomize (pinned, installed by `cargo xtask setup`), every rendered document validated
//! against the Kubernetes and Istio schemas (`xtask/k8s/validate.mjs`: kubernetes-models,
//! @kubernetes-models/istio), and what knhk reads from them accepted by knhk itself: each
//! WasmPlugin's `pluginConfig` and EnvoyFilter's Wasm `configuration` by the filter's validator
//! (`knhk_core::Policy`), each `agent.toml` ConfigMap by the agent's (`AgentConfig`, with the
//! rendered Secrets as its token files). The wiring between them is checked too: where the
//! filter runs (callers' sidecars, or the ingress gateway), that its `control.cluster` is
//! Istio's name for a Service here, that every version name it or a rollout writes has a route
//! to that version's subset, that the agent's ConfigMap, Secrets and persistent volume are the
//! ones the StatefulSet mounts. Not run here: istiod, a cluster (docs/istio.md).

// An integration test crate: helpers may fail loudly like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use base64::Engine as _;
use knhk_agent::config::AgentConfig;
use knhk_e2e::paths;
use serde::Deserialize as _;
use serde_json::Value;

/// What `kubectl apply -k` is pointed at: the base and each overlay.
const VARIANTS: [&str; 4] = [
    "base",
    "overlays/gateway",
    "overlays/envoyfilter",
    "overlays/spire",
];
/// Kinds without a published schema in the validator's packages (SPIRE's CRD): reported by the
/// validator, checked here by hand where knhk depends on them.
const UNSCHEMED: [&str; 1] = ["ClusterSPIFFEID"];

/// The secret files the base's secretGenerator reads (git ignores them), with test values.
const SECRET_FILES: [(&str, &str); 2] = [
    (
        "admin-token",
        "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9\n",
    ),
    (
        "filter-tokens",
        "f9e8d7c6b5a4938271605f4e3d2c1b0af9e8d7c6b5a4938271605f4e3d2c1b0a\n",
    ),
];

/// One rendering: the variant's name, its YAML as kustomize printed it, and its documents.
struct Rendering {
    variant: &'static str,
    yaml: String,
    docs: Vec<Value>,
}

impl Rendering {
    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| d["kind"] == kind).collect()
    }

    fn one(&self, kind: &str, name: &str) -> &Value {
        self.docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{}: no {kind} {name}", self.variant))
    }
}

/// Every variant rendered once per test binary, from a copy of `istio/` with the secret files
/// written in; `None` (the tests skip) when kustomize is not installed and real components
/// are not required.
fn renderings() -> Option<&'static [Rendering]> {
    static RENDERED: OnceLock<Option<Vec<Rendering>>> = OnceLock::new();
    RENDERED
        .get_or_init(|| {
            let kustomize = match paths::kustomize() {
                Ok(k) => k,
                Err(e) if !paths::require_real() => {
                    eprintln!("skipped: {e}");
                    return None;
                }
                Err(e) => panic!("{e}"),
            };
            // Rendered into memory: the copy is removed when this returns.
            let scratch = tempfile::tempdir().unwrap();
            let copy = scratch.path();
            copy_dir(&paths::repo_root().join("istio"), &copy.join("istio"));
            for (file, value) in SECRET_FILES {
                std::fs::write(copy.join("istio/base/secrets").join(file), value).unwrap();
            }
            Some(
                VARIANTS
                    .iter()
                    .map(|variant| render(&kustomize, &copy.join("istio").join(variant), variant))
                    .collect(),
            )
        })
        .as_deref()
}

fn render(kustomize: &Path, dir: &Path, variant: &'static str) -> Rendering {
    let out = Command::new(kustomize)
        .arg("build")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kustomize build istio/{variant}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&yaml) {
        let value = serde_yaml::Value::deserialize(doc)
            .unwrap_or_else(|e| panic!("{variant}: not YAML: {e}"));
        if !value.is_null() {
            docs.push(serde_json::to_value(value).unwrap());
        }
    }
    assert!(!docs.is_empty(), "{variant}: rendered nothing");
    Rendering {
        variant,
        yaml,
        docs,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// Every rendered document passes the Kubernetes or Istio schema of its kind; only the kinds
/// in [`UNSCHEMED`] go unjudged. The validator itself refuses a broken document (so a pass
/// means something): an enum value Istio does not know.
#[test]
fn every_rendering_validates_against_the_kubernetes_and_istio_schemas() {
    let Some(renderings) = renderings() else {
        return;
    };
    let validator = paths::k8s_validator().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let run = |name: &str, yaml: &str| -> (bool, Vec<Value>) {
        let file = scratch
            .path()
            .join(format!("{}.yaml", name.replace('/', "-")));
        std::fs::write(&file, yaml).unwrap();
        let out = Command::new("node")
            .arg(&validator)
            .arg(&file)
            .output()
            .unwrap();
        let results = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect();
        assert!(
            out.status.code().is_some_and(|c| c <= 1),
            "validator failed to run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), results)
    };
    for r in renderings {
        let (ok, results) = run(r.variant, &r.yaml);
        assert_eq!(
            results.len(),
            r.docs.len(),
            "{}: one verdict per document",
            r.variant
        );
        for result in &results {
            let kind = result["kind"].as_str().unwrap_or_default();
            match result["status"].as_str() {
                Some("ok") => {}
                Some("no-schema") => assert!(
                    UNSCHEMED.contains(&kind),
                    "{}: {kind} has no schema to validate it: {result}",
                    r.variant
                ),
                _ => panic!("{}: {result}", r.variant),
            }
        }
        assert!(ok, "{}: {results:?}", r.variant);
    }
    let broken = renderings[0]
        .yaml
        .replace("failStrategy: FAIL_OPEN", "failStrategy: FAIL_SOMETIMES");
    assert_ne!(broken, renderings[0].yaml);
    let (ok, results) = run("broken", &broken);
    assert!(
        !ok,
        "a WasmPlugin with an unknown failStrategy passed: {results:?}"
    );
    assert!(
        results
            .iter()
            .any(|r| r["kind"] == "WasmPlugin" && r["status"] == "invalid"),
        "{results:?}"
    );
}

/// Istio's cluster names for every Service port of a rendering: `outbound|PORT||HOST`.
fn service_clusters(r: &Rendering) -> Vec<String> {
    r.of_kind("Service")
        .iter()
        .flat_map(|s| {
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
        .collect()
}

/// The knhk configurations a rendering loads into Envoy: each WasmPlugin's `pluginConfig` and
/// each EnvoyFilter's Wasm `configuration`, with where they came from.
fn filter_configs(r: &Rendering) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = r
        .of_kind("WasmPlugin")
        .iter()
        .map(|p| {
            (
                format!("WasmPlugin {}", p["metadata"]["name"]),
                p["spec"]["pluginConfig"].clone(),
            )
        })
        .collect();
    for filter in r.of_kind("EnvoyFilter") {
        for patch in filter["spec"]["configPatches"].as_array().unwrap() {
            let wasm = &patch["patch"]["value"]["typed_config"];
            let text = wasm["config"]["configuration"]["value"].as_str().unwrap();
            out.push((
                format!("EnvoyFilter {}", filter["metadata"]["name"]),
                serde_json::from_str(text).unwrap(),
            ));
        }
    }
    out
}

/// Every variant loads exactly one knhk filter (WasmPlugin or EnvoyFilter, never both), whose
/// configuration the filter accepts, with a control section on Istio's cluster for the agent's
/// Service and a credential; the EnvoyFilter carries the same configuration as the WasmPlugin.
#[test]
fn filter_configs_are_valid_and_wired_to_the_agent() {
    let Some(renderings) = renderings() else {
        return;
    };
    let base_config = filter_configs(&renderings[0]).remove(0).1;
    for r in renderings {
        let configs = filter_configs(r);
        assert_eq!(
            configs.len(),
            1,
            "{}: one knhk filter, got {:?}",
            r.variant,
            configs.iter().map(|c| &c.0).collect::<Vec<_>>()
        );
        let clusters = service_clusters(r);
        for (what, config) in &configs {
            let policy = knhk_core::Policy::from_json(config.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{} {what}: refused by the filter: {e}", r.variant));
            let control = policy
                .control
                .expect("a control section: config push and receipts");
            assert!(
                clusters.contains(&control.cluster),
                "{} {what}: control.cluster {} is none of Istio's clusters for the Services here: {clusters:?}",
                r.variant,
                control.cluster
            );
            assert!(
                control.token.is_some(),
                "{} {what}: no control.token",
                r.variant
            );
            assert_eq!(
                config, &base_config,
                "{} {what}: differs from the base's",
                r.variant
            );
        }
    }
}

/// Where the filter runs: on the callers' outbound traffic (WasmPlugin mode CLIENT, or an
/// EnvoyFilter on SIDECAR_OUTBOUND before the router, failing open), or on the ingress
/// gateway in its namespace — never on the destination's own sidecar.
#[test]
fn the_filter_runs_where_the_subset_is_chosen() {
    let Some(renderings) = renderings() else {
        return;
    };
    for r in renderings {
        for plugin in r.of_kind("WasmPlugin") {
            let spec = &plugin["spec"];
            assert_eq!(spec["failStrategy"], "FAIL_OPEN", "{}", r.variant);
            assert_eq!(spec["phase"], "AUTHN", "{}: before routing", r.variant);
            let gateway = spec["selector"]["matchLabels"]["istio"] == "ingressgateway";
            if gateway {
                assert_eq!(
                    plugin["metadata"]["namespace"], "istio-system",
                    "{}",
                    r.variant
                );
                assert!(
                    spec["match"].is_null(),
                    "{}: no traffic mode on a gateway",
                    r.variant
                );
                let policy = r.one("AuthorizationPolicy", "knhk-agent");
                assert!(
                    policy
                        .to_string()
                        .contains("istio-system/sa/istio-ingressgateway"),
                    "{}: the gateway's identity may post receipts",
                    r.variant
                );
            } else {
                let modes: Vec<&Value> = spec["match"]
                    .as_array()
                    .map(|m| m.iter().map(|x| &x["mode"]).collect())
                    .unwrap_or_default();
                assert_eq!(
                    modes,
                    [&Value::from("CLIENT")],
                    "{}: callers only",
                    r.variant
                );
            }
        }
        for filter in r.of_kind("EnvoyFilter") {
            for patch in filter["spec"]["configPatches"].as_array().unwrap() {
                assert_eq!(patch["applyTo"], "HTTP_FILTER", "{}", r.variant);
                assert_eq!(
                    patch["match"]["context"], "SIDECAR_OUTBOUND",
                    "{}",
                    r.variant
                );
                assert_eq!(
                    patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
                    "envoy.filters.http.router",
                    "{}: before the router",
                    r.variant
                );
                assert_eq!(
                    patch["patch"]["operation"], "INSERT_BEFORE",
                    "{}",
                    r.variant
                );
                let wasm = &patch["patch"]["value"]["typed_config"];
                assert_eq!(
                    wasm["@type"],
                    "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
                );
                assert_eq!(
                    wasm["config"]["failure_policy"], "FAIL_OPEN",
                    "{}",
                    r.variant
                );
            }
        }
    }
}

/// Every version name the filter writes in its route header (`routing.route_values`, the
/// names a rollout writes too) has a route, in every VirtualService that routes by that
/// header, to the subset of that name, which the DestinationRule of the host defines; a
/// request without the header falls back to the stable version.
#[test]
fn every_version_name_routes_to_its_subset() {
    let Some(renderings) = renderings() else {
        return;
    };
    for r in renderings {
        let config = &filter_configs(r)[0].1;
        let routing = &config["routing"];
        let header = routing["route_header"].as_str().unwrap_or("x-knhk-route");
        let stable = routing["route_values"]["stable"].as_str().unwrap();
        let canary = routing["route_values"]["canary"].as_str().unwrap();
        let subsets: BTreeMap<String, Vec<String>> = r
            .of_kind("DestinationRule")
            .iter()
            .map(|d| {
                let host = d["spec"]["host"].as_str().unwrap();
                let names = d["spec"]["subsets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["name"].as_str().unwrap().to_owned())
                    .collect();
                (short_host(host), names)
            })
            .collect();
        let mut checked = 0;
        for vs in r.of_kind("VirtualService") {
            let routes = vs["spec"]["http"].as_array().unwrap();
            if !vs.to_string().contains(header) {
                continue;
            }
            checked += 1;
            let name = &vs["metadata"]["name"];
            let destination = |route: &Value| -> (String, String) {
                let d = &route["route"][0]["destination"];
                (
                    short_host(d["host"].as_str().unwrap()),
                    d["subset"].as_str().unwrap_or_default().to_owned(),
                )
            };
            let by_header = |value: &str| {
                routes.iter().find(|route| {
                    route["match"]
                        .as_array()
                        .is_some_and(|m| m.iter().any(|m| m["headers"][header]["exact"] == value))
                })
            };
            let fallback = routes
                .iter()
                .find(|route| {
                    route["match"]
                        .as_array()
                        .is_none_or(|m| m.iter().all(|m| m["headers"].is_null()))
                })
                .unwrap_or_else(|| panic!("{} {name}: no route without the header", r.variant));
            let (host, subset) = destination(fallback);
            assert_eq!(
                subset, stable,
                "{} {name}: the fallback is the stable version",
                r.variant
            );
            for version in [stable, canary] {
                let (host, subset) = by_header(version)
                    .map(destination)
                    .unwrap_or_else(|| (host.clone(), subset.clone()));
                assert_eq!(subset, version, "{} {name}: {header}: {version}", r.variant);
                assert!(
                    subsets.get(&host).is_some_and(|s| s.contains(&subset)),
                    "{} {name}: no subset {subset} of {host} in {subsets:?}",
                    r.variant
                );
            }
        }
        assert!(
            checked > 0,
            "{}: no VirtualService routes by {header}",
            r.variant
        );
    }
}

/// `checkout`, `checkout.shop` and `checkout.shop.svc.cluster.local` are one host.
fn short_host(host: &str) -> String {
    host.split('.').next().unwrap().to_owned()
}

/// The agent of every variant: its ConfigMap's `agent.toml` is accepted by the agent (with the
/// rendered Secrets written where the StatefulSet mounts them) and may listen beyond loopback;
/// the StatefulSet mounts exactly that ConfigMap, those Secrets at the token files' paths, and
/// a volume claim at `data_dir`, with one replica (the single writer of its log).
#[test]
fn agent_configs_are_valid_and_their_state_is_persistent() {
    let Some(renderings) = renderings() else {
        return;
    };
    for r in renderings {
        let set = r.one("StatefulSet", "knhk-agent");
        assert_eq!(
            set["spec"]["replicas"], 1,
            "{}: one writer per log",
            r.variant
        );
        let pod = &set["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let volumes: BTreeMap<&str, &Value> = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["name"].as_str().unwrap(), v))
            .collect();
        let claims: Vec<&str> = set["spec"]["volumeClaimTemplates"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|c| c["metadata"]["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        // Mount path → (volume name, volume).
        let mounts: Vec<(PathBuf, &str)> = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    PathBuf::from(m["mountPath"].as_str().unwrap()),
                    m["name"].as_str().unwrap(),
                )
            })
            .collect();
        let config_arg = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|a| a.as_str()?.strip_prefix("--config="))
            .expect("--config=");
        let config_path = Path::new(config_arg);
        // The volume mounted at a file's directory.
        let volume_at = |file: &Path| -> &Value {
            let name = mounts
                .iter()
                .find(|(dir, _)| file.parent() == Some(dir.as_path()))
                .map(|(_, name)| *name)
                .unwrap_or_else(|| panic!("{}: nothing mounted at {}", r.variant, file.display()));
            volumes.get(name).copied().unwrap_or(&Value::Null)
        };
        let config_volume = volume_at(config_path);
        let map_name = config_volume["configMap"]["name"].as_str().unwrap();
        let map = r.one("ConfigMap", map_name);
        let file_name = config_path.file_name().unwrap().to_str().unwrap();
        let text = map["data"][file_name].as_str().unwrap();
        let mut cfg = AgentConfig::from_toml(text, config_path)
            .unwrap_or_else(|e| panic!("{}: agent.toml refused: {e}", r.variant));
        let scratch = tempfile::tempdir().unwrap();
        // Each token file comes from a Secret the StatefulSet mounts at its directory.
        let token_files = [
            ("api.admin_token_file", cfg.api.admin_token_file.clone()),
            ("api.filter_token_file", cfg.api.filter_token_file.clone()),
        ];
        let mut written = Vec::new();
        for (setting, file) in token_files {
            let file = file.unwrap_or_else(|| panic!("{}: no {setting}", r.variant));
            let volume = volume_at(&file);
            let secret_name = volume["secret"]["secretName"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: {setting} is not on a Secret", r.variant));
            let secret = r.one("Secret", secret_name);
            let key = file.file_name().unwrap().to_str().unwrap();
            let encoded = secret["data"][key]
                .as_str()
                .unwrap_or_else(|| panic!("{}: Secret {secret_name} has no key {key}", r.variant))
                .replace('\n', "");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap();
            let local = scratch.path().join(key);
            std::fs::write(&local, bytes).unwrap();
            written.push(local);
        }
        cfg.api.admin_token_file = Some(written[0].clone());
        cfg.api.filter_token_file = Some(written[1].clone());
        let data_dir = cfg.data_dir.clone();
        let data_volume = mounts
            .iter()
            .find(|(dir, _)| *dir == data_dir)
            .map(|(_, name)| *name)
            .unwrap_or_else(|| panic!("{}: nothing mounted at data_dir", r.variant));
        assert!(
            claims.contains(&data_volume),
            "{}: data_dir {} is not on a volume claim",
            r.variant,
            data_dir.display()
        );
        cfg.data_dir = scratch.path().join("data");
        cfg.kms.key_dir = None;
        cfg.resolve_paths();
        if cfg.identity.enabled {
            // The SPIFFE socket comes from the pod's environment.
            let env = container["env"].to_string();
            assert!(
                env.contains("SPIFFE_ENDPOINT_SOCKET"),
                "{}: {env}",
                r.variant
            );
            cfg.identity.socket = Some("unix:///tmp/spire-agent.sock".into());
        }
        cfg.validate()
            .unwrap_or_else(|e| panic!("{}: {e}", r.variant));
        cfg.check_listeners("0.0.0.0:9901".parse().unwrap(), false)
            .unwrap_or_else(|e| panic!("{}: {e}", r.variant));
    }
}
