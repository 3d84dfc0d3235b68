//! The replicator: after each seal (and every `retry_interval` while a peer lags) it sends
//! this region's newest checkpoint to every peer concurrently, each with the entries that peer
//! lacks and a consistency proof from the size it last cosigned.
//!
//! Catch-up steps through the log's own signed checkpoints, at most
//! [`MAX_ENTRIES_PER_REQUEST`] leaves per request. A `409` naming another witnessed size
//! (the peer restarted, or this region lost `quorum.db`) moves the peer's size to it and
//! resends. Each cosignature is verified against the peer's configured witness key before it
//! counts. A checkpoint is committed when its own signature plus the cosignatures held reach
//! `threshold`; a committed checkpoint covers every receipt before it, so a checkpoint skipped
//! during a catch-up is superseded, never lost.

use std::sync::{Arc, Mutex, MutexGuard};
use tracing::Instrument as _;

use knhk_core::checkpoint::Checkpoint;
use knhk_core::cosignature::Cosignature;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::protocol::{
    AddCheckpoint, Cosigned, Refusal, ADD_CHECKPOINT_PATH, MAX_ENTRIES_PER_REQUEST,
};
use super::state::{Commit, QuorumState};
use super::{PeerConfig, QuorumConfig, QuorumError};
use crate::clock::now_ns;
use crate::receipts::{ReceiptLog, SignedCheckpoint};

/// An error and its sources on one line (reqwest's own text hides the TLS or connect cause).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Most requests to one peer in one round (catch-up steps plus size corrections).
const MAX_STEPS: usize = 64;

/// The outcome of one replication round for the newest checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundReport {
    /// Tree size of the checkpoint replicated.
    pub tree_size: u64,
    /// Regions that hold a cosignature of it (this one included: its own signature).
    pub acknowledged: Vec<String>,
    /// Regions that did not acknowledge it, with their errors.
    pub errors: Vec<PeerError>,
    /// Whether it is committed.
    pub committed: bool,
}

/// Why a region did not acknowledge a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerError {
    /// The region.
    pub region: String,
    /// Its last error for this checkpoint (`not sent yet` before the first attempt).
    pub error: String,
}

struct PeerOutcome {
    index: usize,
    acked_size: u64,
    acks: Vec<(u64, String)>,
    error: Option<String>,
}

/// Replicates this region's log to its peers and decides commits.
pub struct Replicator {
    log: Arc<ReceiptLog>,
    client: reqwest::Client,
    config: QuorumConfig,
    state: Mutex<QuorumState>,
    round_lock: tokio::sync::Mutex<()>,
    committed: watch::Sender<u64>,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("region", &self.config.region)
            .finish_non_exhaustive()
    }
}

fn peer_err(peer: &PeerConfig, reason: impl Into<String>) -> QuorumError {
    QuorumError::Peer {
        region: peer.region.clone(),
        reason: reason.into(),
    }
}

impl Replicator {
    /// Open `quorum.db` in `data_dir`; peers are posted to with `client`.
    pub fn open(
        config: &QuorumConfig,
        data_dir: &std::path::Path,
        log: Arc<ReceiptLog>,
        client: reqwest::Client,
    ) -> Result<Self, QuorumError> {
        Ok(Replicator {
            log,
            client,
            config: config.clone(),
            state: Mutex::new(QuorumState::open(&data_dir.join("quorum.db"))?),
            round_lock: tokio::sync::Mutex::new(()),
            committed: watch::Sender::new(0),
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &QuorumConfig {
        &self.config
    }

    /// Wake-ups after each commit; the value is the committed tree size.
    pub fn subscribe_commits(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// The newest committed checkpoint with its cosignature lines; `None` before the first.
    pub fn newest_commit(&self) -> Result<Option<(SignedCheckpoint, Vec<String>)>, QuorumError> {
        let Some(commit) = self.state()?.recent_commits(1)?.into_iter().next() else {
            return Ok(None);
        };
        let Some(checkpoint) = self.log.checkpoint_at(commit.tree_size)? else {
            return Err(QuorumError::Corrupt(format!(
                "committed checkpoint {} is not in the log",
                commit.tree_size
            )));
        };
        Ok(Some((checkpoint, self.cosignatures(commit.tree_size)?)))
    }

    /// The cosignature lines the peers returned for the checkpoint at `tree_size`.
    pub fn cosignatures(&self, tree_size: u64) -> Result<Vec<String>, QuorumError> {
        Ok(self
            .state()?
            .acks(tree_size)?
            .into_iter()
            .filter_map(|a| a.cosignature)
            .collect())
    }

    /// The replicated log.
    pub fn log(&self) -> &Arc<ReceiptLog> {
        &self.log
    }

    /// The state database, locked.
    pub fn state(&self) -> Result<MutexGuard<'_, QuorumState>, QuorumError> {
        self.state.lock().map_err(|_| QuorumError::Poisoned)
    }

    /// Run rounds after every seal and every `retry_interval`, until `stop` changes.
    pub fn spawn(self: &Arc<Self>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut sealed = this.log.subscribe();
            let mut ticks = tokio::time::interval(this.config.retry_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                if let Err(e) = this.round().await {
                    tracing::error!(error = %e, "replication round failed; will retry");
                }
                tokio::select! {
                    changed = sealed.changed() => if changed.is_err() { return },
                    _ = ticks.tick() => {}
                    _ = stop.changed() => return,
                }
            }
        })
    }

    /// One round: bring every peer up to the newest checkpoint, record the answers, and
    /// commit what reached the threshold, as soon as it does. `None` before the first seal.
    pub async fn round(self: &Arc<Self>) -> Result<Option<RoundReport>, QuorumError> {
        let _serial = self.round_lock.lock().await;
        let Some(latest) = self.log.latest_checkpoint()? else {
            return Ok(None);
        };
        let cp = Checkpoint::parse(&latest.text).map_err(crate::receipts::ReceiptsError::from)?;
        let known = self.state()?.peers()?;
        let mut tasks = JoinSet::new();
        for (index, peer) in self.config.peers.iter().enumerate() {
            let acked = known
                .iter()
                .find(|p| p.region == peer.region)
                .map_or(0, |p| p.acked_size);
            let synced =
                acked == cp.tree_size && self.state()?.has_ack(cp.tree_size, &peer.region)?;
            if synced {
                continue;
            }
            let this = self.clone();
            let latest = latest.clone();
            let span = tracing::info_span!(
                "knhk.quorum.witness",
                "knhk.quorum.peer" = %peer.region,
                "knhk.checkpoint.tree_size" = cp.tree_size,
            );
            tasks.spawn(
                async move { this.sync_peer(index, acked, &latest, cp.tree_size).await }
                    .instrument(span),
            );
        }
        while let Some(joined) = tasks.join_next().await {
            let Ok(outcome) = joined else {
                tracing::error!("replication task panicked");
                continue;
            };
            let Some(peer) = self.config.peers.get(outcome.index) else {
                continue;
            };
            let now = now_ns();
            if let (Some(metrics), Some(sealed)) = (self.log.metrics(), cp.timestamp_ns()) {
                if outcome.acks.iter().any(|(size, _)| *size == cp.tree_size) {
                    metrics.quorum_ack(
                        &peer.region,
                        std::time::Duration::from_nanos(now.saturating_sub(sealed)),
                    );
                }
            }
            {
                let state = self.state()?;
                for (size, line) in &outcome.acks {
                    state.record_ack(*size, &peer.region, line, now)?;
                }
            }
            // Commit as soon as the threshold is reached, not after the slowest peer answered
            // or timed out; and before the peer's acked size is published, so a status that
            // shows a quorum of acks also shows the commit they made. (`commit_if_quorum`
            // takes the state lock itself.)
            for (size, _) in &outcome.acks {
                self.commit_if_quorum(*size)?;
            }
            let state = self.state()?;
            if let Some(error) = &outcome.error {
                tracing::warn!(region = %peer.region, tree_size = cp.tree_size, %error, "peer did not acknowledge");
                state.record_error(cp.tree_size, &peer.region, error, now)?;
            }
            state.set_peer(
                &peer.region,
                outcome.acked_size,
                outcome.error.as_deref(),
                now,
            )?;
        }
        // Acks recorded in earlier rounds (before a restart, say) may already make a quorum.
        self.commit_if_quorum(cp.tree_size)?;
        self.report(cp.tree_size).map(Some)
    }

    fn commit_if_quorum(&self, tree_size: u64) -> Result<bool, QuorumError> {
        let state = self.state()?;
        if state.commit(tree_size)?.is_some() {
            return Ok(true);
        }
        let cosigned = state
            .acks(tree_size)?
            .iter()
            .filter(|a| a.cosignature.is_some())
            .count();
        if cosigned + 1 < self.config.threshold {
            return Ok(false);
        }
        let sealed_ns = self
            .log
            .checkpoint_at(tree_size)?
            .and_then(|c| Checkpoint::parse(&c.text).ok())
            .and_then(|c| c.timestamp_ns())
            .unwrap_or(0);
        state.record_commit(Commit {
            tree_size,
            sealed_ns,
            committed_ns: now_ns(),
        })?;
        tracing::debug!(tree_size, signatures = cosigned + 1, "checkpoint committed");
        self.committed.send_replace(tree_size);
        Ok(true)
    }

    /// Which regions acknowledged the checkpoint at `tree_size`, and the others' errors.
    pub fn report(&self, tree_size: u64) -> Result<RoundReport, QuorumError> {
        let state = self.state()?;
        let acks = state.acks(tree_size)?;
        let mut acknowledged = vec![self.config.region.clone()];
        let mut errors = Vec::new();
        for peer in &self.config.peers {
            match acks.iter().find(|a| a.region == peer.region) {
                Some(a) if a.cosignature.is_some() => acknowledged.push(peer.region.clone()),
                Some(a) => errors.push(PeerError {
                    region: peer.region.clone(),
                    error: a
                        .error
                        .clone()
                        .unwrap_or_else(|| "no answer yet".to_owned()),
                }),
                None => errors.push(PeerError {
                    region: peer.region.clone(),
                    error: "not sent yet".to_owned(),
                }),
            }
        }
        Ok(RoundReport {
            tree_size,
            acknowledged,
            errors,
            committed: state.commit(tree_size)?.is_some(),
        })
    }

    /// The next checkpoint to send a peer at `acked`: the largest within one request's entry
    /// limit, else the next one.
    fn next_step(
        &self,
        acked: u64,
        latest: &SignedCheckpoint,
        latest_size: u64,
    ) -> Result<(SignedCheckpoint, u64), QuorumError> {
        if latest_size - acked <= MAX_ENTRIES_PER_REQUEST {
            return Ok((latest.clone(), latest_size));
        }
        let mut best = None;
        for c in self.log.checkpoints_after(acked)? {
            let size = Checkpoint::parse(&c.text)
                .map_err(crate::receipts::ReceiptsError::from)?
                .tree_size;
            if size > latest_size {
                break;
            }
            if size - acked <= MAX_ENTRIES_PER_REQUEST || best.is_none() {
                best = Some((c, size));
            } else {
                break;
            }
        }
        Ok(best.unwrap_or_else(|| (latest.clone(), latest_size)))
    }

    async fn sync_peer(
        self: Arc<Self>,
        index: usize,
        mut acked: u64,
        latest: &SignedCheckpoint,
        latest_size: u64,
    ) -> PeerOutcome {
        let mut acks = Vec::new();
        let mut error = None;
        if let Some(peer) = self.config.peers.get(index) {
            for _ in 0..MAX_STEPS {
                if acked > latest_size {
                    error = Some(format!(
                        "peer claims to have witnessed size {acked}, beyond this log's {latest_size}"
                    ));
                    break;
                }
                match self.step(peer, acked, latest, latest_size).await {
                    Ok(Step::Acked(size, line)) => {
                        acked = size;
                        acks.push((size, line));
                        if size == latest_size {
                            break;
                        }
                    }
                    Ok(Step::Resize(size)) => acked = size,
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        PeerOutcome {
            index,
            acked_size: acked,
            acks,
            error,
        }
    }

    async fn step(
        &self,
        peer: &PeerConfig,
        acked: u64,
        latest: &SignedCheckpoint,
        latest_size: u64,
    ) -> Result<Step, QuorumError> {
        let (checkpoint, size) = self.next_step(acked, latest, latest_size)?;
        let rows = self.log.entries(acked, size - acked)?;
        let pruned_hashes = self.log.pruned_hashes(&rows)?;
        let entries = rows.into_iter().map(|(_, e)| e).collect();
        let consistency = self.log.consistency_proof(acked, size)?;
        let body = AddCheckpoint {
            old_size: acked,
            consistency,
            checkpoint: checkpoint.clone(),
            entries,
            pruned_hashes,
        };
        let url = format!("{}{ADD_CHECKPOINT_PATH}", peer.url.trim_end_matches('/'));
        let send = self.client.post(&url).json(&body).send();
        let response = tokio::time::timeout(self.config.timeout, send)
            .await
            .map_err(|_| peer_err(peer, format!("no answer within {:?}", self.config.timeout)))?
            .map_err(|e| peer_err(peer, format!("unreachable: {}", error_chain(&e))))?;
        let status = response.status();
        let bytes = tokio::time::timeout(self.config.timeout, response.bytes())
            .await
            .map_err(|_| peer_err(peer, "answer body timed out"))?
            .map_err(|e| peer_err(peer, format!("reading answer: {e}")))?;
        if status.is_success() {
            let cosigned: Cosigned = serde_json::from_slice(&bytes)
                .map_err(|e| peer_err(peer, format!("unreadable cosignature answer: {e}")))?;
            let line = Cosignature::parse_line(&cosigned.cosignature)
                .map_err(|e| peer_err(peer, format!("bad cosignature line: {e}")))?;
            peer.witness
                .verify(&checkpoint.text, &line)
                .map_err(|e| peer_err(peer, format!("cosignature rejected: {e}")))?;
            return Ok(Step::Acked(size, cosigned.cosignature));
        }
        let refusal: Option<Refusal> = serde_json::from_slice(&bytes).ok();
        if let Some(Refusal {
            code,
            size: Some(s),
            ..
        }) = &refusal
        {
            if code == "old_size_mismatch" && *s != acked {
                return Ok(Step::Resize(*s));
            }
        }
        let reason = refusal.map_or_else(
            || String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            |r| format!("{}: {}", r.code, r.error),
        );
        Err(peer_err(
            peer,
            format!("HTTP {}: {reason}", status.as_u16()),
        ))
    }
}

enum Step {
    Acked(u64, String),
    Resize(u64),
}
