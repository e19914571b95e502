"""Shared fixtures and helpers. Real images live in ../shared/data beside the project (see
its README); tests that need them skip with a reason when it is absent. WWGAN_SHARED
overrides the path."""

import importlib
import itertools
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WWGAN_SHARED", ROOT.parent / "shared"))
# The workflow's steps and the benchmarks import as modules, as they import each other.
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "benchmarks")]

import wwgan  # noqa: E402

# `wwgan train` flags of a tiny run (seconds on a CPU).
TINY = [
    "--width",
    "16",
    "--batch-size",
    "8",
    "--n-critic",
    "1",
    "--image-size",
    "16",
    "--max-images",
    "32",
    "--iterations",
    "2",
    "--no-progress",
]


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip the calling test with the reason."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (needs ../shared beside the project)")
    return path


class LinearCritic(torch.nn.Module):
    """f(x) = <w, x>: its input gradient is w everywhere, so every penalty is exact."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w.clone())

    def forward(self, x):
        return (x * self.w).sum((1, 2, 3))


def tiny_config(out, **overrides) -> wwgan.TrainConfig:
    """A TrainConfig for a run of seconds on the synthetic shapes set."""
    values = dict(
        out=str(out),
        dataset="shapes",
        image_size=16,
        width=16,
        batch_size=8,
        n_critic=2,
        iterations=6,
        log_every=2,
        sample_every=3,
        checkpoint_every=3,
        max_images=64,
        loss="wwgan",
        device="cpu",
    )
    values.update(overrides)
    return wwgan.TrainConfig(**values)


@pytest.fixture(autouse=True)
def _deterministic_cpu():
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield


# ---------------------------------------------------------------------------------------
# command lines, in-process
# ---------------------------------------------------------------------------------------


def invoke(capsys, program: str, *argv) -> tuple[int, str, str]:
    """Run `wwgan ARGV` ("wwgan") or `python scripts/PROGRAM.py ARGV` in-process through
    the same entry point as the console (wwgan.run_cli): (exit status, stdout, stderr)."""
    command = wwgan.cli if program == "wwgan" else importlib.import_module(program).cli
    prog_name = "wwgan" if program == "wwgan" else f"{program}.py"
    try:
        wwgan.run_cli(command, [str(a) for a in argv], prog_name=prog_name)
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_step(program: str, *argv) -> None:
    """`invoke` for a command that must succeed (its output is left to pytest)."""
    command = wwgan.cli if program == "wwgan" else importlib.import_module(program).cli
    command.main(args=[str(a) for a in argv], standalone_mode=False)


def snakemake_command(workdir, *args) -> list:
    """The command line of Snakemake on this repository's Snakefile, run in `workdir`."""
    snakefile = str(ROOT / "Snakefile")
    return [sys.executable, "-m", "snakemake", "--snakefile", snakefile, "--directory",
            str(workdir), *map(str, args)]  # fmt: skip


def files_with_times(folder: Path) -> dict:
    """{relative path: (mtime_ns, bytes)} of every file under folder."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------------------------------
# crash points: a command line in a subprocess, killed at its k-th write or rename
# ---------------------------------------------------------------------------------------

# Runs a command line with every os.fsync, os.link and os.replace counted (the points where
# a file becomes durable or visible); with CRASH_AT=k it SIGKILLs itself at the k-th, just
# before that call. It prints the count on a clean exit. The program is CRASH_PROGRAM
# ("wwgan", the default, or a script's name as for `invoke`); with TINY_INCEPTION=1 fid.py
# gets `TinyInception` in place of both Inception networks.
CRASH_HARNESS = f"""
import atexit, importlib, os, signal, sys
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "scripts")!r}, {str(ROOT / "tests")!r}]
import wwgan
crash_at, count = int(os.environ.get("CRASH_AT", "0")), [0]
def counted(real):
    def call(*args, **kwargs):
        count[0] += 1
        if count[0] == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call
os.fsync, os.link, os.replace = counted(os.fsync), counted(os.link), counted(os.replace)
atexit.register(lambda: print("crash points:", count[0]))
program = os.environ.get("CRASH_PROGRAM", "wwgan")
if os.environ.get("TINY_INCEPTION"):
    import conftest, fid
    conftest.use_tiny_inception(fid)
if program == "wwgan":
    wwgan.main(sys.argv[1:])
else:
    wwgan.run_cli(importlib.import_module(program).cli, sys.argv[1:], prog_name=program)
"""


class TinyInception(torch.nn.Module):
    """A stand-in for Inception in FID tests (seconds, not minutes, on a CPU): the 12
    features of a 2x2 average pool of the RGB image in [0, 1], returned the way
    pytorch-fid's network ([(B, 12, 1, 1)], fed floats in [0, 1]) or torch-fidelity's
    ((B, 12),, fed uint8) does."""

    def __init__(self, ttur: bool = False):
        super().__init__()
        self.ttur = ttur

    def forward(self, x):
        pooled = torch.nn.functional.adaptive_avg_pool2d(x.float(), 2).flatten(1)
        if self.ttur:
            return (pooled / 255,)
        return [pooled[:, :, None, None]]


def use_tiny_inception(fid_module, monkeypatch=None) -> None:
    """fid.py's two Inception loaders give `TinyInception` (via monkeypatch in a test)."""
    loaders = dict(
        load_fid_inception=lambda device="cpu", weights=None: TinyInception(False),
        load_ttur_inception=lambda device="cpu", weights=None: TinyInception(True),
    )
    for name, loader in loaders.items():
        if monkeypatch is None:
            setattr(fid_module, name, loader)
        else:
            monkeypatch.setattr(fid_module, name, loader)


def one_error_line(code, err: str) -> str:
    """The single `wwgan: error:` line of a wwgan error (exit status 1), checked."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("wwgan: error: "), err
    return lines[0]


# ---------------------------------------------------------------------------------------
# the penalty's independent reference: a dense matrix built from Supp. Definition 10
# ---------------------------------------------------------------------------------------


def dense_laplacian(density: np.ndarray, neighborhood: int, alpha: float = 0.0) -> np.ndarray:
    """L~(p) = D^T Lambda(p) D + alpha 1 1^T for one H x W channel graph, straight from
    Def. 10 and Remark 3: pixels i, j are joined when their centres are one pixel apart
    (weight 1) or, for the 8-neighbourhood, diagonal (weight 1/2 = 1 / squared length);
    d_i = weighted degree / total weighted degree; Lambda_ee = (p_i/d_i + p_j/d_j) / 2."""
    height, width = density.shape
    coords = [(y, x) for y in range(height) for x in range(width)]
    n = len(coords)
    edges = []
    for i, j in itertools.combinations(range(n), 2):
        squared_length = (coords[i][0] - coords[j][0]) ** 2 + (coords[i][1] - coords[j][1]) ** 2
        if squared_length == 1 or (neighborhood == 8 and squared_length == 2):
            edges.append((i, j, 1.0 / squared_length))
    degree = np.zeros(n)
    for i, j, w in edges:
        degree[i] += w
        degree[j] += w
    d = degree / degree.sum()
    p = density.reshape(-1)
    D = np.zeros((len(edges), n))
    Lam = np.zeros((len(edges), len(edges)))
    for e, (i, j, w) in enumerate(edges):
        D[e, i], D[e, j] = math.sqrt(w), -math.sqrt(w)
        Lam[e, e] = 0.5 * (p[i] / d[i] + p[j] / d[j])
    return D.T @ Lam @ D + alpha * np.ones((n, n))


def dense_tilde(density: np.ndarray, neighborhood: int, alpha: float) -> np.ndarray:
    """Block-diagonal L~ over the channels of one sample (C, H, W): one block each."""
    channels, height, width = density.shape
    n = height * width
    out = np.zeros((channels * n, channels * n))
    for c in range(channels):
        out[c * n : (c + 1) * n, c * n : (c + 1) * n] = dense_laplacian(
            density[c], neighborhood, alpha
        )
    return out


def dense_quadratic_form(grad: np.ndarray, density: np.ndarray, neighborhood: int, alpha: float):
    """sum over channels of g_c^T L~(p_c) g_c, and its gradient 2 L~ g, per sample."""
    values = np.zeros(grad.shape[0])
    gradients = np.zeros(grad.shape)
    for b, c in itertools.product(range(grad.shape[0]), range(grad.shape[1])):
        L = dense_laplacian(density[b, c], neighborhood, alpha)
        g = grad[b, c].reshape(-1)
        values[b] += g @ L @ g
        gradients[b, c] = (2 * L @ g).reshape(grad.shape[2:])
    return values, gradients


# ---------------------------------------------------------------------------------------
# tests leave the checkout as they found it (issue 18): the scripts' image cache goes to
# pytest's tmp dir (autouse); a module opts in to the check that nothing new appears with
#   pytestmark = pytest.mark.usefixtures("checkout_untouched")
# ---------------------------------------------------------------------------------------


def _checkout_files() -> set[str] | None:
    """Untracked and ignored paths of the checkout (git's view; the tools' caches aside),
    or None outside a git work tree."""
    import subprocess

    try:
        listing = subprocess.run(
            # matching: an ignored folder (.venv/) is one line, not its thousands of files
            ["git", "-C", str(ROOT), "status", "--porcelain", "--ignored=matching",
             "--untracked-files=all"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return {
        line[3:]
        for line in listing.splitlines()
        if line[:2] in ("??", "!!")
        and not any(tool in line for tool in ("__pycache__", ".ruff_cache", ".pytest_cache"))
    }


@pytest.fixture
def checkout_untouched():
    """Fails the test when it leaves a new file inside the checkout (a cache, a run):
    tests write only under pytest's temporary directories."""
    before = _checkout_files()
    yield
    if before is not None:
        new = sorted(_checkout_files() - before)
        assert not new, f"the test wrote inside the checkout {ROOT}: {new[:5]}"


@pytest.fixture(autouse=True)
def _image_cache_outside_the_checkout(tmp_path_factory, monkeypatch):
    """The scripts' decoded-image cache (--cache-dir, default data/cache under the working
    folder) goes to one folder of this session's pytest tmp dir instead: a test of a
    script on real data no longer leaves ~150 MB inside the checkout."""
    monkeypatch.setenv("WWGAN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "image-cache"))
