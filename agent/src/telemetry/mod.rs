//! OpenTelemetry of the agent: metrics on `/metrics` (Prometheus text) and, with an OTLP
//! endpoint, metrics and traces pushed to a collector. Every name is declared in
//! `registry/` (`registry/model/agent.yaml`).
//!
//! [`config`] reads `[telemetry]` and the `OTEL_*` variables; [`instruments`] holds the
//! counters, histograms and gauges; [`prometheus`] renders them and [`api`] serves that;
//! [`export`] pushes them (and the spans) off the agent's runtime, bounded, drops counted,
//! through [`exporters`]; [`signer`] times every KMS call; [`epochs`] traces config epochs
//! into the workers. [`Telemetry`] is one agent's metrics pipeline ([`crate::run()`] opens
//! it); [`Traces`] is the process's span pipeline, which the binary installs under `tracing`
//! with [`span_layer`] (spans are process-wide, as `tracing`'s subscriber is).

pub mod api;
pub mod config;
pub mod epochs;
pub mod export;
pub mod exporters;
pub mod instruments;
pub mod prometheus;
pub mod signer;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::reader::MetricReader as _;
use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

pub use config::{TelemetryConfig, TelemetryError};
pub use instruments::{Metrics, Reading};

use export::{BoundedSpanProcessor, MetricPusher, SharedReader, EXPORT_FAILURES, SPANS_DROPPED};

/// The instrumentation scope of every signal the agent emits.
pub const SCOPE: &str = "knhk-agent";

/// The resource every signal carries: `service.name`, `service.version`, then
/// `resource_attributes`.
pub fn resource(cfg: &TelemetryConfig) -> Resource {
    let mut attrs: Vec<KeyValue> = cfg
        .resource_attributes
        .iter()
        .filter(|(k, _)| k.as_str() != "service.name")
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    if !cfg.resource_attributes.contains_key("service.version") {
        attrs.push(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    }
    Resource::builder_empty()
        .with_service_name(cfg.service_name.clone())
        .with_attributes(attrs)
        .build()
}

/// One agent's metrics: its meter provider, the reader `/metrics` renders, the instruments,
/// and the OTLP push when configured.
pub struct Telemetry {
    provider: SdkMeterProvider,
    reader: SharedReader,
    metrics: Arc<Metrics>,
    pusher: std::sync::Mutex<Option<MetricPusher>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Open the metrics pipeline of `cfg` (validated): instruments, reader, and the push
    /// thread when an endpoint is set.
    pub fn open(cfg: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
        let reader = SharedReader(Arc::new(
            ManualReader::builder()
                .with_temporality(Temporality::Cumulative)
                .build(),
        ));
        let provider = SdkMeterProvider::builder()
            .with_resource(resource(cfg))
            .with_reader(reader.clone())
            .build();
        let metrics = Arc::new(Metrics::new(provider.meter(SCOPE)));
        metrics.observed_counter(
            "knhk.agent.telemetry.spans.dropped",
            "{span}",
            "Spans dropped because the export queue was full (process-wide).",
            || vec![(SPANS_DROPPED.load(Ordering::Relaxed), vec![])],
        );
        metrics.observed_counter(
            "knhk.agent.telemetry.export.failures",
            "{export}",
            "OTLP export calls that failed or timed out, by signal (process-wide).",
            || {
                ["traces", "metrics"]
                    .into_iter()
                    .zip(&EXPORT_FAILURES)
                    .map(|(signal, n)| {
                        (
                            n.load(Ordering::Relaxed),
                            vec![KeyValue::new("knhk.telemetry.signal", signal)],
                        )
                    })
                    .collect()
            },
        );
        let pusher = MetricPusher::start(cfg, reader.clone())?;
        if let Some(endpoint) = cfg.metrics_endpoint() {
            tracing::info!(%endpoint, interval_ms = cfg.export_interval.as_millis(), "pushing metrics by OTLP");
        }
        Ok(Telemetry {
            provider,
            reader,
            metrics,
            pusher: std::sync::Mutex::new(pusher),
        })
    }

    /// The instruments.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Collect every instrument now and render the Prometheus text exposition.
    pub fn prometheus_text(&self) -> Result<String, TelemetryError> {
        let mut rm = ResourceMetrics::default();
        self.reader
            .collect(&mut rm)
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        Ok(prometheus::render(&rm))
    }

    /// Push once more (when pushing) and stop the pipeline.
    pub fn shutdown(&self) {
        self.stop_pusher();
        let _ = self.provider.shutdown();
    }

    /// Push once more (when pushing) and stop the push thread; later calls do nothing.
    fn stop_pusher(&self) {
        if let Some(pusher) = self.pusher.lock().ok().and_then(|mut p| p.take()) {
            pusher.stop();
        }
    }
}

impl Drop for Telemetry {
    /// A `run` that fails after opening the pipeline stops its push thread too.
    fn drop(&mut self) {
        self.stop_pusher();
    }
}

/// The process's span pipeline: a tracer provider over the bounded export queue.
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Start exporting spans to `cfg`'s endpoint; `None` when traces are off.
    pub fn start(cfg: &TelemetryConfig) -> Result<Option<Traces>, TelemetryError> {
        let Some(processor) = BoundedSpanProcessor::start(cfg, resource(cfg))? else {
            return Ok(None);
        };
        let provider = SdkTracerProvider::builder()
            .with_resource(resource(cfg))
            .with_span_processor(processor)
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        Ok(Some(Traces { provider }))
    }

    /// The tracer `tracing`'s spans are bridged to.
    pub fn tracer(&self) -> opentelemetry_sdk::trace::Tracer {
        self.provider.tracer(SCOPE)
    }

    /// Export what is queued and stop.
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}

/// The bridge from `tracing` to OpenTelemetry spans on `tracer`: only the spans
/// `registry/model/agent.yaml` declares (`knhk.*`), with only their own attributes — no log
/// events as span events, no code locations, thread ids, levels, targets or busy/idle timings.
pub fn span_layer<S>(tracer: opentelemetry_sdk::trace::Tracer) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_level(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.is_span() && meta.name().starts_with("knhk.")
        }))
}
