//! The root context: validates the plugin configuration, runs the timer (admission sync, stats
//! flush, config long-poll, receipt flush), applies pushed configs and creates one
//! [`KnhkHttp`] per request.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use knhk_core::config::FailMode;
use knhk_core::policy::fail_mode_hint;
use knhk_core::Policy;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, MapType};

use crate::control::{ConfigPoll, PollOutcome};
use crate::host::{now_ns, status_header, EnvoySharedData};
use crate::http::KnhkHttp;
use crate::receipts::ReceiptBuffer;
use crate::state::VmState;

/// The filter's root context.
pub struct KnhkRoot {
    state: Rc<RefCell<VmState>>,
    poll: Option<ConfigPoll>,
    flush_token: Option<u32>,
    /// The agent answered the last batch with 401/403 (logged once per change).
    receipts_refused: bool,
    last_flush_ms: u64,
    tick_ms: u32,
    sync_failures: u64,
    /// Digest of this VM's plugin configuration, published in shared data on configure.
    config_digest: [u8; 8],
}

/// Shared-data key of this plugin's last configuration that validated, kept across plugin
/// reconfigurations in the same VM: what stays in force when a new one is refused.
fn last_good_key() -> String {
    let name = hostcalls::get_property(vec!["plugin_name"])
        .ok()
        .flatten()
        .map(|n| String::from_utf8_lossy(&n).into_owned())
        .unwrap_or_default();
    format!("knhk.config.last_good.{name}")
}

/// Shared-data key holding the digest of the newest plugin configuration. While Envoy drains
/// a replaced listener, the old plugin's VMs keep ticking; only VMs whose digest is current
/// write gauges, so `knhk.config.version` does not flip between old and new values.
const CURRENT_CONFIG_KEY: &str = "knhk.config.current";

impl KnhkRoot {
    /// A root with no policy yet; metrics are defined at once so Envoy lists them.
    pub fn new() -> Self {
        // Distinct per VM by a counter in shared data; the first VM's start time seeds its base.
        let seed = now_ns().map_or(0, |ns| (ns ^ (ns >> 32)) as u32);
        let worker_id = knhk_core::worker_id::claim(&EnvoySharedData, seed);
        log::info!("knhk: worker id {worker_id}");
        KnhkRoot {
            state: Rc::new(RefCell::new(VmState::new(worker_id))),
            poll: None,
            flush_token: None,
            receipts_refused: false,
            last_flush_ms: 0,
            tick_ms: 0,
            sync_failures: 0,
            config_digest: [0; 8],
        }
    }

    /// Run the timer at the policy's tick, or faster when receipts must flush more often.
    fn set_tick(&mut self, policy: &Policy) -> bool {
        let flush = self
            .state
            .borrow()
            .receipts
            .as_ref()
            .map(|r| r.settings().flush_interval_ms);
        let tick = flush.map_or(policy.tick_ms, |f| f.min(policy.tick_ms));
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
        let Some(poll) = self.poll.as_mut() else {
            return;
        };
        if !poll.due(now_ms) {
            return;
        }
        let path = poll.path();
        let control = poll.control();
        let mut headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", control.authority.as_str()),
            ("accept", "application/json"),
        ];
        if let Some(token) = &control.token {
            headers.push(("authorization", token.header_value()));
        }
        let timeout = Duration::from_millis(poll.call_timeout_ms());
        match hostcalls::dispatch_http_call(&control.cluster, headers, None, vec![], timeout) {
            Ok(token) => poll.dispatched(token),
            Err(status) => {
                log::warn!(
                    "knhk: cannot poll the agent on cluster {}: {status:?}",
                    control.cluster
                );
                poll.dispatch_failed(now_ms);
            }
        }
    }

    fn flush_receipts(&mut self, now_ms: u64) {
        let Some(poll) = self.poll.as_ref() else {
            return;
        };
        if self.flush_token.is_some() {
            return;
        }
        let mut state = self.state.borrow_mut();
        let Some(buffer) = state.receipts.as_mut() else {
            return;
        };
        let interval = u64::from(buffer.settings().flush_interval_ms);
        if !buffer.due(now_ms.saturating_sub(self.last_flush_ms) >= interval) {
            return;
        }
        let Some(batch) = buffer.take_batch() else {
            return;
        };
        let control = poll.control();
        let mut headers = vec![
            (":method", "POST"),
            (":path", buffer.settings().path.as_str()),
            (":authority", control.authority.as_str()),
            ("content-type", "application/x-knhk-receipts"),
        ];
        if let Some(token) = &control.token {
            headers.push(("authorization", token.header_value()));
        }
        self.last_flush_ms = now_ms;
        match hostcalls::dispatch_http_call(
            &control.cluster,
            headers,
            Some(&batch),
            vec![],
            Duration::from_secs(5),
        ) {
            Ok(token) => self.flush_token = Some(token),
            Err(_) => buffer.failed(),
        }
    }

    fn apply(&mut self, outcome: PollOutcome) {
        match outcome {
            PollOutcome::Apply(accepted) => {
                let accepted = *accepted;
                log::info!(
                    "knhk: applied signed config epoch {} (key {}/{} v{}){}",
                    accepted.epoch,
                    accepted.signed_by.provider,
                    accepted.signed_by.key_id,
                    accepted.signed_by.version,
                    if accepted.next_keys.is_some() {
                        ", trusted keys rotated"
                    } else {
                        ""
                    },
                );
                let policy = accepted.policy;
                let tick_ok = self.set_tick(&policy);
                let mut state = self.state.borrow_mut();
                state.epoch = accepted.epoch;
                state.policy = Some(Rc::new(policy));
                state.metrics.pending.configs_applied += 1;
                if !tick_ok {
                    state.metrics.pending.decision_errors += 1;
                }
            }
            PollOutcome::NothingNew => {}
            PollOutcome::Failed(why) => log::warn!("knhk: config poll failed: {why}"),
            PollOutcome::Refused(e) => {
                log::warn!("knhk: {e}; keeping epoch {}", self.state.borrow().epoch);
                self.state.borrow().metrics.config_rejected();
            }
        }
    }
}

/// First 8 bytes of SHA-256 of the plugin configuration.
fn config_digest(bytes: &[u8]) -> [u8; 8] {
    use sha2::{Digest, Sha256};
    let mut out = [0u8; 8];
    out.copy_from_slice(&Sha256::digest(bytes)[..8]);
    out
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
        let status = call_status(num_headers);
        let now_ms = now_ns().map_or(0, |ns| ns / 1_000_000);
        if self.poll.as_ref().is_some_and(|p| p.owns(token_id)) {
            let body = if body_size > 0 {
                hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                    .ok()
                    .flatten()
            } else {
                None
            };
            let outcome = match self.poll.as_mut() {
                Some(poll) => poll.complete(status, body.as_deref(), now_ms),
                None => return,
            };
            self.apply(outcome);
            // Re-poll at once when nothing is wrong (204 or applied), not a tick later.
            self.poll_config(now_ms);
        } else if self.flush_token == Some(token_id) {
            self.flush_token = None;
            {
                let mut state = self.state.borrow_mut();
                if let Some(buffer) = state.receipts.as_mut() {
                    match status {
                        Some(200..=299) => buffer.acknowledged(),
                        _ => buffer.failed(),
                    }
                }
                let refused = matches!(status, Some(401 | 403));
                if refused && !self.receipts_refused {
                    log::warn!("knhk: the agent refused the receipt credential (control.token) with {status:?}; receipts stay buffered");
                }
                self.receipts_refused = refused;
            }
            // A full batch waiting goes now; a partial one waits for the interval.
            if matches!(status, Some(200..=299)) {
                self.flush_receipts(now_ms);
            }
        }
    }
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
        let last_good_key = last_good_key();
        let (bytes, policy) = match Policy::from_json(&bytes) {
            Ok(policy) => {
                if hostcalls::set_shared_data(&last_good_key, Some(&bytes), None).is_err() {
                    log::warn!("knhk: cannot keep this configuration as the last good one");
                }
                (bytes, policy)
            }
            Err(e) => {
                // One line naming the field and the reason. The plugin is not refused: Envoy
                // would then reject the whole extension config and, in Istio, fail every
                // request on the listener. The last good configuration stays in force; without
                // one, requests get the refused configuration's fail mode.
                log::error!("{e}");
                self.state.borrow().metrics.config_rejected();
                let kept = match hostcalls::get_shared_data(&last_good_key) {
                    Ok((Some(good), _)) => Policy::from_json(&good).ok().map(|p| (good, p)),
                    _ => None,
                };
                match kept {
                    Some((good, policy)) => {
                        log::warn!(
                            "knhk: the refused configuration is not applied; config version {} stays in force",
                            policy.version
                        );
                        (good, policy)
                    }
                    None => {
                        let mode = fail_mode_hint(&bytes);
                        log::warn!(
                            "knhk: no valid configuration yet: requests pass {} until one is applied",
                            match mode {
                                FailMode::Open => "untouched (fail open)",
                                FailMode::Closed => "refused with 503 (fail closed)",
                            }
                        );
                        let mut state = self.state.borrow_mut();
                        state.fail_mode_without_policy = mode;
                        state.policy = None;
                        return true;
                    }
                }
            }
        };
        log::info!(
            "knhk: config version {} in force: {}",
            policy.version,
            policy.summary()
        );
        self.config_digest = config_digest(&bytes);
        if hostcalls::set_shared_data(CURRENT_CONFIG_KEY, Some(&self.config_digest), None).is_err()
        {
            log::warn!("knhk: cannot publish the config digest; gauges may lag during drains");
        }
        {
            let mut state = self.state.borrow_mut();
            state.receipts = policy
                .control
                .as_ref()
                .and_then(|c| c.receipts.clone())
                .map(ReceiptBuffer::new);
            state.epoch = 0;
        }
        self.poll = policy.control.clone().map(ConfigPoll::new);
        if !self.set_tick(&policy) {
            return false;
        }
        self.state.borrow_mut().policy = Some(Rc::new(policy));
        true
    }

    fn on_tick(&mut self) {
        let now_ms = now_ns().map_or(0, |ns| ns / 1_000_000);
        {
            let mut state = self.state.borrow_mut();
            let Some(policy) = state.policy.clone() else {
                return;
            };
            if policy.admission_enabled && now_ms > 0 {
                if let Err(e) = state.admission.sync(&EnvoySharedData, &policy, now_ms) {
                    state.metrics.pending.decision_errors += 1;
                    self.sync_failures += 1;
                    // Log the first failure and then every 1000th, not every tick.
                    if self.sync_failures % 1000 == 1 {
                        log::warn!(
                            "knhk: admission sync failed ({} times): {e}",
                            self.sync_failures
                        );
                    }
                }
            }
            let levels = state.admission.levels();
            let receipt_counts = state.receipts.as_mut().map(|r| {
                let counts = (r.sent, r.dropped, r.failures);
                (r.sent, r.dropped, r.failures) = (0, 0, 0);
                counts
            });
            let current = match hostcalls::get_shared_data(CURRENT_CONFIG_KEY) {
                Ok((Some(digest), _)) => digest == self.config_digest,
                _ => true,
            };
            state
                .metrics
                .flush(&levels, current.then_some(policy.version), receipt_counts);
        }
        self.poll_config(now_ms);
        self.flush_receipts(now_ms);
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never `None`: the SDK aborts the VM on it. Without a policy the context applies the
        // default fail mode (open).
        Some(Box::new(KnhkHttp::new(Rc::clone(&self.state))))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
