//! `cargo xtask bench-rollback`: how long an automatic rollback takes end to end.
//!
//! Each round starts a fresh release agent and Envoy (two workers) with the filter, runs a
//! rollout at 50 % under a recording load (8 loops over fresh connections), waits for a
//! passing verdict, then breaks the candidate — alternately with 503s and with 400 ms answers
//! (p99 limit 150 ms), interleaved so machine noise hits both alike — and measures, per round:
//! *decided* (candidate broken → the agent's rollback event) and *total* (candidate broken →
//! the last request the candidate served; after it, every request went to stable). The goal of
//! issue 4 is total < 2 s; Flagger and Argo Rollouts take analysis interval × failure
//! threshold (typically minutes).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use knhk_e2e::rollout::{measure_rollback, Fault, RolloutRig};

use crate::{agent_process, setup, wasm};
use knhk_e2e::stats::Distribution;

/// The goal: candidate bad → all new requests on stable.
const GOAL: Duration = Duration::from_secs(2);

/// Arguments of `cargo xtask bench-rollback`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Rounds; each runs one 5xx and one slow rollback.
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One measured rollback.
#[derive(Debug)]
struct Sample {
    fault: &'static str,
    decided_ms: f64,
    total_ms: f64,
}

/// Run the benchmark.
pub fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    let tools = setup::ensure()?;
    let wasm_path = wasm::build("knhk-filter", "knhk_filter")?;
    let agent = agent_process::build_release()?;
    // The harness finds the binaries through these variables.
    std::env::set_var("KNHK_ENVOY", &tools.envoy);
    std::env::set_var("KNHK_WASM", &wasm_path);
    std::env::set_var("KNHK_AGENT", &agent);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let samples = runtime.block_on(rounds(args.rounds))?;
    println!("{}", table(&samples));
    if let Some(path) = &args.json {
        let rows: Vec<serde_json::Value> = samples
            .iter()
            .map(|s| {
                serde_json::json!({"fault": s.fault, "decided_ms": s.decided_ms, "total_ms": s.total_ms})
            })
            .collect();
        std::fs::write(path, serde_json::to_vec_pretty(&rows)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("results: {}", path.display());
    }
    Ok(())
}

async fn rounds(n: usize) -> anyhow::Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for round in 0..n {
        for (fault, name) in [
            (Fault::Status(503), "5xx"),
            (Fault::Delay(Duration::from_millis(400)), "slow"),
        ] {
            let id = format!("bench-{name}-{round}");
            let rig = RolloutRig::start(&id).await?;
            let run = measure_rollback(&rig, &id, fault).await?;
            let sample = Sample {
                fault: name,
                decided_ms: run.decided.as_secs_f64() * 1000.0,
                total_ms: run.total.as_secs_f64() * 1000.0,
            };
            println!(
                "round {round:>2} {name:<4}: decided {:>6.0} ms, total {:>6.0} ms",
                sample.decided_ms, sample.total_ms
            );
            samples.push(sample);
        }
    }
    Ok(samples)
}

fn table(samples: &[Sample]) -> String {
    let mut out = String::from(
        "| fault | runs | decided p50 / p90 / max (ms) | total p50 / p90 / max (ms) | max ÷ 2 s goal |\n|---|---|---|---|---|\n",
    );
    for fault in ["5xx", "slow"] {
        let pick = |f: fn(&Sample) -> f64| {
            Distribution::of(samples.iter().filter(|s| s.fault == fault).map(f), 1.0)
        };
        let decided = pick(|s| s.decided_ms);
        let total = pick(|s| s.total_ms);
        let max = total.percentile(100.0);
        out.push_str(&format!(
            "| {fault} | {} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {:.2} |\n",
            total.len(),
            decided.percentile(50.0),
            decided.percentile(90.0),
            decided.percentile(100.0),
            total.percentile(50.0),
            total.percentile(90.0),
            max,
            max / GOAL.as_secs_f64() / 1000.0,
        ));
    }
    out
}
