//! Test support: a real OpenBao dev server on a free loopback port, killed on drop, whose log
//! is printed when the test fails.

// Test support: a failed setup step must abort the test loudly.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod in_process;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `bao server -dev`.
pub struct Bao {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub addr: String,
    /// The root token.
    pub token: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn bao_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KNHK_BAO") {
        return Some(PathBuf::from(p));
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/bao");
    p.exists().then_some(p)
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Bao {
    /// Start OpenBao with Transit enabled, or `None` (after a notice) when the binary is absent
    /// and `KNHK_REQUIRE_REAL` is not `1`.
    pub async fn start() -> Option<Bao> {
        let Some(bin) = bao_binary().filter(|p| p.exists()) else {
            if std::env::var("KNHK_REQUIRE_REAL").as_deref() == Ok("1") {
                panic!(
                    "KNHK_REQUIRE_REAL=1 but no OpenBao binary: set KNHK_BAO or run `cargo xtask setup` to install .venv/bin/bao"
                );
            }
            eprintln!(
                "SKIPPED: OpenBao binary not found (set KNHK_BAO or run `cargo xtask setup`)"
            );
            return None;
        };
        // The port is free when probed; if another process takes it first, bao exits and we
        // retry with a new one.
        let mut last_log = String::new();
        for _ in 0..3 {
            match Self::try_start(&bin).await {
                Ok(b) => return Some(b),
                Err(log) => last_log = log,
            }
        }
        panic!("OpenBao did not start; its log:\n{last_log}");
    }

    async fn try_start(bin: &PathBuf) -> Result<Bao, String> {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("bao.log");
        let port = free_port();
        let token = format!("root-{:016x}", rand_u64());
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(bin)
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={token}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        let mut bao = Bao {
            child,
            addr: format!("http://127.0.0.1:{port}"),
            token,
            log,
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = bao.child.try_wait() {
                return Err(format!("exited with {status}\n{}", bao.log_text()));
            }
            if Instant::now() > deadline {
                return Err(format!("not healthy within 60 s\n{}", bao.log_text()));
            }
            let health = http
                .get(format!("{}/v1/sys/health", bao.addr))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if matches!(health, Ok(r) if r.status().is_success()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let enable = http
            .post(format!("{}/v1/sys/mounts/transit", bao.addr))
            .header("X-Vault-Token", &bao.token)
            .json(&serde_json::json!({"type": "transit"}))
            .send()
            .await
            .map_err(|e| format!("enabling transit: {e}\n{}", bao.log_text()))?;
        if !enable.status().is_success() {
            let body = enable.text().await.unwrap_or_default();
            return Err(format!("enabling transit: {body}\n{}", bao.log_text()));
        }
        Ok(bao)
    }

    /// The server's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- OpenBao log ----\n{}", self.log_text());
        }
    }
}

/// A few random bits for unique names, without another dependency.
pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}
