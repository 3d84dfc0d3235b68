//! The admission panel: the share of requests shed and degraded per class in each capacity
//! window, plotted, and the newest window's counts.

import { TimeChart } from "../charts";
import { byId, meter, row, setRows, setText } from "../dom";
import { count, percent } from "../format";
import type { ConsoleState } from "../state";

const CLASSES = ["R1", "W1", "C1"] as const;
const COLOURS = { R1: "#dc2626", W1: "#d97706", C1: "#2563eb" } as const;

/** The panel, created once; `render` on every poll. */
export class AdmissionPanel {
  private readonly chart: TimeChart;

  constructor() {
    this.chart = new TimeChart(byId("chart-admission"), {
      lines: [
        ...CLASSES.map((c) => ({ label: `${c} shed`, stroke: COLOURS[c] })),
        ...CLASSES.map((c) => ({ label: `${c} degraded`, stroke: COLOURS[c], dash: true })),
      ],
      value: (v) => `${(v * 100).toFixed(1)} %`,
      // From 0, at least to 5 % so a quiet mesh reads as quiet, at most 100 %.
      range: (_min, max) => [0, Math.min(1, Math.max(0.05, max * 1.2))],
    });
  }

  /** Show the admission windows of `state`. */
  render(state: ConsoleState): void {
    const points = state.admission.points;
    setText("admission-window", `${state.admission.window_s} s windows, ${points.length} kept`);
    const share = (n: number, d: number) => (d > 0 ? n / d : null);
    const of = (c: string, f: "shed" | "degraded") =>
      points.map((p) => {
        const k = p.classes.find((x) => x.class === c);
        return k ? share(k[f], k.requests) : null;
      });
    this.chart.update(
      points.map((p) => (p.start_ns + state.admission.window_s * 1e9) / 1e9),
      [...CLASSES.map((c) => of(c, "shed")), ...CLASSES.map((c) => of(c, "degraded"))],
    );
    const newest = points[points.length - 1];
    setRows(
      "admission-rows",
      CLASSES.map((c) => {
        const k = newest?.classes.find((x) => x.class === c);
        const requests = k?.requests ?? 0;
        const shed = k?.shed ?? 0;
        const degraded = k?.degraded ?? 0;
        return row([
          c,
          count(requests),
          requests ? percent(shed / requests) : "—",
          meter(shed, requests, `${count(shed)} of ${count(requests)} shed`, 0.0001),
          requests ? percent(degraded / requests) : "—",
        ]);
      }),
    );
  }
}
