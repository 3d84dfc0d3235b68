//! Each configuration section read from its JSON object, with serde's defaults and strictness:
//! unknown fields are refused, absent fields take the named defaults of [`super::defaults`].

use super::read::{At, Obj};
use super::staging::{AudienceConfig, BucketRange, CookieMatch, FlagConfig, FlagsConfig};
use super::*;
use crate::checkpoint::{Alg, PublicKeyVersion};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

impl FilterConfig {
    /// Read the whole document.
    pub fn read(at: &At<'_>) -> Result<Self, ConfigError> {
        let o = at.object(
            "struct FilterConfig",
            &[
                "routing",
                "admission",
                "fail_mode",
                "debug_headers",
                "tick_ms",
                "version",
                "control",
                "flags",
            ],
        )?;
        Ok(FilterConfig {
            routing: o.or("routing", RoutingConfig::read, RoutingConfig::default)?,
            admission: o.or("admission", AdmissionConfig::read, AdmissionConfig::default)?,
            fail_mode: o.or("fail_mode", FailMode::read, FailMode::default)?,
            debug_headers: o.or("debug_headers", At::bool, || false)?,
            tick_ms: o.or("tick_ms", At::u32, defaults::tick_ms)?,
            version: o.or("version", At::u64, || 0)?,
            control: o.opt("control", ControlConfig::read)?,
            flags: o.opt("flags", FlagsConfig::read)?,
        })
    }
}

impl ControlConfig {
    fn read(at: &At<'_>) -> Result<Self, ConfigError> {
        let o = at.object(
            "struct ControlConfig",
            &[
                "cluster",
                "authority",
                "config_path",
                "poll_timeout_ms",
                "trusted_keys",
                "token",
                "receipts",
            ],
        )?;
        Ok(ControlConfig {
            cluster: o.required("cluster")?.string()?,
            authority: o.or("authority", At::string, defaults::agent_authority)?,
            config_path: o.or("config_path", At::string, defaults::config_path)?,
            poll_timeout_ms: o.or("poll_timeout_ms", At::u32, defaults::poll_timeout_ms)?,
            trusted_keys: o.required("trusted_keys")?.list(read_public_key)?,
            token: o.opt("token", At::string)?.map(ConfigSecret),
            receipts: o.or("receipts", ReceiptsConfig::read, ReceiptsConfig::default)?,
        })
    }
}

/// One trusted key version, as `knhk-agent keys list` prints it.
pub(crate) fn read_public_key(at: &At<'_>) -> Result<PublicKeyVersion, ConfigError> {
    let o = at.object(
        "struct PublicKeyVersion",
        &[
            "provider",
            "key_id",
            "version",
            "alg",
            "public_key",
            "retired",
        ],
    )?;
    let public_key = base64(&o.required("public_key")?)?;
    Ok(PublicKeyVersion {
        provider: o.required("provider")?.string()?,
        key_id: o.required("key_id")?.string()?,
        version: o.required("version")?.u32()?,
        alg: read_alg(&o.required("alg")?)?,
        public_key,
        retired: o.required("retired")?.bool()?,
    })
}

/// A signature algorithm: `ed25519` or `ecdsa-p256`.
pub(crate) fn read_alg(at: &At<'_>) -> Result<Alg, ConfigError> {
    at.variant(&[("ed25519", Alg::Ed25519), ("ecdsa-p256", Alg::EcdsaP256)])
}

/// Bytes written as standard base64 in a JSON string.
pub(crate) fn base64(at: &At<'_>) -> Result<Vec<u8>, ConfigError> {
    STANDARD
        .decode(at.string()?.as_bytes())
        .map_err(|e| at.error(format!("invalid base64: {e}")))
}

impl ReceiptsConfig {
    fn read(at: &At<'_>) -> Result<Self, ConfigError> {
        let o = at.object(
            "struct ReceiptsConfig",
            &[
                "enabled",
                "path",
                "flush_interval_ms",
                "max_batch",
                "max_buffer",
                "overflow",
            ],
        )?;
        Ok(ReceiptsConfig {
            enabled: o.or("enabled", At::bool, defaults::yes)?,
            path: o.or("path", At::string, defaults::receipts_path)?,
            flush_interval_ms: o.or("flush_interval_ms", At::u32, defaults::flush_interval_ms)?,
            max_batch: o.or("max_batch", At::u32, defaults::max_batch)?,
            max_buffer: o.or("max_buffer", At::u32, defaults::max_buffer)?,
            overflow: o.or(
                "overflow",
                |at| {
                    at.variant(&[
                        ("drop", ReceiptOverflow::Drop),
                        ("fail_closed", ReceiptOverflow::FailClosed),
                    ])
                },
                ReceiptOverflow::default,
            )?,
        })
    }
}

impl FailMode {
    fn read(at: &At<'_>) -> Result<Self, ConfigError> {
        at.variant(&[("open", FailMode::Open), ("closed", FailMode::Closed)])
    }
}

impl KeySource {
    /// `{"header": name}`, `{"cookie": name}` or `{"query": name}`: exactly one.
    fn read(at: &At<'_>) -> Result<Self, ConfigError> {
        let Some(map) = at.value().as_object().filter(|m| m.len() == 1) else {
            return Err(
                at.error("must be an object with exactly one of `header`, `cookie`, `query`")
            );
        };
        let kind = map.keys().next().map(String::as_str).unwrap_or_default();
        let make = match kind {
            "header" => KeySource::Header,
            "cookie" => KeySource::Cookie,
            "query" => KeySource::Query,
            _ => {
                return Err(at.error(format!(
                    "unknown variant `{kind}`, expected one of `header`, `cookie`, `query`"
                )))
            }
        };
        let o = at.object("enum KeySource", &["header", "cookie", "query"])?;
        Ok(make(o.required(kind)?.string()?))
    }
}

impl RoutingConfig {
    fn read(at: &At<'_>) -> Result<Self, ConfigError> {
        let o = at.object(
            "struct RoutingConfig",
            &[
                "salt",
                "canary_basis_points",
                "key_sources",
                "fallback_to_request_id",
                "route_header",
                "route_values",
                "force_header",
                "exclude",
                "audience",
            ],
        )?;
        Ok(RoutingConfig {
            salt: o.or("salt", At::string, defaults::salt)?,
            canary_basis_points: o.or("canary_basis_points", At::u16, || 0)?,
            key_sources: o.or("key_sources", |a| a.list(KeySource::read), Vec::new)?,
            fallback_to_request_id: o.or("fallback_to_request_id", At::bool, defaults::yes)?,
            route_header: o.or("route_header", At::string, defaults::route_header)?,
            route_values: o.or("route_values", RouteValues::read, RouteValues::default)?,
            force_header: o.or("force_header", ForceHeader::read, ForceHeader::default)?,
            exclude: o.or("exclude", Exclusions::read, Exclusions::default)?,
            audience: o.opt("audience", AudienceConfig::read)?,
        })
    }
}

impl RouteValues {
    fn read(at: &At<'_>) -> Result<Self, ConfigError> {
        let o = at.object("struct RouteValues", &["stable", "canary"])?;
        Ok(RouteValues {
            stable: o.or("stable", At::string, defaults::stable_value)?,
            canary: o.or("canary", At::string, defaults::canary_value)?,
        })
    }
}

impl ForceHeader {
    fn read(at: &At<'_>) -> Result<Self, ConfigError> {
        let o = at.object("struct ForceHeader", &["enabled", "name"])?;
        Ok(ForceHeader {
            enabled: o.or("enabled", At::bool, || false)?,
            name: o.or("name", At::string, defaults::force_header)?,
        })
    }
}

impl Exclusions {
    fn read(at: &At<'_>) -> Result<Self, ConfigError> {
        let o = at.object("struct Exclusions", &["path_prefixes", "hosts"])?;
        Ok(Exclusions {
            path_prefixes: strings(&o, "path_prefixes")?,
            hosts: strings(&o, "hosts")?,
        })
    }
}

/// An optional list of strings (empty when absent).
fn strings(o: &Obj<'_>, name: &str) -> Result<Vec<String>, ConfigError> {
    o.or(name, |a| a.list(At::string), Vec::new)
}

impl Strategy {
    fn read(at: &At<'_>) -> Result<Self, ConfigError> {
        at.variant(&[("strict", Strategy::Strict), ("degrade", Strategy::Degrade)])
    }
}

impl ClassConfig {
    fn read(at: &At<'_>) -> Result<Self, ConfigError> {
        let o = at.object(
            "struct ClassConfig",
            &[
                "p99_max_ns",
                "p99_max_ms",
                "window_ms",
                "min_samples",
                "strategy",
            ],
        )?;
        Ok(ClassConfig {
            p99_max_ns: o.opt("p99_max_ns", At::u64)?,
            p99_max_ms: o.opt("p99_max_ms", At::u64)?,
            window_ms: o.or("window_ms", At::u32, defaults::window_ms)?,
            min_samples: o.or("min_samples", At::u32, defaults::min_samples)?,
            strategy: o.or("strategy", Strategy::read, Strategy::default)?,
        })
    }
}

impl ClassesConfig {
    fn read(at: &At<'_>) -> Result<Self, ConfigError> {
        let o = at.object("struct ClassesConfig", &["R1", "W1", "C1"])?;
        Ok(ClassesConfig {
            r1: o.or("R1", ClassConfig::read, defaults::r1)?,
            w1: o.or("W1", ClassConfig::read, defaults::w1)?,
            c1: o.or("C1", ClassConfig::read, defaults::c1)?,
        })
    }
}

/// A class name: `R1`, `W1` or `C1`.
fn read_class(at: &At<'_>) -> Result<Class, ConfigError> {
    at.variant(&[("R1", Class::R1), ("W1", Class::W1), ("C1", Class::C1)])
}

impl HeaderMatch {
    pub(super) fn read(at: &At<'_>) -> Result<Self, ConfigError> {
        let o = at.object("struct HeaderMatch", &["name", "value"])?;
        Ok(HeaderMatch {
            name: o.required("name")?.string()?,
            value: o.opt("value", At::string)?,
        })
    }
}

impl ClassRule {
    fn read(at: &At<'_>) -> Result<Self, ConfigError> {
        let o = at.object("struct ClassRule", &["class", "path_prefix", "header"])?;
        Ok(ClassRule {
            class: read_class(&o.required("class")?)?,
            path_prefix: o.opt("path_prefix", At::string)?,
            header: o.opt("header", HeaderMatch::read)?,
        })
    }
}

impl AdmissionConfig {
    fn read(at: &At<'_>) -> Result<Self, ConfigError> {
        let o = at.object(
            "struct AdmissionConfig",
            &[
                "enabled",
                "shadow",
                "class_header",
                "trust_class_header",
                "default_class",
                "rules",
                "classes",
                "shed_status",
                "retry_after_s",
                "max_shed_fraction",
                "shed_step_fraction",
                "recover_ratio",
                "evaluation_interval_ms",
                "latency_sample_every",
            ],
        )?;
        Ok(AdmissionConfig {
            enabled: o.or("enabled", At::bool, defaults::yes)?,
            shadow: o.or("shadow", At::bool, || false)?,
            class_header: o.or("class_header", At::string, defaults::class_header)?,
            trust_class_header: o.or("trust_class_header", At::bool, || false)?,
            default_class: o.or("default_class", read_class, defaults::default_class)?,
            rules: o.or("rules", |a| a.list(ClassRule::read), Vec::new)?,
            classes: o.or("classes", ClassesConfig::read, ClassesConfig::default)?,
            shed_status: o.or("shed_status", At::u16, defaults::shed_status)?,
            retry_after_s: o.or("retry_after_s", At::u32, defaults::retry_after_s)?,
            max_shed_fraction: o.or("max_shed_fraction", At::f64, defaults::max_shed_fraction)?,
            shed_step_fraction: o.or(
                "shed_step_fraction",
                At::f64,
                defaults::shed_step_fraction,
            )?,
            recover_ratio: o.or("recover_ratio", At::f64, defaults::recover_ratio)?,
            evaluation_interval_ms: o.or(
                "evaluation_interval_ms",
                At::u32,
                defaults::evaluation_interval_ms,
            )?,
            latency_sample_every: o.or(
                "latency_sample_every",
                At::u16,
                defaults::latency_sample_every,
            )?,
        })
    }
}

impl AudienceConfig {
    fn read(at: &At<'_>) -> Result<Self, ConfigError> {
        let o = at.object(
            "struct AudienceConfig",
            &["headers", "cookies", "bucket_ranges"],
        )?;
        Ok(AudienceConfig {
            headers: o.or("headers", |a| a.list(HeaderMatch::read), Vec::new)?,
            cookies: o.or("cookies", |a| a.list(CookieMatch::read), Vec::new)?,
            bucket_ranges: o.or("bucket_ranges", |a| a.list(BucketRange::read), Vec::new)?,
        })
    }
}

impl CookieMatch {
    fn read(at: &At<'_>) -> Result<Self, ConfigError> {
        let o = at.object("struct CookieMatch", &["name", "value"])?;
        Ok(CookieMatch {
            name: o.required("name")?.string()?,
            value: o.opt("value", At::string)?,
        })
    }
}

impl BucketRange {
    fn read(at: &At<'_>) -> Result<Self, ConfigError> {
        let o = at.object("struct BucketRange", &["from", "to"])?;
        Ok(BucketRange {
            from: o.required("from")?.u16()?,
            to: o.required("to")?.u16()?,
        })
    }
}

impl FlagsConfig {
    fn read(at: &At<'_>) -> Result<Self, ConfigError> {
        let o = at.object("struct FlagsConfig", &["header", "items"])?;
        Ok(FlagsConfig {
            header: o.or("header", At::string, defaults::flags_header)?,
            items: o.or("items", |a| a.list(FlagConfig::read), Vec::new)?,
        })
    }
}

impl FlagConfig {
    fn read(at: &At<'_>) -> Result<Self, ConfigError> {
        let o = at.object("struct FlagConfig", &["name", "basis_points"])?;
        Ok(FlagConfig {
            name: o.required("name")?.string()?,
            basis_points: o.required("basis_points")?.u16()?,
        })
    }
}
