// MathJax 2 for the course's formulas, loaded from this site (assets/mathjax, copied from the
// jupyter-server-mathjax package by docs/hooks/learn.py), never a CDN. pymdownx.arithmatex writes
// each formula as <script type="math/tex">, which MathJax reads without scanning the text.
window.MathJax = {
  config: ["TeX-AMS-MML_HTMLorMML-full.js"],
  "HTML-CSS": {
    availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null,
    // MathJax measures text against a blank font it loads from about:blank, which Chromium
    // refuses with a console error; a local() font that does not exist is just as blank.
    styles: { "@font-face": { "font-family": "MathJax_Blank", src: "local('MathJax Blank None')" } },
  },
  // Markdown writes a formula's < > & as entities, which a <script> element does not decode:
  // MathJax would read "&lt;". Put the characters back before it reads them.
  AuthorInit: function () {
    for (const script of document.querySelectorAll('script[type^="math/tex"]')) {
      script.textContent = script.textContent.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
    }
  },
  showMathMenu: false,
  messageStyle: "none",
};
