//! Agent configuration: the TOML file, environment overrides, and validation before anything
//! binds.
//!
//! ```toml
//! origin = "knhk.example/eu-west-1"   # checkpoint origin line; pinned into the store
//! data_dir = "/var/lib/knhk"          # all state: receipts.db, policy.db, gates.db, keys/, …
//! seal_interval = "1s"                # checkpoint cadence: one KMS call each
//! policy_file = "/etc/knhk/policy.json" # watched policy pushed to the filters (optional)
//!
//! [kms]                               # see `kms::config`
//! provider = "local"
//! # key_dir = "/var/lib/knhk/keys"    # default: <data_dir>/keys
//!
//! [policy]                            # config push; see `policy::config`
//! key_id = "knhk-config"
//!
//! [gates]                             # rollout defaults; see `gates::config`
//! environment = "canary"
//!
//! [api]
//! admin_token_file = "/etc/knhk/admin-token"   # bearer token of the admin routes (reads too)
//! filter_token_file = "/etc/knhk/filter-tokens" # the filters' tokens, one per line; see `api::auth`
//! max_connections = 1024                        # open API connections at most; see `api::serve`
//! header_timeout = "15s"                        # request headers, and idle keep-alive
//! receipt_batches_per_second = 1000             # per client address, then 429; see `api::rate`
//! receipt_batch_burst = 2000
//!
//! [identity]                          # SPIFFE SVIDs, peer mTLS; see `identity::config`
//! enabled = false
//!
//! [quorum]                            # cross-region witnessing; see `quorum::config`
//! enabled = false
//!
//! [retention]                         # payload retention and legal hold; see `retention`
//! max_age = "720h"
//!
//! [telemetry]                         # OpenTelemetry export; see `telemetry::config`
//! # endpoint = "http://otel-collector:4318"   # or OTEL_EXPORTER_OTLP_ENDPOINT; off when unset
//!
//! [tiles]                             # tlog-tiles publication; see `tiles::config`
//! # url = "s3://audit-bucket/knhk/eu-west-1"  # or file:///dir; off when unset
//!
//! [capacity]                          # capacity analysis; see `capacity`
//! window = "10s"                      # one window of the model (1s–5m)
//! horizon = "30m"                     # windows kept (10–1000 windows)
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use knhk_core::checkpoint::Checkpoint;
use knhk_core::merkle::EMPTY_ROOT;
use serde::Deserialize;

use crate::api::auth::{ApiConfig, AuthError};
use crate::tiles::TilesConfig;

/// Connections `api.max_connections` keeps beyond `policy.max_long_polls`: held polls never
/// take the connections receipt ingest and admin calls need.
pub const LONG_POLL_HEADROOM: usize = 64;
use crate::capacity::{CapacityConfig, CapacityError};
use crate::gates::{GatesConfig, GatesError};
use crate::identity::{IdentityConfig, IdentityError};
use crate::kms::config::KEY_DIR_NAME;
use crate::kms::{KmsConfig, KmsError};
use crate::policy::{PolicyConfig, PolicyError};
use crate::quorum::{QuorumConfig, QuorumError};
use crate::retention::{RetentionConfig, RetentionError};
use crate::telemetry::{TelemetryConfig, TelemetryError};

/// Default checkpoint origin.
pub const DEFAULT_ORIGIN: &str = "knhk.local/receipts";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/knhk";
/// Default seal interval.
pub const DEFAULT_SEAL_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest seal interval accepted.
pub const MIN_SEAL_INTERVAL: Duration = Duration::from_secs(1);
/// Longest seal interval accepted.
pub const MAX_SEAL_INTERVAL: Duration = Duration::from_secs(3600);

/// Why the configuration was refused. Every message is one line and names what to fix: the
/// setting (`invalid setting <name>: …`, the TOML key path or the environment variable) or,
/// when there is none, the file. The binary exits 78 (`EX_CONFIG`) on any of these.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not TOML of the expected shape: a syntax error, an unknown or missing
    /// field, a wrong type, or a value its grammar refuses (a duration, an enum).
    #[error("{}", parse_message(path, setting.as_deref(), *line, message))]
    Parse {
        /// The file.
        path: PathBuf,
        /// Key path of the refused setting (`kms.rotation_interval`, `quorum.peers[0].url`,
        /// an unknown field's own path); `None` for a TOML syntax error.
        setting: Option<String>,
        /// 1-based line of the error in the file, when the parser knows it.
        line: Option<usize>,
        /// The parser's message, on one line.
        message: String,
    },
    /// A value is out of range; `setting` names it.
    #[error("invalid setting {setting}: {reason}")]
    Invalid {
        /// The setting.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The `[kms]` table or its environment overrides are invalid.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// The `[policy]` table is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The `[gates]` table or its environment overrides are invalid.
    #[error(transparent)]
    Gates(#[from] GatesError),
    /// The admin token file is unreadable or holds an unacceptable token.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The `[identity]` table or its environment overrides are invalid.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The `[quorum]` table or its legacy variables are invalid.
    #[error(transparent)]
    Quorum(#[from] QuorumError),
    /// The `[retention]` table is invalid.
    #[error(transparent)]
    Retention(#[from] RetentionError),
    /// The `[telemetry]` table or an `OTEL_*` variable is invalid.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    /// The `[capacity]` table is invalid.
    #[error(transparent)]
    Capacity(#[from] CapacityError),
}

/// Text on one line: line breaks and the indentation after them become one space (what the
/// binary prints for any error, so a refusal is always one line of stderr).
pub fn one_line(text: &str) -> String {
    text.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn parse_message(path: &Path, setting: Option<&str>, line: Option<usize>, message: &str) -> String {
    let at = match line {
        Some(l) => format!("{} line {l}", path.display()),
        None => path.display().to_string(),
    };
    match setting {
        Some(setting) => format!("invalid setting {setting}: {message} ({at})"),
        None => format!("invalid config file {at}: {message}"),
    }
}

/// The agent's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Checkpoint origin line.
    pub origin: String,
    /// Directory of the receipt database.
    pub data_dir: PathBuf,
    /// How often the log is sealed into a signed checkpoint; 1s to 1h.
    #[serde(with = "crate::settings::duration")]
    pub seal_interval: Duration,
    /// Key management.
    pub kms: KmsConfig,
    /// Policy file (JSON filter configuration without `control`) watched and pushed to the
    /// filters; optional (the admin API can set the policy too).
    pub policy_file: Option<PathBuf>,
    /// Config push settings.
    pub policy: PolicyConfig,
    /// Promotion gate defaults.
    pub gates: GatesConfig,
    /// API settings (admin token).
    pub api: ApiConfig,
    /// SPIFFE identity and agent-to-agent mTLS; see `identity::config`.
    pub identity: IdentityConfig,
    /// Cross-region quorum; see `quorum::config`.
    pub quorum: QuorumConfig,
    /// Retention of receipt payloads; see `retention`.
    pub retention: RetentionConfig,
    /// OpenTelemetry export; see `telemetry::config`.
    pub telemetry: TelemetryConfig,
    /// Capacity analysis windows and hot-key sketch; see `capacity`.
    pub capacity: CapacityConfig,
    /// Publication of the log as tlog-tiles; see `tiles::config`.
    pub tiles: TilesConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            origin: DEFAULT_ORIGIN.to_owned(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            seal_interval: DEFAULT_SEAL_INTERVAL,
            kms: KmsConfig::default(),
            policy_file: None,
            policy: PolicyConfig::default(),
            gates: GatesConfig::default(),
            api: ApiConfig::default(),
            identity: IdentityConfig::default(),
            quorum: QuorumConfig::default(),
            retention: RetentionConfig::default(),
            telemetry: TelemetryConfig::default(),
            capacity: CapacityConfig::default(),
            tiles: TilesConfig::default(),
        }
    }
}

impl AgentConfig {
    /// Parse TOML text (no environment applied); paths left unset are derived from
    /// `data_dir` ([`AgentConfig::resolve_paths`]). A refusal names the setting's key path
    /// and line.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: AgentConfig = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| {
                let setting = match e.path().to_string() {
                    p if p == "." || p.is_empty() => None,
                    p => Some(p),
                };
                let inner = e.into_inner();
                let line = inner
                    .span()
                    .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
                ConfigError::Parse {
                    path: path.to_path_buf(),
                    setting,
                    line,
                    message: one_line(inner.message()),
                }
            })?;
        cfg.resolve_paths();
        Ok(cfg)
    }

    /// Refuse an API address beyond loopback without an admin token (whoever reaches it could
    /// change the agent's state) or without filter tokens (whoever reaches it could write
    /// receipts), a file-descriptor limit too low for `api.max_connections` (raised toward
    /// the hard limit when it can be), and a peer listener without the SPIFFE identity; checked by
    /// the binary before it binds anything, and again by [`crate::run()`].
    pub fn check_listeners(
        &self,
        api: std::net::SocketAddr,
        peer_listener: bool,
    ) -> Result<(), ConfigError> {
        if !api.ip().is_loopback() && self.api.admin_token_file.is_none() {
            return Err(ConfigError::Invalid {
                setting: "api.admin_token_file",
                reason: format!(
                    "the API would listen on {api}, beyond loopback, where anyone who reaches it could change the agent's state: set an admin token file, or listen on 127.0.0.1"
                ),
            });
        }
        if !api.ip().is_loopback() && self.api.filter_token_file.is_none() {
            return Err(ConfigError::Invalid {
                setting: "api.filter_token_file",
                reason: format!(
                    "the API would listen on {api}, beyond loopback, where anyone who reaches it could post receipts that decide rollouts: set a filter token file (the filters' control.token), or listen on 127.0.0.1"
                ),
            });
        }
        crate::api::serve::ensure_fd_headroom(self.api.max_connections).map_err(|reason| {
            ConfigError::Invalid {
                setting: "api.max_connections",
                reason,
            }
        })?;
        if peer_listener && !self.identity.enabled {
            return Err(ConfigError::Invalid {
                setting: "identity.enabled",
                reason: "a peer listener (--peer-listen) needs the SPIFFE identity ([identity] enabled = true)"
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// Derive every path setting left unset from `data_dir`: `kms.key_dir` becomes
    /// `<data_dir>/keys`. An explicit path is kept as written. Idempotent; [`Self::from_toml`],
    /// [`Self::load`] and [`crate::run()`] call it, so a config built in code with only
    /// `data_dir` set follows it too. (The other files the agent keeps — `receipts.db`,
    /// `policy.db`, `gates.db`, `quorum.db`, `witness.db`, `witness-key/` — are always under
    /// `data_dir`.)
    pub fn resolve_paths(&mut self) {
        if self.kms.key_dir.is_none() {
            self.kms.key_dir = Some(self.key_dir());
        }
    }

    /// The local key directory: `kms.key_dir`, else `<data_dir>/keys`.
    pub fn key_dir(&self) -> PathBuf {
        self.kms
            .key_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join(KEY_DIR_NAME))
    }

    /// Read the file (or take defaults when `None`), apply environment overrides through
    /// `env`, and validate.
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Self::from_toml(&text, p)?
            }
            None => AgentConfig::default(),
        };
        cfg.resolve_paths();
        cfg.kms.apply_env(&env)?;
        cfg.policy.apply_env(&env)?;
        cfg.gates.apply_env(&env)?;
        cfg.api.apply_env(&env);
        cfg.identity.apply_env(&env)?;
        cfg.quorum.apply_env(&env)?;
        cfg.telemetry.apply_env(&env)?;
        cfg.tiles.apply_env(&env);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Checkpoint::new(&self.origin, 0, EMPTY_ROOT).map_err(|_| ConfigError::Invalid {
            setting: "origin",
            reason: format!(
                "{:?} must be non-empty without whitespace or '+'",
                self.origin
            ),
        })?;
        if self.seal_interval < MIN_SEAL_INTERVAL || self.seal_interval > MAX_SEAL_INTERVAL {
            return Err(ConfigError::Invalid {
                setting: "seal_interval",
                reason: "must be between 1s and 1h".to_owned(),
            });
        }
        self.kms.validate()?;
        self.policy.validate(&self.kms)?;
        self.gates.validate()?;
        self.api.validate()?;
        if self.policy.max_long_polls + LONG_POLL_HEADROOM > self.api.max_connections {
            return Err(ConfigError::Invalid {
                setting: "policy.max_long_polls",
                reason: format!(
                    "{} held long-polls would leave fewer than {LONG_POLL_HEADROOM} of api.max_connections ({}) for receipts and admin calls",
                    self.policy.max_long_polls, self.api.max_connections
                ),
            });
        }
        self.api.token()?;
        self.api.filter_tokens()?;
        self.identity.validate()?;
        self.quorum.validate(&self.origin)?;
        self.retention.validate()?;
        self.telemetry.validate()?;
        self.capacity.validate()?;
        self.tiles.validate()?;
        Ok(())
    }

    /// Path of the receipt database.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("receipts.db")
    }

    /// The parts the config push service is opened from.
    pub fn policy_setup(&self) -> crate::policy::service::PolicySetup<'_> {
        crate::policy::service::PolicySetup {
            policy: &self.policy,
            kms: &self.kms,
            data_dir: &self.data_dir,
            policy_file: self.policy_file.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests;
