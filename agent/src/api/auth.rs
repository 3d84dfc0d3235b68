//! Who may call what on the API. Every route is one of three kinds ([`access`]):
//!
//! - **public** — what a transparency log keeps public: checkpoints, inclusion proofs,
//!   cosignatures, the config-signing public keys, and the witness routes of a plain-HTTP
//!   quorum (a witness accepts only checkpoints signed by the peer's trusted keys), the
//!   metrics, and the operator console's page and state document (`/console/…`,
//!   `/v1/console/state`: figures only, no secret; its actions go to the admin routes);
//! - **filter** — the filters' calls: `POST /v1/receipts` and the `GET /v1/config` long-poll.
//!   With `[api] filter_token_file` they need `Authorization: Bearer <token>` where the token
//!   is one line of that file (the filter's `control.token`; the admin token is accepted on
//!   `GET /v1/config` too, never on receipts). The file is re-read every second, so adding a
//!   line before rolling the filters and removing the old one after rotates the credential,
//!   and removing a line revokes it, without a restart;
//! - **admin** — everything else, reads included (the policy with its salt, the receipt
//!   entries and export, rollout and hold state): with `[api] admin_token_file` they need the
//!   admin token.
//!
//! Without a token file the corresponding kind is open to whoever reaches the API, which
//! [`crate::config::AgentConfig::check_listeners`] allows on loopback only. Tokens follow
//! [`knhk_core::credential`]'s grammar and are compared through SHA-256 digests in constant
//! time. A refusal is `401` with `WWW-Authenticate: Bearer` and a JSON reason that says
//! which credential was missing or wrong; it is counted ([`Refusals`], served at
//! `GET /v1/auth/refusals`) and logged without the presented value.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use knhk_core::credential::{is_acceptable_token, MAX_TOKEN_BYTES, MIN_TOKEN_BYTES};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::error::ApiError;

/// The `[api]` table of the agent configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Open API connections at most (128..=65536; default 1024); beyond, new connections are
    /// closed at once. The agent checks at start that its file-descriptor limit leaves room.
    pub max_connections: usize,
    /// How long a request's headers may take to arrive, and an idle keep-alive connection may
    /// wait for its next request (1s..=300s; default 15s).
    #[serde(with = "crate::settings::duration")]
    pub header_timeout: Duration,
    /// Receipt batches one client address may post per second (1..=1000000; default 1000);
    /// beyond, `429` with `retry-after`. Behind a sidecar every caller shares one address.
    pub receipt_batches_per_second: u32,
    /// Batches one client address may post at once above the rate (1..=1000000; default 2000).
    pub receipt_batch_burst: u32,
    /// File holding the admin bearer token (env `KNHK_ADMIN_TOKEN_FILE`); absent: the admin
    /// routes are open to whoever reaches the API address (loopback only).
    pub admin_token_file: Option<PathBuf>,
    /// File holding the filters' bearer tokens, one per line, `#` comments and blank lines
    /// ignored (env `KNHK_FILTER_TOKEN_FILE`); absent: receipt ingest and the config
    /// long-poll are open to whoever reaches the API address (loopback only).
    pub filter_token_file: Option<PathBuf>,
}

/// Default of `api.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Fewest `api.max_connections` accepted.
pub const MIN_CONNECTIONS: usize = 128;
/// Default of `api.header_timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(15);

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            receipt_batches_per_second: 1000,
            receipt_batch_burst: 2000,
            admin_token_file: None,
            filter_token_file: None,
        }
    }
}

impl ApiConfig {
    /// Check the bounds of the server settings.
    pub fn validate(&self) -> Result<(), AuthError> {
        if !(MIN_CONNECTIONS..=65_536).contains(&self.max_connections) {
            return Err(AuthError::Setting {
                setting: "api.max_connections",
                reason: format!(
                    "must be {MIN_CONNECTIONS}..=65536, got {}",
                    self.max_connections
                ),
            });
        }
        if self.header_timeout < Duration::from_secs(1)
            || self.header_timeout > Duration::from_secs(300)
        {
            return Err(AuthError::Setting {
                setting: "api.header_timeout",
                reason: "must be between 1s and 300s".to_owned(),
            });
        }
        for (setting, value) in [
            (
                "api.receipt_batches_per_second",
                self.receipt_batches_per_second,
            ),
            ("api.receipt_batch_burst", self.receipt_batch_burst),
        ] {
            if !(1..=1_000_000).contains(&value) {
                return Err(AuthError::Setting {
                    setting,
                    reason: format!("must be 1..=1000000, got {value}"),
                });
            }
        }
        Ok(())
    }

    /// The per-client receipt batch limiter these settings give.
    pub fn receipt_rate(&self) -> super::rate::RateLimiter {
        super::rate::RateLimiter::new(self.receipt_batches_per_second, self.receipt_batch_burst)
    }

    /// The server bounds these settings give.
    pub fn serve_limits(&self) -> super::serve::ServeLimits {
        super::serve::ServeLimits {
            max_connections: self.max_connections,
            header_timeout: self.header_timeout,
        }
    }

    /// Apply `KNHK_ADMIN_TOKEN_FILE` and `KNHK_FILTER_TOKEN_FILE`.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) {
        if let Some(v) = env("KNHK_ADMIN_TOKEN_FILE").filter(|v| !v.is_empty()) {
            self.admin_token_file = Some(v.into());
        }
        if let Some(v) = env("KNHK_FILTER_TOKEN_FILE").filter(|v| !v.is_empty()) {
            self.filter_token_file = Some(v.into());
        }
    }

    /// Load the admin token, when configured.
    pub fn token(&self) -> Result<Option<AdminToken>, AuthError> {
        self.admin_token_file
            .as_deref()
            .map(AdminToken::load)
            .transpose()
    }

    /// Load the filter tokens, when configured.
    pub fn filter_tokens(&self) -> Result<Option<FilterTokens>, AuthError> {
        self.filter_token_file
            .as_deref()
            .map(FilterTokens::load)
            .transpose()
    }
}

/// Most filter tokens one file may hold (old and new during a rotation, one per deployment).
pub const MAX_FILTER_TOKENS: usize = 64;

/// Why an `[api]` setting or a token file is refused. No message contains a token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file could not be read.
    #[error("invalid setting {setting}: cannot read {path}: {source}")]
    Read {
        /// The setting naming the file.
        setting: &'static str,
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A token is too short, too long or not printable ASCII.
    #[error("invalid setting {setting}: {path}{line}: a token must be {MIN_TOKEN_BYTES}–{MAX_TOKEN_BYTES} printable ASCII characters without spaces (surrounding whitespace is ignored)")]
    Invalid {
        /// The setting naming the file.
        setting: &'static str,
        /// The file.
        path: String,
        /// ` line N` for the filter token file, empty for the admin token.
        line: String,
    },
    /// A server setting is out of its bounds.
    #[error("invalid setting {setting}: {reason}")]
    Setting {
        /// The setting.
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// The filter token file holds no token or too many.
    #[error("invalid setting api.filter_token_file: {path} holds {count} tokens, 1..={MAX_FILTER_TOKENS} allowed")]
    Count {
        /// The file.
        path: String,
        /// Tokens found.
        count: usize,
    },
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Constant-time comparison of two digests.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn read(setting: &'static str, path: &Path) -> Result<String, AuthError> {
    std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        setting,
        path: path.display().to_string(),
        source,
    })
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

impl AdminToken {
    /// Read and check the token file.
    pub fn load(path: &Path) -> Result<AdminToken, AuthError> {
        let text = read("api.admin_token_file", path)?;
        AdminToken::new(text.trim()).ok_or_else(|| AuthError::Invalid {
            setting: "api.admin_token_file",
            path: path.display().to_string(),
            line: String::new(),
        })
    }

    /// A token from its text; `None` when it is not acceptable.
    pub fn new(token: &str) -> Option<AdminToken> {
        is_acceptable_token(token).then(|| AdminToken {
            digest: digest(token.as_bytes()),
        })
    }

    /// Whether `presented` is the token (constant time over the digests).
    pub fn matches(&self, presented: &[u8]) -> bool {
        same(&self.digest, &digest(presented))
    }
}

/// The filter tokens in force: digests of the lines of `api.filter_token_file`, replaced
/// when the file changes ([`FilterTokens::spawn_reload`]).
#[derive(Clone)]
pub struct FilterTokens {
    path: PathBuf,
    digests: Arc<RwLock<Vec<[u8; 32]>>>,
}

impl std::fmt::Debug for FilterTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FilterTokens({} tokens)", self.count())
    }
}

/// The digests of the tokens in `text`, one per line.
fn parse_filter_tokens(text: &str, path: &Path) -> Result<Vec<[u8; 32]>, AuthError> {
    let mut digests = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !is_acceptable_token(line) {
            return Err(AuthError::Invalid {
                setting: "api.filter_token_file",
                path: path.display().to_string(),
                line: format!(" line {}", i + 1),
            });
        }
        digests.push(digest(line.as_bytes()));
    }
    if digests.is_empty() || digests.len() > MAX_FILTER_TOKENS {
        return Err(AuthError::Count {
            path: path.display().to_string(),
            count: digests.len(),
        });
    }
    Ok(digests)
}

impl FilterTokens {
    /// Read and check the token file.
    pub fn load(path: &Path) -> Result<FilterTokens, AuthError> {
        let digests = parse_filter_tokens(&read("api.filter_token_file", path)?, path)?;
        Ok(FilterTokens {
            path: path.to_path_buf(),
            digests: Arc::new(RwLock::new(digests)),
        })
    }

    /// Tokens in force.
    pub fn count(&self) -> usize {
        self.digests.read().map_or(0, |d| d.len())
    }

    /// Whether `presented` is one of the tokens (each compared in constant time).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let other = digest(presented);
        self.digests
            .read()
            .is_ok_and(|d| d.iter().fold(false, |hit, t| hit | same(t, &other)))
    }

    /// Re-read the file: `Ok(true)` when the set changed. An unreadable or invalid file
    /// leaves the set in force unchanged (the error says why).
    pub fn reload(&self) -> Result<bool, AuthError> {
        let fresh = parse_filter_tokens(&read("api.filter_token_file", &self.path)?, &self.path)?;
        let Ok(mut current) = self.digests.write() else {
            return Ok(false);
        };
        if *current == fresh {
            return Ok(false);
        }
        *current = fresh;
        Ok(true)
    }

    /// Re-read the file every `period` until `stop` turns true; changes and errors are logged
    /// (an error once until the file is valid again).
    pub fn spawn_reload(
        &self,
        period: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let tokens = self.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = stop.changed() => return,
                }
                if *stop.borrow() {
                    return;
                }
                let t = tokens.clone();
                let result = tokio::task::spawn_blocking(move || t.reload()).await;
                match result {
                    Ok(Ok(changed)) => {
                        if changed {
                            tracing::info!(tokens = tokens.count(), "filter tokens reloaded");
                        }
                        failing = false;
                    }
                    Ok(Err(e)) => {
                        if !failing {
                            tracing::error!(error = %e, tokens = tokens.count(), "filter token file not reloaded; the tokens in force stay");
                        }
                        failing = true;
                    }
                    Err(e) => tracing::error!(error = %e, "filter token reload task failed"),
                }
            }
        })
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: transparency material, and `GET /metrics` (Prometheus scrapes without a
    /// credential; it shows counts, durations, rollout versions and peer regions, never a
    /// token, key or receipt).
    Public,
    /// A filter token (receipt ingest; the config long-poll, which also takes the admin token).
    Filter,
    /// The admin token.
    Admin,
}

/// The access `method path` needs.
pub fn access(method: &Method, path: &str) -> Access {
    let read = method == Method::GET || method == Method::HEAD;
    if path.starts_with("/v1/witness/") || (read && path == "/metrics") {
        return Access::Public;
    }
    if (method == Method::POST && path == "/v1/receipts") || (read && path == "/v1/config") {
        return Access::Filter;
    }
    let public_read = path == "/v1/checkpoints/latest"
        || path == "/v1/console/state"
        || path == "/console"
        || path.starts_with("/console/")
        || path == "/v1/config/keys"
        || path == "/v1/quorum/commits"
        || path.starts_with("/v1/quorum/checkpoints/")
        || (path.ends_with("/proof")
            && (path.starts_with("/v1/receipts/") || path.starts_with("/v1/quorum/receipts/")));
    if read && public_read {
        Access::Public
    } else {
        Access::Admin
    }
}

/// Refusals counted since start, by kind of credential.
#[derive(Debug, Default)]
pub struct Refusals {
    /// Receipt batches refused for a missing or wrong filter token (nothing appended).
    pub receipts: AtomicU64,
    /// Config polls refused for a missing or wrong filter token.
    pub config: AtomicU64,
    /// Admin requests refused for a missing or wrong admin token.
    pub admin: AtomicU64,
}

/// The credentials the API checks.
#[derive(Debug, Default)]
pub struct Credentials {
    /// The admin token, when configured.
    pub admin: Option<AdminToken>,
    /// The filter tokens, when configured.
    pub filters: Option<FilterTokens>,
    /// Refusals so far.
    pub refusals: Refusals,
}

impl Credentials {
    /// Whether any credential is configured (else the API is open, loopback only).
    pub fn any(&self) -> bool {
        self.admin.is_some() || self.filters.is_some()
    }
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

/// Count a refusal; log it as [`super::flood`] says.
fn count(counter: &AtomicU64, what: &str, method: &Method, path: &str, why: &str) {
    if let Some(n) = super::flood::count(counter) {
        tracing::warn!(%method, path, refused_so_far = n, "{what} refused: {why}");
    }
}

/// Middleware: refuse a request that lacks the credential its route needs.
pub async fn authorize(
    State(creds): State<Arc<Credentials>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match access(&method, &path) {
        Access::Public => next.run(request).await,
        Access::Filter => {
            let Some(filters) = &creds.filters else {
                return next.run(request).await;
            };
            let (counter, what) = if method == Method::POST {
                (&creds.refusals.receipts, "receipt batch")
            } else {
                (&creds.refusals.config, "config poll")
            };
            let admin_ok = method != Method::POST
                && presented.is_some_and(|p| creds.admin.as_ref().is_some_and(|a| a.matches(p)));
            match presented {
                Some(p) if filters.matches(p) || admin_ok => next.run(request).await,
                Some(_) => {
                    count(counter, what, &method, &path, "unknown filter token");
                    refuse("the filter credential is not one the agent accepts (rotated or revoked?): check control.token against api.filter_token_file")
                }
                None => {
                    count(counter, what, &method, &path, "no filter token");
                    refuse("the filter credential is missing: this endpoint needs Authorization: Bearer <control.token>")
                }
            }
        }
        Access::Admin => {
            let Some(admin) = &creds.admin else {
                return next.run(request).await;
            };
            let counter = &creds.refusals.admin;
            match presented {
                Some(p) if admin.matches(p) => next.run(request).await,
                Some(_) => {
                    count(counter, "admin request", &method, &path, "wrong token");
                    refuse("the admin token is wrong")
                }
                None => {
                    count(counter, "admin request", &method, &path, "no token");
                    refuse("this endpoint needs Authorization: Bearer <admin token>")
                }
            }
        }
    }
}

#[derive(serde::Serialize)]
struct RefusalCounts {
    receipts: u64,
    config: u64,
    admin: u64,
    filter_tokens: usize,
}

/// `GET /v1/auth/refusals` (admin): refusals since start and the filter tokens in force.
pub fn routes(creds: Arc<Credentials>) -> Router {
    Router::new().route(
        "/v1/auth/refusals",
        get(
            |axum::extract::State(c): State<Arc<Credentials>>| async move {
                Json(RefusalCounts {
                    receipts: c.refusals.receipts.load(Ordering::Relaxed),
                    config: c.refusals.config.load(Ordering::Relaxed),
                    admin: c.refusals.admin.load(Ordering::Relaxed),
                    filter_tokens: c.filters.as_ref().map_or(0, FilterTokens::count),
                })
            },
        )
        .with_state(creds),
    )
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
    }

    /// Every route's kind: state changes and operational reads are admin, the filters' two
    /// calls are filter, transparency material is public.
    #[test]
    fn routes_have_their_access() {
        use Access::*;
        for (m, p, want) in [
            (Method::PUT, "/v1/policy", Admin),
            (Method::GET, "/v1/policy", Admin),
            (Method::GET, "/v1/receipts", Admin),
            (Method::GET, "/v1/log/export", Admin),
            (Method::GET, "/v1/rollouts/current", Admin),
            (Method::GET, "/v1/holds", Admin),
            (Method::POST, "/v1/holds", Admin),
            (Method::GET, "/v1/auth/refusals", Admin),
            (Method::GET, "/v1/quorum/status", Admin),
            (Method::POST, "/v1/rollouts/current/abort", Admin),
            (Method::GET, "/v1/nothing-here", Admin),
            (Method::POST, "/v1/receipts", Filter),
            (Method::GET, "/v1/config", Filter),
            (Method::POST, "/v1/config", Admin),
            (Method::GET, "/v1/config/keys", Public),
            (Method::POST, "/v1/config/keys/rotate", Admin),
            (Method::GET, "/v1/checkpoints/latest", Public),
            (Method::GET, "/v1/receipts/7/proof", Public),
            (Method::GET, "/v1/quorum/receipts/7/proof", Public),
            (Method::GET, "/v1/quorum/checkpoints/9", Public),
            (Method::GET, "/v1/quorum/commits", Public),
            (Method::POST, "/v1/witness/add-checkpoint", Public),
            (Method::GET, "/v1/witness/logs", Public),
        ] {
            assert_eq!(access(&m, p), want, "{m} {p}");
        }
    }

    /// The filter token file: one token per line, comments and blanks skipped, a bad line
    /// named by number without its content, an empty file refused; a reload picks up a
    /// rotation and a revocation, and a broken file keeps the set in force.
    #[test]
    fn filter_tokens_load_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("filter-tokens");
        let old = "old-filter-token-0123456789abcdef012345";
        let new = "new-filter-token-0123456789abcdef012345";
        std::fs::write(&path, format!("# rotation\n{old}\n\n")).unwrap();
        let tokens = FilterTokens::load(&path).unwrap();
        assert!(tokens.matches(old.as_bytes()) && !tokens.matches(new.as_bytes()));
        std::fs::write(&path, format!("{old}\n{new}\n")).unwrap();
        assert!(tokens.reload().unwrap());
        assert!(tokens.matches(old.as_bytes()) && tokens.matches(new.as_bytes()));
        assert!(!tokens.reload().unwrap());
        std::fs::write(&path, format!("{new}\n")).unwrap();
        assert!(tokens.reload().unwrap());
        assert!(!tokens.matches(old.as_bytes()) && tokens.matches(new.as_bytes()));
        std::fs::write(&path, "short\n").unwrap();
        let e = tokens.reload().unwrap_err().to_string();
        assert!(
            e.contains("api.filter_token_file") && e.contains("line 1"),
            "{e}"
        );
        assert!(!e.contains("short"), "{e}");
        assert!(
            tokens.matches(new.as_bytes()),
            "a broken file keeps the set in force"
        );
        std::fs::write(&path, "# nothing\n").unwrap();
        let e = FilterTokens::load(&path).unwrap_err().to_string();
        assert!(e.contains("holds 0 tokens"), "{e}");
        assert!(!format!("{tokens:?}").contains("new-filter"));
    }
}
