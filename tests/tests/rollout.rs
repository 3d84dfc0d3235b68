//! Promotion gates end to end: the real agent runs the rollout, the real Envoy with the filter
//! routes by its pushed configs, two test upstreams play v1 (stable) and v2 (candidate), and a
//! recording load shows where every request landed. Measures the rollback time from the
//! candidate turning bad to the last request served by it (goal < 2 s).

// An integration test binary: failing loudly on the first broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use knhk_e2e::rollout::{
    measure_rollback, rollout_spec, tail_off_stable, Fault, Record, Recorder, RolloutRig, KEYS,
};
use serde_json::json;

/// The bound on the rollback, candidate bad → all new requests on stable.
const ROLLBACK_GOAL: Duration = Duration::from_secs(2);

/// Break the candidate mid-canary and check the rollback: within the goal, every key back on
/// stable, keys that were on the candidate before included, the signed event verifying with
/// `knhk-agent verify` and naming `cause`.
async fn rollback_scenario(name: &str, fault: Fault, cause: &str) {
    let rig = RolloutRig::start(name).await.unwrap();
    let run = measure_rollback(&rig, name, fault).await.unwrap();
    println!(
        "rollback ({name}): candidate bad -> decided {:.0} ms -> last request served by it {:.0} ms",
        run.decided.as_secs_f64() * 1000.0,
        run.total.as_secs_f64() * 1000.0
    );
    assert!(
        run.total < ROLLBACK_GOAL,
        "rollback took {:?}, goal {ROLLBACK_GOAL:?}",
        run.total
    );
    let reason = run.status["reason"].as_str().unwrap();
    assert!(reason.contains(cause), "{reason}");
    let (keys, wrong) = tail_off_stable(&run.records, 2 * KEYS as usize);
    assert_eq!(keys.len() as u64, KEYS, "the tail covers every key");
    assert!(
        wrong.is_empty(),
        "after the rollback: {:?}",
        &wrong[..wrong.len().min(5)]
    );
    let on_canary_before: BTreeSet<u64> = run
        .records
        .iter()
        .filter(|r| r.sent < run.broken_at && r.upstream.as_deref() == Some("canary"))
        .map(|r| r.key)
        .collect();
    assert!(
        !on_canary_before.is_empty(),
        "some keys were on the candidate before"
    );
    let event = run.status["history"].as_array().unwrap().last().unwrap();
    assert_eq!(event["action"], "rollback");
    let leaf = event["leaf_index"].as_u64().unwrap();
    let bundle = rig
        .agent
        .get_bytes(&format!("/v1/receipts/{leaf}/proof"))
        .await
        .unwrap();
    let file = rig
        .agent
        .config_path()
        .with_file_name("rollback-proof.json");
    std::fs::write(&file, bundle).unwrap();
    let out = rig.agent.verify(&file).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "verify failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("rollout event") && text.contains(cause),
        "{text}"
    );
}

/// The candidate starts answering 503 mid-canary: rolled back within the goal, every key back
/// on stable, the rollback's signed event verifies and names the success rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidate_5xx_is_rolled_back_within_two_seconds() {
    rollback_scenario("rb-5xx", Fault::Status(503), "success rate").await;
}

/// The candidate starts answering slowly (400 ms against a 150 ms p99 limit): rolled back
/// within the goal with the p99 named as the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_candidate_is_rolled_back_within_two_seconds() {
    rollback_scenario("rb-slow", Fault::Delay(Duration::from_millis(400)), "p99").await;
}

/// The full walk with healthy upstreams: canary 5 % → 25 % (keys on the candidate at 5 % stay
/// there at 25 %) → staging (exactly the `x-beta` audience on the candidate) → production (the
/// candidate is the new stable: everyone on v2), promoted by analysis alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_rollout_walks_to_production() {
    let s = RolloutRig::start("walk").await.unwrap();
    let spec = rollout_spec(
        "walk",
        &json!({
            "steps": [5, 25],
            "direct_to_production": false,
            "staging": {"headers": [{"name": "x-beta", "value": "yes"}]},
            "analysis": {"interval_ms": 50, "window_ms": 3000, "pass_for_ms": 500,
                         "min_samples": 15, "failure_threshold": 2, "max_p99_ms": 150.0}
        }),
    );
    s.call("POST", "/v1/rollouts", Some(spec)).await.unwrap();
    let recorder = Recorder::start(&s.rig.client, 8);
    let (done, _) = s
        .until("production", |st| st["phase"] == "completed")
        .await
        .unwrap();
    recorder
        .wait_after(Instant::now(), 2 * KEYS as usize)
        .await
        .unwrap();
    let records = recorder.stop().await;
    let history = done["history"].as_array().unwrap();
    let gates: Vec<(&str, &str)> = history
        .iter()
        .map(|h| (h["action"].as_str().unwrap(), h["to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        gates,
        [
            ("start", "canary"),
            ("promote", "canary"),
            ("promote", "staging"),
            ("promote", "production")
        ],
        "{done:#}"
    );
    let decided_under = |i: usize| -> Vec<&Record> {
        let epoch = history[i]["epoch"].as_u64().unwrap();
        records.iter().filter(|r| r.epoch == Some(epoch)).collect()
    };
    fn canary(r: &Record) -> bool {
        r.upstream.as_deref() == Some("canary")
    }
    let at5: BTreeSet<u64> = decided_under(0)
        .iter()
        .filter(|r| canary(r))
        .map(|r| r.key)
        .collect();
    let at25 = decided_under(1);
    assert!(!at5.is_empty() && !at25.is_empty());
    let left: Vec<_> = at25
        .iter()
        .filter(|r| at5.contains(&r.key) && !canary(r))
        .take(5)
        .collect();
    assert!(
        left.is_empty(),
        "keys left the candidate as the weight rose: {left:?}"
    );
    let staging = decided_under(2);
    assert!(!staging.is_empty());
    let wrong: Vec<_> = staging
        .iter()
        .filter(|r| r.key.is_multiple_of(5) != canary(r))
        .take(5)
        .collect();
    assert!(
        wrong.is_empty(),
        "staging serves exactly the audience: {wrong:?}"
    );
    let production = decided_under(3);
    assert!(production.len() >= KEYS as usize);
    assert!(
        production.iter().all(|r| canary(r) && r.status == 200),
        "production: everyone on v2"
    );
}

/// Where the core says `key` goes at `bp` under the rollout rigs' salt.
fn expected(key: u64, bp: u16) -> &'static str {
    knhk_e2e::rig::oracle_route("rollout", &format!("user-{key}"), bp)
}

/// Low traffic holds the gate (inconclusive, no promotion); invalid transitions are refused;
/// an agent killed with SIGKILL mid-rollout restarts on the same gate and weight while Envoy
/// keeps routing by the last config; pause/resume work and abort returns every key to stable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_survives_agent_crash_and_obeys_manual_controls() {
    let mut s = RolloutRig::start("crash").await.unwrap();
    let spec = rollout_spec(
        "crash",
        &json!({"steps": [5, 25], "analysis": {"interval_ms": 50, "window_ms": 3000,
                "pass_for_ms": 100, "min_samples": 500, "failure_threshold": 2}}),
    );
    s.call("POST", "/v1/rollouts", Some(spec)).await.unwrap();
    // A trickle of traffic (some of it on the candidate), far below min_samples.
    let deadline = Instant::now() + Duration::from_secs(30);
    let held = loop {
        for key in 0..KEYS {
            s.rig
                .client
                .get("/api", &[("x-user-id", &format!("user-{key}"))])
                .await
                .unwrap();
        }
        let st = s.call("GET", "/v1/rollouts/current", None).await.unwrap();
        if st["evaluations"].as_u64().unwrap_or(0) >= 40
            && st["figures"]["candidate"]["samples"].as_u64().unwrap_or(0) > 0
        {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "no candidate samples counted: {st:#}"
        );
    };
    assert_eq!(held["verdict"]["verdict"], "inconclusive", "{held:#}");
    assert_eq!(
        (held["step"].as_u64(), held["canary_percent"].as_f64()),
        (Some(0), Some(5.0))
    );
    let (status, refused) = s
        .agent
        .call(
            "POST",
            "/v1/rollouts/current/promote",
            Some(&json!({"to": "staging"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "{refused}");
    s.call("POST", "/v1/rollouts/current/promote", None)
        .await
        .unwrap();
    let before = s.call("GET", "/v1/policy", None).await.unwrap();
    // Crash the agent; Envoy keeps the last config; restart on the same port and state.
    let (dir, port) = (s.agent.dir().to_path_buf(), s.agent.port());
    s.agent.kill9();
    for key in 0..KEYS {
        let reply = s
            .rig
            .client
            .get("/api", &[("x-user-id", &format!("user-{key}"))])
            .await
            .unwrap();
        assert_eq!(
            reply.upstream(),
            Some(expected(key, 2500)),
            "agent down: {}",
            reply.describe()
        );
    }
    s.agent = knhk_e2e::agent::AgentProcess::start(&dir, Some(port))
        .await
        .unwrap();
    let resumed = s.call("GET", "/v1/rollouts/current", None).await.unwrap();
    assert_eq!(
        (
            resumed["gate"].as_str(),
            resumed["step"].as_u64(),
            resumed["canary_percent"].as_f64(),
            resumed["phase"].as_str()
        ),
        (Some("canary"), Some(1), Some(25.0), Some("running")),
        "{resumed:#}"
    );
    let after = s.call("GET", "/v1/policy", None).await.unwrap();
    assert_eq!(
        after["epoch"], before["epoch"],
        "the restart published nothing new"
    );
    s.call("POST", "/v1/rollouts/current/pause", None)
        .await
        .unwrap();
    s.call("POST", "/v1/rollouts/current/resume", None)
        .await
        .unwrap();
    let aborted = s
        .call(
            "POST",
            "/v1/rollouts/current/abort",
            Some(json!({"reason": "drill"})),
        )
        .await
        .unwrap();
    let abort_epoch = aborted["history"].as_array().unwrap().last().unwrap()["epoch"]
        .as_u64()
        .unwrap();
    // Every key on stable once the abort epoch is in force on the worker that answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut key = 0u64;
    let mut confirmed = BTreeSet::new();
    while confirmed.len() < KEYS as usize {
        assert!(
            Instant::now() < deadline,
            "abort did not reach every worker"
        );
        let reply = s
            .rig
            .client
            .get("/api", &[("x-user-id", &format!("user-{}", key % KEYS))])
            .await
            .unwrap();
        let epoch = reply
            .decision()
            .and_then(|d| d.get("version").and_then(|v| v.parse::<u64>().ok()));
        if epoch >= Some(abort_epoch) {
            assert_eq!(reply.upstream(), Some("stable"), "{}", reply.describe());
            confirmed.insert(key % KEYS);
        }
        key += 1;
    }
    let actions: Vec<&str> = aborted["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["start", "promote", "pause", "resume", "abort"]);
}

/// A batch of `n` healthy candidate receipts under `epoch`, stamped now: what a forger who
/// reaches the agent's port would post to promote the candidate.
fn healthy_candidate_batch(epoch: u64, n: u64) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let receipts: Vec<_> = (0..n)
        .map(|i| {
            knhk_core::receipt::ReceiptBuilder::new(i)
                .time_ns(now + i)
                .route(Some(knhk_core::class::Route::Canary))
                .priority(1)
                .status(200)
                .latency_us(800)
                .config_epoch(epoch)
                .worker_id(7)
                .build()
        })
        .collect();
    knhk_core::receipt::encode_batch(&receipts).unwrap()
}

/// The forged-promotion attack: a rollout is running (no traffic through Envoy); a raw
/// client without the filter credential, or with a wrong one, floods healthy candidate
/// receipts for four times the gate's pass period. Every batch is refused with 401 and
/// counted, the log does not grow, the analysis counts no candidate sample and the rollout
/// stays where it was. The same batches with the credential promote it (the attack is real);
/// once the credential is revoked from the agent's token file, it is refused again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_receipts_cannot_move_a_rollout() {
    use knhk_e2e::agent::FILTER_TOKEN;
    let s = RolloutRig::start("forged").await.unwrap();
    let spec = rollout_spec(
        "forged",
        &json!({"analysis": {"interval_ms": 50, "window_ms": 3000, "pass_for_ms": 500,
                "min_samples": 20, "failure_threshold": 2, "max_p99_ms": 150.0}}),
    );
    let started = s.call("POST", "/v1/rollouts", Some(spec)).await.unwrap();
    let epoch = started["history"][0]["epoch"].as_u64().unwrap();
    // The probes of the rig's start were flushed by the filter; wait until the log is still.
    let mut size = s.agent.log_size().await.unwrap();
    let mut still = 0;
    while still < 10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = s.agent.log_size().await.unwrap();
        still = if now == size { still + 1 } else { 0 };
        size = now;
    }
    let anon = reqwest::Client::new();
    let url = s.agent.url("/v1/receipts");
    let post = |token: Option<&'static str>| {
        let mut req = anon
            .post(&url)
            .header("content-type", "application/x-knhk-receipts")
            .body(healthy_candidate_batch(epoch, 100));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let flood_until = Instant::now() + Duration::from_millis(2000);
    let mut refused = 0;
    while Instant::now() < flood_until {
        for token in [None, Some("forged-token-0123456789abcdef0123456789abcdef")] {
            let (status, body) = post(token).await;
            assert_eq!(status, 401, "{body}");
            assert!(body.contains("filter credential"), "{body}");
            refused += 1;
        }
    }
    let after = s.call("GET", "/v1/rollouts/current", None).await.unwrap();
    assert_eq!(after["phase"], "running", "{after:#}");
    assert_eq!(after["history"].as_array().unwrap().len(), 1, "{after:#}");
    assert_eq!(after["canary_percent"], started["canary_percent"]);
    let samples = after["figures"]["candidate"]["samples"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(
        samples, 0,
        "forged receipts reached the analysis: {after:#}"
    );
    assert_eq!(
        s.agent.log_size().await.unwrap(),
        size,
        "forged receipts were appended"
    );
    let counts = s.call("GET", "/v1/auth/refusals", None).await.unwrap();
    assert!(
        counts["receipts"].as_u64().unwrap() >= refused,
        "{counts} < {refused}"
    );

    // With the credential, the same batches are accepted and promote the candidate.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = post(Some(FILTER_TOKEN)).await;
        assert_eq!(status, 200, "{body}");
        let st = s.call("GET", "/v1/rollouts/current", None).await.unwrap();
        if st["phase"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "not promoted: {st:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(s.agent.log_size().await.unwrap() > size);

    // Revoked: the agent re-reads its token file; the old credential is refused again.
    s.agent
        .set_filter_tokens(&["e2e-rotated-filter-token-0123456789abcdef0123"])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = post(Some(FILTER_TOKEN)).await;
        if status == 401 {
            assert!(body.contains("rotated or revoked"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "still accepted after revocation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
