//! [`run`]: start the agent on listeners it is given, until a shutdown future completes.
//!
//! Order: derive unset paths from `data_dir` and validate the configuration, open the metrics
//! pipeline (`crate::telemetry`: `/metrics`, and the OTLP push when configured), open the
//! signer (creating the key on first use; every KMS call timed), open
//! the receipt store, seal once, open the config push service (its own key and `policy.db`,
//! applying the policy file once), then serve the API and run the background tasks — the
//! sealer (one checkpoint per `seal_interval` when receipts arrived), the key rotator
//! ([`crate::rotation`]: once the newest key version has signed for `kms.rotation_interval`), the policy file watcher, the rollout evaluator (promotion gates,
//! resuming a persisted rollout), and when configured the quorum replicator (after every
//! seal) and the retention run (every `retention.interval`). With `[identity] enabled` the
//! SPIFFE identity is opened before anything is served, and the peer listener (when given)
//! serves [`crate::peer::router`] and the witness routes over mutual TLS; the replicator then
//! calls peers with the SVID. On shutdown held long-polls answer
//! `204` at once, the server drains in-flight requests, the tasks stop, and a last checkpoint
//! seals what was acknowledged, and the metrics are pushed a last time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::capacity::api::InForceView;
use crate::capacity::{Capacity, InForce};
use crate::clock::now_ns;
use crate::config::{AgentConfig, ConfigError};
use crate::gates::{Gates, GatesError};
use crate::identity::{serve_mtls, Identity, IdentityError};
use crate::kms::{build_signer, KmsError, Signer};
use crate::policy::{PolicyError, PolicyService};
use crate::quorum::{Quorum, QuorumError};
use crate::receipts::{ReceiptLog, ReceiptsError};
use crate::retention::Retention;
use crate::rotation::Rotator;
use crate::telemetry::signer::MeteredSigner;
use crate::telemetry::Telemetry;

/// How often the filter token file is re-read (a rotation or revocation takes effect within it).
const TOKEN_RELOAD_PERIOD: Duration = Duration::from_secs(1);

/// Why the agent could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The signer could not be opened.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// The receipt log could not be opened or sealed.
    #[error(transparent)]
    Receipts(#[from] ReceiptsError),
    /// The config push service could not be opened.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The promotion gates could not be opened.
    #[error(transparent)]
    Gates(#[from] GatesError),
    /// The SPIFFE identity could not be opened, or the peer listener failed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The cross-region quorum (witness, replicator) could not be opened.
    #[error(transparent)]
    Quorum(#[from] QuorumError),
    /// The tiles destination could not be opened.
    #[error(transparent)]
    Tiles(#[from] crate::tiles::TilesError),
    /// Creating the data directory or serving failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The sockets the agent serves on, bound by the caller (tests bind port 0).
#[derive(Debug)]
pub struct Listeners {
    /// The receipt and admin API.
    pub api: TcpListener,
    /// The agent-to-agent API ([`crate::peer::router`]), served over mutual TLS with the SVID;
    /// requires `[identity] enabled`.
    pub peer: Option<TcpListener>,
}

/// The class p99 budgets and version names of the policy in force, the filter's defaults
/// before any.
fn in_force(policy: Arc<PolicyService>) -> InForceView {
    Arc::new(move || {
        let pushed = policy
            .snapshot()
            .latest
            .and_then(|e| serde_json::to_vec(&e.policy).ok())
            .and_then(|json| knhk_core::policy::Policy::from_json(&json).ok());
        let Some(p) = pushed.or_else(|| knhk_core::policy::Policy::from_json(b"{}").ok()) else {
            return InForce::default();
        };
        let mut budgets_ms = [0.0; 3];
        for class in knhk_core::class::Class::ALL {
            budgets_ms[class.index()] = p.budget(class).p99_max_ns as f64 / 1e6;
        }
        InForce {
            budgets_ms,
            versions: p.route_values.clone(),
        }
    })
}

/// Seal a checkpoint every `every` until `stop` changes.
fn spawn_sealer(
    every: Duration,
    mut stop: watch::Receiver<bool>,
    log: Arc<ReceiptLog>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = log.seal(now_ns()).await {
                tracing::error!(task = "sealer", error = %e, "background task failed; will retry");
            }
        }
    })
}

/// Run the agent until `shutdown` completes.
pub async fn run(
    listeners: Listeners,
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let started_ns = now_ns();
    let mut config = config;
    config.resolve_paths();
    config.validate()?;
    let credentials = Arc::new(crate::api::auth::Credentials {
        admin: config.api.token().map_err(ConfigError::from)?,
        filters: config.api.filter_tokens().map_err(ConfigError::from)?,
        refusals: Default::default(),
    });
    if credentials.admin.is_none() {
        tracing::warn!("no [api] admin_token_file: the admin routes are open to whoever reaches the API address (loopback)");
    }
    if credentials.filters.is_none() {
        tracing::warn!("no [api] filter_token_file: receipt ingest and the config long-poll are open to whoever reaches the API address (loopback)");
    }
    let api_addr = listeners.api.local_addr().map_err(|source| RunError::Io {
        what: "reading the API listener's address",
        source,
    })?;
    config.check_listeners(api_addr, listeners.peer.is_some())?;
    let identity = match config.identity.enabled {
        true => Some(Identity::open(&config.identity).await?),
        false => None,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(|source| RunError::Io {
        what: "creating data_dir",
        source,
    })?;
    let telemetry = Arc::new(Telemetry::open(&config.telemetry).map_err(ConfigError::from)?);
    let metrics = telemetry.metrics().clone();
    let signer: Arc<dyn Signer> = Arc::from(build_signer(&config.kms).await?);
    let signer = MeteredSigner::wrap(signer, metrics.clone());
    let log = Arc::new(ReceiptLog::open(&config.database_path(), &config.origin, signer).await?);
    log.set_metrics(metrics.clone());
    crate::observe::log(&metrics, &log);
    crate::observe::api(&metrics, &credentials);
    log.seal(now_ns()).await?;
    let policy = PolicyService::open(config.policy_setup()).await?;
    let issued = policy.clone();
    log.set_ingest(crate::receipts::ingest::Ingest {
        issued: Arc::new(move || issued.snapshot().epoch()),
        digest_key: crate::receipts::ingest::DigestKey::open(&config.data_dir)?,
    });
    let watcher = policy.spawn_file_watcher();
    let gates = Gates::open(
        &config.data_dir,
        config.gates.clone(),
        policy.clone(),
        log.clone(),
    )
    .await?;
    crate::observe::rollout(&metrics, &gates);
    let observed = gates.clone();
    let epochs = {
        let policy = policy.clone();
        crate::telemetry::epochs::EpochSpans::new(
            Box::new(move |n| {
                policy
                    .snapshot()
                    .latest
                    .filter(|e| e.epoch == n)
                    .map(|e| e.issued_at_ns)
            }),
            started_ns,
        )
    };
    let capacity = Arc::new(Capacity::new(config.capacity.clone()));
    let policy_view = in_force(policy.clone());
    crate::observe::capacity(&metrics, &capacity, policy_view.clone());
    crate::observe::hot_keys(&metrics, &capacity);
    let counted = capacity.clone();
    log.set_observer(Arc::new(move |first, receipts| {
        observed.observe(first, receipts);
        epochs.observe(receipts);
        counted.observe(receipts);
    }));
    let (stop_tx, stop_rx) = watch::channel(false);
    let evaluator = gates.spawn(stop_rx.clone());
    let sealer = spawn_sealer(config.seal_interval, stop_rx.clone(), log.clone());
    let rotator = Rotator::new(config.kms.rotation_interval).spawn(log.clone(), stop_rx.clone());
    // Cross-region quorum. With the SPIFFE identity and a peer listener, the witness routes
    // are served only there, over mutual TLS, and the replicator calls peers with the SVID;
    // without, both use plain HTTP on the API listener (labs and tests; logged at start).
    let peer_tls = identity.is_some() && listeners.peer.is_some();
    let quorum = if config.quorum.enabled {
        let client = match (&identity, peer_tls) {
            (Some(identity), true) => crate::identity::https_client(identity.clone()),
            _ => reqwest::Client::new(),
        };
        if !peer_tls {
            tracing::warn!("[quorum] without [identity] and a peer listener: checkpoints and cosignatures travel over plain HTTP, peers are not authenticated");
        }
        Some(Quorum::open(&config.quorum, &config.data_dir, log.clone(), client).await?)
    } else {
        None
    };
    if let Some(q) = &quorum {
        crate::observe::quorum(&metrics, &q.replicator);
    }
    let replicator = quorum.as_ref().map(|q| q.replicator.spawn(stop_rx.clone()));
    let publisher = match config.tiles.destination()? {
        Some(destination) => {
            let store = crate::tiles::store::TileStore::open(
                &destination,
                config.tiles.s3_endpoint.as_deref(),
                &config.tiles.s3_region,
                config.tiles.s3_credentials.as_ref(),
            )?;
            let publisher = crate::tiles::Publisher::new(
                log.clone(),
                store,
                quorum.as_ref().map(|q| q.replicator.clone()),
            );
            tracing::info!(url = %publisher.url(), "publishing tlog-tiles after every checkpoint");
            Some(publisher)
        }
        None => None,
    };
    let publishing = publisher.as_ref().map(|p| p.spawn(stop_rx.clone()));
    let retention = Arc::new(Retention::new(
        log.clone(),
        &config.origin,
        quorum.as_ref().map(|q| q.witness.clone()),
        config.retention.clone(),
    ));
    let token_reloader = credentials
        .filters
        .as_ref()
        .map(|f| f.spawn_reload(TOKEN_RELOAD_PERIOD, stop_rx.clone()));
    let pruner = retention.spawn(stop_rx);
    let mut api = crate::api::receipts::routes(log.clone(), Arc::new(config.api.receipt_rate()))
        .merge(crate::api::auth::routes(credentials.clone()))
        .merge(crate::policy::api::routes(policy.clone()))
        .merge(crate::gates::api::routes(gates.clone()))
        .merge(crate::retention::api::routes(retention))
        .merge(crate::capacity::api::routes(
            capacity.clone(),
            policy_view.clone(),
        ))
        .merge(crate::telemetry::api::routes(telemetry.clone()));
    api = api.merge(crate::console::api::routes(crate::console::Console {
        origin: config.origin.clone(),
        actions_need_token: credentials.admin.is_some(),
        rotation_interval: config.kms.rotation_interval,
        log: log.clone(),
        gates: gates.clone(),
        capacity,
        in_force: policy_view,
        quorum: quorum.as_ref().map(|q| q.replicator.clone()),
    }));
    let mut peer_api = crate::peer::router();
    if let Some(q) = &quorum {
        api = api.merge(crate::quorum::api::routes(q.replicator.clone()));
        let witness = crate::quorum::witness_router(q.witness.clone());
        if peer_tls {
            peer_api = peer_api.merge(witness);
            api = api.merge(crate::quorum::witness::api::witness_status_router(
                q.witness.clone(),
            ));
        } else {
            api = api.merge(witness);
        }
    }
    if credentials.any() {
        api = api.layer(axum::middleware::from_fn_with_state(
            credentials.clone(),
            crate::api::auth::authorize,
        ));
    }
    if let Ok(addr) = listeners.api.local_addr() {
        tracing::info!(%addr, origin = %config.origin, "knhk-agent serving");
    }
    let (peer_stop, peer_stopped) = tokio::sync::oneshot::channel::<()>();
    // Held until `run` returns: the identity keeps following rotations while the agent runs.
    let peer_server = match (listeners.peer, identity.clone()) {
        (Some(peer), Some(identity)) => {
            Some(tokio::spawn(serve_mtls(peer, identity, peer_api, async {
                let _ = peer_stopped.await;
            })))
        }
        _ => None,
    };
    let closing = policy.clone();
    let served =
        crate::api::serve::serve(listeners.api, api, config.api.serve_limits(), async move {
            shutdown.await;
            closing.close();
            let _ = peer_stop.send(());
        })
        .await;
    let peer_served = match peer_server {
        Some(task) => task.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "peer listener task ended abnormally");
            Ok(())
        }),
        None => Ok(()),
    };
    policy.close();
    if let Some(watcher) = watcher {
        let _ = watcher.await;
    }
    let _ = stop_tx.send(true);
    let _ = sealer.await;
    let _ = rotator.await;
    let _ = evaluator.await;
    for task in replicator
        .into_iter()
        .chain(pruner)
        .chain(token_reloader)
        .chain(publishing)
    {
        let _ = task.await;
    }
    log.seal(now_ns()).await?;
    if let Some(publisher) = &publisher {
        if let Err(e) = publisher.publish().await {
            tracing::error!(url = %publisher.url(), error = %e, "publishing the last checkpoint's tiles failed");
        }
    }
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap_or_else(|e| tracing::error!(error = %e, "telemetry shutdown task failed"));
    served.map_err(|source| RunError::Io {
        what: "serving the API",
        source,
    })?;
    Ok(peer_served?)
}
