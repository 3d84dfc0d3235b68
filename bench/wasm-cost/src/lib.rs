//! `knhk-wasm-cost`: how many wasm instructions a proxy-wasm module executes per request.
//!
//! Envoy's own cost per request moves by 10–15 % between runs on a shared machine, which hides
//! sub-microsecond changes to the filter. This tool runs the module in the wasmi interpreter
//! with fuel metering under a stand-in host ([`host`]) and reports the fuel (≈ executed wasm
//! instructions) and host calls per request and per callback: the same number on every run,
//! whatever the machine is doing. It measures the module's own work, not V8's code quality
//! nor the host's side of each call; `cargo xtask bench` measures those, in Envoy.

pub mod host;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use wasmi::{Config, Engine, Instance, Module, Store, TypedFunc};

use host::Host;

/// The `knhk` variant's plugin configuration in `cargo xtask bench`.
pub const BENCH_CONFIG: &str = r#"{"routing":{"salt":"knhk","canary_basis_points":1000,"key_sources":[{"header":"x-user-id"}]},"admission":{"enabled":true},"debug_headers":false}"#;
/// The root context's id.
const ROOT: i32 = 1;
/// Fuel given to the store: far more than any run uses.
const FUEL: u64 = 1 << 60;

/// What to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Plugin configuration (JSON).
    pub config: String,
    /// Measured requests (after the warm-up).
    pub requests: u64,
    /// Requests before measuring.
    pub warmup: u64,
    /// Requests between two timer ticks.
    pub tick_every: u64,
}

/// The callbacks of one request, in the order Envoy makes them.
pub const PHASES: [&str; 5] = [
    "context_create",
    "request_headers",
    "response_headers",
    "log",
    "done+delete",
];

/// One module's results.
#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    /// Module size, bytes.
    pub size: u64,
    /// Mean fuel per request of each of [`PHASES`].
    pub per_phase: [f64; PHASES.len()],
    /// Mean fuel per request, all phases.
    pub per_request: f64,
    /// Mean fuel per `on_tick`.
    pub per_tick: f64,
    /// Host calls per request (ticks included), by import name.
    pub calls_per_request: BTreeMap<String, f64>,
    /// Local replies sent during the measured requests.
    pub local_replies: u64,
    /// Receipt batches posted (and acknowledged) during the measured requests.
    pub receipt_batches: u64,
    /// Bytes of receipt batches posted during the measured requests.
    pub receipt_bytes: u64,
    /// Where the last request's fuel went, in order: the module's work before each host call,
    /// its allocator's work for the host's copy of a value, and its work after the last call of
    /// each callback (label, fuel).
    pub last_request: Vec<(String, u64)>,
}

impl Cost {
    /// Fuel per request with the ticks' share (stats flush, admission sync, receipt batches).
    pub fn per_request_amortized(&self, tick_every: u64) -> f64 {
        self.per_request + self.per_tick / tick_every.max(1) as f64
    }
}

struct Exports {
    context_create: TypedFunc<(i32, i32), ()>,
    request_headers: TypedFunc<(i32, i32, i32), i32>,
    response_headers: TypedFunc<(i32, i32, i32), i32>,
    log: TypedFunc<i32, ()>,
    done: TypedFunc<i32, i32>,
    delete: TypedFunc<i32, ()>,
    tick: TypedFunc<i32, ()>,
    call_response: TypedFunc<(i32, i32, i32, i32, i32), ()>,
}

fn exports(instance: &Instance, store: &Store<Host>) -> anyhow::Result<Exports> {
    Ok(Exports {
        context_create: instance.get_typed_func(store, "proxy_on_context_create")?,
        request_headers: instance.get_typed_func(store, "proxy_on_request_headers")?,
        response_headers: instance.get_typed_func(store, "proxy_on_response_headers")?,
        log: instance.get_typed_func(store, "proxy_on_log")?,
        done: instance.get_typed_func(store, "proxy_on_done")?,
        delete: instance.get_typed_func(store, "proxy_on_delete")?,
        tick: instance.get_typed_func(store, "proxy_on_tick")?,
        call_response: instance.get_typed_func(store, "proxy_on_http_call_response")?,
    })
}

/// Headers like the bench's wrk requests: distinct `x-user-id` and `x-request-id` per request.
fn request_headers(i: u64) -> Vec<(String, Vec<u8>)> {
    [
        (":authority", "localhost".to_string()),
        (":path", "/direct".to_string()),
        (":method", "GET".to_string()),
        (":scheme", "http".to_string()),
        ("x-user-id", format!("bench-{i}")),
        ("x-forwarded-proto", "http".to_string()),
        ("x-request-id", format!("2f0c9a3e-5b1d-4c7a-9e2f-{i:012}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_bytes()))
    .collect()
}

/// Answer every pending receipt post with 200, as an agent that committed it would, until the
/// module sends no further batch; config long-polls stay pending, as the agent holds them.
/// Returns the batches and bytes acknowledged.
fn acknowledge_receipts(store: &mut Store<Host>, f: &Exports) -> anyhow::Result<(u64, u64)> {
    let (mut batches, mut bytes) = (0u64, 0u64);
    loop {
        let pending = std::mem::take(&mut store.data_mut().pending_calls);
        let (posts, polls): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|c| c.path.starts_with("/v1/receipts"));
        store.data_mut().pending_calls = polls;
        if posts.is_empty() {
            return Ok((batches, bytes));
        }
        for post in posts {
            batches += 1;
            bytes += post.body_len as u64;
            store.data_mut().call_response_headers = vec![(":status".into(), b"200".to_vec())];
            store.data_mut().call_response_body.clear();
            f.call_response
                .call(&mut *store, (ROOT, post.token as i32, 1, 0, 0))?;
        }
    }
}

fn fuel(store: &Store<Host>) -> anyhow::Result<u64> {
    Ok(store.get_fuel()?)
}

/// Load the module at `path`, configure it, and drive `settings.warmup + settings.requests`
/// requests through it, counting fuel per callback.
pub fn measure(path: &Path, args: &Settings) -> anyhow::Result<Cost> {
    if args.requests == 0 || args.tick_every == 0 {
        bail!("requests and tick_every must be at least 1");
    }
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let mut config = Config::default();
    config.consume_fuel(true);
    let engine = Engine::new(&config);
    let module =
        Module::new(&engine, &bytes).with_context(|| format!("load {}", path.display()))?;
    let linker = host::linker(&module)?;
    let mut store = Store::new(
        &engine,
        Host {
            plugin_config: args.config.clone().into_bytes(),
            now_ns: 1_700_000_000_000_000_000,
            response_code: 200,
            ..Host::default()
        },
    );
    store.set_fuel(FUEL)?;
    let instance = linker.instantiate_and_start(&mut store, &module)?;
    if let Ok(init) = instance.get_typed_func::<(), ()>(&store, "_initialize") {
        init.call(&mut store, ())?;
    }
    let f = exports(&instance, &store)?;
    let vm_start: TypedFunc<(i32, i32), i32> =
        instance.get_typed_func(&store, "proxy_on_vm_start")?;
    let configure: TypedFunc<(i32, i32), i32> =
        instance.get_typed_func(&store, "proxy_on_configure")?;
    f.context_create.call(&mut store, (ROOT, 0))?;
    vm_start.call(&mut store, (ROOT, 0))?;
    let config_len = args.config.len() as i32;
    // A configuration the filter refuses is accepted by `on_configure` (the filter then runs
    // unconfigured, failing open), so the refusal is read from its log: measuring that would
    // measure nothing.
    let accepted = configure.call(&mut store, (ROOT, config_len))? == 1;
    let refused_in_log = store
        .data()
        .logs
        .iter()
        .any(|(_, l)| l.contains("invalid knhk config"));
    if !accepted || refused_in_log {
        bail!(
            "{} refused the configuration: {:?}",
            path.display(),
            store.data().logs
        );
    }

    let mut per_phase = [0u64; PHASES.len()];
    let mut tick_fuel = 0u64;
    let mut ticks = 0u64;
    let mut last_request = Vec::new();
    let (mut receipt_batches, mut receipt_bytes) = (0u64, 0u64);
    let total = args.warmup + args.requests;
    for i in 0..total {
        let measured = i >= args.warmup;
        if measured && i == args.warmup {
            store.data_mut().calls.clear();
            store.data_mut().local_replies = 0;
        }
        let ctx = 2 + (i % 1_000_000) as i32;
        store.data_mut().request_headers = request_headers(i);
        store.data_mut().response_headers = vec![(":status".into(), b"200".to_vec())];
        let nheaders = store.data().request_headers.len() as i32;
        let mut phase = |store: &mut Store<Host>,
                         n: usize,
                         run: &dyn Fn(&mut Store<Host>) -> anyhow::Result<()>|
         -> anyhow::Result<()> {
            let before = fuel(store)?;
            let last = i + 1 == total;
            if last {
                store.data_mut().trace = Some(Vec::new());
            }
            run(store)?;
            let after = fuel(store)?;
            if measured {
                per_phase[n] += before - after;
            }
            if let Some(trace) = store.data_mut().trace.take() {
                let mut at = before;
                for (call, at_call, after_alloc) in trace {
                    last_request.push((format!("{} → {call}", PHASES[n]), at - at_call));
                    if after_alloc != at_call {
                        last_request.push((
                            format!("{}   allocation for {call}", PHASES[n]),
                            at_call - after_alloc,
                        ));
                    }
                    at = after_alloc;
                }
                last_request.push((format!("{} → return", PHASES[n]), at - after));
            }
            // 250 µs between callbacks: far under every class budget, so nothing sheds.
            store.data_mut().now_ns += 250_000;
            Ok(())
        };
        phase(&mut store, 0, &|s| {
            Ok(f.context_create.call(s, (ctx, ROOT))?)
        })?;
        phase(&mut store, 1, &|s| {
            Ok(f.request_headers.call(s, (ctx, nheaders, 1)).map(drop)?)
        })?;
        phase(&mut store, 2, &|s| {
            Ok(f.response_headers.call(s, (ctx, 1, 0)).map(drop)?)
        })?;
        phase(&mut store, 3, &|s| Ok(f.log.call(s, ctx)?))?;
        phase(&mut store, 4, &|s| {
            f.done.call(&mut *s, ctx)?;
            Ok(f.delete.call(s, ctx)?)
        })?;
        if (i + 1) % args.tick_every == 0 {
            let before = fuel(&store)?;
            f.tick.call(&mut store, ROOT)?;
            let (batches, bytes) = acknowledge_receipts(&mut store, &f)?;
            if measured {
                receipt_batches += batches;
                receipt_bytes += bytes;
                tick_fuel += before - fuel(&store)?;
                ticks += 1;
            }
        }
    }
    let n = args.requests as f64;
    let per_phase = per_phase.map(|v| v as f64 / n);
    Ok(Cost {
        size: bytes.len() as u64,
        per_request: per_phase.iter().sum(),
        per_phase,
        per_tick: if ticks == 0 {
            0.0
        } else {
            tick_fuel as f64 / ticks as f64
        },
        calls_per_request: store
            .data()
            .calls
            .iter()
            .map(|(k, v)| (k.clone(), *v as f64 / n))
            .collect(),
        local_replies: store.data().local_replies,
        receipt_batches,
        receipt_bytes,
        last_request,
    })
}
