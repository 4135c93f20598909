// The notebook's views (glassformer/explain/render/notebook.py): attention as lines between the tokens,
// one colour a head (bertviz's head view), with per-head toggles, a layer selector and hover that keeps
// one token's lines and prints their weights; attention heatmaps and the analyses' grids in the
// explorer's palette with its hover tips. notebook.py inlines this after dom.js and matrices.js (whose
// number(), colour(), palette(), visible() it uses) inside a function of its own for each view, so
// two views never share a variable and nothing reaches the notebook's globals.

// One colour a head (categorical; the values' palette is matrices.js's).
const HEAD_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
  "#bcbd22", "#7f7f7f", "#393b79", "#ad494a", "#637939", "#8c6d31", "#7b4173", "#3182bd"];
const headColour = (h) => HEAD_COLOURS[h % HEAD_COLOURS.length];
const MIN_LINE = 0.002; // a weight below this draws no line (invisible at its opacity anyway)
const OPACITY_STEPS = 20; // the lines of all tokens are drawn at one of these opacities; a hovered token's exactly
const localised = (x) => (l) => (x !== null && typeof x === "object" ? x[l] : String(x));

function start(root, data) {
  root.textContent = "";
  lang = data.lang;
  const tipNode = el("div", "gfnb-tip");
  tipNode.hidden = true;
  const showTip = (event, text) => {
    tipNode.textContent = text;
    tipNode.hidden = false;
    const box = root.getBoundingClientRect();
    const x = Math.min(event.clientX - box.left + 14, box.width - tipNode.offsetWidth - 4);
    tipNode.style.left = Math.max(0, x) + "px";
    tipNode.style.top = event.clientY - box.top + 16 + "px";
  };
  const hide = () => { tipNode.hidden = true; };
  const top = el("div", "gfnb-top");
  top.appendChild(say(el("b"), localised(data.title)));
  const langs = el("span", "gfnb-langs");
  for (const [l, name] of [["en", "English"], ["zh", "中文"]]) {
    const b = el("button", l === lang ? "on" : "", name);
    b.type = "button";
    b.dataset.lang = l;
    b.addEventListener("click", () => {
      lang = l;
      for (const [node, text] of texts) node.textContent = text(lang);
      for (const other of langs.children) other.classList.toggle("on", other === b);
    });
    langs.appendChild(b);
  }
  top.appendChild(langs);
  root.append(top);
  if (data.note) root.appendChild(say(el("p", "gfnb-note"), localised(data.note)));
  const tips = { show: showTip, hide };
  if (data.view === "attention") attentionView(root, data, tips);
  for (const grid of data.grids || []) root.appendChild(gridView(grid, tips));
  if (data.footer) root.appendChild(say(el("p", "gfnb-note"), localised(data.footer)));
  root.appendChild(tipNode);
}

// -------------------------------------------------------------------------------------------
// Attention: a layer's heads as lines (queries left, keys right) and as heatmaps

function attentionView(root, data, tips) {
  const probs = data.probs; // [layer][head][query][key]
  const nLayer = probs.length, nHead = probs[0].length;
  const shown = new Set(Array.from({ length: nHead }, (_, h) => h));
  let layer = 0;
  const controls = el("div", "gfnb-controls");
  const select = el("select");
  for (let i = 0; i < nLayer; i++) {
    const option = say(el("option"), w("layer", { n: i + 1 }));
    option.value = String(i);
    select.appendChild(option);
  }
  select.addEventListener("change", () => { layer = Number(select.value); draw(); });
  controls.appendChild(select);
  for (let h = 0; h < nHead; h++) {
    const label = el("label", "gfnb-toggle");
    const box = el("input");
    box.type = "checkbox";
    box.checked = true;
    box.dataset.head = String(h);
    box.style.accentColor = headColour(h);
    box.addEventListener("change", () => { if (box.checked) shown.add(h); else shown.delete(h); draw(); });
    const swatch = el("span", "gfnb-swatch");
    swatch.style.background = headColour(h);
    label.append(box, swatch, say(el("span"), w("head", { n: h + 1 })));
    controls.appendChild(label);
  }
  root.appendChild(controls);
  root.appendChild(say(el("p", "gfnb-note"), w("attention_hint")));
  const lines = el("div", "gfnb-lines");
  const heat = el("div", "gfnb-heatmaps");
  root.append(lines, say(el("h4"), w("heatmaps")), heat);
  const draw = () => {
    const heads = [...shown].sort((a, b) => a - b);
    lines.replaceChildren(headView(data.tokens, probs[layer], heads));
    heat.replaceChildren(...heads.map((h) => heatmap(data.tokens, probs[layer][h], h, tips)));
  };
  draw();
}

// bertviz's head view: each query token on the left joined to each key token on the right by a line
// of the head's colour, as opaque as the weight. Hovering a token keeps only its lines and writes
// their weights beside the tokens at the other end, one number a head.
function headView(tokens, layerProbs, heads) {
  const T = tokens.length, ROW = 20, TOP = 26, NUMBER = 37; // NUMBER: room for "0.123" at 11 px
  const LINK = Math.min(320, Math.max(150, 5 * T)); // wider for long texts, so their lines are not all steep
  const words = tokens.map(visible);
  const textW = Math.min(170, Math.max(44, 12 + 7.5 * Math.max(...words.map((t) => t.length)))); // room for "keys"
  const numbersW = Math.max(1, heads.length) * NUMBER;
  const qRight = numbersW + textW, kLeft = qRight + 12 + LINK + 12;
  const width = kLeft + textW + numbersW, height = TOP + T * ROW + 6;
  const node = svg("svg", { class: "gfnb-headview", width, height, viewBox: `0 0 ${width} ${height}` });
  node.appendChild(say(svg("text", { x: qRight, y: 14, class: "gfnb-side", "text-anchor": "end" }), w("queries")));
  node.appendChild(say(svg("text", { x: kLeft, y: 14, class: "gfnb-side" }), w("keys")));
  const y = (i) => TOP + i * ROW + ROW / 2;
  // Every line of a head in a few paths, one an opacity step: thousands of lines stay a few elements.
  const x1 = qRight + 8, x2 = kLeft - 8;
  for (const h of heads) {
    const steps = new Map();
    for (let q = 0; q < T; q++) {
      for (let k = 0; k < T; k++) {
        const p = layerProbs[h][q][k];
        if (p < MIN_LINE) continue;
        const step = Math.round(p * OPACITY_STEPS);
        if (!steps.has(step)) steps.set(step, []);
        steps.get(step).push(`M${x1},${y(q)}L${x2},${y(k)}`);
      }
    }
    for (const [step, segments] of steps) {
      node.appendChild(svg("path", { class: "gfnb-all", "data-head": h, stroke: headColour(h), d: segments.join(""),
        "stroke-opacity": Math.max(step / OPACITY_STEPS, 0.02) }));
    }
  }
  const focused = svg("g", { class: "gfnb-focused" });
  const numbers = svg("g", { class: "gfnb-weights" });
  node.append(focused, numbers);
  // One token's lines only, each as opaque as its weight, and beside every token at the other end the
  // weight of each head.
  const focus = (side, i, on) => {
    node.classList.toggle("gfnb-focus", on);
    for (const t of node.querySelectorAll(`text.gfnb-token[data-${side}="${i}"]`)) t.classList.toggle("on", on);
    focused.replaceChildren();
    if (on) {
      for (const h of heads) {
        for (let j = 0; j < T; j++) {
          const [q, k] = side === "q" ? [i, j] : [j, i];
          const p = layerProbs[h][q][k];
          if (p < MIN_LINE) continue;
          focused.appendChild(svg("line", { x1, y1: y(q), x2, y2: y(k), stroke: headColour(h), "stroke-opacity": p,
            "data-head": h, "data-q": q, "data-k": k }));
        }
      }
    }
    numbers.replaceChildren();
    if (!on) return;
    heads.forEach((h, n) => { // each column of numbers headed by its head's number, in its colour
      const x = side === "q" ? kLeft + textW + n * NUMBER : n * NUMBER;
      const t = svg("text", { x: x + 2, y: 14, class: "gfnb-weight-head" });
      t.style.fill = headColour(h);
      t.textContent = String(h + 1);
      numbers.appendChild(t);
    });
    for (let j = 0; j < T; j++) {
      heads.forEach((h, n) => {
        const p = side === "q" ? layerProbs[h][i][j] : layerProbs[h][j][i];
        if (p === 0) return; // a masked (later) key, or a weight under the data's last decimal: nothing to read
        const x = side === "q" ? kLeft + textW + n * NUMBER : n * NUMBER;
        const t = svg("text", { x: x + 2, y: y(j) + 4, class: p >= 0.0005 ? "gfnb-weight" : "gfnb-weight zero",
          "data-head": h, [side === "q" ? "data-k" : "data-q"]: j });
        t.style.fill = headColour(h);
        t.textContent = number(p, 3, true);
        numbers.appendChild(t);
      });
    }
  };
  for (let i = 0; i < T; i++) {
    for (const side of ["q", "k"]) {
      const x = side === "q" ? qRight : kLeft;
      const t = svg("text", { x, y: y(i) + 4, class: "gfnb-token", "text-anchor": side === "q" ? "end" : "start",
        [`data-${side}`]: i });
      t.textContent = words[i];
      const hit = svg("rect", { x: side === "q" ? qRight - textW : kLeft - 4, y: y(i) - ROW / 2, width: textW + 4,
        height: ROW, class: "gfnb-hit", [`data-${side}`]: i });
      hit.addEventListener("mouseenter", () => focus(side, i, true));
      hit.addEventListener("mouseleave", () => focus(side, i, false));
      node.append(t, hit);
    }
  }
  return node;
}

// One head's probabilities as a heatmap (rows: queries, columns: keys) in the explorer's palette.
function heatmap(tokens, values, h, tips) {
  const T = tokens.length;
  const side = Math.max(2, Math.min(16, Math.floor(300 / T)));
  const p = { probabilities: true, decimals: 2 };
  const figure = el("figure", "gfnb-heat");
  const caption = el("figcaption");
  const swatch = el("span", "gfnb-swatch");
  swatch.style.background = headColour(h);
  caption.append(swatch, say(el("span"), w("head", { n: h + 1 })));
  const node = el("canvas");
  node.width = node.height = T * side;
  node.dataset.head = String(h);
  node.dataset.cell = String(side);
  const ctx = node.getContext("2d");
  for (let r = 0; r < T; r++) {
    for (let c = 0; c < T; c++) {
      ctx.fillStyle = css(colour(p, values[r][c]));
      ctx.fillRect(c * side, r * side, side, side);
    }
  }
  const mark = el("div", "gfnb-mark");
  mark.hidden = true;
  mark.style.width = mark.style.height = side + "px";
  node.addEventListener("mousemove", (event) => {
    const box = node.getBoundingClientRect();
    const c = Math.min(T - 1, Math.floor((event.clientX - box.left) / side));
    const r = Math.min(T - 1, Math.floor((event.clientY - box.top) / side));
    mark.hidden = false;
    mark.style.left = node.offsetLeft + c * side + "px";
    mark.style.top = node.offsetTop + r * side + "px";
    tips.show(event, `${word("query")}: ${visible(tokens[r])}  ·  ${word("key")}: ${visible(tokens[c])}\n` +
      `${word("prob")}: ${full(values[r][c])}`);
  });
  node.addEventListener("mouseleave", () => { mark.hidden = true; tips.hide(); });
  const grid = el("div", "gfnb-labelled"); // a corner, the keys above, the queries to the left, the map
  const cols = el("div", "gfnb-cols"), rows = el("div", "gfnb-rows");
  if (side >= 9) {
    for (const t of tokens) {
      const key = el("span", "", visible(t));
      key.style.width = key.style.lineHeight = side + "px";
      cols.appendChild(key);
      const query = el("span", "", visible(t));
      query.style.height = query.style.lineHeight = side + "px";
      rows.appendChild(query);
    }
  }
  const place = el("div", "gfnb-place");
  place.append(node, mark);
  grid.append(el("span"), cols, rows, place);
  figure.append(caption, grid);
  return figure;
}

// -------------------------------------------------------------------------------------------
// A grid of numbers or tokens (the logit lens, patching, attribution), coloured by matrices.js's palette

function gridView(grid, tips) {
  const finite = grid.values.flat().filter((x) => typeof x === "number");
  const stats = finite.length
    ? { min: Math.min(...finite), max: Math.max(...finite), mean: finite.reduce((a, b) => a + b, 0) / finite.length,
        count: finite.length }
    : {};
  const p = palette(grid.probabilities ? { display: "probabilities" } : { stats });
  const figure = el("figure", "gfnb-grid");
  figure.appendChild(say(el("figcaption"), localised(grid.caption)));
  const wrap = el("div", "gfnb-scroll");
  const table = el("table");
  const head = table.createTHead().insertRow();
  head.appendChild(el("th"));
  for (const c of grid.cols) head.appendChild(say(el("th"), (l) => visible(localised(c)(l))));
  const body = table.createTBody();
  grid.values.forEach((values, r) => {
    const row = body.insertRow();
    row.appendChild(say(el("th"), localised(grid.rows[r])));
    values.forEach((x, c) => {
      const text = grid.text ? visible(grid.text[r][c]) : x === null ? "·" : number(x, p.decimals, p.probabilities);
      const td = el("td", "", text);
      const rgb = x === null ? GREY : colour(p, x);
      td.style.background = css(rgb);
      if (dark(rgb)) td.className = "dark";
      td.addEventListener("mousemove", (event) => {
        const where = `${localised(grid.rows[r])(lang)}  ·  ${visible(localised(grid.cols[c])(lang))}`;
        const value = x === null ? word("not_run") : grid.tips ? grid.tips[r][c] : full(x);
        tips.show(event, `${where}\n${value}`);
      });
      td.addEventListener("mouseleave", tips.hide);
      row.appendChild(td);
    });
  });
  wrap.appendChild(table);
  figure.appendChild(wrap);
  return figure;
}
