//! Talking to the agent: the state document (public) and the rollout actions (admin routes,
//! with the operator's token from this tab's sessionStorage).

import type { ConsoleState } from "./state";

const TOKEN_KEY = "knhk.adminToken";

/** URLs relative to the page (`/console/`), so a path prefix in front of the agent works. */
function url(path: string): string {
  return new URL(`../${path}`, window.location.href).toString();
}

/** The admin token saved in this tab, if any (never localStorage, never the URL). */
export function token(): string | null {
  try {
    return window.sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

/** Keep `value` for this tab; an empty value forgets it. */
export function saveToken(value: string): void {
  const t = value.trim();
  if (t) window.sessionStorage.setItem(TOKEN_KEY, t);
  else window.sessionStorage.removeItem(TOKEN_KEY);
}

/** Forget the token. */
export function forgetToken(): void {
  window.sessionStorage.removeItem(TOKEN_KEY);
}

/** The agent's state document. */
export async function fetchState(signal: AbortSignal): Promise<ConsoleState> {
  const r = await fetch(url("v1/console/state"), { cache: "no-store", signal });
  if (!r.ok) throw new Error(`${r.status} ${r.statusText}`);
  return (await r.json()) as ConsoleState;
}

/** A rollout action. */
export type Action = "promote" | "pause" | "resume" | "abort";

/** What an action came to: `ok`, or the agent's status and error text. */
export interface Outcome {
  ok: boolean;
  message: string;
}

/** Send `action` (with `body`) to the agent's admin route, with the token when one is saved. */
export async function act(action: Action, body: Record<string, string>): Promise<Outcome> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  const t = token();
  if (t) headers["authorization"] = `Bearer ${t}`;
  let r: Response;
  try {
    r = await fetch(url(`v1/rollouts/current/${action}`), {
      method: "POST",
      headers,
      body: JSON.stringify(body),
      cache: "no-store",
    });
  } catch (e) {
    return { ok: false, message: `${action}: the agent did not answer (${String(e)})` };
  }
  if (r.ok) return { ok: true, message: `${action}: done` };
  let detail = r.statusText;
  try {
    const j = (await r.json()) as { error?: unknown };
    if (typeof j.error === "string") detail = j.error;
  } catch {
    // The body was not JSON: the status line says enough.
  }
  const hint = r.status === 401 ? " (save the admin token above)" : "";
  return { ok: false, message: `${action}: ${r.status} ${detail}${hint}` };
}
