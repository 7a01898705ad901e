"""The shipped pretrained tiny weights can be remade: the exact command in benchmarks/pretrain_synth.py still
gives a model that meets the goals after the demo's training run (about 10 min on 2 quiet CPU cores).

Checked: zero-shot >= 35 % and, in 1-shot, fusion (beta 0.9) >= the few-shot branch. Not checked, because they
are not met reliably yet (README, "Results"): 5-shot fusion >= few-shot (a tie with the shipped file, 1.2 points
short with a remake) and text-token prototypes >= 5 points above the no-text ablation (+2.2 / +2.6 in 1-shot).
"""
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "pretrain_synth.py"


@pytest.mark.slow
def test_remake_command_meets_the_goals(tmp_path):
    spec = importlib.util.spec_from_file_location("pretrain_synth", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.run_all(tmp_path / "bench", ["pretrained"], episodes=2000, ship=False, frozen=True)
    assert res["zero_shot_before_training"]["pretrained"]["accuracy"] >= 35
    run = res["runs"]["pretrained"]["text token"]
    assert run["1-shot"]["zero_shot"]["accuracy"] >= 35, bench.table(res)
    assert run["1-shot"]["fusion"]["accuracy"] >= run["1-shot"]["few_shot"]["accuracy"], bench.table(res)
