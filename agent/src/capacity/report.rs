//! The capacity report: per class and route the figures of the last complete window, the
//! fitted model with the headroom to the class budget, the forecast, the hot keys, and
//! recommendations in words carrying their numbers. JSON for `GET /v1/capacity`, a table for
//! `knhk-agent capacity`.

use std::time::Duration;

use knhk_core::class::{Class, Route};
use serde::{Deserialize, Serialize};

use super::distinct::Distinct;
use super::heavy_hitters::SpaceSaving;
use super::queue_model::{self, Point};
use super::trend;
use super::{CapacityConfig, Counts, InForce, SeriesKey, State};

/// A window is complete this long after its end (receipts arrive in batches, ≤ 250 ms late).
pub const SETTLE: Duration = Duration::from_secs(1);
/// Served requests a window needs to be a point of the model.
pub const MIN_SERVED: u64 = 20;
/// Keyed requests before a key share is judged.
pub const MIN_KEYED: u64 = 100;
/// The top keys are called skewed when they carry at least this share of the traffic.
pub const SKEW_SHARE: f64 = 0.10;

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// When it was computed, ns since the Unix epoch.
    pub generated_at_ns: u64,
    /// Window length, seconds.
    pub window_s: f64,
    /// Complete windows held.
    pub windows: usize,
    /// Receipts older than the oldest window (not counted).
    pub late_receipts: u64,
    /// Receipts dated more than a minute after the agent's clock (not counted).
    pub future_receipts: u64,
    /// One entry per class and route seen.
    pub series: Vec<Series>,
    /// Hot keys.
    pub hot_keys: HotKeys,
    /// What to do, in words with numbers.
    pub recommendations: Vec<String>,
}

/// One class on one route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// `R1`, `W1` or `C1`.
    pub class: String,
    /// `stable`, `canary` or `excluded`.
    pub route: String,
    /// The version the route serves under the policy in force (`routing.route_values`).
    pub version: Option<String>,
    /// The class's p99 budget in force, milliseconds.
    pub budget_ms: f64,
    /// The last complete window.
    pub now: Option<Now>,
    /// The fitted model, or why there is none.
    pub model: Model,
    /// The trend of the rate and the time until the budget rate.
    pub forecast: Option<Forecast>,
}

/// The figures of one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Now {
    /// Its start, ns since the Unix epoch.
    pub window_start_ns: u64,
    /// Requests per second (served and shed).
    pub rate_rps: f64,
    /// Served requests per second.
    pub served_rps: f64,
    /// p50 latency of served requests, milliseconds.
    pub p50_ms: f64,
    /// p99 latency of served requests, milliseconds.
    pub p99_ms: f64,
    /// Share of requests shed.
    pub shed_share: f64,
    /// Share of served requests answered 5xx.
    pub error_share: f64,
}

/// The load–latency model of a series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Model {
    /// Fitted: `servers` parallel servers of mean service time `service_ms`.
    Fitted {
        /// Parallel servers `c`.
        servers: u32,
        /// Mean service time `S`, milliseconds (mean latency at the lowest loads).
        service_ms: f64,
        /// Squared coefficient of variation of the service time.
        service_cv2: f64,
        /// p99 of the service time, milliseconds.
        service_p99_ms: f64,
        /// Where the servers saturate, `c / S`, requests per second.
        saturation_rps: f64,
        /// Where the model's p99 reaches the budget; `None` when the service alone exceeds it.
        budget_rps: Option<f64>,
        /// `budget_rps` ÷ the current served rate.
        headroom_factor: Option<f64>,
        /// `budget_rps` − the current served rate.
        headroom_rps: Option<f64>,
        /// Relative RMSE of the fitted mean latencies.
        relative_rmse: f64,
        /// Windows fitted.
        windows: usize,
    },
    /// Not fitted; `reason` says why (always starting "insufficient data").
    InsufficientData {
        /// Why.
        reason: String,
    },
}

/// The trend of a series' rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// Change of the rate, requests per second per hour.
    pub trend_rps_per_hour: f64,
    /// The same relative to the current level, percent per hour.
    pub trend_percent_per_hour: f64,
    /// Seconds until the rate reaches the budget rate at the trend; `None` when it does not.
    pub budget_in_s: Option<f64>,
    /// The earliest of the band (trend + 1.96 standard errors).
    pub budget_earliest_s: Option<f64>,
    /// The latest of the band; `None` when the band's flattest slope does not rise.
    pub budget_latest_s: Option<f64>,
    /// Seconds until the rate reaches the saturation rate `c / S` at the trend.
    pub saturation_in_s: Option<f64>,
}

/// The hot keys of all keyed traffic and of canary traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotKeys {
    /// All keyed requests.
    pub all: KeyShare,
    /// Keyed requests routed to canary.
    pub canary: KeyShare,
}

/// The top keys of one stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyShare {
    /// Keyed requests counted.
    pub requests: u64,
    /// The most any count below overestimates (requests ÷ counters at most).
    pub error_bound: u64,
    /// The top keys, by count.
    pub top: Vec<HotKey>,
    /// Share of requests the top keys carry (an upper bound: counts may overestimate).
    pub top_share: f64,
    /// The top keys carry at least 10 % of the requests (with at least 100 requests).
    pub skewed: bool,
    /// Distinct keys seen (HyperLogLog estimate, ±1.6 % standard error).
    pub distinct_keys: u64,
    /// The share of requests the top 1 % of distinct keys carry, bracketed; `None` when that
    /// many keys exceed the sketch's counters.
    pub top_1_percent: Option<ShareBounds>,
}

/// A share known to lie in `[lower, upper]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareBounds {
    /// Keys it covers (1 % of the distinct keys, at least one).
    pub keys: usize,
    /// Guaranteed lower bound: counts less their overestimate bound.
    pub lower: f64,
    /// Upper bound: the counts as counted.
    pub upper: f64,
}

/// One hot key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotKey {
    /// The receipt key digest, hex (the key itself is never known to the agent).
    pub key_digest: String,
    /// Its routing bucket (0–9999; the bucket the route follows), as the latest receipt
    /// gave it; `None` for a receipt without one.
    pub routing_bucket: Option<u16>,
    /// Counted requests (the true count is in `[count − error, count]`).
    pub count: u64,
    /// Overestimate bound.
    pub error: u64,
    /// `count` ÷ requests.
    pub share: f64,
}

/// A class as reports name it.
pub fn class_name(c: Class) -> &'static str {
    match c {
        Class::R1 => "R1",
        Class::W1 => "W1",
        Class::C1 => "C1",
    }
}

fn route_name(r: Option<Route>) -> &'static str {
    match r {
        Some(Route::Stable) => "stable",
        Some(Route::Canary) => "canary",
        None => "excluded",
    }
}

/// A key digest as the report writes it: lowercase hex.
pub fn hex_digest(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn key_share(sketch: &SpaceSaving, distinct: &Distinct, n: usize) -> KeyShare {
    let requests = sketch.total();
    let distinct_keys = distinct.estimate();
    let percent_keys = usize::try_from(distinct_keys.div_ceil(100))
        .unwrap_or(usize::MAX)
        .max(1);
    // One ranking serves both the top keys and the top 1 %.
    let ranked = sketch.top(n.max(percent_keys));
    let top_1_percent = (requests > 0 && percent_keys <= sketch.capacity()).then(|| {
        let top = &ranked[..percent_keys.min(ranked.len())];
        let total = requests as f64;
        ShareBounds {
            keys: percent_keys,
            lower: top.iter().map(|e| e.count - e.error).sum::<u64>() as f64 / total,
            upper: (top.iter().map(|e| e.count).sum::<u64>() as f64 / total).min(1.0),
        }
    });
    let top: Vec<HotKey> = ranked
        .iter()
        .take(n)
        .map(|e| HotKey {
            key_digest: hex_digest(&e.key),
            routing_bucket: (e.tag != knhk_core::receipt::NO_BUCKET).then_some(e.tag),
            count: e.count,
            error: e.error,
            share: e.count as f64 / requests.max(1) as f64,
        })
        .collect();
    let top_share = top.iter().map(|k| k.share).sum::<f64>().min(1.0);
    KeyShare {
        requests,
        distinct_keys,
        top_1_percent,
        error_bound: sketch.error_bound(),
        skewed: requests >= MIN_KEYED && top_share >= SKEW_SHARE,
        top,
        top_share,
    }
}

fn ms(us: f64) -> f64 {
    us / 1000.0
}

/// A rate for people: "1,450", "900", "12.5".
pub fn fmt_rate(r: f64) -> String {
    if r >= 1000.0 {
        let whole = r.round() as u64;
        let digits = whole.to_string();
        let mut out = String::new();
        for (i, ch) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(ch);
        }
        out
    } else if r >= 10.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

/// A duration for people: "45 s", "12 min", "7 h", "3 d".
pub fn fmt_duration(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 2.0 * 3600.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 2.0 * 86_400.0 {
        format!("{:.0} h", s / 3600.0)
    } else {
        format!("{:.0} d", s / 86_400.0)
    }
}

fn fmt_ms(v: f64) -> String {
    if v >= 1000.0 && (v / 1000.0).fract() == 0.0 {
        format!("{:.0} s", v / 1000.0)
    } else if v >= 10.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

/// The hot keys of the state.
pub(super) fn hot_keys(config: &CapacityConfig, state: &State) -> HotKeys {
    HotKeys {
        all: key_share(&state.keys, &state.distinct, config.top_keys),
        canary: key_share(&state.canary_keys, &state.canary_distinct, config.top_keys),
    }
}

/// Build the report from the state.
pub(super) fn build(
    config: &CapacityConfig,
    state: &State,
    now_ns: u64,
    in_force: &InForce,
) -> Report {
    let window_ns = u64::try_from(config.window.as_nanos()).unwrap_or(u64::MAX);
    let window_s = config.window.as_secs_f64();
    let settle_ns = u64::try_from(SETTLE.as_nanos()).unwrap_or(0);
    let complete: Vec<&super::Window> = state
        .windows
        .iter()
        .filter(|w| {
            w.start_ns
                .saturating_add(window_ns)
                .saturating_add(settle_ns)
                <= now_ns
        })
        .collect();
    let mut keys: Vec<SeriesKey> = complete
        .iter()
        .flat_map(|w| w.series.keys().copied())
        .collect();
    keys.sort();
    keys.dedup();
    let mut series = Vec::new();
    let mut recommendations = Vec::new();
    for key in keys {
        let mut s = build_series(
            key,
            &complete,
            window_s,
            in_force.budgets_ms[key.class.index()],
        );
        s.version = match key.route {
            Some(Route::Stable) => Some(in_force.versions[0].clone()),
            Some(Route::Canary) => Some(in_force.versions[1].clone()),
            None => None,
        };
        recommendations.extend(recommend(&s));
        series.push(s);
    }
    let hot_keys = hot_keys(config, state);
    for (share, what) in [(&hot_keys.canary, "canary"), (&hot_keys.all, "keyed")] {
        if share.skewed {
            recommendations.push(format!(
                "the top {} keys carry {:.0} % of {what} traffic: the {} sample is skewed",
                share.top.len(),
                share.top_share * 100.0,
                if what == "canary" {
                    "canary"
                } else {
                    "traffic"
                }
            ));
        }
    }
    Report {
        generated_at_ns: now_ns,
        window_s,
        windows: complete.len(),
        late_receipts: state.late,
        future_receipts: state.ahead,
        series,
        hot_keys,
        recommendations,
    }
}

fn build_series(
    key: SeriesKey,
    windows: &[&super::Window],
    window_s: f64,
    budget_ms: f64,
) -> Series {
    let empty = Counts::new();
    let counts: Vec<(u64, &Counts)> = windows
        .iter()
        .map(|w| (w.start_ns, w.series.get(&key).unwrap_or(&empty)))
        .collect();
    let now = counts.last().map(|(start, c)| Now {
        window_start_ns: *start,
        rate_rps: c.requests as f64 / window_s,
        served_rps: c.served() as f64 / window_s,
        p50_ms: ms(c.latency_at(0.5) as f64),
        p99_ms: ms(c.latency_at(0.99) as f64),
        shed_share: c.shed as f64 / c.requests.max(1) as f64,
        error_share: c.errors as f64 / c.served().max(1) as f64,
    });
    let model = fit_model(
        &counts,
        window_s,
        budget_ms,
        now.as_ref().map_or(0.0, |n| n.served_rps),
    );
    let first = counts.iter().position(|(_, c)| c.requests > 0).unwrap_or(0);
    let samples: Vec<(f64, f64)> = counts[first..]
        .iter()
        .map(|(start, c)| (*start as f64 / 1e9, c.requests as f64 / window_s))
        .collect();
    let forecast = trend::fit(&samples).map(|t| {
        let (budget_rps, saturation_rps) = match &model {
            Model::Fitted {
                budget_rps,
                saturation_rps,
                ..
            } => (*budget_rps, Some(*saturation_rps)),
            Model::InsufficientData { .. } => (None, None),
        };
        let eta = budget_rps.and_then(|b| t.eta(b));
        Forecast {
            trend_rps_per_hour: t.slope * 3600.0,
            trend_percent_per_hour: if t.level > 0.0 {
                t.slope * 3600.0 / t.level * 100.0
            } else {
                0.0
            },
            budget_in_s: eta.map(|e| e.seconds),
            budget_earliest_s: eta.map(|e| e.earliest_s),
            budget_latest_s: eta.and_then(|e| e.latest_s),
            saturation_in_s: saturation_rps.and_then(|r| t.eta(r)).map(|e| e.seconds),
        }
    });
    Series {
        class: class_name(key.class).to_owned(),
        route: route_name(key.route).to_owned(),
        version: None,
        budget_ms,
        now,
        model,
        forecast,
    }
}

fn fit_model(counts: &[(u64, &Counts)], window_s: f64, budget_ms: f64, served_now: f64) -> Model {
    let mut points: Vec<(Point, &Counts)> = counts
        .iter()
        .filter(|(_, c)| c.served() >= MIN_SERVED)
        .map(|(_, c)| {
            (
                Point {
                    rate: c.served() as f64 / window_s,
                    mean_s: c.latency_mean() / 1e6,
                    n: c.served(),
                },
                *c,
            )
        })
        .collect();
    if points.len() < queue_model::MIN_WINDOWS {
        return Model::InsufficientData {
            reason: queue_model::NoFit::TooFewWindows {
                have: points.len(),
                need: queue_model::MIN_WINDOWS,
            }
            .to_string(),
        };
    }
    // The service time and its spread: the lowest-load quarter of the windows (at least two).
    points.sort_by(|a, b| a.0.rate.total_cmp(&b.0.rate));
    let low = (points.len() / 4).max(2);
    let Some(mut service) = super::histogram() else {
        return Model::InsufficientData {
            reason: "insufficient data: no latency histogram".to_owned(),
        };
    };
    for (_, c) in &points[..low] {
        if let Some(h) = &c.latency {
            let _ = service.add(h);
        }
    }
    let service_s = service.mean() / 1e6;
    let sd = service.stdev() / 1e6;
    let service_cv2 = if service_s > 0.0 {
        (sd / service_s).powi(2).min(4.0)
    } else {
        0.0
    };
    let service_p99_s = service.value_at_quantile(0.99) as f64 / 1e6;
    let plain: Vec<Point> = points.iter().map(|(p, _)| *p).collect();
    match queue_model::fit(&plain, service_s, service_cv2) {
        Ok(fit) => {
            let budget_rps = fit.rate_at_p99(budget_ms / 1000.0, service_p99_s);
            Model::Fitted {
                servers: fit.servers,
                service_ms: service_s * 1000.0,
                service_cv2,
                service_p99_ms: service_p99_s * 1000.0,
                saturation_rps: fit.saturation_rate,
                budget_rps,
                headroom_factor: budget_rps
                    .filter(|_| served_now > 0.0)
                    .map(|b| b / served_now),
                headroom_rps: budget_rps.map(|b| b - served_now),
                relative_rmse: fit.relative_rmse,
                windows: plain.len(),
            }
        }
        Err(e) => Model::InsufficientData {
            reason: e.to_string(),
        },
    }
}

fn recommend(s: &Series) -> Vec<String> {
    let mut out = Vec::new();
    let who = match &s.version {
        Some(v) if *v != s.route => format!("{} on {v} ({})", s.class, s.route),
        _ => format!("{} on {}", s.class, s.route),
    };
    if let Some(now) = &s.now {
        if now.p99_ms > s.budget_ms && now.served_rps > 0.0 {
            out.push(format!(
                "{who} is over its {} p99 now: {} at {} req/s",
                fmt_ms(s.budget_ms),
                fmt_ms(now.p99_ms),
                fmt_rate(now.served_rps)
            ));
        }
        if now.shed_share >= 0.01 {
            out.push(format!(
                "{who} shed {:.0} % of its requests in the last window",
                now.shed_share * 100.0
            ));
        }
    }
    match &s.model {
        Model::Fitted {
            budget_rps: Some(budget_rps),
            headroom_factor,
            ..
        } => {
            let now = s.now.as_ref().map_or(0.0, |n| n.served_rps);
            let mut line = format!(
                "{who} reaches its {} p99 at ≈ {} req/s (now {} req/s",
                fmt_ms(s.budget_ms),
                fmt_rate(*budget_rps),
                fmt_rate(now)
            );
            if let Some(f) = headroom_factor {
                line.push_str(&format!(", headroom {f:.1}×"));
            }
            line.push(')');
            if let Some(f) = &s.forecast {
                match f.budget_in_s {
                    Some(eta) => line.push_str(&format!(
                        "; at {:+.0} %/h that is in ≈ {}",
                        f.trend_percent_per_hour,
                        fmt_duration(eta)
                    )),
                    None => line.push_str("; the rate is not rising toward it"),
                }
            }
            out.push(line);
        }
        Model::Fitted {
            budget_rps: None,
            service_p99_ms,
            ..
        } => out.push(format!(
            "{who}: the service's own p99 ({}) exceeds the {} budget at any load",
            fmt_ms(*service_p99_ms),
            fmt_ms(s.budget_ms)
        )),
        Model::InsufficientData { reason } => out.push(format!("{who}: {reason}")),
    }
    out
}

/// The report as a table for a terminal.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<3} {:<9} {:>9} {:>9} {:>9} {:>6} {:>11} {:>11} {:>9}\n",
        "cls", "route", "req/s", "p99", "budget", "shed", "saturates", "budget at", "headroom"
    ));
    for s in &report.series {
        let (rate, p99, shed) =
            s.now
                .as_ref()
                .map_or(("-".to_owned(), "-".to_owned(), "-".to_owned()), |n| {
                    (
                        fmt_rate(n.served_rps),
                        fmt_ms(n.p99_ms),
                        format!("{:.0}%", n.shed_share * 100.0),
                    )
                });
        let (sat, at, head) = match &s.model {
            Model::Fitted {
                saturation_rps,
                budget_rps,
                headroom_factor,
                ..
            } => (
                fmt_rate(*saturation_rps),
                budget_rps.map_or("-".to_owned(), fmt_rate),
                headroom_factor.map_or("-".to_owned(), |f| format!("{f:.1}×")),
            ),
            Model::InsufficientData { .. } => ("?".to_owned(), "?".to_owned(), "?".to_owned()),
        };
        out.push_str(&format!(
            "{:<3} {:<9} {:>9} {:>9} {:>9} {:>6} {:>11} {:>11} {:>9}\n",
            s.class,
            s.route,
            rate,
            p99,
            fmt_ms(s.budget_ms),
            shed,
            sat,
            at,
            head
        ));
    }
    for (what, share) in [
        ("keyed", &report.hot_keys.all),
        ("canary", &report.hot_keys.canary),
    ] {
        if share.requests == 0 {
            continue;
        }
        out.push_str(&format!(
            "top {} {what} keys: {:.1} % of {} requests (counts overestimate by ≤ {}); ≈ {} distinct keys",
            share.top.len(),
            share.top_share * 100.0,
            share.requests,
            share.error_bound,
            share.distinct_keys
        ));
        if let Some(b) = &share.top_1_percent {
            out.push_str(&format!(
                ", the top 1 % ({} keys) carry {:.0}–{:.0} %",
                b.keys,
                b.lower * 100.0,
                b.upper * 100.0
            ));
        }
        out.push('\n');
    }
    for r in &report.recommendations {
        out.push_str(&format!("- {r}\n"));
    }
    out
}
