//! Rotel, a real OTLP collector (PyPI `rotel`, installed by `cargo xtask setup`), receiving
//! on OTLP/HTTP and OTLP/gRPC on free ports, and what it received read back from its debug
//! log: Rotel has no file exporter, so it runs with the `blackhole` exporter and
//! `--debug-log traces --debug-log metrics --debug-log-verbosity detailed`, which prints every
//! resource, scope, metric descriptor, data point attribute and span it accepts on stdout (the
//! OpenTelemetry Collector's `debug` exporter format); [`parse`] reads that text.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::ports::free_ports;
use crate::wait::poll;

/// A running Rotel.
#[derive(Debug)]
pub struct Rotel {
    child: Child,
    /// OTLP/HTTP port.
    pub http_port: u16,
    /// OTLP/gRPC port.
    pub grpc_port: u16,
    out: PathBuf,
}

impl Rotel {
    /// Start Rotel with its state and output under `dir`; wait until both receivers accept
    /// connections.
    pub async fn start(dir: &Path) -> anyhow::Result<Rotel> {
        std::fs::create_dir_all(dir)?;
        let ports = free_ports(2)?;
        let (http_port, grpc_port) = (ports[0], ports[1]);
        let out = dir.join("rotel.out");
        let file = std::fs::File::create(&out)?;
        let child = Command::new(crate::paths::rotel()?)
            .args(["start", "--exporter", "blackhole"])
            .args(["--debug-log", "traces", "--debug-log", "metrics"])
            .args(["--debug-log-verbosity", "detailed"])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http_port}")])
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc_port}")])
            .arg("--pid-file")
            .arg(dir.join("rotel.pid"))
            .arg("--log-file")
            .arg(dir.join("rotel.log"))
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()
            .context("spawning rotel-agent")?;
        let mut rotel = Rotel {
            child,
            http_port,
            grpc_port,
            out,
        };
        for port in [http_port, grpc_port] {
            let up = poll("rotel to listen", Duration::from_secs(20), || async move {
                Ok(tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ()))
            })
            .await;
            if let Err(e) = up {
                let output = rotel.output();
                let _ = rotel.child.kill();
                anyhow::bail!("{e}\nrotel output:\n{}", crate::envoy::tail(&output, 40));
            }
        }
        Ok(rotel)
    }

    /// The OTLP/HTTP base URL.
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The OTLP/gRPC URL.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// Everything Rotel printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// What Rotel received so far.
    pub fn received(&self) -> Received {
        parse(&self.output())
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One metric descriptor with the attribute keys of its data points, as received.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MetricSeen {
    /// The resource's `service.name`.
    pub service: String,
    /// The instrumentation scope.
    pub scope: String,
    /// The metric name.
    pub name: String,
    /// Its unit.
    pub unit: String,
    /// `Sum`, `Gauge`, `Histogram`, `ExponentialHistogram`.
    pub data_type: String,
    /// For sums: monotonic.
    pub monotonic: bool,
    /// Attribute keys of its data points.
    pub attributes: BTreeSet<String>,
}

impl MetricSeen {
    /// The registry's instrument for what was received.
    pub fn instrument(&self) -> &'static str {
        match (self.data_type.as_str(), self.monotonic) {
            ("Sum", true) => "counter",
            ("Sum", false) => "updowncounter",
            ("Gauge", _) => "gauge",
            ("Histogram", _) => "histogram",
            _ => "unknown",
        }
    }
}

/// One span, as received.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpanSeen {
    /// The resource's `service.name`.
    pub service: String,
    /// The span name.
    pub name: String,
    /// `SPAN_KIND_INTERNAL`, …
    pub kind: String,
    /// Its attribute keys.
    pub attributes: BTreeSet<String>,
}

/// Everything received.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// Metric descriptors, one per export that carried them.
    pub metrics: Vec<MetricSeen>,
    /// Spans.
    pub spans: Vec<SpanSeen>,
}

#[derive(PartialEq)]
enum Block {
    Other,
    Resource,
    Descriptor,
    PointAttributes,
    SpanAttributes,
}

/// The `key` of a `     -> key: Value(…)` line.
fn arrow_key(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim_start().strip_prefix("-> ")?;
    rest.split_once(": ")
}

/// Read Rotel's detailed debug log.
pub fn parse(text: &str) -> Received {
    let mut out = Received::default();
    let mut service = String::new();
    let mut scope = String::new();
    let mut block = Block::Other;
    let mut metric: Option<MetricSeen> = None;
    let mut span: Option<SpanSeen> = None;
    let flush_metric = |m: &mut Option<MetricSeen>, out: &mut Received| {
        if let Some(m) = m.take() {
            out.metrics.push(m);
        }
    };
    let flush_span = |s: &mut Option<SpanSeen>, out: &mut Received| {
        if let Some(s) = s.take() {
            out.spans.push(s);
        }
    };
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some((key, value)) = arrow_key(line) {
            match block {
                Block::Resource if key == "service.name" => {
                    service = value
                        .trim_start_matches("Str(")
                        .trim_end_matches(')')
                        .to_owned();
                }
                Block::Descriptor => {
                    if let Some(m) = metric.as_mut() {
                        match key {
                            "Name" => m.name = value.trim().to_owned(),
                            "Unit" => m.unit = value.trim().to_owned(),
                            "DataType" => m.data_type = value.trim().to_owned(),
                            "IsMonotonic" => m.monotonic = value.trim() == "true",
                            _ => {}
                        }
                    }
                }
                Block::PointAttributes => {
                    if let Some(m) = metric.as_mut() {
                        m.attributes.insert(key.to_owned());
                    }
                }
                Block::SpanAttributes => {
                    if let Some(s) = span.as_mut() {
                        s.attributes.insert(key.to_owned());
                    }
                }
                _ => {}
            }
            continue;
        }
        // A bare descriptor line without the arrow (`-> Unit: ` with an empty unit).
        if block == Block::Descriptor && trimmed == "-> Unit:" {
            continue;
        }
        if trimmed.starts_with("ResourceMetrics #") || trimmed.starts_with("ResourceSpans #") {
            flush_metric(&mut metric, &mut out);
            flush_span(&mut span, &mut out);
            service.clear();
            block = Block::Other;
        } else if trimmed == "Resource attributes:" {
            block = Block::Resource;
        } else if let Some(name) = trimmed.strip_prefix("InstrumentationScope ") {
            scope = name.split_whitespace().next().unwrap_or("").to_owned();
            block = Block::Other;
        } else if trimmed.starts_with("Metric #") {
            flush_metric(&mut metric, &mut out);
            metric = Some(MetricSeen {
                service: service.clone(),
                scope: scope.clone(),
                name: String::new(),
                unit: String::new(),
                data_type: String::new(),
                monotonic: false,
                attributes: BTreeSet::new(),
            });
            block = Block::Other;
        } else if trimmed == "Descriptor:" {
            block = Block::Descriptor;
        } else if trimmed == "Data point attributes:" {
            block = Block::PointAttributes;
        } else if trimmed.starts_with("Span #") {
            flush_metric(&mut metric, &mut out);
            flush_span(&mut span, &mut out);
            span = Some(SpanSeen {
                service: service.clone(),
                name: String::new(),
                kind: String::new(),
                attributes: BTreeSet::new(),
            });
            block = Block::Other;
        } else if let (Some(s), Some((key, value))) = (span.as_mut(), trimmed.split_once(':')) {
            match key.trim() {
                "Name" if s.name.is_empty() => s.name = value.trim().to_owned(),
                "Kind" => s.kind = value.trim().to_owned(),
                "Attributes" => block = Block::SpanAttributes,
                _ => {
                    if block == Block::SpanAttributes {
                        block = Block::Other;
                    }
                }
            }
        } else if !trimmed.starts_with("->") {
            block = Block::Other;
        }
    }
    flush_metric(&mut metric, &mut out);
    flush_span(&mut span, &mut out);
    out
}

#[cfg(test)]
mod tests;
