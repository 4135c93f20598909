"""kill -9 at random moments of runs that checkpoint at every step, twenty times over: a run
always loads, always resumes, and no temporary file outlives the next start (issue 11)."""

import os
import random
import signal
import subprocess
import sys
import time

import glassformer


def start(out, data, *flags):
    command = [sys.executable, "-m", "glassformer", "train", "lm", "--data", str(data), "--out", str(out),
               "--preset", "gpt-tiny", "--set", "block_size=16", "--set", "eval_interval=1", "--set", "eval_iters=1",
               "--set", "log_interval=1", *flags]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_twenty_kill_9_at_random_moments_lose_nothing(tmp_path):
    # Two runs side by side, ten kills each: the starts (Python and torch importing) overlap.
    data = tmp_path / "text.txt"
    data.write_text("the quick brown fox jumps over the lazy dog.\n" * 200, encoding="utf-8")
    runs = [tmp_path / "run-a", tmp_path / "run-b"]
    rng = random.Random(0)
    for kill in range(10):
        processes = []
        for out in runs:
            if kill == 0:
                flags = ["--set", "max_iters=1000000"]
            elif (out / "resume.pt").exists():
                flags = ["--resume"]
            else:  # killed before its first checkpoint: start again
                flags = ["--overwrite", "--set", "max_iters=1000000"]
            processes.append(start(out, data, *flags))
        for process in processes:
            line = process.stderr.readline()  # its first evaluation: training has started, checkpoints are written
            assert line.startswith("iter "), line + process.stderr.read()
        for process in processes:
            time.sleep(rng.uniform(0.0, 0.3))
            process.send_signal(signal.SIGKILL)
        for out, process in zip(runs, processes):
            process.wait(timeout=30)
            assert process.returncode == -signal.SIGKILL
            if (out / "config.json").exists():
                glassformer.load(out)  # whatever moment it died at, the run loads
    for out in runs:
        # One last start finishes the run: it resumes, and no temporary file is left anywhere in it.
        assert (out / "resume.pt").exists()
        process = start(out, data, "--resume", "--set", "max_iters=1")  # already passed: evaluate and stop
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert not [path for path in out.rglob("*") if path.name.endswith(".tmp")]
        model, tokenizer = glassformer.load(out)
        assert tokenizer is not None and model.config.vocab_size == tokenizer.vocab_size
