//! `cargo xtask bench-receipts`: receipt ingest and sealing throughput of the release agent.
//!
//! Builds `knhk-agent` in release mode and runs it as a child process (local Ed25519 signer,
//! SQLite WAL store with `synchronous=FULL`, one checkpoint per second) in a scratch
//! directory. A few concurrent posters send pre-built, varied `KNRB` batches for a fixed time;
//! only acknowledged receipts count (an acknowledgement means the batch is durable). Reported:
//! receipts/s, POST latency, the seal duration of every checkpoint (the agent's own
//! `sealed checkpoint` debug event: root, one signature, durable record), the time from an
//! acknowledgement to the first checkpoint covering it, the final log size, and an offline
//! check of the last checkpoint's signature and of proof bundles with the real `verify`.
//! Last, the agent is killed with SIGKILL and restarted on the full store: the time until it
//! serves again is the reopen time. `--fill-to N` first fills the log to `N` receipts (posting
//! as fast as the agent acknowledges), so the reopen is measured on a large log (issue 20's
//! goal: under 1 s at 50 M leaves and more).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use knhk_core::checkpoint::{verify_signature, Checkpoint, PublicKeyVersion, SignatureRecord};
use knhk_core::class::{Class, Route};
use knhk_core::decision::Admission;
use knhk_core::receipt::{encode_batch, key_digest, Receipt, NO_BUCKET, NO_KEY};
use knhk_e2e::stats::Distribution;
use knhk_e2e::wait::poll;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::agent_process::{self, get_json, Agent, Launch, Scratch};
use crate::util::run_output;

/// The goal of issue 3, acknowledged receipts per second.
pub const GOAL_RECEIPTS_PER_S: f64 = 100_000.0;
/// Issue 20's throughput goal, acknowledged receipts per second on this 2-core machine.
pub const GOAL_FLEET_RECEIPTS_PER_S: f64 = 1_000_000.0;
/// Issue 20's goal: the restart after SIGKILL serves again within this many seconds…
pub const GOAL_REOPEN_S: f64 = 1.0;
/// …on a log of at least this many leaves.
pub const GOAL_REOPEN_LEAVES: u64 = 50_000_000;
/// Distinct pre-built batches the posters cycle through.
const DISTINCT_BATCHES: usize = 32;
/// How often the checkpoint watcher asks for the newest checkpoint.
const WATCH_EVERY: Duration = Duration::from_millis(10);

/// Arguments of `cargo xtask bench-receipts`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds of load.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Concurrent posters.
    #[arg(long, default_value_t = 4)]
    pub posters: usize,
    /// Receipts per batch.
    #[arg(long, default_value_t = 1024)]
    pub batch: usize,
    /// Before the timed run, fill the log to this many receipts (0: no fill), so the restart
    /// at the end reopens a large log.
    #[arg(long, default_value_t = 0)]
    pub fill_to: u64,
    /// Publish tlog-tiles to a directory beside the store while the load runs (`[tiles] url`),
    /// and report when the last checkpoint reached it.
    #[arg(long)]
    pub tiles: bool,
    /// Bench this agent binary instead of building the release one.
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Build (unless given) the release agent and run the benchmark.
pub fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.seconds > 0, "--seconds must be at least 1");
    anyhow::ensure!(args.posters > 0, "--posters must be at least 1");
    anyhow::ensure!(
        (1..=knhk_core::limits::MAX_BATCH_RECORDS).contains(&args.batch),
        "--batch must be between 1 and {}",
        knhk_core::limits::MAX_BATCH_RECORDS
    );
    let agent = match &args.agent {
        Some(p) => p.clone(),
        None => agent_process::build_release()?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let results = runtime.block_on(bench(args, &agent))?;
    println!("{}", table(&results));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("results: {}", path.display());
    }
    Ok(())
}

/// Varied receipts, as two Envoy workers under mixed traffic would produce them.
fn receipt(batch: usize, i: usize, now_ns: u64) -> Receipt {
    let n = (batch * 1_000_003 + i * 7919) as u64;
    let keyed = !n.is_multiple_of(10);
    let class = Class::ALL[(n % 3) as usize];
    let admission = match n % 50 {
        0 => Admission::Shed,
        1 => Admission::Degraded,
        _ => Admission::Admitted,
    };
    let status = match admission {
        Admission::Shed => 503,
        _ if n.is_multiple_of(97) => 500,
        _ if n.is_multiple_of(31) => 404,
        _ => 200,
    };
    Receipt {
        time_ns: now_ns + n * 1_000,
        key_digest: if keyed {
            key_digest(b"bench-salt", format!("user-{}", n % 50_000).as_bytes())
        } else {
            NO_KEY
        },
        route: match n % 10 {
            0 => None,
            1 => Some(Route::Canary),
            _ => Some(Route::Stable),
        },
        routing_bucket: if keyed {
            (n % 10_000) as u16
        } else {
            NO_BUCKET
        },
        priority: if keyed {
            ((n * 13) % 10_000) as u16
        } else {
            NO_BUCKET
        },
        requested_class: class,
        class: if admission == Admission::Degraded {
            Class::C1
        } else {
            class
        },
        admission,
        status,
        latency_us: ((n * 37) % 250_000) as u32,
        config_epoch: 0,
        worker_id: (n % 2) as u32,
    }
}

/// Online CPUs, the CPU model name and the load average, for the record.
fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown", |(_, v)| v.trim());
    let load = std::fs::read_to_string("/proc/loadavg").ok().and_then(|l| {
        l.split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
    });
    json!({"cpus": cpus, "cpu_model": model, "load_average_1m_at_start": load})
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A checkpoint as first seen by the watcher.
#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    tree_size: u64,
}

/// One acknowledged batch.
#[derive(Debug, Clone, Copy)]
struct Ack {
    at: Instant,
    latency: Duration,
    size_after: u64,
    count: u64,
}

/// `elapsed_us` of every `sealed checkpoint` event in the agent log with a non-empty tree.
fn seal_durations_ms(log: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains("sealed checkpoint"))
        .filter(|l| !l.contains("tree_size=0 "))
        .filter_map(|l| {
            let rest = &l[l.find("elapsed_us=")? + "elapsed_us=".len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<f64>().ok().map(|us| us / 1000.0)
        })
        .collect()
}

async fn poster(
    http: reqwest::Client,
    url: String,
    batches: Arc<Vec<Vec<u8>>>,
    first: usize,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<Ack>> {
    let mut acks = Vec::new();
    let mut next = first;
    while !stop.load(Ordering::Relaxed) {
        let body = batches[next % batches.len()].clone();
        next += 1;
        let sent = Instant::now();
        let response = http
            .post(&url)
            .header("content-type", "application/x-knhk-receipts")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        let latency = sent.elapsed();
        if !status.is_success() {
            bail!(
                "POST /v1/receipts answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        let answer: Value = serde_json::from_slice(&bytes)?;
        acks.push(Ack {
            at: Instant::now(),
            latency,
            size_after: answer["size"].as_u64().context("no size in the answer")?,
            count: answer["count"].as_u64().context("no count in the answer")?,
        });
    }
    Ok(acks)
}

/// Post from `posters` posters until the log holds `target` receipts; returns the seconds taken.
async fn fill(
    http: &reqwest::Client,
    agent: &Agent,
    batches: &Arc<Vec<Vec<u8>>>,
    posters: usize,
    target: u64,
) -> anyhow::Result<f64> {
    println!("filling the log to {target} receipts");
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..posters)
        .map(|p| {
            tokio::spawn(poster(
                http.clone(),
                agent.url("/v1/receipts"),
                batches.clone(),
                p,
                stop.clone(),
            ))
        })
        .collect();
    let mut reported = Instant::now();
    loop {
        let size = agent.log_size(http).await?;
        if size >= target || tasks.iter().any(|t| t.is_finished()) {
            break;
        }
        if reported.elapsed() >= Duration::from_secs(15) {
            reported = Instant::now();
            println!(
                "filling: {size} of {target} after {:.0} s",
                t0.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    println!(
        "filled to {} in {elapsed:.0} s",
        agent.log_size(http).await?
    );
    Ok(elapsed)
}

async fn watcher(
    http: reqwest::Client,
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut last = None;
    while !stop.load(Ordering::Relaxed) {
        let cp = get_json(&http, &url).await?;
        let text = cp["text"].as_str().context("checkpoint without text")?;
        let size = Checkpoint::parse(text)?.tree_size;
        if last != Some(size) {
            last = Some(size);
            seen.lock().await.push(Seen {
                at: Instant::now(),
                tree_size: size,
            });
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
    Ok(())
}

async fn bench(args: &Args, binary: &Path) -> anyhow::Result<Value> {
    let started_ns = now_ns();
    let batches: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..DISTINCT_BATCHES)
            .map(|b| {
                let records: Vec<Receipt> =
                    (0..args.batch).map(|i| receipt(b, i, started_ns)).collect();
                encode_batch(&records)
            })
            .collect::<Result<_, _>>()?,
    );
    let dir = std::env::temp_dir().join(format!("knhk-bench-receipts-{}", std::process::id()));
    let tiles_dir = dir.join("tiles");
    let mut command = Command::new(binary);
    if args.tiles {
        command.env("KNHK_TILES_URL", format!("file://{}", tiles_dir.display()));
    }
    let mut agent = Agent::start(Launch {
        binary,
        command,
        dir,
        origin: "knhk.bench/receipts",
        rust_log: "info,knhk_agent::receipts::log=debug",
        scratch: Scratch::Remove,
    })?;
    let http = reqwest::Client::new();
    let latest_url = agent.url("/v1/checkpoints/latest");
    agent.wait_ready(&http).await?;

    let fill_s = if args.fill_to > 0 {
        fill(&http, &agent, &batches, args.posters, args.fill_to).await?
    } else {
        0.0
    };

    let stop_posting = Arc::new(AtomicBool::new(false));
    let stop_watching = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let watch = tokio::spawn(watcher(
        http.clone(),
        latest_url.clone(),
        seen.clone(),
        stop_watching.clone(),
    ));
    println!(
        "posting {} receipts per batch from {} posters for {} s to {}",
        args.batch,
        args.posters,
        args.seconds,
        agent.binary().display()
    );
    let t0 = Instant::now();
    let posters: Vec<_> = (0..args.posters)
        .map(|p| {
            tokio::spawn(poster(
                http.clone(),
                agent.url("/v1/receipts"),
                batches.clone(),
                p * DISTINCT_BATCHES / args.posters,
                stop_posting.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop_posting.store(true, Ordering::Relaxed);
    let mut acks = Vec::new();
    for p in posters {
        acks.extend(p.await??);
    }
    let elapsed = t0.elapsed();
    let final_size = acks.iter().map(|a| a.size_after).max().unwrap_or(0);
    poll(
        "a checkpoint covering every acknowledged receipt",
        Duration::from_secs(30),
        || {
            let seen = seen.clone();
            async move {
                let last = seen.lock().await.last().map_or(0, |s| s.tree_size);
                Ok((last >= final_size).then_some(()))
            }
        },
    )
    .await?;
    let covered_at = Instant::now();
    stop_watching.store(true, Ordering::Relaxed);
    watch.await??;
    // With --tiles: how long after the covering checkpoint its tiles and note were published.
    let tiles_lag_s = if args.tiles {
        let note = tiles_dir.join("checkpoint");
        poll(
            "the covering checkpoint published as tiles",
            Duration::from_secs(60),
            || {
                let note = note.clone();
                async move {
                    let text = std::fs::read_to_string(&note).unwrap_or_default();
                    let size = text.lines().nth(1).and_then(|l| l.parse::<u64>().ok());
                    Ok(size.is_some_and(|s| s >= final_size).then_some(()))
                }
            },
        )
        .await?;
        Some(covered_at.elapsed().as_secs_f64())
    } else {
        None
    };

    // Throughput, overall and per second of the run.
    let acknowledged: u64 = acks.iter().map(|a| a.count).sum();
    let rate = acknowledged as f64 / elapsed.as_secs_f64();
    let mut per_second = vec![0u64; usize::try_from(args.seconds).unwrap_or(0) + 1];
    for a in &acks {
        let s = usize::try_from(a.at.duration_since(t0).as_secs()).unwrap_or(0);
        if let Some(slot) = per_second.get_mut(s) {
            *slot += a.count;
        }
    }
    per_second.truncate(usize::try_from(args.seconds).unwrap_or(0));
    let per_second = Distribution::of(per_second.iter().map(|&n| n as f64), 1.0);
    let post_ms = Distribution::of(acks.iter().map(|a| a.latency.as_secs_f64() * 1e3), 1e-3);
    let seen = seen.lock().await.clone();
    let sealed_after_ms = Distribution::of(
        acks.iter().filter_map(|a| {
            seen.iter()
                .find(|s| s.tree_size >= a.size_after && s.at >= a.at)
                .map(|s| s.at.duration_since(a.at).as_secs_f64() * 1e3)
        }),
        1e-3,
    );
    let seal_ms = Distribution::of(seal_durations_ms(&agent.log()), 1e-3);

    // Offline checks: the newest checkpoint's signature against the agent's key list, and
    // proof bundles for the first, a middle and the last receipt with the real `verify`.
    let config = agent.config_path();
    let keys_json = run_output(
        Command::new(binary)
            .args(["keys", "--config"])
            .arg(&config)
            .arg("list"),
    )?;
    let keys: Vec<PublicKeyVersion> = serde_json::from_str(&keys_json)?;
    let trust = agent.dir().join("trusted.json");
    std::fs::write(&trust, &keys_json)?;
    let latest = get_json(&http, &latest_url).await?;
    let text = latest["text"].as_str().context("checkpoint without text")?;
    let signature: SignatureRecord = serde_json::from_value(latest["signature"].clone())?;
    let key = verify_signature(text.as_bytes(), &signature, &keys)
        .map_err(|e| anyhow::anyhow!("the last checkpoint does not verify: {e}"))?;
    let sealed = Checkpoint::parse(text)?;
    let mut bundles_ok = 0;
    for leaf in [0, final_size / 2, final_size.saturating_sub(1)] {
        let bundle = http
            .get(agent.url(&format!("/v1/receipts/{leaf}/proof")))
            .send()
            .await?
            .bytes()
            .await?;
        let file = agent.dir().join(format!("bundle-{leaf}.json"));
        std::fs::write(&file, &bundle)?;
        let out = Command::new(binary)
            .arg("verify")
            .arg(&file)
            .arg("--trusted-keys")
            .arg(&trust)
            .output()?;
        if !out.status.success() {
            bail!(
                "verify of the bundle for leaf {leaf} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        bundles_ok += 1;
    }

    let store_mib = agent.store_bytes() as f64 / (1024.0 * 1024.0);
    let (rss_kib, peak_rss_kib) = agent.memory_kib()?;

    // Crash and restart on the full store: how long until it serves again (it reads the tree's
    // right edge and checks the last checkpoint), and that every acknowledged receipt is there.
    agent.crash_and_restart(Command::new(binary))?;
    let restart_started = Instant::now();
    agent.wait_ready(&http).await?;
    let restart_s = restart_started.elapsed().as_secs_f64();
    let size_after_restart = agent.log_size(&http).await?;
    anyhow::ensure!(
        size_after_restart >= final_size,
        "after a crash the log holds {size_after_restart} receipts, {final_size} were acknowledged"
    );
    Ok(json!({
        "date_utc_ns": started_ns,
        "machine": machine(),
        "agent": agent.binary().display().to_string(),
        "settings": {
            "seconds": args.seconds,
            "posters": args.posters,
            "batch": args.batch,
            "seal_interval_s": 1,
            "signer": "local ed25519",
            "sqlite": "WAL, synchronous=FULL, one transaction per batch",
            "tiles": if args.tiles { "published to a local directory" } else { "off" },
        },
        "acknowledged_receipts": acknowledged,
        "elapsed_s": elapsed.as_secs_f64(),
        "receipts_per_s": rate,
        "receipts_per_s_per_second": {
            "min": per_second.percentile(0.0),
            "p50": per_second.percentile(50.0),
            "max": per_second.percentile(100.0),
        },
        "goal_receipts_per_s": GOAL_RECEIPTS_PER_S,
        "goal_met": rate >= GOAL_RECEIPTS_PER_S,
        "goal_fleet_receipts_per_s": GOAL_FLEET_RECEIPTS_PER_S,
        "goal_fleet_met": rate >= GOAL_FLEET_RECEIPTS_PER_S,
        "tiles_published_after_covering_checkpoint_s": tiles_lag_s,
        "batches": acks.len(),
        "post_latency_ms": {"p50": post_ms.percentile(50.0), "p99": post_ms.percentile(99.0), "max": post_ms.percentile(100.0)},
        "seal_duration_ms": {"n": seal_ms.len(), "p50": seal_ms.percentile(50.0), "p99": seal_ms.percentile(99.0), "max": seal_ms.percentile(100.0)},
        "ack_to_checkpoint_ms": {"n": sealed_after_ms.len(), "p50": sealed_after_ms.percentile(50.0), "p99": sealed_after_ms.percentile(99.0)},
        "checkpoints": seen.len(),
        "final_log_size": sealed.tree_size,
        "store_mib": store_mib,
        "agent_rss_mib": rss_kib as f64 / 1024.0,
        "restart_after_crash_s": restart_s,
        "filled_to": args.fill_to,
        "fill_s": fill_s,
        "goal_reopen_s": GOAL_REOPEN_S,
        "goal_reopen_leaves": GOAL_REOPEN_LEAVES,
        "goal_reopen_met": restart_s < GOAL_REOPEN_S && size_after_restart >= GOAL_REOPEN_LEAVES,
        "log_size_after_restart": size_after_restart,
        "agent_peak_rss_mib": peak_rss_kib as f64 / 1024.0,
        "last_checkpoint": {
            "tree_size": sealed.tree_size,
            "signature_verified": true,
            "key": format!("{} {} v{} ({})", key.provider, key.key_id, key.version, key.alg),
        },
        "proof_bundles_verified": bundles_ok,
    }))
}

fn num(v: &Value, path: &[&str]) -> f64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_f64()
        .unwrap_or(f64::NAN)
}

/// The results as the Markdown table `docs/benchmarks.md` keeps.
fn table(r: &Value) -> String {
    let rate = num(r, &["receipts_per_s"]);
    let met = |goal: f64| if rate >= goal { "met" } else { "missed" };
    let (verdict, fleet) = (met(GOAL_RECEIPTS_PER_S), met(GOAL_FLEET_RECEIPTS_PER_S));
    let tiles = match r["tiles_published_after_covering_checkpoint_s"].as_f64() {
        Some(s) => format!("published {s:.2} s after the covering checkpoint"),
        None => "off (--tiles publishes them)".to_owned(),
    };
    format!(
        "| metric | value |\n|---|---|\n\
         | acknowledged receipts/s (sustained, {secs} s, {posters} posters × {batch}/batch) | {rate:.0} (goal ≥ 100,000: {verdict}; issue 20's ≥ 1,000,000: {fleet}) |\n\
         | receipts/s per 1-s slot: min / median / max | {smin:.0} / {smed:.0} / {smax:.0} |\n\
         | POST /v1/receipts latency p50 / p99 / max | {pp50:.2} / {pp99:.2} / {pmax:.2} ms |\n\
         | seal duration p50 / p99 / max (n = {sn}) | {sp50:.2} / {sp99:.2} / {smax2:.2} ms |\n\
         | acknowledged → covered by a checkpoint p50 / p99 | {ap50:.0} / {ap99:.0} ms |\n\
         | final log size | {size} leaves, {mib:.0} MiB (db + WAL) |\n\
         | agent resident memory at the end / peak | {rss:.0} / {peak:.0} MiB |\n\
         | restart after SIGKILL on this store: until it serves / receipts kept | {restart:.2} s / {kept} of {size} (goal < 1 s at ≥ 50 M leaves: {reopen}) |\n\
         | tlog-tiles of the last checkpoint | {tiles} |\n\
         | last checkpoint signature / proof bundles | verified ({key}) / {bundles} of 3 verified by `knhk-agent verify` |",
        secs = r["settings"]["seconds"],
        posters = r["settings"]["posters"],
        batch = r["settings"]["batch"],
        smin = num(r, &["receipts_per_s_per_second", "min"]),
        smed = num(r, &["receipts_per_s_per_second", "p50"]),
        smax = num(r, &["receipts_per_s_per_second", "max"]),
        pp50 = num(r, &["post_latency_ms", "p50"]),
        pp99 = num(r, &["post_latency_ms", "p99"]),
        pmax = num(r, &["post_latency_ms", "max"]),
        sn = r["seal_duration_ms"]["n"],
        sp50 = num(r, &["seal_duration_ms", "p50"]),
        sp99 = num(r, &["seal_duration_ms", "p99"]),
        smax2 = num(r, &["seal_duration_ms", "max"]),
        ap50 = num(r, &["ack_to_checkpoint_ms", "p50"]),
        ap99 = num(r, &["ack_to_checkpoint_ms", "p99"]),
        size = r["final_log_size"],
        mib = num(r, &["store_mib"]),
        rss = num(r, &["agent_rss_mib"]),
        peak = num(r, &["agent_peak_rss_mib"]),
        key = r["last_checkpoint"]["key"].as_str().unwrap_or("?"),
        restart = num(r, &["restart_after_crash_s"]),
        reopen = match (
            r["goal_reopen_met"].as_bool(),
            r["log_size_after_restart"].as_u64().unwrap_or(0) >= GOAL_REOPEN_LEAVES,
        ) {
            (Some(true), _) => "met",
            (_, true) => "missed",
            _ => "log too small to judge; use --fill-to",
        },
        kept = r["log_size_after_restart"],
        bundles = r["proof_bundles_verified"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seal durations are read from the agent's debug events, skipping the empty-log seal.
    #[test]
    fn seal_durations_are_parsed() {
        let log = "2026 DEBUG knhk_agent::receipts::log: sealed checkpoint tree_size=0 key_version=1 elapsed_us=900\n\
                   2026 DEBUG knhk_agent::receipts::log: sealed checkpoint tree_size=2048 key_version=1 elapsed_us=1500\n\
                   2026 INFO other line elapsed_us=7\n";
        assert_eq!(seal_durations_ms(log), [1.5]);
    }

    /// The batch builder yields valid, varied receipts.
    #[test]
    fn batches() {
        let records: Vec<Receipt> = (0..1024).map(|i| receipt(1, i, 1)).collect();
        let batch = encode_batch(&records).unwrap();
        assert_eq!(
            knhk_core::receipt::decode_batch(&batch).unwrap().len(),
            1024
        );
        let statuses: std::collections::HashSet<u16> = records.iter().map(|r| r.status).collect();
        assert!(statuses.len() >= 3, "{statuses:?}");
    }
}
