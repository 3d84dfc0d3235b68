//! Workload identity: our X.509-SVID and trust bundles from the SPIFFE Workload API (or the
//! fallback files), and mutual TLS between agents authorised by SPIFFE ID.
//!
//! [`Identity::open`] connects to the Workload API through the `spiffe` crate's `X509Source`
//! (socket from `[identity].socket`, `KGC_SIDECAR_SPIFFE_SOCKET` or `SPIFFE_ENDPOINT_SOCKET`),
//! or, when none is configured or it does not answer within `connect_timeout` and
//! `[identity.files]` is set, loads the PEM files. A background task reloads the material on
//! every source update and at least every `refresh_interval` (at most 1 h; files are re-read
//! then too). The rustls configs from [`Identity::server_config`] and [`Identity::client_config`]
//! are built once and read the current material on every handshake, so rotation needs neither
//! a restart nor new configs. Session resumption is off on both sides, so every connection
//! runs the full verification.
//!
//! Fail closed: while our own SVID is expired (or none is usable) no handshake is served or
//! completed, and requests on connections opened before are answered `503`; each refusal is
//! logged. Peers are accepted only when their chain verifies against the current bundle of
//! their trust domain and their SPIFFE ID (URI SAN; DNS names are ignored) matches the
//! allow-list ([`allow`]).
//!
//! Modules: [`config`] (settings, environment, validation), [`allow`] (allow-list patterns),
//! `material` (loading SVIDs and bundles), `tls` (rustls resolvers and verifiers), [`serve`]
//! ([`serve_mtls`], [`PeerId`]) and [`client`] ([`https_client`]).

pub mod allow;
pub mod client;
pub mod config;
mod material;
pub mod serve;
mod tls;

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, ServerConfig};
use spiffe::{SpiffeId, X509Source};
use tokio::task::JoinHandle;

pub use client::https_client;
pub use config::IdentityConfig;
pub use serve::{serve_mtls, PeerId};

use config::Settings;
use material::{Backend, Material};
use tls::{ClientSide, ServerSide, Shared};

/// Why identity could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A setting or environment variable is invalid; `setting` names it.
    #[error("invalid setting {setting}: {reason}")]
    InvalidConfig {
        /// The setting or variable.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The Workload API could not be reached or gave no usable SVID, and there is no file
    /// fallback.
    #[error("SPIFFE Workload API: {0}")]
    WorkloadApi(String),
    /// No usable SVID is held right now (expired, withdrawn).
    #[error("identity unavailable: {0}")]
    Unavailable(String),
    /// A certificate, key or bundle could not be read or parsed.
    #[error("identity material: {0}")]
    BadMaterial(String),
    /// Our SVID is not the configured identity (trust domain or `id`).
    #[error("wrong identity: {0}")]
    WrongIdentity(String),
    /// rustls refused to build a config.
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    /// Accepting connections failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Picks the SVID whose SPIFFE ID is the configured `identity.id`.
struct IdPicker(SpiffeId);

impl spiffe::x509_source::SvidPicker for IdPicker {
    fn pick_svid(&self, svids: &[Arc<spiffe::X509Svid>]) -> Option<usize> {
        svids.iter().position(|s| s.spiffe_id() == &self.0)
    }
}

/// This agent's SPIFFE identity and the mutual-TLS configs built on it.
pub struct Identity {
    shared: Arc<Shared>,
    settings: Settings,
    backend: Backend,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    refresher: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("backend", &self.backend.name())
            .field("current_id", &self.current_id())
            .finish()
    }
}

async fn connect(endpoint: &str, settings: &Settings) -> Result<X509Source, IdentityError> {
    let mut builder = X509Source::builder()
        .endpoint(endpoint)
        .initial_sync_timeout(settings.connect_timeout);
    if let Some(id) = &settings.id {
        builder = builder.picker(IdPicker(id.clone()));
    }
    builder
        .build()
        .await
        .map_err(|e| IdentityError::WorkloadApi(format!("{endpoint}: {e}")))
}

impl Identity {
    /// Validate `config`, obtain the first SVID and bundles, build the TLS configs and start
    /// the refresh task. Must be called inside a tokio runtime.
    pub async fn open(config: &IdentityConfig) -> Result<Arc<Identity>, IdentityError> {
        let settings = config.settings()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let backend = match (&settings.socket, &settings.files) {
            (Some(endpoint), files) => match connect(endpoint, &settings).await {
                Ok(source) => Backend::WorkloadApi(source),
                Err(e) => match files {
                    Some(files) => {
                        tracing::warn!(error = %e, "Workload API unavailable; using the certificate files");
                        Backend::Files(files.clone())
                    }
                    None => return Err(e),
                },
            },
            (None, Some(files)) => Backend::Files(files.clone()),
            (None, None) => {
                return Err(IdentityError::InvalidConfig {
                    setting: "identity.socket",
                    reason: "no Workload API socket and no [identity.files]".to_owned(),
                })
            }
        };
        let first = load(&backend, &settings, &provider)?;
        let shared = Arc::new(Shared {
            allow: settings.allow.clone(),
            provider: provider.clone(),
            material: RwLock::new(Some(Arc::new(first))),
        });
        let server = Arc::new({
            let mut cfg = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .with_client_cert_verifier(Arc::new(ServerSide(shared.clone())))
                .with_cert_resolver(Arc::new(ServerSide(shared.clone())));
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            // No resumption: every handshake runs the resolver and the verifier, so a rotated,
            // expired or no longer allowed SVID takes effect on the next connection.
            cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            cfg.send_tls13_tickets = 0;
            cfg
        });
        let client = Arc::new({
            let mut cfg = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ClientSide(shared.clone())))
                .with_client_cert_resolver(Arc::new(ClientSide(shared.clone())));
            cfg.resumption = rustls::client::Resumption::disabled();
            cfg
        });
        let identity = Arc::new(Identity {
            shared,
            settings,
            backend,
            server,
            client,
            refresher: std::sync::Mutex::new(None),
        });
        if let Some(id) = identity.current_id() {
            tracing::info!(
                spiffe_id = %id,
                backend = identity.backend.name(),
                "identity ready"
            );
        }
        let task = spawn_refresher(Arc::downgrade(&identity), identity.updates());
        if let Ok(mut slot) = identity.refresher.lock() {
            *slot = Some(task);
        }
        Ok(identity)
    }

    /// The rustls server config: presents our current SVID, requires an allowed client SVID.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// The rustls client config: presents our current SVID, requires an allowed server SVID
    /// (the URL's host name is not checked: SPIFFE IDs are).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }

    /// Our current SPIFFE ID, or `None` while no unexpired SVID is held.
    pub fn current_id(&self) -> Option<SpiffeId> {
        self.current().map(|m| m.id.clone())
    }

    /// Whether an unexpired SVID is held (what serving and connecting require).
    pub fn is_usable(&self) -> bool {
        self.current().is_some()
    }

    /// Where the identity comes from: `workload-api` or `files`.
    pub fn backend(&self) -> &'static str {
        self.backend.name()
    }

    fn current(&self) -> Option<Arc<Material>> {
        let m = self.shared.material.read().ok()?.clone()?;
        (m.not_after > tls::unix_now()).then_some(m)
    }

    /// Reload the material now (the refresh task does this on every source update and at
    /// least every `refresh_interval`). A failure leaves the identity unusable when the
    /// Workload API says no SVID is usable, and keeps the previous material when files fail
    /// to load (they may be mid-rewrite); either way it is logged and returned.
    pub fn refresh(&self) -> Result<(), IdentityError> {
        match load(&self.backend, &self.settings, &self.shared.provider) {
            Ok(m) => {
                let changed = self
                    .shared
                    .material
                    .read()
                    .ok()
                    .and_then(|cur| cur.as_ref().map(|c| c.key.cert != m.key.cert))
                    .unwrap_or(true);
                let span = changed.then(|| {
                    tracing::info_span!("knhk.identity.svid.rotate", "spiffe.id" = %m.id, "knhk.svid.not_after" = m.not_after)
                        .entered()
                });
                if changed {
                    tracing::info!(spiffe_id = %m.id, not_after = m.not_after, "SVID rotated");
                }
                if let Ok(mut slot) = self.shared.material.write() {
                    *slot = Some(Arc::new(m));
                }
                drop(span);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, backend = self.backend.name(), "identity refresh failed");
                if matches!(self.backend, Backend::WorkloadApi(_)) {
                    if let Ok(mut slot) = self.shared.material.write() {
                        *slot = None;
                    }
                }
                Err(e)
            }
        }
    }

    fn updates(&self) -> Option<spiffe::X509SourceUpdates> {
        match &self.backend {
            Backend::WorkloadApi(source) => Some(source.updated()),
            Backend::Files(_) => None,
        }
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.refresher.lock() {
            if let Some(task) = slot.take() {
                task.abort();
            }
        }
    }
}

fn load(
    backend: &Backend,
    settings: &Settings,
    provider: &CryptoProvider,
) -> Result<Material, IdentityError> {
    match backend {
        Backend::WorkloadApi(source) => material::from_source(source, settings, provider),
        Backend::Files(files) => material::from_files(files, settings, provider),
    }
}

/// Reload on every source update and at least every `refresh_interval`, until the identity is
/// dropped.
fn spawn_refresher(
    identity: Weak<Identity>,
    mut updates: Option<spiffe::X509SourceUpdates>,
) -> JoinHandle<()> {
    let every = identity
        .upgrade()
        .map(|i| i.settings.refresh_interval)
        .unwrap_or(config::MAX_REFRESH_INTERVAL);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every.max(Duration::from_secs(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            let updated = async {
                match updates.as_mut() {
                    Some(u) => u.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = ticks.tick() => {}
                open = updated => {
                    if !open {
                        tracing::warn!("Workload API source closed; refreshing on the interval only");
                        updates = None;
                    }
                }
            }
            let Some(identity) = identity.upgrade() else {
                return;
            };
            let _ = identity.refresh();
        }
    })
}
