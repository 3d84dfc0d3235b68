//! The console's routes: the page and its two assets, the browser verifier when built in, and
//! the state document the page polls. All are public reads (see [`super::view`]); the page's
//! actions go to the admin routes of [`crate::gates::api`] with the operator's token.
//!
//! | method, path | answer |
//! |---|---|
//! | `GET /console` | `308` to `/console/` |
//! | `GET /console/` | the page (`503` with how to build it, when this binary has none) |
//! | `GET /console/app.js`, `/console/app.css` | its script and style |
//! | `GET /console/verify.html` | the offline verifier page (`404` when not built in) |
//! | `GET /v1/console/state` | [`super::view::ConsoleState`], JSON, never cached |
//!
//! Every page is sent with a Content-Security-Policy that allows only the agent's own script,
//! style and API (the verifier, a self-contained file, only its inline code and no
//! connections), `nosniff`, no referrer, and no framing.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::{assets, Console};
use crate::api::error::ApiError;
use crate::clock::now_ns;

/// The console page's policy: its own files and API only.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The verifier page's policy: its inline script, style and module, nothing fetched.
pub const VERIFIER_CSP: &str = "default-src 'none'; script-src 'unsafe-inline' 'wasm-unsafe-eval'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What `/console/` says when the binary was built without the console.
const NOT_BUILT: &str = "<!doctype html><title>knhk console not built</title><p>This knhk-agent was built without the console's assets. Build them with <code>cargo xtask build-console</code>, then rebuild the agent.</p>";

/// The routes over `console`.
pub fn routes(console: Console) -> Router {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(index))
        .route("/console/app.js", get(app_js))
        .route("/console/app.css", get(app_css))
        .route("/console/verify.html", get(verifier))
        .route("/v1/console/state", get(state))
        .with_state(console)
}

fn page(csp: &'static str, content_type: &'static str, body: &'static [u8]) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn not_found(what: &str) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("{what} is not built into this agent"),
    )
    .into_response()
}

async fn index() -> Response {
    match assets::INDEX_HTML.filter(|_| assets::built()) {
        Some(body) => page(CONSOLE_CSP, "text/html; charset=utf-8", body),
        None => {
            let mut response = page(
                CONSOLE_CSP,
                "text/html; charset=utf-8",
                NOT_BUILT.as_bytes(),
            );
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
        }
    }
}

async fn app_js() -> Response {
    match assets::APP_JS {
        Some(body) => page(CONSOLE_CSP, "text/javascript; charset=utf-8", body),
        None => not_found("the console"),
    }
}

async fn app_css() -> Response {
    match assets::APP_CSS {
        Some(body) => page(CONSOLE_CSP, "text/css; charset=utf-8", body),
        None => not_found("the console"),
    }
}

async fn verifier() -> Response {
    match assets::VERIFIER {
        Some(body) => page(VERIFIER_CSP, "text/html; charset=utf-8", body),
        None => not_found("the verifier page"),
    }
}

async fn state(State(console): State<Console>) -> Result<Response, ApiError> {
    let built = tokio::task::spawn_blocking(move || console.state(now_ns()))
        .await
        .map_err(|e| ApiError::internal("console state task failed", &e))?;
    let document = built.map_err(|e| ApiError::internal("console state", &e))?;
    let mut response = Json(document).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
