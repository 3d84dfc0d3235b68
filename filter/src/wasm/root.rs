//! The proxy-wasm root context: configures the VM, runs the timer (admission sync, stats
//! flush, config long-poll, receipt flush), applies pushed configs and creates one
//! [`KnhkHttp`] per request. The logic lives in the host-independent modules; this adapter
//! moves their calls and answers through proxy-wasm.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use knhk_core::Policy;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, MapType};

use crate::configure::{configure, is_current};
use crate::control::{ConfigPoll, PollOutcome};
use crate::link::{flush_receipts, poll_config, poll_done, receipts_answered};
use crate::receipts::ReceiptBuffer;
use crate::stats::Metrics;
use crate::tick::{accept_pushed, install, tick_period_ms, tick_worker};
use crate::wasm::host::{now_ns, status_header, EnvoySharedData, VmWorker, WasmCalls, WasmStats};
use crate::wasm::http::KnhkHttp;
use crate::worker::WorkerAccess;
use crate::worker::WorkerState;

/// A string field of Envoy's node metadata (`node.metadata.<key>`), when set.
fn node_metadata(key: &str) -> Option<String> {
    let bytes = hostcalls::get_property(vec!["node", "metadata", key]).ok()??;
    String::from_utf8(bytes).ok()
}

/// The filter's root context.
pub struct KnhkRoot {
    worker: VmWorker,
    metrics: Metrics,
    poll: Option<ConfigPoll>,
    tick_ms: u32,
    sync_failures: u64,
    /// Digest of this VM's plugin configuration, published in shared data on configure.
    config_digest: [u8; 8],
    /// The serving pod, named in every receipt batch.
    origin: knhk_core::receipt::Origin,
}

impl KnhkRoot {
    /// A root with no policy yet; metrics are defined at once so Envoy lists them.
    pub fn new() -> Self {
        // Distinct per VM by a counter in shared data; the first VM's start time seeds its base.
        let seed = now_ns().map_or(0, |ns| (ns ^ (ns >> 32)) as u32);
        let worker_id = knhk_core::worker_id::claim(&EnvoySharedData, seed);
        log::info!("knhk: worker id {worker_id}");
        let (origin, warnings) =
            crate::origin::resolve(&crate::origin::process_env, &node_metadata);
        for w in warnings {
            log::warn!("knhk: {w}");
        }
        KnhkRoot {
            worker: VmWorker(Rc::new(RefCell::new(WorkerState::new(worker_id)))),
            metrics: Metrics::define(&mut WasmStats),
            poll: None,
            tick_ms: 0,
            sync_failures: 0,
            config_digest: [0; 8],
            origin,
        }
    }

    /// Run the timer at the policy's tick, or faster when receipts must flush more often.
    fn set_tick(&mut self, policy: &Policy) -> bool {
        let tick = tick_period_ms(policy);
        if tick == self.tick_ms {
            return true;
        }
        match hostcalls::set_tick_period(Duration::from_millis(u64::from(tick))) {
            Ok(()) => {
                self.tick_ms = tick;
                true
            }
            Err(status) => {
                log::error!("knhk: cannot start the timer: {status:?}");
                false
            }
        }
    }

    fn poll_config(&mut self, now_ms: u64) {
        if let Some(poll) = self.poll.as_mut() {
            if let Some(why) = poll_config(poll, &mut WasmCalls, now_ms) {
                log::warn!("knhk: {why}");
            }
        }
    }

    fn flush_receipts(&mut self, now_ms: u64) {
        let Some(poll) = self.poll.as_ref() else {
            return;
        };
        let mut state = self.worker.0.borrow_mut();
        if let Some(buffer) = state.receipts.as_mut() {
            flush_receipts(buffer, poll.control(), &mut WasmCalls, now_ms);
        }
    }

    fn apply(&mut self, outcome: PollOutcome) {
        if let Some(policy) = apply_pushed(&self.worker, outcome) {
            if !self.set_tick(&policy) {
                self.worker.0.borrow_mut().pending.decision_errors += 1;
            }
        }
    }
}

/// Status of a completed call, `None` when the call failed without a response.
fn call_status(num_headers: usize) -> Option<u16> {
    if num_headers == 0 {
        return None;
    }
    status_header(MapType::HttpCallResponseHeaders)
}

impl Context for KnhkRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let token = u64::from(token_id);
        let status = call_status(num_headers);
        let now_ms = now_ns().map_or(0, |ns| ns / 1_000_000);
        if self.poll.as_ref().is_some_and(|p| p.owns(token)) {
            let body = if body_size > 0 {
                hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                    .ok()
                    .flatten()
            } else {
                None
            };
            let outcome = match self.poll.as_mut() {
                Some(poll) => poll_done(poll, status, body.as_deref(), now_ms),
                None => return,
            };
            self.apply(outcome);
            // Re-poll at once when nothing is wrong (204 or applied), not a tick later.
            self.poll_config(now_ms);
            return;
        }
        let acknowledged =
            receipts_answered(self.worker.0.borrow_mut().receipts.as_mut(), token, status);
        // A full batch waiting goes now; a partial one waits for the interval.
        if acknowledged {
            self.flush_receipts(now_ms);
        }
    }
}

/// This plugin's name (the key of its last good configuration).
fn plugin_name() -> String {
    hostcalls::get_property(vec!["plugin_name"])
        .ok()
        .flatten()
        .map(|n| String::from_utf8_lossy(&n).into_owned())
        .unwrap_or_default()
}

impl RootContext for KnhkRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                log::error!("knhk: cannot read the plugin configuration: {status:?}");
                return false;
            }
        };
        let configured = configure(&bytes, &EnvoySharedData, &plugin_name());
        if configured.rejected {
            self.metrics.config_rejected(&mut WasmStats);
        }
        let Some(policy) = configured.policy else {
            let mut state = self.worker.0.borrow_mut();
            state.fail_mode_without_policy = configured.fail_mode_without_policy;
            state.policy = None;
            return true;
        };
        self.config_digest = configured.digest;
        {
            let mut state = self.worker.0.borrow_mut();
            state.receipts = policy
                .control
                .as_ref()
                .and_then(|c| c.receipts.clone())
                .map(|r| ReceiptBuffer::new(r, self.origin.clone()));
            state.epoch = 0;
        }
        self.poll = policy.control.clone().map(ConfigPoll::new);
        if !self.set_tick(&policy) {
            return false;
        }
        self.worker.0.borrow_mut().policy = Some(Arc::new(policy));
        true
    }

    fn on_tick(&mut self) {
        let now_ms = now_ns().map_or(0, |ns| ns / 1_000_000);
        let current = is_current(&EnvoySharedData, &self.config_digest);
        let flushed = tick_worker(
            &mut self.worker.0.borrow_mut(),
            &EnvoySharedData,
            now_ms,
            &mut self.sync_failures,
        );
        let Some((counts, levels, version)) = flushed else {
            return;
        };
        self.metrics
            .flush(&mut WasmStats, &counts, &levels, current.then_some(version));
        self.poll_config(now_ms);
        self.flush_receipts(now_ms);
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never `None`: the SDK aborts the VM on it. Without a policy the context applies the
        // default fail mode (open).
        Some(Box::new(KnhkHttp::new(self.worker.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// [`accept_pushed`] then [`install`] for a host with one worker per poll (a wasm VM);
/// returns the installed policy. A refused config is counted by the caller's stats.
pub fn apply_pushed(worker: &impl WorkerAccess, outcome: PollOutcome) -> Option<Arc<Policy>> {
    let epoch = worker.with(|w| w.epoch);
    let refused = matches!(outcome, PollOutcome::Refused(_));
    let accepted = accept_pushed(outcome, epoch);
    worker.with(|w| {
        if refused {
            w.pending.configs_rejected += 1;
        }
        accepted.map(|(policy, epoch)| {
            install(w, Arc::clone(&policy), epoch);
            policy
        })
    })
}
