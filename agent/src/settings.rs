//! The one grammar of the agent's settings: durations in the TOML file and booleans in the
//! `KGC_SIDECAR_*` environment variables. A leaf module: it imports nothing from the rest of
//! the agent, so every table (`[kms]`, `[policy]`, `[identity]`, `[quorum]`, `[retention]`,
//! the top level) parses the same spelling the same way.
//!
//! # Durations
//!
//! A duration is a whole number of ASCII digits followed at once by one unit, nothing else:
//!
//! | unit | meaning | example |
//! |---|---|---|
//! | `ms` | milliseconds | `"250ms"` |
//! | `s` | seconds | `"30s"` |
//! | `m` | minutes | `"90m"` |
//! | `h` | hours | `"720h"` |
//!
//! Refused, each with a message naming the input and the grammar: the empty string, a number
//! without a unit (`"5"`), a unit without a number (`"ms"`), a sign (`"-1s"`, `"+1s"`), a
//! fraction (`"1.5s"`), any other unit or case (`"1d"`, `"1S"`, `"1sec"`), any whitespace,
//! leading, trailing or inside (`" 1s"`, `"1 s"`), compounds (`"1h30m"`, `"1h 30m"`), and a
//! value above `u64::MAX` seconds (or milliseconds, for `ms`). Zero parses (`"0s"`); each
//! setting's range check (at its own table) then says what that setting accepts.
//!
//! Why hand-written rather than the `humantime` crate: `humantime::parse_duration` accepts
//! about forty spellings (`sec`, `secs`, `hr`, `hrs`, `min`, `w`, `wk`, `ns`, `us`, `µs`…),
//! fractions (`"4.2s"`), compounds with spaces (`"1h 30m"`), and two case-sensitive traps for a
//! config file: `M` is a month of 30.44 days where `m` is a minute, and `y` a year of 365.25
//! days. None of our settings needs sub-millisecond or calendar units, an operator's typo of
//! `M` for `m` should be refused rather than turn a five-minute timeout into five months, and
//! "what the docs list is exactly what is accepted" is easiest to keep with one spelling per
//! unit in thirty lines and no dependency. `"1h 30m"` is written `"90m"`. Days (`d`) are left
//! out on purpose: the existing tests pin `"1d"` as refused, and `"24h"`/`"720h"` say the same.
//!
//! # Booleans (environment variables)
//!
//! `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`, in any case (`TRUE`, `Yes`, `oN`), with
//! surrounding whitespace ignored as for every `KGC_SIDECAR_*` variable (values from manifests
//! and secrets often carry a newline). Anything else (`""`, `"maybe"`, `"y"`, `"2"`) is refused
//! with an error naming the variable. TOML booleans are TOML's own `true`/`false`.

use std::time::Duration;

/// The accepted form, quoted in every duration error.
const DURATION_FORM: &str =
    "a whole number followed by ms, s, m or h, with no spaces (e.g. \"500ms\", \"30s\", \"5m\", \"12h\")";

/// Why a duration was refused. The message names the input and the accepted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The text is empty.
    #[error("invalid duration \"\": empty; expected {DURATION_FORM}")]
    Empty,
    /// The text holds whitespace (leading, trailing or inside).
    #[error("invalid duration {0:?}: whitespace is not allowed; expected {DURATION_FORM}")]
    Whitespace(String),
    /// The text does not start with a digit (a sign, a bare unit, a word).
    #[error("invalid duration {0:?}: must start with a digit (no sign); expected {DURATION_FORM}")]
    NoNumber(String),
    /// The number has no unit after it.
    #[error("invalid duration {0:?}: missing unit; expected {DURATION_FORM}")]
    NoUnit(String),
    /// The number has a fractional part.
    #[error("invalid duration {0:?}: fractions are not allowed, use a smaller unit; expected {DURATION_FORM}")]
    Fractional(String),
    /// The unit is not one of `ms`, `s`, `m`, `h`.
    #[error("invalid duration {text:?}: unknown unit {unit:?}; expected {DURATION_FORM}")]
    UnknownUnit {
        /// The whole text.
        text: String,
        /// What followed the number.
        unit: String,
    },
    /// The value does not fit in a duration of `u64` seconds (or milliseconds).
    #[error("invalid duration {0:?}: too large")]
    Overflow(String),
}

/// Parse a duration in the grammar of this module (see the module doc).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text.chars().any(char::is_whitespace) {
        return Err(DurationError::Whitespace(text.to_owned()));
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(DurationError::NoNumber(text.to_owned()));
    }
    if unit.is_empty() {
        return Err(DurationError::NoUnit(text.to_owned()));
    }
    if unit.starts_with(['.', ',']) {
        return Err(DurationError::Fractional(text.to_owned()));
    }
    let overflow = || DurationError::Overflow(text.to_owned());
    let n: u64 = digits.parse().map_err(|_| overflow())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => n
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(overflow),
        "h" => n
            .checked_mul(3600)
            .map(Duration::from_secs)
            .ok_or_else(overflow),
        _ => Err(DurationError::UnknownUnit {
            text: text.to_owned(),
            unit: unit.to_owned(),
        }),
    }
}

/// Write `d` in the grammar, in the largest unit that keeps it exact; `None` when `d` is not
/// a whole number of milliseconds (it could not be read back).
pub fn format_duration(d: Duration) -> Option<String> {
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return None;
    }
    let secs = d.as_secs();
    Some(match d.subsec_millis() {
        0 if secs.is_multiple_of(3600) && secs != 0 => format!("{}h", secs / 3600),
        0 if secs.is_multiple_of(60) && secs != 0 => format!("{}m", secs / 60),
        0 => format!("{secs}s"),
        _ => format!("{}ms", d.as_millis()),
    })
}

/// Serde adapter for a [`Duration`] setting: `#[serde(with = "crate::settings::duration")]`
/// (or `deserialize_with = "crate::settings::duration::deserialize"`).
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Read a duration string in the module's grammar.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }

    /// Write a duration in the module's grammar (whole milliseconds only).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        let text = super::format_duration(*d).ok_or_else(|| {
            serde::ser::Error::custom(format!("{d:?} is not a whole number of milliseconds"))
        })?;
        s.serialize_str(&text)
    }
}

/// Serde adapter for an optional [`Duration`] setting (absent: `None`; pair it with
/// `#[serde(default)]`): `#[serde(default, with = "crate::settings::opt_duration")]`.
pub mod opt_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    /// Read a present duration string in the module's grammar.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }

    /// Write a present duration in the module's grammar, `None` as a unit value.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

/// A refused setting: which one and why (the caller wraps it into its subsystem's error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct InvalidSetting {
    /// The setting or environment variable, as the operator writes it.
    pub setting: &'static str,
    /// What is wrong.
    pub reason: String,
}

/// Parse the boolean environment variable `var` whose value is `raw` (see the module doc).
pub fn env_bool(var: &'static str, raw: &str) -> Result<bool, InvalidSetting> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(InvalidSetting {
            setting: var,
            reason: format!("{raw:?} is not a boolean (true/false, 1/0, yes/no, on/off)"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    /// Each unit parses to its length.
    #[test]
    fn each_unit_parses() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("720h"), Ok(Duration::from_secs(720 * 3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("007s"), Ok(Duration::from_secs(7)));
        assert_eq!(
            parse_duration("18446744073709551615s"),
            Ok(Duration::from_secs(u64::MAX))
        );
    }

    /// Durations take ms, s, m and h; anything else is refused (the test of the former
    /// `policy::config::parse_duration`, moved here with it).
    #[test]
    fn durations_parse_with_units() {
        assert_eq!(
            parse_duration("250ms").ok(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_duration("2s").ok(), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("3m").ok(), Some(Duration::from_secs(180)));
        assert_eq!(parse_duration("1h").ok(), Some(Duration::from_secs(3600)));
        for bad in ["", "5", "ms", "-1s", "1.5s", "1d", "99999999999999999999s"] {
            assert_eq!(parse_duration(bad).ok(), None, "{bad}");
        }
    }

    /// The empty string is refused as empty.
    #[test]
    fn empty_is_refused() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
    }

    /// A number without a unit is refused as missing its unit.
    #[test]
    fn no_unit_is_refused() {
        for bad in ["5", "0", "1000"] {
            assert_eq!(
                parse_duration(bad),
                Err(DurationError::NoUnit(bad.into())),
                "{bad}"
            );
        }
    }

    /// A bare unit, a word or a sign is refused as not starting with a digit.
    #[test]
    fn no_number_and_signs_are_refused() {
        for bad in ["ms", "s", "h", "one s", "-1s", "+1s", "-0s"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    DurationError::NoNumber(_) | DurationError::Whitespace(_)
                ),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            parse_duration("-1s"),
            Err(DurationError::NoNumber("-1s".into()))
        );
    }

    /// Units other than ms, s, m, h (days, long names, upper case, compounds) are refused.
    #[test]
    fn unknown_units_are_refused() {
        for (bad, unit) in [
            ("1d", "d"),
            ("1x", "x"),
            ("1S", "S"),
            ("1M", "M"),
            ("1MS", "MS"),
            ("1sec", "sec"),
            ("1ns", "ns"),
            ("1us", "us"),
            ("1h30m", "h30m"),
            ("1e3s", "e3s"),
        ] {
            assert_eq!(
                parse_duration(bad),
                Err(DurationError::UnknownUnit {
                    text: bad.into(),
                    unit: unit.into()
                }),
                "{bad}"
            );
        }
    }

    /// Fractions are refused (a smaller unit says the same).
    #[test]
    fn fractions_are_refused() {
        for bad in ["1.5s", "0.5h", "1,5s", "1.s"] {
            assert_eq!(
                parse_duration(bad),
                Err(DurationError::Fractional(bad.into())),
                "{bad}"
            );
        }
    }

    /// Values beyond u64 (in the digits or after the unit's multiplication) are refused.
    #[test]
    fn overflow_is_refused() {
        for bad in [
            "99999999999999999999s",
            "18446744073709551616ms",
            "307445734561825861m",
            "5124095576030432h",
        ] {
            assert_eq!(
                parse_duration(bad),
                Err(DurationError::Overflow(bad.into())),
                "{bad}"
            );
        }
        assert!(parse_duration("307445734561825860m").is_ok());
        assert!(parse_duration("5124095576030431h").is_ok());
    }

    /// Whitespace anywhere is refused, compounds with a space included.
    #[test]
    fn whitespace_is_refused() {
        for bad in [" 1s", "1s ", "1 s", "\t1s", "1s\n", "1h 30m", " "] {
            assert_eq!(
                parse_duration(bad),
                Err(DurationError::Whitespace(bad.into())),
                "{bad:?}"
            );
        }
    }

    /// Every message quotes the input and the accepted form.
    #[test]
    fn messages_name_input_and_form() {
        for bad in ["", "5", "ms", "1.5s", "1d", "1 s", "-1s"] {
            let text = parse_duration(bad).unwrap_err().to_string();
            assert!(text.contains(&format!("{bad:?}")), "{text}");
            assert!(text.contains("ms, s, m or h"), "{text}");
        }
        let text = parse_duration("99999999999999999999s")
            .unwrap_err()
            .to_string();
        assert!(text.contains("too large"), "{text}");
    }

    /// The formatter picks the largest exact unit and what it writes parses back.
    #[test]
    fn format_round_trips() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(7200), "2h"),
        ] {
            assert_eq!(format_duration(d).as_deref(), Some(text));
            assert_eq!(parse_duration(text), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_micros(1500)), None);
        for ms in [1u64, 999, 1001, 59_999, 3_600_000, u64::MAX] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d).unwrap()), Ok(d), "{ms}");
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Table {
        #[serde(with = "crate::settings::duration")]
        every: Duration,
        #[serde(default, with = "crate::settings::opt_duration")]
        max_age: Option<Duration>,
    }

    /// The serde adapters read and write the grammar, and a refusal carries the message.
    #[test]
    fn serde_adapters() {
        let t: Table = toml::from_str("every = \"500ms\"\nmax_age = \"720h\"\n").unwrap();
        assert_eq!(t.every, Duration::from_millis(500));
        assert_eq!(t.max_age, Some(Duration::from_secs(720 * 3600)));
        assert_eq!(
            toml::to_string(&t).unwrap(),
            "every = \"500ms\"\nmax_age = \"720h\"\n"
        );
        let t: Table = toml::from_str("every = \"1s\"\n").unwrap();
        assert_eq!(t.max_age, None);
        let err = toml::from_str::<Table>("every = \"1d\"\n").unwrap_err();
        assert!(err.message().contains("unknown unit \"d\""), "{err}");
        let err = toml::from_str::<Table>("every = 5\n").unwrap_err();
        assert!(err.message().contains("string"), "{err}");
    }

    /// Every accepted boolean spelling, in any case and with surrounding whitespace.
    #[test]
    fn each_bool_spelling() {
        for (raw, want) in [
            ("true", true),
            ("1", true),
            ("yes", true),
            ("on", true),
            ("false", false),
            ("0", false),
            ("no", false),
            ("off", false),
            ("TRUE", true),
            ("Yes", true),
            ("oN", true),
            ("False", false),
            ("NO", false),
            ("OFF", false),
            (" true\n", true),
            ("\t0 ", false),
        ] {
            assert_eq!(env_bool("KGC_SIDECAR_X", raw), Ok(want), "{raw:?}");
        }
    }

    /// Anything else is refused with an error naming the variable and the value.
    #[test]
    fn bad_bool_names_its_variable() {
        for raw in [
            "", " ", "maybe", "y", "n", "t", "2", "-1", "enabled", "tru e",
        ] {
            let err = env_bool("KGC_SIDECAR_SPIFFE_ENABLED", raw).unwrap_err();
            assert_eq!(err.setting, "KGC_SIDECAR_SPIFFE_ENABLED");
            let text = err.to_string();
            assert!(
                text.starts_with("invalid setting KGC_SIDECAR_SPIFFE_ENABLED: "),
                "{text}"
            );
            assert!(text.contains(&format!("{raw:?}")), "{text}");
        }
    }
}
