//! The event hooks the module exports: each turns Envoy's pointers into the safe handles of
//! `ffi` and runs the safe code of `module` behind the panic barrier (`guard`). Part of the
//! FFI module: every `unsafe` block states the invariant it relies on.

use std::ffi::c_char;

use super::super::guard::guard;
use super::super::module::{ModuleConfig, StreamFilter};
use super::{
    callbacks, resolve_all, Callbacks, Config, EnvoyBuffer, EnvoyPtr, HttpHeader, ModulePtr,
    Stream, ABI_VERSION, CALLBACKS, CALLOUT_SUCCESS, HEADERS_CONTINUE, HEADERS_STOP_ITERATION,
};

/// Envoy's worker count (main thread only).
fn concurrency(cb: &Callbacks) -> u32 {
    // SAFETY: called from `config_new`, on the main thread, as the ABI requires.
    unsafe { (cb.get_concurrency)() }
}

/// Bytes Envoy lent for the duration of a hook.
///
/// # Safety
/// `buf` must describe `length` readable bytes (or be null), valid for `'a`.
unsafe fn lent<'a>(buf: EnvoyBuffer) -> &'a [u8] {
    if buf.ptr.is_null() {
        return &[];
    }
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(buf.ptr, buf.length) }
}

// ------------------------------- event hooks -------------------------------

/// Load: resolve the callbacks and report the ABI version; refuse (null) when this Envoy lacks
/// a callback the module needs.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    guard("program_init", std::ptr::null(), || match resolve_all() {
        Ok(cb) => {
            let _ = CALLBACKS.set(cb);
            super::install_logger();
            log::info!(
                "knhk: dynamic module loaded (built for dynamic-module ABI {})",
                ABI_VERSION.to_string_lossy()
            );
            ABI_VERSION.as_ptr()
        }
        Err(missing) => {
            eprintln!(
                "knhk: this Envoy lacks {missing}, which the module (built for dynamic-module ABI {}, Envoy 1.40 and 1.41) needs: refusing to load",
                ABI_VERSION.to_string_lossy()
            );
            std::ptr::null()
        }
    })
}

/// A filter configuration: validate it, define the stats, start the timer. Never null for a
/// bad plugin configuration (the last good one or the fail mode applies, as in the wasm build).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy_ptr: EnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> ModulePtr {
    guard("http_filter_config_new", std::ptr::null(), || {
        let Some(cb) = callbacks() else {
            return std::ptr::null();
        };
        // SAFETY: Envoy lends name and config for the duration of this hook.
        let (name, bytes) = unsafe { (lent(name), lent(config)) };
        let handle = Config {
            ptr: config_envoy_ptr,
            cb,
        };
        let module = ModuleConfig::new(
            handle,
            &String::from_utf8_lossy(name),
            bytes,
            concurrency(cb),
        );
        Box::into_raw(Box::new(module)).cast_const().cast()
    })
}

/// # Safety
/// `ptr` must be a pointer returned by `config_new` and not yet destroyed.
unsafe fn module<'a>(ptr: ModulePtr) -> &'a std::sync::Arc<ModuleConfig> {
    // SAFETY: the caller's contract: `ptr` is the `Box<Arc<ModuleConfig>>` from `config_new`,
    // alive until `config_destroy`, which Envoy calls after every filter of it is gone.
    unsafe { &*ptr.cast::<std::sync::Arc<ModuleConfig>>() }
}

/// The configuration is gone: stop its timer and free it.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(ptr: ModulePtr) {
    guard("http_filter_config_destroy", (), || {
        if ptr.is_null() {
            return;
        }
        // SAFETY: `ptr` came from `Box::into_raw` in `config_new`; Envoy destroys it once.
        let module =
            unsafe { Box::from_raw(ptr.cast_mut().cast::<std::sync::Arc<ModuleConfig>>()) };
        module.stop();
    })
}

/// The timer's event, on the main thread.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    config_envoy_ptr: EnvoyPtr,
    ptr: ModulePtr,
    _event_id: u64,
) {
    guard("http_filter_config_scheduled", (), || {
        let Some(cb) = callbacks() else { return };
        // SAFETY: Envoy passes the live config's module pointer.
        let module = unsafe { module(ptr) };
        module.on_tick(&mut Config {
            ptr: config_envoy_ptr,
            cb,
        });
    })
}

/// The answer to a config-level callout (config poll or receipt batch), on the main thread.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    config_envoy_ptr: EnvoyPtr,
    ptr: ModulePtr,
    callout_id: u64,
    result: u32,
    headers: *const HttpHeader,
    headers_size: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_size: usize,
) {
    guard("http_filter_config_http_callout_done", (), || {
        let Some(cb) = callbacks() else { return };
        // SAFETY: Envoy passes the live config's module pointer.
        let module = unsafe { module(ptr) };
        let mut status = None;
        let mut body = Vec::new();
        if result == CALLOUT_SUCCESS {
            if !headers.is_null() {
                // SAFETY: Envoy lends `headers_size` headers for this hook.
                let headers = unsafe { std::slice::from_raw_parts(headers, headers_size) };
                for h in headers {
                    // SAFETY: each header's buffers are lent for this hook.
                    let (key, value) = unsafe {
                        (
                            lent(EnvoyBuffer {
                                ptr: h.key_ptr,
                                length: h.key_length,
                            }),
                            lent(EnvoyBuffer {
                                ptr: h.value_ptr,
                                length: h.value_length,
                            }),
                        )
                    };
                    if key == b":status" {
                        status = crate::host::parse_status(value);
                    }
                }
            }
            if !body_chunks.is_null() {
                // SAFETY: Envoy lends `body_chunks_size` chunks for this hook.
                let chunks = unsafe { std::slice::from_raw_parts(body_chunks, body_chunks_size) };
                for chunk in chunks {
                    // SAFETY: each chunk is lent for this hook.
                    body.extend_from_slice(unsafe { lent(*chunk) });
                }
            }
        }
        module.on_call_done(
            &mut Config {
                ptr: config_envoy_ptr,
                cb,
            },
            callout_id,
            status,
            (!body.is_empty()).then_some(body.as_slice()),
        );
    })
}

/// A new stream.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config_ptr: ModulePtr,
    filter_envoy_ptr: EnvoyPtr,
) -> ModulePtr {
    guard("http_filter_new", std::ptr::null(), || {
        let Some(cb) = callbacks() else {
            return std::ptr::null();
        };
        // SAFETY: Envoy passes the live config's module pointer.
        let module = unsafe { module(config_ptr) };
        let stream = Stream {
            ptr: filter_envoy_ptr,
            cb,
        };
        let filter = StreamFilter::new(std::sync::Arc::clone(module), &stream);
        Box::into_raw(Box::new(filter)).cast_const().cast()
    })
}

/// # Safety
/// `ptr` must be a pointer returned by `filter_new` and not yet destroyed; Envoy calls a
/// stream's hooks one at a time, on its worker thread.
unsafe fn filter<'a>(ptr: ModulePtr) -> &'a mut StreamFilter {
    // SAFETY: the caller's contract: exclusive for the duration of the hook.
    unsafe { &mut *ptr.cast_mut().cast::<StreamFilter>() }
}

/// What every stream hook does first: contain panics, find the callbacks and the stream's
/// live filter, and hand both to `f`; `fallback` when the module has no callbacks, Envoy
/// passed no filter, or `f` panicked.
fn stream_hook<R: Copy>(
    hook: &str,
    filter_envoy_ptr: EnvoyPtr,
    ptr: ModulePtr,
    fallback: R,
    f: impl FnOnce(&mut StreamFilter, &mut Stream) -> R,
) -> R {
    guard(hook, fallback, || {
        let (Some(cb), false) = (callbacks(), ptr.is_null()) else {
            return fallback;
        };
        // SAFETY: Envoy passes a stream hook the pointer `filter_new` returned for that
        // stream, not yet destroyed, one hook at a time on the stream's worker thread.
        let filter = unsafe { filter(ptr) };
        f(
            filter,
            &mut Stream {
                ptr: filter_envoy_ptr,
                cb,
            },
        )
    })
}

/// The request headers: decide and apply.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy_ptr: EnvoyPtr,
    ptr: ModulePtr,
    _end_of_stream: bool,
) -> u32 {
    stream_hook(
        "http_filter_request_headers",
        filter_envoy_ptr,
        ptr,
        HEADERS_CONTINUE,
        |filter, stream| {
            if filter.on_request_headers(stream) {
                HEADERS_CONTINUE
            } else {
                HEADERS_STOP_ITERATION
            }
        },
    )
}

/// The response headers: latency sample and response edits.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter_envoy_ptr: EnvoyPtr,
    ptr: ModulePtr,
    _end_of_stream: bool,
) -> u32 {
    stream_hook(
        "http_filter_response_headers",
        filter_envoy_ptr,
        ptr,
        HEADERS_CONTINUE,
        |filter, stream| {
            filter.on_response_headers(stream);
            HEADERS_CONTINUE
        },
    )
}

/// The end of the stream: the receipt.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    filter_envoy_ptr: EnvoyPtr,
    ptr: ModulePtr,
) {
    stream_hook(
        "http_filter_stream_complete",
        filter_envoy_ptr,
        ptr,
        (),
        |filter, stream| filter.on_complete(stream),
    )
}

/// The stream's filter is gone.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(ptr: ModulePtr) {
    guard("http_filter_destroy", (), || {
        if !ptr.is_null() {
            // SAFETY: `ptr` came from `Box::into_raw` in `filter_new`; Envoy destroys it once.
            drop(unsafe { Box::from_raw(ptr.cast_mut().cast::<StreamFilter>()) });
        }
    })
}

/// Hooks Envoy requires that the filter does not use: each continues (status 0) and touches
/// nothing. A C caller may pass arguments a Rust function ignores (System V and AAPCS64
/// calling conventions: arguments are caller-cleaned registers/stack).
macro_rules! continue_hooks {
    ($($name:ident),* $(,)?) => {
        $(
            #[doc = concat!("Unused: `", stringify!($name), "` continues.")]
            #[no_mangle]
            pub extern "C" fn $name() -> u32 {
                0
            }
        )*
    };
}

continue_hooks!(
    envoy_dynamic_module_on_http_filter_request_body,
    envoy_dynamic_module_on_http_filter_request_trailers,
    envoy_dynamic_module_on_http_filter_response_body,
    envoy_dynamic_module_on_http_filter_response_trailers,
    envoy_dynamic_module_on_http_filter_http_callout_done,
    envoy_dynamic_module_on_http_filter_http_stream_headers,
    envoy_dynamic_module_on_http_filter_http_stream_data,
    envoy_dynamic_module_on_http_filter_http_stream_trailers,
    envoy_dynamic_module_on_http_filter_http_stream_complete,
    envoy_dynamic_module_on_http_filter_http_stream_reset,
    envoy_dynamic_module_on_http_filter_scheduled,
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark,
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark,
    envoy_dynamic_module_on_http_filter_config_http_stream_headers,
    envoy_dynamic_module_on_http_filter_config_http_stream_data,
    envoy_dynamic_module_on_http_filter_config_http_stream_trailers,
    envoy_dynamic_module_on_http_filter_config_http_stream_complete,
    envoy_dynamic_module_on_http_filter_config_http_stream_reset,
    envoy_dynamic_module_on_http_filter_local_reply,
);
