//! [`run`]: start the agent on listeners it is given, until a shutdown future completes.
//!
//! Order: validate the configuration, open the signer (creating the key on first use), open
//! the receipt store, seal once, open the config push service (its own key and `policy.db`,
//! applying the policy file once), then serve the API and run the background tasks — the
//! sealer (one checkpoint per `seal_interval` when receipts arrived), the key rotator (every
//! `kms.rotation_interval`), the policy file watcher, and when configured the quorum
//! replicator (after every seal; its witness routes join the API) and the retention run (every
//! `retention.interval`). On shutdown held long-polls answer
//! `204` at once, the server drains in-flight requests, the tasks stop, and a last checkpoint
//! seals what was acknowledged.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{AgentConfig, ConfigError};
use crate::kms::{build_signer, KmsError, Signer};
use crate::policy::{PolicyError, PolicyService};
use crate::quorum::{Quorum, QuorumError};
use crate::receipts::log::now_ns;
use crate::receipts::{ReceiptLog, ReceiptsError};
use crate::retention::Retention;

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
    /// The cross-region quorum (witness, replicator) could not be opened.
    #[error(transparent)]
    Quorum(#[from] QuorumError),
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
}

fn spawn_every(
    every: Duration,
    mut stop: watch::Receiver<bool>,
    log: Arc<ReceiptLog>,
    what: &'static str,
    rotate: bool,
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
            let result = if rotate {
                log.rotate_key(now_ns()).await.map(|(k, _)| {
                    tracing::info!(version = k.version, "rotated signing key");
                })
            } else {
                log.seal(now_ns()).await.map(|_| ())
            };
            if let Err(e) = result {
                tracing::error!(task = what, error = %e, "background task failed; will retry");
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
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| RunError::Io {
        what: "creating data_dir",
        source,
    })?;
    let signer: Arc<dyn Signer> = Arc::from(build_signer(&config.kms).await?);
    let log = Arc::new(ReceiptLog::open(&config.database_path(), &config.origin, signer).await?);
    log.seal(now_ns()).await?;
    let policy = PolicyService::open(&config).await?;
    let watcher = policy.spawn_file_watcher();
    let (stop_tx, stop_rx) = watch::channel(false);
    let sealer = spawn_every(
        config.seal_interval,
        stop_rx.clone(),
        log.clone(),
        "sealer",
        false,
    );
    let rotator = spawn_every(
        config.kms.rotation_interval,
        stop_rx.clone(),
        log.clone(),
        "key rotation",
        true,
    );
    // Cross-region quorum: witness routes on the API listener, replicator in the background.
    // The transport seam: `quorum.router()` and the injected `reqwest::Client`.
    let quorum = if config.quorum.enabled {
        Some(
            Quorum::open(
                &config.quorum,
                &config.data_dir,
                log.clone(),
                reqwest::Client::new(),
            )
            .await?,
        )
    } else {
        None
    };
    let replicator = quorum.as_ref().map(|q| q.replicator.spawn(stop_rx.clone()));
    let retention = Arc::new(Retention::new(
        log.clone(),
        &config.origin,
        quorum.as_ref().map(|q| q.witness.clone()),
        config.retention.clone(),
    ));
    let pruner = retention.spawn(stop_rx);
    let mut app = crate::api::router(log.clone(), policy.clone())
        .merge(crate::retention::api::routes(retention));
    if let Some(q) = &quorum {
        app = app.merge(q.router());
    }
    if let Ok(addr) = listeners.api.local_addr() {
        tracing::info!(%addr, origin = %config.origin, "knhk-agent serving");
    }
    let closing = policy.clone();
    let served = axum::serve(listeners.api, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            closing.close();
        })
        .await;
    policy.close();
    if let Some(watcher) = watcher {
        let _ = watcher.await;
    }
    let _ = stop_tx.send(true);
    let _ = sealer.await;
    let _ = rotator.await;
    for task in replicator.into_iter().chain(pruner) {
        let _ = task.await;
    }
    log.seal(now_ns()).await?;
    served.map_err(|source| RunError::Io {
        what: "serving the API",
        source,
    })
}
