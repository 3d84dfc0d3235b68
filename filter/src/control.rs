//! The long-poll for signed configs: when to call the agent, and what a response means.
//!
//! Each worker's VM keeps one `GET {config_path}?after=<epoch>&timeout_ms=<hold>` outstanding.
//! The agent answers at once when it has a newer epoch, or holds the call until it has one or
//! the hold expires (204). A response that opens ([`knhk_core::envelope::open`]) replaces the
//! policy; anything else is refused with a counter and a log line, the last good policy stays
//! in force, and the next poll waits a backoff (so a bad or unreachable agent is not hammered).

use knhk_core::checkpoint::PublicKeyVersion;
use knhk_core::envelope::{open, Accepted, EnvelopeError};
use knhk_core::policy::Control;

/// First retry delay after a failed or refused poll, milliseconds.
pub const BACKOFF_MIN_MS: u64 = 250;
/// Longest retry delay, milliseconds: a recovered agent (or a good config after a bad one)
/// reaches every worker within 5 s, and an unreachable agent costs one call per 5 s per worker.
pub const BACKOFF_MAX_MS: u64 = 5_000;

/// What a poll response led to.
#[derive(Debug)]
pub enum PollOutcome {
    /// A newer signed config verified and validated.
    Apply(Box<Accepted>),
    /// Nothing newer within the hold (204): poll again at once.
    NothingNew,
    /// The agent answered with something unusable, or not at all.
    Failed(String),
    /// A config arrived and was refused.
    Refused(EnvelopeError),
}

/// Long-poll state of one worker.
#[derive(Debug)]
pub struct ConfigPoll {
    control: Control,
    trusted: Vec<PublicKeyVersion>,
    /// Epoch in force (0: the static plugin configuration).
    pub epoch: u64,
    in_flight: Option<u64>,
    not_before_ms: u64,
    backoff_ms: u64,
}

impl ConfigPoll {
    /// Start trusting the static key set, at epoch 0.
    pub fn new(control: Control) -> Self {
        let trusted = control.trusted_keys.clone();
        ConfigPoll {
            control,
            trusted,
            epoch: 0,
            in_flight: None,
            not_before_ms: 0,
            backoff_ms: BACKOFF_MIN_MS,
        }
    }

    /// The agent connection.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Whether a poll should be dispatched now.
    pub fn due(&self, now_ms: u64) -> bool {
        self.in_flight.is_none() && now_ms >= self.not_before_ms
    }

    /// Path of the next poll.
    pub fn path(&self) -> String {
        format!(
            "{}?after={}&timeout_ms={}",
            self.control.config_path, self.epoch, self.control.poll_timeout_ms
        )
    }

    /// Call timeout: the agent's hold plus slack for the answer to arrive.
    pub fn call_timeout_ms(&self) -> u64 {
        u64::from(self.control.poll_timeout_ms) + 5_000
    }

    /// A poll was dispatched with this token.
    pub fn dispatched(&mut self, token: u64) {
        self.in_flight = Some(token);
    }

    /// The dispatch itself failed: retry after a backoff.
    pub fn dispatch_failed(&mut self, now_ms: u64) {
        self.back_off(now_ms);
    }

    /// Whether `token` is this poll's call.
    pub fn owns(&self, token: u64) -> bool {
        self.in_flight == Some(token)
    }

    /// Interpret the response to the poll: `status` (None when the call failed) and body.
    pub fn complete(
        &mut self,
        status: Option<u16>,
        body: Option<&[u8]>,
        now_ms: u64,
    ) -> PollOutcome {
        self.in_flight = None;
        let outcome = match (status, body) {
            (Some(200), Some(body)) => match open(body, &self.trusted, self.epoch) {
                Ok(accepted) => PollOutcome::Apply(Box::new(accepted)),
                Err(e) => PollOutcome::Refused(e),
            },
            (Some(200), None) => PollOutcome::Failed("200 without a body".into()),
            (Some(204), _) => PollOutcome::NothingNew,
            (Some(status), _) => PollOutcome::Failed(format!("agent answered {status}")),
            (None, _) => {
                PollOutcome::Failed("no response (agent unreachable or call timed out)".into())
            }
        };
        match &outcome {
            PollOutcome::Apply(accepted) => {
                self.epoch = accepted.epoch;
                if let Some(next) = &accepted.next_keys {
                    self.trusted = next.clone();
                }
                self.backoff_ms = BACKOFF_MIN_MS;
                self.not_before_ms = 0;
            }
            PollOutcome::NothingNew => {
                self.backoff_ms = BACKOFF_MIN_MS;
                self.not_before_ms = 0;
            }
            PollOutcome::Failed(_) | PollOutcome::Refused(_) => self.back_off(now_ms),
        }
        outcome
    }

    fn back_off(&mut self, now_ms: u64) {
        self.not_before_ms = now_ms.saturating_add(self.backoff_ms);
        self.backoff_ms = (self.backoff_ms * 2).min(BACKOFF_MAX_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer as _, SigningKey};
    use knhk_core::checkpoint::{Alg, SignatureRecord};
    use knhk_core::envelope::{signing_input, Envelope, PAYLOAD_TYPE};
    use knhk_core::Policy;

    fn key_version() -> PublicKeyVersion {
        PublicKeyVersion {
            provider: "local".into(),
            key_id: "config".into(),
            version: 1,
            alg: Alg::Ed25519,
            public_key: SigningKey::from_bytes(&[7; 32])
                .verifying_key()
                .to_bytes()
                .to_vec(),
            retired: false,
        }
    }

    fn poll() -> ConfigPoll {
        let json = serde_json::json!({"control": {"cluster": "knhk_agent", "trusted_keys": [key_version()]}});
        let policy = Policy::from_json(json.to_string().as_bytes()).unwrap();
        ConfigPoll::new(policy.control.unwrap())
    }

    fn envelope(epoch: u64) -> Vec<u8> {
        let payload = format!(
            r#"{{"epoch":{epoch},"issued_at_ns":1,"policy":{{"routing":{{"canary_basis_points":42}}}}}}"#
        );
        let sig = SigningKey::from_bytes(&[7; 32]).sign(&signing_input(payload.as_bytes()));
        serde_json::to_vec(&Envelope {
            payload_type: PAYLOAD_TYPE.into(),
            payload: payload.into_bytes(),
            signatures: vec![SignatureRecord {
                provider: "local".into(),
                key_id: "config".into(),
                key_version: 1,
                alg: Alg::Ed25519,
                sig: sig.to_bytes().to_vec(),
            }],
        })
        .unwrap()
    }

    /// A verified config advances the epoch, and the next poll asks for newer ones at once.
    #[test]
    fn applied_config_advances_the_epoch() {
        let mut p = poll();
        assert_eq!(p.path(), "/v1/config?after=0&timeout_ms=30000");
        p.dispatched(1);
        assert!(!p.due(0), "one poll in flight");
        match p.complete(Some(200), Some(&envelope(3)), 10) {
            PollOutcome::Apply(a) => assert_eq!(a.policy.canary_basis_points, 42),
            other => panic!("{other:?}"),
        }
        assert_eq!(p.epoch, 3);
        assert!(p.due(10));
        assert_eq!(p.path(), "/v1/config?after=3&timeout_ms=30000");
    }

    /// A replayed (stale) or forged config is refused, the epoch stays, and polling backs off.
    #[test]
    fn refused_configs_back_off() {
        let mut p = poll();
        p.dispatched(1);
        p.complete(Some(200), Some(&envelope(3)), 0);
        p.dispatched(2);
        assert!(matches!(
            p.complete(Some(200), Some(&envelope(3)), 1_000),
            PollOutcome::Refused(EnvelopeError::Stale { .. })
        ));
        assert_eq!(p.epoch, 3);
        assert!(!p.due(1_000 + BACKOFF_MIN_MS - 1));
        assert!(p.due(1_000 + BACKOFF_MIN_MS));
        let mut forged = envelope(4);
        let at = forged.len() / 2;
        forged[at] ^= 1;
        p.dispatched(3);
        assert!(matches!(
            p.complete(Some(200), Some(&forged), 2_000),
            PollOutcome::Refused(_) | PollOutcome::Failed(_)
        ));
        assert_eq!(p.epoch, 3);
    }

    /// An unreachable agent is retried with exponential backoff up to the cap; a 204 resets it.
    #[test]
    fn failures_back_off_exponentially() {
        let mut p = poll();
        let mut now = 0;
        let mut delays = Vec::new();
        for token in 0..10 {
            p.dispatched(token);
            assert!(matches!(
                p.complete(None, None, now),
                PollOutcome::Failed(_)
            ));
            let wait = (now..).find(|t| p.due(*t)).unwrap() - now;
            delays.push(wait);
            now += wait;
        }
        assert_eq!(&delays[..4], &[250, 500, 1_000, 2_000]);
        assert_eq!(*delays.last().unwrap(), BACKOFF_MAX_MS);
        p.dispatched(99);
        assert!(matches!(
            p.complete(Some(204), None, now),
            PollOutcome::NothingNew
        ));
        assert!(p.due(now));
        p.dispatched(100);
        p.complete(Some(503), None, now);
        assert!(p.due(now + BACKOFF_MIN_MS));
    }
}
