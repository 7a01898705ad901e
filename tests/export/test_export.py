import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest

from clipfsar.calib.bundle_eval import evaluate_bundle
from clipfsar.export.trt_lint import lint
from clipfsar.runtime.base.errors import ClipFsarError, DatasetError
from clipfsar.runtime.bundle.reader import Bundle
from clipfsar.runtime.engines.backends import OnnxGraph
from clipfsar.train.evaluate import evaluate_checkpoint

CLI = [sys.executable, "-m", "clipfsar"]


def test_bundle_contents_and_parity(tiny_bundle):
    b = Bundle.open(tiny_bundle)
    m = b.manifest
    assert set(m.graphs) == {"image_encoder", "text_encoder", "support_head", "query_head"}
    assert len(b.store.class_names) == 9 and b.store.prototypes.shape == (9, 8, 64)
    assert (b.store.shots == 2).all()
    assert all(" " in n for n in b.store.class_names)
    for name, d in m.parity["graphs"].items():
        assert d <= 1e-4, name
    assert m.parity["prototypes_max_abs_diff"] <= 1e-4
    ep = m.parity["episodes"]
    assert ep["same_predictions"] == ep["episodes"] == 20
    assert m.graphs["image_encoder"].inputs[0].shape == ["batch", 3, 64, 64]
    assert [o.name for o in m.graphs["query_head"].outputs] == ["probs", "p_fewshot", "p_videotext", "distances"]
    assert m.model.frames == 8 and m.model.embed_dim == 64 and m.model.window_seconds > 0


def test_graphs_opset_dynamic_axes_and_no_argmax(tiny_bundle):
    b = Bundle.open(tiny_bundle)
    for name in b.manifest.graphs:
        model = onnx.load(str(b.graph_path(name)))
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        if name == "text_encoder":
            assert "ArgMax" not in {n.op_type for n in model.graph.node}
        if name in ("image_encoder", "text_encoder"):
            assert "LayerNormalization" in {n.op_type for n in model.graph.node}
    g = OnnxGraph(b.graph_path("support_head"), backend="cpu")
    for n, k in ((1, 1), (4, 3)):  # dynamic class and shot axes
        out = g.run(support=np.random.rand(n, k, 8, 64).astype(np.float32),
                    text=np.random.rand(n, 64).astype(np.float32))["prototypes"]
        assert out.shape == (n, 8, 64)
    q = OnnxGraph(b.graph_path("query_head"), backend="cpu")
    out = q.run(query=np.random.rand(5, 8, 64).astype(np.float32), prototypes=b.store.prototypes,
                text=b.store.text_features)
    assert out["probs"].shape == (5, 9)
    np.testing.assert_allclose(out["probs"].sum(-1), 1, rtol=1e-5)


def test_tensorrt_lint_passes_on_every_exported_graph(tiny_bundle):
    b = Bundle.open(tiny_bundle)
    for name in b.manifest.graphs:
        report = lint(b.graph_path(name))
        assert report.ok, (name, report.problems[:5])


def test_lint_flags_unsupported_ops_and_dtypes():
    node = onnx.helper.make_node("Bernoulli", ["x"], ["y"])
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.DOUBLE, [2])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.DOUBLE, [2])])
    report = lint(onnx.helper.make_model(graph))
    assert not report.ok
    assert any("Bernoulli" in p for p in report.problems) and any("DOUBLE" in p for p in report.problems)


def test_eval_through_bundle_equals_checkpoint(tiny_bundle, tiny_checkpoint, synth_data):
    a = evaluate_checkpoint(tiny_checkpoint, synth_data, "test", 5, 1, 100, 3)
    b = evaluate_bundle(tiny_bundle, synth_data, "test", 5, 1, 100, 3)
    assert a["branches"] == b["branches"]


def test_bad_checkpoint_and_support(tmp_path, tiny_checkpoint, synth_data):
    from clipfsar.export.bundle_export import export_bundle
    from clipfsar.runtime.base.errors import CheckpointError
    broken = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        export_bundle(broken, synth_data, tmp_path / "b")
    sup = tmp_path / "support"
    (sup / "waving").mkdir(parents=True)
    (sup / "jumping").mkdir()
    clip = next(synth_data.glob("*/*.mp4"))
    shutil.copy(clip, sup / "waving" / "a.mp4")
    with pytest.raises(DatasetError, match="'jumping'.*has no clips"):
        export_bundle(tiny_checkpoint, sup, tmp_path / "b")
    shutil.copy(clip, sup / "jumping" / "a.mp4")
    (sup / "jumping" / "b.mp4").write_bytes(b"broken")
    with pytest.raises(DatasetError, match="'jumping' has 1 readable clips, fewer than --shots 2.*b.mp4"):
        export_bundle(tiny_checkpoint, sup, tmp_path / "b", shots=2)
    (sup / "jumping_").mkdir()
    with pytest.raises(DatasetError, match="both read as 'jumping'"):
        export_bundle(tiny_checkpoint, sup, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_existing_output_refused_then_forced(tmp_path, tiny_checkpoint, synth_data, tiny_bundle):
    out = tmp_path / "b"
    shutil.copytree(tiny_bundle, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = subprocess.run(CLI + ["export", "--checkpoint", str(tiny_checkpoint), "--support", str(synth_data),
                              "--classes", str(synth_data / "splits" / "val.txt"), "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "exists; pass --force" in r.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    r = subprocess.run(CLI + ["export", "--checkpoint", str(tiny_checkpoint), "--support", str(synth_data),
                              "--classes", str(synth_data / "splits" / "val.txt"), "--out", str(out), "--force"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "same predictions" in r.stdout
    assert Bundle.open(out).store.class_names != Bundle.open(tiny_bundle).store.class_names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # nothing half-written left beside it


def test_force_never_replaces_an_input_or_a_non_bundle(tmp_path, tiny_checkpoint, synth_data):
    """`export --out RUN --force` with RUN the training run (or any folder that is not a bundle) is refused."""
    from clipfsar.export.bundle_export import export_bundle
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint, run)
    before = sorted(p.name for p in run.rglob("*"))
    r = subprocess.run(CLI + ["export", "--checkpoint", str(run), "--support", str(synth_data), "--out", str(run),
                              "--force"], capture_output=True, text=True)
    assert r.returncode == 2 and "is the input" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert sorted(p.name for p in run.rglob("*")) == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ClipFsarError, match="notes exists and is not a bundle"):
        export_bundle(run, synth_data, other, force=True)
    assert (other / "keep.txt").read_text() == "mine"


def test_failed_export_leaves_existing_bundle(tmp_path, tiny_checkpoint, tiny_bundle):
    from clipfsar.export.bundle_export import export_bundle
    out = tmp_path / "b"
    shutil.copytree(tiny_bundle, out)
    with pytest.raises(ClipFsarError):
        export_bundle(tiny_checkpoint, tmp_path / "no-support", out, force=True)
    Bundle.open(out)  # still valid
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["ViT-B-16", "RN50"])
def test_full_size_export(tmp_path, synth_data, arch):
    import torch

    from clipfsar.export.bundle_export import export_bundle
    from clipfsar.train import create_model_and_transforms, save_checkpoint
    torch.manual_seed(0)
    model, prep = create_model_and_transforms(arch)
    ck = save_checkpoint(tmp_path / "ck", model, prep)
    b = export_bundle(ck, synth_data, tmp_path / "b", classes_file=synth_data / "splits" / "test.txt",
                      parity_episodes=5)
    assert all(d <= 1e-4 for d in b.manifest.parity["graphs"].values())
    for name in b.manifest.graphs:
        assert lint(b.graph_path(name)).ok
