//! The capacity analysis end to end on synthetic receipts: a simulated service of known
//! capacity under rising load, Zipf and uniform keys, a constant load.

use super::report::Model;
use super::simulation::{Rng, Servers};
use super::*;
use knhk_core::receipt::ReceiptBuilder;

const SECOND: u64 = 1_000_000_000;
const T0: u64 = 1_800_000_000 * SECOND;
/// The agent's clock in these tests: after every receipt.
const LATER: u64 = T0 + 86_400 * SECOND;

fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&(i + 1).to_le_bytes());
    k
}

fn capacity() -> Capacity {
    Capacity::new(CapacityConfig {
        window: Duration::from_secs(10),
        horizon: Duration::from_secs(600),
        top_keys: 10,
        sketch_counters: 1024,
    })
}

/// Receipts of `c` servers with constant service `service_s` under Poisson arrivals, the rate
/// rising window by window through `rates`; W1 on stable.
fn simulated(c: usize, service_s: f64, rates: &[f64], rng: &mut Rng) -> Vec<Receipt> {
    let mut out = Vec::new();
    let mut servers = Servers::new(c, service_s);
    let mut t = 0.0;
    for (w, &rate) in rates.iter().enumerate() {
        let end = (w + 1) as f64 * 10.0;
        loop {
            t += rng.exp(rate);
            if t >= end {
                t = end;
                break;
            }
            let latency_us = (servers.serve(t) * 1e6) as u32;
            out.push(
                ReceiptBuilder::new(out.len() as u64)
                    .time_ns(T0 + (t * 1e9) as u64)
                    .route(Some(Route::Stable))
                    .class(Class::W1)
                    .latency_us(latency_us)
                    .key_digest(key(rng.next_u64() % 100_000))
                    .build(),
            );
        }
    }
    out
}

/// A service of 8 servers × 20 ms (saturation 400 req/s) at rising load: the report finds the
/// saturation rate within ±20 %, the budget rate below it, a rising trend, and the headroom
/// falls as the load rises.
#[test]
fn a_known_capacity_is_found_from_receipts_and_headroom_falls_with_load() {
    let mut rng = Rng(7);
    let rates: Vec<f64> = (1..=14).map(|i| 25.0 * f64::from(i)).collect();
    let receipts = simulated(8, 0.020, &rates, &mut rng);
    let cap = capacity();
    let mut headrooms = Vec::new();
    for (i, chunk) in receipts
        .chunk_by(|a, b| a.time_ns / (10 * SECOND) == b.time_ns / (10 * SECOND))
        .enumerate()
    {
        cap.observe_at(chunk, LATER);
        let now = T0 + (i as u64 + 1) * 10 * SECOND + 2 * SECOND;
        let report = cap.report(now, &InForce::default());
        if let Some(Model::Fitted {
            headroom_factor: Some(h),
            ..
        }) = report.series.first().map(|s| &s.model)
        {
            headrooms.push(*h);
        }
    }
    let report = cap.report(T0 + 150 * SECOND, &InForce::default());
    let s = &report.series[0];
    assert_eq!((s.class.as_str(), s.route.as_str()), ("W1", "stable"));
    let Model::Fitted {
        saturation_rps,
        budget_rps: Some(budget_rps),
        ..
    } = s.model
    else {
        panic!("{:?}", s.model);
    };
    assert!((saturation_rps - 400.0).abs() <= 80.0, "{saturation_rps}");
    assert!(
        budget_rps < saturation_rps && budget_rps > 300.0,
        "{budget_rps}"
    );
    assert!(headrooms.len() >= 3, "{headrooms:?}");
    assert!(
        headrooms.windows(2).all(|w| w[1] < w[0]),
        "headroom falls as load rises: {headrooms:?}"
    );
    let f = s.forecast.as_ref().unwrap();
    assert!(
        f.trend_rps_per_hour > 0.0 && f.budget_in_s.is_some(),
        "{f:?}"
    );
    assert!(
        f.saturation_in_s.unwrap() >= f.budget_in_s.unwrap(),
        "saturation comes after the budget: {f:?}"
    );
    let line = report
        .recommendations
        .iter()
        .find(|r| r.starts_with("W1 on stable reaches its 500 ms p99 at ≈ "))
        .unwrap_or_else(|| panic!("{:?}", report.recommendations));
    assert!(
        line.contains("headroom") && line.contains("that is in ≈"),
        "{line}"
    );
    // Uniform keys over 100,000: not concentrated.
    assert!(!report.hot_keys.all.skewed, "{:?}", report.hot_keys.all);
    assert!(report::table(&report).contains("W1  stable"));
    // Under a rollout's route values the series names its version.
    let versions = InForce {
        versions: ["v1".to_owned(), "v2".to_owned()],
        ..InForce::default()
    };
    let named = cap.report(T0 + 150 * SECOND, &versions);
    assert_eq!(named.series[0].version.as_deref(), Some("v1"));
    assert!(
        named
            .recommendations
            .iter()
            .any(|r| r.starts_with("W1 on v1 (stable) reaches its 500 ms p99")),
        "{:?}",
        named.recommendations
    );
}

/// Constant load, or too little traffic, is "insufficient data", never a figure.
#[test]
fn constant_load_or_little_data_is_insufficient() {
    let mut rng = Rng(11);
    let receipts = simulated(8, 0.020, &[200.0; 12], &mut rng);
    let cap = capacity();
    cap.observe_at(&receipts, LATER);
    let report = cap.report(T0 + 130 * SECOND, &InForce::default());
    match &report.series[0].model {
        Model::InsufficientData { reason } => {
            assert!(
                reason.starts_with("insufficient data: the load varied only"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    let cap = capacity();
    cap.observe_at(&simulated(8, 0.020, &[50.0, 100.0], &mut rng), LATER);
    let report = cap.report(T0 + 30 * SECOND, &InForce::default());
    assert!(matches!(
        &report.series[0].model,
        Model::InsufficientData { reason } if reason.contains("windows with traffic")
    ));
    assert!(report
        .recommendations
        .iter()
        .any(|r| r.starts_with("W1 on stable: insufficient data")));
}

/// Zipf-distributed keys (s = 1.1 over 100,000) are reported as concentrated on canary;
/// uniform keys are not; the counts bracket the truth within the sketch's bound.
#[test]
fn zipf_keys_are_concentrated_and_uniform_keys_are_not() {
    let n_keys = 100_000usize;
    let weights: Vec<f64> = (1..=n_keys).map(|k| 1.0 / (k as f64).powf(1.1)).collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(n_keys);
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cdf.push(acc);
    }
    let mut rng = Rng(3);
    let stream = |zipf: bool, rng: &mut Rng| -> Vec<Receipt> {
        (0..50_000u64)
            .map(|i| {
                let k = if zipf {
                    let u = rng.next_f64();
                    cdf.partition_point(|&c| c < u) as u64
                } else {
                    rng.next_u64() % n_keys as u64
                };
                ReceiptBuilder::new(i)
                    .time_ns(T0 + i * 1_000_000)
                    .route(Some(Route::Canary))
                    .key_digest(key(k))
                    .build()
            })
            .collect()
    };
    let cap = capacity();
    let zipf = stream(true, &mut rng);
    cap.observe_at(&zipf, LATER);
    let report = cap.report(T0 + 100 * SECOND, &InForce::default());
    let canary = &report.hot_keys.canary;
    assert!(canary.skewed && canary.top_share > 0.2, "{canary:?}");
    assert!(report
        .recommendations
        .iter()
        .any(|r| r.contains("of canary traffic: the canary sample is skewed")));
    // The top 1 % of the distinct keys, bracketed around the truth.
    let mut counts: std::collections::HashMap<[u8; 16], u64> = std::collections::HashMap::new();
    for r in &zipf {
        *counts.entry(r.key_digest).or_default() += 1;
    }
    let distinct = counts.len() as f64;
    assert!(
        (canary.distinct_keys as f64 - distinct).abs() <= 0.05 * distinct,
        "{} vs {distinct}",
        canary.distinct_keys
    );
    let bounds = canary.top_1_percent.as_ref().unwrap();
    let mut sorted: Vec<u64> = counts.values().copied().collect();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let truth = sorted.iter().take(bounds.keys).sum::<u64>() as f64 / zipf.len() as f64;
    assert!(
        bounds.lower <= truth + 1e-9 && truth <= bounds.upper + 1e-9 && bounds.lower > 0.3,
        "{bounds:?} vs {truth}"
    );
    let true_top = zipf.iter().filter(|r| r.key_digest == key(0)).count() as u64;
    let top = &canary.top[0];
    assert_eq!(top.key_digest, report::hex_digest(&key(0)));
    assert!(top.count >= true_top && top.count - top.error <= true_top);
    assert!(top.error <= canary.requests / 1024);

    let cap = capacity();
    cap.observe_at(&stream(false, &mut rng), LATER);
    let report = cap.report(T0 + 100 * SECOND, &InForce::default());
    assert!(
        !report.hot_keys.canary.skewed,
        "{:?}",
        report.hot_keys.canary
    );
    let uniform = report.hot_keys.canary.top_1_percent.as_ref().unwrap();
    assert!(uniform.lower < 0.05, "{uniform:?}");
}

/// Windows and sketches stay bounded: receipts older than the horizon are counted as late,
/// and the settings are validated naming each.
#[test]
fn memory_is_bounded_and_settings_are_checked() {
    let cap = capacity();
    let r = |t: u64| ReceiptBuilder::new(0).time_ns(t).build();
    cap.observe_at(&[r(T0 + 3600 * SECOND)], LATER);
    cap.observe_at(&[r(T0)], LATER);
    let report = cap.report(T0 + 3700 * SECOND, &InForce::default());
    assert_eq!(report.late_receipts, 1);
    // A receipt dated far after the agent's clock is left out and does not push the windows
    // out of the horizon.
    cap.observe_at(&[r(u64::MAX - 1)], T0 + 3700 * SECOND);
    cap.observe_at(&[r(T0 + 3650 * SECOND)], T0 + 3700 * SECOND);
    let report = cap.report(T0 + 3700 * SECOND, &InForce::default());
    assert_eq!((report.future_receipts, report.late_receipts), (1, 1));
    for (config, setting) in [
        (
            CapacityConfig {
                window: Duration::from_millis(500),
                ..CapacityConfig::default()
            },
            "capacity.window",
        ),
        (
            CapacityConfig {
                horizon: Duration::from_secs(20),
                ..CapacityConfig::default()
            },
            "capacity.horizon",
        ),
        (
            CapacityConfig {
                top_keys: 0,
                ..CapacityConfig::default()
            },
            "capacity.top_keys",
        ),
        (
            CapacityConfig {
                sketch_counters: 10,
                ..CapacityConfig::default()
            },
            "capacity.sketch_counters",
        ),
    ] {
        match config.validate() {
            Err(CapacityError::InvalidConfig { setting: s, .. }) => assert_eq!(s, setting),
            other => panic!("{other:?}"),
        }
    }
    CapacityConfig::default().validate().unwrap();
}
