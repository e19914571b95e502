"""Datasets: CIFAR-10 (torchvision pickles and image folder), CelebA 64x64, any image
folder, the synthetic shapes set; the decoded-image cache; downloads; every user error.

Real-data tests read ../shared/data (see its README) and skip with a reason without it.
"""

import hashlib
import json
import os
import pickle
import shutil
import tarfile
import urllib.error
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import wwgan
from conftest import invoke, one_error_line, shared_path

# The official CIFAR-10 training-set channel means (the widely quoted normalisation
# constants 0.4914, 0.4822, 0.4465), an independent reference for the decoded pixels.
CIFAR10_MEAN = np.array([0.4914, 0.4822, 0.4465])
# Mean positions (x, y) of the eyes in CelebA's 178x218 aligned images (the average of
# list_landmarks_align_celeba.txt: the alignment puts the eyes at nearly fixed points).
CELEBA_EYES = ((69.0, 111.0), (107.5, 111.5))


def config(**overrides):
    return wwgan.TrainConfig(**overrides)


# ---------------------------------------------------------------------------------------
# fixtures in the real on-disk formats
# ---------------------------------------------------------------------------------------


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar10_batches(root, per_batch=4, seed=0):
    """torchvision's cifar-10-batches-py layout: pickled dicts whose "data" rows are 3072
    bytes (1024 red, 1024 green, 1024 blue, row-major), "labels" a list of ints. Returns
    the training images as (N, 3, 32, 32) and their labels."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    train_x, train_y = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, per_batch).tolist()
        entry = {
            "batch_label": name,
            "data": x,
            "labels": y,
            "filenames": [f"{name}_{k}.png" for k in range(per_batch)],
        }
        (base / name).write_bytes(pickle.dumps(entry))
        if name != "test_batch":
            train_x.append(x.reshape(-1, 3, 32, 32))
            train_y += y
    meta = {
        "label_names": list(wwgan.CIFAR10_CLASSES),
        "num_cases_per_batch": per_batch,
        "num_vis": 3072,
    }
    (base / "batches.meta").write_bytes(pickle.dumps(meta))
    return np.concatenate(train_x), np.array(train_y)


def trust_fixture_checksums(monkeypatch, root):
    """Point torchvision's md5 table at the fixture's files (the real check still runs)."""
    from torchvision.datasets import CIFAR10

    base = root / "cifar-10-batches-py"
    monkeypatch.setattr(
        CIFAR10,
        "train_list",
        [[f"data_batch_{i}", md5(base / f"data_batch_{i}")] for i in range(1, 6)],
    )
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5(base / "test_batch")]])
    monkeypatch.setattr(
        CIFAR10,
        "meta",
        {"filename": "batches.meta", "key": "label_names", "md5": md5(base / "batches.meta")},
    )


def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    import torchvision.datasets.utils as tv_utils

    monkeypatch.setattr(tv_utils, "_urlretrieve", refuse)
    monkeypatch.setattr("urllib.request.urlopen", refuse)


def solid(mode, size, colour):
    return Image.new(mode, size, colour)


# ---------------------------------------------------------------------------------------
# real data (../shared/data)
# ---------------------------------------------------------------------------------------


def test_real_cifar10_folder_counts_by_listing():
    listing = wwgan.list_image_files(shared_path("data", "cifar10", "train"))
    assert len(listing.files) == 50_000 and not listing.skipped
    assert listing.classes == list(wwgan.CIFAR10_CLASSES)
    assert np.bincount(listing.labels).tolist() == [5000] * 10


def test_real_cifar10_subset_pixels_labels_balance_and_cache(tmp_path, monkeypatch):
    root = shared_path("data", "cifar10")
    cfg = config(
        dataset="cifar10", data_root=str(root), max_images=2000, cache_dir=str(tmp_path / "cache")
    )
    images, labels = wwgan.load_dataset_with_labels(cfg)
    assert images.shape == (2000, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (2000,) and labels.dtype == torch.int64
    assert images.min() == 0 and images.max() == 255
    counts = np.bincount(labels.numpy(), minlength=10)
    assert counts.min() >= 150 and counts.max() <= 250, counts  # 200 +- ~4.5 sd
    mean = images.double().mean(dim=(0, 2, 3)).numpy() / 255
    np.testing.assert_allclose(mean, CIFAR10_MEAN, atol=0.02)
    unit = wwgan.to_unit_range(images[:64])
    assert unit.min() >= -1 and unit.max() <= 1

    # Pixels and labels match a direct PIL decode of the same files.
    listing = wwgan.list_image_files(root / "train")
    picked = wwgan.subset_indices(50_000, 2000)
    for k in (0, 777, 1999):
        path = listing.files[picked[k]]
        expected = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)
        np.testing.assert_array_equal(images[k].numpy(), expected)
        assert wwgan.CIFAR10_CLASSES[labels[k]] == path.split("/")[-2]

    # The second load reads the cache, decoding nothing, and gives the same arrays.
    assert len(list((tmp_path / "cache").glob("cifar10-32px-3ch-*.npy"))) == 2
    monkeypatch.setattr(wwgan, "decode_images", lambda *a, **k: pytest.fail("decoded again"))
    again, again_labels = wwgan.load_dataset_with_labels(cfg)
    assert torch.equal(again, images) and torch.equal(again_labels, labels)


def test_real_celeba_crop_holds_a_centered_face(tmp_path):
    cfg = config(
        dataset="celeba",
        data_root=str(shared_path("data", "celeba")),
        image_size=64,
        max_images=1000,
        cache_dir="",
    )
    images = wwgan.load_dataset(cfg)
    assert images.shape == (1000, 3, 64, 64) and images.dtype == torch.uint8
    mean = images.double().mean(0).numpy()
    # A centered face is left-right symmetric on average; a 4-pixel shift is not.
    mirror_error = np.abs(mean - mean[..., ::-1]).mean()
    shift_error = np.abs(mean - np.roll(mean, 4, axis=-1)).mean()
    assert mirror_error < shift_error / 3, (mirror_error, shift_error)
    # The eyes are the darkest spots of the mean face, where the crop geometry puts the
    # mean landmarks: center crop 108/178 of the width, scaled to 64 pixels.
    gray = mean.mean(0)
    scale = 64 / 108
    left, top = (178 - 108) / 2, (218 - 108) / 2
    for (x, y), cols in zip(CELEBA_EYES, (slice(8, 32), slice(32, 56))):
        region = gray[20:46, cols]
        row, col = np.unravel_index(np.argmin(region), region.shape)
        assert abs(20 + row - (y - top) * scale) <= 2
        assert abs(cols.start + col - (x - left) * scale) <= 2


def test_celeba_crop_scales_with_resolution(tmp_path):
    """A half-resolution copy (89x109) and a full-resolution one (178x218) of the same
    faces give the same 64x64 crops: the 108-pixel crop becomes 54 pixels at half size."""
    source = shared_path("data", "celeba", "img_align_celeba")
    half, full = tmp_path / "half" / "img_align_celeba", tmp_path / "full" / "img_align_celeba"
    half.mkdir(parents=True)
    full.mkdir(parents=True)
    for name in ("000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"):
        image = Image.open(source / name).convert("RGB")
        assert image.size == (89, 109)
        image.save(half / f"{name[:-4]}.png")
        image.resize((178, 218), Image.Resampling.BICUBIC).save(full / f"{name[:-4]}.png")
    crops = [
        wwgan.load_dataset(
            config(dataset="celeba", data_root=str(folder.parent), image_size=64, cache_dir="")
        ).double()
        for folder in (half, full)
    ]
    assert crops[0].shape == crops[1].shape == (4, 3, 64, 64)
    assert (crops[0] - crops[1]).abs().mean() < 4.0  # of 255; a misplaced crop gives ~30
    wider = wwgan.load_dataset(
        config(
            dataset="celeba",
            data_root=str(half.parent),
            image_size=64,
            cache_dir="",
            celeba_crop=178,
        )
    ).double()
    assert (wider - crops[0]).abs().mean() > 15.0
    # --data-root may also name the image folder itself.
    direct = wwgan.load_dataset(
        config(dataset="celeba", data_root=str(half), image_size=64, cache_dir="")
    )
    assert torch.equal(direct, crops[0].to(torch.uint8))


@pytest.mark.parametrize(
    "dataset,image_size,max_images", [("cifar10", 32, 256), ("celeba", 64, 64)]
)
def test_real_data_trains_a_few_steps(tmp_path, dataset, image_size, max_images):
    root = shared_path("data", dataset)
    cfg = config(
        dataset=dataset,
        data_root=str(root),
        image_size=image_size,
        width=16,
        iterations=2,
        batch_size=8,
        max_images=max_images,
        log_every=1,
        out=str(tmp_path / "run"),
        cache_dir=str(tmp_path / "cache"),
        device="cpu",
    )
    state = wwgan.train(cfg, progress=False)
    assert state.iteration == 2
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [row["iteration"] for row in rows] == [1, 2]
    for row in rows:
        assert all(np.isfinite(v) for v in row.values()), row


# ---------------------------------------------------------------------------------------
# torchvision's CIFAR-10 pickles
# ---------------------------------------------------------------------------------------


def test_cifar10_torchvision_pickles(tmp_path, monkeypatch):
    expected, expected_labels = write_cifar10_batches(tmp_path)
    trust_fixture_checksums(monkeypatch, tmp_path)
    # A folder copy beside the pickles is ignored: the lossless originals come first.
    (tmp_path / "train").mkdir()
    images, labels = wwgan.load_dataset_with_labels(
        config(dataset="cifar10", data_root=str(tmp_path))
    )
    np.testing.assert_array_equal(images.numpy(), expected)
    np.testing.assert_array_equal(labels.numpy(), expected_labels)

    subset, subset_labels = wwgan.load_dataset_with_labels(
        config(dataset="cifar10", data_root=str(tmp_path), max_images=7)
    )
    picked = wwgan.subset_indices(20, 7)
    assert len(set(picked)) == 7 and set(picked) <= set(wwgan.subset_indices(20, 12))
    np.testing.assert_array_equal(subset.numpy(), expected[picked])
    np.testing.assert_array_equal(subset_labels.numpy(), expected_labels[picked])

    gray = wwgan.load_dataset(
        config(dataset="cifar10", data_root=str(tmp_path), channels=1, image_size=16)
    )
    reference = (
        Image.fromarray(expected[0].transpose(1, 2, 0))
        .convert("L")
        .resize((16, 16), Image.Resampling.BICUBIC)
    )
    assert gray.shape == (20, 1, 16, 16)
    np.testing.assert_array_equal(gray[0, 0].numpy(), np.asarray(reference))


def test_cifar10_corrupt_pickle_is_one_line_error(tmp_path, monkeypatch, capsys):
    write_cifar10_batches(tmp_path)
    trust_fixture_checksums(monkeypatch, tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])
    code, _, err = invoke(
        capsys,
        "wwgan",
        "train",
        "--dataset",
        "cifar10",
        "--data-root",
        str(tmp_path),
        "--out",
        str(tmp_path / "run"),
        "--iterations",
        "1",
    )
    line = one_error_line(code, err)
    assert code == 1
    assert str(tmp_path / "cifar-10-batches-py") in line
    assert f"wwgan download cifar10 --root {tmp_path}" in line


# ---------------------------------------------------------------------------------------
# image folders: modes, corrupt files, class layout, cropping
# ---------------------------------------------------------------------------------------


def test_folder_converts_modes_and_skips_bad_files(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    solid("RGB", (16, 16), (200, 30, 40)).save(folder / "a_rgb.png")
    solid("L", (16, 16), 90).save(folder / "b_gray.jpg", quality=100)
    solid("RGBA", (16, 16), (10, 220, 60, 0)).save(folder / "c_rgba.png")
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, 12, 34, 250] + [0] * 762)
    palette.save(folder / "d_palette.png", transparency=0)
    good = folder / "e_truncated.jpg"
    solid("RGB", (16, 16), (1, 2, 3)).save(good)
    good.write_bytes(good.read_bytes()[:40])
    (folder / "f_notes.txt").write_text("not an image")
    (folder / "g_fake.png").write_bytes(b"definitely not a PNG")
    (folder / ".DS_Store").write_bytes(b"\0")  # hidden: ignored, not counted

    images, labels = wwgan.load_dataset_with_labels(
        config(dataset="folder", data_root=str(folder), image_size=16, cache_dir="")
    )
    assert labels is None and images.shape == (4, 3, 16, 16)
    assert images[0, :, 5, 5].tolist() == [200, 30, 40]
    assert abs(images[1].int() - 90).max() <= 1 and images[1].float().std(0).max() == 0
    assert images[2, :, 5, 5].tolist() == [10, 220, 60]
    assert images[3, :, 5, 5].tolist() == [12, 34, 250]
    warning = capsys.readouterr().err
    assert "skipped 3 file(s)" in warning and str(folder) in warning
    assert "1 not an image file" in warning and "2 unreadable" in warning


def test_folder_class_layout_labels_and_center_crop(tmp_path):
    root = tmp_path / "mine"
    for name, colour in (("zebra", (0, 0, 255)), ("ant", (255, 0, 0))):
        (root / name).mkdir(parents=True)
        # 48x24 (wide): the centered 24x24 square is `colour`, the side bands are green.
        image = solid("RGB", (48, 24), (0, 255, 0))
        image.paste(solid("RGB", (24, 24), colour), (12, 0))
        image.save(root / name / "0.png")
        image.save(root / name / "1.png")
    (root / "empty").mkdir()
    images, labels = wwgan.load_dataset_with_labels(
        config(dataset="folder", data_root=str(root), image_size=16, cache_dir="")
    )
    assert labels.tolist() == [0, 0, 1, 1]  # ant, ant, zebra, zebra; empty has no class
    assert images[:2, :, 2:-2, 2:-2].float().mean((0, 2, 3)).tolist() == [255.0, 0.0, 0.0]
    assert images[2:, :, 2:-2, 2:-2].float().mean((0, 2, 3)).tolist() == [0.0, 0.0, 255.0]


def test_large_jpegs_use_draft_decoding_without_losing_the_content(tmp_path, monkeypatch):
    from PIL import JpegImagePlugin

    drafted = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = real_draft(self, mode, size)
        drafted.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 256, (3, 8, 8)).astype(np.uint8)
    big = Image.fromarray(smooth.transpose(1, 2, 0)).resize((512, 512), Image.Resampling.BICUBIC)
    big.save(folder / "big.jpg", quality=95)
    image = wwgan.load_dataset(
        config(dataset="folder", data_root=str(folder), image_size=32, cache_dir="")
    )[0].double()
    assert drafted == [(64, 64)]  # libjpeg decoded at 1/8 scale, still >= 32 pixels
    reference = big.resize((32, 32), Image.Resampling.BICUBIC)  # full decode, no draft
    assert (image - torch.from_numpy(np.array(reference).transpose(2, 0, 1))).abs().mean() < 3


# ---------------------------------------------------------------------------------------
# the decoded-image cache
# ---------------------------------------------------------------------------------------


def make_class_folder(root, n=6):
    for k in range(n):
        (root / f"class{k % 2}").mkdir(parents=True, exist_ok=True)
        solid("RGB", (20, 20), (k * 40, 255 - k * 40, 7)).save(root / f"class{k % 2}" / f"{k}.png")


def test_corrupt_cache_is_rebuilt_with_a_warning(tmp_path, capsys):
    make_class_folder(tmp_path / "data")
    cfg = config(
        dataset="folder",
        data_root=str(tmp_path / "data"),
        image_size=16,
        cache_dir=str(tmp_path / "cache"),
    )
    images, labels = wwgan.load_dataset_with_labels(cfg)
    (cache_file,) = [p for p in (tmp_path / "cache").glob("*.npy") if ".labels" not in p.name]
    cache_file.write_bytes(cache_file.read_bytes()[:150])  # torn
    again, again_labels = wwgan.load_dataset_with_labels(cfg)
    assert "rebuilding" in capsys.readouterr().err
    assert torch.equal(again, images) and torch.equal(again_labels, labels)
    assert np.load(cache_file).shape == (6, 3, 16, 16)

    # Another resolution or subset is another cache entry, never a stale hit.
    small = wwgan.load_dataset(
        config(
            dataset="folder",
            data_root=str(tmp_path / "data"),
            image_size=16,
            max_images=3,
            cache_dir=str(tmp_path / "cache"),
        )
    )
    assert small.shape == (3, 3, 16, 16)
    assert len(list((tmp_path / "cache").glob("folder-16px-3ch-*.labels.npy"))) == 2


def test_unwritable_cache_only_warns(tmp_path, capsys):
    make_class_folder(tmp_path / "data")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    images = wwgan.load_dataset(
        config(
            dataset="folder",
            data_root=str(tmp_path / "data"),
            image_size=16,
            cache_dir=str(blocker / "cache"),
        )
    )
    assert images.shape == (6, 3, 16, 16)
    assert "could not write the decoded-image cache" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dataset,expected",
    [("cifar10", "cifar-10-batches-py"), ("celeba", "img_align_celeba"), ("folder", "")],
)
def test_missing_data_is_one_line_error(tmp_path, capsys, dataset, expected):
    root = tmp_path / "nothing_here"
    code, _, err = invoke(
        capsys,
        "wwgan",
        "train",
        "--dataset",
        dataset,
        "--data-root",
        str(root),
        "--out",
        str(tmp_path / "run"),
        "--iterations",
        "1",
    )
    line = one_error_line(code, err)
    assert code == 1 and str(root) in line and expected in line
    if dataset != "folder":
        assert f"`wwgan download {dataset} --root {root}`" in line


def test_zero_usable_images_is_an_error(tmp_path, capsys):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (folder / "b.png").write_bytes(b"")
    code, _, err = invoke(
        capsys,
        "wwgan",
        "train",
        "--dataset",
        "folder",
        "--data-root",
        str(folder),
        "--out",
        str(tmp_path / "run"),
        "--cache-dir",
        "",
    )
    assert code == 1
    assert "no usable images under " + str(folder) in err.splitlines()[-1]

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("hi")
    code, _, err = invoke(
        capsys,
        "wwgan",
        "train",
        "--dataset",
        "folder",
        "--data-root",
        str(empty),
        "--out",
        str(tmp_path / "run2"),
    )
    assert code == 1 and "no image files (.jpg" in one_error_line(code, err) and str(empty) in err


def test_bad_image_size_dataset_and_crop_fail_before_training(tmp_path, capsys):
    code, _, err = invoke(
        capsys,
        "wwgan",
        "train",
        "--dataset",
        "shapes",
        "--image-size",
        "48",
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 1 and "image size 48 is not supported" in one_error_line(code, err)
    assert not (tmp_path / "run").exists()
    code, _, err = invoke(
        capsys, "wwgan", "train", "--dataset", "mnist", "--out", str(tmp_path / "r")
    )
    assert code == 1 and "unknown dataset 'mnist'" in one_error_line(code, err)
    with pytest.raises(wwgan.WWGANError, match="celeba_crop"):
        wwgan.load_dataset(config(dataset="celeba", celeba_crop=300))


def test_shapes_needs_no_files_and_is_deterministic():
    images, labels = wwgan.load_dataset_with_labels(config(dataset="shapes", max_images=16))
    assert images.shape == (16, 3, 32, 32) and set(labels.tolist()) == {0, 1}
    # the label says which shape: a disc fills ~pi/4 of its bounding box, a square all of it
    for image, label in zip(images, labels):
        bright = image.float().mean(0) > 100
        rows, cols = bright.any(1).nonzero(), bright.any(0).nonzero()
        box = bright[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert (box.float().mean() > 0.9) == bool(label)
    assert torch.equal(images, wwgan.load_dataset(config(dataset="shapes", max_images=16)))


# ---------------------------------------------------------------------------------------
# downloads (no network here: every network call is replaced)
# ---------------------------------------------------------------------------------------


def test_download_cifar10_offline_says_what_to_do(tmp_path, monkeypatch, capsys):
    no_network(monkeypatch)
    code, _, err = invoke(capsys, "wwgan", "download", "cifar10", "--root", str(tmp_path / "data"))
    line = one_error_line(code, err)
    assert code == 1
    assert str(tmp_path / "data" / "cifar-10-batches-py") in line
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in line
    assert str(tmp_path / "data" / "cifar-10-python.tar.gz") in line


def test_download_cifar10_verifies_a_hand_placed_archive(tmp_path, monkeypatch, capsys):
    """The offline recipe of the error message: put the archive in ROOT and rerun."""
    from torchvision.datasets import CIFAR10

    expected, _ = write_cifar10_batches(tmp_path / "made")
    trust_fixture_checksums(monkeypatch, tmp_path / "made")
    root = tmp_path / "data"
    root.mkdir()
    with tarfile.open(root / CIFAR10.filename, "w:gz") as tar:
        tar.add(tmp_path / "made" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    no_network(monkeypatch)
    monkeypatch.setattr(CIFAR10, "tgz_md5", "0" * 32)  # wrong checksum: refused
    code, _, err = invoke(capsys, "wwgan", "download", "cifar10", "--root", str(root))
    assert code == 1 and "does not match md5 " + "0" * 32 in one_error_line(code, err)
    monkeypatch.setattr(CIFAR10, "tgz_md5", md5(root / CIFAR10.filename))
    code, out, err = invoke(capsys, "wwgan", "download", "cifar10", "--root", str(root))
    assert code == 0 and "verified" in out, err
    images = wwgan.load_dataset(config(dataset="cifar10", data_root=str(root)))
    np.testing.assert_array_equal(images.numpy(), expected)


CELEBA_FILES = (
    "img_align_celeba.zip",
    "list_attr_celeba.txt",
    "identity_CelebA.txt",
    "list_bbox_celeba.txt",
    "list_landmarks_align_celeba.txt",
    "list_eval_partition.txt",
)


def test_download_celeba_quota_page_gives_manual_steps(tmp_path, monkeypatch, capsys):
    import torchvision.datasets.utils as tv_utils

    def quota_page(file_id, root, filename=None, md5=None):
        # What Drive does when the quota is exceeded: an HTML page under the file's name.
        (tmp_path / "data" / "celeba").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "celeba" / filename).write_text("<html>Quota exceeded</html>")
        raise RuntimeError("File not found or corrupted.")

    monkeypatch.setattr(tv_utils, "download_file_from_google_drive", quota_page)
    code, _, err = invoke(capsys, "wwgan", "download", "celeba", "--root", str(tmp_path / "data"))
    line = one_error_line(code, err)
    assert code == 1
    assert str(tmp_path / "data" / "celeba") + "/" in line
    for name in CELEBA_FILES:
        assert name in line
    assert "https://drive.google.com/uc?id=0B7EVK8r0v71pZjFTYXZWM3FlRnM" in line
    assert "00d2c5bc6d35e252742224ab0c1e8fcb" in line  # the zip's md5


def test_download_celeba_unpacks_verified_files(tmp_path, monkeypatch, capsys):
    import torchvision.datasets.utils as tv_utils
    from torchvision.datasets import CelebA

    made = tmp_path / "made"
    (made / "img_align_celeba").mkdir(parents=True)
    for k in range(1, 4):
        solid("RGB", (178, 218), (k * 50, 90, 140)).save(made / "img_align_celeba" / f"{k:06d}.jpg")
    with zipfile.ZipFile(made / "img_align_celeba.zip", "w") as archive:
        for path in sorted((made / "img_align_celeba").iterdir()):
            archive.write(path, f"img_align_celeba/{path.name}")
    for name in CELEBA_FILES[1:]:
        (made / name).write_text(f"{name}\n")
    monkeypatch.setattr(
        CelebA, "file_list", [(f"id-{name}", md5(made / name), name) for name in CELEBA_FILES]
    )

    def from_fixture(file_id, root, filename=None, md5=None):
        if filename == "identity_CelebA.txt":
            raise RuntimeError("File not found or corrupted.")
        os.makedirs(root, exist_ok=True)  # as torchvision does
        shutil.copy(made / filename, f"{root}/{filename}")
        if not tv_utils.check_integrity(f"{root}/{filename}", md5):
            raise RuntimeError("File not found or corrupted.")

    monkeypatch.setattr(tv_utils, "download_file_from_google_drive", from_fixture)
    root = tmp_path / "data"
    code, out, err = invoke(capsys, "wwgan", "download", "celeba", "--root", str(root))
    assert code == 0 and str(root / "celeba" / "img_align_celeba") in out, err
    assert "identity_CelebA.txt" in err and "not needed for training" in err
    images = wwgan.load_dataset(
        config(dataset="celeba", data_root=str(root), image_size=64, cache_dir="")
    )
    assert images.shape == (3, 3, 64, 64)
    assert abs(images[:, 0].float().mean((1, 2)) - torch.tensor([50.0, 100, 150])).max() < 3
