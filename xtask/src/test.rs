//! `cargo xtask test`: the one command CI and developers run; stops at the first failing step
//! (the two test runs, wasm and native filter, both run before it reports).

use crate::util::{cargo, run as exec};
use crate::{setup, wasm};
use std::time::{Duration, Instant};

/// Setup, build the filter, fmt check, clippy (native and wasm32), then `cargo test --workspace`
/// with the real Envoy, OpenBao and filter module (`KNHK_REQUIRE_REAL=1`: e2e tests fail, never
/// skip). Prints how long each step took, also when one fails.
pub fn run(cargo_test_args: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut timings = Timings::default();
    let outcome = steps(&mut timings, cargo_test_args);
    println!("\n==> timings");
    for (name, took) in &timings.0 {
        println!("  {name:<28} {:>8.1} s", took.as_secs_f64());
    }
    println!(
        "  {:<28} {:>8.1} s",
        "total",
        started.elapsed().as_secs_f64()
    );
    outcome
}

/// Duration of each step run so far.
#[derive(Default)]
struct Timings(Vec<(&'static str, Duration)>);

impl Timings {
    /// Run one named step, record its duration, and name it in its error.
    fn step<T>(
        &mut self,
        name: &'static str,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        println!("==> {name}");
        let t = Instant::now();
        let result = f();
        self.0.push((name, t.elapsed()));
        result.map_err(|e| e.context(format!("step `{name}` failed")))
    }
}

fn steps(timings: &mut Timings, cargo_test_args: &[String]) -> anyhow::Result<()> {
    let tools = timings.step("setup", setup::ensure)?;
    let k8s = timings.step("setup (istio/ checks)", setup::ensure_k8s_tools)?;
    let wasm_path = timings.step("build knhk_filter.wasm", || {
        wasm::build("knhk-filter", "knhk_filter")
    })?;
    let native_path = timings.step("build libknhk_filter.so", crate::native::build)?;
    let verifier_page = timings.step(
        "console and browser verifier: clippy (wasm32-unknown-unknown), wasm-bindgen, tsc, esbuild",
        || {
            exec(cargo().args([
                "clippy",
                "-p",
                "knhk-verifier-web",
                "--target",
                setup::WEB_TARGET,
                "--",
                "-D",
                "warnings",
            ]))?;
            let page = crate::verifier::build()?;
            crate::console::build(Some(&page))?;
            Ok(page)
        },
    )?;
    timings.step("cargo fmt --check", || {
        exec(cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    timings.step("import circles", || {
        crate::imports::run(&crate::util::repo_root())
    })?;
    timings.step("registry check", crate::registry::check)?;
    timings.step("clippy (native)", || {
        exec(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--features",
            "knhk-e2e/browser",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    timings.step("clippy (wasm32-wasip1)", || {
        exec(cargo().args([
            "clippy",
            "-p",
            "knhk-core",
            "-p",
            "knhk-filter",
            "-p",
            "knhk-empty-filter",
            "-p",
            "knhk-hostcall-probe",
            "--target",
            setup::WASM_TARGET,
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    let agent_path = timings.step("build knhk-agent", || {
        exec(cargo().args(["build", "-p", "knhk-agent", "--bin", "knhk-agent"]))?;
        Ok(crate::wasm::target_dir()?.join("debug").join("knhk-agent"))
    })?;
    let rotel = tools.rotel()?;
    let test_env = |command: &mut std::process::Command| {
        command
            .env("KNHK_ENVOY", &tools.envoy)
            .env("KNHK_ROTEL", &rotel)
            .env("KNHK_BAO", &tools.bao)
            .env("KNHK_MOTO", tools.venv.join("bin/moto_server"))
            .env("KNHK_WASM", &wasm_path)
            .env("KNHK_NATIVE", &native_path)
            .env("KNHK_AGENT", &agent_path)
            .env("KNHK_KUSTOMIZE", &k8s.kustomize)
            .env("KNHK_K8S_VALIDATE", &k8s.validator)
            .env("KNHK_VERIFIER_PAGE", &verifier_page)
            .env("KNHK_CHROMIUM", setup::CHROMIUM)
            .env("KNHK_CHROMEDRIVER", setup::CHROMEDRIVER)
            .env("KNHK_REQUIRE_REAL", "1");
    };
    let wasm_run = timings.step("cargo test --workspace (wasm filter)", || {
        let mut command = cargo();
        command
            .args(["test", "--workspace", "--no-fail-fast"])
            // The browser tests (the console's, in knhk-e2e, needs the feature).
            .args(["--features", "knhk-e2e/browser"])
            .args(cargo_test_args);
        test_env(&mut command);
        exec(&mut command)
    });
    // The end-to-end suite again, every test body against the dynamic module
    // (KNHK_FILTER_HOST=native), also when the wasm run failed, so one run reports both.
    let native_run = timings.step("cargo test -p knhk-e2e (native filter)", || {
        let mut command = cargo();
        command
            .args(["test", "-p", "knhk-e2e", "--no-fail-fast"])
            .args(cargo_test_args)
            .env("KNHK_FILTER_HOST", "native");
        test_env(&mut command);
        exec(&mut command)
    });
    wasm_run.and(native_run)
}
