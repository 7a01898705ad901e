"""The temporal Transformer, parameterized exactly as the official CLIP-FSAR ``Transformer_v1``.

State-dict keys match the official ones (``layers.0.0.norm.*``, ``layers.0.0.fn.to_q.weight``,
``layers.0.0.fn.to_out.0.*``, ``layers.0.1.net.0.*``, ``layers.0.1.net.3.*``), so official checkpoints map 1:1.
"""
from __future__ import annotations

import torch
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention: q, k, v without bias, output projection with bias, no positional encoding."""

    def __init__(self, dim: int, heads: int = 8, dropout: float = 0.2):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape  # (B, S, D)
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, h, d // h).transpose(1, 2)  # (B, H, S, D/H)

        q, k, v = split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x))
        attn = (q @ k.transpose(-1, -2) * self.scale).softmax(dim=-1)  # (B, H, S, S)
        out = (attn @ v).transpose(1, 2).reshape(b, n, d)  # (B, S, D)
        return self.to_out(out)


class PreNormAttention(nn.Module):
    """``x + fn(LN(x))``."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x)) + x


class FeedForward(nn.Module):
    """``Linear(D, hidden) -> GELU -> Dropout -> Linear(hidden, D) -> Dropout`` (no LayerNorm before it)."""

    def __init__(self, dim: int, hidden: int = 2048, dropout: float = 0.05):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TemporalTransformer(nn.Module):
    """``depth`` blocks of ``x1 = x + Attn(LN(x)); x2 = x1 + FFN(x1)`` on (B, S, D) sequences."""

    def __init__(self, dim: int, depth: int = 1, heads: int = 8, mlp_dim: int = 2048,
                 attn_dropout: float = 0.2, ffn_dropout: float = 0.05):
        super().__init__()
        self.layers = nn.ModuleList([
            nn.ModuleList([PreNormAttention(dim, Attention(dim, heads, attn_dropout)),
                           FeedForward(dim, mlp_dim, ffn_dropout)])
            for _ in range(depth)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:  # x: (B, S, D)
            x = attn(x)
            x = ff(x) + x
        return x
