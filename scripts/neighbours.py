"""Nearest neighbours of real images under the L2 and the W2 ground metrics (Sec. 1, Fig. 1).

python scripts/neighbours.py --dataset cifar10 --data-root DIR --out neighbours.json

Cost: one W2 distance per (query, candidate) pair, ~20 ms a pair at 32x32 on one CPU core
(BENCHMARKS.md), so 100 queries x 900 candidates take ~30 minutes; L2 is negligible. The
class share and the mean intensity of the 9 neighbours are reported per query, with
mean ± 95% t CI over the queries (table.py, the figure's titles, this command's output).
"""

from __future__ import annotations

import base64
import time

import click
import numpy as np
import torch
from tqdm.auto import tqdm

from critic_probes import probe_images
from image_w2 import image_w2_distance
from wwgan import DATASETS, TrainConfig, run_cli, select_device, write_json


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
    return base64.b64encode(image_uint8.contiguous().numpy().tobytes()).decode("ascii")


def _from_thumbnail(text: str, shape) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.uint8).reshape(shape)


METRICS = {
    "w2": "W2 (image_w2_distance, pixels) between the grayscale images as unit-mass "
    "histograms over the pixel grid",
    "l2": "L2 between the same unit-mass grayscale histograms (like for like with W2)",
    "l2_rgb": "L2 between the RGB images in [0, 1] (the WGAN ground metric)",
}


def unit_mass(histograms: torch.Tensor) -> torch.Tensor:
    """(N, H, W) nonnegative -> each image divided by its total mass (all-black stays 0)."""
    mass = histograms.sum(dim=(-2, -1), keepdim=True)
    return torch.where(mass > 0, histograms / mass.clamp_min(1e-300), histograms)


def neighbours_experiment(
    config: TrainConfig, num_queries=10, num_candidates=1000, seed=0, k=9, show=8,
    allow_training_images=False, device="cpu", progress=False,
) -> dict:  # fmt: skip
    """Fig. 1: the k nearest candidates of each query under W2 and under L2 on the same
    grayscale histograms (and L2 on RGB), on held-out images (`probe_images`), with per
    query: the share of neighbours in the query's class, and the neighbours' mean
    intensity against the query's and the candidates' ("L2 neighbours are predominantly
    white", Fig. 1)."""
    images, labels, indices, source = probe_images(
        config, num_queries + num_candidates, seed, allow_training_images
    )
    queries, candidates = images[:num_queries], images[num_queries:]
    gray_q, gray_c = grayscale_histograms(queries), grayscale_histograms(candidates)
    device = select_device(device)
    gray_c_device = gray_c.to(device)
    w2 = [image_w2_distance(q.to(device), gray_c_device).cpu()
          for q in tqdm(gray_q, desc="W2 neighbours", disable=not progress)]  # fmt: skip
    distances = {
        "w2": torch.stack(w2).double(),
        "l2": l2_distances(unit_mass(gray_q), unit_mass(gray_c)),
        "l2_rgb": l2_distances(queries.double() / 255, candidates.double() / 255),
    }
    brightness_c = gray_c.mean(dim=(-2, -1))
    payload = dict(
        experiment="neighbours", dataset=config.dataset, data_root=str(config.data_root),
        image_size=config.image_size, num_queries=num_queries, num_candidates=num_candidates,
        seed=seed, k=k, metric_notes=METRICS, images=source,
        query_indices=indices[:num_queries].tolist(),
        candidate_indices=indices[num_queries:].tolist(),
        query_labels=None if labels is None else labels[:num_queries].tolist(),
        query_brightness=gray_q.mean(dim=(-2, -1)).tolist(),
        candidate_brightness=float(brightness_c.mean()),
    )  # fmt: skip
    for name, values in distances.items():
        order = nearest(values, k)
        entry = dict(
            neighbours=order.tolist(), distances=torch.gather(values, 1, order).tolist(),
            brightness_per_query=brightness_c[order].mean(dim=1).tolist(),
        )  # fmt: skip
        if labels is not None:
            share = class_share(labels[num_queries:][order], labels[:num_queries])
            entry.update(class_share_per_query=share.tolist(),
                         neighbour_labels=labels[num_queries:][order].tolist())  # fmt: skip
        payload[name] = entry
    shown = min(show, num_queries)
    payload["thumbnails"] = dict(
        shape=list(images.shape[1:]), encoding="base64 of uint8 C*H*W bytes",
        queries=[_thumbnail(queries[q]) for q in range(shown)],
        **{name: [[_thumbnail(candidates[j]) for j in payload[name]["neighbours"][q]]
                  for q in range(shown)] for name in METRICS},
    )  # fmt: skip
    return payload


def _mean_ci(values) -> str:
    from table import mean_ci95

    mean, half = mean_ci95(values)
    return f"{mean:.3f}" if half is None else f"{mean:.3f} ± {half:.3f}"


@click.command(
    context_settings=dict(help_option_names=["-h", "--help"]),
    epilog="\b\nExample:\n  python scripts/neighbours.py --dataset cifar10 --data-root "
    "data/cifar10 --num-queries 10 --out results/neighbours.json",
)
@click.option("--dataset", default="cifar10", show_default=True, type=click.Choice(DATASETS))
@click.option("--data-root", default="data", show_default=True, type=click.Path())
@click.option("--image-size", default=32, show_default=True, type=int)
@click.option(
    "--holdout", default=0, show_default=True, type=click.IntRange(0, 10**8),
    help="The slice the runs held out (wwgan train --holdout), used when the data has no "
         "test split.",
)  # fmt: skip
@click.option(
    "--cache-dir",
    default=TrainConfig().cache_dir,
    show_default=True,
    envvar="WWGAN_CACHE_DIR",
    show_envvar=True,
    help="Where decoded image folders are cached, as `wwgan train --cache-dir` ('' disables).",
)
@click.option("--allow-training-images", is_flag=True,
              help="Use training images when there is no test split and no held-out slice.")  # fmt: skip
@click.option("--num-queries", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--num-candidates", default=1000, show_default=True, type=click.IntRange(min=9))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1))
@click.option(
    "--show", default=8, show_default=True, type=click.IntRange(min=1),
    help="Queries kept as thumbnails for the figure.",
)  # fmt: skip
@click.option(
    "--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N | mps"
)
@click.option("--out", required=True, type=click.Path(dir_okay=False))
def cli(out, dataset, data_root, image_size, holdout, cache_dir, **options):
    """The 9 nearest neighbours of held-out real images under W2 and L2 (Figure 1)."""
    started = time.perf_counter()
    config = TrainConfig(dataset=dataset, data_root=data_root, image_size=image_size,
                         holdout=holdout, cache_dir=cache_dir)  # fmt: skip
    payload = neighbours_experiment(config, **options, progress=True)
    write_json(payload, out)
    for name in METRICS:
        shares = payload[name].get("class_share_per_query")
        share = f"class share {_mean_ci(shares)}, " if shares else ""
        click.echo(f"{name}: {share}neighbour brightness "
                   f"{_mean_ci(payload[name]['brightness_per_query'])} (candidates "
                   f"{payload['candidate_brightness']:.3f}), mean ± 95% CI over "
                   f"{payload['num_queries']} queries")  # fmt: skip
    click.echo(f"wrote {out} ({payload['images']}; {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    run_cli(cli)
