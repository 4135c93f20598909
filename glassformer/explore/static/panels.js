// The explorer's panels beside the steps: attention per layer and head (hover, toggle, ablate),
// the next token (temperature, top-k, top-p from /api/sample; next and undo), the logit lens,
// and for a translation model source and target side by side, the cross-attention alignment and
// the beam tree. Display only: the numbers come from the server. Part of the page with
// explore.js (state, API, diagram, steps) and matrices.js (numbers, colours).
"use strict";

function drawPanel(tab, panel) {
  if (tab === "attention") drawAttention(panel);
  else if (tab === "next") drawNext(panel);
  else if (tab === "lens") drawLens(panel);
  else if (tab === "translate") drawTranslate(panel);
}
// Panels whose numbers come from a second call: asked for when shown, and after every run.
function refreshPanels(signal) {
  if (state.tab === "next") sample(signal);
  if (state.tab === "translate") translate(signal);
}

// -------------------------------------------------------------------------------------------
// A heatmap drawn into one canvas with its labels (so that its PNG is the whole figure)

function heatmap(spec) {
  const { n, m, get, rowLabels, colLabels, tipFor, maxWidth } = spec;
  const big = document.body.classList.contains("projector") || window.innerWidth >= 1800;
  const fontPx = big ? 16 : 12;
  // Labels as large as the text, but no taller than a cell; none where they would be unreadable (hover says them).
  // Large text keeps them at its size: the cells grow to fit them, and the figure scrolls if it must.
  const least = big && (rowLabels || colLabels) ? fontPx + 1 : 8;
  const cell = Math.max(least, Math.min(big ? 40 : 30, Math.floor((maxWidth || 420) / Math.max(m, 1))));
  const labelPx = Math.min(fontPx, cell - 1);
  const probe = document.createElement("canvas").getContext("2d");
  probe.font = `${labelPx}px ui-monospace, Menlo, Consolas, "DejaVu Sans Mono", "Noto Sans Mono CJK SC", monospace`;
  const widest = (labels) => Math.max(0, ...(labels || []).map((t) => probe.measureText(visible(t)).width));
  const showCols = colLabels && labelPx >= 8;
  const showRows = rowLabels && labelPx >= 8;
  const left = showRows ? Math.ceil(widest(rowLabels)) + 8 : 0;
  const top = showCols ? Math.ceil(Math.min(widest(colLabels), 140)) + 8 : 0;
  const width = left + m * cell + 1, height = top + n * cell + 1;
  const dpr = window.devicePixelRatio || 1;
  const node = el("canvas", "heatmap");
  node.width = Math.ceil(width * dpr);
  node.height = Math.ceil(height * dpr);
  node.style.width = width + "px";
  node.style.height = height + "px";
  const ctx = node.getContext("2d");
  ctx.scale(dpr, dpr);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, width, height);
  const p = spec.palette || { probabilities: true };
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < m; c++) {
      const rgb = colour(p, get(r, c)) || [255, 255, 255];
      ctx.fillStyle = `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;
      ctx.fillRect(left + c * cell, top + r * cell, cell - (cell > 12 ? 1 : 0), cell - (cell > 12 ? 1 : 0));
    }
  }
  ctx.font = probe.font;
  ctx.fillStyle = "#1f2933";
  ctx.textBaseline = "middle";
  if (showRows) {
    ctx.textAlign = "right";
    for (let r = 0; r < n; r++) ctx.fillText(visible(rowLabels[r]), left - 6, top + r * cell + cell / 2);
  }
  if (showCols) {
    ctx.textAlign = "left";
    for (let c = 0; c < m; c++) {
      ctx.save();
      ctx.translate(left + c * cell + cell / 2, top - 6);
      ctx.rotate(-Math.PI / 2);
      ctx.fillText(visible(colLabels[c]), 0, 0);
      ctx.restore();
    }
  }
  node.addEventListener("mousemove", (event) => {
    const box = node.getBoundingClientRect();
    const c = Math.floor((event.clientX - box.left - left) / cell), r = Math.floor((event.clientY - box.top - top) / cell);
    if (r < 0 || c < 0 || r >= n || c >= m) { hideTip(); return; }
    showTip(event, tipFor(r, c));
  });
  node.addEventListener("mouseleave", hideTip);
  return node;
}
function figureBox(title, node, name) {
  const fig = el("figure", "gx-figure");
  const cap = el("figcaption");
  cap.appendChild(typeof title === "function" ? say(el("span"), title) : el("span", "", title));
  cap.appendChild(figureTools(() => node, name, false));
  fig.append(cap, node);
  return fig;
}

// -------------------------------------------------------------------------------------------
// Attention: per layer and head

// The attention module a step belongs to, from the state-dict names of its weights ("blocks.0.self_attn").
function moduleOf(prefix) {
  for (const s of steps) {
    if (s.op === "weight" && s.id.startsWith(prefix) && s.params && s.params.name) {
      const m = s.params.name.match(/^(.*_attn)\./);
      if (m) return m[1];
    }
  }
  return null;
}
const hiddenHeads = new Set();
function attentionGroups() {
  const groups = new Map();
  for (const s of steps) {
    const m = s.id.match(/^(enc|dec)\.(\d+)\.(self|cross)\.h(\d+)\.probs$/);
    if (!m) continue;
    const key = `${m[1]}.${m[2]}.${m[3]}`;
    if (!groups.has(key)) groups.set(key, { key, part: m[1], layer: Number(m[2]), sub: m[3], heads: [] });
    groups.get(key).heads.push({ head: Number(m[4]), probs: s, prefix: `${key}.h${m[4]}` });
  }
  return [...groups.values()];
}
const isAblated = (module, head) => state.ablate.some((a) => a.module === module && a.head === head);
function toggleAblation(module, head) {
  if (isAblated(module, head)) state.ablate = state.ablate.filter((a) => !(a.module === module && a.head === head));
  else state.ablate.push({ module, head });
  drawEdits();
  run();
}

function drawAttention(panel) {
  const groups = attentionGroups();
  const nHeads = Math.max(1, ...groups.map((g) => g.heads.length));
  const toggles = el("div", "toggles");
  for (let h = 0; h < nHeads; h++) {
    const label = el("label", "toggle");
    const box = el("input");
    box.type = "checkbox";
    box.checked = !hiddenHeads.has(h);
    box.dataset.head = String(h);
    box.addEventListener("change", () => { if (box.checked) hiddenHeads.delete(h); else hiddenHeads.add(h); render(); });
    label.append(box, say(el("span"), (l) => `${word("show", {}, l)} ${word("head", { n: h + 1 }, l)}`));
    toggles.appendChild(label);
  }
  panel.appendChild(toggles);
  const shown = Math.max(1, nHeads - hiddenHeads.size);
  const room = Math.max(220, Math.min(520, (panel.parentElement.clientWidth || 900) / Math.min(shown, 3) - 60));
  const all = el("div", "layers"); // one group a layer and sublayer, side by side where the window is wide
  panel.appendChild(all);
  for (const g of groups) {
    const module = moduleOf(`${g.key}.`);
    const stack = !seq2seq ? "layer" : g.part === "enc" ? "enc_layer" : "dec_layer";
    const group = el("div", "layer-group");
    all.appendChild(group);
    group.appendChild(say(el("h3", "place"), (l) => `${word(stack, { n: g.layer + 1 }, l)}, ${word(g.sub, {}, l)}`));
    const row = el("div", "heads");
    for (const h of g.heads) {
      if (hiddenHeads.has(h.head)) continue;
      const probs = fullStep(h.probs.id);
      const scores = byId.get(h.prefix + ".scores"), scaled = byId.get(h.prefix + ".scaled");
      const v = view(probs, false);
      const tipFor = (r, c) => [
        `${word("query")}: ${visible(v.rowLabels ? v.rowLabels[r] : r)}  ·  ${word("key")}: ${visible(v.colLabels ? v.colLabels[c] : c)}`,
        `${word("score")}: ${scores ? full(valueAt(scores, r, c)) : "?"}`,
        `${word("scaled")}: ${scaled ? full(valueAt(scaled, r, c)) : "?"}`,
        `${word("prob")}: ${full(v.get(r, c))}`,
      ].join("\n");
      const canvas = heatmap({ n: v.n, m: v.m, get: v.get, rowLabels: v.rowLabels, colLabels: v.colLabels, tipFor, maxWidth: room });
      canvas.dataset.step = probs.id;
      const fig = figureBox((l) => word("head", { n: h.head + 1 }, l), canvas, probs.id);
      fig.classList.toggle("ablated", module !== null && isAblated(module, h.head));
      if (probs.truncated) { // a long text: the corner came with the run; every value on request
        const note = el("p", "note");
        note.appendChild(say(el("span"), w("truncated", { count: probs.stats ? probs.stats.count : "" })));
        note.appendChild(button("load_all", () => loadFull(probs.id)));
        fig.appendChild(note);
      }
      if (module) {
        const off = isAblated(module, h.head);
        const b = button(off ? "restore" : "ablate", () => toggleAblation(module, h.head), "ablate" + (off ? " on" : ""));
        b.dataset.module = module;
        b.dataset.head = String(h.head);
        fig.querySelector("figcaption").appendChild(b);
      }
      row.appendChild(fig);
    }
    group.appendChild(row);
  }
}

// -------------------------------------------------------------------------------------------
// The next token: probabilities through temperature, top-k and top-p; next; undo

const SLIDERS = [
  { key: "temperature", min: 0, max: 2, step: 0.05 },
  { key: "top_k", min: 0, max: 100, step: 1 }, // 0: off
  { key: "top_p", min: 0.05, max: 1, step: 0.05 }, // 1: off
];
function samplingRequest() {
  const s = state.sampling;
  return { temperature: s.temperature, top_k: s.top_k > 0 ? s.top_k : null, top_p: s.top_p < 1 ? s.top_p : null };
}
let sampleControl = null, sampleTimer = null;
async function sample(signal) {
  if (sampleControl) sampleControl.abort();
  sampleControl = new AbortController();
  if (signal) signal.addEventListener("abort", () => sampleControl.abort());
  const mine = sampleControl;
  try {
    state.sample = await api("/api/sample", { ...request(), ...samplingRequest() }, mine.signal);
    showError("");
    const holder = document.getElementById("gx-candidates-box");
    if (holder && state.tab === "next") drawCandidates(holder);
  } catch (e) {
    if (!aborted(e)) showError(e.message);
  }
}

function drawNext(panel) {
  const controls = el("div", "sliders");
  const vocab = config.vocab_size || config.tgt_vocab_size || 100;
  for (const spec of SLIDERS) {
    const label = el("label", "slider");
    const input = el("input");
    input.type = "range";
    input.id = "gx-" + spec.key.replace("_", "-");
    input.min = spec.min;
    input.max = spec.key === "top_k" ? Math.min(vocab, spec.max) : spec.max;
    input.step = spec.step;
    input.value = state.sampling[spec.key];
    const shown = el("span", "value mono");
    const show = () => {
      const x = state.sampling[spec.key];
      shown.textContent = (spec.key === "top_k" && x === 0) || (spec.key === "top_p" && x >= 1) ? word("off") : String(x);
    };
    show();
    input.addEventListener("input", () => {
      state.sampling[spec.key] = Number(input.value);
      show();
      clearTimeout(sampleTimer);
      sampleTimer = setTimeout(() => sample(), 40);
    });
    label.append(say(el("span", "name"), w(spec.key)), input, shown);
    controls.appendChild(label);
  }
  const seed = el("label", "slider");
  const seedInput = el("input");
  seedInput.type = "number";
  seedInput.id = "gx-seed";
  seedInput.min = 0;
  seedInput.value = state.sampling.seed;
  seedInput.addEventListener("change", () => { state.sampling.seed = Math.max(0, Math.floor(Number(seedInput.value) || 0)); });
  seed.append(say(el("span", "name"), w("seed")), seedInput);
  controls.appendChild(seed);
  panel.appendChild(controls);
  const actions = el("div", "actions");
  const greedy = button("next_greedy", () => next(true), "primary");
  greedy.id = "gx-next-greedy";
  const sampled = button("next_sample", () => next(false), "primary");
  sampled.id = "gx-next-sample";
  const undo = button("undo", undoText);
  undo.id = "gx-undo";
  undo.disabled = state.history.length === 0;
  actions.append(greedy, sampled, undo);
  panel.appendChild(actions);
  const columns = el("div", "next-columns");
  const box = el("div", "candidates-box");
  box.id = "gx-candidates-box";
  columns.appendChild(box);
  const last = el("div", "last-step");
  last.id = "gx-last-step";
  columns.appendChild(last);
  panel.appendChild(columns);
  if (state.sample) drawCandidates(box);
  if (state.lastNext) drawLastStep(last, state.lastNext);
}

const prob = (x) => (x === null || x === undefined ? "" : number(x, 3, true));
function drawCandidates(box) {
  box.textContent = "";
  const s = state.sample;
  box.appendChild(say(el("p", "kept"), s.greedy ? w("greedy_note") :
    w("kept", { k: s.kept.top_k, p: s.kept.top_p, v: s.kept.vocab })));
  const table = el("table", "candidates");
  table.id = "gx-candidates";
  const head = table.createTHead().insertRow();
  for (const key of ["token", "top_p_bar", "logit", "softmax", "p_temperature", "p_top_k", "p_top_p"]) {
    head.appendChild(key === "top_p_bar" ? el("th") : say(el("th"), w(key)));
  }
  const body = table.createTBody();
  const top = Math.max(1e-9, ...s.candidates.map((c) => c.top_p));
  for (const c of s.candidates) {
    const row = body.insertRow();
    row.dataset.id = String(c.id);
    row.appendChild(el("td", "tok mono", visible(c.token)));
    const bar = el("td", "bar");
    const fill = el("span", "fill");
    fill.style.width = (100 * c.top_p / top).toFixed(1) + "%";
    bar.appendChild(fill);
    row.appendChild(bar);
    row.appendChild(el("td", "num logit", number(c.logit, 3)));
    for (const key of ["softmax", "temperature", "top_k", "top_p"]) row.appendChild(el("td", "num " + key, prob(c[key])));
    if (c.top_p === 0) row.classList.add("cut");
  }
  box.appendChild(table);
}

async function next(greedy) {
  try {
    const answer = await api("/api/next", { ...request(), ...samplingRequest(), seed: state.sampling.seed, greedy });
    state.history.push(state.text);
    state.lastNext = answer;
    state.text = answer.text;
    document.getElementById("gx-text").value = answer.text;
    await run();
  } catch (e) {
    if (!aborted(e)) showError(e.message);
  }
}
function undoText() {
  if (!state.history.length) return;
  state.text = state.history.pop();
  state.lastNext = null;
  document.getElementById("gx-text").value = state.text;
  run();
}

// The KV cache after the step (one box a cached position, the newest lit) and the newest query's attention.
function drawLastStep(box, g) {
  box.textContent = "";
  box.appendChild(say(el("p", "picked"), w("picked", { token: visible(g.picked.token), p: prob(g.picked.p) })));
  const cache = el("div", "cache");
  if (g.cache) {
    const key = g.cache.layers === 1 ? "cache_one" : "cache";
    cache.appendChild(say(el("p"), w(key, { layers: g.cache.layers, shape: g.cache.k_shape.join(" × ") })));
    const strip = el("div", "cache-strip");
    const length = g.cache.k_shape[2];
    for (let i = 0; i < length; i++) {
      const cellNode = el("span", i === length - 1 ? "slot new" : "slot", visible(g.context[i] !== undefined ? g.context[i] : ""));
      strip.appendChild(cellNode);
    }
    cache.appendChild(strip);
  } else {
    cache.appendChild(say(el("p"), w("no_cache")));
  }
  box.appendChild(cache);
  const rows = [], labels = [];
  g.attention.forEach((layer, i) => layer.forEach((head, h) => { rows.push(head); labels.push(`${i + 1}.${h + 1}`); }));
  const keys = g.context.slice(-rows[0].length);
  const canvas = heatmap({ n: rows.length, m: keys.length, get: (r, c) => rows[r][c], rowLabels: labels, colLabels: keys,
    tipFor: (r, c) => `${labels[r]} · ${visible(keys[c])}: ${full(rows[r][c])}`, maxWidth: 420 });
  box.appendChild(figureBox(w("new_row"), canvas, "newest-attention"));
}

// -------------------------------------------------------------------------------------------
// The logit lens: the top token per layer and position

function drawLens(panel) {
  const lens = state.result.lens;
  if (!lens) return;
  panel.appendChild(say(el("p", "hint"), w("lens_intro")));
  const wrap = el("div", "scroll");
  const table = el("table", "lens");
  table.id = "gx-lens";
  const head = table.createTHead().insertRow();
  head.appendChild(el("th"));
  for (const t of state.result.tokens) head.appendChild(el("th", "mono", visible(t.token)));
  const body = table.createTBody();
  lens.top.forEach((layer, i) => {
    const row = body.insertRow();
    const name = String(lens.layers[i]);
    const block = name.match(/^block (\d+)$/);
    row.appendChild(say(el("th"), block ? w("lens_block", { n: block[1] }) : name === "embedding" ? w("lens_embedding") : () => name));
    for (const top of layer) {
      const best = top[0];
      const td = el("td", "mono");
      td.appendChild(el("span", "tok", visible(best.token)));
      td.appendChild(el("span", "p", prob(best.p)));
      const rgb = colour({ probabilities: true }, best.p);
      td.style.background = `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;
      if (dark(rgb)) td.classList.add("dark");
      td.addEventListener("mouseover", (event) => showTip(event, top.map((t) => `${visible(t.token)}  ${prob(t.p)}`).join("\n")));
      td.addEventListener("mouseleave", hideTip);
      row.appendChild(td);
    }
  });
  wrap.appendChild(table);
  panel.appendChild(wrap);
}

// -------------------------------------------------------------------------------------------
// A translation model: source and target side by side, the alignment, the beam tree

let translateControl = null;
async function translate(signal) {
  if (translateControl) translateControl.abort();
  translateControl = new AbortController();
  if (signal) signal.addEventListener("abort", () => translateControl.abort());
  try {
    state.translation = await api("/api/next", { ...request(), temperature: 0, top_k: null, top_p: null, seed: 0, greedy: true },
      translateControl.signal);
    showError("");
    const holder = document.getElementById("gx-translation");
    if (holder && state.tab === "translate") drawTranslation(holder);
  } catch (e) {
    if (!aborted(e)) showError(e.message);
  }
}

function chips(tokens) {
  const box = el("div", "chips");
  for (const t of tokens) box.appendChild(el("span", "chip", visible(t)));
  return box;
}

function drawTranslate(panel) {
  const holder = el("div");
  holder.id = "gx-translation";
  panel.appendChild(holder);
  if (state.translation) drawTranslation(holder);
  panel.appendChild(say(el("h3", "place"), w("beam")));
  const controls = el("div", "actions");
  const width = el("input");
  width.type = "number";
  width.id = "gx-beam-width";
  width.min = 2;
  width.max = (state.info.limits && state.info.limits.beam) || 8;
  width.value = state.beamWidth || 3;
  width.addEventListener("change", () => { state.beamWidth = Number(width.value); });
  const label = el("label", "slider");
  label.append(say(el("span", "name"), w("beam_width")), width);
  const go = button("run_beam", () => beam(Number(width.value)), "primary");
  go.id = "gx-run-beam";
  controls.append(label, go);
  panel.appendChild(controls);
  const tree = el("div", "beam-tree");
  tree.id = "gx-beam";
  panel.appendChild(tree);
  if (state.beam) drawBeam(tree, state.beam);
}

function drawTranslation(box) {
  box.textContent = "";
  const g = state.translation;
  const sides = el("div", "sides");
  const src = el("div", "side");
  src.append(say(el("h3"), w("source")), chips(g.prompt));
  const tgt = el("div", "side");
  tgt.append(say(el("h3"), w("target")), chips(g.output));
  tgt.appendChild(el("p", "out-text", g.output_text));
  sides.append(src, el("span", "arrow", "→"), tgt);
  box.appendChild(sides);
  if (!g.steps || !g.steps.length) return;
  box.appendChild(say(el("h3", "place"), w("alignment")));
  const targets = g.steps.map((s) => s.picked.token);
  const row = el("div", "heads");
  const nLayers = g.steps[0].cross_attention.length, nHeads = g.steps[0].cross_attention[0].length;
  for (let L = 0; L < nLayers; L++) {
    for (let h = 0; h < nHeads; h++) {
      if (hiddenHeads.has(h)) continue;
      const get = (r, c) => g.steps[r].cross_attention[L][h][c];
      const canvas = heatmap({ n: targets.length, m: g.prompt.length, get, rowLabels: targets, colLabels: g.prompt,
        tipFor: (r, c) => `${word("target")}: ${visible(targets[r])}  ·  ${word("source")}: ${visible(g.prompt[c])}\n${word("prob")}: ${full(get(r, c))}`,
        maxWidth: 380 });
      canvas.dataset.layer = String(L);
      canvas.dataset.head = String(h);
      row.appendChild(figureBox((l) => `${word("dec_layer", { n: L + 1 }, l)}, ${word("head", { n: h + 1 }, l)}`, canvas, `alignment-${L}-${h}`));
    }
  }
  box.appendChild(row);
  // Each target token: what greedy chose from.
  const table = el("table", "plain steps-table");
  const head = table.createTHead().insertRow();
  for (const key of ["target", "candidates_h", "picked_h"]) head.appendChild(say(el("th"), w(key)));
  const body = table.createTBody();
  for (const s of g.steps) {
    const tr = body.insertRow();
    tr.appendChild(el("td", "mono", s.target.map(visible).join(" ")));
    tr.appendChild(el("td", "mono", s.candidates.slice(0, 5).map((c) => `${visible(c.token)} ${prob(c.p)}`).join(" · ")));
    tr.appendChild(el("td", "mono", `${visible(s.picked.token)} (${prob(s.picked.p)})`));
  }
  box.appendChild(table);
}

async function beam(width) {
  try {
    state.beam = await api("/api/beam", { text: state.text, beam: width });
    showError("");
    const tree = document.getElementById("gx-beam");
    if (tree) drawBeam(tree, state.beam);
  } catch (e) {
    if (!aborted(e)) showError(e.message);
  }
}

// The beam tree as an indented list: each step's candidates, kept, finished or pruned.
function drawBeam(box, b) {
  box.textContent = "";
  const list = el("ol", "beam");
  for (const s of b.steps) {
    const li = el("li");
    li.appendChild(say(el("strong"), w("step_n", { n: s.step })));
    const ul = el("ul");
    for (const c of s.candidates) {
      const status = c.status === "kept" ? "kept_s" : c.status;
      const item = el("li", "cand " + c.status);
      item.appendChild(el("span", "mono", c.tokens.map(visible).join(" ")));
      item.appendChild(say(el("span", "score"), (l) => ` ${word("score_s", {}, l)} ${number(c.score, 3)}` +
        (c.normalised !== null && c.normalised !== undefined ? ` · ${word("normalised", {}, l)} ${number(c.normalised, 3)}` : "")));
      item.appendChild(say(el("span", "status"), w(status)));
      ul.appendChild(item);
    }
    li.appendChild(ul);
    list.appendChild(li);
  }
  box.appendChild(list);
  const out = el("p", "out-text");
  out.append(say(el("strong"), w("output")), document.createTextNode(": " + b.output_text));
  box.appendChild(out);
}

start();
