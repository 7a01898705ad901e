"""Issue 23, frames as arrays: uint16 scaled, gray expanded, BGRA alpha dropped, anything else refused with dtype
and shape named, in classify_clip, stream and enroll alike (one function: preprocess.as_bgr_uint8)."""
import cv2
import numpy as np
import pytest

from clipfsar.runtime.base.errors import VideoError
from clipfsar.runtime.video.clips import read_clip


@pytest.fixture(scope="module")
def clf(tiny_bundle):
    from clipfsar.runtime.classify.classifier import Classifier
    return Classifier.load(tiny_bundle, backend="cpu")


@pytest.fixture(scope="module")
def clip8(synth_data):
    path = sorted(synth_data.rglob("*.mp4"))[0]
    return read_clip(path, 8)  # uint8 BGR (H, W, 3)


def test_uint16_frames_classify_as_their_8_bit_version(clf, clip8):
    ref = clf.classify_clip(clip8)
    got = clf.classify_clip([f.astype(np.uint16) * 257 for f in clip8])  # a 16-bit camera's full range
    assert got.label == ref.label and np.allclose(got.scores, ref.scores, atol=1e-6)  # before: another action


def test_gray_and_bgra_frames(clf, clip8):
    gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in clip8]
    as_bgr = clf.classify_clip([cv2.cvtColor(g, cv2.COLOR_GRAY2BGR) for g in gray])
    for frames in (gray, [g[..., None] for g in gray]):  # (H, W) and (H, W, 1): before, a raw ValueError
        assert np.allclose(clf.classify_clip(frames).scores, as_bgr.scores, atol=1e-6)
    bgra = [np.dstack([f, np.full(f.shape[:2], 7, np.uint8)]) for f in clip8]
    assert np.allclose(clf.classify_clip(bgra).scores, clf.classify_clip(clip8).scores, atol=1e-6)


@pytest.mark.parametrize("bad, named", [
    (np.zeros((64, 64, 3), np.float32), "dtype float32 and shape (64, 64, 3)"),
    (np.zeros((64, 64, 2), np.uint8), "dtype uint8 and shape (64, 64, 2)"),
    (np.zeros((2, 64, 64, 3), np.uint8), "dtype uint8 and shape (2, 64, 64, 3)"),
    (np.zeros((64, 64, 3), np.int16), "dtype int16"),
])
def test_other_arrays_are_refused_naming_dtype_and_shape(clf, bad, named):
    with pytest.raises(VideoError, match=named.replace("(", r"\(").replace(")", r"\)")):
        clf.classify_clip([bad] * 8)


def test_stream_of_a_gray_16_bit_camera(clf):
    from clipfsar.runtime.video.live import LiveSource

    class Thermal:  # a 16-bit single-channel camera through the opener hook
        def __init__(self):
            self.i, self.released = 0, False

        def isOpened(self):
            return not self.released

        def get(self, prop):
            return 40.0 if prop == cv2.CAP_PROP_FPS else 0.0

        def read(self):
            import time
            time.sleep(1 / 40)
            self.i += 1
            img = np.full((48, 48), 20000, np.uint16)
            img[10:30, (self.i * 2) % 28:(self.i * 2) % 28 + 20] = 60000
            return True, img

        def release(self):
            self.released = True

    src = LiveSource("thermal", opener=Thermal, read_timeout=2)
    decisions = []
    for d in clf.stream(src, window=0.4):
        decisions.append(d)
        if len(decisions) == 3:
            break
    src.close()
    assert len(decisions) == 3


def test_enroll_from_uint16_and_gray_arrays(bundle, clip8):
    from clipfsar.runtime.bundle.reader import Bundle
    from clipfsar.runtime.teaching.enroll import Enroller
    enr = Enroller(Bundle.open(bundle))
    ref = enr.clip_features(clip8)
    assert np.allclose(enr.clip_features([f.astype(np.uint16) * 257 for f in clip8]), ref, atol=1e-6)
    gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in clip8]
    assert np.allclose(enr.clip_features(gray), enr.clip_features([cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)
                                                                   for g in gray]), atol=1e-6)
    with pytest.raises(VideoError, match="frame 0 of a clip given as frames has dtype float64"):
        enr.clip_features([f.astype(np.float64) for f in clip8])
