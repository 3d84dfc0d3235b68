//! TEST DOUBLE of Azure Key Vault and Microsoft Entra ID: no Key Vault emulator installs here,
//! so this HTTPS server follows the documented REST API (keys API version 2025-07-01) for the
//! calls the agent's Azure signer makes, with real EC P-256 keys and ES256 signatures:
//!
//! - Key Vault: `POST /keys/{name}/create` (a new version of an existing key), `GET
//!   /keys/{name}[/{version}]`, `GET /keys/{name}/versions` (in pages of two, with `nextLink`),
//!   `PATCH /keys/{name}/{version}` (tags), `POST /keys/{name}[/{version}]/sign` (ES256 over a
//!   32-byte digest). A request without a bearer token gets Key Vault's `401` challenge
//!   (`WWW-Authenticate: Bearer authorization="…", resource="https://vault.azure.net"`); a token
//!   without the operation's permission gets `403 Forbidden`; errors have Key Vault's
//!   `{"error": {"code", "message"}}` shape; `api-version` is required.
//! - Entra ID: `POST /{tenant}/oauth2/v2.0/token` (client credentials with a secret or a
//!   federated client assertion, scope `https://vault.azure.net/.default`) and the App Service
//!   managed identity endpoint `GET /msi/token` (header `X-IDENTITY-HEADER`).
//!
//! Not covered: the rest of the API (backup, import, release, rotation policies, soft delete),
//! HSM-backed keys, RBAC scopes finer than the vault, and throttling.

// Handlers return the HTTP reply itself as their error; its size does not matter in a double.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, Response, StatusCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

/// The tenant the double's Entra ID serves.
pub const TENANT: &str = "0b2c1c4e-7a55-4f6b-9a36-6f1e8d0c2a11";
/// The audience Key Vault's challenge names, as Azure's public cloud does.
pub const RESOURCE: &str = "https://vault.azure.net";
/// Entries per page of a version listing.
const PAGE: usize = 2;

/// A Key Vault permission on keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Perm {
    /// `keys/get`.
    Get,
    /// `keys/list`.
    List,
    /// `keys/create`.
    Create,
    /// `keys/update`.
    Update,
    /// `keys/sign`.
    Sign,
}

impl Perm {
    /// Every permission the agent's signer uses.
    pub const ALL: [Perm; 5] = [
        Perm::Get,
        Perm::List,
        Perm::Create,
        Perm::Update,
        Perm::Sign,
    ];
    /// Read-only: get and list, no create, update or sign.
    pub const READ: [Perm; 2] = [Perm::Get, Perm::List];

    fn name(self) -> &'static str {
        match self {
            Perm::Get => "get",
            Perm::List => "list",
            Perm::Create => "create",
            Perm::Update => "update",
            Perm::Sign => "sign",
        }
    }
}

/// One version of a key.
struct KeyVersion {
    id: String,
    key: SigningKey,
    enabled: bool,
    created: u64,
    tags: BTreeMap<String, String>,
}

/// How a principal proves itself to the token endpoint.
enum Proof {
    Secret(String),
    Assertion(String),
}

struct App {
    proof: Proof,
    perms: HashSet<Perm>,
}

#[derive(Default)]
struct State {
    keys: BTreeMap<String, Vec<KeyVersion>>,
    apps: HashMap<String, App>,
    identity_header: Option<(String, HashSet<Perm>)>,
    tokens: HashMap<String, (String, HashSet<Perm>)>,
    counter: u64,
    /// Requests served, as `METHOD path`.
    log: Vec<String>,
}

impl State {
    fn fresh(&mut self, what: &str) -> [u8; 32] {
        self.counter += 1;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Sha256::new()
            .chain_update(what.as_bytes())
            .chain_update(self.counter.to_le_bytes())
            .chain_update(nanos.to_le_bytes())
            .chain_update(std::process::id().to_le_bytes())
            .finalize()
            .into()
    }

    fn new_version(&mut self, name: &str, tags: BTreeMap<String, String>) -> anyhow::Result<()> {
        let id = hex(&self.fresh("version")[..16]);
        let secret = self.fresh("key");
        let key = SigningKey::from_bytes(&secret.into()).context("a P-256 scalar")?;
        let created = now_s() + self.counter; // distinct, increasing creation times
        self.keys
            .entry(name.to_owned())
            .or_default()
            .push(KeyVersion {
                id,
                key,
                enabled: true,
                created,
                tags,
            });
        Ok(())
    }

    fn issue(&mut self, who: String, perms: HashSet<Perm>) -> String {
        let token = URL_SAFE_NO_PAD.encode(self.fresh("token"));
        self.tokens.insert(token.clone(), (who, perms));
        token
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Key Vault and Entra ID double, serving HTTPS on a loopback port.
pub struct KeyVaultDouble {
    /// The vault URL, `https://127.0.0.1:<port>`.
    pub vault_url: String,
    /// The Entra ID authority host (the same server).
    pub authority_host: String,
    /// The PEM of the server's self-signed certificate, to trust.
    pub ca_file: PathBuf,
    state: Arc<Mutex<State>>,
    server: Option<JoinHandle<()>>,
}

impl Drop for KeyVaultDouble {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

type Reply = Response<Body>;

fn reply(status: StatusCode, body: Value) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(Body::from(body.to_string()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn kv_error(status: StatusCode, code: &str, message: impl Into<String>) -> Reply {
    reply(
        status,
        json!({"error": {"code": code, "message": message.into()}}),
    )
}

fn entra_error(status: StatusCode, error: &str, code: i32, description: &str) -> Reply {
    reply(
        status,
        json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description}"),
            "error_codes": [code],
        }),
    )
}

impl KeyVaultDouble {
    /// Start the double on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let cert = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let ca_file = std::env::temp_dir().join(format!(
            "knhk-keyvault-double-{}-{port}.pem",
            std::process::id()
        ));
        std::fs::write(&ca_file, cert.cert.pem())?;
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let base = format!("https://127.0.0.1:{port}");
        let state = Arc::new(Mutex::new(State::default()));
        let server = {
            let state = state.clone();
            let base = base.clone();
            tokio::spawn(async move {
                // Connection tasks live in the set, so stopping the server ends them too.
                let mut connections = tokio::task::JoinSet::new();
                while let Ok((tcp, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    let state = state.clone();
                    let base = base.clone();
                    connections.spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service = hyper::service::service_fn(move |req| {
                            let state = state.clone();
                            let base = base.clone();
                            async move {
                                Ok::<_, std::convert::Infallible>(handle(&state, &base, req).await)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                            .await;
                    });
                }
            })
        };
        Ok(KeyVaultDouble {
            vault_url: base.clone(),
            authority_host: base,
            ca_file,
            state,
            server: Some(server),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Register an application (service principal) that authenticates with `secret`.
    pub fn add_app(&self, client_id: &str, secret: &str, perms: &[Perm]) {
        self.state().apps.insert(
            client_id.to_owned(),
            App {
                proof: Proof::Secret(secret.to_owned()),
                perms: perms.iter().copied().collect(),
            },
        );
    }

    /// Register an application federated with a Kubernetes service account: it authenticates
    /// with `token` as its client assertion (workload identity).
    pub fn add_federated_app(&self, client_id: &str, token: &str, perms: &[Perm]) {
        self.state().apps.insert(
            client_id.to_owned(),
            App {
                proof: Proof::Assertion(token.to_owned()),
                perms: perms.iter().copied().collect(),
            },
        );
    }

    /// Enable the App Service managed identity endpoint; returns the `IDENTITY_ENDPOINT` and
    /// `IDENTITY_HEADER` values that reach it.
    pub fn managed_identity(&self, perms: &[Perm]) -> (String, String) {
        let header = URL_SAFE_NO_PAD.encode(self.state().fresh("identity header"));
        self.state().identity_header = Some((header.clone(), perms.iter().copied().collect()));
        (format!("{}/msi/token", self.vault_url), header)
    }

    /// Create an EC P-384 key (one the agent must refuse).
    pub fn create_p384_key(&self, name: &str) -> anyhow::Result<()> {
        // The type is all the agent reads of it: a P-256 key stands in, reported as P-384.
        let mut tags = BTreeMap::new();
        tags.insert("double-curve".to_owned(), "P-384".to_owned());
        self.state().new_version(name, tags)
    }

    /// Add a version as `az keyvault key rotate` or a rotation policy would: untagged.
    pub fn rotate_outside_knhk(&self, name: &str) -> anyhow::Result<String> {
        let mut state = self.state();
        anyhow::ensure!(state.keys.contains_key(name), "no key {name}");
        state.new_version(name, BTreeMap::new())?;
        Ok(state.keys[name]
            .last()
            .map(|v| v.id.clone())
            .unwrap_or_default())
    }

    /// Disable one version.
    pub fn disable(&self, name: &str, version: &str) {
        if let Some(v) = self
            .state()
            .keys
            .get_mut(name)
            .and_then(|vs| vs.iter_mut().find(|v| v.id == version))
        {
            v.enabled = false;
        }
    }

    /// Each version of `name`, oldest first, with its `knhk-version` tag.
    pub fn versions(&self, name: &str) -> Vec<(String, Option<String>)> {
        self.state()
            .keys
            .get(name)
            .map(|vs| {
                vs.iter()
                    .map(|v| (v.id.clone(), v.tags.get("knhk-version").cloned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The requests served so far, as `METHOD path`.
    pub fn requests(&self) -> Vec<String> {
        self.state().log.clone()
    }

    /// Stop serving (listener and open connections): the provider is down.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

async fn handle(state: &Mutex<State>, base: &str, req: Request<hyper::body::Incoming>) -> Reply {
    let (parts, body) = req.into_parts();
    let body = match http_body_util::BodyExt::collect(body).await {
        Ok(b) => b.to_bytes(),
        Err(_) => return kv_error(StatusCode::BAD_REQUEST, "BadParameter", "unreadable body"),
    };
    let path = parts.uri.path().to_owned();
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let mut state = state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    state.log.push(format!("{} {path}", parts.method));
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [tenant, "oauth2", "v2.0", "token"] if parts.method == Method::POST => {
            entra_token(&mut state, tenant, &body)
        }
        ["msi", "token"] if parts.method == Method::GET => {
            managed_identity_token(&mut state, &parts.headers, &query)
        }
        ["keys", rest @ ..] => {
            if query.get("api-version").is_none_or(|v| v.is_empty()) {
                return kv_error(
                    StatusCode::BAD_REQUEST,
                    "BadParameter",
                    "The api-version query parameter is required",
                );
            }
            let perms = match authorize(&state, &parts.headers) {
                Ok(perms) => perms,
                Err(reply) => return reply,
            };
            keys(&mut state, base, &perms, &parts.method, rest, &query, &body)
        }
        _ => kv_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no route {path}"),
        ),
    }
}

fn entra_token(state: &mut State, tenant: &str, body: &[u8]) -> Reply {
    if tenant != TENANT {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    if form.get("scope").map(String::as_str) != Some(&format!("{RESOURCE}/.default")) {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid.",
        );
    }
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    let Some(app) = state.apps.get(&client_id) else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory."),
        );
    };
    let proven = match &app.proof {
        Proof::Secret(secret) => form.get("client_secret") == Some(secret),
        Proof::Assertion(token) => {
            form.get("client_assertion_type").map(String::as_str)
                == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                && form.get("client_assertion") == Some(token)
        }
    };
    if !proven {
        return entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret or assertion provided.",
        );
    }
    let perms = app.perms.clone();
    let token = state.issue(client_id, perms);
    reply(
        StatusCode::OK,
        json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}),
    )
}

fn managed_identity_token(
    state: &mut State,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Reply {
    let Some((header, perms)) = state.identity_header.clone() else {
        return kv_error(StatusCode::NOT_FOUND, "NotFound", "no managed identity");
    };
    let sent = headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok());
    if sent != Some(header.as_str()) {
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({"statusCode": 401, "message": "X-IDENTITY-HEADER is missing or wrong"}),
        );
    }
    if query.get("resource").map(String::as_str) != Some(RESOURCE) {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"statusCode": 400, "message": "resource must be the Key Vault audience"}),
        );
    }
    let token = state.issue("managed identity".to_owned(), perms);
    reply(
        StatusCode::OK,
        json!({
            "access_token": token,
            "expires_on": (now_s() + 3600).to_string(),
            "resource": RESOURCE,
            "token_type": "Bearer",
        }),
    )
}

/// The permissions of the request's bearer token, or Key Vault's challenge.
fn authorize(state: &State, headers: &HeaderMap) -> Result<(String, HashSet<Perm>), Reply> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token.and_then(|t| state.tokens.get(t)) {
        Some(found) => Ok(found.clone()),
        None => {
            let mut challenge = kv_error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer or PoP token.",
            );
            if let Ok(v) = format!(
                "Bearer authorization=\"https://login.microsoftonline.com/{TENANT}\", resource=\"{RESOURCE}\""
            )
            .parse()
            {
                challenge.headers_mut().insert("www-authenticate", v);
            }
            Err(challenge)
        }
    }
}

fn bundle(base: &str, name: &str, v: &KeyVersion) -> Value {
    let point = v.key.verifying_key().to_encoded_point(false);
    let curve = v.tags.get("double-curve").map_or("P-256", String::as_str);
    json!({
        "key": {
            "kid": format!("{base}/keys/{name}/{}", v.id),
            "kty": "EC",
            "crv": curve,
            "key_ops": ["sign", "verify"],
            "x": URL_SAFE_NO_PAD.encode(point.x().map_or(&[][..], |x| x.as_slice())),
            "y": URL_SAFE_NO_PAD.encode(point.y().map_or(&[][..], |y| y.as_slice())),
        },
        "attributes": attributes(v),
        "tags": v.tags.iter().filter(|(k, _)| *k != "double-curve").collect::<BTreeMap<_, _>>(),
    })
}

fn attributes(v: &KeyVersion) -> Value {
    json!({
        "enabled": v.enabled,
        "created": v.created,
        "updated": v.created,
        "recoveryLevel": "Recoverable+Purgeable",
        "recoverableDays": 90,
    })
}

fn forbidden(who: &str, perm: Perm) -> Reply {
    kv_error(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!(
            "The user, group or application '{who}' does not have keys {} permission on key vault 'knhk-double'.",
            perm.name()
        ),
    )
}

fn not_found(name: &str) -> Reply {
    kv_error(
        StatusCode::NOT_FOUND,
        "KeyNotFound",
        format!("A key with (name/id) {name} was not found in this key vault."),
    )
}

fn keys(
    state: &mut State,
    base: &str,
    (who, perms): &(String, HashSet<Perm>),
    method: &Method,
    rest: &[&str],
    query: &HashMap<String, String>,
    body: &[u8],
) -> Reply {
    let need = |perm: Perm| {
        if perms.contains(&perm) {
            Ok(())
        } else {
            Err(forbidden(who, perm))
        }
    };
    let json_body = || serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    let result = match (method.clone(), rest) {
        (Method::POST, [name, "create"]) => {
            need(Perm::Create).and_then(|()| create(state, base, name, &json_body()))
        }
        (Method::GET, [name, "versions"]) => {
            need(Perm::List).map(|()| list(state, base, name, query))
        }
        (Method::GET, [name]) => need(Perm::Get).and_then(|()| get(state, base, name, None)),
        (Method::GET, [name, version]) => {
            need(Perm::Get).and_then(|()| get(state, base, name, Some(version)))
        }
        (Method::PATCH, [name, version]) => {
            need(Perm::Update).and_then(|()| update(state, base, name, version, &json_body()))
        }
        (Method::POST, [name, "sign"]) => {
            need(Perm::Sign).and_then(|()| sign(state, base, name, None, &json_body()))
        }
        (Method::POST, [name, version, "sign"]) => {
            need(Perm::Sign).and_then(|()| sign(state, base, name, Some(version), &json_body()))
        }
        _ => Err(kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "unsupported operation",
        )),
    };
    result.unwrap_or_else(|reply| reply)
}

fn create(state: &mut State, base: &str, name: &str, body: &Value) -> Result<Reply, Reply> {
    if name.is_empty()
        || name.len() > 127
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "invalid key name",
        ));
    }
    if body["kty"] != "EC" || body["crv"] != "P-256" {
        return Err(kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "the double creates EC P-256 keys only",
        ));
    }
    let tags: BTreeMap<String, String> = body["tags"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    state.new_version(name, tags).map_err(|e| {
        kv_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.to_string(),
        )
    })?;
    let v = state.keys[name].last().ok_or_else(|| not_found(name))?;
    Ok(reply(StatusCode::OK, bundle(base, name, v)))
}

fn find<'a>(state: &'a State, name: &str, version: Option<&str>) -> Result<&'a KeyVersion, Reply> {
    let versions = state.keys.get(name).ok_or_else(|| not_found(name))?;
    match version {
        Some(id) => versions.iter().find(|v| v.id == id).ok_or_else(|| {
            kv_error(
                StatusCode::NOT_FOUND,
                "KeyNotFound",
                format!("A key with (name/id) {name}/{id} was not found in this key vault."),
            )
        }),
        None => versions.last().ok_or_else(|| not_found(name)),
    }
}

fn get(state: &State, base: &str, name: &str, version: Option<&str>) -> Result<Reply, Reply> {
    let v = find(state, name, version)?;
    if !v.enabled {
        return Err(kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Operation get is not allowed on a disabled key.",
        ));
    }
    Ok(reply(StatusCode::OK, bundle(base, name, v)))
}

fn list(state: &State, base: &str, name: &str, query: &HashMap<String, String>) -> Reply {
    let versions = match state.keys.get(name) {
        Some(vs) => vs,
        None => return not_found(name),
    };
    let skip: usize = query
        .get("$skiptoken")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let page: Vec<Value> = versions
        .iter()
        .skip(skip)
        .take(PAGE)
        .map(|v| {
            json!({
                "kid": format!("{base}/keys/{name}/{}", v.id),
                "attributes": attributes(v),
                "tags": v.tags.iter().filter(|(k, _)| *k != "double-curve").collect::<BTreeMap<_, _>>(),
            })
        })
        .collect();
    let next = (skip + PAGE < versions.len()).then(|| {
        format!(
            "{base}/keys/{name}/versions?api-version={}&$skiptoken={}",
            query.get("api-version").map_or("", String::as_str),
            skip + PAGE
        )
    });
    reply(StatusCode::OK, json!({"value": page, "nextLink": next}))
}

fn update(
    state: &mut State,
    base: &str,
    name: &str,
    version: &str,
    body: &Value,
) -> Result<Reply, Reply> {
    find(state, name, Some(version))?;
    let v = state
        .keys
        .get_mut(name)
        .and_then(|vs| vs.iter_mut().find(|v| v.id == version))
        .ok_or_else(|| not_found(name))?;
    if let Some(tags) = body["tags"].as_object() {
        let curve = v.tags.get("double-curve").cloned();
        v.tags = tags
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect();
        if let Some(curve) = curve {
            v.tags.insert("double-curve".to_owned(), curve);
        }
    }
    Ok(reply(StatusCode::OK, bundle(base, name, v)))
}

fn sign(
    state: &State,
    base: &str,
    name: &str,
    version: Option<&str>,
    body: &Value,
) -> Result<Reply, Reply> {
    let v = find(state, name, version)?;
    if !v.enabled {
        return Err(kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Operation sign is not allowed on a disabled key.",
        ));
    }
    if body["alg"] != "ES256" {
        return Err(kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "the key signs ES256 only",
        ));
    }
    let digest = body["value"]
        .as_str()
        .and_then(|s| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok())
        .filter(|d| d.len() == 32)
        .ok_or_else(|| {
            kv_error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                "ES256 signs a 32-byte SHA-256 digest (base64url)",
            )
        })?;
    let sig: Signature = v.key.sign_prehash(&digest).map_err(|e| {
        kv_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.to_string(),
        )
    })?;
    Ok(reply(
        StatusCode::OK,
        json!({
            "kid": format!("{base}/keys/{name}/{}", v.id),
            "value": URL_SAFE_NO_PAD.encode(sig.to_bytes()),
        }),
    ))
}

/// Write `token` to a file under `dir` for `AZURE_FEDERATED_TOKEN_FILE`; returns its path.
pub fn write_federated_token(dir: &Path, token: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("azure-identity-token");
    std::fs::write(&path, token)?;
    Ok(path)
}
