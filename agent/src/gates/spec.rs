//! A rollout as an operator writes it (`POST /v1/rollouts`, `knhk-agent rollout start`), with
//! the analysis thresholds filled in from the agent's `[gates]` defaults, and its validation.

use serde::{Deserialize, Serialize};

use super::config::GatesConfig;
use super::terms::{invalid, percent_to_bp, Analysis, Gate};
use super::GatesError;

/// Largest rollout document accepted, bytes.
pub const MAX_SPEC_BYTES: usize = 64 * 1024;
/// Most canary steps.
pub const MAX_STEPS: usize = 32;
/// Most rollout flags.
pub const MAX_FLAGS: usize = 32;
/// A rollout request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// Identifier: 1–64 of `[A-Za-z0-9._-]`.
    pub id: String,
    /// Version serving everyone now: the value the filter writes in the route header for
    /// stable traffic (Envoy's routes map it to a cluster).
    pub stable: String,
    /// Version being rolled out (route header value of canary traffic).
    pub candidate: String,
    /// Canary weights, percent, strictly increasing, each in (0, 100]. Absent or empty: the
    /// `[gates]` default ramp, filled in by [`RolloutSpec::from_json`].
    #[serde(default)]
    pub steps: Vec<f64>,
    /// The staging gate: the candidate serves this audience in full, everyone else stays
    /// stable. The object is the filter's `routing.audience`. Absent: no staging gate.
    #[serde(default)]
    pub staging: Option<serde_json::Value>,
    /// Allow canary → production without staging.
    #[serde(default)]
    pub direct_to_production: bool,
    /// Gate the rollout starts in (default from `[gates] environment`).
    #[serde(default)]
    pub start: Option<Gate>,
    /// Promote automatically when a gate's analysis passed for `analysis.pass_for_ms`.
    #[serde(default = "yes")]
    pub auto_promote: bool,
    /// Roll back automatically on `analysis.failure_threshold` failed evaluations in a row
    /// (default from `[gates] auto_rollback`).
    #[serde(default)]
    pub auto_rollback: Option<bool>,
    /// Analysis overrides; unset fields take the `[gates]` defaults.
    #[serde(default)]
    pub analysis: AnalysisOverrides,
    /// Feature flags this rollout turns on, per gate.
    #[serde(default)]
    pub flags: Vec<FlagSpec>,
}

fn yes() -> bool {
    true
}

/// A rollout flag: the share of keys (percent) it is on for in each gate. Disabled on
/// rollback and abort.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagSpec {
    /// Flag name (the filter's `flags.items[].name`).
    pub name: String,
    /// Percent of keys during canary.
    #[serde(default)]
    pub canary: f64,
    /// Percent of keys during staging.
    #[serde(default)]
    pub staging: f64,
    /// Percent of keys once in production.
    #[serde(default)]
    pub production: f64,
}

impl FlagSpec {
    /// Basis points in `gate`.
    pub fn basis_points(&self, gate: Gate) -> u16 {
        percent_to_bp(match gate {
            Gate::Canary => self.canary,
            Gate::Staging => self.staging,
            Gate::Production => self.production,
        })
    }
}

/// Analysis settings a rollout may override.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisOverrides {
    /// Evaluation period, milliseconds.
    pub interval_ms: Option<u64>,
    /// Sliding window, milliseconds.
    pub window_ms: Option<u64>,
    /// How long a gate's analysis must keep passing before automatic promotion, ms.
    pub pass_for_ms: Option<u64>,
    /// Candidate samples the window must hold for a verdict.
    pub min_samples: Option<u64>,
    /// Minimum candidate success rate, (0, 1].
    pub min_success_rate: Option<f64>,
    /// Maximum candidate p99, milliseconds.
    pub max_p99_ms: Option<f64>,
    /// Maximum candidate p99 ÷ stable p99.
    pub max_p99_ratio: Option<f64>,
    /// Minimum health score, (0, 1].
    pub min_health: Option<f64>,
    /// Failed evaluations in a row that trigger a rollback.
    pub failure_threshold: Option<u32>,
}

fn check_name(field: &str, value: &str, max: usize) -> Result<(), GatesError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value:.80?} must be 1–{max} characters of [A-Za-z0-9._-]"),
        ))
    }
}

fn check_percent(field: &str, value: f64) -> Result<(), GatesError> {
    if value.is_finite() && (0.0..=100.0).contains(&value) {
        Ok(())
    } else {
        Err(invalid(field, format!("{value} must be within 0–100")))
    }
}

impl RolloutSpec {
    /// Parse and validate a rollout document.
    pub fn from_json(bytes: &[u8], defaults: &GatesConfig) -> Result<RolloutSpec, GatesError> {
        if bytes.len() > MAX_SPEC_BYTES {
            return Err(invalid(
                "<document>",
                format!("{} bytes exceeds {MAX_SPEC_BYTES}", bytes.len()),
            ));
        }
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let mut spec: RolloutSpec = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            invalid(
                if path == "." {
                    "<document>".into()
                } else {
                    path
                },
                e.inner().to_string(),
            )
        })?;
        if spec.steps.is_empty() {
            spec.steps = defaults.default_steps();
        }
        spec.validate(defaults)?;
        Ok(spec)
    }

    /// Check every field.
    pub fn validate(&self, defaults: &GatesConfig) -> Result<(), GatesError> {
        check_name("id", &self.id, 64)?;
        check_name("stable", &self.stable, 128)?;
        check_name("candidate", &self.candidate, 128)?;
        if self.stable == self.candidate {
            return Err(invalid("candidate", "must differ from stable"));
        }
        if self.steps.is_empty() || self.steps.len() > MAX_STEPS {
            return Err(invalid("steps", format!("need 1–{MAX_STEPS} steps")));
        }
        let mut last = 0u16;
        for (i, step) in self.steps.iter().enumerate() {
            let field = format!("steps[{i}]");
            if !(step.is_finite() && *step > 0.0 && *step <= 100.0) {
                return Err(invalid(field, format!("{step} must be in (0, 100]")));
            }
            let bp = percent_to_bp(*step);
            if bp <= last {
                return Err(invalid(
                    field,
                    "steps must rise strictly (a weight only moves keys toward the candidate)",
                ));
            }
            last = bp;
        }
        match &self.staging {
            Some(serde_json::Value::Object(_)) | None => {}
            Some(_) => return Err(invalid("staging", "must be an audience object")),
        }
        if self.staging.is_none() && !self.direct_to_production {
            return Err(invalid(
                "staging",
                "no staging audience and direct_to_production is false: the rollout could never reach production",
            ));
        }
        if self.start_gate(defaults) == Gate::Staging && self.staging.is_none() {
            return Err(invalid(
                "start",
                "starts in staging but has no staging audience",
            ));
        }
        if self.flags.len() > MAX_FLAGS {
            return Err(invalid("flags", format!("at most {MAX_FLAGS} flags")));
        }
        for (i, flag) in self.flags.iter().enumerate() {
            check_name(&format!("flags[{i}].name"), &flag.name, 64)?;
            if self.flags[..i].iter().any(|f| f.name == flag.name) {
                return Err(invalid(format!("flags[{i}].name"), "duplicate flag"));
            }
            for (gate, value) in [
                ("canary", flag.canary),
                ("staging", flag.staging),
                ("production", flag.production),
            ] {
                check_percent(&format!("flags[{i}].{gate}"), value)?;
            }
        }
        let a = self.analysis(defaults);
        a.validate("analysis")
    }

    /// The gate the rollout starts in.
    pub fn start_gate(&self, defaults: &GatesConfig) -> Gate {
        self.start.unwrap_or(defaults.environment)
    }

    /// Whether failed analysis rolls back on its own.
    pub fn auto_rollback(&self, defaults: &GatesConfig) -> bool {
        self.auto_rollback.unwrap_or(defaults.auto_rollback)
    }

    /// Canary weight of step `step`, basis points.
    pub fn step_bp(&self, step: usize) -> u16 {
        self.steps.get(step).copied().map_or(0, percent_to_bp)
    }

    /// Analysis settings: overrides over defaults.
    pub fn analysis(&self, defaults: &GatesConfig) -> Analysis {
        let o = &self.analysis;
        let d = &defaults.analysis;
        Analysis {
            interval_ms: o.interval_ms.unwrap_or(d.interval_ms),
            window_ms: o.window_ms.unwrap_or(d.window_ms),
            pass_for_ms: o.pass_for_ms.unwrap_or(d.pass_for_ms),
            min_samples: o.min_samples.unwrap_or(d.min_samples),
            min_success_rate: o.min_success_rate.unwrap_or(d.min_success_rate),
            max_p99_ms: o.max_p99_ms.or(d.max_p99_ms),
            max_p99_ratio: o.max_p99_ratio.or(d.max_p99_ratio),
            min_health: o.min_health.unwrap_or(d.min_health),
            failure_threshold: o.failure_threshold.unwrap_or(d.failure_threshold),
        }
    }
}
