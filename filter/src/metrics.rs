//! Envoy stats of the filter, counted in VM memory and flushed to the host on the timer.
//!
//! Incrementing an Envoy metric is a host call; a request would pay several. Instead each
//! request bumps plain integers here, and [`Metrics::flush`] adds the deltas to Envoy's
//! counters once per tick (and records the gauges). Envoy sums counters across workers' VMs.
//! `knhk.config.version` is the version label of a static config, or the epoch of a pushed one.

use knhk_core::admission::ShedLevels;
use knhk_core::{Admission, Class, Decision, Route};
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

/// Admission outcomes exported per class (`not_evaluated` is not a stat).
const OUTCOMES: [Admission; 5] = [
    Admission::Admitted,
    Admission::Degraded,
    Admission::Shed,
    Admission::ShadowShed,
    Admission::ShadowDegraded,
];

/// Local counts since the last flush.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Per route: stable, canary, excluded.
    pub routes: [u64; 3],
    /// Per class and outcome ([`Class::index`] × [`Admission::index`]).
    pub admission: [[u64; 6]; 3],
    /// Decisions that could not be made or applied.
    pub decision_errors: u64,
    /// Signed configs applied.
    pub configs_applied: u64,
}

impl Counts {
    /// Count one decision.
    pub fn record(&mut self, d: &Decision) {
        let route = match d.route {
            Some(Route::Stable) => 0,
            Some(Route::Canary) => 1,
            None => 2,
        };
        self.routes[route] += 1;
        self.admission[d.requested_class.index()][d.admission.index()] += 1;
    }
}

/// Ids of the Envoy metrics, defined once per VM.
#[derive(Debug)]
pub struct Metrics {
    routes: [Option<u32>; 3],
    admission: [[Option<u32>; 6]; 3],
    shed_level: [Option<u32>; 3],
    decision_errors: Option<u32>,
    config_rejected: Option<u32>,
    config_version: Option<u32>,
    configs_applied: Option<u32>,
    receipts: [Option<u32>; 3],
    /// Counts not yet flushed.
    pub pending: Counts,
}

fn define(kind: MetricType, name: &str) -> Option<u32> {
    match hostcalls::define_metric(kind, name) {
        Ok(id) => Some(id),
        Err(status) => {
            log::warn!("knhk: cannot define metric {name}: {status:?}");
            None
        }
    }
}

fn class_stat(class: Class) -> &'static str {
    match class {
        Class::R1 => "r1",
        Class::W1 => "w1",
        Class::C1 => "c1",
    }
}

impl Metrics {
    /// Define every metric (Envoy returns the existing id when a name is defined again).
    pub fn define() -> Self {
        let counter = |name: &str| define(MetricType::Counter, name);
        let gauge = |name: &str| define(MetricType::Gauge, name);
        let mut admission = [[None; 6]; 3];
        let mut shed_level = [None; 3];
        for class in Class::ALL {
            let c = class_stat(class);
            for outcome in OUTCOMES {
                admission[class.index()][outcome.index()] =
                    counter(&format!("knhk.admission.{c}.{}", outcome.as_str()));
            }
            shed_level[class.index()] = gauge(&format!("knhk.admission.{c}.shed_level_bp"));
        }
        Metrics {
            routes: [
                counter("knhk.route.stable"),
                counter("knhk.route.canary"),
                counter("knhk.route.excluded"),
            ],
            admission,
            shed_level,
            decision_errors: counter("knhk.decision.errors"),
            config_rejected: counter("knhk.config.rejected"),
            config_version: gauge("knhk.config.version"),
            configs_applied: counter("knhk.config.applied"),
            receipts: [
                counter("knhk.receipts.sent"),
                counter("knhk.receipts.dropped"),
                counter("knhk.receipts.flush_errors"),
            ],
            pending: Counts::default(),
        }
    }

    /// Count a refused configuration at once (it happens outside any tick).
    pub fn config_rejected(&self) {
        add(self.config_rejected, 1);
    }

    /// Add pending counts to Envoy's counters, set the gauges, and reset the pending counts.
    /// `receipts` is (sent, dropped, flush errors) since the last flush, when receipts are on.
    /// Gauges are written only when `version` is given (this VM runs the newest config).
    pub fn flush(
        &mut self,
        levels: &ShedLevels,
        version: Option<u64>,
        receipts: Option<(u64, u64, u64)>,
    ) {
        let pending = std::mem::take(&mut self.pending);
        for (id, n) in self.routes.iter().zip(pending.routes) {
            add(*id, n);
        }
        for (ids, counts) in self.admission.iter().zip(pending.admission) {
            for (id, n) in ids.iter().zip(counts) {
                add(*id, n);
            }
        }
        add(self.decision_errors, pending.decision_errors);
        add(self.configs_applied, pending.configs_applied);
        if let Some((sent, dropped, failures)) = receipts {
            for (id, n) in self.receipts.iter().zip([sent, dropped, failures]) {
                add(*id, n);
            }
        }
        if let Some(version) = version {
            for (id, level) in self.shed_level.iter().zip(levels) {
                set(*id, u64::from(*level));
            }
            set(self.config_version, version);
        }
    }
}

fn add(id: Option<u32>, n: u64) {
    if let (Some(id), true) = (id, n > 0) {
        let _ = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
    }
}

fn set(id: Option<u32>, value: u64) {
    if let Some(id) = id {
        let _ = hostcalls::record_metric(id, value);
    }
}
