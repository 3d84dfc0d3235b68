//! The peer allow-list: which SPIFFE IDs may talk to this agent over mutual TLS.
//!
//! An entry is written `spiffe://<trust domain>/<path pattern>`. The pattern is matched segment
//! by segment: a literal segment matches itself, `*` matches exactly one segment, and `**` (only
//! as the last segment) matches one or more segments. So `spiffe://eu.knhk.test/region/*`
//! accepts `spiffe://eu.knhk.test/region/eu` but neither `spiffe://eu.knhk.test/region` nor
//! `spiffe://eu.knhk.test/region/eu/extra`, and `spiffe://eu.knhk.test/**` accepts every
//! workload of the trust domain. The trust domain always matches exactly.

use std::fmt;

use spiffe::{SpiffeId, TrustDomain};

/// One segment of a path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One,
    Rest,
}

/// One allow-list entry: a trust domain and a path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    trust_domain: TrustDomain,
    pattern: Vec<Segment>,
}

impl AllowEntry {
    /// Parse `spiffe://<trust domain>/<pattern>`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<AllowEntry, String> {
        let rest = text
            .strip_prefix("spiffe://")
            .ok_or_else(|| "must start with spiffe://".to_owned())?;
        let (td, path) = rest
            .split_once('/')
            .ok_or_else(|| "needs a path pattern after the trust domain (e.g. /**)".to_owned())?;
        let trust_domain =
            TrustDomain::new(td).map_err(|e| format!("{td:?} is not a trust domain: {e}"))?;
        let segments: Vec<&str> = path.split('/').collect();
        let mut pattern = Vec::with_capacity(segments.len());
        for (i, seg) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            pattern.push(match *seg {
                "" => return Err("empty path segment".to_owned()),
                "*" => Segment::One,
                "**" if last => Segment::Rest,
                "**" => return Err("** is only allowed as the last segment".to_owned()),
                s if s.contains('*') => {
                    return Err(format!("{s:?}: * and ** must be whole segments"))
                }
                s if s == "." || s == ".." => {
                    return Err(format!("{s:?} is not a valid path segment"))
                }
                s if !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) =>
                {
                    return Err(format!(
                        "{s:?}: SPIFFE path segments are made of A-Z a-z 0-9 . _ -"
                    ))
                }
                s => Segment::Literal(s.to_owned()),
            });
        }
        Ok(AllowEntry {
            trust_domain,
            pattern,
        })
    }

    /// Every workload of `trust_domain` (`spiffe://<td>/**`).
    pub fn whole_domain(trust_domain: TrustDomain) -> AllowEntry {
        AllowEntry {
            trust_domain,
            pattern: vec![Segment::Rest],
        }
    }

    /// Whether `id` is accepted by this entry.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        if !id.is_member_of(&self.trust_domain) {
            return false;
        }
        let path = id.path();
        let segments: Vec<&str> = path
            .strip_prefix('/')
            .map(|p| p.split('/').collect())
            .unwrap_or_default();
        let mut i = 0;
        for seg in &self.pattern {
            match seg {
                Segment::Rest => return i < segments.len(),
                Segment::One => {
                    if i >= segments.len() {
                        return false;
                    }
                }
                Segment::Literal(lit) => {
                    if segments.get(i) != Some(&lit.as_str()) {
                        return false;
                    }
                }
            }
            i += 1;
        }
        i == segments.len()
    }
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}", self.trust_domain)?;
        for seg in &self.pattern {
            match seg {
                Segment::Literal(s) => write!(f, "/{s}")?,
                Segment::One => f.write_str("/*")?,
                Segment::Rest => f.write_str("/**")?,
            }
        }
        Ok(())
    }
}

/// Whether any entry of `allow` accepts `id`.
pub fn allowed(allow: &[AllowEntry], id: &SpiffeId) -> bool {
    allow.iter().any(|e| e.matches(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::new(s).unwrap()
    }

    /// `*` matches one segment, `**` one or more, literals themselves, trust domains exactly.
    #[test]
    fn patterns_match_by_segment() {
        let region = AllowEntry::parse("spiffe://eu.knhk.test/region/*").unwrap();
        assert!(region.matches(&id("spiffe://eu.knhk.test/region/eu")));
        assert!(!region.matches(&id("spiffe://eu.knhk.test/region")));
        assert!(!region.matches(&id("spiffe://eu.knhk.test/region/eu/x")));
        assert!(!region.matches(&id("spiffe://eu.knhk.test/other/eu")));
        assert!(!region.matches(&id("spiffe://us.knhk.test/region/eu")));
        assert!(!region.matches(&id("spiffe://eu.knhk.test.evil/region/eu")));
        let all = AllowEntry::parse("spiffe://eu.knhk.test/**").unwrap();
        assert!(all.matches(&id("spiffe://eu.knhk.test/a")));
        assert!(all.matches(&id("spiffe://eu.knhk.test/a/b/c")));
        assert!(!all.matches(&id("spiffe://eu.knhk.test")));
        let exact = AllowEntry::parse("spiffe://eu.knhk.test/agent/eu-1").unwrap();
        assert!(exact.matches(&id("spiffe://eu.knhk.test/agent/eu-1")));
        assert!(!exact.matches(&id("spiffe://eu.knhk.test/agent/eu-2")));
        assert_eq!(exact.to_string(), "spiffe://eu.knhk.test/agent/eu-1");
        let default = AllowEntry::whole_domain(TrustDomain::new("eu.knhk.test").unwrap());
        assert_eq!(default, all);
    }

    /// Malformed entries are refused with a reason.
    #[test]
    fn malformed_entries_are_refused() {
        for bad in [
            "eu.knhk.test/region/*",
            "spiffe://eu.knhk.test",
            "spiffe://EU KNHK/x",
            "spiffe://eu.knhk.test/a*",
            "spiffe://eu.knhk.test/**/x",
            "spiffe://eu.knhk.test//x",
            "spiffe://eu.knhk.test/../x",
            "spiffe://eu.knhk.test/a b",
        ] {
            assert!(AllowEntry::parse(bad).is_err(), "{bad}");
        }
    }
}
