"""CLIP-FSAR: CLIP frame features, text-modulated prototypes through a temporal Transformer, OTAM matching.

The math follows DESIGN.md section 3. Shapes: T frames, D embedding dim, N classes, K shots, Q queries.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from .backbone import resolve_arch
from .otam import COS_MODES, bidirectional_otam, cosine, cosine_distances
from .temporal import TemporalTransformer


@dataclass
class ModelConfig:
    """Everything that defines a CLIP-FSAR model (stored in checkpoints and bundles).

    Attributes:
        arch: open_clip architecture (``ViT-B-16``, ``RN50``, ...) or ``tiny``.
        weights: open_clip pretrained tag or local weights file for the backbone; None = random init.
        frames: T, frames per clip.
        prompt: text prompt template with one ``{}`` for the class name.
        depth, heads, mlp_dim, attn_dropout, ffn_dropout: the temporal Transformer.
        otam_lambda: OTAM soft-min temperature.
        beta: inference fusion weight of the video-text branch (0 = pure few-shot branch, 0.9 official).
        text_in_prototype: append the class text token to support clips before the Transformer.
        shot_pooling: ``before`` (average K shots before the Transformer, official) or ``after``.
        cos_eps, cos_mode: the cosine of the frame distances and video-text logits. Default: the official
            ``cos_sim`` (eps 0.01 on the product of the norms). Checkpoints saved before these keys existed load
            with ``LEGACY_COSINE`` (eps 1e-8 on each norm), the math they were trained with.
    """
    arch: str = "ViT-B-16"
    weights: Optional[str] = None
    frames: int = 8
    prompt: str = "a photo of {}"
    depth: int = 1
    heads: int = 8
    mlp_dim: int = 2048
    attn_dropout: float = 0.2
    ffn_dropout: float = 0.05
    otam_lambda: float = 0.5
    beta: float = 0.0
    text_in_prototype: bool = True
    shot_pooling: str = "before"
    cos_eps: float = 0.01
    cos_mode: str = "product"

    def __post_init__(self) -> None:
        from clipfsar.runtime.base.errors import ConfigError
        if self.cos_mode not in COS_MODES:
            raise ConfigError(f"cos_mode must be one of {', '.join(COS_MODES)}, got '{self.cos_mode}'")
        if not 0.0 <= self.cos_eps < 1.0:
            raise ConfigError(f"cos_eps must be in [0, 1), got {self.cos_eps}")
        if self.shot_pooling not in ("before", "after"):
            raise ConfigError(f"shot_pooling must be 'before' or 'after', got '{self.shot_pooling}'")
        if self.frames < 1:
            raise ConfigError(f"frames must be >= 1, got {self.frames}")
        if not 0.0 <= self.beta <= 1.0:
            raise ConfigError(f"beta must be in [0, 1], got {self.beta}")
        if "{}" not in self.prompt:
            raise ConfigError(f"prompt must contain '{{}}' for the class name, got '{self.prompt}'")


# what checkpoints and bundles made before the cosine keys existed used (eps 1e-8 on each norm)
LEGACY_COSINE = {"cos_eps": 1e-8, "cos_mode": "norms"}


def fuse(dist: torch.Tensor, vt_logits: torch.Tensor, beta: float, frames: int) -> Dict[str, torch.Tensor]:
    """Inference fusion ``p = p_vt^beta * softmax((T - D) / T)^(1 - beta)``, renormalised over classes.

    Args:
        dist: (..., N) OTAM distances; vt_logits: (..., N) video-text logits over the same classes.
    Returns:
        ``distances``, ``p_fewshot``, ``p_videotext`` and the fused ``p`` (each (..., N)).
    """
    log_fs = torch.log_softmax((frames - dist) / frames, dim=-1)
    log_vt = torch.log_softmax(vt_logits, dim=-1)
    fused = torch.softmax(beta * log_vt + (1 - beta) * log_fs, dim=-1)
    return {"distances": dist, "p_fewshot": log_fs.exp(), "p_videotext": log_vt.exp(), "p": fused}


class CLIPFSAR(nn.Module):
    """The CLIP-FSAR model around an open_clip CLIP model (image encoder trainable, text encoder frozen).

    Example:
        >>> model, prep = create_model_and_transforms("tiny")
        >>> out = model.classify(support_feats, query_feats, model.text_features(["run", "jump"]))
    """

    def __init__(self, cfg: ModelConfig, clip: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.clip = clip
        self.embed_dim = int(clip.visual.output_dim)
        for name, p in clip.named_parameters():  # the text encoder (and CLIP's logit scale) stay frozen
            if not name.startswith("visual."):
                p.requires_grad_(False)
        self.temporal = TemporalTransformer(self.embed_dim, cfg.depth, cfg.heads, cfg.mlp_dim,
                                            cfg.attn_dropout, cfg.ffn_dropout)
        self.vt_scale = nn.Parameter(torch.ones(()))  # learnable video-text logit scale s
        self.tokenizer = open_clip.get_tokenizer(resolve_arch(cfg.arch))
        self._text_cache: Dict[str, torch.Tensor] = {}

    # ----- encoders -------------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "CLIPFSAR":
        super().train(mode)
        for name, module in self.clip.named_children():  # frozen text tower never enters training mode
            if name != "visual":
                module.eval()
        return self

    def load_state_dict(self, *args, **kwargs):  # new text weights invalidate cached text features
        self._text_cache.clear()
        return super().load_state_dict(*args, **kwargs)

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) preprocessed frames -> (B, T, D) unnormalised CLIP image features."""
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"frames must be (B, T, 3, H, W), got {tuple(frames.shape)}")
        b, t = frames.shape[:2]
        self._check_frames(t, "clip")
        feats = self.clip.encode_image(frames.flatten(0, 1))  # (B*T, D)
        return feats.reshape(b, t, -1)

    @torch.no_grad()
    def text_features(self, class_names: Sequence[str]) -> torch.Tensor:
        """Class names -> (N, D) frozen text features of the prompt, cached per name.

        Raises:
            ClassNameError: an empty name, a prompt longer than the text context (with the token count), or
                two names that tokenise identically (the encoder would give them the same feature).
        """
        from .class_names import ClassNameError, check_prompts
        unique = list(dict.fromkeys(class_names))
        if any(not str(n).strip() for n in unique):
            raise ClassNameError("a class name is empty")
        check_prompts(self.tokenizer, self.cfg.prompt, unique)
        missing = [n for n in unique if n not in self._text_cache]
        if missing:
            tokens = self.tokenizer([self.cfg.prompt.format(n) for n in missing])
            device = self.vt_scale.device
            feats = self.clip.encode_text(tokens.to(device)).float()  # (M, D)
            self._text_cache.update(zip(missing, feats))
        return torch.stack([self._text_cache[n] for n in class_names])

    # ----- heads ----------------------------------------------------------------------------------------------
    def _check_frames(self, t: int, what: str) -> None:
        if t != self.cfg.frames:
            raise ValueError(f"{what} has {t} frames; this model takes T = {self.cfg.frames} frames per clip")

    def prototypes(self, support: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Text-modulated prototypes: support (N, K, T, D) features, text (N, D) -> (N, T, D)."""
        if support.ndim != 4:
            raise ValueError(f"support features must be (N, K, T, D), got {tuple(support.shape)}")
        n, k, t, d = support.shape
        self._check_frames(t, "support")
        if text.shape != (n, d):
            raise ValueError(f"text features {tuple(text.shape)} do not match support (N={n}, D={d})")
        text = text.to(support.dtype)
        if self.cfg.shot_pooling == "before":
            seq = support.mean(dim=1)  # (N, T, D)
            if self.cfg.text_in_prototype:
                seq = torch.cat([seq, text[:, None]], dim=1)  # (N, T+1, D)
            return self.temporal(seq)[:, :t]  # (N, T, D)
        seq = support.flatten(0, 1)  # (N*K, T, D)
        if self.cfg.text_in_prototype:
            seq = torch.cat([seq, text.repeat_interleave(k, dim=0)[:, None]], dim=1)  # (N*K, T+1, D)
        return self.temporal(seq)[:, :t].reshape(n, k, t, d).mean(dim=1)  # (N, T, D)

    def query_embeddings(self, query: torch.Tensor) -> torch.Tensor:
        """Query (Q, T, D) features -> (Q, T, D) through the shared Transformer (no text token)."""
        if query.ndim != 3:
            raise ValueError(f"query features must be (Q, T, D), got {tuple(query.shape)}")
        self._check_frames(query.shape[1], "query")
        return self.temporal(query)

    def distances(self, query: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
        """Bidirectional OTAM distances: query (Q, T, D), prototypes (N, T, D) -> (Q, N)."""
        if query.shape[-1] != protos.shape[-1]:
            raise ValueError(f"query dim {query.shape[-1]} != prototype dim {protos.shape[-1]}")
        d = cosine_distances(query, protos, self.cfg.cos_eps, self.cfg.cos_mode)  # (Q, N, T, T)
        return bidirectional_otam(d, self.cfg.otam_lambda)

    def video_text_logits(self, feats: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """``s * cos(mean_t f, w_c)``: feats (..., B, T, D), text (..., C, D) -> (..., B, C)."""
        if self.cfg.cos_mode == "norms":  # the pre-2026-11-30 form, kept for older checkpoints
            v = F.normalize(feats.mean(dim=-2), dim=-1, eps=1e-8)
            w = F.normalize(text.to(feats.dtype), dim=-1, eps=1e-8)
            return self.vt_scale * v @ w.transpose(-1, -2)
        return self.vt_scale * cosine(feats.mean(dim=-2), text.to(feats.dtype), self.cfg.cos_eps, "product")

    def classify(self, support: torch.Tensor, query: torch.Tensor, text: torch.Tensor,
                 beta: Optional[float] = None) -> Dict[str, torch.Tensor]:
        """Classify query clips against an episode's support.

        Args:
            support: (N, K, T, D) support frame features.
            query: (Q, T, D) query frame features.
            text: (N, D) class text features.
            beta: fusion weight (default: the config's); 0 = the few-shot branch alone.
        Returns:
            ``distances`` (Q, N); ``p_fewshot`` = softmax((T - D) / T); ``p_videotext`` = softmax(s cos);
            ``p`` = the renormalised fusion ``p_vt^beta * p_fewshot^(1 - beta)`` (all (Q, N)).
        """
        if support.shape[-1] != query.shape[-1]:
            raise ValueError(f"support dim {support.shape[-1]} != query dim {query.shape[-1]}")
        beta = self.cfg.beta if beta is None else float(beta)
        dist = self.distances(self.query_embeddings(query), self.prototypes(support, text))  # (Q, N)
        return fuse(dist, self.video_text_logits(query, text), beta, self.cfg.frames)

    # ----- training -------------------------------------------------------------------------------------------
    def forward(self, support: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor,
                text: torch.Tensor, vt_text: Optional[torch.Tensor] = None,
                vt_labels: Optional[torch.Tensor] = None, alpha: float = 0.0) -> Dict[str, torch.Tensor]:
        """One training episode: ``L = L_fewshot + alpha * L_videotext``.

        Args:
            support: (N, K, T, 3, H, W) frames or (N, K, T, D) features.
            query: (Q, T, 3, H, W) frames or (Q, T, D) features.
            query_labels: (Q,) episode class indices.
            text: (N, D) text features of the episode classes.
            vt_text: (C, D) text features of all training classes (video-text objective).
            vt_labels: (N*K + Q,) indices into ``vt_text`` for support then query clips.
        Returns:
            ``loss``, ``loss_fewshot``, ``loss_videotext``, ``logits`` (Q, N) = -distances.
        """
        n, k = support.shape[:2]
        if support.ndim == 6:  # frames: encode support and query in one call
            feats = self.encode_frames(torch.cat([support.flatten(0, 1), query]))  # (N*K+Q, T, D)
            support_f, query_f = feats[:n * k].reshape(n, k, *feats.shape[1:]), feats[n * k:]
        else:
            support_f, query_f = support, query
        if support_f.shape[2:] != query_f.shape[1:]:
            raise ValueError(f"support clips {tuple(support_f.shape[2:])} and query clips "
                             f"{tuple(query_f.shape[1:])} differ in shape")
        logits = -self.distances(self.query_embeddings(query_f), self.prototypes(support_f, text))  # (Q, N)
        loss_fs = F.cross_entropy(logits.float(), query_labels)
        loss_vt = logits.new_zeros((), dtype=torch.float32)
        if vt_text is not None and alpha > 0:
            all_f = torch.cat([support_f.flatten(0, 1), query_f])  # (N*K+Q, T, D)
            loss_vt = F.cross_entropy(self.video_text_logits(all_f, vt_text).float(), vt_labels)
        return {"loss": loss_fs + alpha * loss_vt, "loss_fewshot": loss_fs.detach(),
                "loss_videotext": loss_vt.detach(), "logits": logits.detach()}

    def trainable_parameters(self) -> List[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]
