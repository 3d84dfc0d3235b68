//! `[telemetry]` and the `OTEL_*` variables: what each accepts, what each refuses, and that a
//! refusal names the setting and changes nothing.

use std::collections::HashMap;
use std::time::Duration;

use super::*;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}

fn applied(pairs: &[(&str, &str)]) -> Result<TelemetryConfig, TelemetryError> {
    let mut cfg = TelemetryConfig::default();
    cfg.apply_env(env(pairs))?;
    cfg.validate()?;
    Ok(cfg)
}

fn refused_setting(pairs: &[(&str, &str)]) -> &'static str {
    match applied(pairs) {
        Err(TelemetryError::Invalid { setting, .. }) => setting,
        other => panic!("expected a refusal for {pairs:?}, got {other:?}"),
    }
}

#[test]
fn off_by_default_and_without_an_endpoint() {
    let cfg = applied(&[]).unwrap();
    assert_eq!(cfg.traces_endpoint(), None);
    assert_eq!(cfg.metrics_endpoint(), None);
    assert_eq!(cfg.service_name, DEFAULT_SERVICE_NAME);
}

#[test]
fn standard_variables_configure_the_export() {
    let cfg = applied(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
        ("OTEL_SERVICE_NAME", "knhk-eu"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=prod,k8s.pod.name=agent%2D0,note=a%3Db",
        ),
        ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "64"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=s3cr3t"),
    ])
    .unwrap();
    assert_eq!(
        cfg.traces_endpoint().as_deref(),
        Some("http://collector:4318/v1/traces")
    );
    assert_eq!(
        cfg.metrics_endpoint().as_deref(),
        Some("http://collector:4318/v1/metrics")
    );
    assert_eq!(cfg.service_name, "knhk-eu");
    assert_eq!(cfg.resource_attributes["k8s.pod.name"], "agent-0");
    assert_eq!(cfg.resource_attributes["note"], "a=b");
    assert_eq!(cfg.export_interval, Duration::from_millis(500));
    assert_eq!(cfg.export_timeout, Duration::from_millis(2500));
    assert_eq!(cfg.max_queue_size, 64);
    assert_eq!(cfg.headers.0["x-api-key"], "s3cr3t");
    assert!(
        !format!("{cfg:?}").contains("s3cr3t"),
        "header values never appear in Debug"
    );
}

#[test]
fn grpc_endpoint_is_used_as_given_and_signals_can_be_turned_off() {
    let cfg = applied(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_METRICS_EXPORTER", "none"),
    ])
    .unwrap();
    assert_eq!(
        cfg.traces_endpoint().as_deref(),
        Some("http://collector:4317")
    );
    assert_eq!(cfg.metrics_endpoint(), None);
    let off = applied(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
        ("OTEL_SDK_DISABLED", "true"),
    ])
    .unwrap();
    assert_eq!(off.traces_endpoint(), None);
}

#[test]
fn service_name_wins_over_the_resource_attribute() {
    let cfg = applied(&[
        ("OTEL_RESOURCE_ATTRIBUTES", "service.name=a"),
        ("OTEL_SERVICE_NAME", "b"),
    ])
    .unwrap();
    assert_eq!(cfg.service_name, "b");
    let cfg = applied(&[("OTEL_RESOURCE_ATTRIBUTES", "service.name=a")]).unwrap();
    assert_eq!(cfg.service_name, "a");
}

#[test]
fn malformed_and_hostile_values_are_refused_by_name() {
    let long = "k=".to_owned() + &"v".repeat(9000);
    let long_url = format!("http://c/{}", "p".repeat(3000));
    let long_name = "s".repeat(300);
    let many: String = (0..65)
        .map(|i| format!("k{i}=v"))
        .collect::<Vec<_>>()
        .join(",");
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
            "telemetry.endpoint",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector")],
            "telemetry.endpoint",
        ),
        (
            &[(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://user:pw@collector:4318",
            )],
            "telemetry.endpoint",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318")],
            "telemetry.certificate",
        ),
        (
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem"),
            ],
            "telemetry.protocol",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift")],
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "HTTP/protobuf")],
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            &[("OTEL_METRIC_EXPORT_INTERVAL", "5s")],
            "OTEL_METRIC_EXPORT_INTERVAL",
        ),
        (
            &[("OTEL_METRIC_EXPORT_INTERVAL", "10")],
            "telemetry.export_interval",
        ),
        (
            &[("OTEL_METRIC_EXPORT_INTERVAL", "99999999999")],
            "telemetry.export_interval",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_TIMEOUT", "0")],
            "telemetry.export_timeout",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_TIMEOUT", "-1")],
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ),
        (
            &[("OTEL_BSP_MAX_QUEUE_SIZE", "0")],
            "telemetry.max_queue_size",
        ),
        (
            &[("OTEL_BSP_MAX_QUEUE_SIZE", "99999999999")],
            "telemetry.max_queue_size",
        ),
        (
            &[("OTEL_BSP_MAX_QUEUE_SIZE", "lots")],
            "OTEL_BSP_MAX_QUEUE_SIZE",
        ),
        (
            &[("OTEL_RESOURCE_ATTRIBUTES", "novalue")],
            "OTEL_RESOURCE_ATTRIBUTES",
        ),
        (
            &[("OTEL_RESOURCE_ATTRIBUTES", "=v")],
            "OTEL_RESOURCE_ATTRIBUTES",
        ),
        (
            &[("OTEL_RESOURCE_ATTRIBUTES", "k=%0A")],
            "OTEL_RESOURCE_ATTRIBUTES",
        ),
        (
            &[("OTEL_RESOURCE_ATTRIBUTES", "k=%FF")],
            "OTEL_RESOURCE_ATTRIBUTES",
        ),
        (
            &[("OTEL_RESOURCE_ATTRIBUTES", long.as_str())],
            "OTEL_RESOURCE_ATTRIBUTES",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_HEADERS", "bad header=v")],
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_HEADERS", "x=%0D%0Ainjected: 1")],
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
        (
            &[("OTEL_TRACES_EXPORTER", "jaeger")],
            "OTEL_TRACES_EXPORTER",
        ),
        (&[("OTEL_SDK_DISABLED", "maybe")], "OTEL_SDK_DISABLED"),
        (&[("OTEL_SERVICE_NAME", "")], "telemetry.service_name"),
        (
            &[("OTEL_SERVICE_NAME", long_name.as_str())],
            "telemetry.service_name",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", long_url.as_str())],
            "telemetry.endpoint",
        ),
        (
            &[("OTEL_RESOURCE_ATTRIBUTES", many.as_str())],
            "telemetry.resource_attributes",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_HEADERS", many.as_str())],
            "telemetry.headers",
        ),
    ];
    for (pairs, setting) in cases {
        assert_eq!(refused_setting(pairs), *setting, "{pairs:?}");
    }
}

#[test]
fn the_file_table_parses_and_refuses_unknown_keys() {
    let cfg: TelemetryConfig = toml::from_str(
        r#"
endpoint = "http://collector:4317"
protocol = "grpc"
service_name = "agent"
export_interval = "5s"
resource_attributes = { "deployment.environment.name" = "prod" }
"#,
    )
    .unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.protocol, Protocol::Grpc);
    assert_eq!(cfg.export_interval, Duration::from_secs(5));
    assert!(toml::from_str::<TelemetryConfig>("endpont = \"http://c\"").is_err());
    assert!(toml::from_str::<TelemetryConfig>("protocol = \"udp\"").is_err());
}
