//! A stand-in proxy-wasm host (ABI 0.2.1) for counting work, not for correctness testing.
//!
//! It serves what the filter asks of Envoy on a request's path — the plugin configuration,
//! request and response headers, the clock, properties, shared data, metrics, local replies —
//! from plain Rust state, and counts every host call by name. Imports the filter never calls
//! on these paths are defined to fail loudly, so a measurement never runs on a silent stub.

use std::collections::{BTreeMap, HashMap};

use wasmi::{Caller, Error, Extern, Linker, Module, Val};

/// proxy-wasm status codes used here.
const OK: i32 = 0;
const NOT_FOUND: i32 = 1;
const CAS_MISMATCH: i32 = 8;
/// `MapType` values.
const REQUEST_HEADERS: i32 = 0;
const RESPONSE_HEADERS: i32 = 2;
/// `MapType::HttpCallResponseHeaders`.
const CALL_RESPONSE_HEADERS: i32 = 6;
/// `BufferType::HttpCallResponseBody`.
const CALL_RESPONSE_BODY: i32 = 4;
/// `BufferType::PluginConfiguration`.
const PLUGIN_CONFIGURATION: i32 = 7;

/// An HTTP call the module dispatched (`dispatch_http_call`), not yet answered.
#[derive(Debug, Clone)]
pub struct HttpCall {
    /// Token the host returned for it.
    pub token: u32,
    /// Its `:path` header.
    pub path: String,
    /// Body length, bytes.
    pub body_len: usize,
}

/// Everything the stand-in host knows, and what it counted.
#[derive(Default)]
pub struct Host {
    /// The plugin configuration served to `on_configure`.
    pub plugin_config: Vec<u8>,
    /// The current request's headers (lowercase names).
    pub request_headers: Vec<(String, Vec<u8>)>,
    /// The current response's headers.
    pub response_headers: Vec<(String, Vec<u8>)>,
    /// Host clock, nanoseconds; the driver advances it.
    pub now_ns: u64,
    /// `response.code` served at the log phase.
    pub response_code: i64,
    /// Host calls made, by import name.
    pub calls: BTreeMap<String, u64>,
    /// Log lines the filter wrote (level, text).
    pub logs: Vec<(i32, String)>,
    /// Local replies sent (shed or fail-closed answers).
    pub local_replies: u64,
    /// Shared data (key → value, CAS), as Envoy keeps it per VM id.
    pub shared: HashMap<Vec<u8>, (Vec<u8>, u32)>,
    /// Defined metrics; the index is the metric id.
    pub metrics: Vec<Vec<u8>>,
    /// Calls dispatched and not answered yet.
    pub pending_calls: Vec<HttpCall>,
    /// Headers of the call response being delivered.
    pub call_response_headers: Vec<(String, Vec<u8>)>,
    /// Body of the call response being delivered.
    pub call_response_body: Vec<u8>,
    /// The last token handed out.
    pub next_token: u32,
    /// When set, every host call appends (its name, the fuel left at the call, the fuel left
    /// after the module's allocator served the host's copy), so the module's work between two
    /// host calls can be read off as differences (`--trace`).
    pub trace: Option<Vec<(String, u64, u64)>>,
}

impl Host {
    fn count(&mut self, name: &str) {
        *self.calls.entry(name.to_string()).or_default() += 1;
    }

    fn headers(&mut self, map: i32) -> Option<&mut Vec<(String, Vec<u8>)>> {
        match map {
            REQUEST_HEADERS => Some(&mut self.request_headers),
            RESPONSE_HEADERS => Some(&mut self.response_headers),
            CALL_RESPONSE_HEADERS => Some(&mut self.call_response_headers),
            _ => None,
        }
    }
}

type Ctx<'a> = Caller<'a, Host>;

/// Count a host call, and trace it with the fuel left when tracing.
fn note(c: &mut Ctx<'_>, name: &str) {
    let fuel = c.get_fuel().unwrap_or(0);
    let host = c.data_mut();
    host.count(name);
    if let Some(trace) = host.trace.as_mut() {
        trace.push((name.to_string(), fuel, fuel));
    }
}

fn memory(caller: &Ctx<'_>) -> Result<wasmi::Memory, Error> {
    caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| Error::new("module exports no memory"))
}

fn read(caller: &Ctx<'_>, ptr: i32, len: i32) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0; len as u32 as usize];
    memory(caller)?
        .read(caller, ptr as u32 as usize, &mut buf)
        .map_err(|e| Error::new(format!("read guest memory: {e}")))?;
    Ok(buf)
}

fn write(caller: &mut Ctx<'_>, ptr: i32, bytes: &[u8]) -> Result<(), Error> {
    memory(caller)?
        .write(&mut *caller, ptr as u32 as usize, bytes)
        .map_err(|e| Error::new(format!("write guest memory: {e}")))
}

/// Copy `data` into memory the guest allocates, and store its address and length at
/// `ret_ptr` / `ret_len`, as the ABI returns buffers.
fn hand_over(caller: &mut Ctx<'_>, data: &[u8], ret_ptr: i32, ret_len: i32) -> Result<i32, Error> {
    let alloc = caller
        .get_export("proxy_on_memory_allocate")
        .and_then(Extern::into_func)
        .ok_or_else(|| Error::new("module exports no proxy_on_memory_allocate"))?
        .typed::<i32, i32>(&*caller)?;
    let ptr = alloc.call(&mut *caller, data.len() as i32)?;
    let fuel = caller.get_fuel().unwrap_or(0);
    if let Some(last) = caller.data_mut().trace.as_mut().and_then(|t| t.last_mut()) {
        last.2 = fuel;
    }
    write(caller, ptr, data)?;
    write(caller, ret_ptr, &(ptr as u32).to_le_bytes())?;
    write(caller, ret_len, &(data.len() as u32).to_le_bytes())?;
    Ok(OK)
}

/// proxy-wasm's serialized header map: count, (name length, value length) pairs, then each
/// name and value followed by a NUL.
fn serialize_pairs(pairs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// The pairs of a serialized header map (the inverse of [`serialize_pairs`]); `None` if malformed.
fn deserialize_pairs(bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let word = |at: usize| -> Option<usize> {
        let raw = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize)
    };
    let count = word(0)?;
    let mut sizes = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        sizes.push((word(4 + 8 * i)?, word(8 + 8 * i)?));
    }
    let mut at = 4 + 8 * count;
    let mut pairs = Vec::with_capacity(sizes.len());
    for (k, v) in sizes {
        let key = String::from_utf8_lossy(bytes.get(at..at + k)?).into_owned();
        at += k + 1;
        let value = bytes.get(at..at + v)?.to_vec();
        at += v + 1;
        pairs.push((key, value));
    }
    Some(pairs)
}

/// A linker with every import of `module`: the modelled calls, and a loud failure for the rest.
pub fn linker(module: &Module) -> Result<Linker<Host>, Error> {
    let mut l = Linker::<Host>::new(module.engine());
    l.func_wrap(
        "env",
        "proxy_log",
        |mut c: Ctx<'_>, level: i32, p: i32, n: i32| {
            let text = String::from_utf8_lossy(&read(&c, p, n)?).into_owned();
            note(&mut c, "proxy_log");
            c.data_mut().logs.push((level, text));
            Ok::<i32, Error>(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: Ctx<'_>, ret: i32| {
            note(&mut c, "proxy_get_current_time_nanoseconds");
            let now = c.data().now_ns;
            write(&mut c, ret, &now.to_le_bytes())?;
            Ok::<i32, Error>(OK)
        },
    )?;
    // Calls whose only effect here is to be counted.
    for name in [
        "proxy_set_tick_period_milliseconds",
        "proxy_set_effective_context",
    ] {
        l.func_wrap("env", name, move |mut c: Ctx<'_>, _arg: i32| {
            note(&mut c, name);
            OK
        })?;
    }
    l.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Ctx<'_>, kind: i32, start: i32, max: i32, ret_p: i32, ret_n: i32| {
            note(&mut c, "proxy_get_buffer_bytes");
            let cfg = match kind {
                PLUGIN_CONFIGURATION => c.data().plugin_config.clone(),
                CALL_RESPONSE_BODY => c.data().call_response_body.clone(),
                _ => return Ok::<i32, Error>(NOT_FOUND),
            };
            let from = (start as u32 as usize).min(cfg.len());
            let to = from.saturating_add(max as u32 as usize).min(cfg.len());
            hand_over(&mut c, &cfg[from..to], ret_p, ret_n)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: Ctx<'_>, map: i32, kp: i32, kn: i32, ret_p: i32, ret_n: i32| {
            note(&mut c, "proxy_get_header_map_value");
            let key = read(&c, kp, kn)?;
            let value = c.data_mut().headers(map).and_then(|h| {
                h.iter()
                    .find(|(k, _)| k.as_bytes() == key.as_slice())
                    .map(|(_, v)| v.clone())
            });
            match value {
                Some(v) => hand_over(&mut c, &v, ret_p, ret_n),
                None => Ok::<i32, Error>(NOT_FOUND),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Ctx<'_>, map: i32, ret_p: i32, ret_n: i32| {
            note(&mut c, "proxy_get_header_map_pairs");
            let pairs = c.data_mut().headers(map).map(|h| serialize_pairs(h));
            let bytes = pairs.unwrap_or_else(|| serialize_pairs(&[]));
            hand_over(&mut c, &bytes, ret_p, ret_n)
        },
    )?;
    for name in [
        "proxy_replace_header_map_value",
        "proxy_add_header_map_value",
    ] {
        let replace = name == "proxy_replace_header_map_value";
        l.func_wrap(
            "env",
            name,
            move |mut c: Ctx<'_>, map: i32, kp: i32, kn: i32, vp: i32, vn: i32| {
                note(&mut c, name);
                let key = String::from_utf8_lossy(&read(&c, kp, kn)?).into_owned();
                let value = read(&c, vp, vn)?;
                if let Some(h) = c.data_mut().headers(map) {
                    if replace {
                        h.retain(|(k, _)| *k != key);
                    }
                    h.push((key, value));
                }
                Ok::<i32, Error>(OK)
            },
        )?;
    }
    l.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: Ctx<'_>, map: i32, kp: i32, kn: i32| {
            note(&mut c, "proxy_remove_header_map_value");
            let key = String::from_utf8_lossy(&read(&c, kp, kn)?).into_owned();
            if let Some(h) = c.data_mut().headers(map) {
                h.retain(|(k, _)| *k != key);
            }
            Ok::<i32, Error>(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: Ctx<'_>, pp: i32, pn: i32, ret_p: i32, ret_n: i32| {
            note(&mut c, "proxy_get_property");
            if read(&c, pp, pn)?.as_slice() == b"response\0code" {
                let code = c.data().response_code;
                return hand_over(&mut c, &code.to_le_bytes(), ret_p, ret_n);
            }
            Ok::<i32, Error>(NOT_FOUND)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: Ctx<'_>, kp: i32, kn: i32, ret_p: i32, ret_n: i32, ret_cas: i32| {
            note(&mut c, "proxy_get_shared_data");
            let key = read(&c, kp, kn)?;
            let Some((value, cas)) = c.data().shared.get(&key).cloned() else {
                return Ok::<i32, Error>(NOT_FOUND);
            };
            write(&mut c, ret_cas, &cas.to_le_bytes())?;
            hand_over(&mut c, &value, ret_p, ret_n)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: Ctx<'_>, kp: i32, kn: i32, vp: i32, vn: i32, cas: i32| {
            note(&mut c, "proxy_set_shared_data");
            let key = read(&c, kp, kn)?;
            let value = read(&c, vp, vn)?;
            let shared = &mut c.data_mut().shared;
            let current = shared.get(&key).map_or(0, |(_, cas)| *cas);
            if cas != 0 && cas as u32 != current {
                return Ok::<i32, Error>(CAS_MISMATCH);
            }
            shared.insert(key, (value, current.wrapping_add(1).max(1)));
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: Ctx<'_>, _kind: i32, np: i32, nn: i32, ret_id: i32| {
            note(&mut c, "proxy_define_metric");
            let name = read(&c, np, nn)?;
            let metrics = &mut c.data_mut().metrics;
            let id = metrics.iter().position(|m| *m == name).unwrap_or_else(|| {
                metrics.push(name);
                metrics.len() - 1
            });
            write(&mut c, ret_id, &(id as u32).to_le_bytes())?;
            Ok::<i32, Error>(OK)
        },
    )?;
    for name in ["proxy_increment_metric", "proxy_record_metric"] {
        l.func_wrap("env", name, move |mut c: Ctx<'_>, _id: i32, _v: i64| {
            note(&mut c, name);
            OK
        })?;
    }
    l.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: Ctx<'_>,
         _s: i32,
         _dp: i32,
         _dn: i32,
         _bp: i32,
         _bn: i32,
         _hp: i32,
         _hn: i32,
         _g: i32| {
            note(&mut c, "proxy_send_local_response");
            c.data_mut().local_replies += 1;
            OK
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: Ctx<'_>,
         _up: i32,
         _up_n: i32,
         hp: i32,
         hn: i32,
         _bp: i32,
         bn: i32,
         _tp: i32,
         _tn: i32,
         _timeout: i32,
         ret_token: i32| {
            note(&mut c, "proxy_http_call");
            let headers = deserialize_pairs(&read(&c, hp, hn)?)
                .ok_or_else(|| Error::new("malformed header map in proxy_http_call"))?;
            let path = headers
                .iter()
                .find(|(k, _)| k == ":path")
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            let host = c.data_mut();
            host.next_token += 1;
            let token = host.next_token;
            host.pending_calls.push(HttpCall {
                token,
                path,
                body_len: bn as u32 as usize,
            });
            write(&mut c, ret_token, &token.to_le_bytes())?;
            Ok::<i32, Error>(OK)
        },
    )?;
    l.func_wrap(
        "wasi_snapshot_preview1",
        "environ_sizes_get",
        |mut c: Ctx<'_>, count: i32, size: i32| {
            write(&mut c, count, &0u32.to_le_bytes())?;
            write(&mut c, size, &0u32.to_le_bytes())?;
            Ok::<i32, Error>(0)
        },
    )?;
    l.func_wrap(
        "wasi_snapshot_preview1",
        "environ_get",
        |_c: Ctx<'_>, _a: i32, _b: i32| 0,
    )?;
    l.func_wrap(
        "wasi_snapshot_preview1",
        "fd_write",
        |mut c: Ctx<'_>, _fd: i32, iovs: i32, n: i32, written: i32| {
            let raw = read(&c, iovs, n.saturating_mul(8))?;
            let total: u32 = raw
                .chunks_exact(8)
                .map(|iov| u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]))
                .sum();
            write(&mut c, written, &total.to_le_bytes())?;
            Ok::<i32, Error>(0)
        },
    )?;
    // Everything else: defined with its declared type, failing with its name if called. A name
    // defined above makes `func_new` fail with "already defined", which keeps the model.
    for import in module.imports() {
        let Some(ty) = import.ty().func().cloned() else {
            continue;
        };
        let name = import.name().to_string();
        let _ = l.func_new(
            import.module(),
            import.name(),
            ty,
            move |_c, _args: &[Val], _ret: &mut [Val]| {
                Err(Error::new(format!(
                    "host call {name} is not modelled by knhk-wasm-cost"
                )))
            },
        );
    }
    Ok(l)
}
