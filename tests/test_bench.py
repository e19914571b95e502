"""`python benchmarks/bench.py --quick` end to end, and its items on known inputs.
Benchmarks are not timed tests: nothing here asserts a speed, only that the measurements
run and report what they claim."""

import json
import math

import numpy as np
import pytest
import torch

import bench
import image_w2
from conftest import run_step


def _check_spread(spread):
    assert spread["n"] >= 1
    assert 0 < spread["min"] <= spread["p25"] <= spread["median"] <= spread["p75"] <= spread["max"]
    assert len(spread["samples"]) == spread["n"] and min(spread["samples"]) == spread["min"]


def test_bench_quick_writes_every_item(tmp_path, monkeypatch, capsys):
    out = tmp_path / "results" / "bench.json"
    run_step("bench", "--quick", "--out", out)
    report = json.loads(out.read_text())
    assert set(report["items"]) == set(bench.BENCH_ITEMS)
    assert report["machine"]["torch"] == torch.__version__
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["date"]

    quadratic = report["items"]["quadratic_form"]["sizes"]["16"]
    for key, error in quadratic["max_relative_difference_to_slicing"].items():
        assert error < (1e-10 if key.endswith("float64") else 1e-5), key
    assert report["items"]["image_w2"]["relative_error"]["max"] < 0.05  # 16x16, 2 pairs
    throughput = report["items"]["throughput"]
    for clock in ("wall", "cpu"):
        critic = report["items"]["critic_step"]["sizes"]["16"][clock]
        assert set(critic["seconds"]) == {"wgan-gp", "wgan-gp-control", "lp", "wwgan"}
        for spread in [*critic["seconds"].values(), *critic["ratio_to_wgan_gp"].values()]:
            _check_spread(spread)
        for mode in ("forward", "forward_backward"):
            assert set(quadratic[clock][mode]["seconds"]) == set(bench.QUADRATIC_FORM_CONTENDERS)
            for spread in quadratic[clock][mode]["seconds"].values():
                _check_spread(spread)
        assert set(throughput[clock]["ratio_to_wgan_gp"]) == {"wgan-gp-control", "wwgan"}
        for loss in ("wgan-gp", "wgan-gp-control", "wwgan"):
            entry = throughput[clock]["losses"][loss]
            per_iteration = entry["seconds_per_generator_iteration"]["median"]
            assert entry["images_per_second"] == pytest.approx(
                throughput["batch_size"] * throughput["n_critic"] / per_iteration
            )
            assert entry["cifar10_epoch_seconds"] == pytest.approx(
                50_000 / entry["images_per_second"]
            )
    frechet = report["items"]["frechet_distance"]
    assert frechet["relative_difference"] < 1e-9 and frechet["fid"]["pytorch_fid"] > 0
    for clock in ("wall", "cpu"):
        assert set(frechet[clock]["speedup_over_pytorch_fid"]) == {
            "eigh",
            "eigh_reference_root_cached",
        }
        for spread in frechet[clock]["seconds"].values():
            _check_spread(spread)
    assert f"wrote {out}" in capsys.readouterr().out
    implied = report["derived"]["wwgan_over_wgan_gp"]["16"]["cpu"]
    parts = quadratic["cpu"]["forward_backward"]["seconds"]
    step = report["items"]["critic_step"]["sizes"]["16"]["cpu"]["seconds"]["wgan-gp"]
    assert implied == pytest.approx(
        1 + (parts["slicing"]["median"] - parts["l2"]["median"]) / step["median"]
    )


def _exact_w2(a, b):
    """W2 between unit-mass (…, S, S) histograms by POT's exact solver, pixel spacing 1."""
    import ot

    size = a.shape[-1]
    ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    centres = np.stack([ys.ravel(), xs.ravel()], 1).astype(np.float64)
    cost = ot.dist(centres, centres)
    a2, b2 = np.broadcast_arrays(a.cpu().numpy(), b.cpu().numpy())
    flat_a, flat_b = a2.reshape(-1, size * size), b2.reshape(-1, size * size)
    values = [math.sqrt(ot.emd2(x, y, cost)) for x, y in zip(flat_a, flat_b)]
    return torch.tensor(values, dtype=torch.float64).reshape(a2.shape[:-2])


@pytest.mark.parametrize("scale", [1.0, 1.01])
def test_image_w2_item_reports_the_error_against_exact_emd(monkeypatch, scale):
    monkeypatch.setattr(
        bench, "image_w2_distance", lambda a, b: scale * _exact_w2(a, b), raising=False
    )
    result = bench.bench_image_w2(torch.device("cpu"), size=8, pairs=3, repeats=2)
    assert result["relative_error"]["max"] == pytest.approx(scale - 1.0, abs=1e-9)
    assert len(result["w2_exact"]) == 3 and min(result["w2_exact"]) > 0
    for clock in ("wall", "cpu"):
        assert set(result[clock]["speedup_over_emd2"]) == {
            "image_w2_batched",
            "image_w2_one_pair_per_call",
            "sinkhorn_matmul_floor",
        }
        for spread in result[clock]["seconds_per_pair"].values():
            _check_spread(spread)


def test_image_w2_item_records_a_contract_mismatch(monkeypatch):
    monkeypatch.setattr(bench, "image_w2_distance", lambda a, b: torch.zeros(5), raising=False)
    result = bench.bench_image_w2(torch.device("cpu"), size=8, pairs=3, repeats=1)
    assert "expected (3,)" in result["error"]


def test_real_image_w2_distance_fits_the_bench_contract():
    result = bench.bench_image_w2(torch.device("cpu"), size=8, pairs=2, repeats=1)
    assert "error" not in result, result.get("error")
    assert math.isfinite(result["relative_error"]["max"])


def test_w2_matmul_floor_does_no_more_matmuls_than_the_solver(monkeypatch):
    """The floor is a ceiling on the solver's speed-up only if the solver itself runs at
    least as many of those matmuls, even for a pair that converges at once."""
    calls = []
    real_matmul = torch.matmul
    monkeypatch.setattr(torch, "matmul", lambda *args: calls.append(1) or real_matmul(*args))
    image = torch.rand(1, 16, 16, dtype=torch.float64) + 0.5
    bench._w2_matmul_floor(image)()
    floor = len(calls)
    calls.clear()
    image_w2.image_w2_distance(image, image.flip(-1))
    assert floor == 4 * (
        len(image_w2._w2_annealing(16, 16, image_w2.W2_EPSILON)) + image_w2.W2_MIN_FINAL
    )
    assert floor <= len(calls)
