//! The console's entry: polls the agent's public state once a second (a slow or failed poll
//! never overlaps the next) and renders every panel in place; keeps the admin token for the
//! buttons in this tab only.

import "./style.css";
import { fetchState, forgetToken, saveToken, token } from "./agent";
import { byId, setText, show } from "./dom";
import { clock } from "./format";
import { AdmissionPanel } from "./panels/admission";
import { renderCapacity } from "./panels/capacity";
import { renderKeys, renderLog } from "./panels/log";
import { RolloutPanel } from "./panels/rollout";

/** Time between two polls. */
const POLL_MS = 1000;
/** A poll that takes longer is abandoned. */
const POLL_TIMEOUT_MS = 4000;

let timer: number | null = null;
let inFlight = false;
let again = false;

function tokenState(needed: boolean | null): void {
  const saved = token() !== null;
  setText("token-state", saved ? "token saved" : needed === false ? "no token needed" : "no token");
  show("token-forget", saved);
}

function live(ok: boolean, detail: string): void {
  const e = byId("live-status");
  setText("live-status", ok ? "live" : "offline");
  e.className = ok ? "badge badge-ok" : "badge badge-bad";
  e.title = detail;
  setText("live-detail", detail);
}

const rollout = new RolloutPanel(() => schedule(0));
const admission = new AdmissionPanel();

async function poll(): Promise<void> {
  timer = null;
  if (inFlight) {
    again = true;
    return;
  }
  inFlight = true;
  const abort = new AbortController();
  const guard = window.setTimeout(() => abort.abort(), POLL_TIMEOUT_MS);
  try {
    const state = await fetchState(abort.signal);
    setText("origin", state.origin);
    show("verifier-link", state.verifier);
    show("token-open-note", !state.actions_need_token);
    tokenState(state.actions_need_token);
    rollout.render(state.rollout);
    admission.render(state);
    renderCapacity(state);
    renderLog(state);
    renderKeys(state);
    live(true, `updated ${clock(state.generated_at_ns)}`);
  } catch (e) {
    live(false, `last poll failed: ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    window.clearTimeout(guard);
    inFlight = false;
    schedule(again ? 0 : POLL_MS);
    again = false;
  }
}

function schedule(delay: number): void {
  if (timer !== null) window.clearTimeout(timer);
  timer = window.setTimeout(() => void poll(), delay);
}

byId("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = byId<HTMLInputElement>("token-input");
  saveToken(input.value);
  input.value = "";
  tokenState(null);
});
byId("token-forget").addEventListener("click", () => {
  forgetToken();
  tokenState(null);
});
tokenState(null);
void poll();
