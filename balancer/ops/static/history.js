// The status page's charts: the last 15 minutes from /status/history, drawn as inline SVG.
// No library, no build step. Every chart carries the reload and ejection markers; text
// from the balancer (route templates come from client requests) is only ever set with
// textContent or as an attribute value, never parsed as markup.
"use strict";

const History = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const W = 560, H = 170, L = 48, R = 10, T = 10, B = 22;
  const KEEP_S = 15 * 60;
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
                   "#17becf", "#bcbd22", "#7f7f7f", "#d62728", "#393b79", "#637939"];
  const STATUS_COLORS = {"1xx": "#9e9e9e", "2xx": "#2e7d32", "3xx": "#1565c0",
                         "4xx": "#ef6c00", "5xx": "#c62828"};
  const MARKER_COLORS = {reload: "#1565c0", ejection: "#c62828"};
  let points = [];
  let events = [];
  let last = null;

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (parent) parent.appendChild(node);
    return node;
  }

  function clock(t) {
    return new Date(t * 1000).toLocaleTimeString([], {hour12: false});
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const step = Math.pow(10, Math.floor(Math.log10(value)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return m * step;
    return 10 * step;
  }

  function fmt(v) {
    return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toPrecision(2).replace(/\.?0+$/, "");
  }

  // spec: {id, title, unit, series: [{name, color, dash, values: [[t, v|null]]}],
  //        stacked, hlines: [{name, value, color}], dots: [{t, v, text}]}
  function chart(spec, t0, t1) {
    const box = document.createElement("figure");
    box.className = "chart";
    const caption = document.createElement("figcaption");
    caption.textContent = spec.title;
    box.appendChild(caption);
    const svg = el("svg", {viewBox: `0 0 ${W} ${H}`, width: W, height: H,
                           "data-chart": spec.id, role: "img"});
    svg.setAttribute("aria-label", spec.title);
    box.appendChild(svg);
    const xs = t => L + (W - L - R) * (t1 > t0 ? (t - t0) / (t1 - t0) : 1);
    let top = 0;
    const stack = new Map();  // t -> running sum (stacked charts)
    const shapes = [];
    for (const s of spec.series) {
      const vals = s.values.map(([t, v]) => {
        if (v === null || v === undefined) return [t, null, null];
        const base = spec.stacked ? (stack.get(t) || 0) : 0;
        if (spec.stacked) stack.set(t, base + v);
        top = Math.max(top, base + v);
        return [t, base, base + v];
      });
      shapes.push([s, vals]);
    }
    const right = spec.right ? niceMax(1.05 * Math.max(0, ...spec.right.values
      .map(([, v]) => v ?? 0))) : null;  // one more series, on its own scale (right axis)
    if (spec.right) {
      shapes.push([spec.right, spec.right.values.map(([t, v]) =>
        [t, 0, v === null || v === undefined ? null : v]), true]);
    }
    for (const h of spec.hlines || []) top = Math.max(top, h.value);
    for (const d of spec.dots || []) top = Math.max(top, d.v);
    const ymax = niceMax(top * 1.05);
    const ys = v => T + (H - T - B) * (1 - v / ymax);
    const yr = v => T + (H - T - B) * (1 - v / right);
    for (const f of [0, 0.5, 1]) {  // grid and y labels
      const y = ys(ymax * f);
      el("line", {x1: L, x2: W - R, y1: y, y2: y, stroke: "#e3e3e3"}, svg);
      const label = el("text", {x: L - 4, y: y + 4, "text-anchor": "end", class: "tick"}, svg);
      label.textContent = fmt(ymax * f) + (f === 1 && spec.unit ? " " + spec.unit : "");
    }
    if (spec.right) {
      const label = el("text", {x: W - R, y: T + 4, "text-anchor": "end", class: "tick",
                                fill: spec.right.color}, svg);
      label.textContent = `${fmt(right)} ${spec.right.unit} (right)`;
    }
    for (const [t, anchor] of [[t0, "start"], [t1, "end"]]) {
      const label = el("text", {x: xs(t), y: H - 6, "text-anchor": anchor, class: "tick"}, svg);
      label.textContent = clock(t);
    }
    for (const [s, vals, onRight] of shapes) {
      const y = onRight ? yr : ys;
      let d = "";
      let pen = false;
      for (const [t, base, v] of vals) {
        if (v === null) { pen = false; continue; }
        d += (pen ? "L" : "M") + xs(t).toFixed(1) + " " + y(v).toFixed(1);
        pen = true;
      }
      if (spec.stacked) {  // an area: down the stack's base, back to the start
        const back = vals.filter(([, b]) => b !== null).reverse()
          .map(([t, base]) => "L" + xs(t).toFixed(1) + " " + ys(base).toFixed(1)).join("");
        if (d) el("path", {d: d + back + "Z", fill: s.color, "fill-opacity": 0.55,
                           stroke: "none"}, svg);
      }
      const path = el("path", {d: d || "M0 0", fill: "none", stroke: s.color,
                               "stroke-width": 1.6, "data-series": s.name,
                               "data-points": vals.filter(([, , v]) => v !== null).length},
                      svg);
      if (s.dash) path.setAttribute("stroke-dasharray", s.dash);
    }
    for (const h of spec.hlines || []) {
      const line = el("line", {x1: L, x2: W - R, y1: ys(h.value), y2: ys(h.value),
                               stroke: h.color || "#555", "stroke-dasharray": "6 3",
                               "data-limit": h.name}, svg);
      el("title", {}, line).textContent = `${h.name}: ${fmt(h.value)}`;
    }
    for (const d of spec.dots || []) {
      if (d.t < t0 || d.t > t1) continue;
      const dot = el("circle", {cx: xs(d.t), cy: ys(d.v), r: 4, fill: "#fff",
                                stroke: "#000", "stroke-width": 1.5, "data-marker": "class"},
                     svg);
      el("title", {}, dot).textContent = d.text;
    }
    for (const e of events) {
      if (!(e.kind in MARKER_COLORS) || e.t < t0 || e.t > t1) continue;
      const x = xs(e.t);
      const mark = el("line", {x1: x, x2: x, y1: T, y2: H - B, stroke: MARKER_COLORS[e.kind],
                               "stroke-width": 1.5, "stroke-dasharray": e.kind === "reload"
                                 ? "4 2" : "1 2", "data-marker": e.kind}, svg);
      el("title", {}, mark).textContent = `${clock(e.t)} ${e.text}`;
    }
    const legend = document.createElement("div");
    legend.className = "legend";
    for (const s of [...spec.series, ...(spec.right ? [spec.right] : []),
                     ...(spec.hlines || [])]) {
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = s.color || "#555";
      item.append(swatch, s.name);
      legend.appendChild(item);
    }
    box.appendChild(legend);
    return box;
  }

  function series(name, color, pick, dash) {
    return {name, color, dash, values: points.map(p => [p.t, pick(p)])};
  }

  function keys(pick) {  // every key seen in the points, in the order first seen
    const seen = new Set();
    for (const p of points) for (const k of Object.keys(pick(p) || {})) seen.add(k);
    return [...seen];
  }

  function render(container) {
    container.replaceChildren();
    if (points.length < 2) {
      const p = document.createElement("p");
      p.className = "empty";
      p.textContent = "collecting (one point a second)…";
      container.appendChild(p);
      return;
    }
    const t0 = points[0].t, t1 = points[points.length - 1].t;
    const pools = keys(p => p.rps).concat(keys(p => p.queue)).filter((v, i, a) => a.indexOf(v) === i);
    const backends = keys(p => p.backends);
    const charts = [];
    for (const pool of pools) {
      const classes = keys(p => p.rps[pool]).sort();
      charts.push({id: `rps-${pool}`, title: `Requests/s, pool ${pool}, by status`,
                   unit: "/s", stacked: true,
                   series: classes.map(c => series(c, STATUS_COLORS[c] || "#000",
                                                   p => (p.rps[pool] || {})[c] ?? 0))});
    }
    charts.push({id: "latency", title: "Latency p50 (solid) and p99 (dashed) per pool",
                 unit: "ms", series: pools.flatMap((pool, i) => [
                   series(`${pool} p50`, PALETTE[i % 12], p => p.p50_ms[pool] ?? null),
                   series(`${pool} p99`, PALETTE[i % 12], p => p.p99_ms[pool] ?? null, "5 3"),
                 ])});
    for (const pool of pools) {
      const mine = backends.filter(b => points.some(p => p.backends[b]?.pool === pool));
      if (mine.length === 0) continue;
      const lastPoint = points[points.length - 1];
      const cap = Math.max(...mine.map(b => lastPoint.backends[b]?.cap ?? 0));
      charts.push({id: `inflight-${pool}`,
                   title: `In flight per backend, pool ${pool} (cap ${cap}), queue and spill`,
                   series: [
                     ...mine.map((b, i) => series(b, PALETTE[i % 12],
                                                  p => p.backends[b]?.inflight ?? null)),
                     series("queued", "#555", p => p.queue[pool] ?? 0, "2 2"),
                   ],
                   right: {...series("spilled/s", "#9c27b0", p => p.spill[pool] ?? 0, "8 3"),
                           unit: "spilled/s"},
                   hlines: [{name: "cap", value: cap, color: "#c62828"}]});
    }
    const routes = keys(p => p.routes);
    if (routes.length) {
      const threshold = points[points.length - 1].threshold_ms;
      const dots = events.filter(e => e.kind === "class").map(e => {
        const at = points.find(p => p.t >= e.t) || points[points.length - 1];
        return {t: e.t, v: at.routes[e.route]?.cpu_ms ?? 0, text: e.text};
      });
      charts.push({id: "routes", title: "Learned route CPU cost (class changes circled)",
                   unit: "ms", series: routes.map((r, i) => series(
                     r, PALETTE[i % 12], p => p.routes[r]?.cpu_ms ?? null)),
                   hlines: [{name: "heavy threshold", value: threshold, color: "#c62828"}],
                   dots});
    }
    charts.push({id: "weights", title: "Backend weights", series: backends.map((b, i) =>
      series(b, PALETTE[i % 12], p => p.backends[b]?.weight ?? null))});
    const grid = document.createElement("div");
    grid.className = "charts";
    for (const spec of charts) grid.appendChild(chart(spec, t0, t1));
    container.appendChild(grid);
  }

  async function refresh(container, headers) {
    const query = last === null ? "" : `?since=${last}`;
    const resp = await fetch("status/history" + query, {cache: "no-store", headers});
    if (!resp.ok) throw new Error(`history: HTTP ${resp.status}`);
    const doc = await resp.json();
    const fresh = doc.points.filter(p => last === null || p.t > last);
    points = points.concat(fresh);
    events = doc.events;  // always all of them (few)
    if (points.length) last = points[points.length - 1].t;
    const cut = (last ?? 0) - KEEP_S;
    points = points.filter(p => p.t >= cut);
    events = events.filter(e => e.t >= cut);
    render(container);
  }

  return {refresh};
})();
