//! The knhk-agent variant's control plane: a release `knhk-agent` beside Envoy, and the check that receipts really flowed.
//!
//! The bench starts one agent (through [`crate::agent_process`]: local Ed25519 signer, SQLite
//! WAL store, scratch directory `bench-results/bench-<stamp>/agent/`) on the agent CPU of
//! [`Cpus`](super::placement::Cpus), never Envoy's, at the bench's priority. It puts the knhk
//! variant's routing/admission policy with `PUT /v1/policy` (epoch 1) and reads the config key
//! set from `GET /v1/config/keys`; the knhk-agent variant's plugin configuration is then the knhk
//! variant's plus a `control` section with that key set, the `knhk_agent` cluster of
//! `envoy/bench-wasm-agent.yaml`, the default 30 s long-poll and receipts with the default
//! batching (flush every ≤ 250 ms or at 512 records, 8192 unsent at most, drop on overflow).
//!
//! After the rounds, [`check_receipts`] waits for the last batches and compares the agent's log
//! size with the requests that Envoy served, and reads the filter's receipt and config stats.

use super::envoy::Envoy;
use super::rig::AgentLink;
use super::{Variant, KNHK_PLUGIN_CONFIG};
use crate::agent_process::{Agent, Launch, Scratch};
use anyhow::Context;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the last receipts may take to reach the agent after the load stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Interval between drain polls; more than the filter's 250 ms flush interval and stats tick.
const DRAIN_POLL: Duration = Duration::from_millis(300);
/// Largest accepted shortfall of the agent's log against Envoy's request count, as a share.
/// Requests still in flight when wrk stops a run may end without a decision; nothing else may be missing.
const MAX_MISSING_SHARE: f64 = 0.001;

/// The agent the bench runs for the knhk-agent variant.
pub struct BenchAgent {
    agent: Agent,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    /// Epoch of the policy put at start.
    pub epoch: u64,
    /// The knhk-agent variant's plugin configuration (JSON text).
    pub plugin_config: String,
}

impl BenchAgent {
    /// Start the agent in `dir` via `command` (the binary, wrapped for CPU and priority), put the
    /// knhk policy, and build the knhk-agent plugin configuration from its config keys.
    pub fn start(
        binary: &Path,
        command: std::process::Command,
        dir: PathBuf,
    ) -> anyhow::Result<BenchAgent> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("build agent client runtime")?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            // Each call runs in its own `block_on`; an idle pooled connection would not be polled between calls.
            .pool_max_idle_per_host(0)
            .build()
            .context("build agent HTTP client")?;
        let agent = Agent::start(Launch {
            binary,
            command,
            dir,
            origin: "knhk.bench/envoy",
            rust_log: "info",
            scratch: Scratch::KeepLog,
        })?;
        let policy: Value = serde_json::from_str(KNHK_PLUGIN_CONFIG)?;
        let (epoch, keys) = runtime.block_on(async {
            agent.wait_ready(&http).await?;
            let epoch = agent.put_policy(&http, &policy).await?;
            let keys = agent.config_keys(&http).await?;
            anyhow::Ok((epoch, keys))
        })?;
        let plugin_config = plugin_config(&policy, keys).to_string();
        Ok(BenchAgent {
            agent,
            http,
            runtime,
            epoch,
            plugin_config,
        })
    }

    /// What the rig needs to render and start the knhk-agent variant.
    pub fn link(&self) -> AgentLink {
        AgentLink {
            port: self.agent.port(),
            plugin_config: self.plugin_config.clone(),
        }
    }

    /// The agent binary.
    pub fn binary(&self) -> &Path {
        self.agent.binary()
    }

    /// Its scratch directory (config and log are kept there).
    pub fn dir(&self) -> &Path {
        self.agent.dir()
    }

    /// Entries in the agent's receipt log.
    fn log_size(&self) -> anyhow::Result<u64> {
        self.runtime.block_on(self.agent.log_size(&self.http))
    }

    /// CPU time of the agent process so far, seconds (exited threads included).
    fn cpu_seconds(&self) -> Option<f64> {
        self.agent.cpu_seconds().ok()
    }
}

/// The knhk-agent plugin configuration: the knhk policy plus `control` (agent cluster, the
/// agent's config keys, receipts on with the default batching).
pub fn plugin_config(policy: &Value, trusted_keys: Value) -> Value {
    let mut config = policy.clone();
    config["control"] = json!({
        "cluster": "knhk_agent",
        "trusted_keys": trusted_keys,
        "receipts": {"enabled": true},
    });
    config
}

/// What the knhk-agent variant's filter and the agent counted over the measured rounds.
#[derive(Debug, Clone)]
pub struct ReceiptCheck {
    /// Requests the knhk-agent Envoy served (`http.ingress.downstream_rq_total`: probes, warm-ups, runs).
    pub envoy_requests: u64,
    /// Entries in the agent's receipt log.
    pub log_size: u64,
    /// `knhk.receipts.sent` (acknowledged by the agent).
    pub sent: u64,
    /// `knhk.receipts.dropped` (buffer overflow).
    pub dropped: u64,
    /// `knhk.receipts.flush_errors`.
    pub flush_errors: u64,
    /// `knhk.config.applied`.
    pub config_applied: u64,
    /// `knhk.config.rejected`.
    pub config_rejected: u64,
    /// Long-polls the agent answered 204 (nothing newer within the poll timeout): polling stayed active.
    pub polls_204: u64,
    /// Calls from Envoy to the agent (polls and receipt posts), `cluster.knhk_agent.upstream_rq_total`.
    pub agent_calls: u64,
    /// Agent CPU seconds over the whole bench so far, when readable.
    pub agent_cpu_s: Option<f64>,
    /// Time the last receipts took to reach the log after the load stopped.
    pub drain: Duration,
}

impl ReceiptCheck {
    /// The agent's log size as a share of Envoy's requests.
    pub fn coverage(&self) -> f64 {
        if self.envoy_requests == 0 {
            0.0
        } else {
            self.log_size as f64 / self.envoy_requests as f64
        }
    }

    /// Receipts flowed: nothing dropped, at least one config applied, every acknowledged
    /// receipt in the log, and the log within [`MAX_MISSING_SHARE`] of Envoy's requests.
    pub fn pass(&self) -> bool {
        self.dropped == 0
            && self.config_applied >= 1
            && self.log_size == self.sent
            && self.log_size <= self.envoy_requests
            && self.coverage() >= 1.0 - MAX_MISSING_SHARE
    }

    /// Print the check.
    pub fn print(&self, epoch: u64) {
        println!();
        println!(
            "knhk-agent receipts check: {} — agent log {} entries vs {} requests served by the knhk-agent Envoy ({:.4}); \
             receipts sent {} dropped {} flush errors {}; config applied {} (epoch {epoch}) rejected {}; \
             {} long-polls answered 204, {} calls to the agent; drained {:.1} s after the load{}",
            if self.pass() { "PASS" } else { "FAIL" },
            self.log_size,
            self.envoy_requests,
            self.coverage(),
            self.sent,
            self.dropped,
            self.flush_errors,
            self.config_applied,
            self.config_rejected,
            self.polls_204,
            self.agent_calls,
            self.drain.as_secs_f64(),
            self.agent_cpu_s.map_or_else(String::new, |s| format!(
                "; agent CPU {s:.1} s ({:.2} µs per receipt)",
                if self.log_size > 0 { s * 1e6 / self.log_size as f64 } else { 0.0 }
            )),
        );
    }

    /// JSON form for the record.
    pub fn to_json(&self, epoch: u64) -> Value {
        json!({
            "pass": self.pass(),
            "envoy_requests": self.envoy_requests,
            "agent_log_size": self.log_size,
            "coverage": self.coverage(),
            "receipts_sent": self.sent,
            "receipts_dropped": self.dropped,
            "receipts_flush_errors": self.flush_errors,
            "config_applied": self.config_applied,
            "config_rejected": self.config_rejected,
            "config_epoch": epoch,
            "long_polls_204": self.polls_204,
            "agent_calls": self.agent_calls,
            "agent_cpu_s": self.agent_cpu_s,
            "drain_s": self.drain.as_secs_f64(),
        })
    }
}

/// After the load: wait until the agent's log holds every acknowledged receipt and the agent
/// variants' requests are all accounted for (sent or dropped), or [`DRAIN_TIMEOUT`] passes; then
/// read the counts, summed over `envoys` (every Envoy that posts to this agent, with its variant).
pub fn check_receipts(
    agent: &BenchAgent,
    envoys: &[(Variant, &Envoy)],
) -> anyhow::Result<ReceiptCheck> {
    let started = Instant::now();
    loop {
        let check = read(agent, envoys, started.elapsed())?;
        let settled =
            check.log_size == check.sent && check.sent + check.dropped >= check.envoy_requests;
        if settled || started.elapsed() > DRAIN_TIMEOUT {
            return Ok(check);
        }
        std::thread::sleep(DRAIN_POLL);
    }
}

fn read(
    agent: &BenchAgent,
    envoys: &[(Variant, &Envoy)],
    drain: Duration,
) -> anyhow::Result<ReceiptCheck> {
    let mut check = ReceiptCheck {
        envoy_requests: 0,
        log_size: agent.log_size()?,
        sent: 0,
        dropped: 0,
        flush_errors: 0,
        config_applied: 0,
        config_rejected: 0,
        polls_204: 0,
        agent_calls: 0,
        agent_cpu_s: agent.cpu_seconds(),
        drain,
    };
    for (variant, envoy) in envoys {
        let prefix = variant.knhk_stats_prefix();
        let stats = envoy.counters(&format!(
            r"^({}(receipts|config)\.|http\.ingress\.downstream_rq_total$|cluster\.knhk_agent\.upstream_rq_(total|204)$)",
            variant.knhk_stats_regex()
        ))?;
        let get = |name: &str| stats.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v);
        let knhk = |name: &str| get(&format!("{prefix}{name}"));
        check.envoy_requests += get("http.ingress.downstream_rq_total");
        check.sent += knhk("receipts.sent");
        check.dropped += knhk("receipts.dropped");
        check.flush_errors += knhk("receipts.flush_errors");
        check.config_applied += knhk("config.applied");
        check.config_rejected += knhk("config.rejected");
        check.polls_204 += get("cluster.knhk_agent.upstream_rq_204");
        check.agent_calls += get("cluster.knhk_agent.upstream_rq_total");
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The knhk-agent config is the knhk config plus a `control` section the filter's parser accepts,
    /// with receipts on at the default batching.
    #[test]
    fn plugin_config_adds_control_to_the_knhk_policy() {
        let policy: Value = serde_json::from_str(KNHK_PLUGIN_CONFIG).unwrap();
        let key = json!([{
            "provider": "local", "key_id": "knhk-config", "version": 1, "alg": "ed25519",
            "public_key": "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", "retired": false
        }]);
        let config = plugin_config(&policy, key);
        let parsed = knhk_core::Policy::from_json(config.to_string().as_bytes()).unwrap();
        let control = parsed.control.unwrap();
        assert_eq!(control.cluster, "knhk_agent");
        assert_eq!(control.poll_timeout_ms, 30_000);
        let receipts = control.receipts.unwrap();
        assert_eq!((receipts.flush_interval_ms, receipts.max_batch), (250, 512));
        assert_eq!(parsed.canary_basis_points, 1000);
        let mut without = config.clone();
        without.as_object_mut().unwrap().remove("control");
        assert_eq!(without, policy);
    }

    /// The check passes only with nothing dropped, a config applied and the log matching the requests.
    #[test]
    fn receipt_check_verdicts() {
        let ok = ReceiptCheck {
            envoy_requests: 100_000,
            log_size: 99_990,
            sent: 99_990,
            dropped: 0,
            flush_errors: 0,
            config_applied: 1,
            config_rejected: 0,
            polls_204: 10,
            agent_calls: 300,
            agent_cpu_s: None,
            drain: Duration::ZERO,
        };
        assert!(ok.pass());
        assert!(!ReceiptCheck {
            dropped: 1,
            ..ok.clone()
        }
        .pass());
        assert!(!ReceiptCheck {
            config_applied: 0,
            ..ok.clone()
        }
        .pass());
        assert!(!ReceiptCheck {
            log_size: 90_000,
            sent: 90_000,
            ..ok.clone()
        }
        .pass());
        assert!(!ReceiptCheck { sent: 99_000, ..ok }.pass());
    }
}
