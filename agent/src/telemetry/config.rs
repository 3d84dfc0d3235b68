//! `[telemetry]`: where the agent sends OpenTelemetry, from the config file and the standard
//! `OTEL_*` environment variables (which win over the file, as every environment override
//! of the agent does).
//!
//! ```toml
//! [telemetry]
//! endpoint = "http://otel-collector.observability:4318" # off when unset (and no OTEL_EXPORTER_OTLP_ENDPOINT)
//! protocol = "http/protobuf"          # or "grpc" (port 4317 by convention), "http/json"
//! service_name = "knhk-agent"
//! resource_attributes = { "deployment.environment.name" = "prod" }
//! export_interval = "60s"             # metrics push cadence (OTEL_METRIC_EXPORT_INTERVAL, ms)
//! export_timeout = "10s"              # one export call at most (OTEL_EXPORTER_OTLP_TIMEOUT, ms)
//! max_queue_size = 2048               # spans held for export; beyond, dropped and counted
//! traces = true                       # OTEL_TRACES_EXPORTER=none turns traces off
//! metrics = true                      # OTEL_METRICS_EXPORTER=none turns the OTLP push off
//! ```
//!
//! Environment variables read: `OTEL_SDK_DISABLED`, `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_EXPORTER_OTLP_CERTIFICATE`, `OTEL_EXPORTER_OTLP_HEADERS` (never logged: it carries
//! credentials), `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_TRACES_EXPORTER`,
//! `OTEL_METRICS_EXPORTER`. The Prometheus endpoint `/metrics` is served whatever these say.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// Default `service.name`.
pub const DEFAULT_SERVICE_NAME: &str = "knhk-agent";
/// Default metrics push cadence (the OpenTelemetry SDK default).
pub const DEFAULT_EXPORT_INTERVAL: Duration = Duration::from_secs(60);
/// Default timeout of one export call (the OpenTelemetry SDK default).
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound of the span export queue (the OpenTelemetry SDK default).
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 2048;
/// Largest span export queue accepted.
pub const MAX_QUEUE_SIZE: usize = 1 << 20;
/// Shortest metrics push cadence accepted.
pub const MIN_EXPORT_INTERVAL: Duration = Duration::from_millis(100);
/// Longest metrics push cadence and export timeout accepted.
pub const MAX_EXPORT_INTERVAL: Duration = Duration::from_secs(3600);
/// Longest header or resource attribute list accepted, in bytes (an environment variable).
const MAX_LIST_LEN: usize = 8192;
/// Longest endpoint URL accepted, in bytes.
const MAX_ENDPOINT_LEN: usize = 2048;
/// Longest `service.name` accepted, in bytes.
const MAX_SERVICE_NAME_LEN: usize = 256;
/// Most resource attributes, and most export headers, accepted.
const MAX_ITEMS: usize = 64;

/// Why a telemetry setting was refused.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A `[telemetry]` setting or `OTEL_*` variable is invalid.
    #[error("invalid setting {setting}: {reason}")]
    Invalid {
        /// The setting (TOML key path or environment variable).
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The exporter could not be built.
    #[error("OpenTelemetry exporter: {0}")]
    Exporter(String),
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> TelemetryError {
    TelemetryError::Invalid {
        setting,
        reason: reason.into(),
    }
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum Protocol {
    /// OTLP/gRPC.
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (the specification's default).
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies.
    #[serde(rename = "http/json")]
    HttpJson,
}

impl Protocol {
    fn parse(setting: &'static str, text: &str) -> Result<Self, TelemetryError> {
        match text.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "http/json" => Ok(Protocol::HttpJson),
            other => Err(invalid(
                setting,
                format!("{other:?} is not one of \"grpc\", \"http/protobuf\", \"http/json\""),
            )),
        }
    }
}

/// Headers sent with every export (`OTEL_EXPORTER_OTLP_HEADERS`): credentials, so `Debug`
/// shows only their names.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Headers(pub BTreeMap<String, String>);

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// The `[telemetry]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector's OTLP endpoint: for HTTP the base URL (`/v1/traces` and `/v1/metrics`
    /// are appended), for gRPC the server's URL. No export when unset.
    pub endpoint: Option<String>,
    /// The OTLP transport.
    pub protocol: Protocol,
    /// Headers of every export call (file or `OTEL_EXPORTER_OTLP_HEADERS`).
    pub headers: Headers,
    /// PEM file of the CA that signed an `https://` collector's certificate
    /// (`OTEL_EXPORTER_OTLP_CERTIFICATE`); required for `https://`.
    pub certificate: Option<std::path::PathBuf>,
    /// `service.name` of the agent's resource.
    pub service_name: String,
    /// Further resource attributes.
    pub resource_attributes: BTreeMap<String, String>,
    /// Metrics push cadence.
    #[serde(with = "crate::settings::duration")]
    pub export_interval: Duration,
    /// Timeout of one export call.
    #[serde(with = "crate::settings::duration")]
    pub export_timeout: Duration,
    /// Spans held for export at most; more are dropped and counted.
    pub max_queue_size: usize,
    /// Export traces (when an endpoint is set).
    pub traces: bool,
    /// Push metrics by OTLP (when an endpoint is set).
    pub metrics: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            endpoint: None,
            protocol: Protocol::default(),
            headers: Headers::default(),
            certificate: None,
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            resource_attributes: BTreeMap::new(),
            export_interval: DEFAULT_EXPORT_INTERVAL,
            export_timeout: DEFAULT_EXPORT_TIMEOUT,
            max_queue_size: DEFAULT_MAX_QUEUE_SIZE,
            traces: true,
            metrics: true,
        }
    }
}

/// `k=v,k=v` with percent-encoded keys and values (the W3C Baggage form the OpenTelemetry
/// specification gives `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_EXPORTER_OTLP_HEADERS`).
fn parse_list(
    setting: &'static str,
    text: &str,
) -> Result<BTreeMap<String, String>, TelemetryError> {
    if text.len() > MAX_LIST_LEN {
        return Err(invalid(
            setting,
            format!("longer than {MAX_LIST_LEN} bytes"),
        ));
    }
    let mut out = BTreeMap::new();
    for (n, item) in text.split(',').enumerate() {
        if item.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = item.split_once('=') else {
            return Err(invalid(
                setting,
                format!("item {} has no '=': expected key=value,key=value", n + 1),
            ));
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s.trim())
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| {
                    invalid(
                        setting,
                        format!("item {} is not UTF-8 once percent-decoded", n + 1),
                    )
                })
        };
        let (k, v) = (decode(k)?, decode(v)?);
        if k.is_empty() || k.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid(
                setting,
                format!("item {} has an empty or malformed key", n + 1),
            ));
        }
        if v.chars().any(char::is_control) {
            return Err(invalid(
                setting,
                format!("the value of {k:?} holds a control character"),
            ));
        }
        out.insert(k, v);
    }
    Ok(out)
}

fn parse_ms(setting: &'static str, text: &str) -> Result<Duration, TelemetryError> {
    text.trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| {
            invalid(
                setting,
                format!("{text:?} is not a whole number of milliseconds"),
            )
        })
}

fn exporter_choice(setting: &'static str, text: &str) -> Result<bool, TelemetryError> {
    match text.trim() {
        "otlp" => Ok(true),
        "none" => Ok(false),
        other => Err(invalid(
            setting,
            format!("{other:?} is not \"otlp\" or \"none\" (the only exporters of this build)"),
        )),
    }
}

impl TelemetryConfig {
    /// Apply the `OTEL_*` environment variables through `env`.
    pub fn apply_env(
        &mut self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(), TelemetryError> {
        if let Some(v) = env("OTEL_EXPORTER_OTLP_ENDPOINT") {
            self.endpoint = Some(v.trim().to_owned()).filter(|e| !e.is_empty());
        }
        if let Some(v) = env("OTEL_EXPORTER_OTLP_PROTOCOL") {
            self.protocol = Protocol::parse("OTEL_EXPORTER_OTLP_PROTOCOL", &v)?;
        }
        if let Some(v) = env("OTEL_EXPORTER_OTLP_HEADERS") {
            self.headers = Headers(parse_list("OTEL_EXPORTER_OTLP_HEADERS", &v)?);
        }
        if let Some(v) = env("OTEL_EXPORTER_OTLP_CERTIFICATE") {
            self.certificate =
                Some(v.trim().into()).filter(|p: &std::path::PathBuf| !p.as_os_str().is_empty());
        }
        if let Some(v) = env("OTEL_EXPORTER_OTLP_TIMEOUT") {
            self.export_timeout = parse_ms("OTEL_EXPORTER_OTLP_TIMEOUT", &v)?;
        }
        if let Some(v) = env("OTEL_RESOURCE_ATTRIBUTES") {
            let attrs = parse_list("OTEL_RESOURCE_ATTRIBUTES", &v)?;
            if let Some(name) = attrs.get("service.name") {
                self.service_name = name.clone();
            }
            self.resource_attributes.extend(attrs);
        }
        if let Some(v) = env("OTEL_SERVICE_NAME") {
            self.service_name = v.trim().to_owned();
        }
        if let Some(v) = env("OTEL_METRIC_EXPORT_INTERVAL") {
            self.export_interval = parse_ms("OTEL_METRIC_EXPORT_INTERVAL", &v)?;
        }
        if let Some(v) = env("OTEL_BSP_MAX_QUEUE_SIZE") {
            self.max_queue_size = v.trim().parse().map_err(|_| {
                invalid(
                    "OTEL_BSP_MAX_QUEUE_SIZE",
                    format!("{v:?} is not a whole number"),
                )
            })?;
        }
        if let Some(v) = env("OTEL_TRACES_EXPORTER") {
            self.traces = exporter_choice("OTEL_TRACES_EXPORTER", &v)?;
        }
        if let Some(v) = env("OTEL_METRICS_EXPORTER") {
            self.metrics = exporter_choice("OTEL_METRICS_EXPORTER", &v)?;
        }
        if let Some(v) = env("OTEL_SDK_DISABLED") {
            let off = crate::settings::env_bool("OTEL_SDK_DISABLED", &v)
                .map_err(|e| invalid(e.setting, e.reason))?;
            if off {
                self.endpoint = None;
            }
        }
        Ok(())
    }

    /// Check every value.
    pub fn validate(&self) -> Result<(), TelemetryError> {
        if let Some(endpoint) = &self.endpoint {
            if endpoint.len() > MAX_ENDPOINT_LEN {
                return Err(invalid(
                    "telemetry.endpoint",
                    format!("longer than {MAX_ENDPOINT_LEN} bytes"),
                ));
            }
            let url = url::Url::parse(endpoint).map_err(|e| {
                invalid(
                    "telemetry.endpoint",
                    format!("{endpoint:?} is not a URL: {e}"),
                )
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(invalid(
                    "telemetry.endpoint",
                    format!("{endpoint:?} must be an http:// or https:// URL with a host"),
                ));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(invalid(
                    "telemetry.endpoint",
                    "credentials do not belong in the URL (it is logged): use OTEL_EXPORTER_OTLP_HEADERS",
                ));
            }
            if url.scheme() == "https" && self.protocol == Protocol::Grpc {
                return Err(invalid(
                    "telemetry.protocol",
                    "this build sends OTLP/gRPC without TLS only: use http/protobuf for an https:// collector",
                ));
            }
            if url.scheme() == "https" && self.certificate.is_none() {
                return Err(invalid(
                    "telemetry.certificate",
                    "an https:// collector needs the PEM file of its CA (OTEL_EXPORTER_OTLP_CERTIFICATE)",
                ));
            }
        }
        if self.resource_attributes.len() > MAX_ITEMS {
            return Err(invalid(
                "telemetry.resource_attributes",
                format!("more than {MAX_ITEMS} attributes"),
            ));
        }
        if self.headers.0.len() > MAX_ITEMS {
            return Err(invalid(
                "telemetry.headers",
                format!("more than {MAX_ITEMS} headers"),
            ));
        }
        if self.service_name.len() > MAX_SERVICE_NAME_LEN {
            return Err(invalid(
                "telemetry.service_name",
                format!("longer than {MAX_SERVICE_NAME_LEN} bytes"),
            ));
        }
        if self.service_name.is_empty() || self.service_name.chars().any(char::is_control) {
            return Err(invalid(
                "telemetry.service_name",
                "must be non-empty text without control characters",
            ));
        }
        for (k, v) in &self.resource_attributes {
            if k.is_empty()
                || k.chars().any(|c| c.is_control() || c.is_whitespace())
                || v.chars().any(char::is_control)
            {
                return Err(invalid(
                    "telemetry.resource_attributes",
                    format!("{k:?} is not a valid attribute"),
                ));
            }
        }
        for (k, v) in &self.headers.0 {
            let name_ok = axum::http::HeaderName::from_bytes(k.as_bytes()).is_ok();
            if !name_ok || axum::http::HeaderValue::from_str(v).is_err() {
                return Err(invalid(
                    "telemetry.headers",
                    format!("header {k:?} is not a valid HTTP header"),
                ));
            }
        }
        if !(MIN_EXPORT_INTERVAL..=MAX_EXPORT_INTERVAL).contains(&self.export_interval) {
            return Err(invalid(
                "telemetry.export_interval",
                "must be between 100ms and 1h",
            ));
        }
        if self.export_timeout.is_zero() || self.export_timeout > MAX_EXPORT_INTERVAL {
            return Err(invalid(
                "telemetry.export_timeout",
                "must be above 0 and at most 1h",
            ));
        }
        if !(1..=MAX_QUEUE_SIZE).contains(&self.max_queue_size) {
            return Err(invalid(
                "telemetry.max_queue_size",
                format!("must be between 1 and {MAX_QUEUE_SIZE}"),
            ));
        }
        Ok(())
    }

    /// The endpoint, when traces are exported.
    pub fn traces_endpoint(&self) -> Option<String> {
        self.signal_endpoint(self.traces, "traces")
    }

    /// The endpoint, when metrics are pushed.
    pub fn metrics_endpoint(&self) -> Option<String> {
        self.signal_endpoint(self.metrics, "metrics")
    }

    fn signal_endpoint(&self, on: bool, signal: &str) -> Option<String> {
        let base = self.endpoint.as_deref().filter(|_| on)?;
        Some(match self.protocol {
            Protocol::Grpc => base.to_owned(),
            Protocol::HttpProtobuf | Protocol::HttpJson => {
                format!("{}/v1/{signal}", base.trim_end_matches('/'))
            }
        })
    }
}

#[cfg(test)]
mod tests;
