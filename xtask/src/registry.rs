//! `cargo xtask registry check`: the telemetry registry under `registry/` is well-formed
//! (every rule is in `knhk_e2e::registry`); prints what it declares, or every problem.

use anyhow::bail;

use crate::util::repo_root;

/// What `cargo xtask registry` does.
#[derive(Debug, clap::Subcommand)]
pub enum RegistryCmd {
    /// Check the registry: unique ids, known types, instruments and units, stability set,
    /// every referenced attribute defined, Envoy stat patterns over enum attributes.
    Check,
}

/// Run a registry subcommand.
pub fn run(cmd: &RegistryCmd) -> anyhow::Result<()> {
    match cmd {
        RegistryCmd::Check => check(),
    }
}

/// Check `registry/`, printing a one-line summary or every problem.
pub fn check() -> anyhow::Result<()> {
    let dir = repo_root().join("registry");
    match knhk_e2e::registry::load(&dir) {
        Ok(registry) => {
            let count = |kind: &str| registry.groups.iter().filter(|g| g.kind == kind).count();
            println!(
                "registry: {} metrics, {} spans, {} events, {} attributes; {} Envoy stats declared",
                count("metric"),
                count("span"),
                count("event"),
                registry.attributes.len(),
                registry.envoy_stats().len()
            );
            Ok(())
        }
        Err(problems) => {
            for p in &problems {
                eprintln!("registry: {p}");
            }
            bail!(
                "registry check: {} problem(s) in {}",
                problems.len(),
                dir.display()
            )
        }
    }
}
