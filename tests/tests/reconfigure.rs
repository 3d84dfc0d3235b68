//! Live reconfiguration, the way a control plane delivers it: the listener (and with it the
//! plugin configuration) comes from a watched LDS file. A new weight takes effect without a
//! restart and keeps the ramp monotonic; an invalid configuration is refused with the one-line
//! message and the previous configuration keeps serving.

// An integration test binary: failing loudly on the first broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use knhk_core::Policy;
use knhk_e2e::client::{concurrent, Client, Reply};
use knhk_e2e::envoy::{rejection_lines, Envoy, EnvoySpec};
use knhk_e2e::paths;
use knhk_e2e::rig::{base_config, oracle_route};
use knhk_e2e::upstream::Upstream;
use knhk_e2e::wait::poll;
use std::collections::BTreeSet;
use std::time::Duration;

const SALT: &str = "s1";
const LDS_FILE: &str = "lds.yaml";

fn config(version: u64, bp: u16) -> serde_json::Value {
    let mut config = base_config();
    config["version"] = version.into();
    config["routing"]["canary_basis_points"] = bp.into();
    config
}

/// Route every key once on a new connection (new connections reach the newest listener;
/// connections to a replaced one drain with the old configuration); return the canary keys,
/// asserting each request was decided by config `version` at `bp` exactly as the core decides.
async fn canary_keys(client: &Client, keys: &[String], version: u64, bp: u16) -> BTreeSet<String> {
    let replies: Vec<(String, Reply)> = concurrent(keys.to_vec(), 16, |key| {
        let client = client.clone();
        async move {
            Ok((
                key.clone(),
                client.get("/api", &[("x-user-id", &key)]).await?,
            ))
        }
    })
    .await
    .unwrap();
    for (key, reply) in &replies {
        let decision = reply.decision().unwrap_or_default();
        assert_eq!(
            decision.get("version"),
            Some(version.to_string().as_str()),
            "{key}: {}",
            reply.describe()
        );
        assert_eq!(
            reply.upstream(),
            Some(oracle_route(SALT, key, bp)),
            "{key} at {bp} bp: {}",
            reply.describe()
        );
    }
    replies
        .into_iter()
        .filter(|(_, r)| r.upstream() == Some("canary"))
        .map(|(k, _)| k)
        .collect()
}

/// Poll until a new connection is answered under config `version`.
async fn wait_for_version(client: &Client, version: u64) {
    let wanted = version.to_string();
    poll(
        &format!("config version {version} in force"),
        Duration::from_secs(30),
        || async {
            let reply = client.get("/api", &[("x-user-id", "probe")]).await?;
            Ok((reply
                .decision()
                .and_then(|d| d.get("version").map(str::to_string))
                == Some(wanted.clone()))
            .then_some(()))
        },
    )
    .await
    .unwrap();
}

/// Poll until no replaced listener is draining any more.
async fn wait_drained(envoy: &Envoy) {
    poll(
        "replaced listeners to finish draining",
        Duration::from_secs(30),
        || async {
            let draining = envoy
                .stat("listener_manager.total_listeners_draining")
                .await?;
            Ok((draining == Some(0)).then_some(()))
        },
    )
    .await
    .unwrap();
}

/// Version 1 at 5 %, then version 2 at 25 % pushed live: every earlier canary key stays canary.
/// Then an invalid version 3 is pushed: the filter refuses it with the core's one-line message
/// and `knhk.config.rejected`, but not the plugin (a refused plugin would make Envoy reject the
/// whole update — in Istio's ECDS shape, fail every request): the new listener's filter keeps
/// version 2, the last good configuration, and routing does not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_weight_change_and_refused_update() {
    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    let listener = paths::test_template("lds-listener.yaml");
    let mut spec = EnvoySpec {
        template: paths::test_template("lds-bootstrap.yaml"),
        extra_files: vec![(LDS_FILE.to_string(), listener.clone())],
        // A replaced listener drains its connections (and its plugin instances) for this long.
        extra_args: vec!["--drain-time-s".to_string(), "1".to_string()],
        ..EnvoySpec::e2e(
            "reconfigure",
            &config(1, 500).to_string(),
            stable.port(),
            canary.port(),
        )
        .unwrap()
    };
    // The log file is flushed often, so the test can wait on it.
    spec.flush_log_often();
    let envoy = Envoy::start(&spec).await.unwrap();
    let client = Client::fresh_connections(&envoy.base_url()).unwrap();
    let keys: Vec<String> = (0..1_000).map(|i| format!("live-{i}")).collect();

    wait_for_version(&client, 1).await;
    let at_5 = canary_keys(&client, &keys, 1, 500).await;

    envoy
        .push_file(LDS_FILE, &listener, &config(2, 2500).to_string())
        .unwrap();
    wait_for_version(&client, 2).await;
    let at_25 = canary_keys(&client, &keys, 2, 2500).await;
    let lost: Vec<&String> = at_5.difference(&at_25).take(10).collect();
    assert!(lost.is_empty(), "keys left canary on a live ramp: {lost:?}");
    assert!(at_25.len() > at_5.len());
    // While the replaced listener drains, its plugin instances still flush their own version
    // to the shared gauge; once it is gone only version 2 reports.
    wait_drained(&envoy).await;
    envoy
        .wait_metric("knhk.config.version", Duration::from_secs(10), |v| v == 2.0)
        .await
        .unwrap();

    let mut invalid = config(3, 2500);
    invalid["admission"]["classes"]["R1"]["window_ms"] = 0.into();
    let expected = Policy::from_json(invalid.to_string().as_bytes())
        .unwrap_err()
        .to_string();
    envoy
        .push_file(LDS_FILE, &listener, &invalid.to_string())
        .unwrap();
    envoy
        .wait_log_line(Duration::from_secs(30), |l| {
            l.contains("the refused configuration is not applied; config version 2 stays in force")
        })
        .await
        .unwrap();
    let log = envoy.log();
    let lines = rejection_lines(&log);
    assert!(!lines.is_empty(), "no rejection line:\n{log}");
    assert!(
        lines.iter().all(|l| l.contains(&expected)),
        "{lines:?} lack the core's message {expected:?}"
    );
    envoy
        .wait_metric("knhk.config.rejected", Duration::from_secs(10), |v| {
            v >= 1.0
        })
        .await
        .unwrap();

    assert!(
        envoy.is_ready().await,
        "envoy not ready after a refused update"
    );
    let still = canary_keys(&client, &keys, 2, 2500).await;
    assert_eq!(still, at_25, "routing changed after a refused update");
    wait_drained(&envoy).await;
    let mut seen = BTreeSet::new();
    for _ in 0..10 {
        // Reads over several ticks: only version 2 is in force anywhere.
        let value = envoy.metric("knhk.config.version").await.unwrap();
        seen.insert(value.map(|v| v as u64));
        tokio::time::sleep(knhk_e2e::wait::POLL_INTERVAL).await;
    }
    assert_eq!(
        seen,
        BTreeSet::from([Some(2)]),
        "config version gauge after a refused update"
    );
}
