//! The older sidecar's SLO settings, honoured as overrides of the class budgets and strategy
//! in every policy the agent pushes (`../shared/LEGACY-SETTINGS.md`):
//!
//! | variable | sets, in every pushed policy |
//! |---|---|
//! | `KGC_SIDECAR_SLO_R1_P99_MAX_NS` | `admission.classes.R1.p99_max_ns` (nanoseconds, as the old sidecar) |
//! | `KGC_SIDECAR_SLO_W1_P99_MAX_MS` | `admission.classes.W1.p99_max_ms` |
//! | `KGC_SIDECAR_SLO_C1_P99_MAX_MS` | `admission.classes.C1.p99_max_ms` |
//! | `KGC_SIDECAR_SLO_ADMISSION_STRATEGY` | `strategy` of all three classes: `strict` or `degrade` |
//!
//! An unset variable leaves the policy's own value. The old sidecar's defaults are not adopted:
//! its R1 budget of 2 ns was an in-process figure, meaningless for an HTTP round trip (every
//! request would be over budget), and its W1 default of 1 ms contradicts its own documents;
//! knhk's defaults (R1 100 ms, W1 500 ms, C1 5 s) apply. Refused at start, naming the
//! variable: a value that is not a whole number, zero, more than one hour, a budget tighter
//! than a hotter class's (among the variables set), an unknown strategy. A policy that the
//! overrides make invalid against its own values (say W1 overridden below the file's R1) is
//! refused when it is published, naming the variables, and nothing is published.

use serde_json::{Map, Value};

use super::PolicyError;

/// The longest budget accepted, nanoseconds (one hour, as the filter accepts).
const MAX_BUDGET_NS: u64 = knhk_core::policy::MAX_BUDGET_NS;

/// The SLO overrides in force (all unset by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SloOverrides {
    /// R1 p99 budget, nanoseconds.
    pub r1_p99_max_ns: Option<u64>,
    /// W1 p99 budget, milliseconds.
    pub w1_p99_max_ms: Option<u64>,
    /// C1 p99 budget, milliseconds.
    pub c1_p99_max_ms: Option<u64>,
    /// `strict` or `degrade`, for every class.
    pub strategy: Option<&'static str>,
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> PolicyError {
    PolicyError::Setting {
        setting,
        reason: reason.into(),
    }
}

/// A budget: a whole number above zero, at most one hour once in nanoseconds.
fn budget(setting: &'static str, raw: &str, ns_per_unit: u64) -> Result<u64, PolicyError> {
    let value: u64 = raw
        .trim()
        .parse()
        .map_err(|_| invalid(setting, format!("{raw:?} is not a whole number")))?;
    if value == 0 {
        return Err(invalid(setting, "a p99 budget must be greater than zero"));
    }
    if value.saturating_mul(ns_per_unit) > MAX_BUDGET_NS {
        return Err(invalid(setting, format!("{value} is more than one hour")));
    }
    Ok(value)
}

impl SloOverrides {
    /// Read the four variables through `env`.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, PolicyError> {
        let mut out = SloOverrides::default();
        if let Some(v) = env("KGC_SIDECAR_SLO_R1_P99_MAX_NS") {
            out.r1_p99_max_ns = Some(budget("KGC_SIDECAR_SLO_R1_P99_MAX_NS", &v, 1)?);
        }
        if let Some(v) = env("KGC_SIDECAR_SLO_W1_P99_MAX_MS") {
            out.w1_p99_max_ms = Some(budget("KGC_SIDECAR_SLO_W1_P99_MAX_MS", &v, 1_000_000)?);
        }
        if let Some(v) = env("KGC_SIDECAR_SLO_C1_P99_MAX_MS") {
            out.c1_p99_max_ms = Some(budget("KGC_SIDECAR_SLO_C1_P99_MAX_MS", &v, 1_000_000)?);
        }
        if let Some(v) = env("KGC_SIDECAR_SLO_ADMISSION_STRATEGY") {
            out.strategy = Some(match v.trim().to_ascii_lowercase().as_str() {
                "strict" => "strict",
                "degrade" => "degrade",
                _ => {
                    return Err(invalid(
                        "KGC_SIDECAR_SLO_ADMISSION_STRATEGY",
                        format!("{v:?} is not \"strict\" or \"degrade\""),
                    ))
                }
            });
        }
        out.check_order()?;
        Ok(out)
    }

    /// Budgets loosen from R1 to W1 to C1, among those set.
    fn check_order(&self) -> Result<(), PolicyError> {
        let ms = |v: Option<u64>| v.map(|m| m.saturating_mul(1_000_000));
        let set = [
            ("KGC_SIDECAR_SLO_R1_P99_MAX_NS", self.r1_p99_max_ns),
            ("KGC_SIDECAR_SLO_W1_P99_MAX_MS", ms(self.w1_p99_max_ms)),
            ("KGC_SIDECAR_SLO_C1_P99_MAX_MS", ms(self.c1_p99_max_ms)),
        ];
        for (i, (colder, colder_ns)) in set.iter().enumerate() {
            for (hotter, hotter_ns) in &set[..i] {
                if let (Some(c), Some(h)) = (colder_ns, hotter_ns) {
                    if c < h {
                        return Err(invalid(
                            colder,
                            format!("{c} ns is tighter than {hotter} ({h} ns): budgets must loosen from R1 to W1 to C1"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether any override is set.
    pub fn any(&self) -> bool {
        *self != SloOverrides::default()
    }

    /// Apply the overrides to a policy document (an object; creating `admission.classes` as
    /// needed). A class budget set here replaces the policy's, in either unit.
    pub fn apply(&self, policy: &mut Value) {
        if !self.any() {
            return;
        }
        let Some(doc) = policy.as_object_mut() else {
            return;
        };
        let Some(classes) = object(doc, "admission").and_then(|a| object(a, "classes")) else {
            return;
        };
        let budgets = [
            ("R1", self.r1_p99_max_ns.map(|v| ("p99_max_ns", v))),
            ("W1", self.w1_p99_max_ms.map(|v| ("p99_max_ms", v))),
            ("C1", self.c1_p99_max_ms.map(|v| ("p99_max_ms", v))),
        ];
        for (class, budget) in budgets {
            if budget.is_none() && self.strategy.is_none() {
                continue;
            }
            let Some(c) = object(classes, class) else {
                continue;
            };
            if let Some((field, value)) = budget {
                c.remove("p99_max_ns");
                c.remove("p99_max_ms");
                c.insert(field.to_owned(), value.into());
            }
            if let Some(strategy) = self.strategy {
                c.insert("strategy".to_owned(), strategy.into());
            }
        }
    }
}

/// `map[key]` as an object, replacing anything else there (a validated policy has none).
fn object<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    let slot = map
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

#[cfg(test)]
mod tests;
