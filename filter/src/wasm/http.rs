//! The proxy-wasm request context: hands each phase to the host-independent [`RequestFlow`].

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::request::{RequestFlow, Verdict};
use crate::wasm::host::{LazyHeaders, VmWorker, WasmRequest};

/// One request.
pub struct KnhkHttp {
    worker: VmWorker,
    flow: RequestFlow,
}

impl KnhkHttp {
    /// A context bound to its VM's state and the policy in force now.
    pub fn new(worker: VmWorker) -> Self {
        let flow = RequestFlow::new(&worker);
        KnhkHttp { worker, flow }
    }
}

impl Context for KnhkHttp {}

impl HttpContext for KnhkHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let headers = LazyHeaders::default();
        match self
            .flow
            .on_request_headers(&self.worker, &mut WasmRequest, &headers)
        {
            Verdict::Continue => Action::Continue,
            Verdict::Stop => Action::Pause,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.flow
            .on_response_headers(&self.worker, &mut WasmRequest);
        Action::Continue
    }

    fn on_log(&mut self) {
        self.flow.on_complete(&self.worker, &mut WasmRequest);
    }
}
