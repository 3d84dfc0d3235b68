//! [`PolicyService`]: the current policy, its signed epochs, the watch channel that wakes
//! long-polls, config-key rotation with handover, and the policy file watcher.
//!
//! Every change goes through one lock: validate (with `knhk_core`, the filter's own code),
//! compare with the policy in force (an identical policy publishes nothing), sign once with the
//! config key (twice for a handover), check the envelope exactly as a filter would
//! (`envelope::open`), commit it to [`PolicyStore`], and only then publish it on the watch
//! channel. A failure at any step leaves the epoch in force unchanged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use knhk_core::checkpoint::PublicKeyVersion;
use knhk_core::envelope::{self, ConfigPayload, Envelope, EnvelopeError, PAYLOAD_TYPE};
use knhk_core::limits::MAX_CONFIG_BYTES;
use knhk_core::{ConfigError, Policy};
use tokio::sync::watch;

mod file;

pub use super::epoch::{Epoch, Rotation, Snapshot, Source};
pub use file::FileCheck;
use file::FileState;

use super::store::PolicyStore;
use super::{PolicyConfig, PolicyError};
use crate::clock::now_ns;
use crate::kms::{build_signer, KmsConfig, KmsError, Signer};

/// Name of the epoch database in the data directory.
pub const DATABASE_FILE: &str = "policy.db";

/// Validate a policy document with the filter's own rules; return it as JSON.
///
/// Refused: more than 64 KiB, not JSON, not an object, a `control` section (static plugin
/// configuration only), or anything `knhk_core::Policy` refuses (the error names the field).
pub fn validate_policy(bytes: &[u8]) -> Result<serde_json::Value, PolicyError> {
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(PolicyError::TooLarge(bytes.len()));
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| PolicyError::Malformed(e.to_string()))?;
    let Some(object) = value.as_object() else {
        return Err(ConfigError::new("<document>", "must be a JSON object").into());
    };
    if object.get("control").is_some_and(|c| !c.is_null()) {
        return Err(ConfigError::new(
            "control",
            "is static plugin configuration and cannot be pushed",
        )
        .into());
    }
    Policy::from_json(bytes)?;
    Ok(value)
}

/// Validate an already-parsed policy value with the filter's rules.
fn check_value(policy: &serde_json::Value) -> Result<(), PolicyError> {
    let bytes = serde_json::to_vec(policy).map_err(|e| PolicyError::Malformed(e.to_string()))?;
    validate_policy(&bytes).map(|_| ())
}

fn newest(keys: &[PublicKeyVersion], key_id: &str) -> Result<PublicKeyVersion, PolicyError> {
    keys.iter()
        .filter(|k| !k.retired)
        .max_by_key(|k| k.version)
        .cloned()
        .ok_or_else(|| {
            KmsError::UnknownVersion {
                key_id: key_id.to_owned(),
                version: 0,
            }
            .into()
        })
}

fn same_key(a: &PublicKeyVersion, b: &PublicKeyVersion) -> bool {
    a.provider == b.provider && a.key_id == b.key_id && a.version == b.version
}

async fn closed(mut closing: watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await;
}

/// Fields a running rollout owns in every published policy (weights, route values, staging
/// audience, rollout flags). Applied to whatever policy is published while it is set, so an
/// operator's `PUT /v1/policy` during a rollout cannot silently undo a rollback.
pub type Overlay = Arc<dyn Fn(&mut serde_json::Value) + Send + Sync>;

/// The config push state of one agent.
pub struct PolicyService {
    signer: Arc<dyn Signer>,
    store: Arc<Mutex<PolicyStore>>,
    publish: tokio::sync::Mutex<()>,
    state: watch::Sender<Snapshot>,
    closing: watch::Sender<bool>,
    file: Option<PathBuf>,
    file_state: Mutex<FileState>,
    config: PolicyConfig,
    overlay: Mutex<Option<Overlay>>,
    polls: crate::api::slots::ClientSlots,
}

impl std::fmt::Debug for PolicyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyService")
            .field("epoch", &self.state.borrow().epoch())
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// The parts of the agent's configuration the config push service is opened from.
#[derive(Debug, Clone, Copy)]
pub struct PolicySetup<'a> {
    /// `[policy]`: the config key and push settings.
    pub policy: &'a PolicyConfig,
    /// `[kms]`: the provider the config key lives in.
    pub kms: &'a KmsConfig,
    /// Where `policy.db` lives.
    pub data_dir: &'a Path,
    /// The watched policy file, if any.
    pub policy_file: Option<&'a Path>,
}

impl PolicySetup<'_> {
    fn database(&self) -> PathBuf {
        self.data_dir.join(DATABASE_FILE)
    }
}

impl PolicyService {
    /// Open the service `setup` describes: build the config signer, load the stored epochs,
    /// and apply the policy file once (an invalid file is logged and skipped).
    pub async fn open(setup: PolicySetup<'_>) -> Result<Arc<Self>, PolicyError> {
        setup.policy.validate(setup.kms)?;
        let signer: Arc<dyn Signer> =
            Arc::from(build_signer(&setup.policy.signer_config(setup.kms)).await?);
        Self::with_signer(
            signer,
            &setup.database(),
            setup.policy_file.map(Path::to_path_buf),
            setup.policy.clone(),
        )
        .await
    }

    /// Open with a given signer and database path (tests, tools).
    pub async fn with_signer(
        signer: Arc<dyn Signer>,
        database: &Path,
        file: Option<PathBuf>,
        config: PolicyConfig,
    ) -> Result<Arc<Self>, PolicyError> {
        let db = database.to_path_buf();
        let (store, latest, handover, applied) = tokio::task::spawn_blocking(move || {
            let store = PolicyStore::open(&db)?;
            let latest = store.latest()?;
            let handover = store.latest_handover()?;
            let applied = store.file_hash()?;
            Ok::<_, PolicyError>((store, latest, handover, applied))
        })
        .await
        .map_err(|_| PolicyError::Internal("policy store task failed"))??;
        for e in latest.iter().chain(handover.iter()) {
            check_stored(e)?;
        }
        if let Some(e) = &latest {
            tracing::info!(
                epoch = e.epoch,
                key_version = e.signed_by.version,
                "loaded config epoch"
            );
        }
        let svc = Arc::new(PolicyService {
            signer,
            store: Arc::new(Mutex::new(store)),
            publish: tokio::sync::Mutex::new(()),
            state: watch::Sender::new(Snapshot {
                latest: latest.map(Arc::new),
                handover: handover.map(Arc::new),
            }),
            closing: watch::Sender::new(false),
            file,
            file_state: Mutex::new(FileState {
                applied,
                ..FileState::default()
            }),
            polls: crate::api::slots::ClientSlots::new(
                config.max_long_polls,
                config.max_long_polls_per_client,
            ),
            config,
            overlay: Mutex::new(None),
        });
        svc.check_file().await;
        Ok(svc)
    }

    /// The settings.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.state.borrow().clone()
    }

    /// The long-poll slots (`policy.max_long_polls`, `max_long_polls_per_client`).
    pub fn poll_slots(&self) -> &crate::api::slots::ClientSlots {
        &self.polls
    }

    /// Long-polls held right now.
    pub fn waiting(&self) -> usize {
        self.state.receiver_count()
    }

    /// The watched policy file, if any.
    pub fn policy_file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Why the policy file was last refused (cleared once a version is accepted).
    pub fn file_error(&self) -> Option<String> {
        self.file_state.lock().ok().and_then(|s| s.error.clone())
    }

    /// End every held long-poll and stop the file watcher (at shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// What a filter holding `after` gets, waiting up to `timeout` for a newer epoch. `None`
    /// when the timeout passes or the agent shuts down first.
    pub async fn wait_newer(&self, after: u64, timeout: Duration) -> Option<Arc<Epoch>> {
        let mut rx = self.state.subscribe();
        let closing = self.closing.subscribe();
        if *closing.borrow() {
            return self.snapshot().next_for(after);
        }
        let newer = async {
            rx.wait_for(|s| s.next_for(after).is_some())
                .await
                .ok()
                .and_then(|s| s.next_for(after))
        };
        tokio::select! {
            found = tokio::time::timeout(timeout, newer) => found.ok().flatten(),
            () = closed(closing) => None,
        }
    }

    /// The key set a filter's static `control.trusted_keys` should hold: the version that
    /// signed the epoch in force (the newest version when nothing is published yet).
    pub async fn trusted_keys(&self) -> Result<Vec<PublicKeyVersion>, PolicyError> {
        if let Some(e) = &self.snapshot().latest {
            return Ok(vec![e.signed_by.clone()]);
        }
        let keys = self.signer.public_keys().await?;
        Ok(vec![newest(&keys, self.signer.key_id())?])
    }

    /// Validate `bytes` and publish them as a new epoch unless the policy in force is the same.
    /// Returns the epoch in force and whether it is new.
    pub async fn set_policy(
        &self,
        bytes: &[u8],
        source: Source,
    ) -> Result<(Arc<Epoch>, bool), PolicyError> {
        let policy = validate_policy(bytes)?;
        self.set_value(policy, source, None).await
    }

    /// Set (or clear) the rollout overlay and publish the policy in force with it applied.
    /// Refused, changing nothing, when no policy is in force yet or the result does not
    /// validate (the error names the field).
    pub async fn set_overlay(
        &self,
        overlay: Option<Overlay>,
    ) -> Result<(Arc<Epoch>, bool), PolicyError> {
        let _serial = self.publish.lock().await;
        let current = self.snapshot().latest.ok_or(PolicyError::NoPolicy)?;
        let mut policy = current.policy.clone();
        if let Some(apply) = &overlay {
            apply(&mut policy);
        }
        check_value(&policy)?;
        if let Ok(mut slot) = self.overlay.lock() {
            *slot = overlay;
        }
        if current.policy == policy {
            return Ok((current, false));
        }
        let epoch = self.publish_locked(policy, Source::Rollout, None).await?;
        Ok((epoch, true))
    }

    /// What the policy in force would become under `overlay`, validated; nothing is published.
    pub fn preview_overlay(&self, overlay: &Overlay) -> Result<serde_json::Value, PolicyError> {
        let current = self.snapshot().latest.ok_or(PolicyError::NoPolicy)?;
        let mut policy = current.policy.clone();
        overlay(&mut policy);
        check_value(&policy)?;
        Ok(policy)
    }

    async fn set_value(
        &self,
        mut policy: serde_json::Value,
        source: Source,
        file_hash: Option<String>,
    ) -> Result<(Arc<Epoch>, bool), PolicyError> {
        let _serial = self.publish.lock().await;
        if self.config.slo.any() {
            self.config.slo.apply(&mut policy);
            check_value(&policy).map_err(|e| PolicyError::SloOverride(e.to_string()))?;
        }
        let overlay = self.overlay.lock().ok().and_then(|o| o.clone());
        if let Some(apply) = overlay {
            apply(&mut policy);
            check_value(&policy)?;
        }
        if let Some(current) = self.snapshot().latest {
            if current.policy == policy {
                return Ok((current, false));
            }
        }
        let epoch = self.publish_locked(policy, source, file_hash).await?;
        Ok((epoch, true))
    }

    /// Rotate the config key and publish the handover epoch (same policy, `next_keys` = the new
    /// version, signed by the previous and the new version).
    pub async fn rotate(&self) -> Result<Rotation, PolicyError> {
        let _serial = self.publish.lock().await;
        let before = newest(&self.signer.public_keys().await?, self.signer.key_id())?;
        let key = self.signer.rotate().await?;
        tracing::info!(
            key_id = %key.key_id,
            previous_version = before.version,
            version = key.version,
            "rotated config signing key"
        );
        let mut epoch = self.snapshot().epoch();
        if let Some(current) = self.snapshot().latest {
            let published = self
                .publish_locked(current.policy.clone(), Source::Rotation, None)
                .await
                .inspect_err(|e| {
                    tracing::error!(
                        error = %e,
                        version = key.version,
                        "config key rotated but the handover epoch failed; the next policy change retries it"
                    );
                })?;
            epoch = published.epoch;
        }
        Ok(Rotation {
            epoch,
            previous_version: before.version,
            key,
        })
    }

    /// Sign, check, persist and publish `policy` as the next epoch. Caller holds `publish`.
    async fn publish_locked(
        &self,
        policy: serde_json::Value,
        source: Source,
        file_hash: Option<String>,
    ) -> Result<Arc<Epoch>, PolicyError> {
        let previous = self.snapshot().latest;
        let current = previous.as_ref().map_or(0, |e| e.epoch);
        let number = current
            .checked_add(1)
            .filter(|n| i64::try_from(*n).is_ok())
            .ok_or(PolicyError::EpochExhausted)?;
        let keys = self.signer.public_keys().await?;
        let new_key = newest(&keys, self.signer.key_id())?;
        let old_key = previous
            .as_ref()
            .and_then(|p| self.handover_from(&p.signed_by, &new_key, &keys));
        let payload = ConfigPayload {
            epoch: number,
            issued_at_ns: now_ns(),
            policy: policy.clone(),
            next_keys: old_key.as_ref().map(|_| vec![new_key.clone()]),
        };
        let payload_bytes = serde_json::to_vec(&payload)
            .map_err(|e| PolicyError::Corrupt(format!("payload does not serialize: {e}")))?;
        let message = envelope::signing_input(&payload_bytes);
        let mut signatures = Vec::with_capacity(2);
        if let Some(old) = &old_key {
            signatures.push(self.signer.sign_with_version(&message, old.version).await?);
        }
        signatures.push(
            self.signer
                .sign_with_version(&message, new_key.version)
                .await?,
        );
        let envelope_bytes = serde_json::to_vec(&Envelope {
            payload_type: PAYLOAD_TYPE.to_owned(),
            payload: payload_bytes,
            signatures,
        })
        .map_err(|e| PolicyError::Corrupt(format!("envelope does not serialize: {e}")))?;
        // Exactly what a filter runs: one trusting the new key, and one trusting only the old.
        envelope::open(&envelope_bytes, std::slice::from_ref(&new_key), current)?;
        if let Some(old) = &old_key {
            let accepted = envelope::open(&envelope_bytes, std::slice::from_ref(old), current)?;
            if accepted.next_keys.as_deref() != Some(std::slice::from_ref(&new_key)) {
                return Err(PolicyError::Corrupt(
                    "handover does not announce the new key".to_owned(),
                ));
            }
        }
        let epoch = Arc::new(Epoch {
            epoch: number,
            issued_at_ns: payload.issued_at_ns,
            source,
            policy,
            envelope: Bytes::from(envelope_bytes),
            signed_by: new_key,
            handover: old_key.is_some(),
        });
        let store = self.store.clone();
        let row = epoch.clone();
        let hash = file_hash.clone();
        tokio::task::spawn_blocking(move || {
            store
                .lock()
                .map_err(|_| PolicyError::Internal("policy store lock poisoned"))?
                .insert(&row, hash.as_deref())
        })
        .await
        .map_err(|_| PolicyError::Internal("policy store task failed"))??;
        if let Some(hash) = file_hash {
            if let Ok(mut s) = self.file_state.lock() {
                s.applied = Some(hash);
            }
        }
        self.state.send_modify(|s| {
            s.latest = Some(epoch.clone());
            if epoch.handover {
                s.handover = Some(epoch.clone());
            }
        });
        tracing::info!(
            epoch = epoch.epoch,
            source = source.as_str(),
            key_version = epoch.signed_by.version,
            handover = epoch.handover,
            "published config epoch"
        );
        Ok(epoch)
    }

    /// The previous version to vouch for `new_key` with, when the signing key changed since
    /// the epoch in force.
    fn handover_from(
        &self,
        previous: &PublicKeyVersion,
        new_key: &PublicKeyVersion,
        keys: &[PublicKeyVersion],
    ) -> Option<PublicKeyVersion> {
        if same_key(previous, new_key) {
            return None;
        }
        if previous.provider != new_key.provider || previous.key_id != new_key.key_id {
            tracing::warn!(
                previous = %format!("{}/{} v{}", previous.provider, previous.key_id, previous.version),
                new = %format!("{}/{} v{}", new_key.provider, new_key.key_id, new_key.version),
                "config signing key changed to another key: no handover is possible; filters trusting only the previous key must get the new one in control.trusted_keys"
            );
            return None;
        }
        match keys.iter().find(|k| k.version == previous.version) {
            Some(k) if !k.retired => Some(k.clone()),
            _ => {
                tracing::warn!(
                    previous_version = previous.version,
                    version = new_key.version,
                    "previous config key version is retired or gone: no handover; filters trusting only it must be reconfigured"
                );
                None
            }
        }
    }
}

/// The key set for the filters' static `control.trusted_keys`, read without a running agent:
/// the key that signed the stored epoch in force, else the config key's newest version.
pub async fn offline_trusted_keys(
    setup: PolicySetup<'_>,
) -> Result<Vec<PublicKeyVersion>, PolicyError> {
    setup.policy.validate(setup.kms)?;
    let db = setup.database();
    if db.exists() {
        let latest = tokio::task::spawn_blocking(move || PolicyStore::open(&db)?.latest())
            .await
            .map_err(|_| PolicyError::Internal("policy store task failed"))??;
        if let Some(e) = latest {
            return Ok(vec![e.signed_by]);
        }
    }
    let signer = build_signer(&setup.policy.signer_config(setup.kms)).await?;
    Ok(vec![newest(&signer.public_keys().await?, signer.key_id())?])
}

/// Check a stored epoch the way a filter would, refusing to serve a tampered store.
fn check_stored(e: &Epoch) -> Result<(), PolicyError> {
    match envelope::open(
        &e.envelope,
        std::slice::from_ref(&e.signed_by),
        e.epoch.saturating_sub(1),
    ) {
        Ok(accepted) if accepted.epoch == e.epoch => Ok(()),
        Ok(accepted) => Err(PolicyError::Corrupt(format!(
            "row {} holds an envelope for epoch {}",
            e.epoch, accepted.epoch
        ))),
        Err(EnvelopeError::InvalidPolicy { error, .. }) => {
            tracing::warn!(
                epoch = e.epoch,
                %error,
                "stored config epoch no longer validates with this build; filters will refuse it until the next change"
            );
            Ok(())
        }
        Err(err) => Err(PolicyError::Corrupt(format!("epoch {}: {err}", e.epoch))),
    }
}

#[cfg(test)]
mod tests;
