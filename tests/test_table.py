"""scripts/table.py: mean +- 95% Student t interval over seeds, per metric and setting,
beside the paper's numbers."""

import csv
import json

import pytest
from click.testing import CliRunner
from scipy import stats

import table
import wwgan

pytestmark = pytest.mark.usefixtures("checkout_untouched")

REFERENCE = "cifar10 training images, n=50000, holdout 1000 excluded"


def _write_run(
    root, label, loss, seed, optimizer, fid, swd, seconds, scales=(40.0, 30.0), fid_ttur=None
):
    """A run folder with config.json, a two-row fid_curve.csv and metrics.jsonl with the
    logged norm scale at the start and at the end. With `fid_ttur`, the curve has the
    label columns `fid.py curve --ttur-samples 5000` writes; without, the four columns of
    older curves (no sample counts, no reference)."""
    run = root / optimizer / label.replace(" ", "_") / f"seed{seed}"
    run.mkdir(parents=True)
    preset = wwgan.OPTIMIZER_PRESETS[optimizer]
    config = dict(loss=loss, label=label, seed=seed, dataset="cifar10", batch_size=64,
                  n_critic=5, max_images=0, holdout=1000, lam=10.0, **preset)  # fmt: skip
    (run / "config.json").write_text(json.dumps(config))
    if fid_ttur is None:
        (run / "fid_curve.csv").write_text(
            "iteration,train_seconds,fid,swd\n"
            f"500,{seconds / 2},{fid + 50},{swd + 1}\n1000,{seconds},{fid},{swd}\n"
        )
    else:
        labels = f'10000,{{}},5000,"{REFERENCE}"\n'
        (run / "fid_curve.csv").write_text(
            "iteration,train_seconds,fid,swd,fid_samples,fid_ttur,ttur_samples,reference\n"
            f"500,{seconds / 2},{fid + 50},{swd + 1}," + labels.format(fid_ttur + 50)
            + f"1000,{seconds},{fid},{swd}," + labels.format(fid_ttur)
        )  # fmt: skip
    rows = [dict(iteration=it, norm_scale=s, lam_effective=10.0 * s)
            for it, s in zip((1, 1000), scales)]  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
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


def test_table_aggregates_seeds_and_shows_the_paper_claims(tmp_path):
    fids = {"WGAN-GP": [41.0, 44.5, 39.0], "WWGAN, unit mass": [42.0, 40.0, 47.5]}
    losses = {"WGAN-GP": "wgan-gp", "WWGAN, unit mass": "wwgan"}
    seconds = {"WGAN-GP": 20.0, "WWGAN, unit mass": 18.0}
    inputs = []
    for label, values in fids.items():
        for seed, fid in enumerate(values):
            inputs.append(_write_run(tmp_path, label, losses[label], seed, "fid", fid,
                                     0.1 * seed, seconds[label], fid_ttur=fid + 7))  # fmt: skip
        inputs.append(_write_run(tmp_path, label, losses[label], 0, "robustness", 39.0, 0.2, 1.0))
    oscillation = {"WGAN-GP": [3.0, 5.0], "WWGAN, unit mass": [1.2, 1.4]}
    shift = tmp_path / "shift.json"
    shift.write_text(json.dumps(dict(
        experiment="shift", images="held-out slice", protocol=dict(
            matched_on="fid", target=101.0, note="no snapshot of every run reaches FID 40"),
        runs=[dict(label=label, loss=losses[label], seed=s, dataset="cifar10",
                   oscillation=o, sign_changes=2.0 * s, early_jump=0.5,
                   snapshot_iteration=500 * (s + 1), snapshot_fid=100.0 + s, snapshot_swd=9.0)
              for label, values in oscillation.items() for s, o in enumerate(values)],
    )))  # fmt: skip
    noise = tmp_path / "noise.json"
    noise.write_text(json.dumps(dict(experiment="noise", runs=[
        dict(label="WWGAN, unit mass", seed=0, dataset="cifar10", abs_cohens_d=0.3,
             relative_gap=0.1, snapshot_iteration=500, snapshot_fid=100.0, snapshot_swd=9.0),
        dict(label="WGAN-GP", seed=0, dataset="cifar10"),  # lacks the numbers: skipped
    ])))  # fmt: skip
    neighbours = tmp_path / "neighbours.json"
    neighbours.write_text(json.dumps(dict(
        num_queries=2, images="held-out slice", candidate_brightness=0.45,
        query_brightness=[0.4, 0.5],
        w2=dict(class_share_per_query=[0.25, 0.5], brightness_per_query=[0.4, 0.6]),
        l2=dict(class_share_per_query=[0.125, 0.25], brightness_per_query=[0.7, 0.9]),
    )))  # fmt: skip
    out = tmp_path / "results" / "table.md"
    args = [f"--input={p}" for p in [*inputs, shift, noise, neighbours]]
    result = CliRunner().invoke(table.cli, [*args, "--out", str(out), "--command",
                                            "snakemake --cores all"])  # fmt: skip
    assert result.exit_code == 0, result.output

    with open(out.with_suffix(".csv")) as f:
        rows = {(r["metric"], r["setting"], r["variant"]): r for r in csv.DictReader(f)}
    fid_setting = "cifar10, fid Adam preset"
    ours = f"FID (pytorch-fid, 10,000 samples, vs {REFERENCE})"
    authors = f"FID as the authors (torch-fidelity, TTUR-equivalent, 5,000 samples, vs {REFERENCE})"
    for label, values in fids.items():
        row = rows[(ours, fid_setting, label)]
        assert float(row["mean"]) == pytest.approx(sum(values) / 3)
        assert float(row["ci95"]) == pytest.approx(_t_interval_half_width(values))
        assert row["n"] == "3" and "comparable" in row["paper"]
        ttur = rows[(authors, fid_setting, label)]
        assert float(ttur["mean"]) == pytest.approx(sum(values) / 3 + 7)
        assert ttur["n"] == "3" and "TTUR's TensorFlow FID, 5,000 samples" in ttur["paper"]
        # an epoch: the 49,000 training images left after the holdout, / (64 * 5)
        epoch = rows[("seconds per epoch", fid_setting, label)]
        assert float(epoch["mean"]) == pytest.approx(seconds[label] / 1000 * 49_000 / 320)
        assert float(rows[("scale s at the start", fid_setting, label)]["mean"]) == 40.0
        assert float(rows[("lambda_eff at the end", fid_setting, label)]["mean"]) == 300.0
    ratio = rows[("epoch time / WGAN-GP", fid_setting, "WWGAN, unit mass")]
    assert float(ratio["mean"]) == pytest.approx(18.0 / 20.0)
    critics = "cifar10, critics"
    osc = rows[("shift: oscillation", critics, "WGAN-GP")]
    assert float(osc["mean"]) == 4.0 and osc["n"] == "2" and "oscillates" in osc["paper"]
    assert float(rows[("critic: snapshot FID", critics, "WGAN-GP")]["mean"]) == 100.5
    assert rows[("critic: snapshot FID", critics, "WWGAN, unit mass")]["n"] == "2"  # deduped
    assert ("noise: gap / real-fake gap", critics, "WGAN-GP") not in rows
    share = rows[("neighbour class share", "over 2 queries", "W2, grayscale histograms")]
    assert float(share["mean"]) == pytest.approx(0.375)
    bright = rows[("neighbour mean intensity", "over 2 queries", "L2, the same histograms")]
    assert float(bright["mean"]) == pytest.approx(0.8)

    markdown = out.read_text()
    assert "snakemake --cores all" in markdown and "torch" in markdown
    # curves without the label columns still tabulate, and say what they do not record
    unlabelled = "FID (pytorch-fid, samples not recorded, reference not recorded)"
    assert f"| {unlabelled} | cifar10, robustness Adam preset | 39 (n=1) | 39 (n=1) |" in markdown
    assert not any(m.startswith("FID as") and "robustness" in where for m, where, _ in rows)
    # ours first, the authors' right below it
    assert markdown.index(f"| {ours} |") < markdown.index(f"| {authors} |")
    assert markdown.index(f"| {authors} |") < markdown.index("| sliced Wasserstein")
    assert "matched on fid at 101" in markdown and "no snapshot of every run" in markdown
    assert "218.1" not in markdown  # the paper's epoch times are CelebA's: not beside CIFAR-10
    # the bars of |Cohen's d| are escaped, so the row keeps its columns
    assert "| noise: \\|Cohen's d\\| clean vs noisy | cifar10, critics |  | 0.3 (n=1) |" in markdown


def test_both_strength_controls_show_their_lam_eff_at_the_start_and_the_end(tmp_path):
    """The start-matched control (lam 420, s = 1: lam_eff 420 throughout) and the tracking
    control (lam 10 * s on its own gradient: 10 * 42 = 420 at the start, 10 * 24 = 240 at
    the end, as WWGAN's falls) from metrics.jsonl files with a known answer: the first
    and the last logged rows, per seed, mean over seeds."""
    logged = {  # label -> per seed, the logged (norm_scale, lam_effective) rows
        "WGAN-GP, lam 420 (matched)": [[(1.0, 420.0), (1.0, 420.0), (1.0, 420.0)]] * 2,
        "WGAN-GP, lam 10 s (tracking)": [
            [(42.0, 420.0), (30.0, 300.0), (24.0, 240.0)],
            [(44.0, 440.0), (35.0, 350.0), (26.0, 260.0)],
        ],
    }
    inputs = []
    for label, seeds in logged.items():
        for seed, rows in enumerate(seeds):
            curve = _write_run(tmp_path, label, "wgan-gp", seed, "robustness", 200.0, 1.0, 9.0)
            lines = [json.dumps(dict(iteration=it, norm_scale=s, lam_effective=lam_eff))
                     for it, (s, lam_eff) in zip((1, 750, 1500), rows)]  # fmt: skip
            lines.insert(1, json.dumps(dict(iteration=5, generator_loss=0.1)))  # no scale: skipped
            (curve.parent / "metrics.jsonl").write_text("\n".join(lines) + "\n")
            inputs.append(curve)
    out = tmp_path / "table.md"
    result = CliRunner().invoke(table.cli, [*(f"--input={p}" for p in inputs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with open(out.with_suffix(".csv")) as f:
        rows = {(r["metric"], r["variant"]): r for r in csv.DictReader(f)}
    expected = {
        ("lambda_eff at the start", "WGAN-GP, lam 420 (matched)"): 420.0,
        ("lambda_eff at the end", "WGAN-GP, lam 420 (matched)"): 420.0,
        ("lambda_eff at the start", "WGAN-GP, lam 10 s (tracking)"): 430.0,
        ("lambda_eff at the end", "WGAN-GP, lam 10 s (tracking)"): 250.0,
        ("scale s at the end", "WGAN-GP, lam 10 s (tracking)"): 25.0,
    }
    for key, value in expected.items():
        assert float(rows[key]["mean"]) == pytest.approx(value), key
        assert rows[key]["n"] == "2"
    tracking = rows[("lambda_eff at the end", "WGAN-GP, lam 10 s (tracking)")]
    assert sorted(map(float, tracking["values"].split(";"))) == [240.0, 260.0]
    markdown = out.read_text()
    # start above end, both controls in one row each
    assert markdown.index("| lambda_eff at the start |") < markdown.index(
        "| lambda_eff at the end |"
    )
    assert (
        "| lambda_eff at the start | cifar10, robustness Adam preset | 420 ± 0 (n=2) | 430 ±"
        in markdown
    )


def test_differences_from_wgan_gp_are_paired_by_seed(tmp_path):
    """Seeds that shift both variants alike: unpaired, the two intervals overlap widely;
    paired, the differences 3, 3.5, 4 give mean 3.5 and the t interval of those three
    numbers, bold because it excludes 0. A seed the baseline lacks is left out, and the
    s / lam_eff rows (1 and lam for WGAN-GP by definition) get no difference."""
    fids = {"WGAN-GP": [40.0, 60.0, 80.0], "WWGAN, intensity": [43.0, 63.5, 84.0, 99.0]}
    losses = {"WGAN-GP": "wgan-gp", "WWGAN, intensity": "wwgan"}
    inputs = [_write_run(tmp_path, label, losses[label], seed, "robustness", fid, 1.0, 9.0)
              for label, values in fids.items() for seed, fid in enumerate(values)]  # fmt: skip
    out = tmp_path / "table.md"
    result = CliRunner().invoke(table.cli, [*(f"--input={p}" for p in inputs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with open(out.with_suffix(".csv")) as f:
        rows = {(r["metric"], r["variant"]): r for r in csv.DictReader(f)}
    fid = "FID (pytorch-fid, samples not recorded, reference not recorded)"
    unpaired = [rows[(fid, label)] for label in fids]
    assert all(float(r["ci95"]) > 30 for r in unpaired)  # wide: the seeds' spread
    paired = rows[(f"{fid}: minus WGAN-GP, paired by seed", "WWGAN, intensity")]
    assert paired["n"] == "3"
    assert [float(v) for v in paired["values"].split(";")] == [3.0, 3.5, 4.0]
    assert float(paired["mean"]) == pytest.approx(3.5)
    assert float(paired["ci95"]) == pytest.approx(_t_interval_half_width([3.0, 3.5, 4.0]))
    assert not any(metric.startswith(("scale s", "lambda_eff")) and "paired" in metric
                   for metric, _ in rows)  # fmt: skip
    markdown = out.read_text()
    half = _t_interval_half_width([3.0, 3.5, 4.0])
    assert f"| {fid} | cifar10, robustness Adam preset | **3.5 ± {half:.2g} (n=3)** |" in markdown
    assert "| WWGAN, intensity − WGAN-GP |" in markdown
