// One job: what it is and how it went (refreshed until it ends), its output followed live, and a kill button.

import { badge, bytes, chips, commandLine, facts, h, panel, seconds, viewLink, when } from "./dom.js";
import { killButton } from "./kill.js";
import { FINAL, watchUntilFinal } from "./live.js";
import { outputPanel } from "./output.js";

export function jobView(container, signal, id) {
  const title = h("h1", {}, "Job ", h("span", { class: "mono", text: id }));
  const stateSlot = h("span");
  const notice = h("p", { class: "notice error", role: "alert", hidden: true });
  const kill = killButton(`/jobs/${encodeURIComponent(id)}`, id, (job) => show(job));
  kill.button.hidden = true;
  const gradeLink = h("a", { href: viewLink("grade", id), text: "Grade report →", hidden: true });
  const actions = h("div", { class: "actions" }, kill.button, kill.result, gradeLink);
  const about = h("div", { class: "columns" });
  const build = h("div");
  title.append(stateSlot);
  container.append(h("p", {}, h("a", { href: "#/", text: "← Jobs" })), title, notice, actions, about, build);
  container.append(outputPanel(id, signal));

  function show(job) {
    notice.hidden = true;
    stateSlot.replaceChildren(...[badge("state", job.state), job.grade?.verdict && badge("verdict", job.grade.verdict)].filter(Boolean));
    kill.button.hidden = FINAL.has(job.state) || kill.button.disabled;
    gradeLink.hidden = job.kind !== "grade";
    about.replaceChildren(...describe(job));
    build.replaceChildren(
      job.build_output ? panel("Build output", h("pre", { class: "output", text: job.build_output })) : "",
    );
  }

  watchUntilFinal(`/jobs/${encodeURIComponent(id)}`, show, signal, (error) => {
    notice.textContent = error.status === 404 ? `There is no job ${id} on this worker.` : `Could not load the job: ${error.message}`;
    notice.hidden = false;
  });
}

function describe(job) {
  const spec = job.spec;
  const run = job.run ?? {};
  const waited = job.started_at ? (Date.parse(job.started_at) - Date.parse(job.created_at)) / 1000 : null;
  const limits = spec.limits;
  const resources = job.resources ?? {};
  return [
    panel(
      "Job",
      facts([
        ["Kind", job.kind],
        ["State", job.state],
        ["Reason", job.reason],
        ["Message", job.message],
        ["Exit code", job.exit_code === null ? null : String(job.exit_code)],
        ["Image", job.image ?? (spec.build ? "built from a Dockerfile" : null)],
        ["Command", h("code", { text: commandLine(spec.command) })],
        ["Labels", chips(job.labels)],
        ["Priority", String(job.priority)],
        ["Origin", job.origin ? `${job.origin} (${job.external_id ?? "?"})` : null],
        ["Created", when(job.created_at)],
        ["Started", when(job.started_at)],
        ["Finished", when(job.finished_at)],
        ["Queue wait", seconds(waited)],
        ["Duration", seconds(job.duration_s)],
      ]),
    ),
    panel(
      "Resources and limits",
      facts([
        ["CPU time", seconds(resources.cpu_s)],
        ["Memory", resources.memory_bytes ? bytes(resources.memory_bytes) : null],
        ["Peak memory", bytes(resources.peak_memory_bytes)],
        ["Processes", resources.pids === null || resources.pids === undefined ? null : String(resources.pids)],
        ["Engine", run.engine ? `${run.engine}${run.pooled ? " (pooled container)" : ""}` : null],
        ["Prepared in", seconds(run.prepare_s)],
        ["Worker", job.worker_id],
        ["Ports", Object.entries(job.ports ?? {}).map(([name, port]) => `${name}=${port} `)],
        ["Warnings", (run.warnings ?? []).join("; ")],
        [
          "Limits",
          `${seconds(limits.timeout_s)} · ${limits.memory_mb} MB · ${limits.cpus} CPU · ${limits.pids} pids · ` +
            `${bytes(limits.output_bytes)} output · ${limits.disk_mb} MB disk`,
        ],
        ["Network", spec.network],
        ["Truncated", [job.stdout_truncated ? "stdout" : "", job.stderr_truncated ? "stderr" : ""].filter(Boolean).join(", ")],
      ]),
    ),
  ];
}
