//! Background load: a few paced request loops that keep a class busy while a test observes it.

use crate::client::{Client, ADMISSION_HEADER};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// One request of the load: path and headers.
pub type RequestSpec = (String, Vec<(String, String)>);

/// Counts of what the load saw so far.
#[derive(Debug, Default)]
pub struct LoadStats {
    /// Responses received.
    pub responses: AtomicU64,
    /// Responses with status 5xx.
    pub status_5xx: AtomicU64,
    /// Responses carrying `x-knhk-admission: shed`.
    pub shed: AtomicU64,
    /// Responses carrying `x-knhk-admission: degraded`.
    pub degraded: AtomicU64,
    /// Requests that failed at the transport level.
    pub errors: AtomicU64,
}

impl LoadStats {
    /// Read one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Running load; stops when [`Load::stop`] is called or when dropped.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    /// What the load saw.
    pub stats: Arc<LoadStats>,
}

impl Load {
    /// Start `loops` request loops, each sending at most one request per `pace`; request number
    /// `n` (counted over all loops) is built by `make(n)`.
    pub fn start<F>(client: Client, loops: usize, pace: Duration, make: F) -> Load
    where
        F: Fn(u64) -> RequestSpec + Send + Sync + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(LoadStats::default());
        let make = Arc::new(make);
        let next = Arc::new(AtomicU64::new(0));
        let tasks = (0..loops)
            .map(|_| {
                let (client, stop, stats, make, next) = (
                    client.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&stats),
                    Arc::clone(&make),
                    Arc::clone(&next),
                );
                tokio::spawn(async move {
                    let mut ticker = tokio::time::interval(pace);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    while !stop.load(Ordering::Relaxed) {
                        ticker.tick().await;
                        let (path, headers) = make(next.fetch_add(1, Ordering::Relaxed));
                        let refs: Vec<(&str, &str)> = headers
                            .iter()
                            .map(|(n, v)| (n.as_str(), v.as_str()))
                            .collect();
                        match client.get(&path, &refs).await {
                            Ok(reply) => {
                                stats.responses.fetch_add(1, Ordering::Relaxed);
                                if reply.status >= 500 {
                                    stats.status_5xx.fetch_add(1, Ordering::Relaxed);
                                }
                                match reply.header(ADMISSION_HEADER) {
                                    Some("shed") => stats.shed.fetch_add(1, Ordering::Relaxed),
                                    Some("degraded") => {
                                        stats.degraded.fetch_add(1, Ordering::Relaxed)
                                    }
                                    _ => 0,
                                };
                            }
                            Err(_) => {
                                stats.errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        Load { stop, tasks, stats }
    }

    /// Stop the loops and wait for in-flight requests to finish.
    pub async fn stop(mut self) -> Arc<LoadStats> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        Arc::clone(&self.stats)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
    }
}
