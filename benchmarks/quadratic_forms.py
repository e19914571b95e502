"""Two other evaluations of wwgan.laplacian_quadratic_form's g^T L~(rho) g, for the
benchmark (item 2) and the tests: Algorithm 2's fixed convolution kernels, and an
explicitly assembled sparse L(rho) times g. Training uses the slicing form of wwgan.py;
tests check that all three agree with a dense Def. 10 matrix.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F

from wwgan import NEIGHBOR_OFFSETS, _edge_slices, inverse_normalized_degree


@functools.lru_cache(maxsize=64)
def _algorithm2_kernels(
    channels: int,
    height: int,
    width: int,
    neighborhood: int,
    device: torch.device,
    dtype: torch.dtype,
):
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
    return (
        difference.repeat(channels, 1, 1, 1).to(**as_used),
        mean.repeat(channels, 1, 1, 1).to(**as_used),
        edge_weight.to(**as_used),
    )


@contextlib.contextmanager
def _cudnn_tf32(enabled: bool):
    """Set torch.backends.cudnn.allow_tf32 within the context, restoring it on exit."""
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous


def laplacian_quadratic_form_conv(
    grad: torch.Tensor, density: torch.Tensor, alpha: float = 1.0, neighborhood: int = 4
) -> torch.Tensor:
    """g^T L~(rho) g as Algorithm 2 computes it: H = K_Ok(grad), V = M_Ok(rho / d) by grouped
    convolutions, sum of H * H * V * w over pixels, relations and channels, plus the
    alpha 1 1^T term of Remark 3. Same value as `laplacian_quadratic_form`; (B, C, H, W) -> (B,)."""
    if grad.shape != density.shape or grad.dim() != 4:
        raise ValueError(
            f"grad and density must both be (B, C, H, W); got "
            f"{tuple(grad.shape)} and {tuple(density.shape)}"
        )
    batch, channels, height, width = grad.shape
    difference, mean, edge_weight = _algorithm2_kernels(
        channels, height, width, neighborhood, grad.device, grad.dtype
    )
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
def _laplacian_pattern(
    graphs: int, height: int, width: int, neighborhood: int, device: torch.device
):
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


def laplacian_quadratic_form_sparse(
    grad: torch.Tensor, density: torch.Tensor, alpha: float = 1.0, neighborhood: int = 4
) -> torch.Tensor:
    """g^T L~(rho) g with L(rho) = D^T Lambda(rho) D (Def. 10) assembled as one torch.sparse
    block-diagonal matrix (one block per sample and colour channel) and multiplied by g:
    off-diagonal entries -w_ij (p_i/d_i + p_j/d_j) / 2, diagonal entries their negated row
    sums. Same value as `laplacian_quadratic_form`; (B, C, H, W) -> (B,)."""
    if grad.shape != density.shape or grad.dim() != 4:
        raise ValueError(
            f"grad and density must both be (B, C, H, W); got "
            f"{tuple(grad.shape)} and {tuple(density.shape)}"
        )
    batch, channels, height, width = grad.shape
    graphs, n = batch * channels, height * width
    i, j, w, indices, order = _laplacian_pattern(graphs, height, width, neighborhood, grad.device)
    inv_d = inverse_normalized_degree(height, width, neighborhood, grad.device, grad.dtype)
    scaled_density = (density * inv_d).reshape(graphs, n)
    edge_mass = 0.5 * w.to(grad.dtype) * (scaled_density[:, i] + scaled_density[:, j])
    diagonal = (
        torch.zeros_like(scaled_density).index_add(1, i, edge_mass).index_add(1, j, edge_mass)
    )
    values = torch.cat([-edge_mass, -edge_mass, diagonal], dim=1)[:, order]
    laplacian = torch.sparse_coo_tensor(
        indices,
        values.reshape(-1),
        (graphs * n, graphs * n),
        is_coalesced=True,
        check_invariants=False,
    )
    flat = grad.reshape(graphs * n, 1)
    total = (flat * torch.sparse.mm(laplacian, flat)).view(batch, -1).sum(dim=1)
    if alpha:
        total = total + alpha * grad.sum(dim=(2, 3)).square().sum(dim=1)
    return total
