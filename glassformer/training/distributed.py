"""Several processes, one training run: torchrun, DistributedDataParallel and FSDP2.

    torchrun --nproc_per_node=2 -m glassformer train lm --data input.txt --out runs/x
    torchrun --nproc_per_node=2 -m glassformer train lm ... --set parallel=fsdp

torchrun starts the processes and sets RANK, WORLD_SIZE and LOCAL_RANK; `process_group` joins
them into one process group (NCCL on CUDA GPUs, gloo on CPUs) for the length of one training
run, and destroys it at the end (`glassformer.training.trainer.run_training` is its one user). Every
process draws the same global batch from the same random generator and trains on its own
rows of it, so N processes compute what one process computes with the same global batch
(`Trainer.shard` weights each part by its share of the tokens). Without torchrun, World is a
single process and nothing here does anything.

"ddp": every process holds the whole model; gradients are averaged after backward.
"fsdp": `fully_shard` (FSDP2) splits every Block and the rest of the model over the
processes, for models too big for one device; parameters are gathered layer by layer.

Checkpoints hold full, unsharded tensors written by process 0 only, so a run resumes with
any number of processes (`full_state` gathers them; `load_full_state` scatters them back).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

PARALLEL = ("ddp", "fsdp")


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Process 0: the one that logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether this run has more than one process."""
        return self.size > 1

    def place(self, device: torch.device) -> torch.device:
        """This process's device: its own GPU (by local rank) when several processes share a machine's GPUs."""
        if device.type == "cuda" and self.distributed:
            return torch.device("cuda", self.local_rank)
        return device

    def barrier(self) -> None:
        """Waits until every process gets here (nothing to wait for in a single process)."""
        if self.distributed:
            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums of `values` over all processes (one collective for the list)."""
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)  # gloo and NCCL both sum; CPU tensors work with gloo, so keep it on the host
        return t.tolist()


def world_from_env() -> World:
    """The world torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK); one process without it."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))


@contextlib.contextmanager
def process_group(device_type: str) -> Iterator[World]:
    """The run's process group, from start to end: the one place that creates and destroys it.

    Under torchrun the processes join one group (NCCL on CUDA GPUs, gloo otherwise), which is
    destroyed when the block ends, however it ends. A group that already existed is used and
    left alone. Without torchrun this yields a single-process World and does nothing.

    Args:
        device_type: "cuda", "cpu" or "mps": the device the run trains on.

    Returns:
        A context manager yielding this process's World.
    """
    world = world_from_env()
    if not world.distributed:
        yield world
        return
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    if device_type == "cuda":
        torch.cuda.set_device(world.local_rank)
    if device_type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # The processes of one machine share its cores.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world.size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    try:
        yield world
    finally:
        if created:
            dist.destroy_process_group()


def wrap(model: nn.Module, world: World, parallel: str, device: torch.device) -> nn.Module:
    """The module to train: `model` itself, DistributedDataParallel around it, or `model` fully sharded (in place)."""
    if parallel not in PARALLEL:
        raise ValueError(f"parallel must be one of {', '.join(PARALLEL)}; got {parallel!r}")
    if not world.distributed:
        return model
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.fsdp import fully_shard

    from glassformer.model.layers import Block

    for module in model.modules():
        if isinstance(module, Block):
            fully_shard(module)
    fully_shard(model)  # embeddings, final norm and the (tied) head
    return model


def is_sharded(model: nn.Module) -> bool:
    """Whether `model` was split over the processes by `fully_shard` (FSDP2)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextlib.contextmanager
def gradient_sync(wrapped: nn.Module, enabled: bool):
    """Skips the gradient all-reduce of micro-batches before the last one of a step."""
    if enabled or not dist.is_initialized():
        yield
    elif hasattr(wrapped, "no_sync"):  # DistributedDataParallel
        with wrapped.no_sync():
            yield
    elif is_sharded(wrapped):
        wrapped.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            wrapped.set_requires_gradient_sync(True)
    else:
        yield


@contextlib.contextmanager
def unsharded(model: nn.Module):
    """The root's parameters gathered, for code that calls a sharded model's methods other than forward."""
    if not is_sharded(model):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None = None):
    """(model tensors, optimizer state) in full, on the CPU, keyed by parameter name.

    A collective under FSDP: every process must call it; process 0 receives the tensors.
    """
    from torch.distributed.checkpoint import state_dict as dcp

    options = dcp.StateDictOptions(full_state_dict=True, cpu_offload=True)
    tensors = dcp.get_model_state_dict(model, options=options)
    optim = dcp.get_optimizer_state_dict(model, optimizer, options=options) if optimizer is not None else None
    return tensors, optim


def load_full_state(model: nn.Module, tensors: dict, optimizer=None, optim_state=None) -> None:
    """The inverse of `full_state`: full tensors (every process passes them) into a model sharded or not."""
    from torch.distributed.checkpoint import state_dict as dcp

    options = dcp.StateDictOptions(full_state_dict=True)
    dcp.set_model_state_dict(model, tensors, options=options)
    if optimizer is not None and optim_state is not None:
        dcp.set_optimizer_state_dict(model, optimizer, optim_state, options=options)
