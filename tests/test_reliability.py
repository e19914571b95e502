"""Fault injection: kill -9 at random moments (and in the middle of checkpoint writes),
a full disk, unwritable outputs. Nothing finished may be lost, and a resumed run must end
bit-identical to an uninterrupted one."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
import torch

import wwgan
from conftest import CRASH_HARNESS, files_with_times, one_error_line, tiny_config

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
    "--device",  # bit-identity across processes is what the CPU promises; `auto` would
    "cpu",  # train on CUDA on a GPU machine (cuDNN autotuning, nondeterministic kernels)
]

# Runs the CLI; with KILL_DURING_SAVE=k it SIGKILLs itself in the middle of writing the
# k-th checkpoint (after part of the bytes reached the temporary file). With SIGNAL=NAME it
# sends itself that signal in the c-th critic step (SIGNAL_AT_CRITIC_STEP=c) or in the
# middle of the k-th checkpoint write (SIGNAL_DURING_SAVE=k, twice with SIGNAL_TWICE=1).
HARNESS = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
import torch, wwgan
env = lambda name: int(os.environ.get(name, "0"))
kill_at, signal_save, signal_step = (
    env("KILL_DURING_SAVE"), env("SIGNAL_DURING_SAVE"), env("SIGNAL_AT_CRITIC_STEP")
)
sig = getattr(signal, os.environ.get("SIGNAL", "SIGTERM"))
real_save, real_step, saves, steps = torch.save, wwgan.critic_step, [0], [0]
def dying_save(obj, f, *args, **kwargs):
    saves[0] += 1
    if saves[0] in (kill_at, signal_save):
        f.write(b"partial checkpoint" * 500)
        f.flush()
        if saves[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        for _ in range(1 + env("SIGNAL_TWICE")):
            os.kill(os.getpid(), sig)
        f.seek(0)
        f.truncate()
    return real_save(obj, f, *args, **kwargs)
def signalled_step(*args, **kwargs):
    steps[0] += 1
    if steps[0] == signal_step:
        os.kill(os.getpid(), sig)
    return real_step(*args, **kwargs)
torch.save, wwgan.critic_step = dying_save, signalled_step
wwgan.main(sys.argv[1:])
"""


def final_weights(out, iterations=80):
    checkpoint = wwgan.load_checkpoint(Path(out) / "checkpoint.pt")
    assert checkpoint["iteration"] == iterations
    return {
        **{"g." + k: v for k, v in checkpoint["generator"].items()},
        **{"d." + k: v for k, v in checkpoint["critic"].items()},
        **{"opt." + k: v for k, v in checkpoint["critic_opt"]["state"][0].items()},
    }


def start(harness, out, kill_during_save=0, args=(), **signal_env):
    env = {**os.environ, "KILL_DURING_SAVE": str(kill_during_save), "OMP_NUM_THREADS": "1"}
    env.update({k: str(v) for k, v in signal_env.items()})
    return subprocess.Popen(
        [sys.executable, str(harness), *TRAIN_ARGS, "--out", str(out), *args],
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
    wait_for_training(tmp_path / "reference", reference)
    began = time.monotonic()
    assert reference.wait(timeout=600) == 0, reference.stderr.read()
    # Random kills land within a twentieth of the uninterrupted run's training time, so ten
    # kills cannot let a run finish early on a fast machine (with a fixed 0.4 s window, a
    # machine twice as fast finished the run after 5 kills).
    window = min(0.4, (time.monotonic() - began) / 20)

    out, rng, kills = tmp_path / "killed", random.Random(0), []
    # 7 kills at random moments of training, 3 in the middle of a checkpoint write
    plan = ["random"] * 7 + ["save"] * 3
    rng.shuffle(plan)
    for kind in plan:
        proc = start(harness, out, kill_during_save=rng.randint(2, 4) if kind == "save" else 0)
        if kind == "random":
            wait_for_training(out, proc)
            time.sleep(rng.uniform(0.0, window))
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


# ---------------------------------------------------------------------------------------
# signals: checkpoint at the last finished iteration, exit EXIT_STOPPED, resume exactly
# ---------------------------------------------------------------------------------------
SHORT = ["--iterations", "12"]  # checkpoints at 3, 6, 9, 12; n_critic 2


@pytest.fixture(scope="module")
def short_reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("signals")
    harness = folder / "harness.py"
    harness.write_text(HARNESS)
    proc = start(harness, folder / "reference", args=SHORT)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    return harness, final_weights(folder / "reference", iterations=12)


@pytest.mark.parametrize(
    "sig, moment, at, stopped_after",
    [
        ("SIGTERM", "critic step", 9, 5),  # the 9th critic step is in iteration 5
        ("SIGINT", "critic step", 2, 1),
        ("SIGUSR1", "critic step", 15, 8),
        ("SIGTERM", "checkpoint write", 2, 6),  # the 2nd checkpoint is iteration 6's
    ],
)
def test_a_signal_checkpoints_the_iteration_it_interrupted_and_resume_is_exact(
    short_reference, tmp_path, sig, moment, at, stopped_after
):
    harness, want = short_reference
    out = tmp_path / "run"
    where = "SIGNAL_AT_CRITIC_STEP" if moment == "critic step" else "SIGNAL_DURING_SAVE"
    twice = int(moment == "checkpoint write")  # a second signal while the file is written
    proc = start(harness, out, args=SHORT, SIGNAL=sig, SIGNAL_TWICE=twice, **{where: at})
    assert proc.wait(timeout=600) == wwgan.EXIT_STOPPED
    err = proc.stderr.read()
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines[-1] == (
        f"wwgan: stopped by {sig} after iteration {stopped_after} of 12: checkpoint "
        f"{out / 'checkpoint.pt'}; rerun the same command to resume"
    )
    assert len(lines) == 1 + twice and (not twice or f"{sig} again" in lines[0]), err
    assert wwgan.load_checkpoint(out / "checkpoint.pt")["iteration"] == stopped_after
    if stopped_after > 3:
        previous = wwgan.load_checkpoint(out / "checkpoint.prev.pt")["iteration"]
        assert previous == 3 * ((stopped_after - 1) // 3)
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert [int(r.split('"iteration": ')[1].split(",")[0]) for r in rows] == list(
        range(1, stopped_after + 1)
    )  # flushed up to the stop, every row whole
    assert not list(out.glob(".*tmp*"))

    resumed = start(harness, out, args=SHORT)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    got = final_weights(out, iterations=12)
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key


def test_one_trainer_per_run_directory_and_a_killed_ones_is_free_at_once(tmp_path):
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)
    out = tmp_path / "run"
    holder = start(harness, out, args=["--iterations", "100000"])
    wait_for_training(out, holder)
    holder.send_signal(signal.SIGSTOP)  # holds its lock; writes nothing while we look
    try:
        before = files_with_times(out)
        second = start(harness, out)
        code, err = second.wait(timeout=120), second.stderr.read()
        line = one_error_line(code, err)
        assert line == (
            f"wwgan: error: run directory {out} is in use by another trainer (pid "
            f"{holder.pid}); wait for it to finish or stop it (it checkpoints on SIGTERM), "
            f"or pass another --out"
        )
        assert files_with_times(out) == before  # refused before writing anything
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    third = start(harness, out)  # kill -9 leaves no stale lock
    assert third.wait(timeout=600) == 0, third.stderr.read()
    assert wwgan.load_checkpoint(out / "checkpoint.pt")["iteration"] == 80


def test_checkpoint_minutes_adds_checkpoints_by_wall_clock(tmp_path, monkeypatch):
    clock, saved = [0.0], []
    real_save, real_generator_step = wwgan.RunDir.save_checkpoint, wwgan.generator_step

    def generator_step(*args, **kwargs):
        clock[0] += 4 * 60  # each iteration takes four minutes
        return real_generator_step(*args, **kwargs)

    def save(run, state):
        saved.append(state.iteration)
        real_save(run, state)

    monkeypatch.setattr(wwgan.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(wwgan, "generator_step", generator_step)
    monkeypatch.setattr(wwgan.RunDir, "save_checkpoint", save)
    wwgan.train(tiny_config(tmp_path / "timed", checkpoint_every=1000), progress=False)
    # 10 minutes pass during iteration 3, so iteration 4 checkpoints; then 6, the last
    assert saved == [4, 6]
    saved.clear()
    wwgan.train(
        tiny_config(tmp_path / "off", checkpoint_every=1000, checkpoint_minutes=0), progress=False
    )
    assert saved == [6]


def test_sigterm_stops_any_other_command_in_one_line(capsys):
    @click.command()
    def slow_step():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)

    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        wwgan.run_cli(slow_step, [], prog_name="slow-step")
    assert stopped.value.code == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert err.strip() == "wwgan: stopped by SIGTERM; rerun the same command to resume", err
    assert signal.getsignal(signal.SIGTERM) is handler


# ---------------------------------------------------------------------------------------
# verified checkpoints: digests, fallbacks that never rotate a bad file, no doubled rows
# ---------------------------------------------------------------------------------------


def flip_one_bit_in_a_tensor(path: Path) -> None:
    """Flip one bit inside the stored bytes of the largest tensor of a torch.save file
    (an uncompressed zip: the member's data starts after its local header)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = max(
            (i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size
        )
    data = bytearray(path.read_bytes())
    name_len, extra_len = (
        int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little"),
        int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little"),
    )
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_bit_is_caught_by_the_digest(tmp_path):
    wwgan.train(tiny_config(tmp_path, iterations=2, checkpoint_every=2), progress=False)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert checkpoint["sha256"] == wwgan.content_digest(
        {k: v for k, v in checkpoint.items() if k != "sha256"}
    )
    weight = next(iter(checkpoint["critic"].values()))
    weight.view(torch.int32).view(-1)[0] ^= 1  # the lowest mantissa bit of one weight
    torch.save(checkpoint, tmp_path / "checkpoint.pt")  # the stored digest is the old one
    with pytest.raises(wwgan.WWGANError, match="content does not match its checksum"):
        wwgan.load_checkpoint(tmp_path / "checkpoint.pt")


def test_bit_rot_in_the_checkpoint_resumes_from_the_previous_one_exactly(tmp_path, capsys):
    full = final_weights_of(wwgan.train(tiny_config(tmp_path / "full"), progress=False))
    out = tmp_path / "rotted"
    wwgan.train(tiny_config(out, iterations=4, checkpoint_every=2), progress=False)
    flip_one_bit_in_a_tensor(out / "checkpoint.pt")
    capsys.readouterr()
    resumed = wwgan.train(tiny_config(out, checkpoint_every=2), progress=False)
    err = capsys.readouterr().err
    assert (
        f"{out / 'checkpoint.pt'}:" in err
        and f"falling back to the previous checkpoint {out / 'checkpoint.prev.pt'}" in err
    )
    assert final_weights_of(resumed) == full  # bit-identical to the uninterrupted run
    # the bad file was never rotated into the previous slot: both files verify now
    assert wwgan.load_checkpoint(out / "checkpoint.prev.pt")["iteration"] == 4
    rows = [json.loads(x)["iteration"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows == sorted(set(rows)) == [1, 2, 4, 6]


def test_a_complete_first_checkpoint_whose_rename_was_killed_is_kept(tmp_path):
    wwgan.train(tiny_config(tmp_path, iterations=2, checkpoint_every=2), progress=False)
    os.replace(tmp_path / "checkpoint.pt", tmp_path / ".checkpoint.pt.tmp-99999")
    (tmp_path / "checkpoint.prev.pt").unlink(missing_ok=True)
    (tmp_path / ".checkpoint.pt.tmp-99998").write_bytes(b"torn")  # a torn one is swept
    state = wwgan.train(tiny_config(tmp_path, iterations=3, log_every=1), progress=False)
    assert state.iteration == 3 and not list(tmp_path.glob(".*tmp*"))
    rows = [
        json.loads(x)["iteration"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ]
    assert rows == [1, 2, 3]  # resumed at 2, not retrained from scratch


def test_a_kill_before_the_first_checkpoint_does_not_double_rows(tmp_path, monkeypatch):
    real_step, calls = wwgan.generator_step, [0]

    def dies_in_iteration_3(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    config = tiny_config(tmp_path, log_every=1, checkpoint_every=100)
    monkeypatch.setattr(wwgan, "generator_step", dies_in_iteration_3)
    with pytest.raises(KeyboardInterrupt):
        wwgan.train(config, progress=False)
    assert not (tmp_path / "checkpoint.pt").exists()
    monkeypatch.setattr(wwgan, "generator_step", real_step)
    wwgan.train(config, progress=False)
    rows = [
        json.loads(x)["iteration"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ]
    assert rows == [1, 2, 3, 4, 5, 6]


def test_nan_policy_skip_stops_when_the_weights_become_non_finite(tmp_path, monkeypatch):
    real_step = wwgan.critic_step

    def poisoned_step(config, generator, critic, *args, **kwargs):
        terms = real_step(config, generator, critic, *args, **kwargs)
        with torch.no_grad():
            next(critic.parameters()).fill_(float("nan"))  # finite loss, NaN weights
        return terms

    monkeypatch.setattr(wwgan, "critic_step", poisoned_step)
    with pytest.raises(wwgan.WWGANError, match="weights are non-finite at iteration 3"):
        wwgan.train(tiny_config(tmp_path, nan_policy="skip"), progress=False)
    assert not (tmp_path / "checkpoint.pt").exists()  # nothing non-finite was saved


def test_a_checkpoint_missing_a_key_is_one_line(tmp_path):
    wwgan.train(tiny_config(tmp_path, iterations=2, checkpoint_every=2), progress=False)
    for path in (tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt"):
        checkpoint = wwgan.load_checkpoint(path) if path.exists() else None
        if checkpoint is not None:
            del checkpoint["critic_opt"]
            torch.save(checkpoint, path)
    with pytest.raises(
        wwgan.WWGANError, match="not a checkpoint this trainer can resume .no 'critic_opt' inside."
    ):
        wwgan.train(tiny_config(tmp_path, iterations=3), progress=False)


def test_stray_files_in_snapshots_are_skipped_with_a_warning(tmp_path, capsys):
    (tmp_path / "snapshots").mkdir()
    (tmp_path / "snapshots" / "snapshot_0000010.pt").write_bytes(b"")
    (tmp_path / "snapshots" / "snapshot_final.pt").write_bytes(b"")
    assert list(wwgan.snapshot_paths(tmp_path)) == [10]
    assert "snapshot_final.pt: not a snapshot name" in capsys.readouterr().err


def final_weights_of(state):
    return {
        name: value.tolist()
        for module in ("generator", "critic")
        for name, value in getattr(state, module).state_dict().items()
    }


def test_a_real_full_disk_is_one_line_and_the_rerun_with_space_is_exact(tmp_path, capsys):
    """A 1.2 MB tmpfs: the first checkpoint fits, the next one with the previous copy kept
    does not. torch's zip writer reports that as a RuntimeError of its own."""
    from conftest import invoke

    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(disk)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("needs root and permission to mount a tmpfs")
    args = ["train", *TRAIN_ARGS[1:], "--iterations", "8", "--checkpoint-every", "2"]
    args = [a for a in args if a != "--no-progress"] + ["--no-progress", "--device", "cpu"]
    try:
        code, _, err = invoke(capsys, "wwgan", *args, "--out", disk / "run")
        line = one_error_line(code, err)
        assert f"could not write {disk / 'run' / 'checkpoint.pt'}: the disk is full" in line
        assert "MiB needed" in line and "MiB free there" in line
        kept = wwgan.load_checkpoint(disk / "run" / "checkpoint.pt")["iteration"]
        assert kept in (2, 4)  # the last complete checkpoint, verified
        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
        code, _, err = invoke(capsys, "wwgan", *args, "--out", disk / "run")
        assert code == 0, err
        invoke(capsys, "wwgan", *args, "--out", tmp_path / "reference")
        assert_same(final_weights(disk / "run", 8), final_weights(tmp_path / "reference", 8))
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)


# ---------------------------------------------------------------------------------------
# crash points: kill -9 at every write and rename of a short run, then rerun
# (conftest.CRASH_HARNESS; tests/test_script_reliability.py does the same for an FID curve
# and a sample grid)
# ---------------------------------------------------------------------------------------

CRASH_RUN = ["--iterations", "4", "--checkpoint-every", "2", "--sample-every", "2"]


def test_kill_9_at_every_write_point_then_rerun_keeps_every_invariant(tmp_path, capsys):

    harness = tmp_path / "crash.py"
    harness.write_text(CRASH_HARNESS)
    reference = start(harness, tmp_path / "reference", args=CRASH_RUN)
    out, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err
    points = int(out.split("crash points:")[1])
    assert points >= 12  # config.json, 2 checkpoints, 2 sample grids, their renames
    expected = final_weights(tmp_path / "reference", iterations=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the harness (OMP_NUM_THREADS=1): the same float sums
    try:
        check_every_crash_point(harness, tmp_path, points, expected, capsys)
    finally:
        torch.set_num_threads(threads)


def check_every_crash_point(harness, tmp_path, points, expected, capsys):
    from PIL import Image

    from conftest import invoke

    for k in range(1, points + 1):
        run = tmp_path / f"crash{k}"
        killed = start(harness, run, args=CRASH_RUN, CRASH_AT=k)
        assert killed.wait(timeout=600) == -signal.SIGKILL, (k, killed.stderr.read())
        if any(run.glob("checkpoint*.pt")):  # a complete, verified checkpoint survives
            assert wwgan.newest_checkpoint(run / "checkpoint.pt")[0] is not None, k
        code, _, err = invoke(capsys, "wwgan", *TRAIN_ARGS, "--out", run, *CRASH_RUN)
        assert code == 0, (k, err)  # the rerun in this process: no torch import to wait for
        rows = [
            json.loads(x)["iteration"] for x in (run / "metrics.jsonl").read_text().splitlines()
        ]
        assert rows == [1, 2, 3, 4], (k, rows)
        for grid in (run / "samples").iterdir():
            Image.open(grid).verify()  # every finished output intact
        assert not list(run.glob(".*tmp*")), k
        assert_same(final_weights(run, iterations=4), expected)
