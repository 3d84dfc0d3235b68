//! The serving pod's identity for receipt batches, resolved once when a VM (wasm) or a filter
//! configuration (native) starts: from the process environment first (`POD_NAME`,
//! `POD_NAMESPACE`, `NODE_NAME`, which Istio's sidecar gets from the Downward API), then from
//! the node metadata the host exposes (`NAME`, `NAMESPACE`, `NODE_NAME`: what Istio's
//! bootstrap sets; the proxy-wasm host only, dynamic modules cannot read it).
//!
//! A value that is not a valid identity (see `knhk_core::receipt::check_identity`) is left
//! out, with a warning naming where it came from; nothing else changes.

use knhk_core::receipt::{check_identity, Origin};

/// Each field: its name, the environment variable, the node metadata key.
const SOURCES: [(&str, &str, &str); 3] = [
    ("pod", "POD_NAME", "NAME"),
    ("namespace", "POD_NAMESPACE", "NAMESPACE"),
    ("node", "NODE_NAME", "NODE_NAME"),
];

/// The origin from `env` (variable lookup) and `node_metadata` (key lookup), and a warning per
/// value left out.
pub fn resolve(
    env: &dyn Fn(&str) -> Option<String>,
    node_metadata: &dyn Fn(&str) -> Option<String>,
) -> (Origin, Vec<String>) {
    let mut warnings = Vec::new();
    let mut values = SOURCES.iter().map(|&(field, var, key)| {
        let candidates = [
            (env(var), format!("environment variable {var}")),
            (node_metadata(key), format!("node metadata {key}")),
        ];
        for (value, source) in candidates {
            let Some(value) = value.filter(|v| !v.is_empty()) else {
                continue;
            };
            match check_identity(field, &value) {
                Ok(()) => return value,
                Err(e) => warnings.push(format!("{source} ignored: {e}")),
            }
        }
        String::new()
    });
    let pod = values.next().unwrap_or_default();
    let namespace = values.next().unwrap_or_default();
    let node = values.next().unwrap_or_default();
    (
        Origin {
            pod,
            namespace,
            node,
        },
        warnings,
    )
}

/// The process environment, for [`resolve`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    /// The environment wins over node metadata, field by field; metadata fills what the
    /// environment lacks; nothing known gives an empty origin.
    #[test]
    fn environment_then_node_metadata() {
        let env = lookup(&[("POD_NAME", "checkout-7d4f9-x2k8p")]);
        let meta = lookup(&[("NAME", "other"), ("NAMESPACE", "shop")]);
        let (origin, warnings) = resolve(&env, &meta);
        assert_eq!(
            origin,
            Origin::new("checkout-7d4f9-x2k8p", "shop", "").unwrap()
        );
        assert!(warnings.is_empty());
        let none = lookup(&[]);
        assert!(resolve(&none, &none).0.is_empty());
    }

    /// A hostile value (a line break, an escape, too long) is left out with a warning naming
    /// its source, and the next source is used.
    #[test]
    fn hostile_values_are_left_out() {
        let env = lookup(&[
            ("POD_NAME", "pod\nforged: line"),
            ("NODE_NAME", "\u{1b}[2Jnode"),
        ]);
        let long = "n".repeat(300);
        let meta = lookup(&[("NAME", "checkout-1"), ("NAMESPACE", long.as_str())]);
        let (origin, warnings) = resolve(&env, &meta);
        assert_eq!(origin, Origin::new("checkout-1", "", "").unwrap());
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(
            warnings[0].contains("environment variable POD_NAME"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].contains("node metadata NAMESPACE"),
            "{warnings:?}"
        );
        assert!(
            warnings[2].contains("environment variable NODE_NAME"),
            "{warnings:?}"
        );
        assert!(!warnings
            .iter()
            .any(|w| w.contains('\n') || w.contains('\u{1b}')));
    }
}
