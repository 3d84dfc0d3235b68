//! Time-series plots with uPlot: one chart per container, resized with it, fed with
//! `update()` on every poll (no re-creation, so the page stays smooth at a poll a second).

import uPlot from "uplot";

/** One line of a chart. */
export interface Line {
  /** Legend label. */
  label: string;
  /** Stroke colour. */
  stroke: string;
  /** Dashed (thresholds). */
  dash?: boolean;
  /** Draw as steps (weights change in steps). */
  stepped?: boolean;
  /** Markers only, no line (transitions). */
  pointsOnly?: boolean;
}

/** A chart's lines and value formatting. */
export interface ChartSpec {
  lines: Line[];
  /** How the y values read on the axis and in the legend. */
  value: (v: number) => string;
  /** The y range: fixed, or computed from the data's extent; auto otherwise. */
  range?: [number, number] | ((min: number, max: number) => [number, number]);
}

const HEIGHT = 190;

/** A uPlot time chart that lives in one container. */
export class TimeChart {
  private readonly plot: uPlot;
  private readonly empty: HTMLElement;
  private readonly container: HTMLElement;

  constructor(container: HTMLElement, spec: ChartSpec) {
    this.container = container;
    const series: uPlot.Series[] = [
      {},
      ...spec.lines.map((l): uPlot.Series => {
        const s: uPlot.Series = {
          label: l.label,
          stroke: l.stroke,
          width: l.dash ? 1 : 2,
          spanGaps: true,
          value: (_u, v) => (v === null || v === undefined ? "—" : spec.value(v)),
        };
        if (l.dash) s.dash = [6, 4];
        if (l.stepped) s.paths = uPlot.paths.stepped!({ align: 1 });
        if (l.pointsOnly) {
          s.paths = () => null;
          s.points = { show: true, size: 9, fill: l.stroke, stroke: l.stroke };
        } else {
          s.points = { show: false };
        }
        return s;
      }),
    ];
    const range = spec.range;
    const y: uPlot.Scale =
      typeof range === "function"
        ? { range: (_u, min, max) => range(min, max) }
        : range
          ? { range }
          : {};
    // One point has no extent: show a minute around it rather than uPlot's years.
    const x: uPlot.Scale = {
      time: true,
      range: (_u, min, max) => (min === max ? [min - 30, max + 30] : [min, max]),
    };
    const opts: uPlot.Options = {
      width: Math.max(container.clientWidth, 200),
      height: HEIGHT,
      series,
      scales: { x, y },
      axes: [
        { stroke: "#586069", grid: { stroke: "#eaecef" } },
        {
          stroke: "#586069",
          grid: { stroke: "#eaecef" },
          size: 64,
          values: (_u, ticks) => ticks.map((t) => spec.value(t)),
        },
      ],
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
    };
    this.plot = new uPlot(opts, [[]], container);
    this.empty = document.createElement("p");
    this.empty.className = "chart-empty";
    this.empty.textContent = "no data yet";
    container.prepend(this.empty);
    container.classList.add("no-data");
    new ResizeObserver(() => {
      const width = Math.max(container.clientWidth, 200);
      if (width !== this.plot.width) this.plot.setSize({ width, height: HEIGHT });
    }).observe(container);
  }

  /** Replace the data: `x` in seconds since the epoch, one array per line. */
  update(x: number[], lines: (number | null)[][]): void {
    this.plot.setData([x, ...lines] as uPlot.AlignedData);
    // Until there is a point, say so instead of drawing empty axes.
    this.container.classList.toggle("no-data", x.length === 0);
  }
}
