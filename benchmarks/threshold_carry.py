"""Benchmark: does the "unknown" threshold keep its false-accept rate when classes are removed or enrolled?

Copies a calibrated bundle (``clipfsar calibrate-threshold`` already run, score ``znorm``) three times: as it is,
with all but ``--keep`` classes removed, and with ``--add`` training-split classes enrolled from 5 clips each (the
cohort rebuilt without them). For each copy it scores every clip of the ``--split`` classes that are not enrolled
at the stored threshold and prints the share accepted (the false-accept rate) and the median ``known``.

    .venv/bin/python benchmarks/threshold_carry.py BUNDLE --data DATA [--split val] [--keep 2] [--add 12] [--out DIR]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np


def false_accepts(bundle: Path, unknown_by_class) -> str:
    from clipfsar.runtime import Classifier
    from clipfsar.runtime.video.clips import read_clip
    clf = Classifier.load(bundle, backend="cpu")
    clips = [p for c, ps in unknown_by_class.items() if c not in clf.class_names for p in ps]
    feats = np.stack([clf.encode(read_clip(p, clf.facts.frames)) for p in clips])
    known = clf._scores(feats)[1]["known"]
    return (f"{len(clf.class_names):3d} classes: {100 * (known >= clf.default_threshold).mean():5.1f} % of "
            f"{len(clips)} unknown clips accepted at {clf.default_threshold:.4f}; median known {np.median(known):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--keep", type=int, default=2)
    ap.add_argument("--add", type=int, default=12)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    from clipfsar.runtime import Classifier
    from clipfsar.runtime.bundle.edit import set_cohort
    from clipfsar.runtime.bundle.reader import Bundle
    from clipfsar.runtime.teaching.openset import make_cohort, read_split
    if Bundle.open(a.bundle).manifest.calibration.get("threshold", {}).get("score") != "znorm":
        raise SystemExit(f"{a.bundle}: run `clipfsar calibrate-threshold` first (a znorm threshold is needed)")
    out = a.out or Path(tempfile.mkdtemp(prefix="threshold_carry_"))
    unknown = read_split(a.data, a.split)
    train = read_split(a.data, "train")
    print(false_accepts(a.bundle, unknown))
    fewer, more = out / "fewer", out / "more"
    for copy in (fewer, more):
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(a.bundle, copy)
    clf = Classifier.load(fewer, backend="cpu")
    for name in list(clf.class_names)[a.keep:]:
        clf.remove_class(name)
    print(false_accepts(fewer, unknown))
    clf = Classifier.load(more, backend="cpu")
    for name in sorted(train)[:a.add]:
        clf.enroll(name, train[name][:5])
    b = Bundle.open(more)
    set_cohort(b.root, *make_cohort(b, a.data, "train"))  # the cohort without the newly enrolled classes
    print(false_accepts(more, unknown))


if __name__ == "__main__":
    main()
