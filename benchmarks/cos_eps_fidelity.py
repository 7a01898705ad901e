"""How far our OTAM distances and video-text logits are from the official ``cos_sim(x, y, epsilon=0.01)``, with the
current default (``cos_mode="product"``, eps 0.01) and with the form used before 2026-11-30 (eps 1e-8 per norm).

Run: ``.venv/bin/python benchmarks/cos_eps_fidelity.py`` (CPU, seconds). Prints max abs differences of the
few-shot logits ``-D`` (bidirectional OTAM) and of the cosines, for unit-scale and small-norm random features.
"""
from __future__ import annotations

import torch

from clipfsar.train.otam import bidirectional_otam, cosine_distances


def official_cos_sim(x, y, epsilon=0.01):
    num = torch.matmul(x, y.transpose(-1, -2))
    den = torch.matmul(torch.norm(x, dim=-1).unsqueeze(-1), torch.norm(y, dim=-1).unsqueeze(-1).transpose(-1, -2))
    return num / (den + epsilon)


def main() -> None:
    g = torch.Generator().manual_seed(0)
    print(f"{'features':<22}{'D':>5}{'form':>10}{'max |cos diff|':>16}{'max |logit diff|':>18}")
    for scale, label in ((1.0, "unit scale (randn)"), (0.05, "small norms (0.05x)")):
        for d in (64, 512):
            q = scale * torch.randn(20, 8, d, generator=g, dtype=torch.float64)
            p = scale * torch.randn(5, 8, d, generator=g, dtype=torch.float64)
            ref_d = 1 - official_cos_sim(q[:, None], p[None])  # (20, 5, 8, 8)
            ref_logits = -bidirectional_otam(ref_d)
            for eps, mode in ((0.01, "product"), (1e-8, "norms")):
                ours = cosine_distances(q, p, eps, mode)
                logits = -bidirectional_otam(ours)
                print(f"{label:<22}{d:>5}{mode:>10}{(ours - ref_d).abs().max().item():>16.2e}"
                      f"{(logits - ref_logits).abs().max().item():>18.2e}")


if __name__ == "__main__":
    main()
