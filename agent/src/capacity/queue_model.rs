//! The load–latency model behind the headroom figures: a service of `c` parallel servers with
//! mean service time `S` (M/G/c), its mean waiting time by Erlang's C formula scaled by the
//! Allen–Cunneen factor `(1 + Cs²) / 2` for the spread of service times, fitted to (rate, mean
//! latency) windows. Every figure can be checked by hand from the fitted `c`, `S` and `Cs²`
//! (docs/capacity.md).

/// One window of observations: request rate and mean latency of the admitted requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Requests per second.
    pub rate: f64,
    /// Mean latency, seconds.
    pub mean_s: f64,
    /// Requests in the window (the point's weight).
    pub n: u64,
}

/// A fitted model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Parallel servers.
    pub servers: u32,
    /// Mean service time, seconds (the mean latency at the lowest loads).
    pub service_s: f64,
    /// Squared coefficient of variation of the service time (0: constant, 1: exponential).
    pub service_cv2: f64,
    /// The rate the servers saturate at, `c / S`, requests per second.
    pub saturation_rate: f64,
    /// Root mean square of the relative error of the fitted mean latencies.
    pub relative_rmse: f64,
}

/// Why no model was fitted.
#[derive(Debug, Clone, PartialEq)]
pub enum NoFit {
    /// Too few windows with enough requests.
    TooFewWindows {
        /// Windows seen.
        have: usize,
        /// Windows needed.
        need: usize,
    },
    /// The load did not vary enough to see how latency depends on it.
    LoadTooSteady {
        /// Highest rate ÷ lowest rate.
        spread: f64,
    },
    /// Latency did not rise with load (in at least two windows): the saturation point lies
    /// beyond what was seen.
    NoQueueing {
        /// The highest rate seen, a lower bound of the saturation rate.
        max_rate: f64,
    },
    /// No model explains the windows well enough.
    PoorFit {
        /// The best relative RMSE.
        relative_rmse: f64,
    },
}

impl std::fmt::Display for NoFit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoFit::TooFewWindows { have, need } => {
                write!(f, "insufficient data: {have} windows with traffic, {need} needed")
            }
            NoFit::LoadTooSteady { spread } => write!(
                f,
                "insufficient data: the load varied only {spread:.2}× (at least {MIN_SPREAD}× needed)"
            ),
            NoFit::NoQueueing { max_rate } => write!(
                f,
                "insufficient data: latency did not rise with load up to {max_rate:.0} req/s, so saturation lies beyond it"
            ),
            NoFit::PoorFit { relative_rmse } => write!(
                f,
                "insufficient data: no queueing model fits (relative error {:.0} %)",
                relative_rmse * 100.0
            ),
        }
    }
}

/// Windows needed for a fit.
pub const MIN_WINDOWS: usize = 6;
/// The load must vary at least this much (highest ÷ lowest rate).
pub const MIN_SPREAD: f64 = 1.5;
/// Latency must rise at least this much over the service time for queueing to be seen.
pub const MIN_RISE: f64 = 1.05;
/// Windows whose latency must show that rise (one noisy window is not queueing).
pub const MIN_RISEN: usize = 2;
/// A fit whose relative RMSE exceeds this is refused.
pub const MAX_RELATIVE_RMSE: f64 = 0.35;
/// The largest server count tried.
pub const MAX_SERVERS: u32 = 4096;

/// Erlang's C formula: the probability that an arrival waits, for `c` servers offered
/// `a = λ·S` erlangs (`a < c`).
pub fn erlang_c(c: u32, a: f64) -> f64 {
    if a <= 0.0 {
        return 0.0;
    }
    if a >= f64::from(c) {
        return 1.0;
    }
    // Erlang B by its recurrence (stable for large c), then C from B.
    let mut b = 1.0;
    for k in 1..=c {
        let k = f64::from(k);
        b = a * b / (k + a * b);
    }
    let rho = a / f64::from(c);
    b / (1.0 - rho + rho * b)
}

/// The Allen–Cunneen factor for Poisson arrivals and service-time spread `cv2`.
fn spread_factor(cv2: f64) -> f64 {
    (1.0 + cv2) / 2.0
}

impl Fit {
    /// Offered load at `rate`, erlangs.
    fn offered(&self, rate: f64) -> f64 {
        rate * self.service_s
    }

    /// The model's mean latency at `rate`; `None` at or beyond saturation.
    pub fn mean_latency(&self, rate: f64) -> Option<f64> {
        mean_latency(self.servers, self.service_s, self.service_cv2, rate)
    }

    /// The model's p99 latency at `rate`, given the p99 of the service time itself: that plus
    /// the waiting time's p99, `f·S·ln(C / 0.01) / (c − a)` (the tail of the M/M/c wait,
    /// scaled by the spread factor `f`); `None` at or beyond saturation.
    pub fn p99_latency(&self, rate: f64, service_p99_s: f64) -> Option<f64> {
        let a = self.offered(rate);
        let c = f64::from(self.servers);
        if a >= c {
            return None;
        }
        let waits = erlang_c(self.servers, a);
        let wait_p99 = if waits > 0.01 {
            spread_factor(self.service_cv2) * self.service_s * (waits / 0.01).ln() / (c - a)
        } else {
            0.0
        };
        Some(service_p99_s + wait_p99)
    }

    /// The rate at which the model's p99 reaches `budget_s` (bisection; below saturation);
    /// `None` when the service alone exceeds the budget.
    pub fn rate_at_p99(&self, budget_s: f64, service_p99_s: f64) -> Option<f64> {
        if service_p99_s >= budget_s {
            return None;
        }
        let (mut lo, mut hi) = (0.0, self.saturation_rate);
        for _ in 0..100 {
            let mid = (lo + hi) / 2.0;
            match self.p99_latency(mid, service_p99_s) {
                Some(p) if p <= budget_s => lo = mid,
                _ => hi = mid,
            }
        }
        Some(lo)
    }
}

fn mean_latency(c: u32, service_s: f64, cv2: f64, rate: f64) -> Option<f64> {
    let a = rate * service_s;
    let cf = f64::from(c);
    if a >= cf {
        return None;
    }
    let wait = spread_factor(cv2) * erlang_c(c, a) * service_s / (cf - a);
    Some(service_s + wait)
}

/// Fit the model to `points`, with the service time and its spread measured at the lowest
/// loads (`service_s`, `service_cv2`): the server count whose mean latencies are closest, in
/// relative terms and weighted by requests, to those observed.
pub fn fit(points: &[Point], service_s: f64, service_cv2: f64) -> Result<Fit, NoFit> {
    let points: Vec<Point> = points
        .iter()
        .copied()
        .filter(|p| p.rate > 0.0 && p.mean_s > 0.0 && p.n > 0)
        .collect();
    if points.len() < MIN_WINDOWS {
        return Err(NoFit::TooFewWindows {
            have: points.len(),
            need: MIN_WINDOWS,
        });
    }
    let min_rate = points.iter().map(|p| p.rate).fold(f64::INFINITY, f64::min);
    let max_rate = points.iter().map(|p| p.rate).fold(0.0, f64::max);
    let spread = max_rate / min_rate;
    if spread < MIN_SPREAD {
        return Err(NoFit::LoadTooSteady { spread });
    }
    let risen = points
        .iter()
        .filter(|p| p.mean_s >= service_s * MIN_RISE)
        .count();
    if service_s <= 0.0 || risen < MIN_RISEN {
        return Err(NoFit::NoQueueing { max_rate });
    }
    let weight: f64 = points.iter().map(|p| p.n as f64).sum();
    // A window can run beyond saturation briefly (a queue building); the fit needs c > a for
    // the windows below it, so the smallest c tried is the one that holds the busiest window
    // at 99 % utilisation.
    let min_c = (((max_rate * service_s) / 0.99).floor() as u32 + 1).max(1);
    let error_at = |c: u32| -> f64 {
        let mut err = 0.0;
        for p in &points {
            let Some(m) = mean_latency(c, service_s, service_cv2, p.rate) else {
                return f64::INFINITY;
            };
            let rel = (m - p.mean_s) / p.mean_s;
            err += p.n as f64 * rel * rel;
        }
        (err / weight).sqrt()
    };
    // A geometric sweep of c (steps of at most 5 %), stopping once past twice the best, then
    // every c around the best: the error has one valley in c.
    let mut best: Option<(u32, f64)> = None;
    let mut c = min_c;
    while c <= MAX_SERVERS {
        let e = error_at(c);
        if best.is_none_or(|(_, b)| e < b) {
            best = Some((c, e));
        }
        if best.is_some_and(|(bc, _)| c > bc.saturating_mul(2)) {
            break;
        }
        c = (c + 1).max(c + c / 20);
    }
    if let Some((bc, _)) = best {
        let span = (bc / 20).max(1);
        for c in bc.saturating_sub(span).max(min_c)..=(bc + span).min(MAX_SERVERS) {
            let e = error_at(c);
            if best.is_none_or(|(_, b)| e < b) {
                best = Some((c, e));
            }
        }
    }
    let (servers, relative_rmse) = best.ok_or(NoFit::PoorFit {
        relative_rmse: f64::INFINITY,
    })?;
    if relative_rmse > MAX_RELATIVE_RMSE {
        return Err(NoFit::PoorFit { relative_rmse });
    }
    Ok(Fit {
        servers,
        service_s,
        service_cv2,
        saturation_rate: f64::from(servers) / service_s,
        relative_rmse,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::simulation::{Rng, Servers};

    /// Erlang C against published values: c = 1 is ρ; c = 2, a = 1 is 1/3; c = 10, a = 8 ≈ 0.409.
    #[test]
    fn erlang_c_matches_known_values() {
        assert!((erlang_c(1, 0.5) - 0.5).abs() < 1e-12);
        assert!((erlang_c(2, 1.0) - 1.0 / 3.0).abs() < 1e-12);
        assert!((erlang_c(10, 8.0) - 0.4092).abs() < 1e-3);
        assert_eq!(erlang_c(4, 0.0), 0.0);
        assert_eq!(erlang_c(4, 4.0), 1.0);
    }

    /// The mean latency of `n` requests to `c` servers of constant service `s` under Poisson
    /// arrivals at `rate`.
    fn simulate(c: usize, s: f64, rate: f64, n: usize, rng: &mut Rng) -> f64 {
        let mut servers = Servers::new(c, s);
        let mut t = 0.0;
        let mut total = 0.0;
        for _ in 0..n {
            t += rng.exp(rate);
            total += servers.serve(t);
        }
        total / n as f64
    }

    /// Windows of a simulated 8-server, 20 ms service (saturation 400 req/s) under rising
    /// load up to 85 %: the fit finds the saturation rate within ±20 %, and the rate at which
    /// p99 reaches a budget lies below it.
    #[test]
    fn a_known_capacity_is_found_within_20_percent() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (c, s) = (8, 0.020);
        let points: Vec<Point> = [40.0, 80.0, 120.0, 160.0, 200.0, 240.0, 280.0, 310.0, 340.0]
            .iter()
            .map(|&rate| Point {
                rate,
                mean_s: simulate(c, s, rate, 20_000, &mut rng),
                n: 1_000,
            })
            .collect();
        let fit = fit(&points, s, 0.0).unwrap();
        let truth = 400.0;
        assert!(
            (fit.saturation_rate - truth).abs() / truth <= 0.20,
            "{fit:?}"
        );
        let budget = fit.rate_at_p99(0.100, s).unwrap();
        assert!(
            budget < fit.saturation_rate && budget > 300.0,
            "{budget} {fit:?}"
        );
        // The model's p99 at that rate is the budget.
        assert!((fit.p99_latency(budget, s).unwrap() - 0.100).abs() < 1e-3);
    }

    /// No made-up figure: too few windows, a steady load, a latency that never rose, or
    /// windows no model explains are each "insufficient data".
    #[test]
    fn poor_data_is_insufficient_never_a_figure() {
        let p = |rate: f64, mean_s: f64| Point {
            rate,
            mean_s,
            n: 500,
        };
        let few: Vec<Point> = (1..=3).map(|i| p(f64::from(i) * 50.0, 0.02)).collect();
        assert!(matches!(
            fit(&few, 0.02, 0.0),
            Err(NoFit::TooFewWindows { have: 3, .. })
        ));
        let steady: Vec<Point> = (0..10).map(|i| p(100.0 + f64::from(i), 0.03)).collect();
        assert!(matches!(
            fit(&steady, 0.02, 0.0),
            Err(NoFit::LoadTooSteady { .. })
        ));
        let flat: Vec<Point> = (1..=10).map(|i| p(f64::from(i) * 30.0, 0.0201)).collect();
        match fit(&flat, 0.02, 0.0) {
            Err(NoFit::NoQueueing { max_rate }) => assert_eq!(max_rate, 300.0),
            other => panic!("{other:?}"),
        }
        // Latency that falls as load rises fits no queue.
        let backwards: Vec<Point> = (1..=10)
            .map(|i| p(f64::from(i) * 30.0, 0.2 / f64::from(i)))
            .collect();
        assert!(matches!(
            fit(&backwards, 0.02, 0.0),
            Err(NoFit::PoorFit { .. })
        ));
        for e in [
            fit(&few, 0.02, 0.0).unwrap_err(),
            fit(&steady, 0.02, 0.0).unwrap_err(),
        ] {
            assert!(e.to_string().starts_with("insufficient data"), "{e}");
        }
    }
}
