//! `knhk.config.apply` spans: a signed config epoch from its signing to its first
//! application by each worker, as that worker's receipts show (the first receipt that carries
//! the epoch). Emitted with those two timestamps through the process's tracer (a no-op
//! without `[telemetry]` traces).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use knhk_core::receipt::Receipt;
use opentelemetry::trace::{Span as _, Tracer as _};
use opentelemetry::KeyValue;

use super::SCOPE;

/// Workers remembered at most; beyond, the memory starts over (a span may then repeat).
const MAX_WORKERS: usize = 4096;

/// The signing time, ns since the Unix epoch, of config epoch `n` when it is the one in force.
pub type IssuedAt = Box<dyn Fn(u64) -> Option<u64> + Send + Sync>;

/// Tracks the newest epoch each worker has applied.
pub struct EpochSpans {
    issued_at: IssuedAt,
    since_ns: u64,
    seen: Mutex<HashMap<u32, u64>>,
}

impl std::fmt::Debug for EpochSpans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochSpans").finish_non_exhaustive()
    }
}

fn at(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

impl EpochSpans {
    /// Spans for epochs signed at or after `since_ns` (the agent's start: an epoch signed
    /// before it was applied before the agent could see it).
    pub fn new(issued_at: IssuedAt, since_ns: u64) -> EpochSpans {
        EpochSpans {
            issued_at,
            since_ns,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Look at a batch just appended: a worker's first receipt with a newer epoch ends that
    /// epoch's span for the worker. Returns how many spans were emitted.
    pub fn observe(&self, receipts: &[Receipt]) -> usize {
        let Ok(mut seen) = self.seen.lock() else {
            return 0;
        };
        let mut emitted = 0;
        // Batches come from one worker at a time, mostly under one epoch: look each
        // (worker, epoch) pair up once.
        let mut last = None;
        for r in receipts {
            if last == Some((r.worker_id, r.config_epoch)) {
                continue;
            }
            last = Some((r.worker_id, r.config_epoch));
            let newest = seen.get(&r.worker_id).copied().unwrap_or(0);
            if r.config_epoch <= newest {
                continue;
            }
            if seen.len() >= MAX_WORKERS && !seen.contains_key(&r.worker_id) {
                seen.clear();
            }
            seen.insert(r.worker_id, r.config_epoch);
            let Some(issued) = (self.issued_at)(r.config_epoch) else {
                continue;
            };
            if issued < self.since_ns || r.time_ns < issued {
                continue;
            }
            let tracer = opentelemetry::global::tracer(SCOPE);
            let mut span = tracer
                .span_builder("knhk.config.apply")
                .with_start_time(at(issued))
                .with_attributes([
                    KeyValue::new(
                        "knhk.config.epoch",
                        i64::try_from(r.config_epoch).unwrap_or(i64::MAX),
                    ),
                    KeyValue::new("knhk.worker.id", i64::from(r.worker_id)),
                ])
                .start(&tracer);
            span.end_with_timestamp(at(r.time_ns));
            emitted += 1;
        }
        emitted
    }
}
