//! The printed results and `results.json`: instructions per request by subject and mode with
//! their split, each knhk build's instruction ratios against its baselines and goals, and the
//! probe's per-call costs.

use super::session::{Idle, ModeRun, Plan, SubjectRun};
use super::split::{Category, Split};
use super::Subject;
use crate::bench::report::goal_target;
use crate::bench::{Mode, Variant};
use anyhow::Context;
use serde_json::{json, Value};
use std::path::Path;

/// One subject's figures in one mode, per request.
#[derive(Debug, Clone, PartialEq)]
struct Figures {
    /// Batch 1 and batch 2.
    batches: [f64; 2],
    /// Mean of the batches.
    mean: f64,
    /// |batch 1 − batch 2| ÷ mean, percent.
    spread_percent: f64,
    /// Both batches' split, per request.
    split: [f64; 5],
    /// Every dump's self costs added up to its totals.
    consistent: bool,
    /// Net of idle work: what Envoy executed per second without requests, taken out of each
    /// batch for the batch's wall time (`None` without an idle period).
    net: Option<Net>,
}

/// Figures net of idle work.
#[derive(Debug, Clone, PartialEq)]
struct Net {
    /// Idle instructions per second.
    idle_per_second: f64,
    /// Mean of the two batches, each net of idle work, per request.
    mean: f64,
    /// Spread of the net batches, percent.
    spread_percent: f64,
}

impl Figures {
    fn of(run: &ModeRun, idle: Option<&Idle>, requests: u32) -> Figures {
        let n = f64::from(requests);
        let batches = run.batches.each_ref().map(|b| b.totals as f64 / n);
        let split: Split = run.batches[0].split.plus(&run.batches[1].split);
        let net = idle.map(|idle| {
            let rate = idle.per_second();
            let net = run
                .batches
                .each_ref()
                .map(|b| (b.totals as f64 - rate * b.window_seconds) / n);
            Net {
                idle_per_second: rate,
                mean: (net[0] + net[1]) / 2.0,
                spread_percent: spread_percent(net),
            }
        });
        Figures {
            batches,
            mean: (batches[0] + batches[1]) / 2.0,
            spread_percent: spread_percent(batches),
            split: split.0.map(|x| x as f64 / (2.0 * n)),
            consistent: run.batches.iter().all(|b| b.self_total == b.totals),
            net,
        }
    }
}

/// |a − b| ÷ their mean, percent (0 for a zero mean).
fn spread_percent([a, b]: [f64; 2]) -> f64 {
    let mean = (a + b) / 2.0;
    if mean > 0.0 {
        (a - b).abs() / mean * 100.0
    } else {
        0.0
    }
}

/// The figures of every subject that ran `mode`, in subject order.
fn figures(mode: Mode, runs: &[SubjectRun], requests: u32) -> Vec<(&Subject, Figures)> {
    runs.iter()
        .filter_map(|r| {
            let m = r.modes.iter().find(|m| m.mode == mode)?;
            Some((&r.subject, Figures::of(m, r.idle.as_ref(), requests)))
        })
        .collect()
}

/// Print `mode`'s table, knhk's ratios and the probe's per-call costs.
pub fn print_mode(mode: Mode, runs: &[SubjectRun], plan: &Plan) {
    let rows = figures(mode, runs, plan.requests);
    if rows.is_empty() {
        return;
    }
    println!();
    println!(
        "{} mode (GET {}, {} headers): x86 instructions per request, counted by callgrind",
        mode.name(),
        mode.path(),
        plan.headers.name()
    );
    let categories: Vec<String> = Category::ALL
        .iter()
        .map(|c| format!("{:>9}", c.name()))
        .collect();
    println!(
        "  {:<14} {:>9} {:>9} {:>7} {:>9} | {:>8} {:>9} {:>7} | {}",
        "variant",
        "batch 1",
        "batch 2",
        "spread",
        "mean",
        "idle/s",
        "net",
        "spread",
        categories.join("")
    );
    for (subject, f) in &rows {
        println!("  {:<14} {}", subject.name(), row(f));
    }
    println!(
        "  net: each batch less the idle instructions/s (Envoy's timers, the filter's on_tick) times its wall time;"
    );
    println!(
        "  under callgrind a request lasts ~50× longer than natively, so time-driven work weighs ~50× more in `mean`."
    );
    println!("  split: K instructions/request over both batches, idle work included.");
    if rows.iter().any(|(_, f)| !f.consistent) {
        println!(
            "  (*) the dump's self costs do not add up to its totals: the split is approximate"
        );
    }
    print_ratios(mode, &rows);
    print_probes(&rows);
}

/// The columns after the name.
fn row(f: &Figures) -> String {
    let split: Vec<String> = f
        .split
        .iter()
        .map(|x| format!("{:>9.1}", x / 1000.0))
        .collect();
    let net = match &f.net {
        Some(n) => format!(
            "{:>7.1}K {:>9.0} {:>6.2}%",
            n.idle_per_second / 1000.0,
            n.mean,
            n.spread_percent
        ),
        None => format!("{:>8} {:>9} {:>7}", "-", "-", "-"),
    };
    format!(
        "{:>9.0} {:>9.0} {:>6.2}% {:>9.0} | {net} | {}{}",
        f.batches[0],
        f.batches[1],
        f.spread_percent,
        f.mean,
        split.join(""),
        if f.consistent { "" } else { "  (*)" }
    )
}

impl Figures {
    /// Net of idle work when measured, else the mean.
    fn best(&self) -> f64 {
        self.net.as_ref().map_or(self.mean, |n| n.mean)
    }
}

/// Issue 15's bound on the wasm build over the routing floor (the probe `gs`): at most 5 % more
/// instructions per request.
pub const WASM_OVER_FLOOR_MAX: f64 = 1.05;
/// The probe that is the routing floor: read the key header, set the route header.
pub const FLOOR_PROBE: &str = "gs";
/// Issue 15's bound on what receipts and config polling add to the wasm build per request: one
/// present-header read (the `:status`, ≈ 11.7 K instructions on the probe) plus 2 K.
pub const WASM_AGENT_EXTRA_MAX: f64 = 11_700.0 + 2_000.0;

/// Each knhk variant ÷ each of its baselines as throughput equivalents, with the goals (judged
/// net of idle work when measured); then the wasm build against the routing floor and the
/// wasm build's agent overhead in instructions.
fn print_ratios(mode: Mode, rows: &[(&Subject, Figures)]) {
    let find = |subject: &Subject| rows.iter().find(|(s, _)| *s == subject).map(|(_, f)| f);
    let variant = |v: Variant| find(&Subject::Variant(v));
    let mut lines = Vec::new();
    for subject in Variant::ALL.into_iter().filter(|v| v.loads_knhk()) {
        let Some(knhk) = variant(subject) else {
            continue;
        };
        for &baseline in subject.baselines() {
            let Some(base) = variant(baseline) else {
                continue;
            };
            let ratio = base.mean / knhk.mean;
            let net = base.best() / knhk.best();
            let goal = match goal_target(subject, baseline, mode) {
                Some(t) if net >= t => format!("goal ≥ {t:.3}: met"),
                Some(t) => format!("goal ≥ {t:.3}: not met"),
                None => format!("no goal in {} mode", mode.name()),
            };
            lines.push(format!(
                "    {:<17} ÷ {:<17} {ratio:.3}   net {net:.3}   ({goal})",
                subject.name(),
                baseline.name()
            ));
        }
    }
    if let (Some(knhk), Some(floor)) = (
        variant(Variant::Knhk),
        find(&Subject::Probe(FLOOR_PROBE.to_string())),
    ) {
        let over = knhk.best() / floor.best();
        let verdict = if over <= WASM_OVER_FLOOR_MAX {
            "met"
        } else {
            "not met"
        };
        lines.push(format!(
            "    knhk over the routing floor (probe:{FLOOR_PROBE}): {over:.3} × net, {:+.1} K (goal ≤ {WASM_OVER_FLOOR_MAX:.2} ×: {verdict})",
            (knhk.best() - floor.best()) / 1000.0
        ));
    }
    if let (Some(with), Some(without)) = (variant(Variant::KnhkAgent), variant(Variant::Knhk)) {
        let extra = with.best() - without.best();
        let verdict = if extra <= WASM_AGENT_EXTRA_MAX {
            "met"
        } else {
            "not met"
        };
        lines.push(format!(
            "    knhk-agent − knhk: {:+.1} K instructions net (goal ≤ +{:.1} K: {verdict})",
            extra / 1000.0,
            WASM_AGENT_EXTRA_MAX / 1000.0
        ));
    }
    if lines.is_empty() {
        return;
    }
    println!(
        "  throughput equivalents, instr(baseline) ÷ instr(subject) — an instruction ratio, not time:"
    );
    for line in lines {
        println!("{line}");
    }
}

/// Per-call costs of the probes: (probe:OPS − probe:) ÷ number of ops.
fn print_probes(rows: &[(&Subject, Figures)]) {
    let Some(base) = rows
        .iter()
        .find(|(s, _)| **s == Subject::Probe(String::new()))
        .map(|(_, f)| f.best())
    else {
        return;
    };
    let probes: Vec<(&String, f64)> = rows
        .iter()
        .filter_map(|(s, f)| match s {
            Subject::Probe(ops) if !ops.is_empty() => Some((ops, f.best())),
            _ => None,
        })
        .collect();
    if probes.is_empty() {
        return;
    }
    println!(
        "  host calls, (instr(probe:OPS) − instr(probe:)) ÷ ops, net of idle work when measured:"
    );
    for (ops, mean) in probes {
        let extra = mean - base;
        let count = ops.chars().count() as f64;
        println!(
            "    probe:{ops:<10} {extra:>+9.0} instructions, {:>7.0} per op",
            extra / count
        );
    }
}

/// Write the figures of every subject and mode as JSON to `path`.
pub fn write_json(path: &Path, date: &str, runs: &[SubjectRun], plan: &Plan) -> anyhow::Result<()> {
    let subjects: Vec<Value> = runs
        .iter()
        .map(|run| {
            let modes: Vec<Value> = run
                .modes
                .iter()
                .map(|m| {
                    let f = Figures::of(m, run.idle.as_ref(), plan.requests);
                    let split: serde_json::Map<String, Value> = Category::ALL
                        .iter()
                        .zip(f.split)
                        .map(|(c, x)| (c.name().to_string(), json!(x)))
                        .collect();
                    json!({
                        "mode": m.mode.name(),
                        "instructions_per_request": f.mean,
                        "batches": m.batches.iter().map(|b| json!({
                            "totals": b.totals,
                            "self_total": b.self_total,
                            "window_seconds": b.window_seconds,
                        })).collect::<Vec<_>>(),
                        "batches_per_request": f.batches,
                        "spread_percent": f.spread_percent,
                        "net_of_idle_per_request": f.net.as_ref().map(|n| n.mean),
                        "net_spread_percent": f.net.as_ref().map(|n| n.spread_percent),
                        "split_per_request": split,
                    })
                })
                .collect();
            json!({
                "subject": run.subject.name(),
                "startup_seconds": run.startup_seconds,
                "seconds": run.seconds,
                "idle": run.idle.as_ref().map(|i| json!({
                    "totals": i.totals,
                    "window_seconds": i.window_seconds,
                    "instructions_per_second": i.per_second(),
                })),
                "modes": modes,
            })
        })
        .collect();
    let record = json!({
        "date": date,
        "warmup": plan.warmup,
        "requests_per_batch": plan.requests,
        "headers": plan.headers.name(),
        "subjects": subjects,
    });
    std::fs::write(path, serde_json::to_string_pretty(&record)?)
        .with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::super::session::Batch;
    use super::*;

    fn batch(totals: u64, split: [u64; 5], window_seconds: f64) -> Batch {
        Batch {
            totals,
            split: Split(split),
            self_total: split.iter().sum(),
            window_seconds,
        }
    }

    /// Per-request figures: each batch ÷ requests, spread against the mean, split over both batches.
    #[test]
    fn figures_per_request() {
        let run = ModeRun {
            mode: Mode::Direct,
            batches: [
                batch(101_000, [80_000, 10_000, 1_000, 10_000, 0], 2.0),
                batch(99_000, [79_000, 10_000, 0, 10_000, 0], 1.0),
            ],
        };
        let f = Figures::of(&run, None, 10);
        assert_eq!(f.batches, [10_100.0, 9_900.0]);
        assert_eq!(f.mean, 10_000.0);
        assert!((f.spread_percent - 2.0).abs() < 1e-9);
        assert_eq!(f.split, [7_950.0, 1_000.0, 50.0, 1_000.0, 0.0]);
        assert!(f.consistent);
        assert_eq!(f.net, None);
        let mut odd = run.clone();
        odd.batches[0].self_total -= 1;
        assert!(!Figures::of(&odd, None, 10).consistent);
    }

    /// Net of idle work: each batch less the idle rate times its own wall time.
    #[test]
    fn net_of_idle_work() {
        let run = ModeRun {
            mode: Mode::Proxy,
            batches: [batch(102_000, [0; 5], 2.0), batch(101_000, [0; 5], 1.0)],
        };
        let idle = Idle {
            totals: 5_000,
            window_seconds: 5.0,
        };
        let f = Figures::of(&run, Some(&idle), 10);
        let net = f.net.clone().unwrap();
        assert_eq!(net.idle_per_second, 1_000.0);
        assert_eq!(net.mean, 10_000.0);
        assert_eq!(net.spread_percent, 0.0);
        assert_eq!(f.best(), 10_000.0);
    }
}
