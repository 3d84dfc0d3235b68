//! Rollout rigs: the real agent running a rollout, the real Envoy routing by its pushed
//! configs, `stable` and `canary` upstreams playing v1 and v2, and a recording load that shows
//! where every request landed. Used by `tests/tests/rollout.rs` and `cargo xtask bench-rollback`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context as _};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::agent::AgentProcess;
use crate::client::Client;
use crate::envoy::tail;
use crate::paths;
use crate::rig::{base_config, control_section, ControlledRig};

/// How long any rollout wait may take.
pub const WAIT: Duration = Duration::from_secs(60);
/// Distinct routing keys the load cycles through (`user-0` … `user-199`); every fifth key also
/// sends `x-beta: yes` (the staging audience of the tests).
pub const KEYS: u64 = 200;

/// One request of the recording load.
#[derive(Debug, Clone)]
pub struct Record {
    /// When it was sent.
    pub sent: Instant,
    /// Key number.
    pub key: u64,
    /// Upstream that answered (`stable` / `canary`).
    pub upstream: Option<String>,
    /// Config epoch the filter decided under (debug header `version`).
    pub epoch: Option<u64>,
    /// The filter's decision as its debug header reports it (`route=…;reason=…;bucket=…`).
    pub decision: Option<String>,
    /// HTTP status.
    pub status: u16,
}

/// Request loops cycling through [`KEYS`] keys, recording every reply.
#[derive(Debug)]
pub struct Recorder {
    stop: Arc<AtomicBool>,
    records: Arc<Mutex<Vec<Record>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Recorder {
    /// Start `loops` request loops on `client`.
    pub fn start(client: &Client, loops: usize) -> Recorder {
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
                            let decision = reply.header("x-knhk-decision").map(str::to_owned);
                            if let Ok(mut r) = records.lock() {
                                r.push(Record {
                                    sent,
                                    key,
                                    upstream: reply.upstream().map(str::to_owned),
                                    epoch,
                                    decision,
                                    status: reply.status,
                                });
                            }
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

    /// Replies to requests sent at or after `t`.
    pub fn count_after(&self, t: Instant) -> usize {
        self.records
            .lock()
            .map_or(0, |r| r.iter().filter(|r| r.sent >= t).count())
    }

    /// Poll until the load has sent `n` requests after `t`.
    pub async fn wait_after(&self, t: Instant, n: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        while self.count_after(t) < n {
            ensure!(Instant::now() < deadline, "the load stalled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Stop and return every record, in send order.
    pub async fn stop(self) -> Vec<Record> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let mut records = self.records.lock().map(|r| r.clone()).unwrap_or_default();
        records.sort_by_key(|r| r.sent);
        records
    }
}

/// Consecutive fresh-connection replies that must show an epoch before a rig counts it as in
/// force on every worker.
const CONFIRM: usize = 16;

/// The base policy of rollout rigs: debug headers on (they carry the epoch), admission off,
/// version label 0 so that decisions under the static configuration cannot be mistaken for
/// ones under a pushed epoch (pushed configs report their epoch, ≥ 1).
pub fn base_policy() -> Value {
    let mut p = base_config();
    p["version"] = 0.into();
    p["routing"]["canary_basis_points"] = 0.into();
    p["routing"]["salt"] = "rollout".into();
    p["debug_headers"] = true.into();
    p["admission"]["enabled"] = false.into();
    p
}

/// A rollout v1 → v2 at 50 % with fast analysis (50 ms evaluations, 3 s window, 20 samples,
/// two failures, p99 ≤ 150 ms) that never promotes on its own; `extra` overrides top-level
/// fields.
pub fn rollout_spec(id: &str, extra: &Value) -> Value {
    let mut spec = json!({
        "id": id,
        "stable": "v1",
        "candidate": "v2",
        "steps": [50],
        "direct_to_production": true,
        "analysis": {"interval_ms": 50, "window_ms": 3000, "pass_for_ms": 600000,
                     "min_samples": 20, "failure_threshold": 2, "max_p99_ms": 150.0}
    });
    if let Some(extra) = extra.as_object() {
        for (k, v) in extra {
            spec[k] = v.clone();
        }
    }
    spec
}

/// The real agent and Envoy wired together with [`base_policy`] in force.
#[derive(Debug)]
pub struct RolloutRig {
    /// The agent process.
    pub agent: AgentProcess,
    /// Envoy and the two upstreams.
    pub rig: ControlledRig,
}

impl RolloutRig {
    /// Start a fresh agent (state under the scratch directory) and Envoy.
    pub async fn start(name: &str) -> anyhow::Result<RolloutRig> {
        Self::start_with(name, "", &[]).await
    }

    /// Like [`RolloutRig::start`], with `kms_extra` appended to the agent's `[kms]` table
    /// (e.g. `rotation_interval = "2s"`) and `env` added to its environment.
    pub async fn start_with(
        name: &str,
        kms_extra: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<RolloutRig> {
        let dir = paths::scratch_dir()
            .join("e2e")
            .join(format!("rollout-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let kms = format!(
            "[kms]\nprovider = \"local\"\nkey_id = \"checkpoints\"\nkey_dir = \"{keys}\"\n{kms_extra}\n",
            keys = dir.join("keys").display(),
        );
        let agent = AgentProcess::start_with(&dir, None, &kms, env).await?;
        let epoch = agent.put_policy(&base_policy()).await?;
        let keys = agent.config_keys().await?;
        let mut static_config = base_policy();
        static_config["control"] = control_section(&keys);
        let rig = ControlledRig::start(name, &static_config, agent.port()).await?;
        let rig = RolloutRig { agent, rig };
        rig.wait_epoch(epoch).await?;
        Ok(rig)
    }

    /// Poll until [`CONFIRM`] consecutive fresh-connection requests were decided under
    /// `epoch` or later (both workers have it).
    pub async fn wait_epoch(&self, epoch: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        let mut streak = 0;
        let mut n = 0u64;
        while streak < CONFIRM {
            ensure!(
                Instant::now() < deadline,
                "epoch {epoch} did not reach every worker\nagent log:\n{}",
                tail(&self.agent.log(), 40)
            );
            n += 1;
            let reply = self
                .rig
                .client
                .get("/api", &[("x-user-id", &format!("probe-{n}"))])
                .await?;
            let seen: Option<u64> = reply
                .decision()
                .and_then(|d| d.get("version").and_then(|v| v.parse().ok()));
            if seen.is_some_and(|s| s >= epoch) {
                streak += 1;
            } else {
                streak = 0;
            }
        }
        Ok(())
    }

    /// Call the agent; a non-2xx answer is an error carrying the agent's log tail.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, answer) = self.agent.call(method, path, body.as_ref()).await?;
        if !(200..300).contains(&status) {
            bail!(
                "{method} {path} answered {status}: {answer}\nagent log:\n{}",
                tail(&self.agent.log(), 40)
            );
        }
        Ok(answer)
    }

    /// Poll the rollout status until `done` holds; the status and when it was seen.
    pub async fn until(
        &self,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<(Value, Instant)> {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.call("GET", "/v1/rollouts/current", None).await?;
            if done(&s) {
                return Ok((s, Instant::now()));
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out waiting for {what}; status: {s:#}\nagent log:\n{}",
                    tail(&self.agent.log(), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// How the candidate is broken.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// It answers every request with this status.
    Status(u16),
    /// It answers after this delay.
    Delay(Duration),
}

/// What one rollback run measured.
#[derive(Debug, Clone)]
pub struct RollbackRun {
    /// Candidate broken → last request it served (the end-to-end rollback time).
    pub total: Duration,
    /// Candidate broken → the agent decided to roll back (its event's timestamp).
    pub decided: Duration,
    /// The rollback status as the agent reported it.
    pub status: Value,
    /// Every request of the run.
    pub records: Vec<Record>,
    /// When the candidate was broken.
    pub broken_at: Instant,
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Start a 50 % rollout on `rig`, wait for a passing verdict under load, apply `fault` to the
/// candidate and measure until the agent rolled back and every key was seen on stable again.
pub async fn measure_rollback(
    rig: &RolloutRig,
    id: &str,
    fault: Fault,
) -> anyhow::Result<RollbackRun> {
    rig.call("POST", "/v1/rollouts", Some(rollout_spec(id, &json!({}))))
        .await?;
    let recorder = Recorder::start(&rig.rig.client, 8);
    rig.until("a passing verdict", |s| s["verdict"]["verdict"] == "pass")
        .await?;
    let broken_wall = wall_ns();
    let broken_at = Instant::now();
    match fault {
        Fault::Status(code) => rig.rig.canary.set_status(code),
        Fault::Delay(d) => rig.rig.canary.set_delay(d),
    }
    let (status, seen) = rig
        .until("the rollback", |s| s["phase"] == "rolled_back")
        .await?;
    recorder
        .wait_after(seen, usize::try_from(2 * KEYS).unwrap_or(usize::MAX))
        .await?;
    let records = recorder.stop().await;
    let total = records
        .iter()
        .filter(|r| r.sent >= broken_at && r.upstream.as_deref() == Some("canary"))
        .map(|r| r.sent - broken_at)
        .max()
        .unwrap_or_default();
    let event_ns = status["history"]
        .as_array()
        .and_then(|h| h.last())
        .and_then(|h| h["time_ns"].as_u64())
        .context("rollback without a history item")?;
    Ok(RollbackRun {
        total,
        decided: Duration::from_nanos(event_ns.saturating_sub(broken_wall)),
        status,
        records,
        broken_at,
    })
}

/// Keys the load sent in its last `n` requests, and those of them that were not on stable.
pub fn tail_off_stable(records: &[Record], n: usize) -> (BTreeSet<u64>, Vec<Record>) {
    let tail: Vec<&Record> = records.iter().rev().take(n).collect();
    let keys = tail.iter().map(|r| r.key).collect();
    let wrong = tail
        .into_iter()
        .filter(|r| r.upstream.as_deref() != Some("stable"))
        .cloned()
        .collect();
    (keys, wrong)
}
