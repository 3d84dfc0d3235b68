//! Canary analysis: per-version success rate and latency from the filters' receipts over a
//! sliding window, and the verdict a gate acts on.
//!
//! Receipts are placed in slots by the time the agent received them (one clock, no skew
//! between Envoy hosts): 100 ms slots, or 1/50 of the window when that is wider, so a window
//! holds at most 50 slots whatever its length. Each slot holds, per version, a count, an error count and an HDR
//! histogram of latency (1 µs – 1 h, 2 significant digits); a window merges the slots it
//! covers. Only receipts decided under a config epoch at or after the gate's start count, so a
//! gate is judged on traffic it shaped. Locally shed requests (the filter's own 429/503) say
//! nothing about a version and are left out.
//!
//! **Health score** = success rate × latency factor, where the latency factor is 1 when the
//! candidate's p99 is within its limit and `limit ÷ p99` when over (the limit is `max_p99_ms`,
//! or `max_p99_ratio × stable p99`, whichever is lower; 1 when neither is set). A candidate
//! answering every request within the limit scores its success rate; one 25 % over the limit
//! scores 0.8 × its success rate.

use std::collections::VecDeque;

use hdrhistogram::Histogram;
use knhk_core::class::Route;
use knhk_core::decision::Admission;
use knhk_core::receipt::Receipt;
use serde::Serialize;

use super::terms::Analysis;

/// Narrowest slot, nanoseconds.
pub const SLOT_NS: u64 = 100_000_000;
/// Slots a full window is split into at most (bounds memory: one pair of histograms each).
pub const MAX_SLOTS: u64 = 50;
/// Highest latency tracked, microseconds (1 h); larger values are clamped.
const MAX_LATENCY_US: u64 = 3_600_000_000;

fn histogram() -> Option<Histogram<u32>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).ok()
}

/// Counts of one version in one slot.
#[derive(Debug, Clone)]
struct Counts {
    total: u64,
    errors: u64,
    latency: Option<Histogram<u32>>,
}

impl Counts {
    fn new() -> Counts {
        Counts {
            total: 0,
            errors: 0,
            latency: histogram(),
        }
    }

    fn add(&mut self, other: &Counts) {
        self.total += other.total;
        self.errors += other.errors;
        if let (Some(mine), Some(theirs)) = (self.latency.as_mut(), other.latency.as_ref()) {
            let _ = mine.add(theirs);
        }
    }
}

#[derive(Debug, Clone)]
struct Slot {
    start_ns: u64,
    stable: Counts,
    candidate: Counts,
    first_index: u64,
    last_index: u64,
}

/// Figures of one version over a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VersionFigures {
    /// Receipts counted.
    pub samples: u64,
    /// Of which 5xx (or no response).
    pub errors: u64,
    /// `1 - errors / samples` (1 without samples).
    pub success_rate: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
}

impl VersionFigures {
    fn of(c: &Counts) -> VersionFigures {
        let (p50, p99) = c.latency.as_ref().map_or((0, 0), |h| {
            if h.is_empty() {
                (0, 0)
            } else {
                (h.value_at_quantile(0.5), h.value_at_quantile(0.99))
            }
        });
        VersionFigures {
            samples: c.total,
            errors: c.errors,
            success_rate: if c.total == 0 {
                1.0
            } else {
                1.0 - c.errors as f64 / c.total as f64
            },
            p50_ms: p50 as f64 / 1000.0,
            p99_ms: p99 as f64 / 1000.0,
        }
    }
}

/// Both versions over one window, and the receipt leaves it was computed from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figures {
    /// Stable version.
    pub stable: VersionFigures,
    /// Candidate version.
    pub candidate: VersionFigures,
    /// First leaf index counted (absent without samples).
    pub first_index: Option<u64>,
    /// Last leaf index counted.
    pub last_index: Option<u64>,
    /// Window length, milliseconds.
    pub window_ms: u64,
}

/// What the analysis says.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Every threshold holds.
    Pass {
        /// Health score.
        health: f64,
    },
    /// At least one threshold is broken.
    Fail {
        /// Health score.
        health: f64,
        /// Each broken threshold, with the figures.
        reasons: Vec<String>,
    },
    /// Too few samples to judge: the rollout holds.
    Inconclusive {
        /// Why.
        reason: String,
    },
}

impl Verdict {
    /// `pass`, `fail` or `inconclusive`, as the status names it.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Pass { .. } => "pass",
            Verdict::Fail { .. } => "fail",
            Verdict::Inconclusive { .. } => "inconclusive",
        }
    }
}

/// The sliding window of one rollout gate.
#[derive(Debug, Default)]
pub struct Window {
    slots: VecDeque<Slot>,
    min_epoch: u64,
    max_age_ns: u64,
    slot_ns: u64,
}

impl Window {
    /// An empty window counting receipts of config epoch `min_epoch` and later, keeping at
    /// most `max_age_ns` of history in at most [`MAX_SLOTS`] slots (100 ms or wider).
    pub fn new(min_epoch: u64, max_age_ns: u64) -> Window {
        Window {
            slots: VecDeque::new(),
            min_epoch,
            max_age_ns,
            slot_ns: SLOT_NS.max(max_age_ns / MAX_SLOTS),
        }
    }

    /// Count receipts received at `now_ns`; `first_index` is the leaf of `receipts[0]`.
    pub fn observe(&mut self, now_ns: u64, first_index: u64, receipts: &[Receipt]) {
        let start_ns = now_ns - now_ns % self.slot_ns;
        if self.slots.back().is_none_or(|s| s.start_ns != start_ns) {
            self.slots.push_back(Slot {
                start_ns,
                stable: Counts::new(),
                candidate: Counts::new(),
                first_index: u64::MAX,
                last_index: 0,
            });
        }
        let horizon = now_ns.saturating_sub(self.max_age_ns);
        while self
            .slots
            .front()
            .is_some_and(|s| s.start_ns + self.slot_ns <= horizon)
        {
            self.slots.pop_front();
        }
        let Some(slot) = self.slots.back_mut() else {
            return;
        };
        for (offset, r) in receipts.iter().enumerate() {
            if r.config_epoch < self.min_epoch || r.admission == Admission::Shed {
                continue;
            }
            let counts = match r.route {
                Some(Route::Stable) => &mut slot.stable,
                Some(Route::Canary) => &mut slot.candidate,
                None => continue,
            };
            counts.total += 1;
            if r.status == 0 || r.status >= 500 {
                counts.errors += 1;
            }
            if let Some(h) = counts.latency.as_mut() {
                h.saturating_record(u64::from(r.latency_us).clamp(1, MAX_LATENCY_US));
            }
            let index = first_index + offset as u64;
            slot.first_index = slot.first_index.min(index);
            slot.last_index = slot.last_index.max(index);
        }
    }

    /// Figures over the last `window_ms` before `now_ns`.
    pub fn figures(&self, now_ns: u64, window_ms: u64) -> Figures {
        let from = now_ns.saturating_sub(window_ms.saturating_mul(1_000_000));
        let mut stable = Counts::new();
        let mut candidate = Counts::new();
        let mut first = None::<u64>;
        let mut last = None::<u64>;
        for slot in self
            .slots
            .iter()
            .filter(|s| s.start_ns + self.slot_ns > from)
        {
            stable.add(&slot.stable);
            candidate.add(&slot.candidate);
            if slot.first_index != u64::MAX {
                first = Some(first.map_or(slot.first_index, |f| f.min(slot.first_index)));
                last = Some(last.map_or(slot.last_index, |l| l.max(slot.last_index)));
            }
        }
        Figures {
            stable: VersionFigures::of(&stable),
            candidate: VersionFigures::of(&candidate),
            first_index: first,
            last_index: last,
            window_ms,
        }
    }
}

/// The candidate's latency limit, milliseconds, when one is configured and computable.
fn latency_limit_ms(f: &Figures, a: &Analysis) -> Option<f64> {
    let ratio_limit = a.max_p99_ratio.and_then(|r| {
        (f.stable.samples >= a.min_samples && f.stable.p99_ms > 0.0).then_some(r * f.stable.p99_ms)
    });
    match (a.max_p99_ms, ratio_limit) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// Health score (see the module doc).
pub fn health(f: &Figures, a: &Analysis) -> f64 {
    let latency_factor = match latency_limit_ms(f, a) {
        Some(limit) if f.candidate.p99_ms > limit => limit / f.candidate.p99_ms,
        _ => 1.0,
    };
    f.candidate.success_rate * latency_factor
}

/// Judge the candidate under `a`.
pub fn verdict(f: &Figures, a: &Analysis) -> Verdict {
    if f.candidate.samples < a.min_samples {
        return Verdict::Inconclusive {
            reason: format!(
                "{} candidate samples in the last {} ms, need {}",
                f.candidate.samples, a.window_ms, a.min_samples
            ),
        };
    }
    let score = health(f, a);
    let mut reasons = Vec::new();
    if f.candidate.success_rate < a.min_success_rate {
        reasons.push(format!(
            "success rate {:.4} < {} ({} of {} failed)",
            f.candidate.success_rate, a.min_success_rate, f.candidate.errors, f.candidate.samples
        ));
    }
    if let Some(max) = a.max_p99_ms {
        if f.candidate.p99_ms > max {
            reasons.push(format!("p99 {:.1} ms > {max} ms", f.candidate.p99_ms));
        }
    }
    if let Some(ratio) = a.max_p99_ratio {
        if f.stable.samples >= a.min_samples && f.stable.p99_ms > 0.0 {
            let r = f.candidate.p99_ms / f.stable.p99_ms;
            if r > ratio {
                reasons.push(format!(
                    "p99 {:.1} ms is {r:.2}× stable's {:.1} ms > {ratio}×",
                    f.candidate.p99_ms, f.stable.p99_ms
                ));
            }
        }
    }
    if score < a.min_health {
        reasons.push(format!("health {score:.3} < {}", a.min_health));
    }
    if reasons.is_empty() {
        Verdict::Pass { health: score }
    } else {
        Verdict::Fail {
            health: score,
            reasons,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gates::config::GatesConfig;
    use knhk_core::receipt::ReceiptBuilder;

    fn receipt(route: Route, status: u16, latency_us: u32, epoch: u64) -> Receipt {
        // The analysis reads only the route, status, latency and epoch of a receipt.
        ReceiptBuilder::new(0)
            .route(Some(route))
            .status(status)
            .latency_us(latency_us)
            .config_epoch(epoch)
            .build()
    }

    fn analysis() -> Analysis {
        let mut a = GatesConfig::default().analysis();
        a.window_ms = 1_000;
        a.min_samples = 10;
        a.max_p99_ms = Some(100.0);
        a
    }

    const S: u64 = 1_000_000_000;

    /// Too few candidate samples is inconclusive, never a pass.
    #[test]
    fn low_traffic_is_inconclusive() {
        let mut w = Window::new(1, 10 * S);
        w.observe(S, 0, &[receipt(Route::Canary, 200, 1000, 1); 9]);
        assert!(matches!(
            verdict(&w.figures(S, 1000), &analysis()),
            Verdict::Inconclusive { .. }
        ));
    }

    /// Healthy traffic passes; 5xx breaks the success rate; slow answers break p99 and the
    /// health score; the cited leaf range covers exactly the counted receipts.
    #[test]
    fn thresholds_decide_the_verdict() {
        let a = analysis();
        let mut w = Window::new(1, 10 * S);
        w.observe(S, 100, &[receipt(Route::Canary, 200, 2_000, 1); 50]);
        w.observe(S, 150, &[receipt(Route::Stable, 200, 2_000, 1); 50]);
        let f = w.figures(S, 1000);
        assert!(matches!(verdict(&f, &a), Verdict::Pass { health } if health == 1.0));
        assert_eq!((f.first_index, f.last_index), (Some(100), Some(199)));
        w.observe(S, 200, &[receipt(Route::Canary, 503, 2_000, 1); 10]);
        let Verdict::Fail { reasons, .. } = verdict(&w.figures(S, 1000), &a) else {
            panic!("5xx must fail");
        };
        assert!(reasons[0].contains("success rate"), "{reasons:?}");
        let mut slow = Window::new(1, 10 * S);
        slow.observe(S, 0, &[receipt(Route::Canary, 200, 400_000, 1); 20]);
        let Verdict::Fail { reasons, health } = verdict(&slow.figures(S, 1000), &a) else {
            panic!("slow must fail");
        };
        assert!(reasons.iter().any(|r| r.contains("p99")), "{reasons:?}");
        assert!(health < 0.3, "{health}");
    }

    /// Receipts of older config epochs, shed requests and samples older than the window do not
    /// count.
    #[test]
    fn only_the_gates_own_recent_traffic_counts() {
        let a = analysis();
        let mut w = Window::new(5, 10 * S);
        w.observe(S, 0, &[receipt(Route::Canary, 503, 1, 4); 50]);
        let mut shed = receipt(Route::Canary, 503, 1, 5);
        shed.admission = Admission::Shed;
        w.observe(S, 50, &[shed; 50]);
        assert_eq!(w.figures(S, 1000).candidate.samples, 0);
        w.observe(S, 100, &[receipt(Route::Canary, 503, 1, 5); 50]);
        w.observe(3 * S, 150, &[receipt(Route::Canary, 200, 1, 5); 50]);
        let f = w.figures(3 * S, 1000);
        assert_eq!((f.candidate.samples, f.candidate.errors), (50, 0));
        assert!(matches!(verdict(&f, &a), Verdict::Pass { .. }));
    }

    /// A one-hour window fed every 100 ms for two hours keeps at most `MAX_SLOTS` slots, and
    /// its figures cover the last hour only.
    #[test]
    fn long_windows_stay_bounded() {
        let hour = 3_600 * S;
        let mut w = Window::new(0, hour);
        let mut t = S;
        while t < 3 * hour {
            w.observe(t, 0, &[receipt(Route::Canary, 200, 1_000, 0)]);
            t += SLOT_NS;
        }
        assert!(w.slots.len() as u64 <= MAX_SLOTS + 1, "{}", w.slots.len());
        let f = w.figures(t, 3_600_000);
        let per_hour = hour / SLOT_NS;
        assert!(
            f.candidate.samples <= per_hour + per_hour / MAX_SLOTS
                && f.candidate.samples >= per_hour - per_hour / MAX_SLOTS,
            "{}",
            f.candidate.samples
        );
    }

    /// The p99 ratio limit compares with stable only once stable has enough samples.
    #[test]
    fn ratio_limit_needs_stable_samples() {
        let mut a = analysis();
        a.max_p99_ms = None;
        a.max_p99_ratio = Some(2.0);
        let mut w = Window::new(0, 10 * S);
        w.observe(S, 0, &[receipt(Route::Canary, 200, 50_000, 0); 20]);
        assert!(matches!(
            verdict(&w.figures(S, 1000), &a),
            Verdict::Pass { .. }
        ));
        w.observe(S, 20, &[receipt(Route::Stable, 200, 10_000, 0); 20]);
        let Verdict::Fail { reasons, .. } = verdict(&w.figures(S, 1000), &a) else {
            panic!("5× stable's p99 must fail");
        };
        assert!(reasons[0].contains("stable"), "{reasons:?}");
    }
}
