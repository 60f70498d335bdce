"""The recipes' inference filter, edges and stage-1 void: hand-placed boxes,
hand-made model files, and labels computed by hand."""
from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from deconvnet.common.recipes import PAPER, RELEASE
from deconvnet.data import proposals
from deconvnet.data.build_crops import BuildConfig, build
from deconvnet.data.crop_db import CropDB
from deconvnet.data.crops import stage1_examples
from deconvnet.data.proposals import EdgeModelError, check_sed_model, resolve_edges
from deconvnet.data.voc import Instance, SBDReader, VOCReader
from deconvnet.infer.aggregation import select_boxes

from helpers import ROOT, synthetic_roots

# Shorter sides: A 100 (enlarged 1.2x: 120), B 90 (108), C 190 (228), D 100 x 95 (120 x 114).
BOXES = np.array([[0, 0, 100, 100], [0, 0, 90, 150], [10, 10, 200, 200], [200, 200, 300, 295]], np.float32)


def test_release_filter_measures_the_enlarged_box():
    got = select_boxes(BOXES, (500, 500), 50, RELEASE.min_box_side, RELEASE.box_side_of)
    np.testing.assert_array_equal(got, BOXES[[0, 2, 3]])  # B: 108 < 112 after enlargement


def test_filter_before_enlargement_and_paper_recipe():
    np.testing.assert_array_equal(select_boxes(BOXES, (500, 500), 50, 112, "proposal"), BOXES[[2]])
    np.testing.assert_array_equal(select_boxes(BOXES, (500, 500), 50, PAPER.min_box_side, PAPER.box_side_of),
                                  BOXES)
    # top_k counts the boxes that survive, in score order (the release's loop).
    np.testing.assert_array_equal(select_boxes(BOXES, (500, 500), 2, 112, "enlarged"), BOXES[[0, 2]])


def test_no_box_survives_gives_the_whole_image():
    np.testing.assert_array_equal(select_boxes(BOXES[[1]], (77, 101), 50, 112, "enlarged"), [[0, 0, 101, 77]])


# --- edges ----------------------------------------------------------------------

def sed_yaml(trees: int = 2, childs: int | None = None, drop: str = "") -> bytes:
    options = {k: 1 for k in proposals.SED_OPTIONS}
    options["numberOfTrees"] = trees
    lines = ["%YAML:1.0", "options:"] + [f"   {k}: {v}" for k, v in options.items() if k != drop]
    for key in proposals.SED_ARRAYS:
        if key != drop:
            n = childs if (key == "childs" and childs is not None) else max(trees, 1)
            lines.append(f"{key}:" + ("".join("\n   - [ 1, 2 ]" for _ in range(n)) if n else " []"))
    return gzip.compress(("\n".join(lines) + "\n").encode())


@pytest.mark.parametrize("content, message", [
    (b"not gzip at all", "not a complete gzip file"),
    (gzip.compress(b"%YAML:1.0\nfoo: 1\n")[:-6], "not a complete gzip file"),
    (gzip.compress(b"<html>404</html>"), "not an OpenCV YAML file"),
    (sed_yaml(drop="thresholds"), "missing thresholds"),
    (sed_yaml(drop="stride"), "missing stride"),
    (sed_yaml(trees=0), "numberOfTrees below 1"),  # OpenCV would divide by it: SIGFPE
    (sed_yaml(trees=2, childs=3), "3 child arrays for 2 trees"),
])
def test_broken_model_files_are_named(tmp_path, content, message):
    path = tmp_path / "sed.yml.gz"
    path.write_bytes(content)
    with pytest.raises(EdgeModelError, match=message) as err:
        check_sed_model(path)
    assert str(path) in str(err.value)


def test_structural_check_accepts_the_shape_opencv_reads(tmp_path):
    (tmp_path / "sed.yml.gz").write_bytes(sed_yaml())
    check_sed_model(tmp_path / "sed.yml.gz")


def test_missing_default_model_falls_back_with_one_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert resolve_edges("structured", default=tmp_path / "absent.yml.gz") == ""
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "absent.yml.gz not found: using gradient edges" in warnings[0].getMessage()
    # A present default is checked, and used.
    (tmp_path / "sed.yml.gz").write_bytes(sed_yaml())
    assert resolve_edges("structured", default=tmp_path / "sed.yml.gz") == str(tmp_path / "sed.yml.gz")
    assert resolve_edges("gradient", default=tmp_path / "sed.yml.gz") == ""
    # An explicit model must exist.
    with pytest.raises(EdgeModelError, match="not found"):
        resolve_edges("structured", tmp_path / "typo.yml.gz")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synthetic_roots(tmp_path_factory.mktemp("synthetic"), num_images=4, seed=5)


def test_manifest_records_the_gradient_fallback(synthetic, tmp_path, monkeypatch, capsys):
    from data_prep import build_dataset

    monkeypatch.setattr(proposals, "DEFAULT_SED_MODEL", tmp_path / "absent.yml.gz")
    voc, sbd = synthetic
    assert build_dataset.main(["--stage", "2", "--voc", str(voc), "--sbd", str(sbd), "--out", str(tmp_path / "s2"),
                               "--workers", "1", "--limit", "2"]) == 0
    manifest = json.loads((tmp_path / "s2" / "manifest.json").read_text())
    assert manifest["edges"] == {"edges": "gradient"} and manifest["recipe"] == "release"


def test_tools_stop_on_a_corrupt_model_naming_it(synthetic, tmp_path):
    voc, sbd = synthetic
    bad = tmp_path / "bad.yml.gz"
    bad.write_bytes(sed_yaml(trees=0))
    build = subprocess.run([sys.executable, str(ROOT / "data_prep" / "build_dataset.py"), "--stage", "2",
                            "--voc", str(voc), "--sbd", str(sbd), "--out", str(tmp_path / "s2"),
                            "--edge-model", str(bad)], capture_output=True, text=True, timeout=120)
    assert build.returncode == 1 and f"{bad}: not a structured-edge model" in build.stderr
    assert not (tmp_path / "s2").exists()
    infer = subprocess.run([sys.executable, str(ROOT / "tools" / "infer.py"), str(voc / "JPEGImages"),
                            "--weights", str(bad), "--out", str(tmp_path / "out"), "--edge-model", str(bad)],
                           capture_output=True, text=True, timeout=120)
    assert infer.returncode == 2 and f"{bad}: not a structured-edge model" in infer.stderr
    assert not (tmp_path / "out" / "labels").exists()


# --- stage-1 void ---------------------------------------------------------------

def test_stage1_void_rule_by_hand():
    """A 5x5 instance (class 3) inside a void ring, as in VOC's label PNGs,
    and another object (class 7) beside it."""
    class_map = np.zeros((12, 12), np.uint8)
    class_map[2:9, 2:9] = 255
    class_map[3:8, 3:8] = 3
    class_map[3:5, 8:12] = 7
    inst = Instance(cls=3, mask=class_map == 3)
    image = np.zeros((12, 12, 3), np.uint8)
    # The 1.2x box of x, y in [3, 8): 6 px about 5.5, rounded (half to even) to [2, 8): a 6x6 crop.
    ignore = stage1_examples(image, class_map, [inst], size=6, void="ignore")[0]
    background = stage1_examples(image, class_map, [inst], size=6, void="background")[0]
    assert ignore.box == background.box == (2, 2, 8, 8)
    region = class_map[2:8, 2:8]
    np.testing.assert_array_equal(ignore.label, np.where(region == 3, 3, np.where(region == 255, 255, 0)))
    np.testing.assert_array_equal(background.label, np.where(region == 3, 3, 0))
    with pytest.raises(ValueError, match="ignore or background"):
        stage1_examples(image, class_map, [inst], void="zero")


def test_stage1_background_build_has_void_only_beyond_images(synthetic, tmp_path):
    voc, sbd = synthetic
    readers = {"voc": VOCReader(voc), "sbd": SBDReader(sbd)}
    void_rings = 0
    for rule in ("ignore", "background"):
        build(BuildConfig(stage=1, out=tmp_path / rule, voc_root=voc, sbd_root=sbd, workers=1, stage1_void=rule))
        db = CropDB(tmp_path / rule)
        for number in range(db.num_records):
            record = db.get(number)
            h, w = readers[record.meta["source"]].class_map(record.meta["image_id"]).shape
            x1, y1, x2, y2 = record.meta["box"]
            inside = x1 >= 0 and y1 >= 0 and x2 <= w and y2 <= h
            has_void = bool((record.label == 255).any())
            if rule == "background":
                assert not (inside and has_void), f"record {number}: void inside the image"
            else:
                void_rings += inside and has_void
        manifest = json.loads((tmp_path / rule / "manifest.json").read_text())
        assert manifest["params"]["stage1_void"] == rule
    assert void_rings > 0, "the synthetic data has no void inside crops: the check above proves nothing"


def library_defaults() -> dict[str, object]:
    """Every library default that a recipe field decides, by where it is."""
    import inspect
    from dataclasses import fields

    from deconvnet.data.layer_params import SegDataParams
    from deconvnet.infer.pipeline import Pipeline, ensemble
    from deconvnet.net.solvers import STAGE1, STAGE2
    from deconvnet.train.trainer import StageConfig

    def default(function, name):
        return inspect.signature(function).parameters[name].default

    pipeline = {f.name: f.default for f in fields(Pipeline)}
    stage = {f.name: f.default for f in fields(StageConfig)}
    found = {
        "Pipeline.min_box_side": ("min_box_side", pipeline["min_box_side"]),
        "Pipeline.box_side_of": ("box_side_of", pipeline["box_side_of"]),
        "Pipeline.ensemble": ("ensemble", pipeline["ensemble"]),
        "ensemble(mode)": ("ensemble", default(ensemble, "mode")),
        "select_boxes(min_side)": ("min_box_side", default(select_boxes, "min_side")),
        "select_boxes(side_of)": ("box_side_of", default(select_boxes, "side_of")),
        "StageConfig.lr_policy": ("lr_policy", stage["lr_policy"]),
        "StageConfig.patience": ("patience", stage["patience"]),
        "StageConfig.plateau_metric": ("plateau_metric", stage["plateau_metric"]),
        "Schedule.batch_size (stage 1)": ("batch_per_pass", STAGE1.batch_size),
        "Schedule.batch_size (stage 2)": ("batch_per_pass", STAGE2.batch_size),
        "Schedule.iter_size": ("iter_size", STAGE1.iter_size),
        "SegDataParams.batch_size": ("batch_per_pass", {f.name: f.default for f in fields(SegDataParams)}
                                     ["batch_size"]),
        "SegDataParams.for_phase(batch_size)": ("batch_per_pass", default(SegDataParams.for_phase, "batch_size")),
    }
    return found


def disagreements(found: dict, recipe) -> list[str]:
    return [f"{where}: {value!r}, {recipe.name} says {getattr(recipe, field)!r}"
            for where, (field, value) in found.items() if value != getattr(recipe, field)]


def test_library_defaults_are_the_release_recipe():
    assert disagreements(library_defaults(), RELEASE) == []


def test_a_default_that_is_the_papers_is_caught():
    """The same check against the paper recipe finds the places that differ."""
    found = disagreements(library_defaults(), PAPER)
    assert any(line.startswith("Pipeline.ensemble") for line in found)
    assert any(line.startswith("StageConfig.lr_policy") for line in found)


def test_the_benchmark_solver_has_the_release_weight_decay():
    from google.protobuf import text_format

    from caffe.proto import caffe_pb2

    solver = caffe_pb2.SolverParameter()
    text_format.Merge((ROOT / "prototxt" / "benchmark_solver.prototxt").read_text(), solver)
    assert solver.iter_size == 8
    assert solver.weight_decay == pytest.approx(0.0005 / 8)  # the released update under this Caffe


def test_proposal_crops_are_padded_black_as_the_release_does():
    """A box over the image's corner: beyond the image the release's crop is
    its zero-padded image (black, so -mean after subtraction); "mean" pads
    with the mean colour (0 after subtraction)."""
    from deconvnet.common.constants import MEAN_BGR
    from deconvnet.infer.aggregation import proposal_batch

    image = np.full((40, 40, 3), 200, np.uint8)
    box = np.array([[-20, -20, 20, 20]], np.float32)  # its enlarged box leaves the image up and left
    black, _ = proposal_batch(image, box, 16)
    mean, _ = proposal_batch(image, box, 16, padding="mean")
    expected_black = -np.asarray(MEAN_BGR, np.float32)
    np.testing.assert_allclose(black[0, :, 0, 0], expected_black, atol=1e-4)   # top-left: outside
    np.testing.assert_allclose(mean[0, :, 0, 0], np.round(MEAN_BGR) - np.asarray(MEAN_BGR), atol=1e-4)
    np.testing.assert_allclose(black[0, :, -1, -1], 200 - np.asarray(MEAN_BGR), atol=1e-3)  # inside: the same
    np.testing.assert_allclose(mean[0, :, -1, -1], black[0, :, -1, -1])
    assert RELEASE.proposal_padding == "black"
    with pytest.raises(ValueError, match="padding must be black or mean"):
        proposal_batch(image, box, 16, padding="zero")
