"""The shipped frame-level prior and the weights files refused by name: another architecture, an older prior version,
a retired tag (issue 19, "Bad input"). Each through the CLI's entry point too (in this process, for speed): exit 2,
the file named, nothing written."""
import sys

import pytest
from safetensors import safe_open

from clipfsar.train.backbone import (
    PRIOR_FILES,
    PRIOR_VERSIONS,
    SMALL_ARCH,
    TINY_ARCH,
    WeightsUnavailableError,
    create_clip,
    resolve_arch,
)
from clipfsar.train.pretrain import save_weights, ship_prior


def run_cli(args, monkeypatch, capsys):
    """``clipfsar ARGS`` through ``clipfsar.cli.main`` (the console script's function) -> (exit code, stderr)."""
    from clipfsar.cli import main
    monkeypatch.setattr(sys, "argv", ["clipfsar", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main()
    return done.value.code, capsys.readouterr().err


@pytest.mark.parametrize("arch", ["small", "tiny"])
def test_the_synth_tag_loads_the_versioned_frame_level_prior(arch):
    name = resolve_arch(arch)
    file, version = PRIOR_FILES[name], PRIOR_VERSIONS[name]
    with safe_open(str(file), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # the real tensors of the file, not a random init
    assert meta["clipfsar_prior"] == f"synth-v{version}" and meta["arch"] == name
    for model in (create_clip(arch, "synth"), create_clip(arch, f"synth-v{version}")):
        state = model.state_dict()
        assert all((state[k] == v).all() for k, v in tensors.items() if k.startswith("visual."))


def test_the_default_prior_is_the_small_models_newest():
    assert PRIOR_VERSIONS[SMALL_ARCH] > PRIOR_VERSIONS[TINY_ARCH]
    with pytest.raises(WeightsUnavailableError, match="was made for architecture 'clipfsar-tiny', not "
                                                      "'clipfsar-small'; pass --arch tiny"):
        create_clip("small", str(PRIOR_FILES[TINY_ARCH]))


def test_the_retired_v1_tag_is_refused_with_what_replaced_it():
    with pytest.raises(WeightsUnavailableError, match="synth-v1.*no longer shipped.*use 'synth'"):
        create_clip("tiny", "synth-v1")


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    """Weights made for another architecture (by metadata) and the tiny model stamped as the older prior v1."""
    root = tmp_path_factory.mktemp("weights")
    clip = create_clip("tiny", None)
    other_arch = save_weights(clip, root / "rn50.safetensors", arch="RN50")
    plain = save_weights(clip, root / "plain.safetensors", arch=resolve_arch("tiny"))
    old = ship_prior(plain, root / "prior-v1.safetensors", version=PRIOR_VERSIONS[TINY_ARCH] - 1)
    torn = root / "torn.safetensors"
    torn.write_bytes(plain.read_bytes()[:1000])
    return {"arch": other_arch, "old": old, "torn": torn}


@pytest.mark.parametrize("kind,message", [
    ("arch", "was made for architecture 'RN50', not 'clipfsar-tiny'"),
    ("old", f"is an older version of the shipped prior (synth-v{PRIOR_VERSIONS[TINY_ARCH] - 1})"),
    ("torn", "is not a readable safetensors file"),
])
def test_a_weights_file_for_another_architecture_or_an_older_prior_is_refused_by_name(bad_files, kind, message):
    with pytest.raises(WeightsUnavailableError) as err:
        create_clip("tiny", str(bad_files[kind]))
    assert str(bad_files[kind]) in str(err.value) and message in str(err.value)


@pytest.mark.parametrize("kind", ["arch", "old"])
def test_train_and_pretrain_refuse_them_with_exit_2_and_write_nothing(bad_files, kind, synth_data, tmp_path,
                                                                      monkeypatch, capsys):
    for cmd in (["train", "--data", str(synth_data), "--steps", "1"], ["pretrain", "--data", str(synth_data),
                                                                        "--steps", "1"]):
        out = tmp_path / f"{cmd[0]}_{kind}"
        code, err = run_cli(cmd + ["--out", str(out), "--weights", str(bad_files[kind])], monkeypatch, capsys)
        assert code == 2 and str(bad_files[kind]) in err and err.startswith("error: "), err
        assert not out.exists()  # nothing written: no run folder, no config.json


def test_a_weights_file_whose_tensors_do_not_fit_is_refused_by_name(tmp_path, synth_data, monkeypatch, capsys):
    """No metadata to go by (e.g. a file from elsewhere): open_clip's shape mismatch becomes a named refusal."""
    import torch
    from safetensors.torch import save_file
    state = {k: torch.zeros(3, 3) if k == "visual.proj" else v.contiguous()
             for k, v in create_clip("tiny", None).state_dict().items()}
    file = tmp_path / "misfit.safetensors"
    save_file(state, str(file))
    with pytest.raises(WeightsUnavailableError, match=f"{file}.*does not fit architecture 'tiny'"):
        create_clip("tiny", str(file))
    out = tmp_path / "run"
    code, err = run_cli(["train", "--data", str(synth_data), "--out", str(out), "--steps", "1", "--weights",
                         str(file)], monkeypatch, capsys)
    assert code == 2 and str(file) in err and not out.exists(), err
