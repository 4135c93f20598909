"""What each step of the walkthrough is called and how it is explained, in English and Chinese.

Each kind of step has a title, a one-line explanation and a formula. `{layer}` and
`{head}` in a title are filled in per step (layers and heads counted from 1).
"""

from __future__ import annotations

LANGS = ("en", "zh")

# kind: (formula, {lang: (title, explanation)})
NARRATION: dict[str, tuple[str, dict[str, tuple[str, str]]]] = {
    "corpus": ("", {
        "en": ("Corpus", "The sentences the model learns from; each line answers the one before it."),
        "zh": ("语料", "模型学习用的句子；每一句回应上一句。"),
    }),
    "vocab": ("word → id", {
        "en": ("Vocabulary", "Every distinct word gets a number; special tokens mark padding, unknown words, start and end."),
        "zh": ("词表", "每个不同的词分配一个编号；特殊符号表示填充、未知词、开始和结束。"),
    }),
    "tokens": ("text → ids", {
        "en": ("Input as token ids", "The sentence is split into words and each word is replaced by its number."),
        "zh": ("输入的词编号", "把句子切成词，再把每个词换成它的编号。"),
    }),
    "embedding": ("X = E[ids]", {
        "en": ("Word embeddings", "Each id selects one row of the embedding matrix E: a vector of d_model numbers."),
        "zh": ("词嵌入", "每个编号取出嵌入矩阵 E 的一行：一个 d_model 维的向量。"),
    }),
    "positional": ("PE(pos,2i)=sin(pos/10000^(2i/d)), PE(pos,2i+1)=cos(pos/10000^(2i/d))", {
        "en": ("Positional encoding", "Attention ignores order, so a pattern that depends on the position is added."),
        "zh": ("位置编码", "注意力本身不看顺序，所以加上一个随位置变化的编码。"),
    }),
    "positional_learned": ("P[pos]", {
        "en": ("Position embeddings", "Attention ignores order, so a learned vector for each position is added."),
        "zh": ("位置嵌入", "注意力本身不看顺序，所以给每个位置加上一个学习得到的向量。"),
    }),
    "emb_sum": ("X + PE", {
        "en": ("Embedding + position", "The layer's input: what each word is, plus where it stands."),
        "zh": ("嵌入 + 位置", "层的输入：每个词是什么，加上它在哪里。"),
    }),
    "weights_q": ("W_Q", {
        "en": ("Layer {layer}: W_Q (head {head})", "A learned matrix that turns each word vector into a query."),
        "zh": ("第 {layer} 层：W_Q（第 {head} 头）", "把每个词向量变成查询向量的可学习矩阵。"),
    }),
    "weights_k": ("W_K", {
        "en": ("Layer {layer}: W_K (head {head})", "A learned matrix that turns each word vector into a key."),
        "zh": ("第 {layer} 层：W_K（第 {head} 头）", "把每个词向量变成键向量的可学习矩阵。"),
    }),
    "weights_v": ("W_V", {
        "en": ("Layer {layer}: W_V (head {head})", "A learned matrix that turns each word vector into a value."),
        "zh": ("第 {layer} 层：W_V（第 {head} 头）", "把每个词向量变成值向量的可学习矩阵。"),
    }),
    "q": ("Q = X W_Q", {
        "en": ("Layer {layer}: queries Q (head {head})", "What each position is looking for."),
        "zh": ("第 {layer} 层：查询 Q（第 {head} 头）", "每个位置想要找什么。"),
    }),
    "k": ("K = X W_K", {
        "en": ("Layer {layer}: keys K (head {head})", "What each position offers to be found by."),
        "zh": ("第 {layer} 层：键 K（第 {head} 头）", "每个位置用来被找到的特征。"),
    }),
    "v": ("V = X W_V", {
        "en": ("Layer {layer}: values V (head {head})", "What each position passes on when it is attended to."),
        "zh": ("第 {layer} 层：值 V（第 {head} 头）", "每个位置被关注时传递出去的内容。"),
    }),
    "scores": ("Q Kᵀ", {
        "en": ("Layer {layer}: scores Q Kᵀ (head {head})", "Dot product of every query with every key: how well they match."),
        "zh": ("第 {layer} 层：分数 Q Kᵀ（第 {head} 头）", "每个查询与每个键的点积：匹配程度。"),
    }),
    "scaled": ("Q Kᵀ / √d_k", {
        "en": ("Layer {layer}: scaled scores (head {head})", "Divided by √d_k so that the softmax does not saturate."),
        "zh": ("第 {layer} 层：缩放后的分数（第 {head} 头）", "除以 √d_k，避免 softmax 过于尖锐。"),
    }),
    "mask": ("mask: −∞ where not allowed", {
        "en": ("Layer {layer}: mask (head {head})", "Positions a query may not see (the future, or padding) get −∞."),
        "zh": ("第 {layer} 层：掩码（第 {head} 头）", "查询不能看到的位置（未来的词或填充）设为 −∞。"),
    }),
    "probs": ("softmax(Q Kᵀ / √d_k + mask)", {
        "en": ("Layer {layer}: attention weights (head {head})", "Each row becomes probabilities: how much each position attends to each other."),
        "zh": ("第 {layer} 层：注意力权重（第 {head} 头）", "每一行变成概率：每个位置关注其他位置的程度。"),
    }),
    "head_out": ("softmax(…) V", {
        "en": ("Layer {layer}: head output (head {head})", "A weighted average of the values, one row per position."),
        "zh": ("第 {layer} 层：注意力头输出（第 {head} 头）", "对值向量加权平均，每个位置一行。"),
    }),
    "concat": ("Concat(head₁, …, head_h)", {
        "en": ("Layer {layer}: heads concatenated", "The heads' outputs side by side."),
        "zh": ("第 {layer} 层：拼接各个头", "把各个头的输出并排拼接。"),
    }),
    "attn_out": ("Concat(…) W_O", {
        "en": ("Layer {layer}: attention output", "W_O mixes the heads back to d_model numbers per position."),
        "zh": ("第 {layer} 层：注意力输出", "W_O 把各头混合回每个位置 d_model 维。"),
    }),
    "residual": ("X + Sublayer(X)", {
        "en": ("Layer {layer}: residual sum (Add)", "The sublayer's output is added to its input, so information can flow past it."),
        "zh": ("第 {layer} 层：残差相加（Add）", "子层的输出加回它的输入，让信息可以绕过子层传递。"),
    }),
    "ln_stats": ("μ = mean(x), σ = √(var(x) + ε)", {
        "en": ("Layer {layer}: mean and standard deviation per row", "LayerNorm first measures each position's mean and spread."),
        "zh": ("第 {layer} 层：每行的均值和标准差", "层归一化先计算每个位置的均值和离散程度。"),
    }),
    "ln_out": ("γ · (x − μ) / σ + β", {
        "en": ("Layer {layer}: LayerNorm (Norm)", "Each row is centred and scaled, then given a learned scale γ and shift β."),
        "zh": ("第 {layer} 层：层归一化（Norm）", "每一行减去均值、除以标准差，再乘以可学习的 γ、加上 β。"),
    }),
    "ffn_hidden": ("X W₁ + b₁", {
        "en": ("Layer {layer}: feed-forward, first linear layer", "Each position on its own is widened to d_ff numbers."),
        "zh": ("第 {layer} 层：前馈网络第一层", "每个位置独立地扩展到 d_ff 维。"),
    }),
    "ffn_act": ("ReLU(x) = max(0, x)", {
        "en": ("Layer {layer}: activation", "The non-linearity: negative values become 0 (ReLU) or are damped (GELU)."),
        "zh": ("第 {layer} 层：激活函数", "非线性：负数变成 0（ReLU）或被压小（GELU）。"),
    }),
    "ffn_out": ("max(0, X W₁ + b₁) W₂ + b₂", {
        "en": ("Layer {layer}: feed-forward output", "The second linear layer brings each position back to d_model numbers."),
        "zh": ("第 {layer} 层：前馈网络输出", "第二层线性变换把每个位置变回 d_model 维。"),
    }),
    "memory": ("encoder output", {
        "en": ("Encoder output (memory)", "What the encoder understood of the source; every decoder layer reads it."),
        "zh": ("编码器输出（记忆）", "编码器对源句子的理解；解码器的每一层都会读取它。"),
    }),
    "cross_q": ("Q = Y W_Q", {
        "en": ("Layer {layer}: cross-attention queries (head {head})", "Queries come from the decoder: what each target position needs from the source."),
        "zh": ("第 {layer} 层：交叉注意力查询（第 {head} 头）", "查询来自解码器：每个目标位置需要从源句子中得到什么。"),
    }),
    "cross_kv": ("K = M W_K, V = M W_V", {
        "en": ("Layer {layer}: cross-attention keys from the encoder (head {head})", "Keys and values come from the encoder output M."),
        "zh": ("第 {layer} 层：来自编码器的交叉注意力键（第 {head} 头）", "键和值来自编码器输出 M。"),
    }),
    "logits": ("h W_vocab", {
        "en": ("Logits over the vocabulary", "The final linear layer gives one score per vocabulary word at every position."),
        "zh": ("词表上的得分（logits）", "最后的线性层在每个位置为词表中的每个词打一个分。"),
    }),
    "softmax_out": ("softmax(logits)", {
        "en": ("Probabilities of the next word", "Softmax turns the scores into probabilities that sum to 1."),
        "zh": ("下一个词的概率", "softmax 把得分变成总和为 1 的概率。"),
    }),
    "prediction": ("argmax", {
        "en": ("Predicted word", "The most probable word is the prediction for the next position."),
        "zh": ("预测的词", "概率最大的词就是下一个位置的预测。"),
    }),
    "decode": ("repeat until <end>", {
        "en": ("Greedy decoding until <end>", "Each predicted word is appended to the decoder input and the decoder runs again."),
        "zh": ("贪心解码直到 <end>", "每次把预测的词接到解码器输入后面，再运行一次解码器。"),
    }),
}

# Section names and labels shared by the renderers.
SECTIONS = {
    "input": {"en": "Input", "zh": "输入"},
    "encoder": {"en": "Encoder", "zh": "编码器"},
    "decoder": {"en": "Decoder", "zh": "解码器"},
    "output": {"en": "Output", "zh": "输出"},
}
LABELS = {
    "shape": {"en": "shape", "zh": "形状"},
    "formula": {"en": "formula", "zh": "公式"},
    "corner": {"en": "top-left corner", "zh": "左上角"},
    "stats": {"en": "mean {mean:.3f}, std {std:.3f}, min {min:.3f}, max {max:.3f}",
              "zh": "均值 {mean:.3f}，标准差 {std:.3f}，最小 {min:.3f}，最大 {max:.3f}"},
    "predicted": {"en": "predicted", "zh": "预测"},
    "walkthrough": {"en": "glassformer: the Transformer, step by step", "zh": "glassformer：一步一步看懂 Transformer"},
}


# Words of the HTML page around the steps.
WORDS = {
    "contents": {"en": "Contents", "zh": "目录"},
    "source": {"en": "Input text", "zh": "输入文本"},
    "output": {"en": "Model output", "zh": "模型输出"},
    "model": {"en": "Model", "zh": "模型"},
    "seq2seq": {"en": "encoder–decoder Transformer", "zh": "编码器–解码器 Transformer"},
    "gpt": {"en": "decoder-only Transformer (GPT)", "zh": "仅解码器 Transformer（GPT）"},
    "heads": {"en": "heads", "zh": "注意力头"},
    "layers": {"en": "layers", "zh": "层数"},
    "enc_dec_layers": {"en": "layers (encoder + decoder)", "zh": "层数（编码器 + 解码器）"},
    "vocab": {"en": "vocabulary", "zh": "词表大小"},
    "more_rows": {"en": "… and {n} more rows", "zh": "……另有 {n} 行"},
    "probs": {"en": "rows: queries ↓ · columns: keys →", "zh": "行：查询 ↓ · 列：键 →"},
    "softmax_out": {"en": "rows: positions ↓ · columns: vocabulary →", "zh": "行：位置 ↓ · 列：词表 →"},
    "heatmap": {"en": "rows ↓ · columns →", "zh": "行 ↓ · 列 →"},
    "where": {"en": "where this step sits in the model", "zh": "这一步在模型中的位置"},
}

# Diagram boxes; "\n" breaks a label over two lines.
BOXES = {
    "src_tokens": {"en": "Source\ntokens", "zh": "源句\n词编号"},
    "tgt_tokens": {"en": "Target\ntokens", "zh": "目标句\n词编号"},
    "tokens": {"en": "Input\ntokens", "zh": "输入\n词编号"},
    "embed": {"en": "Embedding\n+ position", "zh": "嵌入\n+ 位置"},
    "self": {"en": "Self-\nattention", "zh": "自注意力"},
    "masked_self": {"en": "Masked self-\nattention", "zh": "掩码\n自注意力"},
    "cross": {"en": "Cross-\nattention", "zh": "交叉注意力"},
    "ffn": {"en": "Feed-\nforward", "zh": "前馈网络"},
    "norm": {"en": "Norm", "zh": "归一化"},
    "add": {"en": "Add", "zh": "残差相加"},
    "addnorm": {"en": "Add &\nNorm", "zh": "相加与\n归一化"},
    "memory": {"en": "Memory", "zh": "记忆"},
    "linear": {"en": "Linear", "zh": "线性层"},
    "softmax": {"en": "Softmax", "zh": "Softmax"},
    "encoder_layer": {"en": "Encoder layer × {n}", "zh": "编码器层 × {n}"},
    "decoder_layer": {"en": "Decoder layer × {n}", "zh": "解码器层 × {n}"},
}


def check_lang(lang: str) -> None:
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}; choose one of {', '.join(LANGS)}")


def narrate(kind: str, lang: str, layer: int | None = None, head: int | None = None) -> tuple[str, str, str]:
    """(title, explanation, formula) of a step in `lang`."""
    check_lang(lang)
    formula, texts = NARRATION[kind]
    title, explanation = texts[lang]
    fill = {"layer": "" if layer is None else layer + 1, "head": "" if head is None else head + 1}
    return title.format(**fill), explanation, formula


def label(key: str, lang: str, **values) -> str:
    return LABELS[key][lang].format(**values)
