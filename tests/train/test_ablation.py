"""`clipfsar ablation`: the table's structure, the t-interval over seeds on known numbers, reuse, bad input."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from clipfsar.train.ablation import ROWS, goals, seed_interval, t975
from clipfsar.train.evaluate import BETA_GRID

CLI = [sys.executable, "-m", "clipfsar"]


def test_t_interval_on_known_numbers():
    # [1, 2, 3]: mean 2, sd 1, t(0.975, 2) = 4.3027 -> 4.3027 / sqrt(3)
    r = seed_interval([1.0, 2.0, 3.0])
    assert r["mean"] == 2.0 and r["n"] == 3 and r["ci95"] == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)
    # two seeds: t(0.975, 1) = 12.706, sd = |a - b| / sqrt(2)
    assert seed_interval([10.0, 12.0])["ci95"] == pytest.approx(12.7062, rel=1e-4)
    assert math.isnan(seed_interval([5.0])["ci95"])
    # beyond the table: the expansion against tabulated t(0.975, 60) = 2.0003, t(0.975, 120) = 1.9799
    assert t975(60) == pytest.approx(2.0003, abs=2e-4) and t975(120) == pytest.approx(1.9799, abs=2e-4)
    assert t975(30) == 2.0423 and t975(31) < 2.0423
    with pytest.raises(ValueError):
        t975(0)


def test_goals_read_the_seed_means():
    def rows(values):
        return {row: {"mean": v, "ci95": 1.0, "n": 3} for row, v in zip(ROWS, values)}

    def gap(text_gap, fusion_gap, fusion_val_gap):
        return {"text token - no text token": {"mean": text_gap}, "fusion - CLIP-FSAR few-shot": {"mean": fusion_gap},
                "fusion (val beta) - CLIP-FSAR few-shot": {"mean": fusion_val_gap}}

    report = {"families": {
        "appearance": {"table": {"1-shot": rows([50, 56, 57, 58, 61])}, "gaps": {"1-shot": gap(6, 1, 2)}},
        "appearance-clutter": {"table": {"1-shot": rows([70, 72, 70, 73, 50])}, "gaps": {"1-shot": gap(2, -2, 1)}},
        "motion": {"table": {"1-shot": rows([86, 84, 80, 84, 30])}, "gaps": {"1-shot": gap(-2, -4, 0)}}}}
    met = {(g["family"], g["goal"]): g["met"] for g in goals(report)}
    assert {goal: m for (family, goal), m in met.items() if family == "appearance-clutter"} == {
        "1-shot: text token - no text token": False, "1-shot: fusion - few-shot": False,
        "1-shot: fusion (val beta) - few-shot": True, "1-shot: zero-shot": False}
    met = {k: m for k, m in met.items() if k[0] != "appearance-clutter"}
    assert met == {("appearance", "1-shot: text token - no text token"): True,
                   ("appearance", "1-shot: fusion - few-shot"): True, ("appearance", "1-shot: zero-shot"): True,
                   ("appearance", "1-shot: fusion (val beta) - few-shot"): True,
                   ("motion", "1-shot: CLIP-FSAR few-shot"): False,
                   ("motion", "1-shot: text token - no text token"): False}


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    """A seeded random tiny model as the prior (every seed's runs share its frozen tower, as with a real one)."""
    import torch
    from safetensors.torch import save_file

    from clipfsar.train.backbone import create_clip
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("prior") / "prior.safetensors"
    save_file({k: v.contiguous() for k, v in create_clip("tiny", None).state_dict().items()}, str(path))
    return path


def test_ablation_command_tiny(synth_data, prior, tmp_path):
    """Two seeds, two shots, a few steps: every family x method x shot cell is the t-interval of the per-seed
    numbers; a second invocation reuses the finished runs and gives the same table."""
    out = tmp_path / "abl"
    args = CLI + ["ablation", "--out", str(out), "--data", str(synth_data), "--arch", "tiny", "--weights", str(prior),
                  "--seeds", "0,1", "--shots", "1,2", "--steps", "2", "--episodes", "20", "--cache-samplings", "1"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "ablation.json").read_text())
    assert list(report["families"]) == ["motion"]  # read from the data set's synth.json
    fam = report["families"]["motion"]
    assert list(fam["table"]) == ["1-shot", "2-shot"]
    assert len(fam["runs"]) == 4 and {(x["seed"], x["text_token"]) for x in fam["runs"]} == {
        (s, t) for s in (0, 1) for t in (True, False)}
    for shot, rows in fam["table"].items():
        assert list(rows) == list(ROWS)
        for row, cell in rows.items():
            values = fam["per_seed"][shot][row]
            assert len(values) == 2 and all(0 <= v <= 100 for v in values)
            assert cell["mean"] == pytest.approx(np.mean(values))
            assert cell["ci95"] == pytest.approx(12.7062 * np.std(values, ddof=1) / math.sqrt(2))
        text, notext = (np.array(fam["per_seed"][shot][r]) for r in (ROWS[1], ROWS[0]))
        assert fam["gaps"][shot]["text token - no text token"]["mean"] == pytest.approx(np.mean(text - notext))
        fitted = fam["beta_fitted_on_val"][shot]  # one of the grid's weights, per seed
        assert len(fitted) == 2 and all(b in BETA_GRID for b in fitted)
    assert [g["family"] for g in report["goals"]] == ["motion"] * 3  # 1-shot: two goals, 2-shot: one
    md = (out / "ablation.md").read_text().splitlines()
    assert md[0] == "| family | method | 1-shot | 2-shot |" and len(md) >= 2 + len(ROWS) + 2
    assert "t-interval over training seeds" in (out / "ablation.md").read_text()
    # runs are kept: a second invocation trains nothing and reports the same numbers
    stamps = {p: p.stat().st_mtime for p in (out / "runs").rglob("model.safetensors")}
    r2 = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0, r2.stderr
    assert {p: p.stat().st_mtime for p in (out / "runs").rglob("model.safetensors")} == stamps
    again = json.loads((out / "ablation.json").read_text())["families"]["motion"]
    assert again["table"] == fam["table"]
    assert all(x["reused"] and x["seconds"] is None for x in again["runs"])
    assert not any(x["reused"] for x in fam["runs"])
    # a run killed after an early validation has a best/ but not its last step: it is trained again, alone
    state = out / "runs" / "motion" / "seed1_shot1_text" / "last" / "trainer_state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "step": 1}))
    r_killed = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r_killed.returncode == 0, r_killed.stderr
    retrained = {p for p, t in stamps.items() if p.stat().st_mtime != t}
    assert retrained and all(p.parent.parent.name == "seed1_shot1_text" for p in retrained)
    assert json.loads(state.read_text())["step"] == 2
    stamps = {p: p.stat().st_mtime for p in (out / "runs").rglob("model.safetensors")}
    # a finished run is never reported for another recipe: other --steps exits 2, naming it, and nothing changes
    report_text = (out / "ablation.json").read_text()
    r3 = subprocess.run([a if a != "2" or args[i - 1] != "--steps" else "3" for i, a in enumerate(args)],
                        capture_output=True, text=True, timeout=600)
    assert r3.returncode == 2 and "trained with other settings" in r3.stderr and "steps: 2 there, 3 now" in r3.stderr
    assert {p: p.stat().st_mtime for p in (out / "runs").rglob("model.safetensors")} == stamps
    assert (out / "ablation.json").read_text() == report_text


@pytest.mark.parametrize("extra, message", [
    (["--seeds", "0,x"], "comma-separated integers"),
    (["--seeds", "0,0"], "distinct"),
    (["--data", "/nonexistent/data"], "data folder not found"),
    (["--threads", "0"], "must be >= 1"),
    (["--cache-samplings", "0"], "cache_samplings must be >= 1"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, extra, message):
    from click.testing import CliRunner

    from clipfsar.train.ablation_cli import ablation
    out = tmp_path / "abl"
    r = CliRunner().invoke(ablation, ["--out", str(out), *extra])
    assert r.exit_code == 2 and message in r.output, r.output
    assert not out.exists()


def test_fit_beta_picks_the_val_best_weight_and_the_ends_are_the_branches():
    """Two episodes, 2-way, 2 queries: the few-shot branch is right on the first, the video-text branch on the
    second; only a mix of both (confident video-text where few-shot is flat) gets all four queries right."""
    from clipfsar.train.evaluate import fit_beta, fused_accuracy
    p_fs = np.array([[[0.9, 0.1], [0.1, 0.9]],     # episode 0: few-shot right, confident
                     [[0.45, 0.55], [0.55, 0.45]]])  # episode 1: few-shot wrong, nearly flat
    p_vt = np.array([[[0.4, 0.6], [0.6, 0.4]],       # episode 0: video-text wrong, mild
                     [[0.99, 0.01], [0.01, 0.99]]])  # episode 1: video-text right, confident
    probs = {"p_fewshot": p_fs, "p_videotext": p_vt, "p": p_fs}
    assert fused_accuracy(probs, 0.0).accuracy == 50.0 and fused_accuracy(probs, 1.0).accuracy == 50.0
    beta = fit_beta(probs)
    assert 0.0 < beta < 1.0 and fused_accuracy(probs, beta).accuracy == 100.0
    # the smallest of equally good weights: a video-text branch that never helps leaves beta at 0
    assert fit_beta({"p_fewshot": p_fs[:1], "p_videotext": p_vt[:1], "p": p_fs[:1]}) == 0.0
    # a saturated split (every weight 100 %): the likelihood of the true class decides, here the confident branch
    flat, sure = np.array([[[0.55, 0.45], [0.45, 0.55]]]), np.array([[[0.99, 0.01], [0.01, 0.99]]])
    assert fit_beta({"p_fewshot": flat, "p_videotext": sure, "p": flat}) == max(BETA_GRID)


def test_a_data_set_too_small_exits_2_and_leaves_no_folder(tmp_path):
    """Training finds the data set unusable (2 clips a class; an episode needs 4): exit 2 naming the split, and the
    folders the call made are gone; a folder the user made stays."""
    data = tmp_path / "few"
    assert subprocess.run(CLI + ["synth", str(data), "--clips", "2", "--seed", "0"], capture_output=True,
                          timeout=300).returncode == 0
    for out, existed in ((tmp_path / "new" / "abl", False), (tmp_path / "mine", True)):
        if existed:
            out.mkdir()
        r = subprocess.run(CLI + ["ablation", "--out", str(out), "--data", str(data), "--arch", "tiny",
                                  "--weights", "none", "--steps", "2", "--episodes", "10"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "fewer than 4 readable clips" in r.stderr, r.stderr
        assert (out.is_dir() and not any(out.iterdir())) if existed else not (tmp_path / "new").exists()
