//! The bench rig: how a variant's Envoy is rendered, started and probed.

use super::envoy::{Envoy, Launch};
use super::placement::{Cpus, Priority};
use super::{Builds, Mode, Variant, KNHK_PLUGIN_CONFIG};
use anyhow::{bail, Context};
use knhk_e2e::paths::envoy_template;
use knhk_e2e::template::{render_file, Vars};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    /// The filter builds the variants load.
    pub builds: Builds,
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

/// What one Envoy loads: its bootstrap template in `envoy/` and, for the filter variants, the
/// wasm module or the dynamic module, its plugin configuration and the agent's port.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// Template file name, e.g. `bench-wasm.yaml`.
    pub template: &'static str,
    /// The wasm module (`${WASM_PATH}`).
    pub wasm: Option<PathBuf>,
    /// The dynamic module (`${HTTP_FILTER}` loads it; Envoy finds it in its directory).
    pub native: Option<PathBuf>,
    /// The plugin configuration (`${PLUGIN_CONFIG}`, or inside `${HTTP_FILTER}`).
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
        if variant.uses_agent() {
            self.wait_config_applied(&envoy, variant, u64::from(concurrency))?;
        }
        Ok(envoy)
    }

    /// The bootstrap of `variant`.
    pub fn bootstrap(&self, variant: Variant) -> anyhow::Result<Bootstrap> {
        let builds = &self.builds;
        let wasm_bootstrap = |wasm: &Option<PathBuf>, config: &str| Bootstrap {
            template: "bench-wasm.yaml",
            wasm: wasm.clone(),
            native: None,
            plugin_config: Some(config.to_string()),
            agent_port: None,
        };
        let agent = || match &self.agent {
            Some(link) => Ok(link),
            None => Err(anyhow::anyhow!(
                "variant {} needs the agent",
                variant.name()
            )),
        };
        Ok(match variant {
            Variant::None => Bootstrap::plain("bench-none.yaml"),
            Variant::Lua => Bootstrap::plain("bench-lua.yaml"),
            Variant::AdmissionControl => Bootstrap::plain("bench-admission-control.yaml"),
            Variant::Empty => wasm_bootstrap(&builds.empty_wasm, "{}"),
            Variant::Knhk => wasm_bootstrap(&builds.knhk_wasm, KNHK_PLUGIN_CONFIG),
            Variant::KnhkAgent => Bootstrap {
                template: "bench-wasm-agent.yaml",
                wasm: builds.knhk_wasm.clone(),
                native: None,
                plugin_config: Some(agent()?.plugin_config.clone()),
                agent_port: Some(agent()?.port),
            },
            Variant::KnhkNative => Bootstrap {
                template: "bench-native.yaml",
                wasm: None,
                native: builds.knhk_native.clone(),
                plugin_config: Some(KNHK_PLUGIN_CONFIG.to_string()),
                agent_port: None,
            },
            Variant::KnhkNativeAgent => Bootstrap {
                template: "bench-native-agent.yaml",
                wasm: None,
                native: builds.knhk_native.clone(),
                plugin_config: Some(agent()?.plugin_config.clone()),
                agent_port: Some(agent()?.port),
            },
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
            native_path: bootstrap.native.clone(),
            filter_name: None,
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
            dynamic_modules_dir: bootstrap.native.as_deref().and_then(Path::parent),
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

    /// Wait until `workers` signed configs were applied (`knhk.config.applied`, summed over
    /// the workers and flushed on the filter's tick): the long-poll reached the agent and back.
    /// Allowed as long as Envoy may take to become ready.
    pub fn wait_config_applied(
        &self,
        envoy: &Envoy,
        variant: Variant,
        workers: u64,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.ready_timeout;
        let counter = format!(r"^{}config\.applied$", variant.knhk_stats_regex());
        loop {
            let applied = envoy.counters(&counter)?.first().map_or(0, |(_, v)| *v);
            if applied >= workers {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "variant {}: {applied} of {workers} worker(s) applied the agent's config within {:?}; log tail:\n{}",
                    variant.name(),
                    self.ready_timeout,
                    envoy.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Bootstrap {
    /// A template without a wasm module.
    fn plain(template: &'static str) -> Bootstrap {
        Bootstrap {
            template,
            wasm: None,
            native: None,
            plugin_config: None,
            agent_port: None,
        }
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
