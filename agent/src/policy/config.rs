//! The `[policy]` table of the agent config: which key signs configs, how often the policy file
//! is checked, and the long-poll timeouts.
//!
//! ```toml
//! policy_file = "/etc/knhk/policy.json"   # top level: the watched policy (optional)
//!
//! [policy]
//! key_id = "knhk-config"         # Ed25519 config signing key (same provider as [kms]); not kms.key_id
//! watch_interval = "1s"          # policy file check period, 10ms..1h ("250ms", "1s", "1m")
//! long_poll_timeout = "30s"      # hold of GET /v1/config without timeout_ms
//! long_poll_max = "300s"         # largest timeout_ms accepted
//! max_long_polls = 512           # long-polls held at once, all clients (1..=16384)
//! max_long_polls_per_client = 128 # of which one client address may hold (1..=max_long_polls)
//! ```

use std::time::Duration;

use knhk_core::checkpoint::Alg;
use serde::Deserialize;

use super::PolicyError;
use crate::kms::config::{valid_key_id, KeyIdSetting};
use crate::kms::{KmsConfig, Provider};

/// Default config signing key id.
pub const DEFAULT_KEY_ID: &str = "knhk-config";
/// Default policy file check period.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest policy file check period accepted.
pub const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(10);
/// Longest policy file check period accepted.
pub const MAX_WATCH_INTERVAL: Duration = Duration::from_secs(3600);
/// Default long-poll hold.
pub const DEFAULT_LONG_POLL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default largest long-poll hold a caller may ask for.
pub const DEFAULT_LONG_POLL_MAX: Duration = Duration::from_secs(300);
/// Ceiling of `long_poll_max`.
pub const MAX_LONG_POLL_MAX: Duration = Duration::from_secs(3600);

/// Config push settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Ed25519 key that signs config epochs, with the `[kms]` provider settings (an existing
    /// Transit key of another type is refused at start). It must differ from
    /// `kms.key_id`: that key rotates on a timer, and every rotation of the config key needs a
    /// handover epoch the filters follow.
    pub key_id: String,
    /// How often the policy file is checked for a change.
    #[serde(with = "crate::settings::duration")]
    pub watch_interval: Duration,
    /// How long `GET /v1/config` holds when the caller gives no `timeout_ms`.
    #[serde(with = "crate::settings::duration")]
    pub long_poll_timeout: Duration,
    /// The largest `timeout_ms` accepted; larger values are refused with 400.
    #[serde(with = "crate::settings::duration")]
    pub long_poll_max: Duration,
    /// Long-polls held at once, all clients together; beyond, `GET /v1/config` that would
    /// hold is answered 429 at once (the filter backs off and polls again).
    pub max_long_polls: usize,
    /// Long-polls one client address may hold (an Envoy holds one per worker).
    pub max_long_polls_per_client: usize,
    /// The older sidecar's `KGC_SIDECAR_SLO_*` overrides of the class budgets and strategy,
    /// applied to every pushed policy (environment only; see [`super::slo`]).
    #[serde(skip)]
    pub slo: super::slo::SloOverrides,
}

/// Default of `policy.max_long_polls`.
pub const DEFAULT_MAX_LONG_POLLS: usize = 512;
/// Default of `policy.max_long_polls_per_client`.
pub const DEFAULT_MAX_LONG_POLLS_PER_CLIENT: usize = 128;

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            key_id: DEFAULT_KEY_ID.to_owned(),
            watch_interval: DEFAULT_WATCH_INTERVAL,
            long_poll_timeout: DEFAULT_LONG_POLL_TIMEOUT,
            long_poll_max: DEFAULT_LONG_POLL_MAX,
            max_long_polls: DEFAULT_MAX_LONG_POLLS,
            max_long_polls_per_client: DEFAULT_MAX_LONG_POLLS_PER_CLIENT,
            slo: super::slo::SloOverrides::default(),
        }
    }
}

impl PolicyConfig {
    /// Apply the environment: the `KGC_SIDECAR_SLO_*` overrides.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), PolicyError> {
        self.slo = super::slo::SloOverrides::from_env(env)?;
        Ok(())
    }

    /// Check every value against each other and the `[kms]` table.
    pub fn validate(&self, kms: &KmsConfig) -> Result<(), PolicyError> {
        if !valid_key_id(&self.key_id) {
            return Err(PolicyError::Setting {
                setting: "policy.key_id",
                reason: format!(
                    "{:?} must be 1-64 of A-Z a-z 0-9 . _ - and not start with '.'",
                    self.key_id
                ),
            });
        }
        if self.key_id == kms.key_id {
            return Err(PolicyError::Setting {
                setting: "policy.key_id",
                reason: format!(
                    "{:?} is also kms.key_id; the checkpoint key rotates on a timer, so configs need their own key",
                    self.key_id
                ),
            });
        }
        if self.watch_interval < MIN_WATCH_INTERVAL || self.watch_interval > MAX_WATCH_INTERVAL {
            return Err(PolicyError::Setting {
                setting: "policy.watch_interval",
                reason: "must be between 10ms and 1h".to_owned(),
            });
        }
        if self.long_poll_max.is_zero() || self.long_poll_max > MAX_LONG_POLL_MAX {
            return Err(PolicyError::Setting {
                setting: "policy.long_poll_max",
                reason: "must be between 1ms and 1h".to_owned(),
            });
        }
        if self.long_poll_timeout.is_zero() || self.long_poll_timeout > self.long_poll_max {
            return Err(PolicyError::Setting {
                setting: "policy.long_poll_timeout",
                reason: format!(
                    "must be between 1ms and policy.long_poll_max ({} ms)",
                    self.long_poll_max.as_millis()
                ),
            });
        }
        if !(1..=16_384).contains(&self.max_long_polls) {
            return Err(PolicyError::Setting {
                setting: "policy.max_long_polls",
                reason: format!("must be 1..=16384, got {}", self.max_long_polls),
            });
        }
        if !(1..=self.max_long_polls).contains(&self.max_long_polls_per_client) {
            return Err(PolicyError::Setting {
                setting: "policy.max_long_polls_per_client",
                reason: format!(
                    "must be 1..=policy.max_long_polls ({}), got {}",
                    self.max_long_polls, self.max_long_polls_per_client
                ),
            });
        }
        Ok(())
    }

    /// The `[kms]` settings with this table's key id: how the config signer is built. The
    /// key is Ed25519 whatever `kms.vault_key_type` says: the wasm filter verifies Ed25519 only.
    /// AWS KMS and Key Vault keys are ECDSA P-256 here, so with `provider = "aws"` or `"azure"`
    /// the config key is a local key file in `kms.key_dir` (checkpoints are still signed in the
    /// cloud KMS).
    pub fn signer_config(&self, kms: &KmsConfig) -> KmsConfig {
        let provider = match kms.provider {
            Provider::Aws | Provider::Azure => Provider::Local,
            other => other,
        };
        KmsConfig {
            provider,
            key_id: self.key_id.clone(),
            key_id_setting: KeyIdSetting::File,
            vault_key_type: Alg::Ed25519,
            aws_region: None,
            aws_endpoint: None,
            azure_credential: Default::default(),
            azure_authority_host: None,
            azure_ca_file: None,
            azure_verify_challenge_resource: true,
            azure_env: Default::default(),
            ..kms.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defaults validate; each bad value is refused naming its setting; the config signer is
    /// Ed25519 even when checkpoints use ECDSA.
    #[test]
    fn settings_are_validated() {
        let kms = KmsConfig::default();
        PolicyConfig::default().validate(&kms).unwrap();
        let cases = [
            (
                PolicyConfig {
                    key_id: kms.key_id.clone(),
                    ..PolicyConfig::default()
                },
                "policy.key_id",
            ),
            (
                PolicyConfig {
                    key_id: "../x".into(),
                    ..PolicyConfig::default()
                },
                "policy.key_id",
            ),
            (
                PolicyConfig {
                    watch_interval: Duration::from_millis(1),
                    ..PolicyConfig::default()
                },
                "policy.watch_interval",
            ),
            (
                PolicyConfig {
                    long_poll_max: Duration::from_secs(7200),
                    ..PolicyConfig::default()
                },
                "policy.long_poll_max",
            ),
            (
                PolicyConfig {
                    long_poll_timeout: Duration::from_secs(301),
                    ..PolicyConfig::default()
                },
                "policy.long_poll_timeout",
            ),
        ];
        for (cfg, setting) in cases {
            let err = cfg.validate(&kms).unwrap_err();
            assert!(err.to_string().contains(setting), "{err}");
        }
        let ecdsa = KmsConfig {
            vault_key_type: Alg::EcdsaP256,
            ..KmsConfig::default()
        };
        let signer = PolicyConfig::default().signer_config(&ecdsa);
        assert_eq!(signer.key_id, DEFAULT_KEY_ID);
        assert_eq!(signer.vault_key_type, Alg::Ed25519);
    }
}
