//! One request's flow, independent of the host: decide on the request headers, apply the
//! decision (header edits, shed reply, fail mode), record the latency at the response, and
//! receipt the request at the end. Each adapter calls these three phases from its own hooks.

use std::sync::Arc;

use knhk_core::config::FailMode;
use knhk_core::receipt::{Completion, Receipt};
use knhk_core::{decide, Decision, Policy};

use crate::flow::{
    edit_forwarded_headers, edit_response_headers, edit_route_header, ADMISSION_HEADER,
    DECISION_HEADER,
};
use crate::host::{HeaderSource, RequestHost};
use crate::worker::WorkerAccess;

/// What the adapter tells its host after the request-headers phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the request.
    Continue,
    /// A local reply was sent (or is being sent): stop the filter chain.
    Stop,
}

/// One request's state between its phases.
#[derive(Debug, Default)]
pub struct RequestFlow {
    policy: Option<Arc<Policy>>,
    decision: Option<Decision>,
    started_ns: Option<u64>,
}

impl RequestFlow {
    /// A request bound to the policy in force now, so a reconfiguration mid-request does not
    /// change its decision.
    pub fn new(worker: &impl WorkerAccess) -> Self {
        RequestFlow {
            policy: worker.with(|w| w.policy.clone()),
            decision: None,
            started_ns: None,
        }
    }

    /// Could not decide: count it and apply the fail mode.
    fn fail(&self, worker: &impl WorkerAccess, host: &mut impl RequestHost) -> Verdict {
        let mode = worker.with(|w| {
            w.pending.decision_errors += 1;
            match &self.policy {
                Some(p) => p.fail_mode,
                None => w.fail_mode_without_policy,
            }
        });
        match mode {
            FailMode::Open => Verdict::Continue,
            FailMode::Closed => {
                host.send_local_reply(
                    503,
                    &[(ADMISSION_HEADER, "error")],
                    b"knhk: no routing decision\n",
                );
                Verdict::Stop
            }
        }
    }

    /// The request-headers phase.
    pub fn on_request_headers(
        &mut self,
        worker: &impl WorkerAccess,
        host: &mut impl RequestHost,
        headers: &impl HeaderSource,
    ) -> Verdict {
        let Some(policy) = self.policy.clone() else {
            return self.fail(worker, host);
        };
        let (refuse, levels) = worker.with(|w| {
            let refuse = w.receipts.as_ref().is_some_and(|r| r.refuses_requests());
            if refuse {
                w.pending.decision_errors += 1;
            }
            (refuse, w.admission.levels())
        });
        if refuse {
            // `overflow: fail_closed`: no decision is made that could not be receipted.
            host.send_local_reply(
                503,
                &[(ADMISSION_HEADER, "error"), ("retry-after", "1")],
                b"knhk: receipt buffer full\n",
            );
            return Verdict::Stop;
        }
        let decision = decide(&policy, &levels, headers);
        if headers.failed() {
            return self.fail(worker, host);
        }
        self.decision = Some(decision);
        // Receipts carry every request's latency; without them only the p99 needs the clock,
        // and at high rates only on a sample of requests (`admission.latency_sample_every`).
        // A shed request is no latency sample.
        let timed = worker.with(|w| {
            w.receipts.is_some()
                || (policy.admission_enabled
                    && !decision.is_shed()
                    && w.latency_sampler.next_is_sampled(decision.class))
        });
        let mut write_errors = 0;
        edit_route_header(&policy, &decision, headers, |name, value| {
            if !host.set_request_header(name, value) {
                write_errors += 1;
            }
        });
        if timed {
            self.started_ns = host.now_ns();
        }
        let verdict = if decision.is_shed() {
            shed(&policy, &decision, host)
        } else {
            edit_forwarded_headers(&policy, &decision, headers, |name, value| {
                if !host.set_request_header(name, value) {
                    write_errors += 1;
                }
            });
            Some(Verdict::Continue)
        };
        worker.with(|w| {
            w.pending.record(&decision);
            w.pending.decision_errors += write_errors;
        });
        match verdict {
            Some(verdict) => verdict,
            None => self.fail(worker, host),
        }
    }

    /// The response-headers phase: the latency sample, and the response edits.
    pub fn on_response_headers(&mut self, worker: &impl WorkerAccess, host: &mut impl RequestHost) {
        let (Some(policy), Some(decision)) = (self.policy.as_ref(), self.decision.as_ref()) else {
            return;
        };
        if decision.is_shed() {
            // The local reply carries its own headers and is no latency sample.
            return;
        }
        if let (Some(start), true) = (self.started_ns, policy.admission_enabled) {
            if let Some(end) = host.now_ns() {
                worker.with(|w| {
                    w.admission
                        .record(policy, decision.class, end.saturating_sub(start))
                });
            }
        }
        edit_response_headers(policy, decision, |name, value| {
            host.set_response_header(name, value);
        });
    }

    /// The end of the stream: the receipt, when receipts are on.
    pub fn on_complete(&mut self, worker: &impl WorkerAccess, host: &mut impl RequestHost) {
        let Some(decision) = self.decision.as_ref() else {
            return;
        };
        if !worker.with(|w| w.receipts.is_some()) {
            return;
        }
        let end = host.now_ns();
        let status = host.response_status().unwrap_or(0);
        let latency_us = match (self.started_ns, end) {
            (Some(start), Some(end)) => {
                u32::try_from(end.saturating_sub(start) / 1_000).unwrap_or(u32::MAX)
            }
            _ => 0,
        };
        let time_ns = self.started_ns.unwrap_or(0);
        worker.with(|w| {
            let done = Completion {
                time_ns,
                status,
                latency_us,
                config_epoch: w.epoch,
                worker_id: w.worker_id,
            };
            if let Some(buffer) = w.receipts.as_mut() {
                buffer.push(Receipt::of(decision, done));
            }
        });
    }
}

/// The shed reply; `None` when the host refused to send it.
fn shed(policy: &Policy, decision: &Decision, host: &mut impl RequestHost) -> Option<Verdict> {
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
    host.send_local_reply(policy.shed_status, &headers, body.as_bytes())
        .then_some(Verdict::Stop)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use knhk_core::admission::ClassWindow;
    use knhk_core::config::ReceiptOverflow;
    use knhk_core::host::{FakeRequest, MemoryShared, SharedStore};
    use knhk_core::policy::Receipts;
    use knhk_core::{Admission, Class};

    use super::*;
    use crate::host::doubles::{FakeHeaders, FakeHost, FakeWorker};
    use crate::receipts::ReceiptBuffer;
    use crate::worker::WorkerState;

    const CANARY: &str = r#"{"routing":{"canary_basis_points":10000,"key_sources":[{"header":"x-user-id"}],"route_values":{"stable":"v1","canary":"v2"}}}"#;
    const STRICT_R1: &str = r#"{"fail_mode":"closed","admission":{"rules":[{"class":"R1","path_prefix":"/"}],"classes":{"R1":{"strategy":"strict"}}}}"#;

    fn worker(json: Option<&str>) -> FakeWorker {
        let mut state = WorkerState::new(9);
        state.policy = json.map(|j| Arc::new(Policy::from_json(j.as_bytes()).unwrap()));
        FakeWorker(RefCell::new(state))
    }

    fn headers(request: FakeRequest) -> FakeHeaders {
        FakeHeaders {
            request,
            refuse: false,
        }
    }

    fn user(key: &str) -> FakeHeaders {
        headers(FakeRequest::get("/checkout").with("x-user-id", key))
    }

    fn receipts(max_buffer: usize, overflow: ReceiptOverflow) -> ReceiptBuffer {
        ReceiptBuffer::new(
            Receipts {
                path: "/v1/receipts".into(),
                flush_interval_ms: 250,
                max_batch: 16,
                max_buffer,
                overflow,
            },
            knhk_core::receipt::Origin::default(),
        )
    }

    fn errors(w: &FakeWorker) -> u64 {
        w.0.borrow().pending.decision_errors
    }

    fn header<'a>(reply: &'a [(String, String)], name: &str) -> Option<&'a str> {
        reply
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Without a policy nothing is edited; the request passes (fail open) or gets a 503
    /// (fail closed), and either way is a decision error.
    #[test]
    fn without_a_policy_requests_get_the_fail_mode() {
        let w = worker(None);
        let mut host = FakeHost::default();
        let mut flow = RequestFlow::new(&w);
        assert_eq!(
            flow.on_request_headers(&w, &mut host, &user("u")),
            Verdict::Continue
        );
        assert!(host.request_edits.is_empty() && host.reply.is_none());
        assert_eq!(errors(&w), 1);
        w.0.borrow_mut().fail_mode_without_policy = FailMode::Closed;
        let mut flow = RequestFlow::new(&w);
        assert_eq!(
            flow.on_request_headers(&w, &mut host, &user("u")),
            Verdict::Stop
        );
        let (status, reply, _) = host.reply.clone().unwrap();
        assert_eq!(
            (status, header(&reply, ADMISSION_HEADER)),
            (503, Some("error"))
        );
        assert_eq!(errors(&w), 2);
    }

    /// A routed request gets the route header, is counted, and is receipted at the end with
    /// its status, its latency (request headers → completion) and the epoch in force.
    #[test]
    fn a_routed_request_is_edited_counted_and_receipted() {
        let w = worker(Some(CANARY));
        w.0.borrow_mut().receipts = Some(receipts(8, ReceiptOverflow::Drop));
        w.0.borrow_mut().epoch = 4;
        let mut host = FakeHost {
            now_ns: 1_000_000,
            status: Some(201),
            ..FakeHost::default()
        };
        let mut flow = RequestFlow::new(&w);
        assert_eq!(
            flow.on_request_headers(&w, &mut host, &user("u")),
            Verdict::Continue
        );
        assert_eq!(
            host.request_edits,
            [("x-knhk-route".into(), Some("v2".into()))]
        );
        host.now_ns += 7_000_000;
        flow.on_response_headers(&w, &mut host);
        assert!(
            host.response_edits.is_empty(),
            "nothing to say on a plain response"
        );
        flow.on_complete(&w, &mut host);
        let mut state = w.0.borrow_mut();
        assert_eq!(state.pending.routes, [0, 1, 0]);
        assert_eq!(state.pending.decision_errors, 0);
        let buffer = state.receipts.as_mut().unwrap();
        assert_eq!(buffer.unsent(), 1);
        let batch = buffer.take_batch().unwrap();
        let decoded = knhk_core::receipt::decode_batch(&batch).unwrap();
        let r = &decoded[0];
        assert_eq!(
            (r.status, r.latency_us, r.config_epoch, r.worker_id),
            (201, 7_000, 4, 9)
        );
        assert_eq!(r.time_ns, 1_000_000);
    }

    /// Without receipts, at a rate that allows it, the clock is read on a sample of requests
    /// only, one in `admission.latency_sample_every`, each sampled request giving the p99 one
    /// sample; before the worker has measured its rate, with `latency_sample_every: 1` and
    /// with receipts on, on every request; with neither admission nor receipts, never.
    #[test]
    fn latency_is_timed_on_a_sample_unless_receipts_need_every_request() {
        let run = |json: &str, with_receipts: bool| {
            let w = worker(Some(json));
            if with_receipts {
                w.0.borrow_mut().receipts = Some(receipts(65_536, ReceiptOverflow::Drop));
            }
            let store = MemoryShared::default();
            let mut host = FakeHost::default();
            let send = |n: u32, host: &mut FakeHost| {
                for i in 0..n {
                    let mut flow = RequestFlow::new(&w);
                    flow.on_request_headers(&w, host, &user(&format!("u{i}")));
                    flow.on_response_headers(&w, host);
                }
            };
            // Two ticks 100 ms apart around 1,000 requests: the worker measures 10,000 req/s,
            // and before that it times every request.
            let mut failures = 0;
            crate::tick::tick_worker(&mut w.0.borrow_mut(), &store, 1_000, &mut failures);
            send(1_000, &mut host);
            let before = host.clock_reads.replace(0);
            crate::tick::tick_worker(&mut w.0.borrow_mut(), &store, 1_100, &mut failures);
            send(8_000, &mut host);
            let mut state = w.0.borrow_mut();
            let policy = state.policy.clone().unwrap();
            let report = state.admission.sync(&store, &policy, 1_100).unwrap();
            let samples = report.classes[Class::W1.index()].totals.total;
            (before, host.clock_reads.get(), samples)
        };
        let (before, reads, samples) = run(r#"{"admission":{"enabled":true}}"#, false);
        assert_eq!(
            before, 2_000,
            "every request timed before the rate is known"
        );
        // One in eight of 8,000: 1,000 expected, standard deviation ≈ 30.
        assert!((880..=1_120).contains(&(reads / 2)), "{reads} clock reads");
        assert_eq!(
            samples,
            1_000 + u64::from(reads / 2),
            "one p99 sample per timed request"
        );
        let every = run(r#"{"admission":{"latency_sample_every":1}}"#, false);
        assert_eq!(every, (2_000, 16_000, 9_000));
        let with_receipts = run(r#"{"admission":{"enabled":true}}"#, true);
        assert_eq!(with_receipts, (2_000, 16_000, 9_000));
        let neither = run(r#"{"admission":{"enabled":false}}"#, false);
        assert_eq!(neither, (0, 0, 0));
    }

    /// A request of a class at a full shed level gets the shed reply (status, retry-after,
    /// admission header), stops the chain, is counted as shed, and is no latency sample.
    #[test]
    fn a_shed_request_gets_the_shed_reply_and_no_latency_sample() {
        let w = worker(Some(STRICT_R1));
        let store = MemoryShared::default();
        {
            let mut state = w.0.borrow_mut();
            let policy = state.policy.clone().unwrap();
            let mut window = ClassWindow::new(policy.budget(Class::R1));
            window.level_bp = 10_000;
            window.last_eval_ms = 1_000;
            store
                .set(
                    knhk_core::admission::shared_key(Class::R1),
                    &window.encode(),
                    None,
                )
                .unwrap();
            state.admission.sync(&store, &policy, 1_000).unwrap();
            assert_eq!(state.admission.levels()[Class::R1.index()], 10_000);
        }
        let mut host = FakeHost::default();
        let mut flow = RequestFlow::new(&w);
        assert_eq!(
            flow.on_request_headers(&w, &mut host, &user("u")),
            Verdict::Stop
        );
        let (status, reply, body) = host.reply.clone().unwrap();
        assert_eq!(status, 503);
        assert_eq!(header(&reply, "retry-after"), Some("1"));
        assert_eq!(header(&reply, ADMISSION_HEADER), Some("shed"));
        assert_eq!(
            header(&reply, DECISION_HEADER),
            None,
            "no debug headers asked for"
        );
        assert!(String::from_utf8_lossy(&body).contains("R1"));
        host.now_ns = 5_000_000;
        flow.on_response_headers(&w, &mut host);
        assert!(host.response_edits.is_empty());
        let state = w.0.borrow();
        assert_eq!(
            state.pending.admission[Class::R1.index()][Admission::Shed.index()],
            1
        );
        assert_eq!(state.pending.decision_errors, 0);
    }

    /// Header reads the host refuses make the request a decision error under the fail mode,
    /// with no edit.
    #[test]
    fn refused_header_reads_apply_the_fail_mode() {
        let w = worker(Some(STRICT_R1));
        let mut host = FakeHost::default();
        let mut refused = user("u");
        refused.refuse = true;
        let mut flow = RequestFlow::new(&w);
        assert_eq!(
            flow.on_request_headers(&w, &mut host, &refused),
            Verdict::Stop
        );
        assert_eq!(host.reply.as_ref().map(|r| r.0), Some(503));
        assert!(host.request_edits.is_empty());
        assert_eq!(errors(&w), 1);
        flow.on_complete(&w, &mut host);
    }

    /// A header write the host refuses is counted; the request still goes on.
    #[test]
    fn refused_header_writes_are_decision_errors() {
        let w = worker(Some(CANARY));
        let mut host = FakeHost {
            refuse_writes: true,
            ..FakeHost::default()
        };
        let mut flow = RequestFlow::new(&w);
        assert_eq!(
            flow.on_request_headers(&w, &mut host, &user("u")),
            Verdict::Continue
        );
        assert_eq!(errors(&w), 1);
    }

    /// With `overflow: fail_closed` and a full buffer no decision is made that could not be
    /// receipted: 503 with retry-after, counted as an error.
    #[test]
    fn a_full_receipt_buffer_fails_closed() {
        let w = worker(Some(CANARY));
        w.0.borrow_mut().receipts = Some(receipts(1, ReceiptOverflow::FailClosed));
        let mut host = FakeHost::default();
        let mut first = RequestFlow::new(&w);
        assert_eq!(
            first.on_request_headers(&w, &mut host, &user("a")),
            Verdict::Continue
        );
        first.on_complete(&w, &mut host);
        let mut second = RequestFlow::new(&w);
        assert_eq!(
            second.on_request_headers(&w, &mut host, &user("b")),
            Verdict::Stop
        );
        let (status, reply, _) = host.reply.clone().unwrap();
        assert_eq!(status, 503);
        assert_eq!(header(&reply, "retry-after"), Some("1"));
        assert_eq!(header(&reply, ADMISSION_HEADER), Some("error"));
        assert_eq!(errors(&w), 1);
    }

    /// A request keeps the policy it started under when a new one is installed mid-request.
    #[test]
    fn the_policy_is_bound_when_the_request_starts() {
        let w = worker(Some(CANARY));
        let mut flow = RequestFlow::new(&w);
        w.0.borrow_mut().policy = Some(Arc::new(
            Policy::from_json(br#"{"routing":{"canary_basis_points":0}}"#).unwrap(),
        ));
        let mut host = FakeHost::default();
        flow.on_request_headers(&w, &mut host, &user("u"));
        assert_eq!(
            host.request_edits,
            [("x-knhk-route".into(), Some("v2".into()))]
        );
    }
}
