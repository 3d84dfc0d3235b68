//! Test traffic through Envoy: requests with chosen headers, parsed replies, bounded concurrency.

use crate::upstream::UPSTREAM_HEADER;
use anyhow::Context;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// Response header carrying the filter's decision when `debug_headers` is on.
pub const DECISION_HEADER: &str = "x-knhk-decision";
/// Response header carrying the admission outcome of a shed or degraded request.
pub const ADMISSION_HEADER: &str = "x-knhk-admission";

/// An HTTP client aimed at one Envoy listener.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A client reusing keep-alive connections (many requests per connection).
    pub fn new(base_url: &str) -> anyhow::Result<Client> {
        Self::build(base_url, reqwest::Client::builder())
    }

    /// A client that opens a new connection for every request, so requests spread over all
    /// of Envoy's workers (the kernel balances new connections between them).
    pub fn fresh_connections(base_url: &str) -> anyhow::Result<Client> {
        Self::build(
            base_url,
            reqwest::Client::builder().pool_max_idle_per_host(0),
        )
    }

    fn build(base_url: &str, builder: reqwest::ClientBuilder) -> anyhow::Result<Client> {
        let http = builder
            .timeout(Duration::from_secs(20))
            .build()
            .context("build HTTP client")?;
        Ok(Client {
            http,
            base: base_url.trim_end_matches('/').to_string(),
        })
    }

    /// GET `path` (with query) with extra request headers.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Reply> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes())
                    .with_context(|| format!("header name {name:?}"))?,
                HeaderValue::from_str(value).with_context(|| format!("header value of {name}"))?,
            );
        }
        self.get_with(path, map).await
    }

    /// GET `path` with a prepared header map (values may hold non-UTF-8 bytes).
    pub async fn get_with(&self, path: &str, headers: HeaderMap) -> anyhow::Result<Reply> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .get(&url)
            .headers(headers)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .text()
            .await
            .with_context(|| format!("body of GET {url}"))?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

/// A response as the client saw it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body.
    pub body: String,
}

impl Reply {
    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Which test upstream answered (`stable` / `canary`), if any did.
    pub fn upstream(&self) -> Option<&str> {
        self.header(UPSTREAM_HEADER)
    }

    /// The parsed `x-knhk-decision` header.
    pub fn decision(&self) -> Option<Decision> {
        self.header(DECISION_HEADER).map(Decision::parse)
    }

    /// The `x-knhk-admission` response header.
    pub fn admission(&self) -> Option<&str> {
        self.header(ADMISSION_HEADER)
    }

    /// A request header as the upstream received it (from the upstream's JSON echo).
    pub fn upstream_saw(&self, name: &str) -> Option<String> {
        let echo: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        echo.get("headers")?.get(name)?.as_str().map(str::to_string)
    }

    /// A one-line description for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "status={} upstream={:?} decision={:?} admission={:?}",
            self.status,
            self.upstream(),
            self.header(DECISION_HEADER),
            self.admission()
        )
    }
}

/// The `x-knhk-decision` header: `route=canary;reason=weighted;bucket=1234;...`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// All `key=value` pairs.
    pub fields: BTreeMap<String, String>,
}

impl Decision {
    /// Parse `k=v;k=v`; pairs without `=` are ignored.
    pub fn parse(text: &str) -> Decision {
        let fields = text
            .split(';')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Decision { fields }
    }

    /// A field's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// A numeric field.
    pub fn number(&self, key: &str) -> Option<u16> {
        self.get(key)?.parse().ok()
    }
}

/// Run `f` over `items` with at most `concurrency` in flight; results keep the input order,
/// and the first error ends the run.
pub async fn concurrent<T, R, F, Fut>(
    items: Vec<T>,
    concurrency: usize,
    f: F,
) -> anyhow::Result<Vec<R>>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = anyhow::Result<R>>,
{
    stream::iter(items.into_iter().map(f))
        .buffered(concurrency.max(1))
        .try_collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decision headers parse into fields; numbers parse as such.
    #[test]
    fn parses_decision() {
        let d = Decision::parse(
            "route=canary;reason=weighted;bucket=1234;priority=567;class=R1;version=3",
        );
        assert_eq!(d.get("route"), Some("canary"));
        assert_eq!(d.number("bucket"), Some(1234));
        assert_eq!(d.number("priority"), Some(567));
        assert_eq!(d.get("missing"), None);
    }
}
