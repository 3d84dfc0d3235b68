//! The filter's Envoy stats: their names, the counts each worker keeps in its own memory, and
//! the flush that adds them to the host's counters on the timer.
//!
//! Incrementing an Envoy metric is a host call; a request would pay several. Instead each
//! request bumps plain integers ([`Counts`]), and [`Metrics::flush`] adds the deltas to Envoy's
//! counters once per tick (and records the gauges). Both hosts export the same names.
//! `knhk.config.version` is the version label of a static config, or the epoch of a pushed one.

use knhk_core::admission::ShedLevels;
use knhk_core::{Admission, Class, Decision, Route};

use crate::host::StatsHost;

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
    /// Pushed configs refused (a refused plugin configuration is counted at once instead).
    pub configs_rejected: u64,
    /// Receipts acknowledged by the agent, dropped, and failed batch posts.
    pub receipts: [u64; 3],
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

    /// Add another worker's counts (the native host flushes all workers through one set).
    #[cfg(any(test, not(target_family = "wasm")))]
    pub fn merge(&mut self, other: &Counts) {
        for (a, b) in self.routes.iter_mut().zip(other.routes) {
            *a += b;
        }
        for (row, other_row) in self.admission.iter_mut().zip(other.admission) {
            for (a, b) in row.iter_mut().zip(other_row) {
                *a += b;
            }
        }
        self.decision_errors += other.decision_errors;
        self.configs_applied += other.configs_applied;
        self.configs_rejected += other.configs_rejected;
        for (a, b) in self.receipts.iter_mut().zip(other.receipts) {
            *a += b;
        }
    }
}

/// Ids of the host's metrics, defined once.
#[derive(Debug, Clone)]
pub struct Metrics {
    routes: [Option<u64>; 3],
    admission: [[Option<u64>; 6]; 3],
    shed_level: [Option<u64>; 3],
    decision_errors: Option<u64>,
    config_rejected: Option<u64>,
    config_version: Option<u64>,
    configs_applied: Option<u64>,
    receipts: [Option<u64>; 3],
}

impl Metrics {
    /// Define every metric (Envoy returns the existing id when a name is defined again).
    pub fn define(host: &mut impl StatsHost) -> Self {
        let mut admission = [[None; 6]; 3];
        let mut shed_level = [None; 3];
        for class in Class::ALL {
            let c = class.as_lower_str();
            for outcome in OUTCOMES {
                admission[class.index()][outcome.index()] =
                    host.define_counter(&format!("knhk.admission.{c}.{}", outcome.as_str()));
            }
            shed_level[class.index()] =
                host.define_gauge(&format!("knhk.admission.{c}.shed_level_bp"));
        }
        Metrics {
            routes: [
                host.define_counter("knhk.route.stable"),
                host.define_counter("knhk.route.canary"),
                host.define_counter("knhk.route.excluded"),
            ],
            admission,
            shed_level,
            decision_errors: host.define_counter("knhk.decision.errors"),
            config_rejected: host.define_counter("knhk.config.rejected"),
            config_version: host.define_gauge("knhk.config.version"),
            configs_applied: host.define_counter("knhk.config.applied"),
            receipts: [
                host.define_counter("knhk.receipts.sent"),
                host.define_counter("knhk.receipts.dropped"),
                host.define_counter("knhk.receipts.flush_errors"),
            ],
        }
    }

    /// Count a refused configuration at once (it happens outside any tick).
    pub fn config_rejected(&self, host: &mut impl StatsHost) {
        add(host, self.config_rejected, 1);
    }

    /// Add `counts` to the host's counters and, when `version` is given (this worker runs the
    /// newest config), set the gauges.
    pub fn flush(
        &self,
        host: &mut impl StatsHost,
        counts: &Counts,
        levels: &ShedLevels,
        version: Option<u64>,
    ) {
        for (id, n) in self.routes.iter().zip(counts.routes) {
            add(host, *id, n);
        }
        for (ids, row) in self.admission.iter().zip(counts.admission) {
            for (id, n) in ids.iter().zip(row) {
                add(host, *id, n);
            }
        }
        add(host, self.decision_errors, counts.decision_errors);
        add(host, self.configs_applied, counts.configs_applied);
        add(host, self.config_rejected, counts.configs_rejected);
        for (id, n) in self.receipts.iter().zip(counts.receipts) {
            add(host, *id, n);
        }
        if let Some(version) = version {
            for (id, level) in self.shed_level.iter().zip(levels) {
                if let Some(id) = id {
                    host.set(*id, u64::from(*level));
                }
            }
            if let Some(id) = self.config_version {
                host.set(id, version);
            }
        }
    }
}

fn add(host: &mut impl StatsHost, id: Option<u64>, n: u64) {
    if let (Some(id), true) = (id, n > 0) {
        host.add(id, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::doubles::FakeStats;

    /// Counts of several workers merge, and a flush adds them under the documented names;
    /// gauges are written only for the current config.
    #[test]
    fn merged_counts_flush_under_their_names() {
        let mut host = FakeStats::default();
        let metrics = Metrics::define(&mut host);
        let mut a = Counts {
            routes: [2, 1, 0],
            receipts: [5, 1, 0],
            ..Counts::default()
        };
        a.admission[Class::W1.index()][Admission::Shed.index()] = 3;
        let b = Counts {
            routes: [1, 1, 4],
            decision_errors: 2,
            ..Counts::default()
        };
        a.merge(&b);
        metrics.flush(&mut host, &a, &[0, 250, 0], None);
        let v = |host: &FakeStats, n: &str| host.values.get(n).copied();
        assert_eq!(v(&host, "knhk.route.stable"), Some(3));
        assert_eq!(v(&host, "knhk.route.canary"), Some(2));
        assert_eq!(v(&host, "knhk.route.excluded"), Some(4));
        assert_eq!(v(&host, "knhk.admission.w1.shed"), Some(3));
        assert_eq!(v(&host, "knhk.decision.errors"), Some(2));
        assert_eq!(v(&host, "knhk.receipts.sent"), Some(5));
        assert_eq!(v(&host, "knhk.receipts.dropped"), Some(1));
        assert_eq!(
            v(&host, "knhk.admission.w1.shed_level_bp"),
            None,
            "not current: no gauges"
        );
        metrics.flush(&mut host, &Counts::default(), &[0, 250, 0], Some(7));
        assert_eq!(v(&host, "knhk.admission.w1.shed_level_bp"), Some(250));
        assert_eq!(v(&host, "knhk.config.version"), Some(7));
        assert_eq!(
            v(&host, "knhk.route.stable"),
            Some(3),
            "an empty flush adds nothing"
        );
    }
}
