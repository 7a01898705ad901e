"""A tampered or damaged bundle is refused with a clear error, nothing is loaded, and nothing on disk is changed:
through the API (Bundle.open / Classifier.load) and through `clipfsar run` (exit 2, no traceback)."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from clipfsar.runtime.base.errors import BundleError
from clipfsar.runtime.bundle.reader import SCHEMA_VERSION, Bundle

CLI = [sys.executable, "-m", "clipfsar"]


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _edit_manifest(root, fn):
    m = json.loads((root / "manifest.json").read_text())
    fn(m)
    (root / "manifest.json").write_text(json.dumps(m))


def _rewrite_store(root, **changes):
    """Rewrite the prototype store with some tensors changed, and its hash in the manifest (a consistent forgery)."""
    b = Bundle.open(root)
    s = b.store
    tensors = {"prototypes": s.prototypes, "text_features": s.text_features, "shots": s.shots}
    tensors.update(changes)
    names = changes.pop("class_names", None) or list(s.class_names)
    tensors.pop("class_names", None)
    path = root / b.manifest.prototypes["file"]
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path),
              metadata={"class_names": json.dumps(names)})
    _edit_manifest(root, lambda m: m["prototypes"].update(sha256=_digest(path)))


def _graph_outside(root, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.copyfile(root / "image_encoder.onnx", outside)
    return outside


def _symlink_out(root, tmp_path):
    outside = _graph_outside(root, tmp_path)
    (root / "image_encoder.onnx").unlink()
    os.symlink(outside, root / "image_encoder.onnx")  # same bytes, same hash: refused for where it points


def _nan(root, tmp_path):
    p = Bundle.open(root).store.prototypes.copy()
    p[0, 0, 0] = np.nan
    _rewrite_store(root, prototypes=p)


def _inf(root, tmp_path):
    t = Bundle.open(root).store.text_features.copy()
    t[1, 2] = np.inf
    _rewrite_store(root, text_features=t)


CASES = {
    "graph bytes changed": (lambda r, t: (r / "query_head.onnx").write_bytes((r / "query_head.onnx").read_bytes()[:-1]
                                                                              + b"\x01"),
                            "query_head.onnx does not match its sha256"),
    "manifest path ../x": (lambda r, t: (_graph_outside(r, t),
                                         _edit_manifest(r, lambda m: m["graphs"]["image_encoder"].update(
                                             file="../outside.onnx"))),
                           "points outside the bundle"),
    "manifest absolute path": (lambda r, t: _edit_manifest(r, lambda m: m["graphs"]["image_encoder"].update(
        file=str(_graph_outside(r, t)))), "must be relative to the bundle"),
    "symlink pointing out": (_symlink_out, "points outside the bundle"),
    "newer schema": (lambda r, t: _edit_manifest(r, lambda m: m.update(schema_version=SCHEMA_VERSION + 1)),
                     "newer than this runtime reads"),
    "missing graph file": (lambda r, t: (r / "support_head.onnx").unlink(), "support_head.onnx is missing"),
    "missing store file": (lambda r, t: (r / "prototypes.safetensors").unlink(), "is missing"),
    "manifest not JSON": (lambda r, t: (r / "manifest.json").write_text("{\"schema_version\": 2,"),
                          "manifest.json is not valid JSON"),
    "manifest a list": (lambda r, t: (r / "manifest.json").write_text("[1, 2]"), "expected a JSON object"),
    "manifest wrong type": (lambda r, t: _edit_manifest(r, lambda m: m["model"].update(frames="8")),
                            "model.frames must be int"),
    "store NaN": (_nan, "NaN or infinite"),
    "store inf": (_inf, "NaN or infinite"),
    "store float64": (lambda r, t: _rewrite_store(r, prototypes=Bundle.open(r).store.prototypes.astype(np.float64)),
                      "prototypes are float64, expected float32"),
    "store int prototypes": (lambda r, t: _rewrite_store(r, prototypes=np.zeros(Bundle.open(r).store.prototypes.shape,
                                                                                 np.int32)),
                             "prototypes are int32"),
    "store text dims mismatch": (lambda r, t: _rewrite_store(r, text_features=Bundle.open(r).store.text_features[:, :-1]
                                                             .copy()), "do not match the prototypes"),
    "store T mismatch": (lambda r, t: _rewrite_store(r, prototypes=Bundle.open(r).store.prototypes[:, :-1].copy()),
                         "do not match T="),
    "store class count mismatch": (lambda r, t: _rewrite_store(r, class_names=["only-one"]),
                                   "do not match 1 classes"),
    "store negative shots": (lambda r, t: _rewrite_store(r, shots=-Bundle.open(r).store.shots),
                             "shots must be non-negative"),
    "store truncated": (lambda r, t: ((r / "prototypes.safetensors").write_bytes(
        (r / "prototypes.safetensors").read_bytes()[:100]),
        _edit_manifest(r, lambda m: m["prototypes"].update(sha256=_digest(r / "prototypes.safetensors")))),
        "unreadable"),
}


@pytest.fixture
def bundle_copy(tmp_path, tiny_bundle):
    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle, dst)
    return dst


@pytest.mark.parametrize("case", sorted(CASES))
def test_tampered_bundle_is_refused(case, bundle_copy, tmp_path):
    from clipfsar.runtime.classify.classifier import Classifier
    tamper, message = CASES[case]
    tamper(bundle_copy, tmp_path)
    before = {p.name: p.read_bytes() for p in bundle_copy.iterdir() if p.is_file()}
    with pytest.raises(BundleError, match=message.replace("(", r"\(").replace(".", r"\.")):
        Classifier.load(bundle_copy, backend="cpu")
    after = {p.name: p.read_bytes() for p in bundle_copy.iterdir() if p.is_file()}
    assert after == before  # refusing changes nothing


@pytest.mark.parametrize("case", ["graph bytes changed", "symlink pointing out", "store NaN"])
def test_tampered_bundle_through_the_cli(case, bundle_copy, tmp_path, stream_file):
    CASES[case][0](bundle_copy, tmp_path)
    r = subprocess.run(CLI + ["run", str(bundle_copy), "--source", str(stream_file), "--backend", "cpu"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: bundle {bundle_copy}") or \
        "prototype store" in r.stderr
    assert "Traceback" not in r.stderr
