//! The saturation forecast: the least-squares trend of the request rate over the windows held,
//! with the slope's standard error, and the time until the rate reaches a limit at that trend
//! (a band from the slope ± 1.96 standard errors).

/// A linear trend `rate(t) = level + slope · (t − t_last)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trend {
    /// The fitted rate at the last window, requests per second.
    pub level: f64,
    /// Change of the rate, requests per second per second.
    pub slope: f64,
    /// Standard error of the slope.
    pub slope_se: f64,
}

/// When the rate reaches a limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Eta {
    /// At the fitted slope, seconds from the last window.
    pub seconds: f64,
    /// At the steepest slope of the band (the earliest time).
    pub earliest_s: f64,
    /// At the flattest slope of the band; `None` when it is not rising.
    pub latest_s: Option<f64>,
}

/// Fit a trend to `(time_s, rate)` samples; `None` for fewer than three or no spread in time.
pub fn fit(samples: &[(f64, f64)]) -> Option<Trend> {
    let n = samples.len();
    if n < 3 {
        return None;
    }
    let nf = n as f64;
    let mean_t = samples.iter().map(|s| s.0).sum::<f64>() / nf;
    let mean_r = samples.iter().map(|s| s.1).sum::<f64>() / nf;
    let sxx: f64 = samples.iter().map(|s| (s.0 - mean_t).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = samples
        .iter()
        .map(|s| (s.0 - mean_t) * (s.1 - mean_r))
        .sum();
    let slope = sxy / sxx;
    let intercept = mean_r - slope * mean_t;
    let residual: f64 = samples
        .iter()
        .map(|s| (s.1 - intercept - slope * s.0).powi(2))
        .sum();
    let slope_se = (residual / (nf - 2.0) / sxx).sqrt();
    let t_last = samples
        .iter()
        .map(|s| s.0)
        .fold(f64::NEG_INFINITY, f64::max);
    Some(Trend {
        level: intercept + slope * t_last,
        slope,
        slope_se,
    })
}

impl Trend {
    /// When the rate reaches `limit`; `None` when it is already there or not rising
    /// significantly (the band's steepest slope is not positive).
    pub fn eta(&self, limit: f64) -> Option<Eta> {
        let gap = limit - self.level;
        if gap <= 0.0 {
            return None;
        }
        let steep = self.slope + 1.96 * self.slope_se;
        let flat = self.slope - 1.96 * self.slope_se;
        if self.slope <= 0.0 || steep <= 0.0 {
            return None;
        }
        Some(Eta {
            seconds: gap / self.slope,
            earliest_s: gap / steep,
            latest_s: (flat > 0.0).then(|| gap / flat),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rate rising 2 req/s per minute from 100 reaches 160 in 30 minutes after the last
    /// sample; noise widens the band around it; a flat or falling rate has no ETA.
    #[test]
    fn a_rising_rate_reaches_its_limit_on_time() {
        let exact: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i) * 60.0, 100.0 + 2.0 * f64::from(i)))
            .collect();
        let t = fit(&exact).unwrap();
        assert!((t.level - 118.0).abs() < 1e-9 && (t.slope - 2.0 / 60.0).abs() < 1e-12);
        let eta = t.eta(160.0).unwrap();
        assert!((eta.seconds - 42.0 / (2.0 / 60.0)).abs() < 1e-6);
        assert_eq!(eta.earliest_s, eta.seconds, "no noise, no band");

        let noisy: Vec<(f64, f64)> = exact
            .iter()
            .enumerate()
            .map(|(i, &(t, r))| (t, r + if i % 2 == 0 { 3.0 } else { -3.0 }))
            .collect();
        let eta = fit(&noisy).unwrap().eta(160.0).unwrap();
        assert!(eta.earliest_s < eta.seconds);
        assert!(eta.latest_s.is_none_or(|l| l > eta.seconds));

        let flat: Vec<(f64, f64)> = (0..10).map(|i| (f64::from(i), 100.0)).collect();
        assert_eq!(fit(&flat).unwrap().eta(160.0), None);
        let falling: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), 100.0 - f64::from(i)))
            .collect();
        assert_eq!(fit(&falling).unwrap().eta(160.0), None);
        assert_eq!(fit(&exact[..2]), None);
    }
}
