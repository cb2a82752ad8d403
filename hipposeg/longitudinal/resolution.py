"""Equal sharpness for every time point: the crops of a subject blurred to the blurriest one before segmentation.

The crop model reads a blurrier image as a slightly smaller hippocampus. Scans of one subject taken with other voxel
sizes, or resampled once more by a scanner or a converter, differ in blur, and that difference alone moved the
measured volume by about 1 % on copies of one head (``bench/longitudinal.py``) — as much as a year of atrophy.
Because every time point's crop is the same box of the common space, the blur of one crop relative to another can be
measured directly: :func:`relative_blur` finds the Gaussian (isotropic, sigma in mm) that makes crop ``a`` most like
crop ``b``. :func:`equalising_sigmas` gives each crop the blur that makes it match the blurriest other crop (0 for the
blurriest itself); the answer depends only on the set of crops, not on their order.

Evidence (``bench/longitudinal.py``, 15 pairs of the three heads, per side left / right, mean absolute error in
percentage points): without equalising, 0.65 on a first 9 pairs where equalising gave 0.48; an extra 0.5 mm blur of
every crop on top (tried, not kept) lowered the no-change error from 0.22 / 0.43 to 0.19 / 0.30 but raised the atrophy
error from 0.41 / 0.52 to 0.49 / 0.68: on blurrier crops the model under-reads atrophy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SIGMAS_MM = tuple(np.round(np.arange(0.0, 1.61, 0.1), 2))  # candidate blurs, crops are 1 mm


def _normalised(array: np.ndarray) -> np.ndarray:
    from hipposeg.fullhead.intensity import harmonise

    return harmonise(np.asarray(array, dtype=np.float32))  # one intensity scale for every scan (Task04 quantiles)


def relative_blur(a: np.ndarray, b: np.ndarray, margin: int = 4) -> float:
    """The sigma (mm) of the Gaussian that, applied to ``a``, makes it closest to ``b`` (least squares over the
    crop less ``margin`` voxels at each face; crops of the same box, already on one intensity scale)."""
    inner = tuple(slice(margin, s - margin) for s in a.shape)
    target = b[inner]
    errors = [float(((ndimage.gaussian_filter(a, s)[inner] if s > 0 else a[inner]) - target).var())
              for s in SIGMAS_MM]
    return float(SIGMAS_MM[int(np.argmin(errors))])


def equalising_sigmas(crops: list[np.ndarray]) -> list[float]:
    """For each crop, the blur (sigma, mm) that brings it to the blurriest of the others (see the module text)."""
    scaled = [_normalised(c) for c in crops]
    return [max(relative_blur(scaled[i], scaled[j]) for j in range(len(crops)) if j != i)
            for i in range(len(crops))]
