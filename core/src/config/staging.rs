//! The promotion-gate sections of the configuration: the staging audience (`routing.audience`)
//! and feature flags (`flags`).

use super::HeaderMatch;

/// The staging audience: a request matching any entry goes to canary.
#[derive(Debug, Clone, Default)]
pub struct AudienceConfig {
    /// Header conditions (name case-insensitive; no value: header present).
    pub headers: Vec<HeaderMatch>,
    /// Cookie conditions (name case-sensitive; no value: cookie present).
    pub cookies: Vec<CookieMatch>,
    /// Routing-bucket ranges; they need a routing key.
    pub bucket_ranges: Vec<BucketRange>,
}

/// A cookie condition of the audience.
#[derive(Debug, Clone)]
pub struct CookieMatch {
    /// Cookie name (case-sensitive).
    pub name: String,
    /// Exact value (after the quotes are stripped); absent means "cookie present".
    pub value: Option<String>,
}

/// A half-open range `[from, to)` of routing buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketRange {
    /// First bucket in the range.
    pub from: u16,
    /// First bucket after the range (at most 10000).
    pub to: u16,
}

impl BucketRange {
    /// True when `bucket` lies in `[from, to)`.
    pub fn contains(&self, bucket: u16) -> bool {
        self.from <= bucket && bucket < self.to
    }
}

/// Feature flags: each is on for the keys whose flag bucket is below its basis points.
#[derive(Debug, Clone)]
pub struct FlagsConfig {
    /// Request header the filter writes with the on-flags' names (any incoming one is removed).
    pub header: String,
    /// The flags, in the order their names appear in the header.
    pub items: Vec<FlagConfig>,
}

/// One feature flag.
#[derive(Debug, Clone)]
pub struct FlagConfig {
    /// Flag name: `[a-z0-9][a-z0-9._-]*`, at most 64 bytes, unique.
    pub name: String,
    /// Share of keys with the flag on, 0..=10000; raising it only adds keys.
    pub basis_points: u16,
}
