//! `GET /metrics`: the Prometheus text exposition of the agent's metrics (no credential;
//! Istio's Prometheus scrapes it by the `prometheus.io/*` pod annotations).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{prometheus, Telemetry};

/// The `/metrics` route over `telemetry`.
pub fn routes(telemetry: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/metrics", get(get_metrics))
        .with_state(telemetry)
}

async fn get_metrics(State(telemetry): State<Arc<Telemetry>>) -> Response {
    // Gauges read SQLite-backed state: collect off the async workers.
    match tokio::task::spawn_blocking(move || telemetry.prometheus_text()).await {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)], text).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "collecting metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "collecting metrics failed\n",
            )
                .into_response()
        }
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "collecting metrics failed\n",
        )
            .into_response(),
    }
}
