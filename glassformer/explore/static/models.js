// The words of the header's model switcher (explore.js: drawModels), English and Chinese: the
// models `glassformer explore` serves with no --model, by their keys (server.py: load_models).
"use strict";

Object.assign(WORDS.en, {
  model: "Model",
  model_village: "Village stories GPT (character level)",
  model_articles: "The articles' translation example",
});
Object.assign(WORDS.zh, {
  model: "模型",
  model_village: "村庄故事 GPT（字符级）",
  model_articles: "文章中的翻译示例",
});
