"""The bundle format (owned here): ``manifest.json``, ONNX graphs and the prototype store, in one folder.

A bundle is written atomically (a temporary folder beside it, then a rename) and opened with every hash checked.
The manifest's schema is in runtime/bundle/manifest.py, the prototype store in runtime/bundle/store.py (both re-exported
here, as parts of this format); changes to an existing bundle (variants, store, optional manifest
entries, the writer lock) are in runtime/bundle/edit.py, which builds on this module.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Tuple

from clipfsar.runtime.base.atomic import staged_folder
from clipfsar.runtime.base.errors import BundleError
from clipfsar.runtime.base.output_folder import check_output_folder
from clipfsar.runtime.bundle.manifest import (  # noqa: F401
    PRECISIONS,
    SCHEMA_VERSION,
    GraphSpec,
    Manifest,
    ModelFacts,
    TensorSpec,
    VariantSpec,
)
from clipfsar.runtime.bundle.store import PrototypeStore

MANIFEST = "manifest.json"
GRAPH_NAMES = ("image_encoder", "text_encoder", "support_head", "query_head")
PROTOTYPES_FILE = "prototypes.safetensors"
VARIANTS_DIR = "variants"
# a precision with no file of its own: the fp32 graph run at bf16 inference precision (OpenVINO on CPUs with BF16,
# runtime/engines/openvino_backend.py); the precision report (calib/) measures it like the variants
EXECUTION_PRECISION = "bf16"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _inside(root: Path, rel: str, what: str) -> Path:
    """``root / rel``, refusing absolute paths and paths that leave the bundle."""
    if not isinstance(rel, str):
        raise BundleError(f"bundle {root}: {what} path must be a string, got {rel!r}")
    if not rel or "\0" in rel or os.path.isabs(rel) or Path(rel).drive:
        raise BundleError(f"bundle {root}: {what} path '{rel}' must be relative to the bundle")
    path = (root / rel).resolve()
    if root.resolve() not in path.parents:
        raise BundleError(f"bundle {root}: {what} path '{rel}' points outside the bundle")
    return path


@dataclass(frozen=True)
class Bundle:
    """An opened, validated bundle.

    Example:
        >>> b = Bundle.open("bundle/")
        >>> b.graph_path("image_encoder"), b.store.class_names
    """
    root: Path
    manifest: Manifest
    store: PrototypeStore

    @staticmethod
    def open(root: Path, check_hashes: bool = True) -> "Bundle":
        """Open ``root``: read the manifest, check every file exists inside the bundle and matches its hash.

        Raises:
            BundleError: missing folder or file, wrong hash, newer schema, path outside the bundle.
        """
        root = Path(root)
        if not root.is_dir():
            raise BundleError(f"bundle {root} is not a folder (a bundle is the folder `clipfsar export` writes)"
                              if root.exists() else f"bundle folder not found: {root}")
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise BundleError(f"bundle {root} has no {MANIFEST}")
        try:
            data = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise BundleError(f"bundle {root}: {MANIFEST} is not valid JSON: {e}") from e
        manifest = Manifest.from_json(data, str(mpath))
        missing = [g for g in GRAPH_NAMES if g not in manifest.graphs]
        if missing:
            raise BundleError(f"bundle {root}: manifest lacks graphs {', '.join(missing)}")
        entries = [(f"graph '{n}'", g.file, g.sha256) for n, g in manifest.graphs.items()]
        entries += [(f"graph '{n}' ({p})", v.file, v.sha256)
                    for n, g in manifest.graphs.items() for p, v in g.variants.items()]
        entries += [(f"graph '{n}' external data", d.get("file", ""), d.get("sha256", ""))
                    for n, g in manifest.graphs.items() for d in g.data]
        entries.append(("prototype store", manifest.prototypes.get("file", ""), manifest.prototypes.get("sha256", "")))
        if manifest.tokenizer:
            entries.append(("tokenizer", manifest.tokenizer.get("file", ""), manifest.tokenizer.get("sha256", "")))
        if manifest.cohort:
            entries.append(("open-set cohort", manifest.cohort.get("file", ""), manifest.cohort.get("sha256", "")))
        for what, rel, digest in entries:
            path = _inside(root, rel, what)
            if not path.is_file():
                raise BundleError(f"bundle {root}: {what} file {rel} is missing")
            try:
                changed = check_hashes and sha256_of(path) != digest
            except OSError as e:  # e.g. a file another user wrote with mode 0600
                raise BundleError(f"bundle {root}: {what} file {rel} cannot be read ({e.strerror})") from None
            if changed:
                raise BundleError(f"bundle {root}: {what} file {rel} does not match its sha256 (corrupt or changed)")
        store = PrototypeStore.load(root / manifest.prototypes["file"])
        if store.prototypes.shape[1:] != (manifest.model.frames, manifest.model.embed_dim):
            raise BundleError(f"bundle {root}: prototypes {store.prototypes.shape} do not match T="
                              f"{manifest.model.frames}, D={manifest.model.embed_dim}")
        return Bundle(root, manifest, store)

    def precisions(self, name: str) -> Tuple[str, ...]:
        """The precisions graph ``name`` exists in, always starting with ``fp32`` (e.g. ``('fp32', 'int8')``)."""
        variants = self._spec(name).variants
        return tuple(p for p in PRECISIONS if p == "fp32" or p in variants)

    def graph_path(self, name: str, precision: str = "fp32") -> Path:
        """The file of graph ``name`` at ``precision`` (``fp32``, ``fp16``, ``int8``; ``bf16``: the fp32 file).

        Raises:
            BundleError: no such graph, or the bundle has no such variant of it (the message lists those it has).
        """
        spec = self._spec(name)
        if precision in ("fp32", EXECUTION_PRECISION):  # bf16: the fp32 graph at bf16 inference precision
            return _inside(self.root, spec.file, f"graph '{name}'")
        if precision not in spec.variants:
            raise BundleError(f"bundle {self.root}: graph '{name}' has no {precision} variant; it has "
                              f"{', '.join(self.precisions(name))} (add one with `clipfsar calibrate`)")
        return _inside(self.root, spec.variants[precision].file, f"graph '{name}' ({precision})")

    def graph_sha256(self, name: str, precision: str = "fp32") -> str:
        """The manifest's sha256 of graph ``name`` at ``precision`` (the engine-cache key uses it)."""
        self.graph_path(name, precision)  # raises for a missing variant
        spec = self._spec(name)
        return spec.sha256 if precision in ("fp32", EXECUTION_PRECISION) else spec.variants[precision].sha256

    def _spec(self, name: str) -> GraphSpec:
        if name not in self.manifest.graphs:
            raise BundleError(f"bundle {self.root} has no graph '{name}' (it has {', '.join(self.manifest.graphs)})")
        return self.manifest.graphs[name]


def write_bundle(out: Path, manifest: Dict[str, Any], files: Dict[str, Path], store: PrototypeStore,
                 force: bool = False) -> Bundle:
    """Write a bundle to ``out``: copy ``files`` (bundle-relative name -> source path) and the store, fill in
    hashes, write the manifest, then move the folder into place in one rename.

    ``manifest`` holds everything but hashes; ``manifest['graphs'][name]['file']`` names a key of ``files``.
    Refuses an existing ``out`` unless ``force``, and always a non-empty folder that is not a bundle (ClipFsarError);
    an existing bundle is replaced only once the new one is complete.
    """
    out = Path(out)
    if out.exists() and not force:
        raise BundleError(f"output {out} exists; pass --force to replace it")
    check_output_folder(out, force, [], "bundle", lambda p: (p / MANIFEST).is_file())  # never a non-bundle folder
    with staged_folder(out) as tmp:
        for rel, src in files.items():
            dst = _inside(tmp, rel, "file")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        store.save(tmp / PROTOTYPES_FILE)
        manifest = json.loads(json.dumps(manifest))
        for g in manifest["graphs"].values():
            g["sha256"] = sha256_of(tmp / g["file"])
            for d in g.get("data", []):
                d["sha256"] = sha256_of(_inside(tmp, d["file"], "external data"))
        manifest["prototypes"] = {"file": PROTOTYPES_FILE, "sha256": sha256_of(tmp / PROTOTYPES_FILE)}
        if manifest.get("tokenizer"):
            manifest["tokenizer"]["sha256"] = sha256_of(_inside(tmp, manifest["tokenizer"]["file"], "tokenizer"))
        manifest["schema_version"] = SCHEMA_VERSION
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        Bundle.open(tmp)  # validate what was written before it becomes visible
    return Bundle.open(out)
