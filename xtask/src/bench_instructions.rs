//! `cargo xtask bench-envoy-instructions`: x86 instructions the real Envoy executes per request, per variant, counted under callgrind instead of timed.
//!
//! On a shared, noisy machine timed benchmarks wander by several percent; instruction counts
//! repeat to a fraction of a percent. Each variant's Envoy (`--concurrency 1`) runs under
//! `valgrind --tool=callgrind` on the bench bootstraps of `cargo xtask bench`. For each mode, one
//! keep-alive connection sends a warm-up, then a callgrind dump zeroes the counters, then two
//! batches of sequential requests each end with a dump; a batch's `totals:` divided by its
//! requests is the figure, and the two batches show how repeatable it is. Everything Envoy does
//! in that time counts, its timers included: since a request lasts some 50 times longer under
//! callgrind, an idle period after the batches measures that time-driven work per second, and
//! the report also gives each figure net of it. Variants run concurrently (`--jobs`):
//! callgrind runs a process's threads one at a time, so one valgrind uses one core.
//!
//! Ratios are printed as throughput equivalents (baseline instructions ÷ knhk instructions):
//! an instruction ratio, not a time ratio, since instructions differ in cost (cache misses,
//! system calls, V8's code). The callgrind files are kept under
//! `target/bench-instructions/<run id>/` for `callgrind_annotate`.

mod callgrind;
mod client;
mod session;
mod split;
mod table;

use crate::bench::agent::BenchAgent;
use crate::bench::machine::{self, Machine};
use crate::bench::placement::{Cpus, Priority};
use crate::bench::rig::{Bootstrap, Rig};
use crate::bench::upstream::Upstream;
use crate::bench::{self, report, ModeArg, Variant};
use anyhow::{bail, Context};
use client::Headers;
use session::{Plan, SubjectRun};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long Envoy may take to become ready under callgrind (usually 20 to 40 s).
const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// The variants measured by default: the baselines and both builds of knhk, without the agent.
const DEFAULT_VARIANTS: [Variant; 6] = [
    Variant::None,
    Variant::Empty,
    Variant::Lua,
    Variant::AdmissionControl,
    Variant::Knhk,
    Variant::KnhkNative,
];
/// The host-call probe's operation letters (see `bench/hostcall-probe`).
const PROBE_OPS: &str = "cgasdmrk";

/// Options of `cargo xtask bench-envoy-instructions`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which routes to measure: `direct` (`direct_response`), `proxy` (to the local upstream) or both.
    #[arg(long, value_enum, default_value_t = ModeArg::Both)]
    mode: ModeArg,
    /// Variants, comma-separated. The agent variants (knhk-agent, knhk-native-agent) also start
    /// a release `knhk-agent`, run directly (only Envoy runs under callgrind).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = DEFAULT_VARIANTS)]
    variants: Vec<Variant>,
    /// Requests per measured batch (two batches per mode).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    requests: u32,
    /// Requests before the counters are zeroed.
    #[arg(long, default_value_t = 300)]
    warmup: u32,
    /// Seconds without requests after the batches, to measure and take out Envoy's time-driven
    /// work (timers, the filter's tick); 0 skips it.
    #[arg(long, default_value_t = 10)]
    idle: u64,
    /// Measure this module as the knhk variant instead of building `knhk_filter.wasm` (A/B of a build).
    #[arg(long, value_name = "PATH")]
    knhk_wasm: Option<PathBuf>,
    /// Request headers besides host and x-user-id: `plain` or a realistic `browser` set.
    #[arg(long, value_enum, default_value_t = Headers::Plain)]
    headers: Headers,
    /// Variants measured at the same time (one core each).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    jobs: u8,
    /// Also measure the host-call probe running OPS per request (letters: c clock, g present
    /// header, a absent header, s set header, d remove an absent header, m SDK header map,
    /// r raw header map pairs, k knhk's key hash of the last g, no host call), plus
    /// the probe with no op as its baseline. Repeatable.
    #[arg(long = "probe", value_name = "OPS")]
    probes: Vec<String>,
}

/// What one Envoy under callgrind runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A variant of the load bench.
    Variant(Variant),
    /// The host-call probe with its operation letters.
    Probe(String),
}

impl Subject {
    /// Name in tables, e.g. `knhk` or `probe:gggg`.
    pub fn name(&self) -> String {
        match self {
            Subject::Variant(v) => v.name().to_string(),
            Subject::Probe(ops) => format!("probe:{ops}"),
        }
    }

    /// Name in file names, e.g. `knhk` or `probe-gggg` (`probe` for the baseline).
    pub fn tag(&self) -> String {
        match self {
            Subject::Variant(v) => v.name().to_string(),
            Subject::Probe(ops) if ops.is_empty() => "probe".to_string(),
            Subject::Probe(ops) => format!("probe-{ops}"),
        }
    }
}

/// Entry point.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let variants = variants(&args.variants);
    let probes = probes(&args.probes)?;
    let toolchain = crate::setup::ensure()?;
    crate::setup::ensure_apt(&["valgrind"])?;
    let envoy = toolchain.envoy_elf()?;
    let modules = Modules::build(&variants, &probes, args.knhk_wasm.as_deref())?;
    let (date, stamp) = machine::utc_now();
    let run_dir = crate::wasm::target_dir()?
        .join("bench-instructions")
        .join(&stamp);
    std::fs::create_dir_all(&run_dir).with_context(|| format!("create {}", run_dir.display()))?;
    let upstream = Upstream::start()?;
    let agent = start_agent(&variants, &run_dir)?;
    let rig = Rig {
        envoy_bin: envoy.clone(),
        run_dir: run_dir.clone(),
        builds: modules.builds.clone(),
        upstream_port: upstream.addr().port(),
        agent: agent.as_ref().map(BenchAgent::link),
        // Pinning and priority change times, not instruction counts.
        cpus: Cpus::plan(1, false),
        priority: Priority::None,
        wrapper: valgrind_wrapper(&run_dir),
        ready_timeout: READY_TIMEOUT,
    };
    let plan = Plan {
        modes: args.mode.modes(),
        warmup: args.warmup,
        requests: args.requests,
        headers: args.headers,
        idle: Duration::from_secs(args.idle),
    };
    let subjects = subjects(&rig, &variants, &probes, modules.probe.as_deref())?;

    print_header(&date, &envoy, &plan, args, &run_dir);
    let jobs = usize::from(args.jobs).min(subjects.len());
    let (runs, failures) = measure_all(&rig, &subjects, &plan, jobs);
    drop(agent);
    drop(upstream);
    for &mode in &plan.modes {
        table::print_mode(mode, &runs, &plan);
    }
    modules.print_sizes();
    table::write_json(&run_dir.join("results.json"), &date, &runs, &plan)?;
    println!();
    println!(
        "callgrind files, Envoy logs and results.json: {}",
        run_dir.display()
    );
    println!("took {:.0} s", started.elapsed().as_secs_f64());
    let mut failures = failures.into_iter();
    let first = failures.next();
    for other in failures {
        eprintln!("also failed: {other:#}");
    }
    first.map_or(Ok(()), Err)
}

/// The filter builds of a run, and the probe.
struct Modules {
    builds: bench::Builds,
    probe: Option<PathBuf>,
}

impl Modules {
    /// Build what the variants and probes need (`--knhk-wasm` replaces the knhk build).
    fn build(
        variants: &[Variant],
        probes: &[String],
        knhk_override: Option<&Path>,
    ) -> anyhow::Result<Modules> {
        let builds = bench::build_modules(variants, knhk_override)?;
        let probe = if probes.is_empty() {
            None
        } else {
            Some(crate::wasm::build(
                "knhk-hostcall-probe",
                "knhk_hostcall_probe",
            )?)
        };
        Ok(Modules { builds, probe })
    }

    /// Print the modules' sizes (knhk's against its goal).
    fn print_sizes(&self) {
        let sizes = report::module_sizes(&[
            ("knhk_empty_filter.wasm", self.builds.empty_wasm.as_deref()),
            ("knhk_filter.wasm", self.builds.knhk_wasm.as_deref()),
            ("libknhk_filter.so", self.builds.knhk_native.as_deref()),
            ("knhk_hostcall_probe.wasm", self.probe.as_deref()),
        ]);
        report::print_module_sizes(&sizes, bench::MODULE_SIZE_GOAL_BYTES);
    }
}

/// The release agent for the agent variants, run directly (not under callgrind) in
/// `<run_dir>/agent`; `None` when no agent variant runs.
///
/// Under callgrind a request lasts ~50 × longer, so the filter's time-bound receipt flushes
/// (every ≤ 250 ms) carry fewer receipts than at full speed: the per-request cost of receipts
/// counted here is an upper bound.
fn start_agent(variants: &[Variant], run_dir: &Path) -> anyhow::Result<Option<BenchAgent>> {
    if !variants.iter().any(|v| v.uses_agent()) {
        return Ok(None);
    }
    let binary = crate::agent_process::build_release().context("build knhk-agent")?;
    let command = crate::bench::placement::placed(binary.as_os_str(), None, Priority::None);
    let agent = BenchAgent::start(&binary, command, run_dir.join("agent"))
        .context("start the agent for the agent variants")?;
    Ok(Some(agent))
}

/// Every subject with its bootstrap: the variants, then the probes.
fn subjects(
    rig: &Rig,
    variants: &[Variant],
    probes: &[String],
    probe_wasm: Option<&Path>,
) -> anyhow::Result<Vec<(Subject, Bootstrap)>> {
    let mut subjects = Vec::new();
    for &v in variants {
        subjects.push((Subject::Variant(v), rig.bootstrap(v)?));
    }
    for ops in probes {
        let bootstrap = Bootstrap {
            template: "bench-wasm.yaml",
            wasm: probe_wasm.map(Path::to_path_buf),
            native: None,
            plugin_config: Some(ops.clone()),
            agent_port: None,
        };
        subjects.push((Subject::Probe(ops.clone()), bootstrap));
    }
    Ok(subjects)
}

/// The selected variants in table order.
fn variants(selected: &[Variant]) -> Vec<Variant> {
    Variant::ALL
        .into_iter()
        .filter(|v| selected.contains(v))
        .collect()
}

/// The probe op strings, checked, with the empty baseline first; none when no `--probe` was given.
fn probes(given: &[String]) -> anyhow::Result<Vec<String>> {
    if given.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = vec![String::new()];
    for ops in given {
        if let Some(bad) = ops.chars().find(|c| !PROBE_OPS.contains(*c)) {
            bail!("--probe {ops:?}: unknown op {bad:?} (ops are the letters {PROBE_OPS})");
        }
        if !out.contains(ops) {
            out.push(ops.clone());
        }
    }
    Ok(out)
}

/// `valgrind --tool=callgrind …` writing `callgrind.out.<pid>` files into `dir`.
fn valgrind_wrapper(dir: &Path) -> Vec<OsString> {
    let mut out_file = OsString::from("--callgrind-out-file=");
    out_file.push(dir.join("callgrind.out.%p"));
    vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        // V8 writes code into anonymous memory and patches it: re-translate it when it changes.
        "--smc-check=all-non-file".into(),
        out_file,
    ]
}

/// Run every subject, `jobs` at a time; the runs that succeeded in subject order, and the errors.
fn measure_all(
    rig: &Rig,
    subjects: &[(Subject, Bootstrap)],
    plan: &Plan,
    jobs: usize,
) -> (Vec<SubjectRun>, Vec<anyhow::Error>) {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<(usize, anyhow::Result<SubjectRun>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                // After a failure no new subject starts; the ones running finish.
                while !failed.load(Ordering::SeqCst) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some((subject, bootstrap)) = subjects.get(i) else {
                        break;
                    };
                    let result = session::measure(rig, subject, bootstrap, plan);
                    failed.fetch_or(result.is_err(), Ordering::SeqCst);
                    results
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((i, result));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(PoisonError::into_inner);
    results.sort_by_key(|(i, _)| *i);
    let mut runs = Vec::new();
    let mut failures = Vec::new();
    for (_, result) in results {
        match result {
            Ok(run) => runs.push(run),
            Err(e) => failures.push(e),
        }
    }
    (runs, failures)
}

/// What was run, where and how.
fn print_header(date: &str, envoy: &Path, plan: &Plan, args: &Args, run_dir: &Path) {
    let machine = Machine::detect();
    let command: Vec<String> = std::env::args().skip(1).collect();
    println!();
    println!("cargo xtask {}", command.join(" "));
    println!(
        "knhk bench-envoy-instructions {date}: {} under {} (--concurrency 1), {} CPU(s) {}, load {:.2}",
        bench::envoy_version(envoy),
        valgrind_version(),
        machine.cpus,
        machine.cpu_model,
        machine.load_average
    );
    println!(
        "per mode: {} warm-up requests, then 2 batches of {} sequential requests on one keep-alive connection; {} headers; then {} s idle; {} job(s)",
        plan.warmup,
        plan.requests,
        plan.headers.name(),
        plan.idle.as_secs(),
        args.jobs
    );
    println!("run directory: {}", run_dir.display());
    println!();
}

/// `valgrind-3.19.0`, or `valgrind` when the version cannot be read.
fn valgrind_version() -> String {
    crate::util::run_output(std::process::Command::new("valgrind").arg("--version"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|_| "valgrind".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    /// Defaults: both modes, the baselines and both knhk builds without the agent, 1000
    /// requests after 300, plain headers, 2 jobs.
    #[test]
    fn defaults() {
        let a = Cli::try_parse_from(["x"]).unwrap().args;
        assert_eq!(a.mode.modes().len(), 2);
        assert_eq!(
            variants(&a.variants),
            [
                Variant::None,
                Variant::Empty,
                Variant::Lua,
                Variant::AdmissionControl,
                Variant::Knhk,
                Variant::KnhkNative
            ]
        );
        assert_eq!((a.requests, a.warmup, a.jobs), (1000, 300, 2));
        assert_eq!(a.headers, Headers::Plain);
        assert!(Cli::try_parse_from(["x", "--jobs", "3"]).is_err());
    }

    /// Variants come back in table order; the agent variants are accepted.
    #[test]
    fn variant_selection() {
        assert_eq!(
            variants(&[Variant::KnhkNativeAgent, Variant::Knhk, Variant::None]),
            [Variant::None, Variant::Knhk, Variant::KnhkNativeAgent]
        );
        let a = Cli::try_parse_from(["x", "--variants", "knhk-native,admission-control"])
            .unwrap()
            .args;
        assert_eq!(
            variants(&a.variants),
            [Variant::AdmissionControl, Variant::KnhkNative]
        );
    }

    /// Probes get the empty baseline first, duplicates once; unknown letters are refused.
    #[test]
    fn probe_selection() {
        assert!(probes(&[]).unwrap().is_empty());
        let p = probes(&["gggg".into(), "cccc".into(), "gggg".into()]).unwrap();
        assert_eq!(p, ["", "gggg", "cccc"]);
        assert!(probes(&["gx".into()]).is_err());
        assert_eq!(Subject::Probe(String::new()).tag(), "probe");
        assert_eq!(Subject::Probe("ss".into()).name(), "probe:ss");
    }
}
