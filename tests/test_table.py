"""scripts/table.py: mean +- 95% Student t interval over seeds, per metric and setting,
beside the paper's numbers."""

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from scipy import stats

import table
import wwgan


def _write_run(
    root: Path,
    loss: str,
    seed: int,
    optimizer: str,
    fid: float,
    swd: float,
    seconds: float,
    iterations: int = 1000,
) -> Path:
    run = root / optimizer / loss / f"seed{seed}"
    run.mkdir(parents=True)
    preset = wwgan.OPTIMIZER_PRESETS[optimizer]
    config = dict(
        loss=loss, seed=seed, dataset="cifar10", batch_size=64, n_critic=5, max_images=0, **preset
    )
    (run / "config.json").write_text(json.dumps(config))
    (run / "fid_curve.csv").write_text(
        "iteration,train_seconds,fid,swd\n"
        f"{iterations // 2},{seconds / 2},{fid + 50},{swd + 1}\n"
        f"{iterations},{seconds},{fid},{swd}\n"
    )
    return run / "fid_curve.csv"


def _t_interval_half_width(values):
    low, high = stats.t.interval(
        0.95, len(values) - 1, loc=sum(values) / len(values), scale=stats.sem(values)
    )
    return (high - low) / 2


def test_mean_ci95_is_the_student_t_interval():
    values = [31.2, 35.9, 33.0, 40.1]
    mean, half = table.mean_ci95(values)
    assert mean == pytest.approx(35.05)
    assert half == pytest.approx(_t_interval_half_width(values), rel=1e-12)
    assert table.mean_ci95([7.0]) == (7.0, None)


def test_table_aggregates_seeds_and_shows_the_paper_values(tmp_path):
    fids = {"wgan-gp": [41.0, 44.5, 39.0], "wwgan": [42.0, 40.0, 47.5]}
    seconds = {"wgan-gp": 20.0, "wwgan": 18.0}
    inputs = []
    for loss, values in fids.items():
        for seed, fid in enumerate(values):
            inputs.append(_write_run(tmp_path, loss, seed, "fid", fid, 0.1 * seed, seconds[loss]))
        inputs.append(_write_run(tmp_path, loss, 0, "robustness", 39.0, 0.2, seconds[loss]))
    shift = tmp_path / "shift.json"
    shift.write_text(
        json.dumps(
            {
                "runs": [
                    dict(loss=loss, seed=s, roughness=c)
                    for loss, cs in (("wgan-gp", [0.5, 0.7]), ("wwgan", [0.9, 0.95]))
                    for s, c in enumerate(cs)
                ]
            }
        )
    )
    noise = tmp_path / "noise.json"
    noise.write_text(
        json.dumps(
            {"runs": [dict(loss="wwgan", seed=0, separation=0.3), dict(loss="wgan-gp", seed=0)]}
        )
    )  # one lacks it
    neighbours = tmp_path / "neighbours.json"
    neighbours.write_text(
        json.dumps(
            {"l2": {"class_share_per_query": [0.25]}, "w2": {"class_share_per_query": [0.3, 0.5]}}
        )
    )
    out = tmp_path / "results" / "table.md"
    args = [f"--input={p}" for p in [*inputs, shift, noise, neighbours]]
    result = CliRunner().invoke(
        table.cli, [*args, "--out", str(out), "--command", "snakemake --cores all"]
    )
    assert result.exit_code == 0, result.output

    with open(out.with_suffix(".csv")) as f:
        rows = {(r["metric"], r["setting"], r["loss"]): r for r in csv.DictReader(f)}
    fid_setting = "cifar10, fid Adam preset"
    for loss, values in fids.items():
        row = rows[("FID", fid_setting, loss)]
        assert float(row["mean"]) == pytest.approx(sum(values) / 3)
        assert float(row["ci95"]) == pytest.approx(_t_interval_half_width(values))
        assert row["n"] == "3"
        # an epoch of CIFAR-10 is 50000 / (64 * 5) generator iterations
        epoch = rows[("seconds per epoch", fid_setting, loss)]
        assert float(epoch["mean"]) == pytest.approx(seconds[loss] / 1000 * 50_000 / 320)
    ratio = rows[("epoch time WWGAN / WGAN-GP", fid_setting, "wwgan")]
    assert float(ratio["mean"]) == pytest.approx(18.0 / 20.0)
    assert "0.921" in ratio["paper"]
    robust = rows[("FID", "cifar10, robustness Adam preset", "wwgan")]
    assert robust["n"] == "1" and robust["ci95"] == "" and "40" in robust["paper"]
    assert float(rows[("shift roughness", "critic runs", "wwgan")]["mean"]) == pytest.approx(0.925)
    assert ("noise separation", "critic runs", "wgan-gp") not in rows
    assert float(rows[("neighbour class share", "W2", "")]["mean"]) == pytest.approx(0.4)

    markdown = out.read_text()
    assert "snakemake --cores all" in markdown and "torch" in markdown
    assert "| FID | cifar10, robustness Adam preset | 39 (n=1) | 39 (n=1) |" in markdown
    assert "218.1" in markdown and "236.9" in markdown
