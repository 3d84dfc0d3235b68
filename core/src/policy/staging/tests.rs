//! Validation of `routing.audience` and `flags`: normalized forms and every rejection path.

use crate::config::BucketRange;
use crate::flags::{flag_constant, Flag};
use crate::limits::{MAX_CONFIG_BYTES, MAX_LIST_ENTRIES};
use crate::policy::tests::assert_rejects;
use crate::policy::{AudienceMatch, Policy};

/// Without `audience` and `flags` the policy has neither (the default).
#[test]
fn default_has_no_audience_and_no_flags() {
    let p = Policy::from_json(b"{}").unwrap();
    assert_eq!((p.audience, p.flags), (None, None));
}

/// An audience is normalized: header names lowercased, cookie names kept, ranges as given.
#[test]
fn audience_is_normalized() {
    let p = Policy::from_json(
        br#"{"routing":{"audience":{"headers":[{"name":"X-Beta","value":"yes"},{"name":"x-staff"}],
            "cookies":[{"name":"Beta","value":"yes"}],"bucket_ranges":[{"from":0,"to":2500},{"from":9999,"to":10000}]}}}"#,
    )
    .unwrap();
    let a = p.audience.unwrap();
    assert_eq!(
        a.headers,
        vec![
            AudienceMatch {
                name: "x-beta".into(),
                value: Some("yes".into())
            },
            AudienceMatch {
                name: "x-staff".into(),
                value: None
            },
        ]
    );
    assert_eq!(
        a.cookies,
        vec![AudienceMatch {
            name: "Beta".into(),
            value: Some("yes".into())
        }]
    );
    assert_eq!(
        a.bucket_ranges,
        vec![
            BucketRange { from: 0, to: 2500 },
            BucketRange {
                from: 9999,
                to: 10000
            }
        ]
    );
}

/// Flags are normalized: header lowercased (default `x-knhk-flags`), constants precomputed.
#[test]
fn flags_are_normalized() {
    let p = Policy::from_json(
        br#"{"flags":{"items":[{"name":"new-checkout","basis_points":500},{"name":"dark-mode","basis_points":10000}]}}"#,
    )
    .unwrap();
    let f = p.flags.unwrap();
    assert_eq!(f.header, "x-knhk-flags");
    assert_eq!(
        f.items,
        vec![
            Flag::new("new-checkout", 500),
            Flag::new("dark-mode", 10_000)
        ]
    );
    assert_eq!(f.items[0].constant, flag_constant("new-checkout"));
    let p = Policy::from_json(br#"{"flags":{"header":"X-Flags"}}"#).unwrap();
    let f = p.flags.unwrap();
    assert_eq!((f.header.as_str(), f.items.len()), ("x-flags", 0));
}

/// Every audience rejection names its field path: empty audience, range edges, names, values.
#[test]
fn audience_rejections_name_the_field() {
    assert_rejects(
        r#"{"routing":{"audience":{}}}"#,
        "routing.audience",
        "at least one entry",
    );
    assert_rejects(
        r#"{"routing":{"audience":{"headers":[],"cookies":[],"bucket_ranges":[]}}}"#,
        "routing.audience",
        "at least one entry",
    );
    assert_rejects(
        r#"{"routing":{"audience":{"bucket_ranges":[{"from":0,"to":10001}]}}}"#,
        "routing.audience.bucket_ranges[0].to",
        "at most 10000",
    );
    assert_rejects(
        r#"{"routing":{"audience":{"bucket_ranges":[{"from":0,"to":1},{"from":5,"to":5}]}}}"#,
        "routing.audience.bucket_ranges[1].to",
        "greater than from (5)",
    );
    assert_rejects(
        r#"{"routing":{"audience":{"bucket_ranges":[{"from":7,"to":3}]}}}"#,
        "routing.audience.bucket_ranges[0].to",
        "greater than from",
    );
    assert_rejects(
        r#"{"routing":{"audience":{"bucket_ranges":[{"from":10000,"to":10000}]}}}"#,
        "routing.audience.bucket_ranges[0].from",
        "0..10000",
    );
    assert_rejects(
        r#"{"routing":{"audience":{"bucket_ranges":[{"from":0,"to":70000}]}}}"#,
        "routing.audience.bucket_ranges[0].to",
        "invalid value",
    );
    assert_rejects(
        r#"{"routing":{"audience":{"bucket_ranges":[{"from":0}]}}}"#,
        "routing.audience.bucket_ranges[0]",
        "missing field `to`",
    );
    assert_rejects(
        r#"{"routing":{"audience":{"headers":[{"name":"bad name"}]}}}"#,
        "routing.audience.headers[0].name",
        "token characters",
    );
    assert_rejects(
        r#"{"routing":{"audience":{"headers":[{"name":":path","value":"/"}]}}}"#,
        "routing.audience.headers[0].name",
        "token characters",
    );
    assert_rejects(
        r#"{"routing":{"audience":{"cookies":[{"name":"ok"},{"name":""}]}}}"#,
        "routing.audience.cookies[1].name",
        "token characters",
    );
    assert_rejects(
        r#"{"routing":{"audience":{"cookies":[{"name":"beta","value":"a;b"}]}}}"#,
        "routing.audience.cookies[0].value",
        "permitted characters",
    );
    let long_value = format!(
        r#"{{"routing":{{"audience":{{"headers":[{{"name":"x","value":"{}"}}]}}}}}}"#,
        "v".repeat(1025)
    );
    assert_rejects(
        &long_value,
        "routing.audience.headers[0].value",
        "at most 1024 bytes",
    );
    let many: Vec<String> = (0..=MAX_LIST_ENTRIES)
        .map(|i| format!(r#"{{"name":"h{i}"}}"#))
        .collect();
    assert_rejects(
        &format!(
            r#"{{"routing":{{"audience":{{"headers":[{}]}}}}}}"#,
            many.join(",")
        ),
        "routing.audience.headers",
        "at most 64 allowed",
    );
}

/// Unknown fields inside the new sections are refused with their path.
#[test]
fn unknown_fields_are_refused() {
    assert_rejects(
        r#"{"routing":{"audience":{"users":["a"]}}}"#,
        "routing.audience.users",
        "unknown field `users`",
    );
    assert_rejects(
        r#"{"routing":{"audience":{"bucket_ranges":[{"from":0,"to":1,"step":1}]}}}"#,
        "routing.audience.bucket_ranges[0].step",
        "unknown field `step`",
    );
    assert_rejects(
        r#"{"routing":{"audience":{"cookies":[{"name":"a","regex":"."}]}}}"#,
        "routing.audience.cookies[0].regex",
        "unknown field `regex`",
    );
    assert_rejects(
        r#"{"flags":{"enabled":true}}"#,
        "flags.enabled",
        "unknown field `enabled`",
    );
    assert_rejects(
        r#"{"flags":{"items":[{"name":"a","basis_points":1,"salt":"x"}]}}"#,
        "flags.items[0].salt",
        "unknown field `salt`",
    );
}

/// Every flags rejection names its field path: names, duplicates, ranges, count, header.
#[test]
fn flag_rejections_name_the_field() {
    for bad in ["New", "-a", ".a", "a b", "a/b", "", "ä"] {
        assert_rejects(
            &format!(r#"{{"flags":{{"items":[{{"name":"{bad}","basis_points":1}}]}}}}"#),
            "flags.items[0].name",
            "[a-z0-9][a-z0-9._-]*",
        );
    }
    assert_rejects(
        &format!(
            r#"{{"flags":{{"items":[{{"name":"{}","basis_points":1}}]}}}}"#,
            "a".repeat(65)
        ),
        "flags.items[0].name",
        "1..=64 bytes",
    );
    assert_rejects(
        r#"{"flags":{"items":[{"name":"a","basis_points":1},{"name":"b","basis_points":2},{"name":"a","basis_points":3}]}}"#,
        "flags.items[2].name",
        "duplicates flags.items[0].name",
    );
    assert_rejects(
        r#"{"flags":{"items":[{"name":"a","basis_points":10001}]}}"#,
        "flags.items[0].basis_points",
        "0..=10000",
    );
    assert_rejects(
        r#"{"flags":{"items":[{"name":"a","basis_points":70000}]}}"#,
        "flags.items[0].basis_points",
        "invalid value",
    );
    assert_rejects(
        r#"{"flags":{"items":[{"name":"a"}]}}"#,
        "flags.items[0]",
        "missing field `basis_points`",
    );
    let many: Vec<String> = (0..65)
        .map(|i| format!(r#"{{"name":"f{i}","basis_points":1}}"#))
        .collect();
    assert_rejects(
        &format!(r#"{{"flags":{{"items":[{}]}}}}"#, many.join(",")),
        "flags.items",
        "at most 64 allowed",
    );
    assert_rejects(
        r#"{"flags":{"header":"X-KNHK-Route"}}"#,
        "flags.header",
        "must differ from routing.route_header",
    );
    assert_rejects(
        r#"{"flags":{"header":"x-knhk-class"}}"#,
        "flags.header",
        "must differ from admission.class_header",
    );
    assert_rejects(
        r#"{"routing":{"force_header":{"enabled":true}},"flags":{"header":"x-knhk-canary"}}"#,
        "flags.header",
        "must differ from routing.force_header.name",
    );
    // A disabled force header reserves nothing.
    assert!(Policy::from_json(br#"{"flags":{"header":"x-knhk-canary"}}"#).is_ok());
    for protected in [
        "Host",
        "content-length",
        "cookie",
        "x-request-id",
        "authorization",
    ] {
        assert_rejects(
            &format!(r#"{{"flags":{{"header":"{protected}"}}}}"#),
            "flags.header",
            "must not rewrite",
        );
    }
    assert_rejects(
        r#"{"flags":{"header":"bad header"}}"#,
        "flags.header",
        "token characters",
    );
}

/// 64 flags with 64-byte names are accepted: the limits are inclusive.
#[test]
fn limits_are_inclusive() {
    let items: Vec<String> = (0..64)
        .map(|i| {
            format!(
                r#"{{"name":"{i:02}{}","basis_points":10000}}"#,
                "x".repeat(62)
            )
        })
        .collect();
    let p =
        Policy::from_json(format!(r#"{{"flags":{{"items":[{}]}}}}"#, items.join(",")).as_bytes())
            .unwrap();
    assert_eq!(p.flags.unwrap().items.len(), 64);
}

/// Hostile sizes: a 64 KiB name overflows the document limit; a 60 KiB one is refused by its
/// field with a short message (the name is not echoed in full).
#[test]
fn hostile_names_are_refused_briefly() {
    let huge = "a".repeat(64 * 1024);
    assert_rejects(
        &format!(r#"{{"flags":{{"items":[{{"name":"{huge}","basis_points":1}}]}}}}"#),
        "<document>",
        "exceeds the 65536-byte limit",
    );
    let big = "a".repeat(MAX_CONFIG_BYTES - 1024);
    for (json, field) in [
        (
            format!(r#"{{"flags":{{"items":[{{"name":"{big}","basis_points":1}}]}}}}"#),
            "flags.items[0].name",
        ),
        (
            format!(r#"{{"routing":{{"audience":{{"headers":[{{"name":"{big}"}}]}}}}}}"#),
            "routing.audience.headers[0].name",
        ),
        (
            format!(r#"{{"routing":{{"audience":{{"cookies":[{{"name":"{big}"}}]}}}}}}"#),
            "routing.audience.cookies[0].name",
        ),
    ] {
        let msg = Policy::from_json(json.as_bytes()).unwrap_err();
        assert_eq!(msg.field, field);
        assert!(
            msg.reason.len() < 300,
            "{field}: {} byte message",
            msg.reason.len()
        );
    }
}
