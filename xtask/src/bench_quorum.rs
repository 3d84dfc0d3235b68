//! `cargo xtask bench-quorum`: seal-to-commit latency of a 2-of-3 quorum on loopback.
//!
//! Runs the ignored `quorum_commit_latency` test of `knhk-agent` (release build by default):
//! three regions on loopback — two full agents as witnesses and the sealing region's log and
//! replicator in-process — and, per sample, 100 receipts appended, one seal, one replication
//! round to both witnesses. Prints p50/p99/max of the latency quorum adds (round start to the
//! k-th signature), of the whole round, and of seal to commit, against the goal of p99 < 10 ms
//! per checkpoint.

use anyhow::Context;
use serde_json::Value;

use crate::util::{cargo, run_output};

/// The goal of issue 5: added latency of a quorum commit, p99, microseconds.
pub const GOAL_P99_US: u64 = 10_000;

/// Arguments of `cargo xtask bench-quorum`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoints measured.
    #[arg(long, default_value_t = 300)]
    pub iterations: usize,
    /// Build the test in the dev profile instead of release (faster to build, slower to run).
    #[arg(long)]
    pub debug: bool,
}

/// Run the measurement and print its results.
pub fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.iterations > 0, "--iterations must be at least 1");
    let mut cmd = cargo();
    cmd.args(["test", "-p", "knhk-agent", "--test", "quorum"]);
    if !args.debug {
        // Release optimisation without the profile's fat LTO and single codegen unit, which
        // would multiply the build time of the whole test dependency graph.
        cmd.arg("--release")
            .env("CARGO_PROFILE_RELEASE_LTO", "false")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16");
    }
    cmd.args([
        "--",
        "--ignored",
        "--exact",
        "quorum_commit_latency",
        "--nocapture",
    ])
    .env("KNHK_BENCH_QUORUM_ITERS", args.iterations.to_string());
    let out = run_output(&mut cmd)?;
    let line = out
        .lines()
        .find(|l| l.contains("\"quorum_commit_latency\""))
        .context("the benchmark printed no result line")?;
    let result: Value = serde_json::from_str(line).context("parsing the result line")?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    let p99 = result["commit_us"]["p99"].as_u64().unwrap_or(u64::MAX);
    println!(
        "added commit latency p99 {p99} µs: {} the goal of < {GOAL_P99_US} µs",
        if p99 < GOAL_P99_US { "meets" } else { "MISSES" }
    );
    Ok(())
}
