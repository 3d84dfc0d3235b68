//! `cargo xtask build-console`: the operator console (`console/`: TypeScript and uPlot, every
//! npm package pinned by `console/package-lock.json`) type-checked by `tsc` and bundled by
//! esbuild into `target/console/` (`index.html`, `app.js`, `app.css`), with the browser
//! verifier page beside them as `verify.html`; `agent/build.rs` embeds that directory in the
//! agent. Files are rewritten only when their bytes change, so an unchanged console does not
//! rebuild the agent.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use crate::util::{repo_root, run as exec};

/// A copy of the lock file `npm ci` last installed, inside `node_modules`.
const INSTALLED_LOCK: &str = "node_modules/.knhk-installed-lock.json";

/// `npm ci` in `console/` unless `node_modules` was installed from the same lock file.
fn ensure_packages(dir: &Path) -> anyhow::Result<()> {
    let lock =
        std::fs::read(dir.join("package-lock.json")).context("read console/package-lock.json")?;
    let installed = std::fs::read(dir.join(INSTALLED_LOCK)).ok();
    let tools_present = ["tsc", "esbuild"]
        .iter()
        .all(|t| dir.join("node_modules/.bin").join(t).is_file());
    if installed.as_deref() == Some(lock.as_slice()) && tools_present {
        println!("setup: console/node_modules up to date (console/package-lock.json)");
        return Ok(());
    }
    let npm = crate::setup::which("npm").context("no npm on PATH: install Node.js")?;
    println!("setup: npm ci in console/ (console/package-lock.json)");
    exec(
        Command::new(npm)
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir),
    )?;
    std::fs::write(dir.join(INSTALLED_LOCK), &lock)
        .with_context(|| format!("write console/{INSTALLED_LOCK}"))?;
    Ok(())
}

/// Write `bytes` to `path` unless it already holds them.
fn write_if_changed(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if std::fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    std::fs::write(path, bytes).with_context(|| format!("write {}", path.display()))
}

/// Build the console (and, with `verifier`, place that page beside it); returns the directory.
pub fn build(verifier: Option<&Path>) -> anyhow::Result<PathBuf> {
    let source = repo_root().join("console");
    ensure_packages(&source)?;
    exec(
        Command::new(source.join("node_modules/.bin/tsc"))
            .args(["-p", "tsconfig.json"])
            .current_dir(&source),
    )?;
    let target = crate::wasm::target_dir()?;
    let staging = target.join("console-build");
    let _ = std::fs::remove_dir_all(&staging);
    exec(
        Command::new(source.join("node_modules/.bin/esbuild"))
            .args([
                "src/main.ts",
                "--bundle",
                "--minify",
                "--format=esm",
                "--target=es2020",
                "--legal-comments=none",
                // uPlot's notice does not use the `/*!` form esbuild keeps: MIT asks for it.
                "--banner:js=/* Includes uPlot (https://github.com/leeoniya/uPlot), Copyright (c) 2025 Leon Sorokin, MIT License. */",
                "--log-level=warning",
                "--entry-names=app",
            ])
            .arg(format!("--outdir={}", staging.display()))
            .current_dir(&source),
    )?;
    let dist = target.join("console");
    std::fs::create_dir_all(&dist).with_context(|| format!("create {}", dist.display()))?;
    let mut files = vec![
        ("index.html", source.join("index.html")),
        ("app.js", staging.join("app.js")),
        ("app.css", staging.join("app.css")),
    ];
    if let Some(page) = verifier {
        files.push(("verify.html", page.to_path_buf()));
    }
    let mut total = 0;
    for (name, from) in files {
        let bytes = std::fs::read(&from).with_context(|| format!("read {}", from.display()))?;
        total += bytes.len();
        write_if_changed(&dist.join(name), &bytes)?;
    }
    println!("console: {} ({} KiB)", dist.display(), total / 1024);
    Ok(dist)
}
