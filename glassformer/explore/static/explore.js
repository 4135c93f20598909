// The explorer's page: its state, the API, the token strip, the architecture diagram and the
// steps of the block chosen in it (equations at any size: equations.js; the cells of the numbers
// tables and editing: cells.js). panels.js draws attention, the next token, the logit lens and
// translation; matrices.js (the walkthrough page's) draws numbers, colours and heatmaps.
// Display only: every number shown comes from the server, which computes it with the library.
// Text reaches the page through textContent, never as markup.
"use strict";

// -------------------------------------------------------------------------------------------
// Words, English and Chinese (words.js), registered per node by dom.js's say(); elements by its el() and svg()

function button(key, onClick, cls) {
  const b = say(el("button", cls), typeof key === "function" ? key : w(key));
  b.type = "button";
  b.addEventListener("click", onClick);
  return b;
}

// -------------------------------------------------------------------------------------------
// State and the API

const TOKEN = new URLSearchParams(location.search).get("token") || "";
const MAX_VALUES = 4096; // a step with more values comes as its corner; "Show all values" asks /api/step
const state = {
  info: null, text: "", edits: [], ablate: [], result: null, previous: null, box: null, tab: "steps", layer: 0, head: 0,
  sampling: { temperature: 1, top_k: 0, top_p: 1, seed: 0 }, history: [], full: new Map(), typedAt: 0,
  model: null, asked: null, // the model chosen in the header (its key); what the last /api/run asked for
};
let config = {}, seq2seq = false, steps = [], byId = new Map();

let pending = 0;
function busy(delta) {
  pending += delta;
  document.body.dataset.busy = pending > 0 ? "1" : "0";
}

// "Drawn" means painted: a rAF callback runs before the frame is painted, a task queued from it after.
const afterPaint = (fn) => requestAnimationFrame(() => setTimeout(fn, 0));
// The last move of a slider (range input), and when: the first answer asked after it that is drawn
// and painted sets document.body.dataset.sliderLatency (keystrokes: dataset.latency, in run()).
let slid = null;

// One call: JSON in, JSON out, the session token in a header, the model chosen in the header as
// ?model= (a server of one model ignores nothing: it has that one); a 4xx's {"error"} becomes the thrown message.
async function api(path, body, signal) {
  busy(1);
  const asked = performance.now(), moved = slid;
  try {
    const url = state.model ? `${path}?model=${encodeURIComponent(state.model)}` : path;
    const response = await fetch(url, {
      method: body ? "POST" : "GET", signal,
      headers: { "Content-Type": "application/json", "X-Glassformer-Token": TOKEN },
      body: body ? JSON.stringify(body) : undefined,
    });
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) throw new Error((data && data.error) || `${path}: HTTP ${response.status}`);
    if (data === null) throw new Error(`${path}: the server's answer is not JSON`);
    if (moved && moved === slid && moved.at <= asked) { // the caller draws it before the next frame
      slid = null;
      afterPaint(() => { document.body.dataset.sliderLatency = String(Math.round(performance.now() - moved.at)); });
    }
    return data;
  } finally {
    busy(-1);
  }
}
const request = () => ({ text: state.text, edits: state.edits, ablate: state.ablate });

function showError(message) {
  const box = document.getElementById("gx-error");
  box.textContent = message || "";
  box.hidden = !message;
}
const aborted = (e) => e && e.name === "AbortError";

// Every step recomputes on input, shortly after the last keystroke, the stale request cancelled.
let runTimer = null, runControl = null;
// The wait is as long as the server took last time, 20 to 80 ms: a fast model answers each
// keystroke (a stale request costs little), a slow one waits for typing to pause.
function schedule() {
  clearTimeout(runTimer);
  runTimer = setTimeout(run, state.result ? Math.max(20, Math.min(80, state.result.ms)) : 80);
}
async function run() {
  if (runControl) runControl.abort();
  runControl = new AbortController();
  const signal = runControl.signal;
  const typed = state.typedAt; // 0 unless a keystroke started this run
  const view = wanted();
  try {
    const result = await api("/api/run", { ...request(), max_values: MAX_VALUES, ...view }, signal);
    state.asked = view;
    state.previous = state.result && state.result.walkthrough.source === result.walkthrough.source ? state.result : null;
    state.result = result;
    state.full.clear();
    adopt(result.walkthrough);
    showError("");
    markStale(false);
    const place = anchor();
    render();
    restore(place);
    state.typedAt = 0;
    showStatus(result, null);
    refreshPanels(signal);
    if (typed) {
      afterPaint(() => {
        const page = performance.now() - typed;
        document.body.dataset.latency = String(Math.round(page));
        showStatus(result, page);
      });
    }
  } catch (e) {
    if (!aborted(e)) { showError(e.message); markStale(Boolean(state.result)); }
  }
}
// The reader's place across a redraw with new numbers (a card's values grow from corner to whole):
// the first step card that starts in view, and how far below the panel's top it sits.
function anchor() {
  const main = document.getElementById("gx-main");
  const top = main.getBoundingClientRect().top;
  for (const card of main.querySelectorAll("section.step")) {
    const box = card.getBoundingClientRect();
    if (box.top >= top - 1) return { id: card.id, y: box.top - top };
  }
  return null;
}
function restore(place) {
  const card = place && document.getElementById(place.id);
  if (!card) return;
  const main = document.getElementById("gx-main");
  main.scrollTop += card.getBoundingClientRect().top - main.getBoundingClientRect().top - place.y;
}
// A refused run leaves the previous answer on screen: greyed, with a line saying whose it is.
function markStale(on) {
  let note = document.getElementById("gx-stale");
  if (on && !note) {
    note = say(el("p", "stale-note"), w("stale"));
    note.id = "gx-stale";
    note.setAttribute("role", "status");
    document.getElementById("gx-tabs").after(note);
  }
  if (note) note.hidden = !on;
  for (const id of ["gx-panels", "gx-tokens"]) document.getElementById(id).classList.toggle("stale", on);
}
function adopt(data) {
  steps = data.steps;
  byId = new Map(steps.map((s) => [s.id, s]));
  config = data.config;
  seq2seq = data.model_kind === "seq2seq";
}
function showStatus(result, page) {
  const box = document.getElementById("gx-status");
  box.textContent = "";
  say(box, (l) => `${result.tokens.length} ${word("tokens", {}, l)} · ${word("server", {}, l)} ${Math.round(result.ms)} ${word("ms", {}, l)}` +
    (page === null ? "" : ` · ${word("latency", {}, l)} ${Math.round(page)} ${word("ms", {}, l)}`));
}

// What a tab draws, so that /api/run sends those steps whole (the rest as corners) and computes
// the logit lens only for a tab that shows it: tab -> () => ({ whole: [step ids], lens }). A tab
// not listed gets everything, as before (another file may add its own entry).
const VIEWS = {
  steps: () => ({ whole: boxSteps(), lens: false }),
  attention: () => ({ whole: steps.filter((s) => /\.h\d+\.probs$/.test(s.id)).map((s) => s.id), lens: false }),
  next: () => ({ whole: [], lens: false }),
  lens: () => ({ whole: [], lens: !seq2seq }),
  translate: () => ({ whole: [], lens: false }),
  flow: () => ({ whole: [], lens: false }), // flow.js asks /api/flow for its numbers
  analyses: () => ({ whole: [], lens: false }), // analyses.js: /api/attribute, /api/patch, the run's next tokens
};
function wanted() {
  if (!VIEWS[state.tab]) return {};
  if (!steps.length) return { whole: [], lens: state.tab === "lens" }; // the first answer names the steps
  return VIEWS[state.tab]();
}
// The steps the Steps tab draws: the chosen block's (one layer and head of it), with their operands.
function boxSteps() {
  const chosen = steps.filter((s) => boxOf(s) === state.box &&
    ["layer", "head"].every((key) => s[key] === null || s[key] === undefined || s[key] === state[key] ||
      !steps.some((t) => boxOf(t) === state.box && t[key] === state[key])));
  const ids = new Set();
  for (const s of chosen) { ids.add(s.id); for (const i of s.inputs) ids.add(i); }
  return [...ids];
}
// After a redraw: where the view now shows steps the last answer sent as corners (another block,
// layer or tab), or a lens it did not compute, ask again for this view.
function ensureView() {
  if (!state.result || !state.asked || !state.asked.whole || !VIEWS[state.tab]) return;
  const view = wanted();
  const had = new Set(state.asked.whole || []);
  const missing = (view.whole || []).some((id) => !had.has(id) && byId.has(id) && byId.get(id).truncated);
  if (missing || (view.lens && !state.asked.lens)) schedule();
}

// -------------------------------------------------------------------------------------------
// The tokens, with their ids and boundaries; unknown ones marked

function drawTokens() {
  const box = document.getElementById("gx-tokens");
  box.textContent = "";
  for (const t of state.result.tokens) {
    const chip = el("span", "chip" + (t.unknown ? " unknown" : ""));
    chip.appendChild(el("span", "tok", visible(t.token)));
    chip.appendChild(el("span", "tid", String(t.id)));
    if (t.unknown) chip.title = word("unknown");
    box.appendChild(chip);
  }
}

// -------------------------------------------------------------------------------------------
// The architecture diagram, the explorer's navigation: drawn by matrices.js as on the walkthrough page

const model = () => ({ config, steps, seq2seq });
const partOf = (s) => stepPart(s, seq2seq);
const boxOf = (s) => stepBox(s, model());

const diagramBoxes = new Map();
function drawDiagram() {
  const holder = document.getElementById("gx-diagram");
  holder.textContent = "";
  diagramBoxes.clear();
  const drawn = drawArchitecture(model(), word, say);
  drawn.node.id = "gx-diagram-svg";
  drawn.node.removeAttribute("width"); // as wide as the sidebar
  drawn.node.removeAttribute("height");
  for (const [part, label] of Object.entries(drawn.frameLabels)) {
    const n = part === "enc" ? config.n_encoder_layers : seq2seq ? config.n_decoder_layers : config.n_layer;
    say(label, w(part === "enc" ? "box_encoder_layer" : "box_decoder_layer", { n }));
  }
  holder.appendChild(drawn.node);
  holder.appendChild(figureTools(() => drawn.node, "diagram", true));
  for (const [id, g] of drawn.boxes) {
    diagramBoxes.set(id, g);
    if (!steps.some((s) => boxOf(s) === id)) { g.classList.add("empty"); continue; }
    const go = () => { state.box = id; state.tab = "steps"; render(); showSteps(); };
    g.setAttribute("tabindex", "0");
    g.setAttribute("role", "button");
    g.addEventListener("click", go);
    g.addEventListener("keydown", (event) => { if (event.key === "Enter") go(); });
  }
  fitLabels();
}
// Where the panels sit below the diagram (a phone), a click on a block scrolls down to its steps.
function showSteps() {
  const main = document.getElementById("gx-main");
  const top = (document.querySelector("#gx-panels .step") || main).getBoundingClientRect().top;
  if (top < 0 || top > window.innerHeight - 80) main.scrollIntoView({ block: "start", behavior: "smooth" });
}
const fitLabels = () => fitDiagramLabels(document.getElementById("gx-diagram"));
function lightBox() {
  for (const [id, g] of diagramBoxes) g.classList.toggle("here", id === state.box);
}

// -------------------------------------------------------------------------------------------
// Saving a figure: PNG from a canvas, SVG from an svg (or a table drawn into an SVG by the browser)

function download(blob, name) {
  const a = el("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}
function figureTools(target, name, vector) {
  const bar = el("span", "figtools");
  if (vector) {
    bar.appendChild(button("svg", () => {
      const node = target();
      const text = new XMLSerializer().serializeToString(node);
      download(new Blob([text], { type: "image/svg+xml" }), name + ".svg");
    }));
  } else {
    bar.appendChild(button("png", () => {
      const node = target();
      if (node && node.toBlob) node.toBlob((blob) => download(blob, name + ".png"), "image/png");
    }));
  }
  return bar;
}

// -------------------------------------------------------------------------------------------
// The steps of the chosen block, each result beside its operands

const fullStep = (id) => state.full.get(id) || byId.get(id);
const shapeText = (s) => (s.shape && s.shape.length ? s.shape.join(" × ") : "1");
function shortName(s, l) {
  const title = s.title[l];
  const i = title.indexOf(": ");
  return (s.layer !== null || s.sublayer === "final") && i >= 0 ? title.slice(i + 2) : title;
}

// One matrix as numbers: matrices.js draws it; the explorer adds hover, editing and the changed cells.
// (An equation too large to read as numbers is drawn as bands: bandEquation below.)
function figureOf(step, options) {
  const fig = el("figure", options.result ? "operand result" : "operand");
  fig.dataset.step = step.id;
  if (options.role) fig.dataset.role = options.role;
  if (step.values === undefined && step.corner === undefined) {
    if (step.table) fig.appendChild(textTable(step));
  } else {
    const drawn = step.op === "weight" && !options.operand ? weightTable(step)
      : options.numbers ? numbersOf(step, options.transposed) : matrix(step, options);
    fig.appendChild(drawn);
    decorate(drawn, step, options);
    if (step.op === "weight" && !options.operand) fig.appendChild(editsOutside(step));
  }
  fig.appendChild(caption(step, options));
  return fig;
}
function caption(step, options) {
  const cap = el("figcaption");
  const marked = options.transposed && !options.column;
  cap.appendChild(say(el("span"), (l) => shortName(step, l) + (marked ? "ᵀ" : "")));
  cap.appendChild(el("span", "dim", marked ? step.shape.slice().reverse().join(" × ") : shapeText(step)));
  return cap;
}
function numbersOf(step, transposed) {
  const v = view(step, transposed);
  const p = palette(step);
  if (p.plain) return numbers({ ...v, n: Math.min(v.n, 32), m: Math.min(v.m, 64) }, p, true);
  return numbers(v, p, v.n < v.shape[0] || v.m < v.shape[1]);
}

// A weight as numbers (its top-left 24 × 16 at most), so that every cell shown can be edited.
const WINDOW = [24, 16];
function weightTable(step) {
  const v = view(step, false);
  const clipped = { ...v, n: Math.min(v.n, WINDOW[0]), m: Math.min(v.m, WINDOW[1]) };
  return numbers(clipped, palette(step), clipped.n < v.shape[0] || clipped.m < v.shape[1]);
}
// The edits of this weight that lie outside the window its table shows: where they are, in words.
function editsOutside(step) {
  const box = el("div", "edits-outside");
  for (const e of state.edits) {
    const at = localEdit(step, e);
    if (!at || (at[0] < WINDOW[0] && at[1] < WINDOW[1])) continue;
    box.appendChild(say(el("p", "note edit-outside"), w("edit_outside", {
      edit: `${e.name}[${e.index.join(", ")}] = ${full(e.value)}`, r: at[0], c: at[1], rows: WINDOW[0], cols: WINDOW[1] })));
  }
  return box;
}
// An edit's cell in a weight step's own (row, column), or null when the edit is of another weight
// or of rows this step does not hold (another head's rows of W_Q).
function localEdit(step, e) {
  if (!step.params || e.name !== step.params.name) return null;
  if (step.shape.length === 1) return [0, e.index[0]];
  const [start, stop] = step.params.rows || [0, Infinity];
  const r = e.index[0] - start;
  return r >= 0 && e.index[0] < stop ? [r, e.index[1]] : null;
}

// A step's index (one integer per axis) of the drawn cell [r, c] of its 2-D view.
function stepIndex(step, at, transposed) {
  const [r, c] = transposed ? [at[1], at[0]] : at;
  const nd = (step.shape || []).length;
  if (nd === 0) return [];
  if (nd === 1) return [c];
  return [...Array(nd - 2).fill(0), r, c];
}

// An equation whose matrices are small enough to read as numbers (the articles' example): tables.
function asNumbers(step, inputs) {
  const v = view(step, false);
  const small = (v.shape[1] <= 12 && v.shape[0] <= 24) || (v.shape[0] <= 2 && v.shape[1] <= 32);
  return small && !step.truncated && inputs.every(({ input, transposed }) => {
    const u = view(input, transposed);
    return input.dtype === "int" || (!input.truncated && u.shape[0] <= 24 && u.shape[1] <= 16);
  });
}

const dotRoles = (step) => (step.op === "linear" || step.op === "matmul" ? ["left", "right", "bias"] : []);

function stepCard(step) {
  step = fullStep(step.id);
  const card = el("section", "step");
  card.id = "gx-step-" + step.id;
  const h = el("h3");
  h.appendChild(say(el("span", "title"), (l) => step.title[l]));
  h.appendChild(el("span", "sid", step.id));
  card.appendChild(h);
  card.appendChild(say(el("p", "explain"), (l) => step.explanation[l]));
  const meta = el("p", "meta");
  if (step.formula) meta.appendChild(el("code", "formula", step.formula));
  const shape = say(el("span", "shape"), (l) => `${word("shape", {}, l)} ${shapeText(step)}`);
  meta.appendChild(shape);
  if (step.op === "weight") meta.appendChild(say(el("span", "hint"), w("edit_hint")));
  else if (step.values !== undefined || step.corner !== undefined) meta.appendChild(say(el("span", "hint lens-hint"), w("lens_hint")));
  card.appendChild(meta);
  const body = el("div", "body");
  const inputs = step.inputs.map((id, i) => {
    const input = fullStep(id);
    const column = !!input && step.op === "embedding" && input.dtype === "int";
    return input && { input, i, column, transposed: column || (step.op === "linear" && i === 1) };
  }).filter(Boolean);
  if (step.table && step.op === "table") {
    body.appendChild(textTable(step));
  } else if (step.inputs.length === 0) {
    if (step.values !== undefined || step.corner !== undefined) {
      const small = view(step, false);
      const fits = step.op === "weight" || (small.shape[0] <= 24 && small.shape[1] <= 16 && !step.truncated);
      body.appendChild(fits ? figureOf(step, { result: true, numbers: true }) : bandEquation(step, [], step.id));
    }
  } else if (asNumbers(step, inputs)) {
    const box = el("div", "equation");
    const [before, , after] = operatorOf(step);
    if (before) box.appendChild(el("span", "opsym", before));
    for (const { input, i, column, transposed } of inputs) {
      const sym = i > 0 && operandSymbol(step, i);
      if (sym) box.appendChild(el("span", "opsym", sym));
      const role = dotRoles(step)[i] || "in" + i;
      box.appendChild(figureOf(input, { operand: true, numbers: true, transposed, column, card: step.id, role }));
    }
    if (after) box.appendChild(el("span", "opsym", after));
    box.appendChild(el("span", "opsym", "="));
    box.appendChild(figureOf(step, { result: true, numbers: true, of: step, card: step.id, role: "result" }));
    body.appendChild(box);
  } else {
    body.appendChild(bandEquation(step, inputs, step.id));
  }
  card.appendChild(body);
  if (step.truncated) {
    const note = el("p", "note");
    note.appendChild(say(el("span"), w("truncated", { count: step.stats ? step.stats.count : "" })));
    note.appendChild(button("load_all", () => loadFull(step.id)));
    card.appendChild(note);
  }
  const lens = el("div", "lens-holder");
  card.appendChild(lens);
  if (state.cellLens && state.cellLens.card === step.id) showCellLens(lens); // lens.js
  return card;
}

// A truncated step's values, fetched when the reader asks.
async function loadFull(id) {
  try {
    const s = await api("/api/step", { ...request(), id });
    state.full.set(id, s);
    render();
  } catch (e) {
    if (!aborted(e)) showError(e.message);
  }
}

function drawSteps(panel) {
  if (!state.box) {
    panel.appendChild(say(el("p", "hint big"), w("pick_block")));
    return;
  }
  let chosen = steps.filter((s) => boxOf(s) === state.box);
  // A block inside the layer frame: one layer at a time (and one head), chosen with buttons.
  const choose = (key, values, label) => {
    if (values.length < 2) return;
    if (!values.includes(state[key])) state[key] = values[0];
    const bar = el("div", "chooser");
    bar.dataset.choose = key;
    for (const v of values) {
      const b = button(label(v), () => { state[key] = v; render(); }, v === state[key] ? "on" : "");
      b.dataset.value = String(v);
      bar.appendChild(b);
    }
    panel.appendChild(bar);
    chosen = chosen.filter((s) => s[key] === null || s[key] === undefined || s[key] === state[key]);
  };
  const distinct = (key) => [...new Set(chosen.map((s) => s[key]).filter((v) => v !== null && v !== undefined))];
  choose("layer", distinct("layer"), (v) => w("layer", { n: v + 1 }));
  choose("head", distinct("head"), (v) => w("head", { n: v + 1 }));
  let heading = null;
  for (const s of chosen) {
    const place = placeText(s);
    const key = place.map((f) => f("en")).join("|");
    if (key && key !== heading) {
      heading = key;
      panel.appendChild(say(el("h3", "place"), (l) => place.map((f) => f(l)).join(l === "zh" ? "，" : ", ")));
    }
    panel.appendChild(pendingCard(s));
  }
}

// Cards drawn lazily: drawSteps lays out a placeholder for each (its title, and the height its card
// had when last drawn, else a guess), render() then draws at once those in or near the view, and
// an IntersectionObserver the rest as they are scrolled near. A keystroke redraws only what is seen.
const cardHeights = new Map(); // step id -> its card's height when last drawn (px)
let cardWatch = null;
const NEAR = 0.5; // draw what lies within half a view's height of it
function pendingCard(s) {
  const card = el("section", "step pending");
  card.id = "gx-step-" + s.id;
  card.dataset.pending = s.id;
  const h = el("h3");
  h.appendChild(say(el("span", "title"), (l) => s.title[l]));
  card.appendChild(h);
  const rows = s.shape && s.shape.length > 1 ? s.shape[s.shape.length - 2] : 1;
  card.style.height = (cardHeights.get(s.id) || 140 + Math.min(720, rows * 11)) + "px";
  return card;
}
// Step `id`'s card scrolled to the top of the view and drawn, with what is near it (drawing the
// cards above it may move it: scrolled to again). The Flow tab's links use it; so do the tests.
function showStep(id) {
  for (let round = 0; round < 3; round++) {
    const card = document.getElementById("gx-step-" + id);
    if (!card) return;
    card.scrollIntoView({ block: "start" });
    if (round < 2) fillNear();
  }
}
function fillCard(card) {
  if (!card.isConnected || !card.dataset.pending || !byId.has(card.dataset.pending)) return;
  if (cardWatch) cardWatch.unobserve(card);
  card.replaceWith(stepCard(byId.get(card.dataset.pending)));
}
// Before a redraw replaces them: the drawn cards' heights (read together, before anything is written).
function measureCards(panels) {
  for (const card of panels.querySelectorAll("section.step:not(.pending)")) {
    cardHeights.set(card.id.slice("gx-step-".length), card.offsetHeight);
  }
}
// After a redraw (its layout done): the placeholders in or near the view drawn now, read first,
// then written, until none is left there (a guessed height may bring another in); the rest watched.
function fillNear() {
  const panels = document.getElementById("gx-panels");
  const main = document.getElementById("gx-main");
  const scroller = getComputedStyle(main).overflowY === "visible" ? null : main;
  const view = scroller ? scroller.getBoundingClientRect() : { top: 0, bottom: window.innerHeight };
  const margin = NEAR * (view.bottom - view.top);
  for (let round = 0; round < 4; round++) {
    const near = [...panels.querySelectorAll("section.step.pending")].filter((card) => {
      const box = card.getBoundingClientRect();
      return box.bottom >= view.top - margin && box.top <= view.bottom + margin;
    });
    if (!near.length) break;
    near.forEach(fillCard);
  }
  if (cardWatch) cardWatch.disconnect();
  const rest = panels.querySelectorAll("section.step.pending");
  if (!rest.length || !window.IntersectionObserver) { rest.forEach(fillCard); return; }
  cardWatch = new IntersectionObserver((entries) => entries.forEach((e) => e.isIntersecting && fillCard(e.target)),
    { root: scroller, rootMargin: `${Math.round(margin)}px 0px` });
  rest.forEach((card) => cardWatch.observe(card));
}
function placeText(s) {
  const out = [];
  if (s.layer !== null && s.layer !== undefined) {
    const key = !seq2seq ? "layer" : partOf(s) === "enc" ? "enc_layer" : "dec_layer";
    out.push(w(key, { n: s.layer + 1 }));
    if (s.sublayer === "self" || s.sublayer === "cross") out.push(w(s.sublayer));
    if (s.head !== null && s.head !== undefined) out.push(w("head", { n: s.head + 1 }));
  }
  return out;
}

// -------------------------------------------------------------------------------------------
// Tabs, language, export, and starting

function tabs() {
  return seq2seq ? ["steps", "attention", "translate"] : ["flow", "steps", "attention", "next", "lens", "analyses"];
}
function render() {
  texts = texts.filter(([node]) => node.isConnected);
  drawTokens();
  lightBox();
  const nav = document.getElementById("gx-tabs");
  nav.textContent = "";
  for (const t of tabs()) {
    const b = button("tab_" + t, () => { state.tab = t; render(); refreshPanels(); }, t === state.tab ? "tab on" : "tab");
    b.dataset.tab = t;
    b.setAttribute("role", "tab");
    nav.appendChild(b);
  }
  const panels = document.getElementById("gx-panels");
  const main = document.getElementById("gx-main");
  const place = state.tab + "|" + state.box;
  const scroll = place === lastView ? main.scrollTop : 0; // a redraw keeps the reader's place; a new view starts at its top
  lastView = place;
  measureCards(panels); // read before anything is written
  panels.textContent = "";
  const panel = el("div", "panel");
  panel.id = "gx-panel-" + state.tab;
  panels.appendChild(panel);
  const began = performance.now();
  if (state.tab === "steps") drawSteps(panel);
  else drawPanel(state.tab, panel); // panels.js
  main.scrollTop = scroll;
  if (state.tab === "steps") {
    fillNear();
    // The time to build the view, the cards in view drawn (their paint follows).
    document.body.dataset.stepsMs = String(Math.round((performance.now() - began) * 10) / 10);
  }
  ensureView();
}
let lastView = "";

function setLanguage(l) {
  lang = l;
  document.documentElement.lang = l;
  texts = texts.filter(([node]) => node.isConnected);
  for (const [node, text] of texts) node.textContent = text(l);
  for (const b of document.querySelectorAll("#gx-langs button")) b.classList.toggle("on", b.dataset.lang === l);
  if (state.result) render();
  fitLabels();
}

async function exportPage() {
  try {
    const answer = await api("/api/export", { ...request(), lang });
    download(new Blob([answer.html], { type: "text/html" }), "glassformer-explore.html");
  } catch (e) {
    if (!aborted(e)) showError(e.message);
  }
}

async function start() {
  document.body.dataset.busy = "0";
  say(document.getElementById("gx-title"), w("title"));
  const langs = document.getElementById("gx-langs");
  for (const [code, name] of [["en", "English"], ["zh", "中文"]]) {
    const b = el("button", "", name);
    b.type = "button";
    b.dataset.lang = code;
    b.addEventListener("click", () => setLanguage(code));
    langs.appendChild(b);
  }
  const exportButton = document.getElementById("gx-export");
  say(exportButton, w("export"));
  exportButton.addEventListener("click", exportPage);
  const big = document.getElementById("gx-big");
  say(big, w("big"));
  big.addEventListener("click", () => {
    const on = document.body.classList.toggle("projector");
    big.setAttribute("aria-pressed", String(on));
    if (state.result) render(); // heatmaps are drawn at the size of the text
    fitLabels();
  });
  const input = document.getElementById("gx-text");
  input.addEventListener("input", () => {
    state.typedAt = performance.now();
    state.text = input.value;
    schedule();
  });
  // Any slider's move (captured before its own handler asks the server): see api().
  document.addEventListener("input", (event) => { if (event.target.type === "range") slid = { at: performance.now() }; }, true);
  let info;
  try {
    info = await api("/api/info");
  } catch (e) {
    showError(e.message);
    return;
  }
  lang = info.lang in WORDS ? info.lang : "en";
  state.model = info.model || null;
  // An address may name the model to open: /?model=articles
  const named = new URLSearchParams(location.search).get("model");
  if (named && named !== state.model && (info.models || []).some((m) => m.key === named)) {
    state.model = named;
    try {
      info = await api("/api/info");
    } catch (e) {
      showError(e.message);
      return;
    }
  }
  drawModels(info.models || []);
  await open(info);
}

// The models this server holds, in the header: choosing one opens it afresh.
function drawModels(models) {
  const select = document.getElementById("gx-model");
  select.textContent = "";
  select.hidden = models.length < 2;
  document.getElementById("gx-model-label").hidden = models.length < 2;
  say(document.getElementById("gx-model-label"), w("model"));
  for (const m of models) {
    const option = say(el("option"), (l) => (WORDS[l]["model_" + m.key] ? word("model_" + m.key, {}, l) : m.name));
    option.value = m.key;
    select.appendChild(option);
  }
  select.value = state.model;
  select.onchange = () => switchModel(select.value);
}
async function switchModel(key) {
  if (runControl) runControl.abort();
  clearTimeout(runTimer);
  state.model = key;
  try {
    await open(await api("/api/info"));
  } catch (e) {
    if (!aborted(e)) showError(e.message);
  }
}

// A model, from its /api/info: its example text, the first block, no edits, then the first run.
async function open(info) {
  state.info = info;
  seq2seq = info.kind === "seq2seq";
  Object.assign(state, { edits: [], ablate: [], history: [], result: null, previous: null, asked: null, typedAt: 0,
    sample: null, lastNext: null, translation: null, beam: null, layer: 0, head: 0 });
  state.full.clear();
  steps = [];
  byId = new Map();
  const input = document.getElementById("gx-text");
  const label = document.getElementById("gx-text-label");
  label.textContent = "";
  texts = texts.filter(([node]) => node !== label);
  say(label, w(seq2seq ? "source_text" : "text"));
  if (info.limits && info.limits.text_chars) input.maxLength = info.limits.text_chars;
  state.text = input.value = info.example || "";
  state.box = seq2seq ? "enc-self" : "dec-self";
  state.tab = seq2seq ? "steps" : "flow"; // a GPT opens on its flow (flow.js)
  document.getElementById("gx-diagram").textContent = "";
  setLanguage(lang);
  drawEdits();
  await run();
  drawDiagram();
  lightBox();
}
