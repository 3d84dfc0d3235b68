//! DOM helpers: every text goes in through `textContent`, never through HTML strings, so a
//! rollout cause or a version name cannot inject markup.

/** The element with `id`; a missing one is a bug in index.html, reported once loudly. */
export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error(`index.html has no #${id}`);
  return e as T;
}

/** Set the text of `#id` (only when it changed, so selections and screen readers stay put). */
export function setText(id: string, text: string): void {
  const e = byId(id);
  if (e.textContent !== text) e.textContent = text;
}

/** A new element with optional class and text. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  text?: string,
  className?: string,
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (className) e.className = className;
  return e;
}

/** One table row of cells; a cell is text, or an element placed as is. */
export function row(cells: (string | HTMLElement)[]): HTMLTableRowElement {
  const tr = el("tr");
  for (const c of cells) {
    const td = el("td");
    if (typeof c === "string") td.textContent = c;
    else td.append(c);
    tr.append(td);
  }
  return tr;
}

/** Replace the rows of tbody `#id`. */
export function setRows(id: string, rows: HTMLTableRowElement[]): void {
  byId<HTMLTableSectionElement>(id).replaceChildren(...rows);
}

/** Show or hide `#id`. */
export function show(id: string, visible: boolean): void {
  const e = byId(id);
  if (e.hidden === visible) e.hidden = !visible;
}

/** A `<meter>` of `value` within [0, max], with its figure as the tooltip. */
export function meter(value: number, max: number, title: string, high?: number): HTMLMeterElement {
  const m = el("meter");
  m.min = 0;
  m.max = max > 0 ? max : 1;
  m.value = Math.max(0, Math.min(value, m.max));
  if (high !== undefined) {
    m.high = high;
    m.optimum = 0;
  }
  m.title = title;
  return m;
}

/** A small coloured label, e.g. a phase or a verdict. */
export function badge(text: string, kind: string): HTMLSpanElement {
  return el("span", text, `badge badge-${kind}`);
}
