//! One wrk run against one Envoy: distinct `x-user-id` per request, pinned to the load CPU, plus Envoy's CPU time.
//!
//! The wrk Lua script makes every request carry a key never used before in the whole bench
//! (`<run prefix>-<counter>`), so the knhk and Lua variants hash a fresh key each time, as
//! with real users. Its `done` hook prints one machine-readable line with the totals and the
//! latency percentiles from wrk's own histogram (microseconds).
//!
//! Alongside, the Envoy process's CPU time is sampled before and after the run. CPU time per
//! request is the most noise-robust figure on a shared machine: when another process steals
//! Envoy's core, requests/s drop but CPU µs per request barely moves.

use super::envoy::Envoy;
use anyhow::{bail, Context};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// The wrk script: distinct keys per request and a JSON summary line.
pub const WRK_SCRIPT: &str = r#"-- knhk bench load script (written by `cargo xtask bench`).
local prefix = "k"
local counter = 0

function init(args)
  if args[1] ~= nil then
    prefix = args[1]
  end
end

function request()
  counter = counter + 1
  return wrk.format(nil, nil, { ["x-user-id"] = prefix .. "-" .. counter })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'KNHK_WRK {"requests":%.0f,"duration_us":%.0f,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,' ..
    '"max_us":%.0f,"mean_us":%.1f,"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"#;

/// Marker of the summary line printed by [`WRK_SCRIPT`].
const MARKER: &str = "KNHK_WRK ";

/// How to drive load.
#[derive(Debug, Clone)]
pub struct LoadSpec<'a> {
    /// The written [`WRK_SCRIPT`].
    pub script: &'a Path,
    /// Concurrent connections (one wrk thread).
    pub connections: u32,
    /// CPU to pin wrk to, if any.
    pub cpu: Option<usize>,
    /// Scheduling priority of wrk.
    pub priority: super::placement::Priority,
}

/// Result of one measured run.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Completed requests.
    pub requests: u64,
    /// Requests per second.
    pub rps: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 90th percentile latency, µs.
    pub p90_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses.
    pub errors: u64,
    /// Non-2xx/3xx responses alone (e.g. shed requests).
    pub bad_status: u64,
    /// Envoy CPU time per completed request, µs.
    pub cpu_us_per_req: f64,
    /// Envoy CPU time over wall time (1.0 = one core fully busy).
    pub cpu_share: f64,
    /// Which attempt of a gated run this is (1 = first; set by the caller).
    pub attempts: u32,
}

/// Run wrk for `duration` against `url` (served by `envoy`), with key prefix `prefix`.
pub fn run(
    spec: &LoadSpec<'_>,
    envoy: &Envoy,
    url: &str,
    duration: Duration,
    prefix: &str,
) -> anyhow::Result<LoadResult> {
    let seconds = duration.as_secs().max(1);
    let mut command = super::placement::placed("wrk".as_ref(), spec.cpu, spec.priority);
    command
        .args([
            "-t",
            "1",
            "-c",
            &spec.connections.to_string(),
            "-d",
            &format!("{seconds}s"),
        ])
        .args(["--timeout", "2s", "-s"])
        .arg(spec.script)
        .arg(url)
        .arg("--")
        .arg(prefix);
    let cpu_before = envoy.cpu_ns()?;
    let wall = Instant::now();
    let output = command.output().context("run wrk (is it installed?)")?;
    let elapsed = wall.elapsed();
    let cpu_after = envoy.cpu_ns()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed with {}: {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(MARKER))
        .with_context(|| format!("wrk printed no summary line:\n{stdout}"))?;
    let json: Value =
        serde_json::from_str(line).with_context(|| format!("parse wrk summary {line}"))?;
    let num = |k: &str| json.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let requests = num("requests") as u64;
    let duration_s = num("duration_us") / 1e6;
    let cpu_ns = cpu_after.saturating_sub(cpu_before) as f64;
    let bad_status = num("status") as u64;
    Ok(LoadResult {
        requests,
        rps: if duration_s > 0.0 {
            requests as f64 / duration_s
        } else {
            0.0
        },
        p50_us: num("p50_us"),
        p90_us: num("p90_us"),
        p99_us: num("p99_us"),
        errors: (num("connect") + num("read") + num("write") + num("timeout")) as u64 + bad_status,
        bad_status,
        cpu_us_per_req: if requests > 0 {
            cpu_ns / 1e3 / requests as f64
        } else {
            0.0
        },
        cpu_share: cpu_ns / 1e9 / elapsed.as_secs_f64().max(1e-9),
        attempts: 1,
    })
}
