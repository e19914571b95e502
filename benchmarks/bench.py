"""`python benchmarks/bench.py` turns the performance claims into numbers measured side by
side; BENCHMARKS.md records the results and the commands.

Every item runs its contenders in one process, interleaved in a shuffled order within
each repetition (a busy machine slows all of them alike), and reports the median and the
quartiles; ratios are taken per repetition, between contenders timed moments apart. CUDA
is synchronized around every timing. Two clocks: "wall" (perf_counter) and "cpu" (this
process's CPU time, all threads): on a CPU shared with other jobs, and with --threads 1,
CPU time is what the computation costs, whatever else runs. On CUDA only wall time
means anything.

Items: 1 critic step per loss (the penalty's cost), 2 the quadratic form alone (slicing,
Algorithm 2's convolutions, a sparse matrix, torch.compile), 3 image W2 against exact
EMD, 4 training throughput, 5 FID's Frechet distance against pytorch-fid's.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import random
import sys
import time
from pathlib import Path

import click
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]  # wwgan.py and the workflow's scripts

from fid import FID_DIMS, frechet_distance, symmetric_sqrt  # noqa: E402
from image_w2 import W2_EPSILON, W2_MIN_FINAL, _w2_annealing, image_w2_distance  # noqa: E402
from quadratic_forms import laplacian_quadratic_form_conv, laplacian_quadratic_form_sparse  # noqa: E402
from wwgan import (  # noqa: E402
    DATASET_SIZES,
    Critic,
    Generator,
    TrainConfig,
    build_models,
    critic_step,
    generator_step,
    gpu_performance_flags,
    laplacian_quadratic_form,
    make_optimizers,
    make_shapes,
    run_cli,
    seed_everything,
    select_device,
    step_models,
    write_json,
)

BENCH_ITEMS = ("critic_step", "quadratic_form", "image_w2", "throughput", "frechet_distance")
BENCH_CLOCKS = ("wall", "cpu")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_call(fn, device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of fn(), device work included."""
    _synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def _spread(samples) -> dict:
    """Median, quartiles and range of repeated measurements."""
    values = np.asarray(list(samples), dtype=np.float64)
    return dict(
        median=float(np.median(values)),
        p25=float(np.percentile(values, 25)),
        p75=float(np.percentile(values, 75)),
        min=float(values.min()),
        max=float(values.max()),
        n=int(values.size),
        samples=values.tolist(),
    )


def _paired_ratios(numerator: list, denominator: list) -> dict:
    return _spread(a / b for a, b in zip(numerator, denominator))


def _interleaved(
    contenders: dict, repeats: int, warmup: int, device: torch.device, rng: random.Random
) -> dict:
    """Time each zero-argument callable once per repetition, in a fresh shuffled order
    each time, after `warmup` untimed rounds. Returns {clock: {name: [seconds, ...]}}."""
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    times = {clock: {name: [] for name in names} for clock in BENCH_CLOCKS}
    for _ in range(repeats):
        for name in rng.sample(names, len(names)):
            for clock, seconds in zip(BENCH_CLOCKS, _time_call(contenders[name], device)):
                times[clock][name].append(seconds)
    return times


def machine_info(device: torch.device) -> dict:
    """What the numbers were measured on: CPU model, cores, threads, device, versions, date."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import ot

        pot_version = ot.__version__
    except ImportError:
        pot_version = None
    info = dict(
        date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        cpu=cpu,
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        load_average=list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        platform=platform.platform(),
        python=platform.python_version(),
        torch=torch.__version__,
        numpy=np.__version__,
        pot=pot_version,
        device=str(device),
        device_name=cpu,
    )
    if device.type == "cuda":
        info.update(
            device_name=torch.cuda.get_device_name(device),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    return info


def bench_critic_step(
    device: torch.device,
    image_sizes=(32, 64),
    batch_size: int = 64,
    width: int = 512,
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
    rng: random.Random | None = None,
) -> dict:
    """Item 1: one critic update of Algorithm 1 (`critic_step`: sampling, forward, penalty
    with its double backward; then the Adam step) for WGAN-GP, LP and WWGAN on the same
    initial critic, per image size. Target: WWGAN / WGAN-GP <= 1.02. A second, identical
    WGAN-GP critic ("wgan-gp-control") is timed too: its ratio to WGAN-GP is pure
    measurement noise, the resolution of the other ratios on this machine."""
    rng = rng or random.Random(seed)
    losses = ("wgan-gp", "wgan-gp-control", "lp", "wwgan")
    results = {}
    for size in image_sizes:
        torch.manual_seed(seed)
        images = make_shapes(max(4 * batch_size, 64), size, seed=seed).to(device)
        generator = Generator(size, 3, width, 128).to(device)
        first_critic = Critic(size, 3, width).to(device)
        contenders = {}
        for loss in losses:
            config = TrainConfig(
                loss=loss.replace("-control", ""),
                image_size=size,
                batch_size=batch_size,
                width=width,
                device=str(device),
            )
            critic = Critic(size, 3, width).to(device)
            critic.load_state_dict(first_critic.state_dict())
            _, critic_opt = make_optimizers(config, generator, critic)

            def step(
                config=config,
                critic=critic,
                critic_opt=critic_opt,
                generator=generator,
                images=images,
            ):
                critic_step(config, generator, critic, critic_opt, images)
                critic_opt.step()

            contenders[loss] = step
        times = _interleaved(contenders, repeats, warmup, device, rng)
        results[str(size)] = {
            clock: dict(
                seconds={loss: _spread(times[clock][loss]) for loss in losses},
                ratio_to_wgan_gp={
                    loss: _paired_ratios(times[clock][loss], times[clock]["wgan-gp"])
                    for loss in losses
                    if loss != "wgan-gp"
                },
            )
            for clock in BENCH_CLOCKS
        }
    return dict(batch_size=batch_size, width=width, repeats=repeats, warmup=warmup, sizes=results)


def _l2_norm_squared(grad: torch.Tensor, density: torch.Tensor) -> torch.Tensor:
    return grad.square().sum(dim=(1, 2, 3))


def _one_read_of_grad(grad: torch.Tensor, density: torch.Tensor) -> torch.Tensor:
    # Any per-sample function of g reads all of g at least once (and its backward writes a
    # tensor of g's size): a plain sum is that floor.
    return grad.sum(dim=(1, 2, 3))


# name -> (function, what it is); the first three compute the same g^T L~(rho) g.
QUADRATIC_FORM_CONTENDERS = {
    "slicing": (laplacian_quadratic_form, "Def. 10 by tensor slices (used in training)"),
    "conv": (laplacian_quadratic_form_conv, "Algorithm 2's convolution kernels"),
    "sparse": (laplacian_quadratic_form_sparse, "torch.sparse L(rho) @ g"),
    "l2": (_l2_norm_squared, "||g||^2 as WGAN-GP computes it"),
    "floor": (_one_read_of_grad, "sum of g: one read of g, the memory-traffic floor"),
}


def bench_quadratic_form(
    device: torch.device,
    image_sizes=(32, 64),
    batch_size: int = 64,
    repeats: int = 20,
    inner: int = 5,
    warmup: int = 2,
    seed: int = 0,
    rng: random.Random | None = None,
    compile: bool = False,
) -> dict:
    """Item 2: g^T L~(rho) g alone, (B, 3, S, S) float32, by slicing, Algorithm 2's
    convolutions and a torch.sparse product, against ||g||^2 and one read of g.

    "forward_backward" is the value and its gradient with respect to g. That is all the
    quadratic form adds to training: penalty.backward() runs its backward once and then
    the critic's double backward, which is the same for every implementation (item 1
    times it; tests check that all three give the same critic update through it). Each
    sample is `inner` calls. Agreement with slicing is measured first. With `compile`,
    laplacian_quadratic_form(compiled=True) runs too ("slicing_compiled", what
    `train --compile` uses: fused kernels, first-order backward)."""
    rng = rng or random.Random(seed)
    contenders_used = dict(QUADRATIC_FORM_CONTENDERS)
    if compile:
        contenders_used["slicing_compiled"] = (
            functools.partial(laplacian_quadratic_form, compiled=True),
            "the slicing form through torch.compile (train --compile)",
        )
    compared = [name for name in contenders_used if name not in ("slicing", "l2", "floor")]
    results = {}
    for size in image_sizes:
        generator = torch.Generator().manual_seed(seed)
        grad64 = torch.randn(batch_size, 3, size, size, generator=generator, dtype=torch.float64)
        density64 = torch.rand(batch_size, 3, size, size, generator=generator, dtype=torch.float64)
        agreement = {}
        for dtype in (torch.float64, torch.float32):
            grad, density = grad64.to(device, dtype), density64.to(device, dtype)
            reference = laplacian_quadratic_form(grad, density)
            for name in ("conv", "sparse"):
                value = QUADRATIC_FORM_CONTENDERS[name][0](grad, density)
                error = ((value - reference).abs() / reference.abs()).max().item()
                agreement[f"{name}_{str(dtype).split('.')[-1]}"] = error
        grad = grad64.to(device, torch.float32)
        density = density64.to(device, torch.float32)
        leaf = grad.clone().requires_grad_(True)

        def forward(fn, grad=grad, density=density):
            with torch.no_grad():
                for _ in range(inner):
                    fn(grad, density)

        def forward_backward(fn, leaf=leaf, density=density):
            for _ in range(inner):
                fn(leaf, density).sum().backward()
            leaf.grad = None

        contenders = {}
        for name, (fn, _) in contenders_used.items():
            contenders[f"forward/{name}"] = functools.partial(forward, fn)
            contenders[f"forward_backward/{name}"] = functools.partial(forward_backward, fn)
        times = _interleaved(contenders, repeats, warmup, device, rng)
        entry = dict(max_relative_difference_to_slicing=agreement)
        for clock in BENCH_CLOCKS:
            for mode in ("forward", "forward_backward"):
                seconds = {
                    name: [t / inner for t in times[clock][f"{mode}/{name}"]]
                    for name in contenders_used
                }
                entry.setdefault(clock, {})[mode] = dict(
                    seconds={name: _spread(value) for name, value in seconds.items()},
                    ratio_to_slicing={
                        name: _paired_ratios(seconds[name], seconds["slicing"]) for name in compared
                    },
                    ratio_to_floor={
                        name: _paired_ratios(seconds[name], seconds["floor"])
                        for name in contenders_used
                        if name != "floor"
                    },
                )
        results[str(size)] = entry
    return dict(
        batch_size=batch_size,
        channels=3,
        repeats=repeats,
        calls_per_sample=inner,
        contenders={k: v[1] for k, v in contenders_used.items()},
        sizes=results,
    )


def _pixel_histograms(n: int, size: int, seed: int) -> torch.Tensor:
    """n unit-mass grey-level histograms (n, S, S) float64 from the shapes set."""
    grey = make_shapes(n, size, seed=seed).double().mean(dim=1) + 1.0  # +1: no empty image
    return grey / grey.sum(dim=(1, 2), keepdim=True)


def _w2_matmul_floor(histograms: torch.Tensor):
    """The arithmetic no iteration of `_w2_sinkhorn` can skip: its four batched (S x S)
    float64 matmuls, for the fewest iterations any pair runs (the annealing plus
    W2_MIN_FINAL), with every exp, log and elementwise op taken as free. Its speed-up over
    exact EMD is the ceiling of this solver's design on the machine it runs on."""
    size = histograms.shape[-1]
    kernel = torch.rand(size, size, dtype=torch.float64, device=histograms.device)
    iterations = len(_w2_annealing(size, size, W2_EPSILON)) + W2_MIN_FINAL

    def run():
        for _ in range(iterations):
            for _ in range(2):  # two half-steps, each a row and a column matmul
                torch.matmul(kernel, torch.matmul(histograms, kernel))

    return run


def bench_image_w2(
    device: torch.device,
    size: int = 32,
    pairs: int = 16,
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
    rng: random.Random | None = None,
) -> dict:
    """Item 3: `image_w2_distance(a, b)` (W2, not squared, between (N, S, S) unit-mass
    histograms, batched) per pair at S x S against POT's exact `ot.emd2` on the same pairs
    (ground cost: squared Euclidean distance between pixel centres one unit apart), with
    the relative error of W2. Target: >= 100x faster at <= 1% error. An extra row,
    `sinkhorn_matmul_floor`, times only the matmuls our solver cannot avoid: the most any
    implementation of its iteration could gain."""
    import ot

    rng = rng or random.Random(seed)
    first = _pixel_histograms(pairs, size, seed)
    second = _pixel_histograms(pairs, size, seed + 1)
    ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    centres = np.stack([ys.ravel(), xs.ravel()], axis=1).astype(np.float64)
    cost = ot.dist(centres, centres, metric="sqeuclidean")
    a_np, b_np = first.reshape(pairs, -1).numpy(), second.reshape(pairs, -1).numpy()
    a_dev, b_dev = first.to(device), second.to(device)
    distance = image_w2_distance

    def exact():
        return np.sqrt(
            [ot.emd2(a_np[k], b_np[k], cost, numItermax=10_000_000) for k in range(pairs)]
        )

    try:
        fast = torch.as_tensor(distance(a_dev, b_dev)).double().cpu()
    except Exception as exc:  # a foreign function: record, do not abort the other items
        return dict(
            error=f"image_w2_distance(a, b) on (N, S, S) unit-mass histograms "
            f"raised {type(exc).__name__}: {exc}"
        )
    if fast.shape != (pairs,):
        return dict(
            error=f"image_w2_distance returned shape {tuple(fast.shape)} for "
            f"{pairs} pairs of (S, S) histograms; expected ({pairs},)"
        )
    reference = torch.from_numpy(exact())
    relative_error = ((fast - reference).abs() / reference).numpy()
    contenders = {
        "emd2_exact": exact,
        "image_w2_batched": lambda: distance(a_dev, b_dev),
        "image_w2_one_pair_per_call": lambda: [distance(a_dev[k], b_dev[k]) for k in range(pairs)],
        "sinkhorn_matmul_floor": _w2_matmul_floor(a_dev),
    }
    times = _interleaved(contenders, repeats, warmup, device, rng)
    result = dict(
        size=size,
        pairs=pairs,
        repeats=repeats,
        relative_error=dict(
            median=float(np.median(relative_error)), max=float(relative_error.max())
        ),
        w2_exact=reference.tolist(),
        w2_image_w2_distance=fast.tolist(),
    )
    for clock in BENCH_CLOCKS:
        per_pair = {name: [t / pairs for t in value] for name, value in times[clock].items()}
        result[clock] = dict(
            seconds_per_pair={name: _spread(value) for name, value in per_pair.items()},
            speedup_over_emd2={
                name: _paired_ratios(per_pair["emd2_exact"], per_pair[name])
                for name in (
                    "image_w2_batched",
                    "image_w2_one_pair_per_call",
                    "sinkhorn_matmul_floor",
                )
            },
        )
    return result


def bench_throughput(
    device: torch.device,
    image_size: int = 32,
    batch_size: int = 64,
    width: int = 512,
    n_critic: int = 5,
    iterations: int = 1,
    repeats: int = 3,
    warmup: int = 1,
    compile: bool = False,
    seed: int = 0,
    rng: random.Random | None = None,
) -> dict:
    """Item 4: Algorithm 1's loop as train() runs it between log intervals (n_critic
    critic steps, one generator step, no host reads) on `shapes` data resident on the
    device, WGAN-GP vs WWGAN: generator iterations/s, images/s (batch * n_critic real
    images per generator iteration) and the implied CIFAR-10 epoch (50,000 images). A
    second WGAN-GP run ("wgan-gp-control") gives the noise of the ratio, as in item 1."""
    rng = rng or random.Random(seed)
    images = make_shapes(max(8 * batch_size, 64), image_size, seed=1234).to(device)
    contenders = {}
    for loss in ("wgan-gp", "wgan-gp-control", "wwgan"):
        config = TrainConfig(
            loss=loss.replace("-control", ""),
            image_size=image_size,
            batch_size=batch_size,
            width=width,
            n_critic=n_critic,
            compile=compile,
            device=str(device),
            seed=seed,
        )
        seed_everything(seed)
        generator, critic = (model.to(device) for model in build_models(config))
        generator_opt, critic_opt = make_optimizers(config, generator, critic)
        fast_generator, fast_critic = step_models(config, generator, critic)

        def run(
            config=config,
            generator=fast_generator,
            critic=critic,
            fast_critic=fast_critic,
            generator_opt=generator_opt,
            critic_opt=critic_opt,
        ):
            for _ in range(iterations):
                for _ in range(config.n_critic):
                    critic_step(config, generator, critic, critic_opt, images)
                    critic_opt.step()
                generator_step(config, generator, fast_critic, generator_opt, device)
                generator_opt.step()

        contenders[loss] = run
    times = _interleaved(contenders, repeats, warmup, device, rng)
    result = dict(
        image_size=image_size,
        batch_size=batch_size,
        width=width,
        n_critic=n_critic,
        iterations_per_sample=iterations,
        repeats=repeats,
        compile=compile,
    )
    for clock in BENCH_CLOCKS:
        losses = {}
        for loss, seconds in times[clock].items():
            per_iteration = [t / iterations for t in seconds]
            median = float(np.median(per_iteration))
            losses[loss] = dict(
                seconds_per_generator_iteration=_spread(per_iteration),
                generator_iterations_per_second=1.0 / median,
                images_per_second=batch_size * n_critic / median,
                cifar10_epoch_seconds=DATASET_SIZES["cifar10"] / (batch_size * n_critic) * median,
            )
        result[clock] = dict(
            losses=losses,
            ratio_to_wgan_gp={
                name: _paired_ratios(times[clock][name], times[clock]["wgan-gp"])
                for name in ("wgan-gp-control", "wwgan")
            },
        )
    return result


def bench_frechet_distance(
    dims: int = FID_DIMS,
    samples: int = 10_000,
    repeats: int = 3,
    warmup: int = 0,
    seed: int = 0,
    rng: random.Random | None = None,
) -> dict:
    """Item 5: the Frechet distance of FID on (dims)-d statistics of `samples` correlated
    Gaussian features per side: pytorch-fid's `calculate_frechet_distance` (scipy sqrtm)
    against `frechet_distance` (symmetric eigensolvers), with and without the reference's
    square root precomputed as `fid-curve` does. On the CPU, whatever the device: the
    statistics are numpy arrays in both."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = rng or random.Random(seed)
    generator = np.random.default_rng(seed)
    mixing = generator.standard_normal((dims, dims)) / math.sqrt(dims)
    stats = []
    for scale, shift in ((1.0, 0.0), (1.2, 0.1)):
        features = scale * generator.standard_normal((samples, dims)) @ mixing + shift
        stats.append((features.mean(0), np.cov(features, rowvar=False)))
        del features
    (mu1, sigma1), (mu2, sigma2) = stats
    root = symmetric_sqrt(sigma2)
    values = dict(
        pytorch_fid=float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2)),
        eigh=frechet_distance(mu1, sigma1, mu2, sigma2),
    )
    contenders = {
        "pytorch_fid_sqrtm": lambda: calculate_frechet_distance(mu1, sigma1, mu2, sigma2),
        "eigh": lambda: frechet_distance(mu1, sigma1, mu2, sigma2),
        "eigh_reference_root_cached": lambda: frechet_distance(mu1, sigma1, mu2, sigma2, root),
    }
    times = _interleaved(contenders, repeats, warmup, torch.device("cpu"), rng)
    result = dict(
        dims=dims,
        samples=samples,
        repeats=repeats,
        fid=values,
        relative_difference=abs(values["eigh"] / values["pytorch_fid"] - 1),
    )
    for clock in BENCH_CLOCKS:
        result[clock] = dict(
            seconds={name: _spread(value) for name, value in times[clock].items()},
            speedup_over_pytorch_fid={
                name: _paired_ratios(times[clock]["pytorch_fid_sqrtm"], times[clock][name])
                for name in ("eigh", "eigh_reference_root_cached")
            },
        )
    return result


def bench_settings(device: torch.device, quick: bool = False, **overrides) -> dict:
    """The sizes each item runs at: the paper's (batch 64, width 512, 32x32 and 64x64) by
    default, with repetitions that finish in minutes on a CPU; `quick`: tiny, for tests."""
    cuda = device.type == "cuda"
    if quick:
        settings = dict(
            image_sizes=(16,),
            batch_size=4,
            width=16,
            repeats=2,
            warmup=1,
            quadratic_repeats=2,
            quadratic_inner=1,
            w2_size=16,
            w2_pairs=2,
            throughput_iterations=1,
            throughput_repeats=2,
            n_critic=2,
            fid_dims=64,
            fid_samples=200,
            fid_repeats=2,
        )
    else:
        settings = dict(
            image_sizes=(32, 64),
            batch_size=64,
            width=512,
            repeats=30 if cuda else 5,
            warmup=5 if cuda else 1,
            quadratic_repeats=50 if cuda else 20,
            quadratic_inner=20 if cuda else 5,
            w2_size=32,
            w2_pairs=16,
            throughput_iterations=20 if cuda else 1,
            throughput_repeats=10 if cuda else 3,
            n_critic=5,
            fid_dims=FID_DIMS,
            fid_samples=10_000,
            fid_repeats=3,
        )
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "repeats" in overrides:
        settings.update(
            quadratic_repeats=overrides["repeats"],
            throughput_repeats=overrides["repeats"],
            fid_repeats=overrides["repeats"],
        )
    settings.update(overrides)
    return settings


def run_benchmarks(
    device: str = "auto",
    quick: bool = False,
    items=BENCH_ITEMS,
    compile: bool = False,
    seed: int = 0,
    out: str | Path | None = None,
    threads: int | None = None,
    echo=print,
    **overrides,
) -> dict:
    """Run the chosen items and return (and, with `out`, write after each item) one JSON-able
    dict: machine, settings, command and one entry per item; items not chosen are absent."""
    device = select_device(device)
    settings = bench_settings(device, quick, **overrides)
    rng = random.Random(seed)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    report = dict(
        machine=machine_info(device),
        settings=dict(settings, quick=quick, compile=compile, seed=seed),
        command=" ".join(["python benchmarks/bench.py"] + sys.argv[1:]),
        items={},
    )
    s = settings
    runners = {
        "critic_step": lambda: bench_critic_step(
            device,
            s["image_sizes"],
            s["batch_size"],
            s["width"],
            s["repeats"],
            s["warmup"],
            seed,
            rng,
        ),
        "quadratic_form": lambda: bench_quadratic_form(
            device,
            s["image_sizes"],
            s["batch_size"],
            s["quadratic_repeats"],
            s["quadratic_inner"],
            s["warmup"],
            seed,
            rng,
            compile,
        ),
        "image_w2": lambda: bench_image_w2(
            device, s["w2_size"], s["w2_pairs"], max(2, s["repeats"]), s["warmup"], seed, rng
        ),
        "throughput": lambda: bench_throughput(
            device,
            s["image_sizes"][0],
            s["batch_size"],
            s["width"],
            s["n_critic"],
            s["throughput_iterations"],
            s["throughput_repeats"],
            s["warmup"],
            compile,
            seed,
            rng,
        ),
        "frechet_distance": lambda: bench_frechet_distance(
            s["fid_dims"], s["fid_samples"], s["fid_repeats"], 0, seed, rng
        ),
    }
    try:
        for item in items:
            started = time.perf_counter()
            with gpu_performance_flags(device):
                report["items"][item] = result = runners[item]()
            result["bench_seconds"] = round(time.perf_counter() - started, 2)
            echo(format_bench_item(item, result, device))
            if out is not None:
                write_json(report, out)
    finally:
        torch.set_num_threads(previous_threads)
    report["derived"] = implied_penalty_overhead(report["items"])
    if report["derived"]:
        echo(
            "\nWWGAN / WGAN-GP critic step implied by item 2 (1 + (t_slicing - t_l2) / "
            "t_wgan-gp, forward_backward medians): "
            + ", ".join(
                f"{size}: " + " ".join(f"{clock} {value:.4f}" for clock, value in by_clock.items())
                for size, by_clock in report["derived"]["wwgan_over_wgan_gp"].items()
            )
        )
    report["machine"]["load_average_after"] = (
        list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    )
    if out is not None:
        write_json(report, out)
    return report


def implied_penalty_overhead(items: dict) -> dict:
    """WWGAN / WGAN-GP critic step as its parts predict it: the two steps differ only in
    the norm (g^T L~ g by slicing vs ||g||^2, forward and backward), so the ratio is
    1 + (t_slicing - t_l2) / t_wgan-gp. Item 2 times those parts with little noise, so this
    resolves what item 1's direct ratio cannot on a busy machine. {} without both items."""
    if "sizes" not in items.get("critic_step", {}) or "sizes" not in items.get(
        "quadratic_form", {}
    ):
        return {}
    implied = {}
    for size, step in items["critic_step"]["sizes"].items():
        parts = items["quadratic_form"]["sizes"].get(size)
        if parts is None:
            continue
        implied[size] = {}
        for clock in BENCH_CLOCKS:
            seconds = parts[clock]["forward_backward"]["seconds"]
            extra = seconds["slicing"]["median"] - seconds["l2"]["median"]
            implied[size][clock] = 1.0 + extra / step[clock]["seconds"]["wgan-gp"]["median"]
    return dict(wwgan_over_wgan_gp=implied) if implied else {}


def _fmt_seconds(spread: dict) -> str:
    def one(x):
        return f"{x * 1e3:.3g} ms" if x < 1 else f"{x:.3g} s"

    return f"{one(spread['median'])} [{one(spread['p25'])}, {one(spread['p75'])}]"


def _fmt_ratio(spread: dict | None) -> str:
    if not spread:
        return ""
    return f"{spread['median']:.3f} [{spread['p25']:.3f}, {spread['p75']:.3f}]"


def _speedup_rows(result: dict, seconds_key: str, speedup_key: str) -> list[str]:
    """One line per clock and contender: its time and, beside the baseline, its speed-up."""
    lines = []
    for clock in BENCH_CLOCKS:
        for name, spread in result[clock][seconds_key].items():
            speedup = _fmt_ratio(result[clock][speedup_key].get(name))
            lines.append(
                f"  {clock:<5} {name:<28} {_fmt_seconds(spread):<32} "
                f"{'speed-up ' + speedup if speedup else ''}"
            )
    return lines


def format_bench_item(item: str, result: dict, device: torch.device) -> str:
    """A plain-text table of one item, both clocks: medians with [25th, 75th percentile]."""
    if "skipped" in result or "error" in result:
        return f"\n{item}: {result.get('skipped') or result.get('error')}"
    lines = []
    if item == "critic_step":
        lines.append(
            f"\n1. critic step on {device}, batch {result['batch_size']}, width "
            f"{result['width']}, {result['repeats']} interleaved repeats "
            f"(median [p25, p75])"
        )
        lines.append(f"{'size':>5}  {'loss':<15} {'clock':<5} {'seconds':<32} ratio to wgan-gp")
        for size, entry in result["sizes"].items():
            for clock in BENCH_CLOCKS:
                for loss, spread in entry[clock]["seconds"].items():
                    ratio = entry[clock]["ratio_to_wgan_gp"].get(loss)
                    lines.append(
                        f"{size:>5}  {loss:<15} {clock:<5} {_fmt_seconds(spread):<32} "
                        f"{_fmt_ratio(ratio) or '1'}"
                    )
    elif item == "quadratic_form":
        lines.append(
            f"\n2. quadratic form g^T L~ g alone on {device}, batch "
            f"{result['batch_size']} x 3 channels, float32, per call "
            f"(median [p25, p75])"
        )
        lines.append(
            f"{'size':>5}  {'clock':<5} {'mode':<17} {'impl':<16} {'seconds':<32} "
            f"{'ratio to slicing':<24} ratio to floor"
        )
        for size, entry in result["sizes"].items():
            for clock in BENCH_CLOCKS:
                for mode in ("forward", "forward_backward"):
                    block = entry[clock][mode]
                    for name, spread in block["seconds"].items():
                        lines.append(
                            f"{size:>5}  {clock:<5} {mode:<17} {name:<16} "
                            f"{_fmt_seconds(spread):<32} "
                            f"{_fmt_ratio(block['ratio_to_slicing'].get(name)):<24} "
                            f"{_fmt_ratio(block['ratio_to_floor'].get(name))}"
                        )
            agreement = ", ".join(
                f"{k} {v:.1e}" for k, v in entry["max_relative_difference_to_slicing"].items()
            )
            lines.append(f"{size:>5}  max relative difference to slicing: {agreement}")
    elif item == "image_w2":
        lines.append(
            f"\n3. W2 between {result['size']}x{result['size']} images, "
            f"{result['pairs']} pairs, per pair (median [p25, p75])"
        )
        lines += _speedup_rows(result, "seconds_per_pair", "speedup_over_emd2")
        error = result["relative_error"]
        lines.append(
            f"  relative error of W2 vs ot.emd2: median {error['median']:.2e}, "
            f"max {error['max']:.2e}"
        )
    elif item == "throughput":
        lines.append(
            f"\n4. training throughput on {device}, {result['image_size']}x"
            f"{result['image_size']}, batch {result['batch_size']}, width "
            f"{result['width']}, n_critic {result['n_critic']}, compile "
            f"{result['compile']}"
        )
        for clock in BENCH_CLOCKS:
            for loss, entry in result[clock]["losses"].items():
                lines.append(
                    f"  {clock:<5} {loss:<15} "
                    f"{_fmt_seconds(entry['seconds_per_generator_iteration'])} per generator "
                    f"iteration, {entry['generator_iterations_per_second']:.3g} it/s, "
                    f"{entry['images_per_second']:.4g} images/s, CIFAR-10 epoch "
                    f"{entry['cifar10_epoch_seconds']:.4g} s"
                )
            for name, ratio in result[clock]["ratio_to_wgan_gp"].items():
                lines.append(f"  {clock:<5} {name} / wgan-gp: {_fmt_ratio(ratio)}")
    elif item == "frechet_distance":
        lines.append(
            f"\n5. FID's Frechet distance, {result['dims']}-d statistics of "
            f"{result['samples']} samples each (CPU, median [p25, p75])"
        )
        lines += _speedup_rows(result, "seconds", "speedup_over_pytorch_fid")
        lines.append(
            f"  FID {result['fid']['eigh']:.10g} (eigh) vs "
            f"{result['fid']['pytorch_fid']:.10g} (pytorch-fid): relative difference "
            f"{result['relative_difference']:.1e}"
        )
    lines.append(f"  ({result['bench_seconds']} s)")
    return "\n".join(lines)


@click.command(context_settings=dict(help_option_names=["-h", "--help"]))
@click.option(
    "--out",
    default="results/bench.json",
    show_default=True,
    type=click.Path(),
    help="JSON file for every number (written after each item).",
)
@click.option("--quick", is_flag=True, help="Tiny sizes (seconds), to check that it runs.")
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--item",
    "items",
    multiple=True,
    type=click.Choice(BENCH_ITEMS),
    help="Run only these items (repeatable; default: all).",
)
@click.option(
    "--image-size",
    "image_sizes",
    multiple=True,
    type=click.Choice(["16", "32", "64", "128"]),
    help="Critic-step and quadratic-form sizes (default: 32 and 64).",
)
@click.option(
    "--batch-size", default=None, type=click.IntRange(min=1), help="Default: 64, the paper's."
)
@click.option(
    "--width",
    default=None,
    type=click.IntRange(min=8),
    help="Model channels at 4x4 (default: 512, the paper's).",
)
@click.option(
    "--repeats",
    default=None,
    type=click.IntRange(min=1),
    help="Interleaved repetitions per item (default: 5 on CPU, 30 on CUDA).",
)
@click.option(
    "--throughput-iterations",
    default=None,
    type=click.IntRange(min=1),
    help="Generator iterations per throughput sample (default: 1 CPU, 20 CUDA).",
)
@click.option(
    "--w2-pairs",
    default=None,
    type=click.IntRange(min=1),
    help="Image pairs in the image_w2 item (default: 16).",
)
@click.option(
    "--compile",
    is_flag=True,
    help="Add the compiled quadratic form to item 2 "
    "(slicing_compiled) and compile the throughput item as `train --compile` does.",
)
@click.option(
    "--threads",
    default=None,
    type=click.IntRange(min=1),
    help="torch CPU threads (default: torch's); 1 makes CPU time robust on a shared machine.",
)
@click.option("--seed", default=0, show_default=True, type=int)
def cli(out, quick, device, items, image_sizes, compile, threads, seed, **overrides):
    """Measure the penalty's cost, the quadratic form, image W2, training throughput and
    FID's Frechet distance, interleaved in one process; print tables and write OUT (JSON)."""
    if image_sizes:
        overrides["image_sizes"] = tuple(int(size) for size in image_sizes)
    run_benchmarks(
        device,
        quick,
        items or BENCH_ITEMS,
        compile,
        seed,
        out,
        threads,
        echo=click.echo,
        **overrides,
    )
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    run_cli(cli)
