// The walkthrough page, drawn from the data embedded in it (glassformer/explain/html.py).
// Layout, colours and number formatting only: every value shown is one the model computed,
// read from the data. Text goes onto the page through textContent, never as markup.
// The page's one script is dom.js, this file and matrices.js, which html.py inlines inside one
// function; start() runs once all are read.
const data = JSON.parse(document.getElementById("walkthrough-data").textContent);
const WORDS = JSON.parse(document.getElementById("page-words").textContent);
const steps = data.steps;
const byId = new Map(steps.map((s) => [s.id, s]));
const config = data.config;
const seq2seq = data.model_kind === "seq2seq";
lang = document.documentElement.lang in WORDS ? document.documentElement.lang : "en"; // dom.js's

// Words in two languages (say, word, w) and elements (el, svg): dom.js

// -------------------------------------------------------------------------------------------
// A step's equation: its operands, the operator, and the result

const hasPlace = (s) => s.layer !== null || s.sublayer === "final";
function shortName(s, l) {
  const title = s.title[l];
  const i = title.indexOf(": ");
  return hasPlace(s) && i >= 0 ? title.slice(i + 2) : title;
}
const shapeText = (s) => (s.shape && s.shape.length ? s.shape.join(" × ") : "");

function figure(step, options) {
  const fig = el("figure", options.result ? "operand result" : "operand");
  if (step.values === undefined && step.corner === undefined) {
    if (step.table) fig.appendChild(el("div", "ref", `${step.table.length} × ${step.header ? step.header.length : ""}`));
  } else {
    fig.appendChild(matrix(step, options));
  }
  const cap = el("figcaption");
  const name = options.result ? el("span") : el("a");
  if (!options.result) name.href = "#" + step.id;
  const marked = options.transposed && !options.column;
  say(name, (l) => shortName(step, l) + (marked ? "ᵀ" : ""));
  cap.appendChild(name);
  const shape = marked ? step.shape.slice().reverse().join(" × ") : shapeText(step);
  if (shape) cap.appendChild(el("span", "dim", shape));
  if (marked) cap.appendChild(say(el("span", "dim"), w("transposed")));
  fig.appendChild(cap);
  return fig;
}

function equation(step) {
  const box = el("div", "equation");
  const [before, , after] = operatorOf(step);
  if (before) box.appendChild(el("span", "opsym", before));
  step.inputs.forEach((id, i) => {
    const sym = i > 0 && operandSymbol(step, i);
    if (sym) box.appendChild(el("span", "opsym", sym));
    const input = byId.get(id);
    // W of x Wᵀ + b drawn as Wᵀ, so that its rows meet x's columns; ids drawn as a column, a row of the result each.
    const column = step.op === "embedding" && input && input.dtype === "int";
    if (input) box.appendChild(figure(input, { operand: true, transposed: column || (step.op === "linear" && i === 1), column }));
  });
  if (after) box.appendChild(el("span", "opsym", after));
  box.appendChild(el("span", "opsym", "="));
  box.appendChild(figure(step, { result: true }));
  return box;
}

function stepBody(step) {
  const box = el("div", "body");
  const leaf = step.inputs.length === 0;
  if (step.table && (step.op === "table" || step.op === "argmax")) {
    if (step.op === "argmax") box.appendChild(equation(step));
    box.appendChild(textTable(step));
  } else if (leaf && (step.values !== undefined || step.corner !== undefined)) {
    const fig = el("figure", "operand result");
    fig.appendChild(matrix(step, {}));
    box.appendChild(fig);
  } else if (!leaf) {
    box.appendChild(equation(step));
  }
  if (step.truncated) {
    const corner = step.shape.length === 1 ? String(step.corner.length) :
      `${step.corner.length} × ${step.corner[0].length}`;
    box.appendChild(say(el("p", "note"), w("truncated", {
      count: step.stats ? step.stats.count : step.shape.reduce((a, b) => a * b, 1), corner, max: data.max_values })));
  }
  if (step.stats && step.stats.mean !== undefined && (step.truncated || step.stats.count > 64)) {
    const s = step.stats;
    const f = (x) => number(x, 3);
    box.appendChild(say(el("p", "note"), w("stats", { mean: f(s.mean), std: f(s.std), min: f(s.min), max: f(s.max) })));
  }
  return box;
}

// -------------------------------------------------------------------------------------------
// The architecture diagram: drawn once from the config, following the reader

// The diagram and the box of each step come from matrices.js (shared with the explorer).
const pre = config.norm_position === "pre";
const model = { config, steps, seq2seq };
const partOf = (s) => stepPart(s, seq2seq);
const boxOf = (s) => stepBox(s, model);

const diagramBoxes = new Map(); // box id -> svg group
const frameLabels = {}; // part -> svg text
function drawDiagram() {
  const drawn = drawArchitecture(model, word, say);
  for (const [id, g] of drawn.boxes) diagramBoxes.set(id, g);
  Object.assign(frameLabels, drawn.frameLabels);
  return drawn.node;
}
const fitLabels = () => fitDiagramLabels(document);

function frameText(part, l) {
  const n = part === "enc" ? config.n_encoder_layers : seq2seq ? config.n_decoder_layers : config.n_layer;
  const name = word(part === "enc" ? "box_encoder_layer" : "box_decoder_layer", { n }, l);
  if (current && current.layer !== null && partOf(current) === part) {
    return word("layer_of", { name: name.split(" × ")[0], i: current.layer + 1, n }, l);
  }
  return name;
}

// -------------------------------------------------------------------------------------------
// The page: header, steps grouped under headings, contents

// Where a step sits, in narration's words: "Encoder layer 2", "self-attention", "head 1".
const placeWord = (key, n) => (l) => word("place_" + key, { layer: n, head: n }, l);

// The contents' path of a step: section, layer (or final norm), sublayer, head.
function path(s) {
  const out = [["section:" + s.section, w("section_" + s.section)]];
  if (s.layer !== null) {
    const stack = !seq2seq ? "decoder" : partOf(s) === "enc" ? "encoder" : "decoder_s2s";
    out.push([`layer:${s.section}:${s.layer}`, placeWord(stack, s.layer + 1)]);
    if (["self", "cross", "ffn"].includes(s.sublayer)) out.push([`sub:${s.section}:${s.layer}:${s.sublayer}`, placeWord(s.sublayer)]);
    if (s.head !== null) out.push([`head:${s.section}:${s.layer}:${s.sublayer}:${s.head}`, placeWord("head", s.head + 1)]);
  } else if (s.sublayer === "final") {
    out.push([`final:${s.section}`, w("final")]);
  }
  return out;
}

function header() {
  const head = el("header", "top");
  head.appendChild(say(el("h1"), (l) => WORDS[l].walkthrough));
  const io = el("div", "io");
  const source = el("div", "text source");
  source.appendChild(say(el("span", "what"), w("source")));
  source.appendChild(el("span", "words", data.source));
  const output = el("div", "text output");
  output.appendChild(say(el("span", "what"), w("output")));
  output.appendChild(el("span", "words", visible(data.output)));
  io.append(source, el("span", "arrow", "→"), output);
  head.appendChild(io);
  const facts = el("dl", "facts");
  const fact = (name, value) => {
    const pair = el("div", "fact");
    pair.appendChild(typeof name === "function" ? say(el("dt"), name) : el("dt", "", name));
    pair.appendChild(typeof value === "function" ? say(el("dd"), value) : el("dd", "", String(value)));
    facts.appendChild(pair);
  };
  fact(w("model"), w(seq2seq ? "seq2seq" : "gpt"));
  fact("d_model", config.d_model !== undefined ? config.d_model : config.n_embd);
  fact(w("heads"), config.n_head);
  if (seq2seq) fact(w("enc_dec_layers"), `${config.n_encoder_layers} + ${config.n_decoder_layers}`);
  else fact(w("layers"), config.n_layer);
  if (config.d_ff) fact(w("d_ff"), config.d_ff);
  fact(w("norm"), (l) => `${NORM_NAMES[config.norm] || config.norm}${l === "zh" ? "，" : ", "}${word(pre ? "pre" : "post", {}, l)}`);
  fact(w("activation"), ACTIVATION_NAMES[config.activation] || config.activation);
  fact(w("position"), w(config.position, { theta: config.rope_theta }));
  fact(w("vocab"), seq2seq ? config.tgt_vocab_size : config.vocab_size);
  head.appendChild(facts);
  const legend = el("p", "legend");
  for (const [cls, key] of [["values", "legend_values"], ["probabilities", "legend_probabilities"], ["masked", "legend_masked"]]) {
    const item = el("span", "item");
    item.append(el("span", "swatch " + cls), say(el("span"), w(key)));
    legend.appendChild(item);
  }
  legend.appendChild(say(el("span", "hint"), w("legend_hover")));
  head.appendChild(legend);
  return head;
}

function stepSection(step, index) {
  const section = el("section", "step");
  section.id = step.id;
  section.dataset.box = boxOf(step);
  const h = el("h3");
  h.appendChild(el("span", "num", String(index + 1)));
  h.appendChild(say(el("span", "title"), (l) => step.title[l]));
  const link = el("a", "sid", step.id);
  link.href = "#" + step.id;
  h.appendChild(link);
  section.appendChild(h);
  section.appendChild(say(el("p", "explain"), (l) => step.explanation[l]));
  const meta = el("p", "meta");
  if (step.formula) meta.appendChild(el("code", "formula", step.formula));
  if (step.shape) {
    const shape = el("span", "shape");
    shape.appendChild(say(el("span"), w("shape")));
    shape.appendChild(document.createTextNode(" " + (shapeText(step) || "1")));
    meta.appendChild(shape);
  }
  section.appendChild(meta);
  section.appendChild(stepBody(step));
  return section;
}

// Generation token by token (explain --generate / --beam), where the data has it: one row a step.
function generationSection(g) {
  const box = el("section", "generation");
  box.id = "gf-generation";
  box.appendChild(say(el("h2", "heading level0"), w("generation")));
  const settings = Object.entries(g.settings || {}).filter(([, v]) => v !== null).map(([k, v]) => `${k} ${v}`);
  const intro = el("p", "meta");
  intro.append(say(el("strong"), w("gen_" + g.kind)), document.createTextNode(" " + settings.join(", ")));
  box.appendChild(intro);
  const wrap = el("div", "scroll");
  const table = el("table", "plain");
  const beam = g.kind === "beam"; // a beam step lists whole hypotheses, each with its score and fate
  const head = table.createTHead().insertRow();
  head.appendChild(el("th", "", "#"));
  for (const key of beam ? ["gen_candidates"] : ["gen_so_far", "gen_candidates", "gen_picked"]) {
    head.appendChild(say(el("th"), w(key)));
  }
  const body = table.createTBody();
  const p = (x) => (typeof x === "number" ? number(x, 3, true) : "");
  g.steps.forEach((s, i) => {
    const row = body.insertRow();
    row.appendChild(el("td", "", String(s.step !== undefined ? s.step : i + 1)));
    const candidates = (s.candidates || []).slice(0, beam ? 6 : 5).map((c) => (beam ?
      `${c.tokens.map(visible).join(" ")} (${p(c.normalised)}, ${c.status})` :
      `${visible(c.token)} ${p(c.p !== undefined ? c.p : c.top_p)}`));
    if (beam) {
      row.appendChild(el("td", "", candidates.join(" · ")));
      return;
    }
    const sofar = s.context || s.target || [];
    row.append(el("td", "", (sofar.length > 12 ? "… " : "") + sofar.slice(-12).map(visible).join(" ")),
      el("td", "", candidates.join(" · ")),
      el("td", "", s.picked ? `${visible(s.picked.token)} (${p(s.picked.p)})` : ""));
  });
  wrap.appendChild(table);
  box.appendChild(wrap);
  const out = el("p", "io-out");
  out.append(say(el("strong"), w("gen_output")), document.createTextNode(": " + g.output_text));
  box.appendChild(out);
  return box;
}

const tocLinks = new Map(); // step id -> contents link
const tocGroups = new Map(); // group key -> <details>
function build() {
  const main = document.getElementById("gf-main");
  main.appendChild(header());
  const toc = document.getElementById("gf-toc");
  toc.appendChild(say(el("h2"), w("contents")));
  let open = []; // the current path: [key, details, list, heading level]
  steps.forEach((step, i) => {
    const p = path(step);
    let k = 0;
    while (k < open.length && k < p.length && open[k][0] === p[k][0]) k++;
    open = open.slice(0, k);
    // A heading where the section changes, and one naming the new layer, sublayer or head.
    const first = k;
    if (first === 0) main.appendChild(say(el("h2", "heading level0"), p[0][1]));
    if (p.length > 1 && first < p.length) {
      const rest = p.slice(1);
      main.appendChild(say(el("div", "heading level" + Math.max(first, 1)), (l) =>
        rest.map(([, t]) => t(l)).join(l === "zh" ? "，" : ", ")));
    }
    for (; k < p.length; k++) {
      const [key, text] = p[k];
      const details = el("details", "level" + k);
      details.open = k === 0;
      details.appendChild(say(el("summary"), text));
      const list = el("ol");
      details.appendChild(list);
      const holder = k ? open[k - 1][2].appendChild(el("li", "group")) : toc;
      holder.appendChild(details);
      tocGroups.set(key, details);
      open.push([key, details, list]);
    }
    const li = el("li");
    const a = el("a");
    a.href = "#" + step.id;
    say(a, (l) => shortName(step, l));
    li.appendChild(a);
    (open.length ? open[open.length - 1][2] : toc).appendChild(li);
    tocLinks.set(step.id, a);
    main.appendChild(stepSection(step, i));
  });
  if (data.generation) {
    main.appendChild(generationSection(data.generation));
    const a = el("a");
    a.href = "#gf-generation";
    toc.appendChild(say(a, w("generation")));
  }
}

// -------------------------------------------------------------------------------------------
// Following the reader: the step on screen lights its box, its contents entry and its path

let current = null;
const autoOpened = new Set();
function setCurrent(step) {
  if (step === current) return;
  const before = current;
  current = step;
  for (const g of diagramBoxes.values()) g.classList.remove("here");
  const box = diagramBoxes.get(boxOf(step));
  if (box) box.classList.add("here");
  for (const part of Object.keys(frameLabels)) frameLabels[part].textContent = frameText(part, lang);
  if (before && tocLinks.get(before.id)) tocLinks.get(before.id).classList.remove("current");
  const keys = new Set(path(step).map(([key]) => key));
  for (const key of autoOpened) {
    if (!keys.has(key)) { tocGroups.get(key).open = false; autoOpened.delete(key); }
  }
  for (const key of keys) {
    const details = tocGroups.get(key);
    details.classList.add("on-path");
    if (!details.open) { details.open = true; autoOpened.add(key); }
  }
  for (const [key, details] of tocGroups) if (!keys.has(key)) details.classList.remove("on-path");
  const link = tocLinks.get(step.id);
  link.classList.add("current");
  const toc = document.getElementById("gf-toc");
  const top = link.getBoundingClientRect().top - toc.getBoundingClientRect().top;
  if (top < 40 || top > toc.clientHeight - 40) toc.scrollTop += top - toc.clientHeight / 3;
  now.textContent = step.title[lang];
}

function follow() {
  const visibleSteps = new Set();
  const observer = new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (e.isIntersecting) visibleSteps.add(e.target.id);
      else visibleSteps.delete(e.target.id);
    }
    const first = steps.find((s) => visibleSteps.has(s.id));
    if (first) setCurrent(first);
  }, { rootMargin: "-8% 0px -70% 0px" }); // a band near the top of the window
  for (const s of steps) observer.observe(document.getElementById(s.id));
  // A link followed (contents, a caption, an address with #step) lights its step at once.
  const jump = () => {
    const step = byId.get(decodeURIComponent(location.hash.slice(1)));
    if (step) setCurrent(step);
  };
  window.addEventListener("hashchange", jump);
  jump();
}

function languageSwitch() {
  const box = document.getElementById("gf-langs");
  for (const [code, name] of [["en", "English"], ["zh", "中文"]]) {
    const b = el("button", "", name);
    b.type = "button";
    b.dataset.lang = code;
    b.addEventListener("click", () => setLanguage(code));
    box.appendChild(b);
  }
}
function setLanguage(l) {
  lang = l;
  document.documentElement.lang = l;
  document.title = WORDS[l].walkthrough;
  for (const [node, text] of texts) node.textContent = text(l);
  for (const part of Object.keys(frameLabels)) frameLabels[part].textContent = frameText(part, l);
  if (current) now.textContent = current.title[l];
  for (const b of document.querySelectorAll("#gf-langs button")) b.classList.toggle("on", b.dataset.lang === l);
  fitLabels();
}

const now = document.getElementById("gf-now");

// Draws the page and starts following the reader.
function start() {
  languageSwitch();
  document.getElementById("gf-diagram").appendChild(drawDiagram());
  build();
  setLanguage(lang);
  for (const [id, g] of diagramBoxes) {
    const first = steps.find((s) => boxOf(s) === id);
    if (!first) { g.classList.add("empty"); continue; }
    const go = () => {
      if (decodeURIComponent(location.hash.slice(1)) !== first.id) location.hash = "#" + first.id;
      else document.getElementById(first.id).scrollIntoView(); // the same address again: no hashchange
    };
    g.setAttribute("tabindex", "0");
    g.setAttribute("role", "link");
    g.addEventListener("click", go);
    g.addEventListener("keydown", (event) => { if (event.key === "Enter") go(); });
  }
  setCurrent(steps[0]);
  if (byId.has(decodeURIComponent(location.hash.slice(1)))) {
    document.getElementById(decodeURIComponent(location.hash.slice(1))).scrollIntoView();
  }
  follow();
}
