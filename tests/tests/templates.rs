//! Every Envoy bootstrap in `envoy/` renders completely and passes `envoy --mode validate`.

// An integration test binary: failing loudly on the first broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use knhk_e2e::envoy::Envoy;
use knhk_e2e::paths;
use knhk_e2e::rig::base_config;
use knhk_e2e::template::{render_file, Vars};

/// Render `envoy/<template>` (with the real filter and the contract's example config when the
/// template loads a module) and run `envoy --mode validate` on it.
fn validate(template: &str) {
    let source = paths::envoy_template(template);
    let text = std::fs::read_to_string(&source).unwrap();
    let with_filter = text.contains("${WASM_PATH}") || text.contains("${HTTP_FILTER}");
    let dir = paths::scratch_dir().join("validate");
    std::fs::create_dir_all(&dir).unwrap();
    let dest = dir.join(format!("{}-{template}", std::process::id()));
    let vars = Vars {
        admin_port: Some(19_000),
        listener_port: Some(19_001),
        stable_port: Some(19_002),
        canary_port: Some(19_003),
        wasm_path: with_filter.then(|| paths::filter_wasm().unwrap()),
        plugin_config: with_filter.then(|| base_config().to_string()),
        agent_port: Some(19_004),
        // Validated with the wasm entry; the native one runs in the whole e2e suite.
        native_path: None,
        filter_name: None,
    };
    render_file(&source, &vars, &dest).unwrap();
    let rendered = std::fs::read_to_string(&dest).unwrap();
    assert!(
        !rendered.contains("${"),
        "unrendered placeholder left in {template}"
    );
    let (status, output) = Envoy::validate(&paths::envoy().unwrap(), &dest).unwrap();
    std::fs::remove_file(&dest).unwrap();
    assert!(
        status.success() && output.contains("OK"),
        "envoy --mode validate rejected {template}: {status}\n{output}"
    );
}

/// The e2e bootstrap (filter loaded with the contract's example config) is valid.
#[test]
fn e2e_yaml_validates() {
    validate("e2e.yaml");
}

/// The demo bootstrap is valid.
#[test]
fn demo_yaml_validates() {
    validate("demo.yaml");
}

/// The no-filter bootstrap is valid and needs neither the module nor a plugin config.
#[test]
fn noop_yaml_validates() {
    validate("noop.yaml");
}

/// Every other bootstrap in `envoy/` (the benchmark variants, anything added later) is valid too.
#[test]
fn every_other_bootstrap_validates() {
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(paths::repo_root().join("envoy")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".yaml")
            && !["e2e.yaml", "demo.yaml", "noop.yaml"].contains(&name.as_str())
        {
            validate(&name);
            seen.push(name);
        }
    }
    seen.sort();
    println!("validated {seen:?}");
}
