//! decide() with a staging audience and feature flags: precedence, range edges, header reads.

use super::*;
use crate::bucket::buckets;
use crate::host::FakeRequest;
use proptest::prelude::*;
use std::borrow::Cow;
use std::cell::RefCell;

fn policy(json: &str) -> Policy {
    Policy::from_json(json.as_bytes()).unwrap()
}

const AUDIENCE: &str = r#"{"routing":{"salt":"s","canary_basis_points":0,
    "key_sources":[{"header":"x-user"}],"force_header":{"enabled":true},
    "exclude":{"path_prefixes":["/healthz"]},
    "audience":{"headers":[{"name":"X-Beta","value":"yes"},{"name":"x-staff"}],
                "cookies":[{"name":"beta","value":"yes"},{"name":"tester"}]}}}"#;

fn route_of(p: &Policy, req: &FakeRequest) -> (Option<Route>, RouteReason) {
    let d = decide(p, &[0; 3], req);
    (d.route, d.reason)
}

/// Header and cookie matches (exact value or presence) go canary at weight 0; near misses stay stable.
#[test]
fn audience_headers_and_cookies_go_canary_at_weight_zero() {
    let p = policy(AUDIENCE);
    let canary = (Some(Route::Canary), RouteReason::Audience);
    let stable = (Some(Route::Stable), RouteReason::Weighted);
    let base = || FakeRequest::get("/").with("x-user", "u1");
    assert_eq!(route_of(&p, &base().with("x-beta", "yes")), canary);
    assert_eq!(route_of(&p, &base().with("x-beta", "YES")), stable);
    assert_eq!(route_of(&p, &base().with("x-beta", "")), stable);
    assert_eq!(route_of(&p, &base().with("x-staff", "")), canary);
    assert_eq!(
        route_of(&p, &base().with("cookie", "a=1; beta=yes")),
        canary
    );
    assert_eq!(route_of(&p, &base().with("cookie", "beta=\"yes\"")), canary);
    assert_eq!(
        route_of(&p, &base().with("cookie", "beta=no; Beta=yes")),
        stable
    );
    assert_eq!(route_of(&p, &base().with("cookie", "tester=")), canary);
    assert_eq!(route_of(&p, &base().with("cookie", "testers=1")), stable);
    assert_eq!(route_of(&p, &base()), stable);
    // Header and cookie conditions need no routing key.
    assert_eq!(
        route_of(&p, &FakeRequest::get("/").with("x-beta", "yes")),
        canary
    );
    assert_eq!(
        route_of(&p, &FakeRequest::get("/")),
        (Some(Route::Stable), RouteReason::NoKey)
    );
}

/// Precedence is exclusions > force header > audience > weight.
#[test]
fn precedence_exclusion_force_audience_weight() {
    let p = policy(AUDIENCE);
    let member = |path: &str| {
        FakeRequest::get(path)
            .with("x-user", "u1")
            .with("x-beta", "yes")
    };
    assert_eq!(
        route_of(&p, &member("/healthz")),
        (None, RouteReason::Excluded)
    );
    assert_eq!(
        route_of(&p, &member("/").with("x-knhk-canary", "never")),
        (Some(Route::Stable), RouteReason::Forced)
    );
    assert_eq!(
        route_of(&p, &member("/").with("x-knhk-canary", "maybe")),
        (Some(Route::Canary), RouteReason::Audience)
    );
    // At full weight an audience member is still reported as audience.
    let mut all = policy(AUDIENCE);
    all.canary_basis_points = 10_000;
    assert_eq!(
        route_of(&all, &member("/")),
        (Some(Route::Canary), RouteReason::Audience)
    );
    let d = decide(&all, &[0; 3], &member("/"));
    assert!(d
        .debug_header(1)
        .starts_with("route=canary;reason=audience;bucket="));
}

/// A key whose routing bucket under salt `s` satisfies `pred`.
fn key_with(pred: impl Fn(u16) -> bool) -> String {
    (0..200_000)
        .map(|i| format!("user-{i}"))
        .find(|k| pred(buckets(b"s", k.as_bytes()).routing))
        .unwrap()
}

/// Bucket ranges are half-open: `from` is in, `to` is out, and they need a routing key.
#[test]
fn bucket_range_edges_are_half_open() {
    let p = policy(
        r#"{"routing":{"salt":"s","key_sources":[{"header":"x-user"}],"fallback_to_request_id":false,
            "audience":{"bucket_ranges":[{"from":100,"to":103},{"from":9999,"to":10000}]}}}"#,
    );
    for (bucket, inside) in [
        (99, false),
        (100, true),
        (102, true),
        (103, false),
        (9998, false),
        (9999, true),
    ] {
        let key = key_with(|b| b == bucket);
        let expected = if inside {
            (Some(Route::Canary), RouteReason::Audience)
        } else {
            (Some(Route::Stable), RouteReason::Weighted)
        };
        assert_eq!(
            route_of(&p, &FakeRequest::get("/").with("x-user", &key)),
            expected,
            "bucket {bucket}"
        );
    }
    assert_eq!(
        route_of(&p, &FakeRequest::get("/")),
        (Some(Route::Stable), RouteReason::NoKey)
    );
}

proptest! {
    /// For any key, weight and range: canary ⇔ (bucket in [from, to) or bucket < weight).
    #[test]
    fn range_or_weight_decides(key in "[a-z0-9]{1,24}", bp in 0u16..=10_000,
                               from in 0u16..10_000, len in 1u16..=10_000) {
        let to = from.saturating_add(len).min(10_000);
        let p = policy(&format!(
            r#"{{"routing":{{"salt":"s","canary_basis_points":{bp},"key_sources":[{{"header":"x-user"}}],
                "audience":{{"bucket_ranges":[{{"from":{from},"to":{to}}}]}}}}}}"#
        ));
        let bucket = buckets(b"s", key.as_bytes()).routing;
        let d = decide(&p, &[0; 3], &FakeRequest::get("/").with("x-user", &key));
        let in_range = from <= bucket && bucket < to;
        prop_assert_eq!(d.route == Some(Route::Canary), in_range || bucket < bp);
        prop_assert_eq!(d.reason == RouteReason::Audience, in_range);
    }
}

/// A request double that records every header name read.
struct Recording(FakeRequest, RefCell<Vec<String>>);

impl RequestHeaders for Recording {
    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        self.1.borrow_mut().push(name.to_string());
        self.0.header(name)
    }
}

fn reads(json: &str) -> Vec<String> {
    let req = Recording(
        FakeRequest::get("/")
            .with("x-user", "u")
            .with("x-beta", "no"),
        RefCell::new(Vec::new()),
    );
    decide(&policy(json), &[0; 3], &req);
    let mut names = req.1.into_inner();
    names.sort();
    names.dedup();
    names
}

/// Without audience headers or cookies decide() reads no extra header; with them, only those.
#[test]
fn only_the_headers_the_policy_needs_are_read() {
    let plain = r#"{"routing":{"key_sources":[{"header":"x-user"}]}}"#;
    let ranges = r#"{"routing":{"key_sources":[{"header":"x-user"}],"audience":{"bucket_ranges":[{"from":0,"to":1}]}},
        "flags":{"items":[{"name":"a","basis_points":5000}]}}"#;
    assert_eq!(reads(plain), reads(ranges));
    let with_headers = r#"{"routing":{"key_sources":[{"header":"x-user"}],"audience":{"headers":[{"name":"x-beta"}]}}}"#;
    let extra: Vec<String> = reads(with_headers)
        .into_iter()
        .filter(|n| !reads(plain).contains(n))
        .collect();
    assert_eq!(extra, vec!["x-beta".to_string()]);
    let with_cookies = r#"{"routing":{"key_sources":[{"header":"x-user"}],"audience":{"cookies":[{"name":"b"}]}}}"#;
    let extra: Vec<String> = reads(with_cookies)
        .into_iter()
        .filter(|n| !reads(plain).contains(n))
        .collect();
    assert_eq!(extra, vec!["cookie".to_string()]);
}

/// The decision carries the key's on-flags; keyless and excluded requests carry none.
#[test]
fn decision_carries_the_on_flags() {
    let p = policy(
        r#"{"routing":{"salt":"s","key_sources":[{"header":"x-user"}],"fallback_to_request_id":false,
            "exclude":{"path_prefixes":["/healthz"]}},
            "flags":{"items":[{"name":"half","basis_points":5000},{"name":"all","basis_points":10000}]}}"#,
    );
    let mut seen_half = [false; 2];
    for i in 0..200 {
        let key = format!("k{i}");
        let d = decide(&p, &[0; 3], &FakeRequest::get("/").with("x-user", &key));
        let b = buckets(b"s", key.as_bytes());
        assert_eq!(d.flags, p.flags_on(Some(&b)));
        assert!(d.flags.contains(1));
        seen_half[usize::from(d.flags.contains(0))] = true;
        let excluded = decide(
            &p,
            &[0; 3],
            &FakeRequest::get("/healthz").with("x-user", &key),
        );
        assert!(excluded.flags.is_empty());
    }
    assert_eq!(
        seen_half,
        [true, true],
        "the 50 % flag is on for some keys and off for others"
    );
    assert!(decide(&p, &[0; 3], &FakeRequest::get("/")).flags.is_empty());
}
