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
    "neighborhood", "gamma", "lr", "beta1", "beta2", "seed",
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

    # (config: performance fields)
    tf32: bool = True                  # CUDA only: TF32 tensor cores in the models' matmuls/convs
    cudnn_benchmark: bool = True       # CUDA only: cuDNN autotunes conv algorithms (fixed shapes)
    compile: bool = False              # torch.compile the generator and the generator step's critic

    def __post_init__(self):
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
            (self.width >= 2 ** (_num_stages(self.image_size) - 1) if self.image_size
             in SUPPORTED_IMAGE_SIZES else True, f"width {self.width} is too small"),
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
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise WWGANError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


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


def load_dataset(config: TrainConfig) -> torch.Tensor:
    """The training images of `config.dataset` as uint8 (N, C, H, W)."""
    if config.dataset == "shapes":
        n = config.max_images or 4096
        return make_shapes(n, config.image_size, seed=1234)
    # (data: other datasets)
    raise WWGANError(f"unknown dataset {config.dataset!r}")


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
                     alpha: float = 1.0, neighborhood: int = 4, gamma: float = 1.0):
    """The gradient penalty of `loss` at x_hat = eps * real + (1 - eps) * fake, eps ~ U[0, 1]
    per sample (uniform on the straight line between a real and a fake sample):

    - "wgan-gp": lam * (||g||_2 - 1)^2 (Gulrajani et al. 2017, Eq. 8);
    - "lp": lam * max(0, ||g||_2 - 1)^2 (Petzka et al. 2017);
    - "wwgan": lam * (sqrt(g^T L~(rho) g) - 1)^2 (Sec. 3.4), rho = (x + 1) / 2 taken at
      x_hat (Sec. 3.4, default) or at the fake sample (Algorithm 1, line 7);
    - "wwgan-authors": the same with the authors' code's quadratic form.

    `target` replaces the 1 (see README: the Def. 10 norm of a fresh critic is ~40x its
    L2 norm); `one_sided` uses max(0, . - target)^2 for the W2 losses.
    Returns (penalty, gradient_norms) with the norms detached, for logging.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake batches differ: {tuple(real.shape)} vs {tuple(fake.shape)}")
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


def critic_step(config: TrainConfig, generator, critic, critic_opt, images):
    """One critic update of Algorithm 1 (lines 3-9). Returns detached loss terms."""
    real = sample_batch(images, config.batch_size)
    z = torch.randn(config.batch_size, config.latent_dim, device=real.device)
    with torch.no_grad():
        fake = generator(z)
    scores = critic(torch.cat([real, fake]))
    critic_real, critic_fake = scores[: len(real)].mean(), scores[len(real):].mean()
    penalty, norms = gradient_penalty(
        critic, real, fake, config.loss, config.lam, config.lipschitz_target, config.one_sided,
        config.density_at, config.alpha, config.neighborhood, config.gamma)
    critic_loss = critic_fake - critic_real + penalty
    critic_opt.zero_grad(set_to_none=True)
    critic_loss.backward()
    return dict(critic_loss=critic_loss.detach(), penalty=penalty.detach(),
                wasserstein=(critic_real - critic_fake).detach(), grad_norm=norms.mean())


def generator_step(config: TrainConfig, generator, critic, generator_opt, device):
    """The generator update of Algorithm 1 (lines 11-12)."""
    z = torch.randn(config.batch_size, config.latent_dim, device=device)
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
    finally:
        if tmp.exists():
            tmp.unlink()


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


def train(config: TrainConfig, progress: bool = True) -> TrainState:
    """Algorithm 1. Resumes from OUT/checkpoint.pt when it exists; writes metrics.jsonl,
    samples/ and checkpoints into config.out."""
    out = Path(config.out)
    device = select_device(config.device)
    out.mkdir(parents=True, exist_ok=True)
    images = load_dataset(config)
    if tuple(images.shape[1:]) != (config.channels, config.image_size, config.image_size):
        raise WWGANError(f"dataset images are {tuple(images.shape[1:])}, the model expects "
                         f"{(config.channels, config.image_size, config.image_size)}")
    images = images.to(device)

    seed_everything(config.seed)
    generator, critic = build_models(config)
    generator, critic = generator.to(device), critic.to(device)
    generator_opt, critic_opt = make_optimizers(config, generator, critic)
    state = TrainState(generator, critic, generator_opt, critic_opt)
    fast_generator, fast_critic = step_models(config, generator, critic)
    # A fixed latent batch for sample grids, from its own generator: the training RNG
    # stream must not depend on whether and how often samples are drawn.
    fixed_z = torch.randn(64, config.latent_dim,
                          generator=torch.Generator().manual_seed(config.seed + 1)).to(device)

    ckpt_path = out / "checkpoint.pt"
    checkpoint = load_latest_checkpoint(ckpt_path, map_location=device)
    if checkpoint is not None:
        check_resumable(checkpoint, config, ckpt_path)
        generator.load_state_dict(checkpoint["generator"])
        critic.load_state_dict(checkpoint["critic"])
        generator_opt.load_state_dict(checkpoint["generator_opt"])
        critic_opt.load_state_dict(checkpoint["critic_opt"])
        state.iteration, state.train_seconds = checkpoint["iteration"], checkpoint["train_seconds"]
        set_rng_state(checkpoint["rng"])
        _truncate_metrics(out / "metrics.jsonl", state.iteration)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    (out / "samples").mkdir(exist_ok=True)
    if config.snapshot_every:
        (out / "snapshots").mkdir(exist_ok=True)

    from tqdm.auto import tqdm

    bar = tqdm(total=config.iterations, initial=state.iteration, disable=not progress,
               desc=f"{config.loss} {config.dataset}", dynamic_ncols=True)
    metrics_file = open(out / "metrics.jsonl", "a")
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
                terms = critic_step(config, fast_generator, critic, critic_opt, images)
                if check and not _check_step(config, state, terms, ckpt_path):
                    continue
                critic_opt.step()
            g_terms = generator_step(config, fast_generator, fast_critic, generator_opt, device)
            if not check or _check_step(config, state, g_terms, ckpt_path):
                generator_opt.step()
            state.train_seconds += time.perf_counter() - started
            state.iteration += 1
            bar.update(1)
            it = state.iteration
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
        metrics_file.close()
        bar.close()
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


# (figures: critic experiments)


# ----------------------------------------------------------------------------------------
# benchmarks
# ----------------------------------------------------------------------------------------
# (benchmarks)
# `wwgan bench` turns the performance claims into numbers measured side by side: every item
# runs its contenders in one process, interleaved in a shuffled order within each
# repetition (a busy machine slows all of them alike), and reports the median and the
# quartiles; ratios are taken per repetition, between contenders timed moments apart.
# CUDA is synchronized around every timing. Two clocks: "wall" (perf_counter) and "cpu"
# (this process's CPU time, all threads): on a CPU shared with other jobs, and with
# --threads 1, CPU time is what the computation costs, whatever else runs. On CUDA only
# wall time means anything. BENCHMARKS.md records the results.

BENCH_ITEMS = ("critic_step", "quadratic_form", "image_w2", "throughput")
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


def step_models(config: TrainConfig, generator: nn.Module, critic: nn.Module):
    """The (generator, critic) that the hot loop calls: the modules themselves, or with
    `config.compile` torch.compile'd views sharing their parameters (checkpoints keep
    saving the plain modules). The critic inside critic_step stays eager: its penalty is
    differentiated twice, and torch.compile (aot_autograd) does not support double
    backward; the compiled critic serves the generator step (first order only)."""
    if not config.compile:
        return generator, critic
    return torch.compile(generator), torch.compile(critic)


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
    torch.compile(laplacian_quadratic_form) runs too ("slicing_compiled": one fused
    kernel each way; its backward is first order, which is all training needs)."""
    rng = rng or random.Random(seed)
    contenders_used = dict(QUADRATIC_FORM_CONTENDERS)
    if compile:
        import warnings

        # Dynamo traces through the lru_cache of 1/d (a constant) and says so once per call site.
        warnings.filterwarnings("ignore", message=".*functools.lru_cache.*wrapped function")
        contenders_used["slicing_compiled"] = (torch.compile(laplacian_quadratic_form),
                                               "torch.compile of the slicing form")
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


def bench_image_w2(device: torch.device, size: int = 32, pairs: int = 16, repeats: int = 5,
                   warmup: int = 1, seed: int = 0, rng: random.Random | None = None) -> dict:
    """Item 3: `image_w2_distance(a, b)` (W2, not squared, between (N, S, S) unit-mass
    histograms, batched) per pair at S x S against POT's exact `ot.emd2` on the same pairs
    (ground cost: squared Euclidean distance between pixel centres one unit apart), with
    the relative error of W2. Target: >= 100x faster at <= 1% error."""
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
                               for name in ("image_w2_batched", "image_w2_one_pair_per_call")})
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


def bench_settings(device: torch.device, quick: bool = False, **overrides) -> dict:
    """The sizes each item runs at: the paper's (batch 64, width 512, 32x32 and 64x64) by
    default, with repetitions that finish in minutes on a CPU; `quick`: tiny, for tests."""
    cuda = device.type == "cuda"
    if quick:
        settings = dict(image_sizes=(16,), batch_size=4, width=16, repeats=2, warmup=1,
                        quadratic_repeats=2, quadratic_inner=1, w2_size=16, w2_pairs=2,
                        throughput_iterations=1, throughput_repeats=2, n_critic=2)
    else:
        settings = dict(image_sizes=(32, 64), batch_size=64, width=512,
                        repeats=30 if cuda else 5, warmup=5 if cuda else 1,
                        quadratic_repeats=50 if cuda else 20, quadratic_inner=20 if cuda else 5,
                        w2_size=32, w2_pairs=16, throughput_iterations=20 if cuda else 1,
                        throughput_repeats=10 if cuda else 3, n_critic=5)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "repeats" in overrides:
        settings.update(quadratic_repeats=overrides["repeats"],
                        throughput_repeats=overrides["repeats"])
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


def _write_json(obj: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def _fmt_seconds(spread: dict) -> str:
    def one(x):
        return f"{x * 1e3:.3g} ms" if x < 1 else f"{x:.3g} s"
    return f"{one(spread['median'])} [{one(spread['p25'])}, {one(spread['p75'])}]"


def _fmt_ratio(spread: dict | None) -> str:
    if not spread:
        return ""
    return f"{spread['median']:.3f} [{spread['p25']:.3f}, {spread['p75']:.3f}]"


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
        for clock in BENCH_CLOCKS:
            for name, spread in result[clock]["seconds_per_pair"].items():
                speedup = _fmt_ratio(result[clock]["speedup_over_emd2"].get(name))
                lines.append(f"  {clock:<5} {name:<28} {_fmt_seconds(spread):<32} "
                             f"{'speed-up ' + speedup if speedup else ''}")
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


# (cli: evaluation commands)


# (cli: benchmark commands)
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
@click.option("--compile", is_flag=True, help="torch.compile in the throughput item, as "
              "`train --compile` does.")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="torch CPU threads (default: torch's); 1 makes CPU time robust on a "
                   "shared machine.")
@click.option("--seed", default=0, show_default=True, type=int)
def bench_command(out, quick, device, items, image_sizes, compile, threads, seed, **overrides):
    """Measure the penalty's cost, the quadratic form, image W2 and training throughput,
    interleaved in one process; print tables and write OUT (JSON)."""
    if image_sizes:
        overrides["image_sizes"] = tuple(int(size) for size in image_sizes)
    run_benchmarks(device, quick, items or BENCH_ITEMS, compile, seed, out, threads,
                   echo=click.echo, **overrides)
    click.echo(f"wrote {out}")


# `train` options for the performance fields of TrainConfig (kept beside `bench`).
for _option in (
    click.option("--compile/--no-compile", default=False, show_default=True,
                 help="torch.compile the generator and the generator step's critic (the "
                      "penalty's double backward stays eager)."),
    click.option("--tf32/--no-tf32", default=True, show_default=True,
                 help="CUDA only: TF32 tensor cores in the models' matmuls and convolutions."),
    click.option("--cudnn-benchmark/--no-cudnn-benchmark", default=True, show_default=True,
                 help="CUDA only: let cuDNN autotune convolution algorithms."),
):
    train_command = _option(train_command)


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
    except KeyboardInterrupt:
        click.echo("wwgan: interrupted; rerun the same command to resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
