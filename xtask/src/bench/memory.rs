//! Memory of each variant: RSS and Envoy's `/memory` at 1 and 4 workers, and from that the cost of one worker's VM.
//!
//! Envoy runs one wasm VM (or Lua state) per worker thread, so adding workers adds VMs. Each
//! variant is started fresh at `--concurrency 1` and `--concurrency 4` (same CPU pinning), loaded
//! briefly on the `direct` route so every worker has run requests, and measured. The per-worker
//! step `(X@4 − X@1) / 3` of a variant minus the same step of the no-filter variant is the memory
//! one worker's filter instance costs. Both RSS (what the kernel charges, including V8's own
//! mappings and touched wasm linear memory) and Envoy's allocator figure (`allocated`) are shown;
//! RSS moves in pages and is the noisier of the two.

use super::load::{self, LoadSpec};
use super::rig::{url, Rig};
use super::{Mode, Settings, Variant};
use serde_json::{json, Map, Value};
use std::time::Duration;

/// Worker counts compared.
const LOW: u32 = 1;
/// See [`LOW`].
const HIGH: u32 = 4;

/// Memory of one variant at one concurrency, after a short load.
#[derive(Debug, Clone)]
pub struct Sample {
    variant: Variant,
    concurrency: u32,
    rss_kib: u64,
    allocated_kib: Option<u64>,
}

/// Start every selected variant at [`LOW`] and [`HIGH`] workers, load it briefly, and sample its memory.
pub fn measure(rig: &Rig, spec: &LoadSpec<'_>, settings: &Settings) -> anyhow::Result<Vec<Sample>> {
    let seconds = if settings.duration.as_secs() >= 5 {
        2
    } else {
        1
    };
    let mut samples = Vec::new();
    for &variant in &settings.variants {
        for concurrency in [LOW, HIGH] {
            let tag = format!("mem-{}-c{concurrency}", variant.name());
            let envoy = rig.start(variant, concurrency, &tag)?;
            load::run(
                spec,
                &envoy,
                &url(&envoy, Mode::Direct),
                Duration::from_secs(seconds),
                &tag,
            )?;
            samples.push(Sample {
                variant,
                concurrency,
                rss_kib: envoy.rss_kib()?,
                allocated_kib: envoy.allocated_bytes().ok().map(|b| b / 1024),
            });
        }
    }
    Ok(samples)
}

/// Per-worker cost of `variant` over the no-filter variant, KiB, from `pick` (RSS or allocated).
fn per_worker_kib(
    samples: &[Sample],
    variant: Variant,
    pick: fn(&Sample) -> Option<u64>,
) -> Option<f64> {
    let at = |v: Variant, c: u32| {
        samples
            .iter()
            .find(|s| s.variant == v && s.concurrency == c)
            .and_then(pick)
            .map(|x| x as f64)
    };
    let step = |v: Variant| Some((at(v, HIGH)? - at(v, LOW)?) / f64::from(HIGH - LOW));
    Some(step(variant)? - step(Variant::None)?)
}

/// Every variant with a filter (all but none), in table order.
fn with_filter() -> impl Iterator<Item = Variant> {
    Variant::ALL.into_iter().filter(|v| *v != Variant::None)
}

fn rss(s: &Sample) -> Option<u64> {
    Some(s.rss_kib)
}

fn allocated(s: &Sample) -> Option<u64> {
    s.allocated_kib
}

/// Print the samples, the per-worker costs and the RSS after the measured rounds.
pub fn print(samples: &[Sample], after_rounds: &[(Variant, Option<u64>)]) {
    println!();
    println!("memory (fresh Envoy per line after 1-2 s of load; RSS from /proc, allocated from admin /memory):");
    for s in samples {
        println!(
            "  {:<17} --concurrency {}: RSS {:>7} KiB, allocated {}",
            s.variant.name(),
            s.concurrency,
            s.rss_kib,
            s.allocated_kib
                .map_or_else(|| "n/a".to_string(), |k| format!("{k} KiB"))
        );
    }
    for v in with_filter() {
        if let Some(rss_kib) = per_worker_kib(samples, v, rss) {
            let alloc = per_worker_kib(samples, v, allocated)
                .map_or_else(|| "n/a".to_string(), |k| format!("{k:.0} KiB"));
            println!(
                "  per-worker memory of {:<17} over none: RSS {rss_kib:>6.0} KiB, allocated {alloc} (step from {LOW} to {HIGH} workers)",
                v.name()
            );
        }
    }
    let loaded: Vec<String> = after_rounds
        .iter()
        .filter_map(|(v, r)| r.map(|r| format!("{} {r} KiB", v.name())))
        .collect();
    if !loaded.is_empty() {
        println!(
            "  RSS after all rounds (--concurrency 1): {}",
            loaded.join(", ")
        );
    }
}

/// JSON form of the samples and derived figures.
pub fn to_json(samples: &[Sample], after_rounds: &[(Variant, Option<u64>)]) -> Value {
    let per_worker = |pick: fn(&Sample) -> Option<u64>| -> Map<String, Value> {
        with_filter()
            .filter_map(|v| {
                per_worker_kib(samples, v, pick).map(|k| (v.name().to_string(), json!(k)))
            })
            .collect()
    };
    let after: Map<String, Value> = after_rounds
        .iter()
        .map(|(v, r)| (v.name().to_string(), json!(r)))
        .collect();
    json!({
        "samples": samples.iter().map(|s| json!({
            "variant": s.variant.name(),
            "concurrency": s.concurrency,
            "rss_kib": s.rss_kib,
            "allocated_kib": s.allocated_kib,
        })).collect::<Vec<_>>(),
        "per_worker_rss_kib_over_none": per_worker(rss),
        "per_worker_allocated_kib_over_none": per_worker(allocated),
        "rss_kib_after_rounds_concurrency_1": after,
    })
}
