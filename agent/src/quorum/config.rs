//! The `[quorum]` table: this region, its peers, and the k-of-n threshold, with the legacy
//! `KGC_SIDECAR_*` overrides.
//!
//! ```toml
//! [quorum]
//! enabled = true                   # KGC_SIDECAR_CROSS_REGION_SYNC_ENABLED
//! region = "eu"                    # KGC_SIDECAR_REGION
//! primary_region = "eu"            # KGC_SIDECAR_PRIMARY_REGION (reported only)
//! threshold = 2                    # KGC_SIDECAR_QUORUM_THRESHOLD; own signature counts as 1
//! timeout = "2s"                   # per peer request
//! retry_interval = "1s"            # how often lagging peers are retried
//!
//! [[quorum.peers]]                 # URL overridable by KGC_SIDECAR_RECEIPT_SYNC_ENDPOINTS
//! region = "us"
//! url = "http://10.0.0.2:9901"
//! origin = "knhk.example/us"
//! witness = { name = "knhk/witness/us", public_key = "<base64 Ed25519>" }
//! log_keys = [{ provider = "local", key_id = "knhk-checkpoint", version = 1,
//!               alg = "ed25519", public_key = "<base64>", retired = false }]
//! ```

use std::time::Duration;

use knhk_core::checkpoint::{Checkpoint, PublicKeyVersion};
use knhk_core::cosignature::WitnessKey;
use knhk_core::merkle::EMPTY_ROOT;
use serde::Deserialize;

use super::QuorumError;
use crate::settings;

/// Default per-request timeout towards a peer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default retry interval for lagging peers.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Legacy threshold default.
pub const DEFAULT_THRESHOLD: usize = 1;
/// Most peers accepted.
pub const MAX_PEERS: usize = 32;

/// Another region's agent: where it listens, its log, and its witness key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Region name.
    pub region: String,
    /// Base URL of the peer's agent (witness routes live under `/v1/witness/`).
    pub url: String,
    /// Origin line of the peer's log, which this region witnesses.
    pub origin: String,
    /// Public key versions trusted for the peer's log checkpoints (from its
    /// `knhk-agent keys list`); later versions are followed through logged rotations.
    pub log_keys: Vec<PublicKeyVersion>,
    /// The peer's witness identity, whose cosignatures count towards this region's quorum.
    pub witness: WitnessKey,
}

/// The `[quorum]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuorumConfig {
    /// Replicate and witness across regions.
    pub enabled: bool,
    /// This region's name.
    pub region: String,
    /// The legacy primary region; reported in status, without special powers (every region
    /// is the single writer of its own log).
    pub primary_region: Option<String>,
    /// Signatures needed for a checkpoint to be committed, this region's own included.
    pub threshold: usize,
    /// This region's witness key name; default `knhk/witness/<region>`.
    pub witness_name: Option<String>,
    /// Per-request timeout towards a peer.
    #[serde(with = "crate::settings::duration")]
    pub timeout: Duration,
    /// How often lagging peers are retried when no new checkpoint wakes the replicator.
    #[serde(with = "crate::settings::duration")]
    pub retry_interval: Duration,
    /// The other regions.
    pub peers: Vec<PeerConfig>,
}

impl Default for QuorumConfig {
    fn default() -> Self {
        QuorumConfig {
            enabled: false,
            region: String::new(),
            primary_region: None,
            threshold: DEFAULT_THRESHOLD,
            witness_name: None,
            timeout: DEFAULT_TIMEOUT,
            retry_interval: DEFAULT_RETRY_INTERVAL,
            peers: Vec::new(),
        }
    }
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> QuorumError {
    QuorumError::InvalidConfig {
        setting,
        reason: reason.into(),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl QuorumConfig {
    /// Number of regions, this one included.
    pub fn regions(&self) -> usize {
        self.peers.len() + 1
    }

    /// The witness key name of this region.
    pub fn witness_name(&self) -> String {
        self.witness_name
            .clone()
            .unwrap_or_else(|| format!("knhk/witness/{}", self.region))
    }

    /// Apply the legacy `KGC_SIDECAR_*` variables.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), QuorumError> {
        const ENABLED: &str = "KGC_SIDECAR_CROSS_REGION_SYNC_ENABLED";
        const THRESHOLD: &str = "KGC_SIDECAR_QUORUM_THRESHOLD";
        const ENDPOINTS: &str = "KGC_SIDECAR_RECEIPT_SYNC_ENDPOINTS";
        if let Some(v) = env(ENABLED) {
            self.enabled =
                settings::env_bool(ENABLED, &v).map_err(|e| invalid(e.setting, e.reason))?;
        }
        if let Some(v) = env("KGC_SIDECAR_REGION") {
            self.region = v.trim().to_owned();
        }
        if let Some(v) = env("KGC_SIDECAR_PRIMARY_REGION") {
            self.primary_region = Some(v.trim().to_owned());
        }
        if let Some(v) = env(THRESHOLD) {
            self.threshold = v
                .trim()
                .parse()
                .map_err(|_| invalid(THRESHOLD, format!("{v:?} is not a whole number")))?;
        }
        if let Some(v) = env(ENDPOINTS) {
            for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (region, url) = item.split_once('=').ok_or_else(|| {
                    invalid(
                        ENDPOINTS,
                        format!("{item:?} must be region=url, so that the peer's keys in [[quorum.peers]] apply to it"),
                    )
                })?;
                let peer = self
                    .peers
                    .iter_mut()
                    .find(|p| p.region == region.trim())
                    .ok_or_else(|| {
                        invalid(
                            ENDPOINTS,
                            format!("region {region:?} has no [[quorum.peers]] entry with its log and witness keys"),
                        )
                    })?;
                peer.url = url.trim().to_owned();
            }
        }
        Ok(())
    }

    /// Check every value; `origin` is this agent's own log origin.
    pub fn validate(&self, origin: &str) -> Result<(), QuorumError> {
        if !self.enabled {
            return Ok(());
        }
        if !valid_name(&self.region) {
            return Err(invalid(
                "quorum.region",
                format!(
                    "{:?} must be 1-64 of [A-Za-z0-9._-] (KGC_SIDECAR_REGION)",
                    self.region
                ),
            ));
        }
        let n = self.regions();
        if self.threshold == 0 {
            return Err(invalid(
                "quorum.threshold",
                "0 would commit checkpoints nobody signed; use 1 to n (KGC_SIDECAR_QUORUM_THRESHOLD)",
            ));
        }
        if self.threshold > n {
            return Err(invalid(
                "quorum.threshold",
                format!(
                    "{} is larger than the {n} configured region(s) (this one and {} peer(s)); no checkpoint could ever commit (KGC_SIDECAR_QUORUM_THRESHOLD)",
                    self.threshold,
                    self.peers.len()
                ),
            ));
        }
        if self.peers.len() > MAX_PEERS {
            return Err(invalid(
                "quorum.peers",
                format!("at most {MAX_PEERS} peers"),
            ));
        }
        let second = Duration::from_secs(1);
        if self.timeout < second || self.retry_interval < second {
            return Err(invalid(
                "quorum.timeout",
                "timeout and retry_interval must be at least 1s",
            ));
        }
        Checkpoint::new(&self.witness_name(), 0, EMPTY_ROOT)
            .map_err(|_| invalid("quorum.witness_name", "must hold no whitespace or '+'"))?;
        let mut seen = vec![self.region.as_str()];
        let mut origins = vec![origin];
        let own_witness = self.witness_name();
        let mut witnesses: Vec<&WitnessKey> = Vec::new();
        for p in &self.peers {
            if !valid_name(&p.region) || seen.contains(&p.region.as_str()) {
                return Err(invalid(
                    "quorum.peers.region",
                    format!("{:?} is invalid or repeated", p.region),
                ));
            }
            seen.push(&p.region);
            if Checkpoint::new(&p.origin, 0, EMPTY_ROOT).is_err()
                || origins.contains(&p.origin.as_str())
            {
                return Err(invalid(
                    "quorum.peers.origin",
                    format!(
                        "{:?} (region {}) is invalid or not distinct",
                        p.origin, p.region
                    ),
                ));
            }
            origins.push(&p.origin);
            let url = url::Url::parse(&p.url).map_err(|e| {
                invalid(
                    "quorum.peers.url",
                    format!("{:?} (region {}): {e}", p.url, p.region),
                )
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid(
                    "quorum.peers.url",
                    format!("{:?} (region {}) must be http or https", p.url, p.region),
                ));
            }
            if p.log_keys.is_empty() {
                return Err(invalid(
                    "quorum.peers.log_keys",
                    format!("region {} needs at least one trusted log key", p.region),
                ));
            }
            if p.witness.name == own_witness
                || witnesses
                    .iter()
                    .any(|w| w.name == p.witness.name || w.public_key == p.witness.public_key)
            {
                return Err(invalid(
                    "quorum.peers.witness",
                    format!(
                        "region {}: witness names and keys must be distinct, or one witness would count twice",
                        p.region
                    ),
                ));
            }
            witnesses.push(&p.witness);
            if p.witness.public_key.len() != 32 {
                return Err(invalid(
                    "quorum.peers.witness",
                    format!(
                        "region {}: the witness key must be 32 bytes of Ed25519",
                        p.region
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(region: &str) -> PeerConfig {
        PeerConfig {
            region: region.into(),
            url: format!("http://127.0.0.1:1/{region}"),
            origin: format!("knhk.test/{region}"),
            log_keys: vec![PublicKeyVersion {
                provider: "local".into(),
                key_id: "k".into(),
                version: 1,
                alg: knhk_core::checkpoint::Alg::Ed25519,
                public_key: vec![1; 32],
                retired: false,
            }],
            witness: WitnessKey {
                name: format!("knhk/witness/{region}"),
                public_key: vec![region.as_bytes()[0]; 32],
            },
        }
    }

    fn three() -> QuorumConfig {
        QuorumConfig {
            enabled: true,
            region: "eu".into(),
            threshold: 2,
            peers: vec![peer("us"), peer("ap")],
            ..QuorumConfig::default()
        }
    }

    /// Thresholds of 0 or above the region count are refused with a message naming the
    /// setting and the legacy variable; 1..=n pass.
    #[test]
    fn threshold_must_be_between_one_and_the_region_count() {
        for k in 1..=3 {
            let cfg = QuorumConfig {
                threshold: k,
                ..three()
            };
            cfg.validate("knhk.test/eu").unwrap();
        }
        for k in [0, 4] {
            let cfg = QuorumConfig {
                threshold: k,
                ..three()
            };
            let err = cfg.validate("knhk.test/eu").unwrap_err().to_string();
            assert!(err.contains("quorum.threshold"), "{err}");
            assert!(err.contains("KGC_SIDECAR_QUORUM_THRESHOLD"), "{err}");
        }
    }

    /// Legacy variables override the file; endpoints must name a configured region.
    #[test]
    fn legacy_environment_applies() {
        let mut cfg = three();
        cfg.enabled = false;
        cfg.apply_env(|k| {
            Some(
                match k {
                    "KGC_SIDECAR_CROSS_REGION_SYNC_ENABLED" => "true",
                    "KGC_SIDECAR_REGION" => "eu",
                    "KGC_SIDECAR_PRIMARY_REGION" => "us",
                    "KGC_SIDECAR_QUORUM_THRESHOLD" => "3",
                    "KGC_SIDECAR_RECEIPT_SYNC_ENDPOINTS" => {
                        "us=http://10.0.0.2:9901, ap=http://10.0.0.3:9901"
                    }
                    _ => return None,
                }
                .to_owned(),
            )
        })
        .unwrap();
        assert!(cfg.enabled);
        assert_eq!(cfg.threshold, 3);
        assert_eq!(cfg.primary_region.as_deref(), Some("us"));
        assert_eq!(cfg.peers[0].url, "http://10.0.0.2:9901");
        cfg.validate("knhk.test/eu").unwrap();
        let err = three()
            .apply_env(|k| (k == "KGC_SIDECAR_RECEIPT_SYNC_ENDPOINTS").then(|| "http://x".into()))
            .unwrap_err();
        assert!(err.to_string().contains("region=url"), "{err}");
        let err = three()
            .apply_env(|k| {
                (k == "KGC_SIDECAR_RECEIPT_SYNC_ENDPOINTS").then(|| "sa=http://x".into())
            })
            .unwrap_err();
        assert!(err.to_string().contains("\"sa\""), "{err}");
    }

    /// KGC_SIDECAR_CROSS_REGION_SYNC_ENABLED takes the one boolean grammar of `settings`
    /// (any case) and a bad value is refused naming the variable.
    #[test]
    fn legacy_enabled_takes_the_shared_boolean_grammar() {
        const VAR: &str = "KGC_SIDECAR_CROSS_REGION_SYNC_ENABLED";
        for (raw, want) in [("ON", true), ("no", false), (" 1 ", true), ("False", false)] {
            let mut cfg = QuorumConfig::default();
            cfg.apply_env(|k| (k == VAR).then(|| raw.to_owned()))
                .unwrap();
            assert_eq!(cfg.enabled, want, "{raw:?}");
        }
        let err = QuorumConfig::default()
            .apply_env(|k| (k == VAR).then(|| "maybe".to_owned()))
            .unwrap_err()
            .to_string();
        assert!(err.contains(VAR) && err.contains("\"maybe\""), "{err}");
    }

    /// The documented TOML shape parses into the agent config and validates.
    #[test]
    fn documented_toml_parses() {
        let key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
        let text = format!(
            "origin = \"knhk.example/eu\"\n[quorum]\nenabled = true\nregion = \"eu\"\nthreshold = 2\ntimeout = \"2s\"\n\
             [[quorum.peers]]\nregion = \"us\"\nurl = \"http://10.0.0.2:9901\"\norigin = \"knhk.example/us\"\n\
             witness = {{ name = \"knhk/witness/us\", public_key = \"{key}\" }}\n\
             log_keys = [{{ provider = \"local\", key_id = \"checkpoints\", version = 1, alg = \"ed25519\", public_key = \"{key}\", retired = false }}]\n\
             [retention]\nmax_age = \"720h\"\n"
        );
        let cfg =
            crate::config::AgentConfig::from_toml(&text, std::path::Path::new("a.toml")).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.quorum.peers[0].witness.public_key, vec![1; 32]);
        assert_eq!(cfg.quorum.witness_name(), "knhk/witness/eu");
        assert_eq!(cfg.retention.max_age, Some(Duration::from_secs(720 * 3600)));
    }

    /// Repeated regions, shared origins, bad URLs and a witness key used twice are refused.
    #[test]
    fn peers_are_validated() {
        let mut cfg = three();
        cfg.peers[1].region = "us".into();
        assert!(cfg.validate("knhk.test/eu").is_err());
        let mut cfg = three();
        cfg.peers[1].origin = "knhk.test/eu".into();
        assert!(cfg.validate("knhk.test/eu").is_err());
        let mut cfg = three();
        cfg.peers[0].url = "ftp://x".into();
        assert!(cfg.validate("knhk.test/eu").is_err());
        let mut cfg = three();
        cfg.peers[1].witness.public_key = cfg.peers[0].witness.public_key.clone();
        assert!(
            cfg.validate("knhk.test/eu").is_err(),
            "same witness key twice"
        );
    }
}
