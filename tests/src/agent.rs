//! The real `knhk-agent` as a child process: started on a free port with a local signer in a
//! scratch directory, polled until it serves, killed with SIGKILL on demand or on drop. It
//! runs as production would: with an admin token (which [`AgentProcess`]'s own calls carry)
//! and a filter token file holding [`FILTER_TOKEN`] (the e2e filters' `control.token`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use knhk_core::checkpoint::PublicKeyVersion;

use crate::paths;
use crate::ports::free_port;
use crate::wait::poll;

/// The admin token of every e2e agent.
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789abcdef0123456789abcdef";
/// The filter token every e2e agent accepts at start ([`crate::rig::control_section`] puts it
/// in the filters' `control.token`).
pub const FILTER_TOKEN: &str = "e2e-filter-token-0123456789abcdef0123456789abcdef";

/// A running agent.
#[derive(Debug)]
pub struct AgentProcess {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    config: PathBuf,
    http: reqwest::Client,
}

/// A client whose every request carries `Authorization: Bearer <token>`.
pub fn client_with_token(token: &str) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse()?,
    );
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}

impl AgentProcess {
    /// Start an agent whose state lives in `dir` (created; reused across restarts), on `port`
    /// or a free one, with a local Ed25519 signer in `dir/keys`, and wait until its API answers.
    pub async fn start(dir: &Path, port: Option<u16>) -> anyhow::Result<AgentProcess> {
        let kms = format!(
            "[kms]\nprovider = \"local\"\nkey_id = \"checkpoints\"\nkey_dir = \"{keys}\"\n",
            keys = dir.join("keys").display(),
        );
        Self::start_with(dir, port, &kms, &[]).await
    }

    /// Like [`AgentProcess::start`], with `kms_toml` as the config's `[kms]` section (the whole
    /// table, header included) and `env` added to the agent's environment (e.g. `VAULT_TOKEN`,
    /// the legacy `KGC_SIDECAR_KMS_*` overrides).
    pub async fn start_with(
        dir: &Path,
        port: Option<u16>,
        kms_toml: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<AgentProcess> {
        std::fs::create_dir_all(dir)?;
        let config = dir.join("agent.toml");
        std::fs::write(dir.join("admin-token"), format!("{ADMIN_TOKEN}\n"))?;
        let filter_tokens = dir.join("filter-tokens");
        if !filter_tokens.exists() {
            std::fs::write(&filter_tokens, format!("{FILTER_TOKEN}\n"))?;
        }
        let toml = format!(
            "origin = \"knhk.test/e2e\"\ndata_dir = \"{data}\"\nseal_interval = \"1s\"\n\n[api]\nadmin_token_file = \"{admin}\"\nfilter_token_file = \"{filters}\"\n\n{kms_toml}",
            data = dir.join("data").display(),
            admin = dir.join("admin-token").display(),
            filters = filter_tokens.display(),
        );
        std::fs::write(&config, toml)?;
        Self::launch(dir, &config, port, env).await
    }

    /// Start an agent from a configuration file of the caller's (e.g. an operator's, with its
    /// paths moved into `dir`), on `port` or a free one; its log goes to `dir/agent.log`. The
    /// harness's own calls carry [`ADMIN_TOKEN`]: the file's admin token must be that.
    pub async fn launch(
        dir: &Path,
        config: &Path,
        port: Option<u16>,
        env: &[(&str, &str)],
    ) -> anyhow::Result<AgentProcess> {
        std::fs::create_dir_all(dir)?;
        let port = match port {
            Some(p) => p,
            None => free_port()?,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("agent.log"))?;
        let child = Command::new(paths::agent()?)
            .args(["run", "--config"])
            .arg(config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawning knhk-agent")?;
        let mut agent = AgentProcess {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
            config: config.to_path_buf(),
            http: client_with_token(ADMIN_TOKEN)?,
        };
        let url = agent.url("/v1/policy");
        let http = agent.http.clone();
        let ready = poll("knhk-agent to serve", Duration::from_secs(30), || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                Ok(http
                    .get(&url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ()))
            }
        })
        .await;
        if let Err(e) = ready {
            let log = agent.log();
            agent.kill9();
            anyhow::bail!("{e}\nagent log:\n{}", crate::envoy::tail(&log, 60));
        }
        Ok(agent)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of `path` on the agent.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The admin token file (for the CLI's `--token-file`).
    pub fn admin_token_file(&self) -> PathBuf {
        self.dir.join("admin-token")
    }

    /// Replace the filter tokens the agent accepts (it re-reads the file every second).
    pub fn set_filter_tokens(&self, tokens: &[&str]) -> anyhow::Result<()> {
        let mut text = tokens.join("\n");
        text.push('\n');
        std::fs::write(self.dir.join("filter-tokens"), text)?;
        Ok(())
    }

    /// The config file the agent was started with (for `knhk-agent keys --config …`).
    pub fn config_path(&self) -> PathBuf {
        self.config.clone()
    }

    /// `knhk-agent verify <file> --trusted-keys <this agent's keys>`: its output, whatever
    /// the verdict.
    pub fn verify(&self, file: &Path) -> anyhow::Result<std::process::Output> {
        Command::new(paths::agent()?)
            .arg("verify")
            .arg(file)
            .arg("--trusted-keys")
            .arg(self.trusted_keys_file()?)
            .output()
            .context("running knhk-agent verify")
    }

    /// Write the agent's checkpoint keys (`knhk-agent keys list`) to `trusted-keys.json` in its
    /// directory and return the path: what `verify --trusted-keys` pins.
    pub fn trusted_keys_file(&self) -> anyhow::Result<PathBuf> {
        let out = Command::new(paths::agent()?)
            .args(["keys", "--config"])
            .arg(self.config_path())
            .arg("list")
            .output()
            .context("running knhk-agent keys list")?;
        anyhow::ensure!(
            out.status.success(),
            "knhk-agent keys list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file = self.dir.join("trusted-keys.json");
        std::fs::write(&file, &out.stdout)?;
        Ok(file)
    }

    /// `GET path`: the body of a 2xx answer, or an error with the status and body.
    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let response = self.http.get(self.url(path)).send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        anyhow::ensure!(
            status.is_success(),
            "GET {path} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(body.to_vec())
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// The directory its state lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// SIGKILL, no shutdown: what a crash looks like.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `PUT /v1/policy`; returns the new epoch.
    pub async fn put_policy(&self, policy: &serde_json::Value) -> anyhow::Result<u64> {
        let response = self
            .http
            .put(self.url("/v1/policy"))
            .header("content-type", "application/json")
            .body(policy.to_string())
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = serde_json::from_slice(&response.bytes().await?)?;
        anyhow::ensure!(
            status.is_success(),
            "PUT /v1/policy answered {status}: {body}"
        );
        body["epoch"].as_u64().context("no epoch in the answer")
    }

    /// Call `method path` with an optional JSON body; the status and the JSON answer (a JSON
    /// string holding the text when the answer is not JSON).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut request = self.http.request(method.parse()?, self.url(path));
        if let Some(b) = body {
            request = request
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Ok((status, value))
    }

    /// `method path` with `body`, carrying `token` as the bearer credential (none when `None`,
    /// whatever the agent's own calls carry): the status and the body text.
    pub async fn call_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, String)> {
        let mut request = reqwest::Client::new()
            .request(method.parse()?, self.url(path))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    /// `GET /v1/config/keys`: what the filter must trust.
    pub async fn config_keys(&self) -> anyhow::Result<Vec<PublicKeyVersion>> {
        let body = self
            .http
            .get(self.url("/v1/config/keys"))
            .send()
            .await?
            .bytes()
            .await?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// Number of entries in the receipt log.
    pub async fn log_size(&self) -> anyhow::Result<u64> {
        let body = self
            .http
            .get(self.url("/v1/receipts?limit=1"))
            .send()
            .await?
            .bytes()
            .await?;
        let page: serde_json::Value = serde_json::from_slice(&body)?;
        page["size"]
            .as_u64()
            .context("no size in the receipts page")
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- knhk-agent log ({}) ---\n{}",
                self.dir.display(),
                crate::envoy::tail(&self.log(), 60)
            );
        }
        self.kill9();
    }
}
