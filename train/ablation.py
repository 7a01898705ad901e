"""The paper's ablation (CLIP-FSAR, IJCV 2023, Table 5 style) on a data set family, over training seeds.

For every data set (a family: ``clipfsar synth --family motion|appearance``, or any folder with splits) and every
training seed, two runs are trained with the prior's image tower frozen (cached features, ``--freeze-backbone``):
with the class text token in the support prototypes (CLIP-FSAR) and without it (the ablation). Each is evaluated on
the test split, 5-way, at every shot count asked for, on the same seeded episodes (1 query per class):

- ``few-shot (no text token)``: the ablation run's few-shot branch (beta = 0);
- ``CLIP-FSAR (text token)``: the text run's few-shot branch (beta = 0, what the official configs report);
- ``fusion (beta 0.9)``: the text run's ``p_vt^0.9 * p_fs^0.1`` (the official default weight);
- ``fusion (beta fitted on val)``: the same product with the beta of ``0, 0.05, ..., 0.95`` that is most accurate on
  the val split's episodes (same run, same shot; the test split is not looked at), recorded per seed;
- ``zero-shot``: the text run's video-text branch alone (no support clip is looked at).

A row's number is the mean over the training seeds of the per-seed episode accuracy, with a 95 % confidence
interval over the seeds: Student's t-interval ``mean +- t(0.975, n - 1) * sd / sqrt(n)`` (sd with ``ddof = 1``),
so it says how much a new training seed could move the number, not how many test episodes were drawn.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from clipfsar.runtime.base.errors import ConfigError
from clipfsar.runtime.base.jsonconfig import read_json

ROWS = ("few-shot (no text token)", "CLIP-FSAR (text token)", "fusion (beta 0.9)", "fusion (beta fitted on val)",
        "zero-shot")
NOTEXT, TEXT, FUSION, FUSION_VAL, ZEROSHOT = ROWS
GAPS = ("text token - no text token", "fusion - CLIP-FSAR few-shot", "fusion (val beta) - CLIP-FSAR few-shot")

# Student's t quantile t(0.975, df), df = 1..30 (standard tables); beyond, the Cornish-Fisher expansion
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
         2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555,
         2.0518, 2.0484, 2.0452, 2.0423)


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (two-sided 95 %)."""
    if df < 1:
        raise ValueError(f"a t-interval needs at least 2 values (df >= 1), got df = {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def seed_interval(values: Sequence[float]) -> Dict[str, float]:
    """Mean and 95 % t-interval half-width over training seeds: ``{"mean", "ci95", "n"}`` (ci95 NaN for one seed)."""
    a = np.asarray(values, float)
    if a.size == 0:
        raise ValueError("no values")
    ci = t975(a.size - 1) * a.std(ddof=1) / math.sqrt(a.size) if a.size > 1 else float("nan")
    return {"mean": float(a.mean()), "ci95": float(ci), "n": int(a.size)}


@dataclass
class AblationConfig:
    """One ablation: data sets by family, the prior, the training recipe and the evaluation.

    Attributes:
        data: family name -> data set folder (``clipfsar synth OUT --family NAME``).
        weights: the prior of ``arch`` (``synth``, a weights file); its image tower stays frozen.
        seeds: training seeds (>= 3 for a CI worth reading).
        shots: evaluated shot counts; ``per_shot_training`` trains a model per shot (the paper), else every shot
            is evaluated on the 1-shot models.
        steps, lr, alpha, query, episodes_per_step, warmup_steps: the recipe (``TrainConfig`` fields).
        episodes: seeded test episodes per evaluation (seed ``eval_seed``); beta: the fusion row's weight.
    """
    data: Dict[str, str]
    out: str
    weights: Optional[str] = "synth"
    arch: str = "small"
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    shots: List[int] = field(default_factory=lambda: [1, 5])
    per_shot_training: bool = False
    steps: int = 600
    lr: float = 3e-3
    alpha: float = 0.5
    query: int = 3
    episodes_per_step: int = 4
    warmup_steps: int = 10
    cache_samplings: int = 4
    way: int = 5
    episodes: int = 2000
    eval_seed: int = 0
    beta: float = 0.9
    val_episodes: int = 300

    def __post_init__(self) -> None:
        if not self.data:
            raise ConfigError("no data set given (a family to make, or a data folder)")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct and at least one; got {self.seeds}")
        if not self.shots or min(self.shots) < 1:
            raise ConfigError(f"shots must be >= 1; got {self.shots}")
        for key in ("steps", "episodes", "query", "episodes_per_step", "way", "cache_samplings"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1; got {getattr(self, key)}")
        if not 0.0 <= self.beta <= 1.0:
            raise ConfigError(f"beta must be in [0, 1]; got {self.beta}")


def train_config(cfg: AblationConfig, family: str, seed: int, shot: int, text_token: bool):
    """The ``TrainConfig`` of one run: frozen tower, cached features shared by every run of the ablation."""
    from .config import TrainConfig
    name = f"{family}/seed{seed}_shot{shot}_{'text' if text_token else 'notext'}"
    return TrainConfig(data=str(Path(cfg.data[family]).absolute()), out=str(Path(cfg.out, "runs", name).absolute()),
                       arch=cfg.arch, weights=cfg.weights, steps=cfg.steps, seed=seed, way=cfg.way, shot=shot,
                       query=cfg.query, episodes_per_step=cfg.episodes_per_step, lr=cfg.lr, warmup_lr=1e-5,
                       warmup_steps=cfg.warmup_steps, schedule="cosine", alpha=cfg.alpha,
                       val_every=max(1, cfg.steps // 4), val_episodes=cfg.val_episodes, freeze_backbone=True,
                       cache_samplings=cfg.cache_samplings, feature_cache=str(Path(cfg.out, "cache").absolute()),
                       model={} if text_token else {"text_in_prototype": False})


def finished(run: Path) -> bool:
    """Whether ``run`` trained all the steps of its own ``config.json``: its ``last/`` resume point says so
    (``best/`` alone is written at the first validation, a quarter of the way)."""
    state, config = run / "last" / "trainer_state.json", run / "config.json"
    if not ((run / "best").is_dir() and state.is_file() and config.is_file()):
        return False
    return int(read_json(state, "trainer state")["step"]) >= int(read_json(config, "run config")["steps"])


def _check_reusable(run: Path, tc) -> None:
    """Raise ``ConfigError`` unless the finished ``run`` was trained with ``tc`` (its ``config.json``): a run of
    other steps, lr, data or prior is never reported as this ablation's."""
    from clipfsar.runtime.base.jsonconfig import to_dict
    stored, wanted = read_json(run / "config.json", "run config"), to_dict(tc)
    differ = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    if differ:
        shown = ", ".join(f"{k}: {stored.get(k)!r} there, {wanted.get(k)!r} now" for k in differ)
        raise ConfigError(f"{run} was trained with other settings ({shown}); give a new --out, or the options it "
                          "was made with")


def _split_features(run_model, prep, data: Path, split: str, min_clips: int, cache: Dict):
    """(ClipSet, (B, T, D) features) of ``data``'s ``split``, encoded once per image tower (``cache``:
    (data, split, fingerprint) -> both): with a prior every run shares its frozen tower; with ``weights=None``
    each seed has its own random one."""
    from .data import load_split
    from .features import ClipLoader, all_clips, encode_clips, feature_fingerprint
    key = (str(data), split, feature_fingerprint(run_model, prep, 0))
    if key not in cache:
        clipset = load_split(data, split, min_clips=min_clips)
        loader = ClipLoader(prep, run_model.cfg.frames)
        try:  # centre sampling, each clip once (the protocol)
            cache[key] = clipset, encode_clips(run_model, loader, all_clips(clipset))
        finally:
            loader.close()
    return cache[key]


def evaluate_run(run: Path, data: Path, cfg: AblationConfig, shot: int, feature_cache: Dict,
                 fusion: bool = True) -> Dict[str, float]:
    """One run's row values (percent) at ``shot`` on ``data``'s test split: the few-shot branch and, with
    ``fusion``, the fusion at ``cfg.beta`` and at the beta fitted on the val split (:func:`~.evaluate.fit_beta` on
    ``cfg.episodes`` val episodes, seed ``eval_seed + 1``; ``beta_val``), and the zero-shot (video-text) branch."""
    from .checkpoint import best_checkpoint, load_checkpoint
    from .evaluate import episode_probs, fit_beta, fused_accuracy
    from .features import class_offsets
    model, prep, _ = load_checkpoint(best_checkpoint(run))
    probs = {}
    splits = ([("val", cfg.eval_seed + 1)] if fusion else []) + [("test", cfg.eval_seed)]  # val: to fit beta
    for split, seed in splits:
        clipset, feats = _split_features(model, prep, data, split, max(cfg.shots) + 1, feature_cache)
        probs[split] = episode_probs(model, feats, class_offsets(clipset), clipset.counts(), clipset.classes,
                                     cfg.way, shot, cfg.episodes, seed, beta=cfg.beta)
    test = probs["test"]
    if not fusion:
        return {"fewshot": fused_accuracy(test, 0.0).accuracy}
    beta_val = fit_beta(probs["val"])
    return {"fewshot": fused_accuracy(test, 0.0).accuracy, "fusion": fused_accuracy(test, cfg.beta).accuracy,
            "fusion_val": fused_accuracy(test, beta_val).accuracy, "beta_val": beta_val,
            "zeroshot": fused_accuracy(test, 1.0).accuracy}


def run_ablation(cfg: AblationConfig, log=print) -> Dict:
    """Train and evaluate every (family, seed, variant); returns the report (also written to OUT/ablation.json).

    Runs already finished in OUT (:func:`finished`) are evaluated again, not retrained, so an interrupted
    ablation continues where it stopped (a run that did not finish is trained again from the start); a
    finished run trained with other settings (``config.json``: steps, lr, data, prior...) raises ``ConfigError``
    before anything trains.
    """
    import shutil

    from .loop import Trainer

    out = Path(cfg.out)
    existing = out.absolute()  # the deepest folder of OUT there before this call: a failed run prunes up to it
    while not existing.exists():
        existing = existing.parent
    out.mkdir(parents=True, exist_ok=True)
    report = {"config": dataclasses.asdict(cfg), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "interval": "95 % Student t-interval over training seeds", "families": {}}
    train_shots = sorted(set(cfg.shots)) if cfg.per_shot_training else [1]
    for tc in (train_config(cfg, f, seed, shot, text) for f in cfg.data for seed in cfg.seeds
               for shot in train_shots for text in (True, False)):
        if finished(Path(tc.out)):  # every finished run is checked before anything trains
            _check_reusable(Path(tc.out), tc)
    for family, data in cfg.data.items():
        per_seed: Dict[str, Dict[str, List[float]]] = {f"{s}-shot": {r: [] for r in ROWS} for s in cfg.shots}
        runs, feature_cache = [], {}
        fitted: Dict[str, List[float]] = {f"{s}-shot": [] for s in cfg.shots}
        for seed in cfg.seeds:
            for train_shot in train_shots:
                pair = {}
                for text_token in (True, False):
                    tc = train_config(cfg, family, seed, train_shot, text_token)
                    run, t = Path(tc.out), time.perf_counter()
                    reused = finished(run)
                    if not reused:  # a run stopped part way (even with a best/ of an early validation) starts over
                        shutil.rmtree(run, ignore_errors=True)
                        try:
                            Trainer(tc).run()
                        except BaseException:  # bad data, a kill: nothing half-made stays (a later call retrains)
                            shutil.rmtree(run, ignore_errors=True)
                            _remove_empty_folders(run.parent.absolute(), existing)
                            raise
                    pair[text_token] = run
                    runs.append({"family": family, "seed": seed, "train_shot": train_shot, "text_token": text_token,
                                 "run": str(run), "reused": reused,
                                 "seconds": None if reused else round(time.perf_counter() - t, 1),
                                 "episodes_per_s": _median_episodes_per_s(run)})
                for shot in (s for s in cfg.shots if not cfg.per_shot_training or s == train_shot):
                    text = evaluate_run(pair[True], Path(data), cfg, shot, feature_cache)
                    notext = evaluate_run(pair[False], Path(data), cfg, shot, feature_cache, fusion=False)
                    cell = per_seed[f"{shot}-shot"]
                    for row, value in zip(ROWS, (notext["fewshot"], text["fewshot"], text["fusion"],
                                                 text["fusion_val"], text["zeroshot"])):
                        cell[row].append(value)
                    fitted[f"{shot}-shot"].append(text["beta_val"])
                    log(f"{family} seed {seed} {shot}-shot: no text token {notext['fewshot']:.1f}, text token "
                        f"{text['fewshot']:.1f}, fusion {text['fusion']:.1f}, fusion (beta {text['beta_val']:.2f} "
                        f"fitted on val) {text['fusion_val']:.1f}, zero-shot {text['zeroshot']:.1f}")
        facts = Path(data) / "synth.json"  # a synthetic family's clutter; None for other data sets
        clutter = read_json(facts, "synthetic data facts").get("clutter", 0.0) if facts.is_file() else None
        report["families"][family] = {
            "data": str(data), "clutter": clutter, "runs": runs, "per_seed": per_seed, "beta_fitted_on_val": fitted,
            "table": {shot: {row: seed_interval(v) for row, v in rows.items()} for shot, rows in per_seed.items()},
            "gaps": gaps(per_seed)}
        (out / "ablation.json").write_text(json.dumps(report, indent=2))
    return report


def _remove_empty_folders(folder: Path, keep: Path) -> None:
    """Remove ``folder`` and its parents while they are empty, stopping at ``keep`` (never removed)."""
    while folder != keep and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def _median_episodes_per_s(run: Path) -> Optional[float]:
    rows = [r.split(",") for r in (run / "log.csv").read_text().splitlines()[1:]]
    values = [float(r[6]) for r in rows[3:] or rows]
    return float(np.median(values)) if values else None


def gaps(per_seed: Dict[str, Dict[str, List[float]]]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Paired per-seed differences: text token - ablation, each fusion - few-shot (text), with their t-intervals."""
    res = {}
    for shot, rows in per_seed.items():
        text, notext, fusion, fusion_val = (np.asarray(rows[r]) for r in (TEXT, NOTEXT, FUSION, FUSION_VAL))
        res[shot] = {"text token - no text token": seed_interval(text - notext),
                     "fusion - CLIP-FSAR few-shot": seed_interval(fusion - text),
                     "fusion (val beta) - CLIP-FSAR few-shot": seed_interval(fusion_val - text)}
    return res


def table(report: Dict) -> str:
    """The report as a markdown table: a row per (family, method), a column per shot, ``mean +- ci95 (n seeds)``."""
    fams = report["families"]
    shots = list(next(iter(fams.values()))["table"]) if fams else []
    lines = ["| family | method | " + " | ".join(shots) + " |", "|---|---|" + "---|" * len(shots)]
    for family, res in fams.items():
        for row in ROWS:
            cells = [res["table"][s][row] for s in shots]
            lines.append(f"| {family} | {row} | " + " | ".join(_cell(c) for c in cells) + " |")
        for gap in GAPS:
            cells = [res["gaps"][s][gap] for s in shots]
            lines.append(f"| {family} | *{gap}* | " + " | ".join(_cell(c, signed=True) for c in cells) + " |")
        cells = [", ".join(f"{b:.2f}" for b in res["beta_fitted_on_val"][s]) for s in shots]
        lines.append(f"| {family} | *beta fitted on val, per seed* | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(c: Dict[str, float], signed: bool = False) -> str:
    mean = f"{c['mean']:+.1f}" if signed else f"{c['mean']:.1f}"
    ci = "n/a" if math.isnan(c["ci95"]) else f"{c['ci95']:.1f}"
    return f"{mean} +- {ci} ({c['n']})"


def goals(report: Dict) -> List[Dict]:
    """The issue's goals for the synthetic families, on the seed means: appearance (and appearance-clutter) —
    text token >= +5 points over the ablation at 1 and 5 shots, fusion >= the few-shot branch, zero-shot >= 60 %;
    motion — CLIP-FSAR few-shot >= 85 % at 1 shot; motion and motion-clutter — text token >= the ablation. Other
    families have none."""
    out = []

    def check(family, what, value, bound):
        out.append({"family": family, "goal": what, "value": round(value, 2), "bound": bound, "met": value >= bound})

    for family, res in report["families"].items():
        t, g = res["table"], res["gaps"]
        for shot in t:
            if family in ("appearance", "appearance-clutter"):
                check(family, f"{shot}: text token - no text token", g[shot]["text token - no text token"]["mean"], 5)
                check(family, f"{shot}: fusion - few-shot", g[shot]["fusion - CLIP-FSAR few-shot"]["mean"], 0)
                check(family, f"{shot}: fusion (val beta) - few-shot",
                      g[shot]["fusion (val beta) - CLIP-FSAR few-shot"]["mean"], 0)
                check(family, f"{shot}: zero-shot", t[shot][ZEROSHOT]["mean"], 60)
            elif family in ("motion", "motion-clutter"):
                if shot == "1-shot" and family == "motion":  # the clean family's bar; clutter is the hard test
                    check(family, f"{shot}: CLIP-FSAR few-shot", t[shot][TEXT]["mean"], 85)
                check(family, f"{shot}: text token - no text token", g[shot]["text token - no text token"]["mean"], 0)
    return out
