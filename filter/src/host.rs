//! Adapters from the proxy-wasm host to `knhk-core`'s traits, and the clock.

use std::borrow::Cow;
use std::time::UNIX_EPOCH;

use knhk_core::host::{CasOutcome, HostError, RequestHeaders, SharedStore};
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

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

/// All request headers, read from the host in one call.
pub struct HeaderList(pub Vec<(String, Vec<u8>)>);

impl RequestHeaders for HeaderList {
    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| Cow::Borrowed(v.as_slice()))
    }
}

/// Host time in nanoseconds since the Unix epoch; `None` if the host cannot tell.
pub fn now_ns() -> Option<u64> {
    let now = hostcalls::get_current_time().ok()?;
    let since = now.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since.as_nanos()).ok()
}
