//! The bench rig: where each process runs (CPU pinning, priority) and how a variant's Envoy is rendered, started and probed.

use super::envoy::{Envoy, Launch};
use super::{Mode, Variant, KNHK_PLUGIN_CONFIG};
use anyhow::{bail, Context};
use knhk_e2e::paths::envoy_template;
use knhk_e2e::template::{render_file, Vars};
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a knhk-agent Envoy may take to apply the agent's config after it serves.
const CONFIG_APPLIED_TIMEOUT: Duration = Duration::from_secs(20);

/// Scheduling priority of Envoy, wrk, the bench's in-process upstream and the knhk agent.
///
/// Measured on the shared 2-CPU machine of `docs/benchmarks.md`: with a compiler running at
/// nice 10 on Envoy's CPU, Envoy at nice -10 still got only ~50 % of that CPU (it sleeps and
/// wakes thousands of times a second, and a waking task waits for the running one's slice),
/// while `SCHED_RR` priority 1 gave it 97 %. Real-time throttling (`sched_rt_runtime_us`,
/// 95 % by default) still leaves other work a share of the pinned CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Priority {
    /// `SCHED_RR` priority 1 (`chrt -r 1`): a waking Envoy preempts ordinary work at once.
    Rt,
    /// `nice -n -10`: ahead of ordinary work, but a waking task may wait out a running task's slice.
    Nice,
    /// The caller's own priority.
    None,
}

impl Priority {
    /// The wrapper command line that runs a program at this priority.
    fn wrapper(self) -> Vec<OsString> {
        match self {
            Priority::Rt => vec!["chrt".into(), "-r".into(), "1".into()],
            Priority::Nice => vec!["nice".into(), "-n".into(), "-10".into()],
            Priority::None => Vec::new(),
        }
    }

    /// The command that moves process (main thread) `pid` to this priority.
    fn apply_to(self, pid: &str) -> Option<Command> {
        let (program, args): (&str, [&str; 4]) = match self {
            Priority::Rt => ("chrt", ["-r", "-p", "1", pid]),
            Priority::Nice => ("renice", ["-n", "-10", "-p", pid]),
            Priority::None => return None,
        };
        let mut command = Command::new(program);
        command.args(args);
        Some(command)
    }

    /// Human-readable form for the header line.
    pub fn describe(self) -> &'static str {
        match self {
            Priority::Rt => "Envoy, wrk, upstream and agent at SCHED_RR 1",
            Priority::Nice => "Envoy, wrk, upstream and agent at nice -10",
            Priority::None => "default priority",
        }
    }

    /// Name used in the JSON record.
    pub fn name(self) -> &'static str {
        match self {
            Priority::Rt => "rt",
            Priority::Nice => "nice",
            Priority::None => "none",
        }
    }
}

/// CPU placement: Envoy alone on one CPU; wrk, the upstream and the knhk agent off it (all on
/// one other CPU with two CPUs, spread over the others with more).
///
/// The agent is never on Envoy's CPU: the ratios measure Envoy's throughput, and the agent's
/// work (receipt ingest, sealing, long-poll answers) is what a sidecar costs beside Envoy, not
/// inside it. Envoy's own side of receipts and polling (buffering, `dispatch_http_call`s) runs
/// on Envoy's CPU and is measured.
#[derive(Debug, Clone, Copy)]
pub struct Cpus {
    /// CPU of the Envoy under test.
    pub envoy: Option<usize>,
    /// CPU of wrk.
    pub load: Option<usize>,
    /// CPU of the in-process upstream (and the bench's own threads).
    pub upstream: Option<usize>,
    /// CPU of the knhk agent (variant knhk-agent).
    pub agent: Option<usize>,
}

impl Cpus {
    /// Plan placement for `cpus` online CPUs; everything unpinned without `taskset` or with one CPU.
    pub fn plan(cpus: usize, taskset: bool) -> Cpus {
        match (taskset, cpus) {
            (false, _) | (true, 0..=1) => Cpus {
                envoy: None,
                load: None,
                upstream: None,
                agent: None,
            },
            (true, 2) => Cpus {
                envoy: Some(0),
                load: Some(1),
                upstream: Some(1),
                agent: Some(1),
            },
            (true, 3) => Cpus {
                envoy: Some(0),
                load: Some(1),
                upstream: Some(2),
                agent: Some(2),
            },
            (true, _) => Cpus {
                envoy: Some(0),
                load: Some(1),
                upstream: Some(2),
                agent: Some(3),
            },
        }
    }

    /// `CPU n` or `unpinned`.
    pub fn describe(cpu: Option<usize>) -> String {
        cpu.map_or_else(|| "unpinned".to_string(), |c| format!("CPU {c}"))
    }
}

/// A command running `program`, pinned to `cpu` with `taskset` when given, at `priority`.
///
/// The wrappers (`taskset`, `chrt`, `nice`) `exec` the program, so the child's pid is the program's pid.
pub fn placed(program: &OsStr, cpu: Option<usize>, priority: Priority) -> Command {
    let mut argv: Vec<OsString> = Vec::new();
    if let Some(cpu) = cpu {
        argv.extend(["taskset".into(), "-c".into(), cpu.to_string().into()]);
    }
    argv.extend(priority.wrapper());
    argv.push(program.to_os_string());
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    command
}

/// Pin the calling (main) thread to `cpu` and move it to `priority`; threads it spawns afterwards inherit both.
pub fn place_self(cpu: Option<usize>, priority: Priority) -> anyhow::Result<()> {
    let pid = std::process::id().to_string();
    let mut commands: Vec<Command> = Vec::new();
    if let Some(cpu) = cpu {
        let mut c = Command::new("taskset");
        c.args(["-p", "-c", &cpu.to_string(), &pid]);
        commands.push(c);
    }
    commands.extend(priority.apply_to(&pid));
    for mut command in commands {
        let status = command
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("run {:?}", command.get_program()))?;
        if !status.success() {
            bail!(
                "{:?} on the bench process failed with {status}",
                command.get_program()
            );
        }
    }
    Ok(())
}

/// How the knhk-agent variant reaches the bench's agent.
#[derive(Debug, Clone)]
pub struct AgentLink {
    /// The agent's loopback port (`${AGENT_PORT}` of `envoy/bench-wasm-agent.yaml`).
    pub port: u16,
    /// The knhk variant's plugin configuration plus the `control` section.
    pub plugin_config: String,
}

/// Everything a variant's Envoy needs to start.
pub struct Rig {
    /// The Envoy binary.
    pub envoy_bin: PathBuf,
    /// Directory for rendered bootstraps, logs and admin address files.
    pub run_dir: PathBuf,
    /// `knhk_empty_filter.wasm`, when the empty variant runs.
    pub empty_wasm: Option<PathBuf>,
    /// `knhk_filter.wasm`, when the knhk variant runs.
    pub knhk_wasm: Option<PathBuf>,
    /// Port of the in-process upstream (both clusters point at it).
    pub upstream_port: u16,
    /// The running agent, when the knhk-agent variant runs.
    pub agent: Option<AgentLink>,
    /// CPU placement.
    pub cpus: Cpus,
    /// Scheduling priority of Envoy and wrk.
    pub priority: Priority,
    /// A command line every Envoy runs under (see [`Launch::wrapper`]), empty to run it directly.
    pub wrapper: Vec<OsString>,
    /// How long an Envoy may take to become ready.
    pub ready_timeout: Duration,
}

/// What one Envoy loads: its bootstrap template in `envoy/` and, for the wasm variants, the
/// module, its plugin configuration and the agent's port.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// Template file name, e.g. `bench-wasm.yaml`.
    pub template: &'static str,
    /// The wasm module (`${WASM_PATH}`).
    pub wasm: Option<PathBuf>,
    /// The plugin configuration (`${PLUGIN_CONFIG}`).
    pub plugin_config: Option<String>,
    /// The agent's port (`${AGENT_PORT}`).
    pub agent_port: Option<u16>,
}

impl Rig {
    /// Render the variant's bootstrap and start its Envoy; probe both routes once. The
    /// knhk-agent variant is ready only once every worker has applied the agent's signed config.
    pub fn start(&self, variant: Variant, concurrency: u32, tag: &str) -> anyhow::Result<Envoy> {
        let bootstrap = self.bootstrap(variant)?;
        let envoy = self
            .start_bootstrap(&bootstrap, concurrency, tag)
            .with_context(|| format!("start Envoy for variant {}", variant.name()))?;
        if variant == Variant::KnhkAgent {
            wait_config_applied(&envoy, u64::from(concurrency))
                .with_context(|| format!("variant {}", variant.name()))?;
        }
        Ok(envoy)
    }

    /// The bootstrap of `variant`.
    pub fn bootstrap(&self, variant: Variant) -> anyhow::Result<Bootstrap> {
        let wasm_bootstrap = |wasm: &Option<PathBuf>, config: &str| Bootstrap {
            template: "bench-wasm.yaml",
            wasm: wasm.clone(),
            plugin_config: Some(config.to_string()),
            agent_port: None,
        };
        Ok(match variant {
            Variant::None => Bootstrap::plain("bench-none.yaml"),
            Variant::Lua => Bootstrap::plain("bench-lua.yaml"),
            Variant::Empty => wasm_bootstrap(&self.empty_wasm, "{}"),
            Variant::Knhk => wasm_bootstrap(&self.knhk_wasm, KNHK_PLUGIN_CONFIG),
            Variant::KnhkAgent => {
                let Some(link) = &self.agent else {
                    bail!("variant knhk-agent needs the agent");
                };
                Bootstrap {
                    template: "bench-wasm-agent.yaml",
                    wasm: self.knhk_wasm.clone(),
                    plugin_config: Some(link.plugin_config.clone()),
                    agent_port: Some(link.port),
                }
            }
        })
    }

    /// Render `bootstrap` to `<run_dir>/<tag>.yaml`, start Envoy on it (log `<tag>.log`) and
    /// check that both routes answer 200.
    pub fn start_bootstrap(
        &self,
        bootstrap: &Bootstrap,
        concurrency: u32,
        tag: &str,
    ) -> anyhow::Result<Envoy> {
        let config = self.run_dir.join(format!("{tag}.yaml"));
        let vars = Vars {
            admin_port: Some(0),
            listener_port: Some(0),
            stable_port: Some(self.upstream_port),
            canary_port: Some(self.upstream_port),
            wasm_path: bootstrap.wasm.clone(),
            plugin_config: bootstrap.plugin_config.clone(),
            agent_port: bootstrap.agent_port,
        };
        render_file(&envoy_template(bootstrap.template), &vars, &config)?;
        let envoy = Envoy::start(&Launch {
            binary: &self.envoy_bin,
            config: &config,
            log: &self.run_dir.join(format!("{tag}.log")),
            admin_address_file: &self.run_dir.join(format!("{tag}.admin")),
            cpu: self.cpus.envoy,
            priority: self.priority,
            concurrency,
            wrapper: &self.wrapper,
            ready_timeout: self.ready_timeout,
        })?;
        for mode in [Mode::Direct, Mode::Proxy] {
            let (status, body) = envoy.ingress_get(mode.path(), &[("x-user-id", "probe")])?;
            if status != 200 {
                bail!(
                    "{tag} answered {status} on {} ({body:?}); log tail:\n{}",
                    mode.path(),
                    envoy.log_tail(20)
                );
            }
        }
        Ok(envoy)
    }
}

impl Bootstrap {
    /// A template without a wasm module.
    fn plain(template: &'static str) -> Bootstrap {
        Bootstrap {
            template,
            wasm: None,
            plugin_config: None,
            agent_port: None,
        }
    }
}

/// Wait until `workers` signed configs were applied (`knhk.config.applied`, summed over the
/// workers' VMs and flushed on the filter's tick): the long-poll reached the agent and back.
fn wait_config_applied(envoy: &Envoy, workers: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + CONFIG_APPLIED_TIMEOUT;
    loop {
        let applied = envoy
            .counters(r"^wasmcustom\.knhk\.config\.applied$")?
            .first()
            .map_or(0, |(_, v)| *v);
        if applied >= workers {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{applied} of {workers} worker(s) applied the agent's config within {CONFIG_APPLIED_TIMEOUT:?}; log tail:\n{}",
                envoy.log_tail(20)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The URL of `mode`'s route on `envoy`.
pub fn url(envoy: &Envoy, mode: Mode) -> String {
    format!("http://{}{}", envoy.listener(), mode.path())
}

/// Share of proxied requests that went to the canary cluster, per variant.
pub fn route_splits(envoys: &[(Variant, Envoy)]) -> Vec<(Variant, Option<f64>)> {
    envoys
        .iter()
        .map(|(variant, envoy)| {
            let counters = envoy
                .counters(r"^cluster\.(stable|canary)\.upstream_rq_total$")
                .unwrap_or_default();
            let get = |name: &str| {
                counters
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(0, |(_, v)| *v)
            };
            let stable = get("cluster.stable.upstream_rq_total");
            let canary = get("cluster.canary.upstream_rq_total");
            let total = stable + canary;
            (*variant, (total > 0).then(|| canary as f64 / total as f64))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two CPUs: Envoy alone on CPU 0, load, upstream and agent share CPU 1; more CPUs spread
    /// them, never onto Envoy's; no taskset: nothing pinned.
    #[test]
    fn cpu_plans() {
        let two = Cpus::plan(2, true);
        assert_eq!(
            (two.envoy, two.load, two.upstream, two.agent),
            (Some(0), Some(1), Some(1), Some(1))
        );
        let three = Cpus::plan(3, true);
        assert_eq!(
            (three.envoy, three.load, three.upstream, three.agent),
            (Some(0), Some(1), Some(2), Some(2))
        );
        let four = Cpus::plan(4, true);
        assert_eq!(
            (four.envoy, four.load, four.upstream, four.agent),
            (Some(0), Some(1), Some(2), Some(3))
        );
        let bare = Cpus::plan(8, false);
        assert_eq!(
            (bare.envoy, bare.load, bare.upstream, bare.agent),
            (None, None, None, None)
        );
    }

    /// Pinning and priority wrap the program in `taskset` then `chrt` or `nice`, which all exec it.
    #[test]
    fn placed_wraps_in_order() {
        let c = placed(OsStr::new("wrk"), Some(1), Priority::Rt);
        let args: Vec<&OsStr> = c.get_args().collect();
        assert_eq!(c.get_program(), "taskset");
        assert_eq!(args, ["-c", "1", "chrt", "-r", "1", "wrk"]);
        let c = placed(OsStr::new("wrk"), None, Priority::Nice);
        let args: Vec<&OsStr> = c.get_args().collect();
        assert_eq!(c.get_program(), "nice");
        assert_eq!(args, ["-n", "-10", "wrk"]);
        assert_eq!(
            placed(OsStr::new("wrk"), None, Priority::None).get_program(),
            "wrk"
        );
    }
}
