"""The results table: mean +- 95% CI over seeds for every metric, beside the paper's values.

python scripts/table.py --input RUN/fid_curve.csv ... --input shift.json --out table.md
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
import platform
from pathlib import Path

import click
import numpy as np
import torch

from wwgan import (
    DATASET_SIZES,
    LOSS_NAMES,
    LOSSES,
    OPTIMIZER_PRESETS,
    WWGANError,
    read_run_config,
    run_cli,
    warn,
)

PAPER_EPOCH_SECONDS = {"wwgan": 218.1, "wgan-gp": 236.9}
PAPER_NOTES = {
    "FID robustness": "≈ 40 for both (Sec. 4.1-4.2)",
    "FID": "curves only (Fig. 6): comparable",
    "epoch seconds": "WWGAN 218.1, WGAN-GP 236.9 (Fig. 6; dataset, GPU unstated)",
    "epoch time ratio": f"{218.1 / 236.9:.3f} (218.1 / 236.9, Fig. 6)",
    "shift roughness": "no number (Fig. 4: WWGAN continuous, WGAN-GP oscillates)",
    "noise separation": "no number (Fig. 5: WGAN-GP separates noisy/clean, WWGAN less)",
    "neighbour class share": "no number (Fig. 1: W2 neighbours look more alike)",
}
TABLE_METRICS = (
    "FID",
    "sliced Wasserstein distance",
    "seconds per epoch",
    "epoch time WWGAN / WGAN-GP",
    "shift roughness",
    "noise separation",
)


def mean_ci95(values) -> tuple[float, float | None]:
    """Mean and half-width of the two-sided 95% Student t interval of the mean (n - 1
    degrees of freedom); no interval (None) for a single value."""
    from scipy import stats

    x = np.asarray(list(values), dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values")
    if x.size < 2:
        return float(x.mean()), None
    half = stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), float(half)


def _number(value) -> float | None:
    """A finite float, or None for blanks, NaN and things that are not numbers."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _optimizer_name(run_config: dict) -> str:
    adam = tuple(_number(run_config.get(k)) for k in ("lr", "beta1", "beta2"))
    for name, preset in OPTIMIZER_PRESETS.items():
        if adam == (preset["lr"], preset["beta1"], preset["beta2"]):
            return name
    return "custom"


def _fid_curve_records(path: Path) -> list[dict]:
    """Final FID, SWD and epoch time of one run from RUN/fid_curve.csv (its last row)
    and RUN/config.json (loss, seed, dataset, batch, n_critic, Adam preset)."""
    try:
        with open(path, newline="") as f:
            rows = [row for row in csv.DictReader(f) if _number(row.get("iteration")) is not None]
    except (ValueError, csv.Error):  # a binary file: UnicodeDecodeError
        raise WWGANError(
            f"{path}: not a fid_curve.csv; rerun `python scripts/fid.py curve`"
        ) from None
    if not rows:
        raise WWGANError(f"{path}: no rows with an iteration; rerun `python scripts/fid.py curve`")
    last = max(rows, key=lambda row: _number(row["iteration"]))
    run = read_run_config(path.parent) or {}
    optimizer = _optimizer_name(run)
    base = dict(
        loss=run.get("loss", "?"),
        seed=run.get("seed"),
        setting=f"{run.get('dataset', path.parent.name)}, {optimizer} Adam preset",
    )
    fid_note = "FID robustness" if optimizer == "robustness" else "FID"
    records = [
        dict(base, metric=metric, value=_number(last.get(column)), paper=note)
        for metric, column, note in (
            ("FID", "fid", fid_note),
            ("sliced Wasserstein distance", "swd", None),
        )
    ]
    iteration, seconds = _number(last.get("iteration")), _number(last.get("train_seconds"))
    images = run.get("max_images") or DATASET_SIZES.get(run.get("dataset"))
    # An "epoch" as the authors' train.py counts it: one critic batch per loader step, so
    # N / (batch_size * n_critic) generator iterations.
    if iteration and seconds is not None and images and "batch_size" in run:
        per_epoch = images / (run["batch_size"] * run.get("n_critic", 5))
        records.append(
            dict(
                base,
                metric="seconds per epoch",
                value=seconds / iteration * per_epoch,
                paper="epoch seconds",
            )
        )
    return [r for r in records if r["value"] is not None]


def _experiment_records(path: Path, data: dict, metric: str, field: str) -> list[dict]:
    """One record per critic from {"runs": [{"loss", "seed", FIELD, ...}, ...]}."""
    runs = data.get("runs") if isinstance(data, dict) else data
    setting = data.get("dataset", "critic runs") if isinstance(data, dict) else "critic runs"
    records = []
    for run in runs if isinstance(runs, list) else []:
        value = _number(run.get(field)) if isinstance(run, dict) else None
        if value is not None:
            records.append(
                dict(
                    metric=metric,
                    setting=str(setting),
                    loss=run.get("loss", "?"),
                    seed=run.get("seed"),
                    value=value,
                    paper=metric,
                )
            )
    if not records:
        warn(f"{path}: no runs[*].{field} numbers; not tabulated")
    return records


def results_records(paths) -> tuple[list[dict], dict]:
    """Per-run records (metric, setting, loss, seed, value, paper) from result files, and
    the neighbour class shares {"L2": [...], "W2": [...]}."""
    records, shares = [], {}
    for path in map(Path, paths):
        if not path.is_file():
            raise WWGANError(
                f"{path}: "
                + ("a folder, not a result file" if path.is_dir() else "no such result file")
            )
        known = "fid_curve.csv, shift.json, noise.json, neighbours.json"
        if path.suffix == ".csv":
            records += _fid_curve_records(path)
            continue
        name = path.stem.lower()
        if path.suffix != ".json" or not any(k in name for k in ("shift", "noise", "neighbo")):
            raise WWGANError(f"{path}: not a result file the table knows ({known})")
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise WWGANError(f"{path}: not valid JSON ({exc})") from exc
        if "shift" in name:
            records += _experiment_records(path, data, "shift roughness", "roughness")
        elif "noise" in name:
            records += _experiment_records(path, data, "noise separation", "separation")
        elif "neighbo" in name:
            for metric, key in (("L2", "l2"), ("W2", "w2")):
                entry = data.get(key) if isinstance(data, dict) else None
                value = entry.get("class_share_per_query") if isinstance(entry, dict) else None
                values = value if isinstance(value, list) else [value]
                values = [v for v in map(_number, values) if v is not None]
                if values:
                    shares[metric] = values
    return records, shares


def _epoch_ratio_records(records: list[dict]) -> list[dict]:
    """WWGAN / WGAN-GP epoch time per seed (runs paired by seed within a setting)."""
    times = {
        (r["setting"], r["loss"], r["seed"]): r["value"]
        for r in records
        if r["metric"] == "seconds per epoch"
    }
    return [
        dict(
            metric="epoch time WWGAN / WGAN-GP",
            setting=setting,
            loss="wwgan",
            seed=seed,
            value=value / times[(setting, "wgan-gp", seed)],
            paper="epoch time ratio",
        )
        for (setting, loss, seed), value in times.items()
        if loss == "wwgan" and times.get((setting, "wgan-gp", seed))
    ]


def _format_estimate(values: list[float]) -> str:
    mean, half = mean_ci95(values)
    return f"{mean:.4g} (n=1)" if half is None else f"{mean:.4g} ± {half:.2g} (n={len(values)})"


def _csv_row(metric: str, setting: str, loss: str, values: list[float], paper: str) -> dict:
    mean, half = mean_ci95(values)
    return dict(
        metric=metric,
        setting=setting,
        loss=loss,
        n=len(values),
        mean=mean,
        ci95="" if half is None else half,
        values=";".join(f"{v:.6g}" for v in values),
        paper=paper,
    )


def _machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, {gpu}, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def write_results_table(paths, out: Path, command: str = "") -> list[Path]:
    """Markdown table OUT (.md) and its long-form CSV beside it: mean ± 95% CI over seeds
    per metric, setting and loss, with the paper's value where it prints one."""

    records, shares = results_records(paths)
    if not records and not shares:
        raise WWGANError(f"no numbers to tabulate in {', '.join(map(str, paths))}")
    records += _epoch_ratio_records(records)
    groups: dict = {}
    for r in records:
        groups.setdefault((r["metric"], r["setting"]), {}).setdefault(r["loss"], []).append(r)
    losses = [loss for loss in LOSSES if any(loss in g for g in groups.values())]
    losses += sorted({loss for g in groups.values() for loss in g} - set(losses))
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# wwgan results",
        "",
        f"Made {when} by `{command or 'wwgan table'}` on {_machine()}.",
        "Cells: mean ± half-width of the 95% Student t confidence interval over seeds "
        "(n runs); n=1: no interval.",
        "",
        "| metric | setting | "
        + " | ".join(LOSS_NAMES.get(loss, loss) for loss in losses)
        + " | paper |",
        "|---|---|" + "---|" * len(losses) + "---|",
    ]
    settings = list(dict.fromkeys(setting for _, setting in groups))
    order = sorted(groups, key=lambda key: (settings.index(key[1]), TABLE_METRICS.index(key[0])))
    csv_rows = []
    for metric, setting in order:
        by_loss = groups[(metric, setting)]
        paper = PAPER_NOTES.get(next(r["paper"] for rs in by_loss.values() for r in rs), "")
        cells = []
        for loss in losses:
            values = [r["value"] for r in by_loss.get(loss, [])]
            cells.append(_format_estimate(values) if values else "")
            if values:
                csv_rows.append(_csv_row(metric, setting, loss, values, paper))
        lines.append(f"| {metric} | {setting} | " + " | ".join(cells) + f" | {paper} |")
    if shares:
        paper = PAPER_NOTES["neighbour class share"]
        lines += [
            "",
            "Nearest neighbours (Fig. 1): share of a query's neighbours in its class.",
            "",
            "| ground metric | class share | paper |",
            "|---|---|---|",
        ]
        for metric, values in shares.items():
            lines.append(f"| {metric} | {_format_estimate(values)} | {paper} |")
            csv_rows.append(_csv_row("neighbour class share", metric, "", values, paper))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    csv_path = out.with_suffix(".csv")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=["metric", "setting", "loss", "n", "mean", "ci95", "values", "paper"]
        )
        writer.writeheader()
        writer.writerows(csv_rows)
    return [out, csv_path]


@click.command(context_settings=dict(help_option_names=["-h", "--help"]))
@click.option(
    "--input",
    "inputs",
    multiple=True,
    required=True,
    type=click.Path(exists=True),
    help="Result files: RUN/fid_curve.csv (with RUN/config.json), shift.json, "
    "noise.json, neighbours.json.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Markdown table; the CSV goes beside it (same name, .csv).",
)
@click.option(
    "--command",
    default="",
    help="The command that produced the results, recorded in the table's header.",
)
def cli(inputs, out, command):
    """Results table: mean ± 95% CI over seeds for every metric, beside the paper's values.

    \b
    Reads (missing fields are skipped with a warning, other files are an error):
      RUN/fid_curve.csv  last row's fid, swd, train_seconds, iteration; loss, seed,
                         dataset, batch_size, n_critic, lr/betas from RUN/config.json
      shift.json         runs[*].{loss, seed, roughness}  (optional top-level dataset)
      noise.json         runs[*].{loss, seed, separation}  (optional top-level dataset)
      neighbours.json    {l2, w2}.class_share_per_query: the share of each query's
                         neighbours with its class (labelled datasets only)
    """
    for path in write_results_table(inputs, Path(out), command):
        click.echo(f"wrote {path}")


if __name__ == "__main__":
    run_cli(cli)
