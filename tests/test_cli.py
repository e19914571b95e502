"""The command lines: help everywhere (wwgan's own commands, every workflow step and the
benchmark, as a user runs them), usage errors exit 2, a run resumes from the console."""

import dataclasses
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

import wwgan
from conftest import ROOT, TINY

STEPS = sorted(
    p.relative_to(ROOT)
    for p in [*(ROOT / "scripts").glob("*.py"), ROOT / "benchmarks" / "bench.py"]
)


def run_cli(*args, cwd=None):
    """A program in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def test_help_for_every_wwgan_command():
    runner = CliRunner()
    result = runner.invoke(wwgan.cli, ["--help"])
    assert result.exit_code == 0
    assert set(wwgan.cli.commands) == {"train", "download", "samples"}
    for name in wwgan.cli.commands:
        sub = runner.invoke(wwgan.cli, [name, "--help"])
        assert sub.exit_code == 0, name
        assert "Usage:" in sub.output


@pytest.mark.parametrize("step", STEPS, ids=str)
def test_every_step_runs_by_hand_with_help(step):
    """`python scripts/NAME.py --help` (and each subcommand's) from any folder: what a user
    types to re-render one figure without Snakemake."""
    result = run_cli(ROOT / step, "--help", cwd=ROOT.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: {step.name}")
    command = __import__(step.stem).cli
    for name in getattr(command, "commands", {}):
        sub = run_cli(ROOT / step, name, "--help", cwd=ROOT.parent)
        assert sub.returncode == 0 and "Usage:" in sub.stdout, (name, sub.stderr)


def test_train_options_come_from_the_config_fields():
    """One default and one help text per setting: every TrainConfig field the CLI shows
    has its option, with the field's default."""
    params = {p.name: p for p in wwgan.cli.commands["train"].params}
    for field in dataclasses.fields(wwgan.TrainConfig):
        if field.metadata.get("cli", True) is False:
            assert field.name not in params
            continue
        option = params[field.name]
        if field.name not in ("out", "image_size", "lr"):  # defaults derived from other flags
            assert option.default == field.default, field.name
        assert isinstance(option, click.Option)


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--out", "x", "--loss", "l1"],
        ["train", "--out", "x", "--iterations", "-5"],
        ["train", "--out", "x", "--batch-size", "0"],
        ["train", "--out", "x", "--neighborhood", "5"],
        ["train", "--out", "x", "--lam", "-1"],
        ["train"],  # --out is required
    ],
)
def test_bad_flag_values_are_usage_errors(args):
    result = CliRunner().invoke(wwgan.cli, args)
    assert result.exit_code == 2
    assert "Error" in result.output


def test_train_then_resume_from_the_console(tmp_path):
    out = tmp_path / "run"
    first = run_cli(ROOT / "wwgan.py", "train", "--out", out, "--loss", "wgan-gp", *TINY)
    assert first.returncode == 0, first.stderr
    assert "done: 2 iterations" in first.stdout
    resumed = run_cli(
        ROOT / "wwgan.py", "train", "--out", out, "--loss", "wgan-gp", *TINY, "--iterations", "3"
    )
    assert resumed.returncode == 0 and "done: 3 iterations" in resumed.stdout
