// Building the page from data without ever parsing it as HTML: every string becomes a text node or an
// attribute value, so job output, labels and messages (all untrusted) can never turn into markup.

/**
 * Make an element. `props`: `class`, `text`, `title`, `href` (internal `#/` links only), `data` (dataset),
 * `on` (event handlers), any other key an attribute. Children: nodes, strings (as text), null (skipped), arrays.
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") element.className = value;
    else if (key === "text") element.textContent = String(value);
    else if (key === "data") Object.assign(element.dataset, value);
    else if (key === "on") for (const [event, handler] of Object.entries(value)) element.addEventListener(event, handler);
    else if (key === "href") element.setAttribute("href", internalHref(value));
    else if (key.startsWith("on") || key === "style" || key === "srcdoc") throw new Error(`h(): ${key} is not allowed`);
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

function internalHref(value) {
  const href = String(value);
  if (!href.startsWith("#/")) throw new Error(`h(): only internal links are made here, not ${href}`);
  return href;
}

function append(parent, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else if (child instanceof Node) parent.append(child);
    else parent.append(document.createTextNode(String(child)));
  }
}

/** A link to a view: `#/jobs/<id>`, with the id encoded. */
export function viewLink(kind, id) {
  return `#/${kind}/${encodeURIComponent(id)}`;
}

export function badge(kind, value) {
  return h("span", { class: `badge ${kind}-${value}`, data: { [kind]: value }, text: value });
}

export function chips(labels) {
  return Object.entries(labels ?? {}).map(([key, value]) =>
    h("span", { class: "chip", title: `${key}=${value}`, text: `${key}=${value}` }),
  );
}

/** A definition list from [term, value] pairs; pairs whose value is null or "" are left out. */
export function facts(pairs) {
  const list = h("dl", { class: "facts" });
  for (const [term, value] of pairs) {
    if (value === null || value === undefined || value === "" || (Array.isArray(value) && value.length === 0)) continue;
    list.append(h("dt", { text: term }), h("dd", {}, value));
  }
  return list;
}

export function panel(title, ...children) {
  return h("section", { class: "panel" }, h("h2", {}, title), ...children);
}

export function table(headers, rows, { empty = "Nothing here yet." } = {}) {
  const head = h("tr", {}, headers.map(([label, cls]) => h("th", { class: cls, text: label })));
  const body = h("tbody");
  for (const row of rows) body.append(row);
  if (rows.length === 0) body.append(h("tr", {}, h("td", { class: "empty", colspan: headers.length, text: empty })));
  return h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, head), body));
}

// Formatting

export function ago(iso) {
  if (!iso) return "";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.floor(seconds)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

export function seconds(value) {
  if (value === null || value === undefined) return "";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 60) return `${value.toFixed(value < 10 ? 2 : 1)} s`;
  const minutes = Math.floor(value / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(value % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function bytes(value) {
  if (value === null || value === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let size = value;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return `${size.toFixed(unit === 0 || size >= 100 ? 0 : 1)} ${units[unit]}`;
}

export function shortId(id) {
  return id.length > 14 ? `${id.slice(0, 12)}…` : id;
}

/** A command as a person would type it: arguments with spaces or quotes are quoted. */
export function commandLine(args) {
  return (args ?? []).map((arg) => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`)).join(" ");
}
