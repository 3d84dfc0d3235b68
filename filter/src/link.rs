//! The filter's link to the agent, independent of the host: when to call (the config
//! long-poll, receipt batches), what each call looks like, and what a response means. The
//! adapter dispatches the calls ([`CallHost`]) and hands each response back here.

use std::time::Duration;

use knhk_core::policy::Control;

use crate::control::{ConfigPoll, PollOutcome};
use crate::host::{AgentCall, CallHost};
use crate::receipts::ReceiptBuffer;

/// Timeout of a receipt batch post.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

fn base_headers(
    control: &Control,
    method: &'static str,
    path: String,
) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        (":method", method.to_owned()),
        (":path", path),
        (":authority", control.authority.clone()),
    ];
    if let Some(token) = &control.token {
        headers.push(("authorization", token.header_value().to_owned()));
    }
    headers
}

/// Dispatch the config long-poll when one is due. Returns the host's refusal, if any, for the
/// adapter to log.
pub fn poll_config(poll: &mut ConfigPoll, host: &mut impl CallHost, now_ms: u64) -> Option<String> {
    if !poll.due(now_ms) {
        return None;
    }
    let control = poll.control();
    let mut headers = base_headers(control, "GET", poll.path());
    headers.push(("accept", "application/json".to_owned()));
    let call = AgentCall {
        cluster: control.cluster.clone(),
        headers,
        body: None,
        timeout: Duration::from_millis(poll.call_timeout_ms()),
    };
    match host.dispatch(&call) {
        Ok(token) => {
            poll.dispatched(token);
            None
        }
        Err(why) => {
            poll.dispatch_failed(now_ms);
            Some(format!(
                "cannot poll the agent on cluster {}: {why}",
                call.cluster
            ))
        }
    }
}

/// Post the next receipt batch when one is due (a full batch, or anything once the flush
/// interval passed) and none is in flight.
pub fn flush_receipts(
    buffer: &mut ReceiptBuffer,
    control: &Control,
    host: &mut impl CallHost,
    now_ms: u64,
) {
    if buffer.token.is_some() {
        return;
    }
    let interval = u64::from(buffer.settings().flush_interval_ms);
    if !buffer.due(now_ms.saturating_sub(buffer.last_flush_ms) >= interval) {
        return;
    }
    let Some(batch) = buffer.take_batch() else {
        return;
    };
    let mut headers = base_headers(control, "POST", buffer.settings().path.clone());
    headers.push(("content-type", "application/x-knhk-receipts".to_owned()));
    let call = AgentCall {
        cluster: control.cluster.clone(),
        headers,
        body: Some(batch),
        timeout: FLUSH_TIMEOUT,
    };
    buffer.last_flush_ms = now_ms;
    match host.dispatch(&call) {
        Ok(token) => buffer.token = Some(token),
        Err(_) => buffer.failed(),
    }
}

/// What a receipt post's response means for the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushDone {
    /// The batch was committed: a full batch waiting may go at once.
    pub acknowledged: bool,
    /// The agent newly refused the credential (log it once).
    pub newly_refused: bool,
}

/// The response to the receipt post in flight (`status` `None`: no response).
pub fn flush_done(buffer: &mut ReceiptBuffer, status: Option<u16>) -> FlushDone {
    buffer.token = None;
    let acknowledged = matches!(status, Some(200..=299));
    if acknowledged {
        buffer.acknowledged();
    } else {
        buffer.failed();
    }
    let refused = matches!(status, Some(401 | 403));
    let newly_refused = refused && !buffer.refused;
    buffer.refused = refused;
    FlushDone {
        acknowledged,
        newly_refused,
    }
}

/// The response to the receipt post identified by `token`, for the buffer that may have sent
/// it: `true` when the batch was acknowledged (a full batch waiting may go at once). A response
/// that is not this buffer's post in flight changes nothing; a credential newly refused is
/// logged once.
pub fn receipts_answered(
    buffer: Option<&mut ReceiptBuffer>,
    token: u64,
    status: Option<u16>,
) -> bool {
    let Some(buffer) = buffer.filter(|b| b.token == Some(token)) else {
        return false;
    };
    let done = flush_done(buffer, status);
    if done.newly_refused {
        log::warn!("knhk: the agent refused the receipt credential (control.token) with {status:?}; receipts stay buffered");
    }
    done.acknowledged
}

/// The response to the config poll in flight.
pub fn poll_done(
    poll: &mut ConfigPoll,
    status: Option<u16>,
    body: Option<&[u8]>,
    now_ms: u64,
) -> PollOutcome {
    poll.complete(status, body, now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::doubles::FakeCalls;
    use crate::receipts::sample_receipt;
    use knhk_core::config::ReceiptOverflow;
    use knhk_core::policy::Receipts;
    use knhk_core::Policy;

    fn control() -> Control {
        let key = knhk_core::checkpoint::PublicKeyVersion {
            provider: "local".into(),
            key_id: "config".into(),
            version: 1,
            alg: knhk_core::checkpoint::Alg::Ed25519,
            public_key: vec![7; 32],
            retired: false,
        };
        let json = serde_json::json!({"control": {
            "cluster": "knhk_agent",
            "authority": "agent",
            "token": "s3cret-token-value-0123456789abcdef",
            "trusted_keys": [key],
        }});
        Policy::from_json(json.to_string().as_bytes())
            .unwrap()
            .control
            .unwrap()
    }

    fn buffer() -> ReceiptBuffer {
        ReceiptBuffer::new(
            Receipts {
                path: "/v1/receipts".into(),
                flush_interval_ms: 250,
                max_batch: 2,
                max_buffer: 10,
                overflow: ReceiptOverflow::Drop,
            },
            knhk_core::receipt::Origin::default(),
        )
    }

    /// The poll carries the epoch, the credential and the hold; one is in flight at a time,
    /// and a refused dispatch backs off and is reported.
    #[test]
    fn the_config_poll_is_one_call_at_a_time() {
        let mut poll = ConfigPoll::new(control());
        let mut host = FakeCalls::default();
        assert_eq!(poll_config(&mut poll, &mut host, 0), None);
        assert_eq!(poll_config(&mut poll, &mut host, 1), None);
        assert_eq!(host.calls.len(), 1, "one poll in flight");
        let call = &host.calls[0];
        assert_eq!(call.cluster, "knhk_agent");
        assert!(call
            .headers
            .contains(&(":path", "/v1/config?after=0&timeout_ms=30000".into())));
        assert!(call.headers.contains(&(":authority", "agent".into())));
        assert!(call
            .headers
            .iter()
            .any(|(n, v)| *n == "authorization" && v.contains("s3cret-token-value")));
        assert_eq!(call.timeout, Duration::from_millis(35_000));
        assert!(matches!(
            poll_done(&mut poll, Some(204), None, 2),
            PollOutcome::NothingNew
        ));
        let mut refusing = FakeCalls {
            refuse: true,
            ..Default::default()
        };
        let why = poll_config(&mut poll, &mut refusing, 3).unwrap();
        assert!(why.contains("knhk_agent"), "{why}");
        assert!(!poll.due(3), "a refused dispatch backs off");
    }

    /// A full batch goes at once; a partial one waits for the interval; an acknowledgement
    /// clears it, a failure keeps it, and a 401 is reported once.
    #[test]
    fn receipt_batches_follow_the_interval_and_the_answers() {
        let control = control();
        let mut b = buffer();
        let mut host = FakeCalls::default();
        b.push(sample_receipt(1));
        flush_receipts(&mut b, &control, &mut host, 100);
        assert!(host.calls.is_empty(), "partial batch before the interval");
        flush_receipts(&mut b, &control, &mut host, 250);
        assert_eq!(host.calls.len(), 1);
        let call = &host.calls[0];
        assert!(call.headers.contains(&(":method", "POST".into())));
        assert!(call
            .headers
            .contains(&("content-type", "application/x-knhk-receipts".into())));
        assert!(call.body.as_ref().is_some_and(|b| !b.is_empty()));
        let done = flush_done(&mut b, Some(401));
        assert!(!done.acknowledged && done.newly_refused);
        assert_eq!(b.unsent(), 1, "kept for a retry");
        flush_receipts(&mut b, &control, &mut host, 600);
        assert!(!flush_done(&mut b, Some(403)).newly_refused, "logged once");
        flush_receipts(&mut b, &control, &mut host, 900);
        assert!(flush_done(&mut b, Some(200)).acknowledged);
        assert_eq!((b.unsent(), b.take_counts()), (0, [1, 0, 2]));
    }

    /// Only the answer to the buffer's own post in flight counts; a stale one changes nothing.
    #[test]
    fn receipts_answered_only_by_the_post_in_flight() {
        let control = control();
        let mut b = buffer();
        let mut host = FakeCalls::default();
        b.push(sample_receipt(1));
        b.push(sample_receipt(2));
        flush_receipts(&mut b, &control, &mut host, 250);
        let token = b.token.unwrap();
        assert!(!receipts_answered(Some(&mut b), token + 1, Some(200)));
        assert_eq!(
            (b.token, b.unsent()),
            (Some(token), 2),
            "stale answer ignored"
        );
        assert!(!receipts_answered(None, token, Some(200)));
        assert!(receipts_answered(Some(&mut b), token, Some(200)));
        assert_eq!((b.token, b.unsent()), (None, 0));
    }
}
