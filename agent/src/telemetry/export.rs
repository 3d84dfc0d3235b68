//! OTLP export off the agent's runtime: one thread per signal, each with its own
//! single-threaded tokio runtime, so a slow or unreachable collector never holds a task that
//! ingests receipts or seals checkpoints.
//!
//! - Spans go through [`BoundedSpanProcessor`]: ending a span is a `try_send` into a queue of
//!   `max_queue_size`; when it is full the span is dropped and counted
//!   ([`SPANS_DROPPED`], exported as `knhk.agent.telemetry.spans.dropped`). Why not the
//!   SDK's `BatchSpanProcessor`, which is bounded the same way: it counts its drops privately
//!   and only logs them at shutdown, and its worker calls the exporter outside a tokio
//!   runtime, where the gRPC exporter cannot run.
//! - Metrics are collected from the agent's [`ManualReader`] every `export_interval` and
//!   pushed; the same reader answers `/metrics`. A failed push is counted
//!   ([`EXPORT_FAILURES`]) and the next one carries the cumulative values again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter as _;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, Temporality};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter as _, SpanProcessor};
use opentelemetry_sdk::Resource;

use super::config::{TelemetryConfig, TelemetryError};
use super::exporters::{exporter_error, metric_exporter, span_exporter};

/// Spans dropped because the export queue was full, since the process started.
pub static SPANS_DROPPED: AtomicU64 = AtomicU64::new(0);
/// Failed export calls since the process started: `[traces, metrics]`.
pub static EXPORT_FAILURES: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// Spans exported in one call at most (the SDK's default).
const MAX_EXPORT_BATCH: usize = 512;
/// How long a span waits in the queue at most before it is exported.
const SPAN_DELAY: Duration = Duration::from_secs(1);
/// The last export at shutdown waits at most this long (or `export_timeout`, if shorter): a
/// collector that is down must not hold the agent's exit.
const FINAL_EXPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Start a named thread with its own current-thread runtime; `build` makes its state inside
/// that runtime (the gRPC channel needs one) and its error is returned here.
fn export_thread<T: 'static>(
    name: &str,
    build: impl FnOnce() -> Result<T, TelemetryError> + Send + 'static,
    body: impl FnOnce(&tokio::runtime::Runtime, T) + Send + 'static,
) -> Result<JoinHandle<()>, TelemetryError> {
    let (ready_tx, ready_rx) = sync_channel::<Result<(), TelemetryError>>(1);
    let handle = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(exporter_error(e)));
                    return;
                }
            };
            let state = {
                let _entered = runtime.enter();
                build()
            };
            match state {
                Ok(state) => {
                    let _ = ready_tx.send(Ok(()));
                    body(&runtime, state);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })
        .map_err(exporter_error)?;
    ready_rx
        .recv()
        .map_err(|_| TelemetryError::Exporter(format!("{name} thread ended at start")))??;
    Ok(handle)
}

/// Ending a span puts it in a bounded queue that the export thread drains; a full queue drops
/// the span and counts it. Never blocks the thread that ends the span.
#[derive(Debug)]
pub struct BoundedSpanProcessor {
    queue: Mutex<Option<SyncSender<SpanData>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl BoundedSpanProcessor {
    /// Start the export thread for `cfg`'s traces endpoint; `None` without one.
    pub fn start(
        cfg: &TelemetryConfig,
        resource: Resource,
    ) -> Result<Option<Self>, TelemetryError> {
        let Some(endpoint) = cfg.traces_endpoint() else {
            return Ok(None);
        };
        let (tx, rx) = sync_channel::<SpanData>(cfg.max_queue_size);
        let exporter_cfg = cfg.clone();
        let timeout = cfg.export_timeout;
        let worker = export_thread(
            "knhk-otlp-traces",
            move || {
                let mut exporter = span_exporter(&exporter_cfg, endpoint)?;
                opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, &resource);
                Ok(exporter)
            },
            move |runtime, exporter| drain_spans(runtime, &exporter, &rx, timeout),
        )?;
        Ok(Some(BoundedSpanProcessor {
            queue: Mutex::new(Some(tx)),
            worker: Mutex::new(Some(worker)),
        }))
    }
}

fn drain_spans(
    runtime: &tokio::runtime::Runtime,
    exporter: &opentelemetry_otlp::SpanExporter,
    rx: &Receiver<SpanData>,
    timeout: Duration,
) {
    let mut open = true;
    while open {
        let mut batch = Vec::new();
        let deadline = Instant::now() + SPAN_DELAY;
        while batch.len() < MAX_EXPORT_BATCH {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(span) => batch.push(span),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        let limit = if open {
            timeout
        } else {
            timeout.min(FINAL_EXPORT_TIMEOUT)
        };
        let sent =
            runtime.block_on(async { tokio::time::timeout(limit, exporter.export(batch)).await });
        if !matches!(sent, Ok(Ok(()))) {
            EXPORT_FAILURES[0].fetch_add(1, Ordering::Relaxed);
        }
    }
    let _ = exporter.shutdown();
}

impl SpanProcessor for BoundedSpanProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let Ok(queue) = self.queue.lock() else {
            return;
        };
        let sent = match queue.as_ref() {
            Some(tx) => tx.try_send(span),
            None => return,
        };
        if let Err(TrySendError::Full(_)) = sent {
            SPANS_DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    /// Close the queue; the thread exports what it holds and stops.
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        if let Ok(mut queue) = self.queue.lock() {
            queue.take();
        }
        let worker = self.worker.lock().ok().and_then(|mut w| w.take());
        match worker.map(JoinHandle::join) {
            Some(Err(_)) => Err(OTelSdkError::InternalFailure(
                "trace export thread panicked".to_owned(),
            )),
            _ => Ok(()),
        }
    }
}

/// The agent's one metric reader, shared by `/metrics` and the OTLP push.
#[derive(Debug, Clone)]
pub struct SharedReader(pub Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// The thread that pushes the agent's metrics by OTLP every `export_interval`.
#[derive(Debug)]
pub struct MetricPusher {
    stop: SyncSender<()>,
    worker: JoinHandle<()>,
}

impl MetricPusher {
    /// Start pushing what `reader` collects; `None` without a metrics endpoint.
    pub fn start(
        cfg: &TelemetryConfig,
        reader: SharedReader,
    ) -> Result<Option<Self>, TelemetryError> {
        let Some(endpoint) = cfg.metrics_endpoint() else {
            return Ok(None);
        };
        let (stop, stopped) = sync_channel::<()>(1);
        let exporter_cfg = cfg.clone();
        let (interval, timeout) = (cfg.export_interval, cfg.export_timeout);
        let worker = export_thread(
            "knhk-otlp-metrics",
            move || metric_exporter(&exporter_cfg, endpoint),
            move |runtime, exporter| loop {
                let last = !matches!(
                    stopped.recv_timeout(interval),
                    Err(RecvTimeoutError::Timeout)
                );
                let mut rm = ResourceMetrics::default();
                let pushed = match reader.collect(&mut rm) {
                    Ok(()) => matches!(
                        runtime.block_on(async {
                            let limit = if last {
                                timeout.min(FINAL_EXPORT_TIMEOUT)
                            } else {
                                timeout
                            };
                            tokio::time::timeout(limit, exporter.export(&rm)).await
                        }),
                        Ok(Ok(()))
                    ),
                    Err(_) => false,
                };
                if !pushed {
                    EXPORT_FAILURES[1].fetch_add(1, Ordering::Relaxed);
                }
                if last {
                    let _ = exporter.shutdown();
                    return;
                }
            },
        )?;
        Ok(Some(MetricPusher { stop, worker }))
    }

    /// Push once more and stop.
    pub fn stop(self) {
        let _ = self.stop.try_send(());
        let _ = self.worker.join();
    }
}
