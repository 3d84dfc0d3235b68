//! What the agent's gauges read, at each collection (`/metrics` scrape or OTLP push): the
//! log's size and checkpoint age, the rollout's weights and figures per version, the capacity
//! headroom per class and route and the hot keys' share, each peer's lag, the API's credential
//! refusals. Each reading takes the subsystem's own lock briefly;
//! none writes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use knhk_core::checkpoint::Checkpoint;
use opentelemetry::KeyValue;

use crate::api::auth::Credentials;
use crate::capacity::api::InForceView;
use crate::capacity::report::Model;
use crate::capacity::Capacity;
use crate::clock::now_ns;
use crate::gates::Gates;
use crate::quorum::replicator::Replicator;
use crate::receipts::ReceiptLog;
use crate::telemetry::{Metrics, Reading};

#[allow(clippy::cast_precision_loss)]
fn f(v: u64) -> f64 {
    v as f64
}

/// The newest checkpoint's tree size and timestamp.
fn head(log: &ReceiptLog) -> Option<(u64, Option<u64>)> {
    let cp = log.latest_checkpoint().ok()??;
    let c = Checkpoint::parse(&cp.text).ok()?;
    Some((c.tree_size, c.timestamp_ns()))
}

/// Register the log's gauges.
pub fn log(metrics: &Metrics, log: &Arc<ReceiptLog>) {
    let l = log.clone();
    metrics.gauge(
        "knhk.agent.log.size",
        "{entry}",
        "Entries in the receipt log (receipts and key rotations).",
        move || l.size().map(|n| vec![(f(n), vec![])]).unwrap_or_default(),
    );
    let l = log.clone();
    metrics.gauge(
        "knhk.agent.log.unsealed",
        "{entry}",
        "Entries appended after the newest checkpoint (sealed at the next seal_interval).",
        move || match (l.size(), head(&l)) {
            (Ok(size), Some((sealed, _))) => vec![(f(size.saturating_sub(sealed)), vec![])],
            _ => vec![],
        },
    );
    let l = log.clone();
    metrics.gauge(
        "knhk.agent.checkpoint.age",
        "s",
        "Time since the newest checkpoint was sealed (it grows while no receipts arrive: no seal is needed then).",
        move || match head(&l) {
            Some((_, Some(ts))) => vec![(f(now_ns().saturating_sub(ts)) / 1e9, vec![])],
            _ => vec![],
        },
    );
}

/// Register the rollout's gauges, per version.
pub fn rollout(metrics: &Metrics, gates: &Arc<Gates>) {
    let versions = |r: &crate::gates::engine::Readings| {
        [
            ("stable", r.stable.clone()),
            ("candidate", r.candidate.clone()),
        ]
        .map(|(role, v)| {
            vec![
                KeyValue::new("knhk.rollout.id", r.id.clone()),
                KeyValue::new("knhk.rollout.role", role),
                KeyValue::new("knhk.rollout.version", v),
            ]
        })
    };
    let g = gates.clone();
    metrics.gauge(
        "knhk.agent.rollout.weight",
        "%",
        "Share of keyed traffic each version of the current rollout serves.",
        move || {
            let Some(r) = g.readings() else { return vec![] };
            let [stable, candidate] = versions(&r);
            vec![
                (100.0 - r.canary_percent, stable),
                (r.canary_percent, candidate),
            ]
        },
    );
    let figures = move |pick: fn(&crate::gates::analysis::VersionFigures) -> f64| {
        let g = gates.clone();
        move || -> Vec<Reading> {
            let Some(r) = g.readings() else { return vec![] };
            let Some(fig) = r.figures else { return vec![] };
            let [stable, candidate] = versions(&r);
            vec![
                (pick(&fig.stable), stable),
                (pick(&fig.candidate), candidate),
            ]
        }
    };
    metrics.gauge(
        "knhk.agent.rollout.success_rate",
        "1",
        "Success rate (1 - 5xx share) of each version over the last analysis window.",
        figures(|v| v.success_rate),
    );
    metrics.gauge(
        "knhk.agent.rollout.latency.p99",
        "s",
        "99th percentile latency of each version over the last analysis window.",
        figures(|v| v.p99_ms / 1e3),
    );
    metrics.gauge(
        "knhk.agent.rollout.samples",
        "{receipt}",
        "Receipts of each version in the last analysis window.",
        figures(|v| f(v.samples)),
    );
}

/// Register each peer's lag behind this region's newest checkpoint.
pub fn quorum(metrics: &Metrics, replicator: &Arc<Replicator>) {
    let r = replicator.clone();
    metrics.gauge(
        "knhk.agent.quorum.lag",
        "{entry}",
        "Entries of this region's newest checkpoint a peer has not cosigned yet.",
        move || {
            let Some((size, _)) = head(r.log()) else {
                return vec![];
            };
            let Ok(peers) = r.state().and_then(|s| s.peers()) else {
                return vec![];
            };
            let mut out: Vec<Reading> = r
                .config()
                .peers
                .iter()
                .map(|p| {
                    let acked = peers
                        .iter()
                        .find(|s| s.region == p.region)
                        .map_or(0, |s| s.acked_size);
                    (
                        f(size.saturating_sub(acked)),
                        vec![KeyValue::new("knhk.quorum.peer", p.region.clone())],
                    )
                })
                .collect();
            out.sort_by(|a, b| a.1[0].value.as_str().cmp(&b.1[0].value.as_str()));
            out
        },
    );
}

/// Register the API's credential refusals.
pub fn api(metrics: &Metrics, credentials: &Arc<Credentials>) {
    let c = credentials.clone();
    metrics.observed_counter(
        "knhk.agent.api.refusals",
        "{request}",
        "Requests refused for a missing or wrong credential, by the credential they lacked.",
        move || {
            let r = &c.refusals;
            [
                ("filter_receipts", &r.receipts),
                ("filter_config", &r.config),
                ("admin", &r.admin),
            ]
            .into_iter()
            .map(|(kind, n)| {
                (
                    n.load(Ordering::Relaxed),
                    vec![KeyValue::new("knhk.api.credential", kind)],
                )
            })
            .collect()
        },
    );
}

/// Register the capacity gauges: per class and route with a fitted model, the headroom and the
/// rate at which p99 reaches the budget; the share of the top keys of all and of canary traffic.
pub fn capacity(metrics: &Metrics, capacity: &Arc<Capacity>, in_force: InForceView) {
    let fitted = move |pick: fn(&Model) -> Option<f64>| {
        let c = capacity.clone();
        let in_force = in_force.clone();
        move || -> Vec<Reading> {
            let report = c.report(now_ns(), &in_force());
            report
                .series
                .iter()
                .filter(|s| s.route != "excluded")
                .filter_map(|s| {
                    let v = pick(&s.model)?;
                    Some((
                        v,
                        vec![
                            KeyValue::new("knhk.admission.class", s.class.to_ascii_lowercase()),
                            KeyValue::new("knhk.route", s.route.clone()),
                        ],
                    ))
                })
                .collect()
        }
    };
    metrics.gauge(
        "knhk.agent.capacity.headroom",
        "1",
        "The rate at which the fitted model's p99 reaches the class budget, divided by the current served rate.",
        fitted(|m| match m {
            Model::Fitted {
                headroom_factor, ..
            } => *headroom_factor,
            Model::InsufficientData { .. } => None,
        }),
    );
    metrics.gauge(
        "knhk.agent.capacity.budget_rate",
        "{request}/s",
        "The served rate at which the fitted model's p99 reaches the class budget.",
        fitted(|m| match m {
            Model::Fitted { budget_rps, .. } => *budget_rps,
            Model::InsufficientData { .. } => None,
        }),
    );
}

/// Register the hot-key gauge: the share of requests the top keys carry, of all keyed
/// traffic and of canary traffic.
pub fn hot_keys(metrics: &Metrics, capacity: &Arc<Capacity>) {
    let c = capacity.clone();
    metrics.gauge(
        "knhk.agent.capacity.hot_keys.share",
        "1",
        "Share of keyed requests the top keys carry (an upper bound: the sketch may overestimate).",
        move || {
            let keys = c.hot_keys();
            [("all", &keys.all), ("canary", &keys.canary)]
                .into_iter()
                .filter(|(_, k)| k.requests > 0)
                .map(|(stream, k)| {
                    (
                        k.top_share,
                        vec![KeyValue::new("knhk.capacity.stream", stream)],
                    )
                })
                .collect()
        },
    );
}
