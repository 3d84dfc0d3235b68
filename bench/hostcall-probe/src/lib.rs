//! A proxy-wasm HTTP filter that makes the host calls its plugin configuration lists, on every request: the cost of each call.
//!
//! The configuration is a string of op letters, run in order in `on_http_request_headers`:
//! - `c`: `proxy_get_current_time_nanoseconds` (the SDK's `get_current_time`);
//! - `g`: read a present header, `x-user-id` (`proxy_get_header_map_value`);
//! - `a`: read an absent header, `x-knhk-absent`;
//! - `s`: set `x-knhk-route: stable` (`proxy_replace_header_map_value`);
//! - `d`: remove `x-knhk-absent`, a header the request does not carry
//!   (`proxy_remove_header_map_value`: how a filter strips a header without reading it first);
//! - `m`: all request headers through the SDK (`get_http_request_headers_bytes`: the host call
//!   plus parsing into owned strings);
//! - `r`: `proxy_get_header_map_pairs` alone, the serialized map freed unparsed;
//! - `k`: no host call: knhk's key hash (`knhk_core::bucket::BucketKey::buckets`, SipHash-2-4
//!   keyed by the salt `knhk`) of the value the last `g` read (empty before any), so
//!   `gskaa` is the routing floor plus the work every knhk request must do at least.
//!
//! `cargo xtask bench-envoy-instructions --probe gggg` runs Envoy with this module configured
//! `gggg` and with an empty configuration; the difference in Envoy's instructions per request,
//! divided by four, is what one call costs, the host's side included. An unknown letter makes
//! `on_configure` fail, so Envoy refuses the configuration.
//!
//! `gs` is the routing floor: read the key header, write the route header, nothing else: what
//! every proxy-wasm filter that routes by a request header must at least do. A JSON object
//! configuration (one starting with `{`, such as the knhk configuration `cargo xtask bench`
//! passes to a module given with `--knhk-wasm`) runs the floor, so the load benchmark can time
//! it in knhk's place.

#![deny(unsafe_code)]

use knhk_core::bucket::BucketKey;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, Status};
use std::hint::black_box;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(ProbeRoot {
            ops: Rc::from([]),
            key: BucketKey::new(b"knhk"),
            keyed: false,
        })
    });
}}

/// One host call (see the module documentation for the letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Clock,
    PresentHeader,
    AbsentHeader,
    SetHeader,
    RemoveHeader,
    SdkHeaderMap,
    RawHeaderPairs,
    KeyHash,
}

impl Op {
    fn from_letter(letter: u8) -> Option<Op> {
        Some(match letter {
            b'c' => Op::Clock,
            b'g' => Op::PresentHeader,
            b'a' => Op::AbsentHeader,
            b's' => Op::SetHeader,
            b'd' => Op::RemoveHeader,
            b'm' => Op::SdkHeaderMap,
            b'r' => Op::RawHeaderPairs,
            b'k' => Op::KeyHash,
            _ => return None,
        })
    }
}

/// The routing floor: read the key header, write the route header.
const ROUTING_FLOOR: [Op; 2] = [Op::PresentHeader, Op::SetHeader];

/// The ops of a configuration (surrounding whitespace ignored): the routing floor for a JSON
/// object, else one op per letter; `None` if a letter is unknown.
fn parse_ops(config: &[u8]) -> Option<Vec<Op>> {
    let config = config.trim_ascii();
    if config.first() == Some(&b'{') {
        return Some(ROUTING_FLOOR.to_vec());
    }
    config.iter().map(|&b| Op::from_letter(b)).collect()
}

/// Root context: reads the ops and hands them to every request.
struct ProbeRoot {
    ops: Rc<[Op]>,
    /// The salt's key, derived once, as a knhk policy holds it.
    key: BucketKey,
    /// The ops include `k`.
    keyed: bool,
}

impl Context for ProbeRoot {}

impl RootContext for ProbeRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        match parse_ops(&config) {
            Some(ops) => {
                self.keyed = ops.contains(&Op::KeyHash);
                self.ops = ops.into();
                true
            }
            None => {
                let _ = proxy_wasm::hostcalls::log(
                    LogLevel::Error,
                    "hostcall-probe: configuration must be op letters among c g a s d m r k",
                );
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let ops = Rc::clone(&self.ops);
        if self.keyed {
            Some(Box::new(KeyedProbeHttp {
                ops,
                key: self.key,
                last: None,
            }))
        } else {
            Some(Box::new(ProbeHttp { ops }))
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Per-request context: runs the ops on the request headers.
struct ProbeHttp {
    ops: Rc<[Op]>,
}

impl Context for ProbeHttp {}

impl HttpContext for ProbeHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for &op in self.ops.iter() {
            run(self, op);
        }
        Action::Continue
    }
}

/// Per-request context of a configuration with `k`: keeps the value `g` read for the hash, so
/// that configurations without `k` run exactly the plain context's code.
struct KeyedProbeHttp {
    ops: Rc<[Op]>,
    /// The salt's key, copied from the root.
    key: BucketKey,
    /// The value the last `g` read.
    last: Option<String>,
}

impl Context for KeyedProbeHttp {}

impl HttpContext for KeyedProbeHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for &op in self.ops.iter() {
            match op {
                Op::PresentHeader => {
                    self.last = black_box(self.get_http_request_header("x-user-id"));
                }
                Op::KeyHash => {
                    let key = self.last.as_deref().unwrap_or("").as_bytes();
                    black_box(self.key.buckets(black_box(key)));
                }
                other => run(self, other),
            }
        }
        Action::Continue
    }
}

/// One op of a context (`k` hashes nothing here: only the keyed context keeps a value).
fn run(ctx: &impl HttpContext, op: Op) {
    match op {
        Op::Clock => {
            black_box(ctx.get_current_time());
        }
        Op::PresentHeader => {
            black_box(ctx.get_http_request_header("x-user-id"));
        }
        Op::AbsentHeader => {
            black_box(ctx.get_http_request_header("x-knhk-absent"));
        }
        Op::SetHeader => ctx.set_http_request_header("x-knhk-route", Some("stable")),
        Op::RemoveHeader => ctx.set_http_request_header("x-knhk-absent", None),
        Op::SdkHeaderMap => {
            black_box(ctx.get_http_request_headers_bytes());
        }
        Op::RawHeaderPairs => {
            black_box(raw_header_pairs_len());
        }
        Op::KeyHash => {}
    }
}

#[allow(unsafe_code)]
mod raw {
    use super::{MapType, Status};

    #[link(wasm_import_module = "env")]
    extern "C" {
        /// The host call behind the SDK's header-map getters (same import as the SDK's).
        pub fn proxy_get_header_map_pairs(
            map_type: MapType,
            return_map_data: *mut *mut u8,
            return_map_size: *mut usize,
        ) -> Status;
    }
}

/// Size of the serialized request header map, fetched with `proxy_get_header_map_pairs` and
/// freed without parsing; 0 when the host returns nothing or an error.
#[allow(unsafe_code)]
fn raw_header_pairs_len() -> usize {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer and a size into the two locals; the buffer it returns
    // was allocated through the SDK's `proxy_on_memory_allocate` as a boxed slice of `size`
    // bytes, so it is freed as a `Vec` of that length and capacity, as the SDK itself does.
    unsafe {
        let status =
            raw::proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size);
        if !matches!(status, Status::Ok) || data.is_null() {
            return 0;
        }
        drop(Vec::from_raw_parts(data, size, size));
    }
    size
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Letters map to ops in order; whitespace around them is ignored; an unknown letter refuses all.
    #[test]
    fn configuration_parsing() {
        assert_eq!(parse_ops(b""), Some(vec![]));
        assert_eq!(
            parse_ops(b" cgasmrk\n"),
            Some(vec![
                Op::Clock,
                Op::PresentHeader,
                Op::AbsentHeader,
                Op::SetHeader,
                Op::SdkHeaderMap,
                Op::RawHeaderPairs,
                Op::KeyHash
            ])
        );
        assert_eq!(parse_ops(b"gx"), None);
        assert_eq!(parse_ops(b"[]"), None);
    }

    /// A JSON object (the load benchmark's knhk configuration) runs the routing floor.
    #[test]
    fn json_configuration_runs_the_routing_floor() {
        let floor = Some(vec![Op::PresentHeader, Op::SetHeader]);
        assert_eq!(parse_ops(br#" {"routing":{"salt":"knhk"}}"#), floor);
        assert_eq!(parse_ops(b"gs"), floor);
    }
}
