// A test double of the worker-agent system's dashboard page (ProcessingCluster, dash/public/script.js), written
// anew to behave as that page does: the same requests, the same fields read, the same rendering.
//
// - Its settings (address prefix and range, probe timeout, discovery and poll intervals, missed-poll threshold)
//   come from the form, else from localStorage ("pcdash.settings"), else its defaults (192.168.1.1-254).
// - Start scans every address of the range: GET http://<ip>:9000/info and /health at once, from the browser
//   (another origin than the workers'), each given the probe timeout (AbortController), a non-2xx answer or an
//   unreadable one a failure. A worker whose two answers come is known (kept in localStorage,
//   "pcdash.knownWorkerIPs") and gets a card; the scan is repeated every discovery interval.
// - Known workers are polled every poll interval; one that fails the threshold's number of polls in a row is shown
//   offline. A restarted run ignores what an earlier run's requests bring back.

const WORKER_PORT = 9000;
const KNOWN_KEY = "pcdash.knownWorkerIPs";
const SETTINGS_KEY = "pcdash.settings";
const DEFAULTS = {
  ipPrefix: "192.168.1.",
  ipStart: 1,
  ipEnd: 254,
  probeTimeoutMs: 1000,
  discoveryIntervalMs: 10000,
  pollIntervalMs: 500,
  missedThreshold: 3,
};

const known = new Set();
const misses = new Map();
let run = 0;
let discoveryTimer = null;
let pollTimer = null;

const byId = (id) => document.getElementById(id);
const finite = (value, otherwise = null) => (Number.isFinite(value) ? value : otherwise);
const blank = (value) => value === null || value === undefined || value === "";

function setStatus(text) {
  byId("uiStatus").textContent = text;
}

function intField(id, fallback) {
  const value = Number.parseInt(byId(id)?.value ?? "", 10);
  return Number.isFinite(value) ? value : fallback;
}

function textField(id, fallback) {
  const value = (byId(id)?.value ?? "").trim();
  return value.length ? value : fallback;
}

function storedJson(key) {
  try {
    return JSON.parse(localStorage.getItem(key) ?? "null");
  } catch {
    return null;
  }
}

function rememberKnown() {
  localStorage.setItem(KNOWN_KEY, JSON.stringify([...known]));
}

function showSettings(settings) {
  byId("ipPrefix").value = settings.ipPrefix ?? DEFAULTS.ipPrefix;
  byId("ipStart").value = settings.ipStart ?? DEFAULTS.ipStart;
  byId("ipEnd").value = settings.ipEnd ?? DEFAULTS.ipEnd;
  byId("probeTimeout").value = settings.probeTimeoutMs ?? DEFAULTS.probeTimeoutMs;
  byId("discoveryInterval").value = settings.discoveryIntervalMs ?? DEFAULTS.discoveryIntervalMs;
  byId("pollInterval").value = settings.pollIntervalMs ?? DEFAULTS.pollIntervalMs;
  byId("missedThreshold").value = settings.missedThreshold ?? DEFAULTS.missedThreshold;
}

function settingsProblem(s) {
  if (!/^\d{1,3}\.\d{1,3}\.\d{1,3}\.$/.test(s.ipPrefix)) return 'IP Prefix must look like "192.168.1."';
  if ([s.ipStart, s.ipEnd].some((n) => n < 0 || n > 255)) return "Start/End must be within 0..255";
  if (s.ipStart > s.ipEnd) return "Start must be <= End";
  if (s.probeTimeoutMs < 50) return "Probe timeout too small (min 50ms)";
  if (s.discoveryIntervalMs < 200) return "Discovery interval too small (min 200ms)";
  if (s.pollIntervalMs < 100) return "Poll interval too small (min 100ms)";
  return null;
}

async function getJson(url, timeoutMs) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    const response = await fetch(url, { signal: abort.signal });
    if (!response.ok) throw new Error(`HTTP ${response.status} for ${url}`);
    return await response.json();
  } finally {
    clearTimeout(timer);
  }
}

// One reading of a worker: what its /info and /health say, under the names the cards use.
async function readWorker(ip, timeoutMs) {
  const base = `http://${ip}:${WORKER_PORT}`;
  try {
    const [info, health] = await Promise.all([getJson(`${base}/info`, timeoutMs), getJson(`${base}/health`, timeoutMs)]);
    const reserved = Array.isArray(health.dedicated_reserved_cpu_ids) ? health.dedicated_reserved_cpu_ids : [];
    return {
      ip,
      workerId: info.worker_id,
      hostname: info.hostname,
      os: info.os ?? null,
      osArchitecture: info.os_architecture ?? null,
      protocolVersion: info.protocol_version,
      cpuModel: info.cpu_model ?? null,
      cpuCores: info.cpu_cores,
      cpuThreads: info.cpu_threads,
      memoryMB: info.memory_mb,
      labels: info.labels,
      status: health.status,
      uptimeSeconds: health.uptime_seconds,
      loadAverage: health.load_average,
      runningJobs: health.running_jobs,
      maxConcurrentJobs: health.max_concurrent_jobs,
      temperatureC: health.temperature_c,
      healthCpuThreads: finite(health.cpu_threads),
      reservedCount: finite(health.dedicated_reserved_count, reserved.length),
      memoryTotalMb: finite(health.memory_total_mb),
      memoryAvailableMb: finite(health.memory_available_mb),
      jobsDiskAvailableMb: finite(health.jobs_disk_available_mb),
      dockerDiskAvailableMb: finite(health.docker_disk_available_mb),
    };
  } catch (error) {
    return { ip, error: true, message: error?.message ?? "unreachable" };
  }
}

function uptimeText(seconds) {
  if (!Number.isFinite(seconds)) return "unknown";
  const parts = [];
  const days = Math.floor(seconds / 86400);
  const hours = Math.floor((seconds % 86400) / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  const rest = Math.floor(seconds % 60);
  if (days) parts.push(`${days}d`);
  if (hours) parts.push(`${hours}h`);
  if (minutes) parts.push(`${minutes}m`);
  if (!parts.length || rest) parts.push(`${rest}s`);
  return parts.join(" ");
}

function loadText(load) {
  if (!Array.isArray(load) || load.length < 3) return "unknown";
  return load.slice(0, 3).map((value) => value.toFixed(2)).join(" / ");
}

const LINES = [
  ["Hostname", "worker-hostname"],
  ["OS", "worker-os"],
  ["OS Architecture", "worker-arch"],
  ["Protocol Version", "worker-protocol"],
  ["CPU Model", "worker-cpu-model"],
  ["CPU", "worker-cpu"],
  ["RAM", "worker-ram"],
  ["Status", "worker-status"],
  ["Running Jobs", "worker-running"],
  ["Max Concurrent Jobs", "worker-max"],
  ["Health Protocol", "worker-health-proto"],
  ["Reserved CPUs", "worker-reserved"],
  ["Memory", "worker-mem"],
  ["Jobs Disk Free", "worker-jobs-disk"],
  ["Docker Disk Free", "worker-docker-disk"],
  ["Uptime", "worker-uptime"],
  ["Load Avg (1/5/15)", "worker-load"],
  ["Temperature", "worker-temp"],
  ["Labels", "worker-labels"],
];

// What an offline card keeps from its last reading (the rest shows "—").
const KEPT_OFFLINE = ["worker-hostname", "worker-protocol", "worker-cpu", "worker-ram"];

function cardId(ip) {
  return `worker-${ip.replaceAll(".", "-")}`;
}

function ensureCard(ip) {
  if (byId(cardId(ip))) return;
  const card = document.createElement("div");
  card.className = "worker-card";
  card.id = cardId(ip);
  const title = document.createElement("h3");
  const name = document.createElement("span");
  name.className = "worker-name";
  name.textContent = ip;
  title.append("Worker: ", name);
  card.append(title);
  for (const [label, name] of LINES) {
    const line = document.createElement("div");
    line.className = "info-line";
    const value = document.createElement("span");
    value.className = name;
    value.textContent = "loading...";
    line.append(`${label}: `, value);
    card.append(line);
  }
  byId("workers-container").append(card);
}

function render(ip, data) {
  const card = byId(cardId(ip));
  if (!card) return;
  const put = (name, text) => {
    card.querySelector(`.${name}`).textContent = text;
  };
  card.classList.toggle("offline", Boolean(data.error));
  if (data.error) {
    for (const [, name] of LINES) if (!KEPT_OFFLINE.includes(name)) put(name, "—");
    put("worker-status", "Offline");
    put("worker-name", ip);
    return;
  }
  const threads = Number.isFinite(data.healthCpuThreads) ? data.healthCpuThreads : data.cpuThreads;
  put("worker-name", data.workerId);
  put("worker-hostname", data.hostname);
  put("worker-os", blank(data.os) ? "N/A" : data.os);
  put("worker-arch", blank(data.osArchitecture) ? "N/A" : data.osArchitecture);
  put("worker-protocol", data.protocolVersion);
  put("worker-cpu-model", blank(data.cpuModel) ? "N/A" : data.cpuModel);
  put("worker-cpu", `${blank(data.cpuCores) ? "N/A" : String(data.cpuCores)} cores / ${threads} threads`);
  put("worker-ram", `${data.memoryMB} MB`);
  put("worker-status", data.status);
  put("worker-running", data.runningJobs);
  put("worker-max", data.maxConcurrentJobs);
  put("worker-health-proto", data.healthProtocolVersion ?? "N/A"); // the page never reads it: always N/A there
  put("worker-reserved", `${data.reservedCount ?? 0} / ${threads ?? "?"}`);
  if (Number.isFinite(data.memoryTotalMb) && Number.isFinite(data.memoryAvailableMb)) {
    const used = data.memoryTotalMb - data.memoryAvailableMb;
    put("worker-mem", `${used} MB used / ${data.memoryTotalMb} MB total (avail ${data.memoryAvailableMb} MB)`);
  } else {
    put("worker-mem", Number.isFinite(data.memoryMB) ? `${data.memoryMB} MB total (no v2 available)` : "N/A");
  }
  put("worker-jobs-disk", Number.isFinite(data.jobsDiskAvailableMb) ? `${data.jobsDiskAvailableMb} MB free` : "N/A");
  put("worker-docker-disk", Number.isFinite(data.dockerDiskAvailableMb) ? `${data.dockerDiskAvailableMb} MB free` : "N/A");
  put("worker-uptime", uptimeText(data.uptimeSeconds));
  put("worker-load", loadText(data.loadAverage));
  put("worker-temp", blank(data.temperatureC) ? "N/A" : `${data.temperatureC} °C`);
  put("worker-labels", Array.isArray(data.labels) && data.labels.length ? data.labels.join(", ") : "none");
}

function discover(ips, timeoutMs, thisRun) {
  for (const ip of ips) {
    readWorker(ip, timeoutMs).then((data) => {
      if (thisRun !== run || data.error) return;
      if (!known.has(ip)) {
        known.add(ip);
        rememberKnown();
        ensureCard(ip);
      }
      render(ip, data);
    });
  }
}

function pollKnown(settings, thisRun) {
  const poll = async () => {
    if (thisRun !== run || known.size === 0) return;
    const readings = await Promise.all([...known].map((ip) => readWorker(ip, settings.probeTimeoutMs)));
    if (thisRun !== run) return;
    for (const data of readings) {
      if (data.error) {
        const missed = (misses.get(data.ip) ?? 0) + 1;
        misses.set(data.ip, missed);
        if (missed >= settings.missedThreshold) render(data.ip, data);
      } else {
        misses.set(data.ip, 0);
        render(data.ip, data);
      }
    }
  };
  poll();
  return setInterval(poll, settings.pollIntervalMs);
}

function stop() {
  clearInterval(discoveryTimer);
  clearInterval(pollTimer);
  discoveryTimer = pollTimer = null;
  run += 1;
  setStatus("Idle");
}

function start() {
  stop();
  const settings = {
    ipPrefix: textField("ipPrefix", DEFAULTS.ipPrefix),
    ipStart: intField("ipStart", DEFAULTS.ipStart),
    ipEnd: intField("ipEnd", DEFAULTS.ipEnd),
    probeTimeoutMs: intField("probeTimeout", DEFAULTS.probeTimeoutMs),
    discoveryIntervalMs: intField("discoveryInterval", DEFAULTS.discoveryIntervalMs),
    pollIntervalMs: intField("pollInterval", DEFAULTS.pollIntervalMs),
    missedThreshold: intField("missedThreshold", DEFAULTS.missedThreshold),
  };
  const problem = settingsProblem(settings);
  if (problem) {
    setStatus(`Error: ${problem}`);
    return;
  }
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
  const ips = [];
  for (let last = settings.ipStart; last <= settings.ipEnd; last += 1) ips.push(`${settings.ipPrefix}${last}`);
  run += 1;
  const thisRun = run;
  setStatus(`Running (scanning ${settings.ipPrefix}${settings.ipStart}..${settings.ipEnd})`);
  discover(ips, settings.probeTimeoutMs, thisRun);
  discoveryTimer = setInterval(() => discover(ips, settings.probeTimeoutMs, thisRun), settings.discoveryIntervalMs);
  pollTimer = pollKnown(settings, thisRun);
}

document.addEventListener("DOMContentLoaded", () => {
  const saved = storedJson(SETTINGS_KEY);
  showSettings(saved ?? DEFAULTS);
  const remembered = storedJson(KNOWN_KEY);
  for (const ip of Array.isArray(remembered) ? remembered.filter((item) => typeof item === "string") : []) {
    known.add(ip);
    ensureCard(ip);
  }
  const timeoutMs = saved?.probeTimeoutMs ?? DEFAULTS.probeTimeoutMs;
  Promise.all([...known].map((ip) => readWorker(ip, timeoutMs))).then((readings) => {
    for (const data of readings) render(data.ip, data.error ? { ip: data.ip, error: true } : data);
  });
  byId("startBtn").addEventListener("click", start);
  byId("stopBtn").addEventListener("click", stop);
  byId("clearBtn").addEventListener("click", () => {
    known.clear();
    byId("workers-container").replaceChildren();
    rememberKnown();
    setStatus("Idle (cleared)");
  });
  start();
});
