//! The live check of the filter's telemetry against `registry/`: after traffic, every `knhk_*`
//! family the real Envoy exports on `/stats/prometheus` is declared in the registry with the
//! same instrument, and every stat the registry declares is exported. It runs for the build the
//! suite runs against (the wasm filter, or the native module with `KNHK_FILTER_HOST=native`).

// An integration test binary: failing loudly on the first broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use knhk_e2e::paths;
use knhk_e2e::registry;
use knhk_e2e::rig::{base_config, Rig};
use knhk_e2e::wait::poll;

fn prometheus_prefix() -> &'static str {
    registry::envoy_prometheus_prefix(paths::native_host())
}

fn knhk_families(text: &str) -> BTreeMap<String, String> {
    registry::envoy_knhk_families(text, paths::native_host())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_filter_stats_match_the_registry() {
    let registry = registry::load(&paths::repo_root().join("registry"))
        .unwrap_or_else(|problems| panic!("registry check failed:\n{}", problems.join("\n")));
    let declared: BTreeMap<String, String> = registry
        .envoy_stats()
        .into_iter()
        .map(|s| (s.prometheus_name(), s.instrument))
        .collect();
    assert!(!declared.is_empty());

    let rig = Rig::start("registry-live", &base_config()).await.unwrap();
    for i in 0..20 {
        rig.client
            .get("/api/items", &[("x-user-id", &format!("live-{i}"))])
            .await
            .unwrap();
    }
    // Counters are flushed at the filter's tick: wait until the traffic shows.
    rig.envoy
        .wait_metric("knhk.route.stable", Duration::from_secs(10), |v| v > 0.0)
        .await
        .unwrap();
    let exported = poll(
        "every declared knhk stat",
        Duration::from_secs(10),
        || async {
            let families = knhk_families(&rig.envoy.stats_prometheus().await?);
            Ok(declared
                .keys()
                .all(|name| families.contains_key(name))
                .then_some(families))
        },
    )
    .await;
    let exported = match exported {
        Ok(families) => families,
        Err(e) => {
            let families = knhk_families(&rig.envoy.stats_prometheus().await.unwrap());
            let missing: Vec<&String> = declared
                .keys()
                .filter(|n| !families.contains_key(*n))
                .collect();
            panic!("{e}: declared but not exported: {missing:?}");
        }
    };

    // Nothing of knhk's under another name either (a prefix this test does not know).
    let text = rig.envoy.stats_prometheus().await.unwrap();
    let prefix = format!("{}knhk_", prometheus_prefix());
    let elsewhere: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        // Envoy's own stats of the wasm VM carry its name (`envoy_wasm_knhk_vm_reload`).
        .filter(|n| n.contains("knhk") && !n.starts_with(&prefix) && !n.starts_with("envoy_wasm_"))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "knhk families under an unexpected prefix: {elsewhere:?}"
    );
    let undeclared: Vec<&String> = exported
        .keys()
        .filter(|n| !declared.contains_key(*n))
        .collect();
    assert!(
        undeclared.is_empty(),
        "exported by Envoy but not declared in registry/: {undeclared:?}"
    );
    for (name, instrument) in &declared {
        assert_eq!(
            &exported[name], instrument,
            "{name}: Envoy exports a {} where the registry declares a {instrument}",
            exported[name]
        );
    }
}
