"""On-device enrolment and class management: same result as export, atomic store writes, bad input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from clipfsar.runtime import Classifier
from clipfsar.runtime.base.errors import BundleError, VideoError
from clipfsar.runtime.bundle.reader import Bundle, sha256_of
from clipfsar.runtime.teaching.classes import list_classes, remove_class, rename_class
from clipfsar.runtime.teaching.enroll import Enroller, EnrollError
from clipfsar.runtime.teaching.tokenizer import TokenizerError

CLI = [sys.executable, "-m", "clipfsar"]


def _clips(synth_data, name, k):
    return sorted((synth_data / name.replace(" ", "_")).glob("*.mp4"))[:k]


def _row(b, name):
    s = b.store
    i = s.class_names.index(name)
    return s.prototypes[i], s.text_features[i], int(s.shots[i])


def test_enrolled_class_equals_export(bundle, synth_data):
    ref = Bundle.open(bundle)
    name = ref.store.class_names[1]
    ref_p, ref_t, _ = _row(ref, name)
    remove_class(bundle, name)
    b = Enroller(Bundle.open(bundle)).enroll(name, _clips(synth_data, name, 2))  # export used the first 2 clips
    p, t, k = _row(b, name)
    assert k == 2
    assert np.abs(p - ref_p).max() <= 1e-5 and np.abs(t - ref_t).max() <= 1e-5
    # --add: one shot, then another = both at once
    remove_class(bundle, name)
    e = Enroller(Bundle.open(bundle))
    e.enroll(name, _clips(synth_data, name, 1))
    b = e.enroll(name, _clips(synth_data, name, 2)[1:], mode="add")
    p, t, k = _row(b, name)
    assert k == 2 and np.abs(p - ref_p).max() <= 1e-5
    # --add to an exported class pools with its stored shots: 2 + 1 = the first 3 clips at once
    other = ref.store.class_names[2]
    b = e.enroll(other, _clips(synth_data, other, 3)[2:], mode="add")
    p3, _, k3 = _row(b, other)
    three = e.prototype(np.stack([e.clip_features(c) for c in _clips(synth_data, other, 3)]),
                        _row(ref, other)[1])
    assert k3 == 3 and np.abs(p3 - three).max() <= 1e-5


def test_replace_zero_shot_and_frame_arrays(bundle, synth_data):
    from clipfsar.runtime.video.clips import count_frames, read_frames
    e = Enroller(Bundle.open(bundle))
    b = e.enroll("juggling three balls", [])
    p, t, k = _row(b, "juggling three balls")
    assert k == 0 and not p.any() and np.abs(t - e.text_feature("juggling three balls")).max() == 0
    clip = _clips(synth_data, Bundle.open(bundle).store.class_names[0], 1)[0]
    frames = read_frames(clip, list(range(count_frames(clip))))
    b = e.enroll("juggling three balls", [frames], mode="replace")  # frames in the API = the same file
    p, _, k = _row(b, "juggling three balls")
    assert k == 1 and np.abs(p - e.prototype(e.clip_features(clip)[None], t)).max() <= 1e-6


def test_short_clip_repeats_frames(bundle, synth_data, tmp_path):
    """A clip shorter than T frames: frames repeated TSN-style, as in training (a 3-frame folder)."""
    import cv2

    from clipfsar.runtime.video.clips import read_frames
    src = _clips(synth_data, Bundle.open(bundle).store.class_names[0], 1)[0]
    folder = tmp_path / "short"
    folder.mkdir()
    for i, f in enumerate(read_frames(src, [0, 5, 10])):
        cv2.imwrite(str(folder / f"{i:03d}.png"), f)
    e = Enroller(Bundle.open(bundle))
    feats = e.clip_features(folder)
    assert feats.shape[0] == 8
    np.testing.assert_array_equal(feats[0], feats[1])  # indices [0,0,0,1,1,2,2,2]
    e.enroll("short one", [folder])


def test_bad_names(bundle, synth_data):
    e = Enroller(Bundle.open(bundle))
    clips = _clips(synth_data, e.bundle.store.class_names[0], 1)
    before = sha256_of(bundle / "manifest.json")
    for name in ("", "   \t"):
        with pytest.raises(EnrollError, match="empty"):
            e.enroll(name, clips)
    existing = e.bundle.store.class_names[0]
    with pytest.raises(EnrollError, match="already enrolled.*--add.*--replace"):
        e.enroll(existing, clips)
    with pytest.raises(EnrollError, match="tokenises exactly as the enrolled class"):
        e.enroll(existing.upper() + "  ", clips)
    with pytest.raises(TokenizerError, match=r"takes \d+ tokens; the text encoder's context is 32"):
        e.enroll("very " * 40 + "long", clips)
    with pytest.raises(EnrollError, match="not enrolled"):
        e.enroll("never enrolled", clips, mode="add")
    with pytest.raises(EnrollError, match="needs clips"):
        e.enroll(existing, [], mode="add")
    assert sha256_of(bundle / "manifest.json") == before  # nothing written


def test_bad_clips(bundle, tmp_path):
    e = Enroller(Bundle.open(bundle))
    before = sha256_of(bundle / "manifest.json")
    with pytest.raises(VideoError, match="not found"):
        e.enroll("x", [tmp_path / "missing.mp4"])
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoError, match="bad.mp4"):
        e.enroll("x", [bad])
    with pytest.raises(VideoError, match="no frames"):
        e.enroll("x", [[]])
    assert sha256_of(bundle / "manifest.json") == before


def test_bundle_without_tokenizer_or_graph(bundle):
    data = json.loads((bundle / "manifest.json").read_text())
    data.pop("tokenizer")
    (bundle / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="no tokenizer file"):
        Enroller(Bundle.open(bundle))
    r = subprocess.run(CLI + ["enroll", str(bundle), "--name", "x"], capture_output=True, text=True)
    assert r.returncode == 2 and "no tokenizer file" in r.stderr and "Traceback" not in r.stderr
    data = json.loads((bundle / "manifest.json").read_text())
    data["graphs"].pop("support_head")
    (bundle / "manifest.json").write_text(json.dumps(data))
    r = subprocess.run(CLI + ["enroll", str(bundle), "--name", "x"], capture_output=True, text=True)
    assert r.returncode == 2 and "support_head" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_bundle(bundle):
    os.chmod(bundle, 0o555)
    try:
        with pytest.raises(BundleError, match="read-only"):
            Enroller(Bundle.open(bundle)).enroll("new one", [])
    finally:
        os.chmod(bundle, 0o755)


def test_unwritable_bundle_error(bundle, monkeypatch):
    """The read-only path as root sees it: the lock file cannot be created (EROFS, as on a read-only mount)."""
    import errno
    real_open = os.open

    def ro_open(path, flags, *a):
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *a)
    monkeypatch.setattr(os, "open", ro_open)
    with pytest.raises(BundleError, match="read-only"):
        Enroller(Bundle.open(bundle)).enroll("new one", [])


def test_classes_api_and_running_classifier(bundle, synth_data):
    clf = Classifier.load(bundle, backend="cpu")
    old_names = clf.class_names
    infos = list_classes(bundle)
    assert [c.name for c in infos] == list(old_names) and all(c.shots == 2 for c in infos)
    other = Classifier.load(bundle, backend="cpu")
    clf.enroll("a brand new action", [])  # this classifier uses it at once ...
    assert clf.class_names[-1] == "a brand new action"
    assert other.class_names == old_names  # ... a running one keeps the store it loaded
    assert Classifier.load(bundle, backend="cpu").class_names[-1] == "a brand new action"  # a new load sees it
    e = Enroller(Bundle.open(bundle))
    name = old_names[0]
    b = rename_class(bundle, name, "renamed class")
    p, t, k = _row(b, "renamed class")
    assert name not in b.store.class_names and k == 2
    assert np.abs(t - e.text_feature("renamed class")).max() <= 1e-6
    ref = e.prototype(np.stack([e.clip_features(c) for c in _clips(synth_data, name, 2)]), t)
    assert np.abs(p - ref).max() <= 1e-5  # = enrolling the same clips under the new name
    with pytest.raises(EnrollError, match="already enrolled"):
        rename_class(bundle, "renamed class", old_names[1])
    with pytest.raises(EnrollError, match="not enrolled"):
        remove_class(bundle, "no such class")
    b = remove_class(bundle, "renamed class")
    assert "renamed class" not in b.store.class_names and len(b.store.class_names) == len(old_names)
    for n in b.store.class_names[:-1]:
        b = remove_class(bundle, n)
    with pytest.raises(EnrollError, match="only class"):
        remove_class(bundle, b.store.class_names[0])
    leftovers = [p.name for p in bundle.iterdir() if "prototypes" in p.name]
    assert leftovers == [b.manifest.prototypes["file"]]  # old store files removed


def test_cli_enroll_and_classes(bundle, synth_data):
    name = Bundle.open(bundle).store.class_names[0]
    clips = [str(c) for c in _clips(synth_data, name, 2)]
    r = subprocess.run(CLI + ["enroll", str(bundle), "--name", "waving a hand"] + clips, capture_output=True,
                       text=True)
    assert r.returncode == 0 and "2 shots" in r.stdout, r.stderr
    r = subprocess.run(CLI + ["enroll", str(bundle), "--name", "waving a hand"] + clips, capture_output=True,
                       text=True)
    assert r.returncode == 2 and "already enrolled" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(CLI + ["enroll", str(bundle), "--name", "waving a hand", "--add", clips[0]],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "3 shots" in r.stdout, r.stderr
    r = subprocess.run(CLI + ["classes", str(bundle), "rename", "waving a hand", "waving"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(CLI + ["classes", str(bundle), "list", "--json"], capture_output=True, text=True)
    assert {"name": "waving", "shots": 3} in json.loads(r.stdout)
    r = subprocess.run(CLI + ["classes", str(bundle), "remove", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and "not enrolled" in r.stderr
