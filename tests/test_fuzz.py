"""Property-based fuzzing (hypothesis) of what a user can hand the trainer: every flag of
`wwgan train` with hostile values, and every file of a run directory corrupted. Each case
must end in exit 0 or one clear line (a `wwgan: error:` line, or click's usage error),
never a traceback, and a reader (`wwgan samples`) never changes a finished file."""

import importlib
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wwgan
from conftest import files_with_times, invoke

TINY_RUN = ["--dataset", "shapes", "--image-size", "16", "--width", "16", "--batch-size", "4",
            "--n-critic", "1", "--max-images", "16", "--iterations", "2", "--log-every", "1",
            "--checkpoint-every", "1", "--sample-every", "0", "--no-progress", "--device",
            "cpu"]  # fmt: skip

# Values that are hostile or small: big valid sizes would only make the run long.
NUMBERS = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([2**31, 2**63, -(2**63), 10**30, "1e38", "1e300", "-1e300", "3.4e39"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "0x10", "", " ", "1_0", "½"]),
)
# Lengths: a huge valid count would train for ever; only small or invalid values.
LENGTHS = st.one_of(st.integers(-3, 3), st.sampled_from(["nan", "inf", "", "1e400", "2.5"]))
FLAGS = {
    **{
        flag: NUMBERS
        for flag in "batch-size lam lipschitz-target alpha gamma lr width seed log-every "
        "sample-every checkpoint-every checkpoint-minutes snapshot-every max-images holdout "
        "celeba-crop image-size".split()
    },
    "iterations": LENGTHS,
    "n-critic": LENGTHS,
    "loss": st.sampled_from(["wwgan", "wgan-gp", "lp", "wwgan-authors", "l1", ""]),
    "density-at": st.sampled_from(["interpolate", "fake", "real"]),
    "density-scale": st.sampled_from(["intensity", "unit-mass", "unit"]),
    "neighborhood": st.sampled_from(["4", "8", "6", "-4"]),
    "optimizer": st.sampled_from(["fid", "robustness", "sgd"]),
    "nan-policy": st.sampled_from(["stop", "skip", "ignore"]),
    "device": st.sampled_from(["cpu", "cuda", "cuda:3", "mps", "meta", "tpu0", "", "cpu:1"]),
    "dataset": st.sampled_from(["shapes", "mnist", "folder", ""]),
}


HOSTILE = ["nan", "inf", "-inf", "-1", "0", "1", "2.5", "1e38", "1e300", "-1e300", str(2**31),
           str(2**63), "", "x", "½"]  # fmt: skip
CHOICES = {"loss": ["l1", ""], "density-at": ["real"], "density-scale": ["unit"],
           "neighborhood": ["6", "-4"], "optimizer": ["sgd"], "nan-policy": ["ignore"],
           "device": ["cuda", "cuda:3", "mps", "meta", "xla", "tpu0", "", "cpu:1"],
           "dataset": ["mnist", "folder", ""]}  # fmt: skip


@pytest.mark.parametrize("flag", sorted(FLAGS))
def test_each_flag_with_each_hostile_value(tmp_path, capsys, flag):
    """Every flag alone with every hostile value (the cases hypothesis might not draw)."""
    if flag in ("iterations", "n-critic"):  # a huge valid length would run for ever
        values = [v for v in HOSTILE if v not in ("1e38", "1e300", str(2**31), str(2**63))]
    else:
        values = CHOICES.get(flag, HOSTILE)
    for k, value in enumerate(values):
        argv = ["train", *TINY_RUN, f"--{flag}", value, "--out", tmp_path / f"run{k}"]
        code, _, err = invoke(capsys, "wwgan", *argv)
        assert_clean_ending(code, err, (flag, value))


def assert_clean_ending(code: int, err: str, case) -> None:
    assert "Traceback" not in err, (case, err)
    lines = [line for line in err.splitlines() if line.strip() and "warning:" not in line]
    if code == 0:
        return
    if code == 2:  # click's usage error: a usage line, a hint, and one "Error:" line
        assert lines[-1].startswith("Error: "), (case, err)
        return
    assert code == 1 and len(lines) == 1 and lines[0].startswith("wwgan: error: "), (case, err)


# derandomize: the same cases in every run, so a CI result is reproducible; widen
# max_examples locally to hunt (each class of bug found so far has its own case in
# test_bad_inputs.py or test_train.py).
@settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
@given(st.dictionaries(st.sampled_from(sorted(FLAGS)), st.data(), min_size=1, max_size=3))
def test_train_flags_never_meet_a_traceback(tmp_path_factory, capsys, chosen):
    flags = []
    for name, data in chosen.items():
        flags += [f"--{name}", str(data.draw(FLAGS[name], label=name))]
    out = tmp_path_factory.mktemp("flags")
    code, _, err = invoke(capsys, "wwgan", "train", *TINY_RUN, *flags, "--out", out / "run")
    assert_clean_ending(code, err, flags)


@pytest.fixture(scope="module")
def finished_tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("template") / "run"
    code, _, err = invoke(_NullCapture(), "wwgan", "train", *TINY_RUN, "--snapshot-every", "1",
                          "--out", out)  # fmt: skip
    assert code == 0 and (out / "checkpoint.prev.pt").exists(), err
    return out


class _NullCapture:
    """invoke() for a module fixture (capsys is function-scoped): output is discarded."""

    def readouterr(self):
        class Captured:
            out = err = ""

        return Captured()


RUN_FILES = ["config.json", "metrics.jsonl", "checkpoint.pt", "checkpoint.prev.pt",
             "snapshots/snapshot_0000001.pt", "snapshots/snapshot_0000002.pt"]  # fmt: skip


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    name=st.sampled_from(RUN_FILES),
    how=st.sampled_from(["truncate", "flip", "garbage", "empty", "text"]),
    where=st.floats(0, 1),
    garbage=st.binary(min_size=1, max_size=64),
)
def test_corrupt_run_files_never_meet_a_traceback(
    finished_tiny_run, tmp_path_factory, capsys, name, how, where, garbage
):
    run = tmp_path_factory.mktemp("corrupt") / "run"
    shutil.copytree(finished_tiny_run, run)
    target = run / name
    data = bytearray(target.read_bytes())
    at = min(int(where * len(data)), len(data) - 1)
    if how == "truncate":
        data = data[:at]
    elif how == "flip":
        data[at] ^= 0x40
    elif how == "garbage":
        data[at : at + len(garbage)] = garbage
    elif how == "empty":
        data = b""
    else:
        data = b'{"iteration": "two", "config": [1, 2]}\n\xff\xfe not json\n'
    target.write_bytes(bytes(data))
    case = (name, how, at)

    before = files_with_times(run)
    code, _, err = invoke(capsys, "wwgan", "samples", run, "--out", run.parent / "grid.png")
    assert_clean_ending(code, err, case)
    assert files_with_times(run) == before, case  # a reader changes nothing

    code, _, err = invoke(
        capsys, "wwgan", "train", *TINY_RUN, "--snapshot-every", "1", "--iterations", "3",
        "--out", run,
    )  # fmt: skip
    assert_clean_ending(code, err, case)


# ---------------------------------------------------------------------------------------
# the evaluation scripts (and `wwgan samples`): numeric flags and corrupted input files
# ---------------------------------------------------------------------------------------

# Hostile values of a numeric flag; huge valid counts are left out where they only make a
# run long (each such flag is bounded or streams; see SLOW_WHEN_HUGE).
# One value per class that found a bug (the suite's 15-minute budget; widen locally to
# hunt): NaN, infinity, a negative, zero, a fraction, a huge float, a seed numpy cannot
# take, one torch cannot take, and text.
SCRIPT_HOSTILE = ["nan", "inf", "-1", "0", "2.5", "1e300", str(2**63), str(2**64),
                  "x"]  # fmt: skip
SLOW_WHEN_HUGE = {"num-samples", "ttur-samples", "num-queries", "num-candidates"}


@pytest.fixture(scope="module")
def script_inputs(tmp_path_factory):
    """One of every file the scripts read, made by the scripts themselves from a tiny run
    (FID through conftest.TinyInception, active for this module's script cases)."""
    import fid
    from conftest import tiny_config, use_tiny_inception

    patch = pytest.MonkeyPatch()
    use_tiny_inception(fid, patch)
    root = tmp_path_factory.mktemp("script-inputs")
    run = root / "run"
    wwgan.train(tiny_config(run, iterations=4, n_critic=1, snapshot_every=2, sample_every=0,
                            holdout=16), progress=False)  # fmt: skip
    null = _NullCapture()
    steps = [
        ("fid", "curve", run, "--stats", root / "stats.npz", "--num-samples", 16,
         "--ttur-samples", 16, "--swd-images", 16, "--batch-size", 8, "--device", "cpu",
         "--no-progress"),
        *[("critic_probes", probe, "--run", run, "--match", "last", "--num-images", 4,
           "--device", "cpu", "--out", root / f"{probe}.json") for probe in ("shift", "noise")],
        ("neighbours", "--dataset", "shapes", "--image-size", 16, "--holdout", 32,
         "--num-queries", 1, "--num-candidates", 9, "--show", 1, "--device", "cpu", "--out",
         root / "neighbours.json"),
        ("motivating_example", "--size", 4, "--out", root / "motivating.csv"),
        ("wwgan", "samples", run, "--out", root / "grid.png", "--num", 4, "--device", "cpu"),
    ]  # fmt: skip
    for program, *argv in steps:
        assert invoke(null, program, *argv)[0] == 0, (program, argv)
    for name, seed in (("real", 0), ("fake", 1)):
        (root / name).mkdir()
        images = wwgan.make_shapes(8, 16, seed=seed)
        for i, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
            _save_png(image, root / name / f"{i}.png")
    yield root
    patch.undo()


def _save_png(array, path):
    from PIL import Image

    Image.fromarray(array).save(path)


def script_commands(root: Path, out: Path) -> dict:
    """name -> (program, argv of a valid tiny run writing under `out`, its numeric flags)."""
    run = root / "run"
    return {
        "fid curve": ("fid", ["curve", run, "--stats", root / "stats.npz", "--num-samples", 16,
                              "--ttur-samples", 16, "--swd-images", 16, "--batch-size", 8,
                              "--device", "cpu", "--no-progress", "--out", out / "c.csv"],
                      "num-samples ttur-samples swd-images seed batch-size"),
        "fid stats": ("fid", ["stats", "--dataset", "shapes", "--image-size", 16, "--num-images",
                              16, "--device", "cpu", "--out", out / "s.npz"],
                      "image-size num-images holdout batch-size"),
        "shift": ("critic_probes", ["shift", "--run", run, "--num-images", 4, "--device", "cpu",
                                    "--out", out / "shift.json"],
                  "target image-seed num-images"),
        "noise": ("critic_probes", ["noise", "--run", run, "--num-images", 4, "--device", "cpu",
                                    "--out", out / "noise.json"],
                  "target image-seed num-images noise-seed probability"),
        "neighbours": ("neighbours", ["--dataset", "shapes", "--image-size", 16, "--holdout", 32,
                                      "--num-queries", 1, "--num-candidates", 9, "--show", 1,
                                      "--device", "cpu", "--out", out / "n.json"],
                       "image-size holdout num-queries num-candidates seed show"),
        "motivating": ("motivating_example", ["--size", 4, "--out", out / "m.csv"], "size"),
        "swd": ("swd", [root / "real", root / "fake", "--image-size", 16, "--num-images", 8],
                "image-size num-images seed"),
        "samples": ("wwgan", ["samples", run, "--out", out / "g.png", "--num", 4, "--device",
                              "cpu"], "seed"),
    }  # fmt: skip


def with_flag(argv: list, flag: str, value) -> list:
    argv = [str(a) for a in argv]
    if f"--{flag}" in argv:
        argv[argv.index(f"--{flag}") + 1] = str(value)
        return argv
    return [*argv, f"--{flag}", str(value)]


def assert_reader_clean(capsys, folder, program, argv, case, writes=()) -> None:
    """`program argv` ends in exit 0 or one clear line, and every finished file under
    `folder` is as it was (`writes`: the files there the command itself may rewrite)."""
    before = files_with_times(folder)
    code, _, err = invoke(capsys, program, *argv)
    assert_clean_ending(code, err, case)
    after = files_with_times(folder)
    assert {k: v for k, v in after.items() if k not in writes} == {
        k: v for k, v in before.items() if k not in writes
    }, case


# A valid value of these runs the whole command (3-20 s here): their valid values are
# checked to parse, their refused values run; every other command runs every case.
SLOW_COMMANDS = {"fid curve", "neighbours"}


@pytest.mark.parametrize("name", ["fid curve", "fid stats", "shift", "noise", "neighbours",
                                  "motivating", "swd", "samples"])  # fmt: skip
def test_each_script_flag_with_each_hostile_value(script_inputs, tmp_path, capsys, name):
    """Every numeric flag of every script alone with every hostile value."""
    import click

    program, argv, flags = script_commands(script_inputs, tmp_path)[name]
    command = wwgan.cli if program == "wwgan" else importlib.import_module(program).cli
    for flag in flags.split():
        for value in SCRIPT_HOSTILE:
            args = with_flag(argv, flag, value)
            if name in SLOW_COMMANDS:
                try:
                    command.make_context(program, list(args))
                    continue  # accepted: valid
                except click.ClickException:
                    pass
            assert_reader_clean(capsys, script_inputs, program, args, (name, flag, value))


def test_samples_refuses_seeds_torch_cannot_take(script_inputs, tmp_path, capsys):
    for flag, value in (("seed", 2**64), ("num", 2**63)):
        argv = ["samples", script_inputs / "run", "--out", tmp_path / "g.png", f"--{flag}", value]
        code, _, err = invoke(capsys, "wwgan", *argv)
        assert_clean_ending(code, err, (flag, value))


# Every file kind the scripts read -> (its name under script_inputs, the commands that read
# it: program, argv with FILE for the corrupted copy's path and OUT for an output folder,
# and the files in the copy's folder the command may itself rewrite).
FILE_KINDS = {
    "fid_curve.csv": ("run/fid_curve.csv", [
        ("table", ["--input", "FILE", "--out", "OUT/t.md"], ()),
        ("figures", ["fid-curves", "--input", "FILE", "--out", "OUT/f"], ()),
        ("fid", ["curve", "DIR", "--no-fid", "--num-samples", 16, "--batch-size", 8, "--device",
                 "cpu", "--no-progress"], ("run/fid_curve.csv",)),
    ]),
    "config.json": ("run/config.json", [
        ("table", ["--input", "DIR/fid_curve.csv", "--out", "OUT/t.md"], ()),
    ]),
    "metrics.jsonl": ("run/metrics.jsonl", [
        ("table", ["--input", "DIR/fid_curve.csv", "--out", "OUT/t.md"], ()),
    ]),
    **{f"{probe}.json": (f"{probe}.json", [
        ("table", ["--input", "FILE", "--out", "OUT/t.md"], ()),
        ("figures", [probe, "--input", "FILE", "--out", "OUT/f"], ()),
    ]) for probe in ("shift", "noise", "neighbours")},
    "motivating.csv": ("motivating.csv", [
        ("figures", ["motivating-example", "--input", "FILE", "--out", "OUT/f"], ()),
    ]),
    "stats.npz": ("stats.npz", [
        ("fid", ["curve", "RUN", "--stats", "FILE", "--num-samples", 16, "--ttur-samples", 16,
                 "--swd-images", 16, "--batch-size", 8, "--device", "cpu", "--no-progress",
                 "--out", "OUT/c.csv"], ()),
        ("fid", ["stats", "--dataset", "shapes", "--image-size", 16, "--num-images", 16,
                 "--device", "cpu", "--out", "FILE"], ("stats.npz",)),  # recomputes a bad one
    ]),
}  # fmt: skip
JSON_HOSTILE = ["DELETE", "x", None, [], {}, -1, 1e308, float("nan"), True]
CELL_HOSTILE = ["x", "", "nan", "inf", "-1", "1e400", "\udcff"]


def _paths(obj, prefix=()):
    """Every key path of a JSON value (lists: their first item)."""
    yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(obj, list) and obj:
        yield from _paths(obj[0], (*prefix, 0))


def corrupt(data: bytes, name: str, draw) -> tuple[bytes, str]:
    """A corrupted copy of a file's bytes: byte-level damage, or (JSON, CSV) a field of the
    wrong type, missing, or undecodable."""
    import copy
    import json

    how = draw(st.sampled_from(["empty", "truncate", "flip", "undecodable", "structure"]))
    at = draw(st.integers(0, max(0, len(data) - 1)))
    if how == "empty":
        return b"", how
    if how == "truncate":
        return data[:at], f"truncate {at}"
    if how == "flip":
        return data[:at] + bytes([data[at] ^ draw(st.sampled_from([1, 0x40, 0x80]))]) + data[at + 1 :], f"flip {at}"  # fmt: skip
    if how == "undecodable" or name.endswith(".npz"):
        return data[:at] + b"\xff\xfe\x80" + data[at:], f"undecodable {at}"
    if name.endswith(".csv"):
        lines = data.decode().splitlines()
        rows = [line.split(",") for line in lines]
        column = draw(st.integers(0, len(rows[0]) - 1))
        value = draw(st.sampled_from(CELL_HOSTILE + ["DROP"]))
        for row in rows[0 if value == "DROP" else 1 :]:
            if column < len(row):
                row[column : column + 1] = [] if value == "DROP" else [value]
        text = "\n".join(",".join(row) for row in rows) + "\n"
        return text.encode("utf-8", "surrogateescape"), f"column {column} = {value!r}"
    lines = data.decode().splitlines() if name.endswith(".jsonl") else [data.decode()]
    obj = json.loads(lines[-1])
    path = draw(st.sampled_from(list(_paths(obj))[:200]))
    value = draw(st.sampled_from(JSON_HOSTILE))
    if not path:
        obj = value if value != "DELETE" else []
    else:
        obj = copy.deepcopy(obj)
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        if value == "DELETE":
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    lines[-1] = json.dumps(obj)
    return ("\n".join(lines) + "\n").encode(), f"{path} = {value!r}"


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(kind=st.sampled_from(sorted(FILE_KINDS)), data=st.data())
def test_corrupt_result_files_never_meet_a_traceback(
    script_inputs, tmp_path_factory, capsys, kind, data
):
    """A corrupted copy of each file kind the scripts read: every reader ends in exit 0 or
    one clear line naming the file, and no finished file changes."""
    source, readers = FILE_KINDS[kind]
    work = tmp_path_factory.mktemp("corrupt")
    if source.startswith("run/"):
        shutil.copytree(script_inputs / "run", work / "run")
    target = work / source
    original = (script_inputs / source).read_bytes()
    damaged, how = corrupt(original, kind, data.draw)
    target.write_bytes(damaged)
    out = tmp_path_factory.mktemp("out")
    for program, argv, writes in readers:
        args = [str(a).replace("FILE", str(target)).replace("DIR", str(target.parent))
                .replace("RUN", str(script_inputs / "run")).replace("OUT", str(out))
                for a in argv]  # fmt: skip
        assert_reader_clean(capsys, work, program, args, (kind, how, program, argv[0]), writes)
