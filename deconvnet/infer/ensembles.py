"""Every ensemble of a set of nets, from each net's scores of an image
computed once: the nets alone, each pair and the triple by the mean of
probabilities (the paper's rule), the release's product where it is
defined (DeconvNet + FCN-8s), each with and without the CRF of its own
settings (DeepLab-LargeFOV's alone, DeconvNet's otherwise). The demo scores
them into a table (docs/BENCHMARKS.md)."""
from __future__ import annotations

from itertools import combinations

import numpy as np

from deconvnet.infer.aggregation import softmax
from deconvnet.infer.crf import DECONVNET_CRF, MODEL_CRF, CRFParams, dense_crf
from deconvnet.infer.models import MEMBER_TITLES, MEMBERS
from deconvnet.infer.pipeline import PRODUCT_PAIR, combine

Variant = tuple[tuple[str, ...], str]  # (the nets, in MEMBERS order; the rule: "alone", "mean" or "product")


def variants(names: list[str] | tuple[str, ...]) -> list[Variant]:
    """Each net alone, then every pair, then the triple; mean, and product
    where the release defines it."""
    ordered = [n for n in MEMBERS if n in names]
    found: list[Variant] = []
    for k in range(1, len(ordered) + 1):
        for combo in combinations(ordered, k):
            if k == 1:
                found.append((combo, "alone"))
                continue
            found.append((combo, "mean"))
            if set(combo) == PRODUCT_PAIR:
                found.append((combo, "product"))
    return found


def title(variant: Variant) -> str:
    combo, rule = variant
    names = " + ".join(MEMBER_TITLES[n] for n in combo)
    return names if rule == "alone" else f"{names} ({rule})"


def crf_params(combo: tuple[str, ...]) -> CRFParams:
    """DeepLab-LargeFOV's own settings when it is alone, DeconvNet's otherwise."""
    return MODEL_CRF["deeplab-largefov"] if combo == ("deeplab-largefov",) else DECONVNET_CRF


def variant_labels(image: np.ndarray, scores: dict[str, np.ndarray], variant: Variant,
                   crf: bool) -> np.ndarray:
    """The (H, W) labels of one variant from the nets' (C, H, W) scores."""
    combo, rule = variant
    if rule == "alone":
        probs = softmax(scores[combo[0]])
    else:
        probs = combine({n: scores[n] for n in combo}, rule)
    if crf:
        probs = dense_crf(image, probs, crf_params(combo))
    return probs.argmax(axis=0).astype(np.uint8)
