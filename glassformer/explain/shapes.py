"""Every tensor's shape through a preset's model, and every weight's shape and parameter count,
computed from the config alone: no weights are built.

    rows = shapes("gpt2")            # Row data: the data flow, then the weights
    print_shapes("gpt2", "zh")       # the same as rich tables

For GPT-2 the data flow reads, as the articles list it: ids (B, t) -> token embedding
(B, t, 768) + positions (t, 768) -> per block Q, K, V (B, t, 768) -> heads (B, 12, t, 64)
-> scores (B, 12, t, t) -> heads merged (B, t, 768) -> MLP hidden (B, t, 3072) -> (B, t, 768),
12 times -> final norm -> logits (B, t, 50257) -> the last position's (B, 50257).

Symbols: B batch, t (target) length, s source length, V a vocabulary the preset leaves to
its tokenizer (vocab_size 0). Each row names the module of glassformer's own model whose
output (or input, ":inN") has that shape, so tests/test_shapes.py can hold the table to a
real model's tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

from glassformer.explain.narration import check_lang
from glassformer.model.config import PRESETS, GPTConfig, Seq2SeqConfig

# key: (English, Chinese) descriptions of a row
WHAT = {
    "ids": ("token ids", "词元编号"),
    "tok_emb": ("token embedding: one row of the table per id", "词元嵌入:每个编号取表中的一行"),
    "tok_emb_scaled": ("token embedding, times √C", "词元嵌入,再乘以 √C"),
    "seg_emb": ("segment embedding, added", "段嵌入,相加"),
    "bigram_emb": ("pair embedding: the row of (previous token, token), added",
                   "词对嵌入:取 (前一个词元, 词元) 那一行,相加"),
    "pos_learned": ("learned position embedding, added (broadcast over B)", "学习的位置嵌入,相加(在 B 上广播)"),
    "pos_sinusoidal": ("sinusoidal position encoding, added (broadcast over B)", "正弦位置编码,相加(在 B 上广播)"),
    "pos_rope": ("RoPE angles (cos and sin) that rotate Q and K", "RoPE 的角度(cos 和 sin),用来旋转 Q 和 K"),
    "x": ("the residual stream entering the first block", "进入第一个块的残差流"),
    "norm_pre": ("norm before the sublayer (pre-LN)", "子层之前的归一化(pre-LN)"),
    "norm_post": ("norm after the residual add (post-LN)", "残差相加之后的归一化(post-LN)"),
    "qkv": ("Q, K, V = x·W_Q, x·W_K, x·W_V", "Q、K、V = x·W_Q、x·W_K、x·W_V"),
    "heads": ("Q, K, V split into heads", "Q、K、V 拆成多个头"),
    "scores": ("attention scores Q·Kᵀ/√d, causal", "注意力分数 Q·Kᵀ/√d,因果遮挡"),
    "scores_encoder": ("attention scores Q·Kᵀ/√d, every position sees every other",
                       "注意力分数 Q·Kᵀ/√d,每个位置看见所有位置"),
    "attended": ("softmax(scores)·V, per head", "softmax(分数)·V,每个头"),
    "merged": ("heads merged (concatenated)", "多个头合并(拼接)"),
    "o_proj": ("output projection W_O", "输出投影 W_O"),
    "residual": ("residual add: x + sublayer(x)", "残差相加:x + 子层(x)"),
    "cross_q": ("cross-attention: Q from the decoder", "交叉注意力:Q 来自解码器"),
    "cross_kv": ("cross-attention: K, V from the encoder's memory", "交叉注意力:K、V 来自编码器的记忆"),
    "cross_heads_q": ("cross-attention Q split into heads", "交叉注意力的 Q 拆成多个头"),
    "cross_heads_kv": ("cross-attention K, V split into heads", "交叉注意力的 K、V 拆成多个头"),
    "cross_scores": ("cross-attention scores: each target position over each source position",
                     "交叉注意力分数:每个目标位置对每个源位置"),
    "ffn_up": ("MLP hidden: x·W_up", "MLP 隐藏层:x·W_up"),
    "ffn_gate": ("MLP gate: x·W_gate (SwiGLU)", "MLP 门:x·W_gate(SwiGLU)"),
    "ffn_act": ("activation", "激活函数"),
    "ffn_gated": ("silu(gate) ⊙ up", "silu(门) ⊙ up"),
    "ffn_down": ("MLP back to the model width: W_down", "MLP 回到模型宽度:W_down"),
    "block_out": ("the block's output", "块的输出"),
    "final_norm": ("final norm", "最后的归一化"),
    "embed_norm": ("norm over the embeddings, before the first block", "在第一个块之前对嵌入做归一化"),
    "qk_norm": ("q and k normed per head (RMSNorm over each head's channels)",
                "q 和 k 按头归一化(对每个头的通道做 RMSNorm)"),
    "memory": ("the encoder's memory, read by every decoder block", "编码器的记忆,每个解码块都读取它"),
    "logits": ("logits: a score for every token of the vocabulary", "logits:词表中每个词元一个分数"),
    "last": ("the last position's logits: the next token's scores", "最后一个位置的 logits:下一个词元的分数"),
    # weights
    "w_tok_emb": ("token embedding table", "词元嵌入表"),
    "w_src_emb": ("source token embedding table", "源语言词元嵌入表"),
    "w_tgt_emb": ("target token embedding table", "目标语言词元嵌入表"),
    "w_pos_emb": ("position embedding table", "位置嵌入表"),
    "w_seg_emb": ("segment embedding table", "段嵌入表"),
    "w_bigram_emb": ("pair embedding table: a row per (previous token or none, token)",
                     "词对嵌入表:每个 (前一个词元或无, 词元) 一行"),
    "w_norm": ("norm scale", "归一化的缩放"),
    "w_norm_bias": ("norm shift", "归一化的平移"),
    "w_qk_norm": ("per-head norm scale of q or k (one per channel, shared by the heads)",
                  "q 或 k 每个头的归一化缩放(每个通道一个,各头共用)"),
    "w_proj": ("matrix", "矩阵"),
    "w_bias": ("bias", "偏置"),
    "w_lm_head": ("output projection to the vocabulary", "到词表的输出投影"),
    "w_lm_head_tied": ("output projection: the token embedding table itself (tied, counted once)",
                       "输出投影:就是词元嵌入表(共享,只计一次)"),
    "w_cls_head": ("classification head", "分类头"),
}

TEXT = {
    "en": {"flow": "Data flow", "weights": "Weights", "step": "step", "shape": "shape", "what": "what",
           "name": "parameter", "times": "×", "params": "parameters", "total": "total",
           "per_layer": "per layer", "symbols": "B batch, t length, s source length",
           "vocab_symbolic": "vocabulary size comes from the tokenizer"},
    "zh": {"flow": "数据流", "weights": "权重", "step": "步骤", "shape": "形状", "what": "说明",
           "name": "参数", "times": "×", "params": "参数量", "total": "合计",
           "per_layer": "每层", "symbols": "B 批大小,t 长度,s 源序列长度",
           "vocab_symbolic": "词表大小由分词器决定"},
}


@dataclass(frozen=True)
class Row:
    """One tensor: a step of the data flow (kind "activation") or a parameter (kind "weight").

    name: the step, or the parameter's name in the model ("*" for each layer index).
    shape: ints and symbols ("B", "t", "s", "V", "V_src", "V_tgt").
    what: the English description; `key` finds it and its Chinese one in WHAT.
    repeat: how many layers hold one of these (the "*" runs over range(repeat)).
    modules: where glassformer's model produces it: "path" (output), "path:inN" (N-th input),
        "path#K" (the K-th call of a module used more than once).
    tied_to: a weight that is another parameter itself, counted there.
    """

    kind: str
    name: str
    shape: tuple[int | str, ...]
    key: str
    repeat: int = 1
    modules: tuple[str, ...] = ()
    tied_to: str | None = None
    label: str = ""  # which one, e.g. "W_Q", after the description

    @property
    def what(self) -> str:
        return self.describe("en")

    def describe(self, lang: str) -> str:
        text = WHAT[self.key][("en", "zh").index(lang)]
        return f"{text} {self.label}" if self.label else text

    @property
    def numel(self) -> int | None:
        """Elements of one copy; None while the shape holds a symbol."""
        n = 1
        for dim in self.shape:
            if isinstance(dim, str):
                return None
            n *= dim
        return n


def _vocab(size: int, symbol: str) -> int | str:
    return size if size else symbol  # 0 in a preset: the tokenizer decides


# -- weights -----------------------------------------------------------------------------------------


def _norm_weights(prefix: str, c, repeat: int = 1) -> list[Row]:
    rows = [Row("weight", f"{prefix}.weight", (c.d_model,), "w_norm", repeat)]
    if c.norm == "layernorm" and c.bias:  # RMSNorm has no shift
        rows.append(Row("weight", f"{prefix}.bias", (c.d_model,), "w_norm_bias", repeat))
    return rows


def _linear(prefix: str, n_in: int, n_out: int, bias: bool, repeat: int, label: str) -> list[Row]:
    rows = [Row("weight", f"{prefix}.weight", (n_out, n_in), "w_proj", repeat, label=label)]  # nn.Linear: (out, in)
    if bias:
        rows.append(Row("weight", f"{prefix}.bias", (n_out,), "w_bias", repeat, label=label))
    return rows


def _block_weights(prefix: str, c, n: int, cross: bool = False) -> list[Row]:
    """One Block's parameters, in the order the model registers them."""
    C, hd, ff = c.d_model, c.n_head * c.head_dim, c.ff_dim
    widths = {"q": hd, "k": c.kv_heads * c.head_dim, "v": c.kv_heads * c.head_dim}  # K, V: h_kv heads (GQA)
    qkv_bias = c.bias if c.qkv_bias is None else c.qkv_bias
    rows = []
    for attn in ("self_attn", "cross_attn") if cross else ("self_attn",):
        for proj in ("q", "k", "v"):
            rows += _linear(f"{prefix}.*.{attn}.{proj}_proj", C, widths[proj], qkv_bias, n, f"W_{proj.upper()}")
        rows += _linear(f"{prefix}.*.{attn}.o_proj", hd, C, c.bias, n, "W_O")
        if c.qk_norm:
            rows += [Row("weight", f"{prefix}.*.{attn}.{x}_norm.weight", (c.head_dim,), "w_qk_norm", n)
                     for x in ("q", "k")]
        rows += _norm_weights(f"{prefix}.*.{'attn' if attn == 'self_attn' else 'cross'}_norm", c, n)
    rows += _linear(f"{prefix}.*.ffn.up", C, ff, c.bias, n, "W_up")
    if c.activation == "swiglu":
        rows += _linear(f"{prefix}.*.ffn.gate", C, ff, c.bias, n, "W_gate")
    rows += _linear(f"{prefix}.*.ffn.down", ff, C, c.bias, n, "W_down")
    rows += _norm_weights(f"{prefix}.*.ffn_norm", c, n)
    return rows


def _gpt_weights(c: GPTConfig) -> list[Row]:
    V = _vocab(c.vocab_size, "V")
    rows = [Row("weight", "tok_emb.weight", (V, c.n_embd), "w_tok_emb")]
    if c.position == "learned":
        rows.append(Row("weight", "pos_emb.weight", (c.block_size, c.n_embd), "w_pos_emb"))
    if c.n_segments:
        rows.append(Row("weight", "seg_emb.weight", (c.n_segments, c.n_embd), "w_seg_emb"))
    if c.bigram:
        pairs = c.bigram_rows if c.vocab_size else "V·(V+1)"
        rows.append(Row("weight", "bigram_emb.weight", (pairs, c.n_embd), "w_bigram_emb"))
    if c.embed_norm:
        rows += _norm_weights("embed_norm", c)
    rows += _block_weights("blocks", c, c.n_layer)
    if c.norm_position == "pre":
        rows += _norm_weights("final_norm", c)
    tied = "tok_emb.weight" if c.tie_weights else None
    rows.append(Row("weight", "lm_head.weight", (V, c.n_embd), "w_lm_head_tied" if tied else "w_lm_head",
                    tied_to=tied))
    if c.n_classes:
        rows += [Row("weight", "cls_head.weight", (c.n_classes, c.n_embd), "w_cls_head"),
                 Row("weight", "cls_head.bias", (c.n_classes,), "w_bias")]
    return rows


def _seq2seq_weights(c: Seq2SeqConfig) -> list[Row]:
    V_src, V_tgt = _vocab(c.src_vocab_size, "V_src"), _vocab(c.tgt_vocab_size, "V_tgt")
    if c.shared_vocab:
        V_src = V_tgt = _vocab(c.src_vocab_size, "V")
    rows = [Row("weight", "src_emb.weight", (V_src, c.d_model), "w_src_emb")]
    if not c.shared_vocab:
        rows.append(Row("weight", "tgt_emb.weight", (V_tgt, c.d_model), "w_tgt_emb"))
    if c.position == "learned":
        rows.append(Row("weight", "pos_emb.weight", (c.block_size, c.d_model), "w_pos_emb"))
    rows += _block_weights("encoder", c, c.n_encoder_layers)
    rows += _block_weights("decoder", c, c.n_decoder_layers, cross=True)
    if c.use_final_norm:
        rows += _norm_weights("encoder_norm", c) + _norm_weights("decoder_norm", c)
    tied = ("src_emb.weight" if c.shared_vocab else "tgt_emb.weight") if c.tie_output else None
    rows.append(Row("weight", "lm_head.weight", (V_tgt, c.d_model), "w_lm_head_tied" if tied else "w_lm_head",
                    tied_to=tied))
    return rows


# -- data flow ---------------------------------------------------------------------------------------


def _embedding_flow(c, emb: str, ids: str, t: str, call: str, scaled: bool) -> list[Row]:
    """ids -> token embedding (+ positions): `emb` the embedding module, `call` "#K" where it is shared."""
    C, d = c.d_model, c.head_dim
    rows = [Row("activation", ids, ("B", t), "ids", modules=(f"{emb}{call}:in0",)),
            Row("activation", f"{emb}({ids})", ("B", t, C), "tok_emb_scaled" if scaled else "tok_emb",
                modules=(f"{emb}{call}",))]
    pos_call = ("#0" if ids == "src" else "#1") if isinstance(c, Seq2SeqConfig) else ""  # one table, two calls
    if c.position in ("learned", "sinusoidal"):
        rows.append(Row("activation", "positions", (t, C), f"pos_{c.position}", modules=(f"pos_emb{pos_call}",)))
    elif c.position == "rope":
        rows.append(Row("activation", "cos, sin", (t, d // 2), "pos_rope", modules=(f"rotary{pos_call}",)))
    return rows


def _block_flow(prefix: str, c, n: int, t: str, causal: bool, cross_s: str | None = None) -> list[Row]:
    """One block's data flow at sequence length t (cross-attention over a memory of length s)."""
    C, h, d, hd, ff = c.d_model, c.n_head, c.head_dim, c.n_head * c.head_dim, c.ff_dim
    b = f"{prefix}.*"
    pre = c.norm_position == "pre"

    def attention(attn: str, norm: str, after: str, q_len: str, kv_len: str, keys: dict) -> list[Row]:
        """`after`: the norm that reads x + attention (pre-LN) next."""
        a = f"{b}.{attn}"
        rows = [Row("activation", norm, ("B", t, C), "norm_pre", n, (f"{b}.{norm}",))] if pre else []
        if kv_len == q_len:
            rows.append(Row("activation", "Q, K, V", ("B", t, hd), keys["qkv"], n,
                            (f"{a}.q_proj", f"{a}.k_proj", f"{a}.v_proj")))
            rows.append(Row("activation", "Q, K, V heads", ("B", h, t, d), keys["heads"], n,
                            (f"{a}.core#0:in1", f"{a}.core#1:in1", f"{a}.core#2:in1")))
            if c.qk_norm:  # k has h_kv heads before they are shared: the row shows q's
                normed = (f"{a}.q_norm", f"{a}.k_norm") if c.kv_heads == h else (f"{a}.q_norm",)
                rows.append(Row("activation", "q, k normed", ("B", h, t, d), "qk_norm", n, normed))
        else:
            rows += [Row("activation", "Q", ("B", q_len, hd), "cross_q", n, (f"{a}.q_proj",)),
                     Row("activation", "K, V", ("B", kv_len, hd), "cross_kv", n, (f"{a}.k_proj", f"{a}.v_proj")),
                     Row("activation", "Q heads", ("B", h, q_len, d), "cross_heads_q", n, (f"{a}.core#0:in1",)),
                     Row("activation", "K, V heads", ("B", h, kv_len, d), "cross_heads_kv", n,
                         (f"{a}.core#1:in1", f"{a}.core#2:in1"))]
        rows += [
            Row("activation", "scores", ("B", h, q_len, kv_len), keys["scores"], n, (f"{a}.core#3:in1",)),
            Row("activation", "attended", ("B", h, q_len, d), "attended", n, (f"{a}.core#-1:in1",)),
            Row("activation", "merged", ("B", q_len, hd), "merged", n, (f"{a}.o_proj:in0",)),
            Row("activation", "W_O", ("B", q_len, C), "o_proj", n, (f"{a}.o_proj",)),
            Row("activation", "x + attn", ("B", t, C), "residual" if pre else "norm_post", n,
                (f"{b}.{after}:in0",) if pre else (f"{b}.{norm}",)),
        ]
        return rows

    self_keys = {"qkv": "qkv", "heads": "heads", "scores": "scores" if causal else "scores_encoder"}
    rows = attention("self_attn", "attn_norm", "cross_norm" if cross_s is not None else "ffn_norm", t, t, self_keys)
    if cross_s is not None:
        rows += attention("cross_attn", "cross_norm", "ffn_norm", t, cross_s, {"scores": "cross_scores"})
    if pre:
        rows.append(Row("activation", "ffn_norm", ("B", t, C), "norm_pre", n, (f"{b}.ffn_norm",)))
    if c.activation == "swiglu":
        rows += [Row("activation", "gate", ("B", t, ff), "ffn_gate", n, (f"{b}.ffn.gate",)),
                 Row("activation", "up", ("B", t, ff), "ffn_up", n, (f"{b}.ffn.up",)),
                 Row("activation", "silu(gate)·up", ("B", t, ff), "ffn_gated", n, (f"{b}.ffn.down:in0",))]
    else:
        rows += [Row("activation", "up", ("B", t, ff), "ffn_up", n, (f"{b}.ffn.up",)),
                 Row("activation", c.activation, ("B", t, ff), "ffn_act", n, (f"{b}.ffn.act",))]
    rows += [Row("activation", "down", ("B", t, C), "ffn_down", n, (f"{b}.ffn.down",)),
             Row("activation", f"{prefix}[*]", ("B", t, C), "block_out", n, (b,))]
    return rows


def _gpt_flow(c: GPTConfig) -> list[Row]:
    V = _vocab(c.vocab_size, "V")
    rows = _embedding_flow(c, "tok_emb", "ids", "t", "", scaled=False)
    if c.n_segments:
        rows.append(Row("activation", "segments", ("B", "t", c.n_embd), "seg_emb", modules=("seg_emb",)))
    if c.bigram:
        rows.append(Row("activation", "pairs", ("B", "t", c.n_embd), "bigram_emb", modules=("bigram_emb",)))
    if c.embed_norm:
        rows.append(Row("activation", "embed_norm", ("B", "t", c.n_embd), "embed_norm", modules=("embed_norm",)))
    rows.append(Row("activation", "x", ("B", "t", c.n_embd), "x", modules=("blocks.0:in0",)))
    rows += _block_flow("blocks", c, c.n_layer, "t", causal=True)
    if c.norm_position == "pre":
        rows.append(Row("activation", "final_norm", ("B", "t", c.n_embd), "final_norm", modules=("final_norm",)))
    rows += [Row("activation", "logits", ("B", "t", V), "logits", modules=("lm_head",)),
             Row("activation", "logits[:, -1]", ("B", V), "last")]
    return rows


def _seq2seq_flow(c: Seq2SeqConfig) -> list[Row]:
    V_tgt = _vocab(c.tgt_vocab_size, "V" if c.shared_vocab else "V_tgt")
    tgt_emb, tgt_call = ("src_emb", "#1") if c.shared_vocab else ("tgt_emb", "")
    src_call = "#0" if c.shared_vocab else ""
    n_enc, n_dec = c.n_encoder_layers, c.n_decoder_layers
    memory = "encoder_norm" if c.use_final_norm else f"encoder.{n_enc - 1}"
    rows = _embedding_flow(c, "src_emb", "src", "s", src_call, scaled=c.scale_embeddings)
    rows += _block_flow("encoder", c, n_enc, "s", causal=False)
    rows.append(Row("activation", "memory", ("B", "s", c.d_model), "memory", modules=(memory,)))
    rows += _embedding_flow(c, tgt_emb, "tgt", "t", tgt_call, scaled=c.scale_embeddings)
    rows += _block_flow("decoder", c, n_dec, "t", causal=True, cross_s="s")
    if c.use_final_norm:
        rows.append(Row("activation", "decoder_norm", ("B", "t", c.d_model), "final_norm",
                        modules=("decoder_norm",)))
    rows += [Row("activation", "logits", ("B", "t", V_tgt), "logits", modules=("lm_head",)),
             Row("activation", "logits[:, -1]", ("B", V_tgt), "last")]
    return rows


# -- public API --------------------------------------------------------------------------------------


def config_shapes(config: GPTConfig | Seq2SeqConfig) -> list[Row]:
    """The data flow's rows, then the weights' rows, of a model built from `config` (not built here)."""
    if isinstance(config, GPTConfig):
        return _gpt_flow(config) + _gpt_weights(config)
    return _seq2seq_flow(config) + _seq2seq_weights(config)


def shapes(preset: str) -> list[Row]:
    """Every tensor's shape for the model of PRESETS[preset], from its config alone.

    Args:
        preset: a name in glassformer.model.config.PRESETS.
    Returns:
        Rows of kind "activation" (the data flow, in order) and "weight" (the parameters).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return config_shapes(PRESETS[preset].model)


def parameter_total(rows: list[Row]) -> tuple[int, dict[str, int]]:
    """All parameters, tied ones once: (the count without symbolic dimensions, {symbol: its coefficient}).

    A vocabulary left to the tokenizer makes a table (V, C) count C·V: total = count + Σ coefficient·symbol.
    """
    count, per_symbol = 0, {}
    for row in rows:
        if row.kind != "weight" or row.tied_to:
            continue
        symbols = [d for d in row.shape if isinstance(d, str)]
        known = 1
        for dim in row.shape:
            known *= dim if isinstance(dim, int) else 1
        if symbols:
            per_symbol[symbols[0]] = per_symbol.get(symbols[0], 0) + known * row.repeat  # one symbol per table
        else:
            count += known * row.repeat
    return count, per_symbol


def _shape_text(shape: tuple) -> str:
    return str(tuple(shape)).replace("'", "")  # (768,) for one dimension, as Python writes it


def _total_text(count: int, per_symbol: dict[str, int]) -> str:
    return " + ".join([f"{count:,}"] + [f"{k:,}·{s}" for s, k in per_symbol.items()])


def print_shapes(preset: str, lang: str = "en", console=None) -> None:
    """Print `shapes(preset)` as two rich tables, the data flow and the weights, in `lang` ("en" or "zh")."""
    from rich.console import Console
    from rich.table import Table

    check_lang(lang)
    rows = shapes(preset)
    t = TEXT[lang]
    console = console or Console()
    config = PRESETS[preset].model
    layers = (f"n_layer {config.n_layer}" if isinstance(config, GPTConfig)
              else f"n_encoder_layers {config.n_encoder_layers}, n_decoder_layers {config.n_decoder_layers}")
    console.rule(f"[bold]{preset}")
    console.print(f"d_model {config.d_model}, n_head {config.n_head}, d_head {config.head_dim}, d_ff {config.ff_dim}, "
                  f"{layers}; {t['symbols']}", markup=False, highlight=False)
    if any("V" in str(d) for r in rows for d in r.shape):
        console.print(f"V: {t['vocab_symbolic']}", markup=False, highlight=False)

    flow = Table(title=t["flow"], header_style="bold")
    for col in (t["step"], t["shape"]):
        flow.add_column(col, no_wrap=True)
    flow.add_column(t["times"])
    flow.add_column(t["what"])
    for r in rows:
        if r.kind == "activation":
            flow.add_row(r.name, _shape_text(r.shape), str(r.repeat) if r.repeat > 1 else "", r.describe(lang))
    console.print(flow)

    weights = Table(title=t["weights"], header_style="bold")
    weights.add_column(t["name"], overflow="fold")
    weights.add_column(t["shape"], no_wrap=True)
    weights.add_column(t["times"])
    weights.add_column(t["params"], justify="right", no_wrap=True)
    weights.add_column(t["what"])
    for r in rows:
        if r.kind != "weight":
            continue
        n = r.numel
        count = "0" if r.tied_to else f"{n * r.repeat:,}" if n is not None else "·".join(
            str(d) for d in r.shape) + (f"·{r.repeat}" if r.repeat > 1 else "")
        weights.add_row(r.name, _shape_text(r.shape), str(r.repeat) if r.repeat > 1 else "", count, r.describe(lang))
    weights.add_row(t["total"], "", "", _total_text(*parameter_total(rows)), "")
    console.print(weights)
