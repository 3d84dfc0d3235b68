//! One Envoy under test: started pinned, with a given `--concurrency`, on free ports, polled until ready, measured, killed on drop.
//!
//! Ports: the rendered bootstrap binds the admin and ingress listeners to port 0. Envoy writes
//! the admin address to `--admin-address-path`; the ingress port is read back from the admin
//! `/listeners` endpoint. Nothing is guessed and nothing races for a port.

use anyhow::{bail, Context};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How long Envoy may take to become ready (wasm compilation included), when run directly.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Interval between readiness polls.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A running Envoy process; dropping it kills and reaps the process.
pub struct Envoy {
    child: Child,
    admin: SocketAddr,
    listener: SocketAddr,
    log: PathBuf,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

/// What to start.
pub struct Launch<'a> {
    /// The Envoy binary.
    pub binary: &'a Path,
    /// The rendered bootstrap.
    pub config: &'a Path,
    /// Where Envoy's log goes.
    pub log: &'a Path,
    /// Where Envoy writes its admin address.
    pub admin_address_file: &'a Path,
    /// CPU to pin the process to (via `taskset`), if any.
    pub cpu: Option<usize>,
    /// Scheduling priority to run at.
    pub priority: super::placement::Priority,
    /// Worker threads (`--concurrency`); each runs its own wasm VM.
    pub concurrency: u32,
    /// A command line Envoy runs under (e.g. `valgrind --tool=callgrind …`), empty to run it directly.
    /// The wrapper must run Envoy in its own process (as valgrind does), so the pid stays Envoy's.
    pub wrapper: &'a [OsString],
    /// How long Envoy may take to become ready.
    pub ready_timeout: Duration,
    /// Directory of the dynamic module the bootstrap loads (`ENVOY_DYNAMIC_MODULES_SEARCH_PATH`), if any.
    pub dynamic_modules_dir: Option<&'a Path>,
}

impl Envoy {
    /// Start Envoy and wait until its admin endpoint reports ready and its ingress port is known.
    pub fn start(launch: &Launch<'_>) -> anyhow::Result<Envoy> {
        // A stale address file from an earlier run must not be mistaken for this one.
        let _ = std::fs::remove_file(launch.admin_address_file);
        let log = std::fs::File::create(launch.log)
            .with_context(|| format!("create {}", launch.log.display()))?;
        let log_err = log.try_clone().context("clone log handle")?;
        let mut command = match launch.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = super::placement::placed(program, launch.cpu, launch.priority);
                c.args(args).arg(launch.binary);
                c
            }
            None => {
                super::placement::placed(launch.binary.as_os_str(), launch.cpu, launch.priority)
            }
        };
        if let Some(dir) = launch.dynamic_modules_dir {
            command.env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", dir);
        }
        command
            .arg("-c")
            .arg(launch.config)
            .arg("--concurrency")
            .arg(launch.concurrency.to_string())
            .args(["--disable-hot-restart", "--log-level", "warning"])
            .arg("--admin-address-path")
            .arg(launch.admin_address_file)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = command
            .spawn()
            .with_context(|| format!("spawn {}", launch.binary.display()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("build admin client runtime")?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            // Each admin call runs in its own `block_on`; an idle pooled connection would not be polled between calls.
            .pool_max_idle_per_host(0)
            .build()
            .context("build admin HTTP client")?;
        let mut envoy = Envoy {
            child,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listener: SocketAddr::from(([127, 0, 0, 1], 0)),
            log: launch.log.to_path_buf(),
            http,
            runtime,
        };
        envoy
            .wait_ready(launch.admin_address_file, launch.ready_timeout)
            .with_context(|| {
                format!(
                    "Envoy did not become ready; log tail:\n{}",
                    envoy.log_tail(30)
                )
            })?;
        Ok(envoy)
    }

    fn wait_ready(&mut self, admin_address_file: &Path, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().context("poll Envoy process")? {
                bail!("Envoy exited during startup with {status}");
            }
            if Instant::now() > deadline {
                bail!("not ready after {timeout:?}");
            }
            if self.admin.port() == 0 {
                if let Ok(text) = std::fs::read_to_string(admin_address_file) {
                    if let Ok(addr) = text.trim().parse::<SocketAddr>() {
                        self.admin = addr;
                    }
                }
            }
            if self.admin.port() != 0 {
                if let Ok((200, body)) = self.admin_get("/ready") {
                    if body.trim() == "LIVE" {
                        self.listener = self.ingress_address()?;
                        return Ok(());
                    }
                }
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Read the bound ingress address from `/listeners?format=json`.
    fn ingress_address(&self) -> anyhow::Result<SocketAddr> {
        let (status, body) = self.admin_get("/listeners?format=json")?;
        if status != 200 {
            bail!("/listeners answered {status}");
        }
        let json: serde_json::Value =
            serde_json::from_str(&body).context("parse /listeners JSON")?;
        let socket = json
            .pointer("/listener_statuses/0/local_address/socket_address")
            .context("no listener in /listeners")?;
        let port = socket
            .get("port_value")
            .and_then(serde_json::Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .context("listener without a bound port")?;
        Ok(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// The ingress listener address.
    pub fn listener(&self) -> SocketAddr {
        self.listener
    }

    /// The process id (for CPU and RSS sampling).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// GET `path` on the admin endpoint: status and body.
    pub fn admin_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        self.get(self.admin, path, &[])
    }

    /// GET `path` on the ingress listener with extra headers: status and body.
    pub fn ingress_get(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, String)> {
        self.get(self.listener, path, headers)
    }

    fn get(
        &self,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, String)> {
        let url = format!("http://{addr}{path}");
        self.runtime.block_on(async {
            let mut request = self.http.get(&url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let response = request.send().await.with_context(|| format!("GET {url}"))?;
            let status = response.status().as_u16();
            let body = response
                .text()
                .await
                .with_context(|| format!("read body of {url}"))?;
            Ok((status, body))
        })
    }

    /// Counter values whose names match the regex `filter`, from the admin `/stats` text output.
    pub fn counters(&self, filter: &str) -> anyhow::Result<Vec<(String, u64)>> {
        let (status, body) = self.admin_get(&format!("/stats?filter={filter}"))?;
        if status != 200 {
            bail!("/stats answered {status}");
        }
        Ok(body
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(": ")?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect())
    }

    /// Resident set size in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no VmRSS in {path}"))
    }

    /// Bytes allocated through Envoy's allocator, from the admin `/memory` endpoint.
    pub fn allocated_bytes(&self) -> anyhow::Result<u64> {
        let (_, body) = self.admin_get("/memory")?;
        let json: serde_json::Value = serde_json::from_str(&body).context("parse /memory JSON")?;
        json.get("allocated")
            .and_then(|v| {
                v.as_str()
                    .and_then(|s| s.parse().ok())
                    .or_else(|| v.as_u64())
            })
            .context("no `allocated` in /memory")
    }

    /// CPU time consumed by all threads of the process so far, nanoseconds (`/proc/<pid>/task/*/schedstat`).
    pub fn cpu_ns(&self) -> anyhow::Result<u64> {
        let dir = format!("/proc/{}/task", self.pid());
        let mut total = 0u64;
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read {dir}"))? {
            let path = entry.context("list tasks")?.path().join("schedstat");
            // A thread may exit between listing and reading; it no longer adds CPU time.
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let ns = text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .with_context(|| format!("parse {}", path.display()))?;
            total = total.saturating_add(ns);
        }
        Ok(total)
    }

    /// Still running?
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait().context("poll Envoy process")? {
            bail!(
                "Envoy exited with {status}; log tail:\n{}",
                self.log_tail(30)
            );
        }
        Ok(())
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        match std::fs::read_to_string(&self.log) {
            Ok(text) => {
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("(cannot read {}: {e})", self.log.display()),
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
