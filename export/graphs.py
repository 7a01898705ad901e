"""The four exported graphs as small torch modules over a trained CLIPFSAR (the math stays in the model)."""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import nn

from clipfsar.train.model import CLIPFSAR, fuse


class ImageEncoder(nn.Module):
    """images (B, 3, H, W) float -> features (B, D)."""

    def __init__(self, model: CLIPFSAR):
        super().__init__()
        self.clip = model.clip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(images)


class TextEncoder(nn.Module):
    """tokens (N, L) int32 -> text features (N, D).

    Pools the end-of-text position with a one-hot mask instead of open_clip's ``argmax`` + gather, so the graph
    has no int64 ArgMax (onnxruntime and TensorRT both run it).
    """

    def __init__(self, model: CLIPFSAR, eot_token_id: int):
        super().__init__()
        self.clip = model.clip
        self.eot = int(eot_token_id)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        c = self.clip
        x = c.token_embedding(tokens) + c.positional_embedding  # (N, L, W)
        x = c.transformer(x, attn_mask=c.attn_mask)
        x = c.ln_final(x)
        mask = (tokens == self.eot).to(x.dtype).unsqueeze(-1)  # (N, L, 1)
        pooled = (x * mask).sum(dim=1)  # (N, W)
        proj = c.text_projection
        return proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj  # (N, D)


class SupportHead(nn.Module):
    """support (N, K, T, D), text (N, D) -> prototypes (N, T, D) (text-modulated, shots pooled)."""

    def __init__(self, model: CLIPFSAR):
        super().__init__()
        self.model = model

    def forward(self, support: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.model.prototypes(support, text)


class QueryHead(nn.Module):
    """query (B, T, D), prototypes (N, T, D), text (N, D) -> probs, p_fewshot, p_videotext, distances (B, N)."""

    def __init__(self, model: CLIPFSAR):
        super().__init__()
        self.model = model

    def forward(self, query: torch.Tensor, prototypes: torch.Tensor,
                text: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.model
        dist = m.distances(m.query_embeddings(query), prototypes)  # (B, N)
        out = fuse(dist, m.video_text_logits(query, text), m.cfg.beta, m.cfg.frames)
        return out["p"], out["p_fewshot"], out["p_videotext"], dist


# name -> (input names, output names, dynamic axes) -- the I/O contract written into the manifest
IO: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...], Dict[str, Dict[int, str]]]] = {
    "image_encoder": (("images",), ("features",), {"images": {0: "batch"}, "features": {0: "batch"}}),
    "text_encoder": (("tokens",), ("text_features",), {"tokens": {0: "classes"}, "text_features": {0: "classes"}}),
    "support_head": (("support", "text"), ("prototypes",),
                     {"support": {0: "classes", 1: "shots"}, "text": {0: "classes"}, "prototypes": {0: "classes"}}),
    "query_head": (("query", "prototypes", "text"), ("probs", "p_fewshot", "p_videotext", "distances"),
                   {"query": {0: "batch"}, "prototypes": {0: "classes"}, "text": {0: "classes"},
                    "probs": {0: "batch", 1: "classes"}, "p_fewshot": {0: "batch", 1: "classes"},
                    "p_videotext": {0: "batch", 1: "classes"}, "distances": {0: "batch", 1: "classes"}}),
}
