//! The shared per-class admission state: a ring of time slices of latency counts plus the shed level.
//!
//! "p99 > budget" is decided exactly from counts, not from a histogram: the p99 of n samples
//! exceeds the budget iff more than 1 % of the samples exceed it. So a slice only needs three
//! counters (samples, samples over budget, samples over the recovery threshold), which merge
//! exactly across workers by addition. That is what lets every Envoy worker publish its
//! observations into one shared-data entry and read back the same shed level.

use crate::limits::SLICES;
use crate::policy::ClassBudget;

const FORMAT_VERSION: u8 = 1;
const SLICE_BYTES: usize = 8 + 4 + 4 + 4;
/// Encoded size: version, budget, window, level, last evaluation, slices.
pub const ENCODED_LEN: usize = 1 + 8 + 4 + 2 + 8 + SLICES * SLICE_BYTES;

/// Latency counts observed during one slice of time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SliceCounts {
    /// Absolute slice number (`now_ms / slice_ms`); identifies which period the counts belong to.
    pub slot: u64,
    /// Samples.
    pub total: u32,
    /// Samples strictly over the p99 budget.
    pub over_budget: u32,
    /// Samples at or over the recovery threshold (`recover_ratio × budget`).
    pub over_recover: u32,
}

/// Counts of samples not yet published to the shared state (one worker's delta).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// Samples.
    pub total: u32,
    /// Samples strictly over budget.
    pub over_budget: u32,
    /// Samples at or over the recovery threshold.
    pub over_recover: u32,
}

impl Sample {
    /// Count one latency observation against a budget.
    pub fn record(&mut self, latency_ns: u64, budget: &ClassBudget) {
        self.total = self.total.saturating_add(1);
        if latency_ns > budget.p99_max_ns {
            self.over_budget = self.over_budget.saturating_add(1);
        }
        if latency_ns >= budget.recover_below_ns {
            self.over_recover = self.over_recover.saturating_add(1);
        }
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

/// Totals over the live slices of a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowTotals {
    /// Samples in the window.
    pub total: u64,
    /// Samples over budget.
    pub over_budget: u64,
    /// Samples at or over the recovery threshold.
    pub over_recover: u64,
}

impl WindowTotals {
    /// p99 strictly above the budget: more than 1 % of samples over it.
    pub fn p99_over_budget(&self) -> bool {
        self.over_budget.saturating_mul(100) > self.total
    }

    /// p99 below the recovery threshold: at most 1 % of samples at or over it.
    pub fn p99_recovered(&self) -> bool {
        self.over_recover.saturating_mul(100) <= self.total
    }
}

/// The state of one class, shared by all workers of an Envoy (one shared-data entry per class).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassWindow {
    /// Budget the counts were taken against; a change of budget resets the window.
    pub budget_ns: u64,
    /// Window length the slices were cut for; a change resets the window.
    pub window_ms: u32,
    /// Current shed level in basis points of the class's priority buckets.
    pub level_bp: u16,
    /// When the level was last evaluated (host clock, ms).
    pub last_eval_ms: u64,
    /// The slice ring, indexed by `slot % SLICES`.
    pub slices: [SliceCounts; SLICES],
}

impl ClassWindow {
    /// An empty window for a budget.
    pub fn new(budget: &ClassBudget) -> Self {
        ClassWindow {
            budget_ns: budget.p99_max_ns,
            window_ms: budget.window_ms,
            level_bp: 0,
            last_eval_ms: 0,
            slices: [SliceCounts::default(); SLICES],
        }
    }

    /// Whether this state was built for `budget` (otherwise it must be reset).
    pub fn matches(&self, budget: &ClassBudget) -> bool {
        self.budget_ns == budget.p99_max_ns && self.window_ms == budget.window_ms
    }

    fn slice_ms(&self) -> u64 {
        (u64::from(self.window_ms) / SLICES as u64).max(1)
    }

    /// Add a worker's unpublished counts to the slice of `now_ms`.
    pub fn add(&mut self, sample: &Sample, now_ms: u64) {
        let slot = now_ms / self.slice_ms();
        let cell = &mut self.slices[(slot % SLICES as u64) as usize];
        if cell.slot != slot {
            *cell = SliceCounts {
                slot,
                ..SliceCounts::default()
            };
        }
        cell.total = cell.total.saturating_add(sample.total);
        cell.over_budget = cell.over_budget.saturating_add(sample.over_budget);
        cell.over_recover = cell.over_recover.saturating_add(sample.over_recover);
    }

    /// Totals over the slices inside the window ending at `now_ms`.
    pub fn totals(&self, now_ms: u64) -> WindowTotals {
        let current = now_ms / self.slice_ms();
        let oldest = current.saturating_sub(SLICES as u64 - 1);
        self.slices
            .iter()
            .filter(|s| s.total > 0 && s.slot >= oldest && s.slot <= current)
            .fold(WindowTotals::default(), |acc, s| WindowTotals {
                total: acc.total + u64::from(s.total),
                over_budget: acc.over_budget + u64::from(s.over_budget),
                over_recover: acc.over_recover + u64::from(s.over_recover),
            })
    }

    /// Serialize to the fixed little-endian layout stored in shared data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED_LEN);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.budget_ns.to_le_bytes());
        out.extend_from_slice(&self.window_ms.to_le_bytes());
        out.extend_from_slice(&self.level_bp.to_le_bytes());
        out.extend_from_slice(&self.last_eval_ms.to_le_bytes());
        for s in &self.slices {
            out.extend_from_slice(&s.slot.to_le_bytes());
            out.extend_from_slice(&s.total.to_le_bytes());
            out.extend_from_slice(&s.over_budget.to_le_bytes());
            out.extend_from_slice(&s.over_recover.to_le_bytes());
        }
        out
    }

    /// Parse the stored layout; `None` for anything of the wrong size or version (callers reset).
    pub fn decode(bytes: &[u8]) -> Option<ClassWindow> {
        if bytes.len() != ENCODED_LEN || bytes[0] != FORMAT_VERSION {
            return None;
        }
        let mut r = Reader { bytes, at: 1 };
        let budget_ns = r.u64()?;
        let window_ms = r.u32()?;
        let level_bp = r.u16()?;
        let last_eval_ms = r.u64()?;
        let mut slices = [SliceCounts::default(); SLICES];
        for s in slices.iter_mut() {
            *s = SliceCounts {
                slot: r.u64()?,
                total: r.u32()?,
                over_budget: r.u32()?,
                over_recover: r.u32()?,
            };
        }
        if level_bp > crate::bucket::BUCKETS {
            return None;
        }
        Some(ClassWindow {
            budget_ns,
            window_ms,
            level_bp,
            last_eval_ms,
            slices,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let chunk = self.bytes.get(self.at..self.at + N)?;
        self.at += N;
        let mut out = [0u8; N];
        out.copy_from_slice(chunk);
        Some(out)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take::<8>().map(u64::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take::<2>().map(u16::from_le_bytes)
    }
}
