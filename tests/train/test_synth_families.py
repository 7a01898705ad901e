"""The two synthetic families (issue 19): motion-defined and appearance-defined classes, the same split design, and
per-frame captions that say what each frame truly shows."""
import json

import numpy as np
import pytest

from clipfsar.runtime.base.errors import ConfigError
from clipfsar.train.captions import direction_word, frame_caption, position_words, read_captions
from clipfsar.train.synth import (
    MOTIONS,
    SCENES,
    SHAPES,
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
