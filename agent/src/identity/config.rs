//! Identity configuration: the `[identity]` table of the agent config, the SPIFFE and legacy
//! environment overrides, and validation before anything binds.
//!
//! ```toml
//! [identity]
//! enabled = true
//! socket = "unix:///run/spire/sockets/agent.sock"  # SPIFFE Workload API endpoint
//! trust_domain = "eu.knhk.test"                     # our own SVID must be of this domain
//! id = "spiffe://eu.knhk.test/region/eu"            # optional: pick / require this SVID
//! refresh_interval = "1h"                           # 1s..1h; also on every source update
//! connect_timeout = "10s"                           # 1s..5m; Workload API wait before file fallback
//! allow = ["spiffe://eu.knhk.test/region/*"]        # peers we accept (see `allow`)
//!
//! [identity.files]                                  # fallback when SPIRE is unavailable
//! cert_chain = "/etc/knhk/svid.pem"
//! key = "/etc/knhk/svid-key.pem"
//! bundle = "/etc/knhk/bundle.pem"
//! ```
//!
//! Precedence, lowest first: defaults, the file, the environment:
//!
//! | variable | setting |
//! |---|---|
//! | `KGC_SIDECAR_SPIFFE_ENABLED` | `enabled` (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`, any case: [`crate::settings`]) |
//! | `KGC_SIDECAR_SPIFFE_SOCKET` | `socket` (wins over `SPIFFE_ENDPOINT_SOCKET`) |
//! | `SPIFFE_ENDPOINT_SOCKET` | `socket` when neither the file nor `KGC_SIDECAR_SPIFFE_SOCKET` sets it |
//! | `KGC_SIDECAR_SPIFFE_TRUST_DOMAIN` | `trust_domain` |
//! | `KGC_SIDECAR_SPIFFE_ID` | `id` |

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use spiffe::{SpiffeId, TrustDomain};

use super::allow::AllowEntry;
use super::IdentityError;
use crate::settings;

/// Shortest refresh interval and connect timeout accepted.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest refresh interval accepted (the older sidecar's rule: at most every hour).
pub const MAX_REFRESH_INTERVAL: Duration = Duration::from_secs(3600);
/// Default refresh interval.
pub const DEFAULT_REFRESH_INTERVAL: Duration = MAX_REFRESH_INTERVAL;
/// Default wait for the Workload API's first answer.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest connect timeout accepted.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(300);

/// Certificate files used when the Workload API is not configured or not reachable.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFallback {
    /// PEM certificate chain, leaf (the X.509-SVID) first.
    pub cert_chain: PathBuf,
    /// PEM PKCS#8 (or SEC1 / PKCS#1) private key of the leaf.
    pub key: PathBuf,
    /// PEM trust bundle: the CA certificates of `trust_domain`.
    pub bundle: PathBuf,
}

/// The `[identity]` configuration table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Whether the agent has a SPIFFE identity (and so serves the peer listener).
    pub enabled: bool,
    /// Workload API endpoint: a `unix:` URI, an absolute socket path, or `tcp://ip:port`.
    pub socket: Option<String>,
    /// Trust domain of our own SVID (and of peers when `allow` is empty).
    pub trust_domain: Option<String>,
    /// Our expected SPIFFE ID; when set, this SVID is picked and any other is refused.
    pub id: Option<String>,
    /// Longest time between two refreshes of the SVID and bundle; at most 1 h.
    #[serde(with = "crate::settings::duration")]
    pub refresh_interval: Duration,
    /// How long `Identity::open` waits for the Workload API before the file fallback (or
    /// failing, without one).
    #[serde(with = "crate::settings::duration")]
    pub connect_timeout: Duration,
    /// Peers allowed to connect (and to be connected to): `spiffe://<trust domain>/<pattern>`.
    pub allow: Vec<String>,
    /// File-based fallback.
    pub files: Option<FileFallback>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            enabled: false,
            socket: None,
            trust_domain: None,
            id: None,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            allow: Vec::new(),
            files: None,
        }
    }
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> IdentityError {
    IdentityError::InvalidConfig {
        setting,
        reason: reason.into(),
    }
}

/// Normalise a Workload API address to the endpoint URI the `spiffe` crate takes.
pub fn normalize_socket(setting: &'static str, raw: &str) -> Result<String, IdentityError> {
    let raw = raw.trim();
    let path = if let Some(rest) = raw.strip_prefix("unix://") {
        rest
    } else if let Some(rest) = raw.strip_prefix("unix:") {
        rest
    } else if let Some(rest) = raw.strip_prefix("tcp://") {
        let addr: std::net::SocketAddr = rest.parse().map_err(|_| {
            invalid(
                setting,
                format!("{raw:?}: a tcp:// endpoint needs an IP address and port"),
            )
        })?;
        return Ok(format!("tcp://{addr}"));
    } else {
        raw
    };
    if !path.starts_with('/') || path.len() < 2 || path.contains('\0') {
        return Err(invalid(
            setting,
            format!("{raw:?} must be an absolute socket path, unix:///path or tcp://ip:port"),
        ));
    }
    Ok(format!("unix://{path}"))
}

impl IdentityConfig {
    /// Apply environment overrides, reading variables through `env` (tests pass a map).
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), IdentityError> {
        if let Some(v) = env("KGC_SIDECAR_SPIFFE_ENABLED") {
            self.enabled = settings::env_bool("KGC_SIDECAR_SPIFFE_ENABLED", &v)
                .map_err(|e| invalid(e.setting, e.reason))?;
        }
        if let Some(v) = env("KGC_SIDECAR_SPIFFE_SOCKET") {
            self.socket = Some(normalize_socket("KGC_SIDECAR_SPIFFE_SOCKET", &v)?);
        } else if self.socket.is_none() {
            if let Some(v) = env("SPIFFE_ENDPOINT_SOCKET") {
                self.socket = Some(normalize_socket("SPIFFE_ENDPOINT_SOCKET", &v)?);
            }
        }
        if let Some(v) = env("KGC_SIDECAR_SPIFFE_TRUST_DOMAIN") {
            let td = TrustDomain::new(v.trim()).map_err(|e| {
                invalid(
                    "KGC_SIDECAR_SPIFFE_TRUST_DOMAIN",
                    format!("{v:?} is not a trust domain: {e}"),
                )
            })?;
            self.trust_domain = Some(td.to_string());
        }
        if let Some(v) = env("KGC_SIDECAR_SPIFFE_ID") {
            let id = SpiffeId::new(v.trim()).map_err(|e| {
                invalid(
                    "KGC_SIDECAR_SPIFFE_ID",
                    format!("{v:?} is not a SPIFFE ID: {e}"),
                )
            })?;
            self.id = Some(id.to_string());
        }
        Ok(())
    }

    /// Check every value; called before anything is bound. Disabled identity checks nothing.
    pub fn validate(&self) -> Result<(), IdentityError> {
        if !self.enabled {
            return Ok(());
        }
        self.settings().map(|_| ())
    }

    /// The validated settings (`enabled` is not looked at).
    pub fn settings(&self) -> Result<Settings, IdentityError> {
        let td_text = self.trust_domain.as_deref().ok_or_else(|| {
            invalid(
                "identity.trust_domain",
                "required when identity is enabled (or KGC_SIDECAR_SPIFFE_TRUST_DOMAIN)",
            )
        })?;
        let trust_domain = TrustDomain::new(td_text).map_err(|e| {
            invalid(
                "identity.trust_domain",
                format!("{td_text:?} is not a trust domain: {e}"),
            )
        })?;
        let id = match &self.id {
            None => None,
            Some(text) => {
                let id = SpiffeId::new(text).map_err(|e| {
                    invalid("identity.id", format!("{text:?} is not a SPIFFE ID: {e}"))
                })?;
                if !id.is_member_of(&trust_domain) {
                    return Err(invalid(
                        "identity.id",
                        format!("{id} is not in the trust domain {trust_domain}"),
                    ));
                }
                Some(id)
            }
        };
        let socket = match &self.socket {
            None => None,
            Some(s) => Some(normalize_socket("identity.socket", s)?),
        };
        if socket.is_none() && self.files.is_none() {
            return Err(invalid(
                "identity.socket",
                "identity needs a Workload API socket (SPIFFE_ENDPOINT_SOCKET) or [identity.files]",
            ));
        }
        if self.refresh_interval < MIN_INTERVAL || self.refresh_interval > MAX_REFRESH_INTERVAL {
            return Err(invalid(
                "identity.refresh_interval",
                "must be between 1s and 1h",
            ));
        }
        if self.connect_timeout < MIN_INTERVAL || self.connect_timeout > MAX_CONNECT_TIMEOUT {
            return Err(invalid(
                "identity.connect_timeout",
                "must be between 1s and 5m",
            ));
        }
        let mut allow = Vec::with_capacity(self.allow.len());
        for entry in &self.allow {
            allow.push(
                AllowEntry::parse(entry)
                    .map_err(|reason| invalid("identity.allow", format!("{entry:?}: {reason}")))?,
            );
        }
        if allow.is_empty() {
            allow.push(AllowEntry::whole_domain(trust_domain.clone()));
        }
        Ok(Settings {
            socket,
            trust_domain,
            id,
            refresh_interval: self.refresh_interval,
            connect_timeout: self.connect_timeout,
            allow,
            files: self.files.clone(),
        })
    }
}

/// Validated identity settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Normalised Workload API endpoint.
    pub socket: Option<String>,
    /// Our trust domain.
    pub trust_domain: TrustDomain,
    /// Our expected SPIFFE ID.
    pub id: Option<SpiffeId>,
    /// Refresh cadence.
    pub refresh_interval: Duration,
    /// Workload API wait at open.
    pub connect_timeout: Duration,
    /// Peer allow-list; when the file gives none, every ID of `trust_domain`.
    pub allow: Vec<AllowEntry>,
    /// File fallback.
    pub files: Option<FileFallback>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn setting_of(err: IdentityError) -> &'static str {
        match err {
            IdentityError::InvalidConfig { setting, .. } => setting,
            other => panic!("unexpected error {other}"),
        }
    }

    /// The TOML form parses (files, allow-list, durations) and unknown fields are refused.
    #[test]
    fn toml_form() {
        let c: IdentityConfig = toml::from_str(
            "enabled = true\nsocket = \"/run/spire/agent.sock\"\ntrust_domain = \"eu.knhk.test\"\nrefresh_interval = \"10m\"\nallow = [\"spiffe://eu.knhk.test/region/*\"]\n[files]\ncert_chain = \"/a\"\nkey = \"/b\"\nbundle = \"/c\"\n",
        )
        .unwrap();
        let s = c.settings().unwrap();
        assert_eq!(s.socket.as_deref(), Some("unix:///run/spire/agent.sock"));
        assert_eq!(s.refresh_interval, Duration::from_secs(600));
        assert_eq!(s.allow.len(), 1);
        assert!(toml::from_str::<IdentityConfig>("colour = 1\n").is_err());
        assert!(toml::from_str::<IdentityConfig>("[files]\ncert_chain = \"/a\"\n").is_err());
    }

    /// Bad values are refused naming the setting; a disabled identity is not checked.
    #[test]
    fn validation_names_the_setting() {
        IdentityConfig::default().validate().unwrap();
        let base = IdentityConfig {
            enabled: true,
            socket: Some("/s".into()),
            trust_domain: Some("eu.knhk.test".into()),
            ..IdentityConfig::default()
        };
        base.validate().unwrap();
        let cases = [
            (
                IdentityConfig {
                    trust_domain: None,
                    ..base.clone()
                },
                "identity.trust_domain",
            ),
            (
                IdentityConfig {
                    trust_domain: Some("Not A Domain".into()),
                    ..base.clone()
                },
                "identity.trust_domain",
            ),
            (
                IdentityConfig {
                    id: Some("spiffe://other.test/x".into()),
                    ..base.clone()
                },
                "identity.id",
            ),
            (
                IdentityConfig {
                    id: Some("https://x".into()),
                    ..base.clone()
                },
                "identity.id",
            ),
            (
                IdentityConfig {
                    socket: Some("relative.sock".into()),
                    ..base.clone()
                },
                "identity.socket",
            ),
            (
                IdentityConfig {
                    socket: None,
                    ..base.clone()
                },
                "identity.socket",
            ),
            (
                IdentityConfig {
                    refresh_interval: Duration::from_secs(7200),
                    ..base.clone()
                },
                "identity.refresh_interval",
            ),
            (
                IdentityConfig {
                    connect_timeout: Duration::ZERO,
                    ..base.clone()
                },
                "identity.connect_timeout",
            ),
            (
                IdentityConfig {
                    allow: vec!["spiffe://eu.knhk.test/a*b".into()],
                    ..base.clone()
                },
                "identity.allow",
            ),
        ];
        for (cfg, setting) in cases {
            assert_eq!(setting_of(cfg.validate().unwrap_err()), setting, "{cfg:?}");
        }
    }

    /// The SPIFFE and legacy variables apply, the legacy socket wins, and a bad one is named.
    #[test]
    fn environment_overrides() {
        let mut c = IdentityConfig::default();
        c.apply_env(env_of(&[
            ("KGC_SIDECAR_SPIFFE_ENABLED", "yes"),
            ("KGC_SIDECAR_SPIFFE_SOCKET", "unix:/run/legacy.sock"),
            ("SPIFFE_ENDPOINT_SOCKET", "unix:///run/spiffe.sock"),
            ("KGC_SIDECAR_SPIFFE_TRUST_DOMAIN", "eu.knhk.test"),
            ("KGC_SIDECAR_SPIFFE_ID", "spiffe://eu.knhk.test/region/eu"),
        ]))
        .unwrap();
        assert!(c.enabled);
        assert_eq!(c.socket.as_deref(), Some("unix:///run/legacy.sock"));
        c.validate().unwrap();
        let mut c = IdentityConfig::default();
        c.apply_env(env_of(&[(
            "SPIFFE_ENDPOINT_SOCKET",
            "unix:///run/spiffe.sock",
        )]))
        .unwrap();
        assert_eq!(c.socket.as_deref(), Some("unix:///run/spiffe.sock"));
        for (var, bad) in [
            ("KGC_SIDECAR_SPIFFE_ENABLED", "maybe"),
            ("KGC_SIDECAR_SPIFFE_SOCKET", "sock"),
            ("SPIFFE_ENDPOINT_SOCKET", "tcp://nohost"),
            ("KGC_SIDECAR_SPIFFE_TRUST_DOMAIN", "UPPER CASE"),
            ("KGC_SIDECAR_SPIFFE_ID", "spiffe://"),
        ] {
            let mut c = IdentityConfig::default();
            let err = c.apply_env(env_of(&[(var, bad)])).unwrap_err();
            assert!(err.to_string().contains(var), "{var}={bad:?}: {err}");
        }
    }
}
