"""Provider options of onnxruntime's TensorRT execution provider (``--backend tensorrt``): pure, no GPU needed.

- No ``trt_fp16_enable`` / ``trt_int8_enable``: every variant carries its precision in the graph (fp16 casts from
  calib/fp16.py, int8 Q/DQ from calib/int8.py). Those flags let TensorRT pick lower precisions for any layer,
  including the LayerNorm, Softmax and OTAM ops calib/fp16.py kept in fp32, so they are set False explicitly.
- ``trt_profile_min_shapes`` / ``_opt_`` / ``_max_``: the same optimisation profile as the native engines
  (runtime/engines/trt_profile.py, ``profile.json`` in the cache folder); without them the EP builds for the first
  shape it sees and rebuilds mid-stream when a larger batch or more classes arrive. Format (onnxruntime's):
  ``"input1:1x3x224x224,input2:1x8x512"``; every dynamic input must be listed.
- Engine and timing caches in ``<cache>/ort-tensorrt/<precision>``; with no cache folder both caches are off (the
  EP would otherwise write them into the working directory).
- ``trt_max_workspace_size`` from the same workspace default as the native engines (a Jetson: 1 GiB).

onnxruntime 1.31's TensorRT EP has no option to clear TF32 or to build strongly typed networks (its option names,
listed from ``libonnxruntime_providers_tensorrt.so``, hold none): fp32 graphs on this backend may compute in TF32
on Ampere and newer. The native backend (``--backend trt``) clears it.

Example:
    >>> tensorrt_ep_options(Path("bundle/engines"), "fp16", {"images": ((1, 3, 224, 224), (1, 3, 224, 224),
    ...                                                                  (16, 3, 224, 224))})["trt_profile_max_shapes"]
    'images:16x3x224x224'
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional

from clipfsar.runtime.engines.trt_profile import ProfileShapes

log = logging.getLogger(__name__)


def profile_option(profile: ProfileShapes, which: int) -> str:
    """``name:AxBxC,...`` of the min (0), opt (1) or max (2) shapes, inputs sorted by name."""
    return ",".join(f"{name}:{'x'.join(str(d) for d in shapes[which])}" for name, shapes in sorted(profile.items()))


def tensorrt_ep_options(cache_dir: Optional[Path], precision: str, profile: Optional[ProfileShapes] = None,
                        workspace_mb: Optional[int] = None) -> Dict[str, Any]:
    """The TensorRT EP's provider options for one graph variant (see the module docstring).

    Args:
        cache_dir: the engine cache folder (runtime/engines/cache_dir.py), or None (no caches).
        precision: the variant's precision; it names the cache subfolder only.
        profile: the graph's (min, opt, max) shapes per input (None: no explicit profile).
        workspace_mb: the workspace limit in MiB (None: the EP's default).
    """
    opts: Dict[str, Any] = {"trt_fp16_enable": False, "trt_int8_enable": False}
    if workspace_mb is not None:
        opts["trt_max_workspace_size"] = int(workspace_mb) << 20
    if profile:
        for i, what in enumerate(("min", "opt", "max")):
            opts[f"trt_profile_{what}_shapes"] = profile_option(profile, i)
    ep_dir = Path(cache_dir) / "ort-tensorrt" / precision if cache_dir is not None else None
    if ep_dir is not None:
        try:
            ep_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            log.warning("cannot create the TensorRT EP cache %s (%s): its engines are built in memory on every "
                        "start; pass --cache-dir or set CLIPFSAR_CACHE_DIR", ep_dir, e)
            ep_dir = None
    if ep_dir is None:
        opts.update(trt_engine_cache_enable=False, trt_timing_cache_enable=False)
    else:
        opts.update(trt_engine_cache_enable=True, trt_timing_cache_enable=True,
                    trt_engine_cache_path=str(ep_dir), trt_timing_cache_path=str(ep_dir))
    return opts
