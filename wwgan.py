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
                terms = critic_step(config, generator, critic, critic_opt, images)
                if check and not _check_step(config, state, terms, ckpt_path):
                    continue
                critic_opt.step()
            g_terms = generator_step(config, generator, critic, generator_opt, device)
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
# updates (Thibault et al. 2021) and a fixed number of iterations, and the value returned
# is the transport cost <P, C> of the final entropic plan, not the entropic objective
# (whose entropy term would be a bias of order epsilon * log(HW)).

W2_EPSILON = 0.1           # final entropic regularization, in squared pixels
W2_HEADROOM = 600.0        # nats kept above float64 underflow (~708) in the shifted sums
W2_ANNEAL = 0.7            # epsilon ratio between annealing stages
W2_STAGE_ITERATIONS = 5    # Sinkhorn iterations per annealing stage
W2_FINAL_ITERATIONS = 200  # Sinkhorn iterations at the final epsilon
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


def _w2_schedule(height: int, width: int, epsilon: float) -> list[tuple[float, float]]:
    """(epsilon, omega) for every Sinkhorn iteration: geometric annealing from the squared
    grid diameter down to `epsilon`, then W2_FINAL_ITERATIONS at `epsilon`."""
    start = float((height - 1) ** 2 + (width - 1) ** 2)
    stages = max(0, math.ceil(math.log(start / epsilon) / math.log(1 / W2_ANNEAL)))
    schedule = [(start * W2_ANNEAL**k, W2_ANNEAL_OVERRELAXATION)
                for k in range(stages) for _ in range(W2_STAGE_ITERATIONS)]
    return schedule + [(epsilon, W2_OVERRELAXATION)] * W2_FINAL_ITERATIONS


def _w2_sinkhorn(a: torch.Tensor, b: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Squared W2 for each pair of unit-mass float64 histograms (B, H, W)."""
    height, width = a.shape[-2:]
    grid = torch.arange(max(height, width), device=a.device, dtype=torch.float64)
    cost = (grid[:, None] - grid[None, :]).square()
    cost_h, cost_w = cost[:height, :height], cost[:width, :width]
    log_a = torch.where(a > 0, a.log(), torch.full_like(a, _W2_LOG_ZERO))
    log_b = torch.where(b > 0, b.log(), torch.full_like(b, _W2_LOG_ZERO))
    f, g = torch.zeros_like(a), torch.zeros_like(b)
    floor = torch.zeros(a.shape[0], 1, 1, device=a.device, dtype=torch.float64)
    eps = floor
    for scheduled, omega in _w2_schedule(height, width, epsilon):
        eps = floor.clamp_min(scheduled)
        kernel_w = torch.exp(cost_w / -eps)
        kernel_h = kernel_w if height == width else torch.exp(cost_h / -eps)
        lse, room_f = _log_kernel_matmuls(g / eps + log_b, kernel_h, kernel_w)
        f = (1 - omega) * f - (omega * eps) * lse
        lse, room_g = _log_kernel_matmuls(f / eps + log_a, kernel_h, kernel_w)
        g = (1 - omega) * g - (omega * eps) * lse
        spread = -torch.minimum(room_f, room_g)[:, None, None] * eps  # D, in squared pixels
        floor = torch.maximum(floor, spread / W2_HEADROOM)
    # <P, C> with P = exp((f + g - C) / eps) a b and C = C_rows + C_cols, by the same matmuls.
    kernel_w = torch.exp(cost_w / -eps)
    kernel_h = kernel_w if height == width else torch.exp(cost_h / -eps)
    log_p = f / eps + log_a
    h = g / eps + log_b
    moved_rows, _ = _log_kernel_matmuls(h, kernel_h * cost_h, kernel_w)
    moved_cols, _ = _log_kernel_matmuls(h, kernel_h, kernel_w * cost_w)
    return (torch.exp(log_p + moved_rows) + torch.exp(log_p + moved_cols)).sum(dim=(-2, -1))


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

    Entropic, not exact: within 1% of the exact value (POT's ot.emd2) on real and on
    uniform-noise images of 16x16 and 32x32 (tests/test_experiments.py; typically 0.1-0.3%),
    and the entropic blur left at epsilon = 0.1 px^2 is ~1e-2 px (W2 of an image with
    itself). Harder cases, measured at 32x32: nearly identical images (W2 < 0.5 px) have
    not converged after the fixed iterations (relative error up to ~10%, absolute < 0.05
    px); images mostly black stop at a larger epsilon (up to ~2% too large). An all-zero
    image has no histogram: that is an error, as is a negative intensity. Pairs are solved
    `chunk_size` at a time (default: 128 on CPU, where small batches stay in cache; 8192
    on a GPU), all with the same fixed number of iterations.
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
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=1))
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


# (cli: benchmark commands)


# (cli: critic experiments)

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
    except KeyboardInterrupt:
        click.echo("wwgan: interrupted; rerun the same command to resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
