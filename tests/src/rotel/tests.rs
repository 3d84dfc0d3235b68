//! The debug-log reader on text Rotel 0.0.1-alpha10 printed for the agent's export
//! (`received.txt`, captured from a real run).

use super::*;

#[test]
fn reads_metric_descriptors_point_attributes_and_spans() {
    let got = parse(include_str!("received.txt"));
    let names: Vec<&str> = got.metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "knhk.agent.telemetry.spans.dropped",
            "knhk.agent.telemetry.export.failures",
            "knhk.agent.checkpoint.seal.duration",
            "knhk.agent.kms.call.duration",
        ]
    );
    assert!(got
        .metrics
        .iter()
        .all(|m| m.service == "knhk-agent" && m.scope == "knhk-agent"));
    let failures = &got.metrics[1];
    assert_eq!(
        (failures.instrument(), failures.unit.as_str()),
        ("counter", "{export}")
    );
    assert_eq!(
        failures.attributes,
        BTreeSet::from(["knhk.telemetry.signal".to_owned()])
    );
    let seal = &got.metrics[2];
    assert_eq!((seal.instrument(), seal.unit.as_str()), ("histogram", "s"));
    assert!(seal.attributes.is_empty());
    let kms = &got.metrics[3];
    assert_eq!(
        kms.attributes,
        BTreeSet::from(["kms.provider".to_owned(), "knhk.kms.operation".to_owned()])
    );
    let spans: Vec<&str> = got.spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(spans, ["knhk.kms.public_keys", "knhk.kms.sign"]);
    assert_eq!(got.spans[0].kind, "SPAN_KIND_INTERNAL");
    assert_eq!(
        got.spans[1].attributes,
        BTreeSet::from([
            "kms.provider".to_owned(),
            "knhk.kms.key_id".to_owned(),
            "knhk.kms.key_version".to_owned()
        ])
    );
}
