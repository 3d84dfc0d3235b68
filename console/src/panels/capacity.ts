//! The capacity panel: per class and route, the current rate against the budget and
//! saturation rates, the headroom and forecast (or why there is none), hot-key concentration,
//! and the analysis' recommendations.

import { byId, el, meter, row, setRows, setText } from "../dom";
import { duration, ms, percent, rps } from "../format";
import type { ConsoleState, KeyShare, Series } from "../state";

function headroom(s: Series): (string | HTMLElement)[] {
  const served = s.now?.served_rps ?? 0;
  if (s.model.status !== "fitted") return ["—", "—", el("span", s.model.reason, "muted")];
  const m = s.model;
  const budget = m.budget_rps;
  const cells: (string | HTMLElement)[] = [
    budget === null ? "over budget at any load" : rps(budget),
    rps(m.saturation_rps),
  ];
  if (budget === null) {
    cells.push(el("span", "the service time alone exceeds the budget", "bad"));
    return cells;
  }
  const wrap = el("span");
  wrap.append(
    meter(served, budget, `${rps(served)} of ${rps(budget)}`, 0.8 * budget),
    el("span", ` ${m.headroom_factor === null ? "—" : `${m.headroom_factor.toFixed(1)}×`} headroom`),
  );
  if (s.forecast?.budget_in_s != null) {
    wrap.append(el("span", `, budget in ${duration(s.forecast.budget_in_s)}`, "warn"));
  }
  cells.push(wrap);
  return cells;
}

function share(id: string, k: KeyShare): void {
  const e = byId(id);
  e.replaceChildren(
    meter(k.top_share, 1, `${percent(k.top_share)} of ${k.requests} requests`, 0.1),
    el("span", ` top keys ${percent(k.top_share)} of ${k.requests} requests, ~${k.distinct_keys} keys`),
  );
  e.classList.toggle("warn", k.skewed);
}

/** Show the capacity figures of `state`. */
export function renderCapacity(state: ConsoleState): void {
  const c = state.capacity;
  setText("capacity-window", `${c.windows} ${c.windows === 1 ? "window" : "windows"} of ${c.window_s} s`);
  setRows(
    "capacity-rows",
    c.series.map((s) =>
      row([
        s.class,
        s.version ? `${s.route} (${s.version})` : s.route,
        ms(s.budget_ms),
        s.now ? rps(s.now.rate_rps) : "—",
        s.now ? ms(s.now.p99_ms) : "—",
        ...headroom(s),
      ]),
    ),
  );
  setText("capacity-none", c.series.length ? "" : "No traffic analysed yet.");
  share("hot-all", c.hot_keys.all);
  share("hot-canary", c.hot_keys.canary);
  byId("recommendations").replaceChildren(...c.recommendations.map((r) => el("li", r)));
}
