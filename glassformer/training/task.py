"""What a training task gives the Trainer: batches, a loss, an evaluation, and its own resumable state.

Two tasks implement it, each in its own module: `glassformer.training.lm.LMTask` (next-token
prediction on token-id arrays) and `glassformer.training.translation.TranslationTask` (length-bucketed
sentence pairs, BLEU). The Trainer knows nothing else about them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

Batch = tuple[torch.Tensor, ...]  # tensors whose first dimension is the batch's rows (B, ...)


@runtime_checkable
class Task(Protocol):
    """A training task: every method is required, and every one is called by the Trainer."""

    def train_batch(self, generator: torch.Generator, device: torch.device) -> Batch:
        """The next global training batch, drawn with `generator` (the same on every process), on `device`.

        Under torchrun the Trainer gives each process its rows of it (split along dimension 0).
        """
        ...

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The mean training loss of `model` on `batch` (a scalar tensor to call backward on)."""
        ...

    def tokens(self, batch: Batch) -> int:
        """How many target tokens `batch` holds (padding excluded): the weight of its loss."""
        ...

    def evaluate(self, model: nn.Module, device: torch.device) -> dict:
        """Validation metrics of `model` (in eval mode, on `device`); the same data at every evaluation."""
        ...

    def score(self, metrics: dict) -> float:
        """One number from `evaluate`'s metrics, lower is better: the run keeps the model with the lowest."""
        ...

    def state_dict(self) -> dict:
        """The task's own position in its data (tensors and plain values), saved in resume.pt; {} when stateless."""
        ...

    def load_state_dict(self, state: dict) -> None:
        """Restores what `state_dict` returned, so a resumed run draws the batches the uninterrupted one would."""
        ...
