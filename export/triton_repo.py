"""``clipfsar export-triton``: a bundle as a stock Triton model repository (tritonserver container, DeepStream).

Writes (no torch; onnx + numpy; H = image size, T = frames, D = embedding dim, N = classes)::

    OUT/image_encoder/config.pbtxt + 1/model.onnx   onnxruntime_onnx, images FP32 [3,H,W] -> features FP32 [D]
                                     (1/model.plan)  tensorrt_plan instead, when --engines holds a verified engine
    OUT/query_head/config.pbtxt + 1/model.onnx      onnxruntime_onnx, query FP32 [T,D] -> probs, p_fewshot,
                                                     p_videotext, distances, calibrated_probs FP32 [N]; the
                                                     prototype store is baked into the graph as constants (one
                                                     input: batches across clients)
    OUT/window_classifier/config.pbtxt + 1/model.py Python backend (BLS): frames FP32 [T,3,H,W] (one window,
                                                     preprocessed) -> image_encoder -> query_head -> the same 5 outputs
    OUT/bundle_info/config.pbtxt + 1/model.py       Python backend: the JSON our client checks (``bundle_info``)

``calibrated_probs`` is what ``clipfsar run`` reports (temperature, zero-shot map; export/triton_calibrated.py);
``probs`` stays the paper's fusion (the protocol of ``clipfsar serve``). The "unknown" threshold (its score and
value) is in ``bundle_info`` (``scores``) and in the head's and window model's config ``parameters``.

Every batched model has ``dynamic_batching`` and an ``instance_group``; the dims above exclude Triton's batch
axis (``max_batch_size`` > 0). The repository speaks the protocol of ``clipfsar serve`` (same model and tensor
names), so ``Classifier.load(bundle, backend="grpc://HOST:8001")`` works against stock Triton serving it.

Example:
    >>> from clipfsar.export.triton_repo import export_triton_repo
    >>> export_triton_repo("bundle/", "model_repository/", kind="gpu", instances=2)
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from clipfsar.runtime.base.atomic import staged_folder
from clipfsar.runtime.base.errors import ClipFsarError
from clipfsar.runtime.base.output_folder import check_output_folder
from clipfsar.runtime.bundle.reader import Bundle
from clipfsar.runtime.engines.triton_protocol import HEAD_OUTPUTS, INFO_MODEL, store_digest
from clipfsar.runtime.teaching.calibration import runtime_calibration, split_threshold

from .triton_calibrated import CALIBRATED_OUTPUT, add_calibrated_output

log = logging.getLogger(__name__)

WINDOW_MODEL = "window_classifier"
KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}
_TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int32": "TYPE_INT32", "int64": "TYPE_INT64"}


def bake_store(head_onnx: Path, prototypes: np.ndarray, text: np.ndarray, out: Path,
               shots: Optional[np.ndarray] = None, calibration: Optional[Dict] = None) -> None:
    """Write ``query_head`` with its ``prototypes`` (N, T, D) and ``text`` (N, D) inputs turned into constants.

    The math is unchanged (the same nodes read the same tensors), so its outputs equal the original graph's fed
    with the same store; only ``query`` (B, T, D) stays an input, which lets Triton batch it across clients.
    With ``shots`` (N,) and ``calibration`` (the runtime's, ``runtime_calibration``), one more output,
    ``calibrated_probs`` (B, N), gives what ``clipfsar run`` reports (export/triton_calibrated.py).
    """
    import onnx
    from onnx import numpy_helper
    model = onnx.load(str(head_onnx))
    graph = model.graph
    consts = {"prototypes": np.ascontiguousarray(prototypes, np.float32),
              "text": np.ascontiguousarray(text, np.float32)}
    names = [i.name for i in graph.input]
    missing = set(consts) - set(names)
    if missing:
        raise ClipFsarError(f"{head_onnx}: query head lacks inputs {sorted(missing)} (has {names})")
    keep = [i for i in graph.input if i.name not in consts]
    del graph.input[:]
    graph.input.extend(keep)
    for name, value in consts.items():
        graph.initializer.append(numpy_helper.from_array(value, name))
    if calibration is not None:
        add_calibrated_output(model, text, shots, calibration)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def _tensor(name: str, dtype: str, dims) -> str:
    return f'  {{ name: "{name}" data_type: {dtype} dims: [ {", ".join(str(int(d)) for d in dims)} ] }}'


def model_config(name: str, inputs, outputs, max_batch: int, kind: str, instances: int, queue_delay_us: int,
                 platform: Optional[str] = None, backend: Optional[str] = None,
                 parameters: Optional[Dict[str, str]] = None) -> str:
    """A ``config.pbtxt`` (Triton's ModelConfig in protobuf text format). ``inputs``/``outputs``: (name, TYPE, dims)
    with dims excluding the batch axis; ``parameters``: string key/values (ModelConfig.parameters)."""
    lines = [f'name: "{name}"', f'platform: "{platform}"' if platform else f'backend: "{backend}"',
             f"max_batch_size: {max_batch}",
             "input [\n" + ",\n".join(_tensor(*t) for t in inputs) + "\n]",
             "output [\n" + ",\n".join(_tensor(*t) for t in outputs) + "\n]",
             f"dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}",
             f"instance_group [ {{ count: {instances} kind: {kind} }} ]",
             "version_policy: { latest: { num_versions: 1 } }"]
    for key, value in (parameters or {}).items():
        lines.append(f'parameters {{ key: "{key}" value: {{ string_value: {json.dumps(value)} }} }}')
    return "\n".join(lines) + "\n"


def _verified_engine(engines: Path, graph: str, sha256: str, precision: str) -> Optional[Path]:
    """A cached TensorRT engine of ``graph`` built from this exact graph and precision, its bytes matching its
    record (runtime/engines/trt_cache.py);
    None when there is none. It runs only on the GPU/TensorRT it was built for."""
    for rec_path in sorted(Path(engines).glob(f"{graph}.{precision}.*.json")):
        try:
            rec = json.loads(rec_path.read_text())
        except (OSError, ValueError):
            continue
        key = rec.get("key", {}) if isinstance(rec, dict) else {}
        engine = rec_path.with_suffix(".engine")
        if key.get("graph_sha256") != sha256 or not engine.is_file():
            continue
        if hashlib.sha256(engine.read_bytes()).hexdigest() != rec.get("engine_sha256"):
            log.warning("engine %s does not match its record: skipped", engine.name)
            continue
        return engine
    return None


def export_triton_repo(bundle: Path, out: Path, kind: str = "gpu", instances: int = 1, max_batch: int = 64,
                       queue_delay_us: int = 2000, precision: str = "fp32", engines: Optional[Path] = None,
                       overwrite: bool = False) -> Dict[str, str]:
    """Write the model repository for ``bundle`` to ``out`` (atomically: a staged folder, then a rename).

    Args:
        kind: ``gpu`` or ``cpu`` instance groups. instances: instances per model.
        max_batch: the encoder's and head's max_batch_size (the window model gets ``max_batch // T``).
        precision: which graph variant to ship (``fp32``, ``fp16``, ``int8``; a graph without it ships fp32).
        engines: a TensorRT engine cache (``clipfsar engine``); a verified engine of the encoder becomes
            ``tensorrt_plan`` (runs only on that GPU and TensorRT version).
    Returns:
        model name -> what it runs (platform or backend, file, precision).
    Raises:
        BundleError: the bundle fails validation. ClipFsarError: ``out`` exists (without ``overwrite``), is the
        bundle (or holds it), is not a model repository, or is under a file; a bad kind, precision or batch size.
    """
    if kind not in KINDS:
        raise ClipFsarError(f"unknown instance kind '{kind}'; choose one of {', '.join(KINDS)}")
    if instances < 1 or max_batch < 1 or queue_delay_us < 0:
        raise ClipFsarError("instances and max_batch must be >= 1, queue_delay_us >= 0")
    b = Bundle.open(Path(bundle))
    facts, store = b.manifest.model, b.store
    H, T, D, N = facts.image_size, facts.frames, facts.embed_dim, len(store.class_names)
    if max_batch < T:
        raise ClipFsarError(f"max_batch {max_batch} is smaller than one window of T = {T} frames")
    if precision not in ("fp32", "fp16", "int8"):
        raise ClipFsarError(f"unknown precision '{precision}'; choose fp32, fp16 or int8")
    out = Path(out)
    check_output_folder(out, overwrite, [bundle, engines], "model repository",
                        lambda p: (p / INFO_MODEL / "config.pbtxt").is_file(), flag="--overwrite")
    prec = {g: precision if precision in b.precisions(g) else "fp32" for g in ("image_encoder", "query_head")}
    for g in ("image_encoder", "query_head"):
        spec = b.manifest.graphs[g]
        for t in list(spec.inputs) + list(spec.outputs):
            if t.dtype != "float32":
                raise ClipFsarError(f"{g}: tensor {t.name} is {t.dtype}; the repository expects float32 I/O")
    summary: Dict[str, str] = {}
    head_out = [(n, "TYPE_FP32", [N]) for n in HEAD_OUTPUTS + (CALIBRATED_OUTPUT,)]
    cal = runtime_calibration(b.manifest.calibration, store.shots, T, facts.vt_scale)  # as `clipfsar run`
    score, threshold = split_threshold(cal)
    params = {"calibrated": "yes" if cal.get("temperature") else "no (calibrated_probs = probs)",
              "threshold_score": score, "threshold": "none" if threshold is None else repr(threshold)}
    znorm = _znorm_info(b) if score == "znorm" else None
    with staged_folder(out) as tmp:
        # the image encoder: ONNX, or a verified TensorRT plan
        enc = tmp / "image_encoder"
        (enc / "1").mkdir(parents=True)
        engine = _verified_engine(engines, "image_encoder", b.graph_sha256("image_encoder", prec["image_encoder"]),
                                  prec["image_encoder"]) if engines else None
        if engine is not None:
            shutil.copyfile(engine, enc / "1" / "model.plan")
            platform = "tensorrt_plan"
        else:
            shutil.copyfile(b.graph_path("image_encoder", prec["image_encoder"]), enc / "1" / "model.onnx")
            platform = "onnxruntime_onnx"
        (enc / "config.pbtxt").write_text(model_config(
            "image_encoder", [("images", "TYPE_FP32", [3, H, H])], [("features", "TYPE_FP32", [D])], max_batch,
            KINDS[kind], instances, queue_delay_us, platform=platform))
        summary["image_encoder"] = f"{platform} ({prec['image_encoder']})"
        # the query head with the store baked in
        head = tmp / "query_head"
        (head / "1").mkdir(parents=True)
        bake_store(b.graph_path("query_head", prec["query_head"]), store.prototypes, store.text_features,
                   head / "1" / "model.onnx", store.shots, cal)
        (head / "config.pbtxt").write_text(model_config(
            "query_head", [("query", "TYPE_FP32", [T, D])], head_out, max_batch, KINDS[kind], instances,
            queue_delay_us, platform="onnxruntime_onnx", parameters=params))
        summary["query_head"] = f"onnxruntime_onnx ({prec['query_head']}, {N} classes baked in)"
        # the windowed head: one window of T preprocessed frames -> class scores (Python backend, BLS)
        win = tmp / WINDOW_MODEL
        (win / "1").mkdir(parents=True)
        (win / "1" / "model.py").write_text(_WINDOW_MODEL_PY)
        (win / "config.pbtxt").write_text(model_config(
            WINDOW_MODEL, [("frames", "TYPE_FP32", [T, 3, H, H])], head_out, max(1, max_batch // T), "KIND_CPU",
            instances, queue_delay_us, backend="python", parameters=params))
        summary[WINDOW_MODEL] = "python (BLS: image_encoder then query_head)"
        # what our client checks
        info = tmp / INFO_MODEL
        (info / "1").mkdir(parents=True)
        (info / "1" / "model.py").write_text(_INFO_MODEL_PY)
        from clipfsar import __version__
        (info / "1" / "info.json").write_text(json.dumps({
            "package_version": __version__, "bundle": b.root.name,
            "graphs": {g: {"precision": prec[g], "sha256": b.graph_sha256(g, prec[g]),
                           "provider": summary[g]} for g in ("image_encoder", "query_head")},
            "store_digest": store_digest(store.prototypes, store.text_features),
            "classes": list(store.class_names), "frames": T, "embed_dim": D, "image_size": H,
            "max_batch": max_batch,
            "scores": {"output": CALIBRATED_OUTPUT, "calibrated": bool(cal.get("temperature")),
                       "temperature": cal.get("temperature"), "zero_shot": cal.get("zero_shot"),
                       "threshold": {"score": score, "value": threshold}, "znorm": znorm}}, indent=2) + "\n")
        (info / "config.pbtxt").write_text(model_config(
            INFO_MODEL, [("client", "TYPE_STRING", [1])], [("info", "TYPE_STRING", [1])], 8, "KIND_CPU", 1, 0,
            backend="python"))
        summary[INFO_MODEL] = "python (bundle facts for clients)"
        (tmp / "classes.txt").write_text("\n".join(store.class_names) + "\n")  # output index -> class name
    return summary


_WINDOW_MODEL_PY = '''"""window_classifier: one window of T preprocessed frames -> class scores, via image_encoder
and query_head (Triton Python backend, business-logic scripting). Written by `clipfsar export-triton`; numpy only."""
import numpy as np
import triton_python_backend_utils as pb_utils

OUTPUTS = ("probs", "p_fewshot", "p_videotext", "distances", "calibrated_probs")


def _run(model, inputs, outputs):
    request = pb_utils.InferenceRequest(model_name=model, requested_output_names=list(outputs), inputs=inputs)
    response = request.exec()
    if response.has_error():
        raise pb_utils.TritonModelException(f"{model}: {response.error().message()}")
    return {n: pb_utils.get_output_tensor_by_name(response, n).as_numpy() for n in outputs}


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                frames = pb_utils.get_input_tensor_by_name(request, "frames").as_numpy()  # (b, T, 3, H, W)
                b, t = frames.shape[:2]
                images = np.ascontiguousarray(frames.reshape((b * t,) + frames.shape[2:]), np.float32)
                feats = _run("image_encoder", [pb_utils.Tensor("images", images)], ["features"])["features"]
                query = np.ascontiguousarray(feats.reshape(b, t, -1), np.float32)  # (b, T, D)
                out = _run("query_head", [pb_utils.Tensor("query", query)], OUTPUTS)
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(n, out[n].astype(np.float32)) for n in OUTPUTS]))
            except Exception as e:  # the client gets the reason, the server keeps running
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))))
        return responses
'''

_INFO_MODEL_PY = '''"""bundle_info: the bundle facts a clip-fsar client checks before using this repository
(graph sha256s, store digest, classes). Written by `clipfsar export-triton`."""
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        with open(os.path.join(os.path.dirname(__file__), "info.json"), "rb") as f:
            self.info = f.read()

    def execute(self, requests):
        responses = []
        for request in requests:
            n = pb_utils.get_input_tensor_by_name(request, "client").as_numpy().shape[0]
            info = np.array([[self.info]] * n, dtype=np.object_)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("info", info)]))
        return responses
'''


def _znorm_info(b: Bundle) -> Dict:
    """The open-set score's per-class cohort statistics (runtime/teaching/cohort.py), for applications that threshold
    the served ``distances`` themselves."""
    from clipfsar.runtime.engines.backends import OnnxGraph
    from clipfsar.runtime.teaching.cohort import ZNorm, load_cohort
    cohort = load_cohort(b)
    if cohort is None:
        raise ClipFsarError(f"bundle {b.root}: its threshold is on 'znorm' but it has no open-set cohort; run "
                            f"`clipfsar calibrate-threshold` again")
    st = b.store
    z = ZNorm.fit(OnnxGraph(b.graph_path("query_head"), "cpu").run, cohort, st.prototypes, st.text_features, st.shots)
    zero = [i for i, k in enumerate(st.shots.tolist()) if k == 0]
    return {"mu": z.mu.tolist(), "sd": z.sd.tolist(), "shots": st.shots.tolist(),
            "zero_shot_text": {str(i): st.text_features[i].tolist() for i in zero},
            "formula": "known = Phi(-min_c z_c) ** N, z_c = (d_c - mu_c) / sd_c over the N classes; d_c = "
                       "distances[c] for few-shot classes (shots > 0), -cos(mean_t features_t, zero_shot_text[c]) "
                       "for zero-shot ones (features: image_encoder's output for the window's T frames); "
                       "'unknown' when known < threshold"}
