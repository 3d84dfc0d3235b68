//! The evaluation loop of [`Gates`]: every `interval_ms`, judge the live rollout's window and
//! promote it (analysis passed for `pass_for_ms`) or roll it back (`failure_threshold` failed
//! evaluations in a row), and re-publish a state whose publication failed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{overlay_of, Gates};
use crate::clock::now_ns;
use crate::gates::analysis::{verdict, Figures, Verdict};
use crate::gates::spec::RolloutSpec;
use crate::gates::state::{Phase, RolloutState, Target};
use crate::gates::GatesError;
use tracing::Instrument as _;

/// Evaluation period while no rollout is live.
const IDLE_INTERVAL: Duration = Duration::from_millis(200);

impl Gates {
    /// One evaluation at `now_ns`: judge the live rollout and promote or roll back. Traced
    /// as `knhk.rollout.evaluate` while a rollout is live (idle ticks are not).
    pub async fn evaluate(&self, now_ns: u64) -> Result<(), GatesError> {
        match self.readings().filter(|r| !r.phase.is_terminal()) {
            Some(r) => {
                let span = tracing::info_span!(
                    "knhk.rollout.evaluate",
                    "knhk.rollout.id" = %r.id,
                    "knhk.rollout.weight" = r.canary_percent,
                );
                self.evaluate_live(now_ns).instrument(span).await
            }
            None => self.evaluate_live(now_ns).await,
        }
    }

    async fn evaluate_live(&self, now_ns: u64) -> Result<(), GatesError> {
        let _serial = self.serial.lock().await;
        enum Next {
            Nothing,
            Republish(RolloutSpec, RolloutState),
            Rollback(RolloutSpec, RolloutState, String, Figures),
            Promote(RolloutSpec, RolloutState, Target, Figures),
        }
        let next = {
            let mut guard = self.lock()?;
            let Some(cur) = guard.as_mut() else {
                return Ok(());
            };
            if cur.unpublished {
                Next::Republish(cur.spec.clone(), cur.state.clone())
            } else if cur.state.phase.is_terminal() {
                Next::Nothing
            } else {
                let a = cur.spec.analysis(&self.defaults);
                let figures = cur.window.figures(now_ns, a.window_ms);
                let v = verdict(&figures, &a);
                let next = match &v {
                    Verdict::Fail { reasons, .. } => {
                        cur.failures += 1;
                        cur.passing_since_ns = None;
                        if cur.failures >= a.failure_threshold
                            && cur.spec.auto_rollback(&self.defaults)
                        {
                            Next::Rollback(
                                cur.spec.clone(),
                                cur.state.clone(),
                                format!(
                                    "{} failed {} evaluation(s) in a row: {}",
                                    cur.spec.candidate,
                                    cur.failures,
                                    reasons.join("; ")
                                ),
                                figures,
                            )
                        } else {
                            Next::Nothing
                        }
                    }
                    Verdict::Pass { .. } => {
                        cur.failures = 0;
                        let since = *cur.passing_since_ns.get_or_insert(now_ns);
                        let passed_ms = now_ns.saturating_sub(since) / 1_000_000;
                        if cur.state.phase == Phase::Running
                            && cur.spec.auto_promote
                            && passed_ms >= a.pass_for_ms
                        {
                            match cur.state.next(&cur.spec) {
                                Ok(t) => {
                                    Next::Promote(cur.spec.clone(), cur.state.clone(), t, figures)
                                }
                                Err(_) => Next::Nothing,
                            }
                        } else {
                            Next::Nothing
                        }
                    }
                    Verdict::Inconclusive { .. } => {
                        cur.passing_since_ns = None;
                        Next::Nothing
                    }
                };
                let percent = f64::from(cur.state.canary_bp(&cur.spec)) / 100.0;
                cur.timeline.evaluation(now_ns, percent, &figures, &v);
                cur.last = Some((figures, v));
                cur.evaluations += 1;
                next
            }
        };
        match next {
            Next::Nothing => Ok(()),
            Next::Republish(spec, state) => {
                self.policy
                    .set_overlay(Some(overlay_of(&spec, &state)))
                    .await?;
                if let Some(cur) = self.lock()?.as_mut() {
                    cur.unpublished = false;
                }
                Ok(())
            }
            Next::Rollback(spec, mut state, cause, figures) => {
                tracing::warn!(rollout = %spec.id, %cause, "rolling back");
                let from = state.gate;
                state.phase = Phase::RolledBack;
                state.reason = Some(cause.clone());
                self.transition(&spec, from, state, "rollback", cause, Some(figures))
                    .await
            }
            Next::Promote(spec, state, target, figures) => {
                let a = spec.analysis(&self.defaults);
                let cause = format!(
                    "analysis passed for {} ms: success rate {:.4}, p99 {:.1} ms over {} samples",
                    a.pass_for_ms,
                    figures.candidate.success_rate,
                    figures.candidate.p99_ms,
                    figures.candidate.samples
                );
                self.promote_locked(&spec, state, target, cause, Some(figures))
                    .await
            }
        }
    }

    fn interval(&self) -> Duration {
        self.current
            .lock()
            .ok()
            .and_then(|g| {
                g.as_ref()
                    .filter(|c| !c.state.phase.is_terminal() || c.unpublished)
                    .map(|c| Duration::from_millis(c.spec.analysis(&self.defaults).interval_ms))
            })
            .unwrap_or(IDLE_INTERVAL)
    }

    /// Evaluate every `interval_ms` until `stop` turns true.
    pub fn spawn(self: &Arc<Self>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let gates = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(gates.interval()) => {}
                    _ = stop.changed() => return,
                }
                if let Err(e) = gates.evaluate(now_ns()).await {
                    tracing::error!(error = %e, "rollout evaluation failed; will retry");
                }
            }
        })
    }
}
