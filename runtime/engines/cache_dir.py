"""Where compiled engines of a bundle live: one resolver for every command (``engine``, ``run``, ``enroll``,
``serve``, ``bench``, the studio) and every compiler (TensorRT engines, onnxruntime's TensorRT EP, OpenVINO).

The order (the first that applies wins):

1. ``--cache-dir DIR`` (the ``cache_dir`` argument);
2. the environment variable ``CLIPFSAR_CACHE_DIR``;
3. the bundle's own ``engines/`` folder, when the bundle folder (and ``engines/``, if it exists) can be written;
4. otherwise (a read-only bundle) a per-user folder: ``$XDG_CACHE_HOME/clipfsar/engines/<bundle name>-<digest12>``
   (``~/.cache`` without XDG; ``%LOCALAPPDATA%`` on Windows, ``~/Library/Caches`` on macOS), where ``digest12``
   is the first 12 hex digits of the sha256 of the bundle's absolute path, so two bundles of the same name do
   not share ``profile.json``. A warning says so.

Nothing is created here: the folder is made by whoever first writes an engine into it. The engines' own keys
(runtime/engines/trt_cache.py) make a shared folder safe: an engine is loaded only where it was built for.

Example:
    >>> engine_cache_dir(Path("bundle"), None)            # writable bundle, no option, no variable
    PosixPath('bundle/engines')
    >>> engine_cache_dir(Path("bundle"), Path("/tmp/engines"))
    PosixPath('/tmp/engines')
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path
from typing import Mapping, Optional, Tuple

log = logging.getLogger(__name__)

CACHE_ENV = "CLIPFSAR_CACHE_DIR"
CACHE_OPTION_HELP = ("Engine cache folder (TensorRT engines, onnxruntime's TensorRT EP caches); default: "
                     f"${CACHE_ENV}, else the bundle's engines/, else a per-user cache when the bundle is read-only.")


def user_cache_root(env: Optional[Mapping[str, str]] = None, platform: Optional[str] = None) -> Path:
    """The per-user cache folder of clipfsar: ``<platform cache>/clipfsar``."""
    env = os.environ if env is None else env
    platform = platform or sys.platform
    if platform.startswith("win"):
        base = Path(env.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "clipfsar"


def _writable(bundle_root: Path) -> bool:
    engines = bundle_root / "engines"
    if engines.exists():
        return engines.is_dir() and os.access(engines, os.W_OK | os.X_OK)
    return os.access(bundle_root, os.W_OK | os.X_OK)


def resolve_cache_dir(bundle_root: Path, cache_dir: Optional[Path] = None,
                      env: Optional[Mapping[str, str]] = None) -> Tuple[Path, str]:
    """(folder, where it came from: ``option``, ``env``, ``bundle`` or ``user``). See the module docstring."""
    env = os.environ if env is None else env
    if cache_dir is not None and str(cache_dir) != "":
        return Path(cache_dir).expanduser(), "option"
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV]).expanduser(), "env"
    bundle_root = Path(bundle_root)
    if _writable(bundle_root):
        return bundle_root / "engines", "bundle"
    absolute = str(bundle_root.resolve())
    digest = hashlib.sha256(absolute.encode()).hexdigest()[:12]
    return user_cache_root(env) / "engines" / f"{bundle_root.resolve().name or 'bundle'}-{digest}", "user"


def engine_cache_dir(bundle_root: Path, cache_dir: Optional[Path] = None,
                     env: Optional[Mapping[str, str]] = None) -> Path:
    """The engine cache folder of the bundle at ``bundle_root`` (see the module docstring for the order).

    Args:
        bundle_root: the bundle folder.
        cache_dir: ``--cache-dir`` (None: not given).
        env: the environment (default ``os.environ``), for ``CLIPFSAR_CACHE_DIR``.
    Returns:
        The folder (not created). A read-only bundle's per-user fallback is announced with a warning.
    """
    path, source = resolve_cache_dir(bundle_root, cache_dir, env)
    if source == "user":
        log.warning("bundle %s is read-only: engines are cached in %s (set --cache-dir or %s to choose)",
                    bundle_root, path, CACHE_ENV)
    return path
