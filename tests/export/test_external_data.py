"""ONNX external data: graphs over 2 GB are written as a graph file plus one data file, listed with its sha256 in
the manifest, checked by Bundle.open and loaded by the runtime. The default suite forces it on the tiny model; the
ViT-H-14 export (632 M image-tower parameters, > 2 GB) is `slow`."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
from data_media import write_video  # noqa: E402


def _support(root: Path, classes=("kick_ball", "run_fast", "brush_hair"), frames: int = 8) -> Path:
    for c in classes:
        write_video(root / c / "a.avi", frames)
    return root


CLASS_MAP = {"test18": "pretending to open something", "87": "pushing something left", "train3": "brushing hair"}


@pytest.fixture(scope="module")
def external_bundle(tiny_checkpoint, tmp_path_factory):
    from clipfsar.export.bundle_export import export_bundle
    tmp = tmp_path_factory.mktemp("ext")
    # numbered class folders (as SSv2's few-shot splits) named by a class-name map
    export_bundle(tiny_checkpoint, _support(tmp / "support", ("test18", "87", "train3")), tmp / "bundle",
                  parity_episodes=3, external_data=True, class_map=CLASS_MAP)
    return tmp / "bundle"


def test_forced_external_data_bundle_opens_and_runs(external_bundle, tmp_path):
    from clipfsar.runtime import Classifier
    from clipfsar.runtime.bundle.reader import Bundle, sha256_of
    from clipfsar.runtime.video.sources import FileSource
    b = Bundle.open(external_bundle)
    for name, g in b.manifest.graphs.items():
        assert [d["file"] for d in g.data] == [f"{name}.onnx.data"]
        assert g.data[0]["sha256"] == sha256_of(external_bundle / g.data[0]["file"])
        assert (external_bundle / g.file).stat().st_size < (external_bundle / g.data[0]["file"]).stat().st_size
    assert b.manifest.parity["episodes"]["same_predictions"] == 3
    assert sorted(b.store.class_names) == sorted(CLASS_MAP.values()) and b.manifest.class_map == CLASS_MAP
    clf = Classifier.load(external_bundle, backend="cpu")
    frames = [f.image for f in FileSource(write_video(tmp_path / "q.avi", 8)).frames()]
    result = clf.classify_clip(frames)
    assert result.label in clf.class_names and sum(result.scores) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("damage,error", [("change", "external data file image_encoder.onnx.data does not match "
                                                     "its sha256"),
                                          ("remove", "external data file image_encoder.onnx.data is missing")])
def test_external_data_is_checked_by_hash(external_bundle, tmp_path, damage, error):
    from clipfsar.runtime.base.errors import BundleError
    from clipfsar.runtime.bundle.reader import Bundle
    copy = tmp_path / "b"
    shutil.copytree(external_bundle, copy)
    data = copy / "image_encoder.onnx.data"
    if damage == "change":
        raw = bytearray(data.read_bytes())
        raw[100] ^= 0xFF
        data.write_bytes(bytes(raw))
    else:
        data.unlink()
    with pytest.raises(BundleError, match=error):
        Bundle.open(copy)


def test_manifest_paths_of_external_data_stay_inside(external_bundle, tmp_path):
    from clipfsar.runtime.base.errors import BundleError
    from clipfsar.runtime.bundle.reader import Bundle
    copy = tmp_path / "b"
    shutil.copytree(external_bundle, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["graphs"]["query_head"]["data"][0]["file"] = "../elsewhere.data"
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="points outside the bundle"):
        Bundle.open(copy)


def test_size_decides_external_data(tiny_checkpoint, tmp_path, monkeypatch):
    import onnx

    from clipfsar.export import onnx_export
    from clipfsar.train.checkpoint import load_checkpoint
    model, prep, _ = load_checkpoint(tiny_checkpoint)
    mods, examples = onnx_export.graph_modules(model), onnx_export.example_inputs(model, prep.image_size)
    assert onnx_export.export_graph(mods["support_head"], "support_head", examples["support_head"],
                                    tmp_path / "small.onnx") == []  # 1 MB: one file
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 100_000)  # as if it were over the limit
    data = onnx_export.export_graph(mods["support_head"], "support_head", examples["support_head"],
                                    tmp_path / "large.onnx")
    assert data == ["support_head.onnx.data"] and (tmp_path / data[0]).is_file()
    onnx.checker.check_model(str(tmp_path / "large.onnx"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["large.onnx", "small.onnx", "support_head.onnx.data"]
    assert onnx_export.check_parity(mods["support_head"], "support_head", examples["support_head"],
                                    tmp_path / "large.onnx") < 1e-5


@pytest.mark.slow
def test_vit_h_14_exports_with_external_data(tmp_path):
    """Random-init ViT-H-14 (image tower 632 M parameters): the image and text graphs exceed 2 GB."""
    import torch

    from clipfsar.export.bundle_export import export_bundle
    from clipfsar.runtime.bundle.reader import Bundle
    from clipfsar.train import create_model_and_transforms, save_checkpoint
    torch.manual_seed(0)
    model, prep = create_model_and_transforms("ViT-H-14", frames=8)
    ckpt = save_checkpoint(tmp_path / "ckpt", model, prep)
    del model
    export_bundle(ckpt, _support(tmp_path / "support", frames=8), tmp_path / "bundle", parity_episodes=1)
    b = Bundle.open(tmp_path / "bundle")
    assert [d["file"] for d in b.manifest.graphs["image_encoder"].data] == ["image_encoder.onnx.data"]
    assert (tmp_path / "bundle" / "image_encoder.onnx.data").stat().st_size > 2_000_000_000
