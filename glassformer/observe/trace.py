"""A recorder that sees every named intermediate of a forward pass, from outside the model.

    with Trace(model) as trace:
        logits = model(ids)
    trace["blocks.0.self_attn.core.probs"]      # (B, h, T, T) attention probabilities
    trace["blocks.0.self_attn.q_proj"]          # (B, T, h*d) the queries Q = X W_Q

It hooks the model's small named modules and copies what flows through them; when the
`with` block ends the hooks are removed. The model computes exactly what it computes
untraced (the logits are bit-identical), and it keeps no recorded state itself.

Names are module paths, with suffixes:
  <module>              the module's output (embeddings, projections, norms, activations, blocks)
  <module>.in           its first input (a norm's input is the residual sum it normalises;
                        W_O's input is the heads' outputs concatenated)
  <core>.q/.k/.v/.mask  what `attention` receives, split into heads: (B, h, T, d) (k and v
                        shared across a group's query heads), the mask as it applies
  <core>.out/.probs     each head's output softmax(...)V and its probabilities
  <core>.scores/.scaled/.masked   QKᵀ, QKᵀ/sqrt(d_k), and the scores after the mask
A module called several times (a decoder stepping through a translation) keeps every
call: `trace.all(name)` lists them, `trace[name]` is the last.

While a Trace is open its model counts as observed (`observe`), so generation runs every
step through the readable modules, where the hooks see it, instead of the fast path
(glassformer.fast.accelerate).
Hooks of your own see every step the same way inside `with observe(model):`.

`Trace(model, names=...)` records only what it is asked for: a collection of names, or a
predicate on a name. Modules that can produce none of them are not hooked: a 124M model on
512 tokens keeps a few MB instead of about a GB.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Callable, Collection, Iterator

import torch
import torch.nn as nn

from glassformer.model.layers import FeedForward, MultiHeadAttention, Tap

_observers: weakref.WeakKeyDictionary[nn.Module, int] = weakref.WeakKeyDictionary()  # model -> open observations


@contextlib.contextmanager
def observe(model: nn.Module) -> Iterator[nn.Module]:
    """Marks `model` as observed for the duration: code that could compute around its modules
    (generation's fast path) runs through them instead, so forward hooks see every step."""
    _observers[model] = _observers.get(model, 0) + 1
    try:
        yield model
    finally:
        _observers[model] -= 1
        if not _observers[model]:
            del _observers[model]


def observed(model: nn.Module) -> bool:
    """Whether an `observe` block (a Trace, for one) is open on `model`."""
    return model in _observers


CORE_STEPS = ("q", "k", "v", "mask", "scores", "scaled", "masked", "probs", "out")  # what `attention` taps


def record_names(name: str, module: nn.Module) -> list[str]:
    """The names a Trace can record through its hook on the module at path `name` (see the module
    docstring): an attention core's (a Tap's) are the steps `attention` passes through it."""
    if isinstance(module, Tap):
        return [f"{name}.{step}" for step in CORE_STEPS]
    return [name, f"{name}.in"]


class Trace:
    """Records named intermediates of the model's forward passes while the `with` block is open.

    Args:
        model: the module to observe.
        names: what to record: None (everything, the default), a collection of record names
            (e.g. {"blocks.0.in", "blocks.0.self_attn.core.out"}), or a predicate name -> bool.
    """

    def __init__(self, model: nn.Module, names: Collection[str] | Callable[[str], bool] | None = None):
        self.model = model
        self.records: dict[str, list[torch.Tensor]] = {}
        self._handles: list = []
        if names is None or callable(names):
            self._wanted = names
        else:
            wanted = frozenset(names)
            self._wanted = wanted.__contains__

    # -- recording --------------------------------------------------------------------------

    def wants(self, name: str) -> bool:
        """Whether this trace records `name`."""
        return self._wanted is None or bool(self._wanted(name))

    def _keep(self, name: str, value) -> None:
        if isinstance(value, torch.Tensor) and self.wants(name):
            self.records.setdefault(name, []).append(value.detach().clone())

    def _hook(self, name: str, module: nn.Module):
        def record(mod, args, output):
            if isinstance(mod, Tap):  # args = (step name, tensor)
                self._keep(f"{name}.{args[0]}", output)
            else:
                if args and isinstance(args[0], torch.Tensor):
                    self._keep(f"{name}.in", args[0])
                self._keep(name, output)

        return record

    def __enter__(self) -> Trace:
        self._observation = observe(self.model)
        self._observation.__enter__()
        for name, module in self.model.named_modules():
            if not name or isinstance(module, (nn.ModuleList, FeedForward, MultiHeadAttention, nn.Dropout)):
                continue  # containers: their parts are recorded one by one
            if self._wanted is not None and not any(map(self.wants, record_names(name, module))):
                continue  # nothing asked for comes out of it
            self._handles.append(module.register_forward_hook(self._hook(name, module)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._observation.__exit__(*exc)

    # -- reading ----------------------------------------------------------------------------

    def __contains__(self, name: str) -> bool:
        return name in self.records

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.records:
            raise KeyError(f"nothing recorded as {name!r}; recorded: {', '.join(list(self.records)[:8])}, ...")
        return self.records[name][-1]

    def all(self, name: str) -> list[torch.Tensor]:
        return self.records.get(name, [])

    def names(self) -> list[str]:
        return list(self.records)

    def __repr__(self) -> str:
        return f"Trace({type(self.model).__name__}, {len(self.records)} names recorded)"


__all__ = ["Trace", "observe", "observed", "record_names"]
