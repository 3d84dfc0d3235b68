//! What `GET /v1/console/state` answers: one document with everything the console shows.
//! Public, like `/metrics` and the checkpoints: it carries no secret (no salt, no token, no
//! key digest, no peer address or error text), so the console reads without the admin token.

use serde::Serialize;

use crate::capacity::report::{KeyShare, Series};
use crate::capacity::AdmissionWindow;
use crate::gates::timeline::TimelinePoint;
use crate::gates::Status;

/// The whole document.
#[derive(Debug, Clone, Serialize)]
pub struct ConsoleState {
    /// When it was made, ns since the Unix epoch.
    pub generated_at_ns: u64,
    /// The log's origin.
    pub origin: String,
    /// Whether the action buttons need the admin token (`[api] admin_token_file` is set).
    pub actions_need_token: bool,
    /// Whether the agent serves the browser verifier at `/console/verify.html`.
    pub verifier: bool,
    /// The current rollout, as `GET /v1/rollouts/current` shows it, with its timeline.
    pub rollout: Option<RolloutView>,
    /// Admission counts per class over time.
    pub admission: AdmissionView,
    /// Capacity figures, without the hot keys' digests.
    pub capacity: CapacityView,
    /// The receipt log: size, newest checkpoints, quorum.
    pub log: LogView,
    /// The signing key in use and its rotation.
    pub keys: KeysView,
}

/// The current rollout.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutView {
    /// Its status.
    #[serde(flatten)]
    pub status: Status,
    /// Its recent evaluations and transitions, oldest first.
    pub timeline: Vec<TimelinePoint>,
}

/// Admission over the capacity windows.
#[derive(Debug, Clone, Serialize)]
pub struct AdmissionView {
    /// Window length, seconds.
    pub window_s: f64,
    /// The windows kept, oldest first.
    pub points: Vec<AdmissionWindow>,
}

/// Capacity, as `GET /v1/capacity` reports it, less the hot keys' identities.
#[derive(Debug, Clone, Serialize)]
pub struct CapacityView {
    /// Window length, seconds.
    pub window_s: f64,
    /// Windows kept.
    pub windows: usize,
    /// One per class and route seen.
    pub series: Vec<Series>,
    /// How concentrated keyed traffic is.
    pub hot_keys: HotKeysView,
    /// What to do, in words with their numbers.
    pub recommendations: Vec<String>,
}

/// The hot-key shares of all keyed traffic and of canary traffic.
#[derive(Debug, Clone, Serialize)]
pub struct HotKeysView {
    /// All keyed requests.
    pub all: KeyShareView,
    /// Keyed requests routed to canary.
    pub canary: KeyShareView,
}

/// One stream's key concentration.
#[derive(Debug, Clone, Serialize)]
pub struct KeyShareView {
    /// Keyed requests counted.
    pub requests: u64,
    /// Share the top keys carry.
    pub top_share: f64,
    /// Whether the top keys carry at least 10 %.
    pub skewed: bool,
    /// Distinct keys seen (estimate).
    pub distinct_keys: u64,
}

impl From<&KeyShare> for KeyShareView {
    fn from(k: &KeyShare) -> Self {
        KeyShareView {
            requests: k.requests,
            top_share: k.top_share,
            skewed: k.skewed,
            distinct_keys: k.distinct_keys,
        }
    }
}

/// The receipt log.
#[derive(Debug, Clone, Serialize)]
pub struct LogView {
    /// Leaves appended.
    pub tree_size: u64,
    /// The newest checkpoints, newest first.
    pub checkpoints: Vec<CheckpointView>,
    /// Cross-region quorum; `None` without `[quorum]`.
    pub quorum: Option<QuorumView>,
}

/// One signed checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointView {
    /// Leaves it covers.
    pub tree_size: u64,
    /// When it was sealed, ns since the Unix epoch (0 when the note has no timestamp).
    pub time_ns: u64,
    /// Its root, base64.
    #[serde(with = "knhk_core::b64::hash")]
    pub root_hash: [u8; 32],
    /// Signing provider.
    pub provider: String,
    /// Key identifier.
    pub key_id: String,
    /// Key version that signed.
    pub key_version: u32,
}

/// The quorum of regions that cosign each checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct QuorumView {
    /// This region.
    pub region: String,
    /// Signatures needed per checkpoint, this region's included.
    pub threshold: usize,
    /// Every region, this one first.
    pub regions: Vec<String>,
    /// Tree size of the newest checkpoint.
    pub latest_size: u64,
    /// Whether the newest checkpoint has its quorum.
    pub up_to_date: bool,
    /// Tree size of the newest committed checkpoint.
    pub latest_committed_size: Option<u64>,
    /// When it was committed.
    pub latest_committed_ns: Option<u64>,
    /// Each peer contacted so far.
    pub peers: Vec<PeerView>,
}

/// One peer region, without its address or error text.
#[derive(Debug, Clone, Serialize)]
pub struct PeerView {
    /// Region.
    pub region: String,
    /// The newest tree size it cosigned.
    pub acked_size: u64,
    /// Whether the last attempt succeeded.
    pub healthy: bool,
    /// When the last attempt ended.
    pub time_ns: u64,
}

/// The checkpoint signing key.
#[derive(Debug, Clone, Serialize)]
pub struct KeysView {
    /// Provider (`local`, `transit`, `aws`, `azure`), from the newest checkpoint.
    pub provider: String,
    /// Key identifier.
    pub key_id: String,
    /// Version that signed the newest checkpoint.
    pub key_version: Option<u32>,
    /// Since when that version signs.
    pub in_use_since_ns: u64,
    /// `kms.rotation_interval`, seconds.
    pub rotation_interval_s: f64,
    /// When the next timed rotation is due.
    pub next_rotation_ns: u64,
}
