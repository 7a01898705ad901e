"""``clipfsar engine BUNDLE``: build (or find in the cache) the bundle's TensorRT engines on this device.

Torch-free and onnxruntime-free: on a Jetson it needs only JetPack's TensorRT and cuda-python.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import click

from clipfsar.runtime.base.errors import ConfigError
from clipfsar.runtime.engines.cache_dir import CACHE_OPTION_HELP
from clipfsar.runtime.engines.trt_cache import PRECISIONS
from clipfsar.runtime.engines.trt_profile import ProfileOptions

log = logging.getLogger(__name__)
ENGINE_GRAPHS = ("image_encoder", "query_head", "text_encoder", "support_head")
ENGINE_PRECISIONS = ("auto",) + PRECISIONS


def build_bundle_engines(bundle_root: Path, precision: str = "auto", options: Optional[ProfileOptions] = None,
                         workspace_mb: Optional[int] = None, cache_dir: Optional[Path] = None,
                         graphs: Optional[Sequence[str]] = None, rebuild: bool = False) -> List[Dict]:
    """Build or load from the cache the engines of a bundle's graphs.

    Every refusal (bad options, a precision the bundle lacks, an int8 variant TensorRT cannot build, no TensorRT)
    comes before anything is written: the bundle and the cache folder are left as they were.

    Args:
        bundle_root: the bundle folder (opened and hash-checked first).
        precision: ``auto`` (what ``clipfsar run --precision auto`` picks on a GPU: fp16 where the bundle's report
            found it within the accuracy bound, else fp32, so ``run`` finds these engines), ``fp32``, ``fp16`` or
            ``int8``.
        options: optimisation profile options (saved in the cache folder, so the runtime finds these engines).
        workspace_mb: TensorRT workspace limit in MiB (None: ``options.workspace_mb``, else the device's default:
            1 GiB on a Jetson, TensorRT's own on a discrete GPU); saved with the profile.
        cache_dir: engine cache (None: ``$CLIPFSAR_CACHE_DIR``, else the bundle's ``engines/``, else a per-user
            folder: runtime/engines/cache_dir.py).
        graphs: which graphs. A graph with no variant at ``precision`` gets its fp32 engine when graphs were not
            named explicitly (the heads may stay fp32); at least one graph must have the precision.
        rebuild: build even when a matching engine is cached.
    Returns:
        One dict per graph: graph, precision (the variant built), action (``load``/``build``), reason, engine
        path, size in bytes.
    Raises:
        ConfigError: bad options. BundleError: the bundle is invalid or lacks the precision (the message lists
        the ones it has). PrecisionUnavailableError, EngineBuildError: an int8 variant TensorRT cannot build.
        TensorRTUnavailable: TensorRT, cuda-python or a GPU is missing or too old.
    """
    import dataclasses

    from clipfsar.runtime.bundle.reader import Bundle
    from clipfsar.runtime.engines.cache_dir import engine_cache_dir
    from clipfsar.runtime.engines.trt_engine import TensorRTUnavailable, check_int8_graph, ensure_engine, trt_usable
    from clipfsar.runtime.engines.trt_profile import save_profile_options

    options = options or ProfileOptions()
    if precision not in ENGINE_PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(ENGINE_PRECISIONS)}, got '{precision}'")
    if workspace_mb is not None and workspace_mb < 1:
        raise ConfigError(f"--workspace-mb must be >= 1, got {workspace_mb}")
    if workspace_mb is not None:
        options = dataclasses.replace(options, workspace_mb=workspace_mb)
    explicit = bool(graphs)
    graphs = list(graphs or ENGINE_GRAPHS)
    unknown = [g for g in graphs if g not in ENGINE_GRAPHS]
    if unknown:
        raise ConfigError(f"unknown graphs {unknown}; choose from {', '.join(ENGINE_GRAPHS)}")
    bundle = Bundle.open(Path(bundle_root))
    graphs = [g for g in graphs if g in bundle.manifest.graphs]
    chosen = engine_precisions(bundle, precision, graphs, explicit)
    paths = {g: bundle.graph_path(g, chosen[g]) for g in graphs}
    for g in graphs:  # TensorRT's Q/DQ rules, before anything is written (needs only the onnx package)
        if chosen[g] == "int8":
            check_int8_graph(paths[g], g, bundle.root)
    ok, why = trt_usable()
    if not ok:
        raise TensorRTUnavailable(f"cannot build TensorRT engines here: {why}")
    cache_dir = engine_cache_dir(bundle.root, cache_dir)
    save_profile_options(cache_dir, options)
    results = []
    for g in graphs:
        spec, p = bundle.manifest.graphs[g], chosen[g]
        if precision in ("fp16", "int8") and p != precision:
            log.info("%s has no %s variant TensorRT can build: building its fp32 engine", g, precision)
        sha = spec.sha256 if p == "fp32" else spec.variants[p].sha256
        blob, decision = ensure_engine(paths[g], g, spec.inputs, p, cache_dir, options, graph_sha256=sha,
                                       rebuild=rebuild)
        results.append({"graph": g, "precision": p, "action": decision.action, "reason": decision.reason,
                        "engine": str(decision.engine_path), "bytes": len(blob)})
    return results


def engine_precisions(bundle, precision: str, graphs: Sequence[str], explicit: bool) -> Dict[str, str]:
    """The variant to build per graph, as ``run`` would pick it on TensorRT (runtime/engines/precision.py):
    ``precision`` where the graph has it, fp32 for graphs without it unless they were named explicitly; an int8
    variant TensorRT cannot build falls back to fp32 unless named (or unless it is the only int8 one).

    Raises:
        BundleError: an explicitly named graph lacks ``precision``, or no graph has it (lists what they have).
        PrecisionUnavailableError: an int8 variant TensorRT cannot build (dynamic quantization, uint8 Q/DQ), for
        a named graph or for every int8 graph (names the bundle, the graph and the way out).
    """
    from clipfsar.runtime.engines.precision import choose_precisions

    if explicit and precision in ("fp16", "int8"):
        for g in graphs:
            bundle.graph_path(g, precision)  # an explicitly named graph without the variant raises
    return choose_precisions(bundle, precision, "trt", graphs, explicit)


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
        click.option("--workspace-mb", type=int, help="TensorRT workspace limit in MiB (default: 1024 on a Jetson, "
                     "or an eighth of its memory if less; TensorRT's own on a discrete GPU)."),
        click.option("--cache-dir", type=click.Path(path_type=Path), help=CACHE_OPTION_HELP),
    ]):
        f = opt(f)
    return f


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--precision", default="auto", show_default=True,
              help=f"Graph variants to build ({', '.join(ENGINE_PRECISIONS)}). auto: what `clipfsar run --precision "
                   f"auto` runs on a GPU (fp16 where the bundle's precision report allows it, else fp32).")
@click.option("--graph", "graphs", multiple=True, type=click.Choice(ENGINE_GRAPHS),
              help="Only these graphs (repeatable; default: all four).")
@engine_options
@click.option("--rebuild", is_flag=True, help="Build even when a matching engine is cached.")
def engine(bundle: Path, precision: str, graphs, max_batch: int, max_classes: int, max_shots: int,
           opt_batch: Optional[int], opt_classes: Optional[int], opt_shots: Optional[int],
           workspace_mb: Optional[int], cache_dir: Optional[Path], rebuild: bool) -> None:
    """Build the bundle's TensorRT engines on this GPU (strongly typed, TF32 off, cached per device).

    Each line says `loaded` (a matching engine was in the cache) or `built` (and why it was built).
    """
    options = profile_options(max_batch, max_classes, max_shots, opt_batch, opt_classes, opt_shots)
    results = build_bundle_engines(bundle, precision, options, workspace_mb, cache_dir, graphs, rebuild)
    for r in results:
        verb = "loaded" if r["action"] == "load" else "built "
        click.echo(f"{r['graph']:<14} {r['precision']}: {verb} {r['engine']} ({r['bytes'] / 2**20:.1f} MB)")
        if r["action"] == "build":
            click.echo(f"{'':<14} why: {r['reason']}")

