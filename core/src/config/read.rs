//! Typed reads from a parsed JSON document, each error naming the field's full path.
//!
//! The configuration is parsed once into a [`serde_json::Value`] and read field by field with
//! these helpers, instead of through serde's derived visitors: those were instantiated per
//! struct and made up a third of the wasm module, and a field path had to be recovered from
//! the error's line and column afterwards. Messages follow serde's wording (`unknown field`,
//! `missing field`, `invalid type`, `invalid value`, `unknown variant`) so operators see the
//! same errors as before.

use super::ConfigError;
use serde_json::{Map, Value};
use std::fmt::Write as _;

/// A JSON value and the path it was read from (`routing.key_sources[1]`; empty at the root).
#[derive(Debug, Clone)]
pub struct At<'a> {
    path: String,
    value: &'a Value,
}

impl<'a> At<'a> {
    /// The whole document.
    pub fn root(value: &'a Value) -> Self {
        At {
            path: String::new(),
            value,
        }
    }

    /// A value read from the field `path` of a document parsed in parts.
    pub fn named(path: &str, value: &'a Value) -> Self {
        At {
            path: path.to_owned(),
            value,
        }
    }

    /// The path, `<document>` at the root.
    pub fn path(&self) -> &str {
        if self.path.is_empty() {
            "<document>"
        } else {
            &self.path
        }
    }

    /// The raw value.
    pub fn value(&self) -> &'a Value {
        self.value
    }

    /// A rejection of this field.
    pub fn error(&self, reason: impl std::fmt::Display) -> ConfigError {
        ConfigError::new(self.path(), reason)
    }

    fn child(&self, name: &str, value: &'a Value) -> At<'a> {
        let path = if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        };
        At { path, value }
    }

    fn invalid_type(&self, expected: &str) -> ConfigError {
        self.error(format!(
            "invalid type: {}, expected {expected}",
            describe(self.value)
        ))
    }

    /// An object whose keys must all be in `fields` (`expected` names it in type errors).
    pub fn object(
        &self,
        expected: &str,
        fields: &'static [&'static str],
    ) -> Result<Obj<'a>, ConfigError> {
        let Value::Object(map) = self.value else {
            return Err(self.invalid_type(expected));
        };
        if let Some(unknown) = map.keys().find(|k| !fields.contains(&k.as_str())) {
            let at = self.child(unknown, &Value::Null);
            return Err(at.error(format!(
                "unknown field `{unknown}`, {}",
                one_of(fields, "there are no fields")
            )));
        }
        Ok(Obj {
            at: self.clone(),
            map,
        })
    }

    /// A boolean.
    pub fn bool(&self) -> Result<bool, ConfigError> {
        self.value
            .as_bool()
            .ok_or_else(|| self.invalid_type("a boolean"))
    }

    /// A string.
    pub fn string(&self) -> Result<String, ConfigError> {
        self.value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.invalid_type("a string"))
    }

    /// An unsigned integer of at most `max` (`name` is the Rust type, as serde names it).
    fn unsigned(&self, max: u64, name: &str) -> Result<u64, ConfigError> {
        let Value::Number(n) = self.value else {
            return Err(self.invalid_type(name));
        };
        match (n.as_u64(), n.as_i64()) {
            (Some(v), _) if v <= max => Ok(v),
            (Some(_), _) | (None, Some(_)) => {
                Err(self.error(format!("invalid value: integer `{n}`, expected {name}")))
            }
            (None, None) => Err(self.invalid_type(name)),
        }
    }

    /// A `u16`.
    pub fn u16(&self) -> Result<u16, ConfigError> {
        self.unsigned(u64::from(u16::MAX), "u16").map(|v| v as u16)
    }

    /// A `u32`.
    pub fn u32(&self) -> Result<u32, ConfigError> {
        self.unsigned(u64::from(u32::MAX), "u32").map(|v| v as u32)
    }

    /// A `u64`.
    pub fn u64(&self) -> Result<u64, ConfigError> {
        self.unsigned(u64::MAX, "u64")
    }

    /// A number, as `f64`.
    pub fn f64(&self) -> Result<f64, ConfigError> {
        self.value.as_f64().ok_or_else(|| self.invalid_type("f64"))
    }

    /// An array: its elements with their paths (`field[i]`).
    pub fn items(&self) -> Result<Vec<At<'a>>, ConfigError> {
        let Value::Array(items) = self.value else {
            return Err(self.invalid_type("a sequence"));
        };
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, value)| At {
                path: format!("{}[{i}]", self.path),
                value,
            })
            .collect())
    }

    /// Each element read with `read`.
    pub fn list<T>(
        &self,
        read: impl Fn(&At<'a>) -> Result<T, ConfigError>,
    ) -> Result<Vec<T>, ConfigError> {
        self.items()?.iter().map(read).collect()
    }

    /// One of the named unit variants.
    pub fn variant<T: Copy>(&self, variants: &[(&str, T)]) -> Result<T, ConfigError> {
        let Value::String(name) = self.value else {
            return Err(self.invalid_type("a variant name"));
        };
        variants
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<&str> = variants.iter().map(|(n, _)| *n).collect();
                self.error(format!(
                    "unknown variant `{name}`, {}",
                    one_of(&names, "there are no variants")
                ))
            })
    }
}

/// An object being read: fields are taken by name; absent ones get their defaults.
#[derive(Debug)]
pub struct Obj<'a> {
    at: At<'a>,
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    /// The field `name`, if present (`null` counts as present: only `opt` reads it as absent).
    /// Not inlined: it is the shared part of every `or`/`opt` instance.
    #[inline(never)]
    pub fn get(&self, name: &str) -> Option<At<'a>> {
        self.map.get(name).map(|v| self.at.child(name, v))
    }

    /// The field `name`, which must be present.
    pub fn required(&self, name: &str) -> Result<At<'a>, ConfigError> {
        self.get(name)
            .ok_or_else(|| self.at.error(format!("missing field `{name}`")))
    }

    /// The field `name` read with `read`, or `default` when absent.
    #[inline]
    pub fn or<T>(
        &self,
        name: &str,
        read: impl FnOnce(&At<'a>) -> Result<T, ConfigError>,
        default: impl FnOnce() -> T,
    ) -> Result<T, ConfigError> {
        match self.get(name) {
            Some(at) => read(&at),
            None => Ok(default()),
        }
    }

    /// The field `name` read with `read`; absent or `null` is `None`.
    #[inline]
    pub fn opt<T>(
        &self,
        name: &str,
        read: impl FnOnce(&At<'a>) -> Result<T, ConfigError>,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(name) {
            Some(at) if !at.value.is_null() => read(&at).map(Some),
            _ => Ok(None),
        }
    }
}

/// serde's description of an unexpected value.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) if n.is_f64() => format!("floating point `{n}`"),
        Value::Number(n) => format!("integer `{n}`"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "sequence".into(),
        Value::Object(_) => "map".into(),
    }
}

/// `expected one of `a`, `b``, or `none` when there is nothing to expect.
fn one_of(names: &[&str], none: &str) -> String {
    match names {
        [] => none.to_owned(),
        [only] => format!("expected `{only}`"),
        _ => {
            let mut out = String::from("expected one of ");
            for (i, name) in names.iter().enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                let _ = write!(out, "{sep}`{name}`");
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(json: &str) -> Value {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn type_errors_describe_the_value_and_name_the_path() {
        let v = doc(r#"{"a":{"b":[1,"x",1.5,-2,70000,null,true,{}]}}"#);
        let root = At::root(&v);
        let a = root.object("struct A", &["a"]).unwrap().get("a").unwrap();
        let b = a.object("struct B", &["b"]).unwrap().get("b").unwrap();
        let items = b.items().unwrap();
        assert_eq!(items[0].u16().unwrap(), 1);
        let e = items[1].u16().unwrap_err();
        assert_eq!(e.field, "a.b[1]");
        assert_eq!(e.reason, r#"invalid type: string "x", expected u16"#);
        assert_eq!(
            items[2].u32().unwrap_err().reason,
            "invalid type: floating point `1.5`, expected u32"
        );
        assert_eq!(
            items[3].u32().unwrap_err().reason,
            "invalid value: integer `-2`, expected u32"
        );
        assert_eq!(
            items[4].u16().unwrap_err().reason,
            "invalid value: integer `70000`, expected u16"
        );
        assert_eq!(items[4].u32().unwrap(), 70_000);
        assert_eq!(
            items[5].bool().unwrap_err().reason,
            "invalid type: null, expected a boolean"
        );
        assert!(items[6].bool().unwrap());
        assert_eq!(
            items[7].string().unwrap_err().reason,
            "invalid type: map, expected a string"
        );
        assert_eq!(
            root.u16().unwrap_err().field,
            "<document>",
            "the root's path is <document>"
        );
    }

    #[test]
    fn unknown_and_missing_fields_and_variants() {
        let v = doc(r#"{"x":{"kind":"odd","extra":1}}"#);
        let root = At::root(&v);
        let e = root.object("struct R", &["y"]).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("x", "unknown field `x`, expected `y`")
        );
        let x = root.object("struct R", &["x"]).unwrap().get("x").unwrap();
        let e = x.object("struct X", &["kind", "size"]).unwrap_err();
        assert_eq!(e.field, "x.extra");
        assert_eq!(
            e.reason,
            "unknown field `extra`, expected one of `kind`, `size`"
        );
        let e = x.object("struct X", &[]).unwrap_err();
        assert!(e.reason.ends_with("there are no fields"), "{}", e.reason);
        let obj = x.object("struct X", &["kind", "extra", "size"]).unwrap();
        let e = obj.required("size").unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("x", "missing field `size`")
        );
        let kind = obj.required("kind").unwrap();
        let e = kind.variant(&[("even", 0), ("prime", 2)]).unwrap_err();
        assert_eq!(e.field, "x.kind");
        assert_eq!(
            e.reason,
            "unknown variant `odd`, expected one of `even`, `prime`"
        );
        assert_eq!(kind.variant(&[("odd", 1)]).unwrap(), 1);
        assert_eq!(obj.or("size", At::u32, || 7).unwrap(), 7);
        assert_eq!(obj.opt("size", At::u32).unwrap(), None);
    }

    #[test]
    fn null_is_absent_only_for_optional_fields() {
        let v = doc(r#"{"n":null}"#);
        let obj = At::root(&v).object("struct N", &["n"]).unwrap();
        assert_eq!(obj.opt("n", At::u32).unwrap(), None);
        let e = obj.or("n", At::u32, || 1).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("n", "invalid type: null, expected u32")
        );
    }
}
