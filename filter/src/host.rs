//! Adapters from the proxy-wasm host to `knhk-core`'s traits, and the clock.

use std::borrow::Cow;
use std::time::UNIX_EPOCH;

use knhk_core::host::{CasOutcome, HostError, RequestHeaders, SharedStore};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, Status};
use std::cell::{Cell, OnceCell};

/// Envoy's process-wide shared data (one store per `vm_id`, visible to every worker's VM).
pub struct EnvoySharedData;

impl SharedStore for EnvoySharedData {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        hostcalls::get_shared_data(key).map_err(|s| HostError::new("get_shared_data", s))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<CasOutcome, HostError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(CasOutcome::Stored),
            Err(Status::CasMismatch) => Ok(CasOutcome::Conflict),
            Err(s) => Err(HostError::new("set_shared_data", s)),
        }
    }
}

/// Names a request's header cache holds; further names are read from the host uncached.
const CACHED_NAMES: usize = 8;
/// Longest name the cache holds inline (longer names are read uncached).
const CACHED_NAME_BYTES: usize = 64;

/// One cached header: its name, inline, and the value once read.
struct Slot {
    name: Cell<[u8; CACHED_NAME_BYTES]>,
    len: Cell<u8>,
    value: OnceCell<Option<Vec<u8>>>,
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            name: Cell::new([0; CACHED_NAME_BYTES]),
            len: Cell::new(0),
            value: OnceCell::new(),
        }
    }
}

/// Request headers read from the host one name at a time, only those the policy asks for,
/// each at most once per request. Reading all headers in one call costs more: through the
/// SDK, which copies every header into owned strings, and even raw, with names looked up in
/// the host's buffer in place (≈ 2,000 more Envoy instructions per request than the key and
/// class-header reads, counted under callgrind: `docs/benchmarks.md`).
///
/// The cache lives inline (no allocation per request beyond the host's copy of each value),
/// and values are lent out of it rather than cloned: an allocation and its free cost about
/// 2,500 wasm instructions here, a tenth of a whole request (`cargo xtask bench-wasm-cost`).
#[derive(Default)]
pub struct LazyHeaders {
    slots: [Slot; CACHED_NAMES],
    used: Cell<usize>,
    /// Reads the host refused (counted as decision errors by the caller).
    pub failures: Cell<u32>,
}

impl LazyHeaders {
    fn read(&self, name: &str) -> Option<Vec<u8>> {
        match hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name) {
            Ok(value) => value,
            Err(_) => {
                self.failures.set(self.failures.get() + 1);
                None
            }
        }
    }
}

impl RequestHeaders for LazyHeaders {
    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        let bytes = name.as_bytes();
        let used = self.used.get();
        let cached = self.slots[..used].iter().find(|slot| {
            let len = usize::from(slot.len.get());
            slot.name.get().get(..len) == Some(bytes)
        });
        let slot = match cached {
            Some(slot) => slot,
            None if used < CACHED_NAMES && bytes.len() <= CACHED_NAME_BYTES => {
                let slot = &self.slots[used];
                let mut inline = [0u8; CACHED_NAME_BYTES];
                inline[..bytes.len()].copy_from_slice(bytes);
                slot.name.set(inline);
                // bytes.len() ≤ 64 fits in u8.
                slot.len.set(bytes.len() as u8);
                self.used.set(used + 1);
                slot
            }
            // Cache full or name too long: correct, only not cached.
            None => return self.read(name).map(Cow::Owned),
        };
        slot.value
            .get_or_init(|| self.read(name))
            .as_deref()
            .map(Cow::Borrowed)
    }
}

/// The `:status` of a response header map (a response's, or an HTTP call's), when it is there
/// and is three ASCII digits.
pub fn status_header(map: MapType) -> Option<u16> {
    let bytes = hostcalls::get_map_value_bytes(map, ":status").ok()??;
    parse_status(&bytes)
}

/// A `:status` value as a number, if it is three ASCII digits.
fn parse_status(bytes: &[u8]) -> Option<u16> {
    match bytes {
        [a, b, c] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

/// Host time in nanoseconds since the Unix epoch; `None` if the host cannot tell.
pub fn now_ns() -> Option<u64> {
    let now = hostcalls::get_current_time().ok()?;
    let since = now.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since.as_nanos()).ok()
}

#[cfg(test)]
mod tests {
    use super::parse_status;

    /// Three ASCII digits parse; anything else is no status.
    #[test]
    fn status_header_parsing() {
        assert_eq!(parse_status(b"200"), Some(200));
        assert_eq!(parse_status(b"503"), Some(503));
        assert_eq!(parse_status(b"099"), Some(99));
        for bad in [&b""[..], b"20", b"2000", b"2x0", b" 200", b"\xff\xff\xff"] {
            assert_eq!(parse_status(bad), None, "{bad:?}");
        }
    }
}
