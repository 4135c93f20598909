// Matrices drawn for the walkthrough page: numbers, colours, tables, heatmaps, and the architecture
// diagram (shared with the explorer, which loads this file as it is). Part of the
// page's one script (walkthrough.js has the rest; html.py inlines both inside one function).

// -------------------------------------------------------------------------------------------
// Numbers and colours

// A cell's text: a real minus sign, −∞ for a masked score, an exponent only where decimals would
// hide the value (never for probabilities: 1e−12 of them reads best as 0.00).
function number(x, decimals, fixed) {
  if (x === null) return "−∞";
  if (typeof x !== "number") return String(x); // "NaN", "Infinity", booleans
  if (Number.isInteger(x) && decimals === 0) return String(x).replace("-", "−");
  const a = Math.abs(x);
  let text = !fixed && a !== 0 && (a >= 1e4 || a < 1e-3) ? x.toExponential(1) : x.toFixed(decimals);
  if (Number(text) === 0) text = text.replace("-", "");
  return text.replace(/-/g, "−");
}
const full = (x) => (x === null ? "−∞" : typeof x === "number" ? String(x).replace(/-/g, "−") : String(x));

function mix(stops, t) {
  t = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(t), stops.length - 2);
  const f = t - i;
  return stops[i].map((a, k) => Math.round(a + (stops[i + 1][k] - a) * f));
}
const SEQUENTIAL = [[255, 255, 255], [158, 202, 225], [33, 113, 181], [8, 48, 107]];
const NEGATIVE = [[255, 255, 255], [146, 197, 222], [33, 102, 172]];
const POSITIVE = [[255, 255, 255], [244, 165, 130], [178, 24, 43]];
const GREY = [154, 165, 177];

// How one matrix is coloured: probabilities 0..1, masks grey where dropped, ids plain, the
// rest diverging around 0 over the step's largest magnitude.
function palette(step) {
  if (step.dtype === "int") return { plain: true, decimals: 0 };
  if (step.dtype === "bool") return { mask: true, decimals: 0 };
  if (step.display === "probabilities") return { probabilities: true, decimals: 2 };
  const s = step.stats || {};
  const scale = Math.max(Math.abs(s.min || 0), Math.abs(s.max || 0));
  const whole = s.count && [s.min, s.max, s.mean].every((x) => x === undefined || Number.isInteger(x));
  return { scale, decimals: whole && scale >= 1 ? 0 : scale >= 0.1 || scale === 0 ? 2 : 3 };
}
function colour(p, x) {
  if (p.plain) return null;
  if (p.mask) return x ? null : GREY;
  if (x === null) return GREY;
  if (typeof x !== "number") return [255, 230, 0];
  if (p.probabilities) return mix(SEQUENTIAL, x);
  const t = p.scale > 0 ? Math.abs(x) / p.scale : 0;
  return mix(x > 0 ? POSITIVE : NEGATIVE, t);
}
const dark = (rgb) => rgb && 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] < 140;
const css = (rgb) => `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;

// -------------------------------------------------------------------------------------------
// A step's values as a 2-D view (rows × columns), possibly transposed or truncated

function view(step, transposed) {
  const shape = step.shape || [];
  let values = step.truncated ? step.corner : step.values;
  let rows = step.rows, cols = step.cols, full2 = shape.slice(-2);
  if (shape.length === 0) { values = [[values]]; full2 = [1, 1]; }
  else if (shape.length === 1) { values = [values]; full2 = [1, shape[0]]; rows = [""]; cols = step.cols; }
  else if (shape.length > 2) { while (Array.isArray(values[0][0])) values = values[0]; }
  // n × m: the values sent (a truncated step's corner); shape: the whole step's. get() outside the
  // values sent is undefined (a corner's row 30 is not there), never a TypeError.
  let v = {
    n: values.length, m: values.length ? values[0].length : 0, get: (r, c) => (values[r] === undefined ? undefined : values[r][c]),
    rowLabels: rows && rows.length === full2[0] ? rows : null,
    colLabels: cols && cols.length === full2[1] ? cols : null,
    shape: full2, transposed: false,
  };
  if (transposed) {
    const u = v;
    v = { n: u.m, m: u.n, get: (r, c) => u.get(c, r), rowLabels: u.colLabels, colLabels: u.rowLabels,
      shape: [u.shape[1], u.shape[0]], transposed: true };
  }
  return v;
}

const label = (labels, i) => (!labels ? String(i) : labels[i] === "" ? "" : visible(labels[i]));
function visible(text) {
  text = String(text);
  return text.trim() === "" ? text.replace(/ /g, "␣").replace(/\n/g, "↵").replace(/\t/g, "⇥") || "∅" : text;
}

// -------------------------------------------------------------------------------------------
// Drawing a matrix: a table of numbers when small, a heatmap when large

// The tip: below and right of the pointer, kept inside the window (above the pointer near the
// bottom edge); scrolling hides it, since it would no longer point at its cell. On a touch screen a
// tap shows the tapped cell's tip: the tap is handed on as the hover it stands for (a browser may
// also send its own mouse events after a tap; they show the same tip).
const tip = document.getElementById("gf-tip");
function showTip(event, text) {
  tip.textContent = text;
  tip.hidden = false;
  tip.style.left = tip.style.top = "0px"; // measured where nothing narrows it
  const W = document.documentElement.clientWidth, H = document.documentElement.clientHeight, M = 6;
  const w = tip.offsetWidth, h = tip.offsetHeight;
  let left = event.clientX + 14, top = event.clientY + 16;
  if (left + w > W - M) left = W - M - w;
  if (top + h > H - M) top = event.clientY - 12 - h;
  tip.style.left = Math.max(M, left) + "px";
  tip.style.top = Math.max(M, Math.min(top, H - M - h)) + "px";
}
const hideTip = () => { tip.hidden = true; };
window.addEventListener("scroll", hideTip, { capture: true, passive: true });
window.addEventListener("pointerdown", (event) => { if (event.pointerType === "touch") hideTip(); });
window.addEventListener("pointerup", (event) => {
  if (event.pointerType !== "touch") return;
  const at = { bubbles: true, clientX: event.clientX, clientY: event.clientY };
  event.target.dispatchEvent(new MouseEvent("mouseover", at));
  event.target.dispatchEvent(new MouseEvent("mousemove", at));
});
const cellText = (v, r, c, p) => `${label(v.rowLabels, r)} · ${label(v.colLabels, c)}: ` +
  (p.mask ? (v.get(r, c) ? "true" : "false") : full(v.get(r, c)));

function matrix(step, options) {
  const v = view(step, options.transposed);
  const p = palette(step);
  const more = v.n < v.shape[0] || v.m < v.shape[1];
  const small = options.operand ? v.m <= 8 && v.n <= 24 : (v.m <= 12 && v.n <= 24) || (v.n <= 2 && v.m <= 32);
  if (p.plain) return numbers({ ...v, n: Math.min(v.n, 32), m: Math.min(v.m, 64) }, p, true); // ids: the first 64
  if (small) return numbers(v, p, more);
  return options.operand ? canvas(v, p, 180, 180, false) : canvas(v, p, 560, 420, true);
}

function numbers(v, p, more) {
  const table = el("table", "matrix numbers");
  const head = table.createTHead().insertRow();
  head.appendChild(el("th"));
  for (let c = 0; c < v.m; c++) head.appendChild(el("th", v.colLabels ? "" : "idx", label(v.colLabels, c)));
  if (more && v.m < v.shape[1]) head.appendChild(el("th", "idx", "…"));
  const body = table.createTBody();
  for (let r = 0; r < v.n; r++) {
    const row = body.insertRow();
    row.appendChild(el("th", v.rowLabels ? "" : "idx", label(v.rowLabels, r)));
    for (let c = 0; c < v.m; c++) {
      const x = v.get(r, c);
      const rgb = colour(p, x);
      const td = el("td", "", p.mask ? (x ? "✓" : "−∞") : number(x, p.decimals, p.probabilities));
      if (rgb) td.style.background = css(rgb);
      if (dark(rgb)) td.className = "dark";
      if (x === null || (p.mask && !x)) td.className = "ninf";
      td.title = cellText(v, r, c, p);
      row.appendChild(td);
    }
    if (more && v.m < v.shape[1]) row.appendChild(el("td", "more", "…"));
  }
  if (more && v.n < v.shape[0]) {
    const row = body.insertRow();
    row.appendChild(el("th", "idx", "⋮"));
    for (let c = 0; c < v.m; c++) row.appendChild(el("td", "more", "⋮"));
  }
  return table;
}

// A heatmap, one pixel a value scaled up; hovering shows a value. Token labels beside it where they fit.
function canvas(v, p, maxWidth, maxHeight, labelled) {
  // Square cells as large as fit, but at least 3 pixels along an axis with room for them.
  const wide = Math.max(1, Math.min(12, Math.floor(maxWidth / v.m)));
  const tall = v.n === 1 ? 12 : Math.max(1, Math.min(12, Math.floor(maxHeight / v.n)));
  const side = Math.min(wide, tall);
  const cw = v.n === 1 ? wide : Math.max(side, Math.min(3, wide));
  const ch = v.n === 1 ? 12 : Math.max(side, Math.min(3, tall));
  const node = paint(v, p);
  node.style.width = v.m * cw + "px";
  node.style.height = v.n * ch + "px";
  node.addEventListener("mousemove", (event) => {
    const box = node.getBoundingClientRect();
    const c = Math.min(v.m - 1, Math.floor(((event.clientX - box.left) / box.width) * v.m));
    const r = Math.min(v.n - 1, Math.floor(((event.clientY - box.top) / box.height) * v.n));
    showTip(event, cellText(v, r, c, p));
  });
  node.addEventListener("mouseleave", hideTip);
  if (!labelled || !(v.rowLabels || v.colLabels) || Math.min(cw, ch) < 9) return node;
  const grid = el("div", "labelled");
  const font = Math.min(11, Math.min(cw, ch) - 1) + "px";
  const cols = el("div", "cols");
  for (let c = 0; v.colLabels && c < v.m; c++) {
    const span = el("span", "", label(v.colLabels, c));
    span.style.width = cw + "px";
    span.style.fontSize = font;
    cols.appendChild(span);
  }
  const rows = el("div", "rows");
  for (let r = 0; v.rowLabels && r < v.n; r++) {
    const span = el("span", "", label(v.rowLabels, r));
    span.style.height = span.style.lineHeight = ch + "px";
    span.style.fontSize = font;
    rows.appendChild(span);
  }
  grid.append(el("span"), cols, rows, node);
  return grid;
}

// A canvas of v's values, one pixel a value (CSS scales it up).
function paint(v, p) {
  const node = el("canvas", "heat");
  node.width = Math.max(1, v.m);
  node.height = Math.max(1, v.n);
  const ctx = node.getContext("2d");
  const image = ctx.createImageData(node.width, node.height);
  const data = image.data;
  for (let r = 0; r < v.n; r++) {
    for (let c = 0; c < v.m; c++) {
      const rgb = colour(p, v.get(r, c)) || [255, 255, 255];
      const i = 4 * (r * v.m + c);
      data[i] = rgb[0]; data[i + 1] = rgb[1]; data[i + 2] = rgb[2]; data[i + 3] = 255;
    }
  }
  ctx.putImageData(image, 0, 0);
  return node;
}

// -------------------------------------------------------------------------------------------
// A band: a matrix drawn at a given row height and column width (fractions of a pixel allowed),
// so that the matrices of one equation share rows and columns at any size: row i of X beside row
// i of Q, column j of Wᵀ above column j of Q. The whole shape is drawn; what was not sent (a
// truncated step beyond its corner) is hatched. Row labels, on a canvas, in a gutter `gutter` px
// wide (0: none); ids (plain integers) are written as numbers.

function band(v, p, rowPx, colPx, gutter) {
  const node = el("div", "band");
  const height = v.shape[0] * rowPx, width = v.shape[1] * colPx;
  if (gutter) node.appendChild(rowLabels(v, rowPx, gutter, height));
  const plot = el("div", "band-plot" + (v.n < v.shape[0] || v.m < v.shape[1] ? " partial" : ""));
  plot.style.width = width + "px";
  plot.style.height = height + "px";
  const heat = p.plain ? written(v, rowPx, colPx) : paint(v, p);
  heat.style.width = v.m * colPx + "px";
  heat.style.height = v.n * rowPx + "px";
  plot.appendChild(heat);
  node.appendChild(plot);
  return { node, plot, rowPx, colPx, v };
}
// The band's cell under a mouse event: [r, c] of the drawn view (null outside).
function bandCell(b, event) {
  const box = b.plot.getBoundingClientRect();
  const r = Math.floor((event.clientY - box.top) / b.rowPx), c = Math.floor((event.clientX - box.left) / b.colPx);
  return r >= 0 && c >= 0 && r < b.v.shape[0] && c < b.v.shape[1] ? [r, c] : null;
}

const pixelRatio = () => Math.min(3, window.devicePixelRatio || 1);
// The explorer's "Large text" (its body's class "projector"; never on the walkthrough page).
const largeText = () => document.body.classList.contains("projector");
function rowLabels(v, rowPx, gutter, height) {
  const node = el("canvas", "labels");
  const ratio = pixelRatio();
  node.width = Math.round(gutter * ratio);
  node.height = Math.min(16384, Math.round(height * ratio));
  node.style.width = gutter + "px";
  node.style.height = height + "px";
  const ctx = node.getContext("2d");
  ctx.scale(ratio, node.height / height);
  // As tall as a row allows; with the explorer's "Large text" at least 12 px (thin rows: every k-th labelled).
  const size = largeText() ? Math.min(20, Math.max(12, rowPx - 2)) : Math.min(16, Math.max(7, rowPx - 2));
  const every = Math.max(1, Math.ceil((size + 1) / rowPx)); // rows too thin for each label: every k-th
  ctx.font = `${size}px ui-monospace, Menlo, Consolas, "DejaVu Sans Mono", monospace`;
  ctx.fillStyle = "#1f2933";
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let r = 0; r < v.shape[0]; r += every) {
    let text = v.rowLabels ? label(v.rowLabels, r) : String(r);
    while (text.length > 1 && ctx.measureText(text).width > gutter - 4) text = text.slice(0, -1);
    ctx.fillText(text, gutter - 3, r * rowPx + rowPx / 2);
  }
  return node;
}
// Integers (token ids) written in their cells.
function written(v, rowPx, colPx) {
  const node = el("canvas", "heat written");
  const ratio = pixelRatio();
  node.width = Math.max(1, Math.round(v.m * colPx * ratio));
  node.height = Math.max(1, Math.round(v.n * rowPx * ratio));
  const ctx = node.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, v.m * colPx, v.n * rowPx);
  ctx.fillStyle = "#1f2933";
  ctx.font = `${Math.min(largeText() ? 18 : 12, Math.max(7, rowPx - 2))}px ui-monospace, Menlo, monospace`;
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  for (let r = 0; r < v.n; r++) for (let c = 0; c < v.m; c++) ctx.fillText(String(v.get(r, c)), (c + 0.5) * colPx, (r + 0.5) * rowPx);
  return node;
}

function textTable(step) {
  const wrap = el("div", "scroll");
  const table = el("table", "plain");
  if (step.header) {
    const head = table.createTHead().insertRow();
    for (const h of step.header) head.appendChild(el("th", "", h));
  }
  const body = table.createTBody();
  for (const cells of step.table.slice(0, 100)) {
    const row = body.insertRow();
    for (const x of cells) row.appendChild(el("td", "", visible(x)));
  }
  wrap.appendChild(table);
  if (step.table.length > 100) wrap.appendChild(say(el("p", "note"), w("more_rows", { n: step.table.length - 100 })));
  return wrap;
}

// -------------------------------------------------------------------------------------------
// The architecture diagram and the equation's operators, shared with the explorer
// (glassformer/explore/static), which loads this file as it is. `model` is
// {config, steps, seq2seq}; `word(key, values, l)` gives the page's words (box_*, final).

const FUNCTION_NAMES = { layer_norm: "LayerNorm", rms_norm: "RMSNorm", rope: "RoPE", relu: "ReLU", gelu: "GELU",
  gelu_tanh: "GELU", silu: "SiLU", bigram_ids: "pair" };
const ACTIVATION_NAMES = { relu: "ReLU", gelu: "GELU", gelu_tanh: "GELU", swiglu: "SwiGLU", silu: "SiLU" };
const NORM_NAMES = { layernorm: "LayerNorm", rmsnorm: "RMSNorm" };

// The operator between a step's operands, or [before, between, after] around them.
function operatorOf(step) {
  const f = step.params && step.params.factor;
  switch (step.op) {
    case "linear": return ["", "·", ""];
    case "matmul": return ["", "·", ""];
    case "add": return ["", "+", ""];
    case "mul": return ["", "⊙", ""];
    case "scale": return ["", "", `× ${f === undefined ? "" : Number(f.toPrecision(4))}`];
    case "transpose": return ["", "", "ᵀ"];
    case "slice": return ["", "", `[${step.params.start}:${step.params.stop}]`];
    case "embedding": return ["", "[", "]"];
    default: return [`${FUNCTION_NAMES[step.op] || step.op}(`, ",", ")"];
  }
}
// The symbol before operand i (i > 0): x Wᵀ + b, the bias is added, not multiplied.
const operandSymbol = (step, i) => (step.op === "linear" && i === 2 ? "+" : operatorOf(step)[1]);

function stepPart(s, seq2seq) {
  if (!seq2seq) return "dec";
  return s.id.startsWith("enc.") || s.id === "corpus" || s.id === "vocab" ? "enc" : "dec";
}

// The diagram box a step belongs to ("dec-self", "enc-norm-ffn", "linear", ...).
function stepBox(s, model) {
  const pre = model.config.norm_position === "pre";
  const part = stepPart(s, model.seq2seq);
  const sub = s.sublayer;
  if (s.op === "table") return s.section === "output" ? "softmax" : part + "-tokens";
  if (sub === "self" || sub === "cross" || sub === "ffn") {
    const rest = s.id.split(`.${sub}.`)[1] || "";
    if (rest === "norm" || rest.startsWith("norm.")) return `${part}-${pre ? "norm" : "addnorm"}-${sub}`;
    if (rest === "residual") return `${part}-${pre ? "add" : "addnorm"}-${sub}`;
    return `${part}-${sub}`;
  }
  if (sub === "final") return `${part}-final`;
  if (sub === "head") return s.id.startsWith("next.") || s.id === "decode" ? "softmax" : "linear";
  if (s.display === "mask") return `${part}-self`;
  return s.id.replace(/^(enc|dec)\./, "") === "ids" ? `${part}-tokens` : `${part}-embed`;
}

// A two-line box label on one line: "Masked self-\nattention" -> "Masked self-attention", "掩码\n自注意力" -> "掩码自注意力".
const oneLine = (text, l) => text.replace(/-\n/g, "-").replace(/\n\+/g, " +").replace(/\n/g, l === "zh" ? "" : " ");

// One column's boxes, [id, label(l)] each: above the layer frame, inside it, after it.
function diagramColumns(part, model, word) {
  const { config, steps, seq2seq } = model;
  const pre = config.norm_position === "pre";
  const addsPositions = config.position !== "rope";
  const tokens = seq2seq ? (part === "enc" ? "box_src_tokens" : "box_tgt_tokens") : "box_tokens";
  const stack = [[`${part}-tokens`, (l) => oneLine(word(tokens, {}, l), l)]];
  stack.push([`${part}-embed`, (l) => (addsPositions ? oneLine(word("box_embed", {}, l), l) : word("box_embed", {}, l).split("\n")[0])]);
  const layer = [];
  const subs = part === "dec" && seq2seq ? ["self", "cross", "ffn"] : ["self", "ffn"];
  for (const sub of subs) {
    const name = sub === "self" && part === "dec" ? "box_masked_self" : "box_" + sub;
    const extra = sub === "ffn" ? ACTIVATION_NAMES[config.activation] || config.activation : sub !== "cross" && !addsPositions ? "RoPE" : "";
    const main = [`${part}-${sub}`, (l) => oneLine(word(name, {}, l), l) + (extra ? ` (${extra})` : "")];
    const norm = NORM_NAMES[config.norm] || config.norm;
    if (pre) layer.push([`${part}-norm-${sub}`, () => norm], main, [`${part}-add-${sub}`, (l) => word("box_add", {}, l)]);
    else layer.push(main, [`${part}-addnorm-${sub}`, (l) => oneLine(word("box_addnorm", {}, l), l)]);
  }
  const after = [];
  const hasFinal = steps.some((s) => s.sublayer === "final" && stepPart(s, seq2seq) === part);
  if (hasFinal) after.push([`${part}-final`, (l) => word("final", {}, l) + ` (${NORM_NAMES[config.norm] || config.norm})`]);
  if (part === "dec") after.push(["linear", (l) => word("box_linear", {}, l)], ["softmax", (l) => word("box_softmax", {}, l)]);
  return { stack, layer, after };
}

// The diagram as an svg: {node, boxes: box id -> svg group, frameLabels: part -> the layer frame's
// svg text (its words are the caller's)}. `say(node, text)` puts a label's words on a node.
function drawArchitecture(model, word, say) {
  const W = 320, BH = 22, GAP = 9, PITCH = BH + GAP, TOP = 8;
  const parts = model.seq2seq ? ["enc", "dec"] : ["dec"];
  const colW = model.seq2seq ? 146 : 210;
  const xs = model.seq2seq ? { enc: 6, dec: W - 6 - colW } : { dec: (W - colW) / 2 };
  const node = svg("svg", { class: "diagram", role: "img" });
  const arrows = svg("g", { class: "arrows" });
  node.appendChild(arrows);
  const boxes = new Map(), frameLabels = {}, where = {};
  let height = 0;
  for (const part of parts) {
    const { stack, layer, after } = diagramColumns(part, model, word);
    const x = xs[part];
    let y = TOP;
    let last = null;
    const place = ([id, text], inFrame) => {
      const g = svg("g", { class: "box", "data-box": id });
      g.appendChild(svg("rect", { x: x + (inFrame ? 8 : 0), y, width: colW - (inFrame ? 16 : 0), height: BH, rx: 4 }));
      const t = svg("text", { x: x + colW / 2, y: y + BH / 2 + 4, "data-fit": colW - (inFrame ? 16 : 0) - 6 });
      say(t, text);
      g.appendChild(t);
      node.appendChild(g);
      boxes.set(id, g);
      where[id] = { x: x + colW / 2, top: y, bottom: y + BH, left: x + (inFrame ? 8 : 0), right: x + colW - (inFrame ? 8 : 0) };
      if (last) arrows.appendChild(svg("path", { d: `M${x + colW / 2},${last + 1} L${x + colW / 2},${y - 2}` }));
      last = y + BH;
      y += PITCH;
    };
    stack.forEach((b) => place(b, false));
    y += 10;
    const frameTop = y - 6;
    layer.forEach((b) => place(b, true));
    const frameBottom = y - GAP + 6;
    node.insertBefore(svg("rect", { class: "frame", x, y: frameTop, width: colW, height: frameBottom - frameTop, rx: 6 }), arrows);
    const fl = svg("text", { class: "frame-label", x: x + colW - 4, y: frameBottom + 12 });
    frameLabels[part] = fl;
    node.appendChild(fl);
    y += 12;
    after.forEach((b) => place(b, false));
    height = Math.max(height, y);
  }
  if (model.seq2seq) {
    // The encoder's output feeds every decoder layer's cross-attention.
    const last = diagramColumns("enc", model, word);
    const from = where[(last.after.length ? last.after : last.layer).slice(-1)[0][0]];
    const to = where["dec-cross"];
    const mid = (from.right + to.left) / 2;
    arrows.appendChild(svg("path", { class: "memory", d: `M${from.right + 1},${(from.top + from.bottom) / 2} L${mid},${(from.top + from.bottom) / 2} L${mid},${(to.top + to.bottom) / 2} L${to.left - 2},${(to.top + to.bottom) / 2}` }));
  }
  node.setAttribute("viewBox", `0 0 ${W} ${height}`);
  node.setAttribute("width", W);
  node.setAttribute("height", height);
  return { node, boxes, frameLabels };
}

// Squeezes a label longer than its box (a long name in a narrow column) into the box.
function fitDiagramLabels(root) {
  for (const t of root.querySelectorAll("svg.diagram text[data-fit]")) {
    t.removeAttribute("textLength");
    t.removeAttribute("lengthAdjust");
    const room = Number(t.getAttribute("data-fit"));
    if (t.getComputedTextLength() > room) {
      t.setAttribute("textLength", room);
      t.setAttribute("lengthAdjust", "spacingAndGlyphs");
    }
  }
}
