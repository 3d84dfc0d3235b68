//! Admission control per runtime class: local sampling, cross-worker aggregation, shed levels.
//!
//! Each worker (one wasm VM per Envoy worker thread) records latencies into a local [`Sample`]
//! per class, at no host cost. On its timer tick it calls [`AdmissionCoordinator::sync`], which
//! merges the local counts into the class's shared entry with compare-and-swap, evaluates the
//! controller when due (whichever worker gets there first; the CAS makes it happen once), and
//! reads back the shared shed level. All workers therefore apply the same level, at most one
//! tick late, and shed the same priority buckets.

mod controller;
mod sampler;
mod window;

pub use controller::{evaluate, Step};
pub use sampler::LatencySampler;
pub use window::{ClassWindow, Sample, SliceCounts, WindowTotals, ENCODED_LEN};

use crate::class::Class;
use crate::host::{CasOutcome, HostError, SharedStore};
use crate::policy::Policy;

/// CAS attempts per class per sync before giving up until the next tick (counts are kept).
pub const MAX_CAS_ATTEMPTS: u32 = 8;

/// Shed levels (basis points) indexed by [`Class::index`].
pub type ShedLevels = [u16; 3];

/// Shared-data key of a class's state.
pub fn shared_key(class: Class) -> &'static str {
    match class {
        Class::R1 => "knhk.admission.R1",
        Class::W1 => "knhk.admission.W1",
        Class::C1 => "knhk.admission.C1",
    }
}

/// What a sync observed, for stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassReport {
    /// Shed level now in force, basis points.
    pub level_bp: u16,
    /// Window totals at the time of the sync.
    pub totals: WindowTotals,
    /// Set when this worker ran the evaluation.
    pub evaluated: Option<Step>,
}

/// Outcome of a sync over all classes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Per class, indexed by [`Class::index`].
    pub classes: [ClassReport; 3],
    /// Classes whose CAS attempts ran out (their counts stay local for the next tick).
    pub contended: u32,
}

/// One worker's admission state: unpublished samples and the last shed levels it read.
#[derive(Debug, Clone, Default)]
pub struct AdmissionCoordinator {
    pending: [Sample; 3],
    levels: ShedLevels,
}

impl AdmissionCoordinator {
    /// A coordinator with nothing recorded and all levels at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record one completed request's latency under its (final) class. Pure VM-memory work.
    pub fn record(&mut self, policy: &Policy, class: Class, latency_ns: u64) {
        self.pending[class.index()].record(latency_ns, policy.budget(class));
    }

    /// Current shed levels as last read from the shared state.
    pub fn levels(&self) -> ShedLevels {
        self.levels
    }

    /// Publish pending samples, evaluate when due, and read back the shared levels.
    pub fn sync(
        &mut self,
        store: &dyn SharedStore,
        policy: &Policy,
        now_ms: u64,
    ) -> Result<SyncReport, HostError> {
        let mut report = SyncReport::default();
        for class in Class::ALL {
            let i = class.index();
            match self.sync_class(store, policy, class, now_ms)? {
                Some(class_report) => {
                    self.pending[i] = Sample::default();
                    self.levels[i] = class_report.level_bp;
                    report.classes[i] = class_report;
                }
                None => {
                    report.contended += 1;
                    report.classes[i].level_bp = self.levels[i];
                }
            }
        }
        Ok(report)
    }

    fn sync_class(
        &self,
        store: &dyn SharedStore,
        policy: &Policy,
        class: Class,
        now_ms: u64,
    ) -> Result<Option<ClassReport>, HostError> {
        let key = shared_key(class);
        let budget = policy.budget(class);
        let pending = &self.pending[class.index()];
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (bytes, cas) = store.get(key)?;
            let mut state = bytes
                .as_deref()
                .and_then(ClassWindow::decode)
                .filter(|s| s.matches(budget))
                .unwrap_or_else(|| ClassWindow::new(budget));
            if !pending.is_empty() {
                state.add(pending, now_ms);
            }
            let step = evaluate(&mut state, budget, policy, now_ms);
            let evaluated = (step != Step::NotDue).then_some(step);
            let report = ClassReport {
                level_bp: state.level_bp,
                totals: state.totals(now_ms),
                evaluated,
            };
            if pending.is_empty() && evaluated.is_none() && bytes.is_some() {
                // Nothing to write: a read of the shared level is enough.
                return Ok(Some(report));
            }
            match store.set(key, &state.encode(), cas)? {
                CasOutcome::Stored => return Ok(Some(report)),
                CasOutcome::Conflict => continue,
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests;
