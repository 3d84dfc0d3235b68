//! The printed results and `results.json`: instructions per request by subject and mode with
//! their split, knhk's instruction ratios against the baselines, and the probe's per-call costs.

use super::session::{ModeRun, Plan, SubjectRun};
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
}

impl Figures {
    fn of(run: &ModeRun, requests: u32) -> Figures {
        let n = f64::from(requests);
        let batches = run.batches.each_ref().map(|b| b.totals as f64 / n);
        let mean = (batches[0] + batches[1]) / 2.0;
        let split: Split = run.batches[0].split.plus(&run.batches[1].split);
        Figures {
            batches,
            mean,
            spread_percent: if mean > 0.0 {
                (batches[0] - batches[1]).abs() / mean * 100.0
            } else {
                0.0
            },
            split: split.0.map(|x| x as f64 / (2.0 * n)),
            consistent: run.batches.iter().all(|b| b.self_total == b.totals),
        }
    }
}

/// The figures of every subject that ran `mode`, in subject order.
fn figures(mode: Mode, runs: &[SubjectRun], requests: u32) -> Vec<(&Subject, Figures)> {
    runs.iter()
        .filter_map(|r| {
            let m = r.modes.iter().find(|m| m.mode == mode)?;
            Some((&r.subject, Figures::of(m, requests)))
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
        "  {:<14} {:>9} {:>9} {:>7} | {}   (split: K instructions/request)",
        "variant",
        "batch 1",
        "batch 2",
        "spread",
        categories.join("")
    );
    for (subject, f) in &rows {
        let split: Vec<String> = f
            .split
            .iter()
            .map(|x| format!("{:>9.1}", x / 1000.0))
            .collect();
        println!(
            "  {:<14} {:>9.0} {:>9.0} {:>6.2}% | {}{}",
            subject.name(),
            f.batches[0],
            f.batches[1],
            f.spread_percent,
            split.join(""),
            if f.consistent { "" } else { "  (*)" }
        );
    }
    if rows.iter().any(|(_, f)| !f.consistent) {
        println!(
            "  (*) the dump's self costs do not add up to its totals: the split is approximate"
        );
    }
    print_ratios(mode, &rows);
    print_probes(&rows);
}

/// knhk ÷ each baseline as throughput equivalents, with the goals.
fn print_ratios(mode: Mode, rows: &[(&Subject, Figures)]) {
    let mean = |v: Variant| {
        rows.iter()
            .find(|(s, _)| **s == Subject::Variant(v))
            .map(|(_, f)| f.mean)
    };
    let Some(knhk) = mean(Variant::Knhk) else {
        return;
    };
    let lines: Vec<String> = Variant::Knhk
        .baselines()
        .iter()
        .filter_map(|&baseline| {
            let ratio = mean(baseline)? / knhk;
            let goal = match goal_target(baseline, mode) {
                Some(t) if ratio >= t => format!("goal ≥ {t:.2}: met"),
                Some(t) => format!("goal ≥ {t:.2}: not met"),
                None => format!("no goal in {} mode", mode.name()),
            };
            Some(format!(
                "    knhk ÷ {:<6} {ratio:.3}   ({goal})",
                baseline.name()
            ))
        })
        .collect();
    if lines.is_empty() {
        return;
    }
    println!(
        "  throughput equivalents, instr(baseline) ÷ instr(knhk) — an instruction ratio, not time:"
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
        .map(|(_, f)| f.mean)
    else {
        return;
    };
    let probes: Vec<(&String, f64)> = rows
        .iter()
        .filter_map(|(s, f)| match s {
            Subject::Probe(ops) if !ops.is_empty() => Some((ops, f.mean)),
            _ => None,
        })
        .collect();
    if probes.is_empty() {
        return;
    }
    println!("  host calls, (instr(probe:OPS) − instr(probe:)) ÷ ops:");
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
                    let f = Figures::of(m, plan.requests);
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
                            "seconds": b.seconds,
                        })).collect::<Vec<_>>(),
                        "batches_per_request": f.batches,
                        "spread_percent": f.spread_percent,
                        "split_per_request": split,
                    })
                })
                .collect();
            json!({
                "subject": run.subject.name(),
                "startup_seconds": run.startup_seconds,
                "seconds": run.seconds,
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

    fn batch(totals: u64, split: [u64; 5]) -> Batch {
        Batch {
            totals,
            split: Split(split),
            self_total: split.iter().sum(),
            seconds: 1.0,
        }
    }

    /// Per-request figures: each batch ÷ requests, spread against the mean, split over both batches.
    #[test]
    fn figures_per_request() {
        let run = ModeRun {
            mode: Mode::Direct,
            batches: [
                batch(101_000, [80_000, 10_000, 1_000, 10_000, 0]),
                batch(99_000, [79_000, 10_000, 0, 10_000, 0]),
            ],
        };
        let f = Figures::of(&run, 10);
        assert_eq!(f.batches, [10_100.0, 9_900.0]);
        assert_eq!(f.mean, 10_000.0);
        assert!((f.spread_percent - 2.0).abs() < 1e-9);
        assert_eq!(f.split, [7_950.0, 1_000.0, 50.0, 1_000.0, 0.0]);
        assert!(f.consistent);
        let mut odd = run.clone();
        odd.batches[0].self_total -= 1;
        assert!(!Figures::of(&odd, 10).consistent);
    }
}
