"""The two synthetic families (issue 19): motion-defined and appearance-defined classes, the same split design, and
per-frame captions that say what each frame truly shows."""
import json

import numpy as np
import pytest

from clipfsar.runtime.base.errors import ConfigError
from clipfsar.train.captions import direction_word, frame_caption, position_words, read_captions
from clipfsar.train.synth import (
    CLUTTER,
    MOTIONS,
    SCENES,
    SHAPES,
    check_clutter,
    class_factors,
    family_of,
    make_dataset,
    render_class_clip,
    shares_a_factor,
    split_classes,
)


@pytest.mark.parametrize("family,second", [("motion", MOTIONS), ("appearance", SCENES)])
def test_every_val_and_test_class_has_both_factors_in_train_never_together(family, second):
    s = split_classes(0, family)
    assert [len(s[k]) for k in ("train", "val", "test")] == [27, 9, 9]
    assert not set(s["train"]) & set(s["val"]) and not set(s["val"]) & set(s["test"])
    train = [class_factors(n) for n in s["train"]]
    for name in s["val"] + s["test"]:
        shape, other = class_factors(name)
        assert shape in SHAPES and other in second and family_of(name) == family
        assert any(t[0] == shape for t in train) and any(t[1] == other for t in train)
        assert (shape, other) not in train


def test_appearance_classes_differ_by_what_is_in_the_frames_not_by_motion():
    """Two clips of one appearance class move differently; two classes of one shape differ in their background."""
    rng = np.random.default_rng(0)
    motions = {render_class_clip("a star on grass", rng, 64, 4)[1]["motion"] for _ in range(12)}
    assert len(motions) > 3  # the motion is drawn at random per clip
    grass = render_class_clip("a star on grass", rng, 64, 4)[0][0].astype(float)
    snow = render_class_clip("a star in snow", rng, 64, 4)[0][0].astype(float)
    corner = (slice(0, 8), slice(0, 8))  # far from the object, which starts in the middle third
    assert abs(grass[corner].mean() - snow[corner].mean()) > 60


def test_unknown_family_is_refused():
    with pytest.raises(ConfigError, match="unknown synthetic family 'kinetics'"):
        split_classes(0, "kinetics")


def test_frame_captions_state_each_frame_truly(tmp_path):
    data = tmp_path / "app"
    make_dataset(data, seed=0, clips_per_class=1, size=64, length=6, family="appearance")
    facts = json.loads((data / "synth.json").read_text())
    assert facts["family"] == "appearance" and facts["factors"]["a star on grass"] == {"shape": "star",
                                                                                       "scene": "on grass"}
    rows = read_captions(data / "captions.txt")
    frames = [r for r in rows if r.frame is not None]
    assert len(frames) == 45 * 6 and {r.frame for r in frames} == set(range(6))  # one row per frame
    for r in frames[:60]:
        shape, scene = class_factors(r.path.parent.name.replace("_", " "))
        assert shape in r.caption.split() and (r.caption.endswith(scene) or r.caption.startswith(scene))


def test_frame_caption_words_follow_the_drawn_state():
    from clipfsar.train.synth import FrameState
    s = FrameState("triangle", (40, 40, 230), 0.2, 0.9, 0.1, np.pi / 2, "on sand")
    assert frame_caption(s) == "a large red triangle at the top right, pointing right, on sand"
    assert position_words(0.5, 0.5) == "in the centre" and position_words(0.1, 0.9) == "at the bottom left"
    assert direction_word(np.pi) == "down" and direction_word(-np.pi / 4) == "up and left"


def test_shares_a_factor():
    assert shares_a_factor("a star on grass", "a star in snow") and shares_a_factor("a star on grass",
                                                                                    "a circle on grass")
    assert not shares_a_factor("a star on grass", "a circle in snow")


def test_clutter_covers_a_band_of_another_scene_and_zero_clutter_is_the_clean_family():
    """appearance-clutter: the same clip as the clean family's (same object, motion, scene) with one side covered by
    a band of another scene, CLUTTER +- 0.05 of the frame; clutter 0 draws nothing more (bit for bit)."""
    for seed in range(3):
        clean, clean_facts = render_class_clip("a star on grass", np.random.default_rng(seed), 64, 3)
        again, _ = render_class_clip("a star on grass", np.random.default_rng(seed), 64, 3, clutter=0.0)
        assert all(np.array_equal(a, b) for a, b in zip(clean, again))
        cluttered, facts = render_class_clip("a star on grass", np.random.default_rng(seed), 64, 3, clutter=CLUTTER)
        assert facts["distractor"] in SCENES and facts["distractor"] != "on grass"
        assert facts["motion"] == clean_facts["motion"] and "distractor" not in clean_facts
        changed = (np.abs(clean[0].astype(float) - cluttered[0].astype(float)).mean(-1) > 40).mean()
        assert 0.25 < changed < 0.5, changed  # about the band's share; the class scene stays the majority


def test_motion_clutter_adds_another_shape_doing_another_motion():
    clean, _ = render_class_clip("a star moving left", np.random.default_rng(0), 64, 3)
    cluttered, facts = render_class_clip("a star moving left", np.random.default_rng(0), 64, 3, clutter=CLUTTER)
    shape, motion = class_factors(facts["distractor"])
    assert shape in SHAPES and shape != "star" and motion in MOTIONS and motion != "moving left"
    assert [s.shape for s in facts["frames"]] == ["star"] * 3  # the frame captions state the class object
    assert (np.abs(clean[0].astype(float) - cluttered[0].astype(float)).mean(-1) > 40).mean() > 0.01


def test_clutter_out_of_range_is_refused_before_anything_is_written(tmp_path):
    for family in ("appearance", "motion"):
        for bad in (-0.1, 0.05, 0.45, 0.9):
            with pytest.raises(ConfigError, match="clutter must be 0, or between 0.05 and 0.45"):
                check_clutter(bad, family)
    with pytest.raises(ConfigError, match="clutter must be 0"):
        make_dataset(tmp_path / "m", family="motion", clutter=0.5)
    assert not (tmp_path / "m").exists()


def test_synth_cli_writes_clutter_to_synth_json_and_refuses_a_bad_value(tmp_path):
    from click.testing import CliRunner

    from clipfsar.cli import cli
    from clipfsar.train.ablation_cli import _family_of
    bad = CliRunner().invoke(cli, ["synth", str(tmp_path / "bad"), "--family", "appearance", "--clutter", "0.6"])
    assert bad.exit_code == 2 and "--clutter" in bad.output and not (tmp_path / "bad").exists()
    out = tmp_path / "clut"
    ok = CliRunner().invoke(cli, ["synth", str(out), "--family", "appearance", "--clutter", "0.4", "--clips", "1",
                                   "--size", "32", "--length", "3"])
    assert ok.exit_code == 0, ok.output
    assert json.loads((out / "synth.json").read_text())["clutter"] == 0.4
    assert _family_of(out) == "appearance-clutter"  # the ablation's name for it, with the appearance goals


def test_synth_into_a_file_or_under_one_exits_2_and_keeps_the_file(tmp_path):
    import subprocess
    import sys
    afile = tmp_path / "afile"
    afile.write_text("keep\n")
    for out in (afile, afile / "sub"):
        r = subprocess.run([sys.executable, "-m", "clipfsar", "synth", str(out), "--clips", "1", "--size", "32",
                            "--length", "3"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "is a file, not a folder" in r.stderr, r.stderr
    assert afile.read_text() == "keep\n"
