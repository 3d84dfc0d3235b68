//! `cargo xtask bench-wasm-cost`: wasm instructions per request of `knhk_filter.wasm`, counted
//! (wasmi fuel) instead of timed, so that a change of a few hundred instructions shows on a
//! noisy shared machine. Builds the shipped module and runs `knhk-wasm-cost` (`bench/wasm-cost`)
//! on it, followed by any other modules given for comparison.

use std::path::PathBuf;

use crate::util::{cargo, run};

/// Arguments of `cargo xtask bench-wasm-cost`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Further modules measured after the shipped one, each compared with it (A/B of a build).
    #[arg(long = "wasm")]
    pub others: Vec<PathBuf>,
    /// Arguments for `knhk-wasm-cost` itself (after `--`), e.g. `--config '{…}' --requests 5000`.
    #[arg(last = true)]
    pub tool_args: Vec<String>,
}

/// Build the module and the tool, then run it.
pub fn run_cost(args: &Args) -> anyhow::Result<()> {
    crate::setup::ensure()?;
    let shipped = crate::wasm::build("knhk-filter", "knhk_filter")?;
    let mut cmd = cargo();
    cmd.args(["run", "--quiet", "--release", "-p", "knhk-wasm-cost", "--"])
        .env("CARGO_PROFILE_RELEASE_LTO", "false")
        .arg("--wasm")
        .arg(&shipped);
    for other in &args.others {
        cmd.arg("--wasm").arg(other);
    }
    cmd.args(&args.tool_args);
    run(&mut cmd)
}
