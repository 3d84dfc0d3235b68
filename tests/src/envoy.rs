//! A real Envoy process: render a bootstrap, spawn it, poll `/ready`, read its stats and log, kill on drop.
//!
//! Each instance gets its own directory under `<repo>/.knhk/e2e/` holding the rendered
//! bootstrap, Envoy's log (`--log-path`) and its stdout/stderr, and its own `--base-id` (its
//! admin port) so instances running in parallel never share hot-restart memory. When an
//! instance is dropped while the thread is panicking (a failing test), the tail of its log is
//! printed and its directory is kept; otherwise the directory is removed.

use crate::paths;
use crate::ports::free_ports;
use crate::template::{self, Vars};
use crate::wait::poll;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// How long Envoy may take to become ready (V8 compiles the module once per worker).
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// The filter's one-line refusals of a plugin configuration (`invalid knhk config: field …`) in `log`.
pub fn rejection_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("invalid knhk config: field"))
        .collect()
}

/// Lines of log printed when a test fails.
pub const LOG_TAIL_LINES: usize = 80;
/// Attempts at starting Envoy when a chosen port was taken by someone else meanwhile.
const START_ATTEMPTS: u32 = 3;

/// What to start.
#[derive(Debug, Clone)]
pub struct EnvoySpec {
    /// Short label used in the instance directory name.
    pub name: String,
    /// Bootstrap template (see [`crate::template`]).
    pub template: PathBuf,
    /// Envoy binary.
    pub envoy: PathBuf,
    /// Filter module, for templates that load it.
    pub wasm: Option<PathBuf>,
    /// The dynamic module: when set, `${HTTP_FILTER}` loads it instead of the wasm module.
    pub native: Option<PathBuf>,
    /// Plugin configuration JSON, for templates that load the filter.
    pub plugin_config: Option<String>,
    /// The name `${HTTP_FILTER}` configures the filter under (`knhk` when `None`).
    pub filter_name: Option<String>,
    /// Port of the stable upstream.
    pub stable_port: u16,
    /// Port of the canary upstream.
    pub canary_port: u16,
    /// Worker threads (`--concurrency`).
    pub concurrency: u32,
    /// Envoy log level (`-l`).
    pub log_level: String,
    /// Parent of the instance directory; `<repo>/.knhk/e2e` when `None`.
    pub work_dir: Option<PathBuf>,
    /// Keep the instance directory (log, rendered bootstrap) after a clean stop.
    pub keep_files: bool,
    /// More templates rendered with the same values into the instance directory before start,
    /// as `(file name, template)`: e.g. an LDS resource file the bootstrap refers to. Envoy runs
    /// with the instance directory as its working directory, so relative paths find them.
    pub extra_files: Vec<(String, PathBuf)>,
    /// More Envoy command-line arguments (e.g. `--drain-time-s 1`).
    pub extra_args: Vec<String>,
    /// Port of the knhk agent (the `knhk_agent` cluster); a closed port when `None`.
    pub agent_port: Option<u16>,
    /// Environment variables set for Envoy (e.g. the pod identity `POD_NAME`, which the wasm
    /// VM sees through `host_env_keys` and the dynamic module in the process environment).
    pub env: Vec<(String, String)>,
}

impl EnvoySpec {
    /// Flush Envoy's log file every 100 ms instead of every few seconds, for tests that wait
    /// on a log line ([`Envoy::wait_log_line`]).
    pub fn flush_log_often(&mut self) -> &mut Self {
        self.extra_args
            .extend(["--file-flush-interval-msec".to_owned(), "100".to_owned()]);
        self
    }

    /// The e2e bootstrap with the real filter, two workers, the given plugin config and upstreams.
    pub fn e2e(
        name: &str,
        plugin_config: &str,
        stable_port: u16,
        canary_port: u16,
    ) -> anyhow::Result<EnvoySpec> {
        Ok(EnvoySpec {
            name: name.to_string(),
            template: paths::envoy_template("e2e.yaml"),
            envoy: paths::envoy()?,
            wasm: Some(paths::filter_wasm()?),
            native: if paths::native_host() {
                Some(paths::filter_native()?)
            } else {
                None
            },
            plugin_config: Some(plugin_config.to_string()),
            filter_name: None,
            stable_port,
            canary_port,
            concurrency: 2,
            log_level: "info".to_string(),
            work_dir: None,
            keep_files: false,
            extra_files: Vec::new(),
            extra_args: Vec::new(),
            agent_port: None,
            env: Vec::new(),
        })
    }
}

/// Outcome of [`Envoy::launch`]: ready to serve, or exited during startup.
#[derive(Debug)]
pub enum Launch {
    /// `/ready` answered `LIVE`.
    Ready(Envoy),
    /// The process ended before becoming ready.
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// Its whole log (Envoy log plus stdout/stderr).
        log: String,
        /// The instance directory (kept for inspection).
        dir: PathBuf,
    },
}

/// A running Envoy, killed when dropped.
#[derive(Debug)]
pub struct Envoy {
    child: Child,
    admin_port: u16,
    listener_port: u16,
    dir: PathBuf,
    log_path: PathBuf,
    output_path: PathBuf,
    keep_dir: bool,
    vars: Vars,
    http: reqwest::Client,
}

impl Envoy {
    /// Start Envoy and wait until it is ready; an exit during startup is an error carrying the log.
    pub async fn start(spec: &EnvoySpec) -> anyhow::Result<Envoy> {
        match Self::launch(spec).await? {
            Launch::Ready(envoy) => Ok(envoy),
            Launch::Exited { status, log, dir } => {
                bail!(
                    "envoy exited during startup ({status}); files in {}; log tail:\n{}",
                    dir.display(),
                    tail(&log, LOG_TAIL_LINES)
                )
            }
        }
    }

    /// Start Envoy and report whether it became ready or exited (for tests of refused configs).
    pub async fn launch(spec: &EnvoySpec) -> anyhow::Result<Launch> {
        let mut attempt = 1;
        loop {
            let launch = Self::launch_once(spec).await?;
            let retry = matches!(&launch, Launch::Exited { log, .. }
                if log.contains("Address already in use") || log.contains("cannot bind"));
            if !retry || attempt >= START_ATTEMPTS {
                return Ok(launch);
            }
            attempt += 1;
        }
    }

    async fn launch_once(spec: &EnvoySpec) -> anyhow::Result<Launch> {
        let ports = free_ports(2)?;
        let (admin_port, listener_port) = (ports[0], ports[1]);
        let parent = spec
            .work_dir
            .clone()
            .unwrap_or_else(|| paths::scratch_dir().join("e2e"));
        let dir = parent.join(format!(
            "{}-{}-{admin_port}",
            sanitize(&spec.name),
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let config_path = dir.join("envoy.yaml");
        let vars = Vars {
            admin_port: Some(admin_port),
            listener_port: Some(listener_port),
            stable_port: Some(spec.stable_port),
            canary_port: Some(spec.canary_port),
            wasm_path: spec.wasm.clone(),
            native_path: spec.native.clone(),
            filter_name: spec.filter_name.clone(),
            plugin_config: spec.plugin_config.clone(),
            // Templates with the agent cluster need a port even when no agent runs: a closed one.
            agent_port: Some(match spec.agent_port {
                Some(port) => port,
                None => crate::ports::free_port()?,
            }),
        };
        template::render_file(&spec.template, &vars, &config_path)?;
        for (name, extra) in &spec.extra_files {
            template::render_file(extra, &vars, &dir.join(name))?;
        }
        let log_path = dir.join("envoy.log");
        let output_path = dir.join("output.log");
        let output = std::fs::File::create(&output_path)
            .with_context(|| format!("create {}", output_path.display()))?;
        let output_err = output.try_clone()?;
        let mut command = Command::new(&spec.envoy);
        command.envs(spec.env.iter().map(|(k, v)| (k, v)));
        if let Some(module) = &spec.native {
            // Envoy looks for `lib<name>.so` of a dynamic module in this directory.
            if let Some(dir) = module.parent() {
                command.env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", dir);
            }
        }
        let child = command
            .arg("-c")
            .arg(&config_path)
            .arg("--concurrency")
            .arg(spec.concurrency.to_string())
            .arg("--base-id")
            .arg(admin_port.to_string())
            .arg("--log-path")
            .arg(&log_path)
            .arg("-l")
            .arg(&spec.log_level)
            .args(&spec.extra_args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(output))
            .stderr(Stdio::from(output_err))
            .spawn()
            .with_context(|| format!("spawn {}", spec.envoy.display()))?;
        let mut envoy = Envoy {
            child,
            admin_port,
            listener_port,
            dir,
            log_path,
            output_path,
            keep_dir: spec.keep_files,
            vars,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .context("build admin HTTP client")?,
        };
        let http = envoy.http.clone();
        let child = &mut envoy.child;
        let ready = poll("envoy /ready", READY_TIMEOUT, || {
            let exited = child.try_wait();
            let http = http.clone();
            async move {
                if let Some(status) = exited? {
                    return Ok(Some(Err(status)));
                }
                Ok(admin_ready(&http, admin_port).await.then_some(Ok(())))
            }
        })
        .await;
        match ready {
            Ok(Ok(())) => Ok(Launch::Ready(envoy)),
            Ok(Err(status)) => {
                let log = envoy.log();
                let dir = envoy.dir.clone();
                // The process is gone; keep its directory for inspection.
                envoy.keep_dir = true;
                Ok(Launch::Exited { status, log, dir })
            }
            Err(e) => {
                envoy.keep_dir = true;
                Err(e.context(format!(
                    "files kept in {}; log tail:\n{}",
                    envoy.dir.display(),
                    envoy.log_tail(LOG_TAIL_LINES)
                )))
            }
        }
    }

    /// Run `envoy --mode validate -c config` and return its exit status and output.
    pub fn validate(envoy: &Path, config: &Path) -> anyhow::Result<(ExitStatus, String)> {
        let out = Command::new(envoy)
            .arg("--mode")
            .arg("validate")
            .arg("-c")
            .arg(config)
            .arg("--disable-hot-restart")
            .arg("-l")
            .arg("warn")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("spawn {} --mode validate", envoy.display()))?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok((out.status, text))
    }

    /// Admin port.
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// Ingress listener port.
    pub fn listener_port(&self) -> u16 {
        self.listener_port
    }

    /// `http://127.0.0.1:<listener>` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.listener_port)
    }

    /// The instance directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Render `template` with this instance's ports and `plugin_config` and atomically replace
    /// `name` in the instance directory with it (write, then rename: what Envoy's file watch for
    /// filesystem xDS reacts to).
    pub fn push_file(
        &self,
        name: &str,
        template: &Path,
        plugin_config: &str,
    ) -> anyhow::Result<()> {
        let vars = Vars {
            plugin_config: Some(plugin_config.to_string()),
            ..self.vars.clone()
        };
        let staging = self.dir.join(format!(".{name}.next"));
        template::render_file(template, &vars, &staging)?;
        let dest = self.dir.join(name);
        std::fs::rename(&staging, &dest)
            .with_context(|| format!("rename {} to {}", staging.display(), dest.display()))
    }

    /// Envoy's `--log-path` file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// GET an admin path; returns status and body.
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let url = format!("http://127.0.0.1:{}{path}", self.admin_port);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    /// POST an admin path (e.g. `/reset_counters`); returns status and body.
    pub async fn admin_post(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let url = format!("http://127.0.0.1:{}{path}", self.admin_port);
        let response = self
            .http
            .post(&url)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    /// True when admin `/ready` answers 200 `LIVE`.
    pub async fn is_ready(&self) -> bool {
        admin_ready(&self.http, self.admin_port).await
    }

    /// The admin `/stats/prometheus` text.
    pub async fn stats_prometheus(&self) -> anyhow::Result<String> {
        let (status, body) = self.admin_get("/stats/prometheus").await?;
        if status != 200 {
            bail!("/stats/prometheus answered {status}: {body}");
        }
        Ok(body)
    }

    /// Value of a metric by its Envoy stat name (e.g. `knhk.route.canary`), summed over label sets,
    /// read from `/stats/prometheus`; `None` when the metric is not there (yet).
    ///
    /// See [`prometheus_value`] for the name forms accepted.
    pub async fn metric(&self, name: &str) -> anyhow::Result<Option<f64>> {
        Ok(prometheus_value(&self.stats_prometheus().await?, name))
    }

    /// A counter by its Envoy stat name; an absent counter reads as 0 (wasm stats appear on first use).
    pub async fn counter(&self, name: &str) -> anyhow::Result<u64> {
        let value = self.metric(name).await?.unwrap_or(0.0);
        // Counters are non-negative integers; the float comes from the text format.
        Ok(value.max(0.0).round() as u64)
    }

    /// Poll `metric(name)` until `accept` holds for its value; returns that value.
    pub async fn wait_metric(
        &self,
        name: &str,
        timeout: Duration,
        accept: impl Fn(f64) -> bool,
    ) -> anyhow::Result<f64> {
        let accept = &accept;
        let result = poll(&format!("metric {name}"), timeout, || async move {
            Ok(self.metric(name).await?.filter(|v| accept(*v)))
        })
        .await;
        match result {
            Ok(value) => Ok(value),
            Err(e) => {
                let last = self.metric(name).await.ok().flatten();
                Err(e.context(format!("last value of {name}: {last:?}")))
            }
        }
    }

    /// A plain-text admin stat by exact name (`/stats?filter=`), e.g. `server.state`.
    pub async fn stat(&self, name: &str) -> anyhow::Result<Option<u64>> {
        let pattern = format!("^{}$", regex_escape(name));
        let (status, body) = self
            .admin_get(&format!("/stats?filter={}", url_escape(&pattern)))
            .await?;
        if status != 200 {
            bail!("/stats answered {status}: {body}");
        }
        Ok(body.lines().find_map(|line| {
            let (stat, value) = line.split_once(": ")?;
            (stat == name).then(|| value.trim().parse().ok()).flatten()
        }))
    }

    /// Downstream connections accepted per worker on the ingress listener (index = worker id).
    pub async fn worker_connections(&self) -> anyhow::Result<Vec<u64>> {
        let prefix = format!("listener.127.0.0.1_{}.worker_", self.listener_port);
        let filter = format!("{}[0-9]+\\.downstream_cx_total", regex_escape(&prefix));
        let (status, body) = self
            .admin_get(&format!("/stats?filter={}", url_escape(&filter)))
            .await?;
        if status != 200 {
            bail!("/stats answered {status}: {body}");
        }
        let mut counts = Vec::new();
        for line in body.lines() {
            let Some((stat, value)) = line.split_once(": ") else {
                continue;
            };
            let Some(rest) = stat.strip_prefix(&prefix) else {
                continue;
            };
            let Some((worker, _)) = rest.split_once('.') else {
                continue;
            };
            let (Ok(worker), Ok(value)) = (worker.parse::<usize>(), value.trim().parse::<u64>())
            else {
                continue;
            };
            if counts.len() <= worker {
                counts.resize(worker + 1, 0);
            }
            counts[worker] = value;
        }
        Ok(counts)
    }

    /// Envoy's whole log: the `--log-path` file followed by anything written to stdout/stderr.
    pub fn log(&self) -> String {
        let mut text = std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if let Ok(out) = std::fs::read(&self.output_path) {
            if !out.is_empty() {
                text.push_str("\n--- stdout/stderr ---\n");
                text.push_str(&String::from_utf8_lossy(&out));
            }
        }
        text
    }

    /// The last `lines` lines of [`Envoy::log`], without Envoy's startup inventory
    /// (the lists of linked extensions and header maps).
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    /// Poll the log until a line satisfies `matches`; returns that line.
    pub async fn wait_log_line(
        &self,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        poll("a matching envoy log line", timeout, || {
            let line = self.log().lines().find(|l| matches(l)).map(str::to_string);
            async move { Ok(line) }
        })
        .await
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "==== envoy {} (admin {}, files kept in {}) log tail ====\n{}\n==== end of envoy log ====",
                self.dir.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
                self.admin_port,
                self.dir.display(),
                self.log_tail(LOG_TAIL_LINES)
            );
        } else if !self.keep_dir && std::env::var_os("KNHK_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// True when `GET /ready` on the admin port answers 200 `LIVE`.
async fn admin_ready(http: &reqwest::Client, admin_port: u16) -> bool {
    let url = format!("http://127.0.0.1:{admin_port}/ready");
    match http.get(&url).send().await {
        Ok(response) if response.status().as_u16() == 200 => response
            .text()
            .await
            .is_ok_and(|body| body.trim() == "LIVE"),
        _ => false,
    }
}

/// The last `lines` lines of `text`, skipping Envoy's startup inventory lines.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !is_inventory(l)).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Value of a metric in Prometheus text exposition, summed over its label sets.
///
/// `name` is the Envoy stat name (`knhk.route.canary`) or a Prometheus name. Envoy 1.40 exports
/// wasm metrics in the custom `wasmcustom` namespace and strips both that namespace and the
/// `envoy_` prefix in Prometheus output (`knhk_route_canary`), while built-in stats carry
/// `envoy_`; all of `name`, `envoy_name`, `wasmcustom_name` and `envoy_wasmcustom_name` are accepted
/// so the helper does not depend on that detail.
pub fn prometheus_value(text: &str, name: &str) -> Option<f64> {
    let base = prometheus_name(name);
    let candidates = [
        base.clone(),
        format!("envoy_{base}"),
        format!("wasmcustom_{base}"),
        format!("envoy_wasmcustom_{base}"),
        format!("dynamicmodulescustom_{base}"),
        format!("envoy_dynamicmodulescustom_{base}"),
    ];
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let metric_end = line.find(['{', ' ']).unwrap_or(line.len());
        let metric = &line[..metric_end];
        if !candidates.iter().any(|c| c == metric) {
            continue;
        }
        let Some(value) = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.trim().parse::<f64>().ok())
        else {
            continue;
        };
        *found.get_or_insert(0.0) += value;
    }
    found
}

/// An Envoy stat name in Prometheus form: every character outside `[A-Za-z0-9_]` becomes `_`.
pub fn prometheus_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Envoy's startup listing of linked extensions and header maps: long and never the problem.
fn is_inventory(line: &str) -> bool {
    [
        "server.cc:465]",
        "server.cc:467]",
        "server.cc:544]",
        "server.cc:547]",
    ]
    .iter()
    .any(|marker| line.contains(marker))
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn url_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# TYPE knhk_route_canary counter\n\
        knhk_route_canary{} 12\n\
        # TYPE envoy_cluster_upstream_rq counter\n\
        envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"stable\"} 5\n\
        envoy_cluster_upstream_rq{envoy_response_code=\"503\",envoy_cluster_name=\"stable\"} 2\n\
        envoy_wasmcustom_knhk_config_version 3\n";

    /// Wasm metrics are found under the stripped name, built-ins under `envoy_`, summed over labels.
    #[test]
    fn reads_prometheus_values() {
        assert_eq!(prometheus_value(SAMPLE, "knhk.route.canary"), Some(12.0));
        assert_eq!(prometheus_value(SAMPLE, "cluster.upstream_rq"), Some(7.0));
        assert_eq!(prometheus_value(SAMPLE, "knhk.config.version"), Some(3.0));
        assert_eq!(prometheus_value(SAMPLE, "knhk.route.stable"), None);
    }

    /// A name that is a prefix of another metric does not match it.
    #[test]
    fn prefix_is_not_a_match() {
        assert_eq!(
            prometheus_value("knhk_route_canary_total 4\n", "knhk.route.canary"),
            None
        );
    }

    /// Regex and URL escaping keep stat names literal.
    #[test]
    fn escaping() {
        assert_eq!(regex_escape("a.b_1"), "a\\.b_1");
        assert_eq!(url_escape("^a\\.b$"), "%5Ea%5C.b%24");
    }
}
