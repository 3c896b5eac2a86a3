// The system panel: the host (CPU, memory, temperature), the worker's slots, engines, pools and sources, and
// charts of the last hour (throughput, latency, queue wait).

import { api } from "./api.js";
import { barChart, lineChart } from "./charts.js";
import { ago, bytes, facts, h, panel, seconds, table, when } from "./dom.js";
import { every } from "./live.js";

const HEALTH_MS = 2000;
const STATS_MS = 10000;

export function systemView(container, signal) {
  const notice = h("p", { class: "notice error", role: "alert", hidden: true });
  const cards = h("div", { class: "grid cards", id: "system-cards" });
  const engines = h("div", { id: "engines" });
  const pools = h("div", { id: "pools" });
  const sources = h("div", { id: "sources" });
  const controller = h("div");
  const charts = h("div", { class: "grid charts", id: "charts" });
  container.append(
    h("h1", {}, "System"),
    notice,
    cards,
    h("div", { class: "panel" }, h("h2", {}, "Last hour", h("span", { class: "muted", text: "per minute, since the worker started" })), charts),
    h("div", { class: "columns" }, panel("Engines", engines), controller),
    panel("Pools", pools),
    panel("Sources", sources),
  );
  const failed = (what) => (error) => {
    notice.textContent = `Could not load ${what}: ${error.message}`;
    notice.hidden = false;
  };

  every(
    HEALTH_MS,
    async () => {
      const health = await api("/health", { signal, acceptStatus: [503] });
      notice.hidden = true;
      cards.replaceChildren(...hostCards(health));
      engines.replaceChildren(engineList(health));
      pools.replaceChildren(poolTable(health.pools));
      sources.replaceChildren(sourceTable(health.sources));
      controller.replaceChildren(health.controller ? controllerPanel(health.controller) : "");
    },
    signal,
    failed("the worker's health"),
  );
  every(
    STATS_MS,
    async () => {
      const stats = await api("/stats?window_s=3600", { signal });
      charts.replaceChildren(...drawCharts(stats.buckets));
    },
    signal,
    failed("the last hour's figures"),
  );
}

function card(label, value, sub, fraction = null) {
  const children = [h("div", { class: "label", text: label }), h("div", { class: "value", text: value }), h("div", { class: "sub", text: sub })];
  if (fraction !== null) {
    const fill = h("span");
    fill.style.width = `${Math.min(100, Math.max(0, fraction * 100)).toFixed(1)}%`; // CSSOM: allowed by the CSP
    children.push(h("div", { class: fraction > 0.9 ? "meter high" : "meter" }, fill));
  }
  return h("div", { class: "card", data: { card: label.toLowerCase() } }, ...children);
}

function hostCards(health) {
  const host = health.host;
  const busy = health.running;
  return [
    card("Status", health.status, health.accepting ? "accepting jobs" : "not accepting jobs"),
    card("Jobs", `${busy} / ${health.max_concurrent_jobs}`, `running of slots · ${health.queued} queued`, busy / Math.max(1, health.max_concurrent_jobs)),
    card("CPU", `${host.cpu_percent.toFixed(0)} %`, `${host.cpu_count} cores · load ${host.load_average.map((v) => v.toFixed(2)).join(" ")}`, host.cpu_percent / 100),
    card("Memory", `${host.memory_percent.toFixed(0)} %`, `${bytes(host.memory_used_bytes)} of ${bytes(host.memory_total_bytes)}`, host.memory_percent / 100),
    card("Temperature", host.temperature_c === null ? "–" : `${host.temperature_c} °C`, host.temperature_c === null ? "no sensor on this host" : "hottest sensor"),
    card("Worker memory", bytes(host.worker_rss_bytes), "resident, this process"),
  ];
}

function engineList(health) {
  const items = health.engines.map((engine) =>
    h("li", { data: { engine: engine.name } }, h("strong", { text: engine.name }), " ", h("span", { class: engine.available ? "ok" : "bad", text: engine.available ? "works" : "not working" })),
  );
  return h("div", {}, h("p", { class: health.engine_ok ? "ok" : "bad", text: health.engine_ok ? "The engine answers." : "The engine does not answer." }), h("ul", {}, items));
}

function poolTable(pools) {
  const rows = pools.map((pool) =>
    h(
      "tr",
      {},
      h("td", { class: "mono", text: pool.image }),
      h("td", { text: pool.runtime }),
      h("td", { text: pool.origin }),
      h("td", { class: "num", text: pool.size }),
      h("td", { class: "num", text: pool.idle }),
      h("td", { class: "num", text: pool.busy }),
      h("td", { class: "num", text: pool.starting }),
      h("td", { class: "num", text: pool.jobs_served }),
      h("td", { class: "error", text: pool.last_error ?? "" }),
    ),
  );
  const headers = [["Image"], ["Runtime"], ["Origin"], ["Size", "num"], ["Idle", "num"], ["Busy", "num"], ["Starting", "num"], ["Served", "num"], ["Last error"]];
  return table(headers, rows, { empty: "No pools: every job starts a fresh container." });
}

function sourceTable(sources) {
  // The HTTP API (a source clients push to) polls nothing and sends no reports: only its claims mean something.
  const pulled = (source, text) => (source.pushes ? "" : text);
  const rows = sources.map((source) =>
    h(
      "tr",
      { data: { source: source.name } },
      h("td", { text: source.name }),
      h("td", { text: source.kind }),
      h("td", { class: "mono", text: source.url }),
      h("td", { title: pulled(source, when(source.last_poll_at)), text: pulled(source, ago(source.last_poll_at)) }),
      h("td", { class: "num", text: source.claims }),
      h("td", { class: "num", text: pulled(source, `${source.reports_sent} / ${source.reports_pending}`) }),
      h("td", { class: "num", text: pulled(source, source.errors) }),
      h("td", { class: "num", text: source.backoff_s ? seconds(source.backoff_s) : "" }),
      h("td", { class: "error", text: source.last_error ?? "" }),
    ),
  );
  const headers = [["Name"], ["Kind"], ["URL"], ["Last poll"], ["Claims", "num"], ["Reports sent / pending", "num"], ["Errors", "num"], ["Backoff", "num"], ["Last error"]];
  return table(headers, rows, { empty: "No job sources." });
}

function controllerPanel(link) {
  return panel(
    "Controller",
    facts([
      ["URL", link.url],
      ["Registered", link.registered ? "yes" : "no"],
      ["Last heartbeat", when(link.last_heartbeat_at)],
      ["Errors", String(link.errors)],
      ["Last error", link.last_error],
    ]),
  );
}

function drawCharts(buckets) {
  const total = buckets.reduce((sum, b) => sum + b.finished, 0);
  const chart = (title, legend, figure) => h("figure", { class: "card" }, h("h2", {}, title, h("span", { class: "legend" }, legend)), figure);
  const key = (cls, label) => h("span", {}, h("span", { class: `swatch ${cls}` }), label);
  return [
    chart(
      `Throughput · ${total} finished`,
      [key("s1", "succeeded"), key("s2", "failed"), key("s3", "killed")],
      barChart("throughput", buckets, [
        { key: "succeeded", label: "succeeded", cls: "s1" },
        { key: "failed", label: "failed", cls: "s2" },
        { key: "killed", label: "killed", cls: "s3" },
      ]),
    ),
    chart(
      "Latency (run time)",
      [key("l1", "p50"), key("l2", "p95")],
      lineChart("latency", buckets, [
        { key: "duration_p50_s", label: "p50", cls: "l1" },
        { key: "duration_p95_s", label: "p95", cls: "l2" },
      ], axisSeconds),
    ),
    chart(
      "Queue wait",
      [key("l1", "p50"), key("l2", "p95")],
      lineChart("queue-wait", buckets, [
        { key: "queue_wait_p50_s", label: "p50", cls: "l1" },
        { key: "queue_wait_p95_s", label: "p95", cls: "l2" },
      ], axisSeconds),
    ),
  ];
}

function axisSeconds(value) {
  if (value === 0) return "0";
  return seconds(value);
}
