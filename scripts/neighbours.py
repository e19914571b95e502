"""Nearest neighbours of real images under the L2 and the W2 ground metrics (Sec. 1, Fig. 1).

python scripts/neighbours.py --dataset cifar10 --data-root DIR --out neighbours.json
"""

from __future__ import annotations

import base64
import time

import click
import numpy as np
import torch
from tqdm.auto import tqdm

from critic_probes import _real_images
from image_w2 import image_w2_distance
from wwgan import run_cli, select_device, write_json


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


def neighbours_experiment(
    dataset,
    data_root,
    num_queries=20,
    num_candidates=1000,
    image_size=32,
    seed=0,
    k=9,
    show=8,
    device="cpu",
    progress=False,
) -> dict:
    """Fig. 1: the k nearest candidates of each query under L2 (RGB pixel values, the WGAN
    ground metric) and under W2 (grayscale intensity histograms over the pixel grid), with
    the share of neighbours that have the query's class, for both metrics."""
    images, labels, indices = _real_images(
        dataset, data_root, image_size, num_queries + num_candidates, seed
    )
    queries, candidates = images[:num_queries], images[num_queries:]
    gray_q, gray_c = grayscale_histograms(queries), grayscale_histograms(candidates)
    device = select_device(device)
    gray_c_device = gray_c.to(device)
    w2 = torch.stack(
        [
            image_w2_distance(q.to(device), gray_c_device).cpu()
            for q in tqdm(gray_q, desc="W2 neighbours", disable=not progress)
        ]
    )
    metrics = {
        "l2": l2_distances(queries.double() / 255, candidates.double() / 255),
        "l2_gray": l2_distances(gray_q, gray_c),
        "w2": w2.double(),
    }
    payload = dict(
        experiment="neighbours",
        dataset=dataset,
        data_root=str(data_root),
        image_size=image_size,
        num_queries=num_queries,
        num_candidates=num_candidates,
        seed=seed,
        k=k,
        metric_notes=dict(
            l2="Euclidean distance between RGB images in [0, 1]",
            l2_gray="Euclidean distance between the grayscale images W2 sees",
            w2="image_w2_distance between grayscale images (mean of RGB) as unit-mass "
            "histograms over the pixel grid, in pixels",
        ),
        images="training images (fixed-seed random choice): queries and candidates disjoint",
        query_indices=indices[:num_queries].tolist(),
        candidate_indices=indices[num_queries:].tolist(),
        query_labels=None if labels is None else labels[:num_queries].tolist(),
    )
    for name, distances in metrics.items():
        order = nearest(distances, k)
        entry = dict(
            neighbours=order.tolist(), distances=torch.gather(distances, 1, order).tolist()
        )
        if labels is not None:
            share = class_share(labels[num_queries:][order], labels[:num_queries])
            entry.update(
                class_share=float(share.mean()),
                class_share_std=float(share.std()),
                class_share_per_query=share.tolist(),
                neighbour_labels=labels[num_queries:][order].tolist(),
            )
        payload[name] = entry
    shown = min(show, num_queries)
    payload["thumbnails"] = dict(
        shape=list(images.shape[1:]),
        encoding="base64 of uint8 C*H*W bytes",
        queries=[_thumbnail(queries[q]) for q in range(shown)],
        **{
            name: [
                [_thumbnail(candidates[j]) for j in payload[name]["neighbours"][q]]
                for q in range(shown)
            ]
            for name in ("l2", "w2")
        },
    )
    return payload


@click.command(context_settings=dict(help_option_names=["-h", "--help"]))
@click.option("--dataset", default="cifar10", show_default=True)
@click.option("--data-root", default="data", show_default=True, type=click.Path())
@click.option("--image-size", default=32, show_default=True, type=int)
@click.option("--num-queries", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--num-candidates", default=1000, show_default=True, type=click.IntRange(min=9))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--show",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="Queries kept as thumbnails for the figure.",
)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False))
def cli(out, **options):
    """The 9 nearest neighbours of real images under L2 and under W2 (Figure 1)."""
    started = time.perf_counter()
    payload = neighbours_experiment(**options, progress=True)
    write_json(payload, out)
    for name in ("l2", "l2_gray", "w2"):
        share = payload[name].get("class_share")
        if share is not None:
            click.echo(
                f"{name}: share of neighbours with the query's class {share:.3f} ± "
                f"{payload[name]['class_share_std']:.3f} over queries"
            )
    click.echo(f"wrote {out} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    run_cli(cli)
