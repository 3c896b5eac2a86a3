// Small SVG charts of the last hour, drawn from GET /stats buckets: stacked bars for counts, lines for
// percentiles. Shapes carry classes only (colours are in style.css, for light and dark); each minute has a
// tooltip with its figures.

const NS = "http://www.w3.org/2000/svg";
const WIDTH = 420;
const HEIGHT = 170;
const M = { top: 10, right: 8, bottom: 22, left: 50 };
const TICKS = 4;

function svg(tag, attrs = {}, ...children) {
  const element = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) element.setAttribute(key, String(value));
  for (const child of children) element.append(child);
  return element;
}

function text(x, y, content, attrs = {}) {
  const element = svg("text", { x, y, ...attrs });
  element.textContent = content;
  return element;
}

/** The axis' top: `TICKS` round steps (1, 2, 2.5 or 5 times a power of ten; whole ones for counts) above `value`. */
function niceMax(value, { whole = false } = {}) {
  const wanted = value > 0 ? value / TICKS : 1 / TICKS;
  const power = 10 ** Math.floor(Math.log10(wanted));
  let step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((candidate) => candidate >= wanted);
  if (whole) step = Math.max(1, Math.ceil(step));
  return step * TICKS;
}

function hhmm(iso) {
  const date = new Date(iso);
  return `${String(date.getHours()).padStart(2, "0")}:${String(date.getMinutes()).padStart(2, "0")}`;
}

function frame(name, buckets, max, format) {
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "data-chart": name });
  const plotW = WIDTH - M.left - M.right;
  const plotH = HEIGHT - M.top - M.bottom;
  const y = (value) => M.top + plotH - (value / max) * plotH;
  for (let i = 0; i <= TICKS; i += 1) {
    const value = (max * i) / TICKS;
    root.append(svg("line", { class: "grid-line", x1: M.left, x2: WIDTH - M.right, y1: y(value), y2: y(value) }));
    root.append(text(M.left - 6, y(value) + 4, format(value), { "text-anchor": "end" }));
  }
  const step = plotW / buckets.length;
  buckets.forEach((bucket, i) => {
    if (new Date(bucket.start).getMinutes() % 15 === 0) {
      root.append(text(M.left + i * step, HEIGHT - 6, hhmm(bucket.start), { "text-anchor": "middle" }));
    }
  });
  root.append(svg("line", { class: "axis", x1: M.left, x2: WIDTH - M.right, y1: y(0), y2: y(0) }));
  return { root, y, step, x: (i) => M.left + i * step, plotH };
}

function hover(root, x, width, tooltip) {
  const zone = svg("rect", { class: "hover", x, y: M.top, width, height: HEIGHT - M.top - M.bottom });
  zone.append(svg("title"));
  zone.firstChild.textContent = tooltip;
  root.append(zone);
}

/** Stacked bars per bucket: `series` is [{key, label, cls}], counts summed bottom up. */
export function barChart(name, buckets, series) {
  const max = niceMax(Math.max(0, ...buckets.map((b) => series.reduce((sum, s) => sum + b[s.key], 0))), { whole: true });
  const { root, y, step, x } = frame(name, buckets, max, (v) => (Number.isInteger(v) ? String(v) : v.toFixed(1)));
  buckets.forEach((bucket, i) => {
    let base = 0;
    for (const s of series) {
      const value = bucket[s.key];
      if (value > 0) {
        root.append(
          svg("rect", { class: `bar ${s.cls}`, x: x(i) + 1, width: Math.max(1, step - 2), y: y(base + value), height: y(base) - y(base + value), "data-value": value }),
        );
      }
      base += value;
    }
    hover(root, x(i), step, `${hhmm(bucket.start)}: ${series.map((s) => `${bucket[s.key]} ${s.label}`).join(", ")}`);
  });
  return root;
}

/** Lines per series over the buckets (null values break the line); `format` labels the axis and tooltips. */
export function lineChart(name, buckets, series, format) {
  const values = buckets.flatMap((b) => series.map((s) => b[s.key])).filter((v) => v !== null);
  const max = niceMax(Math.max(0, ...values));
  const { root, y, step, x } = frame(name, buckets, max, format);
  const centre = (i) => x(i) + step / 2;
  for (const s of series) {
    let path = "";
    let drawing = false;
    buckets.forEach((bucket, i) => {
      const value = bucket[s.key];
      if (value === null) {
        drawing = false;
        return;
      }
      path += `${drawing ? "L" : "M"}${centre(i).toFixed(1)},${y(value).toFixed(1)} `;
      drawing = true;
      root.append(svg("circle", { class: `dot ${s.cls}`, cx: centre(i), cy: y(value), r: 2.5, "data-value": value }));
    });
    if (path) root.append(svg("path", { class: `line ${s.cls}`, d: path.trim() }));
  }
  buckets.forEach((bucket, i) => {
    const parts = series.map((s) => `${s.label} ${bucket[s.key] === null ? "–" : format(bucket[s.key])}`);
    hover(root, x(i), step, `${hhmm(bucket.start)}: ${parts.join(", ")}`);
  });
  return root;
}
