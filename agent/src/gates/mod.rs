//! Promotion gates: rollouts from a stable to a candidate version through `canary` weight
//! steps, `staging` (a defined audience) and `production`, promoted on analysis of the
//! filters' receipts and rolled back automatically, with every transition a signed log entry.
//!
//! - [`terms`]: the gates, the analysis thresholds, weights in basis points.
//! - [`spec`]: the rollout document and its validation.
//! - [`config`]: the agent's `[gates]` defaults and the older sidecar's promotion settings.
//! - [`state`]: gates, phases, allowed transitions, and the policy fields a state owns.
//! - [`analysis`]: per-version success rate and HDR-histogram p99 over a sliding window; verdict
//!   and health score.
//! - [`store`]: `gates.db`, so a restart resumes the same gate and weights.
//! - [`engine`]: [`Gates`], which evaluates and carries out transitions.
//! - [`timeline`]: the live rollout's recent evaluations and transitions (the console's plots).
//! - [`api`]: the admin endpoints; [`report`]: the status as text for the CLI.

pub mod analysis;
pub mod api;
pub mod config;
pub mod engine;
pub mod report;
pub mod spec;
pub mod state;
pub mod store;
pub mod terms;
pub mod timeline;

pub use config::GatesConfig;
pub use engine::{Gates, Status};
pub use spec::RolloutSpec;
pub use state::Phase;
pub use terms::Gate;

use crate::policy::PolicyError;
use crate::receipts::ReceiptsError;

/// Errors of the promotion gates.
#[derive(Debug, thiserror::Error)]
pub enum GatesError {
    /// A rollout document field is invalid; `field` is its path.
    #[error("invalid rollout: field `{field}`: {reason}")]
    InvalidSpec {
        /// Path of the field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A `[gates]` setting is invalid.
    #[error("invalid setting {field}: {reason}")]
    InvalidConfig {
        /// The setting.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// An environment variable is invalid.
    #[error("invalid setting {setting}: {reason}")]
    InvalidSetting {
        /// The variable.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The requested transition is not allowed from the current state.
    #[error("transition refused: {0}")]
    InvalidTransition(String),
    /// Another rollout is live, or the id was used.
    #[error("{0}")]
    Conflict(String),
    /// No such rollout or flag.
    #[error("{0}")]
    NotFound(String),
    /// Publishing the config failed (nothing was published; the state is retried).
    #[error("publishing the rollout's config: {0}")]
    Policy(#[from] PolicyError),
    /// Logging the rollout event failed.
    #[error("logging the rollout event: {0}")]
    Receipts(#[from] ReceiptsError),
    /// A SQLite operation failed.
    #[error("gates store {op}: {source}")]
    Sqlite {
        /// What was being done.
        op: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The store holds something this build cannot read.
    #[error("gates store is corrupt: {0}")]
    Corrupt(String),
    /// An internal failure (lock poisoned, task died).
    #[error("internal failure: {0}")]
    Internal(&'static str),
}
