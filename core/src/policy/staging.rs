//! Validation of the promotion-gate sections: the staging audience and feature flags.

use super::{check_len, header_name, token};
use crate::bucket::BUCKETS;
use crate::config::{AudienceConfig, BucketRange, ConfigError, FlagsConfig};
use crate::flags::{Flag, Flags, MAX_FLAGS, MAX_FLAG_NAME_BYTES};

/// Longest accepted audience header or cookie value, bytes.
pub const MAX_MATCH_VALUE_BYTES: usize = 1024;

/// A validated header or cookie condition of the audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudienceMatch {
    /// Header name (lowercased) or cookie name (as written).
    pub name: String,
    /// Exact value required; `None`: present with any value.
    pub value: Option<String>,
}

impl AudienceMatch {
    /// Whether a found value (`None`: absent) satisfies this condition.
    pub fn accepts(&self, found: Option<&[u8]>) -> bool {
        match (found, &self.value) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(actual), Some(expected)) => actual == expected.as_bytes(),
        }
    }
}

/// The validated staging audience: a request matching any entry goes to canary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audience {
    /// Header conditions.
    pub headers: Vec<AudienceMatch>,
    /// Cookie conditions.
    pub cookies: Vec<AudienceMatch>,
    /// Routing-bucket ranges, each `from < to ≤ 10000`.
    pub bucket_ranges: Vec<BucketRange>,
}

/// Validate `routing.audience`.
pub(super) fn validate_audience(a: &AudienceConfig) -> Result<Audience, ConfigError> {
    const FIELD: &str = "routing.audience";
    if a.headers.is_empty() && a.cookies.is_empty() && a.bucket_ranges.is_empty() {
        return Err(ConfigError::new(
            FIELD,
            "needs at least one entry in headers, cookies or bucket_ranges (omit audience for none)",
        ));
    }
    check_len(&format!("{FIELD}.headers"), a.headers.len())?;
    check_len(&format!("{FIELD}.cookies"), a.cookies.len())?;
    check_len(&format!("{FIELD}.bucket_ranges"), a.bucket_ranges.len())?;
    let headers = conditions(
        &format!("{FIELD}.headers"),
        a.headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_deref())),
        header_name,
        |_| true,
    )?;
    let cookies = conditions(
        &format!("{FIELD}.cookies"),
        a.cookies
            .iter()
            .map(|c| (c.name.as_str(), c.value.as_deref())),
        token,
        is_cookie_octet,
    )?;
    for (i, r) in a.bucket_ranges.iter().enumerate() {
        let field = format!("{FIELD}.bucket_ranges[{i}]");
        if r.from >= BUCKETS {
            return Err(ConfigError::new(
                format!("{field}.from"),
                format!("must be 0..10000, got {}", r.from),
            ));
        }
        if r.to > BUCKETS {
            return Err(ConfigError::new(
                format!("{field}.to"),
                format!("must be at most 10000, got {}", r.to),
            ));
        }
        if r.to <= r.from {
            return Err(ConfigError::new(
                format!("{field}.to"),
                format!(
                    "must be greater than from ({}): the range [from, to) is half-open, got {}",
                    r.from, r.to
                ),
            ));
        }
    }
    Ok(Audience {
        headers,
        cookies,
        bucket_ranges: a.bucket_ranges.clone(),
    })
}

/// Validate the `(name, value)` conditions of list `field`: each name with `name`, each value
/// with [`match_value`] over the bytes `allowed`.
fn conditions<'a>(
    field: &str,
    entries: impl Iterator<Item = (&'a str, Option<&'a str>)>,
    name: fn(&str, &str) -> Result<String, ConfigError>,
    allowed: fn(u8) -> bool,
) -> Result<Vec<AudienceMatch>, ConfigError> {
    entries
        .enumerate()
        .map(|(i, (n, v))| {
            let entry = format!("{field}[{i}]");
            Ok(AudienceMatch {
                name: name(&format!("{entry}.name"), n)?,
                value: match_value(&entry, v, allowed)?,
            })
        })
        .collect()
}

/// Validate an optional exact value of `field` (at most 1 KiB, every byte `allowed`).
fn match_value(
    field: &str,
    value: Option<&str>,
    allowed: fn(u8) -> bool,
) -> Result<Option<String>, ConfigError> {
    let Some(v) = value else {
        return Ok(None);
    };
    if v.len() > MAX_MATCH_VALUE_BYTES || !v.bytes().all(allowed) {
        return Err(ConfigError::new(
            format!("{field}.value"),
            format!(
                "must be at most {MAX_MATCH_VALUE_BYTES} bytes of permitted characters, got {} bytes",
                v.len()
            ),
        ));
    }
    Ok(Some(v.to_string()))
}

/// RFC 6265 `cookie-octet`: what a cookie value the filter can match may contain.
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

/// Request headers the flags header may not be: the filter removes and rewrites it, and
/// these carry the request's framing, identity or routing key fallback.
const PROTECTED_HEADERS: [&str; 10] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "cookie",
    "authorization",
    crate::limits::REQUEST_ID_HEADER,
];

/// Validate `flags`; `reserved` are the header names it must not reuse, with their fields.
pub(super) fn validate_flags(
    f: &FlagsConfig,
    reserved: &[(&str, &str)],
) -> Result<Flags, ConfigError> {
    let header = header_name("flags.header", &f.header)?;
    if PROTECTED_HEADERS.contains(&header.as_str()) {
        return Err(ConfigError::new(
            "flags.header",
            format!("{header:?} is a protocol or identity header the filter must not rewrite"),
        ));
    }
    for (field, name) in reserved {
        if header == *name {
            return Err(ConfigError::new(
                "flags.header",
                format!("must differ from {field} ({name:?})"),
            ));
        }
    }
    if f.items.len() > MAX_FLAGS {
        return Err(ConfigError::new(
            "flags.items",
            format!("has {} entries, at most {MAX_FLAGS} allowed", f.items.len()),
        ));
    }
    let mut items: Vec<Flag> = Vec::with_capacity(f.items.len());
    for (i, item) in f.items.iter().enumerate() {
        let field = format!("flags.items[{i}]");
        let name = item.name.as_str();
        let well_formed = name.len() <= MAX_FLAG_NAME_BYTES
            && name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            });
        if !well_formed {
            let shown: String = name.chars().take(80).collect();
            return Err(ConfigError::new(
                format!("{field}.name"),
                format!(
                    "must match [a-z0-9][a-z0-9._-]* and be 1..={MAX_FLAG_NAME_BYTES} bytes, got {shown:?} ({} bytes)",
                    name.len()
                ),
            ));
        }
        if item.basis_points > BUCKETS {
            return Err(ConfigError::new(
                format!("{field}.basis_points"),
                format!("must be 0..=10000, got {}", item.basis_points),
            ));
        }
        let flag = Flag::new(name, item.basis_points);
        if let Some(j) = items.iter().position(|other| other.name == flag.name) {
            return Err(ConfigError::new(
                format!("{field}.name"),
                format!("duplicates flags.items[{j}].name ({name:?})"),
            ));
        }
        // Distinct names with equal constants would be the same flag; refuse rather than alias.
        if let Some(j) = items
            .iter()
            .position(|other| other.constant == flag.constant)
        {
            return Err(ConfigError::new(
                format!("{field}.name"),
                format!("hashes to the same flag constant as flags.items[{j}].name; rename one"),
            ));
        }
        items.push(flag);
    }
    Ok(Flags { header, items })
}

#[cfg(test)]
mod tests;
