//! A real OpenBao dev server (`bao server -dev`) on a free loopback port with Transit enabled:
//! polled until healthy, killed on drop, its log printed when a test fails.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::paths;
use crate::ports::free_port;
use crate::wait::poll;

/// How long the dev server may take to answer `/v1/sys/health`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts at starting when the chosen port was taken by someone else meanwhile.
const START_ATTEMPTS: u32 = 3;

/// A running OpenBao dev server.
#[derive(Debug)]
pub struct Bao {
    child: Option<Child>,
    addr: String,
    token: String,
    dir: PathBuf,
    http: reqwest::Client,
}

/// A random-looking token for the dev server's root token, without another dependency.
fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("knhk-root-{:016x}", h.finish())
}

impl Bao {
    /// Start a dev server with its files in `dir` (created), enable Transit at `transit/`, and
    /// wait until it answers. Retries on a fresh port when the first one was lost to a race.
    pub async fn start(dir: &Path) -> anyhow::Result<Bao> {
        let bin = paths::bao()?;
        std::fs::create_dir_all(dir)?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&bin, dir).await {
                Ok(bao) => return Ok(bao),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("OpenBao did not start")))
    }

    async fn try_start(bin: &Path, dir: &Path) -> anyhow::Result<Bao> {
        let port = free_port()?;
        let token = random_token();
        let log = File::create(dir.join("bao.log"))?;
        let child = Command::new(bin)
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={token}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            // The dev server writes a token helper file into $HOME; keep it in the scratch dir.
            .env("HOME", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut bao = Bao {
            child: Some(child),
            addr: format!("http://127.0.0.1:{port}"),
            token,
            dir: dir.to_path_buf(),
            http: reqwest::Client::new(),
        };
        if let Err(e) = bao.wait_healthy().await {
            let log = bao.log();
            bao.kill();
            bail!("{e}\nOpenBao log:\n{}", crate::envoy::tail(&log, 40));
        }
        if let Err(e) = bao
            .call(
                reqwest::Method::POST,
                "/v1/sys/mounts/transit",
                Some(serde_json::json!({"type": "transit"})),
            )
            .await
        {
            let log = bao.log();
            bao.kill();
            bail!(
                "enabling transit: {e}\nOpenBao log:\n{}",
                crate::envoy::tail(&log, 40)
            );
        }
        Ok(bao)
    }

    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let url = format!("{}/v1/sys/health", self.addr);
        let http = self.http.clone();
        let child = self.child.as_mut().context("OpenBao is not running")?;
        poll("OpenBao to report healthy", READY_TIMEOUT, || {
            let exited = child.try_wait();
            let (http, url) = (http.clone(), url.clone());
            async move {
                if let Ok(Some(status)) = exited {
                    bail!("OpenBao exited during startup ({status})");
                }
                let answer = http.get(&url).timeout(Duration::from_secs(2)).send().await;
                Ok(answer.ok().filter(|r| r.status().is_success()).map(|_| ()))
            }
        })
        .await
    }

    /// `http://127.0.0.1:<port>`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The root token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("bao.log")).unwrap_or_default()
    }

    /// One authenticated API call; a non-2xx answer is an error carrying the body. Returns the
    /// JSON body (`null` for an empty one).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.addr))
            .header("X-Vault-Token", &self.token)
            .timeout(Duration::from_secs(10));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if !status.is_success() {
            bail!(
                "{method} {path} answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        if bytes.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// `GET /v1/transit/keys/<name>`: the key's `data` (type, versions, public keys).
    pub async fn transit_key(&self, name: &str) -> anyhow::Result<serde_json::Value> {
        let body = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/transit/keys/{name}"),
                None,
            )
            .await?;
        Ok(body["data"].clone())
    }

    /// The newest version of a Transit key.
    pub async fn latest_version(&self, name: &str) -> anyhow::Result<u64> {
        self.transit_key(name).await?["latest_version"]
            .as_u64()
            .context("no latest_version in the key")
    }

    /// `POST /v1/transit/keys/<name>/rotate`, behind the agent's back; returns the new version.
    pub async fn rotate(&self, name: &str) -> anyhow::Result<u64> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/transit/keys/{name}/rotate"),
            None,
        )
        .await?;
        self.latest_version(name).await
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- OpenBao log ({}) ---\n{}",
                self.dir.display(),
                crate::envoy::tail(&self.log(), 40)
            );
        }
        self.kill();
    }
}
