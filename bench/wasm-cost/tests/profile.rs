//! The shipped filter under the counting host: deterministic fuel, and the host calls per
//! request the design promises (docs/benchmarks.md, "Where knhk's per-request cost goes").
//! Needs the built module: `KNHK_WASM` (set by `cargo xtask test`); skipped without it unless
//! `KNHK_REQUIRE_REAL` is set.

use std::path::PathBuf;

use knhk_wasm_cost::{Cost, Settings, BENCH_CONFIG};

/// `knhk_wasm_cost::measure` on a thread with a large stack: the unoptimised interpreter of a
/// test build recurses deeper than the test harness's 2 MiB threads allow.
fn measure(wasm: &std::path::Path, settings: &Settings) -> anyhow::Result<Cost> {
    let (wasm, settings) = (wasm.to_path_buf(), settings.clone());
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || knhk_wasm_cost::measure(&wasm, &settings))?
        .join()
        .map_err(|_| anyhow::anyhow!("measurement thread panicked"))?
}

fn module() -> Option<PathBuf> {
    match std::env::var_os("KNHK_WASM").filter(|v| !v.is_empty()) {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            let required =
                std::env::var("KNHK_REQUIRE_REAL").is_ok_and(|v| !v.is_empty() && v != "0");
            assert!(!required, "KNHK_REQUIRE_REAL is set but KNHK_WASM is not");
            eprintln!("skipped: KNHK_WASM is not set");
            None
        }
    }
}

fn settings(config: &str) -> Settings {
    Settings {
        config: config.to_string(),
        requests: 1_000,
        warmup: 100,
        tick_every: 250,
    }
}

fn calls(cost: &Cost, name: &str) -> f64 {
    cost.calls_per_request.get(name).copied().unwrap_or(0.0)
}

/// Two runs of the same module and configuration count exactly the same fuel, and with the
/// bench configuration a request costs three header reads (the routing key, the class header,
/// and the absent flags header a client may not forge: issue 13), one header write and the
/// clock on a sample of requests (two reads per timed request: fewer than two per request,
/// at least two per eight; exactly two with `latency_sample_every: 1`) — no bulk header copy,
/// no stats call, no property read — and nothing is shed.
#[test]
fn bench_config_profile_is_deterministic_and_lean() {
    let Some(wasm) = module() else { return };
    let first = measure(&wasm, &settings(BENCH_CONFIG)).unwrap();
    let second = measure(&wasm, &settings(BENCH_CONFIG)).unwrap();
    assert_eq!(first, second, "fuel counts must not vary between runs");
    assert!(first.per_request > 1_000.0, "{first:?}");
    assert_eq!(first.local_replies, 0);
    assert_eq!(
        calls(&first, "proxy_get_header_map_value"),
        3.0,
        "{first:?}"
    );
    assert_eq!(
        calls(&first, "proxy_replace_header_map_value"),
        1.0,
        "{first:?}"
    );
    let clock = calls(&first, "proxy_get_current_time_nanoseconds");
    assert!(
        (0.25..2.0).contains(&clock),
        "clock reads per request: {clock}"
    );
    let every_request = BENCH_CONFIG.replace(
        r#""admission":{"enabled":true}"#,
        r#""admission":{"enabled":true,"latency_sample_every":1}"#,
    );
    assert_ne!(every_request, BENCH_CONFIG);
    let timed = measure(&wasm, &settings(&every_request)).unwrap();
    let clock = calls(&timed, "proxy_get_current_time_nanoseconds");
    assert!(
        (2.0..2.01).contains(&clock),
        "clock reads per request with every request timed: {clock}"
    );
    assert_eq!(
        calls(&first, "proxy_get_header_map_pairs"),
        0.0,
        "{first:?}"
    );
    assert_eq!(calls(&first, "proxy_get_property"), 0.0, "{first:?}");
    // Stats reach Envoy on the tick only: far less than one metric call per request.
    let metric_calls =
        calls(&first, "proxy_increment_metric") + calls(&first, "proxy_record_metric");
    assert!(
        metric_calls < 0.1,
        "metric calls per request: {metric_calls}"
    );
}

/// A configuration the filter refuses is reported as such, with the filter's log line.
#[test]
fn refused_configuration_is_an_error() {
    let Some(wasm) = module() else { return };
    let err = measure(
        &wasm,
        &settings(r#"{"routing":{"canary_basis_points":10001}}"#),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("refused the configuration"), "{err}");
    assert!(err.contains("routing.canary_basis_points"), "{err}");
}

/// The trace of the last request names its host calls in order, and its parts add up to about
/// one request's mean fuel (requests of the bench configuration all take the same path).
#[test]
fn last_request_trace_follows_the_host_calls() {
    let Some(wasm) = module() else { return };
    let cost = measure(&wasm, &settings(BENCH_CONFIG)).unwrap();
    let labels: Vec<&str> = cost.last_request.iter().map(|(l, _)| l.as_str()).collect();
    let reads = labels
        .iter()
        .filter(|l| **l == "request_headers → proxy_get_header_map_value")
        .count();
    assert_eq!(reads, 3, "{labels:#?}");
    let first_read = labels
        .iter()
        .position(|l| l.contains("proxy_get_header_map_value"));
    let write = labels
        .iter()
        .position(|l| l.contains("proxy_replace_header_map_value"));
    assert!(first_read < write, "{labels:#?}");
    assert_eq!(labels.last(), Some(&"done+delete → return"), "{labels:#?}");
    let total: u64 = cost.last_request.iter().map(|(_, f)| f).sum();
    let ratio = total as f64 / cost.per_request;
    assert!(
        (0.9..1.1).contains(&ratio),
        "trace {total} vs mean {}",
        cost.per_request
    );
}
