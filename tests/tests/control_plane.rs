//! Signed config push and receipts, filter side, against the real Envoy with the real filter
//! and a control plane that misbehaves on purpose (`knhk_e2e::control_double`, a labelled test
//! double of the agent's protocol: the real agent never serves forged, stale or invalid
//! configs). Every worker applies a verified epoch; forged, replayed and invalid configs are
//! refused with a counter and a log line while traffic stays on the last good config; a config
//! signed by the current key hands trust over to the next key; receipts reach the agent with
//! the hashed key, route, status and epoch, and survive an agent that cannot commit for a while.

// An integration test binary: failing loudly on the first broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::Duration;

use axum::http::StatusCode;
use knhk_e2e::client::{concurrent, Client};
use knhk_e2e::control_double::{payload, ControlDouble, TestKey};
use knhk_e2e::envoy::Envoy;
use knhk_e2e::rig::{base_config, control_section, oracle, ControlledRig};
use knhk_e2e::wait::poll;

const SALT: &str = "s1";
const WAIT: Duration = Duration::from_secs(30);

fn policy(bp: u16) -> serde_json::Value {
    let mut p = base_config();
    p["routing"]["canary_basis_points"] = bp.into();
    p
}

/// Send `n` requests on fresh connections (both workers) and return each decision's
/// (version, route) pair.
async fn decisions(client: &Client, tag: &str, n: usize) -> Vec<(String, String)> {
    let keys: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    concurrent(keys, 8, |key| {
        let client = client.clone();
        async move {
            let reply = client.get("/api", &[("x-user-id", &key)]).await?;
            anyhow::ensure!(reply.status == 200, "request failed: {}", reply.describe());
            let d = reply.decision().unwrap_or_default();
            Ok((
                d.get("version").unwrap_or("").to_string(),
                d.get("route").unwrap_or("").to_string(),
            ))
        }
    })
    .await
    .unwrap()
}

/// Poll until every one of 40 fresh-connection requests was decided under `version` and went `route`.
async fn all_workers_on(client: &Client, version: u64, route: &str) {
    let want = (version.to_string(), route.to_string());
    poll(
        &format!("all workers on epoch {version} ({route})"),
        WAIT,
        || {
            let want = want.clone();
            async move {
                Ok(decisions(client, "probe", 40)
                    .await
                    .iter()
                    .all(|d| *d == want)
                    .then_some(()))
            }
        },
    )
    .await
    .unwrap();
}

/// Wait until `knhk_config_rejected` rose by at least 2 (each worker refused at least once).
async fn refused_by_both(envoy: &Envoy, before: u64) -> u64 {
    envoy
        .wait_metric("knhk_config_rejected", WAIT, |v| v >= (before + 2) as f64)
        .await
        .unwrap() as u64
}

/// The whole push lifecycle on one Envoy with two workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_push_refusals_handover_and_receipts() {
    let agent = ControlDouble::start().await.unwrap();
    let (a, b, mallory) = (TestKey::new(1, 1), TestKey::new(2, 2), TestKey::new(66, 1));

    let mut static_config = policy(0);
    static_config["control"] = control_section(&[a.public()]);
    // Epoch 1 is waiting before Envoy starts: every worker must pick it up by itself.
    agent.install(1, a.seal(&payload(1, &policy(10_000), None)));
    let rig = ControlledRig::start("control", &static_config, agent.port())
        .await
        .unwrap();
    let (envoy, client) = (&rig.envoy, &rig.client);
    all_workers_on(client, 1, "canary").await;
    // Envoy runs a VM per worker plus one on the main thread; each polls and applies once.
    // Counters reach Envoy on the next tick, so wait for both workers' applies to show.
    let applied = envoy
        .wait_metric("knhk_config_applied", WAIT, |v| v >= 2.0)
        .await
        .unwrap();
    assert!(applied <= 3.0, "one apply per VM, got {applied}");

    // Forged: right key id and version, wrong private key.
    let rejected = envoy.counter("knhk_config_rejected").await.unwrap();
    agent.install(2, mallory.seal(&payload(2, &policy(0), None)));
    let rejected = refused_by_both(envoy, rejected).await;
    assert!(decisions(client, "forged", 40)
        .await
        .iter()
        .all(|d| d.0 == "1" && d.1 == "canary"));
    envoy
        .wait_log_line(WAIT, |l| {
            l.contains("no trusted signature (signature does not verify)")
        })
        .await
        .unwrap();

    // Replay: a genuinely signed but older epoch.
    agent.install(3, a.seal(&payload(1, &policy(0), None)));
    let rejected = refused_by_both(envoy, rejected).await;
    assert!(decisions(client, "stale", 40)
        .await
        .iter()
        .all(|d| d.0 == "1" && d.1 == "canary"));
    envoy
        .wait_log_line(WAIT, |l| {
            l.contains("epoch 1 is not newer than epoch 1 in force")
        })
        .await
        .unwrap();

    // Signed but invalid policy: refused naming the field.
    agent.install(4, a.seal(&payload(5, &policy(10_001), None)));
    refused_by_both(envoy, rejected).await;
    assert!(decisions(client, "invalid", 40)
        .await
        .iter()
        .all(|d| d.0 == "1" && d.1 == "canary"));
    envoy
        .wait_log_line(WAIT, |l| l.contains("field `routing.canary_basis_points`"))
        .await
        .unwrap();

    // Handover: signed by A, announcing B; then an epoch signed by B alone is accepted.
    agent.install(
        6,
        a.seal(&payload(6, &policy(10_000), Some(vec![b.public()]))),
    );
    all_workers_on(client, 6, "canary").await;
    agent.install(7, b.seal(&payload(7, &policy(0), None)));
    all_workers_on(client, 7, "stable").await;
    // A is no longer trusted after the handover.
    let rejected = envoy.counter("knhk_config_rejected").await.unwrap();
    agent.install(8, a.seal(&payload(8, &policy(10_000), None)));
    refused_by_both(envoy, rejected).await;
    assert!(decisions(client, "after-handover", 40)
        .await
        .iter()
        .all(|d| d.0 == "7" && d.1 == "stable"));

    // Receipts: hashed keys, never raw; route, status and epoch as decided; both workers.
    let keys: Vec<String> = (0..50).map(|i| format!("receipt-{i}")).collect();
    for key in &keys {
        client.get("/api", &[("x-user-id", key)]).await.unwrap();
    }
    let wanted: BTreeSet<[u8; 16]> = keys.iter().map(|k| oracle(SALT, k).key_digest).collect();
    let received = poll("receipts of the 50 keys", WAIT, || {
        let (agent, wanted) = (agent.clone(), wanted.clone());
        async move {
            let got = agent.receipts();
            let seen: BTreeSet<[u8; 16]> = got.iter().map(|r| r.key_digest).collect();
            Ok(wanted.is_subset(&seen).then_some(got))
        }
    })
    .await
    .unwrap();
    for r in received.iter().filter(|r| wanted.contains(&r.key_digest)) {
        assert_eq!(
            (r.route.map(|x| x.as_str()), r.status, r.config_epoch),
            (Some("stable"), 200, 7),
            "{r:?}"
        );
    }
    // Both workers send receipts, each under its own worker id. The kernel spreads new
    // connections over the workers at random: keep sending fresh-connection requests (a
    // bounded number) until both have answered some.
    let mut sent = 0;
    let workers = poll("receipts from both workers", WAIT, || {
        sent += 1;
        let (agent, client, round) = (agent.clone(), client.clone(), sent);
        async move {
            let workers: BTreeSet<u32> = agent.receipts().iter().map(|r| r.worker_id).collect();
            if workers.len() >= 2 {
                return Ok(Some(workers));
            }
            for i in 0..20 {
                client
                    .get("/api", &[("x-user-id", &format!("spread-{round}-{i}"))])
                    .await?;
            }
            Ok(None)
        }
    })
    .await;
    assert!(
        workers.is_ok(),
        "{workers:?}; connections per worker: {:?}",
        envoy.worker_connections().await
    );
    // An agent that cannot commit: batches are retried, traffic is unaffected, nothing is lost.
    agent.set_receipt_status(StatusCode::SERVICE_UNAVAILABLE);
    let outage: Vec<String> = (0..30).map(|i| format!("outage-{i}")).collect();
    for key in &outage {
        assert_eq!(
            client
                .get("/api", &[("x-user-id", key)])
                .await
                .unwrap()
                .status,
            200
        );
    }
    envoy
        .wait_metric("knhk_receipts_flush_errors", WAIT, |v| v >= 1.0)
        .await
        .unwrap();
    agent.set_receipt_status(StatusCode::OK);
    let outage_digests: BTreeSet<[u8; 16]> =
        outage.iter().map(|k| oracle(SALT, k).key_digest).collect();
    poll("receipts from the outage", WAIT, || {
        let (agent, outage_digests) = (agent.clone(), outage_digests.clone());
        async move {
            let seen: BTreeSet<[u8; 16]> = agent.receipts().iter().map(|r| r.key_digest).collect();
            Ok(outage_digests.is_subset(&seen).then_some(()))
        }
    })
    .await
    .unwrap();
    assert_eq!(envoy.counter("knhk_receipts_dropped").await.unwrap(), 0);
}
