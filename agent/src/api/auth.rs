//! Admin authorisation of the API: with `[api] admin_token_file` set, every request that
//! changes state — any method but `GET`/`HEAD`, except the filters' `POST /v1/receipts` and
//! the witness routes of a plain-HTTP quorum (`/v1/witness/…`: a witness accepts only
//! checkpoints signed by the peer's trusted keys; with `[identity]` they move to the mTLS peer
//! listener) — must carry `Authorization: Bearer <token>`. Reads and receipt ingest stay open
//! (the filters cannot hold a secret the operator would rotate with the agent's).
//!
//! The token is read once at start, must be at least [`MIN_TOKEN_BYTES`] of printable ASCII,
//! and is compared through SHA-256 digests in constant time. A refusal is `401` with
//! `WWW-Authenticate: Bearer` and a JSON reason, and is logged without the presented value.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// The `[api]` table of the agent configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// File holding the admin bearer token (env `KNHK_ADMIN_TOKEN_FILE`); absent: the admin
    /// endpoints are open to whoever reaches the API address (loopback by default).
    pub admin_token_file: Option<std::path::PathBuf>,
}

impl ApiConfig {
    /// Apply `KNHK_ADMIN_TOKEN_FILE`.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) {
        if let Some(v) = env("KNHK_ADMIN_TOKEN_FILE").filter(|v| !v.is_empty()) {
            self.admin_token_file = Some(v.into());
        }
    }

    /// Load the token, when configured.
    pub fn token(&self) -> Result<Option<AdminToken>, AuthError> {
        self.admin_token_file
            .as_deref()
            .map(AdminToken::load)
            .transpose()
    }
}

/// Shortest accepted token.
pub const MIN_TOKEN_BYTES: usize = 32;
/// Longest accepted token.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Why the admin token could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file could not be read.
    #[error("invalid setting api.admin_token_file: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The token is too short, too long or not printable ASCII.
    #[error("invalid setting api.admin_token_file: {path}: the token must be {MIN_TOKEN_BYTES}–{MAX_TOKEN_BYTES} printable ASCII characters (surrounding whitespace is ignored)")]
    Invalid {
        /// The file.
        path: String,
    },
}

/// The admin token's digest.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl AdminToken {
    /// Read and check the token file.
    pub fn load(path: &Path) -> Result<AdminToken, AuthError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: shown.clone(),
            source,
        })?;
        AdminToken::new(text.trim()).ok_or(AuthError::Invalid { path: shown })
    }

    /// A token from its text; `None` when it is not acceptable.
    pub fn new(token: &str) -> Option<AdminToken> {
        let ok = (MIN_TOKEN_BYTES..=MAX_TOKEN_BYTES).contains(&token.len())
            && token.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| AdminToken {
            digest: digest(token.as_bytes()),
        })
    }

    /// Whether `presented` is the token (constant time over the digests).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let other = digest(presented);
        self.digest
            .iter()
            .zip(other.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

fn needs_admin(method: &Method, path: &str) -> bool {
    !(method == Method::GET
        || method == Method::HEAD
        || path == "/v1/receipts"
        || path.starts_with("/v1/witness/"))
}

fn refuse(message: &str) -> Response {
    let mut response = ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: message.to_owned(),
    }
    .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Middleware: refuse state-changing requests without the admin token.
pub async fn require_admin(
    State(token): State<Arc<AdminToken>>,
    request: Request,
    next: Next,
) -> Response {
    if !needs_admin(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match presented {
        Some(p) if token.matches(p) => next.run(request).await,
        Some(_) => {
            tracing::warn!(method = %request.method(), path = %request.uri().path(), "admin request refused: wrong token");
            refuse("the admin token is wrong")
        }
        None => {
            tracing::warn!(method = %request.method(), path = %request.uri().path(), "admin request refused: no token");
            refuse("this request changes the agent's state and needs Authorization: Bearer <admin token>")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Short, long and non-printable tokens are refused; matching is exact.
    #[test]
    fn tokens_are_checked() {
        assert!(AdminToken::new("short").is_none());
        assert!(AdminToken::new(&"x".repeat(MAX_TOKEN_BYTES + 1)).is_none());
        assert!(AdminToken::new(&format!("{}\u{7f}", "x".repeat(40))).is_none());
        let t = AdminToken::new(&"k".repeat(40)).unwrap();
        assert!(t.matches("k".repeat(40).as_bytes()));
        assert!(!t.matches("k".repeat(41).as_bytes()));
        assert!(!t.matches(b""));
        assert!(needs_admin(&Method::PUT, "/v1/policy"));
        assert!(needs_admin(&Method::POST, "/v1/rollouts/current/abort"));
        assert!(!needs_admin(&Method::POST, "/v1/receipts"));
        assert!(!needs_admin(&Method::GET, "/v1/config"));
        assert!(!needs_admin(&Method::POST, "/v1/witness/add-checkpoint"));
        assert!(needs_admin(&Method::POST, "/v1/holds"));
    }
}
