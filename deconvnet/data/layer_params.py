"""The ``param_str`` contracts of our Caffe data layers, each owned by one
dataclass: the generators write it with ``to_param_str()``, the layers read
it with ``from_param_str()``, which names any bad key or value. No other
code writes or parses this JSON.

- ``SegDataParams``: ``python_layers.seg_data.SegDataLayer`` (crop LMDBs).
- ``FCNDataParams``: ``python_layers.fcn_data.WholeImageDataLayer`` (whole
  VOC/SBD images, for FCN-8s).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import ClassVar, TypeVar

from deconvnet.common.constants import INPUT_SIZE, MEAN_BGR
from deconvnet.common.recipes import DEEPLAB_LARGEFOV, RELEASE

T = TypeVar("T", bound="_JSONParams")


@dataclass(frozen=True)
class _JSONParams:
    """JSON of the fields in declaration order; unknown and missing keys are
    errors that name the layer."""

    LAYER: ClassVar[str] = ""
    REQUIRED: ClassVar[tuple[str, ...]] = ()

    def to_param_str(self) -> str:
        values = asdict(self)
        values["mean"] = list(values["mean"])
        return json.dumps(values)

    @classmethod
    def from_param_str(cls: type[T], param_str: str) -> T:
        try:
            given = json.loads(param_str or "{}")
        except json.JSONDecodeError as err:
            raise ValueError(f"{cls.LAYER}: param_str is not JSON ({err}): {param_str!r}") from err
        if not isinstance(given, dict):
            raise ValueError(f"{cls.LAYER}: param_str must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(f"{cls.LAYER}: unknown param_str key {unknown[0]!r}; known keys: "
                             f"{', '.join(sorted(known))}")
        for key in cls.REQUIRED:
            if key not in given:
                raise ValueError(f"{cls.LAYER}: param_str needs '{key}'")
        kinds = {f.name: str(f.type) for f in fields(cls)}
        for key, value in given.items():
            cls._check_type(key, kinds[key], value)
        if "mean" in given:
            given["mean"] = tuple(float(v) for v in given["mean"])
        params = cls(**given)
        params.validate()
        return params

    @classmethod
    def _check_type(cls, key: str, kind: str, value: object) -> None:
        """JSON types as declared: an int is not a bool, a bool is not the
        string "no" (which Python would take as true), a mean is 3 numbers."""
        def number(v: object) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)
        ok = {"int": isinstance(value, int) and not isinstance(value, bool),
              "bool": isinstance(value, bool),
              "str": isinstance(value, str),
              "tuple[float, ...]": isinstance(value, list) and len(value) == 3 and all(map(number, value))}[kind]
        if not ok:
            wanted = {"int": "an integer", "bool": "true or false", "str": "a string",
                      "tuple[float, ...]": "3 numbers (B, G, R)"}[kind]
            raise ValueError(f"{cls.LAYER}: '{key}' must be {wanted}, got {json.dumps(value)}")

    def validate(self) -> None:
        pass


# The Python module that holds SegDataLayer, as nets name it.
SEG_DATA_MODULE = "python_layers.seg_data"


@dataclass(frozen=True)
class SegDataParams(_JSONParams):
    """What SegDataLayer reads, and how."""

    LAYER: ClassVar[str] = "SegDataLayer"
    REQUIRED: ClassVar[tuple[str, ...]] = ("source",)

    source: str                              # the crop database folder
    batch_size: int = RELEASE.batch_per_pass  # examples per batch
    crop_size: int = INPUT_SIZE              # random (TRAIN) or centre (TEST) crop side
    mirror: bool = False                     # random horizontal flips (TRAIN only)
    mean: tuple[float, ...] = MEAN_BGR       # BGR mean subtracted from the image
    shuffle: bool = False                    # a new shuffled pass each epoch (TRAIN only)
    seed: int = 0                            # order, crops and flips
    workers: int = 1                         # prefetching processes (0: load in the layer)

    @classmethod
    def for_phase(cls, source: str, train: bool, batch_size: int = RELEASE.batch_per_pass,
                  crop_size: int = INPUT_SIZE,
                  workers: int | None = None) -> SegDataParams:
        """The stage nets' settings: TRAIN flips, shuffles and prefetches with
        two workers; TEST reads in order with one."""
        return cls(source=source, batch_size=batch_size, crop_size=crop_size, mirror=train, shuffle=train,
                   workers=workers if workers is not None else (2 if train else 1))

    def validate(self) -> None:
        for key in ("batch_size", "crop_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"SegDataLayer: '{key}' must be a positive integer, got {value!r}")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"SegDataLayer: 'workers' must be 0 or more, got {self.workers!r}")


@dataclass(frozen=True)
class FCNDataParams(_JSONParams):
    """What WholeImageDataLayer reads, and how."""

    LAYER: ClassVar[str] = "WholeImageDataLayer"
    REQUIRED: ClassVar[tuple[str, ...]] = ("dataset", "root", "split")

    dataset: str                             # "voc" (VOCdevkit/VOC2012) or "sbd" (benchmark_RELEASE/dataset)
    root: str                                # that folder; relative paths resolve from the working directory
    split: str                               # a split file name without .txt
    mean: tuple[float, ...] = MEAN_BGR       # BGR mean to subtract
    shuffle: bool = False                    # random order (TRAIN) or the file's order
    seed: int = 0

    def validate(self) -> None:
        if self.dataset not in ("voc", "sbd"):
            raise ValueError(f"WholeImageDataLayer: 'dataset' must be voc or sbd, got {self.dataset!r}")



# The Python module that holds ImageCropDataLayer, as nets name it.
IMAGE_CROP_MODULE = "python_layers.image_crop_data"


@dataclass(frozen=True)
class ImageCropParams(_JSONParams):
    """What ImageCropDataLayer reads (DeepLab-LargeFOV's data), and how."""

    LAYER: ClassVar[str] = "ImageCropDataLayer"
    REQUIRED: ClassVar[tuple[str, ...]] = ("image_set",)

    image_set: str                           # deconvnet.data.image_sets: union-minus-voc-val, voc:val, ...
    voc_root: str = ""                       # VOCdevkit/VOC2012 (relative: from the working directory)
    sbd_root: str = ""                       # benchmark_RELEASE/dataset
    batch_size: int = DEEPLAB_LARGEFOV.batch_per_pass
    crop_size: int = DEEPLAB_LARGEFOV.crop_size  # images padded (mean, void) up to it, then cropped
    random_crop: bool = False                # a random window (TRAIN) or the top-left one (TEST)
    mirror: bool = False                     # random horizontal flips
    shuffle: bool = False                    # a new shuffled pass each epoch
    mean: tuple[float, ...] = MEAN_BGR       # BGR mean subtracted from the image
    seed: int = 0                            # order, crops and flips

    def validate(self) -> None:
        for key in ("batch_size", "crop_size"):
            if getattr(self, key) <= 0:
                raise ValueError(f"ImageCropDataLayer: '{key}' must be a positive integer, got {getattr(self, key)}")
        if not (self.voc_root or self.sbd_root):
            raise ValueError("ImageCropDataLayer: give 'voc_root', 'sbd_root' or both")
