//! The agent's OpenTelemetry instruments (declared in `registry/model/agent.yaml`): the
//! counters and histograms that subsystems record into, and [`Metrics::gauge`] for the
//! gauges read from state at each collection.

use std::sync::Mutex;
use std::time::Duration;

use knhk_core::class::Class;
use knhk_core::decision::Admission;
use knhk_core::receipt::Receipt;
use opentelemetry::metrics::{
    Counter, Histogram, Meter, ObservableCounter, ObservableGauge, UpDownCounter,
};
use opentelemetry::KeyValue;

/// Bucket bounds of every duration histogram, seconds: 0.5 ms to 10 s.
pub const DURATION_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One gauge's reading: its value and attributes.
pub type Reading = (f64, Vec<KeyValue>);

/// The instruments of one agent.
pub struct Metrics {
    meter: Meter,
    receipts_ingested: Counter<u64>,
    receipts_refused: Counter<u64>,
    ingest_queue: UpDownCounter<i64>,
    ingest_duration: Histogram<f64>,
    seal_duration: Histogram<f64>,
    kms_duration: Histogram<f64>,
    quorum_ack_duration: Histogram<f64>,
    gauges: Mutex<Vec<ObservableGauge<f64>>>,
    counters: Mutex<Vec<ObservableCounter<u64>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn histogram(meter: &Meter, name: &'static str, description: &'static str) -> Histogram<f64> {
    meter
        .f64_histogram(name)
        .with_unit("s")
        .with_description(description)
        .with_boundaries(DURATION_BOUNDS.to_vec())
        .build()
}

impl Metrics {
    /// Create the instruments on `meter`.
    pub fn new(meter: Meter) -> Metrics {
        Metrics {
            receipts_ingested: meter
                .u64_counter("knhk.agent.receipts.ingested")
                .with_unit("{receipt}")
                .with_description(
                    "Receipts appended to the log, by requested class and admission outcome.",
                )
                .build(),
            receipts_refused: meter
                .u64_counter("knhk.agent.receipts.refused")
                .with_unit("{batch}")
                .with_description("Receipt batches refused (nothing appended), by HTTP status.")
                .build(),
            ingest_queue: meter
                .i64_up_down_counter("knhk.agent.receipts.ingest.queue")
                .with_unit("{batch}")
                .with_description("Receipt batches received and not yet durable.")
                .build(),
            ingest_duration: histogram(
                &meter,
                "knhk.agent.receipts.ingest.duration",
                "Time to decode, check and durably append one receipt batch.",
            ),
            seal_duration: histogram(
                &meter,
                "knhk.agent.checkpoint.seal.duration",
                "Time to seal one checkpoint, the KMS signature included.",
            ),
            kms_duration: histogram(
                &meter,
                "knhk.agent.kms.call.duration",
                "Duration of one call to the signing key's provider, by operation and outcome.",
            ),
            quorum_ack_duration: histogram(
                &meter,
                "knhk.agent.quorum.ack.duration",
                "From a checkpoint's seal to a peer's cosignature of it, per peer.",
            ),
            gauges: Mutex::new(Vec::new()),
            counters: Mutex::new(Vec::new()),
            meter,
        }
    }

    /// Count the receipts of one appended batch, by requested class and admission outcome.
    pub fn receipts_ingested(&self, receipts: &[Receipt]) {
        let mut tally = [[0u64; Admission::ALL.len()]; Class::ALL.len()];
        for r in receipts {
            tally[r.requested_class.index()][r.admission.index()] += 1;
        }
        for class in Class::ALL {
            for outcome in Admission::ALL {
                let n = tally[class.index()][outcome.index()];
                if n > 0 {
                    self.receipts_ingested.add(
                        n,
                        &[
                            KeyValue::new("knhk.admission.class", class.as_lower_str()),
                            KeyValue::new("knhk.receipt.admission", outcome.as_str()),
                        ],
                    );
                }
            }
        }
    }

    /// Count a refused receipt batch, by the HTTP status it got.
    pub fn receipts_refused(&self, status: u16) {
        self.receipts_refused
            .add(1, &[KeyValue::new("error.type", status.to_string())]);
    }

    /// A batch entered ingest; it leaves the queue when the guard drops.
    pub fn ingest_started(&self) -> IngestGuard<'_> {
        self.ingest_queue.add(1, &[]);
        IngestGuard(self)
    }

    /// One batch's ingest time.
    pub fn ingest_duration(&self, d: Duration) {
        self.ingest_duration.record(seconds(d), &[]);
    }

    /// One seal's time.
    pub fn seal_duration(&self, d: Duration) {
        self.seal_duration.record(seconds(d), &[]);
    }

    /// One KMS call: provider, operation, and `error.type` when it failed.
    pub fn kms_call(
        &self,
        provider: &str,
        operation: &'static str,
        error: Option<&'static str>,
        d: Duration,
    ) {
        let mut attrs = vec![
            KeyValue::new("kms.provider", provider.to_owned()),
            KeyValue::new("knhk.kms.operation", operation),
        ];
        if let Some(e) = error {
            attrs.push(KeyValue::new("error.type", e));
        }
        self.kms_duration.record(seconds(d), &attrs);
    }

    /// A peer cosigned a checkpoint `d` after it was sealed.
    pub fn quorum_ack(&self, peer: &str, d: Duration) {
        self.quorum_ack_duration.record(
            seconds(d),
            &[KeyValue::new("knhk.quorum.peer", peer.to_owned())],
        );
    }

    /// Register a gauge read at each collection: `read` returns its current readings.
    pub fn gauge(
        &self,
        name: &'static str,
        unit: &'static str,
        description: &'static str,
        read: impl Fn() -> Vec<Reading> + Send + Sync + 'static,
    ) {
        let gauge = self
            .meter
            .f64_observable_gauge(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |observer| {
                for (value, attrs) in read() {
                    observer.observe(value, &attrs);
                }
            })
            .build();
        if let Ok(mut gauges) = self.gauges.lock() {
            gauges.push(gauge);
        }
    }
}

impl Metrics {
    /// Register a counter kept elsewhere (an atomic), read at each collection.
    pub fn observed_counter(
        &self,
        name: &'static str,
        unit: &'static str,
        description: &'static str,
        read: impl Fn() -> Vec<(u64, Vec<KeyValue>)> + Send + Sync + 'static,
    ) {
        let counter = self
            .meter
            .u64_observable_counter(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |observer| {
                for (value, attrs) in read() {
                    observer.observe(value, &attrs);
                }
            })
            .build();
        if let Ok(mut counters) = self.counters.lock() {
            counters.push(counter);
        }
    }
}

/// Holds one batch in [`Metrics::ingest_started`]'s queue.
pub struct IngestGuard<'a>(&'a Metrics);

impl Drop for IngestGuard<'_> {
    fn drop(&mut self) {
        self.0.ingest_queue.add(-1, &[]);
    }
}
