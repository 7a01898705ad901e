"""Calibrated class probabilities, zero-shot scores, the "unknown" threshold and open-set metrics (numpy only).

Users read one probability per class, computed from per-class logits:

* a few-shot class c (``shots > 0``): ``z_c = -D_c / tau``, with ``D`` the bidirectional OTAM distance and
  ``tau`` a temperature fitted at export on held-out validation episodes (minimum negative log-likelihood). The
  paper's ``softmax((T - D) / T)`` is the same family with ``tau = T`` (8), which is why it is nearly flat; it stays
  the few-shot factor of the ``beta`` fusion (``probs`` of the query head);
* a zero-shot class c (``shots == 0``, a name only): ``z_c = a * cos(mean_t f_q, w_c) + b``, the video-text
  branch mapped into the same logit scale by ``a``, ``b`` fitted on validation episodes in which one of the
  classes has no support clip (its logit competes with the calibrated few-shot logits of the others);

then ``p = softmax(z)`` over every enrolled class. "unknown" is a threshold on one rejection score (``max_prob``:
the largest ``p``; ``neg_min_distance``: ``-min_c D_c``; ``max_fused``: the largest paper probability), fitted on
clips of classes that are not enrolled to a target false-accept rate (:func:`threshold_at_far`).

Example:
    >>> p = calibrated_probs(distances, cos, shots, {"temperature": 0.5, "zero_shot": {"a": 20.0, "b": -3.0}})
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def video_text_cos(query: np.ndarray, text: np.ndarray) -> np.ndarray:
    """``cos(mean_t f_q, w_c)``: query (B, T, D) frame features, text (N, D) -> (B, N) (eps 1e-8, as the model)."""
    v = query.mean(axis=1)
    v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-8)
    w = text / np.maximum(np.linalg.norm(text, axis=-1, keepdims=True), 1e-8)
    return v @ w.T


def class_logits(distances: np.ndarray, cos: np.ndarray, shots: np.ndarray, calibration: Dict) -> np.ndarray:
    """(B, N) calibrated logits: ``-D / tau`` for few-shot classes, ``a cos + b`` for zero-shot ones."""
    tau = float(calibration.get("temperature", 1.0))
    z = -np.asarray(distances, np.float64) / tau
    zero = np.asarray(shots) == 0
    if zero.any():
        zs = calibration.get("zero_shot") or {"a": 1.0, "b": 0.0}
        z[..., zero] = float(zs["a"]) * np.asarray(cos, np.float64)[..., zero] + float(zs["b"])
    return z


def calibrated_probs(distances: np.ndarray, cos: np.ndarray, shots: np.ndarray, calibration: Dict) -> np.ndarray:
    """(B, N) calibrated class probabilities (see the module docstring)."""
    return softmax(class_logits(distances, cos, shots, calibration))


# ----- fitting --------------------------------------------------------------------------------------------------
def _nll(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(distances: np.ndarray, labels: np.ndarray) -> float:
    """The temperature ``tau`` minimising the NLL of ``softmax(-D / tau)`` (a 1-D search on ``log tau``).

    Args:
        distances: (M, N) OTAM distances of M validation queries to N classes; labels: (M,) true columns.
    Returns:
        tau > 0 (searched in [1e-3, 1e3]).
    """
    d = np.asarray(distances, np.float64)
    labels = np.asarray(labels)
    lo, hi = np.log(1e-3), np.log(1e3)
    for _ in range(3):  # a coarse grid, then two finer ones around the best point
        grid = np.linspace(lo, hi, 61)
        losses = [_nll(-d / np.exp(g), labels) for g in grid]
        i = int(np.argmin(losses))
        step = grid[1] - grid[0]
        lo, hi = grid[max(i - 1, 0)] - step, grid[min(i + 1, 60)] + step
    return float(np.exp(grid[i]))


def fit_zero_shot(few_logits: np.ndarray, cos: np.ndarray, zero_col: np.ndarray, labels: np.ndarray,
                  steps: int = 500) -> Dict[str, float]:
    """Fit ``a, b`` of the zero-shot logit ``a cos + b`` by minimum NLL (Newton's method on 2 parameters).

    Args:
        few_logits: (M, N) calibrated few-shot logits ``-D / tau`` (the zero-shot column's value is ignored).
        cos: (M, N) video-text cosines. zero_col: (M,) which column is the zero-shot class in each row.
        labels: (M,) true columns.
    Returns:
        ``{"a": a, "b": b}``.
    """
    m = np.arange(len(labels))
    z = np.asarray(few_logits, np.float64).copy()
    c = np.asarray(cos, np.float64)[m, zero_col]
    others = np.ones_like(z, bool)
    others[m, zero_col] = False
    theta = np.array([1.0, float(z[others].mean())])  # start: the zero-shot logit at the others' mean
    y = (labels == zero_col).astype(np.float64)

    def nll(th: np.ndarray) -> float:
        z[m, zero_col] = th[0] * c + th[1]
        return _nll(z, labels)

    loss = nll(theta)
    for _ in range(steps):
        z[m, zero_col] = theta[0] * c + theta[1]
        p = softmax(z)[m, zero_col]
        g = p - y  # d NLL / d z_zero, per row
        grad = np.array([np.mean(g * c), np.mean(g)])
        w = p * (1 - p)
        hess = np.array([[np.mean(w * c * c), np.mean(w * c)], [np.mean(w * c), np.mean(w)]]) + 1e-6 * np.eye(2)
        delta = np.linalg.solve(hess, grad)
        step = 1.0
        while step > 1e-6 and nll(theta - step * delta) > loss:  # damped Newton: never increase the NLL
            step /= 2
        if step <= 1e-6:
            break
        theta = theta - step * delta
        new = nll(theta)
        if loss - new < 1e-10:
            loss = new
            break
        loss = new
    return {"a": float(theta[0]), "b": float(theta[1])}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE (Guo et al. 2017): ``sum_b |B_b|/M * |acc(B_b) - conf(B_b)|`` over equal-width confidence bins.

    Args:
        probs: (M, N) class probabilities; labels: (M,) true columns.
    """
    conf = probs.max(axis=-1)
    correct = (probs.argmax(axis=-1) == labels).astype(np.float64)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return float(ece)


# ----- open set -------------------------------------------------------------------------------------------------
def rejection_scores(probs: np.ndarray, distances: np.ndarray, fused: np.ndarray) -> Dict[str, np.ndarray]:
    """Every candidate rejection score, higher = more confident the query is known: (B,) each."""
    return {"max_prob": probs.max(axis=-1), "neg_min_distance": -distances.min(axis=-1),
            "max_fused": fused.max(axis=-1)}


def threshold_at_far(unknown_scores: np.ndarray, far: float) -> float:
    """The smallest threshold accepting (score >= threshold) at most ``far`` of the unknown clips' scores.

    Raises:
        ValueError: ``far`` outside (0, 1) or no scores.
    """
    s = np.sort(np.asarray(unknown_scores, np.float64))
    if not 0 < far < 1:
        raise ValueError(f"false-accept rate must be in (0, 1), got {far}")
    if len(s) == 0:
        raise ValueError("no scores of unknown clips to fit a threshold on")
    allowed = int(np.floor(far * len(s)))  # unknowns that may pass
    if allowed == 0:
        return float(np.nextafter(s[-1], np.inf))
    return float(np.nextafter(s[len(s) - allowed - 1], np.inf))


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """Area under the ROC curve of known (positive) vs unknown scores (Mann-Whitney U, ties count half)."""
    k, u = np.asarray(known, np.float64), np.asarray(unknown, np.float64)
    allv = np.concatenate([k, u])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    # average ranks for ties
    i = 0
    while i < len(sorted_v):
        j = i
        while j + 1 < len(sorted_v) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u_stat = ranks[:len(k)].sum() - len(k) * (len(k) + 1) / 2
    return float(u_stat / (len(k) * len(u)))


def oscr(known: np.ndarray, known_correct: np.ndarray, unknown: np.ndarray) -> float:
    """Open-Set Classification Rate (Dhamija et al. 2018): area under the curve of the correct classification rate
    of known queries (correct and accepted) against the false-positive rate of unknown ones, over thresholds."""
    k = np.asarray(known, np.float64)
    ok = np.asarray(known_correct, bool)
    u = np.asarray(unknown, np.float64)
    thresholds = np.unique(np.concatenate([k, u]))[::-1]
    ccr = [0.0] + [float(((k >= t) & ok).mean()) for t in thresholds]
    fpr = [0.0] + [float((u >= t).mean()) for t in thresholds]
    ccr.append(float(ok.mean()))
    fpr.append(1.0)
    return float(np.trapezoid(ccr, fpr) if hasattr(np, "trapezoid") else np.trapz(ccr, fpr))


def fit_report(tau: float, distances: np.ndarray, labels: np.ndarray, frames: int,
               zero_shot: Optional[Dict[str, float]] = None, episodes: int = 0) -> Dict:
    """The manifest's ``calibration`` entry: ``tau``, and the ECE / NLL of the paper's ``softmax(-D / T)`` and of
    the calibrated ``softmax(-D / tau)`` on the fitting queries (D: (M, N) distances, labels: (M,))."""
    paper, cal = -distances / frames, -distances / tau
    out = {"temperature": float(tau), "fitted_on": {"queries": int(len(labels)), "episodes": int(episodes)},
           "ece_paper": expected_calibration_error(softmax(paper), labels),
           "ece_calibrated": expected_calibration_error(softmax(cal), labels),
           "nll_paper": _nll(paper, labels), "nll_calibrated": _nll(cal, labels)}
    if zero_shot is not None:
        out["zero_shot"] = zero_shot
    return out


def runtime_calibration(calibration: Dict, shots: np.ndarray, frames: int, vt_scale: float) -> Dict:
    """The calibration the runtime applies: the manifest's ``calibration`` entry, or, when it has no temperature
    but the store has zero-shot classes (``shots == 0``), the paper's scales (``tau = T``, ``a = vt_scale``,
    ``b = 0``). No temperature in the result: scores are the paper's ``probs``."""
    cal = dict(calibration)
    if not cal.get("temperature") and (np.asarray(shots) == 0).any():
        cal.update(temperature=float(frames), zero_shot={"a": float(vt_scale), "b": 0.0})
    return cal


def split_threshold(calibration: Dict) -> Tuple[str, Optional[float]]:
    """(score name, threshold) stored in a manifest's calibration entry (threshold None when none was fitted)."""
    t = calibration.get("threshold") or {}
    return t.get("score", "max_prob"), (None if t.get("value") is None else float(t["value"]))
