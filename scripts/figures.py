"""Every figure, rendered as PNG and PDF from the experiments' raw results (no retraining).

    python scripts/figures.py NAME --input FILE [--input FILE ...] --out figures/NAME

Names: fid-curves (Fig. 6), samples (Supp. Figs. 1-2), shift (Fig. 4), noise (Fig. 5),
neighbours (Fig. 1), motivating-example (Fig. 3). Each renderer registers itself below.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import click
import numpy as np

from fid import read_fid_curve
from neighbours import _from_thumbnail
from wwgan import LOSS_NAMES, LOSSES, WWGANError, load_run, read_run_config, run_cli, sample_grid

FIGURES: dict = {}


def register_figure(name: str):
    def decorate(render):
        FIGURES[name] = render
        return render

    return decorate


def save_figure(fig, out: str | Path) -> list[Path]:
    """Save a matplotlib figure as OUT.png and OUT.pdf; returns both paths."""
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_suffix(".png"), out.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


FIGURE_LOSS_COLORS = {
    "wgan-gp": "#1f77b4",
    "lp": "#2ca02c",
    "wwgan": "#d62728",
    "wwgan-authors": "#ff7f0e",
}
FIGURE_DATASET_LABELS = {
    "cifar10": "CIFAR-10",
    "celeba": "CelebA",
    "shapes": "shapes",
    "folder": "images",
}


def _time_unit(seconds: float) -> tuple[float, str]:
    if seconds >= 3 * 3600:
        return 3600.0, "h"
    if seconds >= 3 * 60:
        return 60.0, "min"
    return 1.0, "s"


def _mean_over_seeds(runs: list[list[dict]], metric: str):
    """Iterations that every seed scored, and the seeds' values (S, T) and seconds (S, T)."""
    finite = [{r["iteration"]: r for r in rows if math.isfinite(r[metric])} for rows in runs]
    common = sorted(set.intersection(*(set(f) for f in finite)))
    values = np.array([[f[it][metric] for it in common] for f in finite]).reshape(len(runs), -1)
    seconds = np.array([[f[it]["train_seconds"] for it in common] for f in finite]).reshape(
        len(runs), -1
    )
    return np.array(common), values, seconds


def _plot_curves(plt, groups: dict, metrics: list[str]):
    """The Fig. 6 panels: rows = metrics, columns = iterations | wall-clock time."""
    max_seconds = max(r["train_seconds"] for runs in groups.values() for rows in runs for r in rows)
    scale, unit = _time_unit(max_seconds)
    several_datasets = len({dataset for dataset, _ in groups}) > 1
    ylabels = {"fid": "FID", "swd": r"SWD ($\times 10^3$)"}

    fig, axes = plt.subplots(len(metrics), 2, figsize=(8.0, 2.9 * len(metrics)), squeeze=False)
    for (dataset, loss), runs in sorted(groups.items()):
        label = LOSS_NAMES.get(loss, loss)
        if several_datasets:
            label = f"{FIGURE_DATASET_LABELS.get(dataset, dataset)}, {label}"
        if len(runs) > 1:
            label += f" (mean $\\pm$ s.d., {len(runs)} seeds)"
        color = FIGURE_LOSS_COLORS.get(loss)
        for row, metric in enumerate(metrics):
            iterations, values, seconds = _mean_over_seeds(runs, metric)
            if not len(iterations):
                continue
            mean, std = values.mean(0), values.std(0)
            for ax, x in ((axes[row, 0], iterations), (axes[row, 1], seconds.mean(0) / scale)):
                ax.plot(
                    x,
                    mean,
                    color=color,
                    label=label,
                    lw=1.5,
                    marker="o" if len(x) < 12 else None,
                    ms=3,
                )
                if len(runs) > 1:
                    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, lw=0)
    from matplotlib.ticker import FuncFormatter

    thousands = FuncFormatter(lambda v, _: f"{v / 1000:g}k" if abs(v) >= 1000 else f"{v:g}")
    for row, metric in enumerate(metrics):
        axes[row, 0].xaxis.set_major_formatter(thousands)
        for col, xlabel in enumerate(("generator iterations", f"training time ({unit})")):
            ax = axes[row, col]
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabels[metric])
            ax.grid(alpha=0.3, lw=0.5)
            ax.spines[["top", "right"]].set_visible(False)
            ax.set_title(f"{ylabels[metric].split(' ')[0]} vs {xlabel.split(' (')[0]}")
    axes[0, 0].legend(frameon=False)
    fig.tight_layout()
    return fig


@register_figure("fid-curves")
def render_fid_curves(inputs: list[Path], out: Path) -> list[Path]:
    """Fig. 6: FID (top row) and SWD (bottom row) against generator iterations (left) and
    training wall-clock time (right), one line per loss: the mean over seeds, shaded +-1
    standard deviation when there are several. Inputs: RUN/fid_curve.csv files (or RUN
    directories); each run's loss, seed and dataset come from RUN/config.json beside it."""
    plt = _matplotlib()
    groups: dict = {}
    for path in inputs:
        csv_path = path / "fid_curve.csv" if path.is_dir() else path
        if not csv_path.exists():
            raise WWGANError(
                f"{csv_path} not found; write it with `python scripts/fid.py curve RUN`"
            )
        config = read_run_config(csv_path.parent)
        if config is None:
            raise WWGANError(
                f"{csv_path.parent / 'config.json'} not found: fid-curves reads each "
                f"run's loss and seed from the config.json next to its CSV"
            )
        rows = read_fid_curve(csv_path)
        if rows:
            key = (config.get("dataset", "?"), config.get("loss", "?"))
            groups.setdefault(key, []).append(rows)
    if not groups:
        raise WWGANError(
            f"no rows in {', '.join(map(str, inputs))}; write them with "
            f"`python scripts/fid.py curve RUN`"
        )
    metrics = [
        m
        for m in ("fid", "swd")
        if any(math.isfinite(r[m]) for runs in groups.values() for rows in runs for r in rows)
    ]
    if not metrics:
        raise WWGANError("the fid_curve.csv inputs hold no FID or SWD values")
    with plt.rc_context({"font.size": 9, "axes.titlesize": 10, "legend.fontsize": 8}):
        return save_figure(_plot_curves(plt, groups, metrics), out)


def _titled_grid(path: Path) -> tuple[np.ndarray, str]:
    """A sample grid (H, W, C uint8) and its title, from a grid PNG or a run directory."""
    config = read_run_config(path if path.is_dir() else path.parent)
    if path.is_dir():
        _, generator, _ = load_run(path)
        grid = sample_grid(generator).permute(1, 2, 0).numpy()
    else:
        from PIL import Image

        try:
            grid = np.asarray(Image.open(path).convert("RGB"))
        except OSError:
            raise WWGANError(
                f"{path}: not an image (samples takes grid PNGs or run directories)"
            ) from None
    if config is None:
        return grid, path.stem
    dataset, loss = config.get("dataset", "?"), config.get("loss", "?")
    dataset, loss = FIGURE_DATASET_LABELS.get(dataset, dataset), LOSS_NAMES.get(loss, loss)
    return grid, f"{dataset}, {loss}"


@register_figure("samples")
def render_samples(inputs: list[Path], out: Path) -> list[Path]:
    """Supp. Figs. 1-2: sample grids side by side (at most 4 per row), each titled with its
    dataset and loss. Inputs: grid PNGs (from `wwgan samples RUN --out RUN/samples.png`; the
    title comes from RUN/config.json beside the PNG, else the file name) or run
    directories (an 8x8 grid of the run's latest generator, seed 0, is drawn on the CPU)."""
    plt = _matplotlib()
    panels = [_titled_grid(Path(p)) for p in inputs]
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.25 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (grid, title) in zip(axes.flat, panels):
        ax.imshow(grid, interpolation="nearest")
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out)


def _read_runs(paths, experiment: str) -> list[dict]:
    """All run entries of one experiment's JSON files, in LOSSES order, then by seed."""
    entries = []
    for path in paths:
        try:
            payload = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise WWGANError(f"{path}: not a readable JSON result ({type(exc).__name__})") from exc
        if payload.get("experiment") != experiment:
            raise WWGANError(
                f"{path}: not a `critic_probes.py {experiment}` result "
                f"(experiment={payload.get('experiment')!r})"
            )
        entries += payload["runs"]
    if not entries:
        raise WWGANError(f"no runs in {', '.join(map(str, paths))}")
    rank = {loss: n for n, loss in enumerate(LOSSES)}
    return sorted(entries, key=lambda e: (rank.get(e["loss"], len(rank)), e["seed"]))


def _by_loss(entries: list[dict]) -> dict:
    groups: dict = {}
    for entry in entries:
        groups.setdefault(entry["loss"], []).append(entry)
    return groups


def _mean_sd(values) -> str:
    values = np.asarray(values, dtype=float)
    sd = f" ± {values.std(ddof=1):.2f}" if len(values) > 1 else ""
    return f"{values.mean():.2f}{sd} (n={len(values)} run{'s' if len(values) > 1 else ''})"


@register_figure("shift")
def render_shift(inputs, out, examples: int = 4):
    """Fig. 4: critic value vs downward shift for a few real images, one panel per loss
    (the first run of each loss), titled with the roughness over all runs of that loss."""
    plt = _matplotlib()
    groups = _by_loss(_read_runs(inputs, "shift"))
    fig, axes = plt.subplots(len(groups), 1, figsize=(6, 2.6 * len(groups)), squeeze=False)
    for ax, (loss, runs) in zip(axes[:, 0], groups.items()):
        curves = np.asarray(runs[0]["curves"])
        for n, curve in enumerate(curves[:examples]):
            ax.plot(np.arange(len(curve)), curve, marker=".", lw=1, label=f"image {n}")
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_title(
            f"{loss} (seed {runs[0]['seed']}): roughness "
            f"{_mean_sd([r['roughness'] for r in runs])}",
            fontsize=9,
        )
        ax.set_ylabel("critic value")
    axes[-1, 0].set_xlabel("downward shift (pixels)")
    axes[0, 0].legend(fontsize=7, ncol=min(examples, 4))
    fig.tight_layout()
    return save_figure(fig, out)


@register_figure("noise")
def render_noise(inputs, out):
    """Fig. 5: the critic on clean and on salt-and-pepper real images, one panel per loss
    (the first run of each loss), titled with the clean/noisy separation over all runs."""
    plt = _matplotlib()
    groups = _by_loss(_read_runs(inputs, "noise"))
    fig, axes = plt.subplots(len(groups), 1, figsize=(6, 2.4 * len(groups)), squeeze=False)
    for ax, (loss, runs) in zip(axes[:, 0], groups.items()):
        clean, noisy = np.asarray(runs[0]["clean"]), np.asarray(runs[0]["noisy"])
        ax.scatter(np.arange(len(clean)), clean, s=10, label="clean")
        ax.scatter(np.arange(len(noisy)), noisy, s=10, marker="x", label="salt and pepper")
        ax.set_title(
            f"{loss} (seed {runs[0]['seed']}): separation "
            f"{_mean_sd([r['separation'] for r in runs])}",
            fontsize=9,
        )
        ax.set_ylabel("critic value")
    axes[-1, 0].set_xlabel("image")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out)


@register_figure("neighbours")
def render_neighbours(inputs, out):
    """Fig. 1: each shown query (left column of each block) and its 9 nearest candidates
    under L2 (left block) and under W2 (right block), from the thumbnails in the JSON."""
    plt = _matplotlib()
    payload = json.loads(Path(inputs[0]).read_text())
    if payload.get("experiment") != "neighbours":
        raise WWGANError(f"{inputs[0]}: not a `neighbours.py` result")
    thumbs = payload["thumbnails"]
    shape = thumbs["shape"]

    gap = np.full((shape[0], shape[1], max(1, shape[2] // 4)), 255, dtype=np.uint8)

    def block(name):  # one row per query: query, a white gap, its 9 neighbours
        rows = [
            np.concatenate(
                [_from_thumbnail(q, shape), gap]
                + [_from_thumbnail(t, shape) for t in thumbs[name][n]],
                axis=2,
            )
            for n, q in enumerate(thumbs["queries"])
        ]
        return np.concatenate(rows, axis=1).transpose(1, 2, 0).squeeze()

    fig, axes = plt.subplots(1, 2, figsize=(12, 0.65 * len(thumbs["queries"]) + 0.8))
    for ax, name, label in zip(axes, ("l2", "w2"), ("L2", "W2")):
        ax.imshow(block(name), cmap="gray", interpolation="nearest")
        share = payload[name].get("class_share")
        ax.set_title(
            f"{label}: query, then its 9 nearest"
            + (f" (same class: {share:.2f})" if share is not None else ""),
            fontsize=9,
        )
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, out)


@register_figure("motivating-example")
def render_motivating_example(inputs, out):
    """Fig. 3, computed: the distance between two one-pixel images as a function of the
    distance between their pixels, under L2 (a jump, then constant) and W2 (linear)."""
    plt = _matplotlib()
    with open(inputs[0], newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"pixel_distance", "l2", "w2"} <= set(rows[0]):
        raise WWGANError(f"{inputs[0]}: not a `motivating_example.py` CSV")
    d = np.array([float(r["pixel_distance"]) for r in rows])
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(d, [float(r["w2"]) for r in rows], "o-", ms=3, label="W2 ground metric")
    l2 = np.array([float(r["l2"]) for r in rows])
    moved = d > 0  # no line across the jump at x = y: L2 is discontinuous there
    (line,) = ax.plot(d[moved], l2[moved], "s-", ms=3, label="L2 ground metric")
    ax.plot(d[~moved], l2[~moved], "s", ms=3, color=line.get_color())
    ax.set_xlabel("|x - y| (pixels)")
    ax.set_ylabel(r"$d(\delta_x, \delta_y)$")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out)


@click.command(context_settings=dict(help_option_names=["-h", "--help"]))
@click.argument("name")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    required=True,
    type=click.Path(exists=True),
    help="Raw result file(s) written by an experiment command.",
)
@click.option("--out", required=True, type=click.Path(), help="Output path without suffix.")
def cli(name, inputs, out):
    """Render figure NAME (PNG and PDF) from raw results, without retraining."""
    if name not in FIGURES:
        raise WWGANError(f"unknown figure {name!r}; choose from {', '.join(sorted(FIGURES))}")
    for path in FIGURES[name]([Path(p) for p in inputs], Path(out)):
        click.echo(f"wrote {path}")


if __name__ == "__main__":
    run_cli(cli)
