//! The timer's work, independent of the host: the tick period, one worker's share of a tick
//! (admission sync, pending counts), and installing a pushed config.

use std::sync::Arc;

use knhk_core::admission::ShedLevels;
use knhk_core::host::{HostError, SharedStore};
use knhk_core::Policy;

use crate::control::PollOutcome;
use crate::stats::Counts;
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

/// What one worker hands to the stats at a tick: its pending counts, its shed levels and the
/// version of its policy.
pub type WorkerTick = (Counts, ShedLevels, u64);

/// One worker's share of a tick: sync its admission samples with the shared store (a failure
/// is counted in `sync_failures` and logged the first time and then every 1000th, not every
/// tick), then take its pending counts, the receipt buffer's included. `None` before the
/// worker has a policy.
pub fn tick_worker(
    state: &mut WorkerState,
    store: &dyn SharedStore,
    now_ms: u64,
    sync_failures: &mut u64,
) -> Option<WorkerTick> {
    let policy = state.policy.clone()?;
    if now_ms > 0 {
        let requests = state
            .pending
            .admission
            .map(|outcomes| outcomes.iter().sum());
        state.latency_sampler.adapt(&policy, requests, now_ms);
    }
    if let Err(e) = sync_admission(state, store, &policy, now_ms) {
        *sync_failures += 1;
        if *sync_failures % 1000 == 1 {
            log::warn!("knhk: admission sync failed ({sync_failures} times): {e}");
        }
    }
    let mut counts = std::mem::take(&mut state.pending);
    if let Some(r) = state.receipts.as_mut() {
        counts.receipts = r.take_counts();
    }
    Some((counts, state.admission.levels(), policy.version))
}

/// Publish one worker's admission samples to the shared store and read back the shed levels
/// (when admission is on). A failure is counted as a decision error and returned for logging.
fn sync_admission(
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

#[cfg(test)]
mod tests {
    use knhk_core::host::{MemoryShared, RefusingShared};

    use super::*;

    /// A shared store that refuses every call.
    fn with_policy(json: &str) -> WorkerState {
        let mut state = WorkerState::new(1);
        state.policy = Some(Arc::new(Policy::from_json(json.as_bytes()).unwrap()));
        state
    }

    /// Without a policy a worker has nothing to hand over and nothing is taken.
    #[test]
    fn no_policy_no_tick() {
        let mut state = WorkerState::new(1);
        state.pending.decision_errors = 3;
        let mut failures = 0;
        assert!(tick_worker(&mut state, &MemoryShared::default(), 1_000, &mut failures).is_none());
        assert_eq!((state.pending.decision_errors, failures), (3, 0));
    }

    /// A tick takes the pending counts (they start again from zero) and hands over the
    /// policy's version; a working store counts no failure.
    #[test]
    fn takes_pending_counts() {
        let mut state = with_policy(r#"{"version":7,"admission":{"enabled":true}}"#);
        state.pending.routes = [5, 2, 1];
        let mut failures = 0;
        let (counts, _, version) =
            tick_worker(&mut state, &MemoryShared::default(), 1_000, &mut failures).unwrap();
        assert_eq!((counts.routes, version, failures), ([5, 2, 1], 7, 0));
        assert_eq!(state.pending.routes, [0; 3]);
    }

    /// A refused admission sync is counted as a sync failure and as a decision error of the
    /// tick's counts; with admission off the store is never asked.
    #[test]
    fn refused_sync_is_counted() {
        let mut state = with_policy(r#"{"admission":{"enabled":true}}"#);
        let mut failures = 0;
        let (counts, _, _) =
            tick_worker(&mut state, &RefusingShared, 1_000, &mut failures).unwrap();
        assert_eq!((counts.decision_errors, failures), (1, 1));
        let mut off = with_policy(r#"{"admission":{"enabled":false}}"#);
        let (counts, _, _) = tick_worker(&mut off, &RefusingShared, 1_000, &mut failures).unwrap();
        assert_eq!((counts.decision_errors, failures), (0, 1));
    }
}
