//! Which requests the p99 is measured on: per class, one in `every`, picked by a per-worker
//! pseudorandom sequence, so at high rates a worker reads the clock twice on a sample of its
//! requests, not on all of them.
//!
//! The p99 verdict is a share ("more than 1 % of samples over the budget", see
//! [`super::WindowTotals`]). Timing a uniform random sample of one request in `every` estimates
//! that share without bias; its standard error over `n` sampled requests is
//! `sqrt(p (1 − p) / n)` — at p = 1 % and a window of 10,000 requests sampled one in eight
//! (n = 1,250), 0.28 percentage points.
//!
//! Sampling never starves a window: at each tick a class's `every` is set from the rate the
//! worker saw since the last tick, so that a window still holds at least
//! [`SAMPLED_WINDOW_MARGIN`] × `min_samples` timed requests from this worker alone; below that
//! rate every request is timed, and `admission.latency_sample_every` is only the ceiling. Until
//! a worker's first two ticks have measured a rate, it times everything.
//!
//! The sequence is xorshift64 (Marsaglia 2003), not the request order, so a periodic pattern in
//! the traffic (every eighth request slow) cannot line up with the sample, and a client cannot
//! tell which of its requests are timed. It decides nothing about routing: decisions stay a
//! pure function of the key.

use crate::bucket::mix64;
use crate::class::Class;
use crate::policy::Policy;

/// Sampling keeps at least this many times `min_samples` timed requests per window.
pub const SAMPLED_WINDOW_MARGIN: u64 = 4;

/// One worker's sampling sequence and its current rate per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySampler {
    state: u64,
    every: [u16; 3],
    last_adapt_ms: Option<u64>,
}

impl LatencySampler {
    /// A sequence seeded by `seed` (a worker id, say): workers with different seeds pick
    /// different requests. Any seed is valid (it is mixed into a non-zero state). Times every
    /// request until [`LatencySampler::adapt`] has measured a rate.
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed; xorshift's state must not be zero.
        let z = mix64(seed.wrapping_add(0x9e37_79b9_7f4a_7c15));
        LatencySampler {
            state: if z == 0 { 1 } else { z },
            every: [1; 3],
            last_adapt_ms: None,
        }
    }

    /// At a tick: set each class's `every` from the `requests` of that class this worker saw
    /// since the previous call (at `now_ms`): as large as keeps [`SAMPLED_WINDOW_MARGIN`] ×
    /// `min_samples` timed requests per window at that rate, at most the policy's
    /// `latency_sample_every`, at least 1.
    pub fn adapt(&mut self, policy: &Policy, requests: [u64; 3], now_ms: u64) {
        let last = self.last_adapt_ms.replace(now_ms);
        let Some(elapsed_ms) = last.map(|l| now_ms.saturating_sub(l)).filter(|&e| e > 0) else {
            return;
        };
        for class in Class::ALL {
            let i = class.index();
            let budget = policy.budget(class);
            let per_window = requests[i].saturating_mul(u64::from(budget.window_ms)) / elapsed_ms;
            let needed = SAMPLED_WINDOW_MARGIN.saturating_mul(u64::from(budget.min_samples));
            let every =
                (per_window / needed.max(1)).clamp(1, u64::from(policy.latency_sample_every));
            // Clamped to a u16 ceiling above.
            self.every[i] = every as u16;
        }
    }

    /// The current one-in-`every` of each class, indexed by [`Class::index`].
    pub fn every(&self) -> [u16; 3] {
        self.every
    }

    /// Whether the next request of `class` is timed: always when its `every` is 1, else with
    /// probability 1 / `every` (the top 32 bits of the next xorshift64 value, scaled onto
    /// `0..every`).
    pub fn next_is_sampled(&mut self, class: Class) -> bool {
        let every = self.every[class.index()];
        if every <= 1 {
            return true;
        }
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        ((x >> 32) * u64::from(every)) >> 32 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MAX_LATENCY_SAMPLE_EVERY;

    /// A sampler at a fixed one-in-`every` for every class.
    fn fixed(seed: u64, every: u16) -> LatencySampler {
        LatencySampler {
            every: [every; 3],
            ..LatencySampler::new(seed)
        }
    }

    fn policy(json: &str) -> Policy {
        Policy::from_json(json.as_bytes()).unwrap()
    }

    /// `every` = 1 times every request; 0 does too rather than never; a new sampler, which
    /// has measured no rate yet, times everything.
    #[test]
    fn every_one_times_everything() {
        let mut s = fixed(7, 1);
        assert!((0..1_000).all(|_| s.next_is_sampled(Class::W1)));
        let mut s = fixed(7, 0);
        assert!((0..1_000).all(|_| s.next_is_sampled(Class::W1)));
        let mut s = LatencySampler::new(7);
        assert!((0..1_000).all(|_| Class::ALL.iter().all(|&c| s.next_is_sampled(c))));
    }

    /// A class's `every` follows its rate: as large as keeps four times `min_samples` timed
    /// requests per window, capped by `latency_sample_every`, never below 1; each class by its
    /// own window and `min_samples`; the first tick only starts the clock.
    #[test]
    fn every_adapts_to_the_rate_so_windows_keep_their_samples() {
        // W1: window 10 s, min_samples 100 → 400 timed requests per window needed.
        // R1: window 1 s, min_samples 10 → 40.
        let p = policy(
            r#"{"admission":{"classes":{"R1":{"p99_max_ms":100,"window_ms":1000,"min_samples":10}}}}"#,
        );
        let mut s = LatencySampler::new(1);
        s.adapt(&p, [1_000, 1_000, 1_000], 1_000);
        assert_eq!(s.every(), [1, 1, 1], "no rate measured at the first tick");
        // 100 ms: R1 20 requests (200 per window → 5), W1 40 (4,000 → 10, capped at 8),
        // C1 5 (500 → 1.25 → 1).
        s.adapt(&p, [20, 40, 5], 1_100);
        assert_eq!(s.every(), [5, 8, 1]);
        // The rate falls: back to timing everything.
        s.adapt(&p, [0, 3, 0], 1_200);
        assert_eq!(s.every(), [1, 1, 1]);
        // No time passed: nothing measured, nothing changed.
        s.adapt(&p, [100_000, 100_000, 100_000], 1_200);
        assert_eq!(s.every(), [1, 1, 1]);
        // latency_sample_every: 1 times everything at any rate.
        let every_request = policy(r#"{"admission":{"latency_sample_every":1}}"#);
        s.adapt(&every_request, [1 << 40, 1 << 40, 1 << 40], 1_300);
        assert_eq!(s.every(), [1, 1, 1]);
        // A huge count over a long window saturates instead of overflowing.
        s.adapt(&p, [u64::MAX, u64::MAX, u64::MAX], 1_301);
        assert_eq!(s.every(), [8, 8, 8]);
    }

    /// At a rate that allows sampling, a window still holds at least the margin's worth of
    /// timed requests: over a 10 s W1 window at 500 req/s (ticks of 100 ms), ≥ 400 timed.
    #[test]
    fn sampled_windows_keep_at_least_the_margin() {
        let p = policy(r#"{"admission":{"enabled":true}}"#);
        let mut s = LatencySampler::new(5);
        let mut timed = 0u32;
        for tick in 0..100u64 {
            s.adapt(&p, [0, 50, 0], tick * 100);
            timed += (0..50).filter(|_| s.next_is_sampled(Class::W1)).count() as u32;
        }
        assert_eq!(s.every()[Class::W1.index()], 8);
        assert!(timed >= 400, "{timed} timed of 5000");
    }

    /// The sampled share is 1 / every within four standard errors, for every accepted value.
    #[test]
    fn sampled_share_is_one_in_every() {
        for every in 2..=MAX_LATENCY_SAMPLE_EVERY {
            for seed in [0u64, 1, 42, u64::MAX] {
                let mut s = fixed(seed, every);
                let n = 200_000u32;
                let hits = (0..n).filter(|_| s.next_is_sampled(Class::R1)).count() as f64;
                let p = 1.0 / f64::from(every);
                let sd = (f64::from(n) * p * (1.0 - p)).sqrt();
                assert!(
                    (hits - f64::from(n) * p).abs() < 4.0 * sd,
                    "every {every} seed {seed}: {hits} of {n}"
                );
            }
        }
    }

    /// A periodic pattern cannot line up with the sample: with every eighth request slow and
    /// one in eight timed, the timed share of slow requests is still one in eight, within
    /// four standard errors of its estimate (a counter would time all of them or none).
    #[test]
    fn periodic_traffic_does_not_alias() {
        for period in [2u32, 4, 8, 16, 50] {
            let mut s = fixed(3, 8);
            let (mut timed, mut timed_slow) = (0u32, 0u32);
            let n = 400_000u32;
            for i in 0..n {
                if s.next_is_sampled(Class::W1) {
                    timed += 1;
                    if i.is_multiple_of(period) {
                        timed_slow += 1;
                    }
                }
            }
            let p = 1.0 / f64::from(period);
            let share = f64::from(timed_slow) / f64::from(timed);
            let se = (p * (1.0 - p) / f64::from(timed)).sqrt();
            assert!(
                (share - p).abs() < 4.0 * se,
                "period {period}: slow share among timed {share}, true {p}"
            );
        }
    }

    /// The documented error bound holds for the p99 verdict's input: over 200 windows of 10,000
    /// requests with 1 % of them over budget (picked by an unrelated generator), the share of
    /// timed requests over budget is within four standard errors of 1 % in every window, and
    /// within two in at least 90 % of them (a normal estimate: 95 %).
    #[test]
    fn over_budget_share_estimate_is_within_its_standard_error() {
        let mut sampler = fixed(11, 8);
        let mut traffic = 0x2545_f491_4f6c_dd1du64;
        let (mut within_two, windows) = (0u32, 200u32);
        for _ in 0..windows {
            let (mut timed, mut over) = (0u32, 0u32);
            for _ in 0..10_000 {
                // An LCG (Knuth's MMIX constants): 1 % of requests are slow.
                traffic = traffic
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let slow = (traffic >> 33).is_multiple_of(100);
                if sampler.next_is_sampled(Class::C1) {
                    timed += 1;
                    over += u32::from(slow);
                }
            }
            let share = f64::from(over) / f64::from(timed);
            let se = (0.01 * 0.99 / f64::from(timed)).sqrt();
            assert!((share - 0.01).abs() < 4.0 * se, "share {share}, se {se}");
            within_two += u32::from((share - 0.01).abs() < 2.0 * se);
        }
        assert!(within_two * 10 >= windows * 9, "{within_two} of {windows}");
    }

    /// Two workers' sequences differ.
    #[test]
    fn seeds_pick_different_requests() {
        let (mut a, mut b) = (fixed(1, 8), fixed(2, 8));
        let same = (0..10_000)
            .filter(|_| a.next_is_sampled(Class::W1) == b.next_is_sampled(Class::W1))
            .count();
        // Independent picks agree with probability 1 − 2 p (1 − p) = 0.78.
        assert!((7_400..8_200).contains(&same), "{same} of 10000 agree");
    }
}
