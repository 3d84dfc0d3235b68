//! The Prometheus text exposition (format 0.0.4) of the OpenTelemetry metrics the agent
//! collects: what `GET /metrics` answers, from the same instruments the OTLP push reads.
//!
//! Names follow OpenTelemetry's Prometheus compatibility rules: every character outside
//! `[a-zA-Z0-9_:]` becomes `_`; the unit becomes a suffix (`s` → `_seconds`, `By` → `_bytes`,
//! `1` → `_ratio` on gauges; annotations such as `{receipt}` add none); a monotonic sum gets
//! `_total`; a histogram is `_bucket{le=…}`, `_sum` and `_count`. Attribute keys become labels
//! the same way (`knhk.admission.class` → `knhk_admission_class`). The resource is one
//! `target_info` sample. Why not the `opentelemetry-prometheus` crate: it is discontinued
//! upstream and pulls the `prometheus` crate with its own registry; this is the one function
//! the agent needs, over the SDK's collected data.

use std::fmt::Write as _;

use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};

/// The exposition's media type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `name` with every character outside `[a-zA-Z0-9_:]` replaced by `_` (and a leading digit
/// prefixed by `_`).
pub fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The unit's suffix, `None` for none (a dimensionless count, an annotation `{…}`).
fn unit_suffix(unit: &str, gauge: bool) -> Option<&'static str> {
    match unit {
        "s" => Some("seconds"),
        "ms" => Some("milliseconds"),
        "By" => Some("bytes"),
        "%" => Some("percent"),
        "1" if gauge => Some("ratio"),
        _ => None,
    }
}

/// The Prometheus name of an OpenTelemetry metric (before `_total`, `_bucket`, …).
pub fn metric_name(name: &str, unit: &str, gauge: bool) -> String {
    let mut out = sanitize(name);
    if let Some(suffix) = unit_suffix(unit, gauge) {
        if !out.ends_with(suffix) {
            out.push('_');
            out.push_str(suffix);
        }
    }
    out
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\n', "\\n")
}

fn labels<'a>(attrs: impl Iterator<Item = &'a KeyValue>, extra: Option<(&str, &str)>) -> String {
    let mut pairs: Vec<(String, String)> = attrs
        .map(|kv| (sanitize(kv.key.as_str()), kv.value.as_str().into_owned()))
        .collect();
    pairs.sort();
    if let Some((k, v)) = extra {
        pairs.push((k.to_owned(), v.to_owned()));
    }
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v}")
    }
}

trait Value: Copy {
    fn to_f64(self) -> f64;
}
impl Value for f64 {
    fn to_f64(self) -> f64 {
        self
    }
}
impl Value for u64 {
    #[allow(clippy::cast_precision_loss)]
    fn to_f64(self) -> f64 {
        self as f64
    }
}
impl Value for i64 {
    #[allow(clippy::cast_precision_loss)]
    fn to_f64(self) -> f64 {
        self as f64
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    if !help.is_empty() {
        let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    }
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample line per point, in label order (the SDK keeps no order).
fn samples(out: &mut String, name: &str, points: impl Iterator<Item = (String, f64)>) {
    let mut points: Vec<(String, f64)> = points.collect();
    points.sort_by(|a, b| a.0.cmp(&b.0));
    for (labels, value) in points {
        let _ = writeln!(out, "{name}{labels} {}", number(value));
    }
}

fn render_data<T: Value>(out: &mut String, metric: &Metric, data: &MetricData<T>) {
    match data {
        MetricData::Gauge(g) => {
            let name = metric_name(metric.name(), metric.unit(), true);
            header(out, &name, "gauge", metric.description());
            let points = g
                .data_points()
                .map(|p| (labels(p.attributes(), None), p.value().to_f64()));
            samples(out, &name, points);
        }
        MetricData::Sum(s) => {
            let base = metric_name(metric.name(), metric.unit(), !s.is_monotonic());
            let (name, kind) = if s.is_monotonic() {
                (format!("{base}_total"), "counter")
            } else {
                (base, "gauge")
            };
            header(out, &name, kind, metric.description());
            let points = s
                .data_points()
                .map(|p| (labels(p.attributes(), None), p.value().to_f64()));
            samples(out, &name, points);
        }
        MetricData::Histogram(h) => {
            let name = metric_name(metric.name(), metric.unit(), false);
            header(out, &name, "histogram", metric.description());
            let mut points: Vec<_> = h.data_points().collect();
            points.sort_by_cached_key(|p| labels(p.attributes(), None));
            for p in points {
                let mut cumulative = 0u64;
                let bounds: Vec<f64> = p.bounds().collect();
                for (i, count) in p.bucket_counts().enumerate() {
                    cumulative += count;
                    let le = bounds
                        .get(i)
                        .map_or_else(|| "+Inf".to_owned(), |b| number(*b));
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {cumulative}",
                        labels(p.attributes(), Some(("le", &le)))
                    );
                }
                let plain = labels(p.attributes(), None);
                let _ = writeln!(out, "{name}_sum{plain} {}", number(p.sum().to_f64()));
                let _ = writeln!(out, "{name}_count{plain} {}", p.count());
            }
        }
        // The agent declares no exponential histogram (Prometheus text has no form for one).
        MetricData::ExponentialHistogram(_) => {}
    }
}

/// The exposition of `metrics`: `target_info` for the resource, then every metric.
pub fn render(metrics: &ResourceMetrics) -> String {
    let mut out = String::new();
    let resource: Vec<KeyValue> = metrics
        .resource()
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    header(&mut out, "target_info", "gauge", "Target metadata");
    let _ = writeln!(out, "target_info{} 1", labels(resource.iter(), None));
    for scope in metrics.scope_metrics() {
        for metric in scope.metrics() {
            match metric.data() {
                AggregatedMetrics::F64(d) => render_data(&mut out, metric, d),
                AggregatedMetrics::U64(d) => render_data(&mut out, metric, d),
                AggregatedMetrics::I64(d) => render_data(&mut out, metric, d),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
