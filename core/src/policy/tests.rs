//! Every rejection path of config validation, each asserting the field and the message.

use super::*;
use crate::class::Route;

/// Parse `json` expecting a rejection; return its rendered message.
fn rejected(json: &str) -> String {
    match Policy::from_json(json.as_bytes()) {
        Ok(_) => panic!("accepted: {json}"),
        Err(e) => e.to_string(),
    }
}

pub(super) fn assert_rejects(json: &str, field: &str, reason_part: &str) {
    let msg = rejected(json);
    let prefix = format!("invalid knhk config: field `{field}`: ");
    assert!(
        msg.starts_with(&prefix),
        "{json}\n  got: {msg}\n  want prefix: {prefix}"
    );
    assert!(
        msg.contains(reason_part),
        "{json}\n  got: {msg}\n  want: {reason_part}"
    );
}

/// An empty config is valid and has the documented defaults.
#[test]
fn defaults_are_valid_and_sensible() {
    let p = Policy::from_json(b"").unwrap();
    assert_eq!(p, Policy::from_json(b"{}").unwrap());
    assert_eq!(p.canary_basis_points, 0);
    assert_eq!(p.budget(Class::R1).p99_max_ns, 100_000_000);
    assert_eq!(p.budget(Class::W1).p99_max_ns, 500_000_000);
    assert_eq!(p.budget(Class::C1).p99_max_ns, 5_000_000_000);
    assert_eq!(p.budget(Class::R1).recover_below_ns, 80_000_000);
    assert_eq!((p.max_shed_bp, p.shed_step_bp), (5_000, 1_000));
    assert_eq!(p.route_header, "x-knhk-route");
    assert_eq!(p.route_value(Route::Stable), "stable");
    assert_eq!(p.route_value(Route::Canary), "canary");
    assert_eq!(p.force_header, None);
    assert_eq!(p.shed_status, 503);
}

/// A class given without a budget keeps its default budget.
#[test]
fn a_class_without_a_budget_keeps_its_default() {
    let p =
        Policy::from_json(br#"{"admission":{"classes":{"W1":{"strategy":"degrade"}}}}"#).unwrap();
    assert_eq!(p.budget(Class::W1).p99_max_ns, 500_000_000);
    assert_eq!(p.budget(Class::W1).strategy, Strategy::Degrade);
}

/// R1 in ns and W1/C1 in ms, the older sidecar's units, are accepted.
#[test]
fn legacy_units_are_accepted() {
    let p = Policy::from_json(
        br#"{"admission":{"classes":{"R1":{"p99_max_ns":2000000},"W1":{"p99_max_ms":50},"C1":{"p99_max_ms":500}}}}"#,
    )
    .unwrap();
    assert_eq!(p.budget(Class::R1).p99_max_ns, 2_000_000);
    assert_eq!(p.budget(Class::W1).p99_max_ns, 50_000_000);
}

/// Header and host names are lowercased; cookie names keep their case.
#[test]
fn names_are_normalized() {
    let p = Policy::from_json(
        br#"{"routing":{"route_header":"X-Route","key_sources":[{"header":"X-User"},{"cookie":"Uid"}],"exclude":{"hosts":["A.Example"]}}}"#,
    )
    .unwrap();
    assert_eq!(p.route_header, "x-route");
    assert_eq!(
        p.key_sources,
        vec![
            KeyFrom::Header("x-user".into()),
            KeyFrom::Cookie("Uid".into())
        ]
    );
    assert_eq!(p.exclude_hosts, vec!["a.example".to_string()]);
}

/// Non-objects, syntax errors, trailing bytes, oversize and unknown fields are refused.
#[test]
fn document_level_rejections() {
    assert_rejects("not json", "<document>", "must be a JSON object");
    assert_rejects("{not json", "<document>", "key must be a string");
    assert_rejects("[]", "<document>", "must be a JSON object");
    assert_rejects("42", "<document>", "must be a JSON object");
    assert_rejects(r#"{"routing":{}}{"#, "<document>", "trailing");
    let huge = format!(
        r#"{{"version":1,"routing":{{"salt":"{}"}}}}"#,
        "a".repeat(MAX_CONFIG_BYTES)
    );
    assert_rejects(&huge, "<document>", "exceeds the 65536-byte limit");
    assert_rejects(r#"{"bogus":1}"#, "bogus", "unknown field `bogus`");
    // Duplicate keys are ambiguous (which one applies?): refused, at any depth.
    assert_rejects(
        r#"{"version":1,"version":2}"#,
        "version",
        "duplicate field `version`",
    );
    assert_rejects(
        r#"{"routing":{"canary_basis_points":0,"canary_basis_points":10000}}"#,
        "routing.canary_basis_points",
        "duplicate field `canary_basis_points`",
    );
}

/// Type errors and unknown fields name the full field path.
#[test]
fn type_and_unknown_field_rejections_name_the_path() {
    assert_rejects(
        r#"{"routing":{"canary_basis_points":"10"}}"#,
        "routing.canary_basis_points",
        "invalid type",
    );
    assert_rejects(
        r#"{"routing":{"canary_basis_points":-1}}"#,
        "routing.canary_basis_points",
        "invalid value",
    );
    assert_rejects(
        r#"{"routing":{"canary_basis_points":70000}}"#,
        "routing.canary_basis_points",
        "invalid value",
    );
    assert_rejects(
        r#"{"routing":{"weight":1}}"#,
        "routing.weight",
        "unknown field `weight`",
    );
    assert_rejects(
        r#"{"admission":{"classes":{"X1":{}}}}"#,
        "admission.classes.X1",
        "unknown field `X1`",
    );
    assert_rejects(
        r#"{"admission":{"default_class":"Z9"}}"#,
        "admission.default_class",
        "unknown variant",
    );
    assert_rejects(
        r#"{"fail_mode":"sideways"}"#,
        "fail_mode",
        "unknown variant",
    );
    assert_rejects(
        r#"{"routing":{"key_sources":[{"body":"x"}]}}"#,
        "routing.key_sources[0]",
        "unknown variant",
    );
    assert_rejects(
        r#"{"routing":{"key_sources":[{}]}}"#,
        "routing.key_sources[0]",
        "exactly one of `header`, `cookie`, `query`",
    );
    assert_rejects(
        r#"{"routing":{"key_sources":[{"header":"a","cookie":"b"}]}}"#,
        "routing.key_sources[0]",
        "exactly one of",
    );
    assert_rejects(
        r#"{"routing":{"key_sources":[{"header":5}]}}"#,
        "routing.key_sources[0].header",
        "invalid type: integer `5`, expected a string",
    );
    assert_rejects(
        r#"{"routing":{"key_sources":{"header":"a"}}}"#,
        "routing.key_sources",
        "invalid type: map, expected a sequence",
    );
    assert_rejects(
        r#"{"admission":{"max_shed_fraction":"half"}}"#,
        "admission.max_shed_fraction",
        "invalid type: string \"half\", expected f64",
    );
    assert_rejects(
        r#"{"control":null,"debug_headers":null}"#,
        "debug_headers",
        "invalid type: null, expected a boolean",
    );
}

/// Each invalid routing setting is refused with its field and reason.
#[test]
fn routing_rejections() {
    assert_rejects(
        r#"{"routing":{"salt":""}}"#,
        "routing.salt",
        "must be 1..=256 bytes",
    );
    assert_rejects(
        &format!(r#"{{"routing":{{"salt":"{}"}}}}"#, "s".repeat(257)),
        "routing.salt",
        "must be 1..=256 bytes",
    );
    assert_rejects(
        r#"{"routing":{"canary_basis_points":10001}}"#,
        "routing.canary_basis_points",
        "must be 0..=10000",
    );
    assert_rejects(
        r#"{"routing":{"key_sources":[{"header":"bad name"}]}}"#,
        "routing.key_sources[0]",
        "token characters",
    );
    assert_rejects(
        r#"{"routing":{"key_sources":[{"cookie":""}]}}"#,
        "routing.key_sources[0]",
        "token characters",
    );
    assert_rejects(
        r#"{"routing":{"key_sources":[{"header":"a"},{"query":"a=b"}]}}"#,
        "routing.key_sources[1]",
        "token characters",
    );
    let many: Vec<String> = (0..65).map(|i| format!(r#"{{"header":"h{i}"}}"#)).collect();
    assert_rejects(
        &format!(r#"{{"routing":{{"key_sources":[{}]}}}}"#, many.join(",")),
        "routing.key_sources",
        "has 65 entries, at most 64 allowed",
    );
    assert_rejects(
        r#"{"routing":{"key_sources":[],"fallback_to_request_id":false}}"#,
        "routing.key_sources",
        "no request could be keyed",
    );
    assert_rejects(
        r#"{"routing":{"route_values":{"canary":"v 2"}}}"#,
        "routing.route_values.canary",
        "token characters",
    );
    assert_rejects(
        r#"{"routing":{"route_values":{"stable":""}}}"#,
        "routing.route_values.stable",
        "token characters",
    );
    assert_rejects(
        r#"{"routing":{"route_values":{"stable":"v1","colour":"x"}}}"#,
        "routing.route_values.colour",
        "unknown field",
    );
    assert_rejects(
        r#"{"routing":{"route_header":"x:route"}}"#,
        "routing.route_header",
        "token characters",
    );
    assert_rejects(
        r#"{"routing":{"force_header":{"enabled":true,"name":"x\u0000y"}}}"#,
        "routing.force_header.name",
        "token characters",
    );
    assert_rejects(
        r#"{"routing":{"exclude":{"path_prefixes":["healthz"]}}}"#,
        "routing.exclude.path_prefixes[0]",
        "must start with '/'",
    );
    assert_rejects(
        r#"{"routing":{"exclude":{"hosts":["a b"]}}}"#,
        "routing.exclude.hosts[0]",
        "not a host name",
    );
    assert_rejects(
        r#"{"routing":{"exclude":{"hosts":[""]}}}"#,
        "routing.exclude.hosts[0]",
        "not a host name",
    );
}

/// A disabled force header's name is not validated.
#[test]
fn disabled_force_header_name_is_not_checked() {
    assert!(Policy::from_json(
        br#"{"routing":{"force_header":{"enabled":false,"name":"bad name"}}}"#
    )
    .is_ok());
}

/// Invalid class headers and rules are refused with their field and reason.
#[test]
fn admission_header_and_rule_rejections() {
    assert_rejects(
        r#"{"admission":{"class_header":"X-KNHK-ROUTE"}}"#,
        "admission.class_header",
        "must differ from routing.route_header",
    );
    assert_rejects(
        r#"{"admission":{"class_header":"é"}}"#,
        "admission.class_header",
        "token characters",
    );
    assert_rejects(
        r#"{"admission":{"rules":[{"class":"R1"}]}}"#,
        "admission.rules[0]",
        "needs path_prefix, header, or both",
    );
    assert_rejects(
        r#"{"admission":{"rules":[{"class":"R1","path_prefix":"hot"}]}}"#,
        "admission.rules[0].path_prefix",
        "must start with '/'",
    );
    assert_rejects(
        r#"{"admission":{"rules":[{"class":"R1","header":{"name":"a b"}}]}}"#,
        "admission.rules[0].header.name",
        "token characters",
    );
    assert_rejects(
        &format!(
            r#"{{"admission":{{"rules":[{{"class":"R1","header":{{"name":"a","value":"{}"}}}}]}}}}"#,
            "v".repeat(1025)
        ),
        "admission.rules[0].header.value",
        "must be at most 1024 bytes",
    );
}

/// Zero, ambiguous, oversized and inverted budgets and bad windows are refused.
#[test]
fn budget_rejections() {
    assert_rejects(
        r#"{"admission":{"classes":{"R1":{"p99_max_ns":1,"p99_max_ms":1}}}}"#,
        "admission.classes.R1",
        "either p99_max_ns or p99_max_ms, not both",
    );
    assert_rejects(
        r#"{"admission":{"classes":{"R1":{"p99_max_ns":0}}}}"#,
        "admission.classes.R1",
        "must be greater than zero",
    );
    assert_rejects(
        r#"{"admission":{"classes":{"C1":{"p99_max_ms":3600001}}}}"#,
        "admission.classes.C1",
        "exceeds one hour",
    );
    assert_rejects(
        r#"{"admission":{"classes":{"R1":{"p99_max_ms":600}}}}"#,
        "admission.classes.W1",
        "tighter than R1's 600000000 ns",
    );
    assert_rejects(
        r#"{"admission":{"classes":{"R1":{"p99_max_ms":1},"W1":{"p99_max_ms":2},"C1":{"p99_max_ns":1000}}}}"#,
        "admission.classes.C1",
        "tighter than a hotter class",
    );
    assert_rejects(
        r#"{"admission":{"classes":{"R1":{"p99_max_ms":1,"window_ms":99}}}}"#,
        "admission.classes.R1.window_ms",
        "must be 100..=3600000, got 99",
    );
    assert_rejects(
        r#"{"admission":{"classes":{"R1":{"p99_max_ms":1,"window_ms":3600001}}}}"#,
        "admission.classes.R1.window_ms",
        "got 3600001",
    );
    assert_rejects(
        r#"{"admission":{"classes":{"R1":{"p99_max_ms":1,"min_samples":0}}}}"#,
        "admission.classes.R1.min_samples",
        "a window without samples cannot observe a p99",
    );
}

/// Out-of-range shed status, fractions, ratio, intervals and tick are refused.
#[test]
fn shedding_knob_rejections() {
    assert_rejects(
        r#"{"admission":{"shed_status":200}}"#,
        "admission.shed_status",
        "4xx or 5xx status, got 200",
    );
    assert_rejects(
        r#"{"admission":{"shed_status":600}}"#,
        "admission.shed_status",
        "got 600",
    );
    assert_rejects(
        r#"{"admission":{"retry_after_s":3601}}"#,
        "admission.retry_after_s",
        "at most 3600",
    );
    assert_rejects(
        r#"{"admission":{"max_shed_fraction":0}}"#,
        "admission.max_shed_fraction",
        "must be in (0, 1], got 0",
    );
    assert_rejects(
        r#"{"admission":{"max_shed_fraction":1.5}}"#,
        "admission.max_shed_fraction",
        "got 1.5",
    );
    assert_rejects(
        r#"{"admission":{"shed_step_fraction":-0.1}}"#,
        "admission.shed_step_fraction",
        "got -0.1",
    );
    assert_rejects(
        r#"{"admission":{"shed_step_fraction":0.00001}}"#,
        "admission.shed_step_fraction",
        "below the 0.0001 resolution",
    );
    assert_rejects(
        r#"{"admission":{"max_shed_fraction":0.2,"shed_step_fraction":0.3}}"#,
        "admission.shed_step_fraction",
        "must not exceed admission.max_shed_fraction",
    );
    assert_rejects(
        r#"{"admission":{"recover_ratio":1}}"#,
        "admission.recover_ratio",
        "must be in (0, 1) for hysteresis",
    );
    assert_rejects(
        r#"{"admission":{"recover_ratio":0}}"#,
        "admission.recover_ratio",
        "got 0",
    );
    assert_rejects(
        r#"{"admission":{"evaluation_interval_ms":5}}"#,
        "admission.evaluation_interval_ms",
        "must be 10..=10000",
    );
    assert_rejects(
        r#"{"admission":{"evaluation_interval_ms":2000,"classes":{"R1":{"p99_max_ms":1,"window_ms":1000}}}}"#,
        "admission.evaluation_interval_ms",
        "must be 10..=1000 (at most the shortest class window), got 2000",
    );
    assert_rejects(
        r#"{"admission":{"latency_sample_every":0}}"#,
        "admission.latency_sample_every",
        "must be 1..=64 (1 times every request), got 0",
    );
    assert_rejects(
        r#"{"admission":{"latency_sample_every":65}}"#,
        "admission.latency_sample_every",
        "got 65",
    );
    assert_rejects(
        r#"{"admission":{"latency_sample_every":70000}}"#,
        "admission.latency_sample_every",
        "",
    );
    assert_rejects(
        r#"{"admission":{"latency_sample_every":"8"}}"#,
        "admission.latency_sample_every",
        "",
    );
    assert_rejects(r#"{"tick_ms":9}"#, "tick_ms", "must be 10..=10000, got 9");
    assert_rejects(r#"{"tick_ms":10001}"#, "tick_ms", "got 10001");
}

/// NaN and infinite numbers cannot enter the config.
#[test]
fn non_finite_numbers_are_refused_by_the_parser() {
    // JSON has no NaN/Infinity literals; serde_json refuses them as syntax errors.
    assert_rejects(
        r#"{"admission":{"recover_ratio":NaN}}"#,
        "admission.recover_ratio",
        "expected value",
    );
    assert_rejects(
        r#"{"admission":{"max_shed_fraction":1e999}}"#,
        "admission.max_shed_fraction",
        "out of range",
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        /// Arbitrary bytes never panic the parser; rejections always name a field.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Err(e) = Policy::from_json(&bytes) {
                prop_assert!(!e.field.is_empty());
                prop_assert!(e.to_string().starts_with("invalid knhk config: field `"));
            }
        }

        /// Any value of a full valid document replaced by a value of another kind is either
        /// accepted or refused with a path that leads to it, never a panic.
        #[test]
        fn wrong_kinds_are_refused_at_their_path(pick in any::<prop::sample::Index>(), kind in 0usize..6) {
            let mut doc: serde_json::Value = serde_json::from_str(FULL).unwrap();
            let mut leaves = Vec::new();
            paths(&doc, String::new(), &mut leaves);
            let path = pick.get(&leaves).clone();
            let replacement = [
                serde_json::json!(null),
                serde_json::json!(true),
                serde_json::json!(-7),
                serde_json::json!(1.5),
                serde_json::json!("x"),
                serde_json::json!([{}]),
            ][kind].clone();
            *pointer(&mut doc, &path) = replacement;
            if let Err(e) = Policy::from_value(&doc) {
                let dotted = path.trim_start_matches('.');
                prop_assert!(
                    dotted.starts_with(e.field.as_str()) || e.field == "<document>" || e.field.starts_with(dotted),
                    "replaced {dotted}, refused {}", e
                );
            }
        }

        /// Mutated valid documents never panic either.
        #[test]
        fn mutated_documents_never_panic(pos in 0usize..400, byte in any::<u8>()) {
            let mut doc = br#"{"version":2,"routing":{"salt":"s","canary_basis_points":500,"key_sources":[{"header":"x-user"}]},"admission":{"rules":[{"class":"R1","path_prefix":"/hot"}],"classes":{"R1":{"p99_max_ns":5000000,"window_ms":1000,"min_samples":10}}}}"#.to_vec();
            let at = pos % doc.len();
            doc[at] = byte;
            let _ = Policy::from_json(&doc);
        }
    }
}

/// A document that sets every section, for the structural fuzz.
const FULL: &str = r#"{"version":2,"tick_ms":100,"debug_headers":true,"fail_mode":"closed",
"routing":{"salt":"s","canary_basis_points":500,"key_sources":[{"header":"x-user"},{"cookie":"uid"}],
 "fallback_to_request_id":true,"route_header":"x-route","route_values":{"stable":"v1","canary":"v2"},
 "force_header":{"enabled":true,"name":"x-force"},"exclude":{"path_prefixes":["/health"],"hosts":["a.example"]},
 "audience":{"headers":[{"name":"x-beta","value":"1"}],"cookies":[{"name":"beta"}],"bucket_ranges":[{"from":0,"to":10}]}},
"admission":{"enabled":true,"shadow":false,"class_header":"x-class","trust_class_header":true,"default_class":"W1",
 "rules":[{"class":"R1","path_prefix":"/hot","header":{"name":"x-hot"}}],
 "classes":{"R1":{"p99_max_ns":5000000,"window_ms":1000,"min_samples":10,"strategy":"degrade"},"W1":{"p99_max_ms":500},"C1":{"p99_max_ms":5000}},
 "shed_status":503,"retry_after_s":1,"max_shed_fraction":0.5,"shed_step_fraction":0.1,"recover_ratio":0.8,"evaluation_interval_ms":250,"latency_sample_every":4},
"flags":{"header":"x-flags","items":[{"name":"new-ui","basis_points":100}]}}"#;

/// Every value's path in `v`, as `.a.b[2]` (objects and arrays included, the root excluded).
fn paths(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, child) in m {
                let p = format!("{at}.{k}");
                out.push(p.clone());
                paths(child, p, out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let p = format!("{at}[{i}]");
                out.push(p.clone());
                paths(child, p, out);
            }
        }
        _ => {}
    }
}

/// The value at a path made by [`paths`].
fn pointer<'a>(v: &'a mut serde_json::Value, path: &str) -> &'a mut serde_json::Value {
    let pointer: String = path
        .replace('[', ".")
        .replace(']', "")
        .split('.')
        .filter(|s| !s.is_empty())
        .map(|s| format!("/{s}"))
        .collect();
    v.pointer_mut(&pointer).unwrap()
}

/// The full document is valid, so the fuzz starts from an accepted config.
#[test]
fn full_document_is_valid() {
    Policy::from_json(FULL.as_bytes()).unwrap();
}

const KEY32: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

fn control(extra: &str) -> String {
    format!(
        r#"{{"control":{{"cluster":"knhk_agent","trusted_keys":[{{"provider":"local","key_id":"config","version":1,"alg":"ed25519","public_key":"{KEY32}","retired":false}}]{extra}}}}}"#
    )
}

/// A minimal control section is valid and gets the documented defaults.
#[test]
fn control_defaults() {
    let p = Policy::from_json(control("").as_bytes()).unwrap();
    let c = p.control.unwrap();
    assert_eq!(
        (
            c.authority.as_str(),
            c.config_path.as_str(),
            c.poll_timeout_ms
        ),
        ("knhk-agent", "/v1/config", 30_000)
    );
    let r = c.receipts.unwrap();
    assert_eq!(
        (r.flush_interval_ms, r.max_batch, r.max_buffer),
        (250, 512, 8_192)
    );
}

/// `control.token` becomes the `authorization` header of agent calls; an unacceptable one is
/// refused naming the setting, and neither the error nor `Debug` of the policy shows it.
#[test]
fn control_token_is_checked_and_never_shown() {
    let secret = "filter-secret-0123456789abcdef-0123456789";
    let p = Policy::from_json(control(&format!(r#","token":"{secret}""#)).as_bytes()).unwrap();
    let c = p.control.as_ref().unwrap();
    assert_eq!(
        c.token.as_ref().map(|t| t.header_value().to_owned()),
        Some(format!("Bearer {secret}"))
    );
    assert!(!format!("{p:?}").contains(secret));
    assert!(Policy::from_json(control("").as_bytes())
        .unwrap()
        .control
        .unwrap()
        .token
        .is_none());
    for bad in ["short-secret", "has a space in it 0123456789abcdef0123"] {
        let e = Policy::from_json(control(&format!(r#","token":"{bad}""#)).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("control.token") && e.contains("printable ASCII"),
            "{e}"
        );
        assert!(!e.contains(bad), "{e}");
    }
    assert_rejects(&control(r#","token":7"#), "control.token", "");
}

/// Each invalid control setting is refused with its field and reason.
#[test]
fn control_rejections() {
    assert_rejects(
        &control(r#","poll_timeout_ms":999"#),
        "control.poll_timeout_ms",
        "must be 1000..=300000",
    );
    assert_rejects(
        &control(r#","config_path":"/v1/config?x=1""#),
        "control.config_path",
        "absolute path without query",
    );
    assert_rejects(
        &control(r#","authority":"a b""#),
        "control.authority",
        "visible characters",
    );
    assert_rejects(
        &control(r#","receipts":{"flush_interval_ms":251}"#),
        "control.receipts.flush_interval_ms",
        "must be 10..=250",
    );
    assert_rejects(
        &control(r#","receipts":{"max_batch":0}"#),
        "control.receipts.max_batch",
        "must be 1..=16384",
    );
    assert_rejects(
        &control(r#","receipts":{"max_batch":100,"max_buffer":99}"#),
        "control.receipts.max_buffer",
        "must be max_batch (100)",
    );
    assert_rejects(
        &control(r#","receipts":{"overflow":"explode"}"#),
        "control.receipts.overflow",
        "unknown variant",
    );
    assert_rejects(
        r#"{"control":{"cluster":"a","trusted_keys":[]}}"#,
        "control.trusted_keys",
        "must hold 1..=16 keys, has 0",
    );
    assert_rejects(
        r#"{"control":{"cluster":"a","trusted_keys":[{"provider":"l","key_id":"k","version":1,"alg":"ed25519","public_key":"AAAA","retired":false}]}}"#,
        "control.trusted_keys[0].public_key",
        "3 bytes is not a ed25519 public key",
    );
    assert_rejects(
        &format!(
            r#"{{"control":{{"cluster":"a","trusted_keys":[{{"provider":"l","key_id":"k","version":1,"alg":"ed25519","public_key":"{KEY32}","retired":true}}]}}}}"#
        ),
        "control.trusted_keys",
        "every key is retired",
    );
    assert_rejects(
        r#"{"control":{"cluster":"","trusted_keys":[]}}"#,
        "control.trusted_keys",
        "has 0",
    );
    assert_rejects(
        r#"{"control":{"trusted_keys":[]}}"#,
        "control",
        "missing field `cluster`",
    );
}

/// The fail mode of a refused configuration: closed only when it says so at the top level.
#[test]
fn fail_mode_hint_reads_only_an_explicit_closed() {
    use crate::config::FailMode;
    use crate::policy::fail_mode_hint;
    let closed = br#"{"fail_mode":"closed","routing":{"canary_basis_points":99999}}"#;
    assert!(Policy::from_json(closed).is_err());
    assert_eq!(fail_mode_hint(closed), FailMode::Closed);
    for open in [
        &br#"{"fail_mode":"open","routing":{"canary_basis_points":99999}}"#[..],
        br#"{"routing":{"fail_mode":"closed"}}"#,
        br#"{"fail_mode":"sideways"}"#,
        b"not json",
        br#"{"fail_mode":"closed","fail_mode":"closed"}"#,
    ] {
        assert_eq!(
            fail_mode_hint(open),
            FailMode::Open,
            "{}",
            String::from_utf8_lossy(open)
        );
    }
}

/// The one-line summary the filter logs and `validate-config` prints.
#[test]
fn summary_names_weight_admission_and_agent() {
    let p = Policy::from_json(control("").as_bytes()).unwrap();
    assert_eq!(
        p.summary(),
        "canary 0 bp, admission on, agent cluster knhk_agent"
    );
    let p = Policy::from_json(
        br#"{"routing":{"canary_basis_points":250},"admission":{"enabled":false}}"#,
    )
    .unwrap();
    assert_eq!(p.summary(), "canary 250 bp, admission off");
}
