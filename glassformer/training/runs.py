"""A run's settings: a preset with `--set key=value` overrides, or the saved settings of a run being resumed.

One `--set` list holds both model and training keys; `split_overrides` sends each key to the
config that has it, and `glassformer.model.config.apply_overrides` checks its value against the
field's type.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from glassformer.checkpoint import CONFIG_FILE, CheckpointError, read_json
from glassformer.model.config import MODEL_TYPES, PRESETS, ModelConfig, apply_overrides, config_from_dict, override_key
from glassformer.training.trainer import TrainConfig


def saved_train_config(meta: dict, path: Path) -> TrainConfig:
    """The training settings in a run's config.json (its "train" object), checked; defaults where there is none.

    Args:
        meta: the parsed config.json.
        path: its path, named in the one-line error.

    Returns:
        The TrainConfig.
    """
    train = meta.get("train", {})
    if not isinstance(train, dict):
        raise CheckpointError(f"{path}: key 'train' must hold the training settings (a JSON object); got {train!r}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(train) - known)
    if unknown:
        raise CheckpointError(f"{path}: unknown training keys in 'train': {', '.join(unknown)}")
    try:
        return TrainConfig(**train)
    except ValueError as e:
        raise CheckpointError(f"{path}: train.{e}") from None


def split_overrides(assignments: list[str], *configs) -> list[list[str]]:
    """Routes each key=value to the first config that has the key.

    Args:
        assignments: "key=value" strings.
        configs: config dataclasses, in order of preference.

    Returns:
        One list of assignments per config; keys no config has go to the last (which then rejects them).
    """
    routed: list[list[str]] = [[] for _ in configs]
    for a in assignments:
        key = override_key(a)
        index = next((i for i, c in enumerate(configs) if key in {f.name for f in dataclasses.fields(c)}),
                     len(configs) - 1)
        routed[index].append(a)
    return routed


def configs_for_run(preset: str, overrides: list[str], model_cls: type) -> tuple[ModelConfig, TrainConfig]:
    """A preset's model and training settings with `--set key=value` overrides applied.

    Args:
        preset: a name in glassformer.model.config.PRESETS.
        overrides: "key=value" strings, model and training keys mixed.
        model_cls: GPTConfig or Seq2SeqConfig: the kind of model the command trains.

    Returns:
        (model config, training config).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    entry = PRESETS[preset]
    if not isinstance(entry.model, model_cls):
        raise ValueError(f"preset {preset!r} is for another kind of model ({type(entry.model).__name__})")
    train_cfg = TrainConfig(**entry.train)
    train_sets, model_sets = split_overrides(list(overrides), train_cfg, entry.model)
    return apply_overrides(entry.model, model_sets), apply_overrides(train_cfg, train_sets)


def resumed_configs(out: Path, overrides: list[str], model_cls: type) -> tuple[ModelConfig, TrainConfig, dict]:
    """An existing run's model and training settings; --set may change training keys only.

    Args:
        out: the run directory (it must hold resume.pt and config.json).
        overrides: "key=value" strings; model keys must repeat the saved values.
        model_cls: GPTConfig or Seq2SeqConfig.

    Returns:
        (model config, training config with the overrides applied, the run's config.json).
    """
    if not (out / "resume.pt").exists():
        raise ValueError(f"{out / 'resume.pt'} not found: nothing to resume (train without --resume to start)")
    meta = read_json(out / CONFIG_FILE)
    values = meta.get("config")
    if not isinstance(values, dict):
        raise CheckpointError(f"{out / CONFIG_FILE}: key 'config' must hold the model settings (a JSON object); "
                              f"got {values!r}")
    try:
        model_cfg = config_from_dict(next(k for k, v in MODEL_TYPES.items() if v is model_cls), values)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{out / CONFIG_FILE}: {e}") from None
    train_cfg = saved_train_config(meta, out / CONFIG_FILE)
    train_sets, model_sets = split_overrides(list(overrides), train_cfg, model_cfg)
    # The command that started the run may be repeated with --resume: model settings that
    # agree with the saved ones are fine, a different model is not.
    wanted = apply_overrides(model_cfg, model_sets)
    changed = [f.name for f in dataclasses.fields(model_cfg) if getattr(wanted, f.name) != getattr(model_cfg, f.name)]
    if changed:
        raise ValueError(f"a resumed run keeps its model; cannot change {', '.join(changed)}")
    return model_cfg, apply_overrides(train_cfg, train_sets), meta
