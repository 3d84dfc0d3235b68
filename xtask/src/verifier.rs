//! `cargo xtask build-verifier`: the browser verifier as one self-contained, offline HTML page,
//! `target/dist/knhk-verify.html`: `verifier-web` built for `wasm32-unknown-unknown`, its
//! JavaScript glue made by `wasm-bindgen` (the CLI at exactly the crate's version, installed by
//! setup into `.knhk/wasm-bindgen-<version>`), and both inlined into `verifier-web/page/
//! verify.html` (the module as base64), so a saved copy works without a network or a server.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use base64::Engine as _;

use crate::setup::WEB_TARGET;
use crate::util::{cargo, repo_root, run as exec};

/// The crate's `wasm-bindgen` version, from `Cargo.lock`.
pub fn wasm_bindgen_version() -> anyhow::Result<String> {
    let lock =
        std::fs::read_to_string(repo_root().join("Cargo.lock")).context("read Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wasm-bindgen\"" {
            let version = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = \""))
                .and_then(|v| v.strip_suffix('"'))
                .context("Cargo.lock: no version after wasm-bindgen")?;
            return Ok(version.to_owned());
        }
    }
    anyhow::bail!("Cargo.lock has no wasm-bindgen package")
}

/// `wasm-bindgen` at `version` under `.knhk/`, installed with `cargo install` when missing.
pub fn ensure_wasm_bindgen(version: &str) -> anyhow::Result<PathBuf> {
    let root = repo_root().join(format!(".knhk/wasm-bindgen-{version}"));
    let binary = root.join("bin/wasm-bindgen");
    let installed = Command::new(&binary)
        .arg("--version")
        .output()
        .ok()
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(version));
    if installed {
        println!("setup: wasm-bindgen {version} present");
        return Ok(binary);
    }
    println!(
        "setup: cargo install wasm-bindgen-cli {version} into {}",
        root.display()
    );
    // Not --locked: its lock file names dependency versions this registry may not serve.
    exec(
        cargo()
            .args(["install", "wasm-bindgen-cli", "--version"])
            .arg(format!("={version}"))
            .arg("--root")
            .arg(&root),
    )?;
    Ok(binary)
}

fn inline(template: &str, glue: &str, wasm: &[u8]) -> anyhow::Result<String> {
    anyhow::ensure!(
        !glue.contains("</script"),
        "the wasm-bindgen glue contains </script and cannot be inlined"
    );
    let with_glue = template.replacen("/*KNHK_GLUE*/", glue, 1);
    anyhow::ensure!(
        with_glue != template,
        "the page template has no /*KNHK_GLUE*/ slot"
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(wasm);
    let page = with_glue.replacen("KNHK_WASM_BASE64", &b64, 1);
    anyhow::ensure!(
        page != with_glue,
        "the page template has no KNHK_WASM_BASE64 slot"
    );
    Ok(page)
}

/// Build the page; returns its path.
pub fn build() -> anyhow::Result<PathBuf> {
    let version = wasm_bindgen_version()?;
    let bindgen = ensure_wasm_bindgen(&version)?;
    // Unstripped, so wasm-bindgen can read the module's feature section.
    exec(
        cargo()
            .args([
                "build",
                "-p",
                "knhk-verifier-web",
                "--release",
                "--target",
                WEB_TARGET,
            ])
            .env("CARGO_PROFILE_RELEASE_STRIP", "false"),
    )?;
    let target = crate::wasm::target_dir()?;
    let module = target
        .join(WEB_TARGET)
        .join("release/knhk_verifier_web.wasm");
    let out = target.join("verifier-web");
    exec(
        Command::new(&bindgen)
            .arg(&module)
            .args(["--target", "web", "--no-typescript", "--out-dir"])
            .arg(&out),
    )?;
    let glue = read(&out.join("knhk_verifier_web.js"))?;
    let wasm =
        std::fs::read(out.join("knhk_verifier_web_bg.wasm")).context("read the bound module")?;
    let template = read(&repo_root().join("verifier-web/page/verify.html"))?;
    let page = inline(&template, &glue, &wasm)?;
    let dist = target.join("dist");
    std::fs::create_dir_all(&dist)?;
    let path = dist.join("knhk-verify.html");
    std::fs::write(&path, page).with_context(|| format!("write {}", path.display()))?;
    println!(
        "verifier: {} ({} KiB)",
        path.display(),
        std::fs::metadata(&path)?.len() / 1024
    );
    Ok(path)
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_takes_the_glue_and_the_module_or_says_why_not() {
        let page = inline(
            "<script>/*KNHK_GLUE*/ const W = \"KNHK_WASM_BASE64\";</script>",
            "export function f() {}",
            b"\0asm",
        )
        .unwrap();
        assert_eq!(
            page,
            "<script>export function f() {} const W = \"AGFzbQ==\";</script>"
        );
        assert!(inline("no slots", "x", b"").is_err());
        assert!(inline("/*KNHK_GLUE*/", "</script>", b"").is_err());
        assert!(wasm_bindgen_version().unwrap().starts_with("0.2."));
    }
}
