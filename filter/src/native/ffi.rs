//! The Envoy dynamic-module ABI as this module uses it, and every `unsafe` block of the
//! native adapter.
//!
//! Declared by hand from Envoy's `source/extensions/dynamic_modules/abi/abi.h` (no SDK is
//! published; none is vendored): only the callbacks the filter calls and the event hooks
//! Envoy requires. The prototypes are those of ABI `v0.2.0`, the version the pinned Envoy
//! 1.40.0 reports; its exported `envoy_dynamic_module_callback_*` symbols were checked
//! against them (the metric callbacks' label arguments, the config-level callout and
//! scheduler).
//!
//! Callbacks are resolved with `dlsym` when Envoy loads the module (`hooks`'
//! `envoy_dynamic_module_on_program_init`): a host that lacks one is refused with a log line
//! naming it, instead of failing at the first request. This file holds the ABI types, the
//! callbacks and the safe handles over them (used by `module`); its child `hooks` holds the
//! exported event hooks, which turn Envoy's pointers into those handles and run `module`'s
//! safe code behind the panic barrier.

use std::ffi::{c_char, c_void, CStr};
use std::sync::OnceLock;

use crate::host::AgentCall;

mod hooks;

/// The ABI version this module was written against (ABI `v0.2.0`: Envoy 1.40).
pub const ABI_VERSION: &CStr = c"v0.2.0";

/// `envoy_dynamic_module_type_envoy_buffer`: bytes owned by Envoy.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    ptr: *const u8,
    length: usize,
}

/// `envoy_dynamic_module_type_module_buffer`: bytes owned by the module.
#[repr(C)]
#[derive(Clone, Copy)]
struct ModuleBuffer {
    ptr: *const u8,
    length: usize,
}

impl ModuleBuffer {
    fn of(bytes: &[u8]) -> Self {
        ModuleBuffer {
            ptr: bytes.as_ptr(),
            length: bytes.len(),
        }
    }

    const NULL: ModuleBuffer = ModuleBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };
}

/// `envoy_dynamic_module_type_module_http_header` (and, with Envoy-owned pointers,
/// `envoy_dynamic_module_type_envoy_http_header`: the same layout).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HttpHeader {
    key_ptr: *const u8,
    key_length: usize,
    value_ptr: *const u8,
    value_length: usize,
}

impl HttpHeader {
    fn of(name: &str, value: &str) -> Self {
        HttpHeader {
            key_ptr: name.as_ptr(),
            key_length: name.len(),
            value_ptr: value.as_ptr(),
            value_length: value.len(),
        }
    }
}

/// `envoy_dynamic_module_type_http_header_type`.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum HeaderMap {
    /// The request headers.
    Request = 0,
    /// The response headers.
    Response = 2,
}

/// `envoy_dynamic_module_type_log_level`.
#[derive(Clone, Copy)]
#[repr(u32)]
enum LogLevel {
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
}

const METRICS_SUCCESS: u32 = 0;
const CALLOUT_SUCCESS: u32 = 0;
/// `..._on_http_filter_request_headers_status_Continue` / `_StopIteration`.
const HEADERS_CONTINUE: u32 = 0;
const HEADERS_STOP_ITERATION: u32 = 1;

type EnvoyPtr = *mut c_void;
type ModulePtr = *const c_void;

macro_rules! callbacks {
    ($($field:ident: $name:literal => $ty:ty),* $(,)?) => {
        /// The callbacks the module calls, resolved once at load.
        struct Callbacks {
            $($field: $ty,)*
        }

        fn resolve_all() -> Result<Callbacks, String> {
            Ok(Callbacks {
                $($field: {
                    let ptr = symbol($name)?;
                    // SAFETY: the symbol is Envoy's callback of that name, whose prototype in
                    // ABI v0.2.0 is this function type (checked against the pinned binary).
                    unsafe { std::mem::transmute::<*mut c_void, $ty>(ptr) }
                },)*
            })
        }
    };
}

callbacks! {
    log: "log" => unsafe extern "C" fn(u32, ModuleBuffer),
    log_enabled: "log_enabled" => unsafe extern "C" fn(u32) -> bool,
    get_concurrency: "get_concurrency" => unsafe extern "C" fn() -> u32,
    get_header: "http_get_header" => unsafe extern "C" fn( EnvoyPtr, u32, ModuleBuffer, *mut EnvoyBuffer, usize, *mut usize, ) -> bool,
    set_header: "http_set_header" => unsafe extern "C" fn(EnvoyPtr, u32, ModuleBuffer, ModuleBuffer) -> bool,
    send_response: "http_send_response" => unsafe extern "C" fn(EnvoyPtr, u32, *const HttpHeader, usize, ModuleBuffer, ModuleBuffer),
    clear_route_cache: "http_clear_route_cache" => unsafe extern "C" fn(EnvoyPtr),
    get_worker_index: "http_filter_get_worker_index" => unsafe extern "C" fn(EnvoyPtr) -> u32,
    define_counter: "http_filter_config_define_counter" => unsafe extern "C" fn(EnvoyPtr, ModuleBuffer, *const ModuleBuffer, usize, *mut usize) -> u32,
    define_gauge: "http_filter_config_define_gauge" => unsafe extern "C" fn(EnvoyPtr, ModuleBuffer, *const ModuleBuffer, usize, *mut usize) -> u32,
    increment_counter: "http_filter_config_increment_counter" => unsafe extern "C" fn(EnvoyPtr, usize, *const ModuleBuffer, usize, u64) -> u32,
    set_gauge: "http_filter_config_set_gauge" => unsafe extern "C" fn(EnvoyPtr, usize, *const ModuleBuffer, usize, u64) -> u32,
    scheduler_new: "http_filter_config_scheduler_new" => unsafe extern "C" fn(EnvoyPtr) -> *mut c_void,
    scheduler_commit: "http_filter_config_scheduler_commit" => unsafe extern "C" fn(*mut c_void, u64),
    scheduler_delete: "http_filter_config_scheduler_delete" => unsafe extern "C" fn(*mut c_void),
    http_callout: "http_filter_config_http_callout" => unsafe extern "C" fn( EnvoyPtr, *mut u64, ModuleBuffer, *const HttpHeader, usize, ModuleBuffer, u64, ) -> u32,
}

static CALLBACKS: OnceLock<Callbacks> = OnceLock::new();

fn callbacks() -> Option<&'static Callbacks> {
    CALLBACKS.get()
}

/// Resolve `envoy_dynamic_module_callback_{name}` in the process.
fn symbol(name: &str) -> Result<*mut c_void, String> {
    let full = format!("envoy_dynamic_module_callback_{name}\0");
    // SAFETY: `full` is NUL-terminated and outlives the call; RTLD_DEFAULT searches the
    // process's global symbols, where Envoy's executable exports its callbacks.
    let ptr = unsafe { libc::dlsym(libc::RTLD_DEFAULT, full.as_ptr().cast::<c_char>()) };
    if ptr.is_null() {
        Err(full.trim_end_matches('\0').to_owned())
    } else {
        Ok(ptr)
    }
}

/// `log` records into Envoy's log (the `dynamic_modules` logger), filtered by its level.
struct EnvoyLogger;

impl log::Log for EnvoyLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        envoy_log_enabled(metadata.level())
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            envoy_log(record.level(), &record.args().to_string());
        }
    }

    fn flush(&self) {}
}

/// Route the `log` crate to Envoy (once per process; later calls are no-ops).
fn install_logger() {
    static LOGGER: EnvoyLogger = EnvoyLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// Write one line to Envoy's log (`[dynamic_modules]`), when the callbacks are resolved.
fn envoy_log(level: log::Level, message: &str) {
    let Some(cb) = callbacks() else {
        eprintln!("{message}");
        return;
    };
    let level = match level {
        log::Level::Error => LogLevel::Error,
        log::Level::Warn => LogLevel::Warn,
        log::Level::Info => LogLevel::Info,
        log::Level::Debug | log::Level::Trace => LogLevel::Debug,
    };
    // SAFETY: `message` outlives the call, which copies it.
    unsafe { (cb.log)(level as u32, ModuleBuffer::of(message.as_bytes())) }
}

/// Whether Envoy logs at `level` for the dynamic-modules logger.
fn envoy_log_enabled(level: log::Level) -> bool {
    let Some(cb) = callbacks() else {
        return true;
    };
    let level = match level {
        log::Level::Error => LogLevel::Error,
        log::Level::Warn => LogLevel::Warn,
        log::Level::Info => LogLevel::Info,
        log::Level::Debug | log::Level::Trace => LogLevel::Debug,
    };
    // SAFETY: a pure query with a valid enum value.
    unsafe { (cb.log_enabled)(level as u32) }
}

/// One HTTP stream's Envoy filter. Valid only during the hook that received it: the hooks
/// below create it from Envoy's pointer and never keep it.
pub struct Stream {
    ptr: EnvoyPtr,
    cb: &'static Callbacks,
}

impl Stream {
    /// The first value of header `name`, borrowed from Envoy's header map. Envoy keeps it valid
    /// until the hook returns or a header of that map is written; the filter layer only tests
    /// or reads values before it writes (see `flow.rs`).
    pub fn header(&self, map: HeaderMap, name: &str) -> Option<&[u8]> {
        let mut out = EnvoyBuffer {
            ptr: std::ptr::null(),
            length: 0,
        };
        // SAFETY: `self.ptr` is the live filter of the current hook; `name` outlives the call;
        // `out` is a valid place for the result and no count is asked for (null).
        let found = unsafe {
            (self.cb.get_header)(
                self.ptr,
                map as u32,
                ModuleBuffer::of(name.as_bytes()),
                &mut out,
                0,
                std::ptr::null_mut(),
            )
        };
        if !found || out.ptr.is_null() {
            return None;
        }
        // SAFETY: Envoy returned `length` readable bytes at `ptr`, valid for this hook (above).
        Some(unsafe { std::slice::from_raw_parts(out.ptr, out.length) })
    }

    /// Set (`Some`) or remove (`None`) header `name`, replacing every value it had.
    pub fn set_header(&mut self, map: HeaderMap, name: &str, value: Option<&str>) -> bool {
        let value = value.map_or(ModuleBuffer::NULL, |v| ModuleBuffer::of(v.as_bytes()));
        // SAFETY: live filter of the current hook; both buffers outlive the call, which copies.
        unsafe {
            (self.cb.set_header)(
                self.ptr,
                map as u32,
                ModuleBuffer::of(name.as_bytes()),
                value,
            )
        }
    }

    /// Send a local reply.
    pub fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        let headers: Vec<HttpHeader> = headers.iter().map(|(n, v)| HttpHeader::of(n, v)).collect();
        let details = b"knhk";
        // SAFETY: live filter of the current hook; the header array and the buffers outlive the
        // call, which copies them.
        unsafe {
            (self.cb.send_response)(
                self.ptr,
                u32::from(status),
                headers.as_ptr(),
                headers.len(),
                ModuleBuffer::of(body),
                ModuleBuffer::of(details),
            )
        }
    }

    /// Make Envoy select the route again (after the route header changed).
    pub fn clear_route_cache(&mut self) {
        // SAFETY: live filter of the current hook.
        unsafe { (self.cb.clear_route_cache)(self.ptr) }
    }

    /// A second handle on the same stream, for header reads during a hook in which the first
    /// writes: the filter layer never holds a value it read across a write, so its reads stay
    /// valid.
    pub fn clone_for_reads(&self) -> Stream {
        Stream {
            ptr: self.ptr,
            cb: self.cb,
        }
    }

    /// Index of the worker thread running this stream.
    pub fn worker_index(&self) -> u32 {
        // SAFETY: live filter of the current hook.
        unsafe { (self.cb.get_worker_index)(self.ptr) }
    }
}

/// An HTTP filter configuration in Envoy. Its metric and callout calls are made on the main
/// thread only: in [`envoy_dynamic_module_on_http_filter_config_new`] and the config-level
/// hooks (scheduled event, callout done), which Envoy runs there.
pub struct Config {
    ptr: EnvoyPtr,
    cb: &'static Callbacks,
}

/// A config-level scheduler: commits an event that Envoy runs on the main thread
/// ([`envoy_dynamic_module_on_http_filter_config_scheduled`]).
pub struct Scheduler {
    ptr: *mut c_void,
    cb: &'static Callbacks,
}

// SAFETY: committing to a config scheduler is how other threads reach the main thread: Envoy
// posts the event to the main dispatcher, so `commit` may be called from any thread; `Drop`
// runs once, from whichever thread drops the last owner.
unsafe impl Send for Scheduler {}
// SAFETY: as above; `commit` takes `&self` and Envoy's side is thread-safe.
unsafe impl Sync for Scheduler {}

impl Scheduler {
    /// Ask Envoy to run the config's scheduled hook on the main thread.
    pub fn commit(&self, event: u64) {
        // SAFETY: `ptr` came from `scheduler_new` and is deleted only in `Drop`.
        unsafe { (self.cb.scheduler_commit)(self.ptr, event) }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `scheduler_new` and is deleted exactly once, here.
        unsafe { (self.cb.scheduler_delete)(self.ptr) }
    }
}

impl Config {
    fn define(&mut self, gauge: bool, name: &str) -> Option<u64> {
        let mut id = 0usize;
        let define = if gauge {
            self.cb.define_gauge
        } else {
            self.cb.define_counter
        };
        // SAFETY: live config during `config_new` (the only caller); `name` outlives the call;
        // no labels (null, 0); `id` is a valid place for the result.
        let result = unsafe {
            define(
                self.ptr,
                ModuleBuffer::of(name.as_bytes()),
                std::ptr::null(),
                0,
                &mut id,
            )
        };
        if result == METRICS_SUCCESS {
            Some(id as u64)
        } else {
            log::warn!("knhk: cannot define metric {name}: result {result}");
            None
        }
    }

    /// Define a counter (only while the configuration is being created).
    pub fn define_counter(&mut self, name: &str) -> Option<u64> {
        self.define(false, name)
    }

    /// Define a gauge (only while the configuration is being created).
    pub fn define_gauge(&mut self, name: &str) -> Option<u64> {
        self.define(true, name)
    }

    /// Add to a counter.
    pub fn increment_counter(&mut self, id: u64, n: u64) {
        // SAFETY: live config on the main thread; an id from `define_counter`; no labels.
        unsafe { (self.cb.increment_counter)(self.ptr, id as usize, std::ptr::null(), 0, n) };
    }

    /// Set a gauge.
    pub fn set_gauge(&mut self, id: u64, value: u64) {
        // SAFETY: live config on the main thread; an id from `define_gauge`; no labels.
        unsafe { (self.cb.set_gauge)(self.ptr, id as usize, std::ptr::null(), 0, value) };
    }

    /// A scheduler for this configuration.
    pub fn scheduler(&mut self) -> Option<Scheduler> {
        // SAFETY: live config during `config_new`; the result is owned by the `Scheduler`.
        let ptr = unsafe { (self.cb.scheduler_new)(self.ptr) };
        (!ptr.is_null()).then_some(Scheduler { ptr, cb: self.cb })
    }

    /// Start an HTTP call to `call.cluster`; its answer arrives at
    /// [`envoy_dynamic_module_on_http_filter_config_http_callout_done`] with the returned id.
    pub fn http_callout(&mut self, call: &AgentCall) -> Result<u64, String> {
        let headers: Vec<HttpHeader> = call
            .headers
            .iter()
            .map(|(n, v)| HttpHeader::of(n, v))
            .collect();
        let body = call
            .body
            .as_deref()
            .map_or(ModuleBuffer::NULL, ModuleBuffer::of);
        let timeout_ms = u64::try_from(call.timeout.as_millis()).unwrap_or(u64::MAX);
        let mut id = 0u64;
        // SAFETY: live config on the main thread; every buffer and the header array outlive
        // the call, which copies them; `id` is a valid place for the result.
        let result = unsafe {
            (self.cb.http_callout)(
                self.ptr,
                &mut id,
                ModuleBuffer::of(call.cluster.as_bytes()),
                headers.as_ptr(),
                headers.len(),
                body,
                timeout_ms,
            )
        };
        match result {
            CALLOUT_SUCCESS => Ok(id),
            1 => Err("missing required headers".into()),
            2 => Err("cluster not found".into()),
            3 => Err("duplicate callout id".into()),
            _ => Err("cannot create the request (no healthy upstream?)".into()),
        }
    }
}
