//! Validation of a [`FilterConfig`] into a normalized [`Policy`] the hot path can use as is.
//!
//! Normalization happens once, at configure time: header names are lowercased, budgets become
//! nanoseconds, fractions become basis points. The per-request code then does no parsing.

use crate::bucket::{BucketKey, BUCKETS};
use crate::checkpoint::{Alg, PublicKeyVersion};
use crate::class::Class;
use crate::config::{
    defaults, ClassConfig, ClassRule, ConfigError, ControlConfig, FailMode, FilterConfig,
    KeySource, ReceiptOverflow, Strategy,
};
use crate::credential::{BearerToken, MAX_TOKEN_BYTES, MIN_TOKEN_BYTES};
use crate::limits::{MAX_CONFIG_BYTES, MAX_LATENCY_SAMPLE_EVERY, MAX_LIST_ENTRIES, MAX_NAME_BYTES};
mod error_path;
mod staging;
pub use staging::{Audience, AudienceMatch, MAX_MATCH_VALUE_BYTES};

/// Smallest accepted evaluation interval / tick, milliseconds.
pub const MIN_INTERVAL_MS: u32 = 10;
/// Largest accepted window, milliseconds (1 hour).
pub const MAX_WINDOW_MS: u32 = 3_600_000;
/// Largest accepted budget: 1 hour in nanoseconds.
pub const MAX_BUDGET_NS: u64 = 3_600 * 1_000_000_000;

/// A key source with its name normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFrom {
    /// Header, lowercased.
    Header(String),
    /// Cookie name, as written (cookie names are case-sensitive).
    Cookie(String),
    /// Query parameter name, as written.
    Query(String),
}

/// A validated classification rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Class assigned on match.
    pub class: Class,
    /// Required `:path` prefix, if any.
    pub path_prefix: Option<String>,
    /// Required header (lowercased name) and optional exact value.
    pub header: Option<(String, Option<String>)>,
}

/// Validated budget of one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassBudget {
    /// p99 budget, nanoseconds.
    pub p99_max_ns: u64,
    /// Latency under which a sample counts toward recovery: `recover_ratio × p99_max_ns`.
    pub recover_below_ns: u64,
    /// Sliding window, milliseconds.
    pub window_ms: u32,
    /// Samples needed before shedding.
    pub min_samples: u32,
    /// Strict or degrade.
    pub strategy: Strategy,
}

/// The validated, normalized policy the filter and agent decide with.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Operator version label.
    pub version: u64,
    /// The salt's hashing key (the salt itself is not kept: nothing else needs it), derived
    /// once here so a request pays one SipHash of its key.
    pub bucket_key: BucketKey,
    /// Canary share, basis points.
    pub canary_basis_points: u16,
    /// Ordered key sources.
    pub key_sources: Vec<KeyFrom>,
    /// Use `x-request-id` when no source yields a key.
    pub fallback_to_request_id: bool,
    /// Route header (lowercase).
    pub route_header: String,
    /// Route header values: `[stable, canary]`.
    pub route_values: [String; 2],
    /// Force header (lowercase), when enabled.
    pub force_header: Option<String>,
    /// Excluded path prefixes.
    pub exclude_path_prefixes: Vec<String>,
    /// Excluded hosts (lowercase).
    pub exclude_hosts: Vec<String>,
    /// Staging audience routed to canary whatever the weight, when configured.
    pub audience: Option<Audience>,
    /// Feature flags, when configured.
    pub flags: Option<crate::flags::Flags>,
    /// Admission on?
    pub admission_enabled: bool,
    /// Shadow mode: decide and count, never enforce.
    pub shadow: bool,
    /// Class header (lowercase).
    pub class_header: String,
    /// Whether an incoming class header is trusted.
    pub trust_class_header: bool,
    /// Class when nothing matches.
    pub default_class: Class,
    /// Ordered rules.
    pub rules: Vec<Rule>,
    /// Budgets indexed by [`Class::index`].
    pub budgets: [ClassBudget; 3],
    /// Shed response status.
    pub shed_status: u16,
    /// Shed `retry-after` seconds.
    pub retry_after_s: u32,
    /// Ceiling of the shed level, basis points.
    pub max_shed_bp: u16,
    /// Shed level change per evaluation, basis points.
    pub shed_step_bp: u16,
    /// Evaluation interval, milliseconds.
    pub evaluation_interval_ms: u32,
    /// Time one request in this many for the p99 (1..=[`MAX_LATENCY_SAMPLE_EVERY`]).
    pub latency_sample_every: u16,
    /// Fail open or closed.
    pub fail_mode: FailMode,
    /// Emit the debug header.
    pub debug_headers: bool,
    /// Timer period, milliseconds.
    pub tick_ms: u32,
    /// Agent connection, when configured (static plugin configuration only).
    pub control: Option<Control>,
}

/// Validated agent connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// Envoy cluster of the agent.
    pub cluster: String,
    /// `:authority` of agent calls.
    pub authority: String,
    /// Long-poll config path (no query).
    pub config_path: String,
    /// Long-poll hold, milliseconds.
    pub poll_timeout_ms: u32,
    /// Keys trusted to sign pushed configs.
    pub trusted_keys: Vec<PublicKeyVersion>,
    /// Credential sent with every agent call, when configured.
    pub token: Option<BearerToken>,
    /// Receipt flushing, when enabled.
    pub receipts: Option<Receipts>,
}

/// Validated receipt batching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipts {
    /// Receipt endpoint path.
    pub path: String,
    /// Flush period, milliseconds.
    pub flush_interval_ms: u32,
    /// Flush threshold, records.
    pub max_batch: usize,
    /// Unsent records a worker may hold.
    pub max_buffer: usize,
    /// Behaviour when full.
    pub overflow: ReceiptOverflow,
}

impl Policy {
    /// One line on what this policy does: `canary 500 bp, admission on (shadow), agent
    /// cluster knhk_agent` — what the filter logs when it applies it and
    /// `knhk-agent validate-config` prints.
    pub fn summary(&self) -> String {
        format!(
            "canary {} bp, admission {}{}{}",
            self.canary_basis_points,
            if self.admission_enabled { "on" } else { "off" },
            if self.shadow { " (shadow)" } else { "" },
            match &self.control {
                Some(c) => format!(", agent cluster {}", c.cluster),
                None => String::new(),
            },
        )
    }

    /// The flags on for a request whose routing key gave `buckets` (`None`: no key, all off);
    /// none without a `flags` section.
    pub fn flags_on(&self, buckets: Option<&crate::bucket::Buckets>) -> crate::flags::FlagSet {
        match (&self.flags, buckets) {
            (Some(flags), Some(b)) => flags.on_for(b),
            _ => crate::flags::FlagSet::EMPTY,
        }
    }

    /// The value the filter writes in the route header for `route`.
    pub fn route_value(&self, route: crate::class::Route) -> &str {
        match route {
            crate::class::Route::Stable => &self.route_values[0],
            crate::class::Route::Canary => &self.route_values[1],
        }
    }

    /// Parse and validate a JSON document (the plugin configuration).
    pub fn from_json(bytes: &[u8]) -> Result<Policy, ConfigError> {
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError {
                field: "<document>".into(),
                reason: format!(
                    "{} bytes exceeds the {MAX_CONFIG_BYTES}-byte limit",
                    bytes.len()
                ),
            });
        }
        let trimmed = bytes.trim_ascii();
        // An empty plugin configuration means "all defaults".
        let doc: &[u8] = if trimmed.is_empty() { b"{}" } else { trimmed };
        if doc.first() != Some(&b'{') {
            return Err(ConfigError::new("<document>", "must be a JSON object"));
        }
        let value = crate::json::parse(doc).map_err(|e| {
            let reason = e.to_string();
            if reason.starts_with("trailing characters") {
                return ConfigError::new(
                    "<document>",
                    format!("trailing characters after the object: {reason}"),
                );
            }
            let field = error_path::path_at(doc, e.line(), e.column());
            ConfigError::new(field.as_deref().unwrap_or("<document>"), reason)
        })?;
        Policy::from_value(&value)
    }

    /// Validate a parsed JSON document (a pushed config's policy, already size-checked with
    /// its envelope).
    pub fn from_value(value: &serde_json::Value) -> Result<Policy, ConfigError> {
        let config = FilterConfig::read(&crate::config::read::At::root(value))?;
        Policy::from_config(&config)
    }

    /// Validate an already-parsed config.
    pub fn from_config(c: &FilterConfig) -> Result<Policy, ConfigError> {
        let r = &c.routing;
        let a = &c.admission;
        if r.salt.is_empty() || r.salt.len() > MAX_NAME_BYTES {
            return Err(ConfigError::new(
                "routing.salt",
                format!("must be 1..={MAX_NAME_BYTES} bytes"),
            ));
        }
        if r.canary_basis_points > BUCKETS {
            return Err(ConfigError::new(
                "routing.canary_basis_points",
                format!(
                    "must be 0..=10000 (0.01 % steps), got {}",
                    r.canary_basis_points
                ),
            ));
        }
        check_len("routing.key_sources", r.key_sources.len())?;
        let key_sources = r
            .key_sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let field = format!("routing.key_sources[{i}]");
                Ok(match s {
                    KeySource::Header(n) => KeyFrom::Header(header_name(&field, n)?),
                    KeySource::Cookie(n) => KeyFrom::Cookie(token(&field, n)?),
                    KeySource::Query(n) => KeyFrom::Query(token(&field, n)?),
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        if key_sources.is_empty() && !r.fallback_to_request_id {
            return Err(ConfigError::new(
                "routing.key_sources",
                "is empty and fallback_to_request_id is false: no request could be keyed",
            ));
        }
        let route_header = header_name("routing.route_header", &r.route_header)?;
        let route_values = [
            token("routing.route_values.stable", &r.route_values.stable)?,
            token("routing.route_values.canary", &r.route_values.canary)?,
        ];
        let force_header = if r.force_header.enabled {
            Some(header_name(
                "routing.force_header.name",
                &r.force_header.name,
            )?)
        } else {
            None
        };
        check_len(
            "routing.exclude.path_prefixes",
            r.exclude.path_prefixes.len(),
        )?;
        for (i, p) in r.exclude.path_prefixes.iter().enumerate() {
            if !p.starts_with('/') || p.len() > 1024 {
                return Err(ConfigError::new(
                    format!("routing.exclude.path_prefixes[{i}]"),
                    format!("must start with '/' and be at most 1024 bytes, got {p:?}"),
                ));
            }
        }
        check_len("routing.exclude.hosts", r.exclude.hosts.len())?;
        for (i, h) in r.exclude.hosts.iter().enumerate() {
            if h.is_empty()
                || h.len() > MAX_NAME_BYTES
                || h.bytes().any(|b| b.is_ascii_whitespace() || b < 0x21)
            {
                return Err(ConfigError::new(
                    format!("routing.exclude.hosts[{i}]"),
                    format!("not a host name: {h:?}"),
                ));
            }
        }

        let class_header = header_name("admission.class_header", &a.class_header)?;
        if class_header == route_header {
            return Err(ConfigError::new(
                "admission.class_header",
                "must differ from routing.route_header",
            ));
        }
        check_len("admission.rules", a.rules.len())?;
        let rules = a
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| validate_rule(i, rule))
            .collect::<Result<Vec<_>, _>>()?;
        let budgets = [
            budget(
                "admission.classes.R1",
                &a.classes.r1,
                &defaults::r1(),
                a.recover_ratio,
            )?,
            budget(
                "admission.classes.W1",
                &a.classes.w1,
                &defaults::w1(),
                a.recover_ratio,
            )?,
            budget(
                "admission.classes.C1",
                &a.classes.c1,
                &defaults::c1(),
                a.recover_ratio,
            )?,
        ];
        if budgets[1].p99_max_ns < budgets[0].p99_max_ns {
            return Err(ConfigError::new(
                "admission.classes.W1",
                format!(
                    "p99 budget {} ns is tighter than R1's {} ns; classes must loosen R1 ≤ W1 ≤ C1",
                    budgets[1].p99_max_ns, budgets[0].p99_max_ns
                ),
            ));
        }
        if budgets[2].p99_max_ns < budgets[1].p99_max_ns
            || budgets[2].p99_max_ns < budgets[0].p99_max_ns
        {
            return Err(ConfigError::new(
                "admission.classes.C1",
                format!(
                    "p99 budget {} ns is tighter than a hotter class (R1 {} ns, W1 {} ns); classes must loosen R1 ≤ W1 ≤ C1",
                    budgets[2].p99_max_ns, budgets[0].p99_max_ns, budgets[1].p99_max_ns
                ),
            ));
        }
        if !(400..=599).contains(&a.shed_status) {
            return Err(ConfigError::new(
                "admission.shed_status",
                format!("must be a 4xx or 5xx status, got {}", a.shed_status),
            ));
        }
        if a.retry_after_s > 3_600 {
            return Err(ConfigError::new(
                "admission.retry_after_s",
                format!("must be at most 3600, got {}", a.retry_after_s),
            ));
        }
        let max_shed_bp = fraction_bp("admission.max_shed_fraction", a.max_shed_fraction, false)?;
        let shed_step_bp =
            fraction_bp("admission.shed_step_fraction", a.shed_step_fraction, false)?;
        if shed_step_bp > max_shed_bp {
            return Err(ConfigError::new(
                "admission.shed_step_fraction",
                "must not exceed admission.max_shed_fraction",
            ));
        }
        if !(a.recover_ratio > 0.0 && a.recover_ratio < 1.0) {
            return Err(ConfigError::new(
                "admission.recover_ratio",
                format!(
                    "must be in (0, 1) for hysteresis, got {}",
                    number(a.recover_ratio)
                ),
            ));
        }
        let shortest_window = budgets
            .iter()
            .map(|b| b.window_ms)
            .min()
            .unwrap_or(MAX_WINDOW_MS);
        if a.evaluation_interval_ms < MIN_INTERVAL_MS || a.evaluation_interval_ms > shortest_window
        {
            return Err(ConfigError::new(
                "admission.evaluation_interval_ms",
                format!(
                    "must be {MIN_INTERVAL_MS}..={shortest_window} (at most the shortest class window), got {}",
                    a.evaluation_interval_ms
                ),
            ));
        }
        if a.latency_sample_every == 0 || a.latency_sample_every > MAX_LATENCY_SAMPLE_EVERY {
            return Err(ConfigError::new(
                "admission.latency_sample_every",
                format!(
                    "must be 1..={MAX_LATENCY_SAMPLE_EVERY} (1 times every request), got {}",
                    a.latency_sample_every
                ),
            ));
        }
        let audience = r
            .audience
            .as_ref()
            .map(staging::validate_audience)
            .transpose()?;
        let flags = c
            .flags
            .as_ref()
            .map(|f| {
                staging::validate_flags(
                    f,
                    &[
                        ("routing.route_header", route_header.as_str()),
                        ("admission.class_header", class_header.as_str()),
                        (
                            "routing.force_header.name",
                            force_header.as_deref().unwrap_or_default(),
                        ),
                    ],
                )
            })
            .transpose()?;
        if c.tick_ms < MIN_INTERVAL_MS || c.tick_ms > 10_000 {
            return Err(ConfigError::new(
                "tick_ms",
                format!("must be {MIN_INTERVAL_MS}..=10000, got {}", c.tick_ms),
            ));
        }
        Ok(Policy {
            version: c.version,
            bucket_key: BucketKey::new(r.salt.as_bytes()),
            canary_basis_points: r.canary_basis_points,
            key_sources,
            fallback_to_request_id: r.fallback_to_request_id,
            route_header,
            route_values,
            force_header,
            exclude_path_prefixes: r.exclude.path_prefixes.clone(),
            exclude_hosts: r
                .exclude
                .hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            audience,
            flags,
            admission_enabled: a.enabled,
            shadow: a.shadow,
            class_header,
            trust_class_header: a.trust_class_header,
            default_class: a.default_class,
            rules,
            budgets,
            shed_status: a.shed_status,
            retry_after_s: a.retry_after_s,
            max_shed_bp,
            shed_step_bp,
            evaluation_interval_ms: a.evaluation_interval_ms,
            latency_sample_every: a.latency_sample_every,
            fail_mode: c.fail_mode,
            debug_headers: c.debug_headers,
            tick_ms: c.tick_ms,
            control: c.control.as_ref().map(validate_control).transpose()?,
        })
    }

    /// Budget of a class.
    pub fn budget(&self, class: Class) -> &ClassBudget {
        &self.budgets[class.index()]
    }
}

/// Most records a receipt buffer may be configured to hold per worker.
pub const MAX_RECEIPT_BUFFER: usize = 65_536;

fn validate_control(c: &ControlConfig) -> Result<Control, ConfigError> {
    let name = |field: &str, v: &str| {
        if v.is_empty() || v.len() > MAX_NAME_BYTES || v.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(ConfigError::new(
                field,
                format!("must be 1..={MAX_NAME_BYTES} visible characters, got {v:?}"),
            ));
        }
        Ok(v.to_string())
    };
    let path = |field: &str, v: &str| {
        if !v.starts_with('/')
            || v.len() > 1024
            || v.bytes()
                .any(|b| b <= b' ' || b == b'?' || b == b'#' || b == 0x7f)
        {
            return Err(ConfigError::new(
                field,
                format!("must be an absolute path without query, got {v:?}"),
            ));
        }
        Ok(v.to_string())
    };
    if !(1_000..=300_000).contains(&c.poll_timeout_ms) {
        return Err(ConfigError::new(
            "control.poll_timeout_ms",
            format!("must be 1000..=300000, got {}", c.poll_timeout_ms),
        ));
    }
    let keys = &c.trusted_keys;
    if keys.is_empty() || keys.len() > crate::limits::MAX_TRUSTED_KEYS {
        return Err(ConfigError::new(
            "control.trusted_keys",
            format!(
                "must hold 1..={} keys, has {}",
                crate::limits::MAX_TRUSTED_KEYS,
                keys.len()
            ),
        ));
    }
    for (i, k) in keys.iter().enumerate() {
        let ok = match k.alg {
            Alg::Ed25519 => k.public_key.len() == 32,
            Alg::EcdsaP256 => k.public_key.len() == 33 || k.public_key.len() == 65,
        };
        if !ok {
            return Err(ConfigError::new(
                format!("control.trusted_keys[{i}].public_key"),
                format!("{} bytes is not a {} public key", k.public_key.len(), k.alg),
            ));
        }
    }
    if keys.iter().all(|k| k.retired) {
        return Err(ConfigError::new(
            "control.trusted_keys",
            "every key is retired: nothing could verify",
        ));
    }
    let r = &c.receipts;
    let receipts = if r.enabled {
        if !(10..=250).contains(&r.flush_interval_ms) {
            return Err(ConfigError::new(
                "control.receipts.flush_interval_ms",
                format!("must be 10..=250, got {}", r.flush_interval_ms),
            ));
        }
        let max_batch = r.max_batch as usize;
        if max_batch == 0 || max_batch > crate::limits::MAX_BATCH_RECORDS {
            return Err(ConfigError::new(
                "control.receipts.max_batch",
                format!(
                    "must be 1..={}, got {max_batch}",
                    crate::limits::MAX_BATCH_RECORDS
                ),
            ));
        }
        let max_buffer = r.max_buffer as usize;
        if max_buffer < max_batch || max_buffer > MAX_RECEIPT_BUFFER {
            return Err(ConfigError::new(
                "control.receipts.max_buffer",
                format!("must be max_batch ({max_batch})..={MAX_RECEIPT_BUFFER}, got {max_buffer}"),
            ));
        }
        Some(Receipts {
            path: path("control.receipts.path", &r.path)?,
            flush_interval_ms: r.flush_interval_ms,
            max_batch,
            max_buffer,
            overflow: r.overflow,
        })
    } else {
        None
    };
    Ok(Control {
        cluster: name("control.cluster", &c.cluster)?,
        authority: name("control.authority", &c.authority)?,
        config_path: path("control.config_path", &c.config_path)?,
        poll_timeout_ms: c.poll_timeout_ms,
        trusted_keys: keys.clone(),
        token: c
            .token
            .as_ref()
            .map(|t| {
                BearerToken::new(&t.0).ok_or_else(|| {
                    ConfigError::new(
                        "control.token",
                        format!("must be {MIN_TOKEN_BYTES}..={MAX_TOKEN_BYTES} printable ASCII characters without spaces (the value is not shown)"),
                    )
                })
            })
            .transpose()?,
        receipts,
    })
}

fn check_len(field: &str, len: usize) -> Result<(), ConfigError> {
    if len > MAX_LIST_ENTRIES {
        return Err(ConfigError::new(
            field,
            format!("has {len} entries, at most {MAX_LIST_ENTRIES} allowed"),
        ));
    }
    Ok(())
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn token(field: &str, name: &str) -> Result<String, ConfigError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES || !name.bytes().all(is_tchar) {
        // A hostile 60 KiB name must not become a 60 KiB log line: show its head and length.
        let reason = if name.len() > 80 {
            let head: String = name.chars().take(64).collect();
            format!(
                "must be 1..={MAX_NAME_BYTES} token characters (RFC 9110), got {head:?}… ({} bytes)",
                name.len()
            )
        } else {
            format!("must be 1..={MAX_NAME_BYTES} token characters (RFC 9110), got {name:?}")
        };
        return Err(ConfigError::new(field, reason));
    }
    Ok(name.to_string())
}

fn header_name(field: &str, name: &str) -> Result<String, ConfigError> {
    Ok(token(field, name)?.to_ascii_lowercase())
}

fn validate_rule(i: usize, rule: &ClassRule) -> Result<Rule, ConfigError> {
    let field = format!("admission.rules[{i}]");
    if rule.path_prefix.is_none() && rule.header.is_none() {
        return Err(ConfigError::new(
            field,
            "needs path_prefix, header, or both",
        ));
    }
    if let Some(p) = &rule.path_prefix {
        if !p.starts_with('/') || p.len() > 1024 {
            return Err(ConfigError::new(
                format!("{field}.path_prefix"),
                format!("must start with '/' and be at most 1024 bytes, got {p:?}"),
            ));
        }
    }
    let header = match &rule.header {
        Some(h) => {
            let name = header_name(&format!("{field}.header.name"), &h.name)?;
            if let Some(v) = &h.value {
                if v.len() > 1024 {
                    return Err(ConfigError::new(
                        format!("{field}.header.value"),
                        "must be at most 1024 bytes",
                    ));
                }
            }
            Some((name, h.value.clone()))
        }
        None => None,
    };
    Ok(Rule {
        class: rule.class,
        path_prefix: rule.path_prefix.clone(),
        header,
    })
}

/// Validate one class. A class written without a budget keeps its default budget
/// (`default`), so `"W1": {"strategy": "degrade"}` changes only the strategy.
fn budget(
    field: &str,
    c: &ClassConfig,
    default: &ClassConfig,
    recover_ratio: f64,
) -> Result<ClassBudget, ConfigError> {
    let p99_max_ns = match (c.p99_max_ns, c.p99_max_ms, default.p99_max_ms) {
        (Some(_), Some(_), _) => {
            return Err(ConfigError::new(
                field,
                "set either p99_max_ns or p99_max_ms, not both",
            ))
        }
        (Some(ns), None, _) => ns,
        (None, Some(ms), _) | (None, None, Some(ms)) => ms.saturating_mul(1_000_000),
        (None, None, None) => default.p99_max_ns.unwrap_or(0),
    };
    if p99_max_ns == 0 {
        return Err(ConfigError::new(
            field,
            "p99 budget must be greater than zero",
        ));
    }
    if p99_max_ns > MAX_BUDGET_NS {
        return Err(ConfigError::new(
            field,
            format!("p99 budget {p99_max_ns} ns exceeds one hour"),
        ));
    }
    if c.window_ms < MIN_INTERVAL_MS * crate::limits::SLICES as u32 || c.window_ms > MAX_WINDOW_MS {
        return Err(ConfigError::new(
            format!("{field}.window_ms"),
            format!(
                "must be {}..={MAX_WINDOW_MS}, got {}",
                MIN_INTERVAL_MS * crate::limits::SLICES as u32,
                c.window_ms
            ),
        ));
    }
    if c.min_samples == 0 {
        return Err(ConfigError::new(
            format!("{field}.min_samples"),
            "must be at least 1: a window without samples cannot observe a p99",
        ));
    }
    // Both factors are finite and in range, so the product fits; clamp keeps it ≤ p99_max_ns.
    let recover_below_ns = ((p99_max_ns as f64) * recover_ratio.clamp(0.0, 1.0)) as u64;
    Ok(ClassBudget {
        p99_max_ns,
        recover_below_ns,
        window_ms: c.window_ms,
        min_samples: c.min_samples,
        strategy: c.strategy,
    })
}

/// A number as JSON writes it (`0.25`, `1e-5`): through serde_json's float formatting, which the
/// module already carries, rather than `f64`'s `Display` (≈ 20 KB of wasm on its own).
fn number(value: f64) -> String {
    serde_json::Number::from_f64(value)
        .map_or_else(|| "a non-finite number".into(), |n| n.to_string())
}

fn fraction_bp(field: &str, value: f64, allow_zero: bool) -> Result<u16, ConfigError> {
    let ok = value.is_finite() && value <= 1.0 && (value > 0.0 || (allow_zero && value == 0.0));
    if !ok {
        return Err(ConfigError::new(
            field,
            format!("must be in (0, 1], got {}", number(value)),
        ));
    }
    let bp = (value * f64::from(BUCKETS)).round() as u16;
    if bp == 0 {
        return Err(ConfigError::new(
            field,
            format!("{} is below the 0.0001 resolution", number(value)),
        ));
    }
    Ok(bp)
}

#[cfg(test)]
mod tests;

/// What the filter does with traffic while it has no valid configuration at all: the
/// top-level `fail_mode` of a configuration that is refused elsewhere, when it is exactly
/// `"closed"`; open otherwise (also when the document is not JSON at all).
pub fn fail_mode_hint(bytes: &[u8]) -> FailMode {
    match crate::json::parse(bytes) {
        Ok(v) if v.get("fail_mode").and_then(|m| m.as_str()) == Some("closed") => FailMode::Closed,
        _ => FailMode::Open,
    }
}
