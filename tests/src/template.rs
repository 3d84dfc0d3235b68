//! Rendering of the Envoy bootstrap templates in `envoy/`: `${NAME}` placeholders filled from [`Vars`].
//!
//! Ports are substituted as plain numbers; `${WASM_PATH}` and `${PLUGIN_CONFIG}` as JSON-quoted
//! strings, which are valid YAML double-quoted scalars whatever they contain. A placeholder the
//! renderer does not know, or one the template uses but [`Vars`] leaves unset, is an error: a
//! half-rendered bootstrap must never reach Envoy.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// Every placeholder a template may use.
pub const PLACEHOLDERS: [&str; 7] = [
    "ADMIN_PORT",
    "LISTENER_PORT",
    "STABLE_PORT",
    "CANARY_PORT",
    "WASM_PATH",
    "PLUGIN_CONFIG",
    "AGENT_PORT",
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
        }
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
