"""``clipfsar studio``: teach the bundle from the live source in a web page (torch-free; the ``studio`` extra)."""
from __future__ import annotations

import logging
import os
import secrets
import socket
from pathlib import Path
from typing import Optional

import click

from clipfsar.runtime.engines.backends import BACKENDS
from clipfsar.runtime.engines.cache_dir import CACHE_OPTION_HELP
from clipfsar.runtime.engines.precision import CHOICES as PRECISION_CHOICES

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024


def _need_extra():
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ModuleNotFoundError as e:
        from clipfsar.runtime.base.errors import ClipFsarError
        raise ClipFsarError(f"`clipfsar studio` needs the studio extra ({e.name} is not installed); install it with: "
                            f"pip install 'clip-fsar[studio]' (from a checkout: pip install -e '.[studio]')") from None


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), or a clear error."""
    from clipfsar.runtime.base.errors import ClipFsarError
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ClipFsarError(f"--host {host}: not an address of this machine ({e})") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise ClipFsarError(f"cannot listen on {host}:{port}: {e.strerror} (another studio running? pass --port)") \
            from None
    sock.listen(128)
    return sock


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--source", required=True, help="Camera index, video file (read as live), image folder, URL or "
              "GStreamer pipeline: as `clipfsar run --source`.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs the token printed at start.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0: a free port.")
@click.option("--clips", "clips_dir", type=click.Path(path_type=Path),
              help="Folder the recorded clips are kept in, a folder per class [default: BUNDLE-clips next to the "
                   "bundle].")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto", show_default=True,
              help="Graph variants to run (auto: from the bundle's precision report).")
@click.option("--threads", type=click.IntRange(min=0), default=None,
              help="onnxruntime intra-op threads (default: cores - 1, as `clipfsar run`).")
@click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False), help=CACHE_OPTION_HELP)
@click.option("--window", type=click.FloatRange(min=0, min_open=True), help="Seconds per decision window "
              "(default: the bundle's); also the default clip length.")
@click.option("--smooth", type=click.IntRange(min=1), default=1, show_default=True,
              help="Average over the last k windows.")
@click.option("--loop", is_flag=True, help="Replay a file source from its start when it ends.")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="A dataset folder (calibrate-threshold --data) to refit the threshold on from the page "
                   "[default: the bundle's open-set cohort].")
@click.option("--split", default="val", show_default=True, help="The split of --data the threshold is fitted on.")
@click.option("--open-timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True)
@click.option("--read-timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True)
@click.option("--retries", type=click.IntRange(min=0), default=5, show_default=True,
              help="Live sources: reopen attempts after a dropout (as `clipfsar run`); after that the studio says so "
                   "and tries again every 5 s.")
def studio(bundle: Path, source: str, host: str, port: int, clips_dir: Optional[Path], backend: str, precision: str,
           threads: Optional[int], cache_dir: Optional[Path], window: Optional[float], smooth: int, loop: bool,
           data: Optional[Path], split: str, open_timeout: float, read_timeout: float, retries: int) -> None:
    """Teach BUNDLE from the live source in a web page: record clips, name them, enrol, see them recognised.

    Serves http://HOST:PORT/ (the page) and the JSON/SSE API the page uses (docs/studio.md). Ctrl-C stops.
    """
    _need_extra()
    import uvicorn

    from clipfsar.runtime.base.errors import ClipFsarError
    from clipfsar.runtime.base.threads import streaming_threads
    from clipfsar.runtime.studio.app import create_app
    from clipfsar.runtime.studio.clips_folder import default_clips_dir
    from clipfsar.runtime.studio.guard import is_loopback
    from clipfsar.runtime.studio.session import StudioSession

    if data is not None and not Path(data).is_dir():
        raise ClipFsarError(f"--data {data} is not a folder (a folder per class + splits/)")
    sock = _bind(host, port)  # refuse a taken port before loading anything
    clips = Path(clips_dir) if clips_dir else default_clips_dir(bundle)
    n_threads = streaming_threads(threads)
    session = StudioSession(bundle, source, clips, backend=backend, threads=n_threads, spinning=n_threads == 0,
                            precision=precision, cache_dir=cache_dir, window=window, smooth=smooth, loop=loop,
                            data=data, split=split,
                            open_timeout=open_timeout, read_timeout=read_timeout, max_retries=retries)
    loopback = is_loopback(host)
    token = None if loopback else os.environ.get("CLIPFSAR_STUDIO_TOKEN") or secrets.token_urlsafe(18)
    app = create_app(session, token=token, loopback=loopback, max_body=MAX_BODY)
    shown_host = f"[{host}]" if ":" in host else host
    actual = sock.getsockname()[1]
    url = f"http://{shown_host}:{actual}/" + (f"?token={token}" if token else "")
    click.echo(f"studio: {url}  (bundle {bundle}, source {session.source_spec}, clips kept in {clips})", err=True)
    if token:
        click.echo(f"token: {token}  (needed on {host}: send 'Authorization: Bearer TOKEN' or open the URL above)",
                   err=True)
    click.echo(f"image encoder on {session.clf.providers['image_encoder']} "
               f"({session.clf.precisions['image_encoder']}); Ctrl-C stops", err=True)
    session.start()
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2,
                            limit_concurrency=64, lifespan="off")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        session.close()
        sock.close()
