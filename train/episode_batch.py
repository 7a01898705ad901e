"""Many training episodes in one pass over cached frame features (the frozen-backbone path).

With the image tower frozen, an episode is a few (T, D) feature rows; running E episodes one by one spends the
time in per-call overhead of tiny tensors. :class:`EpisodeBatchLoss` stacks them: one temporal-Transformer call
for every support sequence and one for every query, one OTAM dynamic program for both directions of every episode,
one backward. The math is :meth:`CLIPFSAR.forward`'s (DESIGN.md section 3) episode by episode:

    L = (1/E) * sum_e [ CE(-D_e, y_e) + alpha * CE(s cos(mean_t f, w), y_vt_e) ]

which, as every episode has the same number of queries and of clips, is the plain mean cross-entropy over all the
E episodes' queries plus alpha times the mean over all their clips (tests/train/test_episode_batch.py checks loss
and gradients against ``CLIPFSAR.forward`` on frames with a frozen tower).
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from .model import CLIPFSAR
from .otam import cosine_distances, otam


def batched_distances(model: CLIPFSAR, query: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """Bidirectional OTAM distances of E episodes at once: query (E, Q, T, D), prototypes (E, N, T, D) -> (E, Q, N).

    ``OTAM(d) + OTAM(d^T)`` as :func:`bidirectional_otam`, with both directions in one dynamic program (the frame
    distance matrix is T x T, so d and d^T stack).
    """
    d = cosine_distances(query, protos, model.cfg.cos_eps, model.cfg.cos_mode)  # (E, Q, N, T, T)
    both = otam(torch.stack([d, d.transpose(-1, -2)]), model.cfg.otam_lambda)  # (2, E, Q, N)
    return both[0] + both[1]


class EpisodeBatchLoss(nn.Module):
    """``L = L_fewshot + alpha * L_videotext`` averaged over E episodes of cached features, in one pass.

    Wraps the model (its parameters are the model's), so DistributedDataParallel can wrap this module instead.
    """

    def __init__(self, model: CLIPFSAR):
        super().__init__()
        self.model = model

    def forward(self, support: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor, text: torch.Tensor,
                vt_text: torch.Tensor, vt_labels: torch.Tensor, alpha: float = 0.0) -> Dict[str, torch.Tensor]:
        """E episodes at once.

        Args:
            support: (E, N, K, T, D) support features; query: (E, Q, T, D) query features.
            query_labels: (E, Q) episode class indices; text: (E, N, D) text features of each episode's classes.
            vt_text: (C, D) text features of all training classes; vt_labels: (E, N*K + Q) indices into it for
                support then query clips.
        Returns:
            ``loss`` (mean over episodes), ``loss_fewshot``, ``loss_videotext`` (detached), ``logits`` (E, Q, N).
        Raises:
            ValueError: shapes that do not agree.
        """
        m = self.model
        if support.ndim != 5 or query.ndim != 4:
            raise ValueError(f"support must be (E, N, K, T, D) and query (E, Q, T, D); got {tuple(support.shape)} "
                             f"and {tuple(query.shape)}")
        e, n, k, t, d = support.shape
        q = query.shape[1]
        if query.shape[0] != e or query.shape[2:] != (t, d) or text.shape != (e, n, d):
            raise ValueError(f"support {tuple(support.shape)}, query {tuple(query.shape)} and text "
                             f"{tuple(text.shape)} do not agree")
        protos = m.prototypes(support.flatten(0, 1), text.flatten(0, 1)).reshape(e, n, t, d)  # (E, N, T, D)
        queries = m.query_embeddings(query.flatten(0, 1)).reshape(e, q, t, d)  # (E, Q, T, D)
        logits = -batched_distances(m, queries, protos)  # (E, Q, N)
        loss_fs = F.cross_entropy(logits.flatten(0, 1).float(), query_labels.flatten())
        loss_vt = logits.new_zeros((), dtype=torch.float32)
        if vt_text is not None and alpha > 0:
            clips = torch.cat([support.flatten(1, 2), query], dim=1).flatten(0, 1)  # (E*(N*K+Q), T, D)
            loss_vt = F.cross_entropy(m.video_text_logits(clips, vt_text).float(), vt_labels.flatten())
        return {"loss": loss_fs + alpha * loss_vt, "loss_fewshot": loss_fs.detach(),
                "loss_videotext": loss_vt.detach(), "logits": logits.detach()}
