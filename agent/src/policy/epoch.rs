//! The published config epoch and what long-polls watch: [`Epoch`], [`Snapshot`] (with the
//! rule for what a filter at a given epoch is served next), [`Source`] and [`Rotation`].

use std::sync::Arc;

use axum::body::Bytes;
use knhk_core::checkpoint::PublicKeyVersion;
use serde::{Deserialize, Serialize};

/// Where an epoch's policy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The watched policy file.
    File,
    /// `PUT /v1/policy`.
    Api,
    /// A config-key rotation (same policy, new key).
    Rotation,
    /// A rollout transition (promotion gates).
    Rollout,
}

impl Source {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Api => "api",
            Source::Rotation => "rotation",
            Source::Rollout => "rollout",
        }
    }

    /// Inverse of [`Source::as_str`].
    pub fn parse(name: &str) -> Option<Source> {
        match name {
            "file" => Some(Source::File),
            "api" => Some(Source::Api),
            "rotation" => Some(Source::Rotation),
            "rollout" => Some(Source::Rollout),
            _ => None,
        }
    }
}

/// One published config epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Epoch {
    /// The epoch number.
    pub epoch: u64,
    /// When it was signed, ns since the Unix epoch.
    pub issued_at_ns: u64,
    /// Where the policy came from.
    pub source: Source,
    /// The policy (a filter configuration without `control`), as validated.
    pub policy: serde_json::Value,
    /// The signed envelope JSON, exactly as served.
    pub envelope: Bytes,
    /// The newest config key version, which signed it (a handover is also signed by the
    /// previous version).
    pub signed_by: PublicKeyVersion,
    /// Whether it announces `next_keys` (a key rotation handover).
    pub handover: bool,
}

/// What long-polls watch: the newest epoch and the newest handover.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The epoch in force.
    pub latest: Option<Arc<Epoch>>,
    /// The newest handover epoch.
    pub handover: Option<Arc<Epoch>>,
}

impl Snapshot {
    /// The epoch in force, 0 before any.
    pub fn epoch(&self) -> u64 {
        self.latest.as_ref().map_or(0, |e| e.epoch)
    }

    /// What a filter holding epoch `after` is served next: nothing when it is current; the
    /// newest handover when it has not seen it yet (so a filter that trusts only the previous
    /// key follows the rotation); otherwise the epoch in force.
    pub fn next_for(&self, after: u64) -> Option<Arc<Epoch>> {
        let latest = self.latest.as_ref().filter(|e| e.epoch > after)?;
        match &self.handover {
            Some(h) if h.epoch > after => Some(h.clone()),
            _ => Some(latest.clone()),
        }
    }
}

/// The result of a key rotation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rotation {
    /// The epoch in force afterwards (the handover epoch, or 0 when no policy exists yet).
    pub epoch: u64,
    /// The version that signed configs before.
    pub previous_version: u32,
    /// The new version.
    pub key: PublicKeyVersion,
}
