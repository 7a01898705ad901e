"""The serving process's environment: what ``tritonserver`` and its Python-backend stub need before they start.

PyTriton launches the real ``tritonserver`` binary, and the stub that runs our Python callables inherits this
process's environment. Pitfalls handled here (both measured on this machine, Python 3.11.7 from pyenv,
nvidia-pytriton 0.7.0):

* The Python-backend stub links ``libpython3.X.so`` and, unless told otherwise, the dynamic linker finds the
  system's copy of another 3.X patch release; model loading then fails with ``'_thread.RLock' object has no
  attribute '_recursion_count'``. We put ``sysconfig.get_config_var("LIBDIR")`` first in ``LD_LIBRARY_PATH``
  of this process's environment before PyTriton launches ``tritonserver`` (which the stub inherits).
* The stub binary of nvidia-pytriton 0.7.0 is built with pybind11 < 2.12 (numpy 1.x ABI only; the wheel requires
  ``numpy<2``): with numpy 2 in the stub every response comes back EMPTY (the element size is read from the
  numpy-1 descriptor layout). When this interpreter has numpy >= 2, ``serve`` needs a *stub environment*: a venv of
  the same Python with ``numpy<2`` whose site-packages then add this one (README: "Serving"). A fresh
  ``pip install clip-fsar[serve]`` resolves to numpy 1.x and needs none.

Example:
    >>> fix_libpython_path()            # before tritonserver starts
    >>> env = stub_python_env(None)     # None, or the numpy<2 environment the stub must use
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from clipfsar.runtime.base.errors import ClipFsarError

STUB_ENV_VAR = "CLIPFSAR_TRITON_STUB_ENV"
DEFAULT_STUB_ENV = "triton-stub-env"  # looked for inside this interpreter's prefix (the venv)


class ServeError(ClipFsarError):
    """The server cannot start: pytriton missing, a port in use, an unusable stub environment, ..."""


def port_free(host: str, port: int) -> bool:
    """True when a server could listen on ``host:port`` now (TCP).

    Binds with ``SO_REUSEADDR``, as tritonserver (gRPC, HTTP) does: connections a just-stopped server left in
    TIME_WAIT do not block a restart, while a socket still listening there does (Linux refuses that bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def fix_libpython_path(env: Optional[Dict[str, str]] = None) -> str:
    """Put this interpreter's ``LIBDIR`` first in ``LD_LIBRARY_PATH`` (of ``env``, default ``os.environ``).

    Must run before ``tritonserver`` starts: its Python-backend stub inherits the environment and loads
    ``libpython3.X.so`` through the dynamic linker. Returns the directory put first ("" when there is none).
    """
    env = os.environ if env is None else env
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    if not libdir or not Path(libdir).is_dir():
        return ""
    parts = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != libdir]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([libdir] + parts)
    return libdir


def stub_python_env(stub_env: Optional[Path]) -> Optional[Path]:
    """The Python environment the Python-backend stub must use, or None for this one.

    With numpy >= 2 here, the stub (numpy-1 ABI) needs ``stub_env`` (or ``$CLIPFSAR_TRITON_STUB_ENV``, or
    ``<sys.prefix>/triton-stub-env``): a venv of the same Python version whose numpy is < 2 and which imports
    ``zmq`` (PyTriton's proxy needs it).

    Raises:
        ServeError: none given, or it is not such an environment (the message says how to make one).
    """
    stub_env = stub_env or (Path(os.environ[STUB_ENV_VAR]) if os.environ.get(STUB_ENV_VAR) else None)
    numpy_major = int(np.__version__.split(".")[0])
    if stub_env is None and numpy_major >= 2 and (Path(sys.prefix) / DEFAULT_STUB_ENV).is_dir():
        stub_env = Path(sys.prefix) / DEFAULT_STUB_ENV  # the conventional place: inside this venv
    how = ("make one: `python -m venv --without-pip ENV && pip install --target ENV/lib/python3.X/site-packages "
           "'numpy<2' && echo \"import site; site.addsitedir('$(python -c 'import site; "
           "print(site.getsitepackages()[0])')')\" > ENV/lib/python3.X/site-packages/zz_main_env.pth` "
           "(README: Serving), then pass --stub-env ENV")
    if stub_env is None:
        if numpy_major >= 2:
            raise ServeError(f"this environment has numpy {np.__version__}, but the Triton Python-backend stub in "
                             f"nvidia-pytriton is built for numpy 1.x (its responses come back empty under numpy 2); "
                             f"install clip-fsar[serve] in an environment with numpy<2, or {how}")
        return None
    python = Path(stub_env) / "bin" / "python3"
    if not python.exists():
        raise ServeError(f"stub environment {stub_env} has no bin/python3; {how}")
    probe = "import sys, numpy, zmq; print(sys.version_info[0], sys.version_info[1], numpy.__version__)"
    r = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise ServeError(f"stub environment {stub_env} cannot import numpy and zmq: {r.stderr.strip()[-300:]}")
    major, minor, np_version = r.stdout.split()
    if (int(major), int(minor)) != sys.version_info[:2]:
        raise ServeError(f"stub environment {stub_env} runs Python {major}.{minor}, this one "
                         f"{sys.version_info[0]}.{sys.version_info[1]}: they must match")
    if int(np_version.split(".")[0]) >= 2:
        raise ServeError(f"stub environment {stub_env} has numpy {np_version}; the stub needs numpy<2")
    return Path(stub_env)


def use_stub_env(env: Path) -> None:
    """Make PyTriton run the Python-backend stub in ``env`` (PyTriton puts ``<env>/bin`` first on the server's
    PATH; the stub's embedded interpreter finds its prefix there). nvidia-pytriton 0.7 has no public option."""
    import pytriton.server.triton_server as triton_server
    if not hasattr(triton_server, "get_triton_python_backend_python_env"):
        raise ServeError("this nvidia-pytriton has no get_triton_python_backend_python_env: --stub-env needs 0.7.x")
    triton_server.get_triton_python_backend_python_env = lambda: Path(env)
