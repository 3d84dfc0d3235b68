//! The timed key rotation: the checkpoint key is rotated once its newest version has signed for
//! `kms.rotation_interval`, measured from the time the log recorded for that version (so a
//! restart does not reset a key's age, and the 24 h ceiling holds across restarts), on an
//! injectable clock.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::now_ns;
use crate::receipts::ReceiptLog;

/// The clock the rotator reads: nanoseconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The longest the rotator waits before it reads the clock again (a stepped system clock, or a
/// failed rotation, is acted on within it).
pub const CHECK_EVERY: Duration = Duration::from_secs(60);

/// Rotates the log's signing key every `every`.
#[derive(Clone)]
pub struct Rotator {
    every: Duration,
    clock: Clock,
    check_every: Duration,
}

impl std::fmt::Debug for Rotator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotator")
            .field("every", &self.every)
            .field("check_every", &self.check_every)
            .finish_non_exhaustive()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Rotator {
    /// A rotator on the system clock.
    pub fn new(every: Duration) -> Self {
        Rotator {
            every,
            clock: Arc::new(now_ns),
            check_every: CHECK_EVERY,
        }
    }

    /// The same rotator on `clock`, reading it at least every `check_every` (tests inject
    /// time this way).
    pub fn with_clock(mut self, clock: Clock, check_every: Duration) -> Self {
        self.clock = clock;
        self.check_every = check_every;
        self
    }

    /// Rotate if the newest version has signed for `every`; returns how long to wait before
    /// the next look. A failed rotation is logged and retried after `check_every`.
    pub async fn step(&self, log: &ReceiptLog) -> Duration {
        let now = (self.clock)();
        let since = match log.key_in_use_since(now) {
            Ok(since) => since,
            Err(e) => {
                tracing::error!(task = "key rotation", error = %e, "cannot read the key's age; will retry");
                return self.check_every;
            }
        };
        let due = since.saturating_add(nanos(self.every));
        if now < due {
            return Duration::from_nanos(due - now).min(self.check_every);
        }
        match log.rotate_key(now).await {
            Ok((key, _)) => {
                tracing::info!(version = key.version, "rotated signing key");
                self.every.min(self.check_every)
            }
            Err(e) => {
                tracing::error!(task = "key rotation", error = %e, "background task failed; will retry");
                self.check_every
            }
        }
    }

    /// Run [`Rotator::step`] until `stop` changes (or its sender goes).
    pub fn spawn(self, log: Arc<ReceiptLog>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let wait = self.step(&log).await;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::kms::{build_signer, KmsConfig, Signer};

    const HOUR: Duration = Duration::from_secs(3600);
    const T0: u64 = 1_800_000_000_000_000_000;

    fn manual_clock(start: u64) -> (Arc<AtomicU64>, Clock) {
        let now = Arc::new(AtomicU64::new(start));
        let read = now.clone();
        (now, Arc::new(move || read.load(Ordering::SeqCst)))
    }

    async fn open(dir: &std::path::Path) -> Arc<ReceiptLog> {
        let kms = KmsConfig {
            key_dir: Some(dir.join("keys")),
            ..KmsConfig::default()
        };
        let signer: Arc<dyn Signer> = Arc::from(build_signer(&kms).await.unwrap());
        Arc::new(
            ReceiptLog::open(&dir.join("receipts.db"), "knhk.test/rotator", signer)
                .await
                .unwrap(),
        )
    }

    fn versions(log: &ReceiptLog) -> usize {
        log.export().map(|e| e.public_keys.len()).unwrap_or(0)
    }

    /// One rotation per interval of the key's age, never before; the handover is signed by
    /// the previous version; the age survives a restart.
    #[tokio::test]
    async fn rotates_once_per_interval_by_the_key_age_kept_in_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path()).await;
        log.seal(T0).await.unwrap();
        let (now, clock) = manual_clock(T0);
        let rotator = Rotator::new(HOUR).with_clock(clock.clone(), CHECK_EVERY);
        assert_eq!(
            rotator.step(&log).await,
            CHECK_EVERY,
            "an hour to go, looked at in a minute"
        );
        now.store(T0 + nanos(HOUR) - 1, Ordering::SeqCst);
        assert_eq!(rotator.step(&log).await, Duration::from_nanos(1));
        assert_eq!(versions(&log), 1, "nothing before the interval");
        now.store(T0 + nanos(HOUR), Ordering::SeqCst);
        rotator.step(&log).await;
        assert_eq!(versions(&log), 2, "rotated at the interval");
        rotator.step(&log).await;
        assert_eq!(versions(&log), 2, "and only once");
        let latest = log.latest_checkpoint().unwrap().unwrap();
        assert_eq!(
            latest.signature.key_version, 1,
            "the handover is signed by the previous version"
        );

        // A restart half an hour later does not reset the key's age.
        drop(log);
        let log = open(dir.path()).await;
        now.store(T0 + nanos(HOUR) + nanos(HOUR) / 2, Ordering::SeqCst);
        rotator.step(&log).await;
        assert_eq!(versions(&log), 2, "half an hour into version 2");
        now.store(T0 + 2 * nanos(HOUR), Ordering::SeqCst);
        rotator.step(&log).await;
        assert_eq!(
            versions(&log),
            3,
            "version 2 rotated an interval after it began"
        );
    }

    /// The spawned task rotates on its own when the injected clock passes the interval, and
    /// stops when told.
    #[tokio::test]
    async fn the_task_rotates_on_its_own_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path()).await;
        log.seal(T0).await.unwrap();
        // The key's age starts at T0 (its first look records it).
        assert_eq!(log.key_in_use_since(T0).unwrap(), T0);
        let (now, clock) = manual_clock(T0);
        let (stop, stopped) = watch::channel(false);
        let task = Rotator::new(HOUR)
            .with_clock(clock, Duration::from_millis(5))
            .spawn(log.clone(), stopped);
        now.store(T0 + nanos(HOUR), Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while versions(&log) < 2 {
            assert!(tokio::time::Instant::now() < deadline, "no rotation");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(versions(&log), 2);
    }
}
