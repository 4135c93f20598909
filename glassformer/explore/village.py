"""The explorer's first GPT: a small character-level model of the bundled village stories.

`glassformer explore` with no --model opens on this GPT (beside the articles' translation
example), so the next-token controls are there on the first run. Its weights ship in the
package (glassformer/explore/village/, about 1.7 MB of float32 safetensors); this module is how
they were made, and makes them again:

    python -m glassformer.explore.village --rebuild          # retrains (one thread, seeded) into the package
    python -m glassformer.explore.village --rebuild --out D  # ... into D, and compares with the shipped weights

The recipe is the library's own `train_lm` on `bundled_corpus()` (text this project writes
itself), nanoGPT's CPU settings (`shakespeare-char-cpu`) cut to two layers of width 128: learned
positions, LayerNorm and GELU, the articles' GPT-2 form. On one thread the run is bit for bit the
same on the same torch build; another build or CPU may differ in the last bits of float32 sums,
which the comparison reports as the largest weight difference and the two models' loss.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

FOLDER = Path(__file__).resolve().parent / "village"  # what the package ships
NAME = "village GPT"
EXAMPLE = "NORA: Good evening, Mira. What will you"  # the page's first text: a line the stories might hold
PRESET = "shakespeare-char-cpu"
OVERRIDES = ["n_layer=2", "n_head=4", "n_embd=128", "block_size=128", "max_iters=1500", "lr_decay_iters=1500",
             "batch_size=16", "eval_interval=500", "eval_iters=10", "seed=1337", "device=cpu", "dtype=float32",
             "log_interval=100"]
SHIPPED = ("config.json", "model.safetensors", "tokenizer.json")


def folder() -> Path:
    """The shipped model's folder (glassformer.load reads it); ValueError where the package lacks it."""
    if not all((FOLDER / name).is_file() for name in SHIPPED):
        raise ValueError(f"the village GPT is missing from {FOLDER}: rebuild it with "
                         "python -m glassformer.explore.village --rebuild")
    return FOLDER


def subject():
    """(the village GPT as an explain Subject, its name), loaded from the package."""
    from glassformer.explain.walkthrough import load_subject

    loaded = load_subject(folder())
    loaded.example = EXAMPLE
    return loaded, NAME


def rebuild(out: Path) -> dict:
    """Trains the village GPT into `out` (its config, weights and tokenizer only); returns the run's metrics."""
    import torch

    from glassformer.training.lm import train_lm

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same sums in the same order every time
    try:
        with tempfile.TemporaryDirectory() as run:
            metrics = train_lm(Path(run) / "run", preset=PRESET, overrides=OVERRIDES, progress=False)
            out.mkdir(parents=True, exist_ok=True)
            for name in SHIPPED:
                shutil.copyfile(Path(run) / "run" / name, out / name)
    finally:
        torch.set_num_threads(threads)
    return metrics


def compare(a: Path, b: Path) -> float:
    """The largest absolute difference between two folders' weights (0.0: bit for bit)."""
    from safetensors.torch import load_file

    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    if x.keys() != y.keys():
        raise ValueError(f"{a} and {b} hold different tensors")
    return max(float((x[k].double() - y[k].double()).abs().max()) for k in x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m glassformer.explore.village", description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild", action="store_true", help="train the village GPT again")
    parser.add_argument("--out", help="where to write it (default: the package's own folder)")
    args = parser.parse_args(argv)
    if not args.rebuild:
        parser.print_help()
        return 0
    out = Path(args.out) if args.out else FOLDER
    shipped = None
    if out.resolve() != FOLDER.resolve() and (FOLDER / "model.safetensors").is_file():
        shipped = FOLDER
    metrics = rebuild(out)
    print(f"village GPT written to {out}: validation loss {metrics.get('val_loss', float('nan')):.4f}")
    if shipped is not None:
        print(f"largest weight difference from the shipped model: {compare(out, shipped):.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
