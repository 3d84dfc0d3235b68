//! Percentiles of measured samples for the tests' and benches' reports, from an HDR histogram
//! (`hdrhistogram`, 3 significant digits): one way for all of them to compute p50/p99.

use std::time::Duration;

use hdrhistogram::Histogram;

/// A distribution of non-negative samples, kept at a fixed resolution.
#[derive(Debug, Clone)]
pub struct Distribution {
    hist: Histogram<u64>,
    resolution: f64,
}

impl Distribution {
    /// An empty distribution of values kept to `resolution` (e.g. `0.001` for milliseconds
    /// kept to the microsecond); a value keeps 3 significant digits above that.
    pub fn new(resolution: f64) -> Self {
        Distribution {
            // Auto-resizing: no upper bound to choose; 3 significant digits always fit.
            hist: Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits")),
            resolution,
        }
    }

    /// `values` kept to `resolution`.
    pub fn of(values: impl IntoIterator<Item = f64>, resolution: f64) -> Self {
        let mut d = Self::new(resolution);
        for v in values {
            d.record(v);
        }
        d
    }

    /// `durations`, kept to the microsecond; read back with [`Distribution::duration_at`].
    pub fn of_durations(durations: impl IntoIterator<Item = Duration>) -> Self {
        Self::of(durations.into_iter().map(|d| d.as_secs_f64()), 1e-6)
    }

    /// Record one value (negative and NaN values count as 0).
    pub fn record(&mut self, value: f64) {
        let units = (value / self.resolution).round();
        let units = if units.is_finite() && units > 0.0 {
            units as u64
        } else {
            0
        };
        // `record` grows the auto-resizing histogram; past its largest size, clamp.
        if self.hist.record(units).is_err() {
            self.hist.saturating_record(units);
        }
    }

    /// Samples recorded.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// The `p`-th percentile (0–100): the smallest value with at least `p` % of the samples at
    /// or below it (0: the minimum, 100: the maximum); NaN when empty.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.hist.is_empty() {
            return f64::NAN;
        }
        let units = if p <= 0.0 {
            self.hist.min()
        } else if p >= 100.0 {
            self.hist.max()
        } else {
            self.hist.value_at_percentile(p)
        };
        units as f64 * self.resolution
    }

    /// [`Distribution::percentile`] of a distribution of seconds, as a duration (zero when
    /// empty).
    pub fn duration_at(&self, p: f64) -> Duration {
        Duration::try_from_secs_f64(self.percentile(p)).unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small integers are exact: nearest-rank p50, p99, minimum and maximum of 1..=100.
    #[test]
    fn exact_for_small_values() {
        let d = Distribution::of((1..=100).map(f64::from), 1.0);
        assert_eq!(
            [0.0, 50.0, 99.0, 100.0].map(|p| d.percentile(p)),
            [1.0, 50.0, 99.0, 100.0]
        );
        assert_eq!(d.len(), 100);
    }

    /// Durations keep 3 significant digits at microsecond resolution; empty is NaN / zero.
    #[test]
    fn durations_and_empty() {
        let d = Distribution::of_durations((1..=1000).map(Duration::from_millis));
        let p99 = d.duration_at(99.0);
        assert!(
            p99 >= Duration::from_millis(990) && p99 <= Duration::from_millis(991),
            "{p99:?}"
        );
        let empty = Distribution::new(1.0);
        assert!(empty.percentile(50.0).is_nan());
        assert_eq!(empty.duration_at(50.0), Duration::ZERO);
    }
}
