"""Typed model configurations, the table of named presets, and checked `key=value` overrides.

A config is all that is needed to rebuild a model: checkpoints store `asdict(config)`
and `config_from_dict` turns it back into the dataclass.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field

from glassformer.base.device import memory_bytes
from glassformer.model import layers

# Option values shared by both models (checked in __post_init__); norms and activations are
# the ones glassformer.model.layers builds.
NORMS = layers.NORMS
NORM_POSITIONS = ("pre", "post")  # pre-LN (GPT-2) or post-LN "Add & Norm" (2017 paper)
ACTIVATIONS = tuple(layers.ACTIVATIONS)
POSITIONS = ("learned", "sinusoidal", "rope", "none")
ROPE_SCALINGS = ("none", "llama3")
INITS = ("gpt2", "xavier")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


# Size limits, checked before anything is allocated: generous enough for GPT-2 and Llama-sized
# models (Llama 3: vocabulary 128256, width 16384, 126 layers, 131072 positions), small enough
# that a typo such as a vocab_size of 3e7 is refused instead of allocating gigabytes.
LIMITS = {
    "vocab_size": (0, 1_000_000), "src_vocab_size": (0, 1_000_000), "tgt_vocab_size": (0, 1_000_000),
    "block_size": (1, 1_048_576), "n_layer": (1, 1024), "n_encoder_layers": (1, 1024),
    "n_decoder_layers": (1, 1024), "n_head": (1, 4096), "n_embd": (1, 65536), "d_model": (1, 65536),
    "d_head": (1, 65536), "d_ff": (1, 1_048_576), "n_segments": (0, 1_000_000), "n_classes": (0, 1_000_000),
    "pad_id": (0, 1_000_000), "bos_id": (0, 1_000_000), "eos_id": (0, 1_000_000),
    "n_kv_head": (1, 4096), "rope_original_max_len": (1, 1_048_576),
}
# bigram's table has V (V + 1) rows: at most about a million (a character or byte vocabulary's few
# thousand); a word or BPE vocabulary's pairs would be billions of rows
BIGRAM_MAX_VOCAB = 1024
POSITIVE = ("norm_eps", "rope_theta", "init_std", "rope_factor", "rope_low_freq_factor",
            "rope_high_freq_factor")  # float fields that must be finite and > 0


def _type_name(annotation) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    return " or ".join(names.get(a, str(a)) for a in (typing.get_args(annotation) or (annotation,)))


def _has_type(value, annotation) -> bool:
    """Whether a value (from JSON or --set) fits a field type: int, float, bool, str, or a union of them."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_has_type(value, option) for option in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:  # an integer is a fine float; a bool is not a number here
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def check_fields(cfg, limits: dict | None = None, positive: tuple[str, ...] = ()) -> None:
    """Raises ValueError (one line: key, value, what is allowed) for a field of the wrong type or out of range.

    Args:
        cfg: a config dataclass instance.
        limits: field -> (lowest, highest) allowed for integer fields; None values are skipped.
        positive: float fields that must be finite and greater than 0.
    """
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not _has_type(value, hints[f.name]):
            raise ValueError(f"{f.name} must be {_type_name(hints[f.name])}; got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{f.name} must be a finite number; got {value!r}")
    for name, (low, high) in (limits or {}).items():
        value = getattr(cfg, name, None)
        if value is not None and not low <= value <= high:
            raise ValueError(f"{name} must be between {low} and {high}; got {value!r}")
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{name} must be greater than 0; got {getattr(cfg, name)!r}")


def _check_layer_options(cfg) -> None:
    """Checks the options both configs share: field types and sizes, widths, heads and the named choices."""
    check_fields(cfg, LIMITS, POSITIVE)
    _check_choice("norm", cfg.norm, NORMS)
    _check_choice("norm_position", cfg.norm_position, NORM_POSITIONS)
    _check_choice("activation", cfg.activation, ACTIVATIONS)
    _check_choice("position", cfg.position, POSITIONS)
    _check_choice("init", cfg.init, INITS)
    _check_choice("rope_scaling", cfg.rope_scaling, ROPE_SCALINGS)
    if cfg.n_head % cfg.kv_heads != 0:
        raise ValueError(f"n_head {cfg.n_head} is not a multiple of n_kv_head {cfg.kv_heads}")
    if cfg.rope_scaling == "llama3" and cfg.rope_high_freq_factor <= cfg.rope_low_freq_factor:
        raise ValueError(f"rope_high_freq_factor must be above rope_low_freq_factor; got "
                         f"{cfg.rope_high_freq_factor} and {cfg.rope_low_freq_factor}")
    width = cfg.d_model
    if cfg.n_head < 1 or width < 1:
        raise ValueError(f"n_head and the model width must be positive; got {cfg.n_head} and {width}")
    if cfg.d_head is None and width % cfg.n_head != 0:
        raise ValueError(f"model width {width} is not divisible by n_head {cfg.n_head}; set d_head explicitly")
    if cfg.position == "rope" and cfg.head_dim % 2 != 0:
        raise ValueError(f"rope needs an even head width; got d_head {cfg.head_dim}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1); got {cfg.dropout}")


def check_fits_in_memory(config, bytes_per_parameter: int = 4) -> None:
    """Raises ValueError when the model `config` describes would not fit in this machine's memory,
    before anything is allocated (each size has its own limit, but their product can still be huge)."""
    memory = memory_bytes()
    if memory is None:  # not a POSIX system: nothing to compare with
        return
    needed = config.parameter_estimate() * bytes_per_parameter
    if needed > memory:
        raise ValueError(f"this model has about {config.parameter_estimate():,} parameters, "
                         f"{needed / 2**30:,.1f} GiB at {bytes_per_parameter} bytes each, more than this machine's "
                         f"{memory / 2**30:,.1f} GiB of memory; check the sizes in its config")


class Widths:
    """The widths both configs derive from d_model, n_head, d_head and d_ff, and the attention
    options GPTConfig has as fields (Seq2SeqConfig reads these defaults: plain multi-head
    attention, RoPE unscaled)."""

    n_kv_head: int | None = None
    qkv_bias: bool | None = None
    qk_norm: bool = False
    rope_scaling: str = "none"
    rope_factor: float = 8.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_len: int = 8192

    def attention_parameters(self) -> int:
        """W_Q, W_K, W_V and W_O of one attention sublayer (without biases)."""
        return 2 * self.d_model * (self.n_head + self.kv_heads) * self.head_dim

    @property
    def kv_heads(self) -> int:
        """Key/value heads: n_kv_head, or n_head."""
        return self.n_kv_head or self.n_head

    def feed_forward_parameters(self) -> int:
        """up, down and (SwiGLU) gate of one feed-forward sublayer, counted as three (without biases)."""
        return 3 * self.d_model * self.ff_dim

    @property
    def head_dim(self) -> int:
        """Q/K/V width per head: d_head, or d_model // n_head."""
        return self.d_head or self.d_model // self.n_head

    @property
    def ff_dim(self) -> int:
        """Feed-forward hidden width: d_ff, or 4 * d_model."""
        return self.d_ff or 4 * self.d_model


@dataclass
class GPTConfig(Widths):
    """Decoder-only language model. Names follow nanoGPT where it has one."""

    vocab_size: int = 50304
    block_size: int = 1024  # longest sequence: size of the position table
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    d_head: int | None = None  # Q/K/V width per head; None -> n_embd // n_head
    d_ff: int | None = None  # feed-forward hidden width; None -> 4 * n_embd
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and norm layers
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    norm_position: str = "pre"
    activation: str = "gelu_tanh"
    position: str = "learned"
    rope_theta: float = 10000.0
    tie_weights: bool = True  # output projection shares the token embedding matrix
    n_segments: int = 0  # >0 adds a segment embedding (GPT-1/BERT style)
    n_classes: int = 0  # >0 adds a classification head on the last hidden state (GPT-1)
    init: str = "gpt2"
    init_std: float = 0.02
    # modded-nanogpt's options; the defaults leave the model above unchanged.
    embed_norm: bool = False  # a norm (of kind `norm`) over the embeddings before the first block
    zero_init: bool = False  # W_O, the feed-forward's down and the (untied) head start at 0
    # for small vocabularies (characters): an embedding of each (previous token, token) pair, added to
    # the token's own; a table of vocab_size x (vocab_size + 1) rows (the first token has no previous one)
    bigram: bool = False
    # Llama, Mistral and Qwen options; the defaults leave the model above unchanged.
    n_kv_head: int | None = None  # key/value heads, each shared by n_head / n_kv_head query heads; None -> n_head
    qkv_bias: bool | None = None  # biases on W_Q, W_K, W_V (Qwen2: true with bias false); None -> bias
    qk_norm: bool = False  # RMSNorm over each head's q and k before RoPE (Qwen3)
    rope_scaling: str = "none"  # "llama3": Llama 3.1's scaling of RoPE's frequencies, with the four below
    rope_factor: float = 8.0  # how much the slowest frequencies are slowed
    rope_low_freq_factor: float = 1.0  # waves longer than rope_original_max_len / this are slowed
    rope_high_freq_factor: float = 4.0  # waves shorter than rope_original_max_len / this are kept
    rope_original_max_len: int = 8192  # the context the model was first trained with

    def __post_init__(self):
        _check_layer_options(self)
        if self.zero_init and self.tie_weights:
            raise ValueError("zero_init needs tie_weights false: a zero head tied to the embedding would zero it too")
        if self.bigram and self.vocab_size > BIGRAM_MAX_VOCAB:
            raise ValueError(f"bigram needs a vocabulary of at most {BIGRAM_MAX_VOCAB} tokens (its table has a row per "
                             f"pair of tokens); vocab_size is {self.vocab_size}: set bigram=false")

    @property
    def d_model(self) -> int:
        return self.n_embd

    @property
    def bigram_rows(self) -> int:
        """Rows of the pair table: vocab_size (the token) times vocab_size + 1 (the previous one, or none)."""
        return self.vocab_size * (self.vocab_size + 1) if self.bigram else 0

    def parameter_estimate(self) -> int:
        """Roughly how many parameters the model has (its matrices), from the config alone."""
        layer = self.attention_parameters() + self.feed_forward_parameters()
        return (self.vocab_size + self.block_size + self.bigram_rows) * self.d_model + self.n_layer * layer


# ---------------------------------------------------------------------------------------------
# Which GPTConfig values each target outside the model understands: the GPT-2 exporter
# (hf.gpt2.hf_incompatibilities), the Llama/Qwen2/Qwen3 exporter (hf.families.family_incompatibilities)
# and the fast path's one-token step in C (decode_step.StepKernel, which declines the rest to the
# step in torch ops). One row per field, one column per target: ANY, or a Rule the value must
# pass. A new field is a new row (tests/test_models.py checks every field has one): decide here,
# once, what each target does with it.


class Rule(typing.NamedTuple):
    """A condition on a config for one target; `why` is said when the config fails it."""

    ok: typing.Callable[[GPTConfig], bool]
    why: str


ANY = None  # the target takes every value of the field


def only(field: str, values: tuple, why: str) -> Rule:
    """The field must hold one of `values`."""
    return Rule(lambda c: getattr(c, field) in values, why)


def off(field: str, why: str) -> Rule:
    """The field must be off (False, 0 or None)."""
    return Rule(lambda c: not getattr(c, field), why)


TARGETS = ("gpt2", "llama", "c_step")  # the table's columns, in order
C_STEP_ACTIVATIONS = ("relu", "relu2", "gelu", "gelu_tanh", "swiglu")  # matvec.c's GF_RELU...GF_SWIGLU

FIELD_SUPPORT: dict[str, tuple[Rule | None, Rule | None, Rule | None]] = {
    #                GPT-2 export, Llama/Qwen export, the C one-token step
    "vocab_size": (ANY, ANY, ANY),
    "block_size": (ANY, ANY, ANY),
    "n_layer": (ANY, ANY, ANY),
    "n_head": (ANY, ANY, ANY),
    "n_embd": (ANY, ANY, ANY),
    "d_head": (Rule(lambda c: c.d_head in (None, c.n_embd // c.n_head), "GPT-2 uses n_embd/n_head"), ANY, ANY),
    "d_ff": (ANY, ANY, ANY),
    "dropout": (ANY, ANY, ANY),  # training only
    "bias": (ANY, off("bias", "Llama has no biases; Qwen2 has them on Q, K and V alone: qkv_bias"), ANY),
    "norm": (only("norm", ("layernorm",), "GPT-2 uses layernorm"), only("norm", ("rmsnorm",), "Llama uses rmsnorm"),
             ANY),
    "norm_eps": (ANY, ANY, ANY),
    "norm_position": (only("norm_position", ("pre",), "GPT-2 is pre-LN"),
                      only("norm_position", ("pre",), "Llama is pre-norm"), ANY),
    "activation": (only("activation", ("gelu", "gelu_tanh", "relu"), "GPT-2 export writes gelu, gelu_new or relu"),
                   only("activation", ("swiglu",), "Llama uses swiglu"),
                   only("activation", C_STEP_ACTIVATIONS, "the C step computes relu, relu2, gelu, gelu_tanh, swiglu")),
    "position": (only("position", ("learned",), "GPT-2 uses learned positions"),
                 only("position", ("rope",), "Llama uses rope"), ANY),  # the C step: GPT.embed and RoPE's table
    "rope_theta": (ANY, ANY, ANY),
    "tie_weights": (ANY, ANY, ANY),
    "n_segments": (off("n_segments", "GPT-2 has no segment embedding"), off("n_segments", "no segment embedding"),
                   ANY),
    "n_classes": (off("n_classes", "GPT2LMHeadModel has no classification head"),
                  off("n_classes", "no classification head"), ANY),  # the step computes the LM head only
    "init": (ANY, ANY, ANY),  # initialisation only
    "init_std": (ANY, ANY, ANY),
    "embed_norm": (off("embed_norm", "GPT-2 has no norm after the embeddings"),
                   off("embed_norm", "no norm after the embeddings"), ANY),
    "zero_init": (ANY, ANY, ANY),
    "bigram": (off("bigram", "GPT-2 has no embedding of token pairs"), off("bigram", "no embedding of token pairs"),
               ANY),
    "n_kv_head": (Rule(lambda c: c.n_kv_head in (None, c.n_head), "GPT-2 has one K/V per head"), ANY, ANY),
    "qkv_bias": (Rule(lambda c: c.qkv_bias in (None, c.bias), "GPT-2 biases are all or none"),
                 Rule(lambda c: not (c.qk_norm and c.qkv_bias), "Qwen3 (qk_norm) has no Q/K/V biases"), ANY),
    "qk_norm": (off("qk_norm", "GPT-2 has no q/k norms"), ANY, ANY),
    "rope_scaling": (ANY, ANY, ANY),
    "rope_factor": (ANY, ANY, ANY),
    "rope_low_freq_factor": (ANY, ANY, ANY),
    "rope_high_freq_factor": (ANY, ANY, ANY),
    "rope_original_max_len": (ANY, ANY, ANY),
}


def unsupported(config: GPTConfig, target: str) -> list[str]:
    """Why `target` (one of TARGETS) cannot take this config, one reason per field: empty when it can.
    A field the table does not list is refused too, so a new field is never silently ignored."""
    column = TARGETS.index(target)
    reasons = []
    for name in (f.name for f in dataclasses.fields(config)):
        if name not in FIELD_SUPPORT:
            reasons.append(f"{name}: not in config.FIELD_SUPPORT (decide what {target} does with it)")
            continue
        rule = FIELD_SUPPORT[name][column]
        if rule is not None and not rule.ok(config):
            value = getattr(config, name)
            shown = str(value).lower() if isinstance(value, bool) else value
            reasons.append(f"{name}={shown} ({rule.why})")
    return reasons


@dataclass
class Seq2SeqConfig(Widths):
    """Encoder-decoder Transformer of "Attention Is All You Need" (2017)."""

    src_vocab_size: int = 32000
    tgt_vocab_size: int = 32000
    shared_vocab: bool = False  # one embedding matrix for source and target (needs equal sizes)
    tie_output: bool = True  # output projection shares the target embedding matrix
    block_size: int = 256  # longest source or target sequence
    n_encoder_layers: int = 6
    n_decoder_layers: int = 6
    n_head: int = 8
    d_model: int = 512
    d_head: int | None = None  # None -> d_model // n_head
    d_ff: int | None = None  # None -> 4 * d_model
    dropout: float = 0.1
    bias: bool = True
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    norm_position: str = "post"
    final_norm: bool | None = None  # norm after each stack; None -> only for pre-LN
    activation: str = "relu"
    position: str = "sinusoidal"
    rope_theta: float = 10000.0
    scale_embeddings: bool = True  # multiply embeddings by sqrt(d_model), as the paper does
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    init: str = "xavier"
    init_std: float = 0.02

    def __post_init__(self):
        _check_layer_options(self)
        for name in ("pad_id", "bos_id", "eos_id"):  # a vocabulary of 0 is filled in from the tokenizer later
            if self.tgt_vocab_size and getattr(self, name) >= self.tgt_vocab_size:
                raise ValueError(f"{name} must be below tgt_vocab_size {self.tgt_vocab_size}; "
                                 f"got {getattr(self, name)}")
        if self.shared_vocab and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError(f"shared_vocab needs src_vocab_size == tgt_vocab_size; "
                             f"got {self.src_vocab_size} and {self.tgt_vocab_size}")

    def parameter_estimate(self) -> int:
        """Roughly how many parameters the model has (its matrices), from the config alone."""
        encoder = self.attention_parameters() + self.feed_forward_parameters()
        decoder = encoder + self.attention_parameters()  # and cross-attention
        tables = (self.src_vocab_size + self.tgt_vocab_size + self.block_size) * self.d_model
        return tables + self.n_encoder_layers * encoder + self.n_decoder_layers * decoder

    @property
    def use_final_norm(self) -> bool:
        return self.norm_position == "pre" if self.final_norm is None else self.final_norm


ModelConfig = GPTConfig | Seq2SeqConfig
MODEL_TYPES = {"gpt": GPTConfig, "seq2seq": Seq2SeqConfig}


def model_type(config: ModelConfig) -> str:
    return next(name for name, cls in MODEL_TYPES.items() if isinstance(config, cls))


def config_from_dict(kind: str, values: dict) -> ModelConfig:
    """Rebuilds a config saved with `asdict`; unknown keys are an error, not silently dropped."""
    if kind not in MODEL_TYPES:
        raise ValueError(f"unknown model type {kind!r}; expected one of {', '.join(MODEL_TYPES)}")
    cls = MODEL_TYPES[kind]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
    return cls(**values)


# ---------------------------------------------------------------------------------------------
# `--set key=value` overrides, checked against the field's declared type.


def _parse_value(text: str, annotation, key: str):
    """Parses `text` as a value of the dataclass field type `annotation` (a resolved type)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if type(None) in options and text.lower() in ("none", "null"):
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _parse_value(text, option, key)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0] if errors else f"{key}: cannot parse {text!r}")
    if annotation is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{key} expects true or false; got {text!r}")
    if annotation is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{key} expects an integer; got {text!r}") from None
    if annotation is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{key} expects a number; got {text!r}") from None
    if annotation is str:
        return text
    raise ValueError(f"{key}: fields of type {annotation} cannot be set from the command line")


class OverrideError(ValueError):
    """A `--set key=value` that cannot be applied: unknown key, unparsable or out-of-range value (bad usage)."""


def apply_overrides(config, assignments: list[str]):
    """Returns a copy of a config dataclass with `key=value` strings applied, each type- and range-checked.

    Raises OverrideError (one line, starting with --set) for any assignment that cannot be applied.
    """
    try:
        return _apply_overrides(config, assignments)
    except ValueError as e:
        message = str(e)
        raise OverrideError(message if message.startswith("--set") else f"--set {message}") from None


def override_key(assignment: str) -> str:
    """The key of a --set "key=value" assignment, as the overrides read it."""
    return assignment.partition("=")[0].strip()


def _apply_overrides(config, assignments: list[str]):
    hints = typing.get_type_hints(type(config))
    changes = {}
    for assignment in assignments:
        _, sep, text = assignment.partition("=")
        key = override_key(assignment)
        if not sep or not key:
            raise ValueError(f"--set expects key=value; got {assignment!r}")
        if key not in hints or key.startswith("_"):
            known = ", ".join(f.name for f in dataclasses.fields(config))
            raise ValueError(f"unknown key {key!r} for {type(config).__name__}; known keys: {known}")
        changes[key] = _parse_value(text.strip(), hints[key], key)
    return dataclasses.replace(config, **changes)


# ---------------------------------------------------------------------------------------------
# Named presets. Vocabulary sizes of 0 are filled in from the tokenizer when training starts.


@dataclass(frozen=True)
class Preset:
    model: ModelConfig
    train: dict = field(default_factory=dict)  # trainer settings, nanoGPT names
    about: str = ""


PRESETS: dict[str, Preset] = {
    "walkthrough": Preset(
        Seq2SeqConfig(
            src_vocab_size=0, tgt_vocab_size=0, shared_vocab=False, tie_output=False, block_size=16,
            n_encoder_layers=1, n_decoder_layers=1, n_head=1, d_model=6, d_head=4, d_ff=24,
            dropout=0.0, norm_position="post", activation="relu", position="sinusoidal",
            scale_embeddings=False,
        ),
        about="the articles' example: d_model 6, Q/K/V width 4, one encoder and one decoder layer",
    ),
    "gpt-tiny": Preset(
        GPTConfig(vocab_size=0, block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=0.0),
        train=dict(batch_size=8, max_iters=200, learning_rate=3e-3, warmup_iters=20, eval_interval=50,
                   eval_iters=5),
        about="a two-layer GPT for tests and quick experiments",
    ),
    "shakespeare-char-cpu": Preset(
        GPTConfig(vocab_size=0, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False,
                  activation="gelu"),
        train=dict(batch_size=12, max_iters=2000, lr_decay_iters=2000, learning_rate=1e-3, min_lr=1e-4,
                   warmup_iters=100, beta2=0.99, weight_decay=0.1, grad_clip=1.0, eval_interval=250,
                   eval_iters=20),
        about="nanoGPT's CPU recipe for tiny-shakespeare, character level",
    ),
    "shakespeare-char-fast": Preset(
        GPTConfig(vocab_size=0, block_size=64, n_layer=2, n_head=4, n_embd=128, d_ff=344, dropout=0.0, bias=False,
                  norm="rmsnorm", activation="swiglu", position="rope"),
        train=dict(batch_size=12, max_iters=800, lr_decay_iters=800, learning_rate=3e-3, min_lr=3e-4,
                   warmup_iters=50, beta2=0.99, weight_decay=0.1, grad_clip=1.0, eval_interval=200,
                   eval_iters=40),
        about="the fastest recipe found to validation loss 1.88 on tiny-shakespeare on a 2-core CPU "
              "(2 layers, RoPE, RMSNorm, SwiGLU, learning rate 3e-3): about 26 s of training",
    ),
    "shakespeare-char-speedrun": Preset(
        GPTConfig(vocab_size=0, block_size=64, n_layer=1, n_head=4, n_embd=128, d_ff=344, dropout=0.0, bias=False,
                  norm="rmsnorm", activation="swiglu", position="rope", qk_norm=True, embed_norm=True,
                  zero_init=True, tie_weights=False, bigram=True),
        train=dict(batch_size=24, max_iters=150, lr_decay_iters=150, lr_schedule="wsd", decay_fraction=0.5,
                   learning_rate=8e-3, min_lr=3e-4, warmup_iters=10, beta2=0.99, weight_decay=0.1, grad_clip=1.0,
                   eval_interval=150, eval_iters=20, eval_first=False, optimizer="muon", muon_lr=0.06,
                   muon_momentum=0.9),
        about="shakespeare-char-fast with the pieces of modded-nanogpt's speedrun that paid on a 2-core CPU: "
              "Muon for the blocks' matrices, warmup-stable-decay, QK-norm, a norm after the embeddings, "
              "zero-initialised output projections and untied head, and an embedding of each character pair, "
              "with which one layer learns faster than two; batch 24 x 150 iterations instead of 12 x 800, "
              "evaluated only at the end",
    ),
    "shakespeare-char": Preset(
        GPTConfig(vocab_size=0, block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2, bias=False,
                  activation="gelu"),
        train=dict(batch_size=64, max_iters=5000, lr_decay_iters=5000, learning_rate=1e-3, min_lr=1e-4,
                   warmup_iters=100, beta2=0.99, weight_decay=0.1, grad_clip=1.0, eval_interval=250,
                   eval_iters=200),
        about="nanoGPT's GPU recipe for tiny-shakespeare, character level",
    ),
    "gpt2": Preset(
        GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768, dropout=0.0),
        about="the 124M-parameter GPT-2 shape",
    ),
    "transformer-base": Preset(
        Seq2SeqConfig(src_vocab_size=0, tgt_vocab_size=0, block_size=256, n_encoder_layers=6,
                      n_decoder_layers=6, n_head=8, d_model=512, d_ff=2048, dropout=0.1),
        train=dict(lr_schedule="noam", learning_rate=1.0, warmup_iters=4000, max_iters=100_000, beta1=0.9,
                   beta2=0.98, weight_decay=0.0, grad_clip=0.0, label_smoothing=0.1, batch_tokens=25000,
                   eval_interval=5000, eval_iters=1),
        about="the 2017 paper's base model: 6+6 layers, d_model 512, 8 heads, d_ff 2048, its schedule",
    ),
    "multi30k": Preset(
        Seq2SeqConfig(src_vocab_size=0, tgt_vocab_size=0, block_size=128, n_encoder_layers=3,
                      n_decoder_layers=3, n_head=4, d_model=256, d_ff=1024, dropout=0.1, norm_position="pre"),
        train=dict(max_iters=2800, max_time=3300.0, batch_tokens=4096, learning_rate=1e-3, min_lr=5e-5,
                   warmup_iters=300, beta2=0.98, weight_decay=0.01, grad_clip=1.0, label_smoothing=0.1,
                   eval_interval=400, eval_iters=1),
        about="a small encoder-decoder for Multi30k German->English on a 2-core CPU",
    ),
}
