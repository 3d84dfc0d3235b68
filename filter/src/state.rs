//! The state one VM (one Envoy worker) shares between its root context and its request
//! contexts: a leaf both import, so neither imports the other for it.

use std::rc::Rc;

use knhk_core::admission::AdmissionCoordinator;
use knhk_core::config::FailMode;
use knhk_core::Policy;

use crate::metrics::Metrics;
use crate::receipts::ReceiptBuffer;

/// State one VM (one Envoy worker) shares between its root and its request contexts.
pub struct VmState {
    /// The policy in force; `None` until a valid configuration arrives.
    pub policy: Option<Rc<Policy>>,
    /// Local admission samples and the shed levels last read from shared data.
    pub admission: AdmissionCoordinator,
    /// Stats, counted locally and flushed on the tick.
    pub metrics: Metrics,
    /// Receipts for the agent, when configured.
    pub receipts: Option<ReceiptBuffer>,
    /// Config epoch in force (0: the static plugin configuration).
    pub epoch: u64,
    /// This VM's id in receipts.
    pub worker_id: u32,
    /// What requests get while no valid configuration was ever applied (the refused one's
    /// `fail_mode`, open unless it said closed).
    pub fail_mode_without_policy: FailMode,
}

impl VmState {
    /// A VM with no policy yet; metrics are defined at once so Envoy lists them.
    pub fn new(worker_id: u32) -> Self {
        VmState {
            policy: None,
            admission: AdmissionCoordinator::new(),
            metrics: Metrics::define(),
            receipts: None,
            epoch: 0,
            worker_id,
            fail_mode_without_policy: FailMode::Open,
        }
    }
}
