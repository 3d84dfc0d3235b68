//! `cargo xtask bench`: the interleaved Envoy load benchmark of knhk's two builds (wasm and native, each alone and with its agent) against no filter, an empty wasm filter, Lua and Envoy's admission_control.
//!
//! One invocation builds the filters the variants load (and the release agent for the agent
//! variants), starts one Envoy per variant (`--concurrency 1`, pinned to one CPU) plus a tiny
//! in-process upstream and, for the agent variants, one `knhk-agent` off Envoy's CPU, and then measures round by round: in
//! every round each variant gets a short warm-up and one measured wrk run per mode, with the
//! variant order rotated between rounds so no variant always runs first or last. Ratios are
//! taken within a round (knhk against each baseline measured minutes apart at most), and the
//! medians over rounds are what the goals are checked against. The bench reports; it never
//! fails because a goal is missed. See `docs/benchmarks.md` for what each variant means.

pub(crate) mod agent;
pub(crate) mod envoy;
mod load;
pub(crate) mod machine;
mod memory;
pub(crate) mod placement;
pub(crate) mod report;
pub(crate) mod rig;
mod rounds;
pub(crate) mod upstream;

use agent::BenchAgent;
use anyhow::{bail, Context};
use clap::error::ErrorKind;
use clap::{Parser, ValueEnum};
use envoy::Envoy;
use knhk_e2e::paths::repo_root;
use load::LoadSpec;
use machine::Machine;
use placement::{Cpus, Priority};
use rig::Rig;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use upstream::Upstream;

/// Plugin configuration of the knhk variant: 10 % canary keyed on `x-user-id`, admission on, no debug headers.
pub const KNHK_PLUGIN_CONFIG: &str = r#"{"routing":{"salt":"knhk","canary_basis_points":1000,"key_sources":[{"header":"x-user-id"}]},"admission":{"enabled":true},"debug_headers":false}"#;
/// Goal for the size of `knhk_filter.wasm`, bytes.
pub const MODULE_SIZE_GOAL_BYTES: u64 = 300 * 1000;

/// A filter setup under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Variant {
    /// Envoy with only the router.
    None,
    /// Envoy with the do-nothing proxy-wasm filter (bench/empty-filter).
    Empty,
    /// Envoy with a Lua filter doing comparable header routing.
    Lua,
    /// Envoy with its own native `admission_control` filter (admission only, no routing).
    AdmissionControl,
    /// Envoy with `knhk_filter.wasm`.
    Knhk,
    /// Envoy with `knhk_filter.wasm` connected to a release `knhk-agent`: the knhk config plus
    /// a `control` section, so config long-polling is active and every request's receipt is
    /// posted to the agent.
    KnhkAgent,
    /// Envoy with the dynamic module `libknhk_filter.so` and the knhk config.
    KnhkNative,
    /// The dynamic module connected to the agent, as knhk-agent is for the wasm build.
    KnhkNativeAgent,
}

impl Variant {
    /// All variants, in table order. A variant is compared with every variant before it that is
    /// a baseline (see [`Variant::baselines`]).
    pub const ALL: [Variant; 8] = [
        Variant::None,
        Variant::Empty,
        Variant::Lua,
        Variant::AdmissionControl,
        Variant::Knhk,
        Variant::KnhkAgent,
        Variant::KnhkNative,
        Variant::KnhkNativeAgent,
    ];

    /// Short name used in tables, JSON and file names.
    pub fn name(self) -> &'static str {
        match self {
            Variant::None => "none",
            Variant::Empty => "empty",
            Variant::Lua => "lua",
            Variant::AdmissionControl => "admission-control",
            Variant::Knhk => "knhk",
            Variant::KnhkAgent => "knhk-agent",
            Variant::KnhkNative => "knhk-native",
            Variant::KnhkNativeAgent => "knhk-native-agent",
        }
    }

    /// The variants this one's throughput is compared with (same round, ratio = this ÷ baseline):
    /// each knhk build against the four baselines, the native build also against the wasm one,
    /// and each build with the agent against the same build without it (the cost of receipts
    /// and config polling alone).
    pub fn baselines(self) -> &'static [Variant] {
        use Variant::{AdmissionControl, Empty, Knhk, KnhkNative, Lua, None};
        match self {
            Variant::None | Variant::Empty | Variant::Lua | Variant::AdmissionControl => &[],
            Variant::Knhk => &[None, Empty, Lua, AdmissionControl],
            Variant::KnhkAgent => &[None, Empty, Lua, AdmissionControl, Knhk],
            Variant::KnhkNative => &[None, Empty, Lua, AdmissionControl, Knhk],
            Variant::KnhkNativeAgent => &[None, Empty, Lua, AdmissionControl, KnhkNative],
        }
    }

    /// True for the variants that load the knhk filter (either build).
    pub fn loads_knhk(self) -> bool {
        matches!(
            self,
            Variant::Knhk | Variant::KnhkAgent | Variant::KnhkNative | Variant::KnhkNativeAgent
        )
    }

    /// True for the variants that load `knhk_filter.wasm`.
    pub fn loads_knhk_wasm(self) -> bool {
        matches!(self, Variant::Knhk | Variant::KnhkAgent)
    }

    /// True for the variants that load the dynamic module `libknhk_filter.so`.
    pub fn loads_knhk_native(self) -> bool {
        matches!(self, Variant::KnhkNative | Variant::KnhkNativeAgent)
    }

    /// True for the variants connected to the bench's agent.
    pub fn uses_agent(self) -> bool {
        matches!(self, Variant::KnhkAgent | Variant::KnhkNativeAgent)
    }

    /// Envoy's stats prefix of the knhk filter's own counters in this variant, e.g.
    /// `wasmcustom.knhk.` (wasm) or `dynamicmodulescustom.knhk.` (native).
    pub fn knhk_stats_prefix(self) -> &'static str {
        if self.loads_knhk_native() {
            "dynamicmodulescustom.knhk."
        } else {
            "wasmcustom.knhk."
        }
    }

    /// [`Variant::knhk_stats_prefix`] as a regular expression (dots escaped), to put in front
    /// of a counter name pattern.
    pub fn knhk_stats_regex(self) -> String {
        self.knhk_stats_prefix().replace('.', r"\.")
    }
}

/// Where the request ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Envoy answers with a `direct_response` route: the filter's own cost, no upstream.
    Direct,
    /// Envoy proxies to the local upstream: what users see.
    Proxy,
}

impl Mode {
    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Proxy => "proxy",
        }
    }

    /// Request path selecting the mode's route in the bench bootstraps.
    pub fn path(self) -> &'static str {
        match self {
            Mode::Direct => "/direct",
            Mode::Proxy => "/proxy",
        }
    }
}

/// `--mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// The `direct_response` route only.
    Direct,
    /// The proxied route only.
    Proxy,
    /// Both, direct first.
    Both,
}

impl ModeArg {
    /// The modes selected, in table order.
    pub fn modes(self) -> Vec<Mode> {
        match self {
            ModeArg::Direct => vec![Mode::Direct],
            ModeArg::Proxy => vec![Mode::Proxy],
            ModeArg::Both => vec![Mode::Direct, Mode::Proxy],
        }
    }
}

/// Command-line options of `cargo xtask bench`.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask bench",
    about = "Interleaved Envoy load benchmark: knhk wasm and native (alone and with its agent) vs no filter, empty wasm filter, Lua and admission_control"
)]
struct Options {
    /// Measured rounds; every variant runs once per mode per round [default: 5; --quick: 2].
    #[arg(long)]
    rounds: Option<u32>,
    /// Seconds per measured run [default: 6; --quick: 3].
    #[arg(long)]
    duration: Option<u64>,
    /// Seconds of warm-up before each measured run [default: 1].
    #[arg(long)]
    warmup: Option<u64>,
    /// Which routes to measure.
    #[arg(long, value_enum, default_value_t = ModeArg::Both)]
    mode: ModeArg,
    /// Short smoke run: 2 rounds of 3 s.
    #[arg(long)]
    quick: bool,
    /// Repeat a measured run in which Envoy had less than this share of its CPU (0 disables the gate).
    #[arg(long, default_value_t = 0.85)]
    min_cpu_share: f64,
    /// Attempts per measured run under the saturation gate (the best one is kept).
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// Concurrent wrk connections.
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Variants to run, comma-separated (ratios and goals need knhk or knhk-agent plus the baseline).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Variant::ALL)]
    variants: Vec<Variant>,
    /// Bench this prebuilt module as the knhk and knhk-agent variants instead of building
    /// `knhk-filter` (e.g. to compare a tuning experiment with the committed filter).
    #[arg(long, value_name = "PATH")]
    knhk_wasm: Option<PathBuf>,
    /// Run this `knhk-agent` binary for the knhk-agent variant instead of building the release one.
    #[arg(long, value_name = "PATH")]
    agent: Option<PathBuf>,
    /// Scheduling priority of Envoy, wrk, the upstream and the agent: `rt` (SCHED_RR 1, default), `nice` (-10) or `none`.
    /// Raised priorities need root; without it the bench runs at `none` and says so.
    #[arg(long, value_enum, default_value_t = Priority::Rt)]
    priority: Priority,
}

/// Options resolved against `--quick` and the defaults.
#[derive(Debug, Clone)]
struct Settings {
    rounds: u32,
    duration: Duration,
    warmup: Duration,
    initial_warmup: Duration,
    connections: u32,
    modes: Vec<Mode>,
    variants: Vec<Variant>,
    priority: Priority,
    min_cpu_share: f64,
    max_attempts: u32,
}

impl Settings {
    fn from_options(o: &Options) -> anyhow::Result<Settings> {
        let rounds = o.rounds.unwrap_or(if o.quick { 2 } else { 5 });
        let duration = o.duration.unwrap_or(if o.quick { 3 } else { 6 });
        let warmup = o.warmup.unwrap_or(1);
        if rounds == 0 || duration == 0 || o.connections == 0 || o.max_attempts == 0 {
            bail!("--rounds, --duration, --connections and --max-attempts must be at least 1");
        }
        if !(0.0..=1.0).contains(&o.min_cpu_share) {
            bail!(
                "--min-cpu-share must be within 0..=1, got {}",
                o.min_cpu_share
            );
        }
        let mut variants = Vec::new();
        for v in Variant::ALL {
            if o.variants.contains(&v) {
                variants.push(v);
            }
        }
        let modes = o.mode.modes();
        Ok(Settings {
            rounds,
            duration: Duration::from_secs(duration),
            warmup: Duration::from_secs(warmup),
            // The first warm-up also lets V8 tier the module up from its baseline compiler.
            initial_warmup: Duration::from_secs(if o.quick { 1 } else { 3 }),
            connections: o.connections,
            modes,
            variants,
            priority: o.priority,
            min_cpu_share: o.min_cpu_share,
            max_attempts: o.max_attempts,
        })
    }
}

/// Entry point of `cargo xtask bench [args]`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let Some(options) = parse(args)? else {
        return Ok(());
    };
    let settings = Settings::from_options(&options)?;
    let machine = Machine::detect();
    let (date, stamp) = machine::utc_now();

    let toolchain = crate::setup::ensure()?;
    if !on_path("wrk") {
        crate::setup::ensure_apt(&["wrk"])?;
    }
    let cpus = Cpus::plan(machine.cpus, on_path("taskset"));
    let priority = effective_priority(settings.priority);
    let envoy_version = envoy_version(&toolchain.envoy);
    let builds = build_modules(&settings.variants, options.knhk_wasm.as_deref())?;
    let agent_bin = agent_binary(&settings, options.agent.as_deref())?;

    let results_dir = repo_root().join("bench-results");
    let run_dir = results_dir.join(format!("bench-{stamp}"));
    std::fs::create_dir_all(&run_dir).with_context(|| format!("create {}", run_dir.display()))?;
    let script = run_dir.join("wrk-keys.lua");
    std::fs::write(&script, load::WRK_SCRIPT)
        .with_context(|| format!("write {}", script.display()))?;

    // Place this process's main thread first: the upstream thread inherits CPU and priority.
    placement::place_self(cpus.upstream, priority)?;
    let upstream = Upstream::start()?;
    let bench_agent = match &agent_bin {
        Some(binary) => Some(
            BenchAgent::start(
                binary,
                placement::placed(binary.as_os_str(), cpus.agent, priority),
                run_dir.join("agent"),
            )
            .context("start the agent for variant knhk-agent")?,
        ),
        None => None,
    };
    let rig = Rig {
        envoy_bin: toolchain.envoy.clone(),
        run_dir: run_dir.clone(),
        builds: builds.clone(),
        upstream_port: upstream.addr().port(),
        agent: bench_agent.as_ref().map(BenchAgent::link),
        cpus,
        priority,
        wrapper: Vec::new(),
        ready_timeout: envoy::READY_TIMEOUT,
    };
    let spec = LoadSpec {
        script: &script,
        connections: settings.connections,
        cpu: cpus.load,
        priority,
    };

    println!(
        "knhk bench {date}: {} round(s) × {} variant(s) × {} mode(s), {} s runs after {} s warm-up, {} connections",
        settings.rounds,
        settings.variants.len(),
        settings.modes.len(),
        settings.duration.as_secs(),
        settings.warmup.as_secs(),
        settings.connections
    );
    println!(
        "machine: {} CPU(s) {}, {} MiB, load {:.2}; {envoy_version} --concurrency 1 on {}, wrk on {}, upstream on {}; {}",
        machine.cpus,
        machine.cpu_model,
        machine.memory_mib,
        machine.load_average,
        Cpus::describe(cpus.envoy),
        Cpus::describe(cpus.load),
        Cpus::describe(cpus.upstream),
        priority.describe()
    );
    if let Some(a) = &bench_agent {
        println!(
            "knhk-agent: {} on {} (outside Envoy's CPU: the ratios measure Envoy's throughput), policy epoch {}, log and config in {}",
            a.binary().display(),
            Cpus::describe(cpus.agent),
            a.epoch,
            a.dir().display()
        );
    }
    println!("logs and rendered configs: {}", run_dir.display());

    let mut envoys: Vec<(Variant, Envoy)> = Vec::new();
    for &variant in &settings.variants {
        envoys.push((variant, rig.start(variant, 1, variant.name())?));
    }
    let runs = rounds::measure(&mut envoys, &spec, &settings)?;
    // Receipts of the agent variants, before their Envoys (or the memory runs) go on.
    let posting: Vec<(Variant, &Envoy)> = envoys
        .iter()
        .filter(|(v, _)| v.uses_agent())
        .map(|(v, e)| (*v, e))
        .collect();
    let receipt_check = match &bench_agent {
        Some(a) if !posting.is_empty() => Some(agent::check_receipts(a, &posting)?),
        _ => None,
    };
    let splits = rig::route_splits(&envoys);
    let knhk_stats: Vec<(Variant, Vec<(String, u64)>)> = envoys
        .iter()
        .filter(|(v, _)| v.loads_knhk())
        .map(|(v, e)| {
            let counters = e.counters(&format!("^{}", v.knhk_stats_regex()));
            (*v, counters.unwrap_or_default())
        })
        .collect();
    let loaded_rss: Vec<(Variant, Option<u64>)> =
        envoys.iter().map(|(v, e)| (*v, e.rss_kib().ok())).collect();
    drop(envoys);
    let memory = memory::measure(&rig, &spec, &settings)?;
    drop(upstream);
    let agent_record = bench_agent.as_ref().map(|a| {
        json!({
            "binary": a.binary(),
            "dir": a.dir(),
            "cpu": cpus.agent,
            "policy_epoch": a.epoch,
            "plugin_config": a.plugin_config,
            "receipts_check": receipt_check.as_ref().map(|c| c.to_json(a.epoch)),
        })
    });
    let agent_epoch = bench_agent.as_ref().map_or(0, |a| a.epoch);
    drop(bench_agent);
    let load_at_end = Machine::detect().load_average;

    let summaries = report::summarize(&runs, &settings.variants, &settings.modes);
    let ratios = report::ratios(&runs, &settings.variants, &settings.modes, settings.rounds);
    let goals = report::goals(&ratios);
    report::print(&summaries, &ratios, &goals);
    if priority == Priority::Rt {
        println!(
            "note: at SCHED_RR the kernel's real-time throttling (sched_rt_runtime_us) pauses a saturated Envoy \
             for ~50 ms per second, which lands in p99 of every variant alike; compare p50/p90 across variants"
        );
    }
    report::print_checks(&splits, &knhk_stats);
    if let Some(check) = &receipt_check {
        check.print(agent_epoch);
    }
    let module_sizes = report::module_sizes(&[
        ("knhk_empty_filter.wasm", builds.empty_wasm.as_deref()),
        ("knhk_filter.wasm", builds.knhk_wasm.as_deref()),
        ("libknhk_filter.so", builds.knhk_native.as_deref()),
    ]);
    report::print_module_sizes(&module_sizes, MODULE_SIZE_GOAL_BYTES);
    memory::print(&memory, &loaded_rss);
    println!();
    println!(
        "load average: {:.2} at start, {load_at_end:.2} at end",
        machine.load_average
    );

    let record = json!({
        "date": date,
        "machine": machine.to_json(),
        "load_average_1m_at_end": load_at_end,
        "envoy": envoy_version,
        "settings": {
            "rounds": settings.rounds,
            "duration_s": settings.duration.as_secs(),
            "warmup_s": settings.warmup.as_secs(),
            "initial_warmup_s": settings.initial_warmup.as_secs(),
            "connections": settings.connections,
            "modes": settings.modes.iter().map(|m| m.name()).collect::<Vec<_>>(),
            "variants": settings.variants.iter().map(|v| v.name()).collect::<Vec<_>>(),
            "envoy_cpu": cpus.envoy,
            "wrk_cpu": cpus.load,
            "upstream_cpu": cpus.upstream,
            "agent_cpu": cpus.agent,
            "priority": priority.name(),
            "min_cpu_share": settings.min_cpu_share,
            "max_attempts": settings.max_attempts,
            "knhk_wasm": builds.knhk_wasm,
            "knhk_native": builds.knhk_native,
            "knhk_plugin_config": KNHK_PLUGIN_CONFIG,
        },
        "runs": runs.iter().map(report::run_json).collect::<Vec<_>>(),
        "aggregates": report::aggregates_json(&summaries, &ratios, &goals),
        "canary_share_proxy": pairs(splits.iter().map(|(v, s)| (v.name().to_string(), json!(s)))),
        "knhk_counters": pairs(knhk_stats.iter().map(|(variant, stats)| {
            (
                variant.name().to_string(),
                json!(pairs(stats.iter().map(|(n, v)| (n.clone(), json!(v))))),
            )
        })),
        "knhk_agent": agent_record,
        "module_bytes": pairs(module_sizes.iter().map(|(n, b)| (n.clone(), json!(b)))),
        "memory": memory::to_json(&memory, &loaded_rss),
    });
    let json_path = results_dir.join(format!("bench-{stamp}.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&record)?)
        .with_context(|| format!("write {}", json_path.display()))?;
    println!("results: {}", json_path.display());
    Ok(())
}

/// Parse the arguments; `None` when help or version was printed.
fn parse(args: &[String]) -> anyhow::Result<Option<Options>> {
    let argv = std::iter::once("cargo xtask bench".to_string()).chain(args.iter().cloned());
    match Options::try_parse_from(argv) {
        Ok(options) => Ok(Some(options)),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            print!("{e}");
            Ok(None)
        }
        Err(e) => bail!("{e}"),
    }
}

/// The filter builds a run loads.
#[derive(Debug, Clone, Default)]
pub struct Builds {
    /// `knhk_empty_filter.wasm`, for the empty variant.
    pub empty_wasm: Option<PathBuf>,
    /// `knhk_filter.wasm`, for knhk and knhk-agent.
    pub knhk_wasm: Option<PathBuf>,
    /// `libknhk_filter.so`, for knhk-native and knhk-native-agent.
    pub knhk_native: Option<PathBuf>,
}

/// Build the filters `variants` need; `--knhk-wasm` replaces the knhk wasm build.
pub fn build_modules(variants: &[Variant], knhk_override: Option<&Path>) -> anyhow::Result<Builds> {
    let wants = |v: Variant| variants.contains(&v);
    let empty_wasm = if wants(Variant::Empty) {
        Some(crate::wasm::build(
            "knhk-empty-filter",
            "knhk_empty_filter",
        )?)
    } else {
        None
    };
    let knhk_wasm = match knhk_override {
        _ if !variants.iter().any(|v| v.loads_knhk_wasm()) => None,
        Some(path) if path.is_file() => {
            Some(std::fs::canonicalize(path).with_context(|| format!("canonicalize {}", path.display()))?)
        }
        Some(path) => bail!("--knhk-wasm {} is not a file", path.display()),
        None => Some(crate::wasm::build("knhk-filter", "knhk_filter").context(
            "build knhk_filter.wasm (run with --variants none,empty,lua to bench the baselines without it)",
        )?),
    };
    let knhk_native = if variants.iter().any(|v| v.loads_knhk_native()) {
        Some(crate::native::build().context("build libknhk_filter.so")?)
    } else {
        None
    };
    Ok(Builds {
        empty_wasm,
        knhk_wasm,
        knhk_native,
    })
}

/// The agent binary for the knhk-agent variant: `--agent`, or the release build; `None` without that variant.
fn agent_binary(
    settings: &Settings,
    agent_override: Option<&Path>,
) -> anyhow::Result<Option<PathBuf>> {
    if !settings.variants.iter().any(|v| v.uses_agent()) {
        return Ok(None);
    }
    match agent_override {
        Some(path) if path.is_file() => {
            Ok(Some(std::fs::canonicalize(path).with_context(|| {
                format!("canonicalize {}", path.display())
            })?))
        }
        Some(path) => bail!("--agent {} is not a file", path.display()),
        None => Ok(Some(crate::agent_process::build_release().context(
            "build knhk-agent (run with --variants none,empty,lua,knhk to bench without it)",
        )?)),
    }
}

/// A JSON object from (key, value) pairs.
fn pairs(
    items: impl Iterator<Item = (String, serde_json::Value)>,
) -> serde_json::Map<String, serde_json::Value> {
    items.collect()
}

/// True when an executable named `name` is on `PATH`.
pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

/// The first line of `envoy --version`, shortened to `Envoy <version>`.
pub fn envoy_version(envoy: &Path) -> String {
    let text = Command::new(envoy)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    // "<path>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    text.split_once("version: ")
        .and_then(|(_, rest)| rest.split('/').nth(1))
        .map_or_else(
            || "Envoy (unknown version)".to_string(),
            |v| format!("Envoy {v}"),
        )
}

/// The priority the bench can actually use: raised ones need root (and `chrt` for `rt`).
fn effective_priority(requested: Priority) -> Priority {
    match requested {
        Priority::None => Priority::None,
        // Only root may raise priority.
        _ if !crate::setup::is_root() => {
            println!("bench: not root, running at default priority (results are noisier on a busy machine)");
            Priority::None
        }
        Priority::Rt if !on_path("chrt") => {
            println!("bench: chrt not found, using nice -10 instead of SCHED_RR");
            Priority::Nice
        }
        p => p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quick mode shortens rounds and runs; explicit flags still win.
    #[test]
    fn quick_mode_defaults_and_overrides() {
        let o = Options::try_parse_from(["x", "--quick", "--rounds", "4"]).unwrap();
        let s = Settings::from_options(&o).unwrap();
        assert_eq!(s.rounds, 4);
        assert_eq!(s.duration, Duration::from_secs(3));
        assert_eq!(s.modes, vec![Mode::Direct, Mode::Proxy]);
        assert_eq!(s.variants, Variant::ALL.to_vec());
    }

    /// Variants keep table order whatever order they were given in.
    #[test]
    fn variants_are_ordered() {
        let o =
            Options::try_parse_from(["x", "--variants", "knhk,none", "--mode", "proxy"]).unwrap();
        let s = Settings::from_options(&o).unwrap();
        assert_eq!(s.variants, vec![Variant::None, Variant::Knhk]);
        assert_eq!(s.modes, vec![Mode::Proxy]);
    }

    /// The knhk plugin configuration is valid and is the one the docs describe: 10 % canary on `x-user-id`.
    #[test]
    fn knhk_config_is_ten_percent_on_user_id() {
        let p = knhk_core::Policy::from_json(KNHK_PLUGIN_CONFIG.as_bytes()).unwrap();
        assert_eq!(p.canary_basis_points, 1000);
        assert_eq!(
            p.key_sources,
            vec![knhk_core::policy::KeyFrom::Header("x-user-id".into())]
        );
        assert!(p.admission_enabled && !p.shadow && !p.debug_headers);
    }
}
