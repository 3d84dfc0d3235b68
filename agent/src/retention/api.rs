//! Legal hold and retention routes.
//!
//! | method, path | answer |
//! |---|---|
//! | `POST /v1/holds` | body [`PlaceHold`]; appends a signed hold entry; [`Recorded`] |
//! | `POST /v1/holds/{id}/release` | body [`ReleaseHold`]; appends a signed release entry; [`Recorded`] |
//! | `GET /v1/holds` | every [`Hold`] known here (own log and witnessed logs) |
//! | `POST /v1/retention/run` | one retention run now; [`RunReport`] |

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};

use super::{Hold, PlaceHold, Recorded, ReleaseHold, Retention, RetentionError, RunReport};
use crate::api::error::ApiError;
use crate::clock::now_ns;

/// Largest hold request body.
const MAX_BODY: usize = 4096;

/// The routes over `retention`.
pub fn routes(retention: Arc<Retention>) -> Router {
    Router::new()
        .route("/v1/holds", post(place).get(list))
        .route("/v1/holds/{id}/release", post(release))
        .route("/v1/retention/run", post(run))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(retention)
}

impl From<RetentionError> for ApiError {
    fn from(e: RetentionError) -> Self {
        let status = match &e {
            RetentionError::InvalidHold(_) | RetentionError::InvalidConfig { .. } => {
                StatusCode::BAD_REQUEST
            }
            RetentionError::DuplicateHold(_) => StatusCode::CONFLICT,
            RetentionError::UnknownHold(_) => StatusCode::NOT_FOUND,
            RetentionError::Receipts(_) | RetentionError::Quorum(_) => {
                return ApiError::internal("retention failure", &e);
            }
        };
        ApiError::new(status, e.to_string())
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        message: format!("invalid request body: {e}"),
    })
}

async fn place(State(r): State<Arc<Retention>>, body: Bytes) -> Result<Json<Recorded>, ApiError> {
    let req: PlaceHold = parse(&body)?;
    Ok(Json(r.place(req).await?))
}

async fn release(
    State(r): State<Arc<Retention>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Recorded>, ApiError> {
    let req: ReleaseHold = parse(&body)?;
    Ok(Json(r.release(&id, req.reason).await?))
}

async fn list(State(r): State<Arc<Retention>>) -> Result<Json<Vec<Hold>>, ApiError> {
    Ok(Json(r.holds().await?))
}

async fn run(State(r): State<Arc<Retention>>) -> Result<Json<RunReport>, ApiError> {
    Ok(Json(r.run(now_ns()).await?))
}
