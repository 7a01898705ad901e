"""``clipfsar run`` and ``clipfsar bench``: torch-free."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import sys
import threading
from pathlib import Path
from typing import Iterator, Optional

import click

from clipfsar.runtime.classify.annotate import AnnotatedSink
from clipfsar.runtime.engines.backends import BACKENDS
from clipfsar.runtime.engines.cache_dir import CACHE_OPTION_HELP
from clipfsar.runtime.engines.precision import CHOICES as PRECISION_CHOICES

log = logging.getLogger(__name__)


def _decision_json(d, names) -> str:
    out = {"label": d.label, "score": round(d.score, 6), "t_start": round(d.t_start, 4),
           "t_end": round(d.t_end, 4), "frame": d.frame, "source": d.source,
           "scores": {n: round(s, 6) for n, s in zip(names, d.scores)}}
    if d.known is not None:  # the open-set score "unknown" thresholds (runtime/teaching/cohort.py)
        out["known"] = round(d.known, 6)
    return json.dumps(out)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (``docker stop``, ``systemctl stop``, a closed ssh session) stopping a run: handled like
    Ctrl-C, so the ``--save`` video is finalized; the exit status is 128 + the signal's number."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While the stream runs, SIGTERM and SIGHUP raise :class:`Stopped` in the main thread (as SIGINT raises
    KeyboardInterrupt); the previous handlers are restored after."""
    wanted = [sig for sig in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if sig is not None]
    if threading.current_thread() is not threading.main_thread():  # signals reach only the main thread
        yield
        return

    def handler(signum, frame):
        raise Stopped(signum)

    old = {sig: signal.signal(sig, handler) for sig in wanted}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


@contextlib.contextmanager
def _ignoring_stop_signals() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = [sig for sig in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if sig is not None]
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in sigs}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _say(message: str, err: bool = True) -> None:
    """click.echo that survives a closed terminal (after SIGHUP stdout and stderr may be gone)."""
    with contextlib.suppress(OSError):
        click.echo(message, err=err)


def _finite(ctx, param, value):
    """A click callback refusing NaN and infinity (click's FloatRange lets NaN through)."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--source", required=True, help="Camera index, video file, image folder, URL or GStreamer pipeline.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto", show_default=True,
              help="Graph variants to run (auto: from the bundle's precision report).")
@click.option("--window", type=click.FloatRange(min=0, min_open=True), callback=_finite,
              help="Seconds per decision window (default: the bundle's).")
@click.option("--hop", type=click.FloatRange(min=0, min_open=True), callback=_finite,
              help="Seconds between decisions (default: window / T).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None, callback=_finite,
              help="Below this score: 'unknown' (the open-set score 'known' when the bundle's threshold is on "
                   "znorm, else the top score; default: the bundle's fitted threshold, see `clipfsar "
                   "calibrate-threshold`; 0 turns rejection off).")
@click.option("--smooth", type=int, default=1, show_default=True, help="Average over the last k windows.")
@click.option("--show", is_flag=True, help="Show the annotated stream in a window (q quits).")
@click.option("--save", type=click.Path(path_type=Path), help="Write the annotated video here (.mp4, .avi).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per decision on stdout.")
@click.option("--max-fps", type=float, help="Read at most this many frames per second.")
@click.option("--fps", type=float, help="Frame rate of an image-folder source (default 30), or of a video whose "
              "container gives no believable rate.")
@click.option("--live", is_flag=True, help="Treat a file like a live source (newest frame only, played at its "
              "frame rate, ends at its end).")
@click.option("--open-timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Live sources: seconds one open attempt may take.")
@click.option("--read-timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Live sources: seconds without a frame before it counts as a dropout (then reconnect).")
@click.option("--retries", type=click.IntRange(min=0), default=5, show_default=True,
              help="Live sources: reopen attempts (backoff 0.5 s doubling to 8 s) after a failed open or a dropout.")
@click.option("--threads", type=click.IntRange(min=0), default=None,
              help="onnxruntime intra-op threads, idle threads not spinning (0 = onnxruntime's own default: one "
                   "per core, spinning; default: cores - 1, measured for streaming in docs/cpu.md).")
@click.option("--server", help="Run the encoder and head on a `clipfsar serve` Triton server (grpc://HOST:PORT or "
              "http://HOST:PORT[?timeout=S&retries=N]); decoding, the ring buffer and smoothing stay here.")
@click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False), help=CACHE_OPTION_HELP)
def run(bundle: Path, source: str, backend: str, window: Optional[float], hop: Optional[float],
        threshold: Optional[float],
        smooth: int, show: bool, save: Optional[Path], as_json: bool, max_fps: Optional[float], live: bool,
        open_timeout: float, read_timeout: float, retries: int, threads: Optional[int],
        fps: Optional[float] = None, precision: str = "auto", server: Optional[str] = None,
        cache_dir: Optional[Path] = None) -> None:
    """Classify a camera, file or network stream with a bundle.

    A live source that stops delivering is reopened; it gives up after at most
    read-timeout + retries x (open-timeout + 1 + read-timeout) + the backoff waits (75.5 s with the defaults).
    Ctrl-C, SIGTERM and SIGHUP stop it cleanly, the --save video finalized (exit 130, 143, 129).
    """
    from clipfsar.runtime.base.threads import streaming_threads
    from clipfsar.runtime.classify.annotate import check_can_show, check_save_path
    from clipfsar.runtime.classify.classifier import Classifier
    from clipfsar.runtime.video.sources import open_source

    if save is not None:
        check_save_path(save, source)
    if show:
        check_can_show()
    clf = Classifier.load(bundle, backend=server or backend, threads=streaming_threads(threads),
                          spinning=streaming_threads(threads) == 0,
                          precision=precision, cache_dir=cache_dir)
    src = open_source(source, live=live or None, fps=fps, open_timeout=open_timeout, read_timeout=read_timeout,
                      max_retries=retries)
    click.echo(f"backend: image encoder on {clf.providers['image_encoder']} ({clf.precisions['image_encoder']}), "
               f"heads on {clf.providers['query_head']} ({clf.precisions['query_head']})", err=True)
    thr = clf.default_threshold if threshold is None else threshold
    gate = "the open-set score (znorm)" if clf.open_set_score == "znorm" else "the top score"
    click.echo(f"scores: {'calibrated probabilities' if clf.calibrated else 'the paper fusion'}; " + (
        f"'unknown' when {gate} is below {thr:.4f}{' (the bundle threshold)' if threshold is None else ''}"
        if thr > 0 else "no 'unknown' (rejection off: threshold 0)"), err=True)
    sink = AnnotatedSink(save, show, getattr(src, "fps", 30.0)) if (save or show) else None
    n, interrupted = 0, None
    try:
        with stop_on_signals():  # SIGTERM and SIGHUP stop like Ctrl-C: the saved video is finalized
            for d in clf.stream(src, window, hop, threshold, smooth, max_fps, on_frame=sink):
                n += 1
                if as_json:
                    line = _decision_json(d, clf.class_names)
                else:
                    note = "  (short clip: frames repeated, as in training)" if d.repeated_frames else ""
                    known = "" if d.known is None else f"  known {d.known:.3f}"
                    line = (f"[{d.t_start:7.2f}-{d.t_end:7.2f}s] frame {d.frame:6d}  {d.label:<32} {d.score:.3f}"
                            + known + note)
                _say(line, err=False)
                with contextlib.suppress(OSError):
                    sys.stdout.flush()
    except KeyboardInterrupt as e:
        interrupted = signal.Signals(e.signum).name if isinstance(e, Stopped) else "SIGINT"
        _say(f"stopped after {n} decisions ({interrupted})")
    finally:
        if sink is not None:
            with _ignoring_stop_signals():  # a second SIGTERM must not cut the file's finalization short
                sink.close()  # checks the file; a full disk or a failed write fails the run (exit 2)
            if save is not None:
                _say(f"wrote {sink.frames} annotated frames to {save}")
    if interrupted:
        sys.exit(130 if interrupted == "SIGINT" else 128 + int(signal.Signals[interrupted]))
    if n == 0:  # never a silent empty run
        from clipfsar.runtime.base.errors import ClipFsarError
        raise ClipFsarError(f"no decision was made on {source}: it ended before the first window of "
                            f"{clf.facts.frames} sampled frames was full; pass a shorter --window")


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--source", required=True, type=click.Path(), help="A video file.")
@click.option("--backend", "backends", multiple=True, type=click.Choice(BACKENDS[1:]),
              help="Backends to measure (default: every one that runs here).")
@click.option("--frames", "total_frames", default=10000, show_default=True,
              help="Frames to stream (the file is replayed) for the memory check.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--threads", type=click.IntRange(min=0), default=None,
              help="onnxruntime intra-op threads (0 = its default; default: as `clipfsar run`).")
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto", show_default=True,
              help="Graph variants to run (auto: from the bundle's precision report).")
@click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False), help=CACHE_OPTION_HELP)
@click.option("--cameras", is_flag=True, help="Also find how many live cameras at the bundle's cadence this box "
              "holds (the file played in real time as that many cameras; docs/cpu.md).")
@click.option("--seconds", type=click.FloatRange(min=1), default=10.0, show_default=True,
              help="Seconds per camera trial (--cameras).")
def bench(bundle: Path, source: str, backends, total_frames: int, as_json: bool, threads: Optional[int],
          precision: str = "auto", cache_dir: Optional[Path] = None, cameras: bool = False,
          seconds: float = 10.0) -> None:
    """Per-stage latency, decisions/s and resident memory over a long stream, per backend."""
    from clipfsar.runtime.base.threads import streaming_threads
    from clipfsar.runtime.cli.bench import run_bench

    report = run_bench(bundle, source, list(backends) or None, total_frames, threads=streaming_threads(threads),
                       precision=precision, cache_dir=cache_dir, cameras=cameras, seconds=seconds)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for r in report["backends"]:
        click.echo(f"backend {r['backend']} ({r['provider']}; "
                   f"{', '.join(f'{g} {p}' for g, p in r['precisions'].items())}): "
                   f"{r['decisions_per_s']:.1f} decisions/s, "
                   f"{r['frames_per_s']:.0f} frames/s read")
        for stage, ms in r["ms_per_decision"].items():
            click.echo(f"  {stage:<11} {ms:8.3f} ms/decision")
        click.echo(f"  around the encoder: {100 * r['overhead_vs_encoder']:.1f}% of the encoder's time")
        click.echo(f"  RSS {r['rss_mb_start']:.1f} MB at start, {r['rss_mb_end']:.1f} MB after "
                   f"{r['frames']} frames")
        click.echo(f"  encoder-bound limit {r['encoder_bound_decisions_per_s']:.1f} decisions/s; this stream "
                   f"{100 * r['of_encoder_bound']:.0f}% of it")
        cams = r.get("cameras")
        if cams:
            click.echo(f"  live cameras at {cams['cadence_hz']:g} frames/s each ({cams['frames']} frames per "
                       f"{cams['window_s']:g} s window): {cams['held']} held ({cams['seconds']:g} s trials), "
                       f"encoder-bound {cams['encoder_bound']}")
