//! The release `knhk-agent` as a child process of the benches (`bench-receipts` and `bench`).
//!
//! [`build_release`] builds the binary once; [`Agent::start`] writes an `agent.toml` with a
//! local Ed25519 signer and a SQLite store into a scratch directory, starts the agent on a free
//! loopback port (through a caller-supplied command, so a bench can pin it to a CPU and raise
//! its priority), and [`Agent::wait_ready`] polls it until it serves. Dropping the [`Agent`]
//! kills and reaps the process and cleans its scratch directory up as [`Scratch`] says.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use knhk_e2e::ports::free_port;
use knhk_e2e::wait::poll;
use serde_json::Value;

use crate::util::{cargo, run as exec};

/// How long a starting agent may take to serve.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Build `knhk-agent` in release mode and return the binary's path.
pub fn build_release() -> anyhow::Result<PathBuf> {
    exec(cargo().args([
        "build",
        "--release",
        "-p",
        "knhk-agent",
        "--bin",
        "knhk-agent",
    ]))?;
    Ok(crate::wasm::target_dir()?
        .join("release")
        .join("knhk-agent"))
}

/// What happens to the scratch directory when the [`Agent`] is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scratch {
    /// Remove the whole directory.
    Remove,
    /// Remove the store and the keys, keep `agent.toml` and `agent.log` for the record.
    KeepLog,
}

/// How to start an agent.
pub struct Launch<'a> {
    /// The agent binary (for the record and for `keys`/`verify` calls).
    pub binary: &'a Path,
    /// The command that runs `binary`: the binary itself, or a wrapper that execs it (e.g.
    /// `taskset -c 1 chrt -r 1 knhk-agent`). `run --config … --listen …` is appended.
    pub command: Command,
    /// Scratch directory for `agent.toml`, `agent.log`, the store (`data/`) and the keys (`keys/`);
    /// emptied first.
    pub dir: PathBuf,
    /// The checkpoint origin line (log identity).
    pub origin: &'a str,
    /// `RUST_LOG` of the agent.
    pub rust_log: &'a str,
    /// Clean-up on drop.
    pub scratch: Scratch,
}

/// A running agent; dropping it kills and reaps the process.
pub struct Agent {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    binary: PathBuf,
    rust_log: String,
    scratch: Scratch,
}

impl Agent {
    /// Write the config (local Ed25519 signer, SQLite WAL store, one checkpoint per second)
    /// and spawn the agent on a free loopback port. It is not ready yet: see [`Agent::wait_ready`].
    pub fn start(launch: Launch<'_>) -> anyhow::Result<Agent> {
        let Launch {
            binary,
            command,
            dir,
            origin,
            rust_log,
            scratch,
        } = launch;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let config = format!(
            // The ingest benches post from one address as fast as they can: measure the store,
            // not the per-client batch rate limit.
            "origin = \"{origin}\"\ndata_dir = \"{data}\"\nseal_interval = \"1s\"\n\n[api]\nreceipt_batches_per_second = 1000000\nreceipt_batch_burst = 1000000\n\n[kms]\nprovider = \"local\"\nkey_id = \"checkpoints\"\nkey_dir = \"{keys}\"\n",
            data = dir.join("data").display(),
            keys = dir.join("keys").display(),
        );
        std::fs::write(dir.join("agent.toml"), config)?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.join("agent.log"))?;
        let child = spawn(command, &dir.join("agent.toml"), port, rust_log, log)
            .with_context(|| format!("spawning {}", binary.display()))?;
        Ok(Agent {
            child: Some(child),
            port,
            dir,
            binary: binary.to_path_buf(),
            rust_log: rust_log.to_owned(),
            scratch,
        })
    }

    /// Poll `GET /v1/checkpoints/latest` until it answers; on timeout, fail with the agent's log.
    pub async fn wait_ready(&self, http: &reqwest::Client) -> anyhow::Result<()> {
        let url = self.url("/v1/checkpoints/latest");
        let ready = poll("the agent to serve", READY_TIMEOUT, || {
            let (http, url) = (http.clone(), url.clone());
            async move { Ok(get_json(&http, &url).await.ok().map(|_| ())) }
        })
        .await;
        if let Err(e) = ready {
            bail!("{e}\nagent log:\n{}", self.log());
        }
        Ok(())
    }

    /// Kill the agent with SIGKILL, as a crash would, and start `command` (the same binary)
    /// again on the same configuration, store, keys and port. Returns when the new process
    /// is spawned; wait for it with [`Agent::wait_ready`]. The log is appended to.
    pub fn crash_and_restart(&mut self, command: Command) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("kill the agent")?;
            child.wait().context("reap the agent")?;
        }
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("agent.log"))?;
        let child = spawn(command, &self.config_path(), self.port, &self.rust_log, log)
            .with_context(|| format!("restarting {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// CPU time of the whole process so far, seconds: `utime + stime` of `/proc/<pid>/stat`,
    /// which (unlike a sum over `/proc/<pid>/task/*`) keeps the time of threads that already
    /// exited, such as tokio's idle blocking threads that ran SQLite. Assumes `USER_HZ` = 100,
    /// the value of every mainstream Linux build.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let pid = self.pid().context("the agent is not running")?;
        let path = format!("/proc/{pid}/stat");
        let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        stat_cpu_seconds(&text).with_context(|| format!("parse {path}"))
    }

    /// Resident memory now and at its peak, KiB: `VmRSS` and `VmHWM` of `/proc/<pid>/status`.
    pub fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        let pid = self.pid().context("the agent is not running")?;
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
                .with_context(|| format!("no {name} in {path}"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// The binary it runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Its scratch directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The config file it was started with (for `knhk-agent keys --config …`).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }

    /// URL of `path` on the agent.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Bytes of the database and its WAL.
    pub fn store_bytes(&self) -> u64 {
        ["receipts.db", "receipts.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(self.dir.join("data").join(f)).ok())
            .map(|m| m.len())
            .sum()
    }

    /// `PUT /v1/policy` with `policy` (the filter's configuration without `control`); returns the new epoch.
    pub async fn put_policy(&self, http: &reqwest::Client, policy: &Value) -> anyhow::Result<u64> {
        let url = self.url("/v1/policy");
        let response = http
            .put(&url)
            .header("content-type", "application/json")
            .body(policy.to_string())
            .send()
            .await
            .with_context(|| format!("PUT {url}"))?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            bail!("PUT {url}: {status}: {}", String::from_utf8_lossy(&body));
        }
        let answer: Value = serde_json::from_slice(&body)?;
        answer["epoch"]
            .as_u64()
            .with_context(|| format!("no epoch in the answer of PUT {url}: {answer}"))
    }

    /// `GET /v1/config/keys`: the key set a filter's `control.trusted_keys` must hold.
    pub async fn config_keys(&self, http: &reqwest::Client) -> anyhow::Result<Value> {
        let keys = get_json(http, &self.url("/v1/config/keys")).await?;
        if keys.as_array().is_none_or(Vec::is_empty) {
            bail!("GET /v1/config/keys answered no keys: {keys}");
        }
        Ok(keys)
    }

    /// Entries in the receipt log (`size` of `GET /v1/receipts?limit=1`).
    pub async fn log_size(&self, http: &reqwest::Client) -> anyhow::Result<u64> {
        let page = get_json(http, &self.url("/v1/receipts?limit=1")).await?;
        page["size"]
            .as_u64()
            .with_context(|| format!("no size in the receipts page: {page}"))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        match self.scratch {
            Scratch::Remove => {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
            Scratch::KeepLog => {
                for sub in ["data", "keys"] {
                    let _ = std::fs::remove_dir_all(self.dir.join(sub));
                }
            }
        }
    }
}

/// Run `command` as `… run --config <config> --listen 127.0.0.1:<port>`, its output to `log`.
fn spawn(
    mut command: Command,
    config: &Path,
    port: u16,
    rust_log: &str,
    log: std::fs::File,
) -> anyhow::Result<Child> {
    Ok(command
        .args(["run", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", rust_log)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()?)
}

/// `utime + stime` of a `/proc/<pid>/stat` line, seconds at 100 ticks per second.
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces and parentheses; fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0], so utime (14) and stime (15) are fields[11] and fields[12].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// `GET url` and parse the 2xx body as JSON; any other status is an error with the body.
pub async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let response = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// utime and stime are read after the command name, even one with spaces and parentheses.
    #[test]
    fn cpu_seconds_from_proc_stat() {
        let stat =
            "4242 (knhk (a) b) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 6 0 123 0 0";
        assert_eq!(stat_cpu_seconds(stat), Some(3.25));
        assert_eq!(stat_cpu_seconds("garbage"), None);
    }
}
