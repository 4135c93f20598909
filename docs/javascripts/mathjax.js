// MathJax 2 for the course's formulas, loaded from this site (assets/mathjax, copied from the
// jupyter-server-mathjax package by docs/hooks/learn.py), never a CDN. pymdownx.arithmatex writes
// each formula as <script type="math/tex">, which MathJax reads without scanning the text.
window.MathJax = {
  config: ["TeX-AMS-MML_HTMLorMML-full.js"],
  "HTML-CSS": { availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null },
  showMathMenu: false,
  messageStyle: "none",
};
