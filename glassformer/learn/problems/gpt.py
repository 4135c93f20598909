"""Chapter 6's exercises: GPT-2's parameters and KV cache (glassformer.explain.shapes, the model on
the meta device) and one sampling probability (glassformer.explain.generation.stages)."""

from __future__ import annotations

import numpy as np

from glassformer.learn.problems import Exercise

# The sampling example of the chapter: six candidates' logits, cooled to temperature 0.5.
LOGITS = (3.0, 2.0, 1.0, 0.5, 0.0, -1.0)
TEMPERATURE = 0.5
CACHED_TOKENS = 100


def _block_params() -> int:
    """One GPT-2 block's parameters: the rows of `explain shapes` under blocks.*, one layer's copy."""
    from glassformer.explain.shapes import shapes

    return sum(r.numel for r in shapes("gpt2") if r.kind == "weight" and r.name.startswith("blocks.*."))


def _kv_cache_numbers() -> int:
    """Every number GPT-2's KV cache holds after CACHED_TOKENS tokens (batch 1, all layers, keys
    and values): the 124M model built on the meta device (shapes only, nothing allocated) and
    run over that many tokens with a cache."""
    import torch

    from glassformer.model.config import PRESETS
    from glassformer.model.gpt import GPT

    with torch.device("meta"):
        model = GPT(PRESETS["gpt2"].model)
        cache = model.new_cache()
        x, rotary = model.embed(torch.zeros(1, CACHED_TOKENS, dtype=torch.long), 0, None, cache)
        for i, block in enumerate(model.blocks):
            x = block(x, is_causal=True, cache=cache.self_attn[i], rotary=rotary)
    return sum(t.numel() for layer in cache.self_attn for t in layer.keys_values())


def _temperature_prob() -> float:
    import torch

    from glassformer.explain.generation import stages

    labels = [str(i) for i in range(len(LOGITS))]
    data, _ = stages(torch.tensor(LOGITS), TEMPERATURE, None, None, labels)
    return float(np.float64(data["candidates"][0]["temperature"]))


EXERCISES = {
    "gpt.block_params": Exercise(
        {"en": "How many parameters does one GPT-2 (124M) block have? Width C = 768, feed-forward 4C = 3072, "
               "biases on every linear layer, two LayerNorms.",
         "zh": "GPT-2（124M）的一个块有多少个参数？宽度 C = 768，前馈网络 4C = 3072，每个线性层都有偏置，"
               "还有两个层归一化。"},
        {"en": ["Attention: W_Q, W_K, W_V, W_O are each C × C with a bias of C.",
                "Add the feed-forward's C × 4C and 4C × C with biases 4C and C, and 2 × 2C for the two "
                "LayerNorms (a scale and a shift each)."],
         "zh": ["注意力：W_Q、W_K、W_V、W_O 都是 C × C，各有 C 个偏置。",
                "再加上前馈网络的 C × 4C 和 4C × C（偏置 4C 和 C），以及两个层归一化的 2 × 2C（各有缩放和平移）。"]},
        _block_params, 0.5),  # an integer: counted exactly
    "gpt.kv_cache_numbers": Exercise(
        {"en": f"GPT-2 (124M) has read {CACHED_TOKENS} tokens (batch 1). How many numbers does its KV cache "
               "hold, keys and values of all 12 layers together?",
         "zh": f"GPT-2（124M）已经读了 {CACHED_TOKENS} 个词元（批大小 1）。它的 KV 缓存一共存了多少个数"
               "（12 层的键和值全部加起来）？"},
        {"en": ["One layer's keys have the shape (1, 12 heads, tokens, 64); its values the same.",
                "2 (keys and values) × 12 layers × 12 heads × 100 tokens × 64."],
         "zh": ["一层的键的形状是 (1, 12 个头, 词元数, 64)，值也一样。",
                "2（键和值）× 12 层 × 12 个头 × 100 个词元 × 64。"]},
        _kv_cache_numbers, 0.5),  # an integer: counted exactly
    "gpt.temperature_prob": Exercise(
        {"en": f"Six candidates have the logits {LOGITS}. At temperature {TEMPERATURE}, what is the first "
               "one's probability? Three decimals.",
         "zh": f"六个候选词元的 logits 是 {LOGITS}。温度为 {TEMPERATURE} 时，第一个的概率是多少？保留三位小数。"},
        {"en": [f"Divide every logit by {TEMPERATURE}, then take the softmax.",
                "e^6 / (e^6 + e^4 + e^2 + e^1 + e^0 + e^−2)."],
         "zh": [f"先把每个 logit 除以 {TEMPERATURE}，再做 softmax。",
                "e^6 / (e^6 + e^4 + e^2 + e^1 + e^0 + e^−2)。"]},
        _temperature_prob, 0.0005),  # three decimals: within half a unit of the third
}
