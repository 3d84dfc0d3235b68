//! Admin endpoints of the promotion gates (merged into the agent's API router).
//!
//! | method, path | answer |
//! |---|---|
//! | `POST /v1/rollouts` | body: a rollout document (JSON, ≤ 64 KiB); `201` with the status |
//! | `GET /v1/rollouts/current` | the newest rollout's status; `404` before any |
//! | `POST /v1/rollouts/current/promote` | optional body `{"to": "canary"\|"staging"\|"production"}`; `409` when the transition is not allowed |
//! | `POST /v1/rollouts/current/pause` | stop automatic promotion |
//! | `POST /v1/rollouts/current/resume` | resume it |
//! | `POST /v1/rollouts/current/abort` | optional body `{"reason": "…"}`; all traffic to stable |
//! | `POST /v1/rollouts/current/flags/{name}/disable` | turn a rollout flag off |
//!
//! Every refusal is a 4xx with `{"error": "<reason>"}` and changes nothing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::spec::MAX_SPEC_BYTES;
use super::{Gate, Gates, GatesError};
use crate::api::error::ApiError;
use crate::policy::PolicyError;

/// Longest abort reason kept.
const MAX_REASON: usize = 512;

impl From<GatesError> for ApiError {
    fn from(e: GatesError) -> Self {
        let status = match &e {
            GatesError::InvalidSpec { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            GatesError::InvalidTransition(_) | GatesError::Conflict(_) => StatusCode::CONFLICT,
            GatesError::NotFound(_) => StatusCode::NOT_FOUND,
            GatesError::Policy(PolicyError::Invalid(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            GatesError::Policy(PolicyError::NoPolicy) => StatusCode::CONFLICT,
            _ => {
                return ApiError::internal("rollout failure", &e);
            }
        };
        ApiError::new(status, e.to_string())
    }
}

/// The routes over `gates`.
pub fn routes(gates: Arc<Gates>) -> Router {
    Router::new()
        .route("/v1/rollouts", post(start))
        .route("/v1/rollouts/current", get(status))
        .route("/v1/rollouts/current/promote", post(promote))
        .route("/v1/rollouts/current/pause", post(pause))
        .route("/v1/rollouts/current/resume", post(resume))
        .route("/v1/rollouts/current/abort", post(abort))
        .route(
            "/v1/rollouts/current/flags/{name}/disable",
            post(disable_flag),
        )
        .layer(DefaultBodyLimit::max(MAX_SPEC_BYTES))
        .with_state(gates)
}

fn body_of(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| ApiError {
        status: e.status(),
        message: format!("reading the body: {e}"),
    })
}

async fn start(
    State(gates): State<Arc<Gates>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_of(body)?;
    let status = gates.start(&body).await?;
    Ok((StatusCode::CREATED, Json(status)).into_response())
}

async fn status(State(gates): State<Arc<Gates>>) -> Result<Response, ApiError> {
    match gates.status()? {
        Some(s) => Ok(Json(s).into_response()),
        None => Err(GatesError::NotFound("no rollout has been started".to_owned()).into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    to: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AbortBody {
    reason: Option<String>,
}

fn optional_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| ApiError::bad_request(format!("body is not valid: {e}")))
}

async fn promote(
    State(gates): State<Arc<Gates>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_of(body)?;
    let to = match optional_json::<PromoteBody>(&body)?.and_then(|b| b.to) {
        Some(name) => Some(Gate::parse(&name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`to` {name:.40?} is not one of canary, staging, production"
            ))
        })?),
        None => None,
    };
    Ok(Json(gates.promote(to, "promoted by operator").await?).into_response())
}

async fn pause(State(gates): State<Arc<Gates>>) -> Result<Response, ApiError> {
    Ok(Json(gates.pause().await?).into_response())
}

async fn resume(State(gates): State<Arc<Gates>>) -> Result<Response, ApiError> {
    Ok(Json(gates.resume().await?).into_response())
}

async fn abort(
    State(gates): State<Arc<Gates>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_of(body)?;
    let reason = optional_json::<AbortBody>(&body)?
        .and_then(|b| b.reason)
        .unwrap_or_else(|| "aborted by operator".to_owned());
    if reason.is_empty() || reason.len() > MAX_REASON {
        return Err(ApiError::bad_request(format!(
            "`reason` must be 1–{MAX_REASON} bytes"
        )));
    }
    Ok(Json(gates.abort(&reason).await?).into_response())
}

async fn disable_flag(
    State(gates): State<Arc<Gates>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(gates.disable_flag(&name).await?).into_response())
}
