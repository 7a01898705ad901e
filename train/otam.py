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

    Args:
        dists: (..., L, M) frame distances, rows = query frames, columns = support frames.
        lam: soft-min temperature.
    Returns:
        (...) the cumulative distance C[L-1, M+1] of the zero-padded matrix.
    """
    L, M = dists.shape[-2:]
    d = F.pad(dists, (1, 1))  # (..., L, M + 2), one zero column on each side
    zero = d.new_zeros(d.shape[:-2])
    prev = [zero]
    for m in range(1, M + 2):  # row 0: a plain running sum
        prev.append(d[..., 0, m] + prev[-1])
    for l in range(1, L):
        row = [zero]  # C[l, 0] = 0
        for m in range(1, M + 2):
            preds = [prev[m - 1], row[m - 1]]
            if m == 1 or m == M + 1:  # first and last columns may also come from above
                preds.append(prev[m])
            row.append(d[..., l, m] + softmin(preds, lam))
        prev = row
    return prev[M + 1]


def bidirectional_otam(dists: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """``OTAM(d) + OTAM(d^T)`` for (..., L, M) distances -> (...)."""
    return otam(dists, lam) + otam(dists.transpose(-1, -2), lam)


def cosine_distances(query: torch.Tensor, protos: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Frame distances ``1 - cos``: query (..., Q, L, D), prototypes (..., N, M, D) -> (..., Q, N, L, M)."""
    q = query / (query.norm(dim=-1, keepdim=True) + eps)
    p = protos / (protos.norm(dim=-1, keepdim=True) + eps)
    return 1 - torch.einsum("...qld,...nmd->...qnlm", q, p)
