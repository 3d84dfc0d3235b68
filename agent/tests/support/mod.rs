//! Test support: a real OpenBao dev server and a real moto server on free loopback ports,
//! killed on drop, whose logs are printed when the test fails.

// Test support: a failed setup step must abort the test loudly.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod in_process;
pub mod regions;

/// A running `bao server -dev` with Transit enabled: the e2e harness's
/// [`knhk_e2e::openbao::Bao`], plus the skip rule of these crate-local tests.
pub struct Bao {
    inner: knhk_e2e::openbao::Bao,
    /// `http://127.0.0.1:<port>`.
    pub addr: String,
    /// The root token.
    pub token: String,
    // Declared after `inner`, so the server is killed before its directory goes.
    _dir: tempfile::TempDir,
}

impl Bao {
    /// Start OpenBao with Transit enabled, or `None` (after a notice) when the binary is absent
    /// and `KNHK_REQUIRE_REAL` is not set (with it, a missing binary fails the test).
    pub async fn start() -> Option<Bao> {
        if let Err(e) = knhk_e2e::paths::bao() {
            if knhk_e2e::paths::require_real() {
                panic!("{e}");
            }
            eprintln!("SKIPPED: {e}");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let inner = knhk_e2e::openbao::Bao::start(dir.path()).await.unwrap();
        Some(Bao {
            addr: inner.addr().to_string(),
            token: inner.token().to_string(),
            inner,
            _dir: dir,
        })
    }

    /// The server's output so far.
    pub fn log_text(&self) -> String {
        self.inner.log()
    }
}

/// A running moto server (AWS's APIs, KMS among them): the e2e harness's
/// [`knhk_e2e::moto::Moto`], with the skip rule of these crate-local tests.
pub struct Moto {
    /// The server.
    pub inner: knhk_e2e::moto::Moto,
    // Declared after `inner`, so the server is killed before its directory goes.
    _dir: tempfile::TempDir,
}

impl Moto {
    /// Start moto, or `None` (after a notice) when it is not installed and `KNHK_REQUIRE_REAL`
    /// is not set.
    pub async fn start() -> Option<Moto> {
        let dir = moto_dir()?;
        let inner = knhk_e2e::moto::Moto::start(dir.path()).await.unwrap();
        Some(Moto { inner, _dir: dir })
    }

    /// Start moto enforcing IAM, with its admin and reader users.
    pub async fn start_with_iam() -> Option<(Moto, knhk_e2e::moto::IamUsers)> {
        let dir = moto_dir()?;
        let (inner, users) = knhk_e2e::moto::Moto::start_with_iam(dir.path())
            .await
            .unwrap();
        Some((Moto { inner, _dir: dir }, users))
    }

    /// The endpoint override.
    pub fn endpoint(&self) -> String {
        self.inner.endpoint().to_owned()
    }
}

fn moto_dir() -> Option<tempfile::TempDir> {
    if let Err(e) = knhk_e2e::paths::moto_server() {
        if knhk_e2e::paths::require_real() {
            panic!("{e}");
        }
        eprintln!("SKIPPED: {e}");
        return None;
    }
    Some(tempfile::tempdir().unwrap())
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
