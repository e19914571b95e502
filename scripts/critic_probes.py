"""The trained critics probed on real images they never saw: continuity under a vertical
shift (Sec. 4.1, Fig. 4) and robustness to salt-and-pepper noise (Sec. 4.2, Fig. 5,
Supp. App. C), each critic taken at a matched generator quality.

    python scripts/critic_probes.py shift --run RUN [--run RUN ...] --out shift.json
    python scripts/critic_probes.py noise --run RUN [--run RUN ...] --out noise.json

The paper compares critics whose generators were trained "until FID about 40". Each run
keeps snapshots of both models (`wwgan train --snapshot-every`) and its FID/SWD curve
(`fid.py curve`); we probe, for every run, the snapshot whose FID is closest to the
target, or, when some run never reaches it, to the lowest FID every run reaches
(`select_snapshots`). Images: the data's test split, else the slice the runs held out
(`wwgan train --holdout`); training images only with --allow-training-images. Each
command writes one JSON with a record per run, per-image values included; figures.py
and table.py read it.
"""

from __future__ import annotations

import math
from pathlib import Path

import click
import torch
import torch.nn as nn

from fid import read_fid_curve
from wwgan import (
    DATASETS,
    LOSS_NAMES,
    FiniteFloatRange,
    TrainConfig,
    WWGANError,
    evaluation_images,
    generated_batches,
    load_models,
    read_run_config,
    refuse_overwriting_inputs,
    run_cli,
    select_device,
    snapshot_paths,
    to_unit_range,
    write_json,
)

MATCH_METRICS = ("fid", "swd", "last")

# -- the critic of each run: the snapshot at a matched generator quality --


def select_snapshots(runs, match: str = "fid", target: float = 40.0) -> tuple[list[dict], dict]:
    """For each run, the snapshot to probe, and how it was chosen.

    match "fid" (the paper's protocol) or "swd": the snapshot whose metric is closest to
    `target`; when some run never reaches the target (its lowest value is above it), the
    target becomes the lowest value every run reaches, max over runs of min over
    snapshots. "fid" with no FID values in the curves (FID off) matches on SWD instead,
    with the SWD target chosen the same way, and says so. "last": each run's final
    snapshot. Returns ([{run, path, iteration, fid, swd}], {matched_on, target, ...})."""
    if match not in MATCH_METRICS:
        raise WWGANError(f"unknown match {match!r}; choose from {', '.join(MATCH_METRICS)}")
    candidates = {}
    for run in map(Path, runs):
        snapshots = snapshot_paths(run)
        if not snapshots:
            raise WWGANError(f"{run}: no snapshots/snapshot_*.pt; train with --snapshot-every")
        curve = run / "fid_curve.csv"
        rows = {r["iteration"]: r for r in read_fid_curve(curve)} if curve.exists() else {}
        if match != "last" and not rows:
            raise WWGANError(f"{curve} not found; score the run with `python scripts/fid.py curve`")
        candidates[run] = [
            dict(path=path, iteration=it, fid=rows.get(it, {}).get("fid", math.nan),
                 swd=rows.get(it, {}).get("swd", math.nan))
            for it, path in snapshots.items()
        ]  # fmt: skip
    metric, note = match, ""
    if match == "fid" and not any(
        math.isfinite(c["fid"]) for cs in candidates.values() for c in cs
    ):
        metric, note = "swd", "FID is off (no FID in the curves): matched on SWD instead"
    if metric == "last":
        chosen = {run: cs[-1] for run, cs in candidates.items()}
        protocol = dict(matched_on="last", requested_target=None, target=None, note=note)
    else:
        best = {}
        for run, cs in candidates.items():
            scored = [c for c in cs if math.isfinite(c[metric])]
            if not scored:
                raise WWGANError(f"{run}: no snapshot has a {metric.upper()} in fid_curve.csv")
            best[run] = min(c[metric] for c in scored)
        requested = target if metric == match else None
        reach = max(best.values())  # the lowest value every run reaches
        goal = requested if requested is not None and reach <= requested else reach
        if requested is not None and goal != requested:
            note = (f"no snapshot of every run reaches {metric.upper()} {requested:g}; matched "
                    f"at {goal:.4g}, the lowest {metric.upper()} every run reaches")  # fmt: skip
        chosen = {}
        for run, cs in candidates.items():
            scored = [c for c in cs if math.isfinite(c[metric])]
            chosen[run] = min(scored, key=lambda c: (abs(c[metric] - goal), c["iteration"]))
        protocol = dict(matched_on=metric, requested_target=requested, target=goal, note=note)
    return [dict(run=str(run), **chosen[run]) for run in candidates], protocol


def _run_summary(run: str | Path, config: TrainConfig, snapshot: dict) -> dict:
    """Who a result belongs to: the run, its variant label, loss, seed, and the snapshot
    probed (iteration, its generator's FID and SWD)."""
    label = (read_run_config(run) or {}).get("label") or LOSS_NAMES.get(config.loss, config.loss)
    return dict(
        run=str(run), label=label, loss=config.loss, seed=config.seed, dataset=config.dataset,
        image_size=config.image_size, snapshot_iteration=snapshot["iteration"],
        snapshot_fid=snapshot["fid"], snapshot_swd=snapshot["swd"],
    )  # fmt: skip


# -- real images no critic saw --


def probe_images(config: TrainConfig, count: int, seed: int = 0, allow_training_images=False):
    """`count` evaluation images (`wwgan.evaluation_images`) by a fixed-seed random choice:
    (uint8 images, labels or None, their indices in the evaluation set, where they come
    from)."""
    images, labels, source = evaluation_images(config, allow_training_images)
    if count > len(images):
        raise WWGANError(f"asked for {count} images but there are {len(images)} ({source})")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:count]
    return images[order], None if labels is None else labels[order], order, source


def _probe_setup(runs, dataset, data_root, match, target, device):
    """The chosen snapshots with their loaded models, and the config the images follow
    (all runs must share the dataset, resolution and held-out slice)."""
    snapshots, protocol = select_snapshots(runs, match, target)
    device = select_device(device)
    loaded = []
    for snapshot in snapshots:
        config, generator, critic, _ = load_models(snapshot["path"], device)
        loaded.append((snapshot, config, generator, critic))
    keys = {(c.dataset, c.image_size, c.holdout, c.data_root) for _, c, _, _ in loaded}
    if len({k[:3] for k in keys}) > 1:
        raise WWGANError(f"the runs differ in dataset, image size or held-out slice: {keys}")
    config = loaded[0][1]
    overrides = dict(
        dataset=dataset or config.dataset, data_root=str(data_root or config.data_root)
    )
    return loaded, TrainConfig.from_dict({**config.to_dict(), **overrides}), protocol, device


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


# -- Sec. 4.1, Fig. 4: the critic along a continuous translation --

SHIFT_FILL = -1.0  # black in [-1, 1], i.e. zero mass: the image is shifted away
EARLY_SHIFT = 2  # "images shifted less than 2 pixels away" (Sec. 4.1)


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


def oscillation(curves: torch.Tensor) -> torch.Tensor:
    """Total variation of each curve c(0..H) over its range, sum |c(k+1) - c(k)| /
    (max c - min c): 1 for a monotone curve (and, by convention, a constant one), and
    grows with every reversal, whatever the critic's scale. (N, K) -> (N,)."""
    total_variation = curves.diff(dim=-1).abs().sum(dim=-1)
    spread = curves.amax(dim=-1) - curves.amin(dim=-1)
    flat = spread <= 1e-12 * curves.abs().amax(dim=-1).clamp_min(1.0)
    return torch.where(flat, torch.ones_like(spread), total_variation / spread.clamp_min(1e-30))


def sign_changes(curves: torch.Tensor) -> torch.Tensor:
    """How often the step c(k+1) - c(k) changes sign along each curve (zero steps are
    skipped): 0 for a monotone or constant curve. (N, K) -> (N,) int."""
    counts = []
    for steps in curves.diff(dim=-1):
        signs = torch.sign(steps[steps != 0])
        counts.append(int((signs[1:] != signs[:-1]).sum()))
    return torch.tensor(counts)


def early_jump(curves: torch.Tensor, spread: float, pixels: int = EARLY_SHIFT) -> torch.Tensor:
    """The largest |c(k) - c(0)| for shifts k = 1..`pixels`, in units of the critic's
    spread (standard deviation) over the unshifted real images. (N, K) -> (N,)."""
    return (curves[:, 1 : pixels + 1] - curves[:, :1]).abs().amax(dim=-1) / spread


def shift_experiment(
    runs, dataset=None, data_root=None, num_images=128, image_seed=0, match="fid", target=40.0,
    allow_training_images=False, device="cpu",
) -> dict:  # fmt: skip
    """Fig. 4 for each run's matched critic: held-out real images shifted down 0..H pixels."""
    loaded, config, protocol, device = _probe_setup(runs, dataset, data_root, match, target, device)
    images, _, indices, source = probe_images(config, num_images, image_seed, allow_training_images)
    shifted = shift_down(to_unit_range(images))
    entries = []
    for snapshot, run_config, _, critic in loaded:
        curves = critic_values(critic, shifted)
        spread = float(curves[:, 0].std())
        per_image = dict(
            oscillation=oscillation(curves), sign_changes=sign_changes(curves).float(),
            early_jump=early_jump(curves, spread),
        )  # fmt: skip
        entries.append(dict(
            _run_summary(snapshot["run"], run_config, snapshot),
            **{name: float(values.mean()) for name, values in per_image.items()},
            critic_spread_real=spread, critic_mean_real=float(curves[:, 0].mean()),
            per_image={name: values.tolist() for name, values in per_image.items()},
            curves=curves.tolist(),
        ))  # fmt: skip
    return dict(
        experiment="shift", num_images=num_images, image_seed=image_seed, images=source,
        image_indices=indices.tolist(), protocol=protocol,
        fill="vacated top rows are black (-1 in [-1, 1], zero mass); at H steps the image "
             "is shifted away",
        metrics=dict(
            oscillation="total variation of c(0..H) / (max - min); 1 = monotone",
            sign_changes="sign changes of c(k+1) - c(k); 0 = monotone",
            early_jump=f"max |c(k) - c(0)| for k <= {EARLY_SHIFT} px / std of c(0) over the "
                       f"images",
        ),
        runs=entries,
    )  # fmt: skip


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


def cohens_d(clean: torch.Tensor, noisy: torch.Tensor) -> float:
    """(mean(clean) - mean(noisy)) / pooled standard deviation: how far the critic
    separates clean from noisy images in units of its own spread over them."""
    pooled = math.sqrt(0.5 * (float(clean.var()) + float(noisy.var())))
    return (float(clean.mean()) - float(noisy.mean())) / pooled


def noise_experiment(
    runs, dataset=None, data_root=None, num_images=64, image_seed=0, noise_seed=0,
    probability=NOISE_PROBABILITY, match="fid", target=40.0, allow_training_images=False,
    device="cpu",
) -> dict:  # fmt: skip
    """Fig. 5 for each run's matched critic: the same held-out images clean and noisy,
    and generated images of the same snapshot for the critic's real-fake gap."""
    loaded, config, protocol, device = _probe_setup(runs, dataset, data_root, match, target, device)
    images, _, indices, source = probe_images(config, num_images, image_seed, allow_training_images)
    clean01 = images.float() / 255.0
    noisy01 = salt_and_pepper(clean01, probability, torch.Generator().manual_seed(noise_seed))
    entries = []
    for snapshot, run_config, generator, critic in loaded:
        clean, noisy = (
            critic_values(critic, clean01 * 2 - 1),
            critic_values(critic, noisy01 * 2 - 1),
        )
        fake_images = torch.cat(
            list(generated_batches(generator, num_images, 256, image_seed, device))
        )
        fake = critic_values(critic, to_unit_range(fake_images.cpu()))
        real_fake_gap = float(clean.mean() - fake.mean())
        entries.append(dict(
            _run_summary(snapshot["run"], run_config, snapshot),
            cohens_d=cohens_d(clean, noisy), abs_cohens_d=abs(cohens_d(clean, noisy)),
            relative_gap=float(clean.mean() - noisy.mean()) / real_fake_gap,
            real_fake_gap=real_fake_gap, clean_mean=float(clean.mean()),
            clean_std=float(clean.std()), noisy_mean=float(noisy.mean()),
            noisy_std=float(noisy.std()), fake_mean=float(fake.mean()),
            per_image=dict(clean_minus_noisy=(clean - noisy).tolist()),
            clean=clean.tolist(), noisy=noisy.tolist(), fake=fake.tolist(),
        ))  # fmt: skip
    return dict(
        experiment="noise", num_images=num_images, image_seed=image_seed, noise_seed=noise_seed,
        probability=probability, images=source, image_indices=indices.tolist(),
        protocol=protocol,
        noise="Supp. App. C: each of the 3*H*W coordinates changed with probability p to 0 or "
              "1 (equal odds) in [0, 1] units, then mapped to [-1, 1]",
        metrics=dict(
            cohens_d="(mean clean - mean noisy) / pooled std; |d| large = separates noisy",
            relative_gap="(mean clean - mean noisy) / (mean clean - mean generated): the "
                         "noise gap as a share of the critic's real-fake gap",
        ),
        runs=entries,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------


@click.group(
    context_settings=dict(help_option_names=["-h", "--help"]),
    epilog="\b\nExample:\n  python scripts/critic_probes.py shift --run runs/wwgan/seed0 "
    "--run runs/wgan-gp/seed0 --out results/shift.json",
)
def cli():
    """Critics on shifted and on noisy held-out real images (Figs. 4-5)."""


def _probe_options(command):
    options = [
        click.option("--run", "runs", multiple=True, required=True,
                     type=click.Path(exists=True, file_okay=False),
                     help="Run directory (repeat for several variants and seeds)."),
        click.option("--match", type=click.Choice(MATCH_METRICS), default="fid",
                     show_default=True,
                     help="Probe each run's snapshot closest to --target in this metric of "
                          "its fid_curve.csv (fid: the paper's protocol), or its last."),
        click.option("--target", default=40.0, show_default=True, type=FiniteFloatRange(min=0, min_open=True),
                     help="FID (or SWD) to match; when a run never reaches it, the lowest "
                          "value every run reaches."),
        click.option("--dataset", default=None, type=click.Choice(DATASETS),
                     help="Images to use (default: the runs')."),
        click.option("--data-root", default=None, type=click.Path(),
                     help="Dataset root (default: the runs')."),
        click.option("--image-seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1),
                     help="Seed of the fixed random choice of held-out images."),
        click.option("--allow-training-images", is_flag=True,
                     help="Use training images when the data has no test split and the runs "
                          "held out none (the critics saw them)."),
        click.option("--device", default="cpu", show_default=True,
                     help="auto | cpu | cuda | cuda:N | mps"),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


@cli.command(
    "shift",
    epilog="\b\nExample:\n  python scripts/critic_probes.py shift --run runs/wwgan/seed0 "
    "--run runs/wgan-gp/seed0 --match fid --target 40 --out results/shift.json",
)
@_probe_options
@click.option("--num-images", default=128, show_default=True, type=click.IntRange(min=2))
@click.option("--out", required=True, type=click.Path(dir_okay=False))
def shift_command(runs, out, **options):
    """Critics on held-out real images shifted down 0..H pixels (Figure 4)."""
    refuse_overwriting_inputs([out], [*runs, *(Path(run) / "fid_curve.csv" for run in runs)])
    payload = shift_experiment(runs, **options)
    write_json(payload, out)
    for entry in payload["runs"]:
        click.echo(
            f"{entry['label']} seed {entry['seed']} (iteration {entry['snapshot_iteration']}): "
            f"oscillation {entry['oscillation']:.3f}, sign changes {entry['sign_changes']:.2f}, "
            f"early jump {entry['early_jump']:.3f}"
        )
    click.echo(f"wrote {out} ({payload['images']})")


@cli.command(
    "noise",
    epilog="\b\nExample:\n  python scripts/critic_probes.py noise --run runs/wwgan/seed0 "
    "--run runs/wgan-gp/seed0 --probability 0.1 --out results/noise.json",
)
@_probe_options
@click.option("--num-images", default=64, show_default=True, type=click.IntRange(min=2))
@click.option("--noise-seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1))
@click.option(
    "--probability", default=NOISE_PROBABILITY, show_default=True, type=FiniteFloatRange(0, 1),
    help="Chance that a coordinate is changed.",
)  # fmt: skip
@click.option("--out", required=True, type=click.Path(dir_okay=False))
def noise_command(runs, out, **options):
    """Critics on clean and salt-and-pepper held-out real images (Figure 5)."""
    refuse_overwriting_inputs([out], [*runs, *(Path(run) / "fid_curve.csv" for run in runs)])
    payload = noise_experiment(runs, **options)
    write_json(payload, out)
    for entry in payload["runs"]:
        click.echo(
            f"{entry['label']} seed {entry['seed']} (iteration {entry['snapshot_iteration']}): "
            f"Cohen's d {entry['cohens_d']:.3f}, gap / real-fake gap {entry['relative_gap']:.3f}"
        )
    click.echo(f"wrote {out} ({payload['images']})")


if __name__ == "__main__":
    run_cli(cli)
