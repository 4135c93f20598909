"""kill -9 at random moments of runs that checkpoint at every step, twenty times over: a run
always loads, always resumes, and no temporary file outlives the next start (issue 11)."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import glassformer

ARGS = ["--preset", "gpt-tiny", "--set", "block_size=16", "--set", "eval_interval=1", "--set", "eval_iters=1",
        "--set", "log_interval=1"]

# A process that has imported torch and the command once, then forks a fresh process for each
# start: a start then costs a fork, not the 5-6 s of imports a training command makes on a slow
# CPU (Python, torch, torch's dynamo, matplotlib), and the killed processes are still whole
# training runs of their own. It runs no tensor op before it forks, so no OpenMP thread exists to
# be lost in a child. One JSON line in, one line out: {"argv": [...], "stderr": path} -> the
# child's pid; {"wait": pid} -> its exit status (-9 for a kill).
FORK_SERVER = r"""
import json, os, sys
import torch, torch._dynamo  # torch's optimizers load dynamo when first built: 3 s here
import matplotlib
matplotlib.use("Agg")  # as glassformer.plots draws the run's loss
import matplotlib.pyplot
import glassformer.cli, glassformer.training.lm, glassformer.training.trainer, glassformer.plots
for line in sys.stdin:
    ask = json.loads(line)
    if "wait" in ask:
        print(os.waitstatus_to_exitcode(os.waitpid(ask["wait"], 0)[1]), flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        err = os.open(ask["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0), os.dup2(null, 1), os.dup2(err, 2)
        sys.stdin, sys.stdout = open(0), open(1, "w")
        sys.stderr = open(2, "w", buffering=1)  # line by line, as PYTHONUNBUFFERED=1 gives a real start
        code = 1
        try:
            code = glassformer.cli.main(ask["argv"])
        finally:
            sys.stderr.flush()
            os._exit(code or 0)
    print(pid, flush=True)
"""


class ForkServer:
    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-c", FORK_SERVER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)

    def ask(self, request: dict) -> int:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def close(self, children: list[int]):
        """Ends the server; its children not yet reaped (a failed round's) are killed first."""
        for pid in children:
            os.kill(pid, signal.SIGKILL)  # not reaped yet, so the pid is still the child's
            self.ask({"wait": pid})
        self.process.stdin.close()
        self.process.wait(timeout=30)


def first_line(path, timeout: float = 120) -> str:
    """The first line a child wrote to its stderr file, once it is whole, past the warning a resumed
    run gives when its last writer was killed while saving (glassformer.checkpoint.publish_again)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = path.read_text() if path.exists() else ""
        lines = [line for line in text.split("\n")[:-1] if not line.startswith("glassformer: warning: ")]
        if lines:
            return lines[0]
        time.sleep(0.01)
    return path.read_text() if path.exists() else ""


def start(out, data, *flags):
    command = [sys.executable, "-m", "glassformer", "train", "lm", "--data", str(data), "--out", str(out), *ARGS,
               *flags]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_twenty_kill_9_at_random_moments_lose_nothing(tmp_path):
    # Two runs side by side, ten kills each, each start forked from a process that imported
    # everything once (ForkServer); the last start of each is a whole `python -m glassformer`.
    data = tmp_path / "text.txt"
    data.write_text("the quick brown fox jumps over the lazy dog.\n" * 200, encoding="utf-8")
    runs = [tmp_path / "run-a", tmp_path / "run-b"]
    rng = random.Random(0)
    server, started = ForkServer(), []
    try:
        kill_and_restart(server, started, runs, data, tmp_path, rng)
    finally:
        server.close([pid for pid, _ in started])
    # One last start finishes each run: it resumes, and no temporary file is left anywhere in it.
    assert all((out / "resume.pt").exists() for out in runs)
    finishing = [start(out, data, "--resume", "--set", "max_iters=1") for out in runs]  # evaluate and stop
    for out, process in zip(runs, finishing):
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert not [path for path in out.rglob("*") if path.name.endswith(".tmp")]
        model, tokenizer = glassformer.load(out)
        assert tokenizer is not None and model.config.vocab_size == tokenizer.vocab_size


def kill_and_restart(server, started, runs, data, tmp_path, rng):
    """Ten rounds: each run started (resumed once it has a checkpoint), killed at a random moment
    after its first evaluation, and loaded; `started` holds the (pid, stderr file) of each process
    started and not yet reaped, for the caller to kill should a round fail."""
    for kill in range(10):
        for out in runs:
            if kill == 0:
                flags = ["--set", "max_iters=1000000"]
            elif (out / "resume.pt").exists():
                flags = ["--resume"]
            else:  # killed before its first checkpoint: start again
                flags = ["--overwrite", "--set", "max_iters=1000000"]
            err = tmp_path / f"{out.name}-{kill}.err"
            argv = ["train", "lm", "--data", str(data), "--out", str(out), *ARGS, *flags]
            started.append((server.ask({"argv": argv, "stderr": str(err)}), err))
        for _, err in started:
            line = first_line(err)  # its first evaluation: training has started, checkpoints are written
            assert line.startswith("iter "), err.read_text()
        for pid, _ in started:
            time.sleep(rng.uniform(0.0, 0.3))
            os.kill(pid, signal.SIGKILL)
        for out in runs:
            pid, _ = started.pop(0)  # reaped below: not one to kill should the test fail after this
            assert server.ask({"wait": pid}) == -signal.SIGKILL
            if (out / "config.json").exists():
                glassformer.load(out)  # whatever moment it died at, the run loads
