"""The trained critics probed on real images: continuity under a vertical shift (Sec. 4.1,
Fig. 4) and robustness to salt-and-pepper noise (Sec. 4.2, Fig. 5, Supp. App. C).

    python scripts/critic_probes.py shift --run RUN [--run RUN ...] --out shift.json
    python scripts/critic_probes.py noise --run RUN [--run RUN ...] --out noise.json

Each writes one JSON with a record per run; figures.py renders them.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import click
import torch
import torch.nn as nn

from wwgan import (
    TrainConfig,
    WWGANError,
    load_dataset_with_labels,
    load_run,
    run_cli,
    select_device,
    to_unit_range,
    write_json,
)

# -- real images for the critic experiments --


def _real_images(dataset: str, data_root: str, image_size: int, n: int, seed: int = 0):
    """n real images by a fixed-seed random choice: (uint8 (n, C, S, S), int64 labels or
    None, dataset indices). They come from the training split (the offline data has no
    CIFAR test split), so "held out" here means unseen by no one: the critics were trained
    on the whole split, as in the paper's Figs. 4-5."""
    config = TrainConfig(dataset=dataset, data_root=str(data_root), image_size=image_size)
    images, labels = load_dataset_with_labels(config)
    if n > len(images):
        raise WWGANError(
            f"asked for {n} images but dataset {dataset!r} at {data_root} has "
            f"only {len(images)}; use fewer"
        )
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return images[order], (None if labels is None else labels[order]), order


@torch.no_grad()
def critic_values(critic: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The critic on images in [-1, 1] of any leading shape (..., C, H, W) -> (...), on CPU."""
    device = next(critic.parameters()).device
    flat = images.reshape(-1, *images.shape[-3:])
    values = [
        critic(flat[i : i + batch_size].to(device)).float().cpu()
        for i in range(0, len(flat), batch_size)
    ]
    return torch.cat(values).reshape(images.shape[:-3])


def _run_summary(run: str | Path, config: TrainConfig) -> dict:
    """Who a result belongs to: the run directory, its loss and seed, and the generator
    iteration of its checkpoint (from metrics.jsonl; None when absent)."""
    iteration = None
    metrics = Path(run) / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError):
                iteration = json.loads(line)["iteration"]
    return dict(
        run=str(run),
        loss=config.loss,
        seed=config.seed,
        iteration=iteration,
        dataset=config.dataset,
        image_size=config.image_size,
    )


# -- Sec. 4.1, Fig. 4: the critic along a continuous translation --

SHIFT_FILL = -1.0  # black in [-1, 1], i.e. zero mass: the image is shifted away


def shift_down(images: torch.Tensor, steps: int | None = None) -> torch.Tensor:
    """Each image moved down by k = 0..steps pixels (steps defaults to H), the vacated top
    rows filled with black (-1 in [-1, 1]: zero mass), so that at k = H the image is gone,
    as in Fig. 4. (B, C, H, W) -> (B, steps + 1, C, H, W)."""
    height = images.shape[-2]
    steps = height if steps is None else steps
    out = images.new_full((images.shape[0], steps + 1, *images.shape[1:]), SHIFT_FILL)
    for k in range(steps + 1):
        if k < height:
            out[:, k, :, k:, :] = images[:, :, : height - k, :]
    return out


def shift_roughness(curves: torch.Tensor, spread: float) -> torch.Tensor:
    """How far the critic jumps per one-pixel shift: the mean |c(k+1) - c(k)| over the
    steps of each curve, divided by the spread (standard deviation) of the critic over the
    unshifted real images, so that critics of different scales compare. (N, K) -> (N,)."""
    return curves.diff(dim=-1).abs().mean(dim=-1) / spread


def shift_experiment(
    runs, dataset=None, data_root=None, num_images=100, image_seed=0, device="cpu"
) -> dict:
    """Fig. 4 for each run: the critic on real images shifted down 0..H pixels."""
    entries, cache = [], {}
    for run in runs:
        config, _, critic = load_run(run, device=select_device(device))
        key = (dataset or config.dataset, str(data_root or config.data_root), config.image_size)
        if key not in cache:
            cache[key] = _real_images(*key, num_images, image_seed)
        images, _, indices = cache[key]
        curves = critic_values(critic, shift_down(to_unit_range(images)))
        spread = float(curves[:, 0].std())
        roughness = shift_roughness(curves, spread)
        entries.append(
            dict(
                _run_summary(run, config),
                images_dataset=key[0],
                data_root=key[1],
                roughness=float(roughness.mean()),
                roughness_std_over_images=float(roughness.std()),
                critic_spread_real=spread,
                critic_mean_real=float(curves[:, 0].mean()),
                image_indices=indices.tolist(),
                roughness_per_image=roughness.tolist(),
                curves=curves.tolist(),
            )
        )
    return dict(
        experiment="shift",
        num_images=num_images,
        image_seed=image_seed,
        fill="vacated top rows are black (-1 in [-1, 1], zero mass); at H steps the "
        "image is shifted away",
        images="training images (fixed-seed random choice); no test split offline",
        summary="roughness = mean over steps of |c(k+1) - c(k)| / std of c over the "
        "unshifted images (lower = more continuous)",
        runs=entries,
    )


# -- Sec. 4.2, Fig. 5, Supp. Appendix C: the critic on noisy real images --

NOISE_PROBABILITY = 0.15


def salt_and_pepper(
    images01: torch.Tensor,
    probability: float = NOISE_PROBABILITY,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """RGB salt-and-pepper noise of Supp. Appendix C on images in [0, 1] pixel units: each
    of the C * H * W coordinates independently is changed with `probability`, and a changed
    coordinate becomes 0.0 or 1.0 (the maximum) with equal probability."""
    changed = torch.rand(images01.shape, generator=generator) < probability
    salt = torch.rand(images01.shape, generator=generator) < 0.5
    return torch.where(changed, salt.to(images01.dtype), images01)


def noise_separation(clean: torch.Tensor, noisy: torch.Tensor) -> float:
    """|mean(clean) - mean(noisy)| / pooled standard deviation (a Cohen's d): how far the
    critic separates clean from noisy real images, in units of its own spread."""
    pooled = math.sqrt(0.5 * (float(clean.var()) + float(noisy.var())))
    return abs(float(clean.mean()) - float(noisy.mean())) / pooled


def noise_experiment(
    runs,
    dataset=None,
    data_root=None,
    num_images=64,
    image_seed=0,
    noise_seed=0,
    probability=NOISE_PROBABILITY,
    device="cpu",
) -> dict:
    """Fig. 5 for each run: the critic on the same real images, clean and noisy."""
    entries, cache = [], {}
    for run in runs:
        config, _, critic = load_run(run, device=select_device(device))
        key = (dataset or config.dataset, str(data_root or config.data_root), config.image_size)
        if key not in cache:
            images, _, indices = _real_images(*key, num_images, image_seed)
            clean01 = images.float() / 255.0
            noisy01 = salt_and_pepper(
                clean01, probability, torch.Generator().manual_seed(noise_seed)
            )
            cache[key] = (clean01 * 2 - 1, noisy01 * 2 - 1, indices)
        clean_images, noisy_images, indices = cache[key]
        clean, noisy = critic_values(critic, clean_images), critic_values(critic, noisy_images)
        entries.append(
            dict(
                _run_summary(run, config),
                images_dataset=key[0],
                data_root=key[1],
                separation=noise_separation(clean, noisy),
                clean_mean=float(clean.mean()),
                clean_std=float(clean.std()),
                noisy_mean=float(noisy.mean()),
                noisy_std=float(noisy.std()),
                image_indices=indices.tolist(),
                clean=clean.tolist(),
                noisy=noisy.tolist(),
            )
        )
    return dict(
        experiment="noise",
        num_images=num_images,
        image_seed=image_seed,
        noise_seed=noise_seed,
        probability=probability,
        noise="Supp. App. C: each of the 3*H*W coordinates changed with probability "
        "p to 0 or 1 (equal odds) in [0, 1] units, then mapped to [-1, 1]",
        summary="separation = |mean(clean) - mean(noisy)| / pooled std (lower = more robust)",
        runs=entries,
    )


@click.group(context_settings=dict(help_option_names=["-h", "--help"]))
def cli():
    """Critics on shifted and on noisy real images (Figs. 4-5)."""


_RUN_OPTION = click.option(
    "--run",
    "runs",
    multiple=True,
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Run directory (repeat for several losses and seeds).",
)
_DATA_OPTIONS = [
    click.option("--dataset", default=None, help="Images to use (default: each run's)."),
    click.option(
        "--data-root", default=None, type=click.Path(), help="Dataset root (default: each run's)."
    ),
    click.option(
        "--image-seed",
        default=0,
        show_default=True,
        type=int,
        help="Seed of the fixed random choice of real images.",
    ),
    click.option("--device", default="cpu", show_default=True),
]


def _data_options(command):
    for option in reversed(_DATA_OPTIONS):
        command = option(command)
    return command


@cli.command("shift")
@_RUN_OPTION
@_data_options
@click.option("--num-images", default=100, show_default=True, type=click.IntRange(min=2))
@click.option("--out", required=True, type=click.Path(dir_okay=False))
def shift_command(runs, out, **options):
    """Critics on real images shifted down 0..H pixels (Figure 4); a JSON per run."""
    payload = shift_experiment(runs, **options)
    write_json(payload, out)
    for entry in payload["runs"]:
        click.echo(
            f"{entry['loss']} seed {entry['seed']}: roughness {entry['roughness']:.3f} "
            f"± {entry['roughness_std_over_images']:.3f} over images ({entry['run']})"
        )
    click.echo(f"wrote {out}")


@cli.command("noise")
@_RUN_OPTION
@_data_options
@click.option("--num-images", default=64, show_default=True, type=click.IntRange(min=2))
@click.option("--noise-seed", default=0, show_default=True, type=int)
@click.option(
    "--probability",
    default=NOISE_PROBABILITY,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Chance that a coordinate is changed.",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False))
def noise_command(runs, out, **options):
    """Critics on clean and salt-and-pepper real images (Figure 5); a JSON per run."""
    payload = noise_experiment(runs, **options)
    write_json(payload, out)
    for entry in payload["runs"]:
        click.echo(
            f"{entry['loss']} seed {entry['seed']}: separation "
            f"{entry['separation']:.3f} ({entry['run']})"
        )
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    run_cli(cli)
