//! The operator console: a web page served by the agent ([`assets`], built from `console/` by
//! `cargo xtask build-console` and embedded at compile time) that polls one public document
//! ([`view::ConsoleState`], assembled here from the rollout engine, the capacity analysis, the
//! receipt log, the quorum and the signer) and sends rollout actions to the admin routes with
//! the operator's token. [`api`] serves both.

pub mod api;
pub mod assets;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use knhk_core::checkpoint::Checkpoint;

use crate::capacity::api::InForceView;
use crate::capacity::Capacity;
use crate::gates::Gates;
use crate::quorum::Replicator;
use crate::receipts::ReceiptLog;
use view::{
    AdmissionView, CapacityView, CheckpointView, ConsoleState, HotKeysView, KeysView, LogView,
    PeerView, QuorumView, RolloutView,
};

/// Checkpoints the console lists.
pub const CHECKPOINTS_SHOWN: u64 = 10;

/// Why the console's state could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The receipt log could not be read.
    #[error(transparent)]
    Receipts(#[from] crate::receipts::ReceiptsError),
    /// The rollout engine could not be read.
    #[error(transparent)]
    Gates(#[from] crate::gates::GatesError),
    /// The quorum state could not be read.
    #[error(transparent)]
    Quorum(#[from] crate::quorum::QuorumError),
}

/// Everything the console reads.
#[derive(Clone)]
pub struct Console {
    /// The log's origin.
    pub origin: String,
    /// Whether actions need the admin token.
    pub actions_need_token: bool,
    /// `kms.rotation_interval`.
    pub rotation_interval: Duration,
    /// The receipt log.
    pub log: Arc<ReceiptLog>,
    /// The rollout engine.
    pub gates: Arc<Gates>,
    /// The capacity analysis.
    pub capacity: Arc<Capacity>,
    /// The class budgets and versions in force.
    pub in_force: InForceView,
    /// The quorum replicator, with `[quorum]`.
    pub quorum: Option<Arc<Replicator>>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Console {
    /// The console's document at `now_ns`.
    pub fn state(&self, now_ns: u64) -> Result<ConsoleState, ConsoleError> {
        let rollout = self.gates.status()?.map(|status| RolloutView {
            status,
            timeline: self.gates.timeline(),
        });
        let report = self.capacity.report(now_ns, &(self.in_force)());
        let capacity = CapacityView {
            window_s: report.window_s,
            windows: report.windows,
            series: report.series,
            hot_keys: HotKeysView {
                all: (&report.hot_keys.all).into(),
                canary: (&report.hot_keys.canary).into(),
            },
            recommendations: report.recommendations,
        };
        let checkpoints = self
            .log
            .recent_checkpoints(CHECKPOINTS_SHOWN)?
            .into_iter()
            .map(|c| {
                let note = Checkpoint::parse(&c.text)?;
                Ok(CheckpointView {
                    tree_size: note.tree_size,
                    time_ns: note.timestamp_ns().unwrap_or(0),
                    root_hash: note.root_hash,
                    provider: c.signature.provider,
                    key_id: c.signature.key_id,
                    key_version: c.signature.key_version,
                })
            })
            .collect::<Result<Vec<_>, knhk_core::checkpoint::CheckpointError>>()
            .map_err(crate::receipts::ReceiptsError::from)?;
        let (provider, key_id) = self.log.signing_key();
        let in_use_since_ns = self.log.key_in_use_since(now_ns)?;
        let keys = KeysView {
            provider: provider.to_owned(),
            key_id: key_id.to_owned(),
            key_version: checkpoints.first().map(|c| c.key_version),
            in_use_since_ns,
            rotation_interval_s: self.rotation_interval.as_secs_f64(),
            next_rotation_ns: in_use_since_ns.saturating_add(nanos(self.rotation_interval)),
        };
        let quorum = match &self.quorum {
            Some(r) => Some(self.quorum_view(r, checkpoints.first())?),
            None => None,
        };
        Ok(ConsoleState {
            generated_at_ns: now_ns,
            origin: self.origin.clone(),
            actions_need_token: self.actions_need_token,
            verifier: assets::VERIFIER.is_some(),
            rollout,
            admission: AdmissionView {
                window_s: self.capacity.config().window.as_secs_f64(),
                points: self.capacity.admission(),
            },
            capacity,
            log: LogView {
                tree_size: self.log.size()?,
                checkpoints,
                quorum,
            },
            keys,
        })
    }

    fn quorum_view(
        &self,
        r: &Replicator,
        latest: Option<&CheckpointView>,
    ) -> Result<QuorumView, ConsoleError> {
        let cfg = r.config();
        let latest_size = latest.map_or(0, |c| c.tree_size);
        let state = r.state()?;
        let committed = state.recent_commits(1)?.pop();
        let peers = state
            .peers()?
            .into_iter()
            .map(|p| PeerView {
                region: p.region,
                acked_size: p.acked_size,
                healthy: p.last_error.is_none(),
                time_ns: p.time_ns,
            })
            .collect();
        Ok(QuorumView {
            region: cfg.region.clone(),
            threshold: cfg.threshold,
            regions: std::iter::once(cfg.region.clone())
                .chain(cfg.peers.iter().map(|p| p.region.clone()))
                .collect(),
            latest_size,
            up_to_date: latest.is_some()
                && committed
                    .as_ref()
                    .is_some_and(|c| c.tree_size == latest_size),
            latest_committed_size: committed.as_ref().map(|c| c.tree_size),
            latest_committed_ns: committed.as_ref().map(|c| c.committed_ns),
            peers,
        })
    }
}
