//! Runtime classes R1 (hot), W1 (warm), C1 (cold) and the route a request takes.

use serde::{Deserialize, Serialize};

/// A runtime class. Order is priority: R1 is the hottest, C1 the coldest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Class {
    /// Hot path: tightest latency budget.
    R1,
    /// Warm path.
    W1,
    /// Cold path: loosest budget; the last stop of demotion.
    C1,
}

impl Class {
    /// All classes, hottest first.
    pub const ALL: [Class; 3] = [Class::R1, Class::W1, Class::C1];

    /// Dense index (R1 = 0, W1 = 1, C1 = 2) for per-class arrays.
    pub fn index(self) -> usize {
        match self {
            Class::R1 => 0,
            Class::W1 => 1,
            Class::C1 => 2,
        }
    }

    /// The class a `degrade` demotion moves to; `None` for C1, which can only be shed.
    pub fn demoted(self) -> Option<Class> {
        match self {
            Class::R1 => Some(Class::W1),
            Class::W1 => Some(Class::C1),
            Class::C1 => None,
        }
    }

    /// The wire name, as used in headers and config keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::R1 => "R1",
            Class::W1 => "W1",
            Class::C1 => "C1",
        }
    }

    /// Lower-case name, as Envoy stat names and telemetry attributes carry it
    /// (`knhk.admission.r1.shed`, `knhk.admission.class=r1`).
    pub fn as_lower_str(self) -> &'static str {
        match self {
            Class::R1 => "r1",
            Class::W1 => "w1",
            Class::C1 => "c1",
        }
    }

    /// Parse a wire name; ASCII case-insensitive, surrounding whitespace ignored.
    pub fn parse(raw: &[u8]) -> Option<Class> {
        match raw.trim_ascii() {
            b"R1" | b"r1" => Some(Class::R1),
            b"W1" | b"w1" => Some(Class::W1),
            b"C1" | b"c1" => Some(Class::C1),
            _ => None,
        }
    }
}

/// Where a request is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// The current stable version.
    Stable,
    /// The candidate version.
    Canary,
}

impl Route {
    /// The route's name (receipts, debug header, stats; the default route header value).
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Stable => "stable",
            Route::Canary => "canary",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Demotion walks R1 → W1 → C1 and stops.
    #[test]
    fn demotion_chain() {
        assert_eq!(Class::R1.demoted(), Some(Class::W1));
        assert_eq!(Class::W1.demoted(), Some(Class::C1));
        assert_eq!(Class::C1.demoted(), None);
    }

    /// Class names parse case-insensitively and reject anything else, including non-UTF-8.
    #[test]
    fn class_parsing() {
        assert_eq!(Class::parse(b" r1 "), Some(Class::R1));
        assert_eq!(Class::parse(b"W1"), Some(Class::W1));
        assert_eq!(Class::parse(b"c1"), Some(Class::C1));
        assert_eq!(Class::parse(b"R2"), None);
        assert_eq!(Class::parse(&[0xff, 0xfe]), None);
        assert_eq!(Class::parse(b""), None);
    }
}
