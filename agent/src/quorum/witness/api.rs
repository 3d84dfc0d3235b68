//! The witness's HTTP routes: `POST /v1/witness/add-checkpoint` and `GET /v1/witness/logs`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::Witness;
use crate::api::error::INTERNAL_MESSAGE;
use crate::quorum::protocol::{AddCheckpoint, Refusal, ADD_CHECKPOINT_PATH, MAX_REQUEST_LEN};
use crate::quorum::QuorumError;

/// The read-only witness route (`GET /v1/witness/logs`) for the operators' API listener when
/// the full witness is served on the mTLS peer listener.
pub fn witness_status_router(witness: Arc<Witness>) -> Router {
    Router::new()
        .route("/v1/witness/logs", get(logs))
        .with_state(witness)
}

/// The witness routes over `witness` (transport-agnostic: serve on any listener).
pub fn witness_router(witness: Arc<Witness>) -> Router {
    Router::new()
        .route(ADD_CHECKPOINT_PATH, post(add_checkpoint))
        .route("/v1/witness/logs", get(logs))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_LEN))
        .with_state(witness)
}

fn refuse(status: StatusCode, code: &str, error: String, size: Option<u64>) -> Response {
    (
        status,
        Json(Refusal {
            error,
            code: code.to_owned(),
            size,
        }),
    )
        .into_response()
}

fn refusal(e: &QuorumError) -> Response {
    let status = match e {
        QuorumError::UnknownOrigin(_) => StatusCode::NOT_FOUND,
        QuorumError::BadSignature(_) => StatusCode::FORBIDDEN,
        QuorumError::Rollback { .. }
        | QuorumError::Fork { .. }
        | QuorumError::OldSizeMismatch { .. } => StatusCode::CONFLICT,
        QuorumError::BadProof { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        QuorumError::Malformed(_) => StatusCode::BAD_REQUEST,
        other => {
            tracing::error!(error = %other, "witness failure");
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                other.code(),
                INTERNAL_MESSAGE.to_owned(),
                None,
            );
        }
    };
    let size = match e {
        QuorumError::OldSizeMismatch { witnessed, .. } => Some(*witnessed),
        _ => None,
    };
    refuse(status, e.code(), e.to_string(), size)
}

async fn add_checkpoint(
    State(witness): State<Arc<Witness>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request exceeds {MAX_REQUEST_LEN} bytes"),
                None,
            )
        }
        Err(r) => return refuse(r.status(), "malformed", r.body_text(), None),
    };
    let req: AddCheckpoint = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refusal(&QuorumError::Malformed(e.to_string()));
        }
    };
    match witness.add_checkpoint(req).await {
        Ok(cosigned) => Json(cosigned).into_response(),
        Err(e) => {
            tracing::warn!(code = e.code(), error = %e, "witness refused a checkpoint");
            refusal(&e)
        }
    }
}

async fn logs(State(witness): State<Arc<Witness>>) -> Response {
    match witness.logs().await {
        Ok(logs) => Json(logs).into_response(),
        Err(e) => refusal(&e),
    }
}
