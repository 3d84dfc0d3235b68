//! Polling with a deadline: the only way the harness and tests wait for anything.

use std::future::Future;
use std::time::{Duration, Instant};

/// Interval between two polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Call `probe` every [`POLL_INTERVAL`] until it returns `Ok(Some(value))`, an error, or
/// `timeout` passes. The timeout error names `what` and the last probe's description.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A probe that succeeds on its third call is polled exactly three times.
    #[tokio::test]
    async fn polls_until_ready() {
        let calls = AtomicU32::new(0);
        let value = poll("third call", Duration::from_secs(5), || async {
            Ok((calls.fetch_add(1, Ordering::SeqCst) == 2).then_some(7))
        })
        .await
        .unwrap();
        assert_eq!((value, calls.load(Ordering::SeqCst)), (7, 3));
    }

    /// A probe that never succeeds ends in a timeout error naming what was awaited.
    #[tokio::test]
    async fn times_out_with_name() {
        let err = poll("never", Duration::from_millis(120), || async {
            Ok(None::<()>)
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("never"));
    }
}
