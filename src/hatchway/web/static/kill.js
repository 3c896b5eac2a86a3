// The kill button: asks first, calls DELETE, and says what happened (the API answers once the job has ended).

import { api } from "./api.js";
import { h } from "./dom.js";

/** A button that kills the job at `path` (`/jobs/{id}` or `/grade/{id}`) after a confirmation. */
export function killButton(path, id, onKilled) {
  const result = h("span", { id: "kill-result", role: "status" });
  const button = h("button", { type: "button", class: "danger", id: "kill", text: "Kill" });
  button.addEventListener("click", async () => {
    if (!window.confirm(`Kill ${id}? A running job gets SIGTERM, then SIGKILL after the grace period.`)) return;
    button.disabled = true;
    button.textContent = "Killing…";
    result.className = "muted";
    result.textContent = "";
    try {
      const job = await api(path, { method: "DELETE" });
      result.className = "";
      result.textContent = `Killed: it ended ${job.state}${job.reason ? ` (${job.reason})` : ""}.`;
      button.hidden = true;
      onKilled(job);
    } catch (error) {
      result.className = "error";
      result.textContent =
        error.status === 409 ? "It had already ended." : error.status === 403 ? `Not allowed: ${error.message}` : `Kill failed: ${error.message}`;
      button.disabled = false;
      button.textContent = "Kill";
    }
  });
  return { button, result, hide: () => (button.hidden = true) };
}
