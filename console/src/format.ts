//! How figures read: times, durations, rates and shares.

/** A number as the agent sent it, without a trailing `.0` (`10`, `12.5`). */
export function plain(n: number): string {
  return String(Math.round(n * 1000) / 1000);
}

/** A share in [0, 1] as a percentage. */
export function percent(share: number, digits = 1): string {
  return `${(share * 100).toFixed(digits)} %`;
}

/** Milliseconds, with one decimal below 100 ms. */
export function ms(v: number): string {
  return v < 100 ? `${v.toFixed(1)} ms` : `${Math.round(v)} ms`;
}

/** Requests per second. */
export function rps(v: number): string {
  return v < 10 ? `${v.toFixed(2)} rps` : v < 1000 ? `${v.toFixed(1)} rps` : `${Math.round(v)} rps`;
}

/** A wall-clock time (local, to the second) from ns since the epoch. */
export function clock(ns: number): string {
  if (!ns) return "—";
  return new Date(ns / 1e6).toLocaleTimeString(undefined, { hour12: false });
}

/** A date and time from ns since the epoch. */
export function dateTime(ns: number): string {
  if (!ns) return "—";
  const d = new Date(ns / 1e6);
  return `${d.toLocaleDateString()} ${d.toLocaleTimeString(undefined, { hour12: false })}`;
}

/** A duration in seconds, in its two largest units (`2 h 05 min`, `41 s`). */
export function duration(s: number): string {
  const abs = Math.abs(s);
  if (abs < 1) return `${Math.round(abs * 1000)} ms`;
  if (abs < 120) return `${Math.round(abs)} s`;
  const min = Math.floor(abs / 60);
  if (min < 120) return `${min} min ${String(Math.round(abs % 60)).padStart(2, "0")} s`;
  const h = Math.floor(min / 60);
  if (h < 48) return `${h} h ${String(min % 60).padStart(2, "0")} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** `in 3 min` or `4 s ago`, from ns since the epoch against `now_ns`. */
export function relative(ns: number, nowNs: number): string {
  const s = (ns - nowNs) / 1e9;
  return s >= 0 ? `in ${duration(s)}` : `${duration(-s)} ago`;
}

/** A long number with thin separators (`5 612 032`). */
export function count(n: number): string {
  return n.toLocaleString("en-US").replace(/,/g, "\u2009");
}
