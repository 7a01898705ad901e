"""`clipfsar export-triton`: every config.pbtxt parsed with Triton's own protobuf schema (from tritonclient) and
checked against the bundle's manifest; the baked query head equals the bundle's; bad input."""
import json
import py_compile
import subprocess
import sys

import numpy as np
import pytest

from clipfsar.export.triton_repo import export_triton_repo
from clipfsar.runtime.base.errors import ClipFsarError
from clipfsar.runtime.bundle.reader import Bundle, sha256_of

CLI = [sys.executable, "-m", "clipfsar"]
MODELS = ("image_encoder", "query_head", "window_classifier", "bundle_info")


@pytest.fixture(scope="module")
def repo(tiny_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("triton") / "repo"
    r = subprocess.run(CLI + ["export-triton", str(tiny_bundle), str(out), "--instances", "2", "--max-batch", "32",
                              "--queue-delay-us", "500"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return out


def _config(repo, name):
    pb = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format
    return text_format.Parse((repo / name / "config.pbtxt").read_text(), pb.ModelConfig()), pb


def _dims(spec_shape):
    return [int(d) for d in spec_shape[1:]]  # manifest shapes start with the dynamic batch axis


def test_every_config_parses_and_matches_the_manifest(repo, tiny_bundle):
    b = Bundle.open(tiny_bundle)
    facts, n = b.manifest.model, len(b.store.class_names)
    graphs = b.manifest.graphs
    T, D, H = facts.frames, facts.embed_dim, facts.image_size
    for name in MODELS:
        cfg, pb = _config(repo, name)
        assert cfg.name == name
        assert cfg.dynamic_batching.max_queue_delay_microseconds == (0 if name == "bundle_info" else 500)
        assert cfg.instance_group[0].count == (1 if name == "bundle_info" else 2)
        assert cfg.version_policy.latest.num_versions == 1
        assert (repo / name / "1").is_dir()
    enc, pb = _config(repo, "image_encoder")
    assert enc.platform == "onnxruntime_onnx" and enc.max_batch_size == 32
    assert enc.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    spec = graphs["image_encoder"]
    assert [(i.name, list(i.dims), i.data_type) for i in enc.input] == \
        [(spec.inputs[0].name, _dims(spec.inputs[0].shape), pb.TYPE_FP32)] == [("images", [3, H, H], pb.TYPE_FP32)]
    assert [(o.name, list(o.dims)) for o in enc.output] == [(spec.outputs[0].name, [D])]
    assert sha256_of(repo / "image_encoder" / "1" / "model.onnx") == spec.sha256

    head, pb = _config(repo, "query_head")
    spec = graphs["query_head"]
    assert [(i.name, list(i.dims)) for i in head.input] == [("query", _dims(spec.inputs[0].shape))] == \
        [("query", [T, D])]
    assert [(o.name, list(o.dims), o.data_type) for o in head.output] == \
        [(o.name, [n], pb.TYPE_FP32) for o in spec.outputs] + [("calibrated_probs", [n], pb.TYPE_FP32)]

    win, pb = _config(repo, "window_classifier")
    assert win.backend == "python" and win.max_batch_size == 32 // T
    assert [(i.name, list(i.dims)) for i in win.input] == [("frames", [T, 3, H, H])]
    assert [o.name for o in win.output] == [o.name for o in spec.outputs] + ["calibrated_probs"]
    info, pb = _config(repo, "bundle_info")
    assert info.backend == "python" and info.input[0].data_type == pb.TYPE_STRING
    for name in ("window_classifier", "bundle_info"):
        py_compile.compile(str(repo / name / "1" / "model.py"), doraise=True)
    assert (repo / "classes.txt").read_text().split("\n")[:n] == list(b.store.class_names)


def test_baked_head_equals_the_bundle_head(repo, tiny_bundle):
    import onnxruntime as ort
    b = Bundle.open(tiny_bundle)
    store = b.store
    baked = ort.InferenceSession(str(repo / "query_head" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in baked.get_inputs()] == ["query"]
    orig = ort.InferenceSession(str(b.graph_path("query_head")), providers=["CPUExecutionProvider"])
    q = np.random.default_rng(0).standard_normal((5, b.manifest.model.frames, b.manifest.model.embed_dim))
    q = q.astype(np.float32)
    a = baked.run([o.name for o in orig.get_outputs()], {"query": q})
    o = orig.run(None, {"query": q, "prototypes": store.prototypes, "text": store.text_features})
    for x, y in zip(a, o, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6)


def test_info_satisfies_the_client_check(repo, tiny_bundle):
    from clipfsar.runtime.engines.triton_client import BundleCheck
    from clipfsar.runtime.engines.triton_protocol import store_digest
    b = Bundle.open(tiny_bundle)
    info = json.loads((repo / "bundle_info" / "1" / "info.json").read_text())
    for g in ("image_encoder", "query_head"):
        BundleCheck("grpc://x:1", g, b.manifest.graphs[g], b.manifest.model)(info)  # raises on a mismatch
    assert info["store_digest"] == store_digest(b.store.prototypes, b.store.text_features)


def test_export_triton_is_torch_free(tiny_bundle, tmp_path):
    code = ("import sys; from clipfsar.export.triton_repo import export_triton_repo; "
            f"export_triton_repo({str(tiny_bundle)!r}, {str(tmp_path / 'r')!r}); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_bad_input(tiny_bundle, tmp_path):
    (tmp_path / "exists").mkdir()
    (tmp_path / "exists" / "keep.txt").write_text("mine")
    with pytest.raises(ClipFsarError, match="exists; pass --overwrite"):
        export_triton_repo(tiny_bundle, tmp_path / "exists")
    assert (tmp_path / "exists" / "keep.txt").read_text() == "mine"
    with pytest.raises(ClipFsarError, match="smaller than one window"):
        export_triton_repo(tiny_bundle, tmp_path / "r", max_batch=4)
    with pytest.raises(ClipFsarError, match="unknown instance kind"):
        export_triton_repo(tiny_bundle, tmp_path / "r", kind="tpu")
    assert not (tmp_path / "r").exists()
    r = subprocess.run(CLI + ["export-triton", str(tmp_path / "nobundle"), str(tmp_path / "r2")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "error: bundle folder not found" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r2").exists()


def test_verified_engine_becomes_a_plan(tiny_bundle, tmp_path):
    """A cached engine (runtime/engines/trt_cache.py layout) whose record vouches for this graph ships as tensorrt_plan;
    one whose bytes do not match its record is skipped. (The bytes here are not a real engine: only a GPU with
    TensorRT builds one; what is tested is the selection and the config.)"""
    import hashlib
    b = Bundle.open(tiny_bundle)
    eng = tmp_path / "engines"
    eng.mkdir()
    blob = b"not-a-real-plan"
    rec = {"format": 1, "graph": "image_encoder", "engine_sha256": hashlib.sha256(blob).hexdigest(),
           "key": {"graph_sha256": b.graph_sha256("image_encoder"), "precision": "fp32"}}
    (eng / "image_encoder.fp32.0123456789abcdef.engine").write_bytes(blob + b"tampered")
    (eng / "image_encoder.fp32.0123456789abcdef.json").write_text(json.dumps(rec))
    export_triton_repo(tiny_bundle, tmp_path / "r1", engines=eng)
    assert (tmp_path / "r1" / "image_encoder" / "1" / "model.onnx").exists()
    (eng / "image_encoder.fp32.0123456789abcdef.engine").write_bytes(blob)
    export_triton_repo(tiny_bundle, tmp_path / "r2", engines=eng)
    assert (tmp_path / "r2" / "image_encoder" / "1" / "model.plan").read_bytes() == blob
    cfg, _ = _config(tmp_path / "r2", "image_encoder")
    assert cfg.platform == "tensorrt_plan"


def test_overwrite_never_destroys_inputs_or_other_folders(tiny_bundle, tmp_path):
    """--overwrite replaces only a model repository; never the bundle, a folder holding it, or other data."""
    import shutil
    bundle = tmp_path / "holder" / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    (tmp_path / "holder" / "notes.txt").write_text("mine")
    before = sorted(p.name for p in bundle.iterdir())
    for out, reason in ((bundle, "is the input"), (tmp_path / "holder", "a folder holding the input")):
        r = subprocess.run(CLI + ["export-triton", str(bundle), str(out), "--overwrite"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and reason in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert sorted(p.name for p in bundle.iterdir()) == before
    assert (tmp_path / "holder" / "notes.txt").read_text() == "mine"
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ClipFsarError, match="not a model repository"):
        export_triton_repo(bundle, other, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"
    export_triton_repo(bundle, tmp_path / "repo")
    export_triton_repo(bundle, tmp_path / "repo", overwrite=True)  # a model repository: replaced
    assert (tmp_path / "repo" / "bundle_info" / "config.pbtxt").is_file()


def test_output_under_a_file_is_a_clear_error(tiny_bundle, tmp_path):
    (tmp_path / "afile").write_text("x")
    r = subprocess.run(CLI + ["export-triton", str(tiny_bundle), str(tmp_path / "afile" / "x")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "afile is not a folder" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert (tmp_path / "afile").read_text() == "x"


def _calibrated_equals_the_runtime(repo_dir, bundle_dir):
    import onnxruntime as ort

    from clipfsar.runtime.classify.classifier import Classifier
    clf = Classifier.load(bundle_dir, backend="cpu")
    baked = ort.InferenceSession(str(repo_dir / "query_head" / "1" / "model.onnx"),
                                 providers=["CPUExecutionProvider"])
    q = np.random.default_rng(1).standard_normal((4, clf.facts.frames, clf.facts.embed_dim)).astype(np.float32)
    served = baked.run(["calibrated_probs"], {"query": q})[0]
    np.testing.assert_allclose(served, clf.scores(q), atol=2e-6)  # what `clipfsar run` reports
    info = json.loads((repo_dir / "bundle_info" / "1" / "info.json").read_text())["scores"]
    assert info["output"] == "calibrated_probs" and info["calibrated"] == clf.calibrated
    assert info["threshold"]["value"] == (clf.default_threshold or None)
    return clf, info


def test_calibrated_probs_and_threshold_equal_the_local_runtime(repo, tiny_bundle, tmp_path):
    """The repository's `calibrated_probs` is what the local runtime reports, with the bundle's threshold; for a
    calibrated bundle, one with a zero-shot class and a fitted threshold, and an uncalibrated one."""
    import dataclasses
    import shutil

    from clipfsar.runtime.bundle.edit import replace_store, update_manifest
    clf, info = _calibrated_equals_the_runtime(repo, tiny_bundle)
    assert clf.calibrated  # the fixture bundle has a fitted temperature (val split)
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    cal = dict(Bundle.open(b).manifest.calibration)
    cal.update(zero_shot={"a": 30.0, "b": -2.0}, threshold={"score": "max_prob", "value": 0.3125})
    update_manifest(b, "calibration", cal)

    def zero_shot_first(store):  # class 0 by name only: scored by the zero-shot map
        shots, protos = store.shots.copy(), store.prototypes.copy()
        shots[0], protos[0] = 0, 0.0
        return dataclasses.replace(store, shots=shots, prototypes=protos)
    replace_store(b, zero_shot_first)
    export_triton_repo(b, tmp_path / "r1")
    clf, info = _calibrated_equals_the_runtime(tmp_path / "r1", b)
    assert info["threshold"] == {"score": "max_prob", "value": 0.3125}
    assert 'key: "threshold" value: { string_value: "0.3125" }' in \
        (tmp_path / "r1" / "query_head" / "config.pbtxt").read_text()
    c = tmp_path / "c"
    shutil.copytree(tiny_bundle, c)
    update_manifest(c, "calibration", {})  # uncalibrated, every class few-shot: calibrated_probs = probs
    export_triton_repo(c, tmp_path / "r2")
    clf, info = _calibrated_equals_the_runtime(tmp_path / "r2", c)
    assert not clf.calibrated and info["threshold"]["value"] is None
