//! The OTLP exporters of both signals, over the transport `[telemetry] protocol` names:
//! HTTP (protobuf or JSON bodies) through the agent's own `reqwest` client, or gRPC (tonic).

use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::metrics::Temporality;

use super::config::{Protocol, TelemetryConfig, TelemetryError};

/// Largest response body an export call reads from the collector.
const MAX_RESPONSE_LEN: usize = 1 << 20;

pub(super) fn exporter_error(e: impl std::fmt::Display) -> TelemetryError {
    TelemetryError::Exporter(e.to_string())
}

/// `opentelemetry-http`'s client over the agent's own `reqwest` (its rustls, no system roots).
#[derive(Debug, Clone)]
pub struct ReqwestClient(reqwest::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ReqwestClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let response = self.0.execute(request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_RESPONSE_LEN {
                break;
            }
            body.extend_from_slice(&chunk);
        }
        let mut out = http::Response::new(bytes::Bytes::from(body));
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

fn http_client(cfg: &TelemetryConfig) -> Result<ReqwestClient, TelemetryError> {
    let mut builder = reqwest::Client::builder()
        .timeout(cfg.export_timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = &cfg.certificate {
        let pem = std::fs::read(path).map_err(|e| TelemetryError::Invalid {
            setting: "telemetry.certificate",
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        let ca = reqwest::Certificate::from_pem(&pem).map_err(|e| TelemetryError::Invalid {
            setting: "telemetry.certificate",
            reason: format!("{} is not a PEM certificate: {e}", path.display()),
        })?;
        builder = builder.add_root_certificate(ca);
    }
    builder.build().map(ReqwestClient).map_err(exporter_error)
}

fn http_protocol(p: Protocol) -> opentelemetry_otlp::Protocol {
    match p {
        Protocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
        _ => opentelemetry_otlp::Protocol::HttpBinary,
    }
}

fn metadata(cfg: &TelemetryConfig) -> tonic::metadata::MetadataMap {
    let mut map = tonic::metadata::MetadataMap::new();
    for (k, v) in &cfg.headers.0 {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()),
            v.parse(),
        ) {
            map.insert(k, v);
        }
    }
    map
}

/// The HTTP transport's settings on either exporter's builder.
fn with_http<B: WithExportConfig + WithHttpConfig>(
    builder: B,
    cfg: &TelemetryConfig,
    endpoint: String,
) -> Result<B, TelemetryError> {
    Ok(builder
        .with_endpoint(endpoint)
        .with_protocol(http_protocol(cfg.protocol))
        .with_timeout(cfg.export_timeout)
        .with_headers(cfg.headers.0.clone().into_iter().collect())
        .with_http_client(http_client(cfg)?))
}

/// The gRPC transport's settings on either exporter's builder.
fn with_tonic<B: WithExportConfig + WithTonicConfig>(
    builder: B,
    cfg: &TelemetryConfig,
    endpoint: String,
) -> B {
    builder
        .with_endpoint(endpoint)
        .with_timeout(cfg.export_timeout)
        .with_metadata(metadata(cfg))
}

pub(super) fn span_exporter(
    cfg: &TelemetryConfig,
    endpoint: String,
) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    match cfg.protocol {
        Protocol::Grpc => with_tonic(builder.with_tonic(), cfg, endpoint).build(),
        _ => with_http(builder.with_http(), cfg, endpoint)?.build(),
    }
    .map_err(exporter_error)
}

pub(super) fn metric_exporter(
    cfg: &TelemetryConfig,
    endpoint: String,
) -> Result<opentelemetry_otlp::MetricExporter, TelemetryError> {
    let builder =
        opentelemetry_otlp::MetricExporter::builder().with_temporality(Temporality::Cumulative);
    match cfg.protocol {
        Protocol::Grpc => with_tonic(builder.with_tonic(), cfg, endpoint).build(),
        _ => with_http(builder.with_http(), cfg, endpoint)?.build(),
    }
    .map_err(exporter_error)
}
