//! [`Gates`]: the rollout engine. It owns the current rollout, feeds its analysis window from
//! the receipt log, evaluates it every `interval_ms`, and carries out transitions.
//!
//! A transition is, in order: persist the new state (`gates.db`), publish the config it implies
//! through the policy service's overlay (signed epoch, woken long-polls: the filters have it
//! within one round trip), then append a rollout event to the receipt log and seal a
//! checkpoint over it, citing the receipt leaves and figures it was decided on. Persisting
//! first means a crash can only leave a state that is ahead of what was published, and a
//! restart publishes it again; never the reverse.

use std::sync::{Arc, Mutex, MutexGuard};

use knhk_core::receipt::{LogEntry, Receipt, RolloutEvent};
use serde::Serialize;

use super::analysis::{Figures, Verdict, Window};
use super::config::GatesConfig;
use super::spec::RolloutSpec;
use super::state::{Phase, RolloutState, Target};
use super::store::{GatesStore, HistoryItem, DATABASE_FILE};
use super::terms::Analysis;
use super::terms::Gate;
use super::timeline::{Timeline, TimelinePoint};
use super::GatesError;
use crate::clock::now_ns;
use crate::policy::service::Overlay;
use crate::policy::PolicyService;
use crate::receipts::ReceiptLog;

/// The evaluation loop.
mod evaluate;

struct Current {
    spec: RolloutSpec,
    state: RolloutState,
    window: Window,
    failures: u32,
    passing_since_ns: Option<u64>,
    last: Option<(Figures, Verdict)>,
    evaluations: u64,
    unpublished: bool,
    timeline: Timeline,
}

/// The rollout engine of one agent.
pub struct Gates {
    defaults: GatesConfig,
    policy: Arc<PolicyService>,
    log: Arc<ReceiptLog>,
    store: Mutex<GatesStore>,
    current: Mutex<Option<Current>>,
    serial: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Gates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gates").finish_non_exhaustive()
    }
}

/// The current rollout's figures as telemetry shows them ([`Gates::readings`]).
#[derive(Debug, Clone)]
pub struct Readings {
    /// The rollout's id.
    pub id: String,
    /// The stable version.
    pub stable: String,
    /// The candidate version.
    pub candidate: String,
    /// The candidate's weight, percent.
    pub canary_percent: f64,
    /// The rollout's phase.
    pub phase: Phase,
    /// The last evaluation's figures.
    pub figures: Option<Figures>,
}

/// What `GET /v1/rollouts/current` and `knhk-agent rollout status` show.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The rollout as started (steps filled in).
    pub spec: RolloutSpec,
    /// Gate.
    pub gate: Gate,
    /// Canary step index.
    pub step: usize,
    /// Phase (`running`, `paused`, `completed`, `rolled_back`, `aborted`).
    pub phase: Phase,
    /// Canary weight in force, percent.
    pub canary_percent: f64,
    /// Version serving stable traffic now.
    pub serving_stable: String,
    /// Why it last changed.
    pub reason: Option<String>,
    /// Analysis settings in force.
    pub analysis: Analysis,
    /// Newest figures and verdict (absent before the first evaluation).
    pub figures: Option<Figures>,
    /// Newest verdict.
    pub verdict: Option<Verdict>,
    /// Failed evaluations in a row.
    pub consecutive_failures: u32,
    /// Evaluations of this gate so far.
    pub evaluations: u64,
    /// How long the analysis has been passing, milliseconds.
    pub passing_for_ms: u64,
    /// Config epoch this gate's analysis counts from.
    pub since_epoch: u64,
    /// Every transition so far, oldest first.
    pub history: Vec<HistoryItem>,
}

/// The signed record of a transition (the body of a rollout event leaf).
#[derive(Debug, Serialize)]
struct EventBody<'a> {
    rollout: &'a str,
    action: &'a str,
    from: &'a str,
    to: &'a str,
    phase: &'a str,
    stable: &'a str,
    candidate: &'a str,
    canary_basis_points: u16,
    epoch: u64,
    cause: &'a str,
    window: Option<&'a Figures>,
}

fn overlay_of(spec: &RolloutSpec, state: &RolloutState) -> Overlay {
    let spec = spec.clone();
    let state = state.clone();
    Arc::new(move |policy: &mut serde_json::Value| state.shape(&spec, policy))
}

impl Gates {
    /// Open the engine: load the newest rollout from `gates.db` in `data_dir` and publish the
    /// config its state implies (a restart resumes the same gate and weights).
    pub async fn open(
        data_dir: &std::path::Path,
        defaults: GatesConfig,
        policy: Arc<PolicyService>,
        log: Arc<ReceiptLog>,
    ) -> Result<Arc<Gates>, GatesError> {
        let path = data_dir.join(DATABASE_FILE);
        let (store, current) = tokio::task::spawn_blocking(move || {
            let store = GatesStore::open(&path)?;
            let current = store.current()?;
            Ok::<_, GatesError>((store, current))
        })
        .await
        .map_err(|_| GatesError::Internal("gates store task failed"))??;
        let gates = Arc::new(Gates {
            defaults,
            policy,
            log,
            store: Mutex::new(store),
            current: Mutex::new(None),
            serial: tokio::sync::Mutex::new(()),
        });
        if let Some((spec, state)) = current {
            let a = spec.analysis(&gates.defaults);
            tracing::info!(
                rollout = %spec.id,
                gate = state.gate.as_str(),
                step = state.step,
                phase = state.phase.as_str(),
                "resuming rollout"
            );
            let unpublished = match gates
                .policy
                .set_overlay(Some(overlay_of(&spec, &state)))
                .await
            {
                Ok(_) => false,
                Err(e) => {
                    tracing::error!(error = %e, "could not publish the resumed rollout's config; will retry");
                    true
                }
            };
            *gates.lock()? = Some(Current {
                window: Window::new(state.since_epoch, a.window_ms.saturating_mul(1_000_000)),
                spec,
                state,
                failures: 0,
                passing_since_ns: None,
                last: None,
                evaluations: 0,
                unpublished,
                timeline: Timeline::default(),
            });
        }
        Ok(gates)
    }

    fn lock(&self) -> Result<MutexGuard<'_, Option<Current>>, GatesError> {
        self.current
            .lock()
            .map_err(|_| GatesError::Internal("gates lock poisoned"))
    }

    fn store(&self) -> Result<MutexGuard<'_, GatesStore>, GatesError> {
        self.store
            .lock()
            .map_err(|_| GatesError::Internal("gates store lock poisoned"))
    }

    /// Count receipts just appended to the log (leaf `first_index` onwards).
    pub fn observe(&self, first_index: u64, receipts: &[Receipt]) {
        let now = now_ns();
        if let Ok(mut guard) = self.current.lock() {
            if let Some(cur) = guard.as_mut().filter(|c| !c.state.phase.is_terminal()) {
                cur.window.observe(now, first_index, receipts);
            }
        }
    }

    /// The current rollout's gauges, without its history (what telemetry reads at each
    /// collection): id, stable and candidate versions, canary weight, the last figures.
    pub fn readings(&self) -> Option<Readings> {
        let guard = self.current.lock().ok()?;
        let c = guard.as_ref()?;
        Some(Readings {
            id: c.spec.id.clone(),
            stable: c.spec.stable.clone(),
            candidate: c.spec.candidate.clone(),
            canary_percent: f64::from(c.state.canary_bp(&c.spec)) / 100.0,
            phase: c.state.phase,
            figures: c.last.as_ref().map(|(f, _)| *f),
        })
    }

    /// The current rollout's timeline (empty before any rollout), oldest first.
    pub fn timeline(&self) -> Vec<TimelinePoint> {
        self.current
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(|c| c.timeline.points()))
            .unwrap_or_default()
    }

    /// The current rollout's status.
    pub fn status(&self) -> Result<Option<Status>, GatesError> {
        let snapshot = {
            let guard = self.lock()?;
            guard.as_ref().map(|c| {
                (
                    c.spec.clone(),
                    c.state.clone(),
                    c.last.clone(),
                    c.failures,
                    c.passing_since_ns,
                    c.evaluations,
                )
            })
        };
        let Some((spec, state, last, failures, passing, evaluations)) = snapshot else {
            return Ok(None);
        };
        let history = self.store()?.history(&spec.id)?;
        let now = now_ns();
        Ok(Some(Status {
            gate: state.gate,
            step: state.step,
            phase: state.phase,
            canary_percent: f64::from(state.canary_bp(&spec)) / 100.0,
            serving_stable: if state.phase == Phase::Completed {
                spec.candidate.clone()
            } else {
                spec.stable.clone()
            },
            reason: state.reason.clone(),
            analysis: spec.analysis(&self.defaults),
            figures: last.as_ref().map(|(f, _)| *f),
            verdict: last.map(|(_, v)| v),
            consecutive_failures: failures,
            evaluations,
            passing_for_ms: passing.map_or(0, |p| now.saturating_sub(p) / 1_000_000),
            since_epoch: state.since_epoch,
            history,
            spec,
        }))
    }

    /// Start a rollout from its JSON document.
    pub async fn start(&self, body: &[u8]) -> Result<Status, GatesError> {
        let spec = RolloutSpec::from_json(body, &self.defaults)?;
        let _serial = self.serial.lock().await;
        if let Some(cur) = self.lock()?.as_ref() {
            if !cur.state.phase.is_terminal() {
                return Err(GatesError::Conflict(format!(
                    "rollout {:?} is {} in {}; finish or abort it first",
                    cur.spec.id,
                    cur.state.phase.as_str(),
                    cur.state.gate.as_str()
                )));
            }
        }
        if self.store()?.exists(&spec.id)? {
            return Err(GatesError::Conflict(format!(
                "rollout id {:?} was used before; pick a new id",
                spec.id
            )));
        }
        let now = now_ns();
        let state = RolloutState::start(spec.start_gate(&self.defaults), now);
        self.policy.preview_overlay(&overlay_of(&spec, &state))?;
        let item = self.history_item(&spec, &state, "start", Gate::Canary, "started");
        self.store()?.insert(&spec, &state, &item)?;
        let a = spec.analysis(&self.defaults);
        *self.lock()? = Some(Current {
            window: Window::new(u64::MAX, a.window_ms.saturating_mul(1_000_000)),
            spec: spec.clone(),
            state: state.clone(),
            failures: 0,
            passing_since_ns: None,
            last: None,
            evaluations: 0,
            unpublished: true,
            timeline: Timeline::default(),
        });
        self.commit("start", None, state, "started by operator".to_owned(), None)
            .await?;
        self.status()?
            .ok_or(GatesError::Internal("rollout vanished"))
    }

    /// Promote manually: to the next gate, or to `to`.
    pub async fn promote(&self, to: Option<Gate>, cause: &str) -> Result<Status, GatesError> {
        let _serial = self.serial.lock().await;
        let (spec, state) = self.live()?;
        let target = match to {
            Some(gate) => state.promotion_to(&spec, gate)?,
            None => state.next(&spec)?,
        };
        self.promote_locked(&spec, state, target, cause.to_owned(), None)
            .await?;
        self.status()?
            .ok_or(GatesError::Internal("rollout vanished"))
    }

    /// Stop automatic promotion (automatic rollback stays armed).
    pub async fn pause(&self) -> Result<Status, GatesError> {
        self.set_phase(Phase::Running, Phase::Paused, "pause", "paused by operator")
            .await
    }

    /// Resume automatic promotion.
    pub async fn resume(&self) -> Result<Status, GatesError> {
        self.set_phase(
            Phase::Paused,
            Phase::Running,
            "resume",
            "resumed by operator",
        )
        .await
    }

    /// Abort: all traffic back on stable, rollout flags off.
    pub async fn abort(&self, reason: &str) -> Result<Status, GatesError> {
        let _serial = self.serial.lock().await;
        let (spec, mut state) = self.live()?;
        let from = state.gate;
        state.phase = Phase::Aborted;
        state.reason = Some(reason.to_owned());
        let figures = self.last_figures();
        self.transition(&spec, from, state, "abort", reason.to_owned(), figures)
            .await?;
        self.status()?
            .ok_or(GatesError::Internal("rollout vanished"))
    }

    /// Turn a rollout flag off for everyone (recorded like a rollback).
    pub async fn disable_flag(&self, name: &str) -> Result<Status, GatesError> {
        let _serial = self.serial.lock().await;
        let (spec, mut state) = self.live()?;
        if !spec.flags.iter().any(|f| f.name == name) {
            return Err(GatesError::NotFound(format!(
                "rollout {:?} has no flag {name:?}",
                spec.id
            )));
        }
        if state.disabled_flags.iter().any(|f| f == name) {
            return Err(GatesError::InvalidTransition(format!(
                "flag {name:?} is already disabled"
            )));
        }
        state.disabled_flags.push(name.to_owned());
        let from = state.gate;
        let figures = self.last_figures();
        self.transition(
            &spec,
            from,
            state,
            "flag_disabled",
            format!("flag {name} disabled by operator"),
            figures,
        )
        .await?;
        self.status()?
            .ok_or(GatesError::Internal("rollout vanished"))
    }

    async fn set_phase(
        &self,
        from: Phase,
        to: Phase,
        action: &str,
        cause: &str,
    ) -> Result<Status, GatesError> {
        let _serial = self.serial.lock().await;
        let (spec, mut state) = self.live()?;
        if state.phase != from {
            return Err(GatesError::InvalidTransition(format!(
                "cannot {action}: the rollout is {}",
                state.phase.as_str()
            )));
        }
        state.phase = to;
        let gate = state.gate;
        let figures = self.last_figures();
        self.transition(&spec, gate, state, action, cause.to_owned(), figures)
            .await?;
        self.status()?
            .ok_or(GatesError::Internal("rollout vanished"))
    }

    fn live(&self) -> Result<(RolloutSpec, RolloutState), GatesError> {
        let guard = self.lock()?;
        let cur = guard
            .as_ref()
            .ok_or_else(|| GatesError::NotFound("no rollout has been started".to_owned()))?;
        cur.state.check_live("change it")?;
        Ok((cur.spec.clone(), cur.state.clone()))
    }

    fn last_figures(&self) -> Option<Figures> {
        self.current
            .lock()
            .ok()
            .and_then(|g| g.as_ref().and_then(|c| c.last.as_ref().map(|(f, _)| *f)))
    }

    async fn promote_locked(
        &self,
        spec: &RolloutSpec,
        mut state: RolloutState,
        target: Target,
        cause: String,
        figures: Option<Figures>,
    ) -> Result<(), GatesError> {
        let from = state.gate;
        state.gate = target.gate;
        state.step = target.step;
        state.since_ns = now_ns();
        if target.gate == Gate::Production {
            state.phase = Phase::Completed;
        }
        self.transition(spec, from, state, "promote", cause, figures)
            .await
    }

    fn history_item(
        &self,
        spec: &RolloutSpec,
        state: &RolloutState,
        action: &str,
        from: Gate,
        cause: &str,
    ) -> HistoryItem {
        HistoryItem {
            time_ns: now_ns(),
            action: action.to_owned(),
            from: from.as_str().to_owned(),
            to: state.gate.as_str().to_owned(),
            canary_basis_points: state.canary_bp(spec),
            epoch: 0,
            leaf_index: None,
            cause: cause.to_owned(),
        }
    }

    /// Persist, publish, log. Caller holds `serial`. Traced as `knhk.rollout.transition`.
    #[tracing::instrument(
        name = "knhk.rollout.transition",
        skip_all,
        fields(
            knhk.rollout.id = %spec.id,
            knhk.rollout.action = action,
            knhk.rollout.gate = state.gate.as_str(),
            knhk.rollout.weight = f64::from(state.canary_bp(spec)) / 100.0,
        )
    )]
    async fn transition(
        &self,
        spec: &RolloutSpec,
        from: Gate,
        state: RolloutState,
        action: &str,
        cause: String,
        figures: Option<Figures>,
    ) -> Result<(), GatesError> {
        let item = self.history_item(spec, &state, action, from, &cause);
        self.store()?.update(&spec.id, &state, Some(&item))?;
        let result = self
            .commit(action, Some(from), state.clone(), cause, figures)
            .await;
        if result.is_err() {
            // Persisted but not published: the evaluator publishes it on its next tick.
            if let Some(cur) = self.lock()?.as_mut() {
                cur.state = state;
                cur.unpublished = true;
            }
        }
        result
    }

    /// Publish the config of the persisted `state`, reset the analysis when the epoch moved,
    /// and log the signed event.
    async fn commit(
        &self,
        action: &str,
        from: Option<Gate>,
        mut state: RolloutState,
        cause: String,
        figures: Option<Figures>,
    ) -> Result<(), GatesError> {
        let spec = self
            .lock()?
            .as_ref()
            .map(|c| c.spec.clone())
            .ok_or(GatesError::Internal("rollout vanished"))?;
        let (epoch, changed) = self
            .policy
            .set_overlay(Some(overlay_of(&spec, &state)))
            .await?;
        if changed || state.since_epoch == 0 {
            state.since_epoch = epoch.epoch;
            self.store()?.update(&spec.id, &state, None)?;
        }
        tracing::info!(
            rollout = %spec.id,
            action,
            gate = state.gate.as_str(),
            phase = state.phase.as_str(),
            canary_basis_points = state.canary_bp(&spec),
            epoch = epoch.epoch,
            %cause,
            "rollout transition published"
        );
        let body = serde_json::to_string(&EventBody {
            rollout: &spec.id,
            action,
            from: from.unwrap_or(state.gate).as_str(),
            to: state.gate.as_str(),
            phase: state.phase.as_str(),
            stable: &spec.stable,
            candidate: &spec.candidate,
            canary_basis_points: state.canary_bp(&spec),
            epoch: epoch.epoch,
            cause: &cause,
            window: figures.as_ref(),
        })
        .map_err(|e| GatesError::Corrupt(e.to_string()))?;
        let time_ns = now_ns();
        let range = self
            .log
            .append_entries(&[LogEntry::RolloutEvent(RolloutEvent { time_ns, body })])?;
        self.store()?
            .set_published(&spec.id, epoch.epoch, range.start)?;
        if let Err(e) = self.log.seal(time_ns).await {
            tracing::error!(error = %e, "sealing the rollout event failed; the next seal covers it");
        }
        // Only now does the status show the new state: published, logged and sealed.
        let window_ns = spec
            .analysis(&self.defaults)
            .window_ms
            .saturating_mul(1_000_000);
        if let Some(cur) = self.lock()?.as_mut() {
            if cur.state.since_epoch != state.since_epoch || action == "start" {
                cur.window = Window::new(state.since_epoch, window_ns);
                cur.passing_since_ns = None;
                cur.failures = 0;
                cur.last = None;
                cur.evaluations = 0;
            }
            cur.state = state.clone();
            cur.unpublished = false;
            let percent = f64::from(state.canary_bp(&spec)) / 100.0;
            cur.timeline
                .transition(time_ns, percent, action, figures.as_ref());
        }
        Ok(())
    }
}
