//! The state one worker (a wasm VM, or one Envoy worker thread of the native module) shares
//! between its request flows and its host's timer: a leaf every other module may import.

use std::sync::Arc;

use knhk_core::admission::{AdmissionCoordinator, LatencySampler};
use knhk_core::config::FailMode;
use knhk_core::Policy;

use crate::receipts::ReceiptBuffer;
use crate::stats::Counts;

/// Short, exclusive access to the worker's state. The wasm adapter lends its VM's
/// `RefCell`; the native one locks the worker's mutex. The flow never calls the host while
/// it holds the state, so a host that re-enters the filter (a local reply passing through
/// the encoder path) never finds it taken.
pub trait WorkerAccess {
    /// Run `f` with the worker's state.
    fn with<R>(&self, f: impl FnOnce(&mut WorkerState) -> R) -> R;
}

/// State one worker shares between its requests and the timer.
#[derive(Debug)]
pub struct WorkerState {
    /// The policy in force; `None` until a valid configuration arrives.
    pub policy: Option<Arc<Policy>>,
    /// Local admission samples and the shed levels last read from the shared state.
    pub admission: AdmissionCoordinator,
    /// Which requests are timed for the p99 when receipts are off.
    pub latency_sampler: LatencySampler,
    /// Stats counted since the last flush to the host.
    pub pending: Counts,
    /// Receipts for the agent, when configured.
    pub receipts: Option<ReceiptBuffer>,
    /// Config epoch in force (0: the static plugin configuration).
    pub epoch: u64,
    /// This worker's id in receipts.
    pub worker_id: u32,
    /// What requests get while no valid configuration was ever applied (the refused one's
    /// `fail_mode`, open unless it said closed).
    pub fail_mode_without_policy: FailMode,
}

impl WorkerState {
    /// A worker with no policy yet.
    pub fn new(worker_id: u32) -> Self {
        WorkerState {
            policy: None,
            admission: AdmissionCoordinator::new(),
            latency_sampler: LatencySampler::new(u64::from(worker_id)),
            pending: Counts::default(),
            receipts: None,
            epoch: 0,
            worker_id,
            fail_mode_without_policy: FailMode::Open,
        }
    }
}
