"""Aggregation, paste-back geometry, softmax and the CRF against independent
plain-loop numpy references."""
from __future__ import annotations

import math

import numpy as np
import pytest

from deconvnet.infer.aggregation import crop_box, paste_and_aggregate, select_boxes, softmax
from deconvnet.infer.crf import CRFParams, dense_crf


def bilinear_resize(src: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Plain-loop bilinear resize with half-pixel centres (OpenCV's
    INTER_LINEAR convention), one channel."""
    in_h, in_w = src.shape
    out = np.zeros((out_h, out_w), np.float64)
    for y in range(out_h):
        fy = min(max((y + 0.5) * in_h / out_h - 0.5, 0.0), in_h - 1)
        y0 = int(math.floor(fy))
        y1 = min(y0 + 1, in_h - 1)
        wy = fy - y0
        for x in range(out_w):
            fx = min(max((x + 0.5) * in_w / out_w - 0.5, 0.0), in_w - 1)
            x0 = int(math.floor(fx))
            x1 = min(x0 + 1, in_w - 1)
            wx = fx - x0
            out[y, x] = ((1 - wy) * ((1 - wx) * src[y0, x0] + wx * src[y0, x1])
                         + wy * ((1 - wx) * src[y1, x0] + wx * src[y1, x1]))
    return out


def reference_aggregate(maps: np.ndarray, boxes, h: int, w: int, mode: str) -> np.ndarray:
    """G_i zero outside box i, then max (Eq. 1) or sum (Eq. 2), pixel by pixel."""
    n, c = maps.shape[:2]
    g = np.zeros((n, c, h, w))
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        for ch in range(c):
            resized = bilinear_resize(maps[i, ch].astype(np.float64), y2 - y1, x2 - x1)
            for y in range(max(y1, 0), min(y2, h)):
                for x in range(max(x1, 0), min(x2, w)):
                    g[i, ch, y, x] = resized[y - y1, x - x1]
    out = np.zeros((c, h, w))
    for ch in range(c):
        for y in range(h):
            for x in range(w):
                values = [g[i, ch, y, x] for i in range(n)]
                out[ch, y, x] = max(values) if mode == "max" else sum(values)
    return out


BOX_SETS = {
    "partly_outside": [(-5, -3, 12, 9), (8, 6, 25, 20), (15, -4, 30, 10)],
    "tiny": [(3, 4, 4, 5), (10, 10, 12, 11), (0, 0, 2, 2)],
    "full_image": [(0, 0, 22, 17), (0, 0, 22, 17)],
    "mixed": [(0, 0, 22, 17), (2, 3, 9, 14), (-10, -10, 40, 40), (21, 16, 22, 17)],
}


@pytest.mark.parametrize("mode", ["max", "sum"])
@pytest.mark.parametrize("name", sorted(BOX_SETS))
def test_aggregation_matches_plain_loops(name, mode):
    rng = np.random.default_rng(len(name))
    boxes = BOX_SETS[name]
    maps = rng.normal(size=(len(boxes), 3, 8, 8)).astype(np.float32)
    got = paste_and_aggregate(maps, boxes, (17, 22), mode)
    want = reference_aggregate(maps, boxes, 17, 22, mode)
    assert got.shape == (3, 17, 22)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_max_keeps_negative_scores_where_every_box_covers():
    maps = -np.ones((2, 1, 4, 4), np.float32)
    got = paste_and_aggregate(maps, [(0, 0, 4, 4), (0, 0, 2, 4)], (4, 4), "max")
    assert np.all(got[0, :, :2] == -1)   # covered by both: max of the scores
    assert np.all(got[0, :, 2:] == 0)    # one G_i is 0 there


def test_softmax_matches_plain_loop():
    rng = np.random.default_rng(0)
    scores = rng.normal(0, 20, size=(5, 3, 4)).astype(np.float32)
    got = softmax(scores)
    for y in range(3):
        for x in range(4):
            values = [float(scores[c, y, x]) for c in range(5)]
            top = max(values)
            exps = [math.exp(v - top) for v in values]
            for c in range(5):
                assert got[c, y, x] == pytest.approx(exps[c] / sum(exps), rel=1e-5, abs=1e-7)


def test_select_boxes_filters_then_takes_top_k():
    boxes = np.array([[0, 0, 50, 200], [0, 0, 150, 150], [10, 10, 200, 130], [0, 0, 300, 300]], np.float32)
    np.testing.assert_array_equal(select_boxes(boxes, (400, 400), top_k=2, min_side=112), boxes[1:3])
    np.testing.assert_array_equal(select_boxes(boxes, (400, 400), top_k=50, min_side=0), boxes)
    # The default is the release's: a 112-px minimum on the enlarged box (the first is 60 px wide).
    np.testing.assert_array_equal(select_boxes(boxes, (400, 400)), boxes[1:])
    # Nothing left: the whole image is the one proposal.
    whole = select_boxes(boxes, (40, 60), top_k=5, min_side=1000)
    np.testing.assert_array_equal(whole, [[0, 0, 60, 40]])


def test_crop_box_enlarges_and_keeps_a_pixel():
    assert crop_box((10, 20, 60, 120)) == (5, 10, 65, 130)
    x1, y1, x2, y2 = crop_box((5, 5, 5, 5))
    assert x2 > x1 and y2 > y1


def test_crf_cleans_a_noisy_map():
    """Two flat regions; the probabilities are noisy and wrong in 30% of the
    pixels. The CRF output is clearly closer to the truth."""
    rng = np.random.default_rng(1)
    h, w = 60, 80
    truth = np.zeros((h, w), np.int64)
    truth[:, 40:] = 1
    image = np.where(truth[..., None] == 1, 200, 40).astype(np.uint8).repeat(3, axis=2)
    image = np.clip(image + rng.normal(0, 5, image.shape), 0, 255).astype(np.uint8)
    flip = rng.random((h, w)) < 0.3
    noisy = np.where(flip, 1 - truth, truth)
    probs = np.full((2, h, w), 0.35, np.float32)
    probs[noisy, np.arange(h)[:, None], np.arange(w)[None, :]] = 0.65
    before = np.mean(probs.argmax(0) != truth)
    after = np.mean(dense_crf(image, probs, CRFParams()).argmax(0) != truth)
    assert before > 0.25
    assert after < 0.05
