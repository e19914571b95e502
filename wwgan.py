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
    out.mkdir(parents=True, exist_ok=True)
    images = load_dataset(config)
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

    with open(path, newline="") as f:
        rows = [row for row in csv.DictReader(f) if _number(row.get("iteration")) is not None]
    if not rows:
        raise WWGANError(f"{path}: no rows with an iteration; rerun `wwgan fid-curve`")
    last = max(rows, key=lambda row: _number(row["iteration"]))
    config_path = path.parent / "config.json"
    run = json.loads(config_path.read_text()) if config_path.exists() else {}
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
            raise WWGANError(f"{path}: no such result file")
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
    except KeyboardInterrupt:
        click.echo("wwgan: interrupted; rerun the same command to resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
