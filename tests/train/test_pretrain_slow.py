"""The shipped pretrained tiny weights can be remade: the exact command in benchmarks/pretrain_synth.py still
gives a model that meets the goals after the demo's training run (about 25 min on 2 CPU cores)."""
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "pretrain_synth.py"


@pytest.mark.slow
def test_remake_command_meets_the_goals(tmp_path):
    spec = importlib.util.spec_from_file_location("pretrain_synth", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.run_all(tmp_path / "bench", ["pretrained"], episodes=2000, ship=False)
    assert res["zero_shot_before_training"]["pretrained"]["accuracy"] >= 35
    goals = res["runs"]["pretrained"]["goals"]
    assert all(goals.values()), (goals, bench.table(res))
