//! The real agent and the real Envoy: a policy change pushed through the long-poll reaches
//! every worker (propagation measured and printed), receipts flow into the agent's Merkle log,
//! and an agent killed with SIGKILL under load loses no acknowledged receipt, keeps its epoch,
//! and the filter resumes flushing while traffic never stops.

// An integration test binary: failing loudly on the first broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use knhk_e2e::stats::Distribution;
use std::time::{Duration, Instant};

use knhk_e2e::agent::AgentProcess;
use knhk_e2e::client::Client;
use knhk_e2e::load::{Load, LoadStats};
use knhk_e2e::paths;
use knhk_e2e::rig::{base_config, control_section, ControlledRig};
use knhk_e2e::wait::poll;

const WAIT: Duration = Duration::from_secs(30);
/// Consecutive fresh-connection requests that must all show the new epoch (both workers).
const CONFIRM: usize = 16;

fn policy(bp: u16) -> serde_json::Value {
    let mut p = base_config();
    p["routing"]["canary_basis_points"] = bp.into();
    p
}

/// Time from `since` until `CONFIRM` consecutive fresh-connection requests were decided
/// under `epoch`, polling without pause.
async fn propagation(client: &Client, epoch: u64, since: Instant) -> Duration {
    let want = epoch.to_string();
    let mut streak = 0;
    let mut n = 0u64;
    while streak < CONFIRM {
        assert!(
            since.elapsed() < WAIT,
            "epoch {epoch} did not reach every worker"
        );
        n += 1;
        let reply = client
            .get("/api", &[("x-user-id", &format!("p{n}"))])
            .await
            .unwrap();
        let d = reply.decision().unwrap_or_default();
        if d.get("version") == Some(want.as_str()) {
            streak += 1;
        } else {
            streak = 0;
        }
    }
    since.elapsed()
}

/// Push, measure, crash, recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_agent_push_receipts_and_crash_recovery() {
    let dir = paths::scratch_dir()
        .join("e2e")
        .join(format!("agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut agent = AgentProcess::start(&dir, None).await.unwrap();
    let first = agent.put_policy(&policy(0)).await.unwrap();
    let keys = agent.config_keys().await.unwrap();

    let mut static_config = policy(0);
    static_config["control"] = control_section(&keys);
    let rig = ControlledRig::start("agent", &static_config, agent.port())
        .await
        .unwrap();
    let (envoy, client) = (&rig.envoy, &rig.client);
    propagation(client, first, Instant::now()).await;

    // Propagation from a PUT returning to every worker deciding under the new epoch.
    let mut samples = Vec::new();
    let mut epoch = first;
    for i in 0..20u16 {
        let bp = if i % 2 == 0 { 10_000 } else { 0 };
        epoch = agent.put_policy(&policy(bp)).await.unwrap();
        let since = Instant::now();
        samples.push(propagation(client, epoch, since).await);
    }
    let samples = Distribution::of_durations(samples);
    println!(
        "config propagation, PUT → {CONFIRM} consecutive fresh-connection requests on the new epoch (both workers), n={}: p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        samples.duration_at(50.0),
        samples.duration_at(99.0),
        samples.duration_at(100.0)
    );

    // Receipts flow into the agent's log.
    let load = Load::start(
        Client::new(&envoy.base_url()).unwrap(),
        4,
        Duration::from_millis(5),
        |n| {
            (
                "/api".to_string(),
                vec![("x-user-id".to_string(), format!("load-{n}"))],
            )
        },
    );
    let before_kill = poll("receipts in the agent's log", WAIT, || async {
        Ok(agent.log_size().await.ok().filter(|&n| n >= 200))
    })
    .await
    .unwrap();

    // SIGKILL mid-stream; traffic keeps flowing on the last good config.
    agent.kill9();
    let errors_before = envoy.counter("knhk_receipts_flush_errors").await.unwrap();
    envoy
        .wait_metric("knhk_receipts_flush_errors", WAIT, |v| {
            v > errors_before as f64
        })
        .await
        .unwrap();
    let served_while_down = LoadStats::get(&load.stats.responses);
    poll("traffic while the agent is down", WAIT, || async {
        Ok((LoadStats::get(&load.stats.responses) > served_while_down + 100).then_some(()))
    })
    .await
    .unwrap();
    let last = client
        .get("/api", &[("x-user-id", "while-down")])
        .await
        .unwrap();
    assert_eq!(last.status, 200);
    assert_eq!(
        last.decision().unwrap().get("version"),
        Some(epoch.to_string().as_str())
    );

    // Restart on the same port and data: the filter resumes flushing.
    let agent = AgentProcess::start(&dir, Some(agent.port())).await.unwrap();
    let stats = load.stop().await;
    assert_eq!(
        LoadStats::get(&stats.errors),
        0,
        "no transport errors under load"
    );
    assert_eq!(
        LoadStats::get(&stats.status_5xx),
        0,
        "no 5xx while the agent was down"
    );
    // Everything the filter holds drains: the sent counter stops moving and nothing was dropped.
    let sent = poll("the filter's receipt buffer to drain", WAIT, || async {
        let a = envoy.counter("knhk_receipts_sent").await?;
        let size = agent.log_size().await?;
        // Receipts of the load, plus the probes; stable once the log holds everything sent.
        Ok((size >= a && a > before_kill).then_some(a))
    })
    .await
    .unwrap();
    assert_eq!(envoy.counter("knhk_receipts_dropped").await.unwrap(), 0);
    let size = agent.log_size().await.unwrap();
    assert!(
        size >= sent,
        "every acknowledged receipt survived SIGKILL: log {size} < acknowledged {sent}"
    );

    // The epoch survived the crash: the next policy gets a higher one and reaches every worker.
    let next = agent.put_policy(&policy(10_000)).await.unwrap();
    assert!(
        next > epoch,
        "epoch went from {epoch} to {next} across a crash"
    );
    propagation(client, next, Instant::now()).await;
}
