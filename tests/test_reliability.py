"""Fault injection: kill -9 at random moments (and in the middle of checkpoint writes),
a full disk, unwritable outputs. Nothing finished may be lost, and a resumed run must end
bit-identical to an uninterrupted one."""

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import wwgan
from conftest import tiny_config

ROOT = Path(wwgan.__file__).resolve().parent
TRAIN_ARGS = [
    "train",
    "--dataset",
    "shapes",
    "--image-size",
    "16",
    "--width",
    "16",
    "--batch-size",
    "8",
    "--n-critic",
    "2",
    "--max-images",
    "64",
    "--iterations",
    "80",
    "--checkpoint-every",
    "3",
    "--log-every",
    "1",
    "--sample-every",
    "50",
    "--no-progress",
    "--loss",
    "wwgan",
]

# Runs the CLI; with KILL_DURING_SAVE=k it SIGKILLs itself in the middle of writing the
# k-th checkpoint (after part of the bytes reached the temporary file).
HARNESS = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
import torch, wwgan
kill_at = int(os.environ.get("KILL_DURING_SAVE", "0"))
real_save, calls = torch.save, [0]
def dying_save(obj, f, *args, **kwargs):
    calls[0] += 1
    if calls[0] == kill_at:
        f.write(b"partial checkpoint" * 500)
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)
torch.save = dying_save
wwgan.main(sys.argv[1:])
"""


def final_weights(out):
    checkpoint = wwgan.load_checkpoint(Path(out) / "checkpoint.pt")
    assert checkpoint["iteration"] == 80
    return {
        **{"g." + k: v for k, v in checkpoint["generator"].items()},
        **{"d." + k: v for k, v in checkpoint["critic"].items()},
        **{"opt." + k: v for k, v in checkpoint["critic_opt"]["state"][0].items()},
    }


def start(harness, out, kill_during_save=0):
    env = {**os.environ, "KILL_DURING_SAVE": str(kill_during_save), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(harness), *TRAIN_ARGS, "--out", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_training(out, proc, timeout=120):
    """Block until the run has logged a new metrics row (so a kill lands in training)."""
    metrics = Path(out) / "metrics.jsonl"
    before = metrics.stat().st_size if metrics.exists() else 0
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.stat().st_size > before:
            return
        time.sleep(0.02)


def test_kill_9_at_ten_moments_resumes_bit_identically(tmp_path):
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)
    reference = start(harness, tmp_path / "reference")
    assert reference.wait(timeout=600) == 0, reference.stderr.read()

    out, rng, kills = tmp_path / "killed", random.Random(0), []
    # 7 kills at random moments of training, 3 in the middle of a checkpoint write
    plan = ["random"] * 7 + ["save"] * 3
    rng.shuffle(plan)
    for kind in plan:
        proc = start(harness, out, kill_during_save=rng.randint(2, 4) if kind == "save" else 0)
        if kind == "random":
            wait_for_training(out, proc)
            time.sleep(rng.uniform(0.0, 0.4))
            proc.send_signal(signal.SIGKILL)
        returncode = proc.wait(timeout=600)
        if returncode == 0:
            break  # finished before the kill landed; the comparison below still holds
        assert returncode == -signal.SIGKILL, proc.stderr.read()
        kills.append(kind)
    assert len(kills) >= 8, kills
    assert "save" in kills
    last = start(harness, out)
    assert last.wait(timeout=600) == 0, last.stderr.read()

    want, got = final_weights(tmp_path / "reference"), final_weights(out)
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key
    assert not list(out.glob(".*tmp*")), "stale temporary checkpoint files were not removed"
    iterations = [
        int(line.split('"iteration": ')[1].split(",")[0])
        for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    assert iterations == sorted(set(iterations)) and iterations[-1] == 80


def test_full_disk_during_checkpoint_keeps_last_good_one(tmp_path, monkeypatch):
    real_save, calls = torch.save, {"n": 0}

    def full_disk_save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the third checkpoint write (iteration 6)
            f.write(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk_save)
    with pytest.raises(wwgan.WWGANError, match="could not write .*checkpoint.pt: No space left"):
        wwgan.train(tiny_config(tmp_path, n_critic=1, checkpoint_every=2), progress=False)
    assert wwgan.load_checkpoint(tmp_path / "checkpoint.pt")["iteration"] == 4
    assert wwgan.load_checkpoint(tmp_path / "checkpoint.prev.pt")["iteration"] == 2
    assert not list(tmp_path.glob(".*tmp*"))
    monkeypatch.setattr(torch, "save", real_save)
    assert (
        wwgan.train(tiny_config(tmp_path, n_critic=1, checkpoint_every=2), progress=False).iteration
        == 6
    )  # resumes afterwards


def test_killed_between_the_two_renames_resumes_from_previous(tmp_path, capsys):
    wwgan.train(tiny_config(tmp_path, n_critic=1, checkpoint_every=2, iterations=4), progress=False)
    os.replace(tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt")
    assert (
        wwgan.train(tiny_config(tmp_path, n_critic=1, checkpoint_every=2), progress=False).iteration
        == 6
    )
    assert "resuming from" in capsys.readouterr().err
