//! Invalid plugin configuration is refused at `on_configure` with one clear log line.
//!
//! What Envoy 1.40 does with it (observed, and asserted here): with the plugin in a static
//! bootstrap, the failed `on_configure` of the base VM makes plugin creation fail ("Unable to
//! create Wasm plugin"), and Envoy exits non-zero at startup *whatever* `failure_policy` says —
//! `FAIL_OPEN` only covers VMs that fail after a successful configuration. So a bad config never
//! serves traffic. Delivered over xDS instead, the same failure rejects the update and the
//! previous configuration keeps serving: `reconfigure.rs` tests that.

// An integration test binary: failing loudly on the first broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use knhk_core::Policy;
use knhk_e2e::envoy::{rejection_lines, Envoy, Launch};
use knhk_e2e::rig::{base_config, Rig};
use knhk_e2e::upstream::Upstream;

/// Start Envoy with `config` and return its log, asserting it refused to start.
async fn refused(
    name: &str,
    config: &serde_json::Value,
    stable: &Upstream,
    canary: &Upstream,
) -> String {
    let spec = Rig::spec(name, config, stable, canary).unwrap();
    match Envoy::launch(&spec).await.unwrap() {
        Launch::Exited { status, log, dir } => {
            assert!(
                !status.success(),
                "envoy exited 0 with an invalid plugin config"
            );
            let _ = std::fs::remove_dir_all(dir);
            log
        }
        Launch::Ready(envoy) => panic!(
            "envoy became ready with an invalid plugin config {config}; log:\n{}",
            envoy.log_tail(40)
        ),
    }
}

/// Each kind of invalid config (out-of-range weight, unknown field, zero budget, C1 tighter than
/// R1, bad enum value) yields exactly one `invalid knhk config: field ...` line naming the field,
/// identical to what `knhk-core` reports, and Envoy does not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_is_refused_with_one_clear_line() {
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
        let log = refused(name, &config, &stable, &canary).await;
        let lines = rejection_lines(&log);
        assert_eq!(
            lines.len(),
            1,
            "{name}: expected one rejection line, got {lines:#?}\n{log}"
        );
        assert!(
            lines[0].contains(&expected),
            "{name}: log line {:?} does not carry the core's message {expected:?}",
            lines[0]
        );
        assert!(
            log.contains("Unable to create Wasm plugin"),
            "{name}: envoy's own refusal missing:\n{log}"
        );
    }
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
