//! The SLO overrides: what each variable accepts and refuses (naming it), and what they do to
//! a policy, checked with the filter's own validation.

use std::collections::HashMap;

use super::*;

fn from(pairs: &[(&str, &str)]) -> Result<SloOverrides, PolicyError> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    SloOverrides::from_env(move |k| map.get(k).cloned())
}

fn refused(pairs: &[(&str, &str)]) -> &'static str {
    match from(pairs) {
        Err(PolicyError::Setting { setting, .. }) => setting,
        other => panic!("{pairs:?} accepted: {other:?}"),
    }
}

#[test]
fn unset_changes_nothing() {
    let o = from(&[]).unwrap();
    assert!(!o.any());
    let mut policy = serde_json::json!({"version": 3});
    o.apply(&mut policy);
    assert_eq!(policy, serde_json::json!({"version": 3}));
}

#[test]
fn overrides_replace_budgets_in_either_unit_and_set_every_strategy() {
    let o = from(&[
        ("KGC_SIDECAR_SLO_R1_P99_MAX_NS", "50000000"),
        ("KGC_SIDECAR_SLO_W1_P99_MAX_MS", "400"),
        ("KGC_SIDECAR_SLO_C1_P99_MAX_MS", "2000"),
        ("KGC_SIDECAR_SLO_ADMISSION_STRATEGY", "Degrade"),
    ])
    .unwrap();
    let mut policy = serde_json::json!({
        "admission": {"classes": {"R1": {"p99_max_ms": 150, "window_ms": 5000}, "W1": {"p99_max_ns": 1}}}
    });
    o.apply(&mut policy);
    assert_eq!(
        policy["admission"]["classes"],
        serde_json::json!({
            "R1": {"p99_max_ns": 50_000_000, "window_ms": 5000, "strategy": "degrade"},
            "W1": {"p99_max_ms": 400, "strategy": "degrade"},
            "C1": {"p99_max_ms": 2000, "strategy": "degrade"}
        })
    );
    let bytes = serde_json::to_vec(&policy).unwrap();
    let parsed = knhk_core::policy::Policy::from_json(&bytes).unwrap();
    assert_eq!(
        parsed.budget(knhk_core::class::Class::R1).p99_max_ns,
        50_000_000
    );
    assert_eq!(
        parsed.budget(knhk_core::class::Class::C1).p99_max_ns,
        2_000_000_000
    );
}

#[test]
fn only_the_strategy_keeps_the_budgets() {
    let o = from(&[("KGC_SIDECAR_SLO_ADMISSION_STRATEGY", "strict")]).unwrap();
    let mut policy = serde_json::json!({"admission": {"classes": {"W1": {"p99_max_ms": 300, "strategy": "degrade"}}}});
    o.apply(&mut policy);
    assert_eq!(
        policy["admission"]["classes"]["W1"],
        serde_json::json!({"p99_max_ms": 300, "strategy": "strict"})
    );
    assert_eq!(
        policy["admission"]["classes"]["R1"],
        serde_json::json!({"strategy": "strict"})
    );
}

#[test]
fn nonsense_is_refused_naming_the_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("KGC_SIDECAR_SLO_R1_P99_MAX_NS", "0")],
            "KGC_SIDECAR_SLO_R1_P99_MAX_NS",
        ),
        (
            &[("KGC_SIDECAR_SLO_R1_P99_MAX_NS", "-5")],
            "KGC_SIDECAR_SLO_R1_P99_MAX_NS",
        ),
        (
            &[("KGC_SIDECAR_SLO_R1_P99_MAX_NS", "1.5")],
            "KGC_SIDECAR_SLO_R1_P99_MAX_NS",
        ),
        (
            &[("KGC_SIDECAR_SLO_R1_P99_MAX_NS", "3600000000001")],
            "KGC_SIDECAR_SLO_R1_P99_MAX_NS",
        ),
        (
            &[("KGC_SIDECAR_SLO_W1_P99_MAX_MS", "")],
            "KGC_SIDECAR_SLO_W1_P99_MAX_MS",
        ),
        (
            &[("KGC_SIDECAR_SLO_W1_P99_MAX_MS", "500ms")],
            "KGC_SIDECAR_SLO_W1_P99_MAX_MS",
        ),
        (
            &[("KGC_SIDECAR_SLO_C1_P99_MAX_MS", "3600001")],
            "KGC_SIDECAR_SLO_C1_P99_MAX_MS",
        ),
        (
            &[("KGC_SIDECAR_SLO_C1_P99_MAX_MS", "99999999999999999999")],
            "KGC_SIDECAR_SLO_C1_P99_MAX_MS",
        ),
        (
            &[("KGC_SIDECAR_SLO_ADMISSION_STRATEGY", "shed")],
            "KGC_SIDECAR_SLO_ADMISSION_STRATEGY",
        ),
        // Tighter than a hotter class: W1 50 ms under R1 100 ms; C1 under W1.
        (
            &[
                ("KGC_SIDECAR_SLO_R1_P99_MAX_NS", "100000000"),
                ("KGC_SIDECAR_SLO_W1_P99_MAX_MS", "50"),
            ],
            "KGC_SIDECAR_SLO_W1_P99_MAX_MS",
        ),
        (
            &[
                ("KGC_SIDECAR_SLO_W1_P99_MAX_MS", "500"),
                ("KGC_SIDECAR_SLO_C1_P99_MAX_MS", "499"),
            ],
            "KGC_SIDECAR_SLO_C1_P99_MAX_MS",
        ),
        (
            &[
                ("KGC_SIDECAR_SLO_R1_P99_MAX_NS", "2000000"),
                ("KGC_SIDECAR_SLO_C1_P99_MAX_MS", "1"),
            ],
            "KGC_SIDECAR_SLO_C1_P99_MAX_MS",
        ),
    ];
    for (pairs, setting) in cases {
        assert_eq!(refused(pairs), *setting, "{pairs:?}");
    }
    // Equal budgets are allowed (R1 ≤ W1 ≤ C1).
    from(&[
        ("KGC_SIDECAR_SLO_R1_P99_MAX_NS", "500000000"),
        ("KGC_SIDECAR_SLO_W1_P99_MAX_MS", "500"),
    ])
    .unwrap();
}
