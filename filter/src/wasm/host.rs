//! The proxy-wasm host behind the host-independent layer's traits: shared data, lazily read
//! request headers, header edits and local replies, stats, HTTP calls, and the clock.

use std::borrow::Cow;
use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use knhk_core::host::{CasOutcome, HostError, RequestHeaders, SharedStore};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, MetricType, Status};

use crate::host::{parse_status, AgentCall, CallHost, HeaderSource, RequestHost, StatsHost};
use crate::worker::{WorkerAccess, WorkerState};

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

impl HeaderSource for LazyHeaders {
    fn failed(&self) -> bool {
        self.failures.get() > 0
    }
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

/// Host time in nanoseconds since the Unix epoch; `None` if the host cannot tell.
pub fn now_ns() -> Option<u64> {
    let now = hostcalls::get_current_time().ok()?;
    let since = now.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since.as_nanos()).ok()
}

/// One VM's worker state, shared by its root and request contexts.
#[derive(Clone)]
pub struct VmWorker(pub Rc<RefCell<WorkerState>>);

impl WorkerAccess for VmWorker {
    fn with<R>(&self, f: impl FnOnce(&mut WorkerState) -> R) -> R {
        f(&mut self.0.borrow_mut())
    }
}

/// The request being filtered (proxy-wasm addresses it implicitly: the current context).
pub struct WasmRequest;

impl RequestHost for WasmRequest {
    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> bool {
        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value).is_ok()
    }

    fn set_response_header(&mut self, name: &str, value: Option<&str>) -> bool {
        hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value).is_ok()
    }

    fn send_local_reply(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> bool {
        hostcalls::send_http_response(u32::from(status), headers.to_vec(), Some(body)).is_ok()
    }

    /// Read as a header rather than the `response.code` property: the SDK's property call
    /// makes three guest allocations (path vector, serialized path, value) against the
    /// header's one, ≈ 5,000 wasm instructions per request (`cargo xtask bench-wasm-cost`).
    fn response_status(&mut self) -> Option<u16> {
        status_header(MapType::HttpResponseHeaders)
    }

    fn now_ns(&self) -> Option<u64> {
        now_ns()
    }
}

/// Envoy stats through proxy-wasm's metric calls.
pub struct WasmStats;

fn define(kind: MetricType, name: &str) -> Option<u64> {
    match hostcalls::define_metric(kind, name) {
        Ok(id) => Some(u64::from(id)),
        Err(status) => {
            log::warn!("knhk: cannot define metric {name}: {status:?}");
            None
        }
    }
}

impl StatsHost for WasmStats {
    fn define_counter(&mut self, name: &str) -> Option<u64> {
        define(MetricType::Counter, name)
    }

    fn define_gauge(&mut self, name: &str) -> Option<u64> {
        define(MetricType::Gauge, name)
    }

    fn add(&mut self, id: u64, n: u64) {
        if let Ok(id) = u32::try_from(id) {
            let _ = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    fn set(&mut self, id: u64, value: u64) {
        if let Ok(id) = u32::try_from(id) {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}

/// HTTP calls through `proxy_dispatch_http_call`; responses arrive at the root context.
pub struct WasmCalls;

impl CallHost for WasmCalls {
    fn dispatch(&mut self, call: &AgentCall) -> Result<u64, String> {
        let headers: Vec<(&str, &str)> =
            call.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        hostcalls::dispatch_http_call(
            &call.cluster,
            headers,
            call.body.as_deref(),
            vec![],
            call.timeout,
        )
        .map(u64::from)
        .map_err(|status| format!("{status:?}"))
    }
}
