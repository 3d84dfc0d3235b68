//! A real headless Chromium for the browser tests, driven through chromedriver over WebDriver
//! (fantoccini): Debian's `chromium` and `chromium-driver`, which `cargo xtask setup`
//! installs. The driver runs on a free port and is killed on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
pub use fantoccini::Locator;
use fantoccini::{Client, ClientBuilder};
use serde_json::Value;

use crate::{paths, ports, wait};

/// How long the driver may take to accept a session.
const SESSION_WAIT: Duration = Duration::from_secs(30);

/// chromedriver, killed on drop.
#[derive(Debug)]
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A browser session.
#[derive(Debug)]
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    _driver: Driver,
}

impl Browser {
    /// Start chromedriver and open a headless session. With `offline`, every request goes to a
    /// proxy that is not there (pages opened from files only). `Ok(None)`, after a notice, when
    /// Chromium or chromedriver is missing and `KNHK_REQUIRE_REAL` is not set.
    pub async fn start(offline: bool) -> anyhow::Result<Option<Browser>> {
        let (chromium, chromedriver) = match (paths::chromium(), paths::chromedriver()) {
            (Ok(c), Ok(d)) => (c, d),
            (Err(e), _) | (_, Err(e)) if !paths::require_real() => {
                eprintln!("SKIPPED: {e:#}");
                return Ok(None);
            }
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        // fantoccini's rustls needs a process-wide crypto provider; the agent's is ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = ports::free_port()?;
        let driver = Driver(
            Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("start {}", chromedriver.display()))?,
        );
        let mut args = vec![
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1400,1000",
        ];
        if offline {
            args.extend([
                "--proxy-server=127.0.0.1:9",
                "--allow-file-access-from-files",
            ]);
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({"binary": chromium, "args": args}),
        );
        let url = format!("http://127.0.0.1:{port}");
        let client = wait::poll("chromedriver to accept a session", SESSION_WAIT, || {
            let (caps, url) = (caps.clone(), url.clone());
            async move {
                Ok(ClientBuilder::rustls()?
                    .capabilities(caps)
                    .connect(&url)
                    .await
                    .ok())
            }
        })
        .await?;
        Ok(Some(Browser {
            client,
            _driver: driver,
        }))
    }

    /// Open `url` and wait until `script` (a function body) returns something other than null.
    pub async fn open(&self, url: &str, ready_script: &str) -> anyhow::Result<Value> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("open {url}"))?;
        self.until(
            "the page to be ready",
            Duration::from_secs(20),
            ready_script,
        )
        .await
    }

    /// Poll `script` (a function body) until it returns something other than null or false.
    pub async fn until(
        &self,
        what: &str,
        timeout: Duration,
        script: &str,
    ) -> anyhow::Result<Value> {
        wait::poll(what, timeout, || async {
            let v = self.client.execute(script, vec![]).await?;
            Ok((!v.is_null() && v != Value::Bool(false)).then_some(v))
        })
        .await
    }

    /// The text of the element with id `id`.
    pub async fn text(&self, id: &str) -> anyhow::Result<String> {
        Ok(self.client.find(Locator::Id(id)).await?.text().await?)
    }

    /// Click the element with id `id`.
    pub async fn click(&self, id: &str) -> anyhow::Result<()> {
        self.client.find(Locator::Id(id)).await?.click().await?;
        Ok(())
    }

    /// Type `text` into the element with id `id` (for a file input: choose that file).
    pub async fn type_into(&self, id: &str, text: &str) -> anyhow::Result<()> {
        self.client
            .find(Locator::Id(id))
            .await?
            .send_keys(text)
            .await?;
        Ok(())
    }

    /// Save a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let png = self.client.screenshot().await?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("write {}", path.display()))
    }

    /// End the session and stop the driver.
    pub async fn close(self) -> anyhow::Result<()> {
        self.client.clone().close().await?;
        Ok(())
    }
}
