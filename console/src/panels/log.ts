//! The receipt-log panel (tree size, newest checkpoints, the cross-region quorum) and the
//! keys panel (the signing key and its rotation).

import { badge, byId, el, meter, row, setRows, setText, show } from "../dom";
import { count, dateTime, duration, relative } from "../format";
import type { ConsoleState } from "../state";

/** Show the receipt log of `state`. */
export function renderLog(state: ConsoleState): void {
  const log = state.log;
  setText("log-size", count(log.tree_size));
  setText("log-origin", state.origin);
  setRows(
    "checkpoints",
    log.checkpoints.map((c) =>
      row([
        count(c.tree_size),
        relative(c.time_ns, state.generated_at_ns),
        `${c.provider} ${c.key_id} v${c.key_version}`,
        el("code", c.root_hash.slice(0, 16) + "…"),
      ]),
    ),
  );
  const q = log.quorum;
  show("quorum", q !== null);
  show("quorum-none", q === null);
  if (!q) return;
  setText("quorum-rule", `${q.threshold} of ${q.regions.length} regions sign each checkpoint`);
  byId("quorum-state").replaceChildren(
    q.up_to_date
      ? badge(`newest checkpoint (${count(q.latest_size)}) committed`, "ok")
      : badge(
          `newest checkpoint (${count(q.latest_size)}) waiting; committed: ${
            q.latest_committed_size === null ? "none" : count(q.latest_committed_size)
          }`,
          "warn",
        ),
  );
  setRows("quorum-rows", [
    row([q.region, "this region", count(q.latest_size), "—"]),
    ...q.peers.map((p) =>
      row([
        p.region,
        p.healthy ? badge("reachable", "ok") : badge("failing", "bad"),
        (() => {
          const w = el("span");
          w.append(meter(p.acked_size, q.latest_size, `${p.acked_size} of ${q.latest_size}`), el("span", ` ${count(p.acked_size)}`));
          return w;
        })(),
        relative(p.time_ns, state.generated_at_ns),
      ]),
    ),
  ]);
}

/** Show the signing key of `state`. */
export function renderKeys(state: ConsoleState): void {
  const k = state.keys;
  setText("key-provider", k.provider);
  setText("key-id", k.key_id);
  setText("key-version", k.key_version === null ? "—" : String(k.key_version));
  setText("key-since", `${dateTime(k.in_use_since_ns)} (${relative(k.in_use_since_ns, state.generated_at_ns)})`);
  setText("key-next", `${dateTime(k.next_rotation_ns)} (${relative(k.next_rotation_ns, state.generated_at_ns)})`);
  const age = (state.generated_at_ns - k.in_use_since_ns) / 1e9;
  byId("key-age").replaceChildren(
    meter(age, k.rotation_interval_s, `${duration(age)} of ${duration(k.rotation_interval_s)}`, 0.9 * k.rotation_interval_s),
    el("span", ` ${duration(Math.max(age, 0))} of the ${duration(k.rotation_interval_s)} rotation interval`),
  );
}
