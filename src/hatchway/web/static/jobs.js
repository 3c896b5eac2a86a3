// The job table: newest first, filtered by state, kind and labels (kept in the address, so a reload or a
// shared link shows the same), updated live without reloading the page.

import { query } from "./api.js";
import { ago, badge, chips, h, seconds, shortId, table, viewLink, when } from "./dom.js";
import { watchJobs } from "./live.js";

const STATES = ["", "queued", "building", "running", "succeeded", "failed", "killed"];
const KINDS = ["", "job", "grade"];
const PAGE = 50;
const MAX_LIMIT = 500;

export function jobsView(container, signal, params) {
  const filters = {
    state: params.get("state") ?? "",
    kind: params.get("kind") ?? "",
    label: params.getAll("label"),
    limit: Math.min(MAX_LIMIT, Number(params.get("limit")) || PAGE),
  };
  const notice = h("p", { class: "notice error", role: "alert", hidden: true });
  const summary = h("span", { class: "muted" });
  const more = h("button", { type: "button", hidden: true, text: `Show ${PAGE} more` });
  const body = h("tbody", { id: "jobs-body" });
  const rows = new Map();

  const go = (changes) => {
    location.hash = `#/${query({ ...filters, limit: filters.limit === PAGE ? "" : filters.limit, ...changes })}`;
  };
  more.addEventListener("click", () => go({ limit: Math.min(MAX_LIMIT, filters.limit + PAGE) }));

  container.append(
    h("h1", {}, "Jobs", summary),
    filterBar(filters, go),
    notice,
    h(
      "div",
      { class: "panel table-wrap" },
      h(
        "table",
        { id: "jobs" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", { text: "Job" }),
            h("th", { text: "Kind" }),
            h("th", { text: "State" }),
            h("th", { text: "Outcome" }),
            h("th", { text: "Image" }),
            h("th", { text: "Labels" }),
            h("th", { text: "Created" }),
            h("th", { class: "num", text: "Duration" }),
          ),
        ),
        body,
      ),
      more,
    ),
  );

  watchJobs(
    filters,
    (page) => {
      notice.hidden = true;
      const order = page.jobs.map((job) => row(rows, job));
      for (const id of rows.keys()) if (!page.jobs.some((job) => job.id === id)) rows.delete(id);
      if (order.length === 0) order.push(h("tr", {}, h("td", { class: "empty", colspan: 8, text: "No jobs match." })));
      body.replaceChildren(...order);
      summary.textContent = `${page.jobs.length}${page.next_cursor ? "+" : ""} shown`;
      more.hidden = !page.next_cursor || filters.limit >= MAX_LIMIT;
    },
    signal,
    (error) => {
      notice.textContent = `Could not list jobs: ${error.message}`;
      notice.hidden = false;
    },
  );
}

function filterBar(filters, go) {
  const state = h("select", { id: "filter-state", name: "state" }, STATES.map((s) => h("option", { value: s, text: s || "any state" })));
  const kind = h("select", { id: "filter-kind", name: "kind" }, KINDS.map((k) => h("option", { value: k, text: k || "any kind" })));
  const labels = h("input", {
    id: "filter-label",
    name: "label",
    placeholder: "key:value key:value",
    spellcheck: "false",
    title: "Labels the jobs must all have, as key:value, separated by spaces",
  });
  state.value = filters.state;
  kind.value = filters.kind;
  labels.value = filters.label.join(" ");
  const apply = () => go({ state: state.value, kind: kind.value, label: labels.value.split(/[\s,]+/).filter(Boolean), limit: "" });
  state.addEventListener("change", apply);
  kind.addEventListener("change", apply);
  const form = h(
    "form",
    { class: "filters", on: { submit: (event) => (event.preventDefault(), apply()) } },
    h("label", {}, "State", state),
    h("label", {}, "Kind", kind),
    h("label", {}, "Labels", labels),
    h("button", { type: "submit", text: "Filter" }),
    filters.state || filters.kind || filters.label.length ? h("a", { href: "#/", text: "Clear filters" }) : null,
  );
  return form;
}

/** The table row of `job`, made once and refreshed in place when what it shows changes. */
function row(rows, job) {
  let entry = rows.get(job.id);
  if (!entry) {
    entry = { tr: h("tr", { data: { jobId: job.id } }), shown: "" };
    rows.set(job.id, entry);
  }
  const shown = JSON.stringify([job.state, job.reason, job.exit_code, job.duration_s, job.grade?.verdict, job.labels]);
  if (shown !== entry.shown) {
    entry.shown = shown;
    entry.tr.dataset.state = job.state;
    entry.tr.replaceChildren(...cells(job));
  }
  return entry.tr;
}

function cells(job) {
  const page = job.kind === "grade" ? "grade" : "jobs";
  return [
    h("td", { class: "mono" }, h("a", { href: viewLink(page, job.id), title: job.id, text: shortId(job.id) })),
    h("td", { text: job.kind }),
    h("td", {}, badge("state", job.state)),
    h("td", {}, outcome(job)),
    h("td", { class: "mono", text: job.image ?? (job.spec.build ? "(built)" : "") }),
    h("td", {}, chips(job.labels)),
    h("td", { title: when(job.created_at), text: ago(job.created_at) }),
    h("td", { class: "num", text: seconds(job.duration_s) }),
  ];
}

function outcome(job) {
  const parts = [];
  if (job.grade?.verdict) parts.push(badge("verdict", job.grade.verdict), " ");
  if (job.reason) parts.push(job.reason);
  if (job.exit_code !== null && job.exit_code !== undefined) parts.push(parts.length ? ` (exit ${job.exit_code})` : `exit ${job.exit_code}`);
  return parts;
}
