"""Matmul speed on this CPU, path by path: MKL's sgemm (torch.mm in fp32), oneDNN, and thread/ISA settings.

    python bench/matmul_peak.py                 # every path on a square 2048 matmul and the training step's shapes
    python bench/matmul_peak.py --no-env        # without the runs under other MKL/OpenMP settings
    python bench/matmul_peak.py --shapes square # only the square matmul

torch.mm in fp32 calls MKL's sgemm (MKL_VERBOSE=1 shows SGEMM), and so does F.linear (a Linear's
call, its weight read transposed: another layout, timed as its own path); in bf16 both call oneDNN's
brgemm (ONEDNN_VERBOSE=1 shows brg_matmul:avx512_core_bf16). oneDNN's fp32 kernel is reached
through torch.ops.mkldnn._linear_pointwise (the op torch.compile's CPU backend uses for a Linear;
ONEDNN_VERBOSE shows brg_matmul:avx512_core), MKL's packed sgemm through torch.ops.mkl._mkl_linear.
Every path is checked against torch.mm on the same operands before it is timed.

The training step's shapes are those of bench/train_step.py's two shapes, M = batch x block tokens:
each Linear's forward (M, K) x (K, N), its input gradient (M, N) x (N, K) and its weight gradient
(N, M) x (M, K). The runs under other settings (MKL_ENABLE_INSTRUCTIONS, MKL_DEBUG_CPU_TYPE,
MKL_CBWR, one thread) start a fresh process each, since MKL and OpenMP read them once.

The issue rate of the cores is measured by bench/fma_peak.c (compiled with gcc where there is
one): independent FMA chains with no memory traffic, the most any matmul could reach. One JSON
line per result; the best of the runs is the figure (a peak). About 2 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, timed_runs  # noqa: E402

HERE = Path(__file__).resolve().parent

# (tokens M, d_model, d_ff) of bench/train_step.py's shapes, and the model's Linear layers as (K in, N out).
STEP_SHAPES = {"cpu": (12 * 64, 128, 512), "medium": (8 * 256, 384, 1536)}

# Settings a fresh process is started with: what MKL and OpenMP read at start-up.
ENVIRONMENTS = {
    "one thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "MKL_ENABLE_INSTRUCTIONS=AVX512": {"MKL_ENABLE_INSTRUCTIONS": "AVX512"},
    "MKL_ENABLE_INSTRUCTIONS=AVX2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "MKL_DEBUG_CPU_TYPE=5": {"MKL_DEBUG_CPU_TYPE": "5"},
    "MKL_CBWR=AVX512": {"MKL_CBWR": "AVX512"},
    "MKL_CBWR=AVX2": {"MKL_CBWR": "AVX2"},
}


def linears(d_model: int, d_ff: int) -> dict[str, tuple[int, int]]:
    """The step's Linear layers: name -> (in, out)."""
    return {"qkv": (d_model, 3 * d_model), "q/k/v/o": (d_model, d_model), "up": (d_model, d_ff),
            "down": (d_ff, d_model), "lm_head": (d_model, 65)}


def problems(which: str) -> list[tuple[str, int, int, int]]:
    """(name, M, K, N) of every matmul to time: (M, K) x (K, N)."""
    out = [("square", 2048, 2048, 2048)]
    if which == "square":
        return out
    for shape, (m, d_model, d_ff) in STEP_SHAPES.items():
        for name, (k, n) in linears(d_model, d_ff).items():
            out += [(f"{shape} {name} forward", m, k, n), (f"{shape} {name} grad input", m, n, k),
                    (f"{shape} {name} grad weight", n, m, k)]
    return out


def paths(dtype: torch.dtype) -> dict:
    """name -> (prepare(a, b) -> operands, run(*operands) -> a @ b), for (M, K) x (K, N) inputs."""

    def plain(a, b):
        return a, b

    def as_linear(a, b):
        return a, b.t().contiguous()  # a Linear's weight: (N, K)

    def mkl_packed(a, b):
        w = b.t().contiguous()
        return a, torch.ops.mkl._mkl_reorder_linear_weight(w, a.size(0)), w

    # torch.mm multiplies (K, N)-contiguous operands; F.linear is what a Linear calls, with the weight
    # (N, K) read transposed: in fp32 both are MKL's sgemm (on a Zen 4 within a few % of each other).
    chosen = {"torch.mm": (plain, torch.mm),
              "F.linear": (as_linear, torch.nn.functional.linear),
              "onednn linear": (as_linear, lambda a, w: torch.ops.mkldnn._linear_pointwise(a, w, None, "none", [], ""))}
    if dtype == torch.float32 and torch.backends.mkl.is_available():
        chosen["mkl packed linear"] = (mkl_packed, lambda a, p, w: torch.ops.mkl._mkl_linear(a, p, w, None, a.size(0)))
    return chosen


def best_gflops(run, operands, flop: float, budget_s: float, repeat: int = 50) -> tuple[float, float]:
    """(best, median) GFLOP/s of `run(*operands)`: two warm-up runs, then runs until `repeat` or `budget_s`."""
    run(*operands), run(*operands)
    seconds = sorted(timed_runs(lambda: run(*operands), repeat, budget_s, at_least=3))
    return flop / seconds[0] / 1e9, flop / seconds[len(seconds) // 2] / 1e9


def mkl_view() -> dict:
    """What MKL says about this CPU, from functions its library exports (a diagnostic: {} where absent)."""
    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        return {"mkl_is_intel_cpu": lib.mkl_serv_intel_cpu(), "mkl_is_zen": lib.mkl_serv_cpuiszen(),
                "mkl_cbwr_auto_branch": lib.mkl_serv_cbwr_get_auto_branch()}
    except (OSError, AttributeError):
        return {}


def measure(which: str, dtypes: list[str], budget_s: float, label: str) -> None:
    torch.manual_seed(0)
    for dtype_name in dtypes:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
        for name, m, k, n in problems(which):
            a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
            reference = torch.mm(a.double(), b.double())
            for path, (prepare, run) in paths(dtype).items():
                operands = prepare(a, b)
                tol = 1e-3 * k ** 0.5 if dtype == torch.float32 else 3e-2 * k ** 0.5  # rounding grows ~ sqrt(K)
                err = (run(*operands).double() - reference).abs().max().item()
                assert err < tol, (path, name, err)
                best, median = best_gflops(run, operands, 2 * m * k * n, budget_s)
                emit({"bench": "matmul_peak", "settings": label, "dtype": dtype_name, "path": path, "matmul": name,
                      "m": m, "k": k, "n": n, "gflops_best": round(best, 1), "gflops_median": round(median, 1)})


def fma_issue_rate() -> dict | None:
    """bench/fma_peak.c's JSON lines (compiled with gcc into a temporary directory), or None without gcc."""
    if shutil.which("gcc") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "fma_peak"
        subprocess.run(["gcc", "-O2", "-fopenmp", "-o", str(binary), str(HERE / "fma_peak.c")], check=True)
        lines = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout.splitlines()
    return [json.loads(line) for line in lines]


def nominal_peak() -> dict:
    """The cores' fp32 FLOP/s at the clock the OS reports (cpu MHz), for two 256-bit FMA pipes per core.

    32 FLOP per cycle per core is Zen 3's and Zen 4's rate (Zen 4 splits a 512-bit FMA into two
    256-bit halves, so AVX-512 does not raise it); a core with two 512-bit FMA units issues 64.
    """
    mhz = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
           if line.startswith("cpu MHz")] if Path("/proc/cpuinfo").exists() else []
    cores = len(os.sched_getaffinity(0))
    ghz = max(mhz) / 1000 if mhz else None
    return {"cores": cores, "reported_ghz": ghz,
            "nominal_fp32_gflops_2x256bit_fma": None if ghz is None else round(cores * 32 * ghz, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", choices=["all", "square"], default="all")
    parser.add_argument("--budget", type=float, default=0.25, help="seconds of timed runs per path and matmul")
    parser.add_argument("--no-env", action="store_true", help="skip the runs under other MKL/OpenMP settings")
    parser.add_argument("--child", metavar="LABEL", help=argparse.SUPPRESS)  # one run under other settings
    args = parser.parse_args()
    from glassformer.base.device import native_bf16

    dtypes = ["fp32", "bf16"] if native_bf16(torch.device("cpu")) else ["fp32"]
    if args.child:
        emit({"bench": "matmul_peak", "what": "machine", "settings": args.child, **mkl_view()})
        measure(args.shapes, dtypes, args.budget, args.child)
        return
    emit({"bench": "matmul_peak", "what": "machine", **nominal_peak(), **mkl_view(),
          "fma_peak": fma_issue_rate()})
    measure(args.shapes, dtypes, args.budget, "default")
    if not args.no_env:
        for label, env in ENVIRONMENTS.items():  # the square matmul is enough to see a difference
            subprocess.run([sys.executable, __file__, "--child", label, "--shapes", "square", "--budget",
                            str(args.budget)], env={**os.environ, **env}, check=True)


if __name__ == "__main__":
    main()
