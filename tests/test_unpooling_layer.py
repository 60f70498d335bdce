"""The native Unpooling layer against an independent numpy reference.

The reference never reads the pooling mask: it recomputes each window's
maximum from the pooling input, with Caffe's rules (pooled size rounded up,
windows clipped at the border, the first maximum in row-major order wins).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import write


def max_positions(x: np.ndarray, kernel: int = 2, stride: int = 2) -> np.ndarray:
    """Boolean map of the positions MAX pooling selects in x (N, C, H, W)."""
    n, c, h, w = x.shape
    ph = math.ceil((h - kernel) / stride) + 1
    pw = math.ceil((w - kernel) / stride) + 1
    chosen = np.zeros(x.shape, dtype=bool)
    for i in range(ph):
        for j in range(pw):
            h0, w0 = i * stride, j * stride
            h1, w1 = min(h0 + kernel, h), min(w0 + kernel, w)
            window = x[:, :, h0:h1, w0:w1].reshape(n, c, -1)
            first = window.argmax(axis=2)  # numpy also takes the first maximum
            rows, cols = np.unravel_index(first, (h1 - h0, w1 - w0))
            for b in range(n):
                for ch in range(c):
                    chosen[b, ch, h0 + rows[b, ch], w0 + cols[b, ch]] = True
    return chosen


def pool_unpool_net(caffe, tmp_path, shape, size_source: str):
    """Input x -> MAX Pooling (2x2/2, with mask) -> Unpooling back to x's size."""
    n, c, h, w = shape
    if size_source == "bottom":
        unpool = 'bottom: "x" unpooling_param { }'
    else:
        unpool = f"unpooling_param {{ unpool_h: {h} unpool_w: {w} }}"
    text = f"""
name: "pool_unpool"
force_backward: true
layer {{ name: "x" type: "Input" top: "x"
  input_param {{ shape {{ dim: {n} dim: {c} dim: {h} dim: {w} }} }} }}
layer {{ name: "pool1" type: "Pooling" bottom: "x" top: "pool1" top: "pool1_mask"
  pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "unpool1" type: "Unpooling" bottom: "pool1" bottom: "pool1_mask"
  {unpool} top: "unpool1" }}
"""
    path = write(tmp_path / "pool_unpool.prototxt", text)
    return caffe.Net(str(path), caffe.TEST)


def run_forward_backward(net, x: np.ndarray, top_diff: np.ndarray):
    net.blobs["x"].data[...] = x
    net.forward()
    out = net.blobs["unpool1"].data.copy()
    net.backward(**{"unpool1": top_diff})
    return out, net.blobs["pool1"].diff.copy(), net.blobs["x"].diff.copy()


CASES = [
    # shape, size source
    ((1, 1, 4, 4), "param"),
    ((2, 3, 8, 6), "param"),
    ((2, 3, 7, 9), "bottom"),   # odd: pooling rounds up to 4x5
    ((3, 4, 5, 5), "param"),
    ((1, 2, 1, 3), "bottom"),   # a one-pixel-high plane
]


@pytest.mark.parametrize("shape,size_source", CASES)
def test_forward_backward_match_numpy(caffe, tmp_path, shape, size_source):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    r = rng.standard_normal(shape).astype(np.float32)
    net = pool_unpool_net(caffe, tmp_path, shape, size_source)
    out, _, x_diff = run_forward_backward(net, x, r)

    chosen = max_positions(x)
    # Forward: each window's maximum stays where it was, the rest is zero.
    np.testing.assert_array_equal(out, np.where(chosen, x, 0))
    # Backward of unpooling gathers the top gradient at the chosen positions;
    # pooling's backward then puts it back there.
    np.testing.assert_array_equal(x_diff, np.where(chosen, r, 0))


def test_tied_maxima_take_the_first(caffe, tmp_path):
    shape = (2, 3, 6, 7)
    rng = np.random.default_rng(7)
    # Few distinct values: most windows hold ties, many all-equal.
    x = rng.integers(0, 2, size=shape).astype(np.float32)
    x[0, 0] = 5.0  # a plane of identical values
    r = rng.standard_normal(shape).astype(np.float32)
    net = pool_unpool_net(caffe, tmp_path, shape, "bottom")
    out, _, x_diff = run_forward_backward(net, x, r)
    chosen = max_positions(x)
    np.testing.assert_array_equal(out, np.where(chosen, x, 0))
    np.testing.assert_array_equal(x_diff, np.where(chosen, r, 0))
    # Exactly one position per window survives, even when all four tie.
    assert chosen[0, 0].sum() == 3 * 4
    assert np.count_nonzero(out[0, 0]) == 3 * 4


def test_unpooled_values_per_window(caffe, tmp_path):
    """The pooled diff equals the top diff at each window's maximum."""
    shape = (2, 2, 6, 4)
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    r = rng.standard_normal(shape).astype(np.float32)
    net = pool_unpool_net(caffe, tmp_path, shape, "param")
    _, pooled_diff, _ = run_forward_backward(net, x, r)
    for i in range(3):
        for j in range(2):
            win_x = x[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].reshape(2, 2, 4)
            win_r = r[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].reshape(2, 2, 4)
            best = win_x.argmax(axis=2)
            expected = np.take_along_axis(win_r, best[..., None], axis=2)[..., 0]
            np.testing.assert_array_equal(pooled_diff[:, :, i, j], expected)


def test_finite_difference_gradient_through_pool_unpool(caffe, tmp_path):
    """d/dx sum(r * unpool(pool(x))) by central differences matches backward."""
    shape = (2, 2, 5, 7)
    rng = np.random.default_rng(11)
    # Distinct values 0.1 apart, so a 1e-2 step never changes a window's max.
    x = (rng.permutation(int(np.prod(shape))) * 0.1).reshape(shape).astype(np.float32)
    r = rng.standard_normal(shape).astype(np.float32)
    net = pool_unpool_net(caffe, tmp_path, shape, "bottom")
    _, _, analytic = run_forward_backward(net, x, r)

    def objective(values: np.ndarray) -> float:
        net.blobs["x"].data[...] = values
        net.forward()
        return float(np.sum(r.astype(np.float64) * net.blobs["unpool1"].data))

    eps = 1e-2
    numeric = np.zeros(shape, dtype=np.float64)
    for flat in range(x.size):
        idx = np.unravel_index(flat, shape)
        plus, minus = x.copy(), x.copy()
        plus[idx] += eps
        minus[idx] -= eps
        numeric[idx] = (objective(plus) - objective(minus)) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, atol=1e-3)
    assert np.count_nonzero(analytic) == 2 * 2 * 3 * 4
