//! One filter configuration of the dynamic module and one stream's filter, in safe code over
//! the handles of `ffi`.
//!
//! Envoy runs a stream's hooks on its worker thread and the configuration's hooks (creation,
//! scheduled events, callout answers) on the main thread. Each worker thread gets its own
//! [`WorkerState`] behind a mutex (taken a few times per request by its own thread, and once
//! per tick by the main thread), so the request flow is the wasm build's, worker for worker.
//! The main thread runs the tick: the admission sync of every worker through the process
//! store, the stats flush of all workers' counts, the config long-poll (one per
//! configuration; a pushed config is installed in every worker) and each worker's receipt
//! batches, as config-level HTTP callouts to the agent's cluster. A timer thread only commits
//! the tick event to the main thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use knhk_core::host::RequestHeaders;

use super::ffi::{Config, HeaderMap, Scheduler, Stream};
use super::store::{process_store, ProcessStore};
use crate::configure::{configure, is_current};
use crate::control::{ConfigPoll, PollOutcome};
use crate::host::{parse_status, AgentCall, CallHost, HeaderSource, RequestHost, StatsHost};
use crate::link::{flush_receipts, poll_config, poll_done, receipts_answered};
use crate::receipts::ReceiptBuffer;
use crate::request::{RequestFlow, Verdict};
use crate::stats::{Counts, Metrics};
use crate::tick::{accept_pushed, install, tick_period_ms, tick_worker};
use crate::worker::{WorkerAccess, WorkerState};

fn now_ns() -> Option<u64> {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since.as_nanos()).ok()
}

fn now_ms() -> u64 {
    now_ns().map_or(0, |ns| ns / 1_000_000)
}

fn lock(worker: &Mutex<WorkerState>) -> MutexGuard<'_, WorkerState> {
    // A panic in a hook (caught by the guard) may poison the lock; the state stays usable:
    // every field is valid on its own.
    worker.lock().unwrap_or_else(|e| e.into_inner())
}

/// One worker's state, lent to the request flow.
struct NativeWorker<'a>(&'a Mutex<WorkerState>);

impl WorkerAccess for NativeWorker<'_> {
    fn with<R>(&self, f: impl FnOnce(&mut WorkerState) -> R) -> R {
        f(&mut lock(self.0))
    }
}

/// Stats and calls through the configuration's handle (main thread).
struct ConfigHost<'a>(&'a mut Config);

impl StatsHost for ConfigHost<'_> {
    fn define_counter(&mut self, name: &str) -> Option<u64> {
        self.0.define_counter(name)
    }
    fn define_gauge(&mut self, name: &str) -> Option<u64> {
        self.0.define_gauge(name)
    }
    fn add(&mut self, id: u64, n: u64) {
        self.0.increment_counter(id, n);
    }
    fn set(&mut self, id: u64, value: u64) {
        self.0.set_gauge(id, value);
    }
}

impl CallHost for ConfigHost<'_> {
    fn dispatch(&mut self, call: &AgentCall) -> Result<u64, String> {
        self.0.http_callout(call)
    }
}

/// Main-thread state of a configuration.
struct Main {
    metrics: Metrics,
    poll: Option<ConfigPoll>,
    /// Receipt posts in flight: callout id → worker.
    flushes: HashMap<u64, usize>,
    digest: [u8; 8],
    sync_failures: u64,
}

/// The timer thread: commits one tick event per period until stopped.
struct Timer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// One filter configuration.
pub struct ModuleConfig {
    workers: Box<[Mutex<WorkerState>]>,
    main: Mutex<Main>,
    tick_ms: Arc<AtomicU32>,
    timer: Option<Timer>,
}

impl ModuleConfig {
    /// Validate `bytes` (as the wasm build does: a refused config keeps the last good one or
    /// the fail mode), define the stats, and start the timer.
    pub fn new(mut config: Config, name: &str, bytes: &[u8], concurrency: u32) -> Arc<Self> {
        let store: &ProcessStore = process_store();
        let configured = configure(bytes, store, name);
        let metrics = Metrics::define(&mut ConfigHost(&mut config));
        if configured.rejected {
            metrics.config_rejected(&mut ConfigHost(&mut config));
        }
        let policy = configured.policy.map(Arc::new);
        // Dynamic modules see no node metadata: the environment (Istio's Downward API) only.
        let (origin, warnings) = crate::origin::resolve(&crate::origin::process_env, &|_| None);
        for w in warnings {
            log::warn!("knhk: {w}");
        }
        let workers: Box<[Mutex<WorkerState>]> = (0..concurrency.max(1))
            .map(|i| {
                let seed = now_ns().map_or(i, |ns| (ns ^ (ns >> 32)) as u32 ^ i);
                let mut state = WorkerState::new(knhk_core::worker_id::claim(store, seed));
                state.fail_mode_without_policy = configured.fail_mode_without_policy;
                state.policy = policy.clone();
                state.receipts = policy
                    .as_ref()
                    .and_then(|p| p.control.as_ref())
                    .and_then(|c| c.receipts.clone())
                    .map(|r| ReceiptBuffer::new(r, origin.clone()));
                Mutex::new(state)
            })
            .collect();
        let tick_ms = Arc::new(AtomicU32::new(
            policy.as_deref().map_or(1_000, tick_period_ms),
        ));
        let timer = match config.scheduler() {
            Some(scheduler) => Some(start_timer(scheduler, Arc::clone(&tick_ms))),
            None => {
                log::error!("knhk: no scheduler from Envoy: admission sync, stats and the agent link are off");
                None
            }
        };
        Arc::new(ModuleConfig {
            workers,
            main: Mutex::new(Main {
                metrics,
                poll: policy
                    .as_ref()
                    .and_then(|p| p.control.clone())
                    .map(ConfigPoll::new),
                flushes: HashMap::new(),
                digest: configured.digest,
                sync_failures: 0,
            }),
            tick_ms,
            timer,
        })
    }

    fn main(&self) -> MutexGuard<'_, Main> {
        self.main.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stop the timer (the configuration is being destroyed).
    pub fn stop(&self) {
        let Some(timer) = &self.timer else { return };
        let (stopped, wake) = &*timer.stop;
        *stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
        let thread = timer
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// The tick, on the main thread.
    pub fn on_tick(&self, config: &mut Config) {
        let now = now_ms();
        let store = process_store();
        let mut main = self.main();
        let current = is_current(store, &main.digest);
        let mut counts = Counts::default();
        let mut last = None;
        for worker in self.workers.iter() {
            let ticked = tick_worker(&mut lock(worker), store, now, &mut main.sync_failures);
            if let Some((pending, levels, version)) = ticked {
                counts.merge(&pending);
                last = Some((levels, version));
            }
        }
        let mut host = ConfigHost(config);
        match last {
            Some((levels, version)) => {
                main.metrics
                    .flush(&mut host, &counts, &levels, current.then_some(version))
            }
            None => main.metrics.flush(&mut host, &counts, &[0; 3], None),
        }
        self.poll(&mut main, &mut host, now);
        for index in 0..self.workers.len() {
            self.flush(&mut main, &mut host, index, now);
        }
    }

    fn poll(&self, main: &mut Main, host: &mut ConfigHost<'_>, now: u64) {
        if let Some(poll) = main.poll.as_mut() {
            if let Some(why) = poll_config(poll, host, now) {
                log::warn!("knhk: {why}");
            }
        }
    }

    fn flush(&self, main: &mut Main, host: &mut ConfigHost<'_>, index: usize, now: u64) {
        let Some(control) = main.poll.as_ref().map(|p| p.control().clone()) else {
            return;
        };
        let mut state = lock(&self.workers[index]);
        if let Some(buffer) = state.receipts.as_mut() {
            let before = buffer.token;
            flush_receipts(buffer, &control, host, now);
            if let (None, Some(token)) = (before, buffer.token) {
                main.flushes.insert(token, index);
            }
        }
    }

    /// A callout's answer, on the main thread.
    pub fn on_call_done(
        &self,
        config: &mut Config,
        id: u64,
        status: Option<u16>,
        body: Option<&[u8]>,
    ) {
        let now = now_ms();
        let mut main = self.main();
        let mut host = ConfigHost(config);
        if main.poll.as_ref().is_some_and(|p| p.owns(id)) {
            let outcome = match main.poll.as_mut() {
                Some(poll) => poll_done(poll, status, body, now),
                None => return,
            };
            self.apply(outcome);
            self.poll(&mut main, &mut host, now);
            return;
        }
        let Some(index) = main.flushes.remove(&id) else {
            return;
        };
        let acknowledged =
            receipts_answered(lock(&self.workers[index]).receipts.as_mut(), id, status);
        if acknowledged {
            self.flush(&mut main, &mut host, index, now);
        }
    }

    /// Install a pushed config in every worker (or count its refusal once).
    fn apply(&self, outcome: PollOutcome) {
        let refused = matches!(outcome, PollOutcome::Refused(_));
        let epoch = lock(&self.workers[0]).epoch;
        if refused {
            lock(&self.workers[0]).pending.configs_rejected += 1;
        }
        let Some((policy, epoch)) = accept_pushed(outcome, epoch) else {
            return;
        };
        self.tick_ms
            .store(tick_period_ms(&policy), Ordering::Relaxed);
        // Counted per worker, as the wasm build counts per VM (`knhk.config.applied`).
        for worker in self.workers.iter() {
            install(&mut lock(worker), Arc::clone(&policy), epoch);
        }
    }
}

fn start_timer(scheduler: Scheduler, tick_ms: Arc<AtomicU32>) -> Timer {
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let thread = {
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("knhk-timer".into())
            .spawn(move || {
                let (stopped, wake) = &*stop;
                let mut guard = stopped.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    let period =
                        Duration::from_millis(u64::from(tick_ms.load(Ordering::Relaxed).max(1)));
                    guard = match wake.wait_timeout(guard, period) {
                        Ok((g, _)) => g,
                        Err(e) => e.into_inner().0,
                    };
                    if *guard {
                        break;
                    }
                    scheduler.commit(0);
                }
            })
    };
    let thread = match thread {
        Ok(t) => Some(t),
        Err(e) => {
            log::error!("knhk: cannot start the timer thread: {e}");
            None
        }
    };
    Timer {
        stop,
        thread: Mutex::new(thread),
    }
}

/// A stream's request headers, read from Envoy in place (no copy).
struct NativeHeaders<'a>(&'a Stream);

impl RequestHeaders for NativeHeaders<'_> {
    fn header(&self, name: &str) -> Option<std::borrow::Cow<'_, [u8]>> {
        self.0
            .header(HeaderMap::Request, name)
            .map(std::borrow::Cow::Borrowed)
    }
}

impl HeaderSource for NativeHeaders<'_> {
    fn failed(&self) -> bool {
        false
    }
}

/// The request host over a stream: header edits, local replies, the clock.
struct NativeRequest<'a> {
    stream: &'a mut Stream,
    status: &'a mut Option<u16>,
    request_edited: bool,
}

impl RequestHost for NativeRequest<'_> {
    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> bool {
        self.request_edited = true;
        self.stream.set_header(HeaderMap::Request, name, value)
    }

    fn set_response_header(&mut self, name: &str, value: Option<&str>) -> bool {
        self.stream.set_header(HeaderMap::Response, name, value)
    }

    fn send_local_reply(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> bool {
        *self.status = Some(status);
        self.stream.send_response(status, headers, body);
        true
    }

    fn response_status(&mut self) -> Option<u16> {
        if self.status.is_none() {
            *self.status = self
                .stream
                .header(HeaderMap::Response, ":status")
                .and_then(parse_status);
        }
        *self.status
    }

    fn now_ns(&self) -> Option<u64> {
        now_ns()
    }
}

/// One stream's filter.
pub struct StreamFilter {
    config: Arc<ModuleConfig>,
    worker: usize,
    flow: RequestFlow,
    status: Option<u16>,
}

impl StreamFilter {
    /// A stream on `stream`'s worker, bound to the policy in force now.
    pub fn new(config: Arc<ModuleConfig>, stream: &Stream) -> Self {
        let worker = stream.worker_index() as usize % config.workers.len();
        let flow = RequestFlow::new(&NativeWorker(&config.workers[worker]));
        StreamFilter {
            config,
            worker,
            flow,
            status: None,
        }
    }

    /// The request headers; `false` when a local reply was sent (stop the chain).
    pub fn on_request_headers(&mut self, stream: &mut Stream) -> bool {
        let worker = NativeWorker(&self.config.workers[self.worker]);
        let headers_stream = Stream::clone_for_reads(stream);
        let headers = NativeHeaders(&headers_stream);
        let mut host = NativeRequest {
            stream,
            status: &mut self.status,
            request_edited: false,
        };
        let verdict = self.flow.on_request_headers(&worker, &mut host, &headers);
        let edited = host.request_edited;
        if edited && verdict == Verdict::Continue {
            stream.clear_route_cache();
        }
        verdict == Verdict::Continue
    }

    /// The response headers.
    pub fn on_response_headers(&mut self, stream: &mut Stream) {
        let worker = NativeWorker(&self.config.workers[self.worker]);
        let mut host = NativeRequest {
            stream,
            status: &mut self.status,
            request_edited: false,
        };
        self.flow.on_response_headers(&worker, &mut host);
    }

    /// The end of the stream.
    pub fn on_complete(&mut self, stream: &mut Stream) {
        let worker = NativeWorker(&self.config.workers[self.worker]);
        let mut host = NativeRequest {
            stream,
            status: &mut self.status,
            request_edited: false,
        };
        self.flow.on_complete(&worker, &mut host);
    }
}
