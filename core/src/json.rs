//! JSON documents parsed into [`Value`]s that refuse duplicate object keys.
//!
//! `serde_json`'s own `Value` keeps the last of two equal keys, so `{"canary_basis_points":0,
//! "canary_basis_points":10000}` would mean whatever the last one says while a reviewer, or
//! another parser, reads the first. Configurations and signed envelopes are read through this
//! parser instead, which refuses the document (`duplicate field `x``), as serde's derived
//! deserializers did before the configuration was read by hand (`config::read`).
//!
//! The visitor implements exactly the callbacks `serde_json` makes for a self-describing parse;
//! it builds the same values `serde_json::Value` does.

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// Parse `bytes` (one JSON value, nothing after it but whitespace).
pub fn parse(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Builds a [`Value`], refusing duplicate keys at every depth.
struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // serde_json refuses non-finite literals before this; kept total as `Value` is.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(Key)? {
            if out.contains_key(&key) {
                return Err(A::Error::custom(format_args!("duplicate field `{key}`")));
            }
            let value = map.next_value_seed(StrictValue)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// An object key (JSON keys are always strings).
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same values as `serde_json::Value` for documents without duplicates.
    #[test]
    fn parses_like_serde_json() {
        for doc in [
            r#"{"a":[1,-2,3.5,"x",true,null,{"b":{}}],"c":"\u00e9\n"}"#,
            "[]",
            "  17 ",
            r#""s""#,
            r#"{"big":18446744073709551615,"neg":-9223372036854775808,"e":1e300}"#,
        ] {
            let want: Value = serde_json::from_str(doc).unwrap();
            assert_eq!(parse(doc.as_bytes()).unwrap(), want, "{doc}");
        }
    }

    /// Duplicate keys are refused at any depth, with the key and the position.
    #[test]
    fn duplicate_keys_are_refused() {
        let e = parse(br#"{"a":1,"a":2}"#).unwrap_err().to_string();
        assert!(e.starts_with("duplicate field `a`"), "{e}");
        let e = parse(br#"{"r":{"x":[{"k":1,"k":1}]}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("duplicate field `k`"), "{e}");
        // Keys are compared decoded: an escape does not make a second `a`.
        let e = parse(br#"{"a":1,"\u0061":2}"#).unwrap_err().to_string();
        assert!(e.starts_with("duplicate field `a`"), "{e}");
        // Equal keys in different objects are not duplicates.
        assert!(parse(br#"{"a":{"a":1},"b":{"a":2}}"#).is_ok());
    }

    /// Syntax errors and trailing characters are serde_json's errors, with their positions.
    #[test]
    fn syntax_errors_pass_through() {
        let e = parse(b"{\"a\":}").unwrap_err();
        assert!(e.is_syntax() && e.column() > 0, "{e}");
        let e = parse(b"{} x").unwrap_err().to_string();
        assert!(e.starts_with("trailing characters"), "{e}");
        assert!(parse(b"{\"a\":NaN}").is_err());
    }
}
