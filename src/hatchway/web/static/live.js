// How views stay current. Today: polling, and only while the tab is visible (a hidden tab costs the worker
// nothing). Every view asks through these functions, so moving the job table to the worker's event stream
// (GET /events) is a change to `watchJobs` alone.

import { api, query } from "./api.js";

export const POLL_MS = 1500;

/**
 * Call `tick()` now and then every `intervalMs` while the page is visible, until `signal` aborts. A tick that
 * throws is reported to `onError` and the next one runs as usual; ticks never overlap.
 */
export function every(intervalMs, tick, signal, onError = () => {}) {
  let timer = null;
  let running = false;
  const run = async () => {
    timer = null;
    if (signal.aborted || document.hidden || running) return;
    running = true;
    try {
      await tick();
    } catch (error) {
      if (!signal.aborted && error.name !== "AbortError") onError(error);
    } finally {
      running = false;
    }
    schedule();
  };
  const schedule = () => {
    if (!signal.aborted && !document.hidden && timer === null) timer = setTimeout(run, intervalMs);
  };
  const visibility = () => {
    if (!document.hidden && timer === null && !running) run();
  };
  document.addEventListener("visibilitychange", visibility);
  signal.addEventListener("abort", () => {
    clearTimeout(timer);
    document.removeEventListener("visibilitychange", visibility);
  });
  run();
}

/** The first page of jobs matching `filters` ({state, kind, label: [..], limit}), now and whenever it changes. */
export function watchJobs(filters, onPage, signal, onError) {
  every(POLL_MS, async () => onPage(await api(`/jobs${query(filters)}`, { signal })), signal, onError);
}

/** One job (or grading, with `path` `/grade/{id}`) until it reaches a final state. */
export function watchUntilFinal(path, onValue, signal, onError) {
  const stop = new AbortController();
  signal.addEventListener("abort", () => stop.abort());
  every(
    POLL_MS,
    async () => {
      const value = await api(path, { signal });
      onValue(value);
      if (FINAL.has(value.state)) stop.abort();
    },
    stop.signal,
    onError,
  );
}

export const FINAL = new Set(["succeeded", "failed", "killed"]);
