//! `knhk-agent rollout status` as text: gate, weights, analysis figures and history, from the
//! JSON of `GET /v1/rollouts/current`.

use std::fmt::Write as _;

use serde_json::Value;

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.0}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn version_line(out: &mut String, name: &str, f: &Value) {
    let _ = writeln!(
        out,
        "  {name:<9} samples {:>7}  errors {:>6}  success {:>7.4}  p50 {:>8.1} ms  p99 {:>8.1} ms",
        f["samples"].as_u64().unwrap_or(0),
        f["errors"].as_u64().unwrap_or(0),
        f["success_rate"].as_f64().unwrap_or(1.0),
        f["p50_ms"].as_f64().unwrap_or(0.0),
        f["p99_ms"].as_f64().unwrap_or(0.0),
    );
}

/// Render a status document for a terminal.
pub fn render(status: &Value) -> String {
    let spec = &status["spec"];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rollout {}: {} -> {}  [{} in {}]",
        text(&spec["id"]),
        text(&spec["stable"]),
        text(&spec["candidate"]),
        text(&status["phase"]),
        text(&status["gate"]),
    );
    let steps: Vec<String> = spec["steps"]
        .as_array()
        .map(|s| s.iter().map(|x| format!("{}%", text(x))).collect())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  canary weight {}% (step {} of [{}]); stable traffic served by {}",
        text(&status["canary_percent"]),
        status["step"].as_u64().unwrap_or(0) + 1,
        steps.join(", "),
        text(&status["serving_stable"]),
    );
    if let Some(reason) = status["reason"].as_str() {
        let _ = writeln!(out, "  reason: {reason}");
    }
    let a = &status["analysis"];
    let _ = writeln!(
        out,
        "analysis: every {} ms over {} ms; promote after {} ms passing; min samples {}; min success {}; max p99 {} ms; max p99 ratio {}; min health {}; rollback after {} failures",
        text(&a["interval_ms"]),
        text(&a["window_ms"]),
        text(&a["pass_for_ms"]),
        text(&a["min_samples"]),
        text(&a["min_success_rate"]),
        text(&a["max_p99_ms"]),
        text(&a["max_p99_ratio"]),
        text(&a["min_health"]),
        text(&a["failure_threshold"]),
    );
    if let Some(f) = status["figures"].as_object() {
        version_line(&mut out, "stable", &f["stable"]);
        version_line(&mut out, "candidate", &f["candidate"]);
    }
    let v = &status["verdict"];
    if !v.is_null() {
        let detail = match v["verdict"].as_str() {
            Some("fail") => v["reasons"]
                .as_array()
                .map(|r| r.iter().map(text).collect::<Vec<_>>().join("; "))
                .unwrap_or_default(),
            Some("inconclusive") => text(&v["reason"]),
            _ => format!("health {}", text(&v["health"])),
        };
        let _ = writeln!(
            out,
            "  verdict: {} ({detail}); {} evaluation(s), {} failure(s) in a row, passing for {} ms",
            text(&v["verdict"]),
            text(&status["evaluations"]),
            text(&status["consecutive_failures"]),
            text(&status["passing_for_ms"]),
        );
    }
    let _ = writeln!(out, "history:");
    for h in status["history"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {:<13} {:>10} -> {:<10} weight {:>5} bp  epoch {:>4}  leaf {:>8}  {}",
            text(&h["action"]),
            text(&h["from"]),
            text(&h["to"]),
            text(&h["canary_basis_points"]),
            text(&h["epoch"]),
            text(&h["leaf_index"]),
            text(&h["cause"]),
        );
    }
    out
}
