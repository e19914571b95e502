"""The evaluation scripts and `wwgan samples` under the issue-19 rules: no command writes
over one of its own inputs (refused in one line, before anything is written), every output
goes through the atomic write path, and kill -9 at every write and rename point of an FID
curve or a sample grid leaves each finished file intact and a rerun that ends where an
uninterrupted run does."""

import os
import shutil
from pathlib import Path

import pytest

import wwgan
from conftest import files_with_times, invoke, one_error_line, tiny_config


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
