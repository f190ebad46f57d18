// Line charts drawn by hand in inline SVG: axes with a few ticks and one
// polyline per series. Each polyline carries data-points (its point count)
// so a test can read what was drawn.

const NS = "http://www.w3.org/2000/svg";
const W = 600, H = 240, LEFT = 52, RIGHT = 12, TOP = 10, BOTTOM = 28;

function node(tag, attrs, text) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}

function ticks(lo, hi, count) {
  if (hi === lo) return [lo];
  return Array.from({ length: count }, (_, i) => lo + ((hi - lo) * i) / (count - 1));
}

function label(value) {
  return Math.abs(value) >= 100 || Number.isInteger(value) ? String(Math.round(value)) : value.toPrecision(3);
}

// series: [{name, points: [[x, y], ...]}]; options: {yMin, yMax} to pin the y range.
export function drawChart(svg, series, options = {}) {
  svg.replaceChildren();
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) {
    svg.append(node("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, "no steps yet"));
    return;
  }
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let y0 = options.yMin ?? Math.min(...ys), y1 = options.yMax ?? Math.max(...ys);
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const sx = (x) => LEFT + ((x - x0) / (x1 - x0)) * (W - LEFT - RIGHT);
  const sy = (y) => H - BOTTOM - ((y - y0) / (y1 - y0)) * (H - TOP - BOTTOM);

  svg.append(node("line", { x1: LEFT, y1: H - BOTTOM, x2: W - RIGHT, y2: H - BOTTOM, class: "axis" }));
  svg.append(node("line", { x1: LEFT, y1: TOP, x2: LEFT, y2: H - BOTTOM, class: "axis" }));
  for (const y of ticks(y0, y1, 5)) {
    svg.append(node("line", { x1: LEFT, y1: sy(y), x2: W - RIGHT, y2: sy(y), class: "grid" }));
    svg.append(node("text", { x: LEFT - 6, y: sy(y) + 4, "text-anchor": "end" }, label(y)));
  }
  // Steps are whole numbers: the x ticks are too, without repeats.
  for (const x of new Set(ticks(x0, x1, Math.min(6, x1 - x0 + 1)).map(Math.round))) {
    svg.append(node("text", { x: sx(x), y: H - BOTTOM + 16, "text-anchor": "middle" }, label(x)));
  }
  for (const s of series) {
    if (s.points.length === 0) continue;
    const points = s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
    svg.append(node("polyline", { points, class: `series ${s.name}`, "data-points": s.points.length }));
    if (s.points.length === 1) {
      const [x, y] = s.points[0];
      svg.append(node("circle", { cx: sx(x), cy: sy(y), r: 3, class: `dot ${s.name}` }));
    }
  }
}
