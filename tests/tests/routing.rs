//! Canary routing through the real Envoy (two workers) with the real filter, checked request by
//! request against `knhk-core`'s bucketing as the oracle.

// An integration test binary: failing loudly on the first broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use knhk_e2e::client::{concurrent, Client, Reply};
use knhk_e2e::rig::{base_config, oracle, oracle_route, Rig};
use std::collections::BTreeSet;

const SALT: &str = "s1";

/// Send one request per key (header `x-user-id`) and return `(key, reply)` pairs in key order.
async fn route_keys(client: &Client, keys: &[String], path: &str) -> Vec<(String, Reply)> {
    concurrent(keys.to_vec(), 32, |key| {
        let client = client.clone();
        let path = path.to_string();
        async move {
            let reply = client.get(&path, &[("x-user-id", &key)]).await?;
            Ok((key, reply))
        }
    })
    .await
    .unwrap()
}

/// Assert every reply came from the upstream the core assigns at `bp`; return the canary keys.
fn assert_oracle(replies: &[(String, Reply)], bp: u16) -> BTreeSet<String> {
    let wrong: Vec<String> = replies
        .iter()
        .filter(|(key, reply)| {
            reply.status != 200 || reply.upstream() != Some(oracle_route(SALT, key, bp))
        })
        .take(10)
        .map(|(key, reply)| {
            format!(
                "{key}: expected {} got {}",
                oracle_route(SALT, key, bp),
                reply.describe()
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "requests routed unlike the core at {bp} bp:\n{}",
        wrong.join("\n")
    );
    replies
        .iter()
        .filter(|(_, r)| r.upstream() == Some("canary"))
        .map(|(k, _)| k.clone())
        .collect()
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// The first key (from a deterministic sequence) that the core routes to `route` at `bp`.
fn key_routed(bp: u16, route: &str, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|k| oracle_route(SALT, k, bp) == route)
        .unwrap()
}

fn config_with_bp(bp: u16) -> serde_json::Value {
    let mut config = base_config();
    config["routing"]["canary_basis_points"] = bp.into();
    config
}

/// 10,000 distinct keys at 10 % and at 33.33 %: every request lands where the core says, the
/// debug header reports the core's bucket, and the canary share is within ±1 point of the weight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_matches_core_for_every_request() {
    let mut rig = Rig::start("split", &config_with_bp(1000)).await.unwrap();
    let keys = keys("split", 10_000);
    for bp in [1000u16, 3333] {
        if bp != 1000 {
            rig.restart(&config_with_bp(bp)).await.unwrap();
        }
        let replies = route_keys(&rig.client, &keys, "/api/items").await;
        let canary = assert_oracle(&replies, bp);
        for (key, reply) in replies.iter().take(200) {
            let decision = reply.decision().unwrap();
            assert_eq!(
                decision.number("bucket"),
                Some(oracle(SALT, key).routing),
                "{key}"
            );
            assert_eq!(
                decision.number("priority"),
                Some(oracle(SALT, key).priority),
                "{key}"
            );
            assert_eq!(decision.get("reason"), Some("weighted"), "{key}");
        }
        let share = canary.len() as f64 / keys.len() as f64;
        let expected = f64::from(bp) / 10_000.0;
        assert!(
            (share - expected).abs() <= 0.01,
            "canary share {share:.4} at {bp} bp (expected {expected:.4} ± 0.01)"
        );
    }
}

/// The same key 200 times on 200 new connections (spread over both workers) always reaches
/// the same upstream, for a canary key and for a stable key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_is_sticky_across_workers() {
    let rig = Rig::start("sticky", &config_with_bp(1000)).await.unwrap();
    let fresh = rig.fresh_client().unwrap();
    for route in ["canary", "stable"] {
        let key = key_routed(1000, route, "sticky");
        let replies = concurrent(vec![key.clone(); 200], 8, |key| {
            let fresh = fresh.clone();
            async move { fresh.get("/api/cart", &[("x-user-id", &key)]).await }
        })
        .await
        .unwrap();
        let seen: BTreeSet<Option<&str>> = replies.iter().map(Reply::upstream).collect();
        assert_eq!(
            seen,
            BTreeSet::from([Some(route)]),
            "key {key} was not sticky"
        );
    }
    let workers = rig.envoy.worker_connections().await.unwrap();
    assert!(
        workers.len() == 2 && workers.iter().all(|c| *c > 0),
        "both workers must have served connections, got {workers:?}"
    );
}

/// Ramping 5 % → 25 % → 50 % (Envoy restarted with each weight) keeps every earlier canary key
/// on canary; ramping back down to 25 % returns exactly the keys that 25 % had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramp_is_monotonic() {
    let mut rig = Rig::start("ramp", &config_with_bp(500)).await.unwrap();
    let keys = keys("ramp", 2_000);
    let mut previous: BTreeSet<String> = BTreeSet::new();
    let mut at_25 = BTreeSet::new();
    for (i, bp) in [500u16, 2500, 5000].into_iter().enumerate() {
        if i > 0 {
            rig.restart(&config_with_bp(bp)).await.unwrap();
        }
        let canary = assert_oracle(&route_keys(&rig.client, &keys, "/").await, bp);
        let lost: Vec<&String> = previous.difference(&canary).take(10).collect();
        assert!(
            lost.is_empty(),
            "keys left canary when ramping up to {bp} bp: {lost:?}"
        );
        assert!(
            canary.len() > previous.len(),
            "ramp to {bp} bp added no canary keys"
        );
        if bp == 2500 {
            at_25 = canary.clone();
        }
        previous = canary;
    }
    rig.restart(&config_with_bp(2500)).await.unwrap();
    let down = assert_oracle(&route_keys(&rig.client, &keys, "/").await, 2500);
    assert_eq!(
        down, at_25,
        "ramping back to 25 % must restore exactly the 25 % canary set"
    );
}

/// With the force header enabled, `always` sends a stable key to canary and `never` a canary key
/// to stable (reason `forced`); other values are ignored. Disabled, the header changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_header_only_when_enabled() {
    let mut rig = Rig::start("force", &config_with_bp(1000)).await.unwrap();
    let stable_key = key_routed(1000, "stable", "force");
    let canary_key = key_routed(1000, "canary", "force");

    let get = |client: Client, key: String, force: &'static str| async move {
        client
            .get(
                "/api/items",
                &[("x-user-id", &key), ("x-knhk-canary", force)],
            )
            .await
            .unwrap()
    };
    let r = get(rig.client.clone(), stable_key.clone(), "always").await;
    assert_eq!(r.upstream(), Some("canary"), "{}", r.describe());
    assert_eq!(r.decision().unwrap().get("reason"), Some("forced"));
    let r = get(rig.client.clone(), canary_key.clone(), "never").await;
    assert_eq!(r.upstream(), Some("stable"), "{}", r.describe());
    assert_eq!(r.decision().unwrap().get("reason"), Some("forced"));
    let r = get(rig.client.clone(), stable_key.clone(), "maybe").await;
    assert_eq!(
        r.upstream(),
        Some("stable"),
        "unknown force value must be ignored: {}",
        r.describe()
    );

    let mut disabled = config_with_bp(1000);
    disabled["routing"]["force_header"]["enabled"] = false.into();
    rig.restart(&disabled).await.unwrap();
    let r = get(rig.client.clone(), stable_key.clone(), "always").await;
    assert_eq!(
        r.upstream(),
        Some("stable"),
        "disabled force header honoured: {}",
        r.describe()
    );
    assert_eq!(r.decision().unwrap().get("reason"), Some("weighted"));
    let r = get(rig.client.clone(), canary_key.clone(), "never").await;
    assert_eq!(
        r.upstream(),
        Some("canary"),
        "disabled force header honoured: {}",
        r.describe()
    );
}

/// Excluded paths and hosts go to stable without a route decision, even for canary keys and even
/// when the client sends its own `x-knhk-route: canary`; the filter overwrites a spoofed route
/// header on routed requests too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusions_and_spoofed_route_header() {
    let rig = Rig::start("exclude", &config_with_bp(5000)).await.unwrap();
    let canary_key = key_routed(5000, "canary", "excl");
    let stable_key = key_routed(5000, "stable", "excl");

    for (path, host) in [
        ("/healthz", None),
        ("/healthz/deep?x=1", None),
        ("/api/items", Some("internal.example")),
        ("/api/items", Some("INTERNAL.example")),
    ] {
        let mut headers = vec![("x-user-id", canary_key.as_str())];
        if let Some(host) = host {
            headers.push(("host", host));
        }
        let r = rig.client.get(path, &headers).await.unwrap();
        assert_eq!(
            r.upstream(),
            Some("stable"),
            "{path} {host:?}: {}",
            r.describe()
        );
        assert_eq!(
            r.decision().unwrap().get("reason"),
            Some("excluded"),
            "{path} {host:?}"
        );
        assert_eq!(
            r.upstream_saw("x-knhk-route"),
            None,
            "{path} {host:?}: excluded request got a route header"
        );

        headers.push(("x-knhk-route", "canary"));
        let r = rig.client.get(path, &headers).await.unwrap();
        assert_eq!(
            r.upstream(),
            Some("stable"),
            "{path} {host:?}: a client-sent route header steered an excluded request: {}",
            r.describe()
        );
    }

    let r = rig
        .client
        .get(
            "/api/items",
            &[("x-user-id", &stable_key), ("x-knhk-route", "canary")],
        )
        .await
        .unwrap();
    assert_eq!(
        r.upstream(),
        Some("stable"),
        "spoofed route header won: {}",
        r.describe()
    );
    assert_eq!(r.upstream_saw("x-knhk-route").as_deref(), Some("stable"));
    // No flags are configured: a client's flags header does not reach the upstream either.
    let r = rig
        .client
        .get(
            "/api/items",
            &[("x-user-id", &stable_key), ("x-knhk-flags", "admin,beta")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.upstream_saw("x-knhk-flags"), None, "{}", r.body);
    let r = rig
        .client
        .get("/healthzz-not-a-boundary", &[("x-user-id", &canary_key)])
        .await
        .unwrap();
    assert_eq!(
        r.decision().unwrap().get("reason"),
        Some("excluded"),
        "path prefixes match as prefixes"
    );
    let r = rig
        .client
        .get("/api/healthz", &[("x-user-id", &canary_key)])
        .await
        .unwrap();
    assert_eq!(
        r.upstream(),
        Some("canary"),
        "only prefixes are excluded: {}",
        r.describe()
    );
}

/// Key sources are tried in configured order (header, cookie, query), empty values are skipped,
/// and without any key the filter buckets Envoy's `x-request-id` (reason still `weighted`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_source_order() {
    let rig = Rig::start("keys", &config_with_bp(5000)).await.unwrap();
    let bucket = |r: &Reply| r.decision().unwrap().number("bucket");
    let expect = |key: &str| Some(oracle(SALT, key).routing);
    let check = |r: &Reply, key: &str, what: &str| {
        assert_eq!(bucket(r), expect(key), "{what}: {}", r.describe());
        assert_eq!(
            r.upstream(),
            Some(oracle_route(SALT, key, 5000)),
            "{what}: {}",
            r.describe()
        );
    };

    let all = rig
        .client
        .get(
            "/p?user=q-key",
            &[("x-user-id", "h-key"), ("cookie", "a=1; uid=c-key; b=2")],
        )
        .await
        .unwrap();
    check(&all, "h-key", "header beats cookie and query");
    let no_header = rig
        .client
        .get("/p?x=1&user=q-key&y=2", &[("cookie", "a=1; uid=c-key")])
        .await
        .unwrap();
    check(&no_header, "c-key", "cookie beats query");
    let empty_header = rig
        .client
        .get(
            "/p?user=q-key",
            &[("x-user-id", ""), ("cookie", "uid=c-key")],
        )
        .await
        .unwrap();
    check(&empty_header, "c-key", "empty header value is skipped");
    let query_only = rig.client.get("/p?x=1&user=q-key", &[]).await.unwrap();
    check(&query_only, "q-key", "query when nothing else");
    let other_cookie = rig
        .client
        .get("/p?user=q-key", &[("cookie", "uidx=nope; xuid=no")])
        .await
        .unwrap();
    check(&other_cookie, "q-key", "cookie names match exactly");

    let none = rig.client.get("/p", &[]).await.unwrap();
    let request_id = none
        .upstream_saw("x-request-id")
        .expect("envoy forwards x-request-id");
    check(&none, &request_id, "x-request-id fallback");
    assert_eq!(none.decision().unwrap().get("reason"), Some("weighted"));
    let given = rig
        .client
        .get("/p", &[("x-request-id", "rid-123")])
        .await
        .unwrap();
    let seen = given.upstream_saw("x-request-id").unwrap();
    check(
        &given,
        &seen,
        "x-request-id fallback uses the id Envoy forwards",
    );
}

/// With the fallback disabled, a request without any key is not bucketed (reason `nokey`) and
/// goes to stable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_without_fallback_goes_stable() {
    let mut config = config_with_bp(10_000);
    config["routing"]["fallback_to_request_id"] = false.into();
    let rig = Rig::start("nokey", &config).await.unwrap();
    let r = rig.client.get("/p", &[]).await.unwrap();
    assert_eq!(r.upstream(), Some("stable"), "{}", r.describe());
    assert_eq!(
        r.decision().unwrap().get("reason"),
        Some("nokey"),
        "{}",
        r.describe()
    );
    let keyed = rig
        .client
        .get("/p", &[("x-user-id", "anyone")])
        .await
        .unwrap();
    assert_eq!(
        keyed.upstream(),
        Some("canary"),
        "10000 bp sends every keyed request to canary"
    );
}
