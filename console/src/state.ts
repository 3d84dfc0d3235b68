//! The shape of `GET /v1/console/state` (agent/src/console/view.rs), read-only.

/** One version's figures over the analysis window. */
export interface VersionFigures {
  samples: number;
  errors: number;
  success_rate: number;
  p50_ms: number;
  p99_ms: number;
}

/** One point of the rollout's timeline: an evaluation (`verdict`) or a transition (`action`). */
export interface TimelinePoint {
  time_ns: number;
  canary_percent: number;
  verdict: string | null;
  action: string | null;
  stable: VersionFigures | null;
  candidate: VersionFigures | null;
}

/** One transition of the rollout, as `gates.db` and the signed log record it. */
export interface HistoryItem {
  time_ns: number;
  action: string;
  from: string;
  to: string;
  canary_basis_points: number;
  epoch: number;
  leaf_index: number | null;
  cause: string;
}

/** The analysis settings in force. */
export interface Analysis {
  interval_ms: number;
  window_ms: number;
  pass_for_ms: number;
  min_samples: number;
  min_success_rate: number | null;
  max_p99_ms: number | null;
  max_p99_ratio: number | null;
  min_health: number | null;
  failure_threshold: number;
}

/** The current rollout. */
export interface Rollout {
  spec: { id: string; stable: string; candidate: string; steps: number[]; auto_promote: boolean };
  gate: string;
  step: number;
  phase: string;
  canary_percent: number;
  serving_stable: string;
  reason: string | null;
  analysis: Analysis;
  verdict: unknown;
  consecutive_failures: number;
  evaluations: number;
  passing_for_ms: number;
  since_epoch: number;
  history: HistoryItem[];
  timeline: TimelinePoint[];
}

/** Admission counts of one class in one window. */
export interface ClassAdmission {
  class: string;
  requests: number;
  shed: number;
  degraded: number;
}

/** One capacity window's admission counts. */
export interface AdmissionWindow {
  start_ns: number;
  classes: ClassAdmission[];
}

/** The load–latency model of a series, or why there is none. */
export type Model =
  | {
      status: "fitted";
      servers: number;
      service_ms: number;
      saturation_rps: number;
      budget_rps: number | null;
      headroom_factor: number | null;
      headroom_rps: number | null;
      windows: number;
    }
  | { status: "insufficient_data"; reason: string };

/** One class on one route. */
export interface Series {
  class: string;
  route: string;
  version: string | null;
  budget_ms: number;
  now: {
    rate_rps: number;
    served_rps: number;
    p50_ms: number;
    p99_ms: number;
    shed_share: number;
    error_share: number;
  } | null;
  model: Model;
  forecast: { trend_percent_per_hour: number; budget_in_s: number | null } | null;
}

/** One stream's key concentration. */
export interface KeyShare {
  requests: number;
  top_share: number;
  skewed: boolean;
  distinct_keys: number;
}

/** One signed checkpoint. */
export interface CheckpointView {
  tree_size: number;
  time_ns: number;
  root_hash: string;
  provider: string;
  key_id: string;
  key_version: number;
}

/** One peer region. */
export interface PeerView {
  region: string;
  acked_size: number;
  healthy: boolean;
  time_ns: number;
}

/** The cross-region quorum. */
export interface QuorumView {
  region: string;
  threshold: number;
  regions: string[];
  latest_size: number;
  up_to_date: boolean;
  latest_committed_size: number | null;
  latest_committed_ns: number | null;
  peers: PeerView[];
}

/** The whole document. */
export interface ConsoleState {
  generated_at_ns: number;
  origin: string;
  actions_need_token: boolean;
  verifier: boolean;
  rollout: Rollout | null;
  admission: { window_s: number; points: AdmissionWindow[] };
  capacity: {
    window_s: number;
    windows: number;
    series: Series[];
    hot_keys: { all: KeyShare; canary: KeyShare };
    recommendations: string[];
  };
  log: { tree_size: number; checkpoints: CheckpointView[]; quorum: QuorumView | null };
  keys: {
    provider: string;
    key_id: string;
    key_version: number | null;
    in_use_since_ns: number;
    rotation_interval_s: number;
    next_rotation_ns: number;
  };
}
