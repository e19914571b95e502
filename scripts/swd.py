"""The multi-scale sliced Wasserstein distance (SWD) of Karras et al. (2018, "Progressive
growing of GANs", Sec. 5), the weights-free companion of FID in the curves of fid.py.

    python scripts/swd.py REAL_FOLDER FAKE_FOLDER --image-size 32

Per level of a Laplacian pyramid (16x16 up to the image size): random 7x7 neighbourhoods,
each colour channel normalized to zero mean and unit variance over the set, then the
sliced Wasserstein-1 distance between the real and the fake descriptor sets, x 1e3.
"""

from __future__ import annotations

import click
import numpy as np
import torch
import torch.nn.functional as F

from wwgan import TrainConfig, WWGANError, load_dataset, run_cli


def image_batches(images: torch.Tensor, batch_size: int = 100):
    for start in range(0, len(images), batch_size):
        yield images[start : start + batch_size]


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


def _random_neighbourhoods(
    level: torch.Tensor, per_image: int, size: int, rng: torch.Generator
) -> torch.Tensor:
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


def swd_descriptors(
    images: torch.Tensor,
    per_image: int = 128,
    size: int = 7,
    seed: int = 0,
    batch_size: int = 256,
    device="cpu",
) -> list[torch.Tensor]:
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


def sliced_wasserstein(
    a: torch.Tensor, b: torch.Tensor, directions: torch.Tensor, chunk_elements: int = 2**26
) -> torch.Tensor:
    """Mean over unit `directions` (D, K) of the exact 1-D Wasserstein-1 distance between the
    projections of two equally sized point sets a, b (N, D): sort both and average |diff|."""
    if a.shape != b.shape:
        raise ValueError(f"point sets differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    step = max(1, chunk_elements // max(1, a.shape[0]))  # bound the N x K projection
    total = a.new_zeros(())
    for start in range(0, directions.shape[1], step):
        d = directions[:, start : start + step].T  # (k, D): sorting rows is the fast layout
        pa = torch.sort(d @ a.T, dim=1).values
        pb = torch.sort(d @ b.T, dim=1).values
        total = total + (pa - pb).abs().mean(dim=1).sum()
    return total / directions.shape[1]


def random_directions(dim: int, count: int, rng: torch.Generator) -> torch.Tensor:
    directions = torch.randn(dim, count, generator=rng)
    return directions / directions.norm(dim=0, keepdim=True)


def swd_from_descriptors(
    real: list[torch.Tensor],
    fake: list[torch.Tensor],
    repeats: int = 4,
    directions_per_repeat: int = 512,
    seed: int = 0,
) -> dict:
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
        distances = [
            sliced_wasserstein(
                a, b, random_directions(a.shape[1], directions_per_repeat, rng).to(a)
            )
            for _ in range(repeats)
        ]
        per_level.append(1e3 * torch.stack(distances).mean().item())
    return dict(levels=per_level, mean=float(np.mean(per_level)))


def sliced_wasserstein_distance(
    real: torch.Tensor, fake: torch.Tensor, seed: int = 0, device="cpu", **options
) -> dict:
    """Multi-scale SWD between two sets of uint8 images (N, C, H, W), the same size.
    {levels: [x1e3 per resolution of swd_resolutions(H)], mean}."""
    if real.shape[1:] != fake.shape[1:]:
        raise WWGANError(
            f"SWD compares images of one shape, got {tuple(real.shape[1:])} and "
            f"{tuple(fake.shape[1:])}"
        )
    desc_keys = ("per_image", "size", "batch_size")
    desc_opts = {k: options.pop(k) for k in desc_keys if k in options}
    # The same seed for both sets: the same patch positions (common random numbers), so
    # SWD(x, x) = 0 and SWD(a, b) = SWD(b, a) exactly.
    real_desc = swd_descriptors(real, seed=seed, device=device, **desc_opts)
    fake_desc = swd_descriptors(fake, seed=seed, device=device, **desc_opts)
    return swd_from_descriptors(real_desc, fake_desc, seed=seed, **options)


@click.command(
    context_settings=dict(help_option_names=["-h", "--help"]),
    epilog="\b\nExample:\n  python scripts/swd.py data/real_images data/generated_images "
    "--image-size 32 --num-images 1000",
)
@click.argument("real", type=click.Path(exists=True, file_okay=False))
@click.argument("fake", type=click.Path(exists=True, file_okay=False))
@click.option("--image-size", default=32, show_default=True, type=click.IntRange(min=16))
@click.option(
    "--num-images",
    default=4096,
    show_default=True,
    type=click.IntRange(min=1),
    help="At most this many images of each folder (a fixed-seed subset).",
)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1))
def cli(real, fake, image_size, num_images, seed):
    """Multi-scale SWD (x 1e3, per level and mean) between the images of two folders."""
    sets = [
        load_dataset(
            TrainConfig(
                dataset="folder",
                data_root=folder,
                cache_dir="",
                image_size=image_size,
                max_images=num_images,
            )
        )
        for folder in (real, fake)
    ]
    count = min(map(len, sets))
    result = sliced_wasserstein_distance(sets[0][:count], sets[1][:count], seed=seed)
    levels = ", ".join(f"{v:.2f}" for v in result["levels"])
    click.echo(f"SWD x 1e3 over {count} images each: mean {result['mean']:.2f} (levels {levels})")


if __name__ == "__main__":
    run_cli(cli)
