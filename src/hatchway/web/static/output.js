// A job's output on screen: stdout and stderr followed live from the API, stderr set apart, kept scrolled to
// the end while the reader is there, and capped so a flood cannot freeze the tab.

import { follow } from "./api.js";
import { h } from "./dom.js";

const MAX_CHARS = 2 * 1024 * 1024;

/** A panel following `/jobs/{id}/logs` for each of `streams`; `status` says whether it is still live. */
export function outputPanel(jobId, signal, { title = "Output", streams = ["stdout", "stderr"] } = {}) {
  const pre = h("pre", { class: "output", id: "output", tabindex: "0" });
  const status = h("span", { class: "muted", id: "output-status", text: "connecting…" });
  const legend = h(
    "span",
    { class: "legend" },
    streams.map((stream) => h("span", {}, h("span", { class: `swatch ${stream}` }), stream)),
  );
  let shown = 0;
  let capped = false;

  const append = (stream, text) => {
    if (capped) return;
    if (shown + text.length > MAX_CHARS) {
      text = text.slice(0, MAX_CHARS - shown);
      capped = true;
    }
    shown += text.length;
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    const last = pre.lastElementChild;
    if (last && last.dataset.stream === stream) last.firstChild.appendData(text);
    else pre.append(h("span", { class: stream, data: { stream } }, text));
    if (capped) pre.append(h("span", { class: "note", text: `\n… shown up to ${MAX_CHARS} characters; the API has the rest.` }));
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  };

  const path = (stream) => `/jobs/${encodeURIComponent(jobId)}/logs?stream=${stream}&follow=true`;
  const followers = streams.map((stream) => follow(path(stream), (text) => append(stream, text), { signal }));
  status.textContent = "following live…";
  Promise.all(followers).then(
    () => {
      status.textContent = "complete: the job has ended";
      status.dataset.done = "true";
      if (!pre.firstChild) pre.append(h("span", { class: "note", text: "(no output)" }));
    },
    (error) => {
      if (error.name === "AbortError" || signal.aborted) return;
      status.textContent = `stopped following: ${error.message}`;
    },
  );
  return h("section", { class: "panel" }, h("h2", {}, title, legend, status), pre);
}
