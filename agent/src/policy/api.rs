//! HTTP endpoints of config push (merged into the agent's API router).
//!
//! | method, path | answer |
//! |---|---|
//! | `GET /v1/config?after=<epoch>&timeout_ms=<ms>` | `200` with the signed envelope JSON (`content-type: application/json`, `x-knhk-epoch`) as soon as an epoch above `after` exists; `204` (with `x-knhk-epoch` of the epoch in force) when `timeout_ms` passes first or the agent shuts down; `409` when `after` is above the agent's epoch |
//! | `GET /v1/policy` | `{epoch, policy, signed_by, issued_at_ns, source, policy_file, waiting}` (`epoch` 0 and nulls before any) |
//! | `PUT /v1/policy` | body: a filter configuration without `control` (`Content-Type: application/json`, at most 64 KiB); `{epoch, changed}` |
//! | `GET /v1/config/keys` | the key set for the filter's static `control.trusted_keys` (JSON list) |
//! | `POST /v1/config/keys/rotate` | no body; rotates the config key and publishes the handover: `{epoch, previous_version, key}` |
//!
//! Every refusal is a 4xx with `{"error": "<reason>"}` and changes nothing.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use knhk_core::checkpoint::PublicKeyVersion;
use knhk_core::limits::MAX_CONFIG_BYTES;
use serde::{Deserialize, Serialize};

use super::service::{Epoch, PolicyService, Rotation, Source};
use super::{PolicyConfig, PolicyError};
use crate::api::error::ApiError;
use crate::api::slots::SlotRefusal;

/// Header carrying the epoch of a `GET /v1/config` answer.
pub const EPOCH_HEADER: &str = "x-knhk-epoch";
/// Longest query value echoed back in an error message.
const ECHO_MAX: usize = 40;

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::Malformed(_) => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
            PolicyError::NoPolicy => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            PolicyError::TooLarge(_) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
            PolicyError::Invalid(_) | PolicyError::SloOverride(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            PolicyError::Kms(_) => {
                tracing::error!(error = %e, "config signing failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "signing the config failed; nothing changed; see the agent log",
                )
            }
            other => {
                tracing::error!(error = %other, "config push failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; nothing changed; see the agent log",
                )
            }
        }
    }
}

fn only(allowed: &'static str) -> impl Fn(Method) -> std::future::Ready<Response> + Clone {
    move |method: Method| {
        let mut response = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} is not allowed here; use {allowed}"),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allowed));
        std::future::ready(response)
    }
}

fn with_only(
    route: MethodRouter<Arc<PolicyService>>,
    allowed: &'static str,
) -> MethodRouter<Arc<PolicyService>> {
    route.fallback(only(allowed))
}

/// The config push routes over `svc`.
pub fn routes(svc: Arc<PolicyService>) -> Router {
    Router::new()
        .route(
            "/v1/policy",
            with_only(get(get_policy).put(put_policy), "GET, PUT"),
        )
        .route("/v1/config", with_only(get(get_config), "GET"))
        .route("/v1/config/keys", with_only(get(get_keys), "GET"))
        .route(
            "/v1/config/keys/rotate",
            with_only(post(post_rotate), "POST"),
        )
        .layer(DefaultBodyLimit::max(MAX_CONFIG_BYTES))
        .with_state(svc)
}

/// The policy file's state in `GET /v1/policy`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileStatus {
    /// The watched file.
    pub path: String,
    /// Why its current contents were refused; `null` when they are in force.
    pub error: Option<String>,
}

/// Answer of `GET /v1/policy`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyView {
    /// The epoch in force; 0 before any.
    pub epoch: u64,
    /// The policy in force.
    pub policy: Option<serde_json::Value>,
    /// The key version that signed it.
    pub signed_by: Option<PublicKeyVersion>,
    /// When it was signed, ns since the Unix epoch.
    pub issued_at_ns: Option<u64>,
    /// Where it came from.
    pub source: Option<Source>,
    /// The watched policy file, when configured.
    pub policy_file: Option<FileStatus>,
    /// Long-polls (`GET /v1/config`) held right now: about one per filter worker.
    pub waiting: usize,
}

async fn get_policy(State(svc): State<Arc<PolicyService>>) -> Json<PolicyView> {
    let latest = svc.snapshot().latest;
    let e: Option<&Epoch> = latest.as_deref();
    Json(PolicyView {
        epoch: e.map_or(0, |e| e.epoch),
        policy: e.map(|e| e.policy.clone()),
        signed_by: e.map(|e| e.signed_by.clone()),
        issued_at_ns: e.map(|e| e.issued_at_ns),
        source: e.map(|e| e.source),
        policy_file: svc.policy_file().map(|p| FileStatus {
            path: p.display().to_string(),
            error: svc.file_error(),
        }),
        waiting: svc.waiting(),
    })
}

/// Answer of `PUT /v1/policy`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Published {
    /// The epoch in force afterwards.
    pub epoch: u64,
    /// Whether a new epoch was published (`false` when the policy was already in force).
    pub changed: bool,
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|ct| ct.trim().eq_ignore_ascii_case("application/json"))
}

fn body_or_refusal(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| ApiError::body_rejection(r, "body", MAX_CONFIG_BYTES))
}

async fn put_policy(
    State(svc): State<Arc<PolicyService>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Published>, ApiError> {
    if !is_json(&headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ));
    }
    let body = body_or_refusal(body)?;
    let (epoch, changed) = svc.set_policy(&body, Source::Api).await?;
    Ok(Json(Published {
        epoch: epoch.epoch,
        changed,
    }))
}

async fn get_keys(
    State(svc): State<Arc<PolicyService>>,
) -> Result<Json<Vec<PublicKeyVersion>>, ApiError> {
    Ok(Json(svc.trusted_keys().await?))
}

async fn post_rotate(
    State(svc): State<Arc<PolicyService>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Rotation>, ApiError> {
    if !body_or_refusal(body)?.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "POST /v1/config/keys/rotate takes no body",
        ));
    }
    Ok(Json(svc.rotate().await?))
}

fn echo(value: &str) -> String {
    let mut end = value.len().min(ECHO_MAX);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    if end < value.len() {
        format!("{:?}…", &value[..end])
    } else {
        format!("{value:?}")
    }
}

/// `after` and the hold of a long-poll, from its query string.
fn parse_poll_query(
    query: Option<&str>,
    config: &PolicyConfig,
) -> Result<(u64, Duration), ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    let mut after = None;
    let mut timeout_ms = None;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let slot = match key.as_ref() {
            "after" => &mut after,
            "timeout_ms" => &mut timeout_ms,
            other => {
                return Err(bad(format!(
                    "unknown query parameter {}; expected after and timeout_ms",
                    echo(other)
                )))
            }
        };
        if slot.is_some() {
            return Err(bad(format!("query parameter {key} is given twice")));
        }
        *slot = Some(value.into_owned());
    }
    let after = match after {
        None => 0,
        Some(v) => v.parse::<u64>().map_err(|_| {
            bad(format!(
                "after must be a config epoch (a whole number 0..={}), got {}",
                u64::MAX,
                echo(&v)
            ))
        })?,
    };
    let max = u64::try_from(config.long_poll_max.as_millis()).unwrap_or(u64::MAX);
    let timeout = match timeout_ms {
        None => config.long_poll_timeout,
        Some(v) => {
            let ms = v.parse::<u64>().map_err(|_| {
                bad(format!(
                    "timeout_ms must be a whole number of milliseconds 0..={max}, got {}",
                    echo(&v)
                ))
            })?;
            if ms > max {
                return Err(bad(format!(
                    "timeout_ms {ms} exceeds the maximum of {max} ms (policy.long_poll_max)"
                )));
            }
            Duration::from_millis(ms)
        }
    };
    Ok((after, timeout))
}

fn epoch_header(epoch: u64) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(EPOCH_HEADER),
        HeaderValue::from(epoch),
    )
}

async fn get_config(
    State(svc): State<Arc<PolicyService>>,
    extensions: axum::http::Extensions,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (after, timeout) = parse_poll_query(query.as_deref(), svc.config())?;
    let current = svc.snapshot().epoch();
    if after > current {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "after {after} is above this agent's config epoch {current}: the caller's epoch did not come from this agent (or its data directory was lost)"
            ),
        ));
    }
    let no_store = (header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // A call that would hold takes a slot: the total and one client's share are bounded, so
    // held polls cannot take the file descriptors receipt ingest needs.
    let _slot = if after == current {
        let client = crate::api::serve::client_ip(&extensions);
        match svc.poll_slots().try_take(client) {
            Ok(slot) => Some(slot),
            Err(refusal) => {
                let (which, n) = match refusal {
                    SlotRefusal::Total(n) => ("policy.max_long_polls", n),
                    SlotRefusal::PerClient(n) => ("policy.max_long_polls_per_client", n),
                };
                let mut response = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("{n} long-polls are held ({which}): poll again later"),
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return Ok(response);
            }
        }
    } else {
        None
    };
    match svc.wait_newer(after, timeout).await {
        Some(e) => Ok((
            StatusCode::OK,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                epoch_header(e.epoch),
                no_store,
            ],
            e.envelope.clone(),
        )
            .into_response()),
        None => Ok((
            StatusCode::NO_CONTENT,
            [epoch_header(svc.snapshot().epoch()), no_store],
        )
            .into_response()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Query parsing takes defaults, refuses unknown, repeated, non-numeric, negative and
    /// too-large values with a message naming the parameter.
    #[test]
    fn poll_query_is_parsed_strictly() {
        let cfg = PolicyConfig::default();
        assert_eq!(
            parse_poll_query(None, &cfg).unwrap(),
            (0, cfg.long_poll_timeout)
        );
        assert_eq!(
            parse_poll_query(Some("after=7&timeout_ms=250"), &cfg).unwrap(),
            (7, Duration::from_millis(250))
        );
        for (q, needle) in [
            ("after=-1", "after"),
            ("after=abc", "after"),
            ("after=99999999999999999999999", "after"),
            ("after=1&after=2", "twice"),
            ("timeout_ms=-5", "timeout_ms"),
            ("timeout_ms=1.5", "timeout_ms"),
            ("timeout_ms=300001", "maximum"),
            ("colour=red", "unknown query parameter"),
        ] {
            let e = parse_poll_query(Some(q), &cfg).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{q}");
            assert!(e.message.contains(needle), "{q}: {}", e.message);
        }
        let long = format!("after={}", "9".repeat(500));
        let e = parse_poll_query(Some(&long), &cfg).unwrap_err();
        assert!(e.message.len() < 200, "{}", e.message);
    }
}
