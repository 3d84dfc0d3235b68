//! Quorum status routes.
//!
//! | method, path | answer |
//! |---|---|
//! | `GET /v1/quorum/status` | [`Status`]: regions, each peer's acknowledged size and last error, newest and newest committed checkpoint |
//! | `GET /v1/quorum/checkpoints/{size}` | [`RoundReport`] of that checkpoint: who acknowledged, the others' errors, committed or not |
//! | `GET /v1/quorum/commits?limit=` | the newest [`Commit`]s (sealing and commit times), newest first |
//! | `GET /v1/quorum/receipts/{index}/proof` | proof bundle against the oldest committed checkpoint covering the receipt, with its cosignatures; `409` while none does |

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use knhk_core::checkpoint::Checkpoint;
use serde::{Deserialize, Serialize};

use super::replicator::RoundReport;
use super::state::{Commit, PeerState};
use super::{QuorumError, Replicator};
use crate::api::error::ApiError;

/// Largest `limit` of `GET /v1/quorum/commits`.
pub const MAX_COMMITS_PAGE: u64 = 10_000;

/// Answer of `GET /v1/quorum/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// This region.
    pub region: String,
    /// The legacy primary region, if configured.
    pub primary_region: Option<String>,
    /// Signatures needed per checkpoint (own included).
    pub threshold: usize,
    /// Every region, this one first.
    pub regions: Vec<String>,
    /// Each peer's state (absent until first contacted).
    pub peers: Vec<PeerState>,
    /// Tree size of the newest checkpoint.
    pub latest_size: u64,
    /// Acknowledgements of the newest checkpoint.
    pub latest: Option<RoundReport>,
    /// The newest committed checkpoint.
    pub latest_committed: Option<Commit>,
    /// True when the newest checkpoint is committed; false means commits are waiting for
    /// peers (see `latest.errors`).
    pub up_to_date: bool,
}

/// The routes over `replicator`.
pub fn routes(replicator: Arc<Replicator>) -> Router {
    Router::new()
        .route("/v1/quorum/status", get(status))
        .route("/v1/quorum/checkpoints/{size}", get(checkpoint))
        .route("/v1/quorum/commits", get(commits))
        .route("/v1/quorum/receipts/{index}/proof", get(proof))
        .with_state(replicator)
}

fn internal(e: QuorumError) -> ApiError {
    ApiError::internal("quorum failure", &e)
}

async fn status(State(r): State<Arc<Replicator>>) -> Result<Json<Status>, ApiError> {
    let latest = r.log().latest_checkpoint()?;
    let latest_size = match &latest {
        Some(c) => {
            Checkpoint::parse(&c.text)
                .map_err(crate::receipts::ReceiptsError::from)?
                .tree_size
        }
        None => 0,
    };
    let report = match latest {
        Some(_) => Some(r.report(latest_size).map_err(internal)?),
        None => None,
    };
    let state = r.state().map_err(internal)?;
    let latest_committed = state.recent_commits(1).map_err(internal)?.pop();
    let cfg = r.config();
    Ok(Json(Status {
        region: cfg.region.clone(),
        primary_region: cfg.primary_region.clone(),
        threshold: cfg.threshold,
        regions: std::iter::once(cfg.region.clone())
            .chain(cfg.peers.iter().map(|p| p.region.clone()))
            .collect(),
        peers: state.peers().map_err(internal)?,
        latest_size,
        up_to_date: report.as_ref().is_some_and(|r| r.committed),
        latest: report,
        latest_committed,
    }))
}

async fn checkpoint(
    State(r): State<Arc<Replicator>>,
    Path(size): Path<String>,
) -> Result<Json<RoundReport>, ApiError> {
    let size: u64 = size.parse().map_err(|_| {
        ApiError::bad_request(format!("tree size {size:?} is not a non-negative integer"))
    })?;
    if r.log().checkpoint_at(size)?.is_none() {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("no checkpoint of tree size {size}"),
        });
    }
    Ok(Json(r.report(size).map_err(internal)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitsQuery {
    limit: Option<u64>,
}

async fn commits(
    State(r): State<Arc<Replicator>>,
    query: Result<Query<CommitsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Commit>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_COMMITS_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_COMMITS_PAGE}"
        )));
    }
    let state = r.state().map_err(internal)?;
    Ok(Json(state.recent_commits(limit).map_err(internal)?))
}

async fn proof(
    State(r): State<Arc<Replicator>>,
    Path(index): Path<String>,
) -> Result<Response, ApiError> {
    let index: u64 = index.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "receipt index {index:?} is not a non-negative integer"
        ))
    })?;
    let size = r.log().size()?;
    if index >= size {
        return Err(crate::receipts::ReceiptsError::OutOfRange { index, size }.into());
    }
    let commit = r
        .state()
        .map_err(internal)?
        .commit_covering(index)
        .map_err(internal)?;
    let Some(commit) = commit else {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            message: format!("leaf {index} is not covered by a committed checkpoint yet"),
        });
    };
    let checkpoint = r.log().checkpoint_at(commit.tree_size)?.ok_or_else(|| {
        internal(QuorumError::Corrupt(format!(
            "committed checkpoint {} is not in the log",
            commit.tree_size
        )))
    })?;
    let mut bundle = r.log().proof_bundle_for(index, checkpoint)?;
    bundle.cosignatures = r.cosignatures(commit.tree_size).map_err(internal)?;
    Ok(Json(bundle).into_response())
}
