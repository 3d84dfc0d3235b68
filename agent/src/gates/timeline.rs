//! The current rollout's recent evaluations and transitions, for the console's plots: the
//! canary weight and both versions' figures over time. Bounded and in memory; the persistent
//! record of transitions is the history in `gates.db` and the signed log.

use std::collections::VecDeque;

use serde::Serialize;

use super::analysis::{Figures, Verdict, VersionFigures};

/// Points kept at most (at one evaluation a second, ten minutes).
pub const MAX_POINTS: usize = 600;

/// Least time between two evaluation points; transitions are always kept.
pub const MIN_SPACING_NS: u64 = 1_000_000_000;

/// One point of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelinePoint {
    /// When, ns since the Unix epoch.
    pub time_ns: u64,
    /// Canary weight in force after this point, percent.
    pub canary_percent: f64,
    /// The evaluation's verdict (`pass`, `fail`, `inconclusive`); `None` at a transition.
    pub verdict: Option<&'static str>,
    /// The transition made here (`start`, `promote`, `rollback`, …); `None` at an evaluation.
    pub action: Option<String>,
    /// Stable's figures over the analysis window (absent at a transition without figures).
    pub stable: Option<VersionFigures>,
    /// The candidate's figures.
    pub candidate: Option<VersionFigures>,
}

/// The bounded timeline of one rollout.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    points: VecDeque<TimelinePoint>,
    last_evaluation_ns: Option<u64>,
}

impl Timeline {
    /// Record an evaluation at `time_ns`, unless one was recorded less than
    /// [`MIN_SPACING_NS`] before.
    pub fn evaluation(
        &mut self,
        time_ns: u64,
        canary_percent: f64,
        figures: &Figures,
        verdict: &Verdict,
    ) {
        if self
            .last_evaluation_ns
            .is_some_and(|t| time_ns.saturating_sub(t) < MIN_SPACING_NS)
        {
            return;
        }
        self.last_evaluation_ns = Some(time_ns);
        self.push(TimelinePoint {
            time_ns,
            canary_percent,
            verdict: Some(verdict.name()),
            action: None,
            stable: Some(figures.stable),
            candidate: Some(figures.candidate),
        });
    }

    /// Record the transition `action` at `time_ns`, after which the weight is `canary_percent`.
    pub fn transition(
        &mut self,
        time_ns: u64,
        canary_percent: f64,
        action: &str,
        figures: Option<&Figures>,
    ) {
        self.push(TimelinePoint {
            time_ns,
            canary_percent,
            verdict: None,
            action: Some(action.to_owned()),
            stable: figures.map(|f| f.stable),
            candidate: figures.map(|f| f.candidate),
        });
    }

    fn push(&mut self, point: TimelinePoint) {
        if self.points.len() == MAX_POINTS {
            self.points.pop_front();
        }
        self.points.push_back(point);
    }

    /// Every point kept, oldest first.
    pub fn points(&self) -> Vec<TimelinePoint> {
        self.points.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> Figures {
        let v = VersionFigures {
            samples: 10,
            errors: 1,
            success_rate: 0.9,
            p50_ms: 1.0,
            p99_ms: 2.0,
        };
        Figures {
            stable: v,
            candidate: v,
            first_index: Some(0),
            last_index: Some(9),
            window_ms: 1000,
        }
    }

    #[test]
    fn evaluations_are_spaced_and_transitions_always_kept() {
        let mut t = Timeline::default();
        let pass = Verdict::Pass { health: 1.0 };
        t.evaluation(0, 10.0, &figures(), &pass);
        t.evaluation(MIN_SPACING_NS - 1, 10.0, &figures(), &pass);
        t.transition(MIN_SPACING_NS - 1, 0.0, "rollback", Some(&figures()));
        t.evaluation(MIN_SPACING_NS, 0.0, &figures(), &pass);
        let points = t.points();
        assert_eq!(points.len(), 3, "{points:?}");
        assert_eq!(points[0].verdict, Some("pass"));
        assert_eq!(points[1].action.as_deref(), Some("rollback"));
        assert_eq!(points[1].canary_percent, 0.0);
        assert_eq!(points[2].time_ns, MIN_SPACING_NS);
    }

    #[test]
    fn the_oldest_points_make_room() {
        let mut t = Timeline::default();
        for i in 0..(MAX_POINTS as u64 + 5) {
            t.transition(i, 1.0, "promote", None);
        }
        let points = t.points();
        assert_eq!(points.len(), MAX_POINTS);
        assert_eq!(points[0].time_ns, 5);
    }
}
