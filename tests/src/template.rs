//! Rendering of the Envoy bootstrap templates in `envoy/`: `${NAME}` placeholders filled from [`Vars`].
//!
//! Ports are substituted as plain numbers; `${WASM_PATH}` and `${PLUGIN_CONFIG}` as JSON-quoted
//! strings, which are valid YAML double-quoted scalars whatever they contain. A placeholder the
//! renderer does not know, or one the template uses but [`Vars`] leaves unset, is an error: a
//! half-rendered bootstrap must never reach Envoy.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// Every placeholder a template may use.
pub const PLACEHOLDERS: [&str; 8] = [
    "ADMIN_PORT",
    "LISTENER_PORT",
    "STABLE_PORT",
    "CANARY_PORT",
    "WASM_PATH",
    "PLUGIN_CONFIG",
    "AGENT_PORT",
    "HTTP_FILTER",
];

/// Values for the placeholders; `None` means "not provided" (an error if the template uses it).
#[derive(Debug, Clone, Default)]
pub struct Vars {
    /// Envoy admin listener port.
    pub admin_port: Option<u16>,
    /// Ingress listener port.
    pub listener_port: Option<u16>,
    /// Port of the stable upstream.
    pub stable_port: Option<u16>,
    /// Port of the canary upstream.
    pub canary_port: Option<u16>,
    /// Path of the filter's `.wasm` file.
    pub wasm_path: Option<PathBuf>,
    /// Plugin configuration (JSON text) handed to the filter's `on_configure`.
    pub plugin_config: Option<String>,
    /// Port of the knhk agent (the filter's control cluster).
    pub agent_port: Option<u16>,
    /// The dynamic module `libknhk_filter.so`: `${HTTP_FILTER}` then loads it instead of the
    /// wasm module (Envoy finds it through `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`, its directory).
    pub native_path: Option<PathBuf>,
    /// The name `${HTTP_FILTER}` configures the filter under ([`FILTER_NAME`] when `None`):
    /// the HTTP filter entry's name, the plugin (or dynamic-module filter) name that keys its
    /// last good configuration, and the wasm VM id. Istio names a WasmPlugin's filter
    /// `<namespace>.<name>`.
    pub filter_name: Option<String>,
}

/// The name the filter is configured under by default (the key of its last good configuration).
pub const FILTER_NAME: &str = "knhk";

impl Vars {
    /// `${HTTP_FILTER}`: the knhk filter as one HTTP filter entry (JSON), the dynamic module when
    /// [`Vars::native_path`] is set, else the wasm module; `None` without a plugin configuration
    /// or a module.
    fn http_filter(&self) -> anyhow::Result<Option<String>> {
        let Some(config) = &self.plugin_config else {
            return Ok(None);
        };
        let configuration = serde_json::json!({
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": config,
        });
        let name = self.filter_name.as_deref();
        let filter_name = name.unwrap_or(FILTER_NAME);
        let entry = if self.native_path.is_some() {
            serde_json::json!({
                "name": name.unwrap_or("envoy.filters.http.dynamic_modules"),
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
                    "dynamic_module_config": { "name": "knhk_filter" },
                    "filter_name": filter_name,
                    "filter_config": configuration,
                },
            })
        } else {
            let Some(wasm) = &self.wasm_path else {
                return Ok(None);
            };
            let wasm = wasm
                .to_str()
                .with_context(|| format!("wasm path {} is not UTF-8", wasm.display()))?;
            serde_json::json!({
                "name": name.unwrap_or("envoy.filters.http.wasm"),
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": {
                        "name": filter_name,
                        // A failed VM bypasses the filter (Envoy 1.40's replacement of fail_open).
                        "failure_policy": "FAIL_OPEN",
                        "configuration": configuration,
                        "vm_config": {
                            "vm_id": filter_name,
                            "runtime": "envoy.wasm.runtime.v8",
                            "code": { "local": { "filename": wasm } },
                            // The pod identity receipts carry, when Envoy's environment has it.
                            "environment_variables": {
                                "host_env_keys": ["POD_NAME", "POD_NAMESPACE", "NODE_NAME"],
                            },
                        },
                    },
                },
            })
        };
        Ok(Some(entry.to_string()))
    }
}

impl Vars {
    /// The substitution text of placeholder `name`, already quoted where needed.
    fn value(&self, name: &str) -> anyhow::Result<Option<String>> {
        let port = |p: Option<u16>| p.map(|p| p.to_string());
        Ok(match name {
            "ADMIN_PORT" => port(self.admin_port),
            "LISTENER_PORT" => port(self.listener_port),
            "STABLE_PORT" => port(self.stable_port),
            "CANARY_PORT" => port(self.canary_port),
            "AGENT_PORT" => port(self.agent_port),
            "WASM_PATH" => match &self.wasm_path {
                Some(path) => {
                    let text = path
                        .to_str()
                        .with_context(|| format!("wasm path {} is not UTF-8", path.display()))?;
                    Some(serde_json::to_string(text)?)
                }
                None => None,
            },
            "PLUGIN_CONFIG" => match &self.plugin_config {
                Some(config) => Some(serde_json::to_string(config)?),
                None => None,
            },
            "HTTP_FILTER" => self.http_filter()?,
            other => bail!(
                "unknown placeholder `${{{other}}}` (known: {})",
                PLACEHOLDERS.join(", ")
            ),
        })
    }
}

/// Substitute every `${NAME}` in `template`.
pub fn render(template: &str, vars: &Vars) -> anyhow::Result<String> {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            bail!(
                "unterminated placeholder starting at `{}`",
                truncate(&rest[start..], 40)
            );
        };
        let name = &after[..end];
        match vars.value(name)? {
            Some(value) => out.push_str(&value),
            None => bail!("placeholder `${{{name}}}` is used by the template but was not provided"),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Read `template` from disk, render it, and write the result to `dest`.
pub fn render_file(template: &Path, vars: &Vars, dest: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(template)
        .with_context(|| format!("read template {}", template.display()))?;
    let rendered = render(&text, vars).with_context(|| format!("render {}", template.display()))?;
    std::fs::write(dest, rendered).with_context(|| format!("write {}", dest.display()))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vars {
        Vars {
            admin_port: Some(1),
            listener_port: Some(2),
            stable_port: Some(3),
            canary_port: Some(4),
            wasm_path: Some(PathBuf::from("/x/knhk filter.wasm")),
            plugin_config: Some(r#"{"a":"b\"c"}"#.to_string()),
            agent_port: Some(5),
            native_path: None,
            filter_name: None,
        }
    }

    /// `${HTTP_FILTER}` is one JSON object naming the wasm module, or the dynamic module when
    /// a native path is set, with the plugin configuration as its StringValue.
    #[test]
    fn http_filter_is_wasm_or_native() {
        let wasm: serde_json::Value =
            serde_json::from_str(&render("${HTTP_FILTER}", &all()).unwrap()).unwrap();
        assert_eq!(wasm["name"], "envoy.filters.http.wasm");
        let config = &wasm["typed_config"]["config"];
        assert_eq!(
            config["vm_config"]["code"]["local"]["filename"],
            "/x/knhk filter.wasm"
        );
        assert_eq!(config["configuration"]["value"], r#"{"a":"b\"c"}"#);
        let native_vars = Vars {
            native_path: Some(PathBuf::from("/x/libknhk_filter.so")),
            ..all()
        };
        let native: serde_json::Value =
            serde_json::from_str(&render("${HTTP_FILTER}", &native_vars).unwrap()).unwrap();
        assert_eq!(native["name"], "envoy.filters.http.dynamic_modules");
        let typed = &native["typed_config"];
        assert_eq!(typed["dynamic_module_config"]["name"], "knhk_filter");
        assert_eq!(typed["filter_name"], "knhk");
        assert_eq!(typed["filter_config"]["value"], r#"{"a":"b\"c"}"#);
    }

    /// A filter name replaces the entry's name and the names that key the configuration
    /// (plugin name and VM id, or the dynamic-module filter name) in both builds.
    #[test]
    fn http_filter_takes_a_filter_name() {
        let named = Vars {
            filter_name: Some("shop.knhk".into()),
            ..all()
        };
        let wasm: serde_json::Value =
            serde_json::from_str(&render("${HTTP_FILTER}", &named).unwrap()).unwrap();
        let config = &wasm["typed_config"]["config"];
        assert_eq!(
            (
                &wasm["name"],
                &config["name"],
                &config["vm_config"]["vm_id"]
            ),
            (
                &"shop.knhk".into(),
                &"shop.knhk".into(),
                &"shop.knhk".into()
            )
        );
        let native_named = Vars {
            native_path: Some(PathBuf::from("/x/libknhk_filter.so")),
            ..named
        };
        let native: serde_json::Value =
            serde_json::from_str(&render("${HTTP_FILTER}", &native_named).unwrap()).unwrap();
        assert_eq!(native["name"], "shop.knhk");
        assert_eq!(native["typed_config"]["filter_name"], "shop.knhk");
    }

    /// Ports become bare numbers; path and config become JSON-quoted scalars.
    #[test]
    fn substitutes_and_quotes() {
        let out = render("p: ${ADMIN_PORT}/${LISTENER_PORT}/${STABLE_PORT}/${CANARY_PORT} w: ${WASM_PATH} c: ${PLUGIN_CONFIG}", &all()).unwrap();
        assert_eq!(
            out,
            r#"p: 1/2/3/4 w: "/x/knhk filter.wasm" c: "{\"a\":\"b\\\"c\"}""#
        );
    }

    /// A placeholder the renderer does not know is refused, naming it.
    #[test]
    fn unknown_placeholder_is_an_error() {
        let err = render("x: ${NOPE}", &all()).unwrap_err().to_string();
        assert!(err.contains("${NOPE}"), "{err}");
    }

    /// A known placeholder without a value is refused, naming it.
    #[test]
    fn unfilled_placeholder_is_an_error() {
        let vars = Vars {
            wasm_path: None,
            ..all()
        };
        let err = render("x: ${WASM_PATH}", &vars).unwrap_err().to_string();
        assert!(
            err.contains("${WASM_PATH}") && err.contains("not provided"),
            "{err}"
        );
    }

    /// An unterminated `${` is refused rather than copied through.
    #[test]
    fn unterminated_placeholder_is_an_error() {
        assert!(render("x: ${ADMIN_PORT", &all()).is_err());
    }

    /// Text without placeholders passes through unchanged, including lone `$` signs.
    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(render("a $ b {c}", &Vars::default()).unwrap(), "a $ b {c}");
    }
}
