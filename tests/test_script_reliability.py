"""The evaluation scripts and `wwgan samples` under the issue-19 rules: no command writes
over one of its own inputs (refused in one line, before anything is written), every output
goes through the atomic write path, and kill -9 at every write and rename point of an FID
curve or a sample grid leaves each finished file intact and a rerun that ends where an
uninterrupted run does."""

import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import wwgan
from conftest import (
    CRASH_HARNESS,
    files_with_times,
    invoke,
    one_error_line,
    tiny_config,
    use_tiny_inception,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """4 iterations at 16 px with a snapshot every 2: snapshots 2 and 4, checkpoints."""
    out = tmp_path_factory.mktemp("runs") / "run"
    wwgan.train(
        tiny_config(out, iterations=4, n_critic=1, snapshot_every=2, sample_every=0),
        progress=False,
    )
    return out


# ---------------------------------------------------------------------------------------
# no command writes over one of its own inputs
# ---------------------------------------------------------------------------------------


def test_the_helper_sees_through_relative_paths_symlinks_and_hard_links(tmp_path, monkeypatch):
    source = tmp_path / "in.csv"
    source.write_text("x\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.csv").symlink_to(source)
    os.link(source, tmp_path / "hard.csv")
    monkeypatch.chdir(tmp_path / "sub")
    for out in ("../in.csv", tmp_path / "link.csv", tmp_path / "hard.csv", source):
        with pytest.raises(wwgan.WWGANError, match="would write over the input"):
            wwgan.refuse_overwriting_inputs([out], [source])
    # a run folder stands for the files read in it; other names in it are free
    run = tmp_path / "run"
    (run / "snapshots").mkdir(parents=True)
    for name in ("config.json", "checkpoint.pt", "checkpoint.prev.pt", "snapshots/s_1.pt"):
        (run / name).write_text("x")
        with pytest.raises(wwgan.WWGANError, match=f"input {run / name}"):
            wwgan.refuse_overwriting_inputs([run / name], [run])
    wwgan.refuse_overwriting_inputs([run / "fid_curve.csv", None], [run, None])
    wwgan.refuse_overwriting_inputs([tmp_path / "new.csv"], [source])  # a new file: fine


def refused(capsys, folder: Path, program: str, *argv) -> str:
    """Run a command that must refuse; nothing under `folder` may change."""
    before = files_with_times(folder)
    code, _, err = invoke(capsys, program, *argv)
    line = one_error_line(code, err)
    assert "would write over the input" in line, line
    assert files_with_times(folder) == before
    return line


def test_every_script_refuses_to_write_over_its_inputs(run, tmp_path, capsys):
    work = tmp_path / "run"
    shutil.copytree(run, work)
    snapshot = work / "snapshots" / "snapshot_0000002.pt"
    curve = ["curve", work, "--no-progress", "--device", "cpu", "--num-samples", "8"]
    # fid curve: the CSV over a snapshot, the checkpoint, the config, the statistics
    for target in (snapshot, work / "checkpoint.pt", work / "config.json"):
        line = refused(capsys, tmp_path, "fid", *curve, "--no-fid", "--out", target)
        assert line.endswith(f"{target}: this output would write over the input {target}; "
                             "choose another output path")  # fmt: skip
    stats = tmp_path / "stats.npz"
    stats.write_bytes(b"not yet")
    refused(capsys, tmp_path, "fid", *curve, "--stats", stats, "--out", stats)
    # ... the statistics it would compute, over a snapshot of the run it reads
    refused(capsys, tmp_path, "fid", *curve, "--stats", snapshot)
    refused(capsys, tmp_path, "fid", "stats", "--fid-weights", stats, "--out", stats)
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"w")
    refused(capsys, tmp_path, "fid", "weights", "--source", weights, "--out", weights)

    # table: the markdown or its CSV over an input, or over a curve's config.json
    (work / "fid_curve.csv").write_text("iteration,train_seconds,fid,swd\n2,1.0,,3.5\n")
    table_in = ["--input", work / "fid_curve.csv"]
    refused(capsys, tmp_path, "table", *table_in, "--out", work / "fid_curve.md")  # its .csv
    refused(capsys, tmp_path, "table", *table_in, "--out", work / "fid_curve.csv")
    refused(capsys, tmp_path, "table", *table_in, "--out", work / "config.json")
    # figures: OUT.png / OUT.pdf over an input
    grid = tmp_path / "grid.png"
    grid.write_bytes(b"png")
    refused(capsys, tmp_path, "figures", "samples", "--input", grid, "--input", work,
            "--out", tmp_path / "grid")  # fmt: skip
    # critic probes: the JSON over a file of a run it reads
    for command in ("shift", "noise"):
        refused(capsys, tmp_path, "critic_probes", command, "--run", work, "--out", snapshot)
    # the fixed-fake critics: a pool over its source, critics over their pool, a table
    # over its results
    refused(capsys, tmp_path, "fixed_fake_critics", "pool", "--source", snapshot, "--out", snapshot)
    refused(capsys, tmp_path, "fixed_fake_critics", "train", "--pool", stats, "--family",
            "wgan-gp", "--lam", "1", "--seed", "0", "--out", stats)  # fmt: skip
    refused(capsys, tmp_path, "fixed_fake_critics", "table", "--results", stats,
            "--out-md", tmp_path / "t.md", "--out-json", stats)  # fmt: skip


# ---------------------------------------------------------------------------------------
# crash points: kill -9 at every write and rename of an FID curve and of a sample grid
# ---------------------------------------------------------------------------------------


def crash(tmp_path, program, argv, **env) -> subprocess.CompletedProcess:
    """`program ARGV` under conftest.CRASH_HARNESS (CRASH_AT=k kills it at the k-th point)."""
    harness = tmp_path / "crash.py"
    if not harness.exists():
        harness.write_text(CRASH_HARNESS)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CRASH_PROGRAM": program,
           **{k: str(v) for k, v in env.items()}}  # fmt: skip
    return subprocess.run([sys.executable, harness, *map(str, argv)], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def points_of(finished: subprocess.CompletedProcess) -> int:
    assert finished.returncode == 0, finished.stderr
    return int(finished.stdout.split("crash points:")[1])


def curve_argv(run, stats):
    return ["curve", run, "--stats", stats, "--num-samples", 16, "--ttur-samples", 16,
            "--swd-images", 16, "--batch-size", 8, "--device", "cpu", "--no-progress"]  # fmt: skip


def curve_values(path: Path) -> dict:
    import fid

    return {row["iteration"]: row for row in fid.read_fid_curve(path)}


@pytest.fixture
def one_thread():
    """As in the harness (OMP_NUM_THREADS=1): the same float sums in a rerun in-process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_kill_9_at_every_write_point_of_an_fid_curve_then_rerun(
    run, tmp_path, capsys, monkeypatch, one_thread
):
    """The curve starts from a finished SWD-only CSV (`--no-fid`) and adds both FIDs,
    computing the reference statistics on the way: at every point the statistics are
    absent or complete, the CSV is a complete file whose values are the final ones or not
    yet there, the run is untouched, and the rerun ends byte-identical to an uninterrupted
    run."""
    import fid

    use_tiny_inception(fid, monkeypatch)
    template = tmp_path / "template"
    shutil.copytree(run, template)
    code, _, err = invoke(capsys, "fid", "curve", template, "--no-fid", "--num-samples", 16,
                          "--batch-size", 8, "--device", "cpu", "--no-progress")  # fmt: skip
    assert code == 0, err
    run_files = files_with_times(template)
    reference = tmp_path / "reference"
    shutil.copytree(template, reference)
    stats = tmp_path / "reference.npz"
    points = points_of(crash(tmp_path, "fid", curve_argv(reference, stats), TINY_INCEPTION=1))
    assert points == 2 + 2 * 2  # the statistics, then the CSV after each of 2 snapshots
    expected, final = (
        curve_values(reference / "fid_curve.csv"),
        fid.load_reference_statistics(stats),
    )
    assert all(math.isfinite(row["fid"]) and math.isfinite(row["fid_ttur"])
               for row in expected.values())  # fmt: skip

    for k in range(1, points + 1):
        work, stats = tmp_path / f"crash{k}", tmp_path / f"crash{k}.npz"
        shutil.copytree(template, work)
        killed = crash(tmp_path, "fid", curve_argv(work, stats), TINY_INCEPTION=1, CRASH_AT=k)
        assert killed.returncode == -signal.SIGKILL, (k, killed.stderr)
        visible = {n: v for n, v in files_with_times(work).items() if ".tmp-" not in n}
        assert visible.keys() == run_files.keys(), k  # only atomic_write's temp files added
        for name, value in run_files.items():  # every finished file intact
            assert name == "fid_curve.csv" or visible[name] == value, (k, name)
        for it, row in curve_values(work / "fid_curve.csv").items():  # complete, no torn row
            for key in ("swd", "fid", "fid_ttur"):
                assert math.isnan(row[key]) or row[key] == expected[it][key], (k, it, key)
        if stats.exists():  # absent or complete
            assert_same_statistics(fid.load_reference_statistics(stats), final)
        code, _, err = invoke(capsys, "fid", *curve_argv(work, stats))
        assert code == 0, (k, err)
        assert (work / "fid_curve.csv").read_bytes() == (reference / "fid_curve.csv").read_bytes()
        assert_same_statistics(fid.load_reference_statistics(stats), final)


def assert_same_statistics(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a["key"] == b["key"]
    assert all(np.array_equal(a[k], b[k]) for k in a if k != "key")


def test_kill_9_at_every_write_point_of_a_sample_grid_then_rerun(run, tmp_path, capsys):
    """`wwgan samples` over a finished grid: after each kill the grid is the old one or the
    new one, byte for byte; the run is untouched; the rerun writes the new one."""
    grid = tmp_path / "grid.png"
    code, _, err = invoke(capsys, "wwgan", "samples", run, "--out", grid, "--seed", 1,
                          "--device", "cpu")  # fmt: skip
    assert code == 0, err
    old, run_files = grid.read_bytes(), files_with_times(run)
    argv = ["samples", run, "--out", grid, "--device", "cpu", "--num", 16]
    new_grid = tmp_path / "new.png"
    points = points_of(crash(tmp_path, "wwgan", [*argv[:3], new_grid, *argv[4:]]))
    new = new_grid.read_bytes()
    assert points == 2 and new != old  # the grid's fsync and rename
    for k in range(1, points + 1):
        grid.write_bytes(old)
        killed = crash(tmp_path, "wwgan", argv, CRASH_AT=k)
        assert killed.returncode == -signal.SIGKILL, (k, killed.stderr)
        assert grid.read_bytes() in (old, new), k
        assert files_with_times(run) == run_files, k
        code, _, err = invoke(capsys, "wwgan", *argv)
        assert code == 0 and grid.read_bytes() == new, (k, err)


def test_a_rerun_removes_the_temp_files_a_killed_writer_left_and_only_those(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid, live_pid = int(dead.stdout), os.getppid()  # the first has exited, the second runs
    target = tmp_path / "curve [1].csv"  # glob characters in the name are taken literally
    left = {
        "dead": tmp_path / f".{target.name}.tmp-{dead_pid}",
        "dead previous": tmp_path / f".{target.name}.prev.tmp-{dead_pid}",
        "live writer": tmp_path / f".{target.name}.tmp-{live_pid}",
        "another file's": tmp_path / f".other.csv.tmp-{dead_pid}",
    }
    for path in left.values():
        path.write_text("torn")
    with wwgan.atomic_write(target, "w") as f:
        f.write("done\n")
    assert target.read_text() == "done\n"
    assert {name for name, path in left.items() if path.exists()} == {
        "live writer",
        "another file's",
    }
