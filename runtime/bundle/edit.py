"""Changes to an existing bundle, each atomic and under the bundle's writer lock: precision variants
(calib/), the prototype store (enrolment, class management), the open-set cohort and optional manifest entries
(tokenizer, calibration). The format itself is defined in runtime/bundle/reader.py.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from clipfsar.runtime.base.atomic import staged_file
from clipfsar.runtime.base.errors import BundleError, DiskFullError, disk_full_error
from clipfsar.runtime.bundle.reader import (
    MANIFEST,
    PRECISIONS,
    SCHEMA_VERSION,
    VARIANTS_DIR,
    Bundle,
    Manifest,
    sha256_of,
)
from clipfsar.runtime.bundle.store import PrototypeStore


@dataclass(frozen=True)
class NewVariant:
    """A variant to add to a bundle: the ONNX file made by calib/, how it was made, and its report."""
    source: Path
    method: str = ""
    report: Dict[str, Any] = field(default_factory=dict)


def add_variants(root: Path, variants: Dict[str, Dict[str, NewVariant]],
                 precision_report: Dict[str, Any] = None) -> Bundle:
    """Add (or replace) precision variants of an existing bundle's graphs, atomically.

    Each file is copied into ``variants/`` under a name that carries its hash (so no file the current manifest
    lists is ever overwritten), then the manifest is rewritten through a staged file and renamed into place last:
    a process killed mid-way leaves the bundle as it was and valid. Files no longer listed are removed afterwards.
    Keys of the manifest this function does not know are kept as they are.

    Args:
        root: the bundle folder.
        variants: graph name -> precision (``fp16``/``int8``) -> NewVariant.
        precision_report: the end-to-end report (calib/report.py); replaces the manifest's when given.
    Returns:
        The reopened, validated bundle.
    Raises:
        BundleError: the bundle is invalid, a graph or precision is unknown, or a source file is missing.
    Example:
        >>> add_variants("bundle/", {"image_encoder": {"int8": NewVariant(Path("enc.int8.onnx"), "int8-dynamic")}})
    """
    root = Path(root)
    with bundle_lock(root):  # one writer at a time (enrolment, calibration, variants)
        return _add_variants_locked(root, variants, precision_report)


def _add_variants_locked(root: Path, variants: Dict[str, Dict[str, NewVariant]],
                         precision_report: Optional[Dict[str, Any]]) -> Bundle:
    Bundle.open(root)  # refuse to add to an invalid bundle
    data = json.loads((root / MANIFEST).read_text())
    for name, by_precision in variants.items():
        if name not in data["graphs"]:
            raise BundleError(f"bundle {root} has no graph '{name}' (it has {', '.join(data['graphs'])})")
        for precision, new in by_precision.items():
            if precision not in PRECISIONS[1:]:
                raise BundleError(f"unknown variant precision '{precision}' for graph '{name}'; "
                                  f"choose {', '.join(PRECISIONS[1:])}")
            if not Path(new.source).is_file():
                raise BundleError(f"variant file {new.source} ({name}, {precision}) not found")
    made_dir = not (root / VARIANTS_DIR).exists()
    (root / VARIANTS_DIR).mkdir(exist_ok=True)
    written = []  # files this call added: removed again if it fails (a full disk), so nothing is changed
    try:
        for name, by_precision in variants.items():
            entry = data["graphs"][name].setdefault("variants", {})
            for precision, new in by_precision.items():
                digest = sha256_of(Path(new.source))
                rel = f"{VARIANTS_DIR}/{name}.{precision}.{digest[:12]}.onnx"
                if not (root / rel).is_file() or sha256_of(root / rel) != digest:
                    with staged_file(root / rel) as tmp:
                        shutil.copyfile(new.source, tmp)
                    written.append(root / rel)
                entry[precision] = {"file": rel, "sha256": digest, "precision": precision, "method": new.method,
                                    "report": json.loads(json.dumps(new.report))}
        if precision_report is not None:
            data["precision_report"] = json.loads(json.dumps(precision_report))
        data["schema_version"] = max(int(data["schema_version"]), SCHEMA_VERSION)
        _write_manifest(root, data)  # checked, staged, fsynced, renamed: the last step
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if made_dir:
            with contextlib.suppress(OSError):
                (root / VARIANTS_DIR).rmdir()
        raise
    _remove_unlisted_variants(root, data)
    return Bundle.open(root)


def _remove_unlisted_variants(root: Path, data: Dict[str, Any]) -> None:
    """Delete files in ``variants/`` that the manifest no longer lists (replaced variants, leftovers of a kill)."""
    listed = {v["file"] for g in data["graphs"].values() for v in g.get("variants", {}).values()}
    for path in (root / VARIANTS_DIR).iterdir():
        rel = f"{VARIANTS_DIR}/{path.name}"
        if path.is_file() and rel not in listed and not path.name.startswith("."):
            path.unlink()


# ----- in-place writes of an existing bundle: the prototype store and optional manifest entries -------------------
LOCK_FILE = ".lock"
STORE_PREFIX = "prototypes"


@contextlib.contextmanager
def bundle_lock(root: Path, timeout: float = 30.0) -> Iterator[None]:
    """Hold the bundle's writer lock (an advisory ``flock`` on ``ROOT/.lock``): a second writer waits for it.

    Args:
        root: the bundle folder. timeout: seconds to wait before giving up.
    Raises:
        BundleError: the bundle is read-only, or another process held the lock longer than ``timeout`` (named by pid).
    Example:
        >>> with bundle_lock(Path("bundle")):
        ...     pass  # read, change and rewrite the store here
    """
    root = Path(root)
    path = root / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise BundleError(f"bundle {root} is read-only or not writable ({e.strerror}); copy it somewhere "
                          f"writable to change its classes") from e
    try:
        _acquire(fd, root, timeout)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _acquire(fd: int, root: Path, timeout: float) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: a byte-range lock on the lock file
        import msvcrt
        lock = lambda: msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # noqa: E731
    else:
        lock = lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # noqa: E731
    deadline = time.monotonic() + timeout
    while True:
        try:
            lock()
            return
        except OSError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise BundleError(f"bundle {root} is being changed by another process (pid {holder}) for more "
                                  f"than {timeout:g} s; try again when it has finished") from None
            time.sleep(0.05)


def _write_manifest(root: Path, data: Dict[str, Any]) -> None:
    Manifest.from_json(data, f"{root / MANIFEST} (new)")  # never write a manifest this runtime cannot read
    with staged_file(root / MANIFEST, fsync=True) as tmp:  # this module's staged_file: tests kill a writer here
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def replace_store(root: Path, change: Callable[[PrototypeStore], PrototypeStore], timeout: float = 30.0) -> Bundle:
    """Change a bundle's prototype store atomically, under the writer lock.

    Inside the lock the bundle is reopened (so ``change`` sees the store as it is now, with what any other writer
    just added), ``change(store)`` gives the new store, which is written to a new file named by its hash; then the
    manifest is rewritten through a staged file and renamed into place; the old store file is removed last. A
    process killed at any point leaves a bundle that opens, with the old store or the new one. A classifier that
    already loaded the bundle keeps the store it has in memory; ``Bundle.open`` afterwards sees the new one.

    Args:
        root: the bundle folder. change: old store -> new store (may raise to abort; nothing is written then).
    Returns:
        The reopened bundle.
    Raises:
        BundleError: invalid bundle, read-only bundle, lock not obtained; whatever ``change`` raises.
    """
    root = Path(root)
    with bundle_lock(root, timeout):
        # the graphs are not rewritten here: hash only the store (a full check reads every graph, ~0.6 GB for ViT-B)
        bundle = Bundle.open(root, check_hashes=False)
        if sha256_of(root / bundle.manifest.prototypes["file"]) != bundle.manifest.prototypes["sha256"]:
            raise BundleError(f"bundle {root}: prototype store does not match its sha256 (corrupt or changed)")
        store = change(bundle.store)
        if store.prototypes.shape[1:] != bundle.store.prototypes.shape[1:]:
            raise BundleError(f"bundle {root}: new prototypes {store.prototypes.shape} do not match the bundle's")
        rel, digest = _write_hashed(root, STORE_PREFIX, store.save)
        data = json.loads((root / MANIFEST).read_text())
        old_rel = data["prototypes"]["file"]
        data["prototypes"] = {"file": rel, "sha256": digest}
        _write_manifest_or_undo(root, data, rel, old_rel)
        _remove_others(root, STORE_PREFIX, rel)  # the old store, and any a killed writer left
        return Bundle.open(root, check_hashes=False)


def _write_manifest_or_undo(root: Path, data: Dict[str, Any], new_rel: str, old_rel: Optional[str]) -> None:
    """:func:`_write_manifest`; if it fails (a full disk), the new hashed file the manifest would have named is
    removed again, so the bundle's files are exactly what they were ("nothing was changed")."""
    try:
        _write_manifest(root, data)
    except BaseException:
        if new_rel != old_rel:
            (root / new_rel).unlink(missing_ok=True)
        raise


def _write_hashed(root: Path, prefix: str, save: Callable[[Path], None]) -> Tuple[str, str]:
    """Write a new bundle file through ``save(path)`` (which stages and fsyncs it) and rename it to
    ``PREFIX.<sha256[:16]>.safetensors``, a name no reader of the current manifest uses. Call under the lock.

    Returns:
        (file name relative to the bundle, sha256).
    Raises:
        BundleError: a read-only bundle (nothing changed).
    """
    for stale in root.glob(f".*{prefix}*"):  # temporaries of a writer that was killed (we hold the lock)
        stale.unlink()
    tmp = root / f".{prefix}.new.safetensors"
    try:
        save(tmp)
        digest = sha256_of(tmp)
        rel = f"{prefix}.{digest[:16]}.safetensors"
        os.replace(tmp, root / rel)
    except PermissionError as e:
        raise BundleError(f"bundle {root} is read-only ({e.strerror}); nothing was changed") from e
    except DiskFullError as e:  # name the bundle, not the hidden temporary
        tmp.unlink(missing_ok=True)
        raise disk_full_error(f"the {prefix} file of bundle {root}") from e
    return rel, digest


def _remove_others(root: Path, prefix: str, keep: str) -> None:
    """Remove every ``PREFIX*.safetensors`` file but ``keep`` (the one the manifest now names)."""
    for path in root.glob(f"{prefix}*.safetensors"):
        if path.name != keep:
            path.unlink(missing_ok=True)


def update_manifest(root: Path, key: str, value: Dict[str, Any], timeout: float = 30.0) -> Bundle:
    """Set an optional top-level manifest entry (``calibration`` or ``tokenizer``) atomically, under the lock.

    Raises:
        BundleError: unknown key, invalid or read-only bundle, lock not obtained.
    """
    if key not in ("calibration", "tokenizer"):
        raise BundleError(f"update_manifest: '{key}' is not an optional manifest entry")
    root = Path(root)
    with bundle_lock(root, timeout):
        Bundle.open(root)
        data = json.loads((root / MANIFEST).read_text())
        data[key] = json.loads(json.dumps(value))
        try:
            _write_manifest(root, data)
        except PermissionError as e:
            raise BundleError(f"bundle {root} is read-only ({e.strerror}); nothing was changed") from e
        return Bundle.open(root)


COHORT_PREFIX = "cohort"


def set_cohort(root: Path, features, info: Dict[str, Any], calibration: Optional[Dict[str, Any]] = None,
               timeout: float = 30.0) -> Bundle:
    """Store the open-set cohort (M, T, D) float32 frame features (teaching/cohort.py) atomically, under the lock:
    a new file named by its hash (mode 0644), then the manifest's ``cohort`` entry (``info`` plus file and sha256)
    and, if given, the new ``calibration`` entry (its threshold fitted on this cohort) in one rename, then the old
    cohort file is removed.

    Raises:
        BundleError: features of the wrong shape, an invalid, read-only or locked bundle.
    """
    import numpy as np
    from safetensors.numpy import save_file
    root = Path(root)
    feats = np.ascontiguousarray(features, np.float32)
    with bundle_lock(root, timeout):
        bundle = Bundle.open(root, check_hashes=False)
        facts = bundle.manifest.model
        if feats.ndim != 3 or feats.shape[1:] != (facts.frames, facts.embed_dim) or len(feats) < 2 \
                or not np.isfinite(feats).all():
            raise BundleError(f"bundle {root}: cohort features {list(feats.shape)} must be finite "
                              f"[M >= 2, {facts.frames}, {facts.embed_dim}]")
        def save(path: Path) -> None:  # staged: mode 0644 like every bundle file, fsynced before the rename
            with staged_file(path, fsync=True) as tmp:
                save_file({"features": feats}, str(tmp))

        rel, digest = _write_hashed(root, COHORT_PREFIX, save)
        data = json.loads((root / MANIFEST).read_text())
        old_rel = (data.get("cohort") or {}).get("file")
        data["cohort"] = {**json.loads(json.dumps(info)), "file": rel, "sha256": digest, "clips": int(len(feats))}
        if calibration is not None:
            data["calibration"] = json.loads(json.dumps(calibration))
        _write_manifest_or_undo(root, data, rel, old_rel)
        _remove_others(root, COHORT_PREFIX, rel)
        return Bundle.open(root, check_hashes=False)
