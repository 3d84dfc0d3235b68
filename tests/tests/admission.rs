//! R1/W1/C1 admission through the real Envoy: shedding, degrading and shadow mode against a
//! slowed upstream, deterministic by priority bucket, recovering when the upstream is fast again.
//!
//! Every test routes all traffic to the stable upstream (0 bp canary) and slows it to 300 ms,
//! three times R1's 100 ms budget and under W1's 500 ms. With a 2 s window, 20 samples, a
//! 10 % step every 50 ms and a 50 % cap, R1's shed level climbs to 5000 bp within a few seconds and
//! stays there while the upstream is slow: then exactly the keys whose priority bucket is below
//! 5000 are affected.

// An integration test binary: failing loudly on the first broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use knhk_e2e::client::{concurrent, Client, Reply};
use knhk_e2e::load::{Load, LoadStats};
use knhk_e2e::rig::{base_config, oracle, Rig};
use knhk_e2e::wait::poll;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

const SALT: &str = "s1";
const SLOW: Duration = Duration::from_millis(300);
const MAX_LEVEL: f64 = 5000.0;
const LEVEL: &str = "knhk.admission.r1.shed_level_bp";
/// Upper bound for the first shed after the slowdown: the 2 s window plus slack for a busy CI.
const SHED_WITHIN: Duration = Duration::from_secs(6);

fn config(strategy: &str, shadow: bool) -> serde_json::Value {
    let mut config = base_config();
    config["routing"]["canary_basis_points"] = 0.into();
    config["admission"]["shadow"] = shadow.into();
    config["admission"]["classes"]["R1"]["strategy"] = strategy.into();
    config
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("adm-{i}")).collect()
}

/// Keep R1 busy: 8 loops over the keys on `/hot/checkout`, each at most one request per 10 ms.
fn r1_load(client: &Client, keys: &[String]) -> Load {
    let keys = keys.to_vec();
    Load::start(client.clone(), 8, Duration::from_millis(10), move |n| {
        let key = keys[(n as usize) % keys.len()].clone();
        (
            "/hot/checkout".to_string(),
            vec![("x-user-id".to_string(), key)],
        )
    })
}

/// One request per key on `path` with `headers`; replies keyed by routing key.
async fn pass(
    client: &Client,
    keys: &[String],
    path: &str,
    headers: &[(&str, &str)],
) -> BTreeMap<String, Reply> {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    concurrent(keys.to_vec(), 16, |key| {
        let client = client.clone();
        let path = path.to_string();
        let mut headers = headers.clone();
        headers.push(("x-user-id".to_string(), key.clone()));
        async move {
            let refs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            Ok((key, client.get(&path, &refs).await?))
        }
    })
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// Keys the core puts below `level` in priority: the ones a class at `level` bp affects.
fn below(keys: &[String], level: u16) -> Vec<String> {
    keys.iter()
        .filter(|k| oracle(SALT, k).priority < level)
        .cloned()
        .collect()
}

/// Poll passes over `keys` on `/hot/checkout` until one whose affected set (by `affected`)
/// equals the core's priority set at the cap; then require a second identical pass.
async fn assert_deterministic(
    client: &Client,
    keys: &[String],
    affected: fn(&Reply) -> bool,
) -> BTreeMap<String, Reply> {
    let expected: BTreeSet<String> = below(keys, MAX_LEVEL as u16).into_iter().collect();
    let outcome = |replies: &BTreeMap<String, Reply>| -> BTreeSet<String> {
        replies
            .iter()
            .filter(|(_, r)| affected(r))
            .map(|(k, _)| k.clone())
            .collect()
    };
    let last = Mutex::new(BTreeSet::new());
    let first = poll(
        "a pass affecting exactly the lowest-priority half",
        Duration::from_secs(30),
        || async {
            let replies = pass(client, keys, "/hot/checkout", &[]).await;
            let affected = outcome(&replies);
            let matches = affected == expected;
            *last.lock().unwrap() = affected;
            Ok(matches.then_some(replies))
        },
    )
    .await;
    let last = last.into_inner().unwrap();
    let first = first.unwrap_or_else(|e| {
        panic!(
            "{e}: last pass affected {} keys, the core's set has {} (extra: {:?}, missing: {:?})",
            last.len(),
            expected.len(),
            last.difference(&expected).take(5).collect::<Vec<_>>(),
            expected.difference(&last).take(5).collect::<Vec<_>>()
        )
    });
    let second = outcome(&pass(client, keys, "/hot/checkout", &[]).await);
    assert_eq!(
        second, expected,
        "the same keys must get the same outcome at the same level"
    );
    first
}

fn is_shed(r: &Reply) -> bool {
    r.status == 503 && r.admission() == Some("shed")
}

fn is_degraded(r: &Reply) -> bool {
    r.status == 200 && r.admission() == Some("degraded")
}

fn is_shadow_shed(r: &Reply) -> bool {
    r.decision()
        .is_some_and(|d| d.get("admission") == Some("shadow_shed"))
}

/// Strict R1: over budget it sheds exactly the lowest-priority keys with 503, `retry-after` and
/// `x-knhk-admission: shed`, leaves W1 and C1 alone, and stops shedding once the upstream is fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_sheds_lowest_priority_and_recovers() {
    let rig = Rig::start("strict", &config("strict", false))
        .await
        .unwrap();
    let keys = keys(200);
    rig.stable.set_delay(SLOW);
    let load = r1_load(&rig.client, &keys);
    // The window is 2 s and 20 samples arrive within about a second: shedding must begin
    // within the window, give or take scheduling on a busy machine.
    let started = rig.envoy.wait_metric(LEVEL, SHED_WITHIN, |v| v > 0.0).await;
    assert!(
        started.is_ok(),
        "R1 did not start shedding within {SHED_WITHIN:?}: {started:?}"
    );
    rig.envoy
        .wait_metric(LEVEL, Duration::from_secs(30), |v| v >= MAX_LEVEL)
        .await
        .unwrap();

    let replies = assert_deterministic(&rig.client, &keys, is_shed).await;
    for (key, reply) in replies.iter().filter(|(_, r)| is_shed(r)).take(20) {
        assert_eq!(
            reply.header("retry-after"),
            Some("1"),
            "{key}: {}",
            reply.describe()
        );
        assert_eq!(
            reply.upstream(),
            None,
            "{key}: a shed request reached an upstream"
        );
        let decision = reply.decision().unwrap();
        assert_eq!(decision.get("admission"), Some("shed"), "{key}");
        assert_eq!(decision.get("class"), Some("R1"), "{key}");
        assert_eq!(
            decision.number("priority"),
            Some(oracle(SALT, key).priority),
            "{key}"
        );
    }
    for (key, reply) in replies.iter().filter(|(_, r)| !is_shed(r)) {
        assert_eq!(reply.status, 200, "{key}: {}", reply.describe());
        assert_eq!(
            reply.decision().unwrap().get("admission"),
            Some("admitted"),
            "{key}"
        );
    }

    // The same overload, other classes: W1 by default, C1 by the x-batch rule — nothing shed.
    for (what, headers) in [("W1", vec![]), ("C1", vec![("x-batch", "1")])] {
        let replies = pass(&rig.client, &keys, "/api/items", &headers).await;
        for (key, reply) in &replies {
            assert_eq!(reply.status, 200, "{what} {key}: {}", reply.describe());
            assert_eq!(
                reply.admission(),
                None,
                "{what} {key}: {}",
                reply.describe()
            );
            assert_eq!(
                reply.decision().unwrap().get("class"),
                Some(what),
                "{what} {key}"
            );
        }
    }
    // A trusted explicit class header puts a request into R1 on any path.
    let low = below(&keys, MAX_LEVEL as u16);
    let r = rig
        .client
        .get(
            "/api/items",
            &[("x-user-id", &low[0]), ("x-knhk-class", "R1")],
        )
        .await
        .unwrap();
    assert!(
        is_shed(&r),
        "explicit R1 class header on a low-priority key: {}",
        r.describe()
    );

    // Recovery: the upstream is fast again, the level falls to zero and nothing is shed.
    rig.stable.set_delay(Duration::ZERO);
    rig.envoy
        .wait_metric(LEVEL, Duration::from_secs(30), |v| v == 0.0)
        .await
        .unwrap();
    poll(
        "a pass with nothing shed",
        Duration::from_secs(15),
        || async {
            let replies = pass(&rig.client, &keys, "/hot/checkout", &[]).await;
            Ok(replies
                .values()
                .all(|r| r.status == 200 && r.admission().is_none())
                .then_some(()))
        },
    )
    .await
    .unwrap();
    let seen = load.stop().await;
    assert!(
        LoadStats::get(&seen.shed) > 0,
        "the background load never saw a shed"
    );

    let shed = rig
        .envoy
        .wait_metric("knhk.admission.r1.shed", Duration::from_secs(5), |v| {
            v > 0.0
        })
        .await;
    assert!(shed.is_ok(), "r1.shed counter never rose: {shed:?}");
    for counter in [
        "knhk.admission.w1.shed",
        "knhk.admission.c1.shed",
        "knhk.admission.w1.degraded",
    ] {
        assert_eq!(rig.envoy.counter(counter).await.unwrap(), 0, "{counter}");
    }
    for gauge in [
        "knhk.admission.w1.shed_level_bp",
        "knhk.admission.c1.shed_level_bp",
    ] {
        assert_eq!(rig.envoy.metric(gauge).await.unwrap(), Some(0.0), "{gauge}");
    }
}

/// Degrade R1: over budget the lowest-priority keys are demoted to W1 instead of shed; the
/// upstream sees the rewritten `x-knhk-class: W1` and the response says `degraded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degrade_rewrites_class_header() {
    let rig = Rig::start("degrade", &config("degrade", false))
        .await
        .unwrap();
    let keys = keys(200);
    rig.stable.set_delay(SLOW);
    let load = r1_load(&rig.client, &keys);
    rig.envoy
        .wait_metric(LEVEL, Duration::from_secs(30), |v| v >= MAX_LEVEL)
        .await
        .unwrap();
    let replies = assert_deterministic(&rig.client, &keys, is_degraded).await;
    for (key, reply) in replies.iter().filter(|(_, r)| is_degraded(r)) {
        assert_eq!(
            reply.upstream(),
            Some("stable"),
            "{key}: {}",
            reply.describe()
        );
        assert_eq!(
            reply.upstream_saw("x-knhk-class").as_deref(),
            Some("W1"),
            "{key}: {}",
            reply.body
        );
        let decision = reply.decision().unwrap();
        assert_eq!(
            decision.get("class"),
            Some("W1"),
            "{key}: {}",
            reply.describe()
        );
        assert_eq!(
            decision.get("requested"),
            Some("R1"),
            "{key}: {}",
            reply.describe()
        );
        assert_eq!(
            decision.get("admission"),
            Some("degraded"),
            "{key}: {}",
            reply.describe()
        );
    }
    assert!(
        replies.values().all(|r| r.status == 200),
        "degrade must never shed R1"
    );
    load.stop().await;
    let degraded = rig
        .envoy
        .wait_metric("knhk.admission.r1.degraded", Duration::from_secs(5), |v| {
            v > 0.0
        })
        .await;
    assert!(
        degraded.is_ok(),
        "r1.degraded counter never rose: {degraded:?}"
    );
    assert_eq!(
        rig.envoy.counter("knhk.admission.r1.shed").await.unwrap(),
        0
    );
}

/// Shadow mode: the same overload is decided and counted (`shadow_shed`) but never enforced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_counts_but_never_sheds() {
    let rig = Rig::start("shadow", &config("strict", true)).await.unwrap();
    let keys = keys(200);
    rig.stable.set_delay(SLOW);
    let load = r1_load(&rig.client, &keys);
    rig.envoy
        .wait_metric(
            "knhk.admission.r1.shadow_shed",
            Duration::from_secs(30),
            |v| v > 0.0,
        )
        .await
        .unwrap();
    rig.envoy
        .wait_metric(LEVEL, Duration::from_secs(30), |v| v >= MAX_LEVEL)
        .await
        .unwrap();
    let replies = assert_deterministic(&rig.client, &keys, is_shadow_shed).await;
    for (key, reply) in &replies {
        assert_eq!(reply.status, 200, "{key}: {}", reply.describe());
        assert_eq!(reply.admission(), None, "{key}: {}", reply.describe());
        assert_eq!(
            reply.upstream(),
            Some("stable"),
            "{key}: {}",
            reply.describe()
        );
    }
    let seen = load.stop().await;
    assert_eq!(LoadStats::get(&seen.shed), 0, "shadow mode shed a request");
    assert_eq!(
        LoadStats::get(&seen.status_5xx),
        0,
        "shadow mode answered 5xx"
    );
    assert!(LoadStats::get(&seen.responses) > 0);
    assert_eq!(
        rig.envoy.counter("knhk.admission.r1.shed").await.unwrap(),
        0
    );
}

/// With the default `trust_class_header: false` a client does not choose its class, and the
/// upstream receives exactly one class header, the class served: a forged `R1` on a W1 path is
/// corrected to `W1`, and two class headers whose first matches the served class reach the
/// upstream as that one value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_class_header_is_replaced_by_the_class_served() {
    use reqwest::header::{HeaderMap, HeaderValue};
    let mut config = config("strict", false);
    config["admission"]
        .as_object_mut()
        .unwrap()
        .remove("trust_class_header");
    let rig = Rig::start("untrusted-class", &config).await.unwrap();
    let forged = rig
        .client
        .get("/api/items", &[("x-user-id", "u1"), ("x-knhk-class", "R1")])
        .await
        .unwrap();
    assert_eq!(forged.status, 200, "{}", forged.describe());
    assert_eq!(forged.decision().unwrap().get("class"), Some("W1"));
    assert_eq!(forged.upstream_saw("x-knhk-class").as_deref(), Some("W1"));

    let mut headers = HeaderMap::new();
    headers.insert("x-user-id", HeaderValue::from_static("u2"));
    headers.append("x-knhk-class", HeaderValue::from_static("W1"));
    headers.append("x-knhk-class", HeaderValue::from_static("R1"));
    let twice = rig.client.get_with("/api/items", headers).await.unwrap();
    assert_eq!(twice.status, 200, "{}", twice.describe());
    assert_eq!(
        twice.upstream_saw("x-knhk-class").as_deref(),
        Some("W1"),
        "{}",
        twice.body
    );
}
