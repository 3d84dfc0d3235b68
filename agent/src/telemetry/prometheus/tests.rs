//! The exposition: names, suffixes, labels, escaping and histogram buckets as Prometheus
//! reads them, from instruments recorded through the real SDK.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::reader::MetricReader as _;
use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider, Temporality};

use super::*;
use crate::telemetry::export::SharedReader;

fn collect(record: impl FnOnce(&opentelemetry::metrics::Meter)) -> String {
    let reader = SharedReader(Arc::new(
        ManualReader::builder()
            .with_temporality(Temporality::Cumulative)
            .build(),
    ));
    let provider = SdkMeterProvider::builder()
        .with_resource(
            opentelemetry_sdk::Resource::builder_empty()
                .with_service_name("svc \"q\"")
                .build(),
        )
        .with_reader(reader.clone())
        .build();
    record(&provider.meter("test"));
    let mut rm = ResourceMetrics::default();
    reader.collect(&mut rm).unwrap();
    render(&rm)
}

#[test]
fn names_follow_the_compatibility_rules() {
    assert_eq!(
        metric_name("knhk.agent.receipts.ingested", "{receipt}", false),
        "knhk_agent_receipts_ingested"
    );
    assert_eq!(
        metric_name("knhk.agent.seal.duration", "s", false),
        "knhk_agent_seal_duration_seconds"
    );
    assert_eq!(
        metric_name("knhk.agent.rollout.success_rate", "1", true),
        "knhk_agent_rollout_success_rate_ratio"
    );
    assert_eq!(
        metric_name("knhk.agent.rollout.weight", "%", true),
        "knhk_agent_rollout_weight_percent"
    );
    assert_eq!(metric_name("x.size", "By", false), "x_size_bytes");
    assert_eq!(sanitize("9lives-ok"), "_9lives_ok");
}

#[test]
fn counters_gauges_and_histograms_render() {
    let text = collect(|m| {
        let c = m
            .u64_counter("knhk.agent.receipts.ingested")
            .with_unit("{receipt}")
            .with_description("Receipts.")
            .build();
        c.add(
            3,
            &[
                KeyValue::new("knhk.admission.class", "r1"),
                KeyValue::new("knhk.admission.outcome", "admitted"),
            ],
        );
        c.add(
            2,
            &[
                KeyValue::new("knhk.admission.class", "r1"),
                KeyValue::new("knhk.admission.outcome", "admitted"),
            ],
        );
        let q = m
            .i64_up_down_counter("knhk.agent.queue")
            .with_unit("{batch}")
            .build();
        q.add(2, &[]);
        q.add(-1, &[]);
        m.f64_observable_gauge("knhk.agent.rollout.weight")
            .with_unit("%")
            .with_callback(|o| {
                o.observe(12.5, &[KeyValue::new("knhk.rollout.version", "v\"2\"\n")])
            })
            .build();
        let h = m
            .f64_histogram("knhk.agent.seal.duration")
            .with_unit("s")
            .with_boundaries(vec![0.01, 0.1])
            .build();
        h.record(0.005, &[]);
        h.record(0.05, &[]);
        h.record(5.0, &[]);
    });
    for line in [
        "# HELP knhk_agent_receipts_ingested_total Receipts.",
        "# TYPE knhk_agent_receipts_ingested_total counter",
        "knhk_agent_receipts_ingested_total{knhk_admission_class=\"r1\",knhk_admission_outcome=\"admitted\"} 5",
        "# TYPE knhk_agent_queue gauge",
        "knhk_agent_queue 1",
        "knhk_agent_rollout_weight_percent{knhk_rollout_version=\"v\\\"2\\\"\\n\"} 12.5",
        "# TYPE knhk_agent_seal_duration_seconds histogram",
        "knhk_agent_seal_duration_seconds_bucket{le=\"0.01\"} 1",
        "knhk_agent_seal_duration_seconds_bucket{le=\"0.1\"} 2",
        "knhk_agent_seal_duration_seconds_bucket{le=\"+Inf\"} 3",
        "knhk_agent_seal_duration_seconds_sum 5.055",
        "knhk_agent_seal_duration_seconds_count 3",
        "target_info{service_name=\"svc \\\"q\\\"\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn the_agents_instruments_render_what_they_recorded() {
    let telemetry =
        crate::telemetry::Telemetry::open(&crate::telemetry::TelemetryConfig::default()).unwrap();
    let m = telemetry.metrics();
    m.receipts_refused(429);
    m.receipts_refused(413);
    m.seal_duration(Duration::from_millis(3));
    m.kms_call("local", "sign", None, Duration::from_millis(1));
    m.kms_call(
        "transit",
        "sign",
        Some("provider"),
        Duration::from_millis(2),
    );
    {
        let _in_flight = m.ingest_started();
        let text = telemetry.prometheus_text().unwrap();
        assert!(
            text.contains("knhk_agent_receipts_ingest_queue 1\n"),
            "{text}"
        );
    }
    let text = telemetry.prometheus_text().unwrap();
    for needle in [
        "knhk_agent_receipts_ingest_queue 0\n",
        "knhk_agent_receipts_refused_total{error_type=\"429\"} 1\n",
        "knhk_agent_checkpoint_seal_duration_seconds_count 1\n",
        "knhk_agent_kms_call_duration_seconds_count{kms_provider=\"local\",knhk_kms_operation=\"sign\"} 1\n",
        "knhk_agent_kms_call_duration_seconds_count{error_type=\"provider\",kms_provider=\"transit\",knhk_kms_operation=\"sign\"} 1\n",
        "knhk_agent_telemetry_spans_dropped_total ",
        "service_name=\"knhk-agent\"",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let (a, b) = (
        text.find("error_type=\"413\"").unwrap(),
        text.find("error_type=\"429\"").unwrap(),
    );
    assert!(a < b, "samples in label order:\n{text}");
    telemetry.shutdown();
}

#[test]
fn registered_gauges_render_their_readings() {
    let telemetry =
        crate::telemetry::Telemetry::open(&crate::telemetry::TelemetryConfig::default()).unwrap();
    let m = telemetry.metrics();
    m.gauge("knhk.agent.rollout.success_rate", "1", "Success.", || {
        vec![(0.5, vec![KeyValue::new("knhk.rollout.role", "stable")])]
    });
    m.gauge("knhk.agent.rollout.latency.p99", "s", "p99.", || {
        vec![(0.25, vec![])]
    });
    let text = telemetry.prometheus_text().unwrap();
    assert!(
        text.contains("knhk_agent_rollout_success_rate_ratio{knhk_rollout_role=\"stable\"} 0.5\n"),
        "{text}"
    );
    assert!(
        text.contains("knhk_agent_rollout_latency_p99_seconds 0.25\n"),
        "{text}"
    );
}
