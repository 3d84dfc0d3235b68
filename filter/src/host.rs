//! Adapters from the proxy-wasm host to `knhk-core`'s traits, and the clock.

use std::borrow::Cow;
use std::time::UNIX_EPOCH;

use knhk_core::host::{CasOutcome, HostError, RequestHeaders, SharedStore};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, Status};
use std::cell::RefCell;

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

/// Request headers read from the host one name at a time, only those the policy asks for,
/// each at most once per request. Reading all headers in one call costs more than the two or
/// three single reads a typical policy needs (measured: `docs/benchmarks.md`).
#[derive(Default)]
pub struct LazyHeaders {
    read: RefCell<Vec<(String, Option<Vec<u8>>)>>,
    /// Reads the host refused (counted as decision errors by the caller).
    pub failures: std::cell::Cell<u32>,
}

impl RequestHeaders for LazyHeaders {
    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        if let Some((_, value)) = self.read.borrow().iter().find(|(n, _)| n == name) {
            return value.clone().map(Cow::Owned);
        }
        let value = match hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name) {
            Ok(value) => value,
            Err(_) => {
                self.failures.set(self.failures.get() + 1);
                None
            }
        };
        self.read
            .borrow_mut()
            .push((name.to_string(), value.clone()));
        value.map(Cow::Owned)
    }
}

/// Host time in nanoseconds since the Unix epoch; `None` if the host cannot tell.
pub fn now_ns() -> Option<u64> {
    let now = hostcalls::get_current_time().ok()?;
    let since = now.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since.as_nanos()).ok()
}
