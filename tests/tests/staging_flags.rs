//! The staging audience (`routing.audience`) and feature flags (`flags`) through the real Envoy
//! with the real filter, checked request by request against `knhk-core` as the oracle.

// An integration test binary: failing loudly on the first broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use knhk_core::Policy;
use knhk_e2e::client::{concurrent, Client, Reply};
use knhk_e2e::envoy::{rejection_lines, Envoy};
use knhk_e2e::rig::{base_config, oracle, Rig};
use knhk_e2e::upstream::Upstream;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;

const SALT: &str = "s1";
const FLAGS_HEADER: &str = "x-knhk-flags";

/// Extra request headers of one case.
type Headers = &'static [(&'static str, &'static str)];

/// The base config at weight 0 with `audience` as `routing.audience`.
fn audience_config(audience: serde_json::Value) -> serde_json::Value {
    let mut config = base_config();
    config["routing"]["canary_basis_points"] = 0.into();
    config["routing"]["audience"] = audience;
    config
}

/// GET `/api/items` once per key with `extra` headers; `(key, reply)` pairs in key order.
async fn get_keys(client: &Client, keys: Vec<String>, extra: Headers) -> Vec<(String, Reply)> {
    concurrent(keys, 32, |key| {
        let client = client.clone();
        async move {
            let mut headers = vec![("x-user-id", key.as_str())];
            headers.extend_from_slice(extra);
            let reply = client.get("/api/items", &headers).await?;
            Ok((key, reply))
        }
    })
    .await
    .unwrap()
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Assert every reply came from `upstream` with debug reason `reason`.
fn assert_all(replies: &[(String, Reply)], upstream: &str, reason: &str, what: &str) {
    let wrong: Vec<String> = replies
        .iter()
        .filter(|(_, r)| {
            r.status != 200
                || r.upstream() != Some(upstream)
                || r.decision()
                    .and_then(|d| d.get("reason").map(str::to_string))
                    != Some(reason.to_string())
        })
        .take(10)
        .map(|(k, r)| format!("{k}: {}", r.describe()))
        .collect();
    assert!(
        wrong.is_empty(),
        "{what}: expected {upstream}/{reason}:\n{}",
        wrong.join("\n")
    );
}

/// At weight 0, requests with the audience header or cookie (exact value, or presence when no
/// value is configured) all reach canary with reason `audience`; everyone else, including near
/// misses, stays stable; the force header's `never` still wins and excluded paths are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_header_and_cookie_go_canary_at_weight_zero() {
    let config = audience_config(serde_json::json!({
        "headers": [{"name": "X-Beta", "value": "yes"}, {"name": "x-staff"}],
        "cookies": [{"name": "beta", "value": "yes"}]
    }));
    let rig = Rig::start("audience", &config).await.unwrap();
    let client = rig.fresh_client().unwrap();
    let cases: [(&str, Headers, &str, &str); 8] = [
        ("header", &[("x-beta", "yes")], "canary", "audience"),
        ("presence", &[("x-staff", "anything")], "canary", "audience"),
        (
            "cookie",
            &[("cookie", "a=1; beta=yes")],
            "canary",
            "audience",
        ),
        ("header-miss", &[("x-beta", "no")], "stable", "weighted"),
        (
            "cookie-miss",
            &[("cookie", "beta=no; betas=yes")],
            "stable",
            "weighted",
        ),
        ("nobody", &[], "stable", "weighted"),
        (
            "forced",
            &[("x-beta", "yes"), ("x-knhk-canary", "never")],
            "stable",
            "forced",
        ),
        (
            "cookie-forced",
            &[("cookie", "beta=yes"), ("x-knhk-canary", "never")],
            "stable",
            "forced",
        ),
    ];
    for (label, extra, upstream, reason) in cases {
        let replies = get_keys(&client, keys(label, 200), extra).await;
        assert_all(&replies, upstream, reason, label);
    }
    let excluded = client
        .get("/healthz", &[("x-beta", "yes"), ("x-user-id", "u")])
        .await
        .unwrap();
    assert_eq!(
        excluded.upstream(),
        Some("stable"),
        "{}",
        excluded.describe()
    );
    assert_eq!(excluded.upstream_saw("x-knhk-route"), None);
}

/// With `bucket_ranges` [0, 2500) and [9000, 9100) at weight 0, exactly the keys whose core
/// routing bucket lies in a range reach canary (reason `audience`), over 3,000 keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_ranges_select_exactly_the_oracle_keys() {
    let config = audience_config(serde_json::json!({
        "bucket_ranges": [{"from": 0, "to": 2500}, {"from": 9000, "to": 9100}]
    }));
    let rig = Rig::start("audience-ranges", &config).await.unwrap();
    let replies = get_keys(&rig.client, keys("range", 3_000), &[]).await;
    let mut canary = 0usize;
    let wrong: Vec<String> = replies
        .iter()
        .filter(|(key, reply)| {
            let bucket = oracle(SALT, key).routing;
            let inside = bucket < 2500 || (9000..9100).contains(&bucket);
            canary += usize::from(inside);
            let (upstream, reason) = if inside {
                ("canary", "audience")
            } else {
                ("stable", "weighted")
            };
            let decision = reply.decision().unwrap_or_default();
            reply.upstream() != Some(upstream)
                || decision.get("reason") != Some(reason)
                || decision.number("bucket") != Some(bucket)
        })
        .take(10)
        .map(|(key, reply)| {
            format!(
                "{key} (bucket {}): {}",
                oracle(SALT, key).routing,
                reply.describe()
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "routed unlike the core:\n{}",
        wrong.join("\n")
    );
    assert!(
        (600..=1000).contains(&canary),
        "{canary} of 3000 keys in 26 % of the buckets"
    );
}

/// The flags header the upstream sees equals the core oracle's value for each of 2,000 keys
/// (absent when no flag is on), even when the client sends its own (twice); an excluded request
/// keeps the client's header untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_header_matches_the_core_and_replaces_spoofs() {
    let mut config = base_config();
    config["flags"] = serde_json::json!({
        "items": [
            {"name": "new-checkout", "basis_points": 500},
            {"name": "wide", "basis_points": 5000},
            {"name": "off", "basis_points": 0}
        ]
    });
    let policy = Policy::from_json(config.to_string().as_bytes()).unwrap();
    let flags = policy.flags.clone().unwrap();
    let rig = Rig::start("flags", &config).await.unwrap();
    let replies = concurrent(keys("flag", 2_000), 32, |key| {
        let client = rig.client.clone();
        async move {
            let mut headers = HeaderMap::new();
            headers.insert("x-user-id", HeaderValue::from_str(&key)?);
            let spoof = HeaderName::from_static(FLAGS_HEADER);
            headers.append(&spoof, HeaderValue::from_static("admin,off"));
            headers.append(spoof, HeaderValue::from_static("everything"));
            let reply = client.get_with("/api/items", headers).await?;
            Ok((key, reply))
        }
    })
    .await
    .unwrap();
    let (mut with_flags, mut without) = (0, 0);
    let wrong: Vec<String> = replies
        .iter()
        .filter(|(key, reply)| {
            let expected = flags.header_value(policy.flags_on(Some(&oracle(SALT, key))));
            if expected.is_some() {
                with_flags += 1;
            } else {
                without += 1;
            }
            reply.status != 200 || reply.upstream_saw(FLAGS_HEADER) != expected
        })
        .take(10)
        .map(|(key, reply)| {
            let expected = flags.header_value(policy.flags_on(Some(&oracle(SALT, key))));
            format!(
                "{key}: expected {expected:?}, upstream saw {:?} ({})",
                reply.upstream_saw(FLAGS_HEADER),
                reply.describe()
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "flags unlike the core:\n{}",
        wrong.join("\n")
    );
    assert!(
        with_flags > 800 && without > 800,
        "both cases exercised: {with_flags} with flags, {without} without"
    );
    let excluded = rig
        .client
        .get("/healthz", &[("x-user-id", "u"), (FLAGS_HEADER, "admin")])
        .await
        .unwrap();
    assert_eq!(
        excluded.upstream_saw(FLAGS_HEADER).as_deref(),
        Some("admin")
    );
}

/// Invalid audience and flags configs (range past 10000, empty audience, duplicate flag, bad flag
/// name, flags header equal to the route header) are each refused with lines carrying the
/// core's message, which names the field path; the plugin runs unconfigured (fail open: the
/// request reaches the default route untouched).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_audience_and_flags_are_refused_with_one_line() {
    let stable = Upstream::start("stable").await.unwrap();
    let canary = Upstream::start("canary").await.unwrap();
    let flag = |name: &str, bp: u16| serde_json::json!({"name": name, "basis_points": bp});
    let cases: [(&str, &str, &str, serde_json::Value); 5] = [
        (
            "range",
            "routing.audience.bucket_ranges[0].to",
            "audience",
            serde_json::json!({"bucket_ranges": [{"from": 0, "to": 10001}]}),
        ),
        (
            "empty",
            "routing.audience",
            "audience",
            serde_json::json!({}),
        ),
        (
            "duplicate",
            "flags.items[1].name",
            "flags",
            serde_json::json!({"items": [flag("a", 1), flag("a", 2)]}),
        ),
        (
            "name",
            "flags.items[0].name",
            "flags",
            serde_json::json!({"items": [flag("New_Checkout", 1)]}),
        ),
        (
            "header",
            "flags.header",
            "flags",
            serde_json::json!({"header": "x-knhk-route"}),
        ),
    ];
    for (label, field, section, value) in cases {
        let mut config = base_config();
        if section == "audience" {
            config["routing"]["audience"] = value;
        } else {
            config["flags"] = value;
        }
        let expected = Policy::from_json(config.to_string().as_bytes())
            .expect_err("the config must be invalid for the core too");
        assert_eq!(expected.field, field, "{label}");
        let mut spec = Rig::spec(&format!("staging-{label}"), &config, &stable, &canary).unwrap();
        spec.flush_log_often();
        let envoy = Envoy::start(&spec).await.unwrap();
        let reply = Client::new(&envoy.base_url())
            .unwrap()
            .get("/api", &[("x-user-id", "u")])
            .await
            .unwrap();
        assert_eq!(
            reply.upstream(),
            Some("stable"),
            "{label}: {}",
            reply.describe()
        );
        assert!(
            reply.decision().is_none(),
            "{label}: a decision without a config"
        );
        envoy
            .wait_log_line(Duration::from_secs(20), |l| {
                l.contains("no valid configuration yet")
            })
            .await
            .unwrap();
        let log = envoy.log();
        let lines = rejection_lines(&log);
        assert!(!lines.is_empty(), "{label}: {log}");
        assert!(
            lines.iter().all(|l| l.contains(&expected.to_string())),
            "{label}: {lines:?} lack {expected}"
        );
    }
}
