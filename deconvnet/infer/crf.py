"""The fully connected CRF (Kraehenbuehl and Koltun 2011) over the class
probabilities of a whole image (docs/PAPER.md, section 4, step 6)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deconvnet.common.cli import option


@dataclass(frozen=True)
class CRFParams:
    """Fully connected CRF (Kraehenbuehl and Koltun 2011) with Potts
    potentials; the defaults are the authors' released settings."""

    gaussian_sxy: float = option(3.0, help="smoothness kernel: spatial standard deviation")
    gaussian_compat: float = option(3.0, help="smoothness kernel: Potts weight")
    bilateral_sxy: float = option(20.0, help="appearance kernel: spatial standard deviation")
    bilateral_srgb: float = option(3.0, help="appearance kernel: colour standard deviation")
    bilateral_compat: float = option(5.0, help="appearance kernel: Potts weight")
    iterations: int = option(10, help="mean-field iterations")


# DeconvNet's CRF: the DeconvNet authors' released settings.
DECONVNET_CRF = CRFParams()
# DeepLab-CRF-LargeFOV's: the DeepLab authors' released settings for that
# model (bilateral weight 4, xy std 121, rgb std 5; Gaussian weight 3, xy
# std 3; 10 mean-field iterations).
DEEPLAB_LARGEFOV_CRF = CRFParams(gaussian_sxy=3.0, gaussian_compat=3.0, bilateral_sxy=121.0,
                                 bilateral_srgb=5.0, bilateral_compat=4.0, iterations=10)
# Each model's CRF, by the name tools use for it.
MODEL_CRF = {"deconvnet": DECONVNET_CRF, "deeplab-largefov": DEEPLAB_LARGEFOV_CRF}


def dense_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams = CRFParams()) -> np.ndarray:
    """Mean-field inference with -log p unaries; returns (C, H, W) marginals."""
    import pydensecrf.densecrf as dcrf

    c, h, w = probs.shape
    crf = dcrf.DenseCRF2D(w, h, c)
    unary = -np.log(np.clip(probs, 1e-8, 1.0)).reshape(c, -1)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    rgb = np.ascontiguousarray(image[:, :, ::-1], dtype=np.uint8)
    crf.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb, rgbim=rgb,
                             compat=params.bilateral_compat)
    q = crf.inference(params.iterations)
    return np.asarray(q, np.float32).reshape(c, h, w)
