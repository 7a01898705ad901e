"""``clipfsar engine BUNDLE``: build (or find in the cache) the bundle's TensorRT engines on this device.

Torch-free and onnxruntime-free: on a Jetson it needs only JetPack's TensorRT and cuda-python.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import click

from clipfsar.runtime.base.errors import ConfigError
from clipfsar.runtime.engines.trt_cache import PRECISIONS
from clipfsar.runtime.engines.trt_profile import ProfileOptions

log = logging.getLogger(__name__)
ENGINE_GRAPHS = ("image_encoder", "query_head", "text_encoder", "support_head")


def build_bundle_engines(bundle_root: Path, precision: str = "fp32", options: Optional[ProfileOptions] = None,
                         workspace_mb: Optional[int] = None, cache_dir: Optional[Path] = None,
                         graphs: Optional[Sequence[str]] = None, rebuild: bool = False) -> List[Dict]:
    """Build or load from the cache the engines of a bundle's graphs at one precision.

    Args:
        bundle_root: the bundle folder (opened and hash-checked first).
        precision: the variant to build (the bundle must have it; fp32 always exists).
        options: optimisation profile options (saved in the cache folder, so the runtime finds these engines).
        workspace_mb: TensorRT workspace limit in MiB (None: TensorRT's default).
        cache_dir: engine cache (default: the bundle's ``engines/``).
        graphs: which graphs. A graph with no variant at ``precision`` gets its fp32 engine when graphs were not
            named explicitly (the heads may stay fp32); at least one graph must have the precision.
        rebuild: build even when a matching engine is cached.
    Returns:
        One dict per graph: graph, precision (the variant built), action (``load``/``build``), reason, engine
        path, size in bytes.
    Raises:
        ConfigError: bad options. BundleError: the bundle is invalid or lacks the precision (the message lists
        the ones it has). TensorRTUnavailable: TensorRT, cuda-python or a GPU is missing. EngineBuildError.
    """
    from clipfsar.runtime.bundle.reader import Bundle
    from clipfsar.runtime.engines.trt_engine import TensorRTUnavailable, ensure_engine, trt_usable
    from clipfsar.runtime.engines.trt_profile import save_profile_options

    options = options or ProfileOptions()
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if workspace_mb is not None and workspace_mb < 1:
        raise ConfigError(f"--workspace-mb must be >= 1, got {workspace_mb}")
    explicit = bool(graphs)
    graphs = list(graphs or ENGINE_GRAPHS)
    unknown = [g for g in graphs if g not in ENGINE_GRAPHS]
    if unknown:
        raise ConfigError(f"unknown graphs {unknown}; choose from {', '.join(ENGINE_GRAPHS)}")
    bundle = Bundle.open(Path(bundle_root))
    chosen = engine_precisions(bundle, precision, graphs, explicit)
    paths = {g: bundle.graph_path(g, chosen[g]) for g in graphs}
    ok, why = trt_usable()
    if not ok:
        raise TensorRTUnavailable(f"cannot build TensorRT engines here: {why}")
    cache_dir = Path(cache_dir) if cache_dir is not None else bundle.root / "engines"
    save_profile_options(cache_dir, options)
    results = []
    for g in graphs:
        spec, p = bundle.manifest.graphs[g], chosen[g]
        if p != precision:
            log.info("%s has no %s variant: building its fp32 engine", g, precision)
        sha = spec.sha256 if p == "fp32" else spec.variants[p].sha256
        blob, decision = ensure_engine(paths[g], g, spec.inputs, p, cache_dir, options, workspace_mb,
                                       graph_sha256=sha, rebuild=rebuild)
        results.append({"graph": g, "precision": p, "action": decision.action, "reason": decision.reason,
                        "engine": str(decision.engine_path), "bytes": len(blob)})
    return results


def engine_precisions(bundle, precision: str, graphs: Sequence[str], explicit: bool) -> Dict[str, str]:
    """The variant to build per graph: ``precision`` where the graph has it; fp32 for graphs without it unless
    they were named explicitly.

    Raises:
        BundleError: an explicitly named graph lacks ``precision``, or no graph has it (lists what it has).
        PrecisionUnavailableError: an int8 variant made by dynamic quantization (MatMulInteger, which TensorRT
        cannot build; TensorRT's int8 is explicit Q/DQ).
    """
    from clipfsar.runtime.engines.precision import PrecisionUnavailableError

    chosen = {g: precision if (explicit or precision in bundle.precisions(g)) else "fp32" for g in graphs}
    if precision not in chosen.values():
        bundle.graph_path(graphs[0], precision)  # raises, listing the precisions the bundle has
    for g in graphs:
        bundle.graph_path(g, chosen[g])  # an explicitly named graph without the variant raises
        if chosen[g] == "int8" and bundle.manifest.graphs[g].variants["int8"].method.startswith("int8-dynamic"):
            raise PrecisionUnavailableError(
                f"the int8 variant of {g} in {bundle.root} is dynamic quantization (MatMulInteger), which TensorRT "
                f"cannot build; make a Q/DQ variant with `clipfsar calibrate {bundle.root} --precision int8 "
                f"--int8 static`, or build fp16 engines")
    return chosen


def profile_options(max_batch: int, max_classes: int, max_shots: int, opt_batch: Optional[int],
                    opt_classes: Optional[int], opt_shots: Optional[int]) -> ProfileOptions:
    return ProfileOptions(max_batch, max_classes, max_shots, opt_batch, opt_classes, opt_shots)


def engine_options(f):
    """The profile/workspace/cache options shared by ``clipfsar engine`` and ``clipfsar export --engine``."""
    for opt in reversed([
        click.option("--max-batch", type=int, default=16, show_default=True,
                     help="Largest batch (frames per encoder call, queries per head call)."),
        click.option("--max-classes", type=int, default=64, show_default=True, help="Largest number of classes."),
        click.option("--max-shots", type=int, default=8, show_default=True, help="Largest shots per class."),
        click.option("--opt-batch", type=int, help="Batch TensorRT tunes for (default 1)."),
        click.option("--opt-classes", type=int, help="Classes TensorRT tunes for (default 5)."),
        click.option("--opt-shots", type=int, help="Shots TensorRT tunes for (default 1)."),
        click.option("--workspace-mb", type=int, help="TensorRT workspace limit in MiB (default: TensorRT's)."),
        click.option("--cache-dir", type=click.Path(path_type=Path),
                     help="Engine cache folder (default: the bundle's engines/)."),
    ]):
        f = opt(f)
    return f


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--precision", default="fp32", show_default=True,
              help=f"Graph variant to build ({', '.join(PRECISIONS)}); it must be in the bundle.")
@click.option("--graph", "graphs", multiple=True, type=click.Choice(ENGINE_GRAPHS),
              help="Only these graphs (repeatable; default: all four).")
@engine_options
@click.option("--rebuild", is_flag=True, help="Build even when a matching engine is cached.")
def engine(bundle: Path, precision: str, graphs, max_batch: int, max_classes: int, max_shots: int,
           opt_batch: Optional[int], opt_classes: Optional[int], opt_shots: Optional[int],
           workspace_mb: Optional[int], cache_dir: Optional[Path], rebuild: bool) -> None:
    """Build the bundle's TensorRT engines on this GPU (strongly typed, cached per device)."""
    options = profile_options(max_batch, max_classes, max_shots, opt_batch, opt_classes, opt_shots)
    results = build_bundle_engines(bundle, precision, options, workspace_mb, cache_dir, graphs, rebuild)
    for r in results:
        verb = "cached" if r["action"] == "load" else "built "
        click.echo(f"{r['graph']:<14} {r['precision']}: {verb} {r['engine']} ({r['bytes'] / 2**20:.1f} MB)")
        if r["action"] == "build":
            click.echo(f"{'':<14} why: {r['reason']}")

