//! The shed-level controller: one deterministic step per evaluation interval, with hysteresis.
//!
//! - p99 over budget (and at least `min_samples` in the window): raise the level by one step,
//!   capped at `max_shed_bp`.
//! - p99 under `recover_ratio × budget`: lower it by one step.
//! - in between: hold (hysteresis band, no flapping).
//! - fewer than `min_samples`: no evidence of overload; lower by one step (shed requests
//!   produce no samples, so a class must not stay shed on silence).

use super::window::ClassWindow;
use crate::policy::{ClassBudget, Policy};

/// What one evaluation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Not due yet.
    NotDue,
    /// Level raised.
    Raised,
    /// Level lowered.
    Lowered,
    /// Level unchanged.
    Held,
}

/// Evaluate `state` at `now_ms` if the evaluation interval has passed, updating its level.
pub fn evaluate(
    state: &mut ClassWindow,
    budget: &ClassBudget,
    policy: &Policy,
    now_ms: u64,
) -> Step {
    let interval = u64::from(policy.evaluation_interval_ms);
    if now_ms < state.last_eval_ms.saturating_add(interval) {
        return Step::NotDue;
    }
    state.last_eval_ms = now_ms;
    let totals = state.totals(now_ms);
    let before = state.level_bp;
    if totals.total < u64::from(budget.min_samples) {
        state.level_bp = before.saturating_sub(policy.shed_step_bp);
    } else if totals.p99_over_budget() {
        state.level_bp = before
            .saturating_add(policy.shed_step_bp)
            .min(policy.max_shed_bp);
    } else if totals.p99_recovered() {
        state.level_bp = before.saturating_sub(policy.shed_step_bp);
    }
    // The cap can fall under the current level after a config change: enforce it.
    state.level_bp = state.level_bp.min(policy.max_shed_bp);
    match state.level_bp.cmp(&before) {
        std::cmp::Ordering::Greater => Step::Raised,
        std::cmp::Ordering::Less => Step::Lowered,
        std::cmp::Ordering::Equal => Step::Held,
    }
}
