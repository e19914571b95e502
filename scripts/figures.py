"""Every figure, rendered as PNG and PDF from the experiments' raw results (no retraining).

    python scripts/figures.py NAME --input FILE [--input FILE ...] --out figures/NAME

Names: fid-curves (Fig. 6), samples (Supp. Figs. 1-2), shift (Fig. 4), noise (Fig. 5),
neighbours (Fig. 1), motivating-example (Fig. 3), dose-response (issue 21). Each renderer
registers itself below.
"""

from __future__ import annotations

import csv
import json
import math
import textwrap
from pathlib import Path

import click
import numpy as np

from fid import read_fid_curve
from neighbours import _from_thumbnail
from wwgan import (
    LOSS_NAMES,
    WWGANError,
    atomic_write,
    load_run,
    read_run_config,
    refuse_overwriting_inputs,
    run_cli,
    sample_grid,
)

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
        with atomic_write(path) as f:
            fig.savefig(f, format=path.suffix[1:], dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# Variants in input order take these colours: WGAN-GP blue, its matched control light
# blue, WWGAN red, WWGAN unit mass orange (the workflow's order), then the rest.
COLORS = ("#1f77b4", "#6baed6", "#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")
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
    colors = {}
    for (dataset, label), runs in groups.items():
        color = colors.setdefault(label, COLORS[len(colors) % len(COLORS)])
        if several_datasets:
            label = f"{FIGURE_DATASET_LABELS.get(dataset, dataset)}, {label}"
        if len(runs) > 1:
            label += f" (mean $\\pm$ s.d., {len(runs)} seeds)"
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
            key = (config.get("dataset", "?"), _label(config))
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
    dataset = config.get("dataset", "?")
    return grid, f"{FIGURE_DATASET_LABELS.get(dataset, dataset)}, {_label(config)}"


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


def _label(run: dict) -> str:
    """A run's variant label (`wwgan train --label`), else its loss's name."""
    return run.get("label") or LOSS_NAMES.get(run.get("loss"), str(run.get("loss")))


# The fields a figure reads from each runs[*] entry of a critic_probes.py result, by kind:
# "number" (NaN allowed), "numbers" (a non-empty list of them), "rows" (a list of such).
RUN_FIELDS = {
    "shift": {"seed": "int", "snapshot_iteration": "int", "oscillation": "number",
              "early_jump": "number", "curves": "rows", "per_image.oscillation": "numbers"},
    "noise": {"seed": "int", "snapshot_iteration": "int", "cohens_d": "number",
              "relative_gap": "number", "clean": "numbers", "noisy": "numbers"},
}  # fmt: skip


def _kind(value) -> str:
    return "missing" if value is None else f"{type(value).__name__} {str(value)[:20]!r}"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_numbers(value) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(map(_is_number, value))


FIELD_CHECKS = {
    "text": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": _is_number,
    "numbers": _is_numbers,
    "rows": lambda v: isinstance(v, list) and len(v) > 0 and all(map(_is_numbers, v)),
}


def _check_run(path, n: int, entry, fields: dict) -> None:
    """One line naming the file and the field when runs[n] lacks a field the figure
    reads or holds the wrong type there (`label` is optional: the loss's name stands in)."""
    if not isinstance(entry, dict):
        raise WWGANError(f"{path}: runs[{n}] is {_kind(entry)}, not an object")
    for name, kind in {"label": "text", **fields}.items():
        value = entry
        for key in name.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if (name != "label" or value is not None) and not FIELD_CHECKS[kind](value):
            raise WWGANError(f"{path}: runs[{n}].{name} is {_kind(value)}, not {kind}")


def _read_runs(paths, experiment: str) -> tuple[dict, dict]:
    """The first payload of one experiment's JSON files, and its run entries grouped by
    variant label in input order, each group by seed."""
    groups, first = {}, None
    for path in paths:
        try:
            payload = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise WWGANError(f"{path}: not a readable JSON result ({type(exc).__name__})") from exc
        if not isinstance(payload, dict) or payload.get("experiment") != experiment:
            raise WWGANError(
                f"{path}: not a `critic_probes.py {experiment}` result "
                f"(experiment={payload.get('experiment') if isinstance(payload, dict) else None!r})"
            )
        first = first or payload
        runs = payload.get("runs")
        if not isinstance(runs, list):
            raise WWGANError(f"{path}: field runs is {_kind(runs)}, not a list")
        for n, entry in enumerate(runs):
            _check_run(path, n, entry, RUN_FIELDS[experiment])
            groups.setdefault(_label(entry), []).append(entry)
    if not groups:
        raise WWGANError(f"no runs in {', '.join(map(str, paths))}")
    return first, {label: sorted(runs, key=lambda e: e["seed"]) for label, runs in groups.items()}


def _mean_sd(values) -> str:
    values = np.asarray(values, dtype=float)
    sd = f" ± {values.std(ddof=1):.2f}" if len(values) > 1 else ""
    return f"{values.mean():.2f}{sd}"


def _snapshot_note(run: dict) -> str:
    fid, swd = run.get("snapshot_fid"), run.get("snapshot_swd")
    quality = (
        f"FID {fid:.1f}" if isinstance(fid, float) and math.isfinite(fid) else f"SWD {swd:.1f}"
    )
    return f"seed {run['seed']}, iteration {run['snapshot_iteration']}, {quality}"


@register_figure("shift")
def render_shift(inputs, out, examples: int = 4):
    """Fig. 4: the matched critic of each variant (its first seed) on a few held-out
    images shifted down 0..H pixels (left), and the distribution over all images and
    seeds of each curve's oscillation (right); titles: mean ± s.d. over seeds."""
    plt = _matplotlib()
    payload, groups = _read_runs(inputs, "shift")
    fig, axes = plt.subplots(
        len(groups), 2, figsize=(9, 2.5 * len(groups)), squeeze=False,
        gridspec_kw=dict(width_ratios=(2.2, 1)),
    )  # fmt: skip
    bins = None
    for row, (label, runs) in enumerate(groups.items()):
        ax = axes[row, 0]
        curves = np.asarray(runs[0]["curves"])
        for n, curve in enumerate(curves[:examples]):
            ax.plot(np.arange(len(curve)), curve, marker=".", lw=1, label=f"image {n}")
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_title(
            f"{label} ({_snapshot_note(runs[0])}): oscillation "
            f"{_mean_sd([r['oscillation'] for r in runs])}, 2-px jump "
            f"{_mean_sd([r['early_jump'] for r in runs])}", fontsize=8,
        )  # fmt: skip
        ax.set_ylabel("critic value")
        values = np.concatenate([r["per_image"]["oscillation"] for r in runs])
        bins = bins if bins is not None else np.linspace(1, max(2.0, np.quantile(values, 0.98)), 25)
        axes[row, 1].hist(
            np.clip(values, bins[0], bins[-1]), bins=bins, color=COLORS[row % len(COLORS)]
        )
        axes[row, 1].set_title("oscillation per image (1 = monotone)", fontsize=8)
    axes[-1, 0].set_xlabel("downward shift (pixels)")
    axes[-1, 1].set_xlabel("total variation / range")
    axes[0, 0].legend(fontsize=7, ncol=min(examples, 4))
    fig.suptitle(f"Critic along a vertical shift: {payload.get('images', '')}", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out)


@register_figure("noise")
def render_noise(inputs, out):
    """Fig. 5: the matched critic of each variant (its first seed) on held-out images,
    clean and with salt-and-pepper noise, and on generated images; titles: Cohen's d and
    the clean-noisy gap over the real-fake gap, mean ± s.d. over seeds."""
    plt = _matplotlib()
    payload, groups = _read_runs(inputs, "noise")
    fig, axes = plt.subplots(len(groups), 1, figsize=(7, 2.3 * len(groups)), squeeze=False)
    for ax, (label, runs) in zip(axes[:, 0], groups.items()):
        clean, noisy = np.asarray(runs[0]["clean"]), np.asarray(runs[0]["noisy"])
        fake = np.asarray(runs[0].get("fake", []))
        ax.scatter(np.arange(len(clean)), clean, s=10, label="clean")
        ax.scatter(np.arange(len(noisy)), noisy, s=10, marker="x", label="salt and pepper")
        if len(fake):
            ax.scatter(np.arange(len(fake)), fake, s=6, marker=".", c="0.6", label="generated")
        ax.set_title(
            f"{label} ({_snapshot_note(runs[0])}): Cohen's d "
            f"{_mean_sd([r['cohens_d'] for r in runs])}, gap / real-fake gap "
            f"{_mean_sd([r['relative_gap'] for r in runs])}", fontsize=8,
        )  # fmt: skip
        ax.set_ylabel("critic value")
    axes[-1, 0].set_xlabel("image")
    axes[0, 0].legend(fontsize=7, ncol=3)
    fig.suptitle(f"Critic on noisy images: {payload.get('images', '')}", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out)


def _mean_ci(values) -> str:
    """'mean ± 95% t half-width' over the values (a query each), or the mean alone."""
    from table import mean_ci95

    mean, half = mean_ci95(values)
    return f"{mean:.2f}" if half is None else f"{mean:.2f} ± {half:.2f}"


@register_figure("neighbours")
def render_neighbours(inputs, out):
    """Fig. 1: each shown query (left column of each block) and its 9 nearest candidates
    under W2, under L2 on the same histograms and under L2 on RGB, from the thumbnails in
    the JSON."""
    plt = _matplotlib()
    payload = json.loads(Path(inputs[0]).read_text())
    if not isinstance(payload, dict) or payload.get("experiment") != "neighbours":
        raise WWGANError(f"{inputs[0]}: not a `neighbours.py` result")
    thumbs = payload.get("thumbnails")
    shape = thumbs.get("shape") if isinstance(thumbs, dict) else None
    if not (isinstance(shape, list) and len(shape) == 3 and all(
            isinstance(n, int) and n > 0 for n in shape)):  # fmt: skip
        raise WWGANError(f"{inputs[0]}: field thumbnails.shape is {shape!r:.30}, not [C, H, W]")
    for name in ("queries", *(k for k in ("w2", "l2", "l2_rgb") if k in thumbs)):
        if not isinstance(thumbs[name], list) or not isinstance(payload.get(name, {}), dict):
            raise WWGANError(f"{inputs[0]}: field thumbnails.{name} or {name} has the wrong type")

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

    names = {"w2": "W2, grayscale histograms", "l2": "L2, the same histograms",
             "l2_rgb": "L2, RGB"}  # fmt: skip
    names = {k: v for k, v in names.items() if k in thumbs}
    fig, axes = plt.subplots(
        1, len(names), figsize=(6 * len(names), 0.65 * len(thumbs["queries"]) + 0.8)
    )
    for ax, (name, label) in zip(np.atleast_1d(axes), names.items()):
        ax.imshow(block(name), cmap="gray", interpolation="nearest")
        shares = payload[name].get("class_share_per_query")
        brightness = payload[name].get("brightness_per_query")
        detail = [f"same class {_mean_ci(shares)}" if shares else "",
                  f"mean intensity {_mean_ci(brightness)}" if brightness else ""]  # fmt: skip
        ax.set_title(f"{label}: query, then its 9 nearest\n({', '.join(d for d in detail if d)}; "
                     f"mean ± 95% CI over {payload.get('num_queries', '?')} queries)",
                     fontsize=9)  # fmt: skip
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


@register_figure("dose-response")
def render_dose_response(inputs, out):
    """Issue 21: each fixed-fake critic metric against the measured lam_eff (log axis),
    one line per family through its per-lam means with 95% t intervals over seeds, every
    critic a dot (`fixed_fake_critics.py train` results)."""
    from fixed_fake_critics import METRICS, dose_response, load_records

    plt = _matplotlib()
    records = load_records(inputs)
    rows = dose_response(records)
    settings = list(dict.fromkeys(r["setting"] for r in records))
    palette = [c for c in COLORS if c != "#6baed6"]  # families apart, not two blues
    columns = 4
    fig, axes = plt.subplots(
        math.ceil(len(METRICS) / columns), columns, figsize=(13, 6), squeeze=False
    )
    for ax, (metric, description) in zip(axes.flat, METRICS.items()):
        for n, setting in enumerate(settings):
            color = palette[n % len(palette)]
            own = [r for r in records if r["setting"] == setting]
            ax.scatter([r["lam_eff"] for r in own], [r[metric] for r in own], s=10,
                       color=color, alpha=0.5, lw=0)  # fmt: skip
            means = sorted((r for r in rows if r["setting"] == setting),
                           key=lambda r: r["lam_eff"]["mean"])  # fmt: skip
            ax.errorbar(
                [r["lam_eff"]["mean"] for r in means], [r[metric]["mean"] for r in means],
                yerr=[r[metric]["half"] or 0.0 for r in means], color=color, marker="o",
                ms=3, lw=1.2, capsize=2, label=setting,
            )  # fmt: skip
        ax.set_xscale("log")
        ax.set_title(textwrap.fill(description, 40), fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(METRICS) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel(r"measured $\lambda_{eff} = \lambda\, s\, t$", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Critics against a fixed fake pool: mean ± 95% t interval over seeds", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out)


def _figure_names() -> str:
    """NAME's choices for --help, each with the start of its renderer's docstring."""
    width = max(map(len, FIGURES))
    lines = [
        f"  {name:<{width}}  "
        + textwrap.shorten(" ".join(render.__doc__.split()), 90 - width, placeholder=" ...")
        for name, render in sorted(FIGURES.items())
    ]
    return "\b\nNAME, one of:\n" + "\n".join(lines)


@click.command(
    context_settings=dict(help_option_names=["-h", "--help"]),
    epilog=_figure_names()
    + "\n\n\b\nExample:\n  python scripts/figures.py motivating-example --input "
    "results/motivating_example.csv --out figures/motivating-example",
)
# not a click.Choice: an unknown name is a one-line wwgan error naming the choices
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
    out = Path(out)
    refuse_overwriting_inputs([out.with_suffix(".png"), out.with_suffix(".pdf")], inputs)
    try:
        with np.errstate(all="ignore"):  # inf from absurd values: an error below, not a warning
            paths = FIGURES[name]([Path(p) for p in inputs], out)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as exc:
        _matplotlib().close("all")  # the half-drawn figure
        # a field the checks above do not cover: still one line, naming the files
        detail = f"field {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
        raise WWGANError(
            f"{', '.join(map(str, inputs))}: not a valid input of figure {name} "
            f"({type(exc).__name__}: {detail[:120]})"
        ) from exc
    for path in paths:
        click.echo(f"wrote {path}")


if __name__ == "__main__":
    run_cli(cli)
