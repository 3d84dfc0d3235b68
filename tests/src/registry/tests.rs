//! The registry check: the shipped registry passes and declares exactly the filter's stats;
//! each malformed or hostile model is refused with a line naming the problem.

use super::*;

fn problems_of(yaml: &str) -> Vec<String> {
    let doc: Value = serde_yaml::from_str(yaml).unwrap();
    let mut problems = Vec::new();
    check_documents(&[(PathBuf::from("t.yaml"), doc)], &mut problems);
    problems
}

/// A valid model: one enum attribute and one metric mapped to an Envoy stat.
const VALID: &str = r#"
groups:
  - id: registry.t
    type: attribute_group
    brief: T.
    attributes:
      - id: t.kind
        type:
          members:
            - {id: a, value: a, stability: development}
            - {id: b, value: b, stability: development}
        stability: development
        brief: Kind.
  - id: metric.t.requests
    type: metric
    metric_name: t.requests
    brief: Requests.
    instrument: counter
    unit: "{request}"
    stability: development
    attributes:
      - ref: t.kind
      - ref: error.type
    annotations:
      envoy:
        stat: "t.{t.kind}.total"
"#;

fn assert_refused(yaml: &str, needle: &str) {
    let problems = problems_of(yaml);
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "expected a problem containing {needle:?}, got {problems:?}"
    );
}

#[test]
fn the_valid_model_passes_and_expands_its_envoy_stats() {
    assert_eq!(problems_of(VALID), Vec::<String>::new());
    let doc: Value = serde_yaml::from_str(VALID).unwrap();
    let registry = check_documents(&[(PathBuf::from("t.yaml"), doc)], &mut Vec::new());
    let stats: Vec<String> = registry.envoy_stats().into_iter().map(|s| s.stat).collect();
    assert_eq!(stats, ["t.a.total", "t.b.total"]);
}

#[test]
fn malformed_models_are_refused_one_line_each() {
    assert_refused(
        &VALID.replace("type: metric", "type: metrik"),
        "unknown type `metrik`",
    );
    assert_refused(
        &VALID.replace("    instrument: counter\n", "    instrument: meter\n"),
        "`instrument` must be one of",
    );
    assert_refused(
        &VALID.replace("unit: \"{request}\"", "unit: \"req uests\""),
        "is not a UCUM-style unit",
    );
    assert_refused(
        &VALID.replace("unit: \"{request}\"", "unit: \"{Request\""),
        "is not a UCUM-style unit",
    );
    assert_refused(
        &VALID.replace("      - ref: error.type\n", "      - ref: t.missing\n"),
        "`ref: t.missing` names no defined attribute",
    );
    assert_refused(
        &VALID.replace(
            "    metric_name: t.requests\n",
            "    metric_name: t.requests\n    colour: red\n",
        ),
        "unknown key `colour`",
    );
    assert_refused(
        &VALID.replace("stat: \"t.{t.kind}.total\"", "stat: \"t.{t.other}.total\""),
        "placeholder `{t.other}` must be an enum attribute",
    );
    assert_refused(
        &VALID.replace(
            "    unit: \"{request}\"\n    stability: development\n",
            "    unit: \"{request}\"\n",
        ),
        "group metric.t.requests: `stability` must be set",
    );
    assert_refused(
        &VALID.replace(
            "            - {id: b, value: b, stability: development}",
            "            - {id: b, value: a, stability: development}",
        ),
        "value `a` appears twice",
    );
    assert_refused(
        &VALID.replace(
            "{id: b, value: b, stability: development}",
            "{id: b, value: b}",
        ),
        "member b: `stability` must be set",
    );
    assert_refused(
        &VALID.replace("metric_name: t.requests", "metric_name: T.Requests"),
        "`metric_name` must be lower-case dotted words",
    );
    assert_refused(
        &VALID.replace("    brief: Requests.\n", ""),
        "group metric.t.requests: `brief` must be set",
    );
    assert_refused(
        "groups:\n  - {id: span.t, type: span, brief: T., stability: development}\n",
        "`span_kind` must be one of",
    );
    assert_refused(
        "groups:\n  - {id: event.t, type: event, brief: T., stability: development}\n",
        "an event needs a `name`",
    );
    assert_refused(
        "groups:\n  - {id: span.t, type: span, span_kind: server, brief: T., stability: development, instrument: counter}\n",
        "unknown key `instrument`",
    );
    assert_refused("groups: 3\n", "`groups` must be a list");
    assert_refused("- a\n- b\n", "must be a mapping with `groups`");
}

#[test]
fn ids_and_metric_names_are_unique_across_the_registry() {
    let twice = format!(
        "{VALID}{}",
        r#"
  - id: metric.t.requests
    type: metric
    metric_name: t.requests
    brief: Again.
    instrument: counter
    unit: "1"
    stability: development
"#
    );
    let problems = problems_of(&twice);
    assert!(problems
        .iter()
        .any(|p| p.contains("group id `metric.t.requests` is not unique")));
    assert!(problems
        .iter()
        .any(|p| p.contains("metric_name `t.requests` is declared twice")));
    let attr_twice = VALID.replace(
        "  - id: metric.t.requests\n",
        "  - id: registry.t2\n    type: attribute_group\n    brief: Again.\n    attributes:\n      - id: t.kind\n        type: int\n        stability: development\n        brief: Again.\n  - id: metric.t.requests\n",
    );
    assert_refused(&attr_twice, "attribute `t.kind` is defined twice");
}

#[test]
fn string_attributes_need_examples_and_types_must_be_known() {
    let base = VALID.replace(
        "        type:\n          members:\n            - {id: a, value: a, stability: development}\n            - {id: b, value: b, stability: development}\n",
        "        type: TYPE\n",
    );
    assert_refused(
        &base.replace("TYPE", "string"),
        "string attributes need `examples`",
    );
    assert_refused(&base.replace("TYPE", "float"), "unknown type `float`");
    assert!(problems_of(&base.replace("TYPE", "int"))
        .iter()
        .all(|p| !p.contains("attribute t.kind")));
}

#[test]
fn units_follow_ucum_style() {
    for ok in [
        "1",
        "s",
        "ms",
        "By",
        "{request}",
        "{basis_point}",
        "By/s",
        "%",
    ] {
        assert!(valid_unit(ok), "{ok}");
    }
    for bad in ["", "req uests", "{}", "{Request}", "{a", "s\u{e9}"] {
        assert!(!valid_unit(bad), "{bad}");
    }
}

/// The shipped registry passes, and declares exactly the 28 stats the filter defines.
#[test]
fn the_shipped_registry_declares_the_filter_stats() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../registry");
    let registry = load(&dir).unwrap_or_else(|p| panic!("{}", p.join("\n")));
    let stats = registry.envoy_stats();
    assert_eq!(stats.len(), 28, "{stats:#?}");
    let names: BTreeSet<String> = stats.iter().map(|s| s.stat.clone()).collect();
    for expected in [
        "knhk.route.excluded",
        "knhk.admission.w1.shadow_degraded",
        "knhk.admission.c1.shed_level_bp",
        "knhk.receipts.flush_errors",
        "knhk.config.version",
    ] {
        assert!(names.contains(expected), "{expected} not declared");
    }
    let gauge = stats
        .iter()
        .find(|s| s.stat == "knhk.config.version")
        .unwrap();
    assert_eq!(gauge.instrument, "gauge");
    assert_eq!(gauge.prometheus_name(), "knhk_config_version");
}

/// The shipped Grafana dashboards query only declared metrics, each on the datasource
/// variable; a query naming an undeclared metric, or no metric, is reported.
#[test]
fn dashboards_query_declared_metrics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../registry");
    let registry = load(&dir).unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(dir.join("grafana")).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let problems = check_dashboard(&registry, &path.display().to_string(), &dashboard);
        assert!(problems.is_empty(), "{problems:#?}");
        seen += 1;
    }
    assert!(seen > 0, "no dashboard under registry/grafana");

    let bad = serde_json::json!({"panels": [
        {"title": "typo", "targets": [{"datasource": {"uid": "${datasource}"}, "expr": "rate(knhk_route_canry[5m])"}]},
        {"title": "none", "targets": [{"datasource": {"uid": "${datasource}"}, "expr": "up"}]},
        {"title": "fixed", "targets": [{"datasource": {"uid": "prom-1"}, "expr": "knhk_route_canary"}]},
        {"title": "empty", "targets": []},
        {"title": "agent typo", "targets": [{"datasource": {"uid": "${datasource}"}, "expr": "max(knhk_agent_checkpoint_age)"}]},
        {"title": "agent ok", "targets": [{"datasource": {"uid": "${datasource}"}, "expr": "histogram_quantile(0.99, sum by (le, knhk_quorum_peer) (rate(knhk_agent_quorum_ack_duration_seconds_bucket[5m])))"}]}
    ]});
    let problems = check_dashboard(&registry, "bad.json", &bad);
    for needle in [
        "`knhk_route_canry` is not declared",
        "names no knhk metric",
        "not on the `${datasource}` variable",
        "panel \"empty\": no targets",
        "`knhk_agent_checkpoint_age` is not declared",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{needle}: {problems:#?}"
        );
    }
    assert!(
        !problems.iter().any(|p| p.contains("agent ok")),
        "a histogram's _bucket series and a label are accepted: {problems:#?}"
    );
}

#[test]
fn agent_metrics_map_to_prometheus_families_and_spans_to_names() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../registry");
    let registry = load(&dir).unwrap();
    let family = |id: &str| {
        registry
            .groups
            .iter()
            .find(|g| g.id == id)
            .and_then(Group::prometheus_family)
            .unwrap()
    };
    assert_eq!(
        family("metric.knhk.agent.receipts.ingested"),
        ("knhk_agent_receipts_ingested_total".to_owned(), "counter")
    );
    assert_eq!(
        family("metric.knhk.agent.checkpoint.seal.duration"),
        (
            "knhk_agent_checkpoint_seal_duration_seconds".to_owned(),
            "histogram"
        )
    );
    assert_eq!(
        family("metric.knhk.agent.rollout.success_rate"),
        ("knhk_agent_rollout_success_rate_ratio".to_owned(), "gauge")
    );
    assert_eq!(
        family("metric.knhk.agent.rollout.weight"),
        ("knhk_agent_rollout_weight_percent".to_owned(), "gauge")
    );
    assert_eq!(
        family("metric.knhk.agent.receipts.ingest.queue"),
        ("knhk_agent_receipts_ingest_queue".to_owned(), "gauge")
    );
    let span = registry
        .groups
        .iter()
        .find(|g| g.id == "span.knhk.checkpoint.seal")
        .unwrap();
    assert_eq!(span.span_name(), Some("knhk.checkpoint.seal"));
    let marked: Vec<&str> = registry
        .groups
        .iter()
        .filter(|g| g.not_live.is_some())
        .map(|g| g.id.as_str())
        .collect();
    assert!(
        marked.contains(&"span.knhk.identity.svid.rotate"),
        "{marked:?}"
    );
}

#[test]
fn requirement_levels_take_the_syntax_forms() {
    let with = |level: &str| {
        VALID.replace(
            "      - ref: error.type\n",
            &format!("      - ref: error.type\n        requirement_level: {level}\n"),
        )
    };
    for ok in [
        "required",
        "recommended",
        "opt_in",
        "{ conditionally_required: \"On failure.\" }",
    ] {
        assert!(
            problems_of(&with(ok)).is_empty(),
            "{ok}: {:?}",
            problems_of(&with(ok))
        );
    }
    for bad in [
        "conditionally_required",
        "sometimes",
        "{ conditionally_required: \"\" }",
        "{ required: x }",
    ] {
        assert!(
            problems_of(&with(bad))
                .iter()
                .any(|p| p.contains("requirement_level")),
            "{bad} accepted"
        );
    }
}
