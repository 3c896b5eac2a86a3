// The dashboard's entry: routes `#/...` to a view, asks for a token when the API wants one, and keeps the
// header current. Each view gets a container and an AbortSignal that fires when the user leaves it, which stops
// its polling and its followed output.

import { api, forgetToken, onUnauthorized, setToken, token } from "./api.js";
import { h } from "./dom.js";
import { gradeView } from "./grade.js";
import { jobView } from "./job.js";
import { jobsView } from "./jobs.js";
import { systemView } from "./system.js";

const view = document.getElementById("view");
const login = document.getElementById("login");
const loginError = document.getElementById("login-error");
const tokenInput = document.getElementById("token");
const logout = document.getElementById("logout");
const live = document.getElementById("live");
let leaving = null;

function route(hash) {
  const [path, search] = hash.replace(/^#/, "").split("?", 2);
  const params = new URLSearchParams(search ?? "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return ["jobs", (container, signal) => jobsView(container, signal, params)];
  if (parts.length === 2 && parts[0] === "jobs") return ["jobs", (container, signal) => jobView(container, signal, parts[1])];
  if (parts.length === 2 && parts[0] === "grade") return ["jobs", (container, signal) => gradeView(container, signal, parts[1])];
  if (parts.length === 1 && parts[0] === "system") return ["system", (container, signal) => systemView(container, signal)];
  return [null, (container) => container.append(h("p", { class: "notice error", text: `No page at ${hash}.` }), h("a", { href: "#/", text: "Jobs" }))];
}

function render() {
  leaving?.abort();
  leaving = new AbortController();
  login.hidden = true;
  view.hidden = false;
  logout.hidden = !token();
  view.replaceChildren();
  const [section, show] = route(location.hash || "#/");
  for (const link of document.querySelectorAll("[data-nav]")) link.classList.toggle("active", link.dataset.nav === section);
  show(view, leaving.signal);
}

onUnauthorized((hadToken) => {
  leaving?.abort(); // stop every poll of the view: each would only be refused again
  view.hidden = true;
  login.hidden = false;
  logout.hidden = true;
  loginError.textContent = hadToken ? "That token was not accepted by this worker." : "";
  if (hadToken) forgetToken();
  tokenInput.focus();
});

login.addEventListener("submit", (event) => {
  event.preventDefault();
  const value = tokenInput.value.trim();
  if (!value) return;
  setToken(value);
  tokenInput.value = "";
  render();
});

logout.addEventListener("click", () => {
  forgetToken();
  render();
});

function showLiveness() {
  live.textContent = document.hidden ? "" : "live";
}

async function header() {
  // /health is open, so the header names the worker even before a token is given.
  try {
    const health = await api("/health", { acceptStatus: [503] });
    document.getElementById("worker").textContent = `worker ${health.worker_id}`;
    document.title = `hatchway · ${health.worker_id}`;
  } catch {
    // the views say what is wrong; the header just stays empty
  }
}

window.addEventListener("hashchange", render);
document.addEventListener("visibilitychange", showLiveness);
showLiveness();
header();
render();
