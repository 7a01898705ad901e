"""``clipfsar export --engine``: build the new bundle's TensorRT engines on this GPU, as ``clipfsar engine`` does.

The request is checked before the export starts (options, and TensorRT plus a GPU really usable), so a machine
that cannot build engines fails at once instead of after a long export. Engines are built for every precision the
bundle holds once exported (fp32, and fp16/int8 where ``--precision`` made them).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import click

from clipfsar.runtime.base.errors import ConfigError
from clipfsar.runtime.cli.engine import build_bundle_engines, engine_options, profile_options
from clipfsar.runtime.engines.trt_profile import ProfileOptions

log = logging.getLogger(__name__)
OPTION_NAMES = ("max_batch", "max_classes", "max_shots", "opt_batch", "opt_classes", "opt_shots", "workspace_mb",
                "cache_dir")


@dataclass(frozen=True)
class EngineRequest:
    options: ProfileOptions
    workspace_mb: Optional[int]
    cache_dir: Optional[Path]


def engine_export_options(f):
    """``--engine`` and the engine options of ``clipfsar engine`` (``--max-batch``...), for ``clipfsar export``."""
    f = engine_options(f)
    return click.option("--engine", "build_engines", is_flag=True,
                        help="Also build TensorRT engines on this GPU (see `clipfsar engine`).")(f)


def engine_request(build_engines: bool = False, **kw) -> Optional[EngineRequest]:
    """Validate ``--engine`` and its options before exporting; None when no engines are asked for.

    Raises:
        ConfigError: bad options, or engine options given without ``--engine``. TensorRTUnavailable: TensorRT,
        cuda-python or a GPU is missing (the message says which).
    """
    unknown = set(kw) - set(OPTION_NAMES)
    if unknown:
        raise TypeError(f"engine_request: unexpected options {sorted(unknown)}")
    if not build_engines:
        given = [k for k in ("opt_batch", "opt_classes", "opt_shots", "workspace_mb", "cache_dir")
                 if kw.get(k) is not None]
        if given:
            raise ConfigError(f"--{given[0].replace('_', '-')} only applies with --engine")
        return None
    from clipfsar.runtime.engines.trt_engine import TensorRTUnavailable, trt_usable
    options = profile_options(kw.get("max_batch", 16), kw.get("max_classes", 64), kw.get("max_shots", 8),
                              kw.get("opt_batch"), kw.get("opt_classes"), kw.get("opt_shots"))
    workspace_mb = kw.get("workspace_mb")
    if workspace_mb is not None and workspace_mb < 1:
        raise ConfigError(f"--workspace-mb must be >= 1, got {workspace_mb}")
    ok, why = trt_usable()
    if not ok:
        raise TensorRTUnavailable(f"--engine: cannot build TensorRT engines here: {why} "
                                  f"(export without --engine, then run `clipfsar engine` on the target)")
    return EngineRequest(options, workspace_mb, kw.get("cache_dir"))


def build_export_engines(bundle_root: Path, request: EngineRequest) -> List[Dict]:
    """Build (or find cached) engines for every precision the bundle holds; returns ``build_bundle_engines`` rows.

    A precision TensorRT cannot build (a dynamic-quantization int8 variant) is skipped with a warning: the bundle
    is already written and valid, and the other engines are still built.
    """
    from clipfsar.runtime.bundle.reader import PRECISIONS, Bundle
    from clipfsar.runtime.engines.precision import PrecisionUnavailableError
    bundle = Bundle.open(Path(bundle_root))
    have = {p for g in bundle.manifest.graphs for p in bundle.precisions(g)}
    rows: List[Dict] = []
    for precision in [p for p in PRECISIONS if p in have]:
        try:
            built = build_bundle_engines(bundle_root, precision, request.options, request.workspace_mb,
                                         request.cache_dir)
        except PrecisionUnavailableError as e:
            log.warning("no %s engines: %s", precision, e)
            continue
        rows += [r for r in built if r["precision"] == precision]  # graphs without the variant: fp32, built above
    return rows
