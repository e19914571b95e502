"""The command lines: help everywhere (wwgan's own commands, every workflow step and the
benchmark, as a user runs them), usage errors exit 2, a run resumes from the console."""

import dataclasses
import importlib
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import wwgan
from conftest import ROOT, TINY, run_step

pytestmark = pytest.mark.usefixtures("checkout_untouched")

# the programs (a library module such as scripts/inception.py has no command line)
STEPS = sorted(
    p.relative_to(ROOT)
    for p in [*(ROOT / "scripts").glob("*.py"), ROOT / "benchmarks" / "bench.py"]
    if 'if __name__ == "__main__":' in p.read_text()
)
SCRIPTS = [step for step in STEPS if step.parts[0] == "scripts"]


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
        if field.name not in ("out", "image_size", "lr", "cache_dir"):  # resolved by the config
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


# ---------------------------------------------------------------------------------------
# the examples in --help (click epilogs)
# ---------------------------------------------------------------------------------------


def _commands(command, path=()):
    """(subcommand names, command) for a command and, for a group, each subcommand."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def _examples(script: Path) -> list[tuple[tuple, click.Command, list[str]]]:
    """Every command line under 'Example:' in the epilogs of `script`'s commands, as
    (subcommand path, the command it reaches, its arguments after the subcommands)."""
    examples = []
    for path, command in _commands(importlib.import_module(script.stem).cli):
        assert command.epilog and "Example:" in command.epilog, (script, path, "no example")
        lines = command.epilog.split("Example:", 1)[1].strip().splitlines()
        assert lines, (script, path)
        for line in lines:
            words = shlex.split(line)
            assert words[:2] == ["python", f"scripts/{script.name}"], line
            words = words[2:]
            target = importlib.import_module(script.stem).cli
            while getattr(target, "commands", None):  # a group: the line names the subcommand
                target = target.commands[words.pop(0)]
            examples.append((path, target, words))
    return examples


def _create_input_paths(command: click.Command, args: list[str], root: Path) -> None:
    """Create, under `root`, the paths the example reads (click.Path(exists=True))."""
    ctx = click.Context(command, info_name=command.name)
    values, _, _ = command.make_parser(ctx).parse_args(list(args))
    for param in command.params:
        kind = param.type
        if not (isinstance(kind, click.Path) and kind.exists) or param.name not in values:
            continue
        raw = values[param.name]
        for value in raw if isinstance(raw, (list, tuple)) else [raw]:
            path = root / value
            if kind.file_okay:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            else:
                path.mkdir(parents=True, exist_ok=True)


@pytest.mark.parametrize("script", SCRIPTS, ids=str)
def test_every_help_example_parses(script, tmp_path, monkeypatch):
    """Each command's epilog shows an example that names its own script and that click
    accepts as it is printed: known options, valid choices and numbers, required options
    present (the files it reads are created empty first). Nothing runs here."""
    monkeypatch.chdir(tmp_path)
    examples = _examples(script)
    for _, command, args in examples:
        _create_input_paths(command, args, tmp_path)
        with command.make_context(command.name, list(args)) as ctx:
            assert ctx.params  # parsed, not merely shown help
    help_text = run_cli(ROOT / script, "--help", cwd=tmp_path).stdout
    assert "Example:" in help_text and f"python scripts/{script.name}" in help_text


def test_figures_help_lists_every_figure_and_its_example_runs(tmp_path, monkeypatch):
    """figures.py --help names every figure; the examples of motivating_example.py and
    figures.py, run as printed (one after the other, in an empty folder), make the
    figure."""
    import figures

    help_text = run_cli(ROOT / "scripts" / "figures.py", "--help").stdout
    assert set(figures.FIGURES) >= {"fid-curves", "samples", "shift", "noise"}
    for name in figures.FIGURES:
        assert f"\n    {name} " in help_text, name
    monkeypatch.chdir(tmp_path)
    for script in ("motivating_example", "figures"):
        ((_, command, args),) = _examples(ROOT / "scripts" / f"{script}.py")
        run_step(script, *args)
    assert Path("results/motivating_example.csv").stat().st_size > 0
    assert Path("figures/motivating-example.png").stat().st_size > 0
