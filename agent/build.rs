//! Embeds the operator console's built assets in the agent: `index.html`, `app.js`,
//! `app.css` and, when present, the browser verifier `verify.html`, from the directory
//! `cargo xtask build-console` writes (`console` in the target directory, or
//! `KNHK_CONSOLE_DIST`). Without them the agent builds and serves a page that says how to
//! build the console.

use std::path::{Path, PathBuf};

/// The console's files, each as (file name, constant name).
const REQUIRED: [(&str, &str); 3] = [
    ("index.html", "INDEX_HTML"),
    ("app.js", "APP_JS"),
    ("app.css", "APP_CSS"),
];

fn constant(name: &str, file: Option<&Path>) -> String {
    match file {
        Some(path) => format!(
            "/// Embedded from `{}`.\npub const {name}: Option<&[u8]> = Some(include_bytes!({:?}));\n",
            path.display(),
            path.display().to_string()
        ),
        None => format!("/// Not built into this binary.\npub const {name}: Option<&[u8]> = None;\n"),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-env-changed=KNHK_CONSOLE_DIST");
    println!("cargo:rerun-if-changed=build.rs");
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").ok_or("no CARGO_MANIFEST_DIR")?);
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let workspace = manifest.join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| workspace.join("target"), |d| workspace.join(d));
    let dist = std::env::var_os("KNHK_CONSOLE_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| target.join("console"));
    let dist = dist.canonicalize().unwrap_or(dist);
    // A missing directory makes cargo run this again on every build, so building the console
    // later is noticed; a present one is watched file by file.
    println!("cargo:rerun-if-changed={}", dist.display());
    let built = REQUIRED.iter().all(|(file, _)| dist.join(file).is_file());
    let mut out = String::new();
    for (file, name) in REQUIRED {
        let path = dist.join(file);
        out.push_str(&constant(name, built.then_some(path.as_path())));
    }
    let verifier = dist.join("verify.html");
    out.push_str(&constant(
        "VERIFIER",
        verifier.is_file().then_some(verifier.as_path()),
    ));
    if !built {
        println!(
            "cargo:warning=the console is not built into this agent ({} has no index.html, app.js, app.css): run `cargo xtask build-console`",
            dist.display()
        );
    }
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("no OUT_DIR")?);
    std::fs::write(out_dir.join("console_assets.rs"), out)?;
    Ok(())
}
