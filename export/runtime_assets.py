"""Export hooks for on-device enrolment and calibrated scores: the tokenizer file and the fitted temperature."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional, Tuple

from clipfsar.runtime.base.errors import ClipFsarError
from clipfsar.runtime.bundle.edit import update_manifest
from clipfsar.runtime.bundle.reader import Bundle
from clipfsar.runtime.teaching.tokenizer import build_tokenizer_json, tokenizer_manifest_entry

log = logging.getLogger(__name__)
TOKENIZER_FILE = "tokenizer.json"


def write_tokenizer(tokenizer, work: Path) -> Optional[Tuple[Path, Dict]]:
    """Write open_clip's BPE vocabulary and merges as ``work/tokenizer.json`` for the runtime tokenizer.

    Returns:
        (file path, manifest ``tokenizer`` entry), or None for a tokenizer that is not open_clip's CLIP BPE
        (e.g. a Hugging Face one): such bundles classify but cannot enrol on the device.
    """
    if not (hasattr(tokenizer, "bpe_ranks") and hasattr(tokenizer, "encoder")):
        log.warning("tokenizer %s is not open_clip's CLIP BPE: the bundle will not enrol classes on the device",
                    type(tokenizer).__name__)
        return None
    if getattr(tokenizer, "reduction_fn", None) is not None or tokenizer.clean_fn.__name__ != "_clean_lower":
        log.warning("tokenizer uses a non-default cleaning or reduction: the bundle will not enrol on the device")
        return None
    path = Path(work) / TOKENIZER_FILE
    merges = sorted(tokenizer.bpe_ranks, key=tokenizer.bpe_ranks.get)
    build_tokenizer_json(tokenizer.encoder, merges, path)
    return path, tokenizer_manifest_entry(TOKENIZER_FILE, tokenizer.context_length, tokenizer.sot_token_id,
                                          tokenizer.eot_token_id)


def fit_and_store_calibration(bundle: Bundle, data: Path, split: str = "val", shot: int = 1, episodes: int = 300,
                              seed: int = 0) -> Optional[Dict]:
    """Fit the temperature (and the zero-shot map) on ``split`` episodes through the bundle's graphs and write it
    into the manifest. Returns the calibration entry, or None (logged) when the split cannot give episodes."""
    from clipfsar.runtime.teaching.openset import encode_split, fit_calibration
    if not bundle.manifest.tokenizer:
        return None
    try:
        feats = encode_split(bundle, Path(data), split)
        shot = max(1, min(shot, min(len(c) for c in feats.clips) - 1))
        cal = fit_calibration(bundle, feats, shot, episodes, seed)
    except ClipFsarError as e:
        log.warning("no calibration fitted (%s): the bundle reports the paper's probabilities", e)
        return None
    cal["fitted_on"]["split"] = split
    update_manifest(bundle.root, "calibration", cal)
    log.info("calibration: temperature %.4f on %d %s episodes; ECE %.3f (paper) -> %.3f (calibrated)",
             cal["temperature"], episodes, split, cal["ece_paper"], cal["ece_calibrated"])
    return cal
