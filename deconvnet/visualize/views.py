"""The figures tools/visualize.py and the demo write, each a PNG and a JSON
of what it shows: top-k activations per unit, first-layer filters, and the
same units across training snapshots."""
from __future__ import annotations

import logging
import re
from pathlib import Path

from deconvnet.visualize import render
from deconvnet.visualize.projector import Projector
from deconvnet.visualize.sources import ImageSet
from deconvnet.visualize.top9 import TOP, Activation, Peaks, peaks, project

LOG = logging.getLogger(__name__)


def _clipped(box: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    y0, x0, y1, x1 = box
    return max(y0, 0), max(x0, 0), min(y1, size[0]), min(x1, size[1])


def _record(images: ImageSet, activation: Activation, box, size) -> dict:
    return dict(image=images.names[activation.image], value=activation.value, y=activation.y, x=activation.x,
                receptive_field=list(box), in_image=list(_clipped(box, size)))


def top9(projector: Projector, images: ImageSet, units: list[int], out: Path, found_peaks: Peaks | None = None,
         k: int = TOP, source: str = "") -> dict:
    """top9_<layer>.png and .json in ``out``: for each unit its k strongest
    activations' projections and image patches; returns the JSON record."""
    if not units or not images.names:
        raise ValueError(f"top-{k}: no {'units' if not units else 'images'} to show")
    found_peaks = found_peaks or peaks(projector, images.images)
    found = found_peaks.top(units, k)
    projections = project(projector, images.images, found)
    blocks, record = [], {}
    for unit, activations in found.items():
        fields = [projector.receptive_field(a.y, a.x) for a in activations]
        # Cut to the image: a deep unit's field can be far larger than the input.
        boxes = [_clipped(field, projector.size) for field in fields]
        blocks.append(render.unit_block(
            [render.projection_cell(p, box) for p, box in zip(projections[unit], boxes, strict=True)],
            [render.patch_cell(images.images[a.image], box) for a, box in zip(activations, boxes, strict=True)],
            f"{projector.layer} unit {unit}"))
        record[str(unit)] = [_record(images, a, field, projector.size)
                             for a, field in zip(activations, fields, strict=True)]
    picture = render.write_picture(out / f"top9_{projector.layer}.png", render.blocks_grid(blocks))
    result = dict(layer=projector.layer, images=source, image_count=len(images.names), input_size=list(projector.size),
                  keep="max", top=k, units=record, picture=picture.name)
    render.write_json(out / f"top9_{projector.layer}.json", result)
    LOG.info("top-%d activations of %d units of %s: %s", k, len(units), projector.layer, picture)
    return result


def filters(projector: Projector, out: Path) -> dict:
    """filters_<layer>.png and .json: the layer's filters as images (the
    layer must read the 3-channel input)."""
    weights = projector.net.params[projector.layer][0].data
    if weights.ndim != 4 or weights.shape[1] != 3:
        raise ValueError(f"{projector.layer} reads {weights.shape[1]} channels: filters are drawn for a layer that "
                         "reads the image (conv1_1)")
    picture = render.write_picture(out / f"filters_{projector.layer}.png",
                                   render.tile(render.filter_cells(weights), columns=8))
    result = dict(layer=projector.layer, filters=int(weights.shape[0]), shape=list(weights.shape),
                  order="BGR, each filter stretched to 0..255 on its own", picture=picture.name,
                  ranges=[[float(f.min()), float(f.max())] for f in weights])
    render.write_json(out / f"filters_{projector.layer}.json", result)
    return result


SNAPSHOT_ITERATION = re.compile(r"_iter_(\d+)\.caffemodel$")


def snapshots(folder: Path) -> list[tuple[int, Path]]:
    """(iteration, path) of the Caffe snapshots in ``folder``, in training
    order; ValueError when there are none."""
    found = sorted((int(m.group(1)), p) for p in Path(folder).glob("*.caffemodel")
                   if (m := SNAPSHOT_ITERATION.search(p.name)))
    if not found:
        raise ValueError(f"{folder}: no snapshots (files named *_iter_N.caffemodel)")
    return found


def evolution(model: Path, folder: Path, layer: str, units: list[int], images: ImageSet, out: Path,
              source: str = "") -> dict:
    """evolution_<layer>.png and .json: each unit's strongest activation
    over the images, projected, in every snapshot (Zeiler and Fergus,
    Fig. 4): a row per unit, a column per snapshot."""
    found = snapshots(folder)
    columns, record = [], []
    for iteration, path in found:
        projector = Projector(model, path, layer)
        best = peaks(projector, images.images).top(units, 1)
        projections = project(projector, images.images, best)
        boxes = {u: projector.receptive_field(best[u][0].y, best[u][0].x) for u in units}
        cells = [render.projection_cell(projections[u][0], _clipped(boxes[u], projector.size)) for u in units]
        columns.append(render.labelled(render.tile(cells, columns=1), f"iter {iteration}"))
        record.append(dict(iteration=iteration, snapshot=path.name,
                           units={str(u): _record(images, best[u][0], boxes[u], projector.size) for u in units}))
        del projector
    picture = render.write_picture(out / f"evolution_{layer}.png", render.side_by_side(columns, gap=render.GAP))
    result = dict(layer=layer, images=source, units=units, snapshots=record, picture=picture.name)
    render.write_json(out / f"evolution_{layer}.json", result)
    return result

