//! A proxy-wasm HTTP filter that does nothing: the benchmark floor of what the wasm ABI itself costs.
//!
//! `cargo xtask bench` loads this module exactly like `knhk_filter.wasm` (same VM runtime, same
//! per-worker VM, same filter-chain position), so the difference between the two variants is the
//! knhk filter's own work: header reads and writes, hashing, admission bookkeeping.
//! Every callback is left at the SDK default (`Continue`); no host call is made per request.

#![forbid(unsafe_code)]

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(EmptyRoot) });
}}

/// Root context: accepts any configuration and creates one [`EmptyHttp`] per request.
struct EmptyRoot;

impl Context for EmptyRoot {}

impl RootContext for EmptyRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(EmptyHttp))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Per-request context: every callback keeps the SDK default, which continues the request.
struct EmptyHttp;

impl Context for EmptyHttp {}

impl HttpContext for EmptyHttp {}
