//! The interleaved measurement: an initial warm-up per variant and mode, then rounds in which every variant runs once per mode.
//!
//! Within a round the variant order rotates by one each round, so no variant is always
//! measured first (or right after a neighbour that heated the caches). Each measured run is
//! preceded by its own short warm-up, which also re-opens wrk's connections.
//!
//! Saturation gate: requests/s only measures Envoy when Envoy is the bottleneck, i.e. busy
//! for the whole run. On a machine shared with other work, Envoy sometimes gets a fraction of
//! its CPU and requests/s then measures the neighbours. A run in which Envoy's CPU share stays
//! under `min_cpu_share` is repeated (up to `max_attempts` in all) and the attempt with the
//! highest share is kept; the number of attempts is recorded with the run.

use super::envoy::Envoy;
use super::load::{self, LoadResult, LoadSpec};
use super::report::Run;
use super::rig::url;
use super::{Mode, Settings, Variant};
use anyhow::bail;

/// Warm every Envoy up on every mode, then measure `settings.rounds` rounds.
pub fn measure(
    envoys: &mut [(Variant, Envoy)],
    spec: &LoadSpec<'_>,
    settings: &Settings,
) -> anyhow::Result<Vec<Run>> {
    // The first warm-up is longer: V8 tiers the module up from its baseline compiler meanwhile.
    for (variant, envoy) in envoys.iter() {
        for &mode in &settings.modes {
            let prefix = format!("w0{}{}", variant.name(), mode.name());
            load::run(
                spec,
                envoy,
                &url(envoy, mode),
                settings.initial_warmup,
                &prefix,
            )?;
        }
    }
    let mut runs = Vec::new();
    let n = envoys.len();
    for round in 1..=settings.rounds {
        for &mode in &settings.modes {
            for i in 0..n {
                let (variant, envoy) = &mut envoys[(i + round as usize) % n];
                envoy.check_alive()?;
                // Key prefixes are unique per run, so no key repeats anywhere in the bench.
                let tag = format!("{round}{}{}", variant.name(), mode.name());
                load::run(
                    spec,
                    envoy,
                    &url(envoy, mode),
                    settings.warmup,
                    &format!("w{tag}"),
                )?;
                let result = gated_run(spec, envoy, mode, settings, &tag, |share| {
                    println!(
                        "round {round}/{} {:<6} {:<17} retry: Envoy had {:.0}% of its CPU",
                        settings.rounds,
                        mode.name(),
                        variant.name(),
                        share * 100.0
                    );
                })?;
                print_progress(round, settings.rounds, mode.name(), variant.name(), &result);
                runs.push(Run {
                    round,
                    mode,
                    variant: *variant,
                    result,
                });
            }
        }
    }
    Ok(runs)
}

/// One measured run under the saturation gate; `on_retry` is told the share of a rejected attempt.
fn gated_run(
    spec: &LoadSpec<'_>,
    envoy: &Envoy,
    mode: Mode,
    settings: &Settings,
    tag: &str,
    on_retry: impl Fn(f64),
) -> anyhow::Result<LoadResult> {
    let mut best: Option<LoadResult> = None;
    for attempt in 1..=settings.max_attempts {
        let prefix = format!("m{tag}a{attempt}");
        let mut result = load::run(spec, envoy, &url(envoy, mode), settings.duration, &prefix)?;
        result.attempts = attempt;
        let saturated = result.cpu_share >= settings.min_cpu_share;
        if !saturated && attempt < settings.max_attempts {
            on_retry(result.cpu_share);
        }
        let better = match &best {
            Some(b) => result.cpu_share > b.cpu_share,
            None => true,
        };
        if better {
            best = Some(result);
        }
        if saturated {
            break;
        }
    }
    match best {
        Some(result) => Ok(result),
        None => bail!("--max-attempts must be at least 1"),
    }
}

fn print_progress(round: u32, rounds: u32, mode: &str, variant: &str, r: &LoadResult) {
    let errors = if r.errors > 0 {
        format!("  {} errors ({} bad status)", r.errors, r.bad_status)
    } else {
        String::new()
    };
    let attempt = if r.attempts > 1 {
        format!("  [attempt {}]", r.attempts)
    } else {
        String::new()
    };
    println!(
        "round {round}/{rounds} {mode:<6} {variant:<17} {:>8.0} req/s  p50 {:>5.0} µs  p99 {:>6.0} µs  CPU {:>5.2} µs/req ({:.0}%){errors}{attempt}",
        r.rps,
        r.p50_us,
        r.p99_us,
        r.cpu_us_per_req,
        r.cpu_share * 100.0,
    );
}
