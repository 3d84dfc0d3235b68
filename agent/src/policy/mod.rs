//! Config push to the filters: the rollout/admission policy, its monotonic signed epochs, the
//! policy file watcher, the long-poll and admin endpoints, and config-key rotation handover.
//!
//! - [`config`]: the `policy_file` setting and the `[policy]` table (config key, watch
//!   interval, long-poll timeouts).
//! - [`store`]: the SQLite epoch table (`policy.db` in the data directory): every published
//!   epoch is committed durably before it is served, so a restart never reuses or lowers one.
//! - [`epoch`]: a published [`Epoch`] and the [`Snapshot`] long-polls watch.
//! - [`service`]: [`PolicyService`], the state: validation with `knhk_core` (the filter's own
//!   code), signing (one signature per epoch, two for a rotation handover), the
//!   `tokio::sync::watch` channel that wakes long-polls, and the policy file watcher.
//! - [`api`]: the HTTP endpoints (`/v1/policy`, `/v1/config`, `/v1/config/keys`,
//!   `/v1/config/keys/rotate`).
//!
//! Key handover: the filter trusts the key set in its static `control.trusted_keys`. When the
//! config key gains a version (through `POST /v1/config/keys/rotate`, or rotated outside the
//! agent), the next epoch announces `next_keys = [new version]` and is signed by both the
//! previous and the new version; later epochs are signed by the new version only. A filter
//! behind that handover epoch is served the handover first, so one that still trusts only the
//! previous version (e.g. restarted with its old static config) catches up.

pub mod api;
pub mod config;
pub mod epoch;
pub mod service;
pub mod slo;
pub mod store;

use std::path::PathBuf;

use knhk_core::envelope::EnvelopeError;
use knhk_core::ConfigError;

pub use config::PolicyConfig;
pub use epoch::{Epoch, Rotation, Snapshot, Source};
pub use service::PolicyService;

use crate::kms::KmsError;

/// Errors of the config push subsystem.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A `[policy]` setting is invalid; `setting` names it.
    #[error("invalid setting {setting}: {reason}")]
    Setting {
        /// The setting as the operator writes it.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A policy document is not JSON at all (syntax error, empty).
    #[error("policy is not valid JSON: {0}")]
    Malformed(String),
    /// A policy document is larger than the filter accepts.
    #[error("policy of {0} bytes exceeds the {max}-byte limit", max = knhk_core::limits::MAX_CONFIG_BYTES)]
    TooLarge(usize),
    /// A policy that the `KGC_SIDECAR_SLO_*` overrides make invalid (see [`slo`]); nothing
    /// was published.
    #[error("the policy with the KGC_SIDECAR_SLO_* overrides applied is refused: {0}")]
    SloOverride(String),
    /// A policy document does not validate as a filter configuration (the filter's own rules);
    /// the error names the field.
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    /// Reading the policy file failed.
    #[error("policy file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Signing or reading the config key failed.
    #[error("config signing: {0}")]
    Kms(#[from] KmsError),
    /// A freshly signed envelope did not open as a filter would open it (signer misbehaving).
    #[error("signed config failed its own check: {0}")]
    SelfCheck(#[from] EnvelopeError),
    /// A SQLite operation on the epoch store failed.
    #[error("policy store {op}: {source}")]
    Sqlite {
        /// What was being done.
        op: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The epoch store contradicts itself or holds an envelope that does not verify.
    #[error("policy store is corrupt: {0}")]
    Corrupt(String),
    /// A blocking task or lock failed (a panic elsewhere).
    #[error("internal failure: {0}")]
    Internal(&'static str),
    /// A rollout needs a policy in force to shape, and there is none.
    #[error("no policy is in force yet: PUT /v1/policy (or set policy_file) first")]
    NoPolicy,
    /// The epoch counter reached its limit.
    #[error("config epoch counter is exhausted")]
    EpochExhausted,
}
