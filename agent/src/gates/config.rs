//! The `[gates]` table of the agent configuration: defaults every rollout's analysis starts
//! from, and the older sidecar's promotion settings.
//!
//! ```toml
//! [gates]
//! environment = "canary"        # gate new rollouts start in (KGC_SIDECAR_PROMOTION_ENVIRONMENT)
//! auto_rollback = true          # KGC_SIDECAR_AUTO_ROLLBACK_ENABLED
//! first_step_percent = 1        # KGC_SIDECAR_PROMOTION_TRAFFIC_PERCENT (0 = the default ramp)
//! [gates.analysis]
//! interval_ms = 200
//! window_ms = 30000
//! pass_for_ms = 60000
//! min_samples = 100
//! min_success_rate = 0.95       # KGC_SIDECAR_SLO_THRESHOLD
//! min_health = 0.8
//! failure_threshold = 2
//! # max_p99_ms = 250.0
//! # max_p99_ratio = 1.5
//! ```

use serde::Deserialize;

use super::terms::{percent_to_bp, Analysis, Gate, DEFAULT_STEPS};
use super::GatesError;
use crate::settings;

/// Defaults of the `[gates]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatesConfig {
    /// Gate new rollouts start in.
    pub environment: Gate,
    /// Roll back automatically when analysis fails.
    pub auto_rollback: bool,
    /// First canary step of the default ramp, percent; 0 keeps the default ramp.
    pub first_step_percent: f64,
    /// Analysis defaults.
    pub analysis: Analysis,
}

impl Default for GatesConfig {
    fn default() -> Self {
        GatesConfig {
            environment: Gate::Canary,
            auto_rollback: true,
            first_step_percent: 0.0,
            analysis: Analysis::default(),
        }
    }
}

fn env_error(setting: &'static str, reason: impl Into<String>) -> GatesError {
    GatesError::InvalidSetting {
        setting,
        reason: reason.into(),
    }
}

impl GatesConfig {
    /// Apply the older sidecar's environment variables.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), GatesError> {
        if let Some(v) = env("KGC_SIDECAR_PROMOTION_ENVIRONMENT") {
            self.environment = Gate::parse(v.trim()).ok_or_else(|| {
                env_error(
                    "KGC_SIDECAR_PROMOTION_ENVIRONMENT",
                    format!("{v:?} is not one of canary, staging, production"),
                )
            })?;
        }
        if let Some(v) = env("KGC_SIDECAR_PROMOTION_TRAFFIC_PERCENT") {
            let p: f64 = v.trim().parse().map_err(|_| {
                env_error(
                    "KGC_SIDECAR_PROMOTION_TRAFFIC_PERCENT",
                    format!("{v:?} is not a number"),
                )
            })?;
            if !(p.is_finite() && (0.0..=100.0).contains(&p)) {
                return Err(env_error(
                    "KGC_SIDECAR_PROMOTION_TRAFFIC_PERCENT",
                    format!("{p} is outside 0–100"),
                ));
            }
            self.first_step_percent = p;
        }
        if let Some(v) = env("KGC_SIDECAR_AUTO_ROLLBACK_ENABLED") {
            self.auto_rollback = settings::env_bool("KGC_SIDECAR_AUTO_ROLLBACK_ENABLED", &v)
                .map_err(|e| env_error(e.setting, e.reason))?;
        }
        if let Some(v) = env("KGC_SIDECAR_SLO_THRESHOLD") {
            let t: f64 = v.trim().parse().map_err(|_| {
                env_error(
                    "KGC_SIDECAR_SLO_THRESHOLD",
                    format!("{v:?} is not a number"),
                )
            })?;
            if !(t.is_finite() && t > 0.0 && t <= 1.0) {
                return Err(env_error(
                    "KGC_SIDECAR_SLO_THRESHOLD",
                    format!("{t} is outside (0, 1]"),
                ));
            }
            self.analysis.min_success_rate = t;
        }
        Ok(())
    }

    /// Check every value.
    pub fn validate(&self) -> Result<(), GatesError> {
        if !(self.first_step_percent.is_finite()
            && (0.0..=100.0).contains(&self.first_step_percent))
        {
            return Err(env_error(
                "gates.first_step_percent",
                format!("{} is outside 0–100", self.first_step_percent),
            ));
        }
        self.analysis()
            .validate("gates.analysis")
            .map_err(|e| match e {
                GatesError::InvalidSpec { field, reason } => {
                    GatesError::InvalidConfig { field, reason }
                }
                other => other,
            })
    }

    /// The default analysis.
    pub fn analysis(&self) -> Analysis {
        self.analysis.clone()
    }

    /// The canary ramp a rollout gets when it names no steps: `first_step_percent` (when set)
    /// followed by the default steps above it.
    pub fn default_steps(&self) -> Vec<f64> {
        let first = self.first_step_percent;
        if percent_to_bp(first) == 0 {
            return DEFAULT_STEPS.to_vec();
        }
        std::iter::once(first)
            .chain(
                DEFAULT_STEPS
                    .iter()
                    .copied()
                    .filter(|s| percent_to_bp(*s) > percent_to_bp(first)),
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    /// The older sidecar's promotion settings apply; out-of-range or malformed values are
    /// refused naming the variable.
    #[test]
    fn legacy_promotion_settings() {
        let mut c = GatesConfig::default();
        c.apply_env(env(&[
            ("KGC_SIDECAR_PROMOTION_ENVIRONMENT", "staging"),
            ("KGC_SIDECAR_PROMOTION_TRAFFIC_PERCENT", "2"),
            ("KGC_SIDECAR_AUTO_ROLLBACK_ENABLED", "false"),
            ("KGC_SIDECAR_SLO_THRESHOLD", "0.99"),
        ]))
        .unwrap();
        assert_eq!(c.environment, Gate::Staging);
        assert!(!c.auto_rollback);
        assert_eq!(c.analysis.min_success_rate, 0.99);
        assert_eq!(c.default_steps(), vec![2.0, 5.0, 10.0, 25.0, 50.0]);
        c.validate().unwrap();
        for (name, value) in [
            ("KGC_SIDECAR_PROMOTION_ENVIRONMENT", "qa"),
            ("KGC_SIDECAR_PROMOTION_TRAFFIC_PERCENT", "101"),
            ("KGC_SIDECAR_PROMOTION_TRAFFIC_PERCENT", "-1"),
            ("KGC_SIDECAR_PROMOTION_TRAFFIC_PERCENT", "ten"),
            ("KGC_SIDECAR_AUTO_ROLLBACK_ENABLED", "maybe"),
            ("KGC_SIDECAR_SLO_THRESHOLD", "0"),
            ("KGC_SIDECAR_SLO_THRESHOLD", "1.5"),
            ("KGC_SIDECAR_SLO_THRESHOLD", "NaN"),
        ] {
            let err = GatesConfig::default()
                .apply_env(env(&[(name, value)]))
                .unwrap_err();
            assert!(err.to_string().contains(name), "{name}={value}: {err}");
        }
        let mut zero = GatesConfig::default();
        zero.apply_env(env(&[("KGC_SIDECAR_PROMOTION_TRAFFIC_PERCENT", "0")]))
            .unwrap();
        assert_eq!(zero.default_steps(), DEFAULT_STEPS.to_vec());
    }
}
