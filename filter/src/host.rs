//! The small traits the host-independent filter layer reaches its host through. Each adapter
//! (`wasm`: proxy-wasm; `native`: Envoy dynamic module) implements them over its own ABI; the
//! test doubles in [`doubles`] implement them in memory for the native unit tests.

use std::time::Duration;

use knhk_core::host::RequestHeaders;

/// A request's headers as the host hands them to the flow, with read failures counted.
pub trait HeaderSource: RequestHeaders {
    /// Whether any read was refused by the host (the request then gets the fail mode).
    fn failed(&self) -> bool;
}

/// What one request's flow asks of its host. Every call may fail; a failure is reported as
/// `false` / `None` and the flow counts it as a decision error.
pub trait RequestHost {
    /// Set (`Some`) or remove (`None`) a request header, replacing every value it had.
    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> bool;
    /// Set or remove a response header (in the response-headers phase).
    fn set_response_header(&mut self, name: &str, value: Option<&str>) -> bool;
    /// Answer the request locally instead of forwarding it.
    fn send_local_reply(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> bool;
    /// The response's `:status` at the log phase (the local reply's when one was sent).
    fn response_status(&mut self) -> Option<u16>;
    /// Host time in nanoseconds since the Unix epoch.
    fn now_ns(&self) -> Option<u64>;
}

/// Envoy stats: define once, then add to counters and set gauges by id.
pub trait StatsHost {
    /// A counter's id, `None` when the host refused to define it.
    fn define_counter(&mut self, name: &str) -> Option<u64>;
    /// A gauge's id, `None` when the host refused to define it.
    fn define_gauge(&mut self, name: &str) -> Option<u64>;
    /// Add `n` to a counter.
    fn add(&mut self, id: u64, n: u64);
    /// Set a gauge.
    fn set(&mut self, id: u64, value: u64);
}

/// An HTTP call to the agent's cluster (config long-poll, receipt batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCall {
    /// Envoy cluster of the agent.
    pub cluster: String,
    /// Request headers, pseudo-headers included.
    pub headers: Vec<(&'static str, String)>,
    /// Request body.
    pub body: Option<Vec<u8>>,
    /// Call timeout.
    pub timeout: Duration,
}

/// Dispatches [`AgentCall`]s; the response comes back through the adapter's own callback,
/// matched by the returned token.
pub trait CallHost {
    /// Start the call; `Err` carries the host's reason when it could not be started.
    fn dispatch(&mut self, call: &AgentCall) -> Result<u64, String>;
}

/// A `:status` value as a number, if it is three ASCII digits.
pub fn parse_status(bytes: &[u8]) -> Option<u16> {
    match bytes {
        [a, b, c] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

#[cfg(test)]
pub mod doubles {
    //! In-memory hosts for the native unit tests of the host-independent layer.

    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use knhk_core::host::FakeRequest;

    use super::*;
    use crate::worker::{WorkerAccess, WorkerState};

    /// A local reply as sent: status, headers, body.
    pub type LocalReply = (u16, Vec<(String, String)>, Vec<u8>);

    /// A request host that records every edit and reply.
    #[derive(Debug, Default)]
    pub struct FakeHost {
        /// Request header edits, in order.
        pub request_edits: Vec<(String, Option<String>)>,
        /// Response header edits, in order.
        pub response_edits: Vec<(String, Option<String>)>,
        /// The local reply sent, if any: status, headers, body.
        pub reply: Option<LocalReply>,
        /// The `:status` the response will have.
        pub status: Option<u16>,
        /// The clock, advanced by hand.
        pub now_ns: u64,
        /// How often the clock was read.
        pub clock_reads: std::cell::Cell<u32>,
        /// Make every header write fail.
        pub refuse_writes: bool,
    }

    impl RequestHost for FakeHost {
        fn set_request_header(&mut self, name: &str, value: Option<&str>) -> bool {
            self.request_edits
                .push((name.to_owned(), value.map(str::to_owned)));
            !self.refuse_writes
        }
        fn set_response_header(&mut self, name: &str, value: Option<&str>) -> bool {
            self.response_edits
                .push((name.to_owned(), value.map(str::to_owned)));
            !self.refuse_writes
        }
        fn send_local_reply(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> bool {
            let headers = headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect();
            self.reply = Some((status, headers, body.to_vec()));
            self.status = Some(status);
            true
        }
        fn response_status(&mut self) -> Option<u16> {
            self.status
        }
        fn now_ns(&self) -> Option<u64> {
            self.clock_reads.set(self.clock_reads.get() + 1);
            Some(self.now_ns)
        }
    }

    /// Request headers in memory, optionally refusing every read.
    pub struct FakeHeaders {
        /// The request.
        pub request: FakeRequest,
        /// Refuse reads (as a host whose header map is gone would).
        pub refuse: bool,
    }

    impl RequestHeaders for FakeHeaders {
        fn header(&self, name: &str) -> Option<std::borrow::Cow<'_, [u8]>> {
            if self.refuse {
                return None;
            }
            self.request.header(name)
        }
    }

    impl HeaderSource for FakeHeaders {
        fn failed(&self) -> bool {
            self.refuse
        }
    }

    /// One worker's state behind a `RefCell`, as a wasm VM holds it.
    pub struct FakeWorker(pub RefCell<WorkerState>);

    impl WorkerAccess for FakeWorker {
        fn with<R>(&self, f: impl FnOnce(&mut WorkerState) -> R) -> R {
            f(&mut self.0.borrow_mut())
        }
    }

    /// Stats in memory, by name.
    #[derive(Debug, Default)]
    pub struct FakeStats {
        names: Vec<String>,
        /// Values by stat name.
        pub values: BTreeMap<String, u64>,
    }

    impl FakeStats {
        fn define(&mut self, name: &str) -> Option<u64> {
            self.names.push(name.to_owned());
            Some(self.names.len() as u64 - 1)
        }
    }

    impl StatsHost for FakeStats {
        fn define_counter(&mut self, name: &str) -> Option<u64> {
            self.define(name)
        }
        fn define_gauge(&mut self, name: &str) -> Option<u64> {
            self.define(name)
        }
        fn add(&mut self, id: u64, n: u64) {
            let name = self.names[id as usize].clone();
            *self.values.entry(name).or_default() += n;
        }
        fn set(&mut self, id: u64, value: u64) {
            let name = self.names[id as usize].clone();
            self.values.insert(name, value);
        }
    }

    /// Records dispatched calls; refuses them when told to.
    #[derive(Debug, Default)]
    pub struct FakeCalls {
        /// Calls dispatched, in order.
        pub calls: Vec<AgentCall>,
        /// Refuse every dispatch.
        pub refuse: bool,
    }

    impl CallHost for FakeCalls {
        fn dispatch(&mut self, call: &AgentCall) -> Result<u64, String> {
            if self.refuse {
                return Err("cluster not found".into());
            }
            self.calls.push(call.clone());
            Ok(self.calls.len() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_status;

    /// Three ASCII digits parse; anything else is no status.
    #[test]
    fn status_header_parsing() {
        assert_eq!(parse_status(b"200"), Some(200));
        assert_eq!(parse_status(b"503"), Some(503));
        assert_eq!(parse_status(b"099"), Some(99));
        for bad in [&b""[..], b"20", b"2000", b"2x0", b" 200", b"\xff\xff\xff"] {
            assert_eq!(parse_status(bad), None, "{bad:?}");
        }
    }
}
