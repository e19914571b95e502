"""The motivating example of Sec. 2.2 (Figs. 2-3), computed: two one-pixel images whose
distance under L2 jumps and stays constant, under W2 grows with the pixel distance.

    python scripts/motivating_example.py --size 32 --out motivating.csv
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import click
import torch

from image_w2 import image_w2_distance
from wwgan import atomic_write, run_cli


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
    rows = [
        dict(dx=dx, dy=dy, pixel_distance=math.hypot(dx, dy), l2=float(l2[n]), w2=float(w2[n]))
        for n, (dy, dx) in enumerate(moves)
    ]
    return sorted(rows, key=lambda r: (r["pixel_distance"], r["dy"]))


@click.command(
    context_settings=dict(help_option_names=["-h", "--help"]),
    epilog="\b\nExample:\n  python scripts/motivating_example.py --size 32 --out "
    "results/motivating_example.csv",
)
@click.option(
    "--size",
    default=32,
    show_default=True,
    type=click.IntRange(2, 128),
    help="Grid side in pixels (at most 128: W2 between size x size images grows as size^4).",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False))
def cli(size, out):
    """L2 and W2 distances between two one-pixel images (Figure 3, computed)."""
    rows = motivating_example(size)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "w") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    run_cli(cli)
