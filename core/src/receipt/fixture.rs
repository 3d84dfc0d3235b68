//! A receipt builder for tests (feature `test-util`): valid defaults that differ per index,
//! and one setter for each field a test varies, so tests say only what matters to them.

use super::Receipt;
use crate::class::{Class, Route};
use crate::decision::Admission;

/// Builds a [`Receipt`] for a test.
#[derive(Debug, Clone)]
pub struct ReceiptBuilder(Receipt);

impl ReceiptBuilder {
    /// Receipt number `i`: decided at `1_000 + i` ns, key digest `[i % 251; 16]`, routed to
    /// canary in bucket `i % 10_000` with priority 5, R1 requested and served, admitted,
    /// status 200 in 120 µs, config epoch 0, worker 1.
    pub fn new(i: u64) -> Self {
        ReceiptBuilder(Receipt {
            time_ns: 1_000 + i,
            key_digest: [(i % 251) as u8; 16],
            route: Some(Route::Canary),
            routing_bucket: (i % 10_000) as u16,
            priority: 5,
            requested_class: Class::R1,
            class: Class::R1,
            admission: Admission::Admitted,
            status: 200,
            latency_us: 120,
            config_epoch: 0,
            worker_id: 1,
        })
    }

    /// Decision time, ns since the epoch.
    pub fn time_ns(mut self, time_ns: u64) -> Self {
        self.0.time_ns = time_ns;
        self
    }

    /// Salted key digest.
    pub fn key_digest(mut self, key_digest: [u8; 16]) -> Self {
        self.0.key_digest = key_digest;
        self
    }

    /// Route (`None`: an excluded request).
    pub fn route(mut self, route: Option<Route>) -> Self {
        self.0.route = route;
        self
    }

    /// Routing bucket.
    pub fn routing_bucket(mut self, bucket: u16) -> Self {
        self.0.routing_bucket = bucket;
        self
    }

    /// Priority bucket.
    pub fn priority(mut self, priority: u16) -> Self {
        self.0.priority = priority;
        self
    }

    /// Class requested and served.
    pub fn class(mut self, class: Class) -> Self {
        self.0.requested_class = class;
        self.0.class = class;
        self
    }

    /// Admission outcome.
    pub fn admission(mut self, admission: Admission) -> Self {
        self.0.admission = admission;
        self
    }

    /// Response status.
    pub fn status(mut self, status: u16) -> Self {
        self.0.status = status;
        self
    }

    /// Latency, microseconds.
    pub fn latency_us(mut self, latency_us: u32) -> Self {
        self.0.latency_us = latency_us;
        self
    }

    /// Config epoch in force.
    pub fn config_epoch(mut self, epoch: u64) -> Self {
        self.0.config_epoch = epoch;
        self
    }

    /// Worker id.
    pub fn worker_id(mut self, worker_id: u32) -> Self {
        self.0.worker_id = worker_id;
        self
    }

    /// The receipt.
    pub fn build(self) -> Receipt {
        self.0
    }
}
