//! The rollout state machine: gates, phases, which transitions are allowed, and the fields of
//! the filter policy each state owns. Pure: no clock, no I/O.
//!
//! ```text
//!  canary step 0 → step 1 → … → last step ─┬─► staging ─► production (done)
//!                                          └─► production            (only with direct_to_production)
//!  any running gate ──rollback / abort──► rolled back / aborted (weight 0, rollout flags off)
//! ```

use serde::{Deserialize, Serialize};

use super::spec::RolloutSpec;
use super::terms::Gate;
use super::GatesError;

/// Where a rollout is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Analysing; promotes and rolls back on its own (as configured).
    Running,
    /// No automatic promotion; automatic rollback stays armed.
    Paused,
    /// Reached production: the candidate is the new stable.
    Completed,
    /// Analysis failed: all traffic back on stable.
    RolledBack,
    /// Stopped by an operator: all traffic back on stable.
    Aborted,
}

impl Phase {
    /// Whether no further transition is possible.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Completed | Phase::RolledBack | Phase::Aborted)
    }

    /// The name used in APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Paused => "paused",
            Phase::Completed => "completed",
            Phase::RolledBack => "rolled_back",
            Phase::Aborted => "aborted",
        }
    }
}

/// Position and phase of a rollout; persisted on every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutState {
    /// Current gate.
    pub gate: Gate,
    /// Index of the canary step (meaningful in the canary gate).
    pub step: usize,
    /// Lifecycle phase.
    pub phase: Phase,
    /// Config epoch from which receipts count toward this gate's analysis.
    pub since_epoch: u64,
    /// When the current gate (or step) began, ns since the epoch.
    pub since_ns: u64,
    /// Rollout flags disabled by an operator.
    pub disabled_flags: Vec<String>,
    /// Why the rollout last changed (cause of a rollback or abort).
    pub reason: Option<String>,
}

/// Where a promotion may lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Gate after the promotion.
    pub gate: Gate,
    /// Canary step after the promotion.
    pub step: usize,
}

fn refused(reason: impl Into<String>) -> GatesError {
    GatesError::InvalidTransition(reason.into())
}

impl RolloutState {
    /// The state a rollout starts in.
    pub fn start(gate: Gate, now_ns: u64) -> RolloutState {
        RolloutState {
            gate,
            step: 0,
            phase: if gate == Gate::Production {
                Phase::Completed
            } else {
                Phase::Running
            },
            since_epoch: 0,
            since_ns: now_ns,
            disabled_flags: Vec::new(),
            reason: None,
        }
    }

    /// The next gate of an automatic (or target-less manual) promotion.
    pub fn next(&self, spec: &RolloutSpec) -> Result<Target, GatesError> {
        self.check_live("promote")?;
        Ok(match self.gate {
            Gate::Canary if self.step + 1 < spec.steps.len() => Target {
                gate: Gate::Canary,
                step: self.step + 1,
            },
            Gate::Canary if spec.staging.is_some() => Target {
                gate: Gate::Staging,
                step: self.step,
            },
            Gate::Canary | Gate::Staging => Target {
                gate: Gate::Production,
                step: self.step,
            },
            Gate::Production => return Err(refused("the rollout is already in production")),
        })
    }

    /// Check a manual promotion to `to`; returns the target.
    pub fn promotion_to(&self, spec: &RolloutSpec, to: Gate) -> Result<Target, GatesError> {
        self.check_live("promote")?;
        match (self.gate, to) {
            (Gate::Canary, Gate::Canary) => self.next(spec).and_then(|t| {
                if t.gate == Gate::Canary {
                    Ok(t)
                } else {
                    Err(refused("canary is at its last step; promote to staging or production"))
                }
            }),
            (Gate::Canary, Gate::Staging) if spec.staging.is_some() => Ok(Target {
                gate: Gate::Staging,
                step: self.step,
            }),
            (Gate::Canary, Gate::Staging) => Err(refused(
                "this rollout has no staging audience",
            )),
            (Gate::Canary, Gate::Production) if spec.direct_to_production || spec.staging.is_none() => {
                Ok(Target {
                    gate: Gate::Production,
                    step: self.step,
                })
            }
            (Gate::Canary, Gate::Production) => Err(refused(
                "canary → production skips staging, and this rollout does not set direct_to_production",
            )),
            (Gate::Staging, Gate::Production) => Ok(Target {
                gate: Gate::Production,
                step: self.step,
            }),
            (Gate::Staging, Gate::Canary) => Err(refused(
                "staging → canary goes backwards; abort and start a new rollout",
            )),
            (Gate::Staging, Gate::Staging) => Err(refused("the rollout is already in staging")),
            (Gate::Production, _) => Err(refused(
                "the rollout is in production; start a new rollout to change versions",
            )),
        }
    }

    /// Refuse an action on a finished rollout.
    pub fn check_live(&self, action: &str) -> Result<(), GatesError> {
        if self.phase.is_terminal() {
            Err(refused(format!(
                "cannot {action}: the rollout is {} (start a new rollout)",
                self.phase.as_str()
            )))
        } else {
            Ok(())
        }
    }

    /// Canary weight in force, basis points.
    pub fn canary_bp(&self, spec: &RolloutSpec) -> u16 {
        match (self.phase, self.gate) {
            (Phase::RolledBack | Phase::Aborted, _) => 0,
            (_, Gate::Canary) => spec.step_bp(self.step),
            _ => 0,
        }
    }

    /// The filter policy fields this state owns, applied to `policy` (a filter configuration
    /// as JSON): route values, canary weight, staging audience, rollout flags.
    pub fn shape(&self, spec: &RolloutSpec, policy: &mut serde_json::Value) {
        let Some(root) = policy.as_object_mut() else {
            return;
        };
        let completed = self.phase == Phase::Completed;
        let stable = if completed {
            &spec.candidate
        } else {
            &spec.stable
        };
        let routing = root
            .entry("routing")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(routing) = routing.as_object_mut() {
            routing.insert(
                "route_values".to_owned(),
                serde_json::json!({"stable": stable, "canary": spec.candidate}),
            );
            routing.insert(
                "canary_basis_points".to_owned(),
                serde_json::json!(self.canary_bp(spec)),
            );
            let staging =
                matches!(self.phase, Phase::Running | Phase::Paused) && self.gate == Gate::Staging;
            match (&spec.staging, staging) {
                (Some(audience), true) => {
                    routing.insert("audience".to_owned(), audience.clone());
                }
                _ => {
                    routing.remove("audience");
                }
            }
        }
        if spec.flags.is_empty() {
            return;
        }
        let flags = root.entry("flags").or_insert_with(|| serde_json::json!({}));
        let Some(flags) = flags.as_object_mut() else {
            return;
        };
        let items = flags
            .entry("items")
            .or_insert_with(|| serde_json::json!([]));
        let Some(items) = items.as_array_mut() else {
            return;
        };
        items.retain(|item| {
            let name = item.get("name").and_then(|n| n.as_str());
            !spec.flags.iter().any(|f| Some(f.name.as_str()) == name)
        });
        if matches!(self.phase, Phase::RolledBack | Phase::Aborted) {
            return;
        }
        for flag in &spec.flags {
            let bp = flag.basis_points(self.gate);
            if bp > 0 && !self.disabled_flags.contains(&flag.name) {
                items.push(serde_json::json!({"name": flag.name, "basis_points": bp}));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gates::config::GatesConfig;

    fn spec(extra: &str) -> RolloutSpec {
        let text = format!(r#"{{"id":"r1","stable":"v1","candidate":"v2","steps":[5,25]{extra}}}"#);
        RolloutSpec::from_json(text.as_bytes(), &GatesConfig::default()).unwrap()
    }

    /// Canary steps lead to staging, staging to production; production, staging → canary and
    /// finished rollouts refuse further promotion with a reason.
    #[test]
    fn transitions_follow_the_gate_order() {
        let s = spec(r#","staging":{"headers":[{"name":"x-beta"}]}"#);
        let mut st = RolloutState::start(Gate::Canary, 0);
        assert_eq!(
            st.next(&s).unwrap(),
            Target {
                gate: Gate::Canary,
                step: 1
            }
        );
        st.step = 1;
        assert_eq!(st.next(&s).unwrap().gate, Gate::Staging);
        let err = st.promotion_to(&s, Gate::Production).unwrap_err();
        assert!(err.to_string().contains("direct_to_production"), "{err}");
        st.gate = Gate::Staging;
        assert!(st
            .promotion_to(&s, Gate::Canary)
            .unwrap_err()
            .to_string()
            .contains("backwards"));
        assert_eq!(st.next(&s).unwrap().gate, Gate::Production);
        st.gate = Gate::Production;
        assert!(st.next(&s).is_err());
        st.phase = Phase::RolledBack;
        assert!(st
            .check_live("resume")
            .unwrap_err()
            .to_string()
            .contains("rolled_back"));
    }

    /// A rollout without staging must allow direct promotion, and then goes canary → production.
    #[test]
    fn direct_to_production_when_configured() {
        let err = RolloutSpec::from_json(
            br#"{"id":"r","stable":"a","candidate":"b"}"#,
            &GatesConfig::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("direct_to_production"), "{err}");
        let s = spec(r#","direct_to_production":true"#);
        let st = RolloutState {
            step: 1,
            ..RolloutState::start(Gate::Canary, 0)
        };
        assert_eq!(st.next(&s).unwrap().gate, Gate::Production);
        assert_eq!(
            st.promotion_to(&s, Gate::Production).unwrap().gate,
            Gate::Production
        );
        assert!(st.promotion_to(&s, Gate::Staging).is_err());
    }

    /// The shaped policy carries the gate's weight, audience and flags; a rollback zeroes the
    /// weight and removes the rollout's flags but keeps the operator's own.
    #[test]
    fn shaping_owns_weights_audience_and_flags() {
        let s = spec(
            r#","staging":{"headers":[{"name":"x-beta"}]},"flags":[{"name":"f1","canary":10,"staging":100,"production":100}]"#,
        );
        let base = serde_json::json!({"routing":{"salt":"s"},"flags":{"items":[{"name":"ops","basis_points":5}]}});
        let mut st = RolloutState::start(Gate::Canary, 0);
        let mut p = base.clone();
        st.shape(&s, &mut p);
        assert_eq!(p["routing"]["canary_basis_points"], 500);
        assert_eq!(p["routing"]["route_values"]["stable"], "v1");
        assert!(p["routing"].get("audience").is_none());
        assert_eq!(p["flags"]["items"][1]["basis_points"], 1000);
        st.gate = Gate::Staging;
        st.shape(&s, &mut p);
        assert_eq!(p["routing"]["canary_basis_points"], 0);
        assert_eq!(p["routing"]["audience"]["headers"][0]["name"], "x-beta");
        assert_eq!(p["flags"]["items"].as_array().unwrap().len(), 2);
        st.phase = Phase::RolledBack;
        st.shape(&s, &mut p);
        assert_eq!(p["routing"]["canary_basis_points"], 0);
        assert!(p["routing"].get("audience").is_none());
        assert_eq!(
            p["flags"]["items"],
            serde_json::json!([{"name":"ops","basis_points":5}])
        );
        let mut done = RolloutState {
            gate: Gate::Production,
            phase: Phase::Completed,
            ..st
        };
        done.disabled_flags.clear();
        done.shape(&s, &mut p);
        assert_eq!(p["routing"]["route_values"]["stable"], "v2");
        assert_eq!(p["routing"]["canary_basis_points"], 0);
    }
}
