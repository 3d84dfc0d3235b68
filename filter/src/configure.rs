//! The plugin configuration, independent of the host: validate it, keep the last good one in
//! the shared store, and decide what stays in force when a new one is refused.

use knhk_core::config::FailMode;
use knhk_core::host::SharedStore;
use knhk_core::policy::fail_mode_hint;
use knhk_core::Policy;

/// Shared-store key holding the digest of the newest plugin configuration. While Envoy drains
/// a replaced listener, the old configuration's workers keep ticking; only those whose digest
/// is current write gauges, so `knhk.config.version` does not flip between old and new values.
pub const CURRENT_CONFIG_KEY: &str = "knhk.config.current";

/// Shared-store key of a plugin's last configuration that validated, kept across
/// reconfigurations: what stays in force when a new one is refused.
pub fn last_good_key(plugin_name: &str) -> String {
    format!("knhk.config.last_good.{plugin_name}")
}

/// What a configuration led to.
#[derive(Debug)]
pub struct Configured {
    /// The policy in force: the new one, or the last good one when the new one was refused.
    pub policy: Option<Policy>,
    /// Digest of the configuration in force (see [`CURRENT_CONFIG_KEY`]).
    pub digest: [u8; 8],
    /// The new configuration was refused (count it).
    pub rejected: bool,
    /// What requests get while no policy is in force.
    pub fail_mode_without_policy: FailMode,
}

/// Validate `bytes`. A refused configuration is logged in one line naming the field; it is not
/// refused to the host (Envoy would then reject the whole extension config and, in Istio, fail
/// every request on the listener): the last good configuration stays in force, and without one
/// requests get the refused configuration's fail mode.
pub fn configure(bytes: &[u8], store: &dyn SharedStore, plugin_name: &str) -> Configured {
    let key = last_good_key(plugin_name);
    let (bytes, policy, rejected) = match Policy::from_json(bytes) {
        Ok(policy) => {
            if store.set(&key, bytes, None).is_err() {
                log::warn!("knhk: cannot keep this configuration as the last good one");
            }
            (bytes.to_vec(), policy, false)
        }
        Err(e) => {
            log::error!("{e}");
            let kept = match store.get(&key) {
                Ok((Some(good), _)) => Policy::from_json(&good).ok().map(|p| (good, p)),
                _ => None,
            };
            match kept {
                Some((good, policy)) => {
                    log::warn!(
                        "knhk: the refused configuration is not applied; config version {} stays in force",
                        policy.version
                    );
                    (good, policy, true)
                }
                None => {
                    let mode = fail_mode_hint(bytes);
                    log::warn!(
                        "knhk: no valid configuration yet: requests pass {} until one is applied",
                        match mode {
                            FailMode::Open => "untouched (fail open)",
                            FailMode::Closed => "refused with 503 (fail closed)",
                        }
                    );
                    return Configured {
                        policy: None,
                        digest: digest(bytes),
                        rejected: true,
                        fail_mode_without_policy: mode,
                    };
                }
            }
        }
    };
    log::info!(
        "knhk: config version {} in force: {}",
        policy.version,
        policy.summary()
    );
    let digest = digest(&bytes);
    if store.set(CURRENT_CONFIG_KEY, &digest, None).is_err() {
        log::warn!("knhk: cannot publish the config digest; gauges may lag during drains");
    }
    Configured {
        policy: Some(policy),
        digest,
        rejected,
        fail_mode_without_policy: FailMode::Open,
    }
}

/// Whether the configuration with `digest` is the newest one (true when the store cannot say).
pub fn is_current(store: &dyn SharedStore, digest: &[u8; 8]) -> bool {
    match store.get(CURRENT_CONFIG_KEY) {
        Ok((Some(current), _)) => current == digest,
        _ => true,
    }
}

/// First 8 bytes of SHA-256 of a configuration.
fn digest(bytes: &[u8]) -> [u8; 8] {
    use sha2::{Digest, Sha256};
    let mut out = [0u8; 8];
    out.copy_from_slice(&Sha256::digest(bytes)[..8]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use knhk_core::host::MemoryShared;

    /// A valid config is in force and current; a refused one keeps the last good one (and
    /// says so); with none, the refused one's fail mode applies.
    #[test]
    fn refused_configs_keep_the_last_good_one() {
        let store = MemoryShared::default();
        let none = configure(br#"{"fail_mode":"closed","routing":7}"#, &store, "p");
        assert!(none.rejected && none.policy.is_none());
        assert_eq!(none.fail_mode_without_policy, FailMode::Closed);
        let good = configure(br#"{"version":5}"#, &store, "p");
        assert!(!good.rejected);
        assert_eq!(good.policy.as_ref().map(|p| p.version), Some(5));
        assert!(is_current(&store, &good.digest));
        let bad = configure(br#"{"version":"six"}"#, &store, "p");
        assert!(bad.rejected);
        assert_eq!(
            bad.policy.map(|p| p.version),
            Some(5),
            "the last good one stays"
        );
        assert_eq!(bad.digest, good.digest);
        let other = configure(br#"{"version":"six"}"#, &store, "other");
        assert!(other.policy.is_none(), "last good configs are per plugin");
        let newer = configure(br#"{"version":6}"#, &store, "p");
        assert!(!is_current(&store, &good.digest));
        assert!(is_current(&store, &newer.digest));
    }
}
