"""The studio's JSON/SSE API as another application uses it: state, the decision feed, the live picture, recording
and enrolling (the same prototypes as `clipfsar enroll`), class management, the live threshold, and its refusals
(bad names, traversal, oversize bodies, a token beyond loopback)."""
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import HELD_OUT_NAME, Studio, request, sse_events, wait_for

from clipfsar.runtime.bundle.reader import Bundle

CLI = [sys.executable, "-m", "clipfsar"]


def _record(studio, shots=5, seconds=None):
    body = {"shots": shots, "countdown": 0, "pause": 0.1}
    if seconds:
        body["seconds"] = seconds
    st, _, out = request(studio.url + "api/record", "POST", body)
    assert st == 200, out
    take = out["take"]["id"]

    def done():
        t = [t for t in request(studio.url + "api/state")[2]["takes"] if t["id"] == take]
        return t[0] if t and t[0]["state"] in ("done", "failed") else None
    t = wait_for(done, 30, "the take to finish")
    assert t["state"] == "done" and len(t["clips"]) == shots, t
    return t


def test_state_feed_and_picture(studio, studio_bundle):
    st, _, s = request(studio.url + "api/state")
    assert st == 200
    assert [c["name"] for c in s["classes"]] == list(Bundle.open(studio_bundle).store.class_names)
    assert s["threshold"]["live"] == 0.0 and s["model"]["frames"] == 8
    got = sse_events(studio.url + "api/events", lambda e, d: e == "decision")
    assert got[0][0] == "state"  # the feed opens with the whole state
    d = got[-1][1]
    assert d["label"] in d["scores"] and 0 <= d["score"] <= 1 and set(d["scores"]) == {c["name"] for c in s["classes"]}
    st, hdrs, jpg = request(studio.url + "api/frame.jpg")
    assert st == 200 and jpg[:2] == b"\xff\xd8"
    import urllib.request
    with urllib.request.urlopen(studio.url + "api/live.mjpg", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        head = r.read(200)
    assert head.startswith(b"--frame\r\nContent-Type: image/jpeg") and b"X-Frame-Read:" in head
    page = request(studio.url)[2]
    assert b"clip-fsar studio" in page and request(studio.url + "static/app.js")[0] == 200
    # Ctrl-C with a page open (a live stream being read): the studio exits promptly
    import http.client
    import threading
    opened = threading.Event()

    def watch():
        try:
            with urllib.request.urlopen(studio.url + "api/live.mjpg", timeout=30) as r:
                r.read(100)
                opened.set()
                while r.read(4096):
                    pass
        except (http.client.IncompleteRead, ConnectionError):  # the server went away: what a page sees too
            pass
    threading.Thread(target=watch, daemon=True).start()
    assert opened.wait(20)
    took = studio.close()
    assert studio.proc.returncode in (0, 130, -2) and took < 10, (took, studio.log()[-2000:])


def test_record_enrol_is_clipfsar_enroll(studio, studio_bundle, tiny_bundle, tmp_path):
    """Five clips recorded from the live source, enrolled by name: the prototype `clipfsar enroll` makes from the
    same files (kept in the clips folder) on a copy of the original bundle is the same to 1e-5."""
    take = _record(studio, 5, seconds=0.8)  # 9-10 frames a clip at 12 fps (T = 8); the page test uses the default
    st, _, out = request(studio.url + f"api/takes/{take['id']}/clips/0.jpg")
    assert st == 200 and out[:2] == b"\xff\xd8"
    st, _, out = request(studio.url + "api/classes", "POST", {"name": HELD_OUT_NAME, "take": take["id"]})
    assert st == 200 and out["shots"] == 5, out
    clips = sorted((studio.clips / HELD_OUT_NAME.replace(" ", "_")).glob("*.mp4"))
    assert len(clips) == 5 and not any((studio.clips / ".takes").iterdir())
    ref = tmp_path / "ref"
    shutil.copytree(tiny_bundle, ref)
    r = subprocess.run(CLI + ["enroll", str(ref), "--name", HELD_OUT_NAME] + [str(c) for c in clips],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a, b = Bundle.open(studio_bundle).store, Bundle.open(ref).store
    assert a.class_names == b.class_names
    i = a.class_names.index(HELD_OUT_NAME)
    assert np.abs(a.prototypes[i] - b.prototypes[i]).max() <= 1e-5
    assert np.abs(a.text_features[i] - b.text_features[i]).max() <= 1e-5
    # recognised at once: the feed's scores carry the class from the next decision on
    sse_events(studio.url + "api/events", lambda e, d: e == "decision" and HELD_OUT_NAME in d["scores"], 10)
    # more shots (a second take of 3, one discarded, 'add'): 7 shots
    take2 = _record(studio, 3, seconds=0.7)
    st, _, out = request(studio.url + f"api/takes/{take2['id']}/clips/1", "DELETE")
    assert st == 200 and [c["n"] for c in out["take"]["clips"]] == [0, 2]
    assert not (studio.clips / ".takes" / take2["id"] / "clip-02.mp4").exists()
    st, _, out = request(studio.url + "api/classes", "POST", {"name": HELD_OUT_NAME, "take": take2["id"],
                                                                "mode": "add"})
    assert st == 200 and out["shots"] == 7, out
    # remove: gone from the bundle and the feed; its clips stay on disk for reuse
    st, _, out = request(studio.url + "api/classes/remove", "POST", {"name": HELD_OUT_NAME})
    assert st == 200 and HELD_OUT_NAME not in Bundle.open(studio_bundle).store.class_names
    sse_events(studio.url + "api/events", lambda e, d: e == "decision" and HELD_OUT_NAME not in d["scores"], 10)
    assert len(list((studio.clips / HELD_OUT_NAME.replace(" ", "_")).glob("*.mp4"))) == 7


def test_zero_shot_rename_and_live_threshold(studio, studio_bundle):
    st, _, out = request(studio.url + "api/classes", "POST", {"name": "juggling"})
    assert st == 200 and out["shots"] == 0
    st, _, out = request(studio.url + "api/classes/rename", "POST", {"old": "juggling", "new": "juggling balls"})
    assert st == 200, out
    names = Bundle.open(studio_bundle).store.class_names
    assert "juggling balls" in names and "juggling" not in names
    st, _, out = request(studio.url + "api/threshold", "POST", {"value": 1.0})  # nothing reaches 1: all unknown
    assert st == 200 and out["threshold"]["live"] == 1.0
    got = sse_events(studio.url + "api/events", lambda e, d: e == "decision" and d["label"] == "unknown", 10)
    assert got
    assert request(studio.url + "api/threshold", "POST", {"value": 2})[0] == 400
    assert request(studio.url + "api/threshold", "POST", {"value": None})[2]["threshold"]["live"] == 0.0
    st, _, out = request(studio.url + "api/threshold/refit", "POST", {"far": 0.05})
    assert st == 400 and "cohort" in out["error"]  # the tiny bundle has none: said so, nothing changed


def test_refusals(studio, studio_bundle):
    before = Bundle.open(studio_bundle).store.class_names
    outside = studio.clips.parent
    listing = sorted(p.name for p in outside.iterdir())
    for bad in ("../escape", "a/b", "..", ".hidden", "back\\slash", "", "   ", "tab\there", None, 7):
        st, _, out = request(studio.url + "api/classes", "POST", {"name": bad})
        assert st == 400 and out["error"], (bad, out)
    assert sorted(p.name for p in outside.iterdir()) == listing  # nothing written outside the clips folder
    assert Bundle.open(studio_bundle).store.class_names == before
    st, _, out = request(studio.url + "api/classes", "POST", {"name": "x", "take": "../../etc"})
    assert st == 400 and "not a take id" in out["error"]
    assert request(studio.url + "api/takes/..%2F..%2Fetc/clips/0.jpg")[0] in (400, 404)
    assert request(studio.url + "api/takes/0123456789ab/clips/0", "DELETE")[0] == 404
    st, _, out = request(studio.url + "api/classes", "POST", raw=b'{"name": "' + b"x" * 70000 + b'"}',
                         headers={"Content-Type": "application/json"})
    assert st == 413, out
    assert request(studio.url + "api/classes", "POST", raw=b"name=x",
                   headers={"Content-Type": "application/x-www-form-urlencoded"})[0] == 415
    assert request(studio.url + "api/classes", "POST", {"name": "x"}, headers={"Origin": "http://evil.example"})[0] \
        == 403
    assert request(studio.url + "api/state", headers={"Host": "evil.example"})[0] == 400
    assert request(studio.url + "api/record", "POST", {"shots": 0})[0] == 400
    assert request(studio.url + "api/record", "POST", {"shots": 5, "seconds": "nan"})[0] == 400
    assert Bundle.open(studio_bundle).store.class_names == before


def test_token_required_beyond_loopback(studio_bundle, held_out_source, tmp_path):
    s = Studio(studio_bundle, held_out_source, tmp_path, host="127.0.0.2")  # loopback, but not 127.0.0.1
    try:
        assert s.token and f"token: {s.token}" in s.log()
        st, _, out = request(s.url + "api/state")
        assert st == 401 and "token" in out["error"]
        assert request(s.url + "api/state", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert request(s.url + "api/state", headers={"Authorization": f"Bearer {s.token}"})[0] == 200
        st, hdrs, _ = request(s.url + f"?token={s.token}")
        cookie = hdrs.get("set-cookie") or hdrs.get("Set-Cookie")
        assert st == 200 and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert request(s.url + "api/state", headers={"Cookie": cookie.split(";")[0]})[0] == 200
    finally:
        assert s.close() < 15


@pytest.mark.slow
def test_refit_threshold_on_the_cohort(studio_bundle, held_out_source, synth_data, tmp_path):
    """A bundle with an open-set cohort: the page's refit stores a znorm threshold (2-fold on the cohort) in the
    manifest, and the decisions carry the open-set score 'known' it thresholds."""
    from clipfsar.runtime.teaching.openset import build_cohort
    build_cohort(Bundle.open(studio_bundle), synth_data, "train", max_clips=40)
    s = Studio(studio_bundle, held_out_source, tmp_path)
    try:
        assert request(s.url + "api/state")[2]["threshold"]["refit_with"] == "cohort"
        st, _, out = request(s.url + "api/threshold/refit", "POST", {"far": 0.1})
        assert st == 200, out
        t = Bundle.open(studio_bundle).manifest.calibration["threshold"]
        assert t["score"] == "znorm" and t["split"] == "cohort (2-fold)" and t["far"] == 0.1 and 0 < t["value"] < 1
        assert t["accepted_unknown"] <= 0.1 and t["unknown_clips"] == 40
        assert out["threshold"]["bundle"] == t["value"] and out["threshold"]["live"] == t["value"]
        got = sse_events(s.url + "api/events", lambda e, d: e == "decision" and d["known"] is not None, 15)
        assert 0 <= got[-1][1]["known"] <= 1
        assert request(s.url + "api/threshold/refit", "POST", {"far": 1.5})[0] == 400
    finally:
        s.close()
