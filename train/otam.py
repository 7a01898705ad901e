"""OTAM temporal alignment (Cao et al. 2020), as the official CLIP-FSAR ``OTAM_cum_dist_v2``, with a stable soft-min."""
from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F


def softmin(values: List[torch.Tensor], lam: float) -> torch.Tensor:
    """``-lam * log(sum_i exp(-x_i / lam))``, computed stably (shifted by the minimum; finite in fp16/bf16)."""
    x = torch.stack(values, dim=0)  # (P, ...)
    low = x.amin(dim=0)  # (...)
    return low - lam * torch.log(torch.exp(-(x - low) / lam).sum(dim=0))


def otam(dists: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """One-directional OTAM cumulative distance.

    Computed over anti-diagonals of the zero-padded matrix (every cell of a diagonal depends only on the two
    diagonals before it), so the graph has L + M steps of vector work instead of L * (M + 2) scalar cells.

    Args:
        dists: (..., L, M) frame distances, rows = query frames, columns = support frames.
        lam: soft-min temperature.
    Returns:
        (...) the cumulative distance C[L-1, M+1] of the zero-padded matrix.
    """
    L, M = dists.shape[-2:]
    W = M + 2  # padded width: columns 0 .. M+1
    d = F.pad(dists, (1, 1)).flatten(-2)  # (..., L * W), one zero column on each side
    l = torch.arange(L)
    diagonals = range(L + W - 1)  # k = l + m
    m = torch.tensor([[k - i for i in range(L)] for k in diagonals])  # (K, L) column of cell (k, l)
    valid = (m >= 0) & (m < W)
    # d on the diagonals: skew[..., k, l] = d[..., l, k - l] (0 outside the matrix)
    index = torch.where(valid, l * W + m, torch.zeros_like(m))
    skew = d[..., index.flatten()].unflatten(-1, index.shape) * valid  # (..., K, L)
    first_row = l == 0  # C[0, m]: a plain running sum
    first_col = m == 0  # C[l, 0] = 0
    with_up = (m == 1) | (m == W - 1)  # first and last columns may also come from above
    big = torch.finfo(dists.dtype).max / 4  # excludes a predecessor from the soft-min without inf - inf

    def shift(x: torch.Tensor) -> torch.Tensor:  # x[..., l] -> x[..., l - 1] (l = 0 gets anything finite)
        return F.pad(x, (1, 0))[..., :L]

    # diagonal 0 is the single cell C[0, 0] = 0 (skew holds 0 there); before it, any finite values do (no valid
    # cell of diagonal 1 reads them)
    prev2 = prev1 = skew[..., 0, :]
    for k in diagonals[1:]:
        up = torch.where(with_up[k], shift(prev1), big)
        soft = softmin([shift(prev2), prev1, up], lam)
        cur = skew[..., k, :] + torch.where(first_row, prev1, soft)
        cur = torch.where(first_col[k] | ~valid[k], 0.0, cur)
        prev2, prev1 = prev1, cur
    return prev1[..., L - 1]


def bidirectional_otam(dists: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """``OTAM(d) + OTAM(d^T)`` for (..., L, M) distances -> (...)."""
    return otam(dists, lam) + otam(dists.transpose(-1, -2), lam)


COS_MODES = ("product", "norms")


def cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 0.01, mode: str = "product") -> torch.Tensor:
    """Cosine similarity of the last dims: a (..., L, D), b (..., M, D) -> (..., L, M).

    ``mode="product"`` is the official ``cos_sim(x, y, epsilon=0.01)``: ``a.b / (|a| |b| + eps)`` (eps on the
    product of the norms). ``mode="norms"`` is the form clip-fsar used before 2026-11-30 (``a / (|a| + eps)``
    dotted with ``b / (|b| + eps)``, eps 1e-8), kept so older checkpoints and bundles give what they gave.
    """
    if mode == "product":
        num = a @ b.transpose(-1, -2)  # (..., L, M)
        den = a.norm(dim=-1)[..., :, None] * b.norm(dim=-1)[..., None, :] + eps
        return num / den
    if mode == "norms":
        return (a / (a.norm(dim=-1, keepdim=True) + eps)) @ (b / (b.norm(dim=-1, keepdim=True) + eps)).transpose(-1, -2)
    raise ValueError(f"cosine mode must be one of {COS_MODES}, got '{mode}'")


def cosine_distances(query: torch.Tensor, protos: torch.Tensor, eps: float = 0.01,
                     mode: str = "product") -> torch.Tensor:
    """Frame distances ``1 - cos``: query (..., Q, L, D), prototypes (..., N, M, D) -> (..., Q, N, L, M).

    ``cos`` is :func:`cosine` (default: the official eps 0.01 on the product of the norms).
    """
    q = query.unsqueeze(-3)  # (..., Q, 1, L, D)
    p = protos.unsqueeze(-4)  # (..., 1, N, M, D)
    return 1 - cosine(q, p, eps, mode)
