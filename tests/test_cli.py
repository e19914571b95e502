"""The click CLI: help everywhere, usage errors exit 2, user errors are one line exit 1."""

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import wwgan

ROOT = Path(wwgan.__file__).resolve().parent
TINY = ["--width", "16", "--batch-size", "8", "--n-critic", "1", "--image-size", "16",
        "--max-images", "32", "--no-progress"]


def run_cli(*args, cwd=None):
    """The real entry point in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, str(ROOT / "wwgan.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def test_help_for_every_command():
    runner = CliRunner()
    result = runner.invoke(wwgan.cli, ["--help"])
    assert result.exit_code == 0
    for name in wwgan.cli.commands:
        sub = runner.invoke(wwgan.cli, [name, "--help"])
        assert sub.exit_code == 0, name
        assert "Usage:" in sub.output


@pytest.mark.parametrize("args", [
    ["train", "--out", "x", "--loss", "l1"],
    ["train", "--out", "x", "--iterations", "-5"],
    ["train", "--out", "x", "--batch-size", "0"],
    ["train", "--out", "x", "--neighborhood", "5"],
    ["train", "--out", "x", "--lam", "-1"],
    ["train"],  # --out is required
])
def test_bad_flag_values_are_usage_errors(args):
    result = CliRunner().invoke(wwgan.cli, args)
    assert result.exit_code == 2
    assert "Error" in result.output


def test_train_then_resume_and_refuse_foreign_checkpoint(tmp_path):
    out = tmp_path / "run"
    first = run_cli("train", "--out", out, "--iterations", "2", "--loss", "wgan-gp", *TINY)
    assert first.returncode == 0, first.stderr
    assert "done: 2 iterations" in first.stdout
    resumed = run_cli("train", "--out", out, "--iterations", "3", "--loss", "wgan-gp", *TINY)
    assert resumed.returncode == 0 and "done: 3 iterations" in resumed.stdout
    foreign = run_cli("train", "--out", out, "--iterations", "4", "--loss", "wwgan", *TINY)
    assert foreign.returncode == 1
    lines = foreign.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in foreign.stderr
    assert str(out / "checkpoint.pt") in lines[0] and "loss='wgan-gp'" in lines[0]


def test_unsupported_image_size_is_one_line_error(tmp_path):
    result = run_cli("train", "--out", tmp_path / "r", "--image-size", "48", "--no-progress")
    assert result.returncode == 1
    assert result.stderr.strip() == ("wwgan: error: image size 48 is not supported by the "
                                     "models; choose from 16, 32, 64, 128")
