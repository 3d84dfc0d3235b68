//! The bench rig: where each process runs (CPU pinning, priority) and how a variant's Envoy is rendered, started and probed.

use super::envoy::{Envoy, Launch};
use super::{Mode, Variant, KNHK_PLUGIN_CONFIG};
use anyhow::{bail, Context};
use knhk_e2e::paths::envoy_template;
use knhk_e2e::template::{render_file, Vars};
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Niceness of Envoy and wrk when the bench may raise priority: well ahead of compilers sharing the machine.
pub const RAISED_NICE: i32 = -10;

/// CPU placement: Envoy alone on one CPU, wrk (and the upstream, with two CPUs) on another.
#[derive(Debug, Clone, Copy)]
pub struct Cpus {
    /// CPU of the Envoy under test.
    pub envoy: Option<usize>,
    /// CPU of wrk.
    pub load: Option<usize>,
    /// CPU of the in-process upstream (and the bench's own threads).
    pub upstream: Option<usize>,
}

impl Cpus {
    /// Plan placement for `cpus` online CPUs; everything unpinned without `taskset` or with one CPU.
    pub fn plan(cpus: usize, taskset: bool) -> Cpus {
        match (taskset, cpus) {
            (false, _) | (true, 0..=1) => Cpus {
                envoy: None,
                load: None,
                upstream: None,
            },
            (true, 2) => Cpus {
                envoy: Some(0),
                load: Some(1),
                upstream: Some(1),
            },
            (true, _) => Cpus {
                envoy: Some(0),
                load: Some(1),
                upstream: Some(2),
            },
        }
    }

    /// `CPU n` or `unpinned`.
    pub fn describe(cpu: Option<usize>) -> String {
        cpu.map_or_else(|| "unpinned".to_string(), |c| format!("CPU {c}"))
    }
}

/// A command running `program`, pinned to `cpu` with `taskset` and reniced with `nice` when given.
///
/// Both wrappers `exec` the program, so the child's pid is the program's pid.
pub fn placed(program: &OsStr, cpu: Option<usize>, nice: Option<i32>) -> Command {
    let mut argv: Vec<OsString> = Vec::new();
    if let Some(cpu) = cpu {
        argv.extend(["taskset".into(), "-c".into(), cpu.to_string().into()]);
    }
    if let Some(nice) = nice {
        argv.extend(["nice".into(), "-n".into(), nice.to_string().into()]);
    }
    argv.push(program.to_os_string());
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    command
}

/// Pin the calling (main) thread to `cpu` and renice it to `nice`; threads it spawns afterwards inherit both.
pub fn place_self(cpu: Option<usize>, nice: Option<i32>) -> anyhow::Result<()> {
    let pid = std::process::id().to_string();
    let mut commands: Vec<Command> = Vec::new();
    if let Some(cpu) = cpu {
        let mut c = Command::new("taskset");
        c.args(["-p", "-c", &cpu.to_string(), &pid]);
        commands.push(c);
    }
    if let Some(nice) = nice {
        let mut c = Command::new("renice");
        c.args(["-n", &nice.to_string(), "-p", &pid]);
        commands.push(c);
    }
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
    /// CPU placement.
    pub cpus: Cpus,
    /// Niceness of Envoy and wrk, if raised.
    pub nice: Option<i32>,
}

impl Rig {
    /// Render the variant's bootstrap and start its Envoy; probe both routes once.
    pub fn start(&self, variant: Variant, concurrency: u32, tag: &str) -> anyhow::Result<Envoy> {
        let (template, wasm, plugin_config) = match variant {
            Variant::None => ("bench-none.yaml", None, None),
            Variant::Lua => ("bench-lua.yaml", None, None),
            Variant::Empty => (
                "bench-wasm.yaml",
                self.empty_wasm.clone(),
                Some("{}".to_string()),
            ),
            Variant::Knhk => (
                "bench-wasm.yaml",
                self.knhk_wasm.clone(),
                Some(KNHK_PLUGIN_CONFIG.to_string()),
            ),
        };
        let config = self.run_dir.join(format!("{tag}.yaml"));
        let vars = Vars {
            admin_port: Some(0),
            listener_port: Some(0),
            stable_port: Some(self.upstream_port),
            canary_port: Some(self.upstream_port),
            wasm_path: wasm,
            plugin_config,
        };
        render_file(&envoy_template(template), &vars, &config)?;
        let envoy = Envoy::start(&Launch {
            binary: &self.envoy_bin,
            config: &config,
            log: &self.run_dir.join(format!("{tag}.log")),
            admin_address_file: &self.run_dir.join(format!("{tag}.admin")),
            cpu: self.cpus.envoy,
            nice: self.nice,
            concurrency,
        })
        .with_context(|| format!("start Envoy for variant {}", variant.name()))?;
        for mode in [Mode::Direct, Mode::Proxy] {
            let (status, body) = envoy.ingress_get(mode.path(), &[("x-user-id", "probe")])?;
            if status != 200 {
                bail!(
                    "variant {} answered {status} on {} ({body:?}); log tail:\n{}",
                    variant.name(),
                    mode.path(),
                    envoy.log_tail(20)
                );
            }
        }
        Ok(envoy)
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

    /// Two CPUs: Envoy alone on CPU 0, load and upstream share CPU 1; no taskset: nothing pinned.
    #[test]
    fn cpu_plans() {
        let two = Cpus::plan(2, true);
        assert_eq!(
            (two.envoy, two.load, two.upstream),
            (Some(0), Some(1), Some(1))
        );
        let four = Cpus::plan(4, true);
        assert_eq!(
            (four.envoy, four.load, four.upstream),
            (Some(0), Some(1), Some(2))
        );
        let bare = Cpus::plan(8, false);
        assert_eq!((bare.envoy, bare.load, bare.upstream), (None, None, None));
    }

    /// Pinning and priority wrap the program in `taskset` then `nice`, which both exec it.
    #[test]
    fn placed_wraps_in_order() {
        let c = placed(OsStr::new("wrk"), Some(1), Some(-10));
        let args: Vec<&OsStr> = c.get_args().collect();
        assert_eq!(c.get_program(), "taskset");
        assert_eq!(args, ["-c", "1", "nice", "-n", "-10", "wrk"]);
        assert_eq!(placed(OsStr::new("wrk"), None, None).get_program(), "wrk");
    }
}
