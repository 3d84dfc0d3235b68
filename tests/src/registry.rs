//! The telemetry registry (`registry/`, OpenTelemetry Weaver's semantic-convention syntax v1):
//! loading with every well-formedness rule `cargo xtask registry check` enforces, and the Envoy
//! stats it declares, which the live check compares with what the real Envoy exports.
//!
//! Rules: every model file is `groups:` (and optionally `imports:`) only; group and attribute
//! keys are the syntax's, nothing else; ids are unique and lower-case dotted; `type` is one of
//! the syntax's; `brief` is set; `stability` is set on every group but attribute groups, on
//! every attribute definition and enum member; metrics have a unique `metric_name`, an
//! `instrument` among counter/gauge/histogram/updowncounter and a UCUM-style `unit`; spans a
//! `span_kind`, events a `name`; every `ref` names an attribute defined here or one of the
//! OpenTelemetry attributes the manifest's dependency provides ([`OTEL_ATTRIBUTES`]); an
//! `annotations.envoy.stat` pattern only uses enum attributes the metric references.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

/// OpenTelemetry semantic-convention attributes knhk may reference by `ref` (the dependency
/// the manifest pins); Weaver resolves them from that registry, this check by name.
pub const OTEL_ATTRIBUTES: &[&str] = &[
    "error.type",
    "http.request.method",
    "http.response.status_code",
    "http.route",
    "server.address",
    "server.port",
    "service.name",
    "service.namespace",
    "service.instance.id",
    "url.path",
];

const GROUP_TYPES: &[&str] = &["attribute_group", "metric", "span", "event"];
const STABILITY: &[&str] = &[
    "stable",
    "development",
    "alpha",
    "beta",
    "release_candidate",
];
const INSTRUMENTS: &[&str] = &["counter", "gauge", "histogram", "updowncounter"];
const SPAN_KINDS: &[&str] = &["client", "server", "producer", "consumer", "internal"];
const SIMPLE_TYPES: &[&str] = &[
    "string",
    "int",
    "double",
    "boolean",
    "any",
    "string[]",
    "int[]",
    "double[]",
    "boolean[]",
];
const COMMON_KEYS: &[&str] = &[
    "id",
    "type",
    "brief",
    "note",
    "stability",
    "deprecated",
    "attributes",
    "extends",
    "annotations",
    "display_name",
    "entity_associations",
];
const METRIC_KEYS: &[&str] = &[
    "metric_name",
    "instrument",
    "unit",
    "metric_requirement_level",
];
const SPAN_KEYS: &[&str] = &["span_kind", "events"];
const EVENT_KEYS: &[&str] = &["name", "body"];
const ATTRIBUTE_KEYS: &[&str] = &[
    "id",
    "ref",
    "type",
    "brief",
    "note",
    "stability",
    "examples",
    "requirement_level",
    "sampling_relevant",
    "tag",
    "deprecated",
    "annotations",
    "role",
];
const MEMBER_KEYS: &[&str] = &[
    "id",
    "value",
    "brief",
    "note",
    "stability",
    "deprecated",
    "annotations",
];

/// One signal or attribute group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The file it is in, relative to the registry.
    pub file: PathBuf,
    /// Its id.
    pub id: String,
    /// `metric`, `span`, `event` or `attribute_group`.
    pub kind: String,
    /// The metric's name (metrics only).
    pub metric_name: Option<String>,
    /// The metric's instrument (metrics only).
    pub instrument: Option<String>,
    /// The metric's unit (metrics only).
    pub unit: Option<String>,
    /// Attribute ids it defines or references, in order.
    pub attributes: Vec<String>,
    /// `annotations.envoy.stat`: the Envoy stat name pattern of a filter metric.
    pub envoy_stat: Option<String>,
    /// `annotations.knhk.live_check`: why the live check's scenario does not emit this signal
    /// (it is then not required to be seen).
    pub not_live: Option<String>,
}

impl Group {
    /// A span's name: its id without `span.`.
    pub fn span_name(&self) -> Option<&str> {
        (self.kind == "span").then(|| self.id.strip_prefix("span.").unwrap_or(&self.id))
    }

    /// An agent metric's family and type on a Prometheus text exposition, by OpenTelemetry's
    /// compatibility rules (registry/README.md): dots become `_`, the unit a suffix
    /// (`s` → `_seconds`, `By` → `_bytes`, `%` → `_percent`, `1` → `_ratio` on gauges),
    /// a counter gets `_total`.
    pub fn prometheus_family(&self) -> Option<(String, &'static str)> {
        let name = self.metric_name.as_deref()?;
        let instrument = self.instrument.as_deref()?;
        let gauge_like = matches!(instrument, "gauge" | "updowncounter");
        let mut family: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let suffix = match self.unit.as_deref()? {
            "s" => Some("seconds"),
            "ms" => Some("milliseconds"),
            "By" => Some("bytes"),
            "%" => Some("percent"),
            "1" if gauge_like => Some("ratio"),
            _ => None,
        };
        if let Some(suffix) = suffix {
            family.push('_');
            family.push_str(suffix);
        }
        let kind = match instrument {
            "counter" => {
                family.push_str("_total");
                "counter"
            }
            "histogram" => "histogram",
            _ => "gauge",
        };
        Some((family, kind))
    }
}

/// An attribute definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Its id.
    pub id: String,
    /// Enum member values, for enum attributes.
    pub members: Option<Vec<String>>,
}

/// A loaded, checked registry.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// Every group, in file and then document order.
    pub groups: Vec<Group>,
    /// Attributes defined here, by id.
    pub attributes: BTreeMap<String, Attribute>,
}

/// One Envoy stat a filter metric declares: the pattern expanded over its attributes' members.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EnvoyStat {
    /// The stat name on Envoy's `/stats`, without the `wasmcustom.`/`dynamicmodulescustom.`
    /// namespace, e.g. `knhk.route.canary`.
    pub stat: String,
    /// The metric it is a series of.
    pub metric_name: String,
    /// The metric's instrument.
    pub instrument: String,
    /// The attribute values that name it, e.g. `[("knhk.route", "canary")]`.
    pub attributes: Vec<(String, String)>,
}

impl EnvoyStat {
    /// The name `/stats/prometheus` gives it (dots become underscores).
    pub fn prometheus_name(&self) -> String {
        self.stat.replace('.', "_")
    }
}

/// Load and check every model file under `dir` (all `*.yaml` but the manifest, recursively).
/// Returns every problem found, one line each naming the file and the group.
pub fn load(dir: &Path) -> Result<Registry, Vec<String>> {
    let mut problems = Vec::new();
    let manifest = dir.join("registry_manifest.yaml");
    match std::fs::read_to_string(&manifest) {
        Ok(text) => check_manifest(&text, &mut problems),
        Err(e) => problems.push(format!("{}: {e}", manifest.display())),
    }
    let mut files = Vec::new();
    collect_yaml(dir, &mut files, &mut problems);
    files.sort();
    let mut documents = Vec::new();
    for path in files {
        let rel = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
        if rel == Path::new("registry_manifest.yaml") {
            continue;
        }
        match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_yaml::from_str::<Value>(&t).map_err(|e| e.to_string()))
        {
            Ok(doc) => documents.push((rel, doc)),
            Err(e) => problems.push(format!("{}: not YAML: {e}", rel.display())),
        }
    }
    if documents.is_empty() {
        problems.push(format!("{}: no model files", dir.display()));
    }
    let registry = check_documents(&documents, &mut problems);
    if problems.is_empty() {
        Ok(registry)
    } else {
        Err(problems)
    }
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>, problems: &mut Vec<String>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            problems.push(format!("{}: {e}", dir.display()));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_yaml(&path, out, problems);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

fn check_manifest(text: &str, problems: &mut Vec<String>) {
    let at = "registry_manifest.yaml";
    let Ok(Value::Mapping(m)) = serde_yaml::from_str::<Value>(text) else {
        problems.push(format!("{at}: must be a YAML mapping"));
        return;
    };
    unknown_keys(
        &m,
        &[
            "name",
            "description",
            "semconv_version",
            "schema_base_url",
            "dependencies",
        ],
        at,
        problems,
    );
    for key in ["name", "semconv_version", "schema_base_url"] {
        if str_of(&m, key).is_none_or(str::is_empty) {
            problems.push(format!("{at}: `{key}` must be a non-empty string"));
        }
    }
}

/// Check parsed model documents (file, content) together: ids and refs span files.
pub fn check_documents(documents: &[(PathBuf, Value)], problems: &mut Vec<String>) -> Registry {
    let mut registry = Registry::default();
    let mut raw_groups = Vec::new();
    for (file, doc) in documents {
        let at = file.display().to_string();
        let Value::Mapping(top) = doc else {
            problems.push(format!("{at}: must be a mapping with `groups`"));
            continue;
        };
        unknown_keys(top, &["groups", "imports"], &at, problems);
        let Some(Value::Sequence(groups)) = top.get("groups") else {
            problems.push(format!("{at}: `groups` must be a list"));
            continue;
        };
        for g in groups {
            match g {
                Value::Mapping(g) => raw_groups.push((file.clone(), g.clone())),
                _ => problems.push(format!("{at}: every group must be a mapping")),
            }
        }
    }
    // Attribute definitions first, from every group, so refs resolve across files.
    for (file, g) in &raw_groups {
        let at = format!(
            "{}: group {}",
            file.display(),
            str_of(g, "id").unwrap_or("?")
        );
        for a in attribute_list(g) {
            let Value::Mapping(a) = a else {
                problems.push(format!("{at}: every attribute must be a mapping"));
                continue;
            };
            if let Some(id) = str_of(a, "id") {
                if let Some(attr) = check_attribute_definition(id, a, &at, problems) {
                    if registry.attributes.insert(id.to_owned(), attr).is_some() {
                        problems.push(format!("{at}: attribute `{id}` is defined twice"));
                    }
                }
            }
        }
    }
    let mut ids = BTreeSet::new();
    let mut metric_names = BTreeSet::new();
    for (file, g) in &raw_groups {
        if let Some(group) = check_group(file, g, &registry.attributes, problems) {
            if !ids.insert(group.id.clone()) {
                problems.push(format!(
                    "{}: group id `{}` is not unique",
                    file.display(),
                    group.id
                ));
            }
            if let Some(name) = &group.metric_name {
                if !metric_names.insert(name.clone()) {
                    problems.push(format!(
                        "{}: metric_name `{name}` is declared twice",
                        file.display()
                    ));
                }
            }
            registry.groups.push(group);
        }
    }
    registry
}

fn attribute_list(g: &Mapping) -> &[Value] {
    match g.get("attributes") {
        Some(Value::Sequence(list)) => list,
        _ => &[],
    }
}

fn check_attribute_definition(
    id: &str,
    a: &Mapping,
    at: &str,
    problems: &mut Vec<String>,
) -> Option<Attribute> {
    let at = format!("{at}: attribute {id}");
    let before = problems.len();
    unknown_keys(a, ATTRIBUTE_KEYS, &at, problems);
    if a.contains_key("ref") {
        problems.push(format!("{at}: has both `id` and `ref`"));
    }
    if !valid_id(id) {
        problems.push(format!("{at}: id must be lower-case dotted words"));
    }
    stability_of(a, true, &at, problems);
    if str_of(a, "brief").is_none_or(|b| b.trim().is_empty()) {
        problems.push(format!("{at}: `brief` must be set"));
    }
    let members = match a.get("type") {
        Some(Value::String(t)) => {
            let inner = t
                .strip_prefix("template[")
                .and_then(|t| t.strip_suffix(']'))
                .unwrap_or(t);
            if !SIMPLE_TYPES.contains(&inner) {
                problems.push(format!("{at}: unknown type `{t}`"));
            }
            if inner.starts_with("string") && !a.contains_key("examples") {
                problems.push(format!("{at}: string attributes need `examples`"));
            }
            None
        }
        Some(Value::Mapping(t)) => Some(check_members(t, &at, problems)),
        _ => {
            problems.push(format!("{at}: `type` must be a type name or `members`"));
            None
        }
    };
    (problems.len() == before).then(|| Attribute {
        id: id.to_owned(),
        members,
    })
}

fn check_members(t: &Mapping, at: &str, problems: &mut Vec<String>) -> Vec<String> {
    unknown_keys(t, &["members"], at, problems);
    let Some(Value::Sequence(list)) = t.get("members") else {
        problems.push(format!("{at}: an enum type needs `members`"));
        return Vec::new();
    };
    let mut values = Vec::new();
    for m in list {
        let Value::Mapping(m) = m else {
            problems.push(format!("{at}: every member must be a mapping"));
            continue;
        };
        let member = str_of(m, "id").unwrap_or("?");
        let mat = format!("{at}: member {member}");
        unknown_keys(m, MEMBER_KEYS, &mat, problems);
        if str_of(m, "id").is_none() {
            problems.push(format!("{mat}: `id` must be set"));
        }
        stability_of(m, true, &mat, problems);
        let value = match m.get("value") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                problems.push(format!("{mat}: `value` must be a string or a number"));
                continue;
            }
        };
        if values.contains(&value) {
            problems.push(format!("{mat}: value `{value}` appears twice"));
        }
        values.push(value);
    }
    if values.is_empty() {
        problems.push(format!("{at}: an enum needs at least one member"));
    }
    values
}

fn check_group(
    file: &Path,
    g: &Mapping,
    defined: &BTreeMap<String, Attribute>,
    problems: &mut Vec<String>,
) -> Option<Group> {
    let Some(id) = str_of(g, "id") else {
        problems.push(format!("{}: a group without an `id`", file.display()));
        return None;
    };
    let at = format!("{}: group {id}", file.display());
    if !valid_id(id) {
        problems.push(format!("{at}: id must be lower-case dotted words"));
    }
    let kind = match str_of(g, "type") {
        Some(t) if GROUP_TYPES.contains(&t) => t,
        Some(t) => {
            problems.push(format!("{at}: unknown type `{t}` (one of {GROUP_TYPES:?})"));
            return None;
        }
        None => {
            problems.push(format!("{at}: `type` must be set"));
            return None;
        }
    };
    let extra: &[&str] = match kind {
        "metric" => METRIC_KEYS,
        "span" => SPAN_KEYS,
        "event" => EVENT_KEYS,
        _ => &[],
    };
    let allowed: Vec<&str> = COMMON_KEYS.iter().chain(extra).copied().collect();
    unknown_keys(g, &allowed, &at, problems);
    if str_of(g, "brief").is_none_or(|b| b.trim().is_empty()) {
        problems.push(format!("{at}: `brief` must be set"));
    }
    stability_of(g, kind != "attribute_group", &at, problems);
    let mut attributes = Vec::new();
    for a in attribute_list(g) {
        let Value::Mapping(a) = a else { continue };
        match (str_of(a, "id"), str_of(a, "ref")) {
            (Some(id), _) => attributes.push(id.to_owned()),
            (None, Some(r)) => {
                unknown_keys(a, ATTRIBUTE_KEYS, &format!("{at}: ref {r}"), problems);
                check_requirement_level(a, &format!("{at}: ref {r}"), problems);
                if !defined.contains_key(r) && !OTEL_ATTRIBUTES.contains(&r) {
                    problems.push(format!("{at}: `ref: {r}` names no defined attribute"));
                }
                if attributes.iter().any(|x| x == r) {
                    problems.push(format!("{at}: attribute `{r}` listed twice"));
                }
                attributes.push(r.to_owned());
            }
            (None, None) => problems.push(format!("{at}: an attribute needs `id` or `ref`")),
        }
    }
    let mut group = Group {
        file: file.to_path_buf(),
        id: id.to_owned(),
        kind: kind.to_owned(),
        metric_name: None,
        instrument: None,
        unit: None,
        attributes,
        envoy_stat: None,
        not_live: not_live_of(g),
    };
    match kind {
        "metric" => check_metric(g, &at, &mut group, problems),
        "span" if !str_of(g, "span_kind").is_some_and(|k| SPAN_KINDS.contains(&k)) => {
            problems.push(format!("{at}: `span_kind` must be one of {SPAN_KINDS:?}"));
        }
        "event" if str_of(g, "name").is_none_or(str::is_empty) => {
            problems.push(format!("{at}: an event needs a `name`"));
        }
        _ => {}
    }
    if let Some(pattern) = envoy_stat_of(g) {
        if kind != "metric" {
            problems.push(format!("{at}: only metrics map to Envoy stats"));
        }
        for placeholder in placeholders(&pattern) {
            let enum_attr = defined
                .get(&placeholder)
                .is_some_and(|a| a.members.is_some());
            if !group.attributes.contains(&placeholder) || !enum_attr {
                problems.push(format!(
                    "{at}: Envoy stat placeholder `{{{placeholder}}}` must be an enum attribute of the metric"
                ));
            }
        }
        group.envoy_stat = Some(pattern);
    }
    Some(group)
}

/// `requirement_level`: `required`, `recommended` or `opt_in`, or a map of
/// `conditionally_required` or `recommended` to its condition text (the syntax's forms).
fn check_requirement_level(a: &Mapping, at: &str, problems: &mut Vec<String>) {
    match a.get("requirement_level") {
        None => {}
        Some(Value::String(level)) if ["required", "recommended", "opt_in"].contains(&level.as_str()) => {}
        Some(Value::Mapping(m))
            if m.len() == 1
                && m.iter().all(|(k, v)| {
                    matches!(k.as_str(), Some("conditionally_required" | "recommended"))
                        && v.as_str().is_some_and(|t| !t.trim().is_empty())
                }) => {}
        Some(_) => problems.push(format!(
            "{at}: requirement_level must be required, recommended, opt_in, or {{conditionally_required: <condition>}}"
        )),
    }
}

fn check_metric(g: &Mapping, at: &str, group: &mut Group, problems: &mut Vec<String>) {
    match str_of(g, "metric_name") {
        Some(n) if valid_id(n) => group.metric_name = Some(n.to_owned()),
        _ => problems.push(format!(
            "{at}: `metric_name` must be lower-case dotted words"
        )),
    }
    match str_of(g, "instrument") {
        Some(i) if INSTRUMENTS.contains(&i) => group.instrument = Some(i.to_owned()),
        _ => problems.push(format!("{at}: `instrument` must be one of {INSTRUMENTS:?}")),
    }
    match str_of(g, "unit") {
        Some(u) if valid_unit(u) => group.unit = Some(u.to_owned()),
        Some(u) => problems.push(format!(
            "{at}: unit `{u}` is not a UCUM-style unit (e.g. `s`, `By`, `1`, `{{request}}`)"
        )),
        None => problems.push(format!("{at}: `unit` must be set")),
    }
}

fn not_live_of(g: &Mapping) -> Option<String> {
    let Some(Value::Mapping(annotations)) = g.get("annotations") else {
        return None;
    };
    let Some(Value::Mapping(knhk)) = annotations.get("knhk") else {
        return None;
    };
    str_of(knhk, "live_check").map(str::to_owned)
}

fn envoy_stat_of(g: &Mapping) -> Option<String> {
    let Some(Value::Mapping(annotations)) = g.get("annotations") else {
        return None;
    };
    let Some(Value::Mapping(envoy)) = annotations.get("envoy") else {
        return None;
    };
    str_of(envoy, "stat").map(str::to_owned)
}

/// The `{attribute}` placeholders of a stat pattern, in order.
fn placeholders(pattern: &str) -> Vec<String> {
    pattern
        .split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_owned()))
        .collect()
}

impl Registry {
    /// Every Envoy stat the filter metrics declare, each pattern expanded over the members of
    /// the enum attributes it names.
    pub fn envoy_stats(&self) -> Vec<EnvoyStat> {
        let mut out = Vec::new();
        for g in &self.groups {
            let (Some(pattern), Some(metric_name), Some(instrument)) =
                (&g.envoy_stat, &g.metric_name, &g.instrument)
            else {
                continue;
            };
            let mut expansions: Vec<(String, Vec<(String, String)>)> =
                vec![(pattern.clone(), Vec::new())];
            for placeholder in placeholders(pattern) {
                let members = self
                    .attributes
                    .get(&placeholder)
                    .and_then(|a| a.members.clone())
                    .unwrap_or_default();
                let mut next = Vec::new();
                for (stat, attrs) in &expansions {
                    for m in &members {
                        let mut attrs: Vec<(String, String)> = attrs.clone();
                        attrs.push((placeholder.clone(), m.clone()));
                        next.push((stat.replacen(&format!("{{{placeholder}}}"), m, 1), attrs));
                    }
                }
                expansions = next;
            }
            out.extend(expansions.into_iter().map(|(stat, attributes)| EnvoyStat {
                stat,
                metric_name: metric_name.clone(),
                instrument: instrument.clone(),
                attributes,
            }));
        }
        out.sort();
        out
    }
}

/// Check a Grafana dashboard (JSON) against the registry: every panel has Prometheus targets
/// on the `${datasource}` variable, and every `knhk_…` metric a query names is a declared Envoy
/// stat's Prometheus name or an agent metric's series on its `/metrics`. Returns one line per problem.
pub fn check_dashboard(
    registry: &Registry,
    name: &str,
    dashboard: &serde_json::Value,
) -> Vec<String> {
    let mut declared: BTreeSet<String> = registry
        .envoy_stats()
        .iter()
        .map(EnvoyStat::prometheus_name)
        .collect();
    // The agent's families on its /metrics; a histogram's series are its `_bucket`, `_sum`
    // and `_count`.
    let agent = registry.groups.iter().filter(|g| {
        g.metric_name
            .as_deref()
            .is_some_and(|n| n.starts_with("knhk.agent."))
    });
    for (family, kind) in agent.filter_map(Group::prometheus_family) {
        if kind == "histogram" {
            for series in ["_bucket", "_sum", "_count"] {
                declared.insert(format!("{family}{series}"));
            }
        } else {
            declared.insert(family);
        }
    }
    let labels: BTreeSet<String> = registry
        .attributes
        .keys()
        .map(|a| a.replace('.', "_"))
        .collect();
    let mut problems = Vec::new();
    let Some(panels) = dashboard.get("panels").and_then(|p| p.as_array()) else {
        return vec![format!("{name}: no `panels`")];
    };
    for panel in panels {
        let title = panel.get("title").and_then(|t| t.as_str()).unwrap_or("?");
        let at = format!("{name}: panel {title:?}");
        let targets = panel.get("targets").and_then(|t| t.as_array());
        if targets.is_none_or(|t| t.is_empty()) {
            problems.push(format!("{at}: no targets"));
        }
        for target in targets.into_iter().flatten() {
            let uid = target.pointer("/datasource/uid").and_then(|u| u.as_str());
            if uid != Some("${datasource}") {
                problems.push(format!(
                    "{at}: a target not on the `${{datasource}}` variable"
                ));
            }
            let expr = target.get("expr").and_then(|e| e.as_str()).unwrap_or("");
            let names = knhk_metric_names(expr);
            if names.is_empty() {
                problems.push(format!("{at}: query {expr:?} names no knhk metric"));
            }
            // Label names of knhk's attributes (`knhk_rollout_id` in `by (…)`) are not metrics.
            for n in names.into_iter().filter(|n| !labels.contains(n)) {
                if !declared.contains(&n) {
                    problems.push(format!("{at}: `{n}` is not declared in the registry"));
                }
            }
        }
    }
    problems
}

/// The `knhk_…` metric names in a PromQL expression (after either build's prefix).
fn knhk_metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(found) = rest.find("knhk_") {
        let tail = &rest[found..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

fn str_of<'a>(m: &'a Mapping, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

fn stability_of(m: &Mapping, required: bool, at: &str, problems: &mut Vec<String>) {
    match str_of(m, "stability") {
        Some(s) if STABILITY.contains(&s) => {}
        Some(s) => problems.push(format!(
            "{at}: unknown stability `{s}` (one of {STABILITY:?})"
        )),
        None if required => problems.push(format!("{at}: `stability` must be set")),
        None => {}
    }
}

fn unknown_keys(m: &Mapping, allowed: &[&str], at: &str, problems: &mut Vec<String>) {
    for key in m.keys() {
        match key.as_str() {
            Some(k) if allowed.contains(&k) => {}
            Some(k) => problems.push(format!("{at}: unknown key `{k}`")),
            None => problems.push(format!("{at}: a key that is not a string")),
        }
    }
}

/// Lower-case words of `[a-z0-9_]` joined by dots, starting with a letter.
fn valid_id(id: &str) -> bool {
    id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('.')
        && !id.contains("..")
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
}

/// A UCUM-style unit: `1`, or symbols of `[A-Za-z0-9/.%*^-]` with optional `{annotation}`s of
/// lower-case words and underscores; no spaces.
fn valid_unit(unit: &str) -> bool {
    if unit.is_empty() {
        return false;
    }
    let mut rest = unit;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('{') {
            let Some((annotation, tail)) = after.split_once('}') else {
                return false;
            };
            if annotation.is_empty()
                || !annotation
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
            {
                return false;
            }
            rest = tail;
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            if !(c.is_ascii_alphanumeric() || "/.%*^-".contains(c)) {
                return false;
            }
            rest = &rest[c.len_utf8()..];
        }
    }
    true
}

#[cfg(test)]
mod tests;

/// The prefix Envoy 1.40 gives the filter's families on `/stats/prometheus`: none for the wasm
/// build (the `wasmcustom` namespace is stripped), `envoy_dynamicmodulescustom_` for the
/// native module (registry/README.md says the same).
pub fn envoy_prometheus_prefix(native: bool) -> &'static str {
    if native {
        "envoy_dynamicmodulescustom_"
    } else {
        ""
    }
}

/// `# TYPE name kind` lines of the filter's `knhk_` families in an Envoy Prometheus
/// exposition, by name without the host's prefix.
pub fn envoy_knhk_families(text: &str, native: bool) -> BTreeMap<String, String> {
    let host = envoy_prometheus_prefix(native);
    let prefix = format!("{host}knhk_");
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .filter(|(name, _)| name.starts_with(&prefix))
        .map(|(name, kind)| (name[host.len()..].to_owned(), kind.trim().to_owned()))
        .collect()
}
