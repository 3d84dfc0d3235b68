//! The rollout panel: where it is and why, the step ladder, the buttons, the plots of the
//! weight and of both versions' success rate and p99 with their thresholds, and the history.

import { act, type Action } from "../agent";
import { type Line, TimeChart } from "../charts";
import { badge, byId, el, row, setRows, setText, show } from "../dom";
import { clock, ms, percent, plain } from "../format";
import type { Rollout, TimelinePoint } from "../state";

const STABLE = "#2563eb";
const CANDIDATE = "#d97706";
const THRESHOLD = "#dc2626";
const TRANSITION = "#7c3aed";

/** Which buttons each phase allows (the agent decides; this only spares a refusal). */
const ALLOWED: Record<Action, string[]> = {
  promote: ["running", "paused"],
  pause: ["running"],
  resume: ["paused"],
  abort: ["running", "paused"],
};

/** How long the abort button waits for its confirmation. */
const CONFIRM_MS = 5000;

/** The two versions' lines of an analysis plot. */
function versionLines(): Line[] {
  return [
    { label: "stable", stroke: STABLE },
    { label: "candidate", stroke: CANDIDATE },
  ];
}

/** The panel, created once; `render` on every poll. */
export class RolloutPanel {
  private readonly weight: TimeChart;
  private success: TimeChart;
  private p99: TimeChart;
  private successThreshold: number | null = null;
  private p99Threshold: number | null = null;
  private phase = "";
  private abortArmed: number | null = null;
  private busy = false;

  constructor(private readonly refresh: () => void) {
    this.weight = new TimeChart(byId("chart-weight"), {
      lines: [
        { label: "canary weight", stroke: CANDIDATE, stepped: true },
        { label: "transition", stroke: TRANSITION, pointsOnly: true },
      ],
      value: (v) => `${plain(v)} %`,
      range: [0, 100],
    });
    this.success = this.successChart(null);
    this.p99 = this.p99Chart(null);
    for (const action of Object.keys(ALLOWED) as Action[]) {
      byId<HTMLButtonElement>(`btn-${action}`).addEventListener("click", () => {
        void this.clicked(action);
      });
    }
  }

  private successChart(threshold: number | null): TimeChart {
    byId("chart-success").replaceChildren();
    const lines = versionLines();
    if (threshold !== null) {
      lines.push({ label: `min ${percent(threshold)}`, stroke: THRESHOLD, dash: true });
    }
    return new TimeChart(byId("chart-success"), {
      lines,
      value: (v) => `${(v * 100).toFixed(1)} %`,
    });
  }

  private p99Chart(threshold: number | null): TimeChart {
    byId("chart-p99").replaceChildren();
    const lines = versionLines();
    if (threshold !== null) {
      lines.push({ label: `max ${ms(threshold)}`, stroke: THRESHOLD, dash: true });
    }
    return new TimeChart(byId("chart-p99"), { lines, value: (v) => ms(v) });
  }

  private async clicked(action: Action): Promise<void> {
    if (this.busy) return;
    const body: Record<string, string> = {};
    if (action === "abort") {
      if (this.abortArmed === null) {
        setText("btn-abort", "Confirm abort");
        byId("btn-abort").classList.add("armed");
        this.abortArmed = window.setTimeout(() => this.disarm(), CONFIRM_MS);
        return;
      }
      this.disarm();
      const reason = byId<HTMLInputElement>("abort-reason").value.trim();
      if (reason) body["reason"] = reason;
    }
    this.busy = true;
    const result = byId("action-result");
    delete result.dataset["outcome"];
    result.textContent = `${action}…`;
    const outcome = await act(action, body);
    this.busy = false;
    result.textContent = outcome.message;
    result.dataset["outcome"] = outcome.ok ? "ok" : "error";
    this.refresh();
  }

  private disarm(): void {
    if (this.abortArmed !== null) window.clearTimeout(this.abortArmed);
    this.abortArmed = null;
    setText("btn-abort", "Abort");
    byId("btn-abort").classList.remove("armed");
  }

  /** Show `rollout` (or that there is none). */
  render(rollout: Rollout | null): void {
    show("rollout-empty", rollout === null);
    show("rollout-body", rollout !== null);
    if (!rollout) {
      this.phase = "";
      this.buttons();
      return;
    }
    setText("rollout-id", rollout.spec.id);
    setText("rollout-stable", rollout.spec.stable);
    setText("rollout-candidate", rollout.spec.candidate);
    setText("rollout-serving", rollout.serving_stable);
    setText("rollout-gate", rollout.gate);
    setText("rollout-phase", rollout.phase);
    byId("rollout-phase").className = `badge badge-${rollout.phase}`;
    setText("canary-percent", plain(rollout.canary_percent));
    setText("rollout-reason", rollout.reason ?? "");
    show("rollout-reason-row", rollout.reason !== null);
    const a = rollout.analysis;
    setText(
      "rollout-failures",
      `${rollout.consecutive_failures} of ${a.failure_threshold} failed evaluations in a row`,
    );
    setText(
      "rollout-passing",
      rollout.passing_for_ms > 0
        ? `passing for ${(rollout.passing_for_ms / 1000).toFixed(1)} s of ${(a.pass_for_ms / 1000).toFixed(1)} s`
        : `${rollout.evaluations} evaluations`,
    );
    this.ladder(rollout);
    this.phase = rollout.phase;
    this.buttons();
    this.plots(rollout);
    setRows(
      "history",
      rollout.history.map((h) =>
        row([
          clock(h.time_ns),
          badge(h.action, h.action),
          h.from === h.to ? h.to : `${h.from} → ${h.to}`,
          `${plain(h.canary_basis_points / 100)} %`,
          h.cause,
          String(h.epoch),
          h.leaf_index === null ? "—" : String(h.leaf_index),
        ]),
      ),
    );
  }

  private ladder(rollout: Rollout): void {
    const live = rollout.phase === "running" || rollout.phase === "paused";
    const items = rollout.spec.steps.map((s, i) => {
      const cls = !live ? "step" : i < rollout.step ? "step done" : i === rollout.step ? "step current" : "step";
      return el("li", `${plain(s)} %`, cls);
    });
    byId("rollout-steps").replaceChildren(...items);
  }

  private buttons(): void {
    for (const action of Object.keys(ALLOWED) as Action[]) {
      const b = byId<HTMLButtonElement>(`btn-${action}`);
      const enabled = !this.busy && ALLOWED[action].includes(this.phase);
      if (b.disabled === enabled) b.disabled = !enabled;
    }
    if (!ALLOWED.abort.includes(this.phase)) this.disarm();
  }

  private plots(rollout: Rollout): void {
    const a = rollout.analysis;
    if (a.min_success_rate !== this.successThreshold) {
      this.successThreshold = a.min_success_rate;
      this.success = this.successChart(a.min_success_rate);
    }
    if (a.max_p99_ms !== this.p99Threshold) {
      this.p99Threshold = a.max_p99_ms;
      this.p99 = this.p99Chart(a.max_p99_ms);
    }
    const points: TimelinePoint[] = rollout.timeline;
    const x = points.map((p) => p.time_ns / 1e9);
    this.weight.update(x, [
      points.map((p) => p.canary_percent),
      points.map((p) => (p.action ? p.canary_percent : null)),
    ]);
    const figure = (p: TimelinePoint, side: "stable" | "candidate", f: "success_rate" | "p99_ms") => {
      const v = p[side];
      return v && v.samples > 0 ? v[f] : null;
    };
    const withThreshold = (lines: (number | null)[][], t: number | null) =>
      t === null ? lines : [...lines, points.map(() => t)];
    this.success.update(
      x,
      withThreshold(
        [points.map((p) => figure(p, "stable", "success_rate")), points.map((p) => figure(p, "candidate", "success_rate"))],
        a.min_success_rate,
      ),
    );
    this.p99.update(
      x,
      withThreshold(
        [points.map((p) => figure(p, "stable", "p99_ms")), points.map((p) => figure(p, "candidate", "p99_ms"))],
        a.max_p99_ms,
      ),
    );
  }
}
