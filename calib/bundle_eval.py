"""``clipfsar eval --bundle``: the evaluation protocol run through a bundle's ONNX graphs."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from clipfsar.runtime.base.errors import DatasetError
from clipfsar.runtime.bundle.reader import Bundle
from clipfsar.runtime.classify.fusion import fuse_probs
from clipfsar.runtime.engines.backends import OnnxGraph, create_graph
from clipfsar.runtime.engines.precision import choose_precisions
from clipfsar.runtime.video.clips import read_clip
from clipfsar.runtime.video.preprocess import preprocess_frames
from clipfsar.train.data import load_split
from clipfsar.train.episodes import Accuracy, episode_accuracies
from clipfsar.train.episodes import episodes as make_episodes


def _tokens(bundle: Bundle, names: List[str]) -> np.ndarray:
    import open_clip  # the export side may use open_clip's tokenizer; the runtime never does

    from clipfsar.train.backbone import resolve_arch
    from clipfsar.train.class_names import check_prompts
    tok = open_clip.get_tokenizer(resolve_arch(bundle.manifest.model.arch))
    check_prompts(tok, bundle.manifest.model.prompt, names)  # too long for the context, or alike as tokens
    return tok([bundle.manifest.model.prompt.format(n) for n in names]).numpy().astype(np.int32)


def evaluate_bundle(bundle_dir: Path, data: Path, split: str = "test", way: int = 5, shot: int = 1,
                    episodes: int = 10000, seed: int = 0, beta: float = 0.9, backend: str = "cpu",
                    precision: str = "fp32", predictions: bool = False,
                    class_map: Optional[Dict[str, str]] = None) -> Dict:
    """Evaluate through the graphs: image encoder per clip, ``support_head`` per episode, ``query_head``.

    ``precision`` picks the graph variants (runtime/engines/precision.py; the report's ``precisions`` says which ran);
    ``predictions`` adds the few-shot branch's predicted class per query, episode-major (for agreement rates).
    """
    bundle = Bundle.open(Path(bundle_dir))
    facts = bundle.manifest.model
    chosen = choose_precisions(bundle, precision, backend)
    graphs = {g: create_graph(bundle.graph_path(g, chosen[g]), backend, None, precision=chosen[g],
                              spec=bundle.manifest.graphs[g]) if backend == "openvino" else
              OnnxGraph(bundle.graph_path(g, chosen[g]), backend=backend, precision=chosen[g])
              for g in bundle.manifest.graphs}
    class_map = class_map or bundle.manifest.class_map or None  # numbered folders: names as exported
    clipset = load_split(Path(data), split, min_clips=shot + 1, class_map=class_map)
    if len(clipset.classes) < way:
        raise DatasetError(f"split '{split}' has {len(clipset.classes)} classes; {way}-way needs {way}")
    clips = [c for name in clipset.classes for c in clipset.clips[name]]
    feats = []
    for path, n in clips:  # each clip encoded once (centre sampling)
        x = preprocess_frames(read_clip(path, facts.frames, "center", n_frames=n), facts.preprocess)
        feats.append(graphs["image_encoder"].run(images=x)["features"])
    feats_arr = np.stack(feats)  # (B, T, D)
    text = graphs["text_encoder"].run(tokens=_tokens(bundle, clipset.classes))["text_features"]  # (C, D)
    offsets = np.concatenate([[0], np.cumsum(clipset.counts())[:-1]]).astype(int)
    eps = make_episodes(seed, episodes, clipset.counts(), way, shot, 1)
    probs: Dict[str, list] = {"p_fewshot": [], "p_videotext": [], "p": []}
    for ep in eps:
        sup = feats_arr[offsets[ep.classes][:, None] + ep.support]  # (N, K, T, D)
        qry = feats_arr[(offsets[ep.classes][:, None] + ep.query).reshape(-1)]  # (N*Q, T, D)
        tx = text[ep.classes]
        protos = graphs["support_head"].run(support=sup, text=tx)["prototypes"]
        out = graphs["query_head"].run(query=qry, prototypes=protos, text=tx)
        probs["p_fewshot"].append(out["p_fewshot"])
        probs["p_videotext"].append(out["p_videotext"])
        probs["p"].append(fuse_probs(out["p_fewshot"], out["p_videotext"], beta))
    acc = {b: Accuracy.of(a) for b, a in episode_accuracies({k: np.stack(v) for k, v in probs.items()}).items()}
    extra = {"predictions": np.stack(probs["p_fewshot"]).argmax(-1).reshape(-1).tolist()} if predictions else {}
    return {**extra, "precisions": chosen, "bundle": str(bundle_dir), "backend": graphs["image_encoder"].providers[0],
            "split": split, "way": way,
            "shot": shot, "episodes": episodes, "seed": seed, "beta": beta, "accuracy": acc["fewshot"].accuracy,
            "ci95": acc["fewshot"].ci95, "branches": {b: {"accuracy": a.accuracy, "ci95": a.ci95}
                                                      for b, a in acc.items()}}
