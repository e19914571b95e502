"""Bad inputs across the CLI, the data, checkpoints, result files and the workflow config:
each must give a clear message naming the offending path or value and a non-zero exit,
never a Python traceback. wwgan's own errors are exactly one line, `wwgan: error: ...`,
with exit status 1; click's usage errors print a usage block and `Error: ...`, status 2.

How the cases run:
- CLI flags and the workflow config go through the real entry points (`python wwgan.py`,
  `python -m snakemake`) in subprocesses. They are started together, once per module
  (every process spends seconds importing torch), and only those the session selected.
- Cases that need files on disk (data folders, checkpoints, result files) call
  `wwgan.main(argv)` in-process: the same code path minus the interpreter start; an
  exception escaping `main` fails the test with its traceback.
- Tests run as root here, and permission bits do not stop root from reading or writing.
  Unreadable and unwritable paths are therefore ones even root cannot use: a file where a
  folder is expected, a broken symbolic link, a folder under /proc.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fid
import wwgan
from conftest import ROOT, TINY, invoke, one_error_line, snakemake_command

# urllib honours these: a download attempt is refused at once instead of reaching the net
# (so the offline cases give the same answer on a machine that has network access)
NO_NETWORK = {
    "https_proxy": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "no_proxy": "",
    "NO_PROXY": "",
}


def usage_error(code, err: str) -> str:
    """click's usage error: exit 2, a usage block and one `Error:` line, returned."""
    assert "Traceback" not in err, err
    assert code == 2, (code, err)
    assert "Usage: wwgan" in err, err
    (line,) = [line for line in err.splitlines() if line.startswith("Error: ")]
    return line


def run_main(capsys, program, *argv) -> tuple[int, str]:
    """`program` ("wwgan" or a step of scripts/) in-process -> (exit status, stderr)."""
    code, _, err = invoke(capsys, program, *argv)
    return code, err


# ---------------------------------------------------------------------------------------
# the CLI and the workflow config, through the real entry points (subprocesses)
# ---------------------------------------------------------------------------------------


def _wwgan(*args):
    return [sys.executable, str(ROOT / "wwgan.py"), *args]


def _script(name, *args):
    return [sys.executable, str(ROOT / "scripts" / name), *args]


def _snakemake(workdir, *args):
    return snakemake_command(workdir, "-n", "--cores", "1", *args)


# case: (command for tmp folder t, extra environment, kind of error, expected message with
# {t} for the tmp folder, a path under t the failed command must not have created or None).
# Kinds: "usage" (click: exit 2), "wwgan" (one `wwgan: error:` line, exit 1), "workflow".
ENTRY_POINT_CASES = {
    "unknown_loss": (
        lambda t: _wwgan("train", "--out", t / "run", "--loss", "l1"),
        {},
        "usage",
        "Error: Invalid value for '--loss': 'l1' is not one of 'wgan-gp', 'lp', 'wwgan', "
        "'wwgan-authors'.",
        "run",
    ),
    "negative_iterations": (
        lambda t: _wwgan("train", "--out", t / "run", "--iterations", "-5"),
        {},
        "usage",
        "Error: Invalid value for '--iterations': -5 is not in the range x>=0.",
        "run",
    ),
    "unsupported_image_size": (
        lambda t: _wwgan("train", "--out", t / "run", "--image-size", "48"),
        {},
        "wwgan",
        "image size 48 is not supported by the models; choose from 16, 32, 64, 128",
        "run",
    ),
    "out_is_a_file": (
        lambda t: _wwgan("train", "--out", t / "a_file", *TINY),
        {},
        "usage",
        "Error: Invalid value for '--out': Directory '{t}/a_file' is a file.",
        None,
    ),
    # even root cannot create a folder in /proc
    "out_not_creatable": (
        lambda t: _wwgan("train", "--out", "/proc/wwgan-out", *TINY),
        {},
        "wwgan",
        "cannot write to the run directory /proc/wwgan-out (No such file or directory); "
        "pass a writable --out",
        "run",
    ),
    "device_cuda_without_cuda": (
        lambda t: _wwgan("train", "--out", t / "run", "--device", "cuda", *TINY),
        {},
        "wwgan",
        "device 'cuda' requested but CUDA is not available",
        "run",
    ),
    "download_unknown_dataset": (
        lambda t: _wwgan("download", "mnist", "--root", t / "data"),
        {},
        "usage",
        "Error: Invalid value for '{{cifar10|celeba}}': 'mnist' is not one of 'cifar10', 'celeba'.",
        "data",
    ),
    "fid_stats_without_inception_weights": (
        lambda t: _script(
            "fid.py",
            "stats",
            "--dataset",
            "shapes",
            "--image-size",
            "16",
            "--num-images",
            "8",
            "--device",
            "cpu",
            "--out",
            t / "stats.npz",
        ),
        {"TORCH_HOME": "{t}/empty_torch_home", **NO_NETWORK},
        "wwgan",
        "Inception weights for FID not found at {t}/empty_torch_home/hub/checkpoints/"
        f"{fid.FID_WEIGHTS_FILENAME}; run `python scripts/fid.py weights`",
        "stats.npz",
    ),
    "figure_unknown_name": (
        lambda t: _script("figures.py", "fig-7", "--input", t / "a_file", "--out", t / "figure"),
        {},
        "wwgan",
        "unknown figure 'fig-7'; choose from ",
        "figure.png",
    ),
    "workflow_config_not_yaml": (
        lambda t: _snakemake(t / "wf1", "--configfile", t / "broken.yaml"),
        {},
        "workflow",
        "Config file is not valid JSON or YAML",
        "wf1/results",
    ),
    "workflow_config_wrong_type": (
        lambda t: _snakemake(t / "wf2", "--config", "preset=smoke", "seeds=notalist"),
        {},
        "workflow",
        "invalid preset 'smoke' with --config overrides: seeds: 'notalist' is not of type 'array'",
        "wf2/results",
    ),
    "workflow_config_unknown_key": (
        lambda t: _snakemake(t / "wf3", "--config", "preset=smoke", "colour=red"),
        {},
        "workflow",
        "invalid preset 'smoke' with --config overrides: top level: Additional "
        "properties are not allowed ('colour' was unexpected)",
        "wf3/results",
    ),
}


@pytest.fixture(scope="module")
def launched(request, tmp_path_factory):
    """(tmp folder, {case: Popen}) for the ENTRY_POINT_CASES the session runs, all started
    at once."""
    wanted = {
        item.callspec.params["case"]
        for item in request.session.items
        if getattr(item, "callspec", None) and item.originalname == "test_entry_point"
    }
    tmp = tmp_path_factory.mktemp("entry_points")
    (tmp / "a_file").write_text("a file, not a folder\n")
    (tmp / "broken.yaml").write_text("preset: smoke\npresets: {smoke: [\n")
    (tmp / "empty_torch_home").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    procs = {}
    for case in sorted(wanted):
        command, extra_env = ENTRY_POINT_CASES[case][:2]
        extra_env = {k: v.format(t=tmp) for k, v in extra_env.items()}
        procs[case] = subprocess.Popen(
            [str(c) for c in command(tmp)],
            cwd=tmp,
            text=True,
            env={**env, **extra_env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    yield tmp, procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("case", sorted(ENTRY_POINT_CASES))
def test_entry_point(launched, case):
    _, _, kind, message, not_created = ENTRY_POINT_CASES[case]
    if case == "device_cuda_without_cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    tmp, procs = launched
    out, err = procs[case].communicate(timeout=300)
    code, message = procs[case].returncode, message.format(t=tmp)
    if kind == "usage":
        assert usage_error(code, err) == message
    elif kind == "wwgan":
        assert one_error_line(code, err).startswith(f"wwgan: error: {message}")
    else:  # Snakemake's own report of an error: a few lines, never a Python traceback
        text = out + err
        assert code == 1 and "Traceback" not in text, text
        assert message in text, text
        assert "Failed validating" not in text  # the schema dump is gone
    if not_created:
        assert not (tmp / not_created).exists()


# ---------------------------------------------------------------------------------------
# more flag values, in-process (the same path as above, without a torch import each)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--image-size", "128", "--width", "8"],
            "width 8 is too small for image size 128: the models halve it at each of their "
            "upsampling stages; use --width 16 or more",
        ),
        (
            ["--image-size", "8"],
            "image size 8 is not supported by the models; choose from 16, 32, 64, 128",
        ),
        (
            ["--dataset", "mnist"],
            "unknown dataset 'mnist'; choose from shapes, cifar10, celeba, folder",
        ),
        (["--device", "tpu0"], "unknown device 'tpu0'; use auto, cpu, cuda, cuda:N or mps"),
        (["--device", "mps"], "device 'mps' requested but MPS is not available"),
    ],
    ids=["width-too-small", "image-too-small", "unknown-dataset", "unknown-device", "mps"],
)
def test_bad_train_values(tmp_path, capsys, flags, message):
    if flags[-1] == "mps" and torch.backends.mps.is_available():
        pytest.skip("MPS is available here")
    code, err = run_main(capsys, "wwgan", "train", "--out", tmp_path / "run", *TINY, *flags)
    assert one_error_line(code, err) == f"wwgan: error: {message}"
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------
# data (in-process)
# ---------------------------------------------------------------------------------------


def train_on(capsys, tmp_path, data_root, dataset="folder"):
    return run_main(
        capsys,
        "wwgan",
        "train",
        "--dataset",
        dataset,
        "--data-root",
        data_root,
        "--out",
        tmp_path / "run",
        "--cache-dir",
        "",
        *TINY,
    )


def test_folder_dataset_missing_folder(tmp_path, capsys):
    line = one_error_line(*train_on(capsys, tmp_path, tmp_path / "no_such_folder"))
    assert line == (
        f"wwgan: error: image folder {tmp_path / 'no_such_folder'} does not "
        f"exist; pass --data-root DIR"
    )
    assert not (tmp_path / "run").exists()  # data is checked before OUT is created


def test_folder_dataset_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    line = one_error_line(*train_on(capsys, tmp_path, tmp_path / "empty"))
    assert "no image files (.jpg, .jpeg, .png" in line and str(tmp_path / "empty") in line


def test_folder_of_only_corrupt_and_non_image_files(tmp_path, capsys):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    (folder / "b.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    line = one_error_line(*train_on(capsys, tmp_path, folder))
    assert f"no usable images under {folder}: all 2 image file(s) failed to decode" in line
    assert str(folder / "a.jpg") in line


def test_data_root_is_a_file(tmp_path, capsys):
    """A file where the image folder should be (root can read any file, so this is how a
    data root root cannot read as a folder is made)."""
    path = tmp_path / "images.zip"
    path.write_bytes(b"PK\x03\x04")
    line = one_error_line(*train_on(capsys, tmp_path, path))
    assert f"image folder {path} is a file, not a folder" in line


def test_data_root_is_a_broken_symlink(tmp_path, capsys):
    link = tmp_path / "data"
    link.symlink_to(tmp_path / "unmounted_disk" / "images")
    line = one_error_line(*train_on(capsys, tmp_path, link))
    assert f"image folder {link} is a broken symbolic link" in line


def test_cifar10_data_root_is_a_file(tmp_path, capsys):
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(b"\x1f\x8b")
    line = one_error_line(*train_on(capsys, tmp_path, path, dataset="cifar10"))
    assert f"CIFAR-10 not found: expected {path / 'cifar-10-batches-py'}" in line
    assert f"`wwgan download cifar10 --root {path}`" in line


# ---------------------------------------------------------------------------------------
# checkpoints (in-process)
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """2 generator iterations, width 16, WGAN-GP, with a snapshot per iteration."""
    out = tmp_path_factory.mktemp("runs") / "run"
    wwgan.train(
        wwgan.TrainConfig(
            out=str(out),
            dataset="shapes",
            image_size=16,
            width=16,
            batch_size=8,
            n_critic=1,
            iterations=2,
            max_images=32,
            loss="wgan-gp",
            snapshot_every=1,
            sample_every=0,
            device="cpu",
        ),
        progress=False,
    )
    return out


def copy_of(run: Path, tmp_path: Path, checkpoint: bytes | None = None) -> Path:
    """A run folder holding `run`'s checkpoint (or the given bytes) and config.json."""
    out = tmp_path / "copy"
    out.mkdir()
    (out / "config.json").write_bytes((run / "config.json").read_bytes())
    data = (run / "checkpoint.pt").read_bytes() if checkpoint is None else checkpoint
    (out / "checkpoint.pt").write_bytes(data)
    return out


def test_checkpoint_from_another_model_is_refused(finished_run, tmp_path, capsys):
    run = copy_of(finished_run, tmp_path)
    before = (run / "checkpoint.pt").read_bytes()
    argv = ["wwgan", "train", "--out", run, "--loss", "wwgan", *TINY]
    argv[argv.index("--width") + 1] = "32"
    line = one_error_line(*run_main(capsys, *argv))
    assert f"{run / 'checkpoint.pt'}: checkpoint was written by a different model" in line
    assert "loss='wgan-gp' (now 'wwgan')" in line and "width=16 (now 32)" in line
    assert (run / "checkpoint.pt").read_bytes() == before  # left as it was


def test_checkpoint_of_another_program_is_refused(tmp_path, capsys):
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "checkpoint.pt")
    line = one_error_line(*run_main(capsys, "wwgan", "train", "--out", tmp_path, *TINY))
    assert line == (
        f"wwgan: error: {tmp_path / 'checkpoint.pt'}: not a wwgan checkpoint (no config inside)"
    )


def test_corrupt_checkpoint_without_fallback(finished_run, tmp_path, capsys):
    run = copy_of(finished_run, tmp_path, checkpoint=b"\x00\x01 disk garbage " * 64)
    line = one_error_line(
        *run_main(capsys, "wwgan", "train", "--out", run, "--loss", "wgan-gp", *TINY)
    )
    assert f"{run / 'checkpoint.pt'}: not a readable wwgan checkpoint" in line
    assert not (run / "checkpoint.prev.pt").exists()


def test_truncated_checkpoint_without_fallback(finished_run, tmp_path, capsys):
    data = (finished_run / "checkpoint.pt").read_bytes()
    run = copy_of(finished_run, tmp_path, checkpoint=data[: len(data) // 2])
    line = one_error_line(
        *run_main(capsys, "wwgan", "samples", run, "--out", tmp_path / "s.png", "--device", "cpu")
    )
    assert f"{run / 'checkpoint.pt'}: not a readable wwgan checkpoint" in line
    assert not (tmp_path / "s.png").exists()


def test_checkpoint_weights_that_do_not_fit_its_config(finished_run, tmp_path, capsys):
    checkpoint = torch.load(finished_run / "checkpoint.pt", weights_only=False)
    checkpoint["config"]["width"] = 32  # e.g. a config edited by hand
    run = copy_of(finished_run, tmp_path, checkpoint=b"")
    torch.save(checkpoint, run / "checkpoint.pt")
    argv = ["wwgan", "samples", run, "--out", tmp_path / "s.png", "--device", "cpu"]
    line = one_error_line(*run_main(capsys, *argv))
    assert f"{run / 'checkpoint.pt'}: content does not match its checksum" in line
    del checkpoint["sha256"]  # a file without a digest (written before digests existed)
    torch.save(checkpoint, run / "checkpoint.pt")
    line = one_error_line(*run_main(capsys, *argv))
    assert f"{run / 'checkpoint.pt'}: weights do not match the model its config" in line


# ---------------------------------------------------------------------------------------
# evaluation and results (in-process)
# ---------------------------------------------------------------------------------------


def test_fid_curve_on_a_folder_that_is_no_run(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a run")
    line = one_error_line(*run_main(capsys, "fid", "curve", tmp_path, "--no-fid", "--no-progress"))
    assert f"{tmp_path}: no checkpoint.pt and no snapshots/snapshot_*.pt" in line
    assert not (tmp_path / "fid_curve.csv").exists()


def test_fid_curve_with_statistics_of_another_image_size(finished_run, tmp_path, capsys):
    stats = tmp_path / "stats.npz"
    key = fid.reference_stats_key("shapes", "data", 32, 8)  # the run is 16x16
    np.savez(stats, mu=np.zeros(4), sigma=np.eye(4), count=8, key=json.dumps(key))
    code, err = run_main(
        capsys,
        "fid",
        "curve",
        finished_run,
        "--stats",
        stats,
        "--num-samples",
        "8",
        "--out",
        tmp_path / "curve.csv",
        "--device",
        "cpu",
        "--no-progress",
    )
    line = one_error_line(code, err)
    assert f"{stats}: statistics are for other data: image_size=32 (expected 16)" in line


def test_fid_curve_without_inception_weights_offline(finished_run, tmp_path, capsys, monkeypatch):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    for name, value in NO_NETWORK.items():
        monkeypatch.setenv(name, value)
    code, err = run_main(
        capsys,
        "fid",
        "curve",
        finished_run,
        "--stats",
        tmp_path / "stats.npz",
        "--num-samples",
        "8",
        "--out",
        tmp_path / "curve.csv",
        "--device",
        "cpu",
        "--no-progress",
    )
    line = one_error_line(code, err)
    assert f"Inception weights for FID not found at {home / 'hub' / 'checkpoints'}" in line
    assert not (tmp_path / "curve.csv").exists() and not (tmp_path / "stats.npz").exists()


def fid_curve_file(tmp_path, content: bytes, config: bytes = b'{"loss": "wwgan"}') -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_bytes(config)
    (run / "fid_curve.csv").write_bytes(content)
    return run / "fid_curve.csv"


def test_figure_from_an_empty_csv(tmp_path, capsys):
    csv = fid_curve_file(tmp_path, b"")
    line = one_error_line(
        *run_main(capsys, "figures", "fid-curves", "--input", csv, "--out", tmp_path / "fig")
    )
    assert f"no rows in {csv}" in line
    assert not list(tmp_path.glob("fig.*"))


@pytest.mark.parametrize(
    "content",
    [b"a,b\n1,2\n", bytes(range(256)) * 4, b"iteration,train_seconds,fid,swd\n10,abc,,\n"],
    ids=["other-columns", "binary", "not-a-number"],
)
def test_figure_from_a_malformed_csv(tmp_path, capsys, content):
    csv = fid_curve_file(tmp_path, content)
    line = one_error_line(
        *run_main(capsys, "figures", "fid-curves", "--input", csv, "--out", tmp_path / "fig")
    )
    assert line == (
        f"wwgan: error: {csv}: not a fid_curve.csv (columns iteration,train_seconds,fid,swd)"
    )


def test_figure_with_a_run_config_that_is_not_an_object(tmp_path, capsys):
    csv = fid_curve_file(tmp_path, b"iteration,train_seconds,fid,swd\n1,2.0,,3\n", config=b"[1, 2]")
    line = one_error_line(
        *run_main(capsys, "figures", "fid-curves", "--input", csv, "--out", tmp_path / "fig")
    )
    assert f"{csv.parent / 'config.json'}: not a run's config (a JSON object)" in line


def test_table_of_an_unrecognised_file(tmp_path, capsys):
    stray = tmp_path / "metrics.jsonl"
    stray.write_text('{"iteration": 1}\n')
    line = one_error_line(
        *run_main(capsys, "table", "--input", stray, "--out", tmp_path / "table.md")
    )
    assert f"{stray}: not a result file the table knows (fid_curve.csv, shift.json" in line


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("fid_curve.csv", bytes(range(256)) * 4, "not a fid_curve.csv"),
        ("shift.json", b'{"runs": [', "not valid JSON (Expecting value"),
        ("neighbours.json", b"[0.5, 0.25]", "no numbers to tabulate in"),
    ],
    ids=["binary-csv", "torn-json", "no-numbers"],
)
def test_table_of_a_malformed_result_file(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    line = one_error_line(
        *run_main(capsys, "table", "--input", path, "--out", tmp_path / "table.md")
    )
    assert message in line and str(path) in line
    assert not (tmp_path / "table.md").exists()


def test_table_with_a_torn_run_config(tmp_path, capsys):
    csv = fid_curve_file(
        tmp_path, b"iteration,train_seconds,fid,swd\n1,2.0,,3\n", config=b'{"loss": "wwg'
    )
    line = one_error_line(
        *run_main(capsys, "table", "--input", csv, "--out", tmp_path / "table.md")
    )
    assert f"{csv.parent / 'config.json'}: not valid JSON" in line
