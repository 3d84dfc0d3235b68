//! Retention and legal hold: receipts older than `retention.max_age` lose their payloads, except
//! those pinned by a legal hold in force; leaf hashes and checkpoints stay, so roots, proofs
//! and exports keep verifying.
//!
//! A hold is placed and released by appending a hold entry (kinds 3 and 4) to this region's
//! log and sealing at once, so both are signed receipts; the entries travel to every witness
//! with the log. The holds in force on a region are those of its own log and of every log it
//! witnesses: time-range and epoch holds pin matching receipts in every log stored there,
//! leaf-range holds pin leaves of the log that placed them. Only receipts are pruned; hold and
//! key rotation entries are kept. The same run prunes this region's log and its witnessed
//! copies.
//!
//! ```toml
//! [retention]
//! max_age = "720h"     # absent: keep payloads forever
//! interval = "1h"      # how often the retention run happens
//! ```

pub mod api;
pub mod cli;
pub mod holds;

use std::sync::Arc;
use std::time::Duration;

use knhk_core::receipt::{HoldPlaced, HoldReleased, LogEntry, PruneRecord, ReceiptError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use holds::{Hold, HoldView};
pub use knhk_core::receipt::HoldSelector;

use crate::clock::now_ns;
use crate::quorum::{QuorumError, Witness};
use crate::receipts::{ReceiptLog, ReceiptsError};

/// Default interval between retention runs.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);
/// Leaves read per page during a run.
const PAGE: u64 = 10_000;

/// Errors of retention and legal hold.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// A `[retention]` setting is invalid.
    #[error("invalid setting {setting}: {reason}")]
    InvalidConfig {
        /// The setting.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The hold request is invalid (empty range, bad id, …).
    #[error("invalid hold: {0}")]
    InvalidHold(String),
    /// A hold with this id is already in force.
    #[error("hold {0:?} is already in force")]
    DuplicateHold(String),
    /// No hold with this id is in force.
    #[error("no hold {0:?} is in force")]
    UnknownHold(String),
    /// The receipt log failed.
    #[error(transparent)]
    Receipts(#[from] ReceiptsError),
    /// The witness store failed.
    #[error(transparent)]
    Quorum(#[from] QuorumError),
}

impl From<ReceiptError> for RetentionError {
    fn from(e: ReceiptError) -> Self {
        RetentionError::InvalidHold(e.to_string())
    }
}

/// The `[retention]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Age after which receipt payloads are pruned; `None` keeps them forever.
    #[serde(with = "crate::settings::opt_duration")]
    pub max_age: Option<Duration>,
    /// How often the retention run happens.
    #[serde(with = "crate::settings::duration")]
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_age: None,
            interval: DEFAULT_INTERVAL,
        }
    }
}

impl RetentionConfig {
    /// Check every value.
    pub fn validate(&self) -> Result<(), RetentionError> {
        let second = Duration::from_secs(1);
        if self.interval < second || self.max_age.is_some_and(|a| a < second) {
            return Err(RetentionError::InvalidConfig {
                setting: "retention",
                reason: "max_age and interval must be at least 1s".to_owned(),
            });
        }
        Ok(())
    }
}

/// Body of `POST /v1/holds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceHold {
    /// Hold id: 1–255 bytes, unique among holds in force.
    pub hold_id: String,
    /// Why (case number, ticket): 1–255 bytes.
    pub reason: String,
    /// What it pins.
    pub selector: HoldSelector,
    /// Optional end date, ns since the epoch.
    #[serde(default)]
    pub until_ns: Option<u64>,
}

/// Body of `POST /v1/holds/{id}/release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseHold {
    /// Why: 1–255 bytes.
    pub reason: String,
}

/// Where a hold entry landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// Leaf index of the hold entry.
    pub leaf_index: u64,
    /// Tree size of the checkpoint that signs it.
    pub tree_size: u64,
}

/// What a retention run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    /// Payloads pruned from this region's log.
    pub pruned_own: u64,
    /// Payloads pruned from witnessed copies.
    pub pruned_witnessed: u64,
    /// Expired receipts kept because a hold pins them.
    pub held: u64,
}

/// Retention and legal hold over this region's log and its witnessed copies.
#[derive(Debug)]
pub struct Retention {
    log: Arc<ReceiptLog>,
    origin: String,
    witness: Option<Arc<Witness>>,
    config: RetentionConfig,
    run_lock: tokio::sync::Mutex<()>,
}

impl Retention {
    /// Retention for `log` (named `origin`) and, when quorum is on, `witness`'s copies.
    pub fn new(
        log: Arc<ReceiptLog>,
        origin: &str,
        witness: Option<Arc<Witness>>,
        config: RetentionConfig,
    ) -> Self {
        Retention {
            log,
            origin: origin.to_owned(),
            witness,
            config,
            run_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Every hold known here: this log's and every witnessed log's.
    pub async fn holds(&self) -> Result<Vec<Hold>, RetentionError> {
        let mut out = Vec::new();
        holds::collect(&self.origin, &self.log.hold_entries()?, &mut out);
        if let Some(w) = &self.witness {
            for origin in w.origins().await {
                holds::collect(&origin, &w.hold_entries(&origin).await?, &mut out);
            }
        }
        Ok(out)
    }

    async fn record(&self, entry: LogEntry) -> Result<Recorded, RetentionError> {
        let range = self.log.append_entries(std::slice::from_ref(&entry))?;
        self.log.seal(now_ns()).await?;
        Ok(Recorded {
            leaf_index: range.start,
            tree_size: self.log.size()?,
        })
    }

    /// Place a hold: a signed hold entry in this region's log.
    pub async fn place(&self, req: PlaceHold) -> Result<Recorded, RetentionError> {
        let now = now_ns();
        if self
            .holds()
            .await?
            .iter()
            .any(|h| h.origin == self.origin && h.hold_id == req.hold_id && h.active(now))
        {
            return Err(RetentionError::DuplicateHold(req.hold_id));
        }
        if req.until_ns.is_some_and(|u| u <= now) {
            return Err(RetentionError::InvalidHold(
                "until_ns is in the past".to_owned(),
            ));
        }
        let entry = LogEntry::HoldPlaced(HoldPlaced {
            time_ns: now,
            hold_id: req.hold_id,
            reason: req.reason,
            selector: req.selector,
            until_ns: req.until_ns,
        });
        entry.encode()?;
        self.record(entry).await
    }

    /// Release a hold placed by this region: a signed release entry.
    pub async fn release(&self, hold_id: &str, reason: String) -> Result<Recorded, RetentionError> {
        let now = now_ns();
        if !self
            .holds()
            .await?
            .iter()
            .any(|h| h.origin == self.origin && h.hold_id == hold_id && h.active(now))
        {
            return Err(RetentionError::UnknownHold(hold_id.to_owned()));
        }
        let entry = LogEntry::HoldReleased(HoldReleased {
            time_ns: now,
            hold_id: hold_id.to_owned(),
            reason,
        });
        entry.encode()?;
        self.record(entry).await
    }

    /// One retention run at time `now_ns` (a no-op without `max_age`). Traced as
    /// `knhk.retention.run`.
    #[tracing::instrument(name = "knhk.retention.run", skip_all)]
    pub async fn run(&self, now: u64) -> Result<RunReport, RetentionError> {
        let _serial = self.run_lock.lock().await;
        let mut report = RunReport::default();
        let Some(max_age) = self.config.max_age else {
            return Ok(report);
        };
        let cutoff = now.saturating_sub(u64::try_from(max_age.as_nanos()).unwrap_or(u64::MAX));
        let holds: Vec<Hold> = self
            .holds()
            .await?
            .into_iter()
            .filter(|h| h.active(now))
            .collect();
        let size = self.log.size()?;
        let mut from = 0;
        while from < size {
            let page = self.log.entries(from, PAGE)?;
            let Some(last) = page.last().map(|(i, _)| *i) else {
                break;
            };
            let victims = expired(&self.origin, &page, cutoff, &holds, &mut report.held);
            // Recorded in the log before they go: a verifier accepts an empty leaf only when
            // a later retention record lists it.
            let records: Vec<LogEntry> = PruneRecord::covering(now, cutoff, &victims)
                .into_iter()
                .map(LogEntry::Pruned)
                .collect();
            if !records.is_empty() {
                self.log.append_entries(&records)?;
            }
            report.pruned_own += self.log.prune(&victims)?;
            from = last + 1;
        }
        if let Some(w) = &self.witness {
            for origin in w.origins().await {
                let mut from = 0;
                loop {
                    let page = w.entries(&origin, from, PAGE).await?;
                    let Some(last) = page.last().map(|(i, _)| *i) else {
                        break;
                    };
                    let victims = expired(&origin, &page, cutoff, &holds, &mut report.held);
                    report.pruned_witnessed += w.prune(&origin, &victims).await?;
                    from = last + 1;
                }
            }
        }
        if report.pruned_own + report.pruned_witnessed > 0 {
            tracing::info!(
                pruned_own = report.pruned_own,
                pruned_witnessed = report.pruned_witnessed,
                held = report.held,
                "retention run pruned receipt payloads"
            );
        }
        Ok(report)
    }

    /// Run every `interval` until `stop` changes (nothing without `max_age`).
    pub fn spawn(self: &Arc<Self>, mut stop: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
        self.config.max_age?;
        let this = self.clone();
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(this.config.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stop.changed() => return,
                }
                if let Err(e) = this.run(now_ns()).await {
                    tracing::error!(error = %e, "retention run failed; will retry");
                }
            }
        }))
    }
}

/// Receipts of `origin` in `page` decided before `cutoff` and pinned by no hold.
fn expired(
    origin: &str,
    page: &[(u64, Vec<u8>)],
    cutoff: u64,
    holds: &[Hold],
    held: &mut u64,
) -> Vec<u64> {
    let mut out = Vec::new();
    for (index, bytes) in page {
        if bytes.is_empty() {
            continue;
        }
        let Ok(LogEntry::Receipt(r)) = LogEntry::decode(bytes) else {
            continue;
        };
        if r.time_ns >= cutoff {
            continue;
        }
        if holds.iter().any(|h| h.pins(origin, *index, &r)) {
            *held += 1;
        } else {
            out.push(*index);
        }
    }
    out
}
