// One grading: its verdict and score, the compiler's output, and the per-test verdict table; its progress
// (a line per test) followed live while it runs.

import { badge, bytes, facts, h, panel, seconds, table, viewLink } from "./dom.js";
import { killButton } from "./kill.js";
import { FINAL, watchUntilFinal } from "./live.js";
import { outputPanel } from "./output.js";

export function gradeView(container, signal, id) {
  const stateSlot = h("span");
  const notice = h("p", { class: "notice error", role: "alert", hidden: true });
  const kill = killButton(`/grade/${encodeURIComponent(id)}`, id, (result) => show(result));
  kill.button.hidden = true;
  const summary = h("div", { class: "grid cards" });
  const details = h("div");
  container.append(
    h("p", {}, h("a", { href: "#/?kind=grade", text: "← Gradings" })),
    h("h1", {}, "Grade ", h("span", { class: "mono", text: id }), stateSlot),
    notice,
    h("div", { class: "actions" }, kill.button, kill.result, h("a", { href: viewLink("jobs", id), text: "Job page →" })),
    summary,
    details,
    outputPanel(id, signal, { title: "Progress", streams: ["stdout"] }),
  );

  function show(result) {
    notice.hidden = true;
    stateSlot.replaceChildren(...[badge("state", result.state), result.verdict && badge("verdict", result.verdict)].filter(Boolean));
    kill.button.hidden = FINAL.has(result.state) || kill.button.disabled;
    summary.replaceChildren(
      card("Verdict", result.verdict ? badge("verdict", result.verdict) : result.state, result.message ?? ""),
      card("Score", `${number(result.score)} / ${number(result.max_score)}`),
      card("Tests passed", `${result.passed} / ${result.total}`),
      card("Compile", result.compile ? `exit ${result.compile.exit_code ?? "?"}` : "–", result.compile ? seconds(result.compile.wall_s) : ""),
    );
    details.replaceChildren(
      result.compile ? compilePanel(result.compile) : "",
      panel(h("span", {}, "Tests"), testsTable(result)),
      result.groups?.length ? panel("Groups", groupsTable(result.groups)) : "",
    );
  }

  watchUntilFinal(`/grade/${encodeURIComponent(id)}`, show, signal, (error) => {
    notice.textContent = error.status === 404 ? `There is no grading ${id} on this worker.` : `Could not load the grading: ${error.message}`;
    notice.hidden = false;
  });
}

function card(label, value, sub = "") {
  return h("div", { class: "card" }, h("div", { class: "label", text: label }), h("div", { class: "value" }, value), h("div", { class: "sub", text: sub }));
}

function number(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(2);
}

function compilePanel(compile) {
  return panel(
    "Compile",
    facts([
      ["Exit code", compile.exit_code === null ? null : String(compile.exit_code)],
      ["CPU time", seconds(compile.time_s)],
      ["Wall time", seconds(compile.wall_s)],
    ]),
    h("pre", { class: "output", id: "compile-output", text: compile.output || "(no output)" }),
  );
}

function testsTable(result) {
  const rows = result.tests.map((test) =>
    h(
      "tr",
      { data: { test: test.name } },
      h("td", { class: "mono", text: test.name }),
      h("td", {}, badge("verdict", test.verdict)),
      h("td", { class: "num", text: number(test.points) }),
      h("td", { class: "num", text: seconds(test.time_s) }),
      h("td", { class: "num", text: seconds(test.wall_s) }),
      h("td", { class: "num", text: bytes(test.memory_bytes) }),
      h("td", { class: "num", text: test.signal ? `signal ${test.signal}` : (test.exit_code ?? "").toString() }),
      h("td", { text: test.checker_message ?? "" }),
    ),
  );
  const empty = FINAL.has(result.state) ? "No test ran." : "Tests appear here once the grading has ended; its progress is below.";
  const headers = [["Test"], ["Verdict"], ["Points", "num"], ["CPU", "num"], ["Wall", "num"], ["Memory", "num"], ["Exit", "num"], ["Checker"]];
  const wrap = table(headers, rows, { empty });
  wrap.querySelector("table").id = "tests";
  return wrap;
}

function groupsTable(groups) {
  return table(
    [["Group"], ["Verdict"], ["Score", "num"]],
    groups.map((group) =>
      h("tr", {}, h("td", { text: group.name }), h("td", {}, badge("verdict", group.verdict)), h("td", { class: "num", text: number(group.score) })),
    ),
  );
}
