"""One trainer for every model: a task (glassformer.training.task.Task) supplies batches, the loss and the evaluation.

The loop is nanoGPT's: AdamW with weight-decay groups, linear warmup then cosine decay,
gradient accumulation and clipping, periodic evaluation. A run directory holds
  config.json, model.safetensors, tokenizer.json   the best model so far (by validation)
  resume.pt      everything to continue exactly: weights, optimizer, step, RNG states
  log.jsonl      one JSON object per logged step and per evaluation
  loss.png       the loss curves
`resume.pt` holds only tensors and plain values; it is read with torch.load(weights_only=True).
Both hold full tensors, written by process 0 alone, so a run started by torchrun on N processes
resumes on any number of processes (see glassformer.training.distributed). `run_training` owns the run's
process group: it starts it, trains, and ends it.

The tasks live in their own modules (glassformer.training.lm, glassformer.training.translation), the device and
dtype choice in glassformer.base.device, and preset and resume settings in glassformer.training.runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from glassformer.base.device import check_device_name, pick_device, pick_dtype
from glassformer.base.files import append_text, atomic_write
from glassformer.checkpoint import current_name, renamed, save
from glassformer.fast import accelerate, fused
from glassformer.model.config import check_fields
from glassformer.training import distributed
from glassformer.training.budget import PROBE_STEPS, SKIPPED_STEPS, Budget
from glassformer.training.distributed import World
from glassformer.training.muon import Muon, muon_groups
from glassformer.training.task import Batch, Task
from glassformer.weights import CheckpointError, check_tensors, check_values, load_tensors_only, unique_state_dict


@dataclass
class TrainConfig:
    """Training settings, named as nanoGPT names them."""

    max_iters: int = 2000
    max_time: float = 0.0  # seconds the run may take (steps and evaluations); the schedule is planned to fit; 0 = none
    batch_size: int = 12  # sequences per micro-batch (language modelling)
    batch_tokens: int = 4096  # tokens per micro-batch, padding included (translation)
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    lr_schedule: str = "cosine"  # "cosine" (warmup + cosine), "wsd" (warmup-stable-decay), "noam" (2017), "constant"
    decay_fraction: float = 0.5  # "wsd": the last fraction of lr_decay_iters, the rate falling linearly to min_lr
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # None -> max_iters
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping
    label_smoothing: float = 0.0
    eval_interval: int = 250
    eval_iters: int = 20
    eval_first: bool = True  # evaluate the untrained model before the first step; False: first at eval_interval
    log_interval: int = 10
    val_fraction: float = 0.1
    seed: int = 1337
    device: str = "auto"  # "auto", "cpu", "cuda", "mps"
    dtype: str = "auto"  # "bfloat16" runs matrix work under autocast; "auto" where the hardware has bf16 units
    compile: bool = False  # torch.compile the training forward (pays on GPUs; 0-7% on small CPU models)
    parallel: str = "ddp"  # under torchrun: "ddp" (replicated model) or "fsdp" (FSDP2, sharded model)
    optimizer: str = "adamw"  # "adamw", or "muon": Muon for the blocks' matrices, AdamW for the rest (training.muon)
    muon_lr: float = 0.02  # Muon's peak learning rate (the schedule scales it as it scales learning_rate)
    muon_momentum: float = 0.95
    muon_momentum_start: float = 0.85  # Muon's momentum at the first step, rising to muon_momentum ...
    muon_momentum_warmup: int = 0  # ... over this many steps (0: muon_momentum from the start)
    muon_ns_steps: int = 5  # Newton-Schulz iterations per Muon update

    def __post_init__(self):
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}; got {self.lr_schedule!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"dtype must be auto, float32 or bfloat16; got {self.dtype!r}")
        if self.parallel not in distributed.PARALLEL:
            raise ValueError(f"parallel must be one of {', '.join(distributed.PARALLEL)}; got {self.parallel!r}")
        check_fields(self, TRAIN_LIMITS)
        check_device_name(self.device)
        for name, (low, high, high_open) in TRAIN_FLOAT_RANGES.items():
            value = getattr(self, name)
            if not (low <= value < high if high_open else low <= value <= high):
                raise ValueError(f"{name} must be in [{low:g}, {high:g}{')' if high_open else ']'}; got {value!r}")


LR_SCHEDULES = ("cosine", "wsd", "noam", "constant")
OPTIMIZERS = ("adamw", "muon")
# Integer settings: (lowest, highest). Floats: (lowest, highest, whether highest is excluded); all must be finite.
TRAIN_LIMITS = {name: (1, 10**12) for name in ("max_iters", "batch_size", "batch_tokens", "gradient_accumulation_steps",
                                               "eval_interval", "eval_iters", "log_interval", "lr_decay_iters")}
TRAIN_LIMITS.update(warmup_iters=(0, 10**12), seed=(0, 2**63 - 1), muon_momentum_warmup=(0, 10**12),
                    muon_ns_steps=(1, 50))
TRAIN_FLOAT_RANGES = {
    "max_time": (0.0, math.inf, True), "learning_rate": (0.0, 1e3, False), "min_lr": (0.0, 1e3, False),
    "weight_decay": (0.0, 1e3, False), "beta1": (0.0, 1.0, True), "beta2": (0.0, 1.0, True),
    "grad_clip": (0.0, math.inf, True), "label_smoothing": (0.0, 1.0, True), "val_fraction": (0.0, 1.0, True),
    "decay_fraction": (0.0, 1.0, False), "muon_lr": (0.0, 1e3, False), "muon_momentum": (0.0, 1.0, True),
    "muon_momentum_start": (0.0, 1.0, True),
}


# What resume.pt must hold, key -> (types allowed, what to call them); save_resume writes them all.
RESUME_KEYS = {
    "model": (dict, "a dict of tensors"), "optimizer": ((dict, type(None)), "the optimizer state (a dict)"),
    "iter": (int, "an integer"), "best_score": ((int, float, type(None)), "a number"),
    "data_rng": (torch.Tensor, "a tensor"), "torch_rng": (torch.Tensor, "a tensor"),
    "cuda_rng": ((list, tuple), "a list of tensors"),
}


def check_resume_state(state, path: Path) -> None:
    """Raises CheckpointError (one line naming resume.pt and the key) for a resume.pt missing a part or holding a
    wrong kind of value, before any of it is used."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a training state (a dict); got {type(state).__name__}")
    for key, (types, what) in RESUME_KEYS.items():
        if key not in state:
            raise CheckpointError(f"{path} has no {key!r}: it was not written by glassformer's trainer, "
                                  f"or is incomplete; it cannot be resumed")
        if not isinstance(state[key], types) or isinstance(state[key], bool):
            raise CheckpointError(f"{path}: {key!r} must be {what}; got {type(state[key]).__name__}")
    optim = state["optimizer"]
    if optim and not (isinstance(optim.get("state"), dict) and isinstance(optim.get("param_groups"), list)):
        raise CheckpointError(f"{path}: 'optimizer' must hold 'state' and 'param_groups'; "
                              f"it holds {', '.join(map(str, optim)) or 'nothing'}")
    if not all(isinstance(t, torch.Tensor) for t in state["model"].values()):
        raise CheckpointError(f"{path}: 'model' must map tensor names to tensors")
    if "task" in state and not isinstance(state["task"], dict):
        raise CheckpointError(f"{path}: 'task' must be a dict; got {type(state['task']).__name__}")
    budget = state.get("budget")
    if budget is not None and not (isinstance(budget, dict) and all(
            isinstance(budget.get(key), (int, float)) for key in ("planned", "spent", "made"))):
        raise CheckpointError(f"{path}: 'budget' must hold the time plan's numbers planned, spent and made")


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
TRIM_THRESHOLD, MMAP_THRESHOLD = 1 << 30, 32 << 20  # what keep_freed_memory sets them to


def keep_freed_memory(trim: int = TRIM_THRESHOLD, mmap: int = MMAP_THRESHOLD) -> bool:
    """Lets glibc keep freed memory in the process instead of giving it back to the system each step.

    A CPU training step frees its activations and gradients, then the next allocates them again.
    glibc returns the free top of its heap to the system once more than a trim threshold is free,
    and serves blocks over an mmap threshold with fresh mappings that it unmaps on free; both make
    the next step fault the pages in again, one 4 KiB page at a time, the kernel zeroing each.
    Here the trim threshold becomes 1 GiB and the mmap threshold 32 MiB (glibc's own dynamic
    threshold stops there; setting either one ends that dynamic rise, so both are set). Measured on
    the default preset on a 2-core VM, in a fresh process: about 800,000 page faults in 180 steps
    and 21-25k tokens/s before, about 50,000 and 34-38k after. (Later runs in the same process
    were fast either way: the thresholds had risen.) The memory kept serves the process's own
    later allocations.

    Returns:
        Whether both settings were made (False off Linux/glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, mmap)) and bool(libc.mallopt(M_TRIM_THRESHOLD, trim))
    except (OSError, AttributeError):  # another C library (musl) or none by that name
        return False


TRIM_EVERY = 10  # steps between giving free heap back, when batch shapes vary (see give_back_free_memory)


def give_back_free_memory() -> bool:
    """Returns the heap's free pages to the system (glibc's malloc_trim(0)); False where there is no glibc.

    Batches whose shapes change from step to step (translation's length buckets) bring new shapes to
    torch's bf16 CPU matmuls, whose oneDNN and ideep caches hold a primitive per shape (up to 1024 each):
    their entries, made and evicted among each step's activations, fragment the heap, and the free
    memory glibc keeps grows without bound (the multi30k model in bf16: 0.94 GB at step 10, 1.73 GB at
    step 110 and rising; trimmed every 10 steps, flat at 1.03 GB from step 30, the caches' 0.73 GB
    live). Turning the caches off keeps it flat too but made greedy decoding 2.4x slower.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says what was kept."""


def learning_rate(it: int, cfg: TrainConfig, d_model: int) -> float:
    """The learning rate at iteration `it` under the config's schedule.

    Args:
        it: the iteration, 0-based.
        cfg: the schedule and its settings (lr_schedule, learning_rate, min_lr, warmup_iters, lr_decay_iters,
            decay_fraction).
        d_model: the model width, which scales the "noam" schedule.

    Returns:
        The learning rate.
    """
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
    if cfg.lr_schedule == "wsd":  # the peak until the last decay_fraction of decay_iters, then linear to min_lr
        decay_start = decay_iters - cfg.decay_fraction * decay_iters
        if it <= decay_start:
            return cfg.learning_rate
        return cfg.learning_rate + (cfg.min_lr - cfg.learning_rate) * (it - decay_start) / (decay_iters - decay_start)
    ratio = (it - cfg.warmup_iters) / max(decay_iters - cfg.warmup_iters, 1)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_lr)


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, or Muon for the blocks' matrices with AdamW for the rest (cfg.optimizer);
    matrices and embeddings decay, biases and norm scales do not.

    Args:
        model: the model whose trainable parameters are optimised.
        cfg: optimizer, learning_rate, weight_decay, beta1, beta2, and Muon's muon_* settings.
        device: where the model is (the fused update runs on CPUs and CUDA GPUs).

    Returns:
        AdamW with two parameter groups, decayed (dim >= 2) then not decayed; or glassformer.training.muon.Muon
        with three, the blocks' matrices (Muon), the other matrices, then the vectors.
    """
    # One fused kernel for the whole update; sharded (DTensor) parameters take the foreach path.
    fused = device.type in ("cpu", "cuda") and not distributed.is_sharded(model)
    if cfg.optimizer == "muon":
        if distributed.is_sharded(model):
            raise ValueError("optimizer muon orthogonalises whole matrices; it does not run with parallel=fsdp")
        return Muon(muon_groups(model, cfg.weight_decay), lr=cfg.learning_rate,
                    lr_ratio=cfg.muon_lr / cfg.learning_rate if cfg.learning_rate > 0 else 0.0,
                    momentum=cfg.muon_momentum, momentum_start=cfg.muon_momentum_start,
                    momentum_warmup=cfg.muon_momentum_warmup, ns_steps=cfg.muon_ns_steps,
                    betas=(cfg.beta1, cfg.beta2), fused=fused)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=fused)


# ---------------------------------------------------------------------------------------------
# The loop


def run_training(model: nn.Module, task: Task, cfg: TrainConfig, out_dir, *, resume: bool = False, tokenizer=None,
                 extra_config: dict | None = None, progress: bool | None = None) -> dict:
    """Trains `model` on `task` into a run directory, in one process or in each of torchrun's.

    The run's process group exists for the length of this call (glassformer.training.distributed.process_group).

    Args:
        model: the model to train (moved to the chosen device).
        task: batches, loss and evaluation.
        cfg: the training settings.
        out_dir: the run directory.
        resume: continue the run in `out_dir` from its resume.pt.
        tokenizer: saved with the model.
        extra_config: more values for the checkpoint's config.json (e.g. the data it was trained on).
        progress: show a progress bar (None: when stderr is a terminal).

    Returns:
        The final evaluation's metrics.
    """
    with distributed.process_group(pick_device(cfg.device).type) as world:
        trainer = Trainer(model, task, cfg, out_dir, tokenizer=tokenizer, extra_config=extra_config,
                          progress=progress, world=world)
        return trainer.run(resume=resume)


class Trainer:
    """The training loop: optimizer steps over the task's batches, evaluations, checkpoints and the log.

    Args:
        model: the model to train.
        task: batches, loss and evaluation.
        cfg: the training settings.
        out_dir: the run directory.
        tokenizer: saved with the model.
        extra_config: more values for the checkpoint's config.json.
        progress: show a progress bar (None: when stderr is a terminal).
        world: this process's place in a torchrun run, its process group already started
            (see `run_training`); None: a single process.
    """

    def __init__(self, model: nn.Module, task: Task, cfg: TrainConfig, out_dir, tokenizer=None,
                 extra_config: dict | None = None, progress: bool | None = None, world: World | None = None):
        self.cfg = cfg
        self.world = world or World()
        self.device = self.world.place(pick_device(cfg.device))
        self.dtype = pick_dtype(cfg.dtype, self.device)
        self.batch_shapes: set[tuple] = set()  # the first two batch shapes seen (do shapes vary?)
        if self.device.type == "cpu":
            keep_freed_memory()
            fused.library()  # training's C kernels built (once per machine) or loaded before the clock starts
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
        self.d_model = model.config.d_model  # the "noam" schedule scales with it
        # With a time budget the schedule is planned to end inside it (glassformer.training.budget).
        self.budget = Budget(cfg.max_time, cfg.max_iters, cfg.max_iters) if cfg.max_time > 0 else None
        self.clock = time.perf_counter  # every duration the trainer measures (a test may put a fake clock here)

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
        """Everything to continue the run exactly (see resume.pt above), on process 0; None elsewhere."""
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
            "task": self.task.state_dict(),
            "train_config": json.dumps(asdict(self.cfg)),
            "budget": self.budget_state(),
        }

    def save_resume(self) -> None:
        """Writes resume.pt (process 0); every process waits until it is written."""
        state = self.state_dict()
        if state is not None:
            atomic_write(self.out / "resume.pt", lambda tmp: torch.save(state, tmp))
        self.world.barrier()  # nobody runs ahead of a checkpoint that is still being written

    def load_resume(self) -> None:
        """Restores the run from resume.pt: weights, optimizer, iteration, best score, random states, task state."""
        path = self.out / "resume.pt"
        if not path.exists():
            raise CheckpointError(f"{path} not found: nothing to resume (train without --resume to start)")
        state = load_tensors_only(path)  # one line for a truncated, foreign or pickled file
        check_resume_state(state, path)
        tensors = renamed(state["model"])  # an older run's names as today's model gives them
        check_tensors(tensors, self.shapes, str(path))
        check_values(tensors, str(path))
        optim = state["optimizer"] if state["optimizer"] and state["optimizer"]["state"] else None  # None: no step yet
        legacy = optim is not None and isinstance(next(iter(optim["state"])), int)  # keyed by position, not name
        if optim is not None and not legacy:  # keyed by name: an older run's names as today's
            optim = {**optim, "state": renamed(optim["state"]),
                     "param_groups": [{**group, "params": [current_name(n) for n in group["params"]]}
                                      for group in optim["param_groups"]]}
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
        self.task.load_state_dict(state.get("task", {}))
        if self.budget is not None and isinstance(state.get("budget"), dict):  # the run's plan and the time spent
            self.budget = Budget.from_state(state["budget"], self.cfg.max_time, self.cfg.max_iters)

    def save_model(self) -> None:
        """Writes the model directory (weights, config.json, tokenizer) from process 0; every process waits."""
        full = self.full_state(with_optimizer=False)
        if full is not None:
            extra = {"train": asdict(self.cfg), **self.extra_config}
            save(self.model, self.out, tokenizer=self.tokenizer, extra=extra, tensors=full[0])
        self.world.barrier()

    # -- running ----------------------------------------------------------------------------

    def log(self, record: dict) -> None:
        """Appends one JSON line to log.jsonl (process 0)."""
        if self.world.main:
            append_text(self.out / "log.jsonl", json.dumps(record) + "\n")

    def autocast(self):
        """bfloat16 autocast when the run's dtype is bfloat16; a no-op context otherwise."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == torch.bfloat16)

    def evaluate(self) -> dict:
        """The task's evaluation; every process computes it (on the same data, so they agree)."""
        self.model.eval()
        with self.autocast(), distributed.unsharded(self.model):
            metrics = self.task.evaluate(self.model, self.device)
        self.model.train()
        return metrics

    def shard(self, batch: Batch) -> tuple[Batch, float]:
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
        lr = learning_rate(self.iter, self.schedule, self.d_model)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        steps = cfg.gradient_accumulation_steps
        total_loss, tokens = torch.zeros((), device=self.device), 0
        for i in range(steps):
            batch = self.task.train_batch(self.generator, self.device)
            if len(self.batch_shapes) < 2:  # a second shape: batches vary (see give_back_free_memory)
                self.batch_shapes.add(tuple(tuple(t.shape) for t in batch if isinstance(t, torch.Tensor)))
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

    @property
    def end(self) -> int:
        """The iteration the run ends at: the recipe's max_iters, or the time budget's plan."""
        return self.budget.planned if self.budget is not None else self.cfg.max_iters

    @property
    def schedule(self) -> TrainConfig:
        """The settings the learning rate follows: the recipe's, with the plan's iteration count.

        A plan shorter (or, up to the recipe's, longer) than the recipe keeps the schedule's shape:
        the decay ends at the plan's last iteration (lr_decay_iters scaled with it) and the warmup
        keeps its length, up to half of the plan."""
        cfg = self.cfg
        if self.budget is None or self.end == cfg.max_iters:
            return cfg
        end = max(self.end, 1)
        decay = end if cfg.lr_decay_iters in (None, cfg.max_iters) else max(1, round(cfg.lr_decay_iters * end
                                                                                    / cfg.max_iters))
        return dataclasses.replace(cfg, max_iters=end, lr_decay_iters=decay,
                                   warmup_iters=min(cfg.warmup_iters, end // 2))

    def run(self, resume: bool = False) -> dict:
        """Trains until the end iteration (max_iters, or the time budget's plan); returns the final evaluation."""
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
        progress = Progress(self.end, self.iter, enabled=self.show_progress and self.world.main,
                            silent=not self.world.main)
        metrics: dict = {}
        self.run_start = window_start = self.clock()
        window_tokens = 0
        self.training_time, out_of_time = 0.0, False
        # For the plan: the steps timed (all but this process's first few), and the last evaluation and checkpoint.
        steps_run, timed_steps, timed_s, eval_s, checkpoint_s = 0, 0, 0.0, 0.0, 0.0
        fast = accelerate.for_training(self.model)  # the fast modules while training; readable afterwards
        fast.install()
        try:
            while True:
                scheduled = self.iter % cfg.eval_interval == 0 and (self.iter > 0 or cfg.eval_first)
                if scheduled or self.iter >= self.end or out_of_time:
                    eval_start = self.clock()
                    metrics = self.evaluate()
                    saving = self.clock()
                    if self.budget is not None and timed_steps and not out_of_time and self.iter < self.end:
                        self.plan(timed_s / timed_steps, saving - eval_start + checkpoint_s, progress)
                    self.on_evaluation(metrics, progress)
                    checkpoint_s = self.clock() - saving
                    eval_s = self.clock() - eval_start
                    window_start = self.clock()  # evaluation time is not training time
                if self.iter >= self.end or out_of_time:
                    break
                step_start = self.clock()
                loss_share, tokens = self.train_step()
                # One collective per step: the global loss, and whether any process ran out of time
                # (they must all stop at the same iteration).
                loss = loss_share.item()
                step_s = self.clock() - step_start
                self.training_time += step_s
                late = self.budget is not None and self.elapsed() + eval_s > self.budget.seconds
                loss, late = self.world.sum([loss, float(late)])
                out_of_time = late > 0
                if not math.isfinite(loss):
                    raise TrainingError(f"the loss became {loss} at iteration {self.iter}; training stopped. "
                                        f"The last good checkpoint is kept in {self.out}")
                self.iter += 1
                if self.device.type == "cpu" and len(self.batch_shapes) > 1 and self.iter % TRIM_EVERY == 0:
                    give_back_free_memory()
                window_tokens += tokens
                steps_run += 1
                if steps_run > SKIPPED_STEPS:
                    timed_steps, timed_s = timed_steps + 1, timed_s + step_s
                if self.budget is not None and not self.budget.made and timed_steps == PROBE_STEPS - SKIPPED_STEPS:
                    self.plan(timed_s / timed_steps, eval_s, progress)
                if self.iter % cfg.log_interval == 0:
                    elapsed = self.clock() - window_start
                    rate = window_tokens / elapsed if elapsed > 0 else 0.0
                    self.log({"iter": self.iter, "train_loss": loss, "lr": learning_rate(self.iter - 1, self.schedule,
                              self.d_model), "tokens_per_s": rate})
                    progress.update(self.iter, loss, rate)
                    window_tokens, window_start = 0, self.clock()
        except BaseException:
            fast.remove()
            progress.close()
            if self.world.main:
                with contextlib.suppress(Exception):  # (a full disk, say): the error that stopped the run is told
                    self.plot()
            raise
        fast.remove()  # the model is readable again after the run
        progress.close()
        if self.world.main:
            self.plot()
        if out_of_time and self.iter < self.end:
            progress.message(f"the time budget (max_time {cfg.max_time:g} s) ran out at iteration {self.iter}, "
                             f"before the planned {self.end}: this machine slowed down during the run")
        return metrics

    def elapsed(self) -> float:
        """Seconds of the run so far: this process's loop, and the loops of the runs it resumes."""
        return self.clock() - self.run_start + (self.budget.spent if self.budget is not None else 0.0)

    def budget_state(self) -> dict | None:
        """The time plan as resume.pt keeps it, with the seconds spent up to now."""
        if self.budget is None:
            return None
        return {**self.budget.state_dict(), "spent": self.elapsed()}

    def plan(self, step_s: float, eval_s: float, progress: Progress) -> None:
        """Sets the end iteration so the rest of the run fits the budget; every process takes the mean plan."""
        before, first = self.end, not self.budget.made
        own = self.budget.replan(self.iter, self.elapsed(), step_s, eval_s, self.cfg.eval_interval)
        self.budget.planned = round(self.world.sum([float(own)])[0] / self.world.size)
        if self.budget.planned == before and not first:
            return
        self.log({"event": "plan", "iter": self.iter, "max_iters": self.budget.planned, "step_s": round(step_s, 4),
                  "eval_s": round(eval_s, 3), "budget_s": self.cfg.max_time, "elapsed_s": round(self.elapsed(), 3)})
        progress.set_total(self.budget.planned)
        progress.message(f"plan: {self.budget.planned} iterations of {self.cfg.max_iters} fit the "
                         f"{self.cfg.max_time:g} s budget ({step_s:.3f} s per step, {eval_s:.1f} s per evaluation)")

    def on_evaluation(self, metrics: dict, progress: Progress) -> None:
        """Keeps the model if it scores best so far, writes resume.pt, logs the metrics and shows them."""
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
        """Draws loss.png from log.jsonl."""
        log = self.out / "log.jsonl"
        if log.exists():
            from glassformer.plots import plot_loss

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
        """Moves the bar to iteration `it`, showing the loss and tokens per second."""
        if self.bar is not None:
            self.bar.update(self.task, completed=it, status=f"loss {loss:.4f}  {rate:,.0f} tok/s")

    def set_total(self, total: int) -> None:
        """The run's new length (a time budget's plan)."""
        self.total = total
        if self.bar is not None:
            self.bar.update(self.task, total=total)

    def message(self, text: str) -> None:
        """One line above the bar, or on stderr without one."""
        if self.silent:
            return
        if self.bar is not None:
            self.bar.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        """Stops the bar."""
        if self.bar is not None:
            self.bar.stop()
