//! `cargo xtask registry check`: the telemetry registry under `registry/` is well-formed
//! (every rule is in `knhk_e2e::registry`) and every Grafana dashboard under
//! `registry/grafana/` queries declared metrics; prints what it declares, or every problem.

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

/// Every problem of the Grafana dashboards (`*.json`) under `dir`.
fn dashboards(registry: &knhk_e2e::registry::Registry, dir: &std::path::Path) -> Vec<String> {
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![format!("{}: no dashboards directory", dir.display())];
    };
    for path in entries.flatten().map(|e| e.path()) {
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let name = path.display().to_string();
        match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        {
            Ok(dashboard) => problems.extend(knhk_e2e::registry::check_dashboard(
                registry, &name, &dashboard,
            )),
            Err(e) => problems.push(format!("{name}: not JSON: {e}")),
        }
    }
    problems
}

/// Check `registry/` and its dashboards, printing a one-line summary or every problem.
pub fn check() -> anyhow::Result<()> {
    let dir = repo_root().join("registry");
    match knhk_e2e::registry::load(&dir).and_then(|registry| {
        let problems = dashboards(&registry, &dir.join("grafana"));
        if problems.is_empty() {
            Ok(registry)
        } else {
            Err(problems)
        }
    }) {
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
