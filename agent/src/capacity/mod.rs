//! Capacity planning from the receipts the agent already holds: per class and route, the
//! request rate, p50/p99 against the class budget and the shed share over fixed windows; a
//! load–latency model fitted to those windows ([`queue_model`]) and the rate at which p99
//! would reach the budget; hot keys from a bounded sketch ([`heavy_hitters`]) and the share of
//! the top 1 % of distinct keys ([`distinct`] counts them); the trend of
//! the rate and the time until saturation ([`trend`]); recommendations in words with their
//! numbers ([`report`]). Fed by the receipt log's observer; read by `GET /v1/capacity`
//! ([`api`]) and `knhk-agent capacity`. The method is in docs/capacity.md.

pub mod api;
pub mod distinct;
pub mod heavy_hitters;
pub mod queue_model;
pub mod report;
pub mod trend;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use knhk_core::class::{Class, Route};
use knhk_core::decision::Admission;
use knhk_core::receipt::{Receipt, NO_KEY};
use serde::{Deserialize, Serialize};

use distinct::Distinct;
use heavy_hitters::SpaceSaving;

/// Errors of the `[capacity]` table.
#[derive(Debug, thiserror::Error)]
pub enum CapacityError {
    /// A setting is out of range.
    #[error("invalid setting {setting}: {reason}")]
    InvalidConfig {
        /// The setting.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// The `[capacity]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapacityConfig {
    /// Length of one window (1s–5m).
    #[serde(with = "crate::settings::duration")]
    pub window: Duration,
    /// How far back windows are kept (10 to 1,000 windows).
    #[serde(with = "crate::settings::duration")]
    pub horizon: Duration,
    /// Hot keys reported (1–100).
    pub top_keys: usize,
    /// Counters of each hot-key sketch (100–100,000): the error bound is requests ÷ counters.
    pub sketch_counters: usize,
}

impl Default for CapacityConfig {
    fn default() -> Self {
        CapacityConfig {
            window: Duration::from_secs(10),
            horizon: Duration::from_secs(30 * 60),
            top_keys: 10,
            sketch_counters: 4096,
        }
    }
}

impl CapacityConfig {
    /// Check every value.
    pub fn validate(&self) -> Result<(), CapacityError> {
        let bad = |setting, reason: &str| {
            Err(CapacityError::InvalidConfig {
                setting,
                reason: reason.to_owned(),
            })
        };
        if self.window < Duration::from_secs(1) || self.window > Duration::from_secs(300) {
            return bad("capacity.window", "must be between 1s and 5m");
        }
        let windows = self.horizon.as_nanos() / self.window.as_nanos().max(1);
        if !(10..=1000).contains(&windows) {
            return bad(
                "capacity.horizon",
                "must hold between 10 and 1000 windows of capacity.window",
            );
        }
        if !(1..=100).contains(&self.top_keys) {
            return bad("capacity.top_keys", "must be between 1 and 100");
        }
        if !(100..=100_000).contains(&self.sketch_counters) {
            return bad("capacity.sketch_counters", "must be between 100 and 100000");
        }
        Ok(())
    }
}

/// What the policy in force says the report needs: the class p99 budgets and the version
/// names the routes carry (`routing.route_values`).
#[derive(Debug, Clone, PartialEq)]
pub struct InForce {
    /// p99 budgets of R1, W1, C1, milliseconds.
    pub budgets_ms: [f64; 3],
    /// The versions behind stable and canary (`v1`, `v2` in a rollout).
    pub versions: [String; 2],
}

impl Default for InForce {
    /// The filter's defaults: 100 ms, 500 ms, 5 s; routes named `stable` and `canary`.
    fn default() -> Self {
        InForce {
            budgets_ms: [100.0, 500.0, 5000.0],
            versions: ["stable".to_owned(), "canary".to_owned()],
        }
    }
}

/// What one window counted for one class and route.
#[derive(Debug, Clone)]
struct Counts {
    /// Every request.
    requests: u64,
    /// Shed (rejected) requests.
    shed: u64,
    /// Served as a colder class.
    degraded: u64,
    /// 5xx answers of served requests.
    errors: u64,
    /// Latency of served requests, microseconds (two significant digits); `None` only if
    /// the histogram could not be made (it always can with these fixed bounds).
    latency: Option<Histogram<u32>>,
}

/// Latencies recorded, microseconds: up to an hour.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// An empty latency histogram.
fn histogram() -> Option<Histogram<u32>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).ok()
}

impl Counts {
    fn new() -> Counts {
        Counts {
            requests: 0,
            shed: 0,
            degraded: 0,
            errors: 0,
            latency: histogram(),
        }
    }

    fn served(&self) -> u64 {
        self.latency.as_ref().map_or(0, Histogram::len)
    }

    /// The latency at quantile `q`, microseconds (0 with none recorded).
    fn latency_at(&self, q: f64) -> u64 {
        self.latency.as_ref().map_or(0, |h| h.value_at_quantile(q))
    }

    /// The mean latency, microseconds.
    fn latency_mean(&self) -> f64 {
        self.latency.as_ref().map_or(0.0, Histogram::mean)
    }
}

/// What one window counted for one class, every route together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassAdmission {
    /// `R1`, `W1` or `C1`.
    pub class: &'static str,
    /// Every request.
    pub requests: u64,
    /// Shed (rejected) requests.
    pub shed: u64,
    /// Served as a colder class.
    pub degraded: u64,
}

/// One window's admission counts per class ([`Capacity::admission`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdmissionWindow {
    /// Its start, ns since the Unix epoch.
    pub start_ns: u64,
    /// R1, W1, C1.
    pub classes: [ClassAdmission; 3],
}

/// The series a receipt counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    /// Class served.
    pub class: Class,
    /// Route; `None` for excluded requests.
    pub route: Option<Route>,
}

impl SeriesKey {
    /// Class order (R1, W1, C1), then stable, canary, excluded.
    fn rank(&self) -> (usize, u8) {
        let route = match self.route {
            Some(Route::Stable) => 0,
            Some(Route::Canary) => 1,
            None => 2,
        };
        (self.class.index(), route)
    }
}

impl PartialOrd for SeriesKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SeriesKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

#[derive(Debug)]
struct Window {
    start_ns: u64,
    series: BTreeMap<SeriesKey, Counts>,
}

#[derive(Debug)]
struct State {
    windows: VecDeque<Window>,
    keys: SpaceSaving,
    canary_keys: SpaceSaving,
    distinct: Distinct,
    canary_distinct: Distinct,
    /// Receipts older than the oldest window kept.
    late: u64,
    /// Receipts dated too far after the agent's clock.
    ahead: u64,
}

/// How far after the agent's clock a receipt may be dated (clock skew between pods).
pub const MAX_AHEAD: Duration = Duration::from_secs(60);

/// The capacity analysis: windows of counts and the hot-key sketches, bounded in memory.
#[derive(Debug)]
pub struct Capacity {
    config: CapacityConfig,
    state: Mutex<State>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Capacity {
    /// An empty analysis with `config` (validated by the caller).
    pub fn new(config: CapacityConfig) -> Capacity {
        let counters = config.sketch_counters;
        Capacity {
            config,
            state: Mutex::new(State {
                windows: VecDeque::new(),
                keys: SpaceSaving::new(counters),
                canary_keys: SpaceSaving::new(counters),
                distinct: Distinct::default(),
                canary_distinct: Distinct::default(),
                late: 0,
                ahead: 0,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CapacityConfig {
        &self.config
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Count a batch of receipts (the receipt log's observer), each in the window of its own
    /// decision time, on the agent's clock.
    pub fn observe(&self, receipts: &[Receipt]) {
        self.observe_at(receipts, crate::clock::now_ns());
    }

    /// [`Capacity::observe`] at `now_ns`: a receipt dated more than [`MAX_AHEAD`] after it (a
    /// pod with a wrong clock) is counted as such and left out, so it cannot push every
    /// window out of the horizon.
    pub fn observe_at(&self, receipts: &[Receipt], now_ns: u64) {
        let window_ns = nanos(self.config.window).max(1);
        let horizon_ns = nanos(self.config.horizon);
        let limit_ns = now_ns.saturating_add(nanos(MAX_AHEAD));
        let mut state = self.state();
        for r in receipts {
            if r.time_ns > limit_ns {
                state.ahead += 1;
                continue;
            }
            let start_ns = r.time_ns - r.time_ns % window_ns;
            let State {
                windows,
                keys,
                canary_keys,
                distinct,
                canary_distinct,
                late,
                ..
            } = &mut *state;
            let Some(window) = window_for(windows, start_ns, horizon_ns) else {
                *late += 1;
                continue;
            };
            let counts = window
                .series
                .entry(SeriesKey {
                    class: r.class,
                    route: r.route,
                })
                .or_insert_with(Counts::new);
            counts.requests += 1;
            match r.admission {
                Admission::Shed => counts.shed += 1,
                other => {
                    if other == Admission::Degraded {
                        counts.degraded += 1;
                    }
                    if r.status >= 500 {
                        counts.errors += 1;
                    }
                    if let Some(h) = counts.latency.as_mut() {
                        h.saturating_record(u64::from(r.latency_us).max(1));
                    }
                }
            }
            if r.key_digest != NO_KEY {
                keys.add(r.key_digest, r.routing_bucket);
                distinct.add(&r.key_digest);
                if r.route == Some(Route::Canary) {
                    canary_keys.add(r.key_digest, r.routing_bucket);
                    canary_distinct.add(&r.key_digest);
                }
            }
        }
    }

    /// The hot keys alone (no model is fitted).
    pub fn hot_keys(&self) -> report::HotKeys {
        let state = self.state();
        report::hot_keys(&self.config, &state)
    }

    /// Requests, shed and degraded per class in each window kept, oldest first (what the
    /// console plots as the shed level per class over time).
    pub fn admission(&self) -> Vec<AdmissionWindow> {
        let state = self.state();
        state
            .windows
            .iter()
            .map(|w| {
                let mut classes = Class::ALL.map(|class| ClassAdmission {
                    class: report::class_name(class),
                    requests: 0,
                    shed: 0,
                    degraded: 0,
                });
                for (key, counts) in &w.series {
                    let c = &mut classes[key.class.index()];
                    c.requests += counts.requests;
                    c.shed += counts.shed;
                    c.degraded += counts.degraded;
                }
                AdmissionWindow {
                    start_ns: w.start_ns,
                    classes,
                }
            })
            .collect()
    }

    /// The report at `now_ns`, against the budgets and version names `in_force`.
    pub fn report(&self, now_ns: u64, in_force: &InForce) -> report::Report {
        let state = self.state();
        report::build(&self.config, &state, now_ns, in_force)
    }
}

/// The window starting at `start_ns`, created in order; `None` when it lies before the
/// oldest window kept. Windows older than `horizon_ns` before the newest are dropped.
fn window_for(
    windows: &mut VecDeque<Window>,
    start_ns: u64,
    horizon_ns: u64,
) -> Option<&mut Window> {
    let newest = windows.back().map(|w| w.start_ns);
    if newest.is_none_or(|n| start_ns > n) {
        windows.push_back(Window {
            start_ns,
            series: BTreeMap::new(),
        });
        let cutoff = start_ns.saturating_sub(horizon_ns);
        while windows.front().is_some_and(|w| w.start_ns < cutoff) {
            windows.pop_front();
        }
        return windows.back_mut();
    }
    let cutoff = newest.unwrap_or(0).saturating_sub(horizon_ns);
    if start_ns < cutoff {
        return None;
    }
    let i = match windows.binary_search_by_key(&start_ns, |w| w.start_ns) {
        Ok(i) => i,
        Err(i) => {
            windows.insert(
                i,
                Window {
                    start_ns,
                    series: BTreeMap::new(),
                },
            );
            i
        }
    };
    windows.get_mut(i)
}

#[cfg(test)]
mod simulation;
#[cfg(test)]
mod tests;
