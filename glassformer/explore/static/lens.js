// The dot-product lens: a click on any cell of the Steps tab asks /api/cell what the cell came from
// (glassformer/explain/cell.py computes it in float64 from the step's recorded inputs) and shows
// it as numbers, as one would work it out on paper: for Q = X·Wᵀ + b the row of X, the column of
// Wᵀ, their products, their sum and the bias; for a softmax the exponentials and their sum; for a
// norm the mean, the variance or RMS, the normalised row, γ and β; for an elementwise op its
// inputs and its function. Display only: every number here comes from the server.
"use strict";

Object.assign(WORDS.en, {
  lens_title: "Lens: where this number comes from", lens_hint: "Click any cell to see the numbers it is made of.",
  lens_click: "click: the numbers it is made of", lens_not_sent: "(not sent with the page: a click computes it)",
  lens_row: "row", lens_loading: "computing…", lens_close: "Close",
  lens_recorded: "recorded by the model (float32)", lens_recomputed: "recomputed from the parts below (float64)",
  lens_dot: "a row times a column: each pair of numbers multiplied, the products added up",
  lens_products: "All {k} products (scroll sideways); the largest outlined", lens_largest: "The largest contributions, by |a · b|",
  lens_sum: "sum of the products", lens_bias: "plus the bias", lens_equals: "equals",
  lens_softmax: "softmax of the row: exponentials after subtracting the row's largest value, each over their sum",
  lens_max: "largest value of the row", lens_exps_sum: "sum of the exponentials", lens_ratio: "this exponential over the sum",
  lens_temperature: "divided by the temperature",
  lens_layer_norm: "LayerNorm of the row: minus its mean, over √(variance + ε), times γ, plus β",
  lens_rms_norm: "RMSNorm of the row: over √(mean of squares + ε), times γ",
  lens_mean: "mean μ", lens_variance: "variance σ²", lens_std: "σ = √(σ² + ε)", lens_mean_square: "mean of squares",
  lens_rms: "RMS = √(mean of squares + ε)", lens_eps: "ε", lens_normed: "normalised", lens_stat: "a statistic of the row",
  lens_inputs: "the inputs at this index", lens_function: "function", lens_factor: "factor",
  lens_same: "the same number, taken from", lens_lookup: "a row of the table, picked by the token id",
  lens_token: "token id", lens_rope: "RoPE: a pair of channels rotated by position × θᵢ",
  lens_position: "position", lens_pair: "pair i", lens_frequency: "θᵢ", lens_angle: "angle",
  lens_sinusoidal: "the position's sine or cosine", lens_argmax: "the index of the row's largest value",
  lens_pair_ids: "previous id × V + id", lens_previous: "previous id", lens_parameter: "a parameter of the model",
  lens_leaf: "an input: not computed from other steps", lens_set: "Set", lens_edit_to: "set this weight to",
  lens_sorted: "sorted", lens_in_order: "in order",
  edit_outside: "{edit} lies outside the {rows} × {cols} corner shown here (row {r}, column {c} of this weight); the equations that use it outline it.",
});
Object.assign(WORDS.zh, {
  lens_title: "透镜：这个数从何而来", lens_hint: "点击任意格子，查看它由哪些数算出。",
  lens_click: "点击：查看它由哪些数算出", lens_not_sent: "（未随页面发送：点击即可计算）",
  lens_row: "行", lens_loading: "计算中…", lens_close: "关闭",
  lens_recorded: "模型记录的值（float32）", lens_recomputed: "由下面各部分重新计算（float64）",
  lens_dot: "一行乘一列：每对数相乘，再把乘积加起来",
  lens_products: "全部 {k} 个乘积（可横向滚动）；最大的几项加了框", lens_largest: "贡献最大的项（按 |a · b|）",
  lens_sum: "乘积之和", lens_bias: "加上偏置", lens_equals: "等于",
  lens_softmax: "对这一行做 softmax：减去行内最大值后取指数，再各自除以它们的和",
  lens_max: "这一行的最大值", lens_exps_sum: "指数之和", lens_ratio: "这一项的指数除以总和",
  lens_temperature: "除以温度",
  lens_layer_norm: "对这一行做 LayerNorm：减去均值，除以 √(方差 + ε)，乘 γ，加 β",
  lens_rms_norm: "对这一行做 RMSNorm：除以 √(平方均值 + ε)，乘 γ",
  lens_mean: "均值 μ", lens_variance: "方差 σ²", lens_std: "σ = √(σ² + ε)", lens_mean_square: "平方的均值",
  lens_rms: "RMS = √(平方均值 + ε)", lens_eps: "ε", lens_normed: "归一化后", lens_stat: "这一行的统计量",
  lens_inputs: "该位置的输入", lens_function: "函数", lens_factor: "系数",
  lens_same: "同一个数，取自", lens_lookup: "按词元编号从表中取出的一行",
  lens_token: "词元编号", lens_rope: "RoPE：一对通道按 位置 × θᵢ 旋转",
  lens_position: "位置", lens_pair: "第 i 对", lens_frequency: "θᵢ", lens_angle: "角度",
  lens_sinusoidal: "该位置的正弦或余弦", lens_argmax: "这一行最大值的下标",
  lens_pair_ids: "前一个编号 × V + 编号", lens_previous: "前一个编号", lens_parameter: "模型的一个参数",
  lens_leaf: "输入：不是由其他步骤算出的", lens_set: "设定", lens_edit_to: "把这个权重改为",
  lens_sorted: "排序", lens_in_order: "原顺序",
  edit_outside: "{edit} 不在这里显示的 {rows} × {cols} 左上角内（此权重的第 {r} 行、第 {c} 列）；用到它的算式会把它框出来。",
});

if (state.cellLens === undefined) state.cellLens = null; // {card, id, index, key, data}: the cell the lens shows

// Two names for explore.js (openCellLens on a click, showCellLens when a card is drawn); the rest stays in here.
const { openCellLens, showCellLens } = (() => {

// A number as the lens writes it: six significant digits, a real minus sign, −∞ for null.
function sig(x) {
  if (x === null) return "−∞";
  if (typeof x !== "number") return String(x);
  const a = Math.abs(x);
  const text = a !== 0 && (a >= 1e5 || a < 1e-4) ? x.toExponential(4) : String(Number(x.toPrecision(6)));
  return text.replace(/-/g, "−");
}
const at = (index) => `[${index.join(", ")}]`;
const lensKey = () => state.cellLens && JSON.stringify([request(), state.cellLens.id, state.cellLens.index]);

function openCellLens(card, id, index) {
  state.cellLens = { card, id, index, key: null, data: null };
  render();
}
function closeLens() {
  state.cellLens = null;
  render();
}

// Called by stepCard for the card the lens belongs to: the answer kept, or asked for.
function showCellLens(holder) {
  const key = lensKey();
  if (state.cellLens.data && state.cellLens.key === key) {
    drawLens(holder, state.cellLens.data);
    return;
  }
  holder.appendChild(say(el("p", "note lens-loading"), w("lens_loading")));
  fetchLens(key);
}
let lensAsked = null;
async function fetchLens(key) {
  if (lensAsked === key) return;
  lensAsked = key;
  const { card, id, index } = state.cellLens;
  try {
    const data = await api("/api/cell", { ...request(), id, index });
    if (lensKey() !== key) return; // another cell or another text since
    state.cellLens.data = data;
    state.cellLens.key = key;
    const holder = document.querySelector(`[id="gx-step-${card}"] .lens-holder`);
    if (holder) { holder.textContent = ""; drawLens(holder, data); }
  } catch (e) {
    if (!aborted(e)) showError(e.message);
  } finally {
    if (lensAsked === key) lensAsked = null;
  }
}

function drawLens(holder, d) {
  const box = el("div", "lens");
  box.setAttribute("role", "region");
  box.dataset.kind = d.kind;
  const head = el("div", "lens-head");
  head.appendChild(say(el("h4"), w("lens_title")));
  head.appendChild(button("lens_close", closeLens, "small"));
  box.appendChild(head);
  const value = el("p", "lens-value");
  value.appendChild(el("code", "mono", `${d.id}${at(d.index)} = ${sig(d.value)}`));
  value.dataset.value = String(d.value);
  const where = [d.rows, d.cols].filter((x) => x !== null && x !== undefined).map(visible).join(" · ");
  if (where) value.appendChild(el("span", "dim", `  (${where})`));
  value.appendChild(say(el("span", "dim"), (l) => `  ${word("lens_recorded", {}, l)}`));
  box.appendChild(value);
  (LENS_KINDS[d.kind] || (() => {}))(box, d);
  if (d.kind !== "leaf") {
    const again = el("p", "lens-recomputed");
    again.dataset.value = String(d.recomputed);
    again.appendChild(say(el("span"), (l) => `${word("lens_recomputed", {}, l)}: `));
    again.appendChild(el("code", "mono", sig(d.recomputed)));
    box.appendChild(again);
  }
  holder.appendChild(box);
}

// A line "words: value" (value a number or text), with the number kept exact in data-value.
function fact(box, key, x, cls) {
  const p = el("p", "lens-fact" + (cls ? " " + cls : ""));
  p.appendChild(say(el("span", "what"), typeof key === "function" ? key : w(key)));
  const code = el("code", "mono", typeof x === "number" || x === null ? sig(x) : String(x));
  if (typeof x === "number" || x === null) p.dataset.value = String(x);
  p.appendChild(code);
  box.appendChild(p);
  return p;
}
const says = (box, key, cls) => box.appendChild(say(el("p", "lens-says" + (cls ? " " + cls : "")), w(key)));

// A strip: one column a k, rows of numbers (label, values, class), column `mark` and the `top` ones outlined.
function strip(box, heads, rows, mark, top) {
  const scroller = el("div", "lens-scroll");
  const table = el("table", "lens-strip");
  const body = table.createTBody();
  const head = body.insertRow();
  head.appendChild(el("th", "", "k"));
  for (let k = 0; k < rows[0][1].length; k++) {
    const th = el("th", "idx", heads ? visible(heads[k]) : String(k));
    if (k === mark) th.className = "idx mark";
    head.appendChild(th);
  }
  for (const [name, values, cls] of rows) {
    const tr = body.insertRow();
    tr.className = cls || "";
    tr.appendChild(el("th", "", name));
    values.forEach((x, k) => {
      const td = el("td", "", sig(x));
      td.dataset.value = String(x);
      if (k === mark) td.className = "mark";
      if (top && top.has(k)) td.classList.add("top");
      tr.appendChild(td);
    });
  }
  scroller.appendChild(table);
  box.appendChild(scroller);
  return table;
}
const largest = (xs, n) => xs.map((x, k) => [Math.abs(x === null ? Infinity : x), k]).sort((a, b) => b[0] - a[0]).slice(0, n).map(([, k]) => k);

const LENS_KINDS = {
  dot(box, d) {
    const right = d.right.name ? `${d.right.name}[${d.right.param_row}, :]` : d.right.row !== undefined ? `${d.right.id}[${d.right.row}, :]` : `${d.right.id}[:, ${d.right.col}]`;
    box.appendChild(el("p", "lens-formula mono", `${d.id}${at(d.index)} = Σₖ ${d.left.id}[${d.left.row}, k] · ${right}` + (d.bias ? ` + ${d.bias.id}[${d.bias.index[0]}]` : "")));
    says(box, "lens_dot");
    const top = largest(d.products, 12);
    const list = el("table", "lens-top");
    const cap = list.createCaption();
    say(cap, w("lens_largest"));
    const body = list.createTBody();
    for (const k of top) {
      const tr = body.insertRow();
      tr.appendChild(el("th", "idx", d.k_labels ? `${k} ${visible(d.k_labels[k])}` : String(k)));
      tr.appendChild(el("td", "", `${sig(d.left.values[k])} × ${sig(d.right.values[k])}`));
      const p = el("td", "prod", `= ${sig(d.products[k])}`);
      p.dataset.value = String(d.products[k]);
      tr.appendChild(p);
    }
    box.appendChild(list);
    box.appendChild(say(el("p", "lens-says"), w("lens_products", { k: d.products.length })));
    strip(box, d.k_labels, [["a", d.left.values, "left"], ["b", d.right.values, "right"], ["a·b", d.products, "products"]],
      -1, new Set(d.products.length > top.length ? top : []));
    fact(box, "lens_sum", d.sum, "sum");
    if (d.bias) fact(box, "lens_bias", d.bias.value, "bias");
    fact(box, "lens_equals", d.recomputed, "total");
  },
  softmax(box, d) {
    says(box, "lens_softmax");
    const c = d.index[d.index.length - 1];
    if (d.temperature !== 1) fact(box, "lens_temperature", d.temperature);
    fact(box, "lens_max", d.max, "max");
    strip(box, d.k_labels, [["x", d.input.values, "inputs"], ["x − max", d.shifted, "shifted"], ["e^(x − max)", d.exps, "exps"]], c);
    fact(box, "lens_exps_sum", d.sum, "sum");
    fact(box, "lens_ratio", `${sig(d.exp)} / ${sig(d.sum)} = ${sig(d.recomputed)}`, "ratio");
  },
  norm(box, d) {
    says(box, "lens_" + d.norm);
    const c = d.index[d.index.length - 1];
    if (d.norm === "layer_norm") {
      fact(box, "lens_mean", d.mean, "mean");
      fact(box, "lens_variance", d.variance, "variance");
      fact(box, "lens_eps", d.eps, "eps");
      fact(box, "lens_std", d.std, "std");
    } else {
      fact(box, "lens_mean_square", d.mean_square, "mean-square");
      fact(box, "lens_eps", d.eps, "eps");
      fact(box, "lens_rms", d.rms, "rms");
    }
    const rows = [["x", d.input.values, "inputs"], [d.norm === "layer_norm" ? "(x − μ)/σ" : "x / RMS", d.normed, "normed"], ["γ", d.gamma.values, "gamma"]];
    if (d.beta) rows.push(["β", d.beta.values, "beta"]);
    strip(box, null, rows, c);
    const text = `${sig(d.normed[c])} × ${sig(d.gamma.values[c])}` + (d.beta ? ` + ${sig(d.beta.values[c])}` : "") + ` = ${sig(d.recomputed)}`;
    fact(box, () => `${d.norm === "layer_norm" ? "(x − μ)/σ" : "x / RMS"} · γ${d.beta ? " + β" : ""}`, text, "total");
  },
  stat(box, d) {
    says(box, "lens_stat");
    strip(box, null, [["x", d.input.values, "inputs"]], -1);
    fact(box, "lens_mean", d.mean);
    if (d.eps !== null && d.eps !== undefined) fact(box, "lens_eps", d.eps);
    fact(box, () => d.stat, d.recomputed, "total");
  },
  elementwise(box, d) {
    says(box, "lens_inputs");
    for (const o of d.operands) fact(box, () => `${o.id}${at(o.index)}`, o.value, "operand");
    if (d.factor !== null && d.factor !== undefined) fact(box, "lens_factor", d.factor);
    fact(box, "lens_function", `${d.op}: ${d.function}`);
  },
  moved(box, d) {
    const o = d.operands[0];
    fact(box, "lens_same", `${o.id}${at(o.index)} = ${sig(o.value)}`);
  },
  lookup(box, d) {
    says(box, "lens_lookup");
    const [ids, row] = d.operands;
    fact(box, "lens_token", `${ids.id}${at(ids.index)} = ${ids.value}`);
    fact(box, () => `${row.id}${at(row.index)}`, row.value);
  },
  rope(box, d) {
    says(box, "lens_rope");
    const [a, b] = d.operands;
    fact(box, "lens_position", d.position);
    fact(box, "lens_pair", `${d.pair_index}: a = ${a.id}${at(a.index)} = ${sig(a.value)}, b = ${b.id}${at(b.index)} = ${sig(b.value)}`);
    fact(box, "lens_frequency", d.frequency);
    fact(box, "lens_angle", `${sig(d.position)} × ${sig(d.frequency)} = ${sig(d.angle)}  (cos ${sig(d.cos)}, sin ${sig(d.sin)})`);
    fact(box, "lens_function", d.function);
  },
  sinusoidal(box, d) {
    says(box, "lens_sinusoidal");
    fact(box, "lens_position", d.position);
    fact(box, "lens_pair", d.pair_index);
    fact(box, "lens_angle", d.angle);
    fact(box, "lens_function", `${d.function}(${sig(d.angle)})`);
  },
  argmax(box, d) {
    says(box, "lens_argmax");
    fact(box, () => `max ${d.input.id}[${d.input.row}, :]`, d.max);
  },
  pair(box, d) {
    says(box, "lens_pair_ids");
    fact(box, "lens_previous", d.previous);
    fact(box, "lens_token", d.token_id);
    fact(box, () => "V", d.vocab_size);
  },
  leaf(box, d) {
    if (!d.name) { says(box, "lens_leaf"); return; }
    says(box, "lens_parameter");
    fact(box, () => "", `${d.name}${at(d.param_index)}`);
    if (typeof d.value !== "number") return;
    const form = el("p", "lens-edit");
    form.appendChild(say(el("span", "what"), w("lens_edit_to")));
    const input = el("input", "lens-edit-value");
    input.type = "number";
    input.step = "any";
    input.value = String(d.value);
    form.appendChild(input);
    form.appendChild(button("lens_set", () => {
      const value = Number(input.value);
      if (input.value.trim() !== "" && Number.isFinite(value)) setEdit(d.name, d.param_index, value);
    }, "small"));
    box.appendChild(form);
  },
};

return { openCellLens, showCellLens };
})();
