//! Builds of the proxy-wasm modules for `wasm32-wasip1`: cargo's `wasm` profile (size-optimised,
//! see the workspace `Cargo.toml`), then binaryen's `wasm-opt -Oz`, into `target/dist/`.

use crate::setup::WASM_TARGET;
use crate::util::{cargo, repo_root, run, run_output};
use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::Command;

/// The cargo profile the shipped modules are built with.
pub const PROFILE: &str = "wasm";

/// The wasm features rustc's `wasm32-wasip1` target emits (its defaults since Rust 1.82), which
/// `wasm-opt` must accept in its input and may use in its output; V8 in Envoy runs all of them.
const WASM_FEATURES: [&str; 6] = [
    "--enable-bulk-memory",
    "--enable-sign-ext",
    "--enable-nontrapping-float-to-int",
    "--enable-mutable-globals",
    "--enable-multivalue",
    "--enable-reference-types",
];

/// Build `package` for `wasm32-wasip1` with the `wasm` profile, shrink it with `wasm-opt -Oz`,
/// and return the path of `target/dist/<artifact>.wasm` (e.g. `knhk-filter` → `knhk_filter`,
/// `knhk-empty-filter` → `knhk_empty_filter`).
pub fn build(package: &str, artifact: &str) -> anyhow::Result<PathBuf> {
    run(cargo().args([
        "build",
        "--profile",
        PROFILE,
        "-p",
        package,
        "--target",
        WASM_TARGET,
    ]))?;
    let target = target_dir()?;
    let built = target
        .join(WASM_TARGET)
        .join(PROFILE)
        .join(format!("{artifact}.wasm"));
    if !built.is_file() {
        bail!(
            "build of {package} succeeded but {} does not exist",
            built.display()
        );
    }
    // Not `target/wasm/`: that is cargo's own directory for the `wasm` profile's host builds.
    let out_dir = target.join("dist");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    let wasm = out_dir.join(format!("{artifact}.wasm"));
    let wasm_opt = crate::setup::which("wasm-opt")
        .context("wasm-opt not found: `cargo xtask setup` installs it (Debian package binaryen)")?;
    run(Command::new(wasm_opt)
        .arg("-Oz")
        .args(WASM_FEATURES)
        .arg(&built)
        .arg("-o")
        .arg(&wasm))?;
    let size = |p: &PathBuf| std::fs::metadata(p).map(|m| m.len() / 1024).unwrap_or(0);
    println!(
        "wasm: {} ({} KiB; {} KiB before wasm-opt)",
        wasm.display(),
        size(&wasm),
        size(&built)
    );
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
