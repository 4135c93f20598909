// The Flow tab: one token's path through a GPT as one picture with the live numbers, from
// /api/flow (glassformer/explain/flow.py): its embedding, then per layer its Q, K and V, its
// query's attention over the context (a row per head), the attention output, the feed-forward's
// hidden activation, the residual stream after each sublayer (a strip and its norm) and the
// logit lens's guess; at the end the final norm and the next-token probabilities through the
// sampling settings. Wide vectors are strips of colour (one pixel column per bin of values, the
// bin's largest |value| drawn; hover says each value). A change of input or setting animates: the
// strips interpolate from the old values to the new, the bars slide (flow.css transitions).
// Clicking an element opens its steps. Display only: the numbers come from the server.
// Loaded after panels.js; it adds the tab to drawPanel and the flow's request to run().
"use strict";

Object.assign(WORDS.en, {
  tab_flow: "Flow", tab_analyses: "Analyses",
  flow_intro: "One token's path through the model, with the live numbers. Click a token to follow it; click any element to open its steps.",
  flow_token: "following position {p}: {token}", flow_layer: "layer", flow_qkv: "Q · K · V of this token",
  flow_attention: "its attention (heads × context, shade ∝ √weight)", flow_attn_out: "attention output", flow_mid: "residual + attention",
  flow_mlp: "MLP hidden", flow_resid: "residual stream after the layer", flow_lens: "logit lens",
  flow_embedding: "embedding", flow_tok: "token", flow_pos: "position", flow_sum: "token + position",
  flow_final: "final norm", flow_output: "next-token probabilities (after temperature, top-k, top-p)",
  flow_norm: "‖x‖ = {n}", flow_index: "{what}, value {i} of {n}", flow_head_of: "{what}, head {h}, value {i} of {d}",
  flow_open: "click: open its steps", flow_open_lens: "click: open the logit lens", flow_wait: "computing the flow…",
  flow_gpt_only: "The flow follows a GPT's token; this translation model has the Steps, Attention and Translation tabs.",
  flow_softmax: "before the sampling settings: {p}", flow_p: "p = {p}", flow_weight: "head {h} → {token} (position {k}): {p}",
  flow_layer_n: "layer {n}", flow_strip_scale: "colour: ±{s} (the strip's largest |value|)",
  flow_legend: "Each vector is a strip of colour, one value per column (red positive, blue negative, each strip scaled to its own largest |value|); the yellow band is the residual stream, its bars the stream's length ‖x‖.",
  flow_norm_tip: "{what}: ‖x‖ = {n}",
});
Object.assign(WORDS.zh, {
  tab_flow: "流程", tab_analyses: "分析",
  flow_intro: "一个词元在整个模型中的路径，附实时数值。点击词元可改为跟随它；点击任何元素可打开它的步骤。",
  flow_token: "跟随第 {p} 个位置：{token}", flow_layer: "层", flow_qkv: "该词元的 Q · K · V",
  flow_attention: "它的注意力（头 × 上下文，颜色深浅 ∝ √权重）", flow_attn_out: "注意力输出", flow_mid: "残差 + 注意力",
  flow_mlp: "MLP 隐藏层", flow_resid: "该层之后的残差流", flow_lens: "Logit 透镜",
  flow_embedding: "嵌入", flow_tok: "词嵌入", flow_pos: "位置嵌入", flow_sum: "词 + 位置",
  flow_final: "最终归一化", flow_output: "下一个词元的概率（经过温度、top-k、top-p）",
  flow_norm: "‖x‖ = {n}", flow_index: "{what}，第 {i} 个值（共 {n} 个）", flow_head_of: "{what}，第 {h} 头，第 {i} 个值（共 {d} 个）",
  flow_open: "点击：打开它的步骤", flow_open_lens: "点击：打开 Logit 透镜", flow_wait: "正在计算流程…",
  flow_gpt_only: "流程跟随 GPT 的一个词元；这个翻译模型请看步骤、注意力和翻译标签页。",
  flow_softmax: "采样设置之前：{p}", flow_p: "p = {p}", flow_weight: "第 {h} 头 → {token}（位置 {k}）：{p}",
  flow_layer_n: "第 {n} 层", flow_strip_scale: "颜色：±{s}（该条中最大的 |值|）",
  flow_legend: "每个向量是一条颜色带，每列一个值（红为正，蓝为负，每条按它自己最大的 |值| 缩放）；黄色带是残差流，横条是它的长度 ‖x‖。",
  flow_norm_tip: "{what}：‖x‖ = {n}",
});

const FLOW_ANIMATE_MS = 320;
const flow = { data: null, key: "", drawnKey: "", control: null, position: null, view: null, timer: null };

// -------------------------------------------------------------------------------------------
// Hooks into the page: the tab's panel, and the flow asked for beside every run

const drawPanelBeforeFlow = drawPanel;
drawPanel = function (tab, panel) {
  if (tab === "flow") drawFlow(panel);
  else drawPanelBeforeFlow(tab, panel);
};
const runBeforeFlow = run;
run = function () {
  if (state.tab === "flow") refreshFlow(); // asked first: the flow does not wait for the walkthrough
  return runBeforeFlow();
};
const refreshBeforeFlow = refreshPanels;
refreshPanels = function (signal) {
  refreshBeforeFlow(signal);
  if (state.tab === "flow") refreshFlow();
};
// On the Flow tab, a click on a token of the strip above follows that token.
document.getElementById("gx-tokens").addEventListener("click", (event) => {
  const chip = event.target.closest(".chip");
  if (!chip || state.tab !== "flow" || !state.info || state.info.kind !== "gpt") return;
  const index = [...chip.parentElement.children].indexOf(chip);
  follow(index);
});

function follow(position) {
  const last = flow.data ? flow.data.tokens.length - 1 : null;
  flow.position = position === last ? null : position; // the last: follows the text's end as it grows
  markChips();
  if (state.tab === "flow") refreshFlow();
}
const followed = () => (flow.data ? flow.data.position : null);
function markChips() {
  const p = followed();
  const chips = document.querySelectorAll("#gx-tokens .chip, #gx-flow-chips .chip");
  for (const chip of chips) {
    const i = [...chip.parentElement.children].indexOf(chip);
    chip.classList.toggle("followed", i === p);
  }
}

// -------------------------------------------------------------------------------------------
// Asking: the whole flow when the text, edits, ablations or position change; only the
// probabilities when only a sampling setting changed

function flowRequest() {
  const s = typeof samplingRequest === "function" ? samplingRequest() : {};
  return { ...request(), ...s, position: flow.position };
}
const modelName = () => (state.info ? `${state.info.name} ${JSON.stringify(state.info.config)}` : "");
function refreshFlow() {
  if (!state.info || state.info.kind !== "gpt") return;
  const body = flowRequest();
  const key = JSON.stringify([modelName(), body]); // another model (a switch in the page) asks anew
  if (key === flow.key) return; // asked already (in flight, or drawn)
  const { temperature, top_k, top_p, ...rest } = body;
  const outputOnly = !!flow.data && JSON.stringify([modelName(), rest]) === flow.drawnRest;
  flow.key = key;
  if (flow.control) flow.control.abort();
  flow.control = new AbortController();
  const mine = flow.control;
  api("/api/flow", { ...body, output_only: outputOnly }, mine.signal).then((answer) => {
    if (outputOnly) flow.data = { ...flow.data, output: answer.output };
    else { flow.data = answer; flow.drawnRest = JSON.stringify([modelName(), rest]); }
    flow.drawnKey = key;
    showError("");
    const panel = document.getElementById("gx-panel-flow");
    if (flow.view && flow.view.root.isConnected) updateFlow(!outputOnly);
    else if (panel && state.tab === "flow") { panel.textContent = ""; drawFlow(panel); } // the first answer
    markChips();
    document.body.dataset.flow = JSON.stringify(body); // for tests: the flow drawn is this request's
  }).catch((e) => {
    if (aborted(e)) return;
    flow.key = ""; // asked again next time
    if (body.position !== null && /^position /.test(e.message)) { flow.position = null; refreshFlow(); return; } // a shorter text

    showError(e.message);
    if (flow.view) flow.view.root.classList.add("stale");
  });
}

// -------------------------------------------------------------------------------------------
// Strips: a vector as one row of colour, bins of values per pixel column; hover says each value

const strips = []; // every strip drawn: {canvas, shown, target, from, label}
function strip(cls, label, open) {
  const canvas = el("canvas", "strip " + cls);
  canvas.height = 1;
  canvas.width = 1;
  const s = { canvas, shown: null, from: null, target: null, label, heads: 1 };
  canvas.addEventListener("mousemove", (event) => {
    if (!s.target) return;
    const box = canvas.getBoundingClientRect();
    const n = s.target.length;
    const i = Math.max(0, Math.min(n - 1, Math.floor(((event.clientX - box.left) / box.width) * n)));
    const d = n / s.heads;
    const where = s.heads > 1
      ? word("flow_head_of", { what: s.label(), h: Math.floor(i / d) + 1, i: (i % d) + 1, d })
      : word("flow_index", { what: s.label(), i: i + 1, n });
    showTip(event, [`${where}: ${full(s.target[i])}`, word("flow_norm", { n: number(s.norm, 3) }),
      word("flow_strip_scale", { s: number(s.scale, 3) }), word("flow_open")].join("\n"));
  });
  canvas.addEventListener("mouseleave", hideTip);
  if (open) canvas.addEventListener("click", (event) => {
    const box = canvas.getBoundingClientRect();
    const frac = (event.clientX - box.left) / box.width;
    open(Math.min(s.heads - 1, Math.floor(frac * s.heads)));
  });
  strips.push(s);
  return s;
}
function setStrip(s, vec, heads) {
  if (!vec) { s.canvas.hidden = true; s.target = null; return; }
  s.canvas.hidden = false;
  const values = vec.values.map((x) => (typeof x === "number" ? x : 0));
  s.from = s.shown && s.shown.length === values.length ? s.shown : null;
  s.target = values;
  s.norm = vec.norm;
  s.heads = heads || 1;
  s.scale = Math.max(1e-12, ...values.map(Math.abs));
  s.canvas.dataset.norm = String(vec.norm);
}
function paintStrip(s, t) {
  if (!s.target) return;
  const n = s.target.length;
  const css = s.canvas.clientWidth || 120;
  const bins = Math.max(1, Math.min(n, Math.round(css * (window.devicePixelRatio || 1))));
  if (s.canvas.width !== bins) s.canvas.width = bins;
  const values = s.from && t < 1 ? s.target.map((x, i) => s.from[i] + (x - s.from[i]) * t) : s.target;
  s.shown = values;
  const scale = s.from && t < 1 ? Math.max(1e-12, ...values.map(Math.abs)) : s.scale;
  const ctx = s.canvas.getContext("2d");
  const image = ctx.createImageData(bins, 1);
  for (let b = 0; b < bins; b++) {
    const lo = Math.floor((b * n) / bins), hi = Math.max(lo + 1, Math.floor(((b + 1) * n) / bins));
    let pick = values[lo];
    for (let i = lo + 1; i < hi; i++) if (Math.abs(values[i]) > Math.abs(pick)) pick = values[i];
    const rgb = colour({ scale }, pick);
    image.data.set([rgb[0], rgb[1], rgb[2], 255], 4 * b);
  }
  ctx.putImageData(image, 0, 0);
}

// The attention of the followed query: a small heatmap, a row per head, a column per key.
function attentionMap(layer) {
  const canvas = el("canvas", "attn-map");
  const a = { canvas, rows: null, from: null, shown: null };
  canvas.addEventListener("mousemove", (event) => {
    if (!a.rows) return;
    const [h, k] = cellOf(event);
    const tokens = flow.data.tokens;
    showTip(event, [word("flow_weight", { h: h + 1, token: visible(tokens[k] ? tokens[k].token : "?"), k, p: full(a.rows[h][k]) }),
      word("flow_open")].join("\n"));
  });
  const cellOf = (event) => {
    const box = canvas.getBoundingClientRect();
    const h = Math.max(0, Math.min(a.rows.length - 1, Math.floor(((event.clientY - box.top) / box.height) * a.rows.length)));
    const m = a.rows[0].length;
    return [h, Math.max(0, Math.min(m - 1, Math.floor(((event.clientX - box.left) / box.width) * m)))];
  };
  canvas.addEventListener("mouseleave", hideTip);
  canvas.addEventListener("click", (event) => {
    if (!a.rows) return;
    const h = cellOf(event)[0];
    openSteps("dec-self", layer, h, `dec.${layer}.self.h${h}.probs`);
  });
  return a;
}
function paintAttention(a, t) {
  if (!a.rows) return;
  const h = a.rows.length, m = a.rows[0].length;
  if (a.canvas.width !== m || a.canvas.height !== h) { a.canvas.width = m; a.canvas.height = h; }
  const mixSame = a.from && a.from.length === h && a.from[0].length === m && t < 1;
  const ctx = a.canvas.getContext("2d");
  const image = ctx.createImageData(m, h);
  const shown = a.rows.map((row, r) => row.map((x, c) => (mixSame ? a.from[r][c] + (x - a.from[r][c]) * t : x)));
  a.shown = shown;
  // Shaded by √weight: over a long context every weight is small, and coloured linearly a head
  // that spreads its attention would be white (√(1/64) = 0.125 still shows); hover says the weight.
  for (let r = 0; r < h; r++) {
    for (let c = 0; c < m; c++) {
      const rgb = colour({ probabilities: true }, Math.sqrt(Math.max(0, shown[r][c])));
      image.data.set([rgb[0], rgb[1], rgb[2], 255], 4 * (r * m + c));
    }
  }
  ctx.putImageData(image, 0, 0);
}

// One animation for everything: old values to new over FLOW_ANIMATE_MS.
let animation = null;
function animate() {
  const start = performance.now();
  if (animation) cancelAnimationFrame(animation);
  const frame = (now) => {
    const t = Math.min(1, (now - start) / FLOW_ANIMATE_MS);
    const eased = 1 - (1 - t) * (1 - t);
    for (const s of strips) if (s.canvas.isConnected) paintStrip(s, eased);
    for (const a of flow.view.maps) paintAttention(a, eased);
    animation = t < 1 ? requestAnimationFrame(frame) : null;
    if (!animation) for (const a of flow.view.maps) a.from = null;
  };
  animation = requestAnimationFrame(frame);
}

// -------------------------------------------------------------------------------------------
// Opening an element's steps

// The Steps tab on the diagram's block `box` (at that layer and head), scrolled to step `id` where given.
function openSteps(box, layer, head, id) {
  hideTip();
  if (!state.result) return; // the walkthrough has not come yet
  state.box = box;
  if (layer !== undefined && layer !== null) state.layer = layer;
  if (head !== undefined && head !== null) state.head = head;
  state.tab = "steps";
  render();
  refreshPanels();
  if (id) showStep(id); // explore.js: scrolled to, and drawn
}
const preNorm = () => !state.info || !state.info.config || state.info.config.norm_position !== "post";

// -------------------------------------------------------------------------------------------
// The picture: built once per model shape, updated in place (so that it can animate)

function cellBox(cls, titleKey) {
  const box = el("div", "fcell " + cls);
  if (titleKey) box.appendChild(say(el("span", "fname"), w(titleKey)));
  return box;
}
function normBar(cls, what) {
  const wrap = el("div", "nbar " + cls);
  const fill = el("span", "fill");
  const text = el("span", "ntext mono");
  wrap.append(fill, text);
  wrap.addEventListener("mouseover", (event) => {
    showTip(event, [word("flow_norm_tip", { what: what(), n: full(Number(wrap.dataset.norm)) }), word("flow_open")].join("\n"));
  });
  wrap.addEventListener("mouseleave", hideTip);
  return { wrap, fill, text };
}
function lensCell(layerIndex) {
  const td = el("button", "flens mono");
  td.type = "button";
  td.addEventListener("click", () => { hideTip(); state.tab = "lens"; render(); refreshPanels(); });
  td.addEventListener("mouseover", (event) => {
    const rows = lensRows(layerIndex);
    if (rows) showTip(event, [...rows.map((t) => `${visible(t.token)}  ${number(t.p, 3, true)}`), word("flow_open_lens")].join("\n"));
  });
  td.addEventListener("mouseleave", hideTip);
  return td;
}
const lensRows = (i) => !flow.data ? null : i === 0 ? flow.data.embedding.lens : flow.data.layers[i - 1].lens;

function shapeKey(data) {
  const l = data.layers[0];
  return [data.layers.length, l.q.heads, l.q.values.length, l.k.values.length, l.mlp_hidden.values.length,
    !!data.embedding.position, !!data.final].join(",");
}

function buildFlow(data) {
  strips.length = 0;
  const root = el("div", "flow");
  root.id = "gx-flow";
  const view = { root, key: shapeKey(data), layers: [], maps: [], bars: [], out: [] };
  root.appendChild(say(el("p", "hint"), w("flow_intro")));
  root.appendChild(say(el("p", "hint legend"), w("flow_legend")));
  const controls = el("div", "sliders flow-sliders");
  if (typeof SLIDERS !== "undefined") {
    for (const spec of SLIDERS) {
      const label = el("label", "slider");
      const input = el("input");
      input.type = "range";
      input.id = "gx-flow-" + spec.key.replace("_", "-");
      input.min = spec.min;
      input.max = spec.key === "top_k" ? Math.min(state.info.config.vocab_size || 100, spec.max) : spec.max;
      input.step = spec.step;
      const shown = el("span", "value mono");
      const show = () => {
        const x = state.sampling[spec.key];
        shown.textContent = (spec.key === "top_k" && x === 0) || (spec.key === "top_p" && x >= 1) ? word("off") : String(x);
      };
      input.addEventListener("input", () => {
        state.sampling[spec.key] = Number(input.value);
        show();
        clearTimeout(flow.timer);
        flow.timer = setTimeout(refreshFlow, 30);
      });
      view.sync = [...(view.sync || []), () => { input.value = state.sampling[spec.key]; show(); }];
      label.append(say(el("span", "name"), w(spec.key)), input, shown);
      controls.appendChild(label);
    }
  }
  root.appendChild(controls);
  view.following = el("p", "following");
  root.appendChild(view.following);
  view.chips = el("div", "chips flow-chips");
  view.chips.id = "gx-flow-chips";
  root.appendChild(view.chips);

  const grid = el("div", "flow-grid");
  const scroller = el("div", "flow-scroll");
  scroller.appendChild(grid);
  root.appendChild(scroller);
  const heads = ["flow_layer", "flow_qkv", "flow_attention", "flow_attn_out", "flow_mid", "flow_mlp", "flow_resid", "flow_lens"];
  for (const key of heads) grid.appendChild(say(el("div", "fhead"), w(key)));

  // The embedding: token (+ position) = the residual stream's start
  const emb = el("div", "frow fembed");
  const name = say(el("button", "flabel"), w("flow_embedding"));
  name.type = "button";
  name.addEventListener("click", () => openSteps("dec-embed"));
  emb.appendChild(name);
  const parts = cellBox("fparts wide");
  view.tok = strip("vec", () => word("flow_tok"), () => openSteps("dec-embed", null, null, "embed.tokens"));
  view.pos = strip("vec", () => word("flow_pos"), () => openSteps("dec-embed", null, null, "embed.positions"));
  parts.append(say(el("span", "fname"), w("flow_tok")), view.tok.canvas, say(el("span", "fname"), w("flow_pos")), view.pos.canvas);
  if (!data.embedding.position) parts.querySelectorAll(".fname")[1].hidden = true;
  emb.appendChild(parts);
  const sum = cellBox("fresid");
  view.sum = strip("vec resid", () => word("flow_sum"), () => openSteps("dec-embed", null, null, "embed.sum"));
  view.sumBar = normBar("resid", () => word("flow_sum"));
  sum.append(view.sum.canvas, view.sumBar.wrap);
  emb.appendChild(sum);
  view.lens0 = lensCell(0);
  emb.appendChild(view.lens0);
  grid.appendChild(emb);

  const resid = preNorm() ? "dec-add-ffn" : "dec-addnorm-ffn";
  const mid = preNorm() ? "dec-add-self" : "dec-addnorm-self";
  // the walkthrough's step of the stream after each sublayer: the sum (pre-LN), or its Add & Norm (post-LN)
  const midStep = (i) => (preNorm() ? `dec.${i}.self.residual` : `dec.${i}.self.norm`);
  const residStep = (i) => (preNorm() ? `dec.${i}.ffn.residual` : `dec.${i}.ffn.norm`);
  data.layers.forEach((_, i) => {
    const row = el("div", "frow");
    row.dataset.layer = String(i);
    const label = say(el("button", "flabel"), w("flow_layer_n", { n: i + 1 }));
    label.type = "button";
    label.addEventListener("click", () => openSteps("dec-self", i));
    row.appendChild(label);
    const qkv = cellBox("fqkv");
    const L = { row };
    for (const part of ["q", "k", "v"]) {
      L[part] = strip("qkv " + part, () => `${word("flow_layer_n", { n: i + 1 })} · ${part.toUpperCase()}`, (h) => openSteps("dec-self", i, h, `dec.${i}.self.h${h}.${part}`));
      const line = el("div", "qline");
      line.append(el("span", "qname mono", part.toUpperCase()), L[part].canvas);
      qkv.appendChild(line);
    }
    row.appendChild(qkv);
    const att = cellBox("fattn");
    L.map = attentionMap(i);
    view.maps.push(L.map);
    att.appendChild(L.map.canvas);
    row.appendChild(att);
    const out = cellBox("fout");
    L.attnOut = strip("vec", () => `${word("flow_layer_n", { n: i + 1 })} · ${word("flow_attn_out")}`, () => openSteps("dec-self", i, null, `dec.${i}.self.out`));
    out.appendChild(L.attnOut.canvas);
    row.appendChild(out);
    const midCell = cellBox("fmid");
    L.mid = normBar("mid", () => `${word("flow_layer_n", { n: i + 1 })} · ${word("flow_mid")}`);
    L.mid.wrap.addEventListener("click", () => openSteps(mid, i, null, midStep(i)));
    midCell.appendChild(L.mid.wrap);
    row.appendChild(midCell);
    const mlp = cellBox("fmlp");
    L.mlp = strip("vec mlp", () => `${word("flow_layer_n", { n: i + 1 })} · ${word("flow_mlp")}`, () => openSteps("dec-ffn", i, null, `dec.${i}.ffn.act`));
    mlp.appendChild(L.mlp.canvas);
    row.appendChild(mlp);
    const rcell = cellBox("fresid");
    L.resid = strip("vec resid", () => `${word("flow_layer_n", { n: i + 1 })} · ${word("flow_resid")}`, () => openSteps(resid, i, null, residStep(i)));
    L.bar = normBar("resid", () => `${word("flow_layer_n", { n: i + 1 })} · ${word("flow_resid")}`);
    L.bar.wrap.addEventListener("click", () => openSteps(resid, i, null, residStep(i)));
    rcell.append(L.resid.canvas, L.bar.wrap);
    row.appendChild(rcell);
    L.lens = lensCell(i + 1);
    row.appendChild(L.lens);
    grid.appendChild(row);
    view.layers.push(L);
  });

  // The end: the final norm, the logits, the probabilities
  const end = el("div", "frow fend");
  const fname = say(el("button", "flabel"), w("flow_final"));
  fname.type = "button";
  fname.addEventListener("click", () => openSteps("dec-final"));
  end.appendChild(fname);
  const fin = cellBox("fparts wide");
  view.final = strip("vec", () => word("flow_final"), () => openSteps("dec-final", null, null, "dec.final.norm"));
  fin.appendChild(view.final.canvas);
  end.appendChild(fin);
  grid.appendChild(end);

  const probs = el("div", "flow-out");
  probs.appendChild(say(el("h3", "place"), w("flow_output")));
  const list = el("div", "out-bars");
  list.id = "gx-flow-out";
  for (let r = 0; r < 10; r++) {
    const line = el("button", "out-row");
    line.type = "button";
    const tok = el("span", "otok mono");
    const bar = el("span", "obar");
    const ghost = el("span", "ghost");
    const fill = el("span", "fill");
    bar.append(ghost, fill);
    const p = el("span", "op mono");
    line.append(tok, bar, p);
    line.addEventListener("click", () => openSteps("softmax", null, null, "next.probs"));
    line.addEventListener("mouseover", (event) => {
      const c = flow.data && flow.data.output.candidates[r];
      if (c) showTip(event, [`${visible(c.token)} · ${word("logit")} ${full(c.logit)}`, word("flow_p", { p: full(c.top_p) }),
        word("flow_softmax", { p: full(c.softmax) }), word("flow_open")].join("\n"));
    });
    line.addEventListener("mouseleave", hideTip);
    list.appendChild(line);
    view.out.push({ line, tok, fill, ghost, p });
  }
  probs.appendChild(list);
  probs.appendChild(view.kept = el("p", "kept"));
  root.appendChild(probs);
  return view;
}

function setBar(bar, norm, largest) {
  bar.fill.style.width = (100 * Math.min(1, norm / Math.max(largest, 1e-12))).toFixed(1) + "%";
  bar.text.textContent = number(norm, 2);
  bar.wrap.dataset.norm = String(norm);
}

function updateFlow(all) {
  const data = flow.data, view = flow.view;
  view.drawn = data;
  view.root.classList.remove("stale");
  if (all) {
    const p = data.position, token = data.tokens[p];
    view.following.textContent = "";
    view.following.appendChild(say(el("span"), w("flow_token", { p, token: visible(token.token) })));
    view.chips.textContent = "";
    data.tokens.forEach((t, i) => {
      const chip = el("button", "chip" + (i === p ? " followed" : ""), visible(t.token));
      chip.type = "button";
      chip.addEventListener("click", () => follow(i));
      view.chips.appendChild(chip);
    });
    scrollChips();
    setStrip(view.tok, data.embedding.token);
    setStrip(view.pos, data.embedding.position);
    setStrip(view.sum, data.embedding.sum);
    const norms = [data.embedding.sum.norm, ...data.layers.flatMap((l) => [l.resid_mid.norm, l.resid.norm])];
    const largest = Math.max(...norms);
    setBar(view.sumBar, data.embedding.sum.norm, largest);
    setLens(view.lens0, data.embedding.lens);
    data.layers.forEach((l, i) => {
      const L = view.layers[i];
      setStrip(L.q, l.q, l.q.heads);
      setStrip(L.k, l.k, l.k.heads);
      setStrip(L.v, l.v, l.v.heads);
      L.map.from = L.map.shown || L.map.rows;
      L.map.rows = l.attention;
      L.map.canvas.dataset.rows = JSON.stringify(l.attention.map((r) => r.length));
      setStrip(L.attnOut, l.attn_out);
      setBar(L.mid, l.resid_mid.norm, largest);
      setStrip(L.mlp, l.mlp_hidden);
      setStrip(L.resid, l.resid);
      setBar(L.bar, l.resid.norm, largest);
      setLens(L.lens, l.lens);
    });
    setStrip(view.final, data.final);
    animate();
  }
  const cands = data.output.candidates;
  const top = Math.max(1e-9, ...cands.map((c) => Math.max(c.top_p, c.softmax)));
  view.out.forEach((o, r) => {
    const c = cands[r];
    o.line.hidden = !c;
    if (!c) return;
    o.line.dataset.id = String(c.id);
    o.line.dataset.p = String(c.top_p);
    o.tok.textContent = visible(c.token);
    o.fill.style.width = (100 * c.top_p / top).toFixed(1) + "%";
    o.ghost.style.width = (100 * c.softmax / top).toFixed(1) + "%";
    o.p.textContent = number(c.top_p, 3, true);
    o.line.classList.toggle("cut", c.top_p === 0);
  });
  view.kept.textContent = "";
  const o = data.output;
  view.kept.appendChild(say(el("span"), o.greedy ? w("greedy_note") : w("kept", { k: o.kept.top_k, p: o.kept.top_p, v: o.kept.vocab })));
  for (const f of view.sync || []) f();
}
// The followed token's chip in the middle of the flow's own (scrolling) row of tokens.
function scrollChips() {
  const chips = flow.view && flow.view.chips, here = chips && flow.data && chips.children[flow.data.position];
  if (here) chips.scrollLeft = Math.max(0, here.offsetLeft - chips.offsetLeft - chips.clientWidth / 2);
}
function setLens(node, rows) {
  node.textContent = "";
  const best = rows[0];
  node.append(el("span", "tok", visible(best.token)), el("span", "p", number(best.p, 2, true)));
  const rgb = colour({ probabilities: true }, best.p);
  node.style.background = css(rgb);
  node.classList.toggle("dark", dark(rgb));
  node.dataset.token = best.token;
}

function drawFlow(panel) {
  if (!state.info || state.info.kind !== "gpt") {
    panel.appendChild(say(el("p", "hint big"), w("flow_gpt_only")));
    return;
  }
  if (!flow.data) {
    panel.appendChild(say(el("p", "hint"), w("flow_wait")));
    refreshFlow();
    return;
  }
  if (!flow.view || flow.view.key !== shapeKey(flow.data)) flow.view = buildFlow(flow.data);
  panel.appendChild(flow.view.root); // the same nodes each time: what changes next can animate
  if (flow.view.drawn !== flow.data) updateFlow(true);
  else { for (const s of strips) paintStrip(s, 1); for (const a of flow.view.maps) paintAttention(a, 1); for (const f of flow.view.sync || []) f(); }
  markChips();
  scrollChips(); // a node put back in the page starts scrolled to its left end
  refreshFlow();
}
