"""Precision variants in the bundle manifest: round trip, old bundles, atomic adds, bad input."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from clipfsar.runtime.base.errors import BundleError
from clipfsar.runtime.bundle.edit import NewVariant, add_variants
from clipfsar.runtime.bundle.reader import SCHEMA_VERSION, Bundle


@pytest.fixture
def bundle_copy(tmp_path, tiny_bundle):
    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle, dst)
    return dst


def _fake_variant(tmp_path, bundle, name, tag):
    """A stand-in file for a variant (the manifest logic does not read the graph); bytes differ per tag."""
    src = tmp_path / f"{name}.{tag}.onnx"
    src.write_bytes(bundle.graph_path(name).read_bytes() + tag.encode())
    return src


def test_round_trip_and_graph_path(tmp_path, bundle_copy):
    b = Bundle.open(bundle_copy)
    assert b.precisions("image_encoder") == ("fp32",)
    src = _fake_variant(tmp_path, b, "image_encoder", "int8")
    report = {"variants": {"int8": {"accuracy": 0.5}}}
    b2 = add_variants(bundle_copy, {"image_encoder": {"int8": NewVariant(src, "int8-dynamic", {"cos_mean": 0.999})}},
                      precision_report=report)
    assert b2.precisions("image_encoder") == ("fp32", "int8")
    assert b2.precisions("query_head") == ("fp32",)
    assert b2.graph_path("image_encoder", "int8").read_bytes() == src.read_bytes()
    assert b2.graph_path("image_encoder") == b.graph_path("image_encoder")
    v = b2.manifest.graphs["image_encoder"].variants["int8"]
    assert (v.precision, v.method, v.report) == ("int8", "int8-dynamic", {"cos_mean": 0.999})
    assert b2.manifest.precision_report == report
    assert b2.manifest.schema_version == SCHEMA_VERSION
    # manifest keys written by others survive the rewrite
    m = json.loads((bundle_copy / "manifest.json").read_text())
    assert m["parity"] == json.loads((bundle_copy / "manifest.json").read_text())["parity"]


def test_replacing_a_variant_removes_the_old_file(tmp_path, bundle_copy):
    b = Bundle.open(bundle_copy)
    first = add_variants(bundle_copy,
                         {"image_encoder": {"fp16": NewVariant(_fake_variant(tmp_path, b, "image_encoder", "a"))}})
    old = first.graph_path("image_encoder", "fp16")
    second = add_variants(bundle_copy,
                          {"image_encoder": {"fp16": NewVariant(_fake_variant(tmp_path, b, "image_encoder", "b"))}})
    assert second.graph_path("image_encoder", "fp16") != old and not old.exists()


def test_missing_precision_lists_what_the_bundle_has(bundle_copy):
    b = Bundle.open(bundle_copy)
    with pytest.raises(BundleError, match="no int8 variant; it has fp32"):
        b.graph_path("image_encoder", "int8")
    with pytest.raises(BundleError, match="no graph 'nope'"):
        b.graph_path("nope")


def test_version_1_bundle_opens_as_fp32(bundle_copy):
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["schema_version"] = 1
    for g in m["graphs"].values():
        g.pop("variants", None)
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    b = Bundle.open(bundle_copy)
    assert all(b.precisions(n) == ("fp32",) for n in b.manifest.graphs)
    assert b.manifest.precision_report == {}


def test_variant_with_wrong_hash_or_bad_precision(tmp_path, bundle_copy):
    src = _fake_variant(tmp_path, Bundle.open(bundle_copy), "query_head", "x")
    with pytest.raises(BundleError, match="unknown variant precision 'int4'"):
        add_variants(bundle_copy, {"query_head": {"int4": NewVariant(src)}})
    path = add_variants(bundle_copy, {"query_head": {"fp16": NewVariant(src)}}).graph_path("query_head", "fp16")
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(BundleError, match=r"graph 'query_head' \(fp16\) file .* does not match its sha256"):
        Bundle.open(bundle_copy)


def test_bad_input_leaves_bundle_unchanged(tmp_path, bundle_copy):
    before = (bundle_copy / "manifest.json").read_bytes()
    with pytest.raises(BundleError, match="not found"):
        add_variants(bundle_copy, {"image_encoder": {"int8": NewVariant(tmp_path / "missing.onnx")}})
    with pytest.raises(BundleError, match="no graph 'decoder'"):
        add_variants(bundle_copy, {"decoder": {"int8": NewVariant(tmp_path / "missing.onnx")}})
    assert (bundle_copy / "manifest.json").read_bytes() == before


_KILL_SCRIPT = """
import contextlib, os, sys
from pathlib import Path
import clipfsar.runtime.bundle.edit as B
real = B.staged_file
@contextlib.contextmanager
def dying(path, *a, **k):
    with real(path, *a, **k) as tmp:
        yield tmp
        if Path(path).name == B.MANIFEST:
            os._exit(9)      # the new manifest is written in full but not yet renamed into place
B.staged_file = dying
B.add_variants(sys.argv[1], {"image_encoder": {"int8": B.NewVariant(Path(sys.argv[2]))}})
"""


def test_killed_mid_add_leaves_bundle_valid(tmp_path, bundle_copy):
    src = _fake_variant(tmp_path, Bundle.open(bundle_copy), "image_encoder", "k")
    before = (bundle_copy / "manifest.json").read_bytes()
    r = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(bundle_copy), str(src)])
    assert r.returncode == 9
    assert (bundle_copy / "manifest.json").read_bytes() == before
    assert Bundle.open(bundle_copy).precisions("image_encoder") == ("fp32",)
    # the orphaned copy is cleaned up by the next successful add
    assert os.listdir(bundle_copy / "variants")
    q = _fake_variant(tmp_path, Bundle.open(bundle_copy), "query_head", "q")
    add_variants(bundle_copy, {"query_head": {"fp16": NewVariant(q)}})
    assert len(os.listdir(bundle_copy / "variants")) == 1
