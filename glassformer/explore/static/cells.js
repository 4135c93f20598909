// Cells of the Steps tab's numbers tables, for explore.js: what each was computed from (hover),
// editing a weight (a click), what an edit changed (outlined), and the list of edits. Loaded after
// explore.js (whose state and helpers it reads when called). Text reaches the page through textContent.
"use strict";

// The drawn cell (r, c) of a table as (row, column) of the step's last two axes.
function cellAt(td, options) {
  const tr = td.parentElement;
  if (!tr || tr.parentElement.tagName !== "TBODY" || td.tagName !== "TD" || td.classList.contains("more")) return null;
  const r = tr.sectionRowIndex, c = td.cellIndex - 1;
  return options.transposed ? [c, r] : [r, c];
}
const valueAt = (step, r, c) => {
  const v = view(step, false);
  return r < v.n && c < v.m ? v.get(r, c) : undefined;
};
const fmt = (x) => (x === undefined ? "…" : number(x, 4));
// Row r of a step (its first 8 values), "…" where the row was not sent (a truncated step's corner).
function rowOf(step, r, transpose) {
  const v = view(step, transpose);
  if (r >= v.n) return "[…]";
  const out = [];
  for (let c = 0; c < Math.min(v.m, 8); c++) out.push(fmt(v.get(r, c)));
  return "[" + out.join(", ") + (v.shape[1] > 8 ? ", …" : "") + "]";
}

// What cell (r, c) of a result was computed from, in words and numbers (the lens has all of it).
function provenance(step, r, c) {
  const inputs = step.inputs.map((id) => fullStep(id));
  const lines = [];
  const name = (s) => s.id;
  if ((step.op === "linear" || step.op === "matmul") && inputs[0] && inputs[1]) {
    const [a, b, bias] = inputs;
    const bColumn = step.op === "linear" ? rowOf(b, c, false) : rowOf(b, c, true);
    lines.push(`= ${name(a)}[${r}, :] · ${name(b)}${step.op === "linear" ? `[${c}, :]` : `[:, ${c}]`}` + (bias ? ` + ${name(bias)}[${c}]` : ""));
    lines.push(`${name(a)}[${r}] = ${rowOf(a, r, false)}`);
    lines.push(`${name(b)}${step.op === "linear" ? `[${c}]` : `[:, ${c}]`} = ${bColumn}`);
    if (bias) lines.push(`${name(bias)}[${c}] = ${fmt(valueAt(bias, 0, c))}`);
  } else {
    for (const s of inputs) {
      if (!s || s.values === undefined && s.corner === undefined) continue;
      const same = JSON.stringify(s.shape) === JSON.stringify(step.shape);
      if (same) lines.push(`${name(s)}[${r}, ${c}] = ${fmt(valueAt(s, r, c))}`);
      else if (s.shape && s.shape.length && s.shape[s.shape.length - 1] === 1) lines.push(`${name(s)}[${r}] = ${fmt(valueAt(s, r, 0))}`);
      else lines.push(`${word("from")} ${name(s)} (${shapeText(s)})`);
    }
  }
  lines.push(word("lens_click"));
  return lines;
}

// The state-dict index of a weight step's cell (r, c): params.rows offsets the first axis.
function editIndex(step, r, c) {
  const off = step.params && step.params.rows ? step.params.rows[0] : 0;
  return step.shape.length === 1 ? [off + c] : [off + r, c];
}

function decorate(drawn, step, options) {
  for (const td of drawn.querySelectorAll ? drawn.querySelectorAll("td") : []) td.removeAttribute("title");
  const table = drawn.tagName === "TABLE" ? drawn : null;
  // Cells an edit or an ablation changed: the new values compared with the previous answer's.
  const before = state.previous && state.previous.walkthrough.steps.find((s) => s.id === step.id);
  if (table && before && JSON.stringify(before.shape) === JSON.stringify(step.shape)) {
    for (const td of table.querySelectorAll("tbody td")) {
      const at = cellAt(td, options);
      if (!at) continue;
      const [x, y] = [valueAt(step, ...at), valueAt(before, ...at)];
      if (typeof x === "number" && typeof y === "number" && Math.abs(x - y) > 1e-9 * Math.max(1, Math.abs(y))) td.classList.add("changed");
    }
  }
  const editable = step.op === "weight" && step.params && step.params.name && step.dtype === "float";
  if (table && editable) {
    table.classList.add("editable");
    for (const td of table.querySelectorAll("tbody td")) {
      const at = cellAt(td, options);
      if (!at) continue;
      const index = editIndex(step, ...at);
      td.dataset.editName = step.params.name;
      td.dataset.editIndex = JSON.stringify(index);
      if (state.edits.some((e) => e.name === step.params.name && JSON.stringify(e.index) === JSON.stringify(index))) td.classList.add("edited");
    }
  }
  if (table) {
    // A click opens the lens on a cell (a weight's own table: the click edits it instead).
    const picked = state.cellLens && state.cellLens.id === step.id && state.cellLens.card === options.card ? JSON.stringify(state.cellLens.index) : null;
    for (const td of table.querySelectorAll("tbody td")) {
      const at = cellAt(td, options);
      if (at && picked === JSON.stringify(stepIndex(step, at, false))) td.classList.add("picked");
    }
    table.addEventListener("click", (event) => {
      const td = event.target.closest("td");
      if (!td || td.querySelector("input")) return;
      const at = cellAt(td, options);
      if (!at) return;
      if (editable && td.dataset.editName) startEdit(td, step, at);
      else if (options.card) openCellLens(options.card, step.id, stepIndex(step, at, false)); // lens.js
    });
  }
  const heat = !table && (drawn.tagName === "CANVAS" ? drawn : drawn.querySelector && drawn.querySelector("canvas"));
  if (heat && options.of) { // a heatmap: matrices.js says the value; the explorer adds what it came from
    const v = view(step, options.transposed);
    heat.addEventListener("mousemove", (event) => {
      const box = heat.getBoundingClientRect();
      const c = Math.min(v.m - 1, Math.floor(((event.clientX - box.left) / box.width) * v.m));
      const r = Math.min(v.n - 1, Math.floor(((event.clientY - box.top) / box.height) * v.n));
      showTip(event, [`${step.id}[${r}, ${c}] = ${full(v.get(r, c))}`, ...provenance(step, r, c)].join("\n"));
    });
  }
  if (!table) return;
  table.addEventListener("mouseover", (event) => {
    const td = event.target.closest("td");
    const at = td && cellAt(td, options);
    if (!at) return;
    const x = valueAt(step, ...at);
    const lines = [`${step.id}[${at.join(", ")}] = ${full(x)}`];
    if (options.of) lines.push(...provenance(step, ...at));
    if (td.classList.contains("changed")) lines.push(word("changed"));
    if (editable) lines.push(word("edit_hint"));
    showTip(event, lines.join("\n"));
    lightOperands(drawn, options, td);
  });
  table.addEventListener("mouseleave", () => { hideTip(); lightOperands(drawn, options, null); });
}

// What a hovered cell of an equation's table is made of, or feeds, lit across the equation.
function lightOperands(drawn, options, td) {
  const equation = drawn.closest(".equation");
  const fig = drawn.closest("figure");
  if (!equation || !fig || !options.card || !fullStep(options.card)) return;
  lightTables(equation, fullStep(options.card), fig, td ? [td.parentElement.sectionRowIndex, td.cellIndex - 1] : null);
}

function startEdit(td, step, at) {
  const input = el("input", "cell-edit");
  input.type = "number";
  input.step = "any";
  input.value = String(valueAt(step, ...at));
  td.textContent = "";
  td.appendChild(input);
  input.focus();
  input.select();
  let done = false;
  const finish = (keep) => {
    if (done) return;
    done = true;
    const value = Number(input.value);
    if (keep && input.value.trim() !== "" && Number.isFinite(value)) {
      setEdit(step.params.name, JSON.parse(td.dataset.editIndex), value);
    } else {
      render();
    }
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") finish(true);
    if (event.key === "Escape") finish(false);
  });
  input.addEventListener("blur", () => finish(true));
}
function setEdit(name, index, value) {
  const key = JSON.stringify(index);
  state.edits = state.edits.filter((e) => !(e.name === name && JSON.stringify(e.index) === key));
  state.edits.push({ name, index, value });
  drawEdits();
  run();
}

function drawEdits() {
  const box = document.getElementById("gx-edits");
  box.textContent = "";
  box.appendChild(say(el("h2"), w("edits")));
  if (!state.edits.length) box.appendChild(say(el("p", "hint"), w("no_edits")));
  const list = el("ul");
  state.edits.forEach((e, i) => {
    const li = el("li", "mono", `${e.name}[${e.index.join(", ")}] = ${full(e.value)} `);
    li.appendChild(button("remove", () => { state.edits.splice(i, 1); drawEdits(); run(); }, "small"));
    list.appendChild(li);
  });
  box.appendChild(list);
  if (state.edits.length) box.appendChild(button("reset", () => { state.edits = []; drawEdits(); run(); }, "reset"));
  if (state.ablate.length) {
    box.appendChild(say(el("h2"), w("ablated")));
    const ul = el("ul");
    state.ablate.forEach((a, i) => {
      const li = el("li", "mono", `${a.module} · ${word("head", { n: a.head + 1 })} `);
      li.appendChild(button("restore", () => { state.ablate.splice(i, 1); drawEdits(); run(); }, "small"));
      ul.appendChild(li);
    });
    box.appendChild(ul);
  }
}
