// Elements and words, shared by the walkthrough page (html.py inlines it first) and the explorer
// (which loads it as it is, before its own scripts). Text goes onto a page through textContent,
// never as markup. Each page fills WORDS ({language: {key: text}}) and sets `lang` before it draws.

let lang = "en";
let texts = []; // [node, text(lang)] for every translated node, redrawn when the language changes
function say(node, text) {
  texts.push([node, text]);
  node.textContent = text(lang);
  return node;
}
function word(key, values, l) {
  let text = WORDS[l || lang][key];
  if (text === undefined) return key;
  for (const [name, value] of Object.entries(values || {})) text = text.split("{" + name + "}").join(value);
  return text;
}
const w = (key, values) => (l) => word(key, values, l);

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}
function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}
