import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from clipfsar.runtime import Classifier
from clipfsar.runtime.base.errors import BundleError
from clipfsar.runtime.video.clips import count_frames, read_frames
from clipfsar.runtime.video.sources import SourceError
from clipfsar.train.checkpoint import load_checkpoint
from clipfsar.train.features import load_clip_array

CLI = [sys.executable, "-m", "clipfsar"]


@pytest.fixture(scope="module")
def clf(tiny_bundle):
    return Classifier.load(tiny_bundle, backend="cpu")


def _test_clips(synth_data, n=6):
    names = (synth_data / "splits" / "test.txt").read_text().split()
    return [sorted((synth_data / c).glob("*.mp4"))[-1] for c in names[:n]]


def test_classifies_clips_exactly_as_pytorch(clf, tiny_checkpoint, synth_data):
    from clipfsar.export.graphs import QueryHead
    model, prep, _ = load_checkpoint(tiny_checkpoint)
    store = clf.bundle.store
    head = QueryHead(model).eval()
    for clip in _test_clips(synth_data):
        x = torch.from_numpy(load_clip_array(clip, -1, 8, prep))[None]  # the training path
        with torch.no_grad():
            probs_t = head(model.encode_frames(x), torch.from_numpy(store.prototypes),
                           torch.from_numpy(store.text_features))[0][0].numpy()
        frames = read_frames(clip, list(range(count_frames(clip))))  # all frames, as OpenCV gives them
        res = clf.classify_clip(frames)
        assert res.label == store.class_names[int(np.argmax(probs_t))]
        np.testing.assert_allclose(res.fused, probs_t, atol=1e-5)  # scores: calibrated (test_calibration.py)
        assert res.score == max(res.scores)


def test_preprocessing_parity_embeddings(clf, tiny_checkpoint, synth_data):
    model, prep, _ = load_checkpoint(tiny_checkpoint)
    clip = _test_clips(synth_data, 1)[0]
    x = load_clip_array(clip, -1, 8, prep)
    with torch.no_grad():
        emb_t = model.encode_frames(torch.from_numpy(x)[None])[0].numpy()
    from clipfsar.runtime.video.clips import read_clip
    emb_r = clf.encode(read_clip(clip, 8))
    cos = (emb_t * emb_r).sum(-1) / np.linalg.norm(emb_t, axis=-1) / np.linalg.norm(emb_r, axis=-1)
    assert cos.min() >= 0.9999


def test_threshold_gives_unknown(clf, synth_data):
    frames = read_frames(_test_clips(synth_data, 1)[0], list(range(8)))
    assert clf.classify_clip(frames, threshold=1.01).label == "unknown"
    with pytest.raises(Exception, match="no frames"):
        clf.classify_clip([])


def test_stream_decision_times_and_one_encoding_per_sampled_frame(tiny_bundle, stream_file):
    clf = Classifier.load(tiny_bundle, backend="cpu")
    ds = list(clf.stream(stream_file, window=2.0))  # T = 8 -> a sample every 0.25 s = every 3rd frame at 12 fps
    assert [d.frame for d in ds] == [21, 24, 27, 30, 33]
    assert ds[0].t_start == 0.0 and ds[0].t_end == pytest.approx(1.75)
    assert ds[-1].t_start == pytest.approx(1.0) and ds[-1].t_end == pytest.approx(2.75)
    s = clf.stats
    assert s.frames_read == 36 and s.frames_sampled == 12
    assert s.encoder_calls == s.encoder_images == 12  # each sampled frame encoded once, never again
    assert s.head_calls == s.decisions == 5
    for d in ds:
        assert len(d.scores) == len(clf.class_names) and abs(sum(d.scores) - 1) < 1e-4


def test_hop_and_smoothing(tiny_bundle, stream_file):
    clf = Classifier.load(tiny_bundle, backend="cpu")
    ds = list(clf.stream(stream_file, window=2.0, hop=0.5, smooth=2))
    assert [d.frame for d in ds] == [21, 27, 33]
    clf2 = Classifier.load(tiny_bundle, backend="cpu")
    raw = list(clf2.stream(stream_file, window=2.0, hop=0.5))
    np.testing.assert_allclose(ds[1].scores, (np.array(raw[0].scores) + raw[1].scores) / 2, atol=1e-6)


def test_several_streams_batched(tiny_bundle, stream_file):
    clf = Classifier.load(tiny_bundle, backend="cpu")
    out = list(clf.stream_many([stream_file, stream_file], window=2.0))
    assert sorted(i for i, _ in out) == [0] * 5 + [1] * 5
    assert clf.stats.encoder_images == 24 and clf.stats.encoder_calls == 12  # two frames per encoder call
    single = list(Classifier.load(tiny_bundle, backend="cpu").stream(stream_file, window=2.0))
    np.testing.assert_allclose([d.scores for i, d in out if i == 1], [d.scores for d in single], atol=1e-5)


def test_window_longer_than_file(clf, stream_file):
    with pytest.raises(SourceError, match="window of 10 s is longer than"):
        list(clf.stream(stream_file, window=10))


def test_truncated_video_decisions_then_clear_error(clf, tmp_path, synth_data):
    from clipfsar.train.synth import render_clip, write_video
    path = tmp_path / "long.avi"
    write_video(path, render_clip("circle", "moving up", np.random.default_rng(0), 64, 60), fps=12)
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    seen = []
    with pytest.raises(SourceError, match="stream ended at frame .* of 60"):
        for d in clf.stream(cut, window=1.0):
            seen.append(d)
    assert seen  # decisions up to the damage


def test_cli_json_and_bad_inputs(tiny_bundle, stream_file, tmp_path):
    r = subprocess.run(CLI + ["run", str(tiny_bundle), "--source", str(stream_file), "--json", "--window", "2",
                              "--save", str(tmp_path / "out.mp4")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [x["frame"] for x in rows] == [21, 24, 27, 30, 33]
    assert "CPUExecutionProvider" in r.stderr
    assert count_frames(tmp_path / "out.mp4") == 36
    for source, msg in ((tmp_path / "missing.mp4", "source not found"),
                        (tmp_path / "bad.mp4", "cannot open video")):
        if source.name == "bad.mp4":
            source.write_bytes(b"not a video at all")
        r = subprocess.run(CLI + ["run", str(tiny_bundle), "--source", str(source)], capture_output=True, text=True)
        assert r.returncode == 2 and msg in r.stderr and not r.stdout
    broken = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, broken)
    (broken / "prototypes.safetensors").write_bytes(b"x")
    r = subprocess.run(CLI + ["run", str(broken), "--source", str(stream_file)], capture_output=True, text=True)
    assert r.returncode == 2 and "does not match its sha256" in r.stderr
    with pytest.raises(BundleError):
        Classifier.load(broken)


def test_ctrl_c_stops_cleanly_and_flushes_video(tiny_bundle, stream_file, tmp_path):
    import signal
    import time
    out = tmp_path / "partial.mp4"
    p = subprocess.Popen(CLI + ["run", str(tiny_bundle), "--source", str(stream_file), "--max-fps", "12", "--json",
                                "--window", "1", "--save", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True,  # a shell that started us in the background may ignore SIGINT: restore it
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = p.stdout.readline()  # the first decision: the stream is running
    assert json.loads(first)["frame"] >= 0
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, stderr
    assert "stopped after" in stderr and "annotated frames" in stderr
    assert 0 < count_frames(out) < 36  # a playable file with what was written before the stop


def test_bench_reports_stages_and_memory(tiny_bundle, stream_file):
    from clipfsar.runtime.cli.bench import run_bench
    report = run_bench(tiny_bundle, stream_file, ["cpu"], total_frames=120)
    r = report["backends"][0]
    assert r["provider"] == "CPUExecutionProvider" and r["frames"] == 120
    assert r["encoder_calls"] == r["sampled"] and r["decisions"] > 0
    assert set(r["ms_per_decision"]) == {"decode", "preprocess", "encoder", "head", "post"}
    assert r["rss_mb_start"] > 0 and r["rss_mb_end"] > 0
