"""What each step of the walkthrough is called and how it is explained, in English and Chinese.

Each kind of step has a title, a one-line explanation and a formula. `{layer}` and
`{head}` in a title are filled in per step (layers and heads counted from 1).
"""

from __future__ import annotations

LANGS = ("en", "zh")

# kind: (formula, {lang: (name, explanation)}). A step's title is its place in the model
# ("Decoder layer 1, self-attention, head 2") and its name. Formulas are filled per step:
# {b} is " + b" where a linear map has a bias, {src} the matrix keys and values are made
# from (X, or the encoder's output M), {eps}, {d}, {theta}, {factor}, {n} the step's parameters.
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
        "en": ("Token ids", "The text is split into tokens and each token is replaced by its number in the vocabulary."),
        "zh": ("词编号", "把文本切成词元，再把每个词元换成它在词表中的编号。"),
    }),
    "embedding_table": ("E", {
        "en": ("Embedding matrix E", "One learned row of d_model numbers for every token of the vocabulary."),
        "zh": ("嵌入矩阵 E", "词表中每个词元对应一行可学习的 d_model 维向量。"),
    }),
    "embedding": ("X = E[ids]", {
        "en": ("Token embeddings", "Each id selects its row of the embedding matrix E."),
        "zh": ("词嵌入", "每个编号取出嵌入矩阵 E 中对应的一行。"),
    }),
    "embedding_scaled": ("X · √d_model = X · {factor:.4g}", {
        "en": ("Scaled embeddings", "As in the 2017 paper, the embeddings are multiplied by √d_model before positions are added."),
        "zh": ("缩放后的嵌入", "和 2017 年的论文一样，嵌入先乘以 √d_model，再加上位置。"),
    }),
    "pair_ids": ("pair = previous · V + id (none before the first: previous = V, shown ∅)", {
        "en": ("Token pairs", "Each token with the one before it, as one number: a row of the pair table for every (previous, current) pair; the first token has no previous one and gets a row of its own."),
        "zh": ("词元对", "把每个词元和它前一个词元合成一个编号：每个 (前一个, 当前) 对在词对表中有一行；第一个词元没有前一个，用单独的一行。"),
    }),
    "pair_table": ("B", {
        "en": ("Pair embedding matrix B", "One learned row for every pair of tokens: what the previous character says about this one, before any attention."),
        "zh": ("词对嵌入矩阵 B", "每对词元一行可学习的向量：在任何注意力之前，前一个字符对当前字符的提示。"),
    }),
    "pairs": ("B[pair]", {
        "en": ("Pair embeddings", "Each position's pair row is added to its token's row: the first layer already knows the last two tokens."),
        "zh": ("词对嵌入", "把每个位置的词对那一行加到词元那一行上：第一层就已经知道最后两个词元。"),
    }),
    "position_ids": ("0, 1, …, T − 1", {
        "en": ("Positions", "Each token's position in the sequence, counted from 0."),
        "zh": ("位置编号", "每个词元在序列中的位置，从 0 开始。"),
    }),
    "position_table": ("P", {
        "en": ("Position embedding matrix P", "One learned row for every position up to the block size."),
        "zh": ("位置嵌入矩阵 P", "每个位置（直到最大长度）对应一行可学习的向量。"),
    }),
    "positions_learned": ("P[pos]", {
        "en": ("Position embeddings", "Attention itself ignores order, so each position's learned row is added."),
        "zh": ("位置嵌入", "注意力本身不看顺序，所以加上每个位置学习得到的那一行。"),
    }),
    "positions_sinusoidal": ("PE(pos,2i) = sin(pos/10000^(2i/d)), PE(pos,2i+1) = cos(pos/10000^(2i/d))", {
        "en": ("Positional encoding", "Attention itself ignores order, so a fixed pattern of sines and cosines of the position is added."),
        "zh": ("位置编码", "注意力本身不看顺序，所以加上一个由位置的正弦和余弦构成的固定编码。"),
    }),
    "segment_ids": ("segment of each token", {
        "en": ("Segment ids", "Which segment each token belongs to (here the whole text is segment 0)."),
        "zh": ("片段编号", "每个词元属于哪个片段（这里整段文本都是片段 0）。"),
    }),
    "segment_table": ("S", {
        "en": ("Segment embedding matrix S", "One learned row for every segment."),
        "zh": ("片段嵌入矩阵 S", "每个片段对应一行可学习的向量。"),
    }),
    "segments": ("S[segment]", {
        "en": ("Segment embeddings", "Each token's segment row is added, so the model can tell segments apart."),
        "zh": ("片段嵌入", "加上每个词元所属片段的那一行，让模型能区分不同片段。"),
    }),
    "embedding_sum": ("{terms}", {
        "en": ("The first layer's input", "What each token is, plus where it stands: the sum enters the first layer."),
        "zh": ("第一层的输入", "每个词元是什么，加上它在哪里：这个和进入第一层。"),
    }),
    "causal_mask": ("keep[i, j] = (j ≤ i)", {
        "en": ("Causal mask", "A position may look only at itself and earlier positions, never at the future."),
        "zh": ("因果掩码", "每个位置只能看自己和之前的位置，不能看未来。"),
    }),
    "stats_mean": ("μ = mean(x)", {
        "en": ("Mean of each row", "LayerNorm first measures each position's mean ..."),
        "zh": ("每行的均值", "层归一化先计算每个位置的均值……"),
    }),
    "stats_std": ("σ = √(mean((x − μ)²) + ε), ε = {eps:g}", {
        "en": ("Standard deviation of each row", "... and its spread around that mean."),
        "zh": ("每行的标准差", "……以及围绕均值的离散程度。"),
    }),
    "stats_rms": ("rms = √(mean(x²) + ε), ε = {eps:g}", {
        "en": ("Root mean square of each row", "RMSNorm measures only each position's size; it does not subtract a mean."),
        "zh": ("每行的均方根", "RMSNorm 只衡量每个位置的大小，不减去均值。"),
    }),
    "norm_gain": ("γ", {
        "en": ("Norm scale γ", "A learned scale for each of the d_model channels."),
        "zh": ("归一化缩放 γ", "每个通道一个可学习的缩放系数。"),
    }),
    "head_norm_gain": ("γ", {
        "en": ("Per-head norm scale γ", "A learned scale for each of a head's head_dim channels, shared by all the heads."),
        "zh": ("每头归一化缩放 γ", "一个头的 head_dim 个通道各有一个可学习的缩放系数，所有头共用。"),
    }),
    "norm_shift": ("β", {
        "en": ("Norm shift β", "A learned shift for each of the d_model channels."),
        "zh": ("归一化平移 β", "每个通道一个可学习的平移量。"),
    }),
    "layer_norm": ("γ · (x − μ) / σ + β", {
        "en": ("LayerNorm", "Each row is centred and scaled to unit spread, then given the learned scale γ and shift β."),
        "zh": ("层归一化", "每一行减去均值、除以标准差，再乘以可学习的 γ、加上 β。"),
    }),
    "layer_norm_nobias": ("γ · (x − μ) / σ", {
        "en": ("LayerNorm", "Each row is centred and scaled to unit spread, then given the learned scale γ (this model has no shift β)."),
        "zh": ("层归一化", "每一行减去均值、除以标准差，再乘以可学习的 γ（这个模型没有平移 β）。"),
    }),
    "rms_norm": ("γ · x / rms", {
        "en": ("RMSNorm", "Each row is divided by its root mean square, then given the learned scale γ."),
        "zh": ("RMS 归一化", "每一行除以它的均方根，再乘以可学习的 γ。"),
    }),
    "weight_q": ("W_Q", {
        "en": ("W_Q", "A learned matrix that turns each vector into a query (stored as (out, in): Q = X W_Qᵀ)."),
        "zh": ("W_Q", "把每个向量变成查询的可学习矩阵（按 (输出, 输入) 存储：Q = X W_Qᵀ）。"),
    }),
    "weight_k": ("W_K", {
        "en": ("W_K", "A learned matrix that turns each vector into a key."),
        "zh": ("W_K", "把每个向量变成键的可学习矩阵。"),
    }),
    "weight_v": ("W_V", {
        "en": ("W_V", "A learned matrix that turns each vector into a value."),
        "zh": ("W_V", "把每个向量变成值的可学习矩阵。"),
    }),
    "bias": ("b", {
        "en": ("Bias b", "A learned number added to each output channel."),
        "zh": ("偏置 b", "加到每个输出通道上的可学习数。"),
    }),
    "q": ("Q = X W_Qᵀ{b}", {
        "en": ("Queries Q", "What each position is looking for."),
        "zh": ("查询 Q", "每个位置想要找什么。"),
    }),
    "k": ("K = {src} W_Kᵀ{b}", {
        "en": ("Keys K", "What each position offers to be found by."),
        "zh": ("键 K", "每个位置用来被找到的特征。"),
    }),
    "v": ("V = {src} W_Vᵀ{b}", {
        "en": ("Values V", "What each position passes on when it is attended to."),
        "zh": ("值 V", "每个位置被关注时传递出去的内容。"),
    }),
    "rope_q": ("RoPE(Q): (q_i, q_{{i+d/2}}) rotated by pos · {theta:g}^(−2i/d)", {
        "en": ("Queries rotated by position (RoPE)", "Each pair of channels is rotated by an angle that grows with the position; no position vector is added."),
        "zh": ("按位置旋转的查询（RoPE）", "每对通道按随位置增长的角度旋转；不加位置向量。"),
    }),
    "rope_k": ("RoPE(K): (k_i, k_{{i+d/2}}) rotated by pos · {theta:g}^(−2i/d)", {
        "en": ("Keys rotated by position (RoPE)", "Rotated the same way, so that Q·K depends only on how far apart two positions are."),
        "zh": ("按位置旋转的键（RoPE）", "用同样的方式旋转，使 Q·K 只取决于两个位置相距多远。"),
    }),
    "q_norm": ("q / rms(q) · γ_q, ε = {eps:g}", {
        "en": ("Queries normed (q-norm)", "Each head's query is divided by its root mean square and scaled by a learned γ, before the rotation (Qwen3)."),
        "zh": ("归一化后的查询（q-norm）", "每个头的查询除以它的均方根，再乘以可学习的 γ，然后才旋转（Qwen3）。"),
    }),
    "k_norm": ("k / rms(k) · γ_k, ε = {eps:g}", {
        "en": ("Keys normed (k-norm)", "Each head's key is divided by its root mean square and scaled by a learned γ, before the rotation (Qwen3)."),
        "zh": ("归一化后的键（k-norm）", "每个头的键除以它的均方根，再乘以可学习的 γ，然后才旋转（Qwen3）。"),
    }),
    "k_transposed": ("Kᵀ", {
        "en": ("Keys transposed", "K turned on its side, so that Q Kᵀ pairs every query with every key."),
        "zh": ("转置后的键", "把 K 转置，这样 Q Kᵀ 会把每个查询和每个键配对。"),
    }),
    "scores": ("Q Kᵀ", {
        "en": ("Scores Q Kᵀ", "The dot product of every query with every key: how well they match."),
        "zh": ("分数 Q Kᵀ", "每个查询与每个键的点积：匹配程度。"),
    }),
    "scaled": ("Q Kᵀ / √d_k, d_k = {d}", {
        "en": ("Scaled scores", "Divided by √d_k so that the softmax does not saturate."),
        "zh": ("缩放后的分数", "除以 √d_k，避免 softmax 过于尖锐。"),
    }),
    "masked": ("−∞ where the mask is false", {
        "en": ("Masked scores", "Positions a query may not see get −∞, so their probability becomes 0."),
        "zh": ("掩码后的分数", "查询不能看到的位置设为 −∞，它们的概率就变成 0。"),
    }),
    "probs": ("softmax(row)", {
        "en": ("Attention weights", "Each row becomes probabilities: how much each position attends to each key."),
        "zh": ("注意力权重", "每一行变成概率：每个位置对每个键的关注程度。"),
    }),
    "head_out": ("softmax(…) V", {
        "en": ("Head output", "A weighted average of the values, one row per position."),
        "zh": ("注意力头输出", "对值向量加权平均，每个位置一行。"),
    }),
    "concat": ("Concat(head₁, …, head_{n})", {
        "en": ("Heads concatenated", "The heads' outputs side by side."),
        "zh": ("拼接各个头", "把各个头的输出并排拼接。"),
    }),
    "weight_o": ("W_O", {
        "en": ("W_O", "A learned matrix that mixes the heads back to d_model numbers per position."),
        "zh": ("W_O", "把各头混合回每个位置 d_model 维的可学习矩阵。"),
    }),
    "attn_out": ("Concat(…) W_Oᵀ{b}", {
        "en": ("Attention output", "W_O mixes the heads back to d_model numbers per position."),
        "zh": ("注意力输出", "W_O 把各头混合回每个位置 d_model 维。"),
    }),
    "weight_up": ("W_up", {
        "en": ("W_up (first linear layer)", "A learned matrix that widens each position to d_ff numbers."),
        "zh": ("W_up（第一层线性变换）", "把每个位置扩展到 d_ff 维的可学习矩阵。"),
    }),
    "weight_gate": ("W_gate", {
        "en": ("W_gate", "A second learned matrix of the same shape, whose output decides how much of each hidden unit passes."),
        "zh": ("W_gate", "形状相同的第二个可学习矩阵，它的输出决定每个隐藏单元通过多少。"),
    }),
    "weight_down": ("W_down (second linear layer)", {
        "en": ("W_down (second linear layer)", "A learned matrix that brings each position back to d_model numbers."),
        "zh": ("W_down（第二层线性变换）", "把每个位置变回 d_model 维的可学习矩阵。"),
    }),
    "ffn_up": ("up = X W_upᵀ{b}", {
        "en": ("up (first linear layer)", "Each position on its own is widened to d_ff numbers."),
        "zh": ("up（第一层线性变换）", "每个位置独立地扩展到 d_ff 维。"),
    }),
    "ffn_gate": ("gate = X W_gateᵀ{b}", {
        "en": ("gate", "A second projection of the same input, to d_ff numbers."),
        "zh": ("门 gate", "同一个输入的第二个投影，也是 d_ff 维。"),
    }),
    "act_relu": ("ReLU(x) = max(0, x)", {
        "en": ("Activation: ReLU", "The non-linearity: negative values become 0."),
        "zh": ("激活函数：ReLU", "非线性：负数变成 0。"),
    }),
    "act_relu2": ("ReLU²(x) = max(0, x)²", {
        "en": ("Activation: ReLU²", "The non-linearity: negative values become 0, positive ones are squared."),
        "zh": ("激活函数：ReLU²", "非线性：负数变成 0，正数取平方。"),
    }),
    "act_gelu": ("GELU(x) = x · Φ(x) = x · ½(1 + erf(x/√2))", {
        "en": ("Activation: GELU", "The non-linearity: each value is weighted by the probability that a standard normal lies below it, so negatives are damped, not cut."),
        "zh": ("激活函数：GELU", "非线性：每个值乘以标准正态分布小于它的概率，负数被压小而不是截断。"),
    }),
    "act_gelu_tanh": ("GELU(x) ≈ ½x(1 + tanh(√(2/π)(x + 0.044715x³)))", {
        "en": ("Activation: GELU (tanh approximation)", "GPT-2's GELU, computed with tanh instead of erf."),
        "zh": ("激活函数：GELU（tanh 近似）", "GPT-2 的 GELU，用 tanh 代替 erf 计算。"),
    }),
    "act_silu": ("silu(gate) = gate · σ(gate)", {
        "en": ("Activation: SiLU of the gate", "SwiGLU's non-linearity is applied to the gate, not to up."),
        "zh": ("激活函数：gate 的 SiLU", "SwiGLU 的非线性作用在 gate 上，而不是 up 上。"),
    }),
    "ffn_gated": ("silu(gate) ⊙ up", {
        "en": ("Gated hidden", "The activated gate multiplies up element by element: SwiGLU's hidden layer."),
        "zh": ("门控隐藏层", "激活后的 gate 与 up 逐元素相乘：SwiGLU 的隐藏层。"),
    }),
    "ffn_down": ("act(up) W_downᵀ{b}", {
        "en": ("Output (second linear layer)", "The second linear layer brings each position back to d_model numbers."),
        "zh": ("输出（第二层线性变换）", "第二层线性变换把每个位置变回 d_model 维。"),
    }),
    "ffn_down_gated": ("(silu(gate) ⊙ up) W_downᵀ{b}", {
        "en": ("Output (down)", "The down projection brings each position back to d_model numbers."),
        "zh": ("输出（down）", "down 投影把每个位置变回 d_model 维。"),
    }),
    "residual_pre": ("x + Sublayer(Norm(x))", {
        "en": ("Residual sum (pre-norm)", "The sublayer read the normalised x; its output is added to x itself, which flows on un-normalised."),
        "zh": ("残差相加（前置归一化）", "子层读取归一化后的 x；它的输出加回 x 本身，x 不经归一化继续向后传。"),
    }),
    "residual_post": ("x + Sublayer(x)", {
        "en": ("Residual sum (Add)", "The sublayer's output is added to its input; the norm comes after the sum (Add & Norm)."),
        "zh": ("残差相加（Add）", "子层的输出加回它的输入；归一化在相加之后（Add & Norm）。"),
    }),
    "weight_head": ("W_vocab", {
        "en": ("Output matrix W_vocab", "One learned row for every vocabulary word; this model's own, not tied to the embedding."),
        "zh": ("输出矩阵 W_vocab", "词表中每个词一行；这个模型有自己的输出矩阵，不与嵌入共享。"),
    }),
    "logits": ("logits = h W_vocabᵀ", {
        "en": ("Logits over the vocabulary", "The final linear layer gives one score per vocabulary word at every position."),
        "zh": ("词表上的得分（logits）", "最后的线性层在每个位置为词表中的每个词打一个分。"),
    }),
    "logits_tied": ("logits = h Eᵀ (E: the embedding matrix)", {
        "en": ("Logits over the vocabulary", "The output layer reuses the embedding matrix E (a tied head): a score is the dot product with each word's embedding."),
        "zh": ("词表上的得分（logits）", "输出层复用嵌入矩阵 E（权重共享）：得分就是与每个词嵌入的点积。"),
    }),
    "next_logits": ("logits[T − 1]", {
        "en": ("Logits at the last position", "The last position's scores predict the token after the text."),
        "zh": ("最后一个位置的得分", "最后一个位置的得分预测文本之后的下一个词元。"),
    }),
    "next_probs": ("softmax(logits[T − 1])", {
        "en": ("Probabilities of the next token", "Softmax turns the scores into probabilities that sum to 1."),
        "zh": ("下一个词元的概率", "softmax 把得分变成总和为 1 的概率。"),
    }),
    "prediction": ("argmax", {
        "en": ("Predicted token", "The most probable token is the prediction (the table lists the top five)."),
        "zh": ("预测的词元", "概率最大的词元就是预测（表中列出前五个）。"),
    }),
    "decode": ("repeat until <end>", {
        "en": ("Greedy decoding until <end>", "Each predicted word is appended to the decoder input and the decoder runs again."),
        "zh": ("贪心解码直到 <end>", "每次把预测的词接到解码器输入后面，再运行一次解码器。"),
    }),
}

# Where a step sits, for its title: stack, layer, sublayer and head.
PLACES = {
    "en": {"encoder": "Encoder layer {layer}", "decoder": "Layer {layer}", "decoder_s2s": "Decoder layer {layer}",
           "self": "self-attention", "cross": "cross-attention", "ffn": "feed-forward", "head": "head {head}",
           "group": "K/V head {group}, shared by query heads {first}–{last}",
           "final": "Final norm", "encoder_final": "Encoder's final norm", "decoder_final": "Decoder's final norm"},
    "zh": {"encoder": "编码器第 {layer} 层", "decoder": "第 {layer} 层", "decoder_s2s": "解码器第 {layer} 层",
           "self": "自注意力", "cross": "交叉注意力", "ffn": "前馈网络", "head": "第 {head} 头",
           "group": "第 {group} 个 K/V 头，由查询头 {first}–{last} 共用",
           "final": "最终归一化", "encoder_final": "编码器最终归一化", "decoder_final": "解码器最终归一化"},
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
    "generation": {"en": "Generation, token by token", "zh": "逐个词元生成"},
    "gen_step": {"en": "Step {n}", "zh": "第 {n} 步"},
    "gen_context": {"en": "the newest query attends to {n} keys", "zh": "最新的查询关注 {n} 个键"},
    "gen_cache": {"en": "KV cache: {layers} layers, K and V each {shape}",
                  "zh": "KV 缓存：{layers} 层，K 和 V 各为 {shape}"},
    "gen_no_cache": {"en": "no KV cache: the text outgrew the block, so the last {n} tokens are recomputed",
                     "zh": "没有 KV 缓存：文本超过了最大长度，所以重新计算最后 {n} 个词元"},
    "gen_attention": {"en": "attention of the newest query (rows: layer.head; the last {n} keys)",
                      "zh": "最新查询的注意力（行：层.头；最后 {n} 个键）"},
    "gen_choice": {"en": "choosing: logits ÷ temperature {t} → top-k {k} keeps {nk} of {v} → top-p {p} keeps {np} → "
                         "renormalised → drawn with seed {seed}",
                   "zh": "选择：logits ÷ 温度 {t} → top-k {k} 保留 {v} 个中的 {nk} 个 → top-p {p} 保留 {np} 个 → "
                         "重新归一化 → 用种子 {seed} 抽样"},
    "gen_greedy": {"en": "choosing: greedy (the largest logit)", "zh": "选择：贪心（logit 最大的词元）"},
    "gen_picked": {"en": "picked", "zh": "选中"},
    "gen_cross": {"en": "cross-attention over the source (rows: layer.head)", "zh": "对源句的交叉注意力（行：层.头）"},
    "gen_target": {"en": "target so far", "zh": "目前的目标句"},
    "beam_step": {"en": "Step {n}: the best {k} candidates of {beam} places", "zh": "第 {n} 步：{beam} 个位置的前 {k} 个候选"},
    "beam_columns": {"en": ("hypothesis", "score", "score / length penalty", "status"),
                     "zh": ("假设", "得分", "得分 / 长度惩罚", "状态")},
    "beam_status": {"en": {"kept": "kept", "finished": "finished", "pruned": "pruned"},
                    "zh": {"kept": "保留", "finished": "完成", "pruned": "剪枝"}},
    "weights_hidden": {"en": "Weight matrices are not printed for a model this size; --json writes them.",
                       "zh": "这个大小的模型不打印权重矩阵；--json 会写出它们。"},
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


def place(step, lang: str, seq2seq: bool) -> str:
    """Where a step sits: "Decoder layer 1, cross-attention, head 2" (empty outside the layers)."""
    words = PLACES[lang]
    sep = "，" if lang == "zh" else ", "
    parts = []
    if step.sublayer == "final":
        return words[f"{step.section}_final"] if seq2seq else words["final"]
    if step.layer is not None:
        stack = "decoder_s2s" if seq2seq and step.section == "decoder" else step.section
        parts.append(words[stack].format(layer=step.layer + 1))
    if step.layer is not None and step.sublayer in ("self", "cross", "ffn"):
        parts.append(words[step.sublayer])
    if step.head is not None:
        parts.append(words["head"].format(head=step.head + 1))
    if step.group is not None:  # grouped-query attention: a K/V head and the query heads that read it
        size = step.fill["group_size"]
        parts.append(words["group"].format(group=step.group + 1, first=step.group * size + 1,
                                           last=(step.group + 1) * size))
    return sep.join(parts)


def narrate(step, lang: str, seq2seq: bool = False) -> tuple[str, str, str]:
    """(title, explanation, formula) of a walkthrough Step in `lang`."""
    check_lang(lang)
    formula, texts = NARRATION[step.kind]
    name, explanation = texts[lang]
    where = place(step, lang, seq2seq)
    title = f"{where}: {name}" if where else name
    fill = {"b": " + b" if step.op == "linear" and len(step.inputs) == 3 else "",
            "src": "M" if step.sublayer == "cross" else "X", **step.params, **step.fill}
    return title, explanation, formula.format(**fill)


def label(key: str, lang: str, **values):
    """A renderer's word in `lang`, with `values` filled in (a few labels are tuples or tables)."""
    text = LABELS[key][lang]
    return text.format(**values) if isinstance(text, str) else text
