//! Per-worker receipt buffer: filled at each request's log phase, drained in batches to the
//! agent from the root context's timer. Bounded; what happens when full is configured.

use std::collections::VecDeque;

use knhk_core::config::ReceiptOverflow;
use knhk_core::policy::Receipts;
use knhk_core::receipt::{encode_origin_batch, Origin, Receipt};

/// Receipts waiting to be sent, and the batch in flight.
#[derive(Debug)]
pub struct ReceiptBuffer {
    settings: Receipts,
    /// The serving pod, sent with every batch.
    origin: Origin,
    queued: VecDeque<Receipt>,
    in_flight: Vec<Receipt>,
    /// Receipts dropped because the buffer was full, since the last flush of stats.
    pub dropped: u64,
    /// Receipts acknowledged by the agent, since the last flush of stats.
    pub sent: u64,
    /// Failed batch posts, since the last flush of stats.
    pub failures: u64,
    /// Host token of the batch post in flight.
    pub token: Option<u64>,
    /// When the last batch was posted (host milliseconds).
    pub last_flush_ms: u64,
    /// The agent refused the last batch's credential (401/403); logged once per change.
    pub refused: bool,
}

impl ReceiptBuffer {
    /// An empty buffer with these settings, whose batches name `origin`.
    pub fn new(settings: Receipts, origin: Origin) -> Self {
        ReceiptBuffer {
            settings,
            origin,
            queued: VecDeque::new(),
            in_flight: Vec::new(),
            dropped: 0,
            sent: 0,
            failures: 0,
            token: None,
            last_flush_ms: 0,
            refused: false,
        }
    }

    /// Take the counts since the last flush of stats: (sent, dropped, failed posts).
    pub fn take_counts(&mut self) -> [u64; 3] {
        let counts = [self.sent, self.dropped, self.failures];
        (self.sent, self.dropped, self.failures) = (0, 0, 0);
        counts
    }

    /// The settings in force.
    pub fn settings(&self) -> &Receipts {
        &self.settings
    }

    /// Unsent receipts, queued and in flight.
    pub fn unsent(&self) -> usize {
        self.queued.len() + self.in_flight.len()
    }

    /// True when `fail_closed` is configured and no receipt can be taken.
    pub fn refuses_requests(&self) -> bool {
        self.settings.overflow == ReceiptOverflow::FailClosed
            && self.unsent() >= self.settings.max_buffer
    }

    /// Queue a receipt; when full it is dropped and counted (under `fail_closed` requests are
    /// refused before they get here, see [`ReceiptBuffer::refuses_requests`]).
    pub fn push(&mut self, receipt: Receipt) {
        if self.unsent() >= self.settings.max_buffer {
            self.dropped += 1;
            return;
        }
        self.queued.push_back(receipt);
    }

    /// Whether a batch should go now: none in flight, and either a full batch is queued or
    /// anything is queued and the interval has passed.
    pub fn due(&self, interval_elapsed: bool) -> bool {
        self.in_flight.is_empty()
            && (self.queued.len() >= self.settings.max_batch
                || (interval_elapsed && !self.queued.is_empty()))
    }

    /// Take the next batch (up to `max_batch`) and encode it; it stays in flight until
    /// [`ReceiptBuffer::acknowledged`] or [`ReceiptBuffer::failed`].
    pub fn take_batch(&mut self) -> Option<Vec<u8>> {
        if !self.in_flight.is_empty() || self.queued.is_empty() {
            return None;
        }
        let n = self.queued.len().min(self.settings.max_batch);
        self.in_flight = self.queued.drain(..n).collect();
        match encode_origin_batch(&self.origin, &self.in_flight) {
            Ok(bytes) => Some(bytes),
            Err(_) => {
                // Cannot happen with n ≤ max_batch ≤ MAX_BATCH_RECORDS; count and drop rather
                // than retry an unencodable batch forever.
                self.dropped += self.in_flight.len() as u64;
                self.in_flight.clear();
                None
            }
        }
    }

    /// The agent committed the batch in flight.
    pub fn acknowledged(&mut self) {
        self.sent += self.in_flight.len() as u64;
        self.in_flight.clear();
    }

    /// The batch in flight was not committed: put it back at the front, in order.
    pub fn failed(&mut self) {
        self.failures += 1;
        for r in self.in_flight.drain(..).rev() {
            self.queued.push_front(r);
        }
    }
}

/// A receipt with every field but its sequence number and time fixed, for tests.
#[cfg(test)]
pub(crate) fn sample_receipt(i: u64) -> Receipt {
    use knhk_core::receipt::{ReceiptBuilder, NO_BUCKET, NO_KEY};
    use knhk_core::{Admission, Class};
    ReceiptBuilder::new(i)
        .time_ns(i)
        .key_digest(NO_KEY)
        .route(None)
        .routing_bucket(NO_BUCKET)
        .priority(NO_BUCKET)
        .class(Class::W1)
        .admission(Admission::NotEvaluated)
        .latency_us(1)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use knhk_core::receipt::decode_batch;

    fn buffer(max_batch: usize, max_buffer: usize, overflow: ReceiptOverflow) -> ReceiptBuffer {
        ReceiptBuffer::new(
            Receipts {
                path: "/v1/receipts".into(),
                flush_interval_ms: 250,
                max_batch,
                max_buffer,
                overflow,
            },
            Origin::new("checkout-1", "shop", "node-a").unwrap(),
        )
    }

    /// Batches go out in order, at most max_batch at a time, and a failed batch is retried first.
    #[test]
    fn batches_in_order_with_retry() {
        let mut b = buffer(2, 10, ReceiptOverflow::Drop);
        for i in 0..5 {
            b.push(sample_receipt(i));
        }
        assert!(b.due(false));
        let bytes = b.take_batch().unwrap();
        let origin = knhk_core::receipt::decode_origin_batch(&bytes)
            .unwrap()
            .origin;
        assert_eq!(
            origin.to_string(),
            "shop/checkout-1 on node-a",
            "every batch names the pod"
        );
        let first = decode_batch(&bytes).unwrap();
        assert_eq!(
            first.iter().map(|r| r.time_ns).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert!(b.take_batch().is_none(), "one batch in flight at a time");
        b.failed();
        let again = decode_batch(&b.take_batch().unwrap()).unwrap();
        assert_eq!(again, first);
        b.acknowledged();
        assert_eq!((b.sent, b.failures, b.unsent()), (2, 1, 3));
        // Three left: a full batch is due at once, the remainder only when the interval passed.
        b.take_batch();
        b.acknowledged();
        assert!(!b.due(false));
        assert!(b.due(true));
    }

    /// A full buffer drops and counts new receipts; fail_closed refuses requests instead.
    #[test]
    fn overflow_behaviour() {
        let mut drop = buffer(2, 3, ReceiptOverflow::Drop);
        for i in 0..5 {
            drop.push(sample_receipt(i));
        }
        assert_eq!(
            (drop.unsent(), drop.dropped, drop.refuses_requests()),
            (3, 2, false)
        );
        let mut closed = buffer(2, 3, ReceiptOverflow::FailClosed);
        for i in 0..3 {
            closed.push(sample_receipt(i));
        }
        assert!(closed.refuses_requests());
        closed.take_batch();
        assert!(closed.refuses_requests(), "in-flight receipts still count");
        closed.acknowledged();
        assert!(!closed.refuses_requests());
    }
}
