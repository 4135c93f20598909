// The Analyses tab: direct logit attribution (/api/attribute: each head's and each MLP's share of a
// token's logit at the last position) and activation patching (/api/patch: the corrupt text run
// with one site at a time taken from the clean text's run). Both are glassformer.observe.analysis
// on the server; this file draws what it answers. Loaded after flow.js; it adds its tab to drawPanel.
"use strict";

Object.assign(WORDS.en, {
  attr_title: "Direct logit attribution", attr_target: "target token", attr_top_choice: "the model's top next token",
  attr_type: "or type one token", attr_summary: "logit of “{token}” (id {id}) at the last position: {logit} = the sum of the terms below, {total}",
  attr_frozen: "The final norm's {scale} = {value} is frozen at its actual value, so the logit is a sum of one term per component (direct effects only: what a component adds through later layers is not in its term).",
  attr_heatmap: "heads and MLPs (layers × heads, MLP last)", attr_top: "largest contributions", attr_rest: "remaining terms",
  attr_cell: "layer {l}, {part}: {v}", mlp: "MLP", attr_head: "head {h}",
  token_embedding: "token embedding", position_embedding: "position embedding", pair_embedding: "pair embedding",
  segment_embedding: "segment embedding", normed_embedding: "the embeddings' sum, normed", o_proj_bias: "W_O biases (all layers)",
  norm_shift: "final norm shift β",
  patch_title: "Activation patching", patch_about: "The corrupt text is run again and again, each time with one site's activation (the residual stream at one layer and position, or one head's output) taken from the clean text's run. A cell near 1 restores the clean prediction: the difference between the texts flows through it.",
  patch_clean: "clean (the text above)", patch_corrupt: "corrupt", patch_metric: "metric", patch_run: "Run patching",
  patch_default: "one token changed", patch_counts: "{c} and {k} tokens", patch_resid: "residual stream (layer × position)",
  patch_heads: "head outputs at all positions (layer × head)", patch_logit_diff: "logit({t}) − logit({f}) at the last position",
  patch_logprob: "log p({t}) at the last position", patch_summary: "{metric}: clean {clean}, corrupt {corrupt}; each cell normalised: 1 = the clean run's value, 0 = the corrupt run's",
  patch_refused: "The library refuses: {why}", patch_same: "Patching compares the two runs site by site, so both texts must have the same number of tokens.",
  patch_cell: "{row}, {col}: {v}", patch_not_run: "not run", patch_stale: "The text changed: press “Run patching” (a model this size takes a while).",
  patch_busy: "patching… ({runs} runs of the model)",
  patch_press: "Press “Run patching”: it runs this model {runs} times, which takes a while at this size.",
});
Object.assign(WORDS.zh, {
  attr_title: "直接 logit 归因", attr_target: "目标词元", attr_top_choice: "模型最可能的下一个词元",
  attr_type: "或输入一个词元", attr_summary: "“{token}”（编号 {id}）在最后一个位置的 logit：{logit} = 下面各项之和 {total}",
  attr_frozen: "最后归一化的 {scale} = {value} 固定为实际的值，所以 logit 等于每个部件一项之和（只算直接作用：部件通过后面各层间接加上的不算在内）。",
  attr_heatmap: "各头与各 MLP（层 × 头，MLP 在最后）", attr_top: "贡献最大的部分", attr_rest: "其余各项",
  attr_cell: "第 {l} 层，{part}：{v}", mlp: "MLP", attr_head: "第 {h} 头",
  token_embedding: "词嵌入", position_embedding: "位置嵌入", pair_embedding: "词对嵌入", segment_embedding: "片段嵌入",
  normed_embedding: "嵌入之和（归一化后）", o_proj_bias: "W_O 的偏置（所有层）", norm_shift: "最后归一化的平移 β",
  patch_title: "激活修补", patch_about: "把被破坏的文本一遍遍重新运行，每次把一处的激活（某层某位置的残差流，或某个头的输出）换成干净文本运行时的值。接近 1 的格子能恢复干净文本的预测：两段文本的差别经由它传递。",
  patch_clean: "干净文本（上面的文本）", patch_corrupt: "被破坏的文本", patch_metric: "指标", patch_run: "运行激活修补",
  patch_default: "改动一个词元", patch_counts: "{c} 个和 {k} 个词元", patch_resid: "残差流（层 × 位置）",
  patch_heads: "所有位置上的头输出（层 × 头）", patch_logit_diff: "最后一个位置上 logit({t}) − logit({f})",
  patch_logprob: "最后一个位置上的 log p({t})", patch_summary: "{metric}：干净 {clean}，被破坏 {corrupt}；每格已归一化：1 = 干净运行的值，0 = 被破坏运行的值",
  patch_refused: "库拒绝了：{why}", patch_same: "激活修补逐处比较两次运行，所以两段文本的词元数必须相同。",
  patch_cell: "{row}，{col}：{v}", patch_not_run: "未运行", patch_stale: "文本已改变：请按“运行激活修补”（这么大的模型要算一会儿）。",
  patch_busy: "正在修补……（模型运行 {runs} 次）",
  patch_press: "请按“运行激活修补”：它要把这个模型运行 {runs} 次，这么大的模型要算一会儿。",
});

const analyses = { attribution: null, attrKey: "", target: null, attrError: "", patching: null, patchKey: "", corrupt: null,
  metric: "logit_diff", patchError: "", patchControl: null, attrControl: null };

const drawPanelBeforeAnalyses = drawPanel;
drawPanel = function (tab, panel) {
  if (tab === "analyses") drawAnalyses(panel);
  else drawPanelBeforeAnalyses(tab, panel);
};
const refreshBeforeAnalyses = refreshPanels;
refreshPanels = function (signal) {
  refreshBeforeAnalyses(signal);
  if (state.tab === "analyses") refreshAnalyses(false);
};

// A model small enough to patch on every change of the text: (n_layer + 1) × T + n_layer × n_head runs
// of it take well under a second up to about 4 layers of width 512; larger ones patch on request.
function patchesQuickly() {
  const c = (state.info && state.info.config) || {};
  return (c.n_layer || 0) * (c.n_embd || 0) <= 2048;
}
const patchBody = () => ({ ...request(), metric: analyses.metric, ...(analyses.corrupt === null ? {} : { corrupt: analyses.corrupt }) });
const attrBody = () => ({ ...request(), target: analyses.target });

function refreshAnalyses(force) {
  if (!state.info || state.info.kind !== "gpt") return;
  const a = JSON.stringify([modelName(), attrBody()]); // modelName: flow.js's
  if (a !== analyses.attrKey) {
    analyses.attrKey = a;
    if (analyses.attrControl) analyses.attrControl.abort();
    const mine = analyses.attrControl = new AbortController();
    api("/api/attribute", attrBody(), mine.signal).then((answer) => {
      analyses.attribution = answer;
      analyses.attrError = "";
      redrawAnalysis("gx-attribution", drawAttribution);
    }).catch((e) => {
      if (aborted(e)) return;
      analyses.attrError = e.message;
      analyses.attrKey = "";
      redrawAnalysis("gx-attribution", drawAttribution);
    });
  }
  const p = JSON.stringify([modelName(), patchBody()]);
  // A large model patches on request only: its runs hold the server (one request at a time) for seconds.
  if (p !== analyses.patchKey && (force || patchesQuickly())) {
    analyses.patchKey = p;
    if (analyses.patchControl) analyses.patchControl.abort();
    const mine = analyses.patchControl = new AbortController();
    analyses.patchBusy = true;
    redrawAnalysis("gx-patching", drawPatching);
    api("/api/patch", patchBody(), mine.signal).then((answer) => {
      analyses.patching = answer;
      analyses.patchError = "";
      analyses.patchBusy = false;
      redrawAnalysis("gx-patching", drawPatching);
    }).catch((e) => {
      if (aborted(e)) return;
      analyses.patchError = e.message;
      analyses.patchKey = "";
      analyses.patchBusy = false;
      redrawAnalysis("gx-patching", drawPatching);
    });
  } else if (p !== analyses.patchKey) {
    redrawAnalysis("gx-patching", drawPatching); // says the heatmap is of an older text
  }
}
function redrawAnalysis(id, draw) {
  const box = document.getElementById(id);
  if (box && state.tab === "analyses") draw(box);
}

function drawAnalyses(panel) {
  if (!state.info || state.info.kind !== "gpt") {
    panel.appendChild(say(el("p", "hint big"), w("flow_gpt_only")));
    return;
  }
  const attr = el("section", "analysis");
  attr.id = "gx-attribution";
  const patch = el("section", "analysis");
  patch.id = "gx-patching";
  panel.append(attr, patch);
  drawAttribution(attr);
  drawPatching(patch);
  refreshAnalyses(false);
}

// -------------------------------------------------------------------------------------------
// Attribution: the heatmap (layers × heads, the MLP last), the largest terms, the rest

const partName = (head) => (l) => (head === null ? word("mlp", {}, l) : word("attr_head", { h: head + 1 }, l));
function openComponent(layer, head) {
  if (typeof openSteps === "function") openSteps(head === null ? "dec-ffn" : "dec-self", layer, head);
}

function drawAttribution(box) {
  box.textContent = "";
  box.appendChild(say(el("h3", "place"), w("attr_title")));
  const controls = el("div", "controls");
  const label = el("label");
  const select = el("select");
  select.id = "gx-attr-target";
  const top = el("option");
  top.value = "";
  say(top, w("attr_top_choice"));
  select.appendChild(top);
  const next = (state.result && state.result.next) || [];
  for (const c of next) {
    const o = el("option", "", `${visible(c.token)}  (${c.id})`);
    o.value = String(c.id);
    select.appendChild(o);
  }
  select.value = typeof analyses.target === "number" && next.some((c) => c.id === analyses.target) ? String(analyses.target) : "";
  select.addEventListener("change", () => {
    analyses.target = select.value === "" ? null : Number(select.value);
    refreshAnalyses(false);
  });
  label.append(say(el("span", "name"), w("attr_target")), document.createTextNode(" "), select);
  const typed = el("input");
  typed.type = "text";
  typed.id = "gx-attr-text";
  typed.value = typeof analyses.target === "string" ? analyses.target : "";
  typed.addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    analyses.target = typed.value === "" ? null : typed.value;
    refreshAnalyses(false);
  });
  const typedLabel = el("label");
  typedLabel.append(say(el("span", "name"), w("attr_type")), document.createTextNode(" "), typed);
  controls.append(label, typedLabel);
  box.appendChild(controls);
  if (analyses.attrError) box.appendChild(el("p", "refused", analyses.attrError));
  const a = analyses.attribution;
  if (!a) return;
  box.classList.toggle("stale", !!analyses.attrError);
  box.appendChild(say(el("p", "summary"), w("attr_summary", { token: visible(a.token), id: a.target, logit: number(a.logit, 4), total: number(a.total, 4) })));
  box.appendChild(say(el("p", "hint"), w("attr_frozen", { scale: a.norm === "layernorm" ? "σ" : "rms", value: number(a.scale, 4) })));
  const nLayer = a.heads.length, nHead = a.heads[0].length;
  const get = (r, c) => (c < nHead ? a.heads[r][c] : a.ffn[r]);
  let largest = 1e-12;
  for (let r = 0; r < nLayer; r++) for (let c = 0; c <= nHead; c++) largest = Math.max(largest, Math.abs(get(r, c)));
  const rows = [...Array(nLayer).keys()].map((i) => word("layer", { n: i + 1 }));
  const cols = [...[...Array(nHead).keys()].map((h) => String(h + 1)), word("mlp")];
  const canvas = heatmap({ n: nLayer, m: nHead + 1, get, rowLabels: rows, colLabels: cols, palette: { scale: largest }, maxWidth: 420,
    tipFor: (r, c) => word("attr_cell", { l: r + 1, part: partName(c < nHead ? c : null)(lang), v: full(get(r, c)) }) });
  canvas.id = "gx-attr-heatmap";
  const figures = el("div", "figures");
  figures.appendChild(figureBox(w("attr_heatmap"), canvas, "attribution"));
  const side = el("div");
  side.appendChild(say(el("h3", "place"), w("attr_top")));
  const table = el("table", "contrib");
  table.id = "gx-attr-top";
  const body = table.createTBody();
  for (const t of a.top) {
    const tr = body.insertRow();
    tr.dataset.layer = String(t.layer);
    tr.dataset.head = t.head === null ? "mlp" : String(t.head);
    tr.dataset.value = String(t.value);
    tr.appendChild(say(el("td"), (l) => `${word("layer", { n: t.layer + 1 }, l)} · ${partName(t.head)(l)}`));
    tr.appendChild(el("td", "num", number(t.value, 4)));
    const bar = el("td", "bar");
    const fill = el("span", "fill");
    fill.style.width = (100 * Math.abs(t.value) / largest).toFixed(1) + "%";
    fill.style.background = css(colour({ scale: largest }, t.value > 0 ? largest : -largest));
    bar.appendChild(fill);
    tr.appendChild(bar);
    tr.addEventListener("click", () => openComponent(t.layer, t.head));
  }
  side.appendChild(table);
  side.appendChild(say(el("h3", "place"), w("attr_rest")));
  const rest = el("table", "contrib");
  const rb = rest.createTBody();
  for (const [name, value] of Object.entries(a.remaining)) {
    const tr = rb.insertRow();
    tr.appendChild(say(el("td"), w(name)));
    tr.appendChild(el("td", "num", number(value, 4)));
  }
  side.appendChild(rest);
  figures.appendChild(side);
  box.appendChild(figures);
}

// -------------------------------------------------------------------------------------------
// Patching: the clean and the corrupt text, the metric, the two heatmaps

function drawPatching(box) {
  box.textContent = "";
  box.appendChild(say(el("h3", "place"), w("patch_title")));
  box.appendChild(say(el("p", "hint"), w("patch_about")));
  const controls = el("div", "controls");
  const clean = el("label");
  clean.append(say(el("span", "name"), w("patch_clean")), document.createTextNode(": "), el("span", "mono", state.text));
  const corrupt = el("input");
  corrupt.type = "text";
  corrupt.id = "gx-corrupt";
  corrupt.value = analyses.corrupt !== null ? analyses.corrupt : analyses.patching ? analyses.patching.corrupt_text : "";
  corrupt.addEventListener("keydown", (event) => { if (event.key === "Enter") go(); });
  const corruptLabel = el("label");
  corruptLabel.append(say(el("span", "name"), w("patch_corrupt")), document.createTextNode(" "), corrupt);
  const metric = el("select");
  metric.id = "gx-patch-metric";
  for (const m of ["logit_diff", "logprob"]) {
    const o = el("option", "", m);
    o.value = m;
    metric.appendChild(o);
  }
  metric.value = analyses.metric;
  metric.addEventListener("change", () => { analyses.metric = metric.value; go(); });
  const metricLabel = el("label");
  metricLabel.append(say(el("span", "name"), w("patch_metric")), document.createTextNode(" "), metric);
  const go = () => { analyses.corrupt = corrupt.value === "" ? null : corrupt.value; refreshAnalyses(true); }; // empty: the default
  const start = button("patch_run", go, "primary");
  start.id = "gx-patch-run";
  const reset = button("patch_default", () => { analyses.corrupt = null; refreshAnalyses(true); }, "small");
  controls.append(clean, corruptLabel, metricLabel, start, reset);
  box.appendChild(controls);
  const p = analyses.patching;
  if (analyses.patchBusy) {
    const c = state.info.config;
    const T = state.result ? state.result.tokens.length : 0;
    box.appendChild(say(el("p", "hint"), w("patch_busy", { runs: (c.n_layer + 1) * T + c.n_layer * c.n_head })));
  }
  if (analyses.patchError) {
    const refused = el("div", "refused");
    refused.id = "gx-patch-refused";
    refused.appendChild(say(el("p"), w("patch_refused", { why: analyses.patchError })));
    if (/same length/.test(analyses.patchError)) refused.appendChild(say(el("p"), w("patch_same")));
    box.appendChild(refused);
  }
  if (!p && !analyses.patchBusy && !analyses.patchError && !patchesQuickly()) {
    const c = state.info.config;
    const T = state.result ? state.result.tokens.length : 0;
    box.appendChild(say(el("p", "hint"), w("patch_press", { runs: (c.n_layer + 1) * T + c.n_layer * c.n_head })));
  }
  if (!p) return;
  const current = JSON.stringify([modelName(), patchBody()]) === analyses.patchKey;
  box.classList.toggle("stale", !!analyses.patchError || (!current && !analyses.patchBusy));
  if (!current && !analyses.patchBusy && !analyses.patchError) box.appendChild(say(el("p", "hint"), w("patch_stale")));
  const metricText = (l) => word(p.metric === "logprob" ? "patch_logprob" : "patch_logit_diff",
    { t: visible(p.target_token), f: visible(p.foil_token === null ? "" : p.foil_token) }, l);
  box.appendChild(say(el("p", "summary"), (l) => word("patch_summary", { metric: metricText(l), clean: number(p.clean, 4), corrupt: number(p.corrupt, 4) }, l)));
  const figures = el("div", "figures");
  const layerName = (label) => (label === "embed" ? word("lens_embedding") : label.replace(/^block (\d+)$/, (_, n) => word("lens_block", { n })));
  const rows = p.layer_labels.map(layerName);
  const cell = (grid, rowLabels, colLabels) => (r, c) => word("patch_cell", { row: rowLabels[r], col: visible(colLabels[c]),
    v: grid[r][c] === null ? word("patch_not_run") : full(grid[r][c]) });
  // as wide as the panel allows: a long text's positions keep cells large enough for their labels
  const wide = Math.max(560, Math.min(14 * p.resid[0].length + 160, box.clientWidth - 60));
  const resid = heatmap({ n: p.resid.length, m: p.resid[0].length, get: (r, c) => p.resid[r][c], rowLabels: rows,
    colLabels: p.position_labels, palette: { scale: 1 }, maxWidth: wide, tipFor: cell(p.resid, rows, p.position_labels) });
  resid.id = "gx-patch-resid";
  figures.appendChild(figureBox(w("patch_resid"), resid, "patching-residual"));
  const headRows = p.heads.map((_, i) => word("layer", { n: i + 1 }));
  const headCols = p.heads[0].map((_, h) => String(h + 1));
  const heads = heatmap({ n: p.heads.length, m: p.heads[0].length, get: (r, c) => p.heads[r][c], rowLabels: headRows,
    colLabels: headCols, palette: { scale: 1 }, maxWidth: 360, tipFor: cell(p.heads, headRows, headCols.map((h) => word("attr_head", { h }))) });
  heads.id = "gx-patch-heads";
  figures.appendChild(figureBox(w("patch_heads"), heads, "patching-heads"));
  box.appendChild(figures);
}
