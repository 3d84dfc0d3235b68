//! The timer's work, independent of the host: the tick period, the admission sync of one
//! worker, and installing a pushed config.

use std::sync::Arc;

use knhk_core::host::{HostError, SharedStore};
use knhk_core::Policy;

use crate::control::PollOutcome;
use crate::worker::WorkerState;

/// The timer period: the policy's tick, or faster when receipts must flush more often.
pub fn tick_period_ms(policy: &Policy) -> u32 {
    let flush = policy
        .control
        .as_ref()
        .and_then(|c| c.receipts.as_ref())
        .map(|r| r.flush_interval_ms);
    flush.map_or(policy.tick_ms, |f| f.min(policy.tick_ms))
}

/// Publish one worker's admission samples to the shared store and read back the shed levels
/// (when admission is on). A failure is counted as a decision error and returned for logging.
pub fn sync_admission(
    state: &mut WorkerState,
    store: &dyn SharedStore,
    policy: &Policy,
    now_ms: u64,
) -> Result<(), HostError> {
    if !policy.admission_enabled || now_ms == 0 {
        return Ok(());
    }
    match state.admission.sync(store, policy, now_ms) {
        Ok(_) => Ok(()),
        Err(e) => {
            state.pending.decision_errors += 1;
            Err(e)
        }
    }
}

/// What a config poll led to, logged; `Some` with the policy and epoch when a pushed config is
/// to be installed.
pub fn accept_pushed(outcome: PollOutcome, epoch_in_force: u64) -> Option<(Arc<Policy>, u64)> {
    match outcome {
        PollOutcome::Apply(accepted) => {
            let accepted = *accepted;
            log::info!(
                "knhk: applied signed config epoch {} (key {}/{} v{}){}",
                accepted.epoch,
                accepted.signed_by.provider,
                accepted.signed_by.key_id,
                accepted.signed_by.version,
                if accepted.next_keys.is_some() {
                    ", trusted keys rotated"
                } else {
                    ""
                },
            );
            Some((Arc::new(accepted.policy), accepted.epoch))
        }
        PollOutcome::NothingNew => None,
        PollOutcome::Failed(why) => {
            log::warn!("knhk: config poll failed: {why}");
            None
        }
        PollOutcome::Refused(e) => {
            log::warn!("knhk: {e}; keeping epoch {epoch_in_force}");
            None
        }
    }
}

/// Install a pushed policy in one worker.
pub fn install(state: &mut WorkerState, policy: Arc<Policy>, epoch: u64) {
    state.epoch = epoch;
    state.policy = Some(policy);
    state.pending.configs_applied += 1;
}
