//! Build of the Envoy dynamic module `libknhk_filter.so`: cargo's `native` profile (release
//! with `panic = "unwind"`, see the workspace `Cargo.toml`), copied into `target/dist/`.

use crate::util::{cargo, run};
use anyhow::{bail, Context};
use std::path::PathBuf;

/// The cargo profile the module is built with.
pub const PROFILE: &str = "native";

/// Build `knhk-filter` as a native cdylib and return `target/dist/libknhk_filter.so`.
pub fn build() -> anyhow::Result<PathBuf> {
    run(cargo().args(["build", "--profile", PROFILE, "-p", "knhk-filter", "--lib"]))?;
    let target = crate::wasm::target_dir()?;
    let built = target.join(PROFILE).join("libknhk_filter.so");
    if !built.is_file() {
        bail!(
            "build of knhk-filter succeeded but {} does not exist",
            built.display()
        );
    }
    let out_dir = target.join("dist");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    let module = out_dir.join("libknhk_filter.so");
    // Copy to a temporary name and rename: an Envoy that has the old file mapped keeps it.
    let staging = out_dir.join(".libknhk_filter.so.next");
    std::fs::copy(&built, &staging)
        .with_context(|| format!("copy {} to {}", built.display(), staging.display()))?;
    std::fs::rename(&staging, &module)
        .with_context(|| format!("rename {} to {}", staging.display(), module.display()))?;
    let size = std::fs::metadata(&module)
        .map(|m| m.len() / 1024)
        .unwrap_or(0);
    println!("native: {} ({size} KiB)", module.display());
    Ok(module)
}
