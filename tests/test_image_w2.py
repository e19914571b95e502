"""The image W2 distance (scripts/image_w2.py) against POT's exact solver, and the
motivating example of Figs. 2-3 computed with it (scripts/motivating_example.py)."""

import csv
import math

import numpy as np
import pytest
import torch

import bench
import image_w2
import motivating_example
import neighbours
import wwgan
from conftest import run_step, shared_path

# ---------------------------------------------------------------- image W2 vs exact OT


def exact_w2(a: np.ndarray, b: np.ndarray) -> float:
    """W2 in pixels by POT's network simplex: squared Euclidean cost between pixel
    centres, unit-mass histograms (the independent reference)."""
    ot = pytest.importorskip("ot")
    height, width = a.shape
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    centres = np.stack([rows.ravel(), cols.ravel()], axis=1).astype(np.float64)
    cost = ot.dist(centres, centres)  # squared Euclidean
    a, b = a.ravel() / a.sum(), b.ravel() / b.sum()
    return math.sqrt(ot.emd2(a, b, cost, numItermax=10_000_000))


def cifar_gray(n: int, size: int) -> np.ndarray:
    """n real CIFAR-10 images as grayscale in [0, 1], 2x2-average-pooled to 16x16 if asked."""
    from PIL import Image

    root = shared_path("data", "cifar10", "train")
    files = sorted(root.glob("*/*.jpg"))
    picks = np.random.default_rng(0).choice(len(files), n, replace=False)
    images = np.stack(
        [
            np.asarray(Image.open(files[i]).convert("RGB"), dtype=np.float64).mean(axis=-1) / 255.0
            for i in picks
        ]
    )
    if size == 16:
        images = images.reshape(n, 16, 2, 16, 2).mean(axis=(2, 4))
    return images


def assert_close_to_exact(images: np.ndarray, tolerance=0.01):
    ours = image_w2.image_w2_distance(
        torch.from_numpy(images[0::2]), torch.from_numpy(images[1::2])
    ).numpy()
    exact = np.array([exact_w2(images[k], images[k + 1]) for k in range(0, len(images), 2)])
    relative = np.abs(ours / exact - 1)
    assert relative.max() <= tolerance, (ours, exact)


@pytest.mark.parametrize("size,pairs", [(16, 4), (32, 3)])
def test_w2_matches_exact_on_uniform_noise(size, pairs):
    # Uniform noise has a small W2 (~0.8 px): the hardest case for a relative bound.
    images = np.random.default_rng(size).random((2 * pairs, size, size))
    assert_close_to_exact(images)


@pytest.mark.parametrize("size,pairs", [(16, 4), (32, 3)])
def test_w2_matches_exact_on_real_images(size, pairs):
    assert_close_to_exact(cifar_gray(2 * pairs, size))


def test_w2_matches_exact_on_the_benchmark_pairs():
    # `wwgan bench` item 3's 16 pairs (shapes + 1: no empty pixel, the slow case for
    # network simplex). With a fixed 200 final iterations one of them was off by 1.42%;
    # each pair now iterates until its cost settles.
    first = bench._pixel_histograms(16, 32, 0).numpy()
    second = bench._pixel_histograms(16, 32, 1).numpy()
    images = np.stack([first, second], axis=1).reshape(32, 32, 32)
    assert_close_to_exact(images)


def test_w2_translated_one_pixel_image_is_the_shift():
    # Sec. 2.2 / Fig. 3: W2(delta_x, delta_y) = |x - y|, for moves along rows, columns and
    # diagonals (only one coupling exists, so this is exact up to round-off).
    x = torch.zeros(16, 16, dtype=torch.float64)
    x[2, 3] = 1.0
    moves = [(0, k) for k in range(12)] + [(k, 0) for k in range(1, 13)] + [(5, 7), (13, 12)]
    ys = torch.zeros(len(moves), 16, 16, dtype=torch.float64)
    for n, (dy, dx) in enumerate(moves):
        ys[n, 2 + dy, 3 + dx] = 1.0
    expected = torch.tensor([math.hypot(dy, dx) for dy, dx in moves], dtype=torch.float64)
    torch.testing.assert_close(image_w2.image_w2_distance(x, ys), expected, rtol=1e-6, atol=1e-6)


def test_w2_symmetric_zero_on_itself_and_scale_free():
    rng = np.random.default_rng(1)
    a, b = (torch.from_numpy(rng.random((3, 16, 16))) for _ in range(2))
    ab, ba = image_w2.image_w2_distance(a, b), image_w2.image_w2_distance(b, a)
    torch.testing.assert_close(ab, ba, rtol=0.01, atol=0.0)
    # the entropic blur left at epsilon = 0.1 px^2, against typical distances of ~1 px
    assert image_w2.image_w2_distance(a, a).max() < 0.05
    torch.testing.assert_close(image_w2.image_w2_distance(7.5 * a, b), ab, rtol=1e-6, atol=0.0)
    as_uint8 = (a * 255).round().to(torch.uint8)
    assert image_w2.image_w2_distance(as_uint8, as_uint8.flip(0)).dtype == torch.float32
    assert ab.dtype == torch.float64


def test_w2_broadcasts_over_leading_dimensions():
    rng = np.random.default_rng(2)
    queries = torch.from_numpy(rng.random((2, 1, 8, 8)))
    candidates = torch.from_numpy(rng.random((1, 3, 8, 8)))
    table = image_w2.image_w2_distance(queries, candidates)
    assert table.shape == (2, 3)
    one_by_one = torch.stack(
        [torch.stack([image_w2.image_w2_distance(q[0], c) for c in candidates[0]]) for q in queries]
    )
    torch.testing.assert_close(table, one_by_one, rtol=1e-6, atol=1e-9)
    assert image_w2.image_w2_distance(queries[0, 0], candidates[0, 0]).shape == ()
    # chunking changes nothing: each pair keeps its own epsilon and iterations
    torch.testing.assert_close(
        image_w2.image_w2_distance(queries, candidates, chunk_size=4), table, rtol=1e-9, atol=1e-12
    )


def test_w2_rejects_bad_images():
    good = torch.rand(8, 8)
    with pytest.raises(wwgan.WWGANError, match="zero total mass"):
        image_w2.image_w2_distance(good, torch.zeros(8, 8))
    with pytest.raises(wwgan.WWGANError, match=">= 0"):
        image_w2.image_w2_distance(good, good - 0.5)
    with pytest.raises(wwgan.WWGANError, match="one size"):
        image_w2.image_w2_distance(good, torch.rand(8, 9))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_w2_same_on_gpu():
    a, b = torch.rand(5, 16, 16, dtype=torch.float64), torch.rand(5, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(
        image_w2.image_w2_distance(a.cuda(), b.cuda()).cpu(),
        image_w2.image_w2_distance(a, b),
        rtol=1e-6,
        atol=1e-9,
    )


def test_w2_nearest_neighbour_is_the_translated_copy_where_l2_is_not():
    # Fig. 1's point in miniature: a square moved by 2 px is far in L2 (few pixels
    # overlap) but close in W2; a flat dark image is closer in L2.
    query = torch.zeros(16, 16, dtype=torch.float64)
    query[4:7, 4:7] = 1.0
    moved = torch.roll(query, 2, dims=1)
    dark = torch.full((16, 16), 0.05, dtype=torch.float64)
    candidates = torch.stack([dark, moved])
    assert neighbours.nearest(neighbours.l2_distances(query[None], candidates), k=1).item() == 0
    w2 = image_w2.image_w2_distance(query, candidates)
    assert neighbours.nearest(w2[None], k=1).item() == 1
    assert w2[1].item() == pytest.approx(2.0, rel=1e-3)  # a translation by 2 px


# ---------------------------------------------------------------- the motivating example (Figs. 2-3)


def test_motivating_example_l2_constant_w2_linear():
    rows = motivating_example.motivating_example(8)
    assert rows[0]["pixel_distance"] == 0 and rows[0]["l2"] == 0
    assert all(r["l2"] == pytest.approx(math.sqrt(2)) for r in rows[1:])
    assert all(r["w2"] == pytest.approx(r["pixel_distance"], abs=1e-6) for r in rows)


def test_motivating_example_command(tmp_path):
    out = tmp_path / "motivating.csv"
    run_step("motivating_example", "--size", 6, "--out", out)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 + 5
    for row in rows:
        d = float(row["pixel_distance"])
        assert float(row["w2"]) == pytest.approx(d, abs=1e-6)
        assert float(row["l2"]) == pytest.approx(0.0 if d == 0 else math.sqrt(2))
    run_step("figures", "motivating-example", "--input", out, "--out", tmp_path / "motivating")
    assert (tmp_path / "motivating.png").exists()
