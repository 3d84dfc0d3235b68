//! Release builds of the proxy-wasm modules for `wasm32-wasip1`.

use crate::setup::WASM_TARGET;
use crate::util::{cargo, repo_root, run, run_output};
use anyhow::{bail, Context};
use std::path::PathBuf;

/// Build `package` for `wasm32-wasip1` in release mode and return the path of `<artifact>.wasm`
/// (e.g. `knhk-filter` → `knhk_filter`, `knhk-empty-filter` → `knhk_empty_filter`).
pub fn build(package: &str, artifact: &str) -> anyhow::Result<PathBuf> {
    run(cargo().args(["build", "--release", "-p", package, "--target", WASM_TARGET]))?;
    let wasm = target_dir()?
        .join(WASM_TARGET)
        .join("release")
        .join(format!("{artifact}.wasm"));
    if !wasm.is_file() {
        bail!(
            "build of {package} succeeded but {} does not exist",
            wasm.display()
        );
    }
    let size = std::fs::metadata(&wasm)?.len();
    println!("wasm: {} ({} KiB)", wasm.display(), size / 1024);
    Ok(wasm)
}

/// Cargo's target directory: `CARGO_TARGET_DIR` if set, else what `cargo metadata` reports.
pub fn target_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return Ok(repo_root().join(dir));
    }
    let json = run_output(cargo().args(["metadata", "--format-version", "1", "--no-deps"]))?;
    let meta: serde_json::Value = serde_json::from_str(&json).context("parse cargo metadata")?;
    let dir = meta
        .get("target_directory")
        .and_then(|d| d.as_str())
        .context("cargo metadata has no target_directory")?;
    Ok(PathBuf::from(dir))
}
