//! Promotion gates end to end: the real agent runs the rollout, the real Envoy with the filter
//! routes by its pushed configs, two test upstreams play v1 (stable) and v2 (candidate), and a
//! recording load shows where every request landed. Measures the rollback time from the
//! candidate turning bad to the last request served by it (goal < 2 s).

// An integration test binary: failing loudly on the first broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use knhk_e2e::agent::AgentProcess;
use knhk_e2e::client::Client;
use knhk_e2e::paths;
use knhk_e2e::rig::{base_config, control_section, ControlledRig};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// The bound on the rollback, candidate bad → all new requests on stable.
const ROLLBACK_GOAL: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(60);
/// Distinct routing keys the load cycles through.
const KEYS: u64 = 200;

/// One request of the recording load.
#[derive(Debug, Clone)]
struct Record {
    sent: Instant,
    key: u64,
    upstream: Option<String>,
    epoch: Option<u64>,
    status: u16,
}

/// Request loops cycling through `KEYS` keys (every 5th also sends `x-beta: yes`), recording
/// where each request landed.
struct Recorder {
    stop: Arc<AtomicBool>,
    records: Arc<Mutex<Vec<Record>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Recorder {
    fn start(client: &Client, loops: usize) -> Recorder {
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(Mutex::new(Vec::new()));
        let next = Arc::new(AtomicU64::new(0));
        let tasks = (0..loops)
            .map(|_| {
                let (client, stop, records, next) =
                    (client.clone(), stop.clone(), records.clone(), next.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let key = next.fetch_add(1, Ordering::Relaxed) % KEYS;
                        let user = format!("user-{key}");
                        let mut headers = vec![("x-user-id", user.as_str())];
                        if key.is_multiple_of(5) {
                            headers.push(("x-beta", "yes"));
                        }
                        let sent = Instant::now();
                        if let Ok(reply) = client.get("/api", &headers).await {
                            let epoch = reply
                                .decision()
                                .and_then(|d| d.get("version").and_then(|v| v.parse().ok()));
                            records.lock().unwrap().push(Record {
                                sent,
                                key,
                                upstream: reply.upstream().map(str::to_owned),
                                epoch,
                                status: reply.status,
                            });
                        }
                    }
                })
            })
            .collect();
        Recorder {
            stop,
            records,
            tasks,
        }
    }

    fn count_after(&self, t: Instant) -> usize {
        self.records
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.sent >= t)
            .count()
    }

    async fn stop(self) -> Vec<Record> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let mut records = self.records.lock().unwrap().clone();
        records.sort_by_key(|r| r.sent);
        records
    }
}

/// Agent + Envoy wired together, the policy in force with debug headers on.
struct Setup {
    agent: AgentProcess,
    rig: ControlledRig,
}

fn base_policy() -> Value {
    let mut p = base_config();
    p["routing"]["canary_basis_points"] = 0.into();
    p["routing"]["salt"] = "rollout".into();
    p["debug_headers"] = true.into();
    p["admission"]["enabled"] = false.into();
    p
}

async fn setup(name: &str) -> Setup {
    let dir = paths::scratch_dir()
        .join("e2e")
        .join(format!("rollout-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let agent = AgentProcess::start(&dir, None).await.unwrap();
    agent.put_policy(&base_policy()).await.unwrap();
    let keys = agent.config_keys().await.unwrap();
    let mut static_config = base_policy();
    static_config["control"] = control_section(&keys);
    let rig = ControlledRig::start(name, &static_config, agent.port())
        .await
        .unwrap();
    Setup { agent, rig }
}

impl Setup {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.agent.call(method, path, body.as_ref()).await.unwrap();
        assert!(
            (200..300).contains(&status),
            "{method} {path} answered {status}: {answer}\nagent log:\n{}",
            knhk_e2e::envoy::tail(&self.agent.log(), 40)
        );
        answer
    }

    async fn status(&self) -> Value {
        self.call("GET", "/v1/rollouts/current", None).await
    }

    /// Poll the rollout status until `done` holds.
    async fn until(&self, what: &str, done: impl Fn(&Value) -> bool) -> (Value, Instant) {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.status().await;
            if done(&s) {
                return (s, Instant::now());
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; status: {s:#}\nagent log:\n{}",
                knhk_e2e::envoy::tail(&self.agent.log(), 40)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Poll until the load has sent `n` requests after `t`.
    async fn load_after(&self, recorder: &Recorder, t: Instant, n: usize) {
        let deadline = Instant::now() + WAIT;
        while recorder.count_after(t) < n {
            assert!(Instant::now() < deadline, "the load stalled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn rollout(id: &str, extra: Value) -> Value {
    let mut spec = json!({
        "id": id,
        "stable": "v1",
        "candidate": "v2",
        "steps": [50],
        "direct_to_production": true,
        "analysis": {"interval_ms": 50, "window_ms": 3000, "pass_for_ms": 600000,
                     "min_samples": 20, "failure_threshold": 2, "max_p99_ms": 150.0}
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

/// Time from `bad_at` to the last request sent after it that the candidate served.
fn rollback_time(records: &[Record], bad_at: Instant) -> Duration {
    records
        .iter()
        .filter(|r| r.sent >= bad_at && r.upstream.as_deref() == Some("canary"))
        .map(|r| r.sent - bad_at)
        .max()
        .unwrap_or_default()
}

/// Run a rollback scenario: start at 50 %, wait for a passing verdict, break the candidate
/// with `break_it`, and measure until every request is on stable again.
async fn rollback_scenario(name: &str, break_it: impl FnOnce(&Setup), cause: &str) -> Duration {
    let s = setup(name).await;
    s.call("POST", "/v1/rollouts", Some(rollout(name, json!({}))))
        .await;
    let recorder = Recorder::start(&s.rig.client, 8);
    s.until("a passing verdict", |st| st["verdict"]["verdict"] == "pass")
        .await;
    let bad_at = Instant::now();
    break_it(&s);
    let (rolled, seen) = s
        .until("the rollback", |st| st["phase"] == "rolled_back")
        .await;
    s.load_after(&recorder, seen, 2 * KEYS as usize).await;
    let records = recorder.stop().await;
    let took = rollback_time(&records, bad_at);
    println!(
        "rollback ({name}): candidate bad -> last request served by it: {:.0} ms (agent saw it after {:.0} ms)",
        took.as_secs_f64() * 1000.0,
        (seen - bad_at).as_secs_f64() * 1000.0
    );
    assert!(
        took < ROLLBACK_GOAL,
        "rollback took {took:?}, goal {ROLLBACK_GOAL:?}"
    );
    let reason = rolled["reason"].as_str().unwrap();
    assert!(reason.contains(cause), "{reason}");
    // Every key, including those that were on the candidate, is on stable afterwards.
    let tail: Vec<&Record> = records.iter().rev().take(2 * KEYS as usize).collect();
    let keys: BTreeSet<u64> = tail.iter().map(|r| r.key).collect();
    assert_eq!(keys.len() as u64, KEYS, "the tail covers every key");
    let wrong: Vec<_> = tail
        .iter()
        .filter(|r| r.upstream.as_deref() != Some("stable"))
        .take(5)
        .collect();
    assert!(wrong.is_empty(), "after the rollback: {wrong:?}");
    let on_canary_before: BTreeSet<u64> = records
        .iter()
        .filter(|r| r.sent < bad_at && r.upstream.as_deref() == Some("canary"))
        .map(|r| r.key)
        .collect();
    assert!(!on_canary_before.is_empty());
    // The rollback event verifies offline and names its cause.
    let event = rolled["history"].as_array().unwrap().last().unwrap();
    assert_eq!(event["action"], "rollback");
    let leaf = event["leaf_index"].as_u64().unwrap();
    let bundle = s
        .agent
        .get_bytes(&format!("/v1/receipts/{leaf}/proof"))
        .await
        .unwrap();
    let file = s.agent.config_path().with_file_name("rollback-proof.json");
    std::fs::write(&file, bundle).unwrap();
    let out = std::process::Command::new(paths::agent().unwrap())
        .arg("verify")
        .arg(&file)
        .output()
        .unwrap();
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
    took
}

/// The candidate starts answering 503 mid-canary: rolled back within the goal, every key back
/// on stable, the rollback's signed event verifies and names the success rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidate_5xx_is_rolled_back_within_two_seconds() {
    rollback_scenario("rb-5xx", |s| s.rig.canary.set_status(503), "success rate").await;
}

/// The candidate starts answering slowly (400 ms against a 150 ms p99 limit): rolled back
/// within the goal with the p99 named as the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_candidate_is_rolled_back_within_two_seconds() {
    rollback_scenario(
        "rb-slow",
        |s| s.rig.canary.set_delay(Duration::from_millis(400)),
        "p99",
    )
    .await;
}

/// The full walk with healthy upstreams: canary 5 % → 25 % (keys on the candidate at 5 % stay
/// there at 25 %) → staging (exactly the `x-beta` audience on the candidate) → production (the
/// candidate is the new stable: everyone on v2), promoted by analysis alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_rollout_walks_to_production() {
    let s = setup("walk").await;
    let spec = rollout(
        "walk",
        json!({
            "steps": [5, 25],
            "direct_to_production": false,
            "staging": {"headers": [{"name": "x-beta", "value": "yes"}]},
            "analysis": {"interval_ms": 50, "window_ms": 3000, "pass_for_ms": 500,
                         "min_samples": 15, "failure_threshold": 2, "max_p99_ms": 150.0}
        }),
    );
    s.call("POST", "/v1/rollouts", Some(spec)).await;
    let recorder = Recorder::start(&s.rig.client, 8);
    let (done, _) = s.until("production", |st| st["phase"] == "completed").await;
    let after = Instant::now();
    s.load_after(&recorder, after, 2 * KEYS as usize).await;
    let records = recorder.stop().await;
    let epochs: BTreeMap<String, u64> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                format!("{}:{}", h["to"].as_str().unwrap(), h["canary_basis_points"]),
                h["epoch"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let actions: Vec<&str> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["to"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["canary", "canary", "staging", "production"],
        "{done:#}"
    );
    // Group records by the epoch they were decided under.
    let by_epoch = |epoch: u64| -> Vec<&Record> {
        records.iter().filter(|r| r.epoch == Some(epoch)).collect()
    };
    let history = done["history"].as_array().unwrap();
    let epoch_of = |i: usize| {
        let leaf_epoch = history[i]["epoch"].as_u64().unwrap_or(0);
        if leaf_epoch > 0 {
            leaf_epoch
        } else {
            panic!("history item {i} has no epoch: {done:#} {epochs:?}")
        }
    };
    let at5: BTreeSet<u64> = by_epoch(epoch_of(0))
        .iter()
        .filter(|r| r.upstream.as_deref() == Some("canary"))
        .map(|r| r.key)
        .collect();
    let at25: Vec<&Record> = by_epoch(epoch_of(1));
    assert!(!at5.is_empty() && !at25.is_empty());
    let moved_back: Vec<_> = at25
        .iter()
        .filter(|r| at5.contains(&r.key) && r.upstream.as_deref() != Some("canary"))
        .take(5)
        .collect();
    assert!(
        moved_back.is_empty(),
        "keys left the candidate as the weight rose: {moved_back:?}"
    );
    let staging = by_epoch(epoch_of(2));
    assert!(!staging.is_empty());
    let wrong: Vec<_> = staging
        .iter()
        .filter(|r| {
            let want = if r.key.is_multiple_of(5) {
                "canary"
            } else {
                "stable"
            };
            r.upstream.as_deref() != Some(want)
        })
        .take(5)
        .collect();
    assert!(
        wrong.is_empty(),
        "staging serves exactly the audience: {wrong:?}"
    );
    let production = by_epoch(epoch_of(3));
    assert!(production.len() >= KEYS as usize);
    assert!(
        production
            .iter()
            .all(|r| r.upstream.as_deref() == Some("canary") && r.status == 200),
        "production: everyone on v2"
    );
}
