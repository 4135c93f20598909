// Equations at any size, for the Steps tab of explore.js: bands that share the result's rows
// (row i of X beside row i of Q) and columns (column j of Wᵀ above column j of Q), the wiring
// between them, what a hover lights across the equation and the marks of an edit. Loaded after
// explore.js (whose state, steps and helpers it reads when called) and before matrices.js.
// A click on a cell opens the lens (lens.js) on it. Display only; text reaches the page through textContent.
"use strict";

const ROW_OPS = new Set(["softmax", "layer_norm", "rms_norm", "mean", "std", "rms", "argmax"]); // a result cell reads its whole input row
const gutterPx = () => (document.body.classList.contains("projector") ? 88 : 64); // px of row labels left of a band (Large text: wider)
function rowHeight(n) {
  const big = document.body.classList.contains("projector") ? 1.4 : 1;
  return big * (n <= 32 ? 14 : n <= 64 ? 11 : Math.max(0.5, Math.min(11, 720 / n)));
}
// Pixels a column: the budget shared, 2 to 14 px (fewer than 2 only where even 2 px would be 8192 px).
function colWidth(m, budget) {
  const px = Math.max(2, Math.min(14, budget / m));
  return px * m > 8192 ? 8192 / m : px;
}
// Pixels a row of an axis that lines up with nothing (the inner dimension of Wᵀ, a vocabulary).
const freeRows = (n, rowPx) => (n === 1 ? Math.max(rowPx, 11) : Math.min(rowPx, Math.max(0.25, 260 / n)));

function bandEquation(step, inputs, card) {
  const result = view(step, false);
  const T = result.shape[0], rowPx = rowHeight(T);
  const parts = [];
  const part = (s, role, opts, rows, cols, gutter, maxWidth) => {
    const v = view(s, opts.transposed);
    const b = band(v, palette(s), rows, cols, gutter);
    if (maxWidth && v.shape[1] * cols > maxWidth) wrapScroll(b, maxWidth);
    const fig = el("figure", "operand banded" + (role === "result" ? " result" : ""));
    fig.dataset.step = s.id;
    fig.dataset.role = role;
    fig.dataset.rowPx = String(rows);
    fig.appendChild(b.node);
    fig.appendChild(caption(s, opts));
    const p = { step: s, role, b, fig, transposed: !!opts.transposed, shape: v.shape };
    parts.push(p);
    return fig;
  };
  let node;
  const dot = (step.op === "linear" || step.op === "matmul") && inputs.length >= 2;
  if (dot) {
    // The matrix-multiplication layout: Wᵀ (k × n) above the result, the bias between, X (T × k) at its left.
    node = el("div", "mm");
    const [a, b, bias] = inputs;
    const n = result.shape[1], k = view(a.input, false).shape[1];
    const colPx = colWidth(n, 560), kPx = colWidth(k, 320);
    const right = part(b.input, "right", { transposed: b.transposed }, freeRows(k, rowPx), colPx, gutterPx(), 560);
    right.style.gridArea = "1 / 3";
    node.appendChild(right);
    node.appendChild(place(el("span", "opsym", "·"), "1 / 2"));
    if (bias) {
      node.appendChild(place(el("span", "opsym", "+"), "2 / 2"));
      node.appendChild(place(part(bias.input, "bias", {}, Math.max(rowPx, 11), colPx, gutterPx(), 560), "2 / 3"));
    }
    node.appendChild(place(part(a.input, "left", {}, rowPx, kPx, gutterPx(), 320), "3 / 1"));
    node.appendChild(place(el("span", "opsym", "="), "3 / 2"));
    node.appendChild(place(part(step, "result", { result: true }, rowPx, colPx, gutterPx(), 560), "3 / 3"));
    syncScroll(parts.filter((p) => p.role !== "left"));
  } else {
    node = el("div", "equation bands");
    const m = result.shape[1];
    const budget = Math.max(160, Math.min(560, 1000 / (inputs.length + 1) - gutterPx() - 24));
    const colPx = colWidth(m, budget);
    const [before, , after] = operatorOf(step);
    if (inputs.length && before) node.appendChild(el("span", "opsym", before));
    for (const { input, i, transposed, column } of inputs) {
      const sym = i > 0 && operandSymbol(step, i);
      if (sym) node.appendChild(el("span", "opsym", sym));
      const v = view(input, transposed);
      const rows = v.shape[0] === T ? rowPx : freeRows(v.shape[0], rowPx);
      const cols = v.shape[1] === m ? colPx : input.dtype === "int" ? 30 : colWidth(v.shape[1], budget);
      node.appendChild(part(input, "in" + i, { transposed, column }, rows, cols, v.shape[0] === T ? gutterPx() : 0, budget));
    }
    if (inputs.length) {
      if (after) node.appendChild(el("span", "opsym", after));
      node.appendChild(el("span", "opsym", "="));
    }
    node.appendChild(part(step, "result", { result: true }, rowPx, step.dtype === "int" ? 30 : colPx, gutterPx(), inputs.length ? budget : 900));
  }
  const eq = { step, parts, dot, card };
  for (const p of parts) wire(eq, p);
  return node;
}
const place = (node, area) => { node.style.gridArea = area; return node; };
function wrapScroll(b, maxWidth) {
  const scroller = el("div", "band-scroll");
  scroller.style.maxWidth = maxWidth + "px";
  b.node.replaceChild(scroller, b.plot);
  scroller.appendChild(b.plot);
  b.scroller = scroller;
}
// Wᵀ, the bias and the result scroll together, so that their columns stay aligned.
function syncScroll(parts) {
  const scrollers = parts.map((p) => p.b.scroller).filter(Boolean);
  for (const s of scrollers) {
    s.addEventListener("scroll", () => { for (const t of scrollers) if (t !== s && t.scrollLeft !== s.scrollLeft) t.scrollLeft = s.scrollLeft; });
  }
}

// Hover, click, the edited and the changed cells of one band.
function wire(eq, p) {
  const { step, b } = p;
  p.index = (at) => stepIndex(step, at, p.transposed);
  b.plot.addEventListener("mousemove", (event) => {
    const at = bandCell(b, event);
    if (!at) return;
    lightEquation(eq, p, at);
    const x = b.v.get(...at);
    const lines = [`${step.id}[${p.index(at).join(", ")}] = ${x === undefined ? word("lens_not_sent") : full(x)}`];
    if (b.v.rowLabels) lines.push(`${word("lens_row")} ${label(b.v.rowLabels, at[0])}`);
    lines.push(word("lens_click"));
    showTip(event, lines.join("\n"));
  });
  b.plot.addEventListener("mouseleave", () => { hideTip(); lightEquation(eq, null, null); });
  b.plot.addEventListener("click", (event) => {
    const at = bandCell(b, event);
    if (at) openCellLens(eq.card, step.id, p.index(at)); // lens.js
  });
  // The edited weight cell: outlined, at least 12 px across whatever the cell's size.
  if (step.op === "weight") {
    for (const e of state.edits) {
      const at = localEdit(step, e);
      if (at) b.plot.appendChild(mark("edit-mark", b, p.transposed ? [at[1], at[0]] : at, 12));
    }
  }
  markChanged(p);
  const picked = state.cellLens && state.cellLens.card === eq.card && state.cellLens.id === step.id ? state.cellLens.index : null;
  if (picked) {
    const at = picked.slice(-2);
    const drawn = picked.length === 1 ? [0, picked[0]] : p.transposed ? [at[1], at[0]] : at;
    b.plot.appendChild(mark("pick", b, drawn, 8));
  }
}
// A box over cell `at` (or a row [r, null], a column [null, c]), at least `least` px across.
function mark(cls, b, at, least) {
  const box = el("div", cls);
  const [r, c] = at;
  const h = r === null ? b.v.shape[0] * b.rowPx : Math.max(b.rowPx, least);
  const wdt = c === null ? b.v.shape[1] * b.colPx : Math.max(b.colPx, least);
  box.style.top = (r === null ? 0 : (r + 0.5) * b.rowPx - h / 2) + "px";
  box.style.left = (c === null ? 0 : (c + 0.5) * b.colPx - wdt / 2) + "px";
  box.style.height = h + "px";
  box.style.width = wdt + "px";
  return box;
}
// Cells an edit or an ablation changed (the new values against the previous answer's), tinted.
function markChanged(p) {
  const before = state.previous && state.previous.walkthrough.steps.find((s) => s.id === p.step.id);
  if (!before || JSON.stringify(before.shape) !== JSON.stringify(p.step.shape) || p.step.dtype !== "float") return;
  const v = p.b.v, u = view(before, p.transposed);
  const marks = el("canvas", "marks");
  marks.width = Math.max(1, v.m);
  marks.height = Math.max(1, v.n);
  const ctx = marks.getContext("2d");
  ctx.fillStyle = "rgba(124, 58, 237, 0.75)";
  let any = false;
  for (let r = 0; r < Math.min(v.n, u.n); r++) {
    for (let c = 0; c < Math.min(v.m, u.m); c++) {
      const x = v.get(r, c), y = u.get(r, c);
      if (typeof x === "number" && typeof y === "number" && Math.abs(x - y) > 1e-9 * Math.max(1, Math.abs(y))) {
        ctx.fillRect(c, r, 1, 1);
        any = true;
      }
    }
  }
  if (!any) return;
  marks.style.width = v.m * p.b.colPx + "px";
  marks.style.height = v.n * p.b.rowPx + "px";
  p.b.plot.appendChild(marks);
  p.fig.classList.add("has-changed");
}

// What hovered cell `at` of part `from` is made of, or feeds, lit in every matrix of the equation:
// a result cell of Q = X·Wᵀ + b lights row r of X, column c of Wᵀ and b; a cell of X its row of Q
// and its row of Wᵀ; an elementwise result the same cell of each operand (the whole row where the
// op reads the row: softmax, the norms).
function lightEquation(eq, from, at) {
  for (const p of eq.parts) for (const old of p.b.plot.querySelectorAll(".lit")) old.remove();
  if (!from) return;
  for (const p of eq.parts) {
    const rule = p === from ? at : lightRule(eq.dot, eq.step.op, from, p, at);
    if (rule) p.b.plot.appendChild(mark("lit", p.b, rule, 4));
  }
}
// What of part p (a {role, shape} drawn n × m) hovered cell `at` of part `from` lights: [r, c] a
// cell, [r, null] a row, [null, c] a column, null nothing.
function lightRule(dot, op, from, p, at) {
  const [r, c] = at;
  if (dot) {
    const rules = {
      result: { left: [r, null], right: [null, c], bias: [null, c] },
      left: { result: [r, null], right: [c, null] },
      right: { left: [null, r], result: [null, c], bias: [null, c] },
      bias: { right: [null, c], result: [null, c] },
    };
    return (rules[from.role] || {})[p.role] || null;
  }
  const [n, m] = p.shape, [fn, fm] = from.shape;
  const rows = n === fn && n > 1, cols = m === fm && m > 1;
  const wholeRow = ROW_OPS.has(op) && (from.role === "result" || p.role === "result");
  if (rows && cols && !wholeRow) return [r, c];
  if (rows) return [r, null];
  if (cols) return [null, c];
  return null;
}
// The same in an equation of numbers tables (the articles' example): the cells lit by class.
function lightTables(equation, step, fig, at) {
  for (const td of equation.querySelectorAll("td.lit")) td.classList.remove("lit");
  if (!at) return;
  const dot = step.op === "linear" || step.op === "matmul";
  const part = (f) => {
    const body = f.querySelector("tbody");
    const rows = body ? body.rows.length : 0;
    return { role: f.dataset.role, shape: [rows, rows ? body.rows[0].cells.length - 1 : 0], body };
  };
  const from = part(fig);
  for (const f of equation.querySelectorAll("figure.operand")) {
    const p = part(f);
    if (!p.body) continue;
    const rule = f === fig ? at : lightRule(dot, step.op, from, p, at);
    if (!rule) continue;
    const [r, c] = rule;
    [...p.body.rows].forEach((tr, i) => {
      if (r !== null && i !== r) return;
      [...tr.cells].slice(1).forEach((td, j) => { if (c === null || j === c) td.classList.add("lit"); });
    });
  }
}
