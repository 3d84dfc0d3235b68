//! [`ApiError`]: the one refusal type every subsystem's routes answer with, and its JSON body
//! `{"error": "<reason>"}`. A leaf: it imports nothing from the agent, so every subsystem may
//! import it.

use std::fmt::Display;

use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// What a caller is told when the agent failed inside: the cause goes to the log only.
pub const INTERNAL_MESSAGE: &str = "internal error; see the agent log";

/// An API refusal or failure: a status and a message for the caller.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What the caller is told.
    pub message: String,
}

impl ApiError {
    /// A refusal with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// `400 Bad Request` with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// `500`: logs `error` as a failure of `what` and tells the caller only
    /// [`INTERNAL_MESSAGE`], so no internal detail (paths, SQL, KMS answers) leaks.
    pub fn internal(what: &'static str, error: &dyn Display) -> Self {
        tracing::error!(error = %error, "{what}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_MESSAGE)
    }
}

impl ApiError {
    /// A request body axum refused: over the route's limit, `413` saying "`what` exceeds the
    /// limit of `limit` bytes"; anything else keeps axum's status and text.
    pub fn body_rejection(rejection: BytesRejection, what: &str, limit: usize) -> Self {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(status, format!("{what} exceeds the limit of {limit} bytes"))
        } else {
            Self::new(status, rejection.body_text())
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: &self.message,
            }),
        )
            .into_response()
    }
}
