//! Filter configuration: the JSON an operator writes, its named defaults, and validation into a [`Policy`](crate::policy::Policy).
//!
//! Parsing is strict (unknown fields are refused) and every rejection names the field and the
//! reason, because a typo in a rollout config must fail loudly at `on_configure`, not route
//! traffic silently. The document is parsed once into JSON values and read section by section
//! (`from_json`, over the helpers of `read`).

use crate::class::Class;
use std::fmt;

pub(crate) mod from_json;
pub(crate) mod read;
mod staging;
pub use staging::{AudienceConfig, BucketRange, CookieMatch, FlagConfig, FlagsConfig};

/// A configuration rejection: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid knhk config: field `{field}`: {reason}")]
pub struct ConfigError {
    /// Dotted path of the offending field (`admission.classes.R1.p99_max_ms`); `<document>` for the whole.
    pub field: String,
    /// Why it was refused, including the value where that helps.
    pub reason: String,
}

impl ConfigError {
    /// A rejection of `field` for `reason`.
    pub fn new(field: impl Into<String>, reason: impl fmt::Display) -> Self {
        ConfigError {
            field: field.into(),
            reason: reason.to_string(),
        }
    }
}

/// The whole plugin configuration as written by an operator.
#[derive(Debug, Clone, Default)]
pub struct FilterConfig {
    /// Canary routing.
    pub routing: RoutingConfig,
    /// Per-class admission control.
    pub admission: AdmissionConfig,
    /// What to do when the filter cannot decide (no valid policy, host failure).
    pub fail_mode: FailMode,
    /// Add `x-knhk-decision` to responses (route, buckets, class, admission, config version).
    pub debug_headers: bool,
    /// Period of the filter's timer (flush counters to stats, sync admission state), milliseconds.
    pub tick_ms: u32,
    /// Operator-visible version label of this config, reported in stats and debug headers.
    /// A config pushed by the agent carries its epoch here instead.
    pub version: u64,
    /// Connection to the knhk agent (signed config push, receipts). Static plugin
    /// configuration only: a pushed config cannot change it.
    pub control: Option<ControlConfig>,
    /// Feature flags derived from the routing key and sent upstream in a header; absent: none,
    /// and the filter leaves any incoming flags header alone.
    pub flags: Option<FlagsConfig>,
}

/// Where the agent is and which keys may sign configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// Envoy cluster name of the agent.
    pub cluster: String,
    /// `:authority` of calls to the agent.
    pub authority: String,
    /// Path of the long-poll config endpoint; the filter appends `?after=<epoch>`.
    pub config_path: String,
    /// How long the agent may hold a long-poll, milliseconds; the call's timeout is this plus 5 s.
    pub poll_timeout_ms: u32,
    /// Public keys whose signatures on pushed configs are trusted (until a pushed config
    /// announces the next set).
    pub trusted_keys: Vec<crate::checkpoint::PublicKeyVersion>,
    /// Bearer token presented on every call to the agent (receipt batches and config polls),
    /// checked against the agent's `[api] filter_token_file`; absent: calls carry none. Kept
    /// as text until validation; never printed.
    pub token: Option<ConfigSecret>,
    /// Decision receipts sent to the agent.
    pub receipts: ReceiptsConfig,
}

/// A secret setting as written in the configuration; `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigSecret(pub String);

impl core::fmt::Debug for ConfigSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ConfigSecret(..)")
    }
}

/// What the filter does when its receipt buffer is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReceiptOverflow {
    /// Drop the new receipt and count it (`knhk.receipts.dropped`); traffic is unaffected.
    #[default]
    Drop,
    /// Refuse requests with 503 until the buffer drains: no decision without a receipt.
    FailClosed,
}

/// Receipt batching and flushing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptsConfig {
    /// Send receipts at all.
    pub enabled: bool,
    /// Path of the agent's receipt endpoint.
    pub path: String,
    /// Flush at least this often, milliseconds (10..=250).
    pub flush_interval_ms: u32,
    /// Flush as soon as this many receipts are buffered.
    pub max_batch: u32,
    /// Receipts a worker may hold unsent (buffer plus in flight).
    pub max_buffer: u32,
    /// Behaviour when the buffer is full.
    pub overflow: ReceiptOverflow,
}

impl Default for ReceiptsConfig {
    fn default() -> Self {
        ReceiptsConfig {
            enabled: true,
            path: defaults::receipts_path(),
            flush_interval_ms: defaults::flush_interval_ms(),
            max_batch: defaults::max_batch(),
            max_buffer: defaults::max_buffer(),
            overflow: ReceiptOverflow::Drop,
        }
    }
}

/// Behaviour when the filter cannot make a decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailMode {
    /// Let the request through untouched (Envoy's default route: stable).
    #[default]
    Open,
    /// Answer 503 locally.
    Closed,
}

/// Where the routing key comes from; exactly one field is set per entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A request header (name matched case-insensitively).
    Header(String),
    /// A cookie in the `cookie` header.
    Cookie(String),
    /// A query-string parameter of `:path` (raw, not percent-decoded).
    Query(String),
}

/// Canary routing settings.
#[derive(Debug, Clone)]
pub struct RoutingConfig {
    /// Per-rollout salt; change it to reshuffle which keys are canary.
    pub salt: String,
    /// Canary share in basis points, 0..=10000 (0.01 % resolution).
    pub canary_basis_points: u16,
    /// Ordered key sources; the first present, non-empty one wins.
    pub key_sources: Vec<KeySource>,
    /// Fall back to `x-request-id` when no source yields a key (per-request, so not sticky).
    pub fallback_to_request_id: bool,
    /// Header the filter writes with `stable` or `canary` for Envoy's routes to match.
    pub route_header: String,
    /// Values written in the route header (default `stable` / `canary`); a rollout sets them to
    /// version names so that promoting the candidate to stable is a config change.
    pub route_values: RouteValues,
    /// Optional override header (`always` / `never`).
    pub force_header: ForceHeader,
    /// Requests the filter leaves untouched.
    pub exclude: Exclusions,
    /// Requests sent to canary whatever the weight (the `staging` gate's audience).
    pub audience: Option<AudienceConfig>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            salt: defaults::salt(),
            canary_basis_points: 0,
            key_sources: Vec::new(),
            fallback_to_request_id: true,
            route_header: defaults::route_header(),
            route_values: RouteValues::default(),
            force_header: ForceHeader::default(),
            exclude: Exclusions::default(),
            audience: None,
        }
    }
}

/// What the filter writes in the route header for each route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteValues {
    /// Value for stable traffic.
    pub stable: String,
    /// Value for canary traffic (may equal `stable` once a candidate is promoted).
    pub canary: String,
}

impl Default for RouteValues {
    fn default() -> Self {
        RouteValues {
            stable: defaults::stable_value(),
            canary: defaults::canary_value(),
        }
    }
}

/// The force override: `always` sends to canary, `never` to stable. Off unless enabled.
#[derive(Debug, Clone)]
pub struct ForceHeader {
    /// Whether the header is honoured at all.
    pub enabled: bool,
    /// Header name.
    pub name: String,
}

impl Default for ForceHeader {
    fn default() -> Self {
        ForceHeader {
            enabled: false,
            name: defaults::force_header(),
        }
    }
}

/// Requests excluded from routing and admission.
#[derive(Debug, Clone, Default)]
pub struct Exclusions {
    /// `:path` prefixes (each starts with `/`).
    pub path_prefixes: Vec<String>,
    /// Exact `:authority` values (port included if the client sends it), case-insensitive.
    pub hosts: Vec<String>,
}

/// Shedding strategy of one class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Over budget: reject the shed share of keys with `shed_status`.
    #[default]
    Strict,
    /// Over budget: demote the shed share of keys to the next colder class (C1 is shed).
    Degrade,
}

/// Budget and window of one class.
#[derive(Debug, Clone)]
pub struct ClassConfig {
    /// p99 budget in nanoseconds (the older sidecar's unit for R1). Exclusive with `p99_max_ms`.
    pub p99_max_ns: Option<u64>,
    /// p99 budget in milliseconds (the older sidecar's unit for W1/C1). Exclusive with `p99_max_ns`.
    pub p99_max_ms: Option<u64>,
    /// Sliding window over which p99 is observed, milliseconds.
    pub window_ms: u32,
    /// Samples the window must hold before the class may shed.
    pub min_samples: u32,
    /// What to do when over budget.
    pub strategy: Strategy,
}

impl ClassConfig {
    fn with_budget_ms(ms: u64) -> Self {
        ClassConfig {
            p99_max_ns: None,
            p99_max_ms: Some(ms),
            window_ms: defaults::window_ms(),
            min_samples: defaults::min_samples(),
            strategy: Strategy::Strict,
        }
    }
}

/// The three classes' settings, keyed by class name.
#[derive(Debug, Clone)]
pub struct ClassesConfig {
    /// Hot class (default budget 100 ms).
    pub r1: ClassConfig,
    /// Warm class (default budget 500 ms).
    pub w1: ClassConfig,
    /// Cold class (default budget 5 s).
    pub c1: ClassConfig,
}

impl Default for ClassesConfig {
    fn default() -> Self {
        ClassesConfig {
            r1: defaults::r1(),
            w1: defaults::w1(),
            c1: defaults::c1(),
        }
    }
}

/// A header condition of a class rule.
#[derive(Debug, Clone)]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    pub name: String,
    /// Exact value; absent means "header present".
    pub value: Option<String>,
}

/// One classification rule: the first matching rule assigns its class.
#[derive(Debug, Clone)]
pub struct ClassRule {
    /// Class assigned on match.
    pub class: Class,
    /// Match on a `:path` prefix.
    pub path_prefix: Option<String>,
    /// Match on a header.
    pub header: Option<HeaderMatch>,
}

/// Admission control settings.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// Turn admission control on or off.
    pub enabled: bool,
    /// Decide and count, never enforce.
    pub shadow: bool,
    /// Header carrying the class: read when trusted, rewritten on demotion.
    pub class_header: String,
    /// Accept an explicit class in `class_header` (default off: a client must not choose its
    /// own class; turn it on where the mesh, not the client, sets the header).
    pub trust_class_header: bool,
    /// Class of requests no rule matches.
    pub default_class: Class,
    /// Ordered classification rules.
    pub rules: Vec<ClassRule>,
    /// Per-class budgets.
    pub classes: ClassesConfig,
    /// Status of a shed response (4xx or 5xx).
    pub shed_status: u16,
    /// `retry-after` seconds on a shed response.
    pub retry_after_s: u32,
    /// Ceiling of the shed share of a class's keys, (0, 1].
    pub max_shed_fraction: f64,
    /// Change of the shed share per evaluation, (0, max_shed_fraction].
    pub shed_step_fraction: f64,
    /// Shed share falls only once p99 is below `recover_ratio` × budget (hysteresis), (0, 1).
    pub recover_ratio: f64,
    /// How often the shed level is re-evaluated, milliseconds.
    pub evaluation_interval_ms: u32,
    /// Time one request in this many for the p99 (1: every request). Requests are picked by a
    /// per-worker pseudorandom sequence; receipts, when on, time every request regardless.
    pub latency_sample_every: u16,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            enabled: true,
            shadow: false,
            class_header: defaults::class_header(),
            trust_class_header: false,
            default_class: defaults::default_class(),
            rules: Vec::new(),
            classes: ClassesConfig::default(),
            shed_status: defaults::shed_status(),
            retry_after_s: defaults::retry_after_s(),
            max_shed_fraction: defaults::max_shed_fraction(),
            shed_step_fraction: defaults::shed_step_fraction(),
            recover_ratio: defaults::recover_ratio(),
            evaluation_interval_ms: defaults::evaluation_interval_ms(),
            latency_sample_every: defaults::latency_sample_every(),
        }
    }
}

/// Named defaults, one function per field so the reader and docs agree.
pub mod defaults {
    use super::{Class, ClassConfig};

    /// Timer period: 100 ms.
    pub fn tick_ms() -> u32 {
        100
    }
    /// Default salt.
    pub fn salt() -> String {
        "knhk".to_string()
    }
    /// `true`.
    pub fn yes() -> bool {
        true
    }
    /// `stable`.
    pub fn stable_value() -> String {
        "stable".to_owned()
    }
    /// `canary`.
    pub fn canary_value() -> String {
        "canary".to_owned()
    }
    /// `x-knhk-route`.
    pub fn route_header() -> String {
        "x-knhk-route".to_string()
    }
    /// `x-knhk-canary`.
    pub fn force_header() -> String {
        "x-knhk-canary".to_string()
    }
    /// `x-knhk-flags`.
    pub fn flags_header() -> String {
        crate::limits::DEFAULT_FLAGS_HEADER.to_string()
    }
    /// `x-knhk-class`.
    pub fn class_header() -> String {
        "x-knhk-class".to_string()
    }
    /// W1.
    pub fn default_class() -> Class {
        Class::W1
    }
    /// 10 s window.
    pub fn window_ms() -> u32 {
        10_000
    }
    /// 100 samples.
    pub fn min_samples() -> u32 {
        100
    }
    /// R1: 100 ms. (The older sidecar's 2 ns was an in-process figure, meaningless for HTTP.)
    pub fn r1() -> ClassConfig {
        ClassConfig::with_budget_ms(100)
    }
    /// W1: 500 ms.
    pub fn w1() -> ClassConfig {
        ClassConfig::with_budget_ms(500)
    }
    /// C1: 5 s.
    pub fn c1() -> ClassConfig {
        ClassConfig::with_budget_ms(5_000)
    }
    /// Authority of agent calls.
    pub fn agent_authority() -> String {
        "knhk-agent".into()
    }
    /// Long-poll config path.
    pub fn config_path() -> String {
        "/v1/config".into()
    }
    /// 30 s long-poll.
    pub fn poll_timeout_ms() -> u32 {
        30_000
    }
    /// Receipt endpoint.
    pub fn receipts_path() -> String {
        "/v1/receipts".into()
    }
    /// 250 ms, the slowest flush allowed.
    pub fn flush_interval_ms() -> u32 {
        250
    }
    /// 512 receipts per batch.
    pub fn max_batch() -> u32 {
        512
    }
    /// 8192 receipts unsent per worker (≈ 420 KiB).
    pub fn max_buffer() -> u32 {
        8_192
    }
    /// 503.
    pub fn shed_status() -> u16 {
        503
    }
    /// 1 s.
    pub fn retry_after_s() -> u32 {
        1
    }
    /// Never shed more than half of a class's keys.
    pub fn max_shed_fraction() -> f64 {
        0.5
    }
    /// Move 10 % of keys per evaluation.
    pub fn shed_step_fraction() -> f64 {
        0.1
    }
    /// Recover below 80 % of budget.
    pub fn recover_ratio() -> f64 {
        0.8
    }
    /// Evaluate every 250 ms.
    pub fn evaluation_interval_ms() -> u32 {
        250
    }
    /// Time one request in eight for the p99 (docs/benchmarks.md: two clock reads are about
    /// 2.5 K of the wasm build's instructions per request).
    pub fn latency_sample_every() -> u16 {
        8
    }
}
