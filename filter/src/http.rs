//! The per-request context: decide on request headers, apply, and measure latency.

use std::cell::RefCell;
use std::rc::Rc;

use knhk_core::config::FailMode;
use knhk_core::receipt::{Completion, Receipt};
use knhk_core::{decide, Decision, Policy};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use crate::flow::{
    edit_forwarded_headers, edit_response_headers, edit_route_header, ADMISSION_HEADER,
    DECISION_HEADER,
};
use crate::host::{now_ns, status_header, LazyHeaders};
use crate::state::VmState;

/// One request.
pub struct KnhkHttp {
    state: Rc<RefCell<VmState>>,
    policy: Option<Rc<Policy>>,
    decision: Option<Decision>,
    started_ns: Option<u64>,
}

impl KnhkHttp {
    /// A context bound to its VM's state; the policy is captured now, so a reconfiguration
    /// mid-request does not change this request's decision.
    pub fn new(state: Rc<RefCell<VmState>>) -> Self {
        let policy = state.borrow().policy.clone();
        KnhkHttp {
            state,
            policy,
            decision: None,
            started_ns: None,
        }
    }

    /// Could not decide: count it and apply the fail mode.
    fn fail(&self, why: &str) -> Action {
        self.state.borrow_mut().metrics.pending.decision_errors += 1;
        let mode = match &self.policy {
            Some(p) => p.fail_mode,
            None => self.state.borrow().fail_mode_without_policy,
        };
        log::debug!("knhk: no decision ({why}), failing {mode:?}");
        match mode {
            FailMode::Open => Action::Continue,
            FailMode::Closed => {
                let headers = vec![(ADMISSION_HEADER, "error")];
                let _ = hostcalls::send_http_response(
                    503,
                    headers,
                    Some(b"knhk: no routing decision\n"),
                );
                Action::Pause
            }
        }
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        if hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value).is_err() {
            self.state.borrow_mut().metrics.pending.decision_errors += 1;
        }
    }

    fn shed(&self, policy: &Policy, decision: &Decision) -> Action {
        let retry_after = policy.retry_after_s.to_string();
        let debug = policy
            .debug_headers
            .then(|| decision.debug_header(policy.version));
        let mut headers = vec![
            ("retry-after", retry_after.as_str()),
            (ADMISSION_HEADER, "shed"),
        ];
        if let Some(debug) = debug.as_deref() {
            headers.push((DECISION_HEADER, debug));
        }
        let body = format!(
            "knhk: shed, class {} over its p99 budget\n",
            decision.requested_class.as_str()
        );
        if hostcalls::send_http_response(
            u32::from(policy.shed_status),
            headers,
            Some(body.as_bytes()),
        )
        .is_err()
        {
            return self.fail("local reply refused");
        }
        Action::Pause
    }
}

impl Context for KnhkHttp {}

/// Response status at the log phase, from the response's `:status` header (the local reply's
/// when one was sent), 0 when there is none (e.g. the stream was reset before a response).
/// Read as a header rather than the `response.code` property: the SDK's property call makes
/// three guest allocations (path vector, serialized path, value) against the header's one,
/// ≈ 5,000 wasm instructions per request (`cargo xtask bench-wasm-cost`).
fn response_status() -> u16 {
    status_header(MapType::HttpResponseHeaders).unwrap_or(0)
}

impl HttpContext for KnhkHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(policy) = self.policy.clone() else {
            return self.fail("no valid configuration");
        };
        if self
            .state
            .borrow()
            .receipts
            .as_ref()
            .is_some_and(|r| r.refuses_requests())
        {
            // `overflow: fail_closed`: no decision is made that could not be receipted.
            self.state.borrow_mut().metrics.pending.decision_errors += 1;
            let headers = vec![(ADMISSION_HEADER, "error"), ("retry-after", "1")];
            let _ =
                hostcalls::send_http_response(503, headers, Some(b"knhk: receipt buffer full\n"));
            return Action::Pause;
        }
        let headers = LazyHeaders::default();
        let levels = self.state.borrow().admission.levels();
        let decision = decide(&policy, &levels, &headers);
        if headers.failures.get() > 0 {
            return self.fail("request headers unreadable");
        }
        self.state.borrow_mut().metrics.pending.record(&decision);
        self.decision = Some(decision);
        edit_route_header(&policy, &decision, &headers, |name, value| {
            self.set_request_header(name, value)
        });
        self.started_ns = now_ns();
        if decision.is_shed() {
            return self.shed(&policy, &decision);
        }
        edit_forwarded_headers(&policy, &decision, &headers, |name, value| {
            self.set_request_header(name, value)
        });
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (Some(policy), Some(decision)) = (self.policy.clone(), self.decision) else {
            return Action::Continue;
        };
        if decision.is_shed() {
            // The local reply carries its own headers and is no latency sample.
            return Action::Continue;
        }
        if let (Some(start), Some(end), true) =
            (self.started_ns, now_ns(), policy.admission_enabled)
        {
            let mut state = self.state.borrow_mut();
            state
                .admission
                .record(&policy, decision.class, end.saturating_sub(start));
        }
        edit_response_headers(&policy, &decision, |name, value| {
            let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value);
        });
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(decision) = self.decision else {
            return;
        };
        let mut state = self.state.borrow_mut();
        if state.receipts.is_none() {
            return;
        }
        let time_ns = self.started_ns.unwrap_or(0);
        let latency_us = match (self.started_ns, now_ns()) {
            (Some(start), Some(end)) => {
                u32::try_from(end.saturating_sub(start) / 1_000).unwrap_or(u32::MAX)
            }
            _ => 0,
        };
        let done = Completion {
            time_ns,
            status: response_status(),
            latency_us,
            config_epoch: state.epoch,
            worker_id: state.worker_id,
        };
        if let Some(buffer) = state.receipts.as_mut() {
            buffer.push(Receipt::of(&decision, done));
        }
    }
}
