"""``clipfsar serve``: serve a bundle from NVIDIA Triton Inference Server (PyTriton); torch-free."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from clipfsar.runtime.engines.backends import BACKENDS
from clipfsar.runtime.engines.cache_dir import CACHE_OPTION_HELP
from clipfsar.runtime.engines.precision import CHOICES as PRECISION_CHOICES


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on (127.0.0.1: local only).")
@click.option("--http-port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=8001, show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=8002, show_default=True,
              help="Prometheus metrics at http://HOST:PORT/metrics.")
@click.option("--max-batch", type=click.IntRange(min=1), default=64, show_default=True,
              help="Largest batch Triton forms from the requests of every client.")
@click.option("--queue-delay-us", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Microseconds Triton may hold a request to batch it with others.")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True,
              help="Model instances per graph (calls run concurrently).")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="What runs the graphs inside the server.")
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="onnxruntime intra-op threads per graph (0 = one per core).")
@click.option("--stub-env", type=click.Path(path_type=Path, file_okay=False),
              help="Python env (numpy<2) for Triton's Python-backend stub when this one has numpy 2 "
                   "(default: $CLIPFSAR_TRITON_STUB_ENV; see docs/serving.md).")
@click.option("--log-verbose", type=click.IntRange(min=0), default=0, help="Triton's log verbosity.")
@click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False), help=CACHE_OPTION_HELP)
def serve(bundle: Path, host: str, http_port: int, grpc_port: int, metrics_port: int, max_batch: int,
          queue_delay_us: int, instances: int, backend: str, precision: str, threads: int,
          stub_env: Optional[Path], log_verbose: int, cache_dir: Optional[Path] = None) -> None:
    """Serve BUNDLE's image encoder and query head from a Triton server (dynamic batching across clients).

    Clients: `clipfsar run BUNDLE --server grpc://HOST:GRPC_PORT --source ...` or
    Classifier.load(BUNDLE, backend="grpc://HOST:GRPC_PORT"). Health: http://HOST:HTTP_PORT/v2/health/ready.
    """
    from clipfsar.runtime.serving.server import BundleServer

    server = BundleServer(bundle, host, http_port, grpc_port, metrics_port, max_batch, queue_delay_us, instances,
                          backend, precision, threads, stub_env, log_verbose, cache_dir)
    server.start()
    try:
        click.echo(f"ready: {bundle} on grpc://{host}:{grpc_port} and http://{host}:{http_port} "
                   f"(metrics http://{host}:{metrics_port}/metrics); models {', '.join(_models())}; "
                   f"image_encoder {server.graphs['image_encoder'].providers[0]} "
                   f"({server.precisions['image_encoder']})", err=True)
        sys.stderr.flush()
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        click.echo("server stopped", err=True)


def _models():
    from clipfsar.runtime.serving.server import served_models
    return served_models()
