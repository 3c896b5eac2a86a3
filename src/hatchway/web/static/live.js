// How views stay current: the job table fetches its page when the worker's event stream (GET /events) says a
// job changed; the other views poll. Fetching happens only while the tab is visible (a hidden tab costs the
// worker one idle connection). Every view asks through these functions.

import { api, follow, query } from "./api.js";

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

/** Jobs are fetched again at least this often even when no event says anything changed. */
const QUIET_REFRESH_MS = 30000;
/** How long to wait before listening to the event stream again after it broke. */
const EVENTS_RETRY_MS = 3000;

/**
 * The first page of jobs matching `filters` ({state, kind, label: [..], limit}), now and whenever it changes.
 * The worker's lifecycle events (GET /events) say when something changed; the page is fetched again then, at
 * most every POLL_MS, and every QUIET_REFRESH_MS regardless. Where the event stream cannot be read, every tick
 * fetches the page.
 */
export function watchJobs(filters, onPage, signal, onError) {
  let changed = true;
  let listening = false;
  let fetchedAt = 0;
  listenToEvents(
    () => (changed = true),
    (up) => {
      listening = up;
      changed = true; // whatever happened while it was down
    },
    signal,
  );
  every(
    POLL_MS,
    async () => {
      if (listening && !changed && Date.now() - fetchedAt < QUIET_REFRESH_MS) return;
      changed = false;
      fetchedAt = Date.now();
      onPage(await api(`/jobs${query(filters)}`, { signal }));
    },
    signal,
    onError,
  );
}

/** Call `onEvent` for each lifecycle event the worker sends, and `onState(true|false)` as the stream comes and
 * goes, reconnecting (from the last event seen) until `signal` aborts. */
async function listenToEvents(onEvent, onState, signal) {
  let last = null;
  while (!signal.aborted) {
    try {
      const from = last === null ? "" : `?last_event_id=${encodeURIComponent(last)}`;
      onState(true);
      await follow(`/events${from}`, (text) => {
        for (const match of text.matchAll(/^id: ?(\S+)$/gm)) last = match[1];
        if (/^event: /m.test(text)) onEvent();
      }, { signal });
    } catch (error) {
      if (signal.aborted || error.name === "AbortError") return;
    }
    onState(false);
    await new Promise((resolve) => setTimeout(resolve, EVENTS_RETRY_MS));
  }
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
