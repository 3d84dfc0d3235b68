//! The terms every part of the promotion gates shares: the gates, the analysis thresholds and
//! their validation, and weights in basis points. A leaf of `gates/`: the defaults (`config`),
//! the rollout document (`spec`) and the state machine (`state`) all build on it.

use serde::{Deserialize, Serialize};

use super::GatesError;

/// A promotion gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gate {
    /// The candidate takes a rising share of keys.
    Canary,
    /// The candidate serves a defined audience in full.
    Staging,
    /// The candidate is the new stable.
    Production,
}

impl Gate {
    /// The name used in APIs and receipts.
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Canary => "canary",
            Gate::Staging => "staging",
            Gate::Production => "production",
        }
    }

    /// Inverse of [`Gate::as_str`] (case-insensitive).
    pub fn parse(name: &str) -> Option<Gate> {
        match name.to_ascii_lowercase().as_str() {
            "canary" => Some(Gate::Canary),
            "staging" => Some(Gate::Staging),
            "production" => Some(Gate::Production),
            _ => None,
        }
    }
}

/// Canary steps when the rollout names none, percent (the Flagger-style ramp).
pub const DEFAULT_STEPS: [f64; 5] = [1.0, 5.0, 10.0, 25.0, 50.0];

/// Analysis settings: the `[gates.analysis]` defaults, and those in force for a rollout
/// (its overrides merged over the defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Analysis {
    /// Evaluation period, milliseconds.
    pub interval_ms: u64,
    /// Sliding window, milliseconds.
    pub window_ms: u64,
    /// Passing time before automatic promotion, milliseconds.
    pub pass_for_ms: u64,
    /// Candidate samples needed for a verdict.
    pub min_samples: u64,
    /// Minimum candidate success rate (the older sidecar's SLO threshold, 0.95).
    pub min_success_rate: f64,
    /// Maximum candidate p99, milliseconds.
    pub max_p99_ms: Option<f64>,
    /// Maximum candidate p99 ÷ stable p99.
    pub max_p99_ratio: Option<f64>,
    /// Minimum health score (the older sidecar's 0.8).
    pub min_health: f64,
    /// Failed evaluations in a row that trigger a rollback.
    pub failure_threshold: u32,
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            interval_ms: 200,
            window_ms: 30_000,
            pass_for_ms: 60_000,
            min_samples: 100,
            min_success_rate: 0.95,
            max_p99_ms: None,
            max_p99_ratio: None,
            min_health: 0.8,
            failure_threshold: 2,
        }
    }
}

/// Percent (0..=100) to basis points, rounded to the nearest.
pub fn percent_to_bp(percent: f64) -> u16 {
    let bp = (percent * 100.0).round();
    if bp.is_nan() || bp <= 0.0 {
        0
    } else if bp >= 10_000.0 {
        10_000
    } else {
        // In (0, 10000) after the checks above.
        bp as u16
    }
}

impl Analysis {
    /// Check ranges; `prefix` names where the values came from.
    pub fn validate(&self, prefix: &str) -> Result<(), GatesError> {
        let f = |name: &str| format!("{prefix}.{name}");
        if !(10..=60_000).contains(&self.interval_ms) {
            return Err(invalid(f("interval_ms"), "must be within 10–60000"));
        }
        if self.window_ms < self.interval_ms || self.window_ms > 3_600_000 {
            return Err(invalid(
                f("window_ms"),
                "must be at least interval_ms and at most 1 h",
            ));
        }
        if self.pass_for_ms > 86_400_000 {
            return Err(invalid(f("pass_for_ms"), "must be at most 24 h"));
        }
        if self.min_samples == 0 {
            return Err(invalid(f("min_samples"), "must be at least 1"));
        }
        check_fraction(&f("min_success_rate"), self.min_success_rate)?;
        check_fraction(&f("min_health"), self.min_health)?;
        if let Some(ms) = self.max_p99_ms {
            if !(ms.is_finite() && ms > 0.0) {
                return Err(invalid(f("max_p99_ms"), "must be positive"));
            }
        }
        if let Some(r) = self.max_p99_ratio {
            if !(r.is_finite() && r >= 1.0) {
                return Err(invalid(f("max_p99_ratio"), "must be at least 1"));
            }
        }
        if self.failure_threshold == 0 || self.failure_threshold > 1000 {
            return Err(invalid(f("failure_threshold"), "must be within 1–1000"));
        }
        Ok(())
    }
}

/// A rollout document refusal naming `field`.
pub(super) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> GatesError {
    GatesError::InvalidSpec {
        field: field.into(),
        reason: reason.into(),
    }
}

/// `value` must be a fraction in (0, 1].
fn check_fraction(field: &str, value: f64) -> Result<(), GatesError> {
    if value.is_finite() && value > 0.0 && value <= 1.0 {
        Ok(())
    } else {
        Err(invalid(field, format!("{value} must be in (0, 1]")))
    }
}
