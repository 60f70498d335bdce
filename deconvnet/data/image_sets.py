"""Which images a dataset is built from.

``union`` is the paper's training set: VOC 2012 trainval together with SBD
train and val (10582 train_aug + 1449 val = 12031 images on the real data).
Where an image has both annotations, VOC's (with its void borders) is used.
``union-minus-voc-val`` is the same without any VOC 2012 val image (SBD train
overlaps VOC val), for a clean val score. ``voc:SPLIT`` and ``sbd:SPLIT`` take
one split file of one dataset.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deconvnet.data.voc import DatasetError, Instance, SBDReader, VOCReader


@dataclass(frozen=True)
class ImageRef:
    source: str     # "voc" or "sbd"
    image_id: str


class ImageSource:
    """Reads images and annotations of ImageRefs from both datasets."""

    def __init__(self, voc_root: Path | None, sbd_root: Path | None) -> None:
        self.readers: dict[str, VOCReader | SBDReader] = {}
        if voc_root:
            self.readers["voc"] = VOCReader(voc_root)
        if sbd_root:
            self.readers["sbd"] = SBDReader(sbd_root)
        if not self.readers:
            raise DatasetError("no dataset given: pass a VOC root, an SBD root, or both")

    def reader(self, source: str) -> VOCReader | SBDReader:
        if source not in self.readers:
            raise DatasetError(f"image set needs the {source.upper()} root, which was not given")
        return self.readers[source]

    def image(self, ref: ImageRef) -> np.ndarray:
        return self.reader(ref.source).image(ref.image_id)

    def class_map(self, ref: ImageRef) -> np.ndarray:
        return self.reader(ref.source).class_map(ref.image_id)

    def instances(self, ref: ImageRef) -> list[Instance]:
        return self.reader(ref.source).instances(ref.image_id)

    def fingerprint(self, refs: list[ImageRef]) -> str:
        """sha256 over the image list and every input file's size and
        modification time (absent files count too): a resumed build must
        read the same inputs it started from."""
        digest = hashlib.sha256()
        for ref in refs:
            digest.update(f"{ref.source}/{ref.image_id}\n".encode())
            for path in self.reader(ref.source).files(ref.image_id):
                try:
                    st = path.stat()
                    digest.update(f"{path.name} {st.st_size} {st.st_mtime_ns}\n".encode())
                except FileNotFoundError:
                    digest.update(f"{path.name} missing\n".encode())
        return digest.hexdigest()

    def resolve(self, spec: str) -> list[ImageRef]:
        if spec in ("union", "union-minus-voc-val"):
            refs = [ImageRef("voc", i) for i in self.reader("voc").ids("trainval")]
            seen = {r.image_id for r in refs}
            if spec == "union-minus-voc-val":
                # SBD train overlaps VOC 2012 val: leave every val image out.
                val = set(self.reader("voc").ids("val"))
                refs = [r for r in refs if r.image_id not in val]
                seen |= val
            sbd = self.reader("sbd")
            for split in ("train", "val"):
                for i in sbd.ids(split):
                    if i not in seen:
                        seen.add(i)
                        refs.append(ImageRef("sbd", i))
            return refs
        source, _, split = spec.partition(":")
        if source not in ("voc", "sbd") or not split:
            raise DatasetError(f"unknown image set '{spec}': use union, union-minus-voc-val, voc:SPLIT "
                               "or sbd:SPLIT")
        return [ImageRef(source, i) for i in self.reader(source).ids(split)]
