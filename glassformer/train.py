"""One trainer for every model: a task supplies batches, the loss and the evaluation.

The loop is nanoGPT's: AdamW with weight-decay groups, linear warmup then cosine decay,
gradient accumulation and clipping, periodic evaluation. A run directory holds
  config.json, model.safetensors, tokenizer.json   the best model so far (by validation)
  resume.pt      everything to continue exactly: weights, optimizer, step, RNG states
  log.jsonl      one JSON object per logged step and per evaluation
  loss.png       the loss curves
`resume.pt` holds only tensors and plain values; it is read with torch.load(weights_only=True).
Both hold full tensors, written by process 0 alone, so a run started by torchrun on N processes
resumes on any number of processes (see glassformer.distributed).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import distributed
from .checkpoint import CheckpointError, check_tensors, save, unique_state_dict
from .data import check_length, random_windows, sequential_windows
from .device import pick_device, pick_dtype
from .distributed import World
from .files import atomic_write


@dataclass
class TrainConfig:
    """Training settings, named as nanoGPT names them."""

    max_iters: int = 2000
    max_time: float = 0.0  # seconds of training after which the run stops early; 0 = no limit
    batch_size: int = 12  # sequences per micro-batch (language modelling)
    batch_tokens: int = 4096  # tokens per micro-batch, padding included (translation)
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    lr_schedule: str = "cosine"  # "cosine" (warmup + cosine), "noam" (2017 paper), "constant"
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # None -> max_iters
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping
    label_smoothing: float = 0.0
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    val_fraction: float = 0.1
    seed: int = 1337
    device: str = "auto"  # "auto", "cpu", "cuda", "mps"
    dtype: str = "auto"  # "bfloat16" runs matrix work under autocast; "auto" where the hardware has bf16 units
    compile: bool = False  # torch.compile the training forward (pays on GPUs; 0-7% on small CPU models)
    parallel: str = "ddp"  # under torchrun: "ddp" (replicated model) or "fsdp" (FSDP2, sharded model)

    def __post_init__(self):
        if self.lr_schedule not in ("cosine", "noam", "constant"):
            raise ValueError(f"lr_schedule must be cosine, noam or constant; got {self.lr_schedule!r}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"dtype must be auto, float32 or bfloat16; got {self.dtype!r}")
        if self.parallel not in distributed.PARALLEL:
            raise ValueError(f"parallel must be one of {', '.join(distributed.PARALLEL)}; got {self.parallel!r}")
        for name in ("max_iters", "batch_size", "gradient_accumulation_steps", "eval_interval", "eval_iters",
                     "log_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}")


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says what was kept."""


def learning_rate(it: int, cfg: TrainConfig, d_model: int) -> float:
    """The learning rate at iteration `it` (0-based)."""
    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    if cfg.lr_schedule == "noam":
        # d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), scaled by learning_rate (1.0 = the paper's)
        step, warmup = it + 1, max(cfg.warmup_iters, 1)
        return cfg.learning_rate * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it > decay_iters:
        return cfg.min_lr
    ratio = (it - cfg.warmup_iters) / max(decay_iters - cfg.warmup_iters, 1)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_lr)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; matrices and embeddings decay, biases and norm scales do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # One fused kernel for the whole update; sharded (DTensor) parameters take the foreach path.
    fused = device.type in ("cpu", "cuda") and not distributed.is_sharded(model)
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=fused)


# ---------------------------------------------------------------------------------------------
# Tasks: what to train on and how to measure it


class LMTask:
    """Next-token prediction on token-id arrays: random windows to train, fixed windows to validate."""

    def __init__(self, train_ids: np.ndarray, val_ids: np.ndarray, block_size: int, cfg: TrainConfig):
        check_length(train_ids, block_size, "training")
        check_length(val_ids, block_size, "validation")
        self.train_ids, self.val_ids = train_ids, val_ids
        self.block_size, self.cfg = block_size, cfg

    def train_batch(self, generator: torch.Generator, device):
        x, y = random_windows(self.train_ids, self.block_size, self.cfg.batch_size, generator)
        return to_device(x, device), to_device(y, device)

    def loss(self, model, batch) -> torch.Tensor:
        x, y = batch
        return lm_loss(model(x), y)

    def tokens(self, batch) -> int:
        return batch[0].numel()

    @torch.no_grad()
    def evaluate(self, model, device) -> dict:
        """Mean loss over `eval_iters` validation batches, the same batches at every evaluation."""
        generator = torch.Generator().manual_seed(self.cfg.seed + 1)
        losses = []
        for _ in range(self.cfg.eval_iters):
            x, y = random_windows(self.val_ids, self.block_size, self.cfg.batch_size, generator)
            losses.append(lm_loss(model(x.to(device)), y.to(device)).item())
        return {"val_loss": sum(losses) / len(losses)}

    @staticmethod
    def score(metrics: dict) -> float:
        """Lower is better; the run keeps the model with the lowest score."""
        return metrics["val_loss"]


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """A batch to the device; to a GPU from pinned memory, without waiting for the copy."""
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0,
            ignore_index: int = -100) -> torch.Tensor:
    """Mean cross-entropy of (B, T, V) logits against (B, T) targets."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=ignore_index,
                           label_smoothing=label_smoothing)


@torch.no_grad()
def evaluate_lm(model, ids: np.ndarray, batch_size: int = 32, device="cpu") -> dict:
    """Loss over every token of `ids` (non-overlapping windows of the model's block size)."""
    model.eval()
    total, count = 0.0, 0
    for x, y in sequential_windows(ids, model.config.block_size, batch_size):
        logits = model(x.to(device))
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.to(device).flatten(), reduction="sum").item()
        count += y.numel()
    if count == 0:
        raise ValueError("no tokens to evaluate")
    return {"val_loss": total / count, "perplexity": math.exp(total / count), "tokens": count}


# ---------------------------------------------------------------------------------------------
# The loop


class Trainer:
    def __init__(self, model, task, cfg: TrainConfig, out_dir, tokenizer=None, extra_config: dict | None = None,
                 progress: bool | None = None):
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        self.world = World.setup(self.device.type)
        if self.device.type == "cuda" and self.world.distributed:
            self.device = torch.device("cuda", self.world.local_rank)
        self.dtype = pick_dtype(cfg.dtype, self.device)
        if self.device.type == "cuda":  # float32 matmuls on tensor cores (TF32), as nanoGPT does
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.model = model.to(self.device)
        # The checkpoint's tensor names and shapes, tied tensors once: fixed before sharding turns
        # parameters into DTensors. `aliases` maps every state_dict name to the saved one.
        unique = unique_state_dict(self.model)
        self.shapes = {name: tuple(t.shape) for name, t in unique.items()}
        by_storage = {(t.data_ptr(), t.shape, t.stride()): name for name, t in unique.items()}
        self.aliases = {name: by_storage[(t.data_ptr(), t.shape, t.stride())]
                        for name, t in self.model.state_dict().items()}
        wrapped = distributed.wrap(self.model, self.world, cfg.parallel, self.device)
        self.wrapped = wrapped  # the module whose gradients are synchronised
        self.forward_model = torch.compile(wrapped) if cfg.compile else wrapped
        self.task = task
        self.out = Path(out_dir)
        self.tokenizer = tokenizer
        self.extra_config = extra_config or {}
        self.optimizer = make_optimizer(self.model, cfg, self.device)
        # Which batches: the data position. The same on every process: each takes its rows of one global batch.
        self.generator = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed + self.world.rank)  # dropout: its own masks in each process
        self.iter = 0
        self.best_score = math.inf
        self.show_progress = sys.stderr.isatty() if progress is None else progress
        self.d_model = getattr(model.config, "d_model", 0)

    # -- state ------------------------------------------------------------------------------

    def full_state(self, with_optimizer: bool):
        """(tensors, optimizer state) in full on process 0, None elsewhere; a collective when the model is sharded."""
        if not (self.world.main or distributed.is_sharded(self.model)):
            return None
        # Before the first step the optimizer has no state to save (and asking torch.distributed.checkpoint
        # for it would make some by taking a step with zero gradients, which counts in Adam's bias correction).
        with_optimizer = with_optimizer and bool(self.optimizer.state)
        tensors, optim = distributed.full_state(self.model, self.optimizer if with_optimizer else None)
        if not self.world.main:
            return None
        return {name: tensors[name] for name in self.shapes}, optim

    def state_dict(self) -> dict | None:
        full = self.full_state(with_optimizer=True)
        if full is None:
            return None
        tensors, optim = full
        return {
            "model": tensors,
            "optimizer": optim,
            "iter": self.iter,
            "best_score": self.best_score,
            "data_rng": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "task": self.task.state_dict() if hasattr(self.task, "state_dict") else {},
            "train_config": json.dumps(asdict(self.cfg)),
        }

    def save_resume(self) -> None:
        state = self.state_dict()
        if state is not None:
            atomic_write(self.out / "resume.pt", lambda tmp: torch.save(state, tmp))
        self.world.barrier()  # nobody runs ahead of a checkpoint that is still being written

    def load_resume(self) -> None:
        path = self.out / "resume.pt"
        if not path.exists():
            raise CheckpointError(f"{path} not found: nothing to resume (train without --resume to start)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated or foreign file; weights_only refuses code
            raise CheckpointError(f"{path} cannot be read: {e}") from None
        tensors = state["model"]
        check_tensors(tensors, self.shapes, str(path))
        optim = state["optimizer"] if state["optimizer"] and state["optimizer"]["state"] else None  # None: no step yet
        legacy = optim is not None and isinstance(next(iter(optim["state"])), int)  # keyed by position, not name
        full = {name: tensors[saved] for name, saved in self.aliases.items()}
        distributed.load_full_state(self.model, full, self.optimizer, None if legacy else optim)
        if legacy:
            self.optimizer.load_state_dict(optim)
        self.iter = state["iter"]
        self.best_score = state["best_score"]
        self.generator.set_state(state["data_rng"])
        torch.set_rng_state(state["torch_rng"])
        if self.world.rank:
            torch.manual_seed(self.cfg.seed + self.world.rank + 1_000_003 * self.iter)
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        if hasattr(self.task, "load_state_dict"):
            self.task.load_state_dict(state["task"])

    def save_model(self) -> None:
        full = self.full_state(with_optimizer=False)
        if full is not None:
            extra = {"train": asdict(self.cfg), **self.extra_config}
            save(self.model, self.out, tokenizer=self.tokenizer, extra=extra, tensors=full[0])
        self.world.barrier()

    # -- running ----------------------------------------------------------------------------

    def log(self, record: dict) -> None:
        if self.world.main:
            with open(self.out / "log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == torch.bfloat16)

    def evaluate(self) -> dict:
        """The task's evaluation; every process computes it (on the same data, so they agree)."""
        self.model.eval()
        with self.autocast(), distributed.unsharded(self.model):
            metrics = self.task.evaluate(self.model, self.device)
        self.model.train()
        return metrics

    def shard(self, batch):
        """This process's rows of a global batch, and its share of the batch's tokens (the loss's divisor)."""
        if not self.world.distributed:
            return batch, 1.0
        part = tuple(t.tensor_split(self.world.size)[self.world.rank] for t in batch)
        if part[0].size(0) == 0:  # fewer rows than processes: run one row that counts for nothing
            return tuple(t[:1] for t in batch), 0.0
        return part, self.task.tokens(part) / max(self.task.tokens(batch), 1)

    def train_step(self) -> tuple[torch.Tensor, int]:
        """One optimizer step over `gradient_accumulation_steps` micro-batches -> (this process's
        share of the mean loss, as a tensor; tokens of the global batch)."""
        cfg = self.cfg
        lr = learning_rate(self.iter, cfg, self.d_model)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        steps = cfg.gradient_accumulation_steps
        total_loss, tokens = torch.zeros((), device=self.device), 0
        for i in range(steps):
            batch = self.task.train_batch(self.generator, self.device)
            part, share = self.shard(batch)
            with distributed.gradient_sync(self.wrapped, enabled=i == steps - 1):
                with self.autocast():
                    loss = self.task.loss(self.forward_model, part)
                # The processes' gradients are averaged: weight by the tokens each one saw.
                (loss * (share * self.world.size / steps)).backward()
            total_loss += loss.detach().float() * (share / steps)
            tokens += self.task.tokens(batch)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total_loss, tokens

    def run(self, resume: bool = False) -> dict:
        """Trains until max_iters; returns the final evaluation."""
        if self.world.main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.world.barrier()
        if resume:
            self.load_resume()
            self.log({"event": "resume", "iter": self.iter, "processes": self.world.size})
        elif self.world.main:
            (self.out / "log.jsonl").unlink(missing_ok=True)
        self.model.train()
        cfg = self.cfg
        progress = Progress(cfg.max_iters, self.iter, enabled=self.show_progress and self.world.main,
                            silent=not self.world.main)
        metrics: dict = {}
        self.run_start = window_start = time.perf_counter()
        window_tokens = 0
        self.training_time, out_of_time = 0.0, False
        try:
            while True:
                if self.iter % cfg.eval_interval == 0 or self.iter == cfg.max_iters or out_of_time:
                    metrics = self.evaluate()
                    self.on_evaluation(metrics, progress)
                    window_start = time.perf_counter()  # evaluation time is not training time
                if self.iter >= cfg.max_iters or out_of_time:
                    break
                step_start = time.perf_counter()
                loss_share, tokens = self.train_step()
                self.training_time += time.perf_counter() - step_start
                # One collective per step: the global loss, and whether any process ran out of time
                # (they must all stop at the same iteration).
                loss, late = self.world.sum([loss_share.item(), float(cfg.max_time > 0 and
                                                                    self.training_time >= cfg.max_time)])
                out_of_time = late > 0
                if not math.isfinite(loss):
                    raise TrainingError(f"the loss became {loss} at iteration {self.iter}; training stopped. "
                                        f"The last good checkpoint is kept in {self.out}")
                self.iter += 1
                window_tokens += tokens
                if self.iter % cfg.log_interval == 0:
                    elapsed = time.perf_counter() - window_start
                    rate = window_tokens / elapsed if elapsed > 0 else 0.0
                    self.log({"iter": self.iter, "train_loss": loss, "lr": learning_rate(self.iter - 1, cfg,
                              self.d_model), "tokens_per_s": rate})
                    progress.update(self.iter, loss, rate)
                    window_tokens, window_start = 0, time.perf_counter()
        finally:
            progress.close()
            if self.world.main:
                self.plot()
        return metrics

    def on_evaluation(self, metrics: dict, progress: Progress) -> None:
        score = self.task.score(metrics)
        improved = score < self.best_score
        if improved:
            self.best_score = score
            self.save_model()
        self.save_resume()
        # Seconds since this run (or resumption) started: steps, evaluations and checkpoints; and steps alone.
        times = {"elapsed_s": round(time.perf_counter() - self.run_start, 3), "train_s": round(self.training_time, 3)}
        self.log({"iter": self.iter, **metrics, "best": improved, **times})
        shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        progress.message(f"iter {self.iter}: {shown}" + (" (saved)" if improved else ""))

    def plot(self) -> None:
        log = self.out / "log.jsonl"
        if log.exists():
            from .plots import plot_loss

            plot_loss(log, self.out / "loss.png")


class Progress:
    """A progress bar with loss, tokens/s and ETA on a terminal; plain lines otherwise; nothing when silent."""

    def __init__(self, total: int, start: int, enabled: bool, silent: bool = False):
        self.total, self.start, self.silent = total, start, silent
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                                    transient=False)
            self.task = self.bar.add_task("train", total=total, completed=start, status="")
            self.bar.start()

    def update(self, it: int, loss: float, rate: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=it, status=f"loss {loss:.4f}  {rate:,.0f} tok/s")

    def message(self, text: str) -> None:
        if self.silent:
            return
        if self.bar is not None:
            self.bar.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def configs_for_run(preset: str, overrides: list[str], model_cls):
    """A preset's model and training settings with `--set key=value` overrides applied."""
    from .config import PRESETS, apply_overrides

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    entry = PRESETS[preset]
    if not isinstance(entry.model, model_cls):
        raise ValueError(f"preset {preset!r} is for another kind of model ({type(entry.model).__name__})")
    train_cfg = TrainConfig(**entry.train)
    train_sets, model_sets = split_overrides(list(overrides), train_cfg, entry.model)
    return apply_overrides(entry.model, model_sets), apply_overrides(train_cfg, train_sets)


def resumed_configs(out: Path, overrides: list[str], model_cls):
    """An existing run's model and training settings, and its config.json; --set may change training keys only."""
    from .checkpoint import CONFIG_FILE, read_json
    from .config import apply_overrides

    if not (out / "resume.pt").exists():
        raise ValueError(f"{out / 'resume.pt'} not found: nothing to resume (train without --resume to start)")
    meta = read_json(out / CONFIG_FILE)
    model_cfg = model_cls(**meta["config"])
    train_cfg = TrainConfig(**meta.get("train", {}))
    train_sets, model_sets = split_overrides(list(overrides), train_cfg, model_cfg)
    # The command that started the run may be repeated with --resume: model settings that
    # agree with the saved ones are fine, a different model is not.
    wanted = apply_overrides(model_cfg, model_sets)
    changed = [f.name for f in dataclasses.fields(model_cfg) if getattr(wanted, f.name) != getattr(model_cfg, f.name)]
    if changed:
        raise ValueError(f"a resumed run keeps its model; cannot change {', '.join(changed)}")
    return model_cfg, apply_overrides(train_cfg, train_sets), meta


def format_metrics(metrics: dict) -> str:
    """One JSON line of metrics, floats rounded to 6 decimals."""
    return json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}, ensure_ascii=False)


def split_overrides(assignments: list[str], *configs) -> list[list[str]]:
    """Routes each key=value to the first config that has the key (unknown keys go to the last)."""
    routed: list[list[str]] = [[] for _ in configs]
    for a in assignments:
        key = a.partition("=")[0].strip()
        index = next((i for i, c in enumerate(configs) if key in {f.name for f in dataclasses.fields(c)}),
                     len(configs) - 1)
        routed[index].append(a)
    return routed
