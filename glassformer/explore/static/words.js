// The explorer's own words in English and Chinese (the steps' titles and explanations come in
// both languages in the data); the diagram's words are the walkthrough page's (narration.BOXES).
// At the end: a notice where the system has no font to draw the Chinese.
"use strict";

const WORDS = {
  en: {
    title: "glassformer explore", text: "Text", source_text: "Source sentence", export: "Export page",
    big: "Large text", tokens: "tokens", server: "server", page: "page", ms: "ms", busy: "computing…",
    unknown: "unknown token", tab_steps: "Steps", tab_attention: "Attention", tab_next: "Next token",
    tab_lens: "Logit lens", tab_translate: "Translation", pick_block: "Click a block of the diagram to see its steps.",
    // the diagram's words, as the walkthrough page has them (narration.BOXES)
    box_src_tokens: "Source\ntokens", box_tgt_tokens: "Target\ntokens", box_tokens: "Input\ntokens",
    box_embed: "Embedding\n+ position", box_self: "Self-\nattention", box_masked_self: "Masked self-\nattention",
    box_cross: "Cross-\nattention", box_ffn: "Feed-\nforward", box_add: "Add", box_addnorm: "Add &\nNorm",
    box_linear: "Linear", box_softmax: "Softmax", final: "Final norm",
    box_encoder_layer: "Encoder layer × {n}", box_decoder_layer: "Decoder layer × {n}",
    layer: "Layer {n}", enc_layer: "Encoder layer {n}", dec_layer: "Decoder layer {n}", head: "head {n}",
    self: "self-attention", cross: "cross-attention", shape: "shape", from: "from",
    truncated: "{count} values: shown is the top-left corner.", load_all: "Show all values",
    edit_hint: "Click a weight cell to edit it.", edits: "Edits", no_edits: "No edits: the checkpoint's own weights.",
    reset: "Reset weights", remove: "remove", ablated: "Ablated heads", show: "show", ablate: "ablate",
    restore: "restore", query: "query", key: "key", score: "raw score", scaled: "scaled", prob: "probability",
    temperature: "Temperature", top_k: "Top-k", top_p: "Top-p", seed: "Seed", off: "off",
    next_greedy: "Next (greedy)", next_sample: "Next (sampled)", undo: "Undo", kept: "kept: {k} after top-k, {p} after top-p, of {v}",
    greedy_note: "temperature 0 or top-k 1: greedy, all probability on the argmax",
    token: "token", logit: "logit", softmax: "softmax", p_temperature: "÷ temperature", p_top_k: "top-k", p_top_p: "top-p (final)",
    cache: "KV cache: {layers} layers, K and V each {shape}", cache_one: "KV cache: 1 layer, K and V each {shape}", no_cache: "no KV cache (the window was recomputed)",
    new_row: "The newest query's attention (rows: layer.head)", picked: "picked {token} (p = {p})",
    lens_intro: "The top token each layer would predict at each position (hover or tap for the top five).",
    position: "position", source: "source", target: "target", output: "output",
    alignment: "Cross-attention: target × source", beam: "Beam search", beam_width: "beam width", run_beam: "Run beam search",
    kept_s: "kept", finished: "finished", pruned: "pruned", score_s: "score", normalised: "normalised",
    png: "PNG", svg: "SVG", more_rows: "… {n} more rows", value: "value", changed: "changed by an edit or ablation",
    latency: "keystroke → page", step_n: "step {n}", lens_embedding: "embedding", lens_block: "block {n}",
    candidates_h: "most likely next tokens", picked_h: "picked",
    stale: "The server refused this input (see above): shown is still the previous text's computation.",
  },
  zh: {
    title: "glassformer 探索", text: "文本", source_text: "源句", export: "导出页面", big: "大字号",
    tokens: "个词元", server: "服务器", page: "页面", ms: "毫秒", busy: "计算中…", unknown: "未知词元",
    tab_steps: "步骤", tab_attention: "注意力", tab_next: "下一个词元", tab_lens: "Logit 透镜", tab_translate: "翻译",
    pick_block: "点击结构图中的方框查看它的步骤。",
    box_src_tokens: "源句\n词编号", box_tgt_tokens: "目标句\n词编号", box_tokens: "输入\n词编号", box_embed: "嵌入\n+ 位置",
    box_self: "自注意力", box_masked_self: "掩码\n自注意力", box_cross: "交叉注意力", box_ffn: "前馈网络",
    box_add: "残差相加", box_addnorm: "相加与\n归一化", box_linear: "线性层", box_softmax: "Softmax", final: "最终归一化",
    box_encoder_layer: "编码器层 × {n}", box_decoder_layer: "解码器层 × {n}",
    layer: "第 {n} 层", enc_layer: "编码器第 {n} 层", dec_layer: "解码器第 {n} 层", head: "第 {n} 头",
    self: "自注意力", cross: "交叉注意力", shape: "形状", from: "来自",
    truncated: "共 {count} 个数：这里只显示左上角。", load_all: "显示全部数值",
    edit_hint: "点击权重格子可修改它。", edits: "修改", no_edits: "没有修改：使用检查点自己的权重。",
    reset: "恢复权重", remove: "删除", ablated: "已消融的头", show: "显示", ablate: "消融", restore: "恢复",
    query: "查询", key: "键", score: "原始分数", scaled: "缩放后", prob: "概率",
    temperature: "温度", top_k: "Top-k", top_p: "Top-p", seed: "随机种子", off: "关",
    next_greedy: "下一个（贪心）", next_sample: "下一个（采样）", undo: "撤销", kept: "保留：top-k 后 {k} 个，top-p 后 {p} 个，共 {v} 个",
    greedy_note: "温度为 0 或 top-k 为 1：贪心，全部概率给最大者",
    token: "词元", logit: "logit", softmax: "softmax", p_temperature: "÷ 温度", p_top_k: "top-k", p_top_p: "top-p（最终）",
    cache: "KV 缓存：{layers} 层，K 和 V 各为 {shape}", cache_one: "KV 缓存：1 层，K 和 V 各为 {shape}", no_cache: "没有 KV 缓存（窗口重新计算）",
    new_row: "最新查询的注意力（行：层.头）", picked: "选中 {token}（p = {p}）",
    lens_intro: "每一层在每个位置会预测的第一名词元（鼠标停留或轻触可看前五名）。",
    position: "位置", source: "源句", target: "目标句", output: "输出",
    alignment: "交叉注意力：目标 × 源", beam: "束搜索", beam_width: "束宽", run_beam: "运行束搜索",
    kept_s: "保留", finished: "完成", pruned: "剪除", score_s: "分数", normalised: "归一化分数",
    png: "PNG", svg: "SVG", more_rows: "… 还有 {n} 行", value: "数值", changed: "因修改或消融而改变",
    latency: "按键 → 页面", step_n: "第 {n} 步", lens_embedding: "嵌入", lens_block: "第 {n} 块",
    candidates_h: "最可能的下一个词元", picked_h: "选中",
    stale: "服务器拒绝了这个输入（见上方）：下面仍是上一段文本的计算结果。",
  },
};

// Chinese needs a CJK font, which a bare Linux system may lack: then every Chinese character is
// the same empty box. Two different characters drawn alike means no font has them; the page then
// says so, in both languages (the Chinese half for whoever copies it elsewhere).
const NO_CJK_FONT = "No Chinese font on this system, so Chinese shows as empty boxes: install one " +
  "(e.g. fonts-noto-cjk on Debian/Ubuntu) and reload. · 此系统没有中文字体，中文显示为方框：请安装一个（如 fonts-noto-cjk）后重新加载。";
function drawsChinese() {
  const ctx = document.createElement("canvas").getContext("2d", { willReadFrequently: true });
  ctx.canvas.width = ctx.canvas.height = 40;
  ctx.font = "32px " + getComputedStyle(document.body).fontFamily;
  ctx.textBaseline = "top";
  const pixels = (ch) => {
    ctx.clearRect(0, 0, 40, 40);
    ctx.fillText(ch, 2, 2);
    return ctx.getImageData(0, 0, 40, 40).data.join();
  };
  return pixels("中") !== pixels("文");
}
let chineseDrawn = null;
function fontNotice() {
  const zh = document.documentElement.lang === "zh";
  let note = document.getElementById("gx-font-note");
  if (zh && chineseDrawn === null) chineseDrawn = drawsChinese();
  if (zh && !chineseDrawn && !note) {
    note = document.createElement("p");
    note.id = "gx-font-note";
    note.textContent = NO_CJK_FONT;
    document.getElementById("gx-error").before(note);
  }
  if (note) note.hidden = !zh || chineseDrawn;
}
new MutationObserver(fontNotice).observe(document.documentElement, { attributes: true, attributeFilter: ["lang"] });
