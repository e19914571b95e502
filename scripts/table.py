"""The results table: every metric per setting and variant, mean +- 95% CI over seeds,
beside the paper's claim for it.

    python scripts/table.py --input RUN/fid_curve.csv ... --input shift.json \\
        --input noise.json --input neighbours.json --out table.md

Reads each run's fid_curve.csv with the config.json and metrics.jsonl beside it, and the
experiments' JSON; writes table.md and its long-form table.csv (every value behind every
cell). Columns are the runs' variant labels (`wwgan train --label`), in input order. A
second table gives each variant's difference from WGAN-GP paired by seed.
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
    OPTIMIZER_PRESETS,
    WWGANError,
    atomic_write,
    read_run_config,
    refuse_overwriting_inputs,
    run_cli,
    warn,
)

# What the paper says for each row. It prints two numbers: Fig. 6's caption gives average
# epoch wall-clock times of 218.1 s and 236.9 s "respectively" after naming WWGAN and
# WGAN-GP in that order (so WWGAN 218.1, WGAN-GP 236.9 is the likely reading); Fig. 6
# shows CelebA, and the GPU is unstated. Everything else is a figure.
CELEBA_EPOCHS = "218.1 s and 236.9 s 'respectively' (Fig. 6, CelebA; likely WWGAN, WGAN-GP)"
PAPER = {
    "FID": "curves only (Fig. 6): WWGAN 'comparable' to WGAN-GP",
    "FID as the authors": "their code: TTUR's TensorFlow FID, 5,000 samples; curves only (Fig. 6)",
    "sliced Wasserstein distance": "",
    "seconds per epoch": "",
    "epoch time / WGAN-GP": "",
    "scale s at the start": "not reported (Def. 10's 1/d_i on intensities: ~45, ours)",
    "scale s at the end": "",
    # lam * s * t as each run logs it: WWGAN's strength, and the two WGAN-GP controls'
    # (matched at the start: lam constant, s = 1; tracking: lam * s on its own gradient)
    "lambda_eff at the start": "not reported (~450 at Def. 10's scale, ours)",
    "lambda_eff at the end": "",
    "critic: snapshot iteration": "trained 'until FID about 40' (Sec. 4.1-4.2)",
    "critic: snapshot FID": "≈ 40 for both",
    "critic: snapshot SWD": "",
    "shift: oscillation": "WWGAN continuous, WGAN-GP 'oscillates wildly' (Fig. 4)",
    "shift: sign changes": "",
    "shift: jump within 2 px / spread": "WGAN-GP jumps 'less than 2 pixels away' (Sec. 4.1)",
    "noise: |Cohen's d| clean vs noisy": "WGAN-GP separates clean/noisy, WWGAN less (Fig. 5)",
    "noise: gap / real-fake gap": "",
}
GENERATOR_METRICS = list(PAPER)[:9]
CRITIC_METRICS = list(PAPER)[9:]
SHIFT_FIELDS = {
    "shift: oscillation": "oscillation",
    "shift: sign changes": "sign_changes",
    "shift: jump within 2 px / spread": "early_jump",
}
NOISE_FIELDS = {
    "noise: |Cohen's d| clean vs noisy": "abs_cohens_d",
    "noise: gap / real-fake gap": "relative_gap",
}
NEIGHBOUR_ROWS = {
    "w2": "W2, grayscale histograms",
    "l2": "L2, the same histograms",
    "l2_rgb": "L2, RGB",
}
BASELINE = LOSS_NAMES["wgan-gp"]  # the label epoch times are compared with


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


def _label(run_config: dict) -> str:
    loss = run_config.get("loss") or "?"
    return run_config.get("label") or LOSS_NAMES.get(loss, loss)


def _scales(metrics_path: Path) -> list[float]:
    """The logged norm scales s of a run (metrics.jsonl rows with `norm_scale`)."""
    values = []
    if metrics_path.exists():
        for line in metrics_path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # a torn or undecodable row: skipped
                continue
            if isinstance(row, dict) and _number(row.get("norm_scale")) is not None:
                values.append((row["norm_scale"], _number(row.get("lam_effective"))))
    return values


# -- records: one number per metric, setting, variant and seed --


def _base_metric(metric: str) -> str:
    """The PAPER row of a labelled metric: 'FID (pytorch-fid, ...)' -> 'FID'."""
    return metric if metric in PAPER else metric.split(" (", 1)[0]


def _fid_label(base: str, implementation: str, samples, reference: str | None) -> str:
    """An FID row's name: which implementation, how many generated samples, against
    which reference statistics ('not recorded' for curves that predate the labels)."""
    count = _number(samples)
    parts = [implementation, f"{count:,.0f} samples" if count else "samples not recorded"]
    parts.append(f"vs {reference}" if reference else "reference not recorded")
    return f"{base} ({', '.join(parts)})"


def _fid_curve_records(path: Path) -> list[dict]:
    """Final FID, SWD, epoch time and measured scale s of one run, from RUN/fid_curve.csv
    (its last row), RUN/config.json and RUN/metrics.jsonl."""
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
    for field, kind in [*((f, str) for f in ("label", "loss", "dataset")),
                        *((f, int) for f in ("seed", "batch_size", "n_critic", "max_images",
                                             "holdout", "iterations"))]:  # fmt: skip
        value = run.get(field)
        present = field in run if kind is int else value is not None  # label, loss: optional
        if present and (not isinstance(value, kind) or isinstance(value, bool)):
            raise WWGANError(f"{path.parent / 'config.json'}: field {field} is "
                             f"{value!r:.20}, not {'text' if kind is str else 'an integer'}")  # fmt: skip
    base = dict(
        label=_label(run), seed=run.get("seed"),
        setting=f"{run.get('dataset', path.parent.name)}, {_optimizer_name(run)} Adam preset",
    )  # fmt: skip
    reference = last.get("reference")
    values = {
        _fid_label("FID", "pytorch-fid", last.get("fid_samples"), reference): _number(
            last.get("fid")
        ),
        _fid_label(
            "FID as the authors",
            "torch-fidelity, TTUR-equivalent",
            last.get("ttur_samples"),
            reference,
        ): _number(last.get("fid_ttur")),
        "sliced Wasserstein distance": _number(last.get("swd")),
    }
    iteration, seconds = _number(last.get("iteration")), _number(last.get("train_seconds"))
    images = run.get("max_images") or DATASET_SIZES.get(run.get("dataset"))
    # An "epoch" as the authors' train.py counts it: one critic batch per loader step, so
    # N / (batch_size * n_critic) generator iterations.
    if iteration and seconds is not None and images and "batch_size" in run:
        per_epoch = (images - run.get("holdout", 0)) / (run["batch_size"] * run.get("n_critic", 5))
        values["seconds per epoch"] = seconds / iteration * per_epoch
    scales = _scales(path.parent / "metrics.jsonl")
    if scales:
        values.update({"scale s at the start": scales[0][0], "scale s at the end": scales[-1][0],
                       "lambda_eff at the start": scales[0][1],
                       "lambda_eff at the end": scales[-1][1]})  # fmt: skip
    return [dict(base, metric=m, value=v) for m, v in values.items() if v is not None]


def _experiment_records(path: Path, data: dict, fields: dict) -> list[dict]:
    """One record per run and field of a shift/noise JSON, plus its matched snapshot."""
    records = []
    runs = data.get("runs", []) if isinstance(data, dict) else []
    if not isinstance(runs, list):
        raise WWGANError(f"{path}: field runs is {type(runs).__name__}, not a list")
    for n, run in enumerate(runs):
        if not isinstance(run, dict):
            continue
        for field, kinds in (("label", str), ("loss", str), ("dataset", str), ("seed", int)):
            if run.get(field) is not None and not isinstance(run[field], kinds):
                raise WWGANError(f"{path}: runs[{n}].{field} is {run[field]!r:.20}, not "
                                 f"{kinds.__name__}")  # fmt: skip
        base = dict(label=run.get("label") or LOSS_NAMES.get(run.get("loss"), "?"),
                    seed=run.get("seed"), setting=f"{run.get('dataset', '?')}, critics")  # fmt: skip
        values = {name: _number(run.get(field)) for name, field in fields.items()}
        values.update({
            "critic: snapshot iteration": _number(run.get("snapshot_iteration")),
            "critic: snapshot FID": _number(run.get("snapshot_fid")),
            "critic: snapshot SWD": _number(run.get("snapshot_swd")),
        })  # fmt: skip
        records += [dict(base, metric=m, value=v) for m, v in values.items() if v is not None]
    if not any(r["metric"] in fields for r in records):
        warn(f"{path}: no runs[*].{'/'.join(fields.values())} numbers; not tabulated")
    return records


def results_records(paths) -> tuple[list[dict], dict, list[str]]:
    """Per-run records, the neighbour payload (or None) and notes on how the critics were
    chosen and what images they saw."""
    records, neighbours, notes = [], None, []
    for path in map(Path, paths):
        if not path.is_file():
            raise WWGANError(f"{path}: " + ("a folder, not a result file" if path.is_dir()
                                            else "no such result file"))  # fmt: skip
        if path.suffix == ".csv":
            records += _fid_curve_records(path)
            continue
        name = path.stem.lower()
        if path.suffix != ".json" or not any(k in name for k in ("shift", "noise", "neighbo")):
            raise WWGANError(f"{path}: not a result file the table knows (fid_curve.csv, "
                             f"shift.json, noise.json, neighbours.json)")  # fmt: skip
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise WWGANError(f"{path}: not valid JSON ({exc})") from exc
        if "neighbo" in name:
            neighbours = data if isinstance(data, dict) else None
            fields = {"query_brightness": (neighbours or {}).get("query_brightness")}
            for key in NEIGHBOUR_ROWS:
                entry = (neighbours or {}).get(key)
                for field in ("class_share_per_query", "brightness_per_query"):
                    fields[f"{key}.{field}"] = entry.get(field) if isinstance(entry, dict) else None
            for field, value in fields.items():
                if value is not None and not isinstance(value, list):
                    raise WWGANError(f"{path}: field {field} is {value!r:.20}, not a list")
            continue
        records += _experiment_records(
            path, data, SHIFT_FIELDS if "shift" in name else NOISE_FIELDS
        )
        if isinstance(data, dict) and isinstance(data.get("protocol"), dict):
            protocol = data["protocol"]
            target = protocol.get("target")
            notes.append(
                f"{data.get('experiment', name)}: critics matched on {protocol.get('matched_on')}"
                + (f" at {target:.4g}" if isinstance(target, (int, float)) else "")
                + (f" ({protocol['note']})" if protocol.get("note") else "")
                + f"; images: {data.get('images', '?')}"
            )
    return _dedupe(records) + _epoch_ratio_records(records), neighbours, notes


def _dedupe(records: list[dict]) -> list[dict]:
    """Shift and noise both report each critic's snapshot: keep one record of each."""
    seen, kept = set(), []
    for r in records:
        key = (r["metric"], r["setting"], r["label"], r["seed"])
        if key not in seen:
            seen.add(key)
            kept.append(r)
    return kept


def _epoch_ratio_records(records: list[dict]) -> list[dict]:
    """Each variant's epoch time over WGAN-GP's, per seed (paired within a setting)."""
    times = {(r["setting"], r["label"], r["seed"]): r["value"] for r in records
             if r["metric"] == "seconds per epoch"}  # fmt: skip
    return [
        dict(metric="epoch time / WGAN-GP", setting=setting, label=label, seed=seed,
             value=value / times[(setting, BASELINE, seed)])
        for (setting, label, seed), value in times.items()
        if label != BASELINE and times.get((setting, BASELINE, seed))
    ]  # fmt: skip


# -- rendering --


def _cell(text: str) -> str:
    """Markdown table cell text: a bar inside it ('|Cohen's d|') would end the cell."""
    return text.replace("|", "\\|")


def _format_estimate(values: list[float]) -> str:
    mean, half = mean_ci95(values)
    return f"{mean:.4g} (n=1)" if half is None else f"{mean:.4g} ± {half:.2g} (n={len(values)})"


def _paper_note(metric: str, setting: str) -> str:
    if metric in ("seconds per epoch", "epoch time / WGAN-GP") and setting.startswith("celeba"):
        return CELEBA_EPOCHS
    return PAPER.get(_base_metric(metric), "")


def _machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, {gpu}, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def _neighbour_lines(data: dict, csv_rows: list) -> list[str]:
    """The Fig. 1 table: per ground metric, the class share of the 9 neighbours and their
    mean intensity, mean ± 95% CI over the queries."""
    queries = data.get("num_queries", "?")
    lines = [
        "", f"Nearest neighbours (Fig. 1; {data.get('images', '?')}): mean ± 95% CI over "
        f"{queries} queries. Paper: 'L2 nearest neighbors are predominantly white images' "
        f"(no number). Mean intensity of the candidates: "
        f"{_number(data.get('candidate_brightness')) or float('nan'):.3f}, of the queries: "
        f"{np.mean([v for v in map(_number, data.get('query_brightness') or []) if v is not None] or [np.nan]):.3f}.", "",
        "| ground metric | share of neighbours in the query's class | neighbours' mean "
        "intensity |", "|---|---|---|",
    ]  # fmt: skip
    for key, name in NEIGHBOUR_ROWS.items():
        entry = data.get(key)
        if not isinstance(entry, dict):
            continue
        cells = []
        for field, metric in (("class_share_per_query", "neighbour class share"),
                              ("brightness_per_query", "neighbour mean intensity")):  # fmt: skip
            values = [v for v in map(_number, entry.get(field) or []) if v is not None]
            cells.append(_format_estimate(values) if values else "")
            if values:
                csv_rows.append(_csv_row(metric, f"over {queries} queries", name, values, ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


# Rows without a paired difference: the ratio is paired already, and WGAN-GP's s and
# lam_eff are 1 and lam by definition.
NOT_DIFFERENCED = ("epoch time / WGAN-GP", "scale s at the start", "scale s at the end",
                   "lambda_eff at the start", "lambda_eff at the end")  # fmt: skip


def paired_differences(records: list[dict]) -> dict:
    """{(metric, setting, label): [value - WGAN-GP's value of the same seed, ...]} in seed
    order, over the seeds both have. Runs of one seed start from the same initialisation,
    so the per-seed difference removes what the seed alone contributes (Lucic et al. 2018:
    seed variance can exceed method differences)."""
    by_seed = {(r["metric"], r["setting"], r["label"], r["seed"]): r["value"] for r in records
               if r["seed"] is not None and r["metric"] not in NOT_DIFFERENCED}  # fmt: skip
    differences: dict = {}
    for (metric, setting, label, seed), value in sorted(by_seed.items(), key=lambda kv: kv[0][3]):
        baseline = by_seed.get((metric, setting, BASELINE, seed))
        if label != BASELINE and baseline is not None:
            differences.setdefault((metric, setting, label), []).append(value - baseline)
    return differences


def _difference_lines(records, order, labels, csv_rows) -> list[str]:
    """The second table: each variant minus WGAN-GP within a seed, mean ± 95% CI; bold
    where the interval excludes 0."""
    differences = paired_differences(records)
    others = [label for label in labels if label != BASELINE]
    rows = [(m, s) for m, s in order if any((m, s, label) in differences for label in others)]
    if not rows:
        return []
    lines = [
        "", f"Differences from {BASELINE}, paired by seed: each variant's value minus "
        f"{BASELINE}'s of the same seed (the same initialisation), mean ± 95% CI over the "
        "seeds both have; **bold** where the interval excludes 0.", "",
        "| metric | setting | " + " | ".join(f"{label} − {BASELINE}" for label in others) + " |",
        "|---|---|" + "---|" * len(others),
    ]  # fmt: skip
    for metric, setting in rows:
        cells = []
        for label in others:
            values = differences.get((metric, setting, label), [])
            cell = _format_estimate(values) if values else ""
            mean, half = mean_ci95(values) if values else (0.0, None)
            cells.append(f"**{cell}**" if half is not None and abs(mean) > half else cell)
            if values:
                name = f"{metric}: minus {BASELINE}, paired by seed"
                csv_rows.append(_csv_row(name, setting, label, values, ""))
        lines.append(f"| {_cell(metric)} | {setting} | " + " | ".join(cells) + " |")
    return lines


def _csv_row(metric, setting, label, values, paper) -> dict:
    mean, half = mean_ci95(values)
    return dict(
        metric=metric, setting=setting, variant=label, n=len(values), mean=mean,
        ci95="" if half is None else half, values=";".join(f"{v:.6g}" for v in values),
        paper=paper,
    )  # fmt: skip


def write_results_table(paths, out: Path, command: str = "") -> list[Path]:
    """Markdown table OUT (.md) and its long-form CSV beside it: mean ± 95% CI over seeds
    per metric, setting and variant, with the paper's claim where it makes one."""
    out = Path(out)
    beside = [Path(p).parent / name for p in paths if Path(p).suffix == ".csv"
              for name in ("config.json", "metrics.jsonl")]  # what a curve's rows read  # fmt: skip
    refuse_overwriting_inputs([out, out.with_suffix(".csv")], [*paths, *beside])
    records, neighbours, notes = results_records(paths)
    if not records and not neighbours:
        raise WWGANError(f"no numbers to tabulate in {', '.join(map(str, paths))}")
    groups: dict = {}
    for r in records:
        groups.setdefault((r["metric"], r["setting"]), {}).setdefault(r["label"], []).append(r)
    labels = list(dict.fromkeys(r["label"] for r in records))
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# wwgan results", "", f"Made {when} by `{command or 'python scripts/table.py'}` on "
        f"{_machine()}.", "Cells: mean ± half-width of the 95% Student t confidence interval "
        "over seeds (n runs); n=1: no interval.", *[f"- {note}" for note in notes], "",
        "| metric | setting | " + " | ".join(labels) + " | paper |",
        "|---|---|" + "---|" * len(labels) + "---|",
    ]  # fmt: skip
    settings = list(dict.fromkeys(setting for _, setting in groups))
    order = sorted(
        groups,
        key=lambda key: (settings.index(key[1]), list(PAPER).index(_base_metric(key[0])), key[0]),
    )
    csv_rows = []
    for metric, setting in order:
        paper = _paper_note(metric, setting)
        cells = []
        for label in labels:
            values = [r["value"] for r in groups[(metric, setting)].get(label, [])]
            cells.append(_format_estimate(values) if values else "")
            if values:
                csv_rows.append(_csv_row(metric, setting, label, values, paper))
        lines.append(f"| {_cell(metric)} | {setting} | " + " | ".join(cells) + f" | {paper} |")
    lines += _difference_lines(records, order, labels, csv_rows)
    if neighbours:
        lines += _neighbour_lines(neighbours, csv_rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    csv_path = out.with_suffix(".csv")
    with atomic_write(csv_path, "w") as f:
        fields = ["metric", "setting", "variant", "n", "mean", "ci95", "values", "paper"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(csv_rows)
    return [out, csv_path]


@click.command(
    context_settings=dict(help_option_names=["-h", "--help"]),
    epilog="\b\nExample:\n  python scripts/table.py --input runs/wwgan/seed0/fid_curve.csv "
    "--input runs/wgan-gp/seed0/fid_curve.csv --input shift.json --out results/table.md",
)
@click.option(
    "--input", "inputs", multiple=True, required=True, type=click.Path(exists=True),
    help="Result files: RUN/fid_curve.csv (with RUN/config.json and metrics.jsonl), "
         "shift.json, noise.json, neighbours.json.",
)  # fmt: skip
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False),
    help="Markdown table; the CSV goes beside it (same name, .csv).",
)  # fmt: skip
@click.option(
    "--command", default="",
    help="The command that produced the results, recorded in the table's header.",
)  # fmt: skip
def cli(inputs, out, command):
    """Results table: mean ± 95% CI over seeds for every metric, beside the paper's claims,
    and a second table of each variant minus WGAN-GP paired by seed.

    \b
    Reads (missing fields are skipped with a warning, other files are an error):
      RUN/fid_curve.csv  last row's fid, swd, train_seconds, iteration, and the FID labels
                         fid_samples, fid_ttur, ttur_samples, reference; label, loss, seed,
                         dataset, batch_size, n_critic, holdout, lr/betas from
                         RUN/config.json; norm_scale, lam_effective (the first and
                         the last logged row) from RUN/metrics.jsonl
      shift.json         runs[*].{label, seed, oscillation, sign_changes, early_jump,
                         snapshot_iteration, snapshot_fid, snapshot_swd}, protocol, images
      noise.json         runs[*].{label, seed, abs_cohens_d, relative_gap, snapshot_*}
      neighbours.json    {w2, l2, l2_rgb}.{class_share, brightness}_per_query
    """
    for path in write_results_table(inputs, Path(out), command):
        click.echo(f"wrote {path}")


if __name__ == "__main__":
    run_cli(cli)
