"""scripts/neighbours.py (Fig. 1): nearest neighbours under W2 and under L2 on the same
grayscale histograms (and L2 on RGB), on held-out images, with the class share and the
neighbours' brightness per query."""

import json

import numpy as np
import pytest
import torch

import image_w2
import neighbours
import wwgan
from conftest import run_step, shared_path


def test_pieces_by_hand():
    labels = torch.tensor([[1, 1, 2], [0, 3, 3]])
    torch.testing.assert_close(
        neighbours.class_share(labels, torch.tensor([1, 3])),
        torch.tensor([2 / 3, 2 / 3], dtype=torch.float64),
    )
    assert neighbours.nearest(torch.tensor([[3.0, 1.0, 1.0, 0.5]]), k=3).tolist() == [[3, 1, 2]]
    histograms = torch.tensor([[[1.0, 3.0]], [[0.0, 0.0]]], dtype=torch.float64)
    torch.testing.assert_close(
        neighbours.unit_mass(histograms),
        torch.tensor([[[0.25, 0.75]], [[0.0, 0.0]]], dtype=torch.float64),
    )


def test_neighbours_command(tmp_path):
    out = tmp_path / "neighbours.json"
    run_step("neighbours", "--dataset", "shapes", "--image-size", 16, "--num-queries", 2,
             "--num-candidates", 12, "--show", 2, "--device", "cpu", "--out", out)  # fmt: skip
    payload = json.loads(out.read_text())
    assert payload["images"].startswith("shapes test draw")  # held-out, not training images
    config = wwgan.TrainConfig(dataset="shapes", image_size=16)
    everything, labels, _ = wwgan.evaluation_images(config)
    order = payload["query_indices"] + payload["candidate_indices"]
    images = everything[torch.tensor(order)]
    gray = neighbours.grayscale_histograms(images)
    for name in neighbours.METRICS:
        assert np.array(payload[name]["neighbours"]).shape == (2, 9)
        assert all(np.all(np.diff(d) >= 0) for d in payload[name]["distances"])
    # the stored nearest distances are the distances between the stored images
    j = payload["w2"]["neighbours"][1][0]
    direct = image_w2.image_w2_distance(gray[1], gray[2 + j]).item()
    assert payload["w2"]["distances"][1][0] == pytest.approx(direct, rel=1e-6)
    j = payload["l2"]["neighbours"][1][0]  # L2 between the unit-mass histograms W2 sees
    a, b = gray[1] / gray[1].sum(), gray[2 + j] / gray[2 + j].sum()
    assert payload["l2"]["distances"][1][0] == pytest.approx((a - b).norm().item(), rel=1e-9)
    j = payload["l2_rgb"]["neighbours"][1][0]
    direct = torch.linalg.vector_norm(images[1].double() / 255 - images[2 + j].double() / 255)
    assert payload["l2_rgb"]["distances"][1][0] == pytest.approx(direct.item(), rel=1e-9)
    # brightness: the neighbours' mean intensity per query, against the candidates' mean
    means = gray[2:].mean(dim=(-2, -1))
    for name in neighbours.METRICS:
        expected = means[torch.tensor(payload[name]["neighbours"])].mean(dim=1)
        np.testing.assert_allclose(payload[name]["brightness_per_query"], expected, rtol=1e-9)
        shares = np.array(payload[name]["class_share_per_query"])  # shapes: disc / square
        assert np.all((shares * 9).round() == shares * 9) and np.all((shares >= 0) & (shares <= 1))
    assert payload["candidate_brightness"] == pytest.approx(means.mean().item())
    run_step("figures", "neighbours", "--input", out, "--out", tmp_path / "neighbours")
    assert (tmp_path / "neighbours.png").exists()


def test_neighbours_on_held_out_real_cifar10(tmp_path):
    """The CPU preset's setting on the real images: a held-out slice of the training
    folder (no test split there), labels, every ground metric."""
    root = shared_path("data", "cifar10")
    out = tmp_path / "nb.json"
    run_step("neighbours", "--dataset", "cifar10", "--data-root", root, "--holdout", 200,
             "--num-queries", 2, "--num-candidates", 20, "--device", "cpu", "--out", out)  # fmt: skip
    payload = json.loads(out.read_text())
    assert "held-out slice" in payload["images"] and "200 of its 50000" in payload["images"]
    for name in neighbours.METRICS:
        assert len(payload[name]["class_share_per_query"]) == 2
    run_step("figures", "neighbours", "--input", out, "--out", tmp_path / "neighbours")
