"""wwgan: the Wasserstein-2 gradient penalty of Dukler, Li, Lin, Montufar, "Wasserstein of
Wasserstein Loss for Learning Generative Models", ICML 2019 ("the paper"; its supplement
"Supp."), with the models, data and trainer of its experiments, in one file.

Read top to bottom, in pipeline order: config -> data -> models -> penalties -> training
-> CLI (`train`, `download`, `samples`). Evaluation (FID, SWD, image W2, the experiments,
figures, the results table) lives in scripts/ beside the Snakefile, benchmarks in
benchmarks/; both import this module, never the reverse.

Importing this module has no side effects: nothing is downloaded, seeded or written. The
one piece most users want is the Wasserstein-2 gradient penalty::

    import wwgan
    penalty, norms = wwgan.gradient_penalty(critic, real, fake, loss="wwgan")
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import functools
import glob
import hashlib
import json
import math
import os
import random
import shutil
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from PIL import Image, ImageOps
from tqdm.auto import tqdm

# fmt: off
__all__ = [  # by section, in pipeline order
    "WWGANError", "warn", "TrainConfig", "LOSSES", "LOSS_NAMES", "OPTIMIZER_PRESETS",
    "DATASETS", "DATASET_SIZES", "DENSITY_SCALES", "select_device", "seed_everything",
    "atomic_write", "write_json",
    "make_shapes", "load_dataset", "load_dataset_with_labels", "holdout_indices",
    "evaluation_images", "list_image_files", "download_dataset", "to_unit_range",
    "sample_batch",
    "Critic", "Generator", "build_models",
    "inverse_normalized_degree", "laplacian_quadratic_form", "authors_quadratic_form",
    "images_to_density", "gradient_norm", "gradient_penalty",
    "penalty_settings", "make_optimizers", "critic_objective", "critic_step",
    "generator_step", "train", "TrainState", "RunDir", "TrainingInterrupted", "STOP_SIGNALS", "EXIT_STOPPED",
    "load_checkpoint", "load_latest_checkpoint", "newest_checkpoint", "content_digest",
    "read_run_config",
    "snapshot_paths", "load_models", "load_run", "generated_batches", "images_to_uint8",
    "sample_grid",
    "cli", "main", "run_cli",
]
# fmt: on


class WWGANError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""


def warn(message: str) -> None:
    """Every warning goes to stderr through here, as one `wwgan: warning:` line."""
    click.echo(f"wwgan: warning: {message}", err=True)


# ----------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------

LOSSES = ("wgan-gp", "lp", "wwgan", "wwgan-authors")
LOSS_NAMES = {
    "wgan-gp": "WGAN-GP",
    "lp": "WGAN-LP",
    "wwgan": "WWGAN",
    "wwgan-authors": "WWGAN (authors' code)",
}
DATASETS = ("shapes", "cifar10", "celeba", "folder")
# Training-set sizes: the official splits, and the synthetic set's default size.
DATASET_SIZES = {"cifar10": 50_000, "celeba": 202_599, "shapes": 4096}
SUPPORTED_IMAGE_SIZES = (16, 32, 64, 128)
DENSITY_SCALES = ("intensity", "unit-mass")  # see images_to_density
CELEBA_REFERENCE_WIDTH = 178  # the aligned CelebA image is 178x218

# Adam presets of Supp. Appendix C: "robustness" is printed for the critics of Figs. 4-5
# (lr 3e-4, betas (0.5, 0.9)); "fid" for the FID runs, printed as lr 1e-4, betas
# (0.9, 0). A beta2 of 0 makes Adam's second moment the last squared gradient; the
# authors' CIFAR-10 script (addl_datasets/cifar10_wgan_gpu.py) uses lr 1e-4 with
# betas (0.0, 0.9), so we read the printed pair as written backwards and use (0.0, 0.9).
OPTIMIZER_PRESETS = {
    "fid": dict(lr=1e-4, beta1=0.0, beta2=0.9),
    "robustness": dict(lr=3e-4, beta1=0.5, beta2=0.9),
}


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses infinity and NaN (which passes any range check)."""

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        if not math.isfinite(value):
            self.fail(f"{value} is not a finite number.", param, ctx)
        return value


def option(default, help: str, identity: bool = False, **click_settings):
    """A TrainConfig field and its `wwgan train` option: one default, one help text, one
    bound. `identity=True`: the field defines the model and objective (`TrainConfig.identity`).
    `click_settings` go to click.option (type, flag, ...; `cli=False` keeps the field off
    the command line); the `type`'s range or choices also bound Python callers."""
    return field(default=default, metadata=dict(help=help, identity=identity, **click_settings))


def _field_problem(f: dataclasses.Field, value) -> str | None:
    """What is wrong with `value` for field `f` by the bound its click type declares, or
    None: the same declaration checks the CLI (click) and Python callers (here)."""
    kind, name = f.metadata.get("type"), f.name
    if isinstance(kind, click.Choice) and str(value) not in map(str, kind.choices):
        return f"unknown {name} {value!r}; choose from {', '.join(map(str, kind.choices))}"
    if not isinstance(kind, (click.IntRange, click.FloatRange)):
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return f"{name} must be a number, got {value!r}"
    if isinstance(kind, click.FloatRange) and not math.isfinite(value):
        return f"{name} must be a finite number, got {value}"
    bounds = []
    if kind.min is not None and not (value > kind.min if kind.min_open else value >= kind.min):
        bounds.append(f"{'>' if kind.min_open else '>='} {kind.min}")
    if kind.max is not None and not (value < kind.max if kind.max_open else value <= kind.max):
        bounds.append(f"{'<' if kind.max_open else '<='} {kind.max}")
    return f"{name} must be {' and '.join(bounds)}, got {value}" if bounds else None


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (Algorithm 1 and Supp. Appendix C)."""

    out: str = option(
        "runs/default", "Run directory.", required=True, type=click.Path(file_okay=False)
    )
    dataset: str = option("shapes", "shapes | cifar10 | celeba | folder", identity=True)
    data_root: str = option("data", "Dataset root.", type=click.Path())
    image_size: int = option(
        None,
        "Model resolution [default: 32, or 64 for celeba].",
        identity=True,
        type=click.IntRange(min=1),
    )
    channels: int = option(3, "", identity=True, cli=False)
    loss: str = option("wwgan", "Gradient penalty.", identity=True, type=click.Choice(LOSSES))
    iterations: int = option(100_000, "Generator iterations.", type=click.IntRange(min=0))
    # batch_size >= 2: the generator's BatchNorm needs 2 samples
    batch_size: int = option(64, "", identity=True, type=click.IntRange(2, 2**16))
    n_critic: int = option(
        5, "Critic updates per generator update.", type=click.IntRange(min=1), identity=True
    )
    lam: float = option(10.0, "Penalty weight lambda.", type=FiniteFloatRange(min=0), identity=True)
    lipschitz_target: float = option(
        1.0, "The 1 in (||grad f|| - 1)^2.", type=FiniteFloatRange(0, min_open=True), identity=True
    )
    one_sided: bool = option(
        False, "max(0, norm - target)^2 for the W2 losses.", flag="--one-sided", identity=True
    )
    density_at: str = option(
        "interpolate",
        "Where L(X) is evaluated (Sec. 3.4 vs Algorithm 1).",
        type=click.Choice(["interpolate", "fake"]),
        identity=True,
    )
    density_scale: str = option(
        "intensity",
        "The density L(rho) is taken at: pixel masses (x+1)/2 (Remark 3) or each channel "
        "normalized to unit mass (Sec. 2.1, X in P(Omega)).",
        type=click.Choice(DENSITY_SCALES),
        identity=True,
    )
    alpha: float = option(
        1.0,
        "The alpha of L~ = L + alpha 1 1^T (Remark 3).",
        type=FiniteFloatRange(min=0),
        identity=True,
    )
    neighborhood: int = option(
        4, "Pixel graph: 4 or 8 neighbours.", identity=True, type=click.Choice(["4", "8"])
    )
    lam_follows: str = option(
        "",
        "WGAN-GP/LP only: multiply lam by the scale s = sqrt(g^T L~ g) / ||g|| that WWGAN's "
        "norm has on each batch's gradient at this density scale (detached), so that the "
        "control's strength lam * s * t tracks WWGAN's through training.",
        identity=True,
        type=click.Choice(["", *DENSITY_SCALES]),
    )
    gamma: float = option(
        1.0, "wwgan-authors only: weight of ||g||^2.", type=FiniteFloatRange(min=0), identity=True
    )
    optimizer: str = option(
        "fid",
        "Adam preset: fid (lr 1e-4, betas 0, 0.9) or robustness (3e-4, 0.5, 0.9); sets lr, "
        "beta1 and beta2 where they are not given.",
        type=click.Choice(list(OPTIMIZER_PRESETS)),
    )
    lr: float = option(
        None,
        "Learning rate [default: the --optimizer preset's].",
        identity=True,
        type=FiniteFloatRange(0, 10, min_open=True),  # Adam's float32 state overflows far above
    )
    beta1: float = option(None, "", identity=True, cli=False, type=FiniteFloatRange(0, 1))
    beta2: float = option(None, "", identity=True, cli=False, type=FiniteFloatRange(0, 1))
    latent_dim: int = option(128, "", cli=False, identity=True)
    width: int = option(
        512,
        "Channels at 4x4 resolution (512 is the paper's model).",
        type=click.IntRange(1, 8192),  # 8192 is already ~1.5G parameters at 64 px
        identity=True,
    )
    seed: int = option(0, "", identity=True, type=click.IntRange(0, 2**63 - 1))
    device: str = option("auto", "auto | cpu | cuda[:N] | mps")
    log_every: int = option(50, "", type=click.IntRange(min=1))
    sample_every: int = option(1000, "", type=click.IntRange(min=0))
    checkpoint_every: int = option(500, "", type=click.IntRange(min=1))
    checkpoint_minutes: float = option(
        10.0,
        "Also checkpoint when this many minutes have passed since the last one (0: only "
        "every --checkpoint-every iterations).",
        type=FiniteFloatRange(min=0),
    )
    snapshot_every: int = option(
        0,
        "Keep a snapshot of both models every N iterations (FID curves, FID-matched "
        "critics; 0: none).",
        type=click.IntRange(min=0),
    )
    tensorboard: bool = option(
        False,
        "Also write the metrics and sample grids as TensorBoard events in OUT/tensorboard/ "
        "(needs the tensorboard package; metrics.jsonl stays the record).",
        flag="--tensorboard",
    )
    nan_policy: str = option(
        "stop", "On a non-finite loss: stop, or skip the step.", type=click.Choice(["stop", "skip"])
    )
    max_images: int = option(
        0, "Use at most N training images (0: all).", type=click.IntRange(0, 10**8), identity=True
    )
    holdout: int = option(
        0,
        "Hold back N training images (a fixed random slice) for evaluation; training never "
        "sees them. For data without a test split.",
        type=click.IntRange(0, 10**8),
        identity=True,
    )
    label: str = option("", "Name of the run's variant in tables and figures (not its identity).")
    cache_dir: str = option(
        None,
        "Where decoded image folders are cached as uint8 arrays ('' disables) "
        "[default: $WWGAN_CACHE_DIR, else data/cache].",
        type=click.Path(),
    )
    celeba_crop: int = option(
        108,
        "CelebA center-crop side in the 178x218 frame (178: the authors' code).",
        type=click.IntRange(1, CELEBA_REFERENCE_WIDTH),
        identity=True,
    )
    tf32: bool = option(
        True,
        "CUDA only: TF32 tensor cores in the models' matmuls and convolutions.",
        flag="--tf32/--no-tf32",
    )
    cudnn_benchmark: bool = option(
        True,
        "CUDA only: let cuDNN autotune convolution algorithms.",
        flag="--cudnn-benchmark/--no-cudnn-benchmark",
    )
    compile: bool = option(
        False,
        "torch.compile the generator, the generator step's critic and the W2 quadratic form "
        "(the penalty's critic stays eager: torch.compile has no double backward).",
        flag="--compile/--no-compile",
    )

    def __post_init__(self):
        # Defaults that depend on other fields are resolved here, so that Python callers
        # and the CLI get the same run: CelebA at 64 px, the Adam preset's lr and betas.
        resolved = dict(
            OPTIMIZER_PRESETS.get(self.optimizer, {}),
            image_size=64 if self.dataset == "celeba" else 32,
            cache_dir=os.environ.get("WWGAN_CACHE_DIR", "data/cache"),
        )
        for name, value in resolved.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if isinstance(self.neighborhood, str) and self.neighborhood.isdigit():
            object.__setattr__(self, "neighborhood", int(self.neighborhood))
        if self.dataset not in DATASETS:
            raise WWGANError(f"unknown dataset {self.dataset!r}; choose from {', '.join(DATASETS)}")
        if self.neighborhood not in (4, 8):
            raise WWGANError(f"neighborhood must be 4 or 8, got {self.neighborhood}")
        if self.lam_follows and self.loss not in ("wgan-gp", "lp"):
            raise WWGANError(f"lam_follows is for the L2 losses (wgan-gp, lp), not {self.loss!r}")
        for f in dataclasses.fields(self):
            if problem := _field_problem(f, getattr(self, f.name)):
                raise WWGANError(problem)
        if self.channels not in (1, 3):
            raise WWGANError(f"channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")
        if self.image_size not in SUPPORTED_IMAGE_SIZES:
            raise WWGANError(
                f"image size {self.image_size} is not supported by the models; "
                f"choose from {', '.join(map(str, SUPPORTED_IMAGE_SIZES))}"
            )
        min_width = _min_width(self.image_size)
        if self.width < min_width:
            raise WWGANError(
                f"width {self.width} is too small for image size {self.image_size}: the models "
                f"halve it at each of their upsampling stages; use --width {min_width} or more"
            )

    def identity(self, exclude: tuple[str, ...] = ()) -> dict:
        """The fields that define the model and the objective (marked `identity=True`),
        resolved: a checkpoint written under other values cannot be resumed by this config,
        and the workflow names a run directory by their hash (without the seed, which its
        path holds). Length, logging, device and paths may change freely."""
        return {name: getattr(self, name) for name in IDENTITY_FIELDS if name not in exclude}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# Marked once, in each field's metadata; resume checks and the workflow's run hash use it.
IDENTITY_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata["identity"])


def select_device(name: str = "auto") -> torch.device:
    """CUDA when available unless the user names a device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = None
    with contextlib.suppress(RuntimeError):
        device = torch.device(name)
    if device is None or device.type not in ("cpu", "cuda", "mps"):  # meta, xla, ... cannot train
        raise WWGANError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise WWGANError(f"device {name!r} requested but CUDA is not available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise WWGANError(
            f"device {name!r} requested but there are only "
            f"{torch.cuda.device_count()} CUDA device(s)"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise WWGANError(f"device {name!r} requested but MPS is not available")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", keep_previous: bool = False):
    """Open a temporary file beside `path` for writing; on a clean exit fsync it and rename
    it over `path`: a crash at any moment leaves the old file or the new one, never a torn
    one, and an error leaves `path` as it was. `keep_previous` first keeps the old file as
    `*.prev.pt`. Temp files of `path` left by a killed writer (kill -9) are removed first."""
    path = Path(path)
    for kind in (".tmp-", ".prev.tmp-"):  # the names this function writes
        for stale in path.parent.glob(f".{glob.escape(path.name)}{kind}*"):
            pid = stale.name.rpartition(".tmp-")[2]
            if pid.isdigit() and not _process_alive(int(pid)):
                stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode, **({} if "b" in mode else dict(newline=""))) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            # Link, then rename: `path` exists at every moment (the old file, then the new
            # one), so a kill between the two steps leaves two complete copies.
            linked = path.with_name(f".{path.name}.prev.tmp-{os.getpid()}")
            linked.unlink(missing_ok=True)
            os.link(path, linked)
            os.replace(linked, previous_checkpoint_path(path))
            linked.unlink(missing_ok=True)  # rename is a no-op when both were one file
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def refuse_overwriting_inputs(outputs, inputs) -> None:
    """A WWGANError (one line) when an output path is one of the command's inputs: the
    same resolved path (relative paths, symlinks) or, where both exist, the same file
    (hard links). A folder among `inputs` stands for the run files read in it (config.json,
    metrics.jsonl, checkpoint*.pt, snapshots/*) and may not be an output itself. Call
    before writing anything; None entries are skipped."""
    files = []
    for entry in filter(None, inputs):
        entry = Path(entry)
        files.append(entry)
        if entry.is_dir():
            files += [entry / "config.json", entry / "metrics.jsonl"]
            files += sorted(entry.glob("checkpoint*.pt")) + sorted(entry.glob("snapshots/*"))
    for out in map(Path, filter(None, outputs)):
        for source in files:
            same = os.path.realpath(out) == os.path.realpath(source)
            if not same and out.exists() and source.exists():
                with contextlib.suppress(OSError):
                    same = os.path.samefile(out, source)
            if same:
                raise WWGANError(
                    f"{out}: this output would write over the input {source}; choose "
                    f"another output path"
                )


def write_json(payload: Any, path: str | Path) -> Path:
    """`payload` as indented JSON at `path` (parents created), through `atomic_write`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        f.write(json.dumps(payload, indent=2) + "\n")
    return path


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


# What torchvision's ImageFolder accepts, plus .webp/.tiff (any format PIL decodes).
IMAGE_EXTENSIONS = tuple(".jpg .jpeg .png .ppm .pgm .pbm .bmp .gif .tif .tiff .webp".split())
# torchvision's CIFAR10.classes (from batches.meta): alphabetical, so the class index of an
# image-folder copy in sorted folder order is the official label.
CIFAR10_CLASSES = tuple("airplane automobile bird cat deer dog frog horse ship truck".split())
CACHE_FORMAT_VERSION = 1
HOLDOUT_SEED = 2019  # the permutation that picks the held-out slice of a training set


def load_dataset(config: TrainConfig) -> torch.Tensor:
    """The training images of `config.dataset` as uint8 (N, C, H, W)."""
    return load_dataset_with_labels(config)[0]


def _load_all(config: TrainConfig):
    if config.dataset == "shapes":
        n = config.max_images or DATASET_SIZES["shapes"]
        return make_shapes(n, config.image_size, seed=1234, return_labels=True)
    loaders = dict(cifar10=load_cifar10, celeba=load_celeba, folder=load_image_folder)
    return loaders[config.dataset](config)


def load_dataset_with_labels(config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The training images, uint8 (N, C, S, S), and labels int64 (N,) or None when the set
    has no classes: the training split minus the `config.holdout` slice (`holdout_indices`),
    then a fixed class-balanced subset of at most `config.max_images` (`subset_indices`).
    Image folders are decoded once and cached under `config.cache_dir`."""
    if not config.holdout:
        return _load_all(config)
    images, labels = _load_all(dataclasses.replace(config, max_images=0))
    train, _ = holdout_indices(len(images), config.holdout)
    keep = torch.from_numpy(train[subset_indices(len(train), config.max_images)])
    return images[keep], None if labels is None else labels[keep]


def holdout_indices(n: int, holdout: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) indices, both sorted: the held-out slice is the first
    `holdout` of a fixed-seed permutation of range(n), so it is a uniform random subset
    (class balance kept) that does not depend on max_images."""
    if not 0 <= holdout < n:
        raise WWGANError(f"cannot hold out {holdout} of {n} training images")
    order = np.random.default_rng(HOLDOUT_SEED).permutation(n)
    return np.sort(order[holdout:]), np.sort(order[:holdout])


def evaluation_images(config: TrainConfig, allow_training_images: bool = False):
    """Images no critic trained on, for the experiments: (uint8 images, labels or None,
    where they come from). The official test split if any (CIFAR-10's test_batch or a test/
    folder beside train/; a separate draw of `shapes`), else the `config.holdout` slice, else
    the training images if `allow_training_images` (with a warning), else a WWGANError."""
    test = _official_test_split(config)
    if test is not None:
        return test
    if config.holdout:
        images, labels = _load_all(dataclasses.replace(config, max_images=0))
        keep = torch.from_numpy(holdout_indices(len(images), config.holdout)[1])
        where = (
            f"held-out slice of the training set: {config.holdout} of its {len(images)} "
            f"images (seed {HOLDOUT_SEED}), excluded from training"
        )
        return images[keep], None if labels is None else labels[keep], where
    if not allow_training_images:
        raise WWGANError(
            f"{config.dataset} at {config.data_root} has no test split and the runs held "
            f"out no images; train with --holdout N, or pass --allow-training-images to "
            f"evaluate on images the critics trained on"
        )
    warn("evaluating on training images: the critics saw them (--allow-training-images)")
    images, labels = load_dataset_with_labels(config)
    return images, labels, "training images (seen in training; --allow-training-images)"


def _official_test_split(config: TrainConfig):
    """(images, labels, description) of the dataset's own test split, or None."""
    if config.dataset == "shapes":
        images, labels = make_shapes(1024, config.image_size, seed=4321, return_labels=True)
        return images, labels, "shapes test draw (1024 images, seed 4321)"
    if config.dataset != "cifar10":
        return None
    layout, path = find_cifar10(config.data_root)
    if layout == "torchvision":
        if not (path / "cifar-10-batches-py" / "test_batch").exists():
            return None
        images, labels = _cifar10_pickles(config, path, train=False)
        return images, labels, f"CIFAR-10 test split ({len(images)} images)"
    folder = path.parent / "test"
    if path.name != "train" or not folder.is_dir():
        return None
    images, labels = load_image_files(config, list_image_files(folder), "cifar10-test")
    return images, labels, f"CIFAR-10 test split ({len(images)} images, {folder})"


def subset_indices(n: int, max_images: int, seed: int = 0) -> np.ndarray:
    """Indices of the first `max_images` of a fixed-seed permutation of range(n), sorted.
    A uniform random subset keeps the class balance; a smaller subset is contained in a
    larger one. All of range(n) when max_images is 0 or >= n."""
    if not max_images or max_images >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:max_images])


# ----------------------------------------------------------------------------------------
# datasets on disk: image folders (listing, decoding, caching), CIFAR-10, CelebA
# ----------------------------------------------------------------------------------------


@dataclass
class ImageFiles:
    """The image files of a folder, in sorted order, with class labels for the
    one-sub-folder-per-class layout and the files that were left out, with why."""

    root: Path
    files: list  # paths as str
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
        what = "is a broken symbolic link" if root.is_symlink() else "does not exist"
        what = "is a file, not a folder" if root.exists() else what
        raise WWGANError(f"image folder {root} {what}; pass --data-root DIR")
    entries = sorted(
        os.path.join(root, name) for name in os.listdir(root) if not name.startswith(".")
    )
    subdirs = [p for p in entries if os.path.isdir(p)]
    if not subdirs:
        files = [p for p in entries if _is_image_file(p)]
        skipped = [(p, "not an image file") for p in entries if not _is_image_file(p)]
        return ImageFiles(root, files, None, [], skipped)
    files, labels, classes = [], [], []
    skipped = [(p, "outside the class sub-folders") for p in entries if os.path.isfile(p)]
    for folder in subdirs:
        inside = _walk_files(folder)
        images = [p for p in inside if _is_image_file(p)]
        skipped += [(p, "not an image file") for p in inside if not _is_image_file(p)]
        if images:
            labels += [len(classes)] * len(images)
            classes.append(os.path.basename(folder))
            files += images
    return ImageFiles(root, files, labels if classes else None, classes, skipped)


def _convert_mode(img, mode: str):
    """Grayscale, palette, RGBA, CMYK ... -> `mode` ("RGB" or "L"); alpha is dropped."""
    if img.mode == mode:
        return img
    if img.mode in ("P", "PA"):  # palette transparency converts cleanly only via RGBA
        img = img.convert("RGBA")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale PNG: keep the top byte
        img = Image.fromarray(np.clip(np.asarray(img) / 256, 0, 255).astype(np.uint8))
    return img.convert(mode)


def decode_image(
    path: str | Path,
    size: int,
    crop_fraction: float = 1.0,
    channels: int = 3,
    exif_transpose: bool = False,
) -> np.ndarray:
    """One image file -> uint8 (C, size, size): a centered square crop, `crop_fraction` of
    the shorter side, resized with PIL's antialiased bicubic filter from the exact,
    possibly fractional box (no rounding of the center). Large JPEGs are decoded at a
    reduced DCT scale (draft mode) that keeps the crop at least `size` pixels wide."""
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


def decode_images(
    paths: list,
    size: int,
    crop_fraction: float = 1.0,
    channels: int = 3,
    exif_transpose: bool = False,
    desc: str = "decoding images",
):
    """Decode many files in a thread pool (PIL releases the GIL while decoding): (uint8
    (N, C, size, size), ok mask (N,)); unreadable files are marked in the mask, not raised."""
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

    with (
        ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool,
        tqdm(total=n, desc=desc, unit="img", disable=None, leave=False) as bar,
    ):
        for done in pool.map(decode_chunk, range(0, n, chunk)):
            bar.update(done)
    return out, ok


def _cache_paths(cache_dir: Path, name: str, key: dict) -> tuple[Path, Path]:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    stem = f"{name}-{key['size']}px-{key['channels']}ch-{digest}"
    return cache_dir / f"{stem}.npy", cache_dir / f"{stem}.labels.npy"


def _read_cache(images_path: Path, labels_path: Path, with_labels: bool, shape_tail: tuple):
    """(images, labels) from a cache written by `_write_cache`, None when there is none;
    a damaged one is reported and ignored (it will be rebuilt)."""
    if not images_path.exists():
        return None
    try:
        images = np.load(images_path, allow_pickle=False)
        if images.dtype != np.uint8 or images.shape[1:] != shape_tail or not len(images):
            raise ValueError(f"holds {images.dtype} {images.shape}")
        labels = np.load(labels_path, allow_pickle=False) if with_labels else None
        if with_labels and labels.shape != (len(images),):
            raise ValueError(f"labels {labels.shape} do not match images {images.shape}")
        return images, labels
    except Exception as exc:
        warn(f"cache {images_path} is unreadable ({type(exc).__name__}: {exc}); rebuilding it")
        return None


def _write_cache(images_path: Path, labels_path: Path, images, labels) -> None:
    try:
        images_path.parent.mkdir(parents=True, exist_ok=True)
        # labels first: the images file marks a complete cache
        for array, path in ((labels, labels_path), (images, images_path)):
            if array is not None:
                with atomic_write(path) as f:
                    np.save(f, array, allow_pickle=False)
    except OSError as exc:
        warn(
            f"could not write the decoded-image cache {images_path} ({exc.strerror or exc}); "
            f"continuing without it (set --cache-dir to a writable folder)"
        )


def load_image_files(
    config: TrainConfig,
    listing: ImageFiles,
    name: str,
    crop_fraction: float = 1.0,
    exif_transpose: bool = False,
):
    """Decode (or read from the cache) the images of `listing` at config.image_size:
    (uint8 tensor (N, C, S, S), int64 labels or None). The cache file is keyed by the
    dataset, resolution, crop, the resolved folder, its file names and max_images, and
    written atomically, so a second run reads one array instead of decoding again."""
    files, with_labels = listing.files, listing.labels is not None
    if not files:
        raise WWGANError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {listing.root}")
    prefix = len(str(listing.root)) + 1
    key = dict(
        version=CACHE_FORMAT_VERSION,
        dataset=name,
        root=str(listing.root.resolve()),
        num_files=len(files),
        names=hashlib.sha1("\n".join(p[prefix:] for p in files).encode()).hexdigest(),
        max_images=config.max_images,
        size=config.image_size,
        channels=config.channels,
        crop=round(crop_fraction, 6),
        exif=exif_transpose,
        classes=listing.classes,
    )
    shape_tail = (config.channels, config.image_size, config.image_size)
    cache = _cache_paths(Path(config.cache_dir), name, key) if config.cache_dir else None
    arrays = _read_cache(*cache, with_labels, shape_tail) if cache else None
    if arrays is None:
        arrays = _decode_listing(config, listing, name, crop_fraction, exif_transpose)
        if cache:
            _write_cache(*cache, *arrays)
    images, labels = arrays
    labels = torch.from_numpy(labels.astype(np.int64)) if with_labels else None
    return torch.from_numpy(images), labels


def _decode_listing(
    config: TrainConfig, listing: ImageFiles, name: str, crop_fraction: float, exif_transpose: bool
):
    """Decode config.max_images of `listing` (a fixed subset), warning once about the files
    that were skipped or failed; raises when none decodes."""
    files, labels, with_labels = listing.files, listing.labels, listing.labels is not None
    keep = subset_indices(len(files), config.max_images)
    paths = [files[i] for i in keep]
    images, ok = decode_images(
        paths, config.image_size, crop_fraction, config.channels, exif_transpose, f"decoding {name}"
    )
    label_array = np.asarray(labels, dtype=np.int64)[keep] if with_labels else None
    if not ok.any():  # before the warning below: the error alone says it all
        raise WWGANError(
            f"no usable images under {listing.root}: all {len(paths)} image "
            f"file(s) failed to decode (corrupt or not images), e.g. {paths[0]}"
        )
    skipped = list(listing.skipped) + [(p, "unreadable") for p, good in zip(paths, ok) if not good]
    if skipped:
        counts = collections.Counter(reason for _, reason in skipped)
        detail = ", ".join(f"{k} {reason}" for reason, k in counts.items())
        warn(
            f"skipped {len(skipped)} file(s) under {listing.root}: {detail} (e.g. {skipped[0][0]})"
        )
    if not ok.all():
        images = images[ok]
        label_array = label_array[ok] if with_labels else None
    return images, label_array


# -- CIFAR-10 --


def find_cifar10(root: str | Path) -> tuple[str, Path]:
    """("torchvision", ROOT) when ROOT/cifar-10-batches-py exists (the official pickles),
    else ("folder", DIR) for an image folder DIR/<class>/*: ROOT/train or ROOT itself."""
    root = Path(root)
    if (root / "cifar-10-batches-py").is_dir():
        return "torchvision", root
    for folder in (root / "train", root):
        if folder.is_dir() and all((folder / name).is_dir() for name in CIFAR10_CLASSES):
            return "folder", folder
    raise WWGANError(
        f"CIFAR-10 not found: expected {root / 'cifar-10-batches-py'} (torchvision) or "
        f"{root / 'train'}/<class>/*.jpg; fetch it with `wwgan download cifar10 --root {root}`"
    )


def _resize_array_images(images_nhwc: np.ndarray, size: int, channels: int) -> np.ndarray:
    """uint8 (N, H, W, 3) -> uint8 (N, C, size, size) through the same PIL path as files."""
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
            warn(
                f"{path}: class folders {listing.classes} are not CIFAR-10's; labels follow "
                f"their sorted order"
            )
        return load_image_files(config, listing, "cifar10")
    return _cifar10_pickles(config, path, train=True)


def _cifar10_pickles(config: TrainConfig, path: Path, train: bool):
    from torchvision.datasets import CIFAR10

    try:
        dataset = CIFAR10(root=str(path), train=train, download=False)
    except Exception as exc:
        raise WWGANError(
            f"{path / CIFAR10.base_folder} is incomplete or corrupt ({exc}); "
            f"fetch it again with `wwgan download cifar10 --root {path}`"
        ) from exc
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
    raise WWGANError(
        f"CelebA not found: expected {root / 'celeba' / 'img_align_celeba'} (or "
        f"{root / 'img_align_celeba'}) with the aligned JPEGs; fetch it with "
        f"`wwgan download celeba --root {root}`"
    )


def load_celeba(config: TrainConfig):
    """Aligned CelebA faces, no labels, by the 64x64 recipe of the DCGAN/WGAN lineage (e.g.
    carpedm20/DCGAN-tensorflow): a square crop of celeba_crop/178 of the width at the exact
    center (some code shifts it down; the paper does not say), 108x108 of 178x218 or 54x54
    of a half-size copy, resized to image_size (64 in the paper). The authors' train.py used
    Resize(64) + CenterCrop(64), a centered 178x178 crop: `--celeba-crop 178` reproduces it."""
    listing = list_image_files(find_celeba(config.data_root))
    images, _ = load_image_files(
        config, listing, "celeba", crop_fraction=config.celeba_crop / CELEBA_REFERENCE_WIDTH
    )
    return images, None


# -- any image folder --


def load_image_folder(config: TrainConfig):
    """Any folder of images, flat or one sub-folder per class (then labelled): a centered
    square crop of the shorter side, resized to image_size; EXIF orientation applied."""
    listing = list_image_files(config.data_root)
    return load_image_files(config, listing, "folder", exif_transpose=True)


def to_unit_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] -> float in [-1, 1]."""
    return images_uint8.float().div_(127.5).sub_(1.0)


def sample_batch(images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A uniformly random batch (with replacement), drawn on the images' device."""
    idx = torch.randint(images.shape[0], (batch_size,), device=images.device)
    return to_unit_range(images[idx])


# ----------------------------------------------------------------------------------------
# downloads (torchvision's official files and checksums)
# ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    """Bound every blocking socket operation, so a dead network fails instead of hanging."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


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
            f"`wwgan download cifar10 --root {root}`"
        ) from exc
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
        others = ", ".join(f[2] for f in failed if f is not zip_failed[0])
        note = others and f" (optional, not used for training: {others} from the same Drive folder)"
        raise WWGANError(
            f"could not fetch CelebA from Google Drive ({reason}; Drive often serves a quota "
            f"or HTML page instead of the file, a known torchvision issue); by hand: download "
            f"{name} (https://drive.google.com/uc?id={fid}, md5 {md5}; or via "
            f"https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, Img/) into {base}/{note} and "
            f"rerun `wwgan download celeba --root {root}`, which verifies the md5 and unpacks "
            f"it; or unzip it yourself so that {images_dir}/ holds the JPEGs"
        )
    if failed:
        warn(
            f"could not fetch CelebA annotation file(s) {', '.join(f[2] for f in failed)} into "
            f"{base} (not needed for training): {failed[0][3]}"
        )
    if not have_images:
        tv_utils.extract_archive(str(base / "img_align_celeba.zip"), str(base))
    count = sum(1 for p in images_dir.iterdir() if _is_image_file(p))
    if count != DATASET_SIZES["celeba"]:
        warn(f"{images_dir} holds {count} images, the official set {DATASET_SIZES['celeba']}")
    return images_dir


# ----------------------------------------------------------------------------------------
# models (Sec. 4 and Supp. Appendix C: DCGAN family, no normalization in the critic)
# ----------------------------------------------------------------------------------------


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
        widths = [width // 2**i for i in reversed(range(_num_stages(image_size)))]
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

    def __init__(
        self, image_size: int = 32, channels: int = 3, width: int = 512, latent_dim: int = 128
    ):
        super().__init__()
        self.preprocess = nn.Sequential(
            nn.Linear(latent_dim, 4 * 4 * width), nn.BatchNorm1d(4 * 4 * width), nn.ReLU(True)
        )
        blocks, c_in = [], width
        for _ in range(_num_stages(image_size) - 1):
            half = c_in // 2
            blocks += [nn.ConvTranspose2d(c_in, half, 2, 2), nn.BatchNorm2d(half), nn.ReLU(True)]
            c_in = half
        blocks += [nn.ConvTranspose2d(c_in, channels, 2, stride=2), nn.Tanh()]
        self.main = nn.Sequential(*blocks)
        self.width, self.latent_dim = width, latent_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(self.preprocess(z).view(-1, self.width, 4, 4))


def build_models(config: TrainConfig) -> tuple[Generator, Critic]:
    generator = Generator(config.image_size, config.channels, config.width, config.latent_dim)
    return generator, Critic(config.image_size, config.channels, config.width)


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
def inverse_normalized_degree(
    height: int, width: int, neighborhood: int = 4, device=None, dtype=torch.float32
) -> torch.Tensor:
    """1 / d_i, shape (H, W), where d_i = deg_i / sum_k deg_k is node i's weighted degree
    normalized over one channel's grid graph (Def. 10; Supp. App. B, "normalized volume form")."""
    if height * width < 2:
        raise ValueError("the pixel graph needs at least two pixels")
    degree = torch.zeros(height, width, dtype=torch.float64)
    for dy, dx, w in NEIGHBOR_OFFSETS[neighborhood]:
        a, b = _edge_slices(dy, dx, height, width)
        degree[a] += w
        degree[b] += w
    # Cached per device: a host-to-device copy in every penalty would block the host until
    # the GPU has drained its queue (a pageable copy synchronizes), once per critic step.
    return (degree.sum() / degree).to(device=torch.device(device or "cpu"), dtype=dtype)


def laplacian_quadratic_form(
    grad: torch.Tensor,
    density: torch.Tensor,
    alpha: float = 1.0,
    neighborhood: int = 4,
    compiled: bool = False,
) -> torch.Tensor:
    """g^T L~(rho) g for each sample: (B, C, H, W) -> (B,).

    L(rho) is the weighted Laplacian of Supp. Definition 10 (equivalently Prop. 4) on each
    channel's pixel graph, with d_i the normalized weighted degree, and
    L~ = L + alpha * sum_c 1_c 1_c^T (Remark 3), one all-ones block per colour channel.
    Differentiable twice; never builds an n x n matrix.

    `compiled=True` runs the edge sums through torch.compile (fused kernels; the first
    call per shape compiles, BENCHMARKS.md item 2 has the cost and the gain). That version
    is differentiable once only (aot_autograd has no double backward), which is all
    training needs: penalty.backward() takes d/dg of g^T L~ g once, and the second-order
    part runs through the critic's own eager graph of g.
    """
    if grad.shape != density.shape or grad.dim() != 4:
        raise ValueError(
            f"grad and density must both be (B, C, H, W); got "
            f"{tuple(grad.shape)} and {tuple(density.shape)}"
        )
    if _check_values("density", density) and float(density.min()) < 0:
        raise ValueError(
            f"density must be nonnegative (a mass per pixel); its minimum is "
            f"{float(density.min()):.4g} (see images_to_density)"
        )
    height, width = grad.shape[-2:]
    inv_d = inverse_normalized_degree(height, width, neighborhood, grad.device, grad.dtype)
    edge_sums = _compiled_edge_sums() if compiled else _edge_sums
    return edge_sums(grad, density * inv_d, alpha, neighborhood)


def _edge_sums(
    grad: torch.Tensor, scaled_density: torch.Tensor, alpha: float, neighborhood: int
) -> torch.Tensor:
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


@functools.cache
def _compiled_edge_sums():
    # 1/d_i is computed outside the compiled graph on purpose: traced into it, its cached
    # construction by in-place slice additions made inductor's lowering run for minutes
    # (8-neighbourhood: no result after 10 minutes).
    return torch.compile(_edge_sums, dynamic=False)


def authors_quadratic_form(
    grad: torch.Tensor, density: torch.Tensor, gamma: float = 1.0
) -> torch.Tensor:
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


def images_to_density(images: torch.Tensor, scale: str = "intensity") -> torch.Tensor:
    """Images in [-1, 1] -> the nonnegative density rho the Laplacian L(rho) is taken at.

    - "intensity": rho = (x + 1) / 2, the unnormalized pixel masses of Remark 3 (Def. 10's
      M+(I)): with Def. 10's 1/d_i ~ n, sqrt(g^T L~ g) is ~40-50x ||g||_2 on CIFAR-10.
    - "unit-mass": each sample's channel divided by its total mass, so that it lies on the
      probability simplex, X in P(Omega) (Sec. 2.1; Supp. App. B defines L on P(I)); then
      rho_i / d_i is O(1) and so is sqrt(g^T L~ g) / ||g||_2. An all-black channel (mass
      below 1e-12) has no distribution: its density is 0, leaving only alpha 1 1^T.
    """
    if scale not in DENSITY_SCALES:
        raise ValueError(
            f"unknown density scale {scale!r}; choose from {', '.join(DENSITY_SCALES)}"
        )
    density = (images + 1.0) * 0.5
    if scale == "unit-mass":
        mass = density.sum(dim=(-2, -1), keepdim=True)
        density = torch.where(
            mass > 1e-12, density / mass.clamp_min(1e-12), torch.zeros_like(density)
        )
    return density


def safe_sqrt(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    # sqrt'(0) is infinite: a zero gradient (e.g. a dead critic) would give NaN in the
    # double backward. Clamping below eps gives a finite value and a zero derivative.
    return torch.sqrt(x.clamp_min(eps))


def critic_input_gradient(critic: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """d critic(x) / dx per sample, kept in the graph (create_graph=True) so that a
    penalty on it can be backpropagated into the critic's weights."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return grad


def gradient_norm(
    grad: torch.Tensor,
    loss: str,
    density: torch.Tensor | None = None,
    alpha: float = 1.0,
    neighborhood: int = 4,
    gamma: float = 1.0,
    compiled: bool = False,
) -> torch.Tensor:
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


_VALUES_CHECKED: set = set()  # accelerators whose first batch had its values checked


def _check_values(name: str, x: torch.Tensor) -> bool:
    """Whether to check the values of `x` now: always on CPU, where reading a minimum back
    costs no more than computing it; on an accelerator only for the first batch of each
    device type, since a read-back there syncs the host with the device, once per step."""
    if x.device.type == "cpu":
        return True
    first = (name, x.device.type) not in _VALUES_CHECKED
    _VALUES_CHECKED.add((name, x.device.type))
    return first


def _check_image_batches(real: torch.Tensor, fake: torch.Tensor, loss: str) -> None:
    """ValueError unless real and fake are image batches (B, C, H, W) of one shape and,
    for the W2 losses, in [-1, 1]: the density (x + 1) / 2 must be a nonnegative mass.
    Images in [0, 1] are in range but wrong; a real batch with no negative value says so
    in a warning (once)."""
    if real.dim() != 4 or real.shape != fake.shape:
        raise ValueError(
            f"real and fake must be image batches (B, C, H, W) of one shape; got "
            f"{tuple(real.shape)} and {tuple(fake.shape)} (reshape flattened images with "
            f"x.view(B, C, H, W))"
        )
    if loss not in ("wwgan", "wwgan-authors") or not _check_values("images", real):
        return
    low = min(float(real.min()), float(fake.min()))
    high = max(float(real.max()), float(fake.max()))
    if low < -1.001 or high > 1.001:
        raise ValueError(
            f"images must be in [-1, 1] for loss {loss!r} (its density is (x + 1) / 2); "
            f"got values in [{low:.4g}, {high:.4g}]: scale them with x * 2 - 1 for [0, 1] "
            f"data, x / 127.5 - 1 for [0, 255]"
        )
    if float(real.min()) >= 0 and "images in [0, 1]" not in _VALUES_CHECKED:
        _VALUES_CHECKED.add("images in [0, 1]")
        warn(
            f"the real batch has no negative value: loss {loss!r} expects images in "
            f"[-1, 1]; if yours are in [0, 1], pass x * 2 - 1"
        )


def gradient_penalty(
    critic: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    loss: str = "wwgan",
    lam: float = 10.0,
    target: float = 1.0,
    one_sided: bool = False,
    density_at: str = "interpolate",
    alpha: float = 1.0,
    neighborhood: int = 4,
    gamma: float = 1.0,
    eps: torch.Tensor | None = None,
    compiled: bool = False,
    density_scale: str = "intensity",
    return_l2: bool = False,
    lam_follows: str = "",
):
    """The penalty of `loss` at x_hat = eps * real + (1 - eps) * fake, eps ~ U[0, 1] per sample:

    - "wgan-gp": lam * (||g||_2 - 1)^2 (Gulrajani et al. 2017, Eq. 8);
    - "lp": lam * max(0, ||g||_2 - 1)^2 (Petzka et al. 2017);
    - "wwgan": lam * (sqrt(g^T L~(rho) g) - 1)^2 (Sec. 3.4), rho taken at x_hat (Sec. 3.4,
      default) or at the fake sample (Algorithm 1, line 7), on the `density_scale` of
      `images_to_density` (intensity: Remark 3's unnormalized masses; unit-mass: Sec. 2.1);
    - "wwgan-authors": the same with the authors' code's quadratic form.

    `target` replaces the 1; `one_sided` uses max(0, . - target)^2 for the W2 losses; `eps`
    (B, 1, 1, 1) fixes the interpolation weights (drawn when None); `compiled`: see
    `gradient_norm`. Returns (penalty, norms detached); with `return_l2` also ||g||_2 per
    sample: their ratio is the scale s that makes lam act like lam * s * target.
    `lam_follows` ("intensity" | "unit-mass", L2 losses only): a control whose strength
    tracks WWGAN's, lam * s with s measured (detached) on this gradient at that density
    scale; the returned norms are then the W2 norms, so lam_eff reads as for WWGAN.
    """
    _check_image_batches(real, fake, loss)
    if eps is None:
        eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = eps * real.detach() + (1.0 - eps) * fake.detach()
    grad = critic_input_gradient(critic, x_hat)
    density = None
    if loss in ("wwgan", "wwgan-authors"):
        at = x_hat if density_at == "interpolate" else fake.detach()
        density = images_to_density(at, density_scale)
    norms = gradient_norm(grad, loss, density, alpha, neighborhood, gamma, compiled)
    reported = norms.detach()
    if lam_follows:  # the strength-tracking control: lam * s, s measured on this gradient
        if loss not in ("wgan-gp", "lp"):
            raise ValueError(f"lam_follows is for the L2 losses (wgan-gp, lp), not {loss!r}")
        density = images_to_density(x_hat, lam_follows)
        reported = safe_sqrt(laplacian_quadratic_form(grad.detach(), density, alpha, neighborhood))
        lam = lam * (reported / norms.detach()).mean()  # detached: a weight, not a loss term
    excess = norms - target
    if loss == "lp" or (one_sided and loss != "wgan-gp"):
        excess = excess.clamp_min(0.0)
    penalty = lam * excess.square().mean()
    if not return_l2:
        return penalty, reported
    return penalty, reported, safe_sqrt(grad.detach().square().sum(dim=(1, 2, 3)))


# ----------------------------------------------------------------------------------------
# training (Algorithm 1)
# ----------------------------------------------------------------------------------------


def make_optimizers(config: TrainConfig, generator: nn.Module, critic: nn.Module):
    adam = functools.partial(torch.optim.Adam, lr=config.lr, betas=(config.beta1, config.beta2))
    return adam(generator.parameters()), adam(critic.parameters())


def penalty_settings(config: TrainConfig) -> dict:
    """The keyword arguments of `gradient_penalty` that a TrainConfig sets."""
    names = "loss lam one_sided density_at alpha neighborhood gamma density_scale lam_follows"
    settings = {name: getattr(config, name) for name in names.split()}
    return dict(settings, target=config.lipschitz_target, compiled=config.compile)


def critic_objective(config: TrainConfig, critic, real, fake, eps=None):
    """The critic loss of Algorithm 1, line 7, averaged over the batch (line 9):
    mean D(fake) - mean D(real) + the gradient penalty. Returns (loss, detached terms).

    Under DDP `critic` is the wrapped module: both forwards and the penalty's double backward
    (create_graph=True) go through it, and DDP averages the final backward's weight gradients over
    ranks; `autograd.grad` w.r.t. the input fires no DDP hook, so each weight is reduced once."""
    scores = critic(torch.cat([real, fake]))
    critic_real, critic_fake = scores[: len(real)].mean(), scores[len(real) :].mean()
    penalty, norms, l2_norms = gradient_penalty(
        critic, real, fake, eps=eps, return_l2=True, **penalty_settings(config)
    )
    critic_loss = critic_fake - critic_real + penalty
    scale = (norms / l2_norms).mean()
    return critic_loss, dict(
        critic_loss=critic_loss.detach(),
        penalty=penalty.detach(),
        wasserstein=(critic_real - critic_fake).detach(),
        grad_norm=norms.mean(),
        grad_l2_norm=l2_norms.mean(),
        # s = constrained norm / ||g||_2: the penalty acts like WGAN-GP's with lam * s * t
        norm_scale=scale,
        lam_effective=config.lam * scale * config.lipschitz_target,
    )


def critic_step(
    config: TrainConfig, generator, critic, critic_opt, images, batch_size: int | None = None
):
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


def generator_step(
    config: TrainConfig, generator, critic, generator_opt, device, batch_size: int | None = None
):
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


# -- performance: CUDA backend flags and torch.compile --


@contextlib.contextmanager
def gpu_performance_flags(device: torch.device, tf32: bool = True, cudnn_benchmark: bool = True):
    """On CUDA: allow TF32 in matmuls and convolutions (the models; the quadratic form has
    neither and stays float32) and let cuDNN autotune, restoring the global flags on exit
    so that nothing leaks out of train(). CPU: nothing changes."""
    flags = (
        (torch.backends.cuda.matmul, "allow_tf32", tf32),
        (torch.backends.cudnn, "allow_tf32", tf32),
        (torch.backends.cudnn, "benchmark", cudnn_benchmark),
    )
    flags = flags if device.type == "cuda" else ()
    previous = [getattr(owner, name) for owner, name, _ in flags]
    for owner, name, value in flags:
        setattr(owner, name, value)
    try:
        yield
    finally:
        for (owner, name, _), value in zip(flags, previous):
            setattr(owner, name, value)


def step_models(config: TrainConfig, *modules: nn.Module) -> tuple:
    """The modules the hot loop calls: themselves, or with `config.compile` torch.compile'd
    views sharing their parameters (checkpoints keep saving the plain modules; a module passed
    twice gets one view). Pass only modules used first-order: the critic inside critic_step
    stays eager: its penalty is differentiated twice, and torch.compile has no double backward."""
    if not config.compile:
        return modules
    views = {module: torch.compile(module) for module in dict.fromkeys(modules)}
    return tuple(views[module] for module in modules)


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
    names = sorted(terms)
    values = torch.stack([terms[name].float().reshape(()) for name in names])
    dist.all_reduce(values)
    return dict(zip(names, (values / ctx.world_size).unbind()))


# -- the training loop --


@dataclass
class TrainState:
    """What train() returns and a checkpoint holds: both models, their optimizers, the
    number of finished generator iterations and the seconds spent in them."""

    generator: Generator
    critic: Critic
    generator_opt: torch.optim.Optimizer
    critic_opt: torch.optim.Optimizer
    iteration: int = 0
    train_seconds: float = 0.0


def train(config: TrainConfig, progress: bool = True) -> TrainState:
    """Algorithm 1, top to bottom: n_critic critic updates (lines 3-9), then one generator
    update (lines 11-12), for config.iterations generator iterations. Writes into config.out
    (see RunDir): config.json, metrics.jsonl, samples/, snapshots/, checkpoints, and with
    config.tensorboard event files. Resumes from OUT/checkpoint.pt when there is one: weights,
    optimizers, iteration and every RNG state, so on CPU a resumed run ends bit-identical to
    an uninterrupted one. A signal (STOP_SIGNALS) ends it after the current iteration with a
    checkpoint, raising TrainingInterrupted.

    Under `torchrun --nproc_per_node=N wwgan.py train ...` it runs DistributedDataParallel:
    each rank draws its own batch_size / N real images, latents and eps (its own RNG stream)
    and DDP averages the gradients, so a step equals one step on the whole batch; rank 0
    alone writes files. On CUDA the generator's BatchNorm becomes SyncBatchNorm (statistics
    over the whole batch, as in one process); on CPU (gloo, no SyncBatchNorm) each rank
    normalizes with its own share's statistics."""
    ctx, device = init_distributed(select_device(config.device))
    if config.batch_size % ctx.world_size:
        raise WWGANError(
            f"batch size {config.batch_size} does not split over {ctx.world_size} processes; "
            f"use a multiple of {ctx.world_size}"
        )
    batch = config.batch_size // ctx.world_size  # this process's share
    if batch < 2:  # BatchNorm in training mode needs two samples per process
        raise WWGANError(
            f"batch size {config.batch_size} gives {batch} per process; use {2 * ctx.world_size} or more"
        )
    run = RunDir(config, ctx, device)
    try:
        with run, gpu_performance_flags(device, config.tf32, config.cudnn_benchmark):
            # Data first: missing or wrong data leaves no run directory behind.
            images = load_dataset(config)
            expected = (config.channels, config.image_size, config.image_size)
            if tuple(images.shape[1:]) != expected:
                raise WWGANError(
                    f"dataset images are {tuple(images.shape[1:])}, the model expects {expected}"
                )
            images = images.to(device)

            # Models and optimizers, in the order that fixes the RNG streams.
            seed_everything(config.seed)
            generator, critic = build_models(config)
            if ctx.world_size > 1 and device.type == "cuda":
                generator = nn.SyncBatchNorm.convert_sync_batchnorm(generator)
            generator, critic = generator.to(device), critic.to(device)
            state = TrainState(generator, critic, *make_optimizers(config, generator, critic))
            # Sample grids use fixed latents from their own RNG, so the training stream
            # does not depend on whether and how often samples are drawn.
            fixed_z = torch.randn(
                64, config.latent_dim, generator=torch.Generator().manual_seed(config.seed + 1)
            ).to(device)

            run.resume(state)  # claims OUT; continues from its checkpoint if there is one

            # The modules the updates call: DDP averages the gradients of what is trained, and
            # step_models compiles only what is differentiated once (not the penalty's critic).
            generator_ddp, critic_ddp = generator, critic
            if ctx.world_size > 1:
                from torch.nn.parallel import DistributedDataParallel as DDP

                if ctx.rank > 0:  # weights come from rank 0; data, latents and eps must not
                    stream = np.random.SeedSequence([config.seed, ctx.rank, state.iteration])
                    seed_everything(int(stream.generate_state(1)[0]))
                ids = [device.index] if device.type == "cuda" else None
                generator_ddp, critic_ddp = (DDP(m, device_ids=ids) for m in (generator, critic))
            generator_fast, critic_fast = step_models(config, generator_ddp, critic)

            if ctx.is_main:
                params = [sum(p.numel() for p in m.parameters()) / 1e6 for m in (generator, critic)]
                click.echo(
                    f"wwgan train: {LOSS_NAMES[config.loss]} on {config.dataset} "
                    f"{config.image_size}x{config.image_size} ({len(images)} images), device "
                    f"{device}{f' x{ctx.world_size}' if ctx.world_size > 1 else ''}, width "
                    f"{config.width}: generator {params[0]:.2f}M + critic "
                    f"{params[1]:.2f}M parameters; iteration {state.iteration} of "
                    f"{config.iterations}, writing to {run.out}"
                )
            bar = tqdm(
                total=config.iterations,
                initial=state.iteration,
                dynamic_ncols=True,
                disable=not (progress and ctx.is_main),
                desc=f"{config.loss} {config.dataset}",
            )
            run.closes(bar)
            while state.iteration < config.iterations:
                run.stop_if_requested(state)  # after a checkpoint; sets run.checkpoint_due
                it = state.iteration + 1
                last = it == config.iterations
                logged = it == 1 or last or _is_interval(it, config.log_every)
                checkpointed = last or run.checkpoint_due
                checkpointed |= _is_interval(it, config.checkpoint_every)
                # Reading a loss on the host syncs with the device: on CUDA the NaN guard
                # runs only where the host reads losses anyway and before every checkpoint
                # (so that none holds NaN); on CPU at every step.
                check = device.type != "cuda" or config.nan_policy == "skip"
                check = check or logged or checkpointed
                started = time.perf_counter()

                for _ in range(config.n_critic):  # Algorithm 1, lines 2-9
                    terms = critic_step(
                        config, generator_fast, critic_ddp, state.critic_opt, images, batch
                    )
                    if check:
                        terms = _mean_over_ranks(terms, ctx)
                        if not step_is_finite(config, terms, it, run.checkpoint_path):
                            continue  # nan_policy "skip"
                    state.critic_opt.step()

                g_terms = generator_step(  # Algorithm 1, lines 11-12
                    config, generator_fast, critic_fast, state.generator_opt, device, batch
                )
                if check:
                    g_terms = _mean_over_ranks(g_terms, ctx)
                if not check or step_is_finite(config, g_terms, it, run.checkpoint_path):
                    state.generator_opt.step()
                terms |= g_terms

                state.train_seconds += time.perf_counter() - started
                state.iteration = it
                bar.update(1)
                if check:  # values already on the host: the bar shows them every time
                    bar.set_postfix(
                        d=f"{float(terms['critic_loss']):.3f}",
                        g=f"{float(terms['generator_loss']):.3f}",
                        s=f"{float(terms['norm_scale']):.2f}",
                        refresh=False,
                    )
                if not ctx.is_main:
                    continue
                if logged:  # iteration 1 too: the scale s at the start
                    run.log(state, terms)
                if _is_interval(it, config.sample_every) or last:
                    run.save_samples(generator, fixed_z, it)
                if _is_interval(it, config.snapshot_every):
                    run.save_snapshot(state)
                if checkpointed:
                    run.save_checkpoint(state)
    finally:
        if ctx.owns_group:
            dist.destroy_process_group()
    return state


def _is_interval(iteration: int, every: int) -> bool:
    return every > 0 and iteration % every == 0


def step_is_finite(config: TrainConfig, terms: dict, iteration: int, checkpoint: Path) -> bool:
    """The NaN/inf guard: True when the update may be applied. A non-finite loss term
    stops training ("stop", naming the term, the iteration and the checkpoint kept) or
    skips the update ("skip")."""
    bad = next((name for name, value in terms.items() if not torch.isfinite(value).all()), None)
    if bad is None:
        return True
    if config.nan_policy == "skip":
        return False
    kept = f"; last good checkpoint kept at {checkpoint}" if checkpoint.exists() else ""
    raise WWGANError(f"non-finite {bad} at iteration {iteration}{kept}")


# ----------------------------------------------------------------------------------------
# the run directory: lock, signals, checkpoints, metrics (what keeps a run safe)
# ----------------------------------------------------------------------------------------


class RunDir:
    """A training run's directory OUT and what keeps it safe; train() calls each method
    where it acts, and only rank 0 writes:

    - one trainer per directory: an flock on OUT/.lock (claim_run_dir);
    - within `with run:` STOP_SIGNALS only ask to stop (`stop_requests`);
      `stop_if_requested` then checkpoints and raises TrainingInterrupted (EXIT_STOPPED);
    - checkpoints written atomically, also every config.checkpoint_minutes of wall clock,
      the previous copy kept (`.prev.pt`) as a fallback; `resume` restores all they hold;
    - metrics.jsonl rows (the source of truth; with config.tensorboard also TensorBoard
      events), trimmed on resume to the checkpoint's iteration so no row is doubled;
    - under DDP, the ranks agree on when to stop and to checkpoint only every
      config.log_every iterations, where the loop reads losses back anyway: their
      all-reduce syncs with the device (a stop waits for that)."""

    def __init__(self, config: TrainConfig, ctx=None, device=None):
        self.config, self.ctx = config, ctx or DistributedContext()
        self.device = device or torch.device("cpu")
        self.out = Path(config.out)
        self.checkpoint_path = self.out / "checkpoint.pt"
        self.checkpoint_due = False  # by --checkpoint-minutes, agreed by all ranks
        self._checkpointed_at, self._checkpointed_time = -1, time.monotonic()
        self._stack = contextlib.ExitStack()
        self._signals: list[int] = []  # received, in order (stop_requests)
        self._metrics = self._tensorboard = None
        self._rotate = True  # whether checkpoint.pt is verified, so may become .prev.pt

    def __enter__(self) -> RunDir:
        self._signals = self._stack.enter_context(stop_requests())
        return self

    def __exit__(self, *exc_info) -> None:
        self._stack.close()  # files, the lock and the signal handlers, in reverse order

    def closes(self, resource) -> None:
        """Close `resource` (a progress bar, ...) when the run ends, however it ends."""
        self._stack.enter_context(resource)

    def resume(self, state: TrainState) -> None:
        """Claim OUT for this trainer (rank 0) and continue from OUT/checkpoint.pt (or its
        previous copy) when there is one: weights, optimizers, iteration, clock and every
        RNG state. Then write config.json and open metrics.jsonl, without the rows logged
        after the checkpoint (they will be redone)."""
        config, main, path = self.config, self.ctx.is_main, self.checkpoint_path
        if main:  # other ranks hold no lock: the files are rank 0's
            self._stack.enter_context(claim_run_dir(self.out))
            for stale in [*self.out.glob(".*.tmp-*"), *self.out.glob("snapshots/.*.tmp-*")]:
                # Left by a run killed mid-write (kill -9 skips its cleanup); a complete
                # first checkpoint whose rename the kill prevented is kept, never swept.
                if stale.name.startswith(f".{path.name}.tmp-") and not path.exists():
                    with contextlib.suppress(WWGANError):
                        load_checkpoint(stale)
                        os.replace(stale, path)
                        continue
                stale.unlink()
        self._checkpointed_time = time.monotonic()
        checkpoint, source = newest_checkpoint(path, map_location=self.device)
        # Only a verified file is rotated into the previous slot: after a fallback the
        # next checkpoint replaces the bad checkpoint.pt and keeps the good .prev.pt.
        self._rotate = source in (None, path)
        if checkpoint is not None:
            check_resumable(checkpoint, config, source)
            try:
                for name in ("generator", "critic", "generator_opt", "critic_opt"):
                    getattr(state, name).load_state_dict(checkpoint[name])
                state.iteration = self._checkpointed_at = int(checkpoint["iteration"])
                state.train_seconds = float(checkpoint["train_seconds"])
                set_rng_state(checkpoint["rng"])
            except (KeyError, ValueError, TypeError, RuntimeError) as exc:
                what = f"no {exc.args[0]!r} inside" if isinstance(exc, KeyError) else "malformed"
                raise WWGANError(
                    f"{source}: not a checkpoint this trainer can resume ({what})"
                ) from exc
        if not main:
            return
        _truncate_metrics(self.out / "metrics.jsonl", state.iteration)
        write_json(config.to_dict(), self.out / "config.json")
        (self.out / "samples").mkdir(exist_ok=True)
        if config.snapshot_every:
            (self.out / "snapshots").mkdir(exist_ok=True)
        self._metrics = self._stack.enter_context(open(self.out / "metrics.jsonl", "a"))  # noqa: SIM115 -- closed by the stack
        if config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise WWGANError(
                    "--tensorboard needs the tensorboard package: pip install tensorboard"
                ) from None
            # purge_step: events a killed run logged after its checkpoint are dropped
            self._tensorboard = self._stack.enter_context(
                SummaryWriter(str(self.out / "tensorboard"), purge_step=state.iteration + 1)
            )

    def stop_if_requested(self, state: TrainState) -> None:
        """Between two generator iterations: set `checkpoint_due` (--checkpoint-minutes)
        and, when a signal asked to stop, checkpoint the last finished iteration (unless
        that is the one on disk) and raise TrainingInterrupted. Weights gone non-finite in
        an iteration that the CUDA loop did not check are not saved."""
        minutes = self.config.checkpoint_minutes
        due = minutes > 0 and time.monotonic() - self._checkpointed_time >= 60 * minutes
        flags = [float(due), float(bool(self._signals))]
        if self.ctx.world_size > 1:
            if not _is_interval(state.iteration, self.config.log_every):
                self.checkpoint_due = False
                return
            tensor = torch.tensor(flags, device=self.device)
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
            flags = tensor.tolist()
        self.checkpoint_due = bool(flags[0])
        if not flags[1]:
            return
        name = (
            signal.Signals(self._signals[0]).name if self._signals else "a signal on another rank"
        )
        if self.ctx.is_main and self._checkpointed_at != state.iteration:
            self.save_checkpoint(state)  # refuses non-finite weights
        raise TrainingInterrupted(
            f"stopped by {name} after iteration {state.iteration} of {self.config.iterations}: "
            f"checkpoint {self.checkpoint_path}; rerun the same command to resume"
        )

    def log(self, state: TrainState, terms: dict) -> None:
        """One metrics.jsonl row: every loss term, the iteration and the training time;
        the same scalars as TensorBoard events when enabled."""
        row = {name: float(value) for name, value in terms.items()}
        if self._tensorboard is not None:
            for name, value in row.items():
                self._tensorboard.add_scalar(name, value, state.iteration)
        row.update(iteration=state.iteration, train_seconds=round(state.train_seconds, 4))
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()

    def save_samples(self, generator: nn.Module, z: torch.Tensor, iteration: int) -> None:
        """samples/iter_N.png: a grid of G(z) in eval mode, [-1, 1] mapped to [0, 1]."""
        import torchvision.utils

        was_training = generator.training
        generator.eval()
        with torch.no_grad():
            images = generator(z).float().cpu()
        generator.train(was_training)
        grid = torchvision.utils.make_grid(
            images, nrow=int(math.sqrt(len(z))) or 1, normalize=True, value_range=(-1, 1)
        )
        with atomic_write(self.out / "samples" / f"iter_{iteration:07d}.png") as f:
            torchvision.utils.save_image(grid, f, format="png")
        if self._tensorboard is not None:
            self._tensorboard.add_image("samples", grid, iteration)

    def save_snapshot(self, state: TrainState) -> None:
        """snapshots/snapshot_N.pt: both models, since critics are compared at matched
        generator FID, not at matched iterations (Figs. 4-5)."""
        snapshot = dict(
            generator=state.generator.state_dict(),
            critic=state.critic.state_dict(),
            iteration=state.iteration,
            train_seconds=state.train_seconds,
            config=self.config.to_dict(),
        )
        atomic_torch_save(snapshot, snapshot_path(self.out, state.iteration), verified=True)

    def save_checkpoint(self, state: TrainState) -> None:
        """OUT/checkpoint.pt, atomically and with its content digest, the previous one kept
        as checkpoint.prev.pt. Non-finite weights are never saved: training stops there
        (under --nan-policy skip too), the last good checkpoint kept."""
        modules = (state.generator, state.critic)
        if not all(torch.isfinite(p).all() for m in modules for p in m.parameters()):
            raise WWGANError(
                f"weights are non-finite at iteration {state.iteration}; last good "
                f"checkpoint kept at {self.checkpoint_path}"
            )
        if self._tensorboard is not None:
            self._tensorboard.flush()
        checkpoint = dict(
            generator=state.generator.state_dict(),
            critic=state.critic.state_dict(),
            generator_opt=state.generator_opt.state_dict(),
            critic_opt=state.critic_opt.state_dict(),
            iteration=state.iteration,
            train_seconds=state.train_seconds,
            rng=rng_state(),
            config=self.config.to_dict(),
            version=1,
        )
        atomic_torch_save(
            checkpoint, self.checkpoint_path, keep_previous=self._rotate, verified=True
        )
        self._rotate = True
        self._checkpointed_at, self._checkpointed_time = state.iteration, time.monotonic()


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Keep the metric rows up to `iteration` (the checkpoint resumed from; 0 for a fresh
    start): later rows will be redone. Rewritten atomically: a kill mid-trim loses nothing."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):  # torn by a kill, or blank
            if json.loads(line)["iteration"] <= iteration:
                kept.append(line + "\n")
    with atomic_write(path, "w") as f:
        f.writelines(kept)


# -- checkpoint files, the lock and stop signals --


def rng_state() -> dict:
    state = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # a CPU run never starts CUDA
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def previous_checkpoint_path(path: Path) -> Path:
    return Path(path).with_suffix(".prev.pt")


def content_digest(obj: Any) -> str:
    """sha256 over a checkpoint's content in a fixed order: every tensor's dtype, shape and
    bytes, every other value's repr. Stored in the file at save, recomputed at load, so a
    flipped bit anywhere in the weights, optimizer state, RNG state or config is seen."""
    digest = hashlib.sha256()

    def feed(value):
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().contiguous()
            digest.update(f"T{value.dtype}{tuple(value.shape)}".encode())
            digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, np.ndarray):
            digest.update(f"A{value.dtype}{value.shape}".encode() + value.tobytes())
        elif isinstance(value, dict):
            digest.update(f"D{len(value)}".encode())
            for key in sorted(value, key=repr):
                digest.update(repr(key).encode())
                feed(value[key])
        elif isinstance(value, (list, tuple)):
            digest.update(f"L{len(value)}".encode())
            for item in value:
                feed(item)
        else:
            digest.update(repr(value).encode())

    feed(obj)
    return digest.hexdigest()


def atomic_torch_save(
    obj: Any, path: Path, keep_previous: bool = False, verified: bool = False
) -> None:
    """torch.save through `atomic_write`; with `verified`, the dict gets its
    `content_digest` under "sha256" for `load_checkpoint` to check. A failed write (a
    full disk, or any error of torch's serialiser, which replaces the disk's) is a
    WWGANError naming the file and the space it needs; the previous file is intact."""
    path = Path(path)
    if verified:
        obj = {**obj, "sha256": content_digest(obj)}
    try:
        with atomic_write(path, keep_previous=keep_previous) as f:
            torch.save(obj, f)
    except (OSError, RuntimeError) as exc:
        if isinstance(exc, OSError):
            reason = exc.strerror or _reason(exc)
        else:  # torch's zip writer reports a full disk as a RuntimeError of its own
            reason = f"the disk is full or failing (torch.save: {_reason(exc)})"
        space = f"about {sum(t.nbytes for t in _tensors(obj)) / 2**20:.1f} MiB needed"
        with contextlib.suppress(OSError):
            space += f", {shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free there"
        raise WWGANError(
            f"could not write {path}: {reason} ({space}); the last complete file was kept"
        ) from exc


def _tensors(value: Any):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (dict, list, tuple)):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _tensors(item)


def claim_run_dir(out: Path):
    """Create OUT and return its lock, held while the returned file stays open: an
    exclusive flock on OUT/.lock, which records the holder's pid. A second trainer is
    refused in one line naming the holder, before it writes anything; the kernel drops the
    lock when its process dies, even by kill -9. A probe file written in OUT makes an
    unwritable --out fail at once with its name (root ignores permission bits, so only a
    real write tells) instead of at the first checkpoint."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock_file = open(out / ".lock", "a+")  # noqa: SIM115 -- held open for the whole run
    except OSError as exc:
        raise _unwritable(out, exc) from exc
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock_file.seek(0)
        holder = lock_file.read().strip() or "unknown"
        lock_file.close()
        raise WWGANError(
            f"run directory {out} is in use by another trainer (pid {holder}); wait for it "
            f"to finish or stop it (it checkpoints on SIGTERM), or pass another --out"
        ) from None
    probe = out / f".write-test.tmp-{os.getpid()}"  # a kill leaves it to the stale sweep
    try:
        lock_file.truncate(0)
        lock_file.write(f"{os.getpid()}\n")
        lock_file.flush()
        probe.touch()
        probe.unlink()
    except OSError as exc:
        lock_file.close()
        raise _unwritable(out, exc) from exc
    return lock_file


def _unwritable(out: Path, exc: OSError) -> WWGANError:
    return WWGANError(
        f"cannot write to the run directory {out} ({exc.strerror or exc}); pass a writable --out"
    )


# SIGTERM: SLURM preemption, scancel, time limits, Snakemake, docker stop, systemd;
# SIGINT: Ctrl-C; SIGUSR1: SLURM's pre-timeout signal (sbatch --signal=USR1@90).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
EXIT_STOPPED = 75  # EX_TEMPFAIL: stopped on a signal with a checkpoint; rerun to resume


class TrainingInterrupted(WWGANError):
    """Training stopped on a signal after writing a checkpoint (exit status EXIT_STOPPED)."""


@contextlib.contextmanager
def stop_requests():
    """Within the block, STOP_SIGNALS only append their number to the yielded list (the
    loop stops at the next iteration boundary, after a checkpoint); a second signal while
    that checkpoint is written changes nothing, the write being atomic. Outside the main
    thread (no signal handlers there) the list stays empty."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def note(signum, frame):
        if received:
            click.echo(f"wwgan: {signal.Signals(signum).name} again: still stopping", err=True)
        received.append(signum)

    previous = {sig: signal.signal(sig, note) for sig in STOP_SIGNALS}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Load a checkpoint or snapshot and verify it: its content digest when it has one (a
    file written since digests exist) and finite weights. Anything else is a one-line
    WWGANError naming the file."""
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many kinds for a torn or foreign file
        raise WWGANError(f"{path}: not a readable wwgan checkpoint ({type(exc).__name__})") from exc
    if not isinstance(checkpoint, dict) or "config" not in checkpoint:
        raise WWGANError(f"{path}: not a wwgan checkpoint (no config inside)")
    stored = checkpoint.pop("sha256", None)
    if stored is not None and stored != content_digest(checkpoint):
        raise WWGANError(f"{path}: content does not match its checksum (changed on disk)")
    for name in ("generator", "critic"):
        weights = checkpoint.get(name)
        if not isinstance(weights, dict):
            raise WWGANError(f"{path}: no {name} weights inside")
        if not all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()):
            raise WWGANError(f"{path}: the {name} weights are not finite")
    return checkpoint


def newest_checkpoint(path: Path, map_location="cpu") -> tuple[dict | None, Path | None]:
    """(checkpoint, the file it came from): `path` when it verifies, else its `.prev.pt`
    with a warning naming both, else (None, None) when neither exists. A bad file with no
    good fallback is a WWGANError."""
    path, previous = Path(path), previous_checkpoint_path(path)
    if path.exists():
        try:
            return load_checkpoint(path, map_location), path
        except WWGANError as exc:
            if not previous.exists():
                raise
            warn(f"{exc}; falling back to the previous checkpoint {previous}")
            return load_checkpoint(previous, map_location), previous
    if previous.exists():  # a copy of an older version only: path was never written
        warn(f"{path} missing; resuming from {previous}")
        return load_checkpoint(previous, map_location), previous
    return None, None


def load_latest_checkpoint(path: Path, map_location="cpu") -> dict | None:
    """The checkpoint of `newest_checkpoint`, or None."""
    return newest_checkpoint(path, map_location)[0]


def check_resumable(checkpoint: dict, config: TrainConfig, path: Path) -> None:
    saved = checkpoint["config"]
    changed = [k for k, v in config.identity().items() if k in saved and saved[k] != v]
    if changed:
        detail = ", ".join(f"{k}={saved[k]!r} (now {getattr(config, k)!r})" for k in changed)
        raise WWGANError(
            f"{path}: checkpoint was written by a different model or config: "
            f"{detail}; use another --out or the same settings"
        )


def read_run_config(run_dir: str | Path) -> dict | None:
    """RUN/config.json as a dict (written by `train`), or None when there is none."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        return None
    try:
        values = json.loads(path.read_text())
    except ValueError:
        raise WWGANError(f"{path}: not valid JSON") from None
    if not isinstance(values, dict):
        raise WWGANError(f"{path}: not a run's config (a JSON object)")
    return values


# ----------------------------------------------------------------------------------------
# finished runs: snapshots, weights, samples
# ----------------------------------------------------------------------------------------


def snapshot_path(run_dir: str | Path, iteration: int) -> Path:
    return Path(run_dir) / "snapshots" / f"snapshot_{iteration:07d}.pt"


def snapshot_paths(run_dir: str | Path) -> dict[int, Path]:
    """{iteration: RUN/snapshots/snapshot_XXXXXXX.pt}, in iteration order; any other file
    named snapshot_*.pt there is skipped with a warning."""
    found = {}
    for path in (Path(run_dir) / "snapshots").glob("snapshot_*.pt"):
        number = path.stem.removeprefix("snapshot_")
        if number.isdigit():
            found[int(number)] = path
        else:
            warn(f"{path}: not a snapshot name (snapshot_NNNNNNN.pt); skipped")
    return dict(sorted(found.items()))


def _models_from(checkpoint: dict, path: Path, device):
    if not isinstance(checkpoint["config"], dict):
        raise WWGANError(f"{path}: its config is not a dict of settings")
    config = TrainConfig.from_dict(checkpoint["config"])
    generator, critic = build_models(config)
    try:
        generator.load_state_dict(checkpoint["generator"])
        critic.load_state_dict(checkpoint["critic"])
    except (RuntimeError, KeyError) as exc:
        raise WWGANError(f"{path}: weights do not match the model its config describes") from exc
    return config, generator.to(device).eval(), critic.to(device).eval()


def load_models(path: str | Path, device="cpu") -> tuple[TrainConfig, Generator, Critic, dict]:
    """Generator and critic (eval mode) of a snapshot or a checkpoint file, and its
    {iteration, train_seconds}."""
    checkpoint = load_checkpoint(Path(path), map_location=device)
    info = dict(
        iteration=int(checkpoint["iteration"]), train_seconds=float(checkpoint["train_seconds"])
    )
    return (*_models_from(checkpoint, Path(path), device), info)


def load_run(run_dir: str | Path, device="cpu") -> tuple[TrainConfig, Generator, Critic]:
    """Generator and critic (eval mode) of a finished or interrupted run directory."""
    path = Path(run_dir) / "checkpoint.pt"
    checkpoint = load_latest_checkpoint(path, map_location=device)
    if checkpoint is None:
        raise WWGANError(f"{path}: no checkpoint; train first with `wwgan train --out {run_dir}`")
    return _models_from(checkpoint, path, device)


def images_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> uint8 [0, 255], the 8-bit image a PNG would hold."""
    return images.add(1.0).mul(127.5).round_().clamp_(0, 255).to(torch.uint8)


def generated_batches(
    generator: nn.Module, num_samples: int, batch_size: int = 100, seed: int = 0, device="cpu"
):
    """Yield uint8 batches of G(z), z ~ N(0, I) drawn from a CPU generator seeded with
    `seed` (the same latents on any device, and for every snapshot of a run), with the
    generator in eval mode (batch norm uses its running statistics) under no_grad."""
    rng = torch.Generator().manual_seed(seed)
    was_training = generator.training
    generator.eval()
    try:
        for start in range(0, num_samples, batch_size):
            z = torch.randn(
                min(batch_size, num_samples - start), generator.latent_dim, generator=rng
            )
            with torch.no_grad():
                yield images_to_uint8(generator(z.to(device)))
    finally:
        generator.train(was_training)


def sample_grid(
    generator: nn.Module, num: int = 64, seed: int = 0, device="cpu", padding: int = 2
) -> torch.Tensor:
    """A uint8 (C, H, W) grid of `num` samples, sqrt(num) per row, white padding
    (Supp. Figs. 1-2)."""
    import torchvision.utils

    images = torch.cat(list(generated_batches(generator, num, num, seed, device))).cpu()
    grid = torchvision.utils.make_grid(
        images.float() / 255, nrow=max(1, int(math.sqrt(num))), padding=padding, pad_value=1.0
    )
    return images_to_uint8(grid * 2 - 1)


def write_sample_grid(
    run_dir: str | Path, out: str | Path, num: int = 64, seed: int = 0, device="cpu"
) -> Path:
    """An 8x8 grid of samples of a run's latest generator, saved as PNG."""
    out = Path(out)
    image_format = Image.registered_extensions().get(out.suffix.lower())
    if image_format is None:
        raise WWGANError(f"{out}: unknown image file extension; use .png (or .jpg, .webp, ...)")
    _, generator, _ = load_run(run_dir, device)
    array = sample_grid(generator, num, seed, device).permute(1, 2, 0).numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as f:
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(f, image_format)
    return out


# ----------------------------------------------------------------------------------------
# CLI: train, download, samples (the evaluation steps are scripts/*.py, see the README)
# ----------------------------------------------------------------------------------------


def _sigterm_interrupts(signum, frame):
    raise KeyboardInterrupt(signum)


def run_cli(command: click.Command, argv=None, prog_name: str | None = None) -> None:
    """Run a click command as a console entry point: a WWGANError or an OSError becomes one
    `wwgan: error:` line on stderr and exit status 1; usage errors exit 2 (click's own
    message). Training stopped by a signal exits EXIT_STOPPED after its checkpoint; any
    other command stops on Ctrl-C or SIGTERM like on Ctrl-C (its atomic writes leave each
    file finished or absent) and exits 128 + the signal. Every script ends with this."""
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _sigterm_interrupts) if on_main_thread else None
    try:
        command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except TrainingInterrupted as exc:
        click.echo(f"wwgan: {exc}", err=True)
        sys.exit(EXIT_STOPPED)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:  # click wraps Ctrl-C in Abort
        cause = exc.__cause__ if isinstance(exc, click.exceptions.Abort) else exc
        args = getattr(cause, "args", ())
        signum = args[0] if args and isinstance(args[0], int) else signal.SIGINT
        name = signal.Signals(signum).name
        click.echo(f"wwgan: stopped by {name}; rerun the same command to resume", err=True)
        sys.exit(128 + signum)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except WWGANError as exc:
        click.echo(f"wwgan: error: {exc}", err=True)
        sys.exit(1)
    except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        memory = isinstance(exc, (MemoryError, torch.OutOfMemoryError))
        if not memory and "allocate" not in str(exc):  # allocating is the user's sizes, not a bug
            raise
        detail = _reason(exc) if str(exc) else "MemoryError"
        click.echo(
            f"wwgan: error: out of memory ({detail}); use a smaller --batch-size, --width "
            f"or number of images",
            err=True,
        )
        sys.exit(1)
    except OSError as exc:  # unwritable output folder, vanished file, ...
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"wwgan: error: {exc.strerror or exc}{where}", err=True)
        sys.exit(1)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


_CLICK_TYPES = {"int": int, "float": float, "str": str}


def train_options(command):
    """One `wwgan train` option per TrainConfig field, from the field's metadata (help,
    click type, flag name); fields with `cli=False` are left out. Options whose default
    depends on other flags (image size, learning rate) have none here."""
    derived = {"out", "image_size", "lr", "cache_dir"}  # resolved by TrainConfig: no default shown
    for f in reversed(dataclasses.fields(TrainConfig)):
        settings = dict(f.metadata)
        settings.pop("identity")
        if not settings.pop("cli", True):
            continue
        flag = settings.pop("flag", "--" + f.name.replace("_", "-"))
        settings.setdefault("type", None if f.type == "bool" else _CLICK_TYPES[f.type])
        settings.setdefault("show_default", f.name not in derived)
        if f.name not in derived:
            settings["default"] = f.default
        if f.type == "bool" and "/" not in flag:
            settings["is_flag"] = True
        command = click.option(flag, f.name, **settings)(command)
    return command


@click.group(
    context_settings=dict(help_option_names=["-h", "--help"]),
    epilog="Evaluation, figures and the results table: python scripts/NAME.py --help (fid, swd, "
    "image_w2, critic_probes, neighbours, motivating_example, figures, table); benchmarks: "
    "python benchmarks/bench.py --help.",
)
def cli():
    """wwgan: WGAN-GP, LP and the Wasserstein-2 (WWGAN) gradient penalty."""


@cli.command("train")
@train_options
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def train_command(neighborhood, no_progress, **options):
    """Train a generator and critic with Algorithm 1; rerun the same command to resume."""
    config = TrainConfig(**options, neighborhood=int(neighborhood))
    state = train(config, progress=not no_progress)
    click.echo(
        f"done: {state.iteration} iterations, {state.train_seconds:.1f} s of training, "
        f"checkpoint {Path(config.out) / 'checkpoint.pt'}"
    )


@cli.command("download")
@click.argument("name", type=click.Choice(["cifar10", "celeba"]))
@click.option(
    "--root",
    default="data",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder to put the dataset in (then pass it as --data-root).",
)
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Seconds without network progress before giving up.",
)
def download_command(name, root, timeout):
    """Fetch the official CIFAR-10 or CelebA files into ROOT and verify their md5."""
    path = download_dataset(name, root, timeout)
    click.echo(f"{name}: files verified; images at {path} (train with --data-root {root})")


@cli.command("samples")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PATH.png")
@click.option(
    "--num",
    default=64,
    show_default=True,
    type=click.IntRange(1, 10_000),  # 10,000 32x32 tiles: a 3,200 x 3,200 px PNG
    help="Samples (a square number gives a square grid).",
)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1))
@click.option("--device", default="auto", show_default=True)
def samples_command(run_dir, out, num, seed, device):
    """An 8x8 grid of samples of RUN's latest generator (eval mode), [-1, 1] -> [0, 255]."""
    refuse_overwriting_inputs([out], [run_dir])
    click.echo(f"wrote {write_sample_grid(run_dir, out, num, seed, select_device(device))}")


def main(argv=None) -> None:
    """Console entry point (`wwgan`, `python wwgan.py`, `python -m wwgan`)."""
    run_cli(cli, argv, prog_name="wwgan")


if __name__ == "__main__":
    main()
