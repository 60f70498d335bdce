"""The data layers' param_str contracts (deconvnet.data.layer_params):
round trips, the JSON against hand-written expectations, the committed
prototxt, and errors that name the key."""
from __future__ import annotations

import ast
import json
import re
from dataclasses import replace

import pytest

from deconvnet.data.layer_params import FCNDataParams, SegDataParams

from helpers import ROOT

VGG_MEAN = [104.00698793, 116.66876762, 122.67891434]


def test_seg_data_round_trip_and_json():
    params = SegDataParams(source="/data/db", batch_size=3, crop_size=32, mirror=True, shuffle=True, seed=5,
                           workers=0)
    assert SegDataParams.from_param_str(params.to_param_str()) == params
    assert json.loads(params.to_param_str()) == dict(source="/data/db", batch_size=3, crop_size=32, mirror=True,
                                                     mean=VGG_MEAN, shuffle=True, seed=5, workers=0)
    defaults = SegDataParams.from_param_str('{"source": "db"}')
    assert defaults == SegDataParams(source="db", batch_size=8, crop_size=224, mirror=False, mean=tuple(VGG_MEAN),
                                     shuffle=False, seed=0, workers=1)
    assert SegDataParams.from_param_str(replace(defaults, source="other").to_param_str()).source == "other"


def test_phase_settings():
    train, test = SegDataParams.for_phase("db", True), SegDataParams.for_phase("db", False)
    assert (train.mirror, train.shuffle, train.workers) == (True, True, 2)
    assert (test.mirror, test.shuffle, test.workers) == (False, False, 1)


def committed_param_str(name: str) -> str:
    """The param_str of a committed prototxt, unescaped as protobuf's text format does."""
    quoted = re.search(r'param_str: (".*")', (ROOT / "prototxt" / name).read_text()).group(1)
    return ast.literal_eval(quoted)


def test_committed_prototxt_carries_the_stage_settings():
    param_str = committed_param_str("deconvnet_stage2_train.prototxt")
    assert json.loads(param_str) == dict(source="../data/lmdb/stage2_train", batch_size=8, crop_size=224,
                                         mirror=True, mean=VGG_MEAN, shuffle=True, seed=0, workers=2)
    assert SegDataParams.from_param_str(param_str) == SegDataParams.for_phase("../data/lmdb/stage2_train", True)
    fcn = committed_param_str("fcn8s_train.prototxt")
    assert json.loads(fcn) == dict(dataset="sbd", root="../data/benchmark_RELEASE/dataset", split="train",
                                   mean=VGG_MEAN, shuffle=True, seed=1337)
    assert FCNDataParams.from_param_str(fcn).to_param_str() == fcn


@pytest.mark.parametrize("text,message", [
    ('{"source": "db", "colour": 1}', "unknown param_str key 'colour'"),
    ('{"batch_size": 2}', "param_str needs 'source'"),
    ('{"source": "db", "batch_size": 0}', "'batch_size' must be a positive integer"),
    ('{"source": "db", "workers": -1}', "'workers' must be 0 or more"),
    ('{"source": "db", "mean": [1, 2]}', "'mean' must be 3 numbers"),
    # Issue 12, item 14: JSON types as declared.
    ('{"source": "db", "batch_size": true}', "'batch_size' must be an integer, got true"),
    ('{"source": "db", "mean": "abc"}', "'mean' must be 3 numbers (B, G, R), got \"abc\""),
    ('{"source": "db", "mean": ["a", 1, 2]}', "'mean' must be 3 numbers"),
    ('{"source": "db", "mirror": "no"}', "'mirror' must be true or false, got \"no\""),
    ('{"source": "db", "workers": true}', "'workers' must be an integer"),
    ('{"source": 7}', "'source' must be a string"),
    ("source=db", "param_str is not JSON"),
    ("[1]", "must be a JSON object"),
])
def test_seg_data_errors_name_the_problem(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SegDataParams.from_param_str(text)


def test_fcn_data_round_trip_and_errors():
    params = FCNDataParams(dataset="voc", root="VOC2012", split="val")
    assert FCNDataParams.from_param_str(params.to_param_str()) == params
    with pytest.raises(ValueError, match="needs 'split'"):
        FCNDataParams.from_param_str('{"dataset": "voc", "root": "r"}')
    with pytest.raises(ValueError, match="'dataset' must be voc or sbd"):
        FCNDataParams.from_param_str('{"dataset": "coco", "root": "r", "split": "val"}')
