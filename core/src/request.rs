//! Reading a request: routing key extraction (header → cookie → query → `x-request-id`),
//! exclusions and classification, all over raw header bytes.

use std::borrow::Cow;

use crate::class::Class;
use crate::host::RequestHeaders;
use crate::limits::{MAX_KEY_BYTES, REQUEST_ID_HEADER};
use crate::policy::{KeyFrom, Policy, Rule};

/// Where the routing key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// One of the configured sources, by index in `key_sources`.
    Source(usize),
    /// The `x-request-id` fallback (not sticky across requests).
    RequestId,
}

/// The routing key of a request, truncated to [`MAX_KEY_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingKey<'a> {
    /// Key bytes to hash.
    pub bytes: Cow<'a, [u8]>,
    /// Its source.
    pub origin: KeyOrigin,
}

/// Find the routing key: the first configured source that is present and non-empty, else
/// `x-request-id` when the fallback is enabled.
pub fn routing_key<'a>(policy: &Policy, req: &'a dyn RequestHeaders) -> Option<RoutingKey<'a>> {
    for (i, source) in policy.key_sources.iter().enumerate() {
        let found = match source {
            KeyFrom::Header(name) => req.header(name),
            KeyFrom::Cookie(name) => req
                .header("cookie")
                .and_then(|c| owned_slice(c, |c| cookie_value(c, name))),
            KeyFrom::Query(name) => req
                .header(":path")
                .and_then(|p| owned_slice(p, |p| query_value(p, name))),
        };
        if let Some(bytes) = found.filter(|b| !b.is_empty()) {
            return Some(RoutingKey {
                bytes: truncate(bytes),
                origin: KeyOrigin::Source(i),
            });
        }
    }
    if policy.fallback_to_request_id {
        if let Some(bytes) = req.header(REQUEST_ID_HEADER).filter(|b| !b.is_empty()) {
            return Some(RoutingKey {
                bytes: truncate(bytes),
                origin: KeyOrigin::RequestId,
            });
        }
    }
    None
}

/// Apply `f` to borrowed or owned bytes, keeping the borrow when possible.
fn owned_slice<'a>(
    value: Cow<'a, [u8]>,
    f: impl Fn(&[u8]) -> Option<&[u8]>,
) -> Option<Cow<'a, [u8]>> {
    match value {
        Cow::Borrowed(b) => f(b).map(Cow::Borrowed),
        Cow::Owned(v) => f(&v).map(|s| Cow::Owned(s.to_vec())),
    }
}

fn truncate(bytes: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    if bytes.len() <= MAX_KEY_BYTES {
        return bytes;
    }
    match bytes {
        Cow::Borrowed(b) => Cow::Borrowed(&b[..MAX_KEY_BYTES]),
        Cow::Owned(mut v) => {
            v.truncate(MAX_KEY_BYTES);
            Cow::Owned(v)
        }
    }
}

/// The value of cookie `name` in a `cookie` header (`a=1; b=2`), raw (not decoded).
/// Cookie names are case-sensitive; surrounding whitespace is ignored; a value in double
/// quotes has them stripped.
pub fn cookie_value<'h>(header: &'h [u8], name: &str) -> Option<&'h [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (k, v) = (&pair[..eq], &pair[eq + 1..]);
        if k.trim_ascii() != name.as_bytes() {
            return None;
        }
        let v = v.trim_ascii();
        Some(match v {
            [b'"', inner @ .., b'"'] => inner,
            _ => v,
        })
    })
}

/// The value of query parameter `name` in a `:path` (`/p?a=1&b=2#frag`), raw (not
/// percent-decoded). A parameter without `=` has an empty value.
pub fn query_value<'p>(path: &'p [u8], name: &str) -> Option<&'p [u8]> {
    let start = path.iter().position(|&b| b == b'?')? + 1;
    let query = &path[start..];
    let query = match query.iter().position(|&b| b == b'#') {
        Some(end) => &query[..end],
        None => query,
    };
    query.split(|&b| b == b'&').find_map(|param| {
        let (k, v) = match param.iter().position(|&b| b == b'=') {
            Some(eq) => (&param[..eq], &param[eq + 1..]),
            None => (param, &param[param.len()..]),
        };
        (k == name.as_bytes()).then_some(v)
    })
}

/// True when the request belongs to the staging audience: any configured header or cookie
/// condition holds, or the routing bucket (`None` without a routing key) lies in a configured
/// range. Reads the `cookie` header only when cookie conditions exist, and no header at all
/// when there is no audience or only bucket ranges.
pub fn in_audience(policy: &Policy, req: &dyn RequestHeaders, routing_bucket: Option<u16>) -> bool {
    let Some(audience) = &policy.audience else {
        return false;
    };
    if let Some(bucket) = routing_bucket {
        if audience.bucket_ranges.iter().any(|r| r.contains(bucket)) {
            return true;
        }
    }
    if audience
        .headers
        .iter()
        .any(|h| h.accepts(req.header(&h.name).as_deref()))
    {
        return true;
    }
    if audience.cookies.is_empty() {
        return false;
    }
    let Some(cookie) = req.header("cookie") else {
        return false;
    };
    audience
        .cookies
        .iter()
        .any(|c| c.accepts(cookie_value(&cookie, &c.name)))
}

/// True when the request must be left untouched (excluded path prefix or host).
pub fn is_excluded(policy: &Policy, req: &dyn RequestHeaders) -> bool {
    if !policy.exclude_path_prefixes.is_empty() {
        if let Some(path) = req.header(":path") {
            if policy
                .exclude_path_prefixes
                .iter()
                .any(|p| path.starts_with(p.as_bytes()))
            {
                return true;
            }
        }
    }
    if !policy.exclude_hosts.is_empty() {
        if let Some(authority) = req.header(":authority") {
            let host = host_without_port(&authority);
            if policy
                .exclude_hosts
                .iter()
                .any(|h| h.as_bytes().eq_ignore_ascii_case(host))
            {
                return true;
            }
        }
    }
    false
}

/// Strip a `:port` suffix from an authority (IPv6 literals in brackets are kept whole).
fn host_without_port(authority: &[u8]) -> &[u8] {
    if authority.first() == Some(&b'[') {
        return match authority.iter().position(|&b| b == b']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.iter().rposition(|&b| b == b':') {
        Some(colon) => &authority[..colon],
        None => authority,
    }
}

/// Classify a request: a trusted explicit class header wins, then the first matching rule,
/// then the default class. An unparseable class header is ignored, not an error.
pub fn classify(policy: &Policy, req: &dyn RequestHeaders) -> Class {
    if policy.trust_class_header {
        if let Some(class) = req
            .header(&policy.class_header)
            .and_then(|v| Class::parse(&v))
        {
            return class;
        }
    }
    policy
        .rules
        .iter()
        .find(|rule| rule_matches(rule, req))
        .map_or(policy.default_class, |rule| rule.class)
}

fn rule_matches(rule: &Rule, req: &dyn RequestHeaders) -> bool {
    if let Some(prefix) = &rule.path_prefix {
        match req.header(":path") {
            Some(path) if path.starts_with(prefix.as_bytes()) => {}
            _ => return false,
        }
    }
    if let Some((name, value)) = &rule.header {
        match (req.header(name), value) {
            (None, _) => return false,
            (Some(_), None) => {}
            (Some(actual), Some(expected)) if *actual == *expected.as_bytes() => {}
            (Some(_), Some(_)) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FakeRequest;

    fn policy(json: &str) -> Policy {
        Policy::from_json(json.as_bytes()).unwrap()
    }

    const SOURCES: &str =
        r#"{"routing":{"key_sources":[{"header":"X-User"},{"cookie":"uid"},{"query":"u"}]}}"#;

    /// Key sources are tried header → cookie → query → x-request-id, in configured order.
    #[test]
    fn key_sources_are_tried_in_order() {
        let p = policy(SOURCES);
        let all = FakeRequest::get("/a?u=q1")
            .with("x-user", "h1")
            .with("cookie", "uid=c1")
            .with("x-request-id", "r1");
        let key = routing_key(&p, &all).unwrap();
        assert_eq!(
            (&*key.bytes, key.origin),
            (&b"h1"[..], KeyOrigin::Source(0))
        );

        let no_header = FakeRequest::get("/a?u=q1").with("cookie", "uid=c1");
        let key = routing_key(&p, &no_header).unwrap();
        assert_eq!(
            (&*key.bytes, key.origin),
            (&b"c1"[..], KeyOrigin::Source(1))
        );

        let query_only = FakeRequest::get("/a?x=1&u=q1").with("cookie", "other=c1");
        let key = routing_key(&p, &query_only).unwrap();
        assert_eq!(
            (&*key.bytes, key.origin),
            (&b"q1"[..], KeyOrigin::Source(2))
        );

        let fallback = FakeRequest::get("/a").with("x-request-id", "r1");
        let key = routing_key(&p, &fallback).unwrap();
        assert_eq!(
            (&*key.bytes, key.origin),
            (&b"r1"[..], KeyOrigin::RequestId)
        );

        assert!(routing_key(&p, &FakeRequest::get("/a")).is_none());
    }

    /// Empty header, cookie and query values do not count as keys.
    #[test]
    fn empty_values_fall_through() {
        let p = policy(SOURCES);
        let req = FakeRequest::get("/a?u=")
            .with("x-user", "")
            .with("cookie", "uid=")
            .with("x-request-id", "r");
        assert_eq!(routing_key(&p, &req).unwrap().origin, KeyOrigin::RequestId);
    }

    /// Without the fallback, x-request-id is never used as a key.
    #[test]
    fn fallback_can_be_disabled() {
        let p = policy(
            r#"{"routing":{"key_sources":[{"header":"x-user"}],"fallback_to_request_id":false}}"#,
        );
        assert!(routing_key(&p, &FakeRequest::get("/").with("x-request-id", "r")).is_none());
    }

    /// A 70 KB key is hashed as its first MAX_KEY_BYTES bytes.
    #[test]
    fn long_keys_are_truncated() {
        let p = policy(SOURCES);
        let long = vec![b'k'; 70_000];
        let req = FakeRequest::get("/").with("x-user", &long);
        assert_eq!(routing_key(&p, &req).unwrap().bytes.len(), MAX_KEY_BYTES);
    }

    /// Cookie parsing finds exact names and survives quotes, empty pairs and non-UTF-8 bytes.
    #[test]
    fn cookie_parsing() {
        assert_eq!(cookie_value(b"a=1; uid=42; b=2", "uid"), Some(&b"42"[..]));
        assert_eq!(cookie_value(b"uid=\"q\"", "uid"), Some(&b"q"[..]));
        assert_eq!(cookie_value(b"UID=1", "uid"), None);
        assert_eq!(cookie_value(b"uidx=1; xuid=2", "uid"), None);
        assert_eq!(cookie_value(b";;;=;uid", "uid"), None);
        assert_eq!(
            cookie_value(b"\xff\xfe=1; uid=\xff", "uid"),
            Some(&b"\xff"[..])
        );
        assert_eq!(cookie_value(b"", "uid"), None);
    }

    /// Query parsing finds exact names, stops at the fragment and survives junk separators.
    #[test]
    fn query_parsing() {
        assert_eq!(query_value(b"/p?a=1&u=2", "u"), Some(&b"2"[..]));
        assert_eq!(query_value(b"/p?u=2#frag", "u"), Some(&b"2"[..]));
        assert_eq!(query_value(b"/p?u", "u"), Some(&b""[..]));
        assert_eq!(query_value(b"/p?uu=1&xu=2", "u"), None);
        assert_eq!(query_value(b"/p", "u"), None);
        assert_eq!(query_value(b"/p?&&&==&u=%41", "u"), Some(&b"%41"[..]));
    }

    /// Exclusions match path prefixes and hosts (case-insensitive, port stripped).
    #[test]
    fn exclusions_by_path_and_host() {
        let p = policy(
            r#"{"routing":{"exclude":{"path_prefixes":["/healthz"],"hosts":["Internal.Example"]}}}"#,
        );
        assert!(is_excluded(&p, &FakeRequest::get("/healthz/live")));
        assert!(!is_excluded(&p, &FakeRequest::get("/health")));
        assert!(is_excluded(
            &p,
            &FakeRequest::get("/").with(":authority", "internal.example:8080")
        ));
        assert!(is_excluded(
            &p,
            &FakeRequest::get("/").with(":authority", "INTERNAL.example")
        ));
        assert!(!is_excluded(
            &p,
            &FakeRequest::get("/").with(":authority", "internal.example.com")
        ));
        assert_eq!(host_without_port(b"[::1]:80"), b"[::1]");
    }

    /// A trusted class header beats rules, rules apply in order, the default is last.
    #[test]
    fn classification_order() {
        let p = policy(
            r#"{"admission":{"trust_class_header":true,"rules":[{"class":"R1","path_prefix":"/hot"},{"class":"C1","header":{"name":"X-Batch","value":"yes"}},{"class":"R1","path_prefix":"/both","header":{"name":"x-vip"}}]}}"#,
        );
        assert_eq!(classify(&p, &FakeRequest::get("/hot/x")), Class::R1);
        assert_eq!(
            classify(&p, &FakeRequest::get("/x").with("x-batch", "yes")),
            Class::C1
        );
        assert_eq!(
            classify(&p, &FakeRequest::get("/x").with("x-batch", "no")),
            Class::W1
        );
        assert_eq!(classify(&p, &FakeRequest::get("/both")), Class::W1);
        assert_eq!(
            classify(&p, &FakeRequest::get("/both").with("x-vip", "")),
            Class::R1
        );
        // A trusted class header wins over rules; garbage in it is ignored.
        assert_eq!(
            classify(&p, &FakeRequest::get("/hot").with("x-knhk-class", "c1")),
            Class::C1
        );
        assert_eq!(
            classify(&p, &FakeRequest::get("/hot").with("x-knhk-class", b"\xff")),
            Class::R1
        );
    }

    /// An untrusted class header cannot pick the class, and untrusted is the default.
    #[test]
    fn untrusted_class_header_is_ignored() {
        for doc in [r#"{"admission":{"trust_class_header":false}}"#, "{}"] {
            let p = policy(doc);
            assert!(!p.trust_class_header, "{doc}");
            assert_eq!(
                classify(&p, &FakeRequest::get("/").with("x-knhk-class", "R1")),
                Class::W1,
                "{doc}"
            );
        }
    }
}
