//! The one HTTP client of the CLI's calls to a running agent (`holds`, `rollout`,
//! `keys rotate-config`, `bucket --agent`): reqwest, the admin token as a bearer credential,
//! plain HTTP on loopback or HTTPS with the system's roots or a CA file.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;

/// How long one call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a CLI command reaches the agent, and with which credential.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminTarget {
    /// The agent's API: `host:port` (plain HTTP), or an `http://` or `https://` URL.
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub agent: String,
    /// File with the agent's admin bearer token (when it has `[api] admin_token_file`).
    #[arg(long, env = "KNHK_ADMIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the agent's TLS certificate (HTTPS; implies `https://`
    /// when `--agent` has no scheme).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

/// Why a call could not be made. The token never appears in a message.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The token file could not be read or holds no token.
    #[error("reading the admin token {path}: {reason}")]
    Token {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The CA file could not be read or is not PEM.
    #[error("reading the CA file {path}: {reason}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Build(reqwest::Error),
    /// The call failed (connect, TLS, timeout, reading the answer).
    #[error("calling {url}: {source}")]
    Call {
        /// The URL called.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
}

/// An answer: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Answer {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client of one agent's API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl AdminClient {
    /// A client for `target`: reads the token and CA files once.
    pub fn new(target: &AdminTarget) -> Result<Self, ClientError> {
        let token = target
            .token_file
            .as_ref()
            .map(|path| {
                let text = std::fs::read_to_string(path).map_err(|e| ClientError::Token {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let token = text.trim().to_owned();
                if token.is_empty() {
                    return Err(ClientError::Token {
                        path: path.clone(),
                        reason: "the file is empty".to_owned(),
                    });
                }
                Ok(token)
            })
            .transpose()?;
        let mut builder = reqwest::Client::builder().timeout(CALL_TIMEOUT);
        if let Some(path) = &target.ca_file {
            let pem = std::fs::read(path).map_err(|e| ClientError::Ca {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let bad = |reason: String| ClientError::Ca {
                path: path.clone(),
                reason,
            };
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no PEM certificate in it".to_owned()));
            }
            for ca in certs {
                builder = builder.add_root_certificate(ca);
            }
        }
        let http = builder.build().map_err(ClientError::Build)?;
        Ok(AdminClient {
            base: base_url(&target.agent, target.ca_file.is_some()),
            http,
            token,
        })
    }

    /// The agent's base URL (`http://host:port` or as given).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `method path` with an optional JSON body and the token, if any.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let call = |source| ClientError::Call {
            url: url.clone(),
            source,
        };
        let answer = request.send().await.map_err(call)?;
        let status = answer.status().as_u16();
        let body = answer.bytes().await.map_err(call)?.to_vec();
        Ok(Answer { status, body })
    }
}

/// `agent` as a base URL without a trailing slash: kept when it has a scheme, else `http://`
/// (or `https://` when a CA is given).
fn base_url(agent: &str, tls: bool) -> String {
    let agent = agent.trim_end_matches('/');
    if agent.starts_with("http://") || agent.starts_with("https://") {
        agent.to_owned()
    } else if tls {
        format!("https://{agent}")
    } else {
        format!("http://{agent}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(agent: &str) -> AdminTarget {
        AdminTarget {
            agent: agent.to_owned(),
            token_file: None,
            ca_file: None,
        }
    }

    /// Addresses become URLs; a CA implies HTTPS; given schemes are kept.
    #[test]
    fn base_urls() {
        assert_eq!(base_url("127.0.0.1:9901", false), "http://127.0.0.1:9901");
        assert_eq!(base_url("agent:9901", true), "https://agent:9901");
        assert_eq!(base_url("https://a.example/", false), "https://a.example");
        assert_eq!(base_url("http://a:1", true), "http://a:1");
    }

    /// A missing or empty token file and a CA file that is not PEM are refused, naming the
    /// file; the token never appears in an error.
    #[test]
    fn refuses_bad_token_and_ca_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = target("127.0.0.1:1");
        t.token_file = Some(dir.path().join("missing"));
        assert!(matches!(
            AdminClient::new(&t),
            Err(ClientError::Token { .. })
        ));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        t.token_file = Some(empty);
        let err = AdminClient::new(&t).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        let mut t = target("127.0.0.1:1");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        t.ca_file = Some(ca);
        assert!(matches!(AdminClient::new(&t), Err(ClientError::Ca { .. })));
    }

    /// The token travels as a bearer credential and nowhere else.
    #[tokio::test]
    async fn sends_the_token_as_bearer() {
        use axum::http::HeaderMap;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/echo",
            axum::routing::post(|headers: HeaderMap, body: String| async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                format!("{auth}|{body}")
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret-token-value\n").unwrap();
        let mut t = target(&addr.to_string());
        t.token_file = Some(token);
        let client = AdminClient::new(&t).unwrap();
        let answer = client
            .call(Method::POST, "/echo", Some(b"{}".to_vec()))
            .await
            .unwrap();
        assert!(answer.is_success());
        assert_eq!(answer.text(), "Bearer s3cret-token-value|{}");
    }
}
